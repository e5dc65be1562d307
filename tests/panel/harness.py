"""Shared helpers of the panel browser tests (test_panel.py) and the scale
measurement (load.py): processes, a tiny Redis client for cleaning up our own
namespace, `dtq serve` with token files, the JSON API, and headless Chromium
driven by Selenium.

Plain Python 3.11 plus selenium; nothing else.
"""
import json
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
CHROMIUM = os.environ.get('DTQ_CHROMIUM', '/usr/bin/chromium')
CHROMEDRIVER = os.environ.get('DTQ_CHROMEDRIVER', '/usr/bin/chromedriver')
AXE_JS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'node_modules', 'axe-core', 'axe.min.js')


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def repo_path(p):
    """A path from the environment: relative ones are relative to the current directory."""
    return os.path.abspath(p)


def dtq_bin():
    b = os.environ.get('DTQ_BIN', os.path.join(REPO, 'target', 'release', 'dtq'))
    b = repo_path(b)
    if not os.access(b, os.X_OK):
        raise SystemExit(f'DTQ_BIN {b} is not an executable (build it, or set DTQ_BIN)')
    return b


def redis_url():
    u = os.environ.get('DTQ_REDIS_URL')
    if not u:
        raise SystemExit('DTQ_REDIS_URL is required (e.g. redis://127.0.0.1:6379)')
    return u


def unique_namespace(prefix):
    rnd = ''.join(random.choice(string.ascii_lowercase + string.digits) for _ in range(6))
    return f'{prefix}-{os.getpid()}-{rnd}'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_until(cond, timeout, interval=0.1, what='condition'):
    """cond() until it returns something truthy (that value is returned), or AssertionError."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 (stale elements, transient I/O)
            last_exc = e
        if time.monotonic() > deadline:
            extra = f' (last error: {last_exc!r})' if last_exc else ''
            raise AssertionError(f'timed out after {timeout} s waiting for {what}{extra}')
        time.sleep(interval)


# ---------------------------------------------------------------- processes

class Procs:
    """Processes this run started; stop_all() ends them (by pid, own session)."""

    def __init__(self):
        self.procs = []

    def start(self, name, args, env=None, log_path=None):
        out = open(log_path, 'ab') if log_path else subprocess.DEVNULL
        p = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        if log_path:
            out.close()
        p.dtq_name = name
        p.dtq_log = log_path
        self.procs.append(p)
        return p

    def stop(self, p, grace=5.0):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)  # its own session: the process and its handlers
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(reversed(self.procs)):
            try:
                self.stop(p)
            except Exception as e:  # noqa: BLE001
                log(f'could not stop {p.dtq_name} (pid {p.pid}): {e}')


def install_signal_handlers():
    """SIGTERM/SIGHUP end the run through the normal clean-up path."""
    def bye(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, bye)
    signal.signal(signal.SIGHUP, bye)


# ---------------------------------------------------------------- Redis (clean-up only)

class MiniRedis:
    """Just enough RESP2 to SCAN and UNLINK our own namespace's keys (redis:// only)."""

    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        if u.scheme != 'redis':
            raise ValueError(f'clean-up supports redis:// URLs only, not {u.scheme}://')
        self.sock = socket.create_connection((u.hostname or '127.0.0.1', u.port or 6379), timeout=10)
        self.buf = b''
        if u.password:
            user = urllib.parse.unquote(u.username or '')
            pw = urllib.parse.unquote(u.password)
            self.cmd('AUTH', user, pw) if user else self.cmd('AUTH', pw)
        db = (u.path or '/').strip('/')
        if db:
            self.cmd('SELECT', db)

    def _line(self):
        while b'\r\n' not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError('Redis closed the connection')
            self.buf += chunk
        line, self.buf = self.buf.split(b'\r\n', 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError('Redis closed the connection')
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b'+':
            return rest.decode()
        if t == b'-':
            raise RuntimeError(rest.decode())
        if t == b':':
            return int(rest)
        if t == b'$':
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if t == b'*':
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError(f'bad RESP reply {line!r}')

    def cmd(self, *args):
        parts = [b'*%d\r\n' % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b'$%d\r\n%s\r\n' % (len(b), b))
        self.sock.sendall(b''.join(parts))
        return self._reply()

    def delete_namespace(self, ns):
        """UNLINKs every key of namespace ns (all of them start with "NS:"). Returns the count."""
        assert ns and not any(c in ns for c in '*?[]\\'), ns
        cursor, n = b'0', 0
        while True:
            cursor, keys = self.cmd('SCAN', cursor, 'MATCH', f'{ns}:*', 'COUNT', 2000)
            if keys:
                n += self.cmd('UNLINK', *keys)
            if cursor in (b'0', '0'):
                return n

    def close(self):
        self.sock.close()


def delete_namespace(url, ns):
    try:
        r = MiniRedis(url)
        try:
            n = r.delete_namespace(ns)
        finally:
            r.close()
        log(f'removed {n} keys of namespace {ns}')
    except Exception as e:  # noqa: BLE001
        log(f'warning: could not remove the keys of namespace {ns}: {e}')


# ---------------------------------------------------------------- dtq

class Dtq:
    """The dtq binary in one namespace: CLI calls, serve and workers."""

    def __init__(self, ns, tmp, procs):
        self.bin = dtq_bin()
        self.redis = redis_url()
        self.ns = ns
        self.tmp = tmp
        self.procs = procs
        self.env = dict(os.environ, DTQ_REDIS_URL=self.redis)
        for k in ('DTQ_NAMESPACE', 'DTQ_QUEUES', 'DTQ_CONCURRENCY', 'DTQ_TOKEN_FILE', 'DTQ_READ_ONLY_TOKEN_FILE',
                  'DTQ_SERVE_LISTEN'):
            self.env.pop(k, None)
        self.env.setdefault('RUST_LOG', 'warn')

    def cli(self, *args, input=None, timeout=60):
        """Runs `dtq --namespace NS ARGS...`; its stdout, or an error with its output."""
        cmd = [self.bin, '--namespace', self.ns, *map(str, args)]
        r = subprocess.run(cmd, env=self.env, input=input, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f'{" ".join(cmd)} exited with {r.returncode}:\n{r.stdout}{r.stderr}')
        return r.stdout

    def stats(self):
        return json.loads(self.cli('inspect', 'stats', '--json'))['queues']

    def produce(self, queue, kind, count=1, payload=None, max_retries=None, delay=None):
        """Enqueues jobs through the CLI; their ids."""
        args = ['produce', '--queue', queue, '--kind', kind, '--count', count, '--json']
        if payload is not None:
            args += ['--payload', json.dumps(payload)]
        if max_retries is not None:
            args += ['--max-retries', max_retries]
        if delay is not None:
            args += ['--delay', delay]
        return [json.loads(l)['id'] for l in self.cli(*args).splitlines() if l.strip()]

    def produce_file(self, lines):
        """Enqueues NDJSON job specs through `produce --file`."""
        path = os.path.join(self.tmp, f'jobs-{time.monotonic_ns()}.ndjson')
        with open(path, 'w') as f:
            for spec in lines:
                f.write(json.dumps(spec, separators=(',', ':')) + '\n')
        try:
            return self.cli('produce', '--file', path, timeout=300)
        finally:
            os.remove(path)

    def worker(self, name, queues, *extra):
        log_path = os.path.join(self.tmp, f'{name}.log')
        args = [self.bin, '--namespace', self.ns, 'work', '--queues', queues, '--listen', 'off',
                '--log-summary-every', 'off', '--shutdown-grace', '2s', *map(str, extra)]
        return self.procs.start(name, args, env=self.env, log_path=log_path)

    def serve(self):
        """Starts `dtq serve` on a free loopback port with an admin and a read-only token file."""
        self.admin_token = 'adm-' + os.urandom(16).hex()
        self.ro_token = 'ro-' + os.urandom(16).hex()
        admin_file = os.path.join(self.tmp, 'admin.tokens')
        ro_file = os.path.join(self.tmp, 'read-only.tokens')
        for path, tok in ((admin_file, self.admin_token), (ro_file, self.ro_token)):
            with open(path, 'w') as f:
                f.write(tok + '\n')
            os.chmod(path, 0o600)
        log_path = os.path.join(self.tmp, 'serve.log')
        for _attempt in range(3):
            port = free_port()
            p = self.procs.start('serve', [self.bin, '--namespace', self.ns, 'serve', '--listen', f'127.0.0.1:{port}',
                                           '--token-file', admin_file, '--read-only-token-file', ro_file],
                                 env=self.env, log_path=log_path)
            self.base = f'http://127.0.0.1:{port}'
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and p.poll() is None:
                try:
                    status, _ = self.api('GET', '/v1/session', token=None)
                    if status == 401:
                        self.serve_proc = p
                        return self.base
                except OSError:
                    pass
                time.sleep(0.05)
            self.procs.stop(p)  # the port was taken meanwhile, or it did not start: try again
        raise RuntimeError(f'dtq serve did not start; its log:\n{open(log_path).read()}')

    def api(self, method, path, body=None, token='admin'):
        """(status, decoded JSON or text) of one API request; token 'admin', 'ro' or None."""
        headers = {'Accept': 'application/json'}
        if token:
            headers['Authorization'] = 'Bearer ' + (self.admin_token if token == 'admin' else self.ro_token)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers['Content-Type'] = 'application/json'
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors='replace')

    def api_ok(self, method, path, body=None, token='admin'):
        status, data = self.api(method, path, body, token)
        if not 200 <= status < 300:
            raise AssertionError(f'{method} {path} answered {status}: {data}')
        return data

    def jobs(self, queue, state, **filters):
        """Every job of a state (following the cursor), as listed by the API."""
        out, cursor = [], None
        while True:
            qs = {'state': state, 'limit': 1000, **{k: v for k, v in filters.items() if v}}
            if cursor:
                qs['cursor'] = cursor
            res = self.api_ok('GET', f'/v1/queues/{urllib.parse.quote(queue, safe="")}/jobs?{urllib.parse.urlencode(qs)}')
            out += res['jobs']
            cursor = res.get('next_cursor')
            if not cursor:
                return out


# ---------------------------------------------------------------- the browser

# Installed in every document before its own scripts (CDP): CSP violations and
# uncaught errors land in window.__dtqProblems; the rows-rendered probe of load.py.
INIT_SCRIPT = r"""
(() => {
  const problems = [];
  Object.defineProperty(window, '__dtqProblems', { value: problems });
  document.addEventListener('securitypolicyviolation', (e) => problems.push(
    `CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || '(inline)'} ${e.sourceFile || ''}:${e.lineNumber || ''} ${e.sample || ''}`));
  window.addEventListener('error', (e) => problems.push(`JS error: ${e.message} at ${e.filename}:${e.lineno}`));
  window.addEventListener('unhandledrejection', (e) => problems.push(`unhandled rejection: ${e.reason && (e.reason.stack || e.reason)}`));
  // load.py: the time the first N job rows of a queue page are in the DOM.
  let want = 0;
  try { want = Number(sessionStorage.getItem('dtqRowsProbe') || 0); } catch (e) { /* about:blank */ }
  if (want > 0) {
    const mo = new MutationObserver(() => {
      if (document.querySelectorAll('#job-table tbody tr[data-job]').length >= want) {
        window.__dtqRowsAt = performance.now();
        mo.disconnect();
      }
    });
    mo.observe(document, { childList: true, subtree: true });
  }
})();
"""

# "Failed to load resource" console entries for these statuses are expected
# (401 before sign-in, 403 of the read-only check, 404 of a missing job or of
# the not-yet-existing /v1/schedules route).
EXPECTED_STATUS = {401, 403, 404}


def browser(tmp, width=1280, height=800):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix='chromium-', dir=tmp)
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
              '--disable-background-networking', '--disable-component-update', '--disable-sync',
              '--no-first-run', f'--window-size={width},{height}', f'--user-data-dir={profile}'):
        o.add_argument(a)
    o.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    service = Service(CHROMEDRIVER, log_output=os.path.join(tmp, 'chromedriver.log'))
    d = webdriver.Chrome(service=service, options=o)
    d.set_script_timeout(60)
    # The viewport itself is 1280×800 (screenshots are of the viewport).
    d.execute_cdp_cmd('Emulation.setDeviceMetricsOverride',
                      {'width': width, 'height': height, 'deviceScaleFactor': 1, 'mobile': False})
    d.execute_cdp_cmd('Page.addScriptToEvaluateOnNewDocument', {'source': INIT_SCRIPT})
    return d


class Page:
    """The browser on the panel: navigation, waits, reads and the problems seen."""

    def __init__(self, driver, base):
        self.d = driver
        self.base = base
        self.problems = []  # (where, message): CSP violations, JS errors, SEVERE console entries
        self.visited = []

    # -- problems (CSP violations, JS errors, console errors)

    def collect(self, where=None):
        """Moves the problems of the current document and the console into self.problems."""
        where = where or self.where()
        found = []
        try:
            found += self.d.execute_script('return window.__dtqProblems ? window.__dtqProblems.splice(0) : []') or []
        except Exception as e:  # noqa: BLE001 (no document yet)
            log(f'(could not read page problems: {e})')
        for e in self.d.get_log('browser'):
            msg = e.get('message', '')
            if e.get('level') != 'SEVERE':
                continue
            if 'Failed to load resource: the server responded with a status of' in msg:
                code = int(msg.split('status of', 1)[1].split()[0])
                if code in EXPECTED_STATUS:
                    continue
            found.append(f'console {e.get("level")}: {msg}')
        for m in found:
            self.problems.append((where, m))
        return found

    def where(self):
        try:
            return self.d.execute_script('return location.hash') or '/'
        except Exception:  # noqa: BLE001
            return '?'

    # -- navigation

    def load(self, hash_='#/'):
        """A full page load (a new document)."""
        self.collect()
        self.d.get('about:blank')
        self.d.get(self.base + '/' + hash_)
        self.visited.append(hash_)

    def go(self, hash_):
        """Hash navigation inside the page (as a link click would)."""
        self.d.execute_script('location.hash = arguments[0]', hash_)
        self.visited.append(hash_)

    # -- reading

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def async_js(self, body, *args):
        """Runs an async function body; `return x` resolves the call."""
        return self.d.execute_async_script(
            'const done = arguments[arguments.length - 1];'
            f'(async (...args) => {{ {body} }})(...Array.from(arguments).slice(0, -1))'
            '.then(done, (e) => done({error: String(e && e.stack || e)}));', *args)

    def q(self, css):
        from selenium.webdriver.common.by import By
        els = self.d.find_elements(By.CSS_SELECTOR, css)
        return els[0] if els else None

    def text(self, css):
        return self.js('const e = document.querySelector(arguments[0]); return e ? e.textContent : null', css)

    def visible(self, css):
        """Whether an element matching css is in the DOM and rendered (not hidden)."""
        return bool(self.js("""
            const e = document.querySelector(arguments[0]);
            return !!e && e.isConnected && !e.closest('[hidden]') && e.getClientRects().length > 0;""", css))

    def present(self, css):
        return bool(self.js('return !!document.querySelector(arguments[0])', css))

    def wait(self, cond, timeout=10, what='the page'):
        return wait_until(cond, timeout, 0.05, what)

    def wait_visible(self, css, timeout=10):
        return self.wait(lambda: self.visible(css), timeout, f'{css} to be visible')

    def wait_text(self, css, pred, timeout=10, what=None):
        def ok():
            t = self.text(css)
            return t is not None and pred(t)
        try:
            return self.wait(ok, timeout, what or f'the text of {css}')
        except AssertionError as e:
            raise AssertionError(f'{e}; it is {self.text(css)!r}') from None

    def click(self, css, timeout=10):
        self.wait_visible(css, timeout)
        el = self.q(css)
        self.js("arguments[0].scrollIntoView({block: 'center'})", el)
        el.click()

    def type(self, css, text, clear=True):
        el = self.q(css)
        if clear:
            el.clear()
        el.send_keys(text)

    def job_rows(self):
        """ids of the job table's rows, in order."""
        return self.js("return [...document.querySelectorAll('#job-table tbody tr[data-job]')].map(t => t.dataset.job)")

    def wait_job_rows(self, n, timeout=10):
        return self.wait(lambda: len(self.job_rows()) == n and self.job_rows(), timeout,
                         f'{n} job rows (there are {len(self.job_rows())})')

    def role(self):
        return self.text('#role') if self.visible('#role') else None

    # -- session

    def sign_in(self, token, role, hash_='#/'):
        """Signs in afresh (no cookie) through the form; lands on hash_."""
        if not self.d.current_url.startswith(self.base):
            self.d.get(self.base + '/')
        self.d.delete_all_cookies()
        self.load(hash_)
        self.wait_visible('#sign-in-token')
        self.type('#sign-in-token', token)
        self.click('#sign-in-button')
        self.wait(lambda: self.role() == role, 10, f'the {role} role in the header')

    def screenshot(self, path, show=None):
        """The viewport as PNG; show: a selector to bring fully into view (as much of the top kept as fits)."""
        self.js('document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)')
        if show:
            self.js("""const r = document.querySelector(arguments[0]).getBoundingClientRect();
                       window.scrollTo(0, Math.max(0, r.bottom + 16 - window.innerHeight));""", show)
        time.sleep(0.3)  # let the last paint settle
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not self.d.save_screenshot(path):
            raise AssertionError(f'could not save {path}')
        return png_size(path)

    def axe(self):
        """axe-core's violations on the document as it is now."""
        if not self.js('return typeof axe === "object"'):
            with open(AXE_JS) as f:
                self.js(f.read())
        return self.async_js("""
            const r = await axe.run(document, {resultTypes: ['violations']});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
              nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ' :: ' + (n.failureSummary || '').replace(/\\s+/g, ' '))}));""")


def png_size(path):
    with open(path, 'rb') as f:
        head = f.read(24)
    assert head[:8] == b'\x89PNG\r\n\x1a\n', f'{path} is not a PNG'
    return int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big')


def make_tmp(prefix):
    return tempfile.mkdtemp(prefix=prefix)


def remove_tmp(path):
    shutil.rmtree(path, ignore_errors=True)
