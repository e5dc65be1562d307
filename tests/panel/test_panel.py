#!/usr/bin/env python3
"""Browser tests of the dtq web panel: headless Chromium driven by Selenium
against a real `dtq serve` and real workers, in a namespace of its own.

    DTQ_BIN=target/release/dtq DTQ_REDIS_URL=redis://127.0.0.1:6379 \
        python3 tests/panel/test_panel.py [NAME-SUBSTRING...] [--list]

Environment: DTQ_BIN (default target/release/dtq), DTQ_REDIS_URL (required),
DTQ_PANEL_SHOTS (screenshot directory, default target/panel-shots),
DTQ_PANEL_SHOT_PREFIX (prepended to overview.png etc., default none),
DTQ_PANEL_FAILURES (screenshots of failed tests, default target/panel-failures),
DTQ_PANEL_KEEP=1 (keep the temp dir and the namespace's keys, for debugging),
DTQ_CHROMIUM, DTQ_CHROMEDRIVER (default /usr/bin/chromium, /usr/bin/chromedriver).

One `dtq serve` (admin + read-only token files), two workers (an --exec
handler for payments/notifications/webhooks, the built-in handler for the
rest) and one browser serve every test; the tests run in the order below
(the CSP/JS-error check last, so that it also covers every page the others
visited). Everything started is stopped and the namespace's keys removed at
the end, also when a test fails; the exit status is 1 when any test failed.
"""
import json
import math
import os
import sys
import threading
import time
import traceback
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

COUNTS = ('pending', 'inflight', 'scheduled', 'dead', 'completed')

# The --exec handler of worker A (payload on stdin, DTQ_KIND, DTQ_ATTEMPT;
# exit 0 = done, 65 = dead-letter now, other = retry). MARKS is replaced by
# a directory of the run.
HANDLER = r"""#!/bin/sh
# dtq panel tests: exec handler (payload on stdin).
cat >/dev/null
result() { if [ -n "$DTQ_RESULT_FILE" ]; then printf '%s' "$1" >"$DTQ_RESULT_FILE"; fi; }
case "$DTQ_KIND" in
  charge)
    # Dead at once the first time; succeeds once requeued (a marker file).
    if [ -e "MARKS/$DTQ_JOB_ID" ]; then result '{"charged":true,"amount_cents":4200}'; exit 0; fi
    : >"MARKS/$DTQ_JOB_ID"
    echo "card declined: insufficient funds" >&2; exit 65 ;;
  refund) echo "refund rejected: the original charge was not found" >&2; exit 65 ;;
  payout) echo "payout failed: the bank account is closed" >&2; exit 65 ;;
  invoice)
    # Fails once (retried), then succeeds: a history of two attempts.
    if [ "$DTQ_ATTEMPT" -lt 2 ]; then
      echo "invoice service unavailable (HTTP 503) on attempt $DTQ_ATTEMPT" >&2; exit 75
    fi
    result 'sent invoice INV-1042 (3 pages)'; exit 0 ;;
  sms) echo "twilio: 21211 invalid 'To' phone number" >&2; exit 65 ;;
  push) echo "apns: 410 Unregistered (the device token is no longer active)" >&2; exit 65 ;;
  deliver)
    echo "endpoint answered 500: <html><script>window.__xss=3</script><img src=x onerror=window.__xss=4></html>" >&2
    exit 65 ;;
  *) exit 0 ;;
esac
"""

XSS_SCRIPT = '<script>window.__xss=1</script>'
XSS_IMG = '<img src=x onerror="window.__xss=2">'
XSS_KIND = 'deliver'


class Suite:
    """What every test shares: the namespace, the processes, the browser."""

    def __init__(self):
        self.tmp = H.make_tmp('dtq-panel-test-')
        self.procs = H.Procs()
        self.ns = H.unique_namespace('paneltest')
        self.dtq = H.Dtq(self.ns, self.tmp, self.procs)
        self.page = None
        self.ids = {}
        self.stop_traffic = threading.Event()
        self.traffic = None

    # -- set-up

    def setup(self):
        t0 = time.monotonic()
        H.log(f'namespace {self.ns}, temp dir {self.tmp}, dtq {self.dtq.bin}, Redis {self.dtq.redis}')
        base = self.dtq.serve()
        H.log(f'dtq serve at {base}')
        marks = os.path.join(self.tmp, 'marks')
        os.makedirs(marks)
        handler = os.path.join(self.tmp, 'handler.sh')
        with open(handler, 'w') as f:
            f.write(HANDLER.replace('MARKS', marks))
        # Worker A: the exec handler. Worker B: the built-in kinds (noop, echo, sleep, fail; others die).
        self.worker_a = self.dtq.worker('worker-a', 'payments:3,notifications:1,webhooks:1', '--exec', f'sh {handler}',
                                        '--concurrency', 8, '--backoff-base', '200ms', '--backoff-max', '1s')
        self.worker_b = self.dtq.worker('worker-b', 'reports,exports,imports,thumbnails,traffic', '--concurrency', 16)
        self.seed()
        self.start_traffic()
        self.page = H.Page(H.browser(self.tmp), base)
        self.wait_seeded()
        H.log(f'set-up done in {time.monotonic() - t0:.1f} s')

    def seed(self):
        """The jobs of every test, in one POST /v1/jobs; self.ids[kind] = their ids."""
        specs = []

        def add(queue, kind, n=1, payload=None, **extra):
            for i in range(n):
                p = payload(i) if callable(payload) else payload
                specs.append({'queue': queue, 'kind': kind, **({'payload': p} if p is not None else {}), **extra})

        # emails: no worker takes it: pending and scheduled stay put.
        add('emails', 'welcome', 7, lambda i: {'to': f'user{i}@example.com', 'template': 'welcome-v2'})
        add('emails', 'digest', 3, lambda i: {'to': f'team{i}@example.com'}, delay='1h')
        # reports, exports, imports: the built-in handler (unknown kinds are dead at once).
        add('reports', 'noop', 4)
        add('reports', 'echo', 1, {'report': 'weekly', 'format': 'pdf'})
        add('reports', 'render-pdf', 2, lambda i: {'report_id': 900 + i}, max_retries=0)
        add('exports', 'export-csv', 3, lambda i: {'table': ['orders', 'customers', 'invoices'][i]}, max_retries=0)
        add('imports', 'import-users', 18, lambda i: {'file': f'users-{i:02}.csv', 'rows': 1000 + i}, max_retries=0)
        add('imports', 'import-orders', 12, lambda i: {'file': f'orders-{i:02}.csv', 'rows': 500 + i}, max_retries=0)
        # payments, notifications, webhooks: the exec handler.
        add('payments', 'charge', 1, {'customer': 'cus_4242', 'amount_cents': 4200, 'currency': 'EUR'})
        add('payments', 'refund', 2, lambda i: {'charge': f'ch_{7000 + i}', 'amount_cents': 1500})
        add('payments', 'payout', 2, lambda i: {'account': f'acct_{i}', 'amount_cents': 99000})
        add('payments', 'invoice', 1, {'customer': 'cus_4242', 'month': '2026-11'}, max_retries=3)
        add('notifications', 'sms', 3, lambda i: {'to': f'+4915100000{i}', 'text': 'Your code is 123456'})
        add('notifications', 'push', 2, lambda i: {'device': f'dev-{i}', 'title': 'Order shipped'})
        add('webhooks', XSS_KIND, 1, {'url': 'https://example.com/hook', 'html': XSS_SCRIPT, 'img': XSS_IMG})
        res = self.dtq.api_ok('POST', '/v1/jobs', specs)
        assert len(res) == len(specs), res
        for spec, r in zip(specs, res):
            assert r['status'] == 'enqueued', r
            self.ids.setdefault(spec['kind'], []).append(r['id'])

    def wait_seeded(self):
        want = {
            'emails': {'pending': 7, 'scheduled': 3},
            'reports': {'completed': 5, 'dead': 2, 'pending': 0},
            'exports': {'dead': 3},
            'imports': {'dead': 30},
            'payments': {'dead': 5, 'completed': 1, 'pending': 0, 'scheduled': 0, 'inflight': 0},
            'notifications': {'dead': 5},
            'webhooks': {'dead': 1},
        }

        def ready():
            st = self.dtq.stats()
            self.last_stats = st
            return all(q in st and all(st[q][k] == v for k, v in ks.items()) for q, ks in want.items())
        try:
            H.wait_until(ready, 40, 0.25, 'the seeded jobs to settle')
        except AssertionError:
            H.log(json.dumps(getattr(self, 'last_stats', None)))
            raise

    def start_traffic(self):
        """A steady trickle of jobs into `traffic` (built-in worker), so that the chart has data."""
        def run():
            t = 0
            while not self.stop_traffic.wait(1.0):
                t += 1
                n = 6 + int(5 * math.sin(t / 5))
                specs = [{'queue': 'traffic', 'kind': 'noop'} for _ in range(n)]
                if t % 4 == 0:
                    specs.append({'queue': 'traffic', 'kind': 'fail', 'max_retries': 0})
                try:
                    self.dtq.api('POST', '/v1/jobs', specs)
                except Exception:  # noqa: BLE001 (the server is going away)
                    pass
        self.traffic = threading.Thread(target=run, daemon=True)
        self.traffic.start()

    # -- clean-up

    def teardown(self):
        self.stop_traffic.set()
        if self.traffic:
            self.traffic.join(5)
        if self.page:
            try:
                self.page.d.quit()
            except Exception as e:  # noqa: BLE001
                H.log(f'could not quit the browser: {e}')
        self.procs.stop_all()
        if os.environ.get('DTQ_PANEL_KEEP') == '1':
            H.log(f'kept {self.tmp} and namespace {self.ns} (DTQ_PANEL_KEEP=1)')
            return
        H.delete_namespace(self.dtq.redis, self.ns)
        H.remove_tmp(self.tmp)

    # -- helpers of the tests

    def ensure_admin(self):
        p = self.page
        try:
            role = p.role()
        except Exception:  # noqa: BLE001
            role = None
        if role != 'admin':
            p.sign_in(self.dtq.admin_token, 'admin')

    def check_alive(self):
        for p in (self.dtq.serve_proc, self.worker_a, self.worker_b):
            assert p.poll() is None, f'{p.dtq_name} exited with {p.returncode}; log {p.dtq_log}:\n' + \
                open(p.dtq_log, errors='replace').read()[-3000:]


def ui_int(text):
    t = (text or '').strip().replace(',', '')
    return None if t in ('', '—') else int(t)


def enter():
    from selenium.webdriver.common.keys import Keys
    return Keys.ENTER


# ================================================================ the tests

def sign_in_with_admin_token_and_wrong_token_is_refused(s):
    """The form refuses a wrong token (its error shown, no session); the admin token signs in with an HttpOnly cookie; sign-out ends it."""
    p = s.page
    p.d.get(p.base + '/')
    p.d.delete_all_cookies()
    p.load('#/')
    p.wait_visible('#sign-in-form')
    assert p.text('h1') == 'Sign in', p.text('h1')
    assert not p.visible('#nav') and not p.visible('#sign-out')
    assert p.js('return document.title').startswith('Sign in')

    p.type('#sign-in-token', 'wrong-token-' + os.urandom(8).hex())
    p.click('#sign-in-button')
    p.wait_visible('#sign-in-error')
    p.wait_text('#sign-in-error', lambda t: 'wrong token' in t, what='the API\'s "wrong token" message')
    assert p.visible('#sign-in-form') and not p.visible('#nav') and p.role() is None
    assert p.q('#sign-in-token').get_attribute('aria-invalid') == 'true'
    assert not [c for c in p.d.get_cookies() if c['name'].startswith('dtq')], p.d.get_cookies()
    st = p.async_js("return (await fetch('/v1/session', {credentials: 'same-origin'})).status")
    assert st == 401, f'GET /v1/session after a wrong token: {st}, want 401'

    p.type('#sign-in-token', s.dtq.admin_token)
    p.click('#sign-in-button')
    p.wait(lambda: p.role() == 'admin', 10, 'the admin role in the header')
    p.wait_text('h1', lambda t: t == 'Overview')
    assert p.visible('#sign-out') and p.visible('#nav') and not p.present('#sign-in-form')
    cookies = [c for c in p.d.get_cookies() if c['name'] == 'dtq_session']
    assert len(cookies) == 1, p.d.get_cookies()
    assert cookies[0]['httpOnly'] is True and cookies[0].get('sameSite') == 'Strict', cookies[0]
    assert 'dtq_session' not in p.js('return document.cookie')
    sess = p.async_js("const r = await fetch('/v1/session', {credentials: 'same-origin'}); return [r.status, await r.json()]")
    assert sess[0] == 200 and sess[1]['role'] == 'admin' and sess[1]['csrf'], sess

    p.click('#sign-out')
    p.wait_visible('#sign-in-form')
    st = p.async_js("return (await fetch('/v1/session', {credentials: 'same-origin'})).status")
    assert st == 401, f'GET /v1/session after signing out: {st}, want 401'
    s.ensure_admin()


def overview_shows_the_counts_of_inspect_stats(s):
    """Every count cell (pending, in flight, scheduled, dead, completed, paused) of several queues equals `dtq inspect stats --json`."""
    s.ensure_admin()
    p = s.page
    p.load('#/')
    queues = ['emails', 'reports', 'exports', 'imports', 'payments', 'notifications', 'webhooks']
    p.wait(lambda: all(p.present(f'tr[data-queue="{q}"]') for q in queues), 10, 'the queue rows')
    read = """
        const out = {};
        for (const tr of document.querySelectorAll('#queue-table tbody tr[data-queue]')) {
          const row = {};
          for (const td of tr.querySelectorAll('td[data-count]')) row[td.dataset.count] = td.textContent;
          row.paused = tr.querySelector('td[data-test=paused]').textContent;
          out[tr.dataset.queue] = row;
        }
        return out;"""
    diffs = []

    def same():
        cli = s.dtq.stats()
        ui = p.js(read)
        diffs.clear()
        if set(ui) != set(cli):
            diffs.append(f'queues: panel {sorted(ui)} vs CLI {sorted(cli)}')
        for q in queues:
            for k in COUNTS:
                if ui_int(ui[q][k]) != cli[q][k]:
                    diffs.append(f'{q}.{k}: panel {ui[q][k]!r}, CLI {cli[q][k]}')
            if ui[q]['paused'] != ('paused' if cli[q]['paused'] else 'no'):
                diffs.append(f'{q}.paused: panel {ui[q]["paused"]!r}, CLI {cli[q]["paused"]}')
        return not diffs
    try:
        p.wait(same, 12, 'the overview to match the CLI')
    except AssertionError:
        raise AssertionError('overview vs inspect stats: ' + '; '.join(diffs)) from None
    # Numbers are right-aligned with thousands separators: check one cell's class.
    assert 'num' in p.js("return document.querySelector('tr[data-queue=imports] td[data-count=dead]').className")


def dead_job_found_by_error_search_requeued_and_completed(s):
    """Dead tab, search by error text → exactly that job; its page's Requeue → it runs again and shows completed; each attempt names its worker."""
    s.ensure_admin()
    p = s.page
    charge = s.ids['charge'][0]
    p.load('#/queues/payments?state=dead')
    p.wait_job_rows(5)
    assert p.js("return document.querySelector('#state-tabs a[data-state=dead]').getAttribute('aria-current')") == 'page'
    p.type('#filter-search', 'insufficient funds' + enter())
    p.wait(lambda: p.job_rows() == [charge], 10, 'only the charge job to be listed')
    assert 'search=insufficient' in p.where(), p.where()
    err = p.text(f'tr[data-job="{charge}"] td.error-text')
    assert 'card declined: insufficient funds' in err, err
    p.click(f'tr[data-job="{charge}"] a[href^="#/jobs/"]')
    p.wait_text('#job-state', lambda t: t == 'dead')
    assert p.text('#job-id') == charge
    assert 'insufficient funds' in p.text('#job-error')
    p.click('#job-requeue')
    p.wait_text('#status', lambda t: f'Requeued job {charge}' in t, what='the "Requeued job" announcement')
    p.wait_text('#job-state', lambda t: t == 'completed', timeout=20)
    p.wait(lambda: p.js("return document.querySelectorAll('#job-history > li').length") >= 2, 10, 'two attempts in the history')
    assert '"charged": true' in (p.text('#job-result') or ''), p.text('#job-result')
    job = s.dtq.api_ok('GET', f'/v1/jobs/{charge}?queue=payments')
    assert job['state'] == 'completed', job
    assert [a.get('outcome') for a in job['history']] == ['dead', 'ok'], job['history']
    # Each attempt names its worker: worker A, the one that takes from payments.
    takes_payments = [w['id'] for w in s.dtq.api_ok('GET', '/v1/workers')['workers']
                      if any(q['name'] == 'payments' for q in w['queues'])]
    assert len(takes_payments) == 1, takes_payments
    assert [a.get('worker') for a in job['history']] == takes_payments * 2, job['history']
    shown = p.js("return [...document.querySelectorAll('#job-history > li [data-test=attempt-worker]')].map(e => e.textContent)")
    assert shown == takes_payments * 2, shown


def bulk_delete_of_a_filtered_selection_removes_exactly_those(s):
    """30 dead jobs of two kinds; filter one kind, select all matching, delete, confirm → exactly those 18 ids are gone, the 12 others remain."""
    s.ensure_admin()
    p = s.page
    users, orders = set(s.ids['import-users']), set(s.ids['import-orders'])
    assert {j['id'] for j in s.dtq.jobs('imports', 'dead')} == users | orders
    p.load('#/queues/imports?state=dead')
    p.wait_job_rows(30)
    p.type('#filter-kind', 'import-users' + enter())
    p.wait(lambda: set(p.job_rows()) == users, 10, 'only the import-users jobs to be listed')
    p.click('#select-page')
    p.click('#select-all-matching')
    p.wait_text('#selection-info', lambda t: t == 'All jobs matching the filter are selected.')
    p.wait_text('#action-delete', lambda t: t == 'Delete all')
    assert not p.visible('#action-requeue') or p.text('#action-requeue') == 'Requeue all'
    p.click('#action-delete')
    p.wait_visible('#confirm-dialog')
    title = p.text('#confirm-title')
    assert 'matching the filter' in title and 'imports' in title, title
    p.click('#confirm-yes')
    p.wait_text('#status', lambda t: 'Deleted 18 jobs' in t, what='"Deleted 18 jobs"')
    p.wait_visible('#jobs-empty')
    left = {j['id'] for j in s.dtq.jobs('imports', 'dead')}
    assert left == orders, f'{len(left & users)} deleted ids remain, {len(orders - left)} others are gone'
    for jid in users:
        st, _ = s.dtq.api('GET', f'/v1/jobs/{jid}?queue=imports')
        assert st == 404, f'job {jid}: GET answered {st}, want 404'
    assert s.dtq.stats()['imports']['dead'] == 12
    p.click('#filter-clear')
    p.wait(lambda: set(p.job_rows()) == orders, 10, 'the 12 import-orders jobs without the filter')


def paused_queue_is_not_taken_from_until_resumed(s):
    """Pause (button) → new jobs stay pending for seconds while its worker runs; Resume → they are done."""
    s.ensure_admin()
    p = s.page
    s.dtq.produce('thumbnails', 'noop', payload={'image': 'cat.jpg', 'size': 128})
    H.wait_until(lambda: s.dtq.stats().get('thumbnails', {}).get('completed') == 1, 10, 0.2,
                 'the worker to take a job from thumbnails before the pause')
    p.load('#/queues/thumbnails')
    p.click('#queue-pause')
    p.wait_visible('#queue-paused')
    p.wait_visible('#queue-resume')
    assert not p.visible('#queue-pause')
    p.wait_text('#status', lambda t: 'Paused queue thumbnails' in t)
    assert s.dtq.stats()['thumbnails']['paused'] is True
    # /v1/queues is a sample shared by all clients, at most a second old.
    H.wait_until(lambda: s.dtq.api_ok('GET', '/v1/queues')['queues']['thumbnails']['paused'] is True, 3, 0.1,
                 'GET /v1/queues to report the pause')
    ids = s.dtq.produce('thumbnails', 'noop', count=5, payload={'image': 'dog.jpg', 'size': 256})
    traffic_before = s.dtq.stats()['traffic']['processed']
    end = time.monotonic() + 4
    while time.monotonic() < end:
        st = s.dtq.stats()['thumbnails']
        assert (st['pending'], st['inflight'], st['completed']) == (5, 0, 1), f'paused queue moved: {st}'
        time.sleep(0.4)
    s.check_alive()
    # Meanwhile the same worker kept taking jobs from its other queue.
    traffic_after = s.dtq.stats()['traffic']['processed']
    assert traffic_after > traffic_before, f'worker B processed nothing in traffic ({traffic_before} → {traffic_after})'
    workers = s.dtq.api_ok('GET', '/v1/workers')['workers']
    assert any(any(q['name'] == 'thumbnails' for q in w['queues']) for w in workers), workers
    p.wait_text('#state-tabs [data-count=pending]', lambda t: t == '5')
    p.click('#queue-resume')
    p.wait_visible('#queue-pause')
    H.wait_until(lambda: (lambda st: st['pending'] == 0 and st['completed'] == 6)(s.dtq.stats()['thumbnails']),
                 15, 0.2, 'the 5 jobs to be done after the resume')
    p.wait_text('#state-tabs [data-count=completed]', lambda t: t == '6')
    assert not p.visible('#queue-paused')
    for jid in ids:
        assert s.dtq.api_ok('GET', f'/v1/jobs/{jid}?queue=thumbnails')['state'] == 'completed'


def schedules_page_shows_real_schedules_and_pauses_resumes_and_triggers(s):
    """Two real schedules: the rows show definition, target and next run as the API does (03:00 Berlin); a 2-second one's ticks appear as its last job, completed, without a reload; Trigger now → a job the worker completes; Pause → no next run and no tick for 4 s; Resume → ticks again."""
    from datetime import datetime
    from zoneinfo import ZoneInfo
    s.ensure_admin()
    p = s.page
    s.dtq.cli('admin', 'schedule', 'add', 'nightly-report', '--cron', '0 3 * * *', '--tz', 'Europe/Berlin',
              '--kind', 'echo', '--queue', 'reports', '--payload', json.dumps({'report': 'nightly'}))
    s.dtq.cli('admin', 'schedule', 'add', 'heartbeat', '--every', '2s', '--kind', 'noop', '--queue', 'reports')
    try:
        def cell(name, field):
            return f'tr[data-schedule="{name}"] td[data-field={field}]'

        def api(name):
            return {x['name']: x for x in s.dtq.api_ok('GET', '/v1/schedules')['schedules']}[name]

        p.load('#/schedules')
        p.wait(lambda: p.present(cell('heartbeat', 'def')) and p.present(cell('nightly-report', 'def')), 10, 'both rows')
        p.js('window.__sameDocument = true')
        assert p.text(cell('nightly-report', 'def')) == '0 3 * * * (Europe/Berlin)', p.text(cell('nightly-report', 'def'))
        assert p.text(cell('heartbeat', 'def')) == 'every 2s', p.text(cell('heartbeat', 'def'))
        assert p.text(cell('nightly-report', 'target')) == 'echo → reports', p.text(cell('nightly-report', 'target'))
        shown = p.js("return document.querySelector(arguments[0] + ' time').getAttribute('datetime')",
                     cell('nightly-report', 'next'))
        assert shown == api('nightly-report')['next_run'], (shown, api('nightly-report'))
        local = datetime.fromisoformat(shown.replace('Z', '+00:00')).astimezone(ZoneInfo('Europe/Berlin'))
        assert local.strftime('%H:%M:%S') == '03:00:00', local

        # The 2-second schedule ticks by itself (the reaper inside the workers); the page follows.
        def last_tick_completed():
            t = p.text(cell('heartbeat', 'job')) or ''
            return t.startswith('cron:heartbeat:') and t.endswith('completed')
        p.wait(last_tick_completed, 15, "the heartbeat schedule's last job, completed")
        tick = api('heartbeat')['last_job_id']
        assert tick.startswith('cron:heartbeat:20') and tick.endswith('Z'), tick
        assert s.dtq.api_ok('GET', f'/v1/jobs/{urllib.parse.quote(tick, safe="")}?queue=reports')['state'] == 'completed'

        # Trigger now: a job of its own, run by the worker, shown as the last job.
        p.click('tr[data-schedule="nightly-report"] button[data-test=schedule-trigger]')
        p.wait_text('#status', lambda t: 'Triggered schedule nightly-report: job cron:nightly-report:manual:' in t,
                    what='the "Triggered" announcement')
        manual = api('nightly-report')['last_job_id']
        assert manual.startswith('cron:nightly-report:manual:'), manual
        p.wait_text(cell('nightly-report', 'job'), lambda t: t == f'{manual} completed', timeout=15)
        job = s.dtq.api_ok('GET', f'/v1/jobs/{urllib.parse.quote(manual, safe="")}?queue=reports')
        assert (job['state'], job['result']) == ('completed', {'report': 'nightly'}), job

        # Pause: no next run, no new tick; Resume: ticks again.
        p.click('tr[data-schedule="heartbeat"] button[data-test=schedule-pause]')
        p.wait_text('#status', lambda t: 'Paused schedule heartbeat.' in t)
        p.wait_text(cell('heartbeat', 'paused'), lambda t: t == 'paused')
        p.wait_text(cell('heartbeat', 'next'), lambda t: t == '—')
        assert p.visible('tr[data-schedule="heartbeat"] button[data-test=schedule-resume]')
        assert not p.visible('tr[data-schedule="heartbeat"] button[data-test=schedule-pause]')
        paused = api('heartbeat')
        assert paused['paused'] is True and paused['next_run'] is None, paused
        time.sleep(4.5)
        assert api('heartbeat')['last_job_id'] == paused['last_job_id'], 'a paused schedule ticked'
        p.click('tr[data-schedule="heartbeat"] button[data-test=schedule-resume]')
        p.wait_text('#status', lambda t: 'Resumed schedule heartbeat.' in t)
        p.wait_text(cell('heartbeat', 'paused'), lambda t: t == 'no')
        p.wait(lambda: p.present(cell('heartbeat', 'next') + ' time'), 5, 'a next run again')
        H.wait_until(lambda: api('heartbeat')['last_job_id'] != paused['last_job_id'], 10, 0.25,
                     'the resumed schedule to tick')
        assert p.js('return window.__sameDocument === true'), 'the page was reloaded'
    finally:
        s.dtq.cli('admin', 'schedule', 'remove', 'heartbeat')


def read_only_token_cannot_requeue(s):
    """Signed in read-only: no requeue/delete/cancel/pause/enqueue controls on the dead tab or job page; a fetch POST with its CSRF token gets 403."""
    p = s.page
    exports = s.ids['export-csv']
    try:
        p.sign_in(s.dtq.ro_token, 'read-only', '#/queues/exports?state=dead')
        p.wait_job_rows(3)
        mutating = ['#action-requeue', '#action-delete', '#action-cancel', '#queue-pause', '#queue-resume',
                    '#enqueue-toggle', '#enqueue-form', '#select-page', '#select-all-matching',
                    'input[data-test=select-job]']
        found = [c for c in mutating if p.present(c)]
        assert not found, f'read-only queue page has {found}'
        buttons = p.js("return [...document.querySelectorAll('#main button')].map(b => b.textContent.trim())")
        assert set(buttons) <= {'Filter', 'Clear filter', '← Newer', 'Older →'}, buttons
        p.go('#/queues/exports?state=pending')
        p.wait(lambda: p.visible('#jobs-empty') or p.job_rows(), 10, 'the pending tab')
        assert not [c for c in mutating if p.present(c)]

        p.go(f'#/jobs/{exports[0]}?queue=exports')
        p.wait_text('#job-state', lambda t: t == 'dead')
        found = [c for c in ('#job-requeue', '#job-cancel', '#job-delete') if p.present(c)]
        assert not found, f'read-only job page has {found}'
        assert p.js("return document.querySelectorAll('#main button').length") == 0

        p.go('#/schedules')
        p.wait(lambda: p.present('tr[data-schedule="nightly-report"]'), 10, 'the schedules page')
        assert p.js("return document.querySelectorAll('#main button').length") == 0, 'read-only schedule controls'

        res = p.async_js("""
            const s = await (await fetch('/v1/session', {credentials: 'same-origin'})).json();
            const post = async (path, body) => {
              const r = await fetch(path, {method: 'POST', credentials: 'same-origin',
                headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf}, body: JSON.stringify(body)});
              return [r.status, await r.text()];
            };
            return {role: s.role, csrf: !!s.csrf,
                    requeue: await post('/v1/queues/exports/requeue', {ids: [args[0]]}),
                    delete: await post('/v1/queues/exports/delete', {ids: [args[0]]}),
                    pause: await post('/v1/queues/exports/pause', {}),
                    trigger: await post('/v1/schedules/nightly-report/trigger', {})};""", exports[0])
        assert res.get('role') == 'read-only' and res.get('csrf'), res
        for action in ('requeue', 'delete', 'pause', 'trigger'):
            status, body = res[action]
            assert status == 403, f'read-only {action}: {status} {body}'
            assert json.loads(body)['error']['code'] == 'forbidden', body
        assert s.dtq.api_ok('GET', f'/v1/jobs/{exports[0]}?queue=exports')['state'] == 'dead'
        st = s.dtq.stats()['exports']
        assert st['dead'] == 3 and not st['paused'], st
    finally:
        s.ensure_admin()


def script_payload_is_shown_as_text(s):
    """A payload with <script> and <img onerror> (and an error with markup) shows as literal text; window.__xss stays undefined."""
    s.ensure_admin()
    p = s.page
    jid = s.ids[XSS_KIND][0]
    p.load(f'#/jobs/{jid}?queue=webhooks')
    p.wait_visible('#job-payload')
    payload = p.text('#job-payload')
    assert XSS_SCRIPT in payload, payload
    assert 'onerror=\\"window.__xss=2\\"' in payload and '<img src=x' in payload, payload
    error = p.text('#job-error')
    assert '<script>window.__xss=3</script><img src=x onerror=window.__xss=4>' in error, error
    bad = "return document.querySelectorAll('#main script, #main img, #main html, #main iframe').length"
    assert p.js(bad) == 0
    assert p.js('return typeof window.__xss') == 'undefined'

    p.go('#/queues/webhooks?state=dead')
    p.wait_job_rows(1)
    cells = p.js("return [...document.querySelectorAll('#job-table tbody td')].map(td => td.textContent + '|' + (td.title || ''))")
    joined = '\n'.join(cells)
    assert '<script>window.__xss=1</script>' in joined and '<script>window.__xss=3</script>' in joined, joined
    assert p.js(bad) == 0
    time.sleep(2.3)  # one more poll of the page
    assert p.js('return typeof window.__xss') == 'undefined'
    assert p.js(bad) == 0


def accessibility_has_no_serious_or_critical_violation(s):
    """axe-core on the overview, a queue page (dead tab with jobs), a job page, the workers page and the schedules page: no serious or critical violation."""
    s.ensure_admin()
    p = s.page
    invoice = s.ids['invoice'][0]
    pages = [
        ('overview', '#/', lambda: p.js("return document.querySelectorAll('#queue-table tbody tr').length") >= 9),
        ('queue', '#/queues/notifications?state=dead', lambda: len(p.job_rows()) == 5),
        ('job', f'#/jobs/{invoice}?queue=payments', lambda: p.js("return document.querySelectorAll('#job-history > li').length") >= 2),
        ('workers', '#/workers', lambda: p.js("return document.querySelectorAll('#worker-table tbody tr').length") == 2),
        ('schedules', '#/schedules', lambda: p.present('tr[data-schedule="nightly-report"]')),
    ]
    bad = []
    for name, hash_, ready in pages:
        p.load(hash_)
        p.wait(ready, 10, f'the {name} page')
        time.sleep(0.2)
        violations = p.axe()
        assert isinstance(violations, list), violations
        for v in violations:
            H.log(f'    axe {name}: {v["impact"]} {v["id"]}: {v["help"]}')
            for n in v['nodes']:
                H.log(f'        {n[:300]}')
            if v['impact'] in ('serious', 'critical'):
                bad.append(f'{name}: {v["impact"]} {v["id"]} ({v["help"]}) at {v["nodes"][:2]}')
        H.log(f'    axe {name}: {len(violations)} violation(s), '
              f'{sum(v["impact"] in ("serious", "critical") for v in violations)} serious/critical')
    assert not bad, 'axe-core: ' + '\n'.join(bad)


def screenshots_of_overview_queue_job_and_workers(s):
    """overview.png, queue.png (dead tab), job.png (2 attempts), workers.png (2 workers, busy) at 1280×800 in DTQ_PANEL_SHOTS."""
    s.ensure_admin()
    p = s.page
    out = H.repo_path(os.environ.get('DTQ_PANEL_SHOTS', os.path.join(H.REPO, 'target', 'panel-shots')))
    prefix = os.environ.get('DTQ_PANEL_SHOT_PREFIX', '')
    # A few long jobs, so that the workers page shows busy slots.
    s.dtq.api_ok('POST', '/v1/jobs', [{'queue': 'traffic', 'kind': 'sleep', 'payload': {'ms': 30000}} for _ in range(3)])
    shots = []

    def shot(name, show=None):
        path = os.path.join(out, f'{prefix}{name}.png')
        size = p.screenshot(path, show)
        assert size == (1280, 800), f'{path} is {size[0]}×{size[1]}, want 1280×800'
        shots.append(path)

    p.load('#/')
    p.wait(lambda: p.js("return document.querySelectorAll('#queue-table tbody tr').length") >= 9, 10, 'the queue rows')
    p.wait(lambda: p.present('#throughput-chart canvas'), 10, 'the throughput chart')
    time.sleep(2.5)  # one more poll: the chart has its latest points
    shot('overview')

    p.load('#/queues/notifications?state=dead')
    p.wait_job_rows(5)
    shot('queue')

    p.load(f'#/jobs/{s.ids["invoice"][0]}?queue=payments')
    p.wait(lambda: p.js("return document.querySelectorAll('#job-history > li').length") >= 2, 10, 'two attempts')
    shot('job', '#job-history')  # scrolled so that the whole timeline is on it

    p.load('#/workers')
    p.wait(lambda: p.js("return document.querySelectorAll('#worker-table tbody tr').length") == 2, 10, 'two workers')
    busy_b = f'tr[data-worker] details[data-test=busy-jobs] summary'
    p.wait(lambda: any(t.startswith('3 /') for t in p.js(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", busy_b)), 12, '3 busy slots')
    p.js("""for (const d of document.querySelectorAll('details[data-test=busy-jobs]'))
              if (d.querySelector('summary').textContent.startsWith('3 /')) d.open = true;""")
    shot('workers')
    H.log('    ' + '\n    '.join(shots))


def no_csp_violation_or_js_error_on_any_page(s):
    """Every page (sign-in, overview, each tab of a queue, job, missing job, workers, schedules, enqueue form) and every page the other tests saw: no CSP violation, no JS error, no unexpected console error."""
    p = s.page
    p.d.delete_all_cookies()
    p.load('#/')
    p.wait_visible('#sign-in-form')
    p.collect('sign-in view')
    s.ensure_admin()
    p.wait(lambda: p.present('#queue-table tbody tr'), 10, 'the overview')
    p.type('#queue-filter', 'pay')
    p.wait(lambda: p.js("return [...document.querySelectorAll('#queue-table tbody tr')].filter(t => !t.hidden).length") == 1,
           5, 'the client-side queue filter')
    for q in ('payments', 'emails'):
        for state in COUNTS:
            p.go(f'#/queues/{q}?state={state}')
            p.wait(lambda: p.visible('#jobs-empty') or p.job_rows(), 10, f'{q} {state}')
    p.go('#/queues/payments?state=dead')
    p.wait(lambda: p.job_rows(), 10, 'the dead jobs')
    p.click('#enqueue-toggle')
    p.wait_visible('#enqueue-form')
    p.type('#enqueue-kind', 'ping')
    p.type('#enqueue-payload', '{not json')
    p.click('#enqueue-submit')
    p.wait_visible('#enqueue-error-payload')
    p.type('#enqueue-payload', '{"hello": "world"}')
    p.click('#enqueue-submit')
    p.wait_visible('#enqueue-result')
    assert 'Enqueued job' in p.text('#enqueue-result'), p.text('#enqueue-result')
    p.go(f'#/jobs/{s.ids["invoice"][0]}?queue=payments')
    p.wait_visible('#job-history')
    p.go('#/jobs/01NOSUCHJOB0000000000000000?queue=payments')
    p.wait_visible('#job-not-found')
    p.go('#/workers')
    p.wait_visible('#worker-table')
    p.go('#/schedules')
    p.wait_text('h1', lambda t: t == 'Schedules')
    p.wait(lambda: p.visible('#page-error') or p.visible('#no-schedules') or p.visible('#schedule-table'), 10,
           'the schedules page to show its error or empty state')
    time.sleep(0.5)
    p.d.back()  # the back button goes to the workers page
    p.wait_text('h1', lambda t: t == 'Workers')
    p.load('#/')  # a fresh document once more: its problems are read by collect()
    p.wait(lambda: p.present('#queue-table tbody tr'), 10, 'the overview')
    p.collect()
    problems = p.problems
    assert not problems, f'{len(problems)} problem(s):\n' + '\n'.join(f'  [{w}] {m}' for w, m in problems)


TESTS = [
    sign_in_with_admin_token_and_wrong_token_is_refused,
    overview_shows_the_counts_of_inspect_stats,
    dead_job_found_by_error_search_requeued_and_completed,
    bulk_delete_of_a_filtered_selection_removes_exactly_those,
    paused_queue_is_not_taken_from_until_resumed,
    schedules_page_shows_real_schedules_and_pauses_resumes_and_triggers,
    read_only_token_cannot_requeue,
    script_payload_is_shown_as_text,
    accessibility_has_no_serious_or_critical_violation,
    screenshots_of_overview_queue_job_and_workers,
    no_csp_violation_or_js_error_on_any_page,
]


# ================================================================ runner

def main(argv):
    if '--list' in argv:
        for t in TESTS:
            print(f'{t.__name__}: {t.__doc__}')
        return 0
    wanted = [a for a in argv if not a.startswith('-')]
    tests = [t for t in TESTS if not wanted or any(w in t.__name__ for w in wanted)]
    if not tests:
        print(f'no test matches {wanted}', file=sys.stderr)
        return 2
    H.install_signal_handlers()
    t_start = time.monotonic()
    s = Suite()
    results = []
    try:
        try:
            s.setup()
        except BaseException:
            traceback.print_exc()
            for p in s.procs.procs:
                if p.dtq_log and os.path.exists(p.dtq_log):
                    H.log(f'--- {p.dtq_name} log (last lines)\n' + open(p.dtq_log, errors='replace').read()[-2000:])
            print('panel tests: the set-up failed', file=sys.stderr)
            return 1
        for t in tests:
            t0 = time.monotonic()
            H.log(f'--- {t.__name__}')
            try:
                t(s)
                if s.page:
                    s.page.collect()
                ok, err = True, None
            except Exception as e:  # noqa: BLE001
                ok, err = False, e
                traceback.print_exc()
                save_failure(s, t.__name__)
            dt = time.monotonic() - t0
            results.append((t.__name__, ok, dt, err))
            H.log(f'{"PASS" if ok else "FAIL"} {t.__name__} ({dt:.1f} s)')
    finally:
        s.teardown()
    total = time.monotonic() - t_start
    failed = [r for r in results if not r[1]]
    print(f'\npanel tests: {len(results) - len(failed)} passed, {len(failed)} failed in {total:.1f} s')
    for name, ok, dt, err in results:
        print(f'  {"ok  " if ok else "FAIL"} {dt:5.1f} s  {name}' + ('' if ok else f': {first_line(err)}'))
    if failed:
        print('FAILED: ' + ', '.join(r[0] for r in failed))
        return 1
    return 0


def first_line(err):
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else repr(err))[:300]


def save_failure(s, name):
    if not s.page:
        return
    out = H.repo_path(os.environ.get('DTQ_PANEL_FAILURES', os.path.join(H.REPO, 'target', 'panel-failures')))
    try:
        os.makedirs(out, exist_ok=True)
        s.page.d.save_screenshot(os.path.join(out, f'{name}.png'))
        with open(os.path.join(out, f'{name}.html'), 'w') as f:
            f.write(s.page.d.page_source)
        H.log(f'    at {s.page.d.current_url}; screenshot and HTML in {out}/{name}.*')
    except Exception as e:  # noqa: BLE001
        H.log(f'    (no failure screenshot: {e})')


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
