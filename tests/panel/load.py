#!/usr/bin/env python3
"""Scale measurement of the dtq web panel: how fast the overview and a big
dead queue's page render with many queues and a large dead set.

    DTQ_BIN=target/release/dtq DTQ_REDIS_URL=redis://127.0.0.1:6379 \
        python3 tests/panel/load.py [--queues 1000] [--dead 20000] [--runs 5]

In a namespace of its own: --queues queues (q0000…, one noop job each, through
`produce --file`), then --dead jobs of a kind no handler knows with
max_retries 0 in q0000, dead-lettered by a built-in worker (the real path;
the queue's dead retention is raised first). Then headless Chromium signs in
and loads, --runs times each, with a fresh document every time and more than
a second apart (so /v1/overview reads Redis anew instead of its shared
once-a-second sample):

  overview     navigation start → the `dtq-overview-rendered` performance mark
  queue page   navigation start → the first 50 rows of q0000's dead tab in the DOM

Prints one JSON line:
  {"queues":…,"dead":…,"overview_ms_median":…,"queue_page_ms_median":…,"runs":[…]}
(each run: page, ms, and the ms of its /v1/overview or /v1/queues/…/jobs
request from Resource Timing), and exits 1 when the overview median is
≥ --max-overview-ms (default 1000). Everything it started and the
namespace's keys are removed at the end.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


def seed(dtq, queues, dead):
    width = max(4, len(str(queues - 1)))
    names = [f'q{i:0{width}d}' for i in range(queues)]
    t0 = time.monotonic()
    dtq.produce_file({'kind': 'noop', 'queue': q, 'payload': {'n': i}} for i, q in enumerate(names))
    H.log(f'{queues} queues enqueued in {time.monotonic() - t0:.1f} s')
    big = names[0]
    if dead:
        dtq.cli('admin', 'retention', big, '--dead-max', max(dead, 10000))
        t1 = time.monotonic()
        dtq.produce_file({'kind': 'no-such-kind', 'queue': big, 'max_retries': 0,
                          'payload': {'order': 100000 + i, 'note': 'seeded by tests/panel/load.py'}}
                         for i in range(dead))
        H.log(f'{dead} jobs enqueued in {big} in {time.monotonic() - t1:.1f} s; dead-lettering them')
        w = dtq.worker('dead-letterer', big, '--concurrency', 256)
        try:
            H.wait_until(lambda: dtq.stats()[big]['dead'] >= dead, 300, 1.0, f'{dead} dead jobs in {big}')
        finally:
            dtq.procs.stop(w)
        H.log(f'{dead} dead jobs in {time.monotonic() - t1:.1f} s')
    st = dtq.stats()
    assert len(st) == queues, f'{len(st)} queues, want {queues}'
    assert st[big]['dead'] == dead, st[big]
    return big


def measure(page, big, queues, dead, runs):
    d = page.d
    out = []
    rows_want = min(50, dead)
    for i in range(runs):
        for kind in ('overview', 'queue'):
            time.sleep(1.2)  # past the server's once-a-second shared sample
            if kind == 'overview':
                page.js("sessionStorage.removeItem('dtqRowsProbe')")
                page.load('#/')
                mark = page.wait(lambda: page.js(
                    "const m = performance.getEntriesByName('dtq-overview-rendered', 'mark')[0]; return m ? m.startTime : null"),
                    30, 'the dtq-overview-rendered mark')
                n = page.js("return document.querySelectorAll('#queue-table tbody tr[data-queue]').length")
                assert n == queues, f'the overview shows {n} queues, want {queues}'
                api = '/v1/overview'
            else:
                page.js("sessionStorage.setItem('dtqRowsProbe', arguments[0])", rows_want)
                page.load(f'#/queues/{big}?state=dead')
                mark = page.wait(lambda: page.js('return window.__dtqRowsAt || null'), 30, f'{rows_want} job rows')
                n = len(page.job_rows())
                assert n == rows_want, f'the dead tab shows {n} rows, want {rows_want}'
                page.wait_text('#jobs-total', lambda t: t.startswith(f'{dead:,} '), 10)
                api = f'/v1/queues/{big}/jobs'
            api_ms = page.js("""
                const e = performance.getEntriesByType('resource').filter(r => r.name.includes(arguments[0]))[0];
                return e ? e.responseEnd - e.startTime : null;""", api)
            run = {'page': kind, 'run': i + 1, 'ms': round(mark, 1), 'api_ms': None if api_ms is None else round(api_ms, 1)}
            H.log(f'  {json.dumps(run)}')
            out.append(run)
    page.js("sessionStorage.removeItem('dtqRowsProbe')")
    page.collect()
    assert not page.problems, f'console/CSP problems: {page.problems}'
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--queues', type=int, default=1000)
    ap.add_argument('--dead', type=int, default=20000)
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--max-overview-ms', type=float, default=1000.0)
    a = ap.parse_args()
    assert a.queues >= 1 and a.dead >= 0 and a.runs >= 1
    H.install_signal_handlers()
    tmp = H.make_tmp('dtq-panel-load-')
    procs = H.Procs()
    ns = H.unique_namespace('panelload')
    dtq = H.Dtq(ns, tmp, procs)
    driver = None
    t0 = time.monotonic()
    H.log(f'namespace {ns}: {a.queues} queues, {a.dead} dead jobs, {a.runs} runs')
    try:
        big = seed(dtq, a.queues, a.dead)
        base = dtq.serve()
        driver = H.browser(tmp)
        page = H.Page(driver, base)
        page.sign_in(dtq.admin_token, 'admin')
        runs = measure(page, big, a.queues, a.dead, a.runs)
    finally:
        if driver:
            try:
                driver.quit()
            except Exception as e:  # noqa: BLE001
                H.log(f'could not quit the browser: {e}')
        procs.stop_all()
        if os.environ.get('DTQ_PANEL_KEEP') == '1':
            H.log(f'kept {tmp} and namespace {ns} (DTQ_PANEL_KEEP=1)')
        else:
            H.delete_namespace(dtq.redis, ns)
            H.remove_tmp(tmp)
    med = lambda kind: round(statistics.median(r['ms'] for r in runs if r['page'] == kind), 1)  # noqa: E731
    result = {'queues': a.queues, 'dead': a.dead, 'overview_ms_median': med('overview'),
              'queue_page_ms_median': med('queue'), 'runs': runs}
    print(json.dumps(result, separators=(',', ':')), flush=True)
    H.log(f'done in {time.monotonic() - t0:.1f} s')
    if result['overview_ms_median'] >= a.max_overview_ms:
        H.log(f'FAIL: the overview median {result["overview_ms_median"]} ms is not under {a.max_overview_ms:g} ms')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
