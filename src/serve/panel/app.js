/* dtq web panel: plain JavaScript, no framework, no build step.
 *
 * It talks to `dtq serve` only through the JSON /v1 API. Every string that
 * comes from the server goes into the page as text (textContent, text nodes,
 * attribute setters), never as HTML. Styles come from app.css only (the CSP
 * forbids inline styles); uPlot sizes its own elements through the CSSOM.
 *
 * Stable hooks for browser tests (ids unless marked [data-test]):
 *   header     #brand #nav #nav-overview #nav-workers #nav-schedules (aria-current="page" on the current one)
 *              #role (admin | read-only) #sign-out
 *   global     #banner (Redis / server unreachable) #status (aria-live results) #main #page-error
 *              #confirm-dialog #confirm-yes #confirm-no (confirmation of bulk actions)
 *   sign-in    #sign-in-form #sign-in-token #sign-in-button #sign-in-error
 *   overview   #alerts > li[data-test=alert][data-level=warning|error]
 *              #redis-card dd[data-field=version|mode|memory|policy|clients]
 *              #throughput-chart #chart-legend (span[data-test=legend-processed|legend-failed])
 *              #queue-filter #queue-count #queue-table #no-queues
 *              tr[data-queue=NAME] > td[data-count=pending|inflight|scheduled|dead|completed
 *                                      |oldest_pending_age|processed_per_s|failed_per_s], td[data-test=paused]
 *              performance mark "dtq-overview-rendered" after the first table render
 *   queue      #queue-name #queue-paused #queue-pause #queue-resume #pause-error
 *              #state-tabs > a[data-test=tab][data-state=S] (aria-current="page" when selected) > span[data-count]
 *              #job-filters #filter-kind #filter-search #filter-since #filter-apply #filter-clear
 *              #jobs-range #jobs-total #job-table #jobs-empty tr[data-job=ID] > input[data-test=select-job]
 *              #select-page #selection-info #select-all-matching #clear-selection
 *              #action-requeue #action-cancel #action-delete #action-error #page-newer #page-older
 *              #enqueue-toggle #enqueue-form #enqueue-kind #enqueue-payload #enqueue-id
 *              #enqueue-idempotency-key #enqueue-delay #enqueue-max-retries #enqueue-timeout
 *              #enqueue-submit #enqueue-error-FIELD (FIELD = kind|payload|id|idempotency_key|delay|
 *              max_retries|timeout|form) #enqueue-result
 *   job        #job-id #job-state #job-corrupt #job-fields > dd[data-field=queue|kind|state|attempts|
 *              max_retries|enqueued_at|run_at|lease_until|finished_at|idempotency_key]
 *              #job-payload #job-result #job-error #job-history > li[data-attempt=N] span[data-test=attempt-worker]
 *              #job-requeue #job-cancel #job-delete #job-action-error #job-not-found
 *   workers    #worker-count #worker-table tr[data-worker=ID] details[data-test=busy-jobs] #no-workers
 *   schedules  #schedule-table tr[data-schedule=NAME] > td[data-field=def|target|next|last|job|paused]
 *              button[data-test=schedule-pause|schedule-resume|schedule-trigger] #schedule-error #no-schedules
 */
'use strict';

// ------------------------------------------------------------------ DOM helpers

const PROPS = new Set(['value', 'checked', 'hidden', 'disabled', 'open', 'indeterminate', 'selected']);

/** An element: h('a', {href: '#/', class: 'x', onclick: fn}, 'text', child, [more]). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'style') throw new Error('inline styles are not allowed (CSP)');
    if (k === 'class') el.className = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (PROPS.has(k)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  return append(el, children);
}

/** Appends children: nodes as they are, anything else as text. */
function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces el's content with children. */
function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** Sets text only when it changed (cheap polls, no needless layout). */
function setText(el, text) {
  text = text == null ? '' : String(text);
  if (el.textContent !== text) el.textContent = text;
}

function show(el, visible) {
  if (el.hidden === visible) el.hidden = !visible;
}

const $ = (sel, root = document) => root.querySelector(sel);
const enc = encodeURIComponent;

// ------------------------------------------------------------------ formatting

const NUM = new Intl.NumberFormat('en-US');
const RATE = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });

const fmtNum = (n) => (n == null ? '—' : NUM.format(n));
const fmtRate = (x) => (x == null ? '—' : RATE.format(x));
const plural = (n, one, many) => `${fmtNum(n)} ${n === 1 ? one : many || one + 's'}`;

/** An age or duration, coarse: "3 s", "2 min", "1 h 5 min", "2 d 3 h". */
function fmtAge(ms) {
  if (ms == null || !Number.isFinite(ms)) return '—';
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const hr = Math.floor(m / 60);
  if (hr < 24) return m % 60 ? `${hr} h ${m % 60} min` : `${hr} h`;
  const d = Math.floor(hr / 24);
  return hr % 24 ? `${d} d ${hr % 24} h` : `${d} d`;
}

/** A run time: milliseconds below a second, else as fmtAge. */
function fmtDuration(ms) {
  if (ms == null || !Number.isFinite(ms)) return '—';
  return ms < 1000 ? `${Math.max(0, Math.round(ms))} ms` : fmtAge(ms);
}

function fmtBytes(n) {
  if (n == null) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

const since = (iso) => Date.now() - Date.parse(iso);

/** "3 min ago" / "in 5 min" for an RFC 3339 time. */
function fmtRelative(iso) {
  const d = since(iso);
  if (!Number.isFinite(d)) return '—';
  return d >= 0 ? `${fmtAge(d)} ago` : `in ${fmtAge(-d)}`;
}

function fmtLocal(iso) {
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? String(iso) : t.toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'medium' });
}

/** A <time>: relative text, the full local time in the title (or in the text when full). */
function timeEl(iso, full) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso, title: fmtLocal(iso) }, full ? `${fmtLocal(iso)} (${fmtRelative(iso)})` : fmtRelative(iso));
}

/** A <time> as a clock reading ("20:21:47.736"), with the date when asked. */
function clockEl(iso, withDate) {
  const t = new Date(iso);
  if (!iso || Number.isNaN(t.getTime())) return h('span', { class: 'muted' }, '—');
  const clock = t.toLocaleTimeString('en-GB', { hour12: false }) + '.' + String(t.getMilliseconds()).padStart(3, '0');
  const date = t.toLocaleDateString('en-GB', { dateStyle: 'medium' });
  return h('time', { datetime: iso, title: `${date} ${clock}` }, withDate ? `${date} ${clock}` : clock);
}

/** Compact JSON, cut to max characters with an ellipsis. */
function preview(value, max = 80) {
  let s;
  try { s = JSON.stringify(value); } catch { s = String(value); }
  if (s === undefined) s = String(value);
  return s.length > max ? s.slice(0, max - 1) + '…' : s;
}

function oneLine(text, max = 120) {
  const s = String(text).replace(/\s+/g, ' ').trim();
  return s.length > max ? s.slice(0, max - 1) + '…' : s;
}

/** JSON pretty-printed; a string that parses as JSON is pretty-printed too. */
function pretty(value) {
  if (typeof value === 'string') {
    try { return JSON.stringify(JSON.parse(value), null, 2); } catch { return value; }
  }
  return JSON.stringify(value, null, 2);
}

const STATES = ['pending', 'scheduled', 'inflight', 'dead', 'completed'];
const STATE_LABEL = { pending: 'pending', scheduled: 'scheduled', inflight: 'in flight', dead: 'dead', completed: 'completed' };

function badge(text, kind) {
  return h('span', { class: `badge badge-${kind || text}` }, text);
}

// ------------------------------------------------------------------ links

function queueHash(name, params) {
  const qs = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v)).toString() : '';
  return `#/queues/${enc(name)}${qs ? '?' + qs : ''}`;
}

function jobHash(id, queue) {
  return `#/jobs/${enc(id)}${queue ? '?queue=' + enc(queue) : ''}`;
}

const jobLink = (id, queue, attrs) => h('a', { href: jobHash(id, queue), class: 'mono', ...attrs }, id);
const queueLink = (name) => h('a', { href: queueHash(name) }, name);

// ------------------------------------------------------------------ API client

/** An API error answer (or a network failure: status 0). */
class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/** The session: {role: 'admin'|'read-only', csrf}; null when signed out. */
let session = null;
const isAdmin = () => !!session && session.role === 'admin';

/**
 * One request. Mutating requests carry the CSRF token and a JSON body type.
 * 401 → the sign-in view; 503 redis_unavailable → the banner; any success
 * clears the banner.
 */
async function api(method, path, body, signal) {
  const headers = { Accept: 'application/json' };
  const opts = { method, headers, credentials: 'same-origin', cache: 'no-store', signal };
  const signingIn = method === 'POST' && path === '/v1/session';
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    if (!signingIn && session) headers['X-CSRF-Token'] = session.csrf;
    if (body !== undefined) opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    setBanner('server');
    throw new ApiError(0, 'network', 'cannot reach the dtq server');
  }
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    if (e.name === 'AbortError') throw e;
  }
  if (res.ok || res.status === 404) setBanner(null);
  else if (bannerKind === 'server') setBanner(null);
  if (res.ok) return data;
  const e = (data && data.error) || {};
  const err = new ApiError(res.status, e.code || `http_${res.status}`, e.message || `HTTP ${res.status}`, e.field);
  if (res.status === 503 && err.code === 'redis_unavailable') setBanner('redis');
  if (res.status === 401 && path !== '/v1/session') showSignIn('Your session has ended; sign in again.');
  throw err;
}

/** The message of an error, with its field when the server named one. */
const errText = (e) => (e.field && !String(e.message).includes(e.field) ? `${e.field}: ${e.message}` : e.message);

// ------------------------------------------------------------------ banner and status region

let bannerKind = null;

/** kind: 'redis' | 'server' | null (clear). */
function setBanner(kind) {
  if (kind === bannerKind) return;
  bannerKind = kind;
  const el = $('#banner');
  setText(el, kind === 'redis' ? 'Redis is unreachable — retrying' : kind === 'server' ? 'The dtq server is unreachable — retrying' : '');
  show(el, !!kind);
}

let statusTimer = null;

/** Announces an action result in the polite live region (text and links). */
function announce(...parts) {
  const el = $('#status');
  el.replaceChildren();
  clearTimeout(statusTimer);
  // A fresh node a moment later, so that a repeated message is read again.
  statusTimer = setTimeout(() => {
    append(el, [h('span', {}, ...parts)]);
    statusTimer = setTimeout(() => el.replaceChildren(), 20000);
  }, 50);
}

// ------------------------------------------------------------------ confirmation dialog

/** Asks in a modal <dialog>; resolves true when confirmed. */
function confirmDialog(title, text, yesLabel) {
  return new Promise((resolve) => {
    const before = document.activeElement;
    const yes = h('button', { id: 'confirm-yes', type: 'button', class: 'danger' }, yesLabel);
    const no = h('button', { id: 'confirm-no', type: 'button' }, 'Go back');
    const dlg = h('dialog', { id: 'confirm-dialog', 'aria-labelledby': 'confirm-title', 'aria-describedby': 'confirm-text' },
      h('h2', { id: 'confirm-title' }, title),
      h('p', { id: 'confirm-text' }, text),
      h('div', { class: 'buttons' }, no, yes));
    const done = (ok) => {
      dlg.close();
      dlg.remove();
      if (before && before.isConnected) before.focus();
      resolve(ok);
    };
    yes.addEventListener('click', () => done(true));
    no.addEventListener('click', () => done(false));
    dlg.addEventListener('cancel', (ev) => { ev.preventDefault(); done(false); });
    document.body.append(dlg);
    dlg.showModal();
    no.focus();
  });
}

// ------------------------------------------------------------------ pages and polling

const POLL_MS = 2000;
const STOP = Symbol('stop');

/** The page on screen: {route, dead, pollers, ctrl, cleanups, errorEl, onParams?}. */
let current = null;

function newPage(route) {
  return { route, dead: false, pollers: [], cleanups: [], ctrl: new AbortController(), errorEl: null, onParams: null };
}

function leavePage() {
  if (!current) return;
  current.dead = true;
  current.pollers.forEach((p) => p.stop());
  current.ctrl.abort();
  current.cleanups.forEach((f) => f());
  current = null;
}

/** A GET for the page: aborted when the page goes. */
const pageGet = (page, path) => api('GET', path, undefined, page.ctrl.signal);

/** Shows a failure of the page's data in its error line (401/503 are handled by api()). */
function pageFail(page, e) {
  if (page.dead || e.name === 'AbortError' || e.status === 401) return;
  if (e.status === 503 && e.code === 'redis_unavailable') return;
  if (!page.errorEl) return console.warn(e);
  setText(page.errorEl, `Could not load this page's data: ${errText(e)}`);
  show(page.errorEl, true);
}

/**
 * Runs fn now, then again POLL_MS after each run has finished (never two at
 * once), while the page is on screen and the tab is visible. fn may return
 * STOP to go idle until now() is called.
 */
function poll(page, fn) {
  const p = { timer: null, busy: false, again: false, idle: false };
  const schedule = () => {
    if (!page.dead && !document.hidden && !p.timer && !p.idle) p.timer = setTimeout(tick, POLL_MS);
  };
  async function tick() {
    p.timer = null;
    if (page.dead || document.hidden) return; // visibilitychange resumes it
    p.busy = true;
    try {
      if ((await fn()) === STOP) p.idle = true;
      if (page.errorEl) show(page.errorEl, false);
    } catch (e) {
      pageFail(page, e);
    } finally {
      p.busy = false;
    }
    if (p.again) {
      p.again = false;
      return tick();
    }
    schedule();
  }
  p.now = () => {
    p.idle = false;
    clearTimeout(p.timer);
    p.timer = null;
    if (p.busy) p.again = true;
    else tick();
  };
  p.resume = () => { if (!p.busy && !p.timer && !p.idle) tick(); };
  p.stop = () => { clearTimeout(p.timer); p.timer = null; };
  page.pollers.push(p);
  tick();
  return p;
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && current) current.pollers.forEach((p) => p.resume());
});

/**
 * Keeps tbody's rows in the order of items, reusing rows by key: rows is a
 * Map key → {tr, update(item)}; make(item) builds a new one.
 */
function syncRows(tbody, rows, items, keyOf, make) {
  const keep = new Set();
  const frag = rows.size === 0 ? document.createDocumentFragment() : null;
  let next = tbody.firstChild;
  for (const item of items) {
    const k = keyOf(item);
    if (keep.has(k)) continue;
    keep.add(k);
    let row = rows.get(k);
    if (!row) {
      row = make(item);
      rows.set(k, row);
    }
    row.update(item);
    if (frag) frag.append(row.tr);
    else if (row.tr === next) next = next.nextSibling;
    else tbody.insertBefore(row.tr, next);
  }
  if (frag) tbody.append(frag);
  for (const [k, row] of rows) {
    if (!keep.has(k)) {
      row.tr.remove();
      rows.delete(k);
    }
  }
}

/** A table head: h('tr') of <th scope="col">; cols are strings or [text, class]. */
function thead(cols) {
  return h('thead', {}, h('tr', {}, cols.map((c) => {
    const [text, cls] = Array.isArray(c) ? c : [c, null];
    return h('th', { scope: 'col', class: cls }, text);
  })));
}

/** The page's heading, error line and title. */
function pageStart(page, main, title, ...heading) {
  document.title = `${title} — dtq`;
  page.errorEl = h('p', { id: 'page-error', class: 'page-error', role: 'alert', hidden: true });
  append(main, [h('h1', { id: 'page-title', tabindex: '-1' }, ...(heading.length ? heading : [title])), page.errorEl]);
}

// ------------------------------------------------------------------ router

/** The route of location.hash: {page, key, params}. */
function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
  const parts = path.split('/').filter(Boolean).map((s) => {
    try { return decodeURIComponent(s); } catch { return s; }
  });
  if (parts.length === 0) return { page: 'overview', key: '', params };
  if (parts[0] === 'queues' && parts.length === 2) return { page: 'queue', key: parts[1], params };
  if (parts[0] === 'jobs' && parts.length === 2) return { page: 'job', key: `${parts[1]}\n${params.get('queue') || ''}`, id: parts[1], params };
  if (parts[0] === 'workers' && parts.length === 1) return { page: 'workers', key: '', params };
  if (parts[0] === 'schedules' && parts.length === 1) return { page: 'schedules', key: '', params };
  return { page: 'notfound', key: path, params };
}

const PAGES = {};
let routedOnce = false;

/** Renders the page of the hash (or passes new parameters to the one on screen). */
function route() {
  if (!session) return;
  const r = parseHash();
  if (current && current.route.page === r.page && current.route.key === r.key && current.onParams) {
    current.route = r;
    current.onParams(r.params);
    return;
  }
  leavePage();
  const page = newPage(r);
  current = page;
  const main = $('#main');
  main.replaceChildren();
  markNav(r.page);
  PAGES[r.page](page, main, r);
  if (routedOnce) $('#page-title', main)?.focus();
  routedOnce = true;
}

window.addEventListener('hashchange', route);

function markNav(pageName) {
  const active = { overview: 'nav-overview', queue: 'nav-overview', job: 'nav-overview', workers: 'nav-workers', schedules: 'nav-schedules' }[pageName];
  for (const a of document.querySelectorAll('#nav a')) {
    const exact = a.id === `nav-${pageName}`;
    if (exact) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
    a.classList.toggle('active', a.id === active);
  }
}

PAGES.notfound = (page, main, r) => {
  pageStart(page, main, 'Not found');
  append(main, [h('p', {}, `There is no page ${r.key}. `, h('a', { href: '#/' }, 'Go to the overview'), '.')]);
};

// ------------------------------------------------------------------ session: header, sign-in, sign-out

function updateHeader() {
  const role = $('#role');
  setText(role, session ? session.role : '');
  role.title = session ? `Signed in with the ${session.role} role` : '';
  show(role, !!session);
  show($('#sign-out'), !!session && session.auth);
  show($('#nav'), !!session);
}

function startSession(s) {
  // "auth": false (optional) = the server runs without tokens: nothing to sign out of.
  session = { role: s.role === 'admin' ? 'admin' : 'read-only', csrf: s.csrf || '', auth: s.auth !== false };
  updateHeader();
  route();
}

/** The sign-in view (the hash stays, so signing in lands where the user was going). */
function showSignIn(message, note) {
  if (!session && $('#sign-in-form')) return; // already on screen
  leavePage();
  session = null;
  updateHeader();
  markNav('');
  document.title = 'Sign in — dtq';
  const input = h('input', { id: 'sign-in-token', 'data-test': 'sign-in-token', name: 'token', type: 'password', autocomplete: 'current-password', 'aria-describedby': 'sign-in-error', spellcheck: 'false' });
  const error = h('p', { id: 'sign-in-error', 'data-test': 'sign-in-error', class: note ? 'muted' : 'field-error', hidden: !message }, message || '');
  const button = h('button', { id: 'sign-in-button', 'data-test': 'sign-in-button', type: 'submit', class: 'primary' }, 'Sign in');
  const fail = (text) => {
    error.className = 'field-error';
    setText(error, text);
    show(error, true);
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  };
  const form = h('form', { id: 'sign-in-form', 'data-test': 'sign-in-form', class: 'sign-in', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'sign-in-token' }, 'Token'), input), error, button);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!input.value) return fail('Enter a token.');
    button.disabled = true;
    try {
      const s = await api('POST', '/v1/session', { token: input.value });
      startSession(s);
    } catch (e) {
      fail(e.status === 0 ? 'Cannot reach the dtq server.' : e.message);
    } finally {
      button.disabled = false;
    }
  });
  fill($('#main'), h('h1', { id: 'page-title' }, 'Sign in'),
    h('p', {}, 'Sign in with a token of this dtq server (admin or read-only).'), form);
  input.focus();
}

async function signOut() {
  try {
    await api('DELETE', '/v1/session');
    showSignIn('Signed out.', true);
    announce('Signed out.');
  } catch (e) {
    if (e.status === 401) showSignIn('Signed out.', true);
    else announce(`Sign out failed: ${errText(e)}`);
  }
}

async function boot() {
  $('#sign-out').addEventListener('click', signOut);
  for (;;) {
    try {
      startSession(await api('GET', '/v1/session'));
      return;
    } catch (e) {
      if (e.status === 401) return showSignIn();
      fill($('#main'), h('h1', {}, 'dtq'), h('p', { class: 'page-error' }, `Cannot load the session: ${errText(e)} — retrying.`));
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }
}

// ------------------------------------------------------------------ overview page

const QUEUE_COUNTS = [
  ['pending', 'Pending'], ['inflight', 'In flight'], ['scheduled', 'Scheduled'],
  ['dead', 'Dead'], ['completed', 'Completed'],
];

PAGES.overview = (page, main) => {
  pageStart(page, main, 'Overview');
  const alerts = h('ul', { id: 'alerts', class: 'alerts', 'aria-label': 'Alerts', hidden: true });
  const redis = h('dl', { id: 'redis-card', class: 'facts' });
  const chartBox = h('div', { id: 'throughput-chart', class: 'chart', role: 'img', 'aria-label': 'Throughput chart: no samples yet' });
  const legend = h('p', { id: 'chart-legend', class: 'legend' });
  const filter = h('input', { id: 'queue-filter', type: 'search', autocomplete: 'off', spellcheck: 'false' });
  const countNote = h('p', { id: 'queue-count', class: 'muted' });
  const tbody = h('tbody');
  const table = h('table', { id: 'queue-table', class: 'data' },
    h('caption', { class: 'sr-only' }, 'Queues and their job counts'),
    thead(['Queue', ...QUEUE_COUNTS.map(([, t]) => [t, 'num']), 'Paused', ['Oldest pending', 'num'], ['Processed/s', 'num'], ['Failed/s', 'num']]),
    tbody);
  const empty = h('p', { id: 'no-queues', hidden: true }, 'No queue yet. Enqueue a job to create one.');
  append(main, [
    alerts,
    h('div', { class: 'cards' },
      h('section', { class: 'card', 'aria-labelledby': 'redis-title' }, h('h2', { id: 'redis-title' }, 'Redis'), redis),
      h('section', { class: 'card card-wide', 'aria-labelledby': 'chart-title' },
        h('h2', { id: 'chart-title' }, 'Throughput, all queues'), legend, chartBox)),
    h('section', { 'aria-labelledby': 'queues-title' },
      h('div', { class: 'section-head' },
        h('h2', { id: 'queues-title' }, 'Queues'),
        h('div', { class: 'inline-field' }, h('label', { for: 'queue-filter' }, 'Filter by name'), filter),
        countNote),
      h('div', { class: 'table-wrap' }, table), empty),
  ]);

  const rows = new Map();
  const chart = throughputChart(page, chartBox, legend);
  let total = 0;
  let first = true;

  const applyFilter = () => {
    const q = filter.value.trim().toLowerCase();
    let shown = 0;
    for (const [name, row] of rows) {
      const match = !q || name.toLowerCase().includes(q);
      show(row.tr, match);
      shown += match;
    }
    setText(countNote, q ? `${fmtNum(shown)} of ${plural(total, 'queue')}` : plural(total, 'queue'));
  };
  filter.addEventListener('input', applyFilter);

  poll(page, async () => {
    const o = await pageGet(page, '/v1/overview');
    renderAlerts(alerts, o.alerts || []);
    renderRedis(redis, o.redis || {});
    chart.update(o.series || []);
    const queues = o.queues || {};
    const entries = Object.keys(queues).sort().map((n) => [n, queues[n]]);
    total = entries.length;
    syncRows(tbody, rows, entries, (e) => e[0], (e) => queueRow(e[0]));
    applyFilter();
    show(empty, total === 0);
    show(table, total > 0);
    if (first) {
      first = false;
      performance.mark('dtq-overview-rendered');
    }
  });
};

/** One overview row; update([name, stats]) rewrites only the cells that changed. */
function queueRow(name) {
  const cells = {};
  const cell = (key) => (cells[key] = h('td', { class: 'num', 'data-count': key }));
  const paused = h('td', { 'data-test': 'paused' });
  const tr = h('tr', { 'data-queue': name },
    h('th', { scope: 'row' }, queueLink(name)),
    QUEUE_COUNTS.map(([k]) => cell(k)), paused,
    cell('oldest_pending_age'), cell('processed_per_s'), cell('failed_per_s'));
  let last = {};
  return {
    tr,
    update([, s]) {
      if (!s || typeof s !== 'object') return;
      const next = {
        pending: fmtNum(s.pending), inflight: fmtNum(s.inflight), scheduled: fmtNum(s.scheduled),
        dead: fmtNum(s.dead), completed: fmtNum(s.completed),
        oldest_pending_age: fmtAge(s.oldest_pending_age_ms),
        processed_per_s: fmtRate(s.processed_per_s), failed_per_s: fmtRate(s.failed_per_s),
      };
      for (const k in next) if (last[k] !== next[k]) cells[k].textContent = next[k];
      if (last.paused !== !!s.paused) fill(paused, s.paused ? badge('paused') : h('span', { class: 'muted' }, 'no'));
      if (last.hasDead !== s.dead > 0) cells.dead.classList.toggle('alarm', s.dead > 0);
      next.paused = !!s.paused;
      next.hasDead = s.dead > 0;
      last = next;
    },
  };
}

function renderAlerts(ul, alerts) {
  const key = JSON.stringify(alerts);
  if (ul.dataset.key === key) return;
  ul.dataset.key = key;
  fill(ul, alerts.map((a) => {
    const level = a.level === 'error' ? 'error' : 'warning';
    return h('li', { class: `alert alert-${level}`, 'data-test': 'alert', 'data-level': level },
      h('strong', {}, level === 'error' ? 'Error: ' : 'Warning: '), String(a.message));
  }));
  show(ul, alerts.length > 0);
}

function renderRedis(dl, r) {
  const pct = r.maxmemory > 0 ? r.used_memory / r.maxmemory : null;
  const memory = r.maxmemory > 0
    ? `${fmtBytes(r.used_memory)} of ${fmtBytes(r.maxmemory)} (${Math.round(pct * 100)} %)`
    : `${fmtBytes(r.used_memory)} (no limit)`;
  const facts = r.reachable === false
    ? [['reachable', 'Reachable', 'no — retrying']]
    : [['version', 'Version', r.version], ['mode', 'Mode', r.mode], ['memory', 'Memory', memory],
      ['policy', 'Eviction policy', r.maxmemory_policy], ['clients', 'Clients', fmtNum(r.connected_clients)]];
  const key = JSON.stringify(facts);
  if (dl.dataset.key === key) return;
  dl.dataset.key = key;
  fill(dl, facts.map(([field, label, value]) => [
    h('dt', {}, label),
    h('dd', { 'data-field': field }, value == null ? '—' : String(value),
      field === 'memory' && pct != null
        ? h('meter', { min: 0, max: 1, low: 0.75, high: 0.9, optimum: 0, value: Math.min(pct, 1), 'aria-label': 'Memory used of maxmemory' })
        : null),
  ]));
}

/** The uPlot chart of processed/s and failed/s; update(series) sets its data in place. */
function throughputChart(page, box, legend) {
  let plot = null;
  let data = [[], [], []];
  const proc = h('span', { 'data-test': 'legend-processed' });
  const fail = h('span', { 'data-test': 'legend-failed' });
  append(legend, [h('span', { class: 'swatch swatch-processed' }), 'processed/s ', proc, ' ',
    h('span', { class: 'swatch swatch-failed' }), 'failed/s ', fail]);
  const showValues = (idx) => {
    const i = idx == null ? data[0].length - 1 : idx;
    setText(proc, i >= 0 ? fmtRate(data[1][i]) : '—');
    setText(fail, i >= 0 ? fmtRate(data[2][i]) : '—');
  };
  const make = () => {
    if (typeof uPlot !== 'function') return null;
    const axis = { stroke: '#24292f', grid: { stroke: '#e4e7eb' }, ticks: { stroke: '#d0d7de' } };
    return new uPlot({
      width: Math.max(300, box.clientWidth),
      height: 200,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] } },
      axes: [{ ...axis }, { ...axis, size: 56 }],
      series: [
        {},
        { label: 'processed/s', stroke: '#1a56b8', width: 2, fill: 'rgba(26,86,184,0.08)' },
        { label: 'failed/s', stroke: '#c2231b', width: 2 },
      ],
      hooks: { setCursor: [(u) => showValues(u.cursor.idx)] },
    }, data, box);
  };
  const resize = new ResizeObserver(() => {
    if (plot && box.clientWidth) plot.setSize({ width: Math.max(300, box.clientWidth), height: 200 });
  });
  resize.observe(box);
  page.cleanups.push(() => { resize.disconnect(); if (plot) plot.destroy(); });
  return {
    update(series) {
      data = [series.map((p) => p.t / 1000), series.map((p) => p.processed_per_s), series.map((p) => p.failed_per_s)];
      if (series.length && !plot) plot = make();
      else if (plot) plot.setData(data);
      showValues(null);
      const n = series.length;
      const span = n > 1 ? fmtAge(series[n - 1].t - series[0].t) : null;
      box.setAttribute('aria-label', n
        ? `Throughput chart over the last ${span || 'moment'}: now ${fmtRate(data[1][n - 1])} processed/s and ${fmtRate(data[2][n - 1])} failed/s`
        : 'Throughput chart: no samples yet');
    },
  };
}

// ------------------------------------------------------------------ queue page

const ACTIONS = {
  requeue: { label: 'Requeue', past: 'Requeued', states: ['dead'], done: 'requeued' },
  cancel: { label: 'Cancel', past: 'Cancelled', states: ['pending', 'scheduled'], done: 'cancelled' },
  delete: { label: 'Delete', past: 'Deleted', states: ['pending', 'scheduled', 'dead', 'completed'], done: 'deleted' },
};
const TIME_COLUMN = {
  dead: ['died_at', 'Died'], completed: ['finished_at', 'Finished'],
  scheduled: ['run_at', 'Runs'], inflight: ['lease_until', 'Lease ends'],
};
const SINCE = [['', 'any time'], ['5m', 'last 5 min'], ['1h', 'last hour'], ['24h', 'last 24 h'], ['7d', 'last 7 days']];
const PAGE_SIZE = 50;
const CHUNK = 1000;

/** The queue page's filter from the hash parameters. */
function queueFilter(params) {
  const state = STATES.includes(params.get('state')) ? params.get('state') : 'pending';
  const sinceVal = SINCE.some(([v]) => v === params.get('since')) ? params.get('since') : '';
  return { state, kind: (params.get('kind') || '').trim(), search: (params.get('search') || '').trim(), since: sinceVal };
}

const filtered = (f) => !!(f.kind || f.search || f.since);

PAGES.queue = (page, main, r) => {
  const name = r.key;
  let f = queueFilter(r.params);
  let counts = null; // this queue's overview stats
  let cursors = [null]; // cursor of each page seen, for "Newer"
  let offsets = [0];
  let jobs = [];
  let nextCursor = null;
  let listed = false;
  const selected = new Set();
  let allMatching = false;
  const rows = new Map();

  // Header: name, paused badge, pause / resume.
  pageStart(page, main, `Queue ${name}`, h('span', { class: 'muted-label' }, 'Queue '), h('span', { id: 'queue-name' }, name));
  document.title = `Queue ${name} — dtq`;
  const pausedBadge = h('span', { id: 'queue-paused', class: 'badge badge-paused', hidden: true }, 'paused');
  const pauseBtn = h('button', { id: 'queue-pause', type: 'button', hidden: true, onclick: () => setPaused(true) }, 'Pause');
  const resumeBtn = h('button', { id: 'queue-resume', type: 'button', hidden: true, onclick: () => setPaused(false) }, 'Resume');
  const pauseError = h('p', { id: 'pause-error', class: 'field-error', hidden: true });
  const enqueue = isAdmin() ? enqueueSection(name, () => reload()) : null;
  const head = h('div', { class: 'page-tools' }, pausedBadge, isAdmin() ? [pauseBtn, resumeBtn, enqueue.toggle, pauseError] : null);
  main.querySelector('h1').after(head);
  if (enqueue) head.after(enqueue.form);

  // State tabs (links: the state is in the URL).
  const tabs = h('nav', { id: 'state-tabs', class: 'tabs', 'aria-label': 'Job states' });
  const tabCount = {};
  const tabLinks = STATES.map((s) => {
    tabCount[s] = h('span', { class: 'count', 'data-count': s });
    return h('a', { 'data-test': 'tab', 'data-state': s, href: '#' }, STATE_LABEL[s], ' ', tabCount[s]);
  });
  append(tabs, tabLinks);

  // Filters.
  const kindIn = h('input', { id: 'filter-kind', name: 'kind', autocomplete: 'off', spellcheck: 'false' });
  const searchIn = h('input', { id: 'filter-search', name: 'search', type: 'search', placeholder: 'id, error or payload', autocomplete: 'off', spellcheck: 'false' });
  const sinceIn = h('select', { id: 'filter-since', name: 'since' }, SINCE.map(([v, t]) => h('option', { value: v }, t)));
  const clearBtn = h('button', { id: 'filter-clear', type: 'button', class: 'quiet' }, 'Clear filter');
  const form = h('form', { id: 'job-filters', class: 'filters', role: 'search', 'aria-label': 'Filter jobs' },
    h('div', { class: 'field' }, h('label', { for: 'filter-kind' }, 'Kind'), kindIn),
    h('div', { class: 'field' }, h('label', { for: 'filter-search' }, 'Search'), searchIn),
    h('div', { class: 'field' }, h('label', { for: 'filter-since' }, 'Since'), sinceIn),
    h('button', { id: 'filter-apply', type: 'submit' }, 'Filter'), clearBtn);

  // Toolbar: range, selection, actions.
  const range = h('span', { id: 'jobs-range' });
  const totalEl = h('span', { id: 'jobs-total', class: 'muted' });
  const actionBtns = {};
  for (const [a, spec] of isAdmin() ? Object.entries(ACTIONS) : []) {
    actionBtns[a] = h('button', { id: `action-${a}`, 'data-test': `action-${a}`, type: 'button', class: a === 'requeue' ? 'primary' : 'danger-quiet', onclick: () => runAction(a) }, spec.label);
  }
  const actionError = h('p', { id: 'action-error', class: 'field-error', hidden: true });
  const selInfo = h('span', { id: 'selection-info' });
  const selectAll = h('button', { id: 'select-all-matching', type: 'button', class: 'link', hidden: true, onclick: () => { allMatching = true; renderSelection(); } });
  const clearSel = h('button', { id: 'clear-selection', type: 'button', class: 'link', hidden: true, onclick: () => clearSelection() }, 'Clear selection');
  const actionsBar = h('div', { class: 'actions', role: 'group', 'aria-label': 'Actions on the selected jobs' }, Object.values(actionBtns));
  const toolbar = h('div', { class: 'toolbar' },
    h('p', { class: 'range' }, range, ' · ', totalEl),
    isAdmin() ? [h('p', { class: 'selection' }, selInfo, ' ', selectAll, ' ', clearSel), actionsBar] : null);

  // The job table.
  const selectPage = h('input', { id: 'select-page', type: 'checkbox', 'aria-label': 'Select every job on this page' });
  selectPage.addEventListener('change', () => {
    for (const j of jobs) selectPage.checked ? selected.add(j.id) : selected.delete(j.id);
    if (!selectPage.checked) allMatching = false;
    for (const [id, row] of rows) row.box && (row.box.checked = selected.has(id));
    renderSelection();
  });
  const table = h('table', { id: 'job-table', class: 'data jobs' });
  const tbody = h('tbody');
  const empty = h('p', { id: 'jobs-empty', class: 'muted', hidden: true });
  const newer = h('button', { id: 'page-newer', type: 'button', onclick: () => turnPage(-1) }, '← Newer');
  const older = h('button', { id: 'page-older', type: 'button', onclick: () => turnPage(1) }, 'Older →');
  const pager = h('div', { class: 'pager', role: 'group', 'aria-label': 'Pages' }, newer, older);

  append(main, [tabs, form, toolbar, actionError, h('div', { class: 'table-wrap' }, table), empty, pager]);

  const selectable = () => isAdmin() && Object.values(ACTIONS).some((s) => s.states.includes(f.state));

  /** Rebuilds the table head and empties the rows (a new state or page). */
  function resetTable() {
    rows.clear();
    tbody.replaceChildren();
    const tc = TIME_COLUMN[f.state];
    const cols = [['ID'], ['Kind'], ['Attempts', 'num']];
    if (tc) cols.push([tc[1]]);
    cols.push(['Error'], ['Payload']);
    const tr = h('tr', {}, selectable() ? h('th', { scope: 'col', class: 'check' }, selectPage) : null,
      cols.map(([t, c]) => h('th', { scope: 'col', class: c }, t)));
    fill(table, h('caption', { class: 'sr-only' }, `${STATE_LABEL[f.state]} jobs of queue ${name}`), h('thead', {}, tr), tbody);
    jobs = [];
    listed = false;
  }

  /** Puts the filter into the tabs and the form. */
  function syncControls() {
    tabLinks.forEach((a, i) => {
      const s = STATES[i];
      a.href = queueHash(name, { ...f, state: s });
      if (s === f.state) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    });
    kindIn.value = f.kind;
    searchIn.value = f.search;
    sinceIn.value = f.since;
    show(clearBtn, filtered(f));
    for (const [a, btn] of Object.entries(actionBtns)) show(btn, ACTIONS[a].states.includes(f.state));
    show(actionsBar, selectable());
  }

  function clearSelection() {
    selected.clear();
    allMatching = false;
    for (const row of rows.values()) if (row.box) row.box.checked = false;
    renderSelection();
  }

  /** Selection line, select-page checkbox, action buttons. */
  function renderSelection() {
    const onPage = jobs.filter((j) => selected.has(j.id)).length;
    const pageAll = jobs.length > 0 && onPage === jobs.length;
    selectPage.checked = pageAll;
    selectPage.indeterminate = onPage > 0 && !pageAll;
    const stateCount = counts ? counts[f.state] : null;
    const more = nextCursor !== null || cursors.length > 1;
    if (allMatching) {
      setText(selInfo, filtered(f) ? 'All jobs matching the filter are selected.' : `All ${plural(stateCount, 'job')} in this state are selected.`);
    } else {
      setText(selInfo, selected.size ? `${plural(selected.size, 'job')} selected.` : '');
    }
    setText(selectAll, filtered(f) ? 'Select all matching the filter' : `Select all ${fmtNum(stateCount)} matching`);
    show(selectAll, selectable() && pageAll && !allMatching && (more || filtered(f) || (stateCount ?? 0) > jobs.length));
    show(clearSel, selected.size > 0 || allMatching);
    const n = allMatching ? null : selected.size;
    for (const [a, btn] of Object.entries(actionBtns)) {
      const spec = ACTIONS[a];
      btn.disabled = !allMatching && n === 0;
      setText(btn, allMatching ? `${spec.label} all` : n ? `${spec.label} ${fmtNum(n)}` : spec.label);
    }
  }

  /** Counts in the header, tabs and range line. */
  function renderCounts() {
    for (const s of STATES) setText(tabCount[s], counts ? fmtNum(counts[s]) : '');
    show(pausedBadge, !!(counts && counts.paused));
    show(pauseBtn, !!counts && !counts.paused);
    show(resumeBtn, !!counts && counts.paused);
    const c = counts ? counts[f.state] : null;
    setText(totalEl, `${fmtNum(c)} in this state`);
  }

  function renderRange() {
    const off = offsets[offsets.length - 1];
    setText(range, jobs.length ? `showing ${fmtNum(off + 1)}–${fmtNum(off + jobs.length)}` : 'showing none');
    newer.disabled = cursors.length === 1;
    older.disabled = nextCursor === null;
    show(pager, cursors.length > 1 || nextCursor !== null);
    setText(empty, filtered(f) ? 'No job matches the filter.' : `No ${STATE_LABEL[f.state]} job.`);
    show(empty, listed && jobs.length === 0);
    show(table, jobs.length > 0 || !listed);
  }

  /** One job row: checkbox (when actions apply) and cells. */
  function jobRow(job) {
    const box = selectable()
      ? h('input', { type: 'checkbox', 'data-test': 'select-job', 'aria-label': `Select job ${job.id}` })
      : null;
    if (box) {
      box.addEventListener('change', () => {
        box.checked ? selected.add(job.id) : selected.delete(job.id);
        if (!box.checked) allMatching = false;
        renderSelection();
      });
    }
    const tr = h('tr', { 'data-job': job.id }, box ? h('td', { class: 'check' }, box) : null);
    let sig = null;
    let cells = [];
    return {
      tr,
      box,
      update(j) {
        const s = JSON.stringify(j);
        if (s === sig) return;
        sig = s;
        cells.forEach((c) => c.remove());
        const tc = TIME_COLUMN[f.state];
        cells = [
          h('td', {}, jobLink(j.id, name), j.corrupt ? [' ', badge('corrupt')] : null),
          h('td', {}, j.kind == null ? h('span', { class: 'muted' }, '—') : j.kind),
          h('td', { class: 'num' }, fmtNum(j.attempts)),
          tc ? h('td', { class: 'nowrap' }, timeEl(j[tc[0]])) : null,
          h('td', { class: 'clip error-text', title: j.error || null }, j.error ? oneLine(j.error, 90) : ''),
          h('td', { class: 'clip mono', title: preview(j.payload, 2000) }, j.payload === undefined ? '' : preview(j.payload, 70)),
        ].filter(Boolean);
        append(tr, cells);
      },
    };
  }

  /** Reads this page of jobs (not while the user has a selection, unless forced). */
  async function loadJobs(force) {
    if (!force && (selected.size || allMatching)) return;
    const qs = new URLSearchParams({ state: f.state, limit: String(PAGE_SIZE) });
    if (f.kind) qs.set('kind', f.kind);
    if (f.search) qs.set('search', f.search);
    if (f.since) qs.set('since', f.since);
    const cur = cursors[cursors.length - 1];
    if (cur) qs.set('cursor', cur);
    const want = JSON.stringify([f, cursors]);
    const res = await pageGet(page, `/v1/queues/${enc(name)}/jobs?${qs}`);
    if (want !== JSON.stringify([f, cursors])) return; // the filter moved on meanwhile
    jobs = res.jobs || [];
    nextCursor = res.next_cursor ?? null;
    listed = true;
    syncRows(tbody, rows, jobs, (j) => j.id, jobRow);
    for (const id of [...selected]) if (!rows.has(id)) selected.delete(id);
    renderRange();
    renderSelection();
  }

  async function loadCounts() {
    const o = await pageGet(page, '/v1/overview');
    counts = (o.queues || {})[name] || null;
    renderCounts();
    renderSelection();
    if (!counts) throw new ApiError(404, 'not_found', `no queue named ${name}`);
  }

  let forceJobs = true;
  const poller = poll(page, async () => {
    const force = forceJobs;
    forceJobs = false;
    await Promise.all([loadCounts(), loadJobs(force)]);
  });
  const reload = () => { forceJobs = true; poller.now(); };

  function turnPage(dir) {
    if (dir > 0 && nextCursor !== null) {
      offsets.push(offsets[offsets.length - 1] + jobs.length);
      cursors.push(nextCursor);
    } else if (dir < 0 && cursors.length > 1) {
      cursors.pop();
      offsets.pop();
    } else return;
    restart();
  }

  /** A new filter, state or page: clear selection and rows, read again. */
  function restart() {
    selected.clear();
    allMatching = false;
    resetTable();
    syncControls();
    renderCounts();
    renderRange();
    renderSelection();
    reload();
  }

  page.onParams = (params) => {
    const nf = queueFilter(params);
    if (JSON.stringify(nf) === JSON.stringify(f)) return;
    f = nf;
    cursors = [null];
    offsets = [0];
    restart();
  };

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const hash = queueHash(name, { state: f.state, kind: kindIn.value.trim(), search: searchIn.value.trim(), since: sinceIn.value });
    if (hash === location.hash) {
      cursors = [null];
      offsets = [0];
      restart();
    } else location.hash = hash;
  });
  clearBtn.addEventListener('click', () => {
    location.hash = queueHash(name, { state: f.state });
    kindIn.focus();
  });

  async function setPaused(pause) {
    show(pauseError, false);
    try {
      const res = await api('POST', `/v1/queues/${enc(name)}/${pause ? 'pause' : 'resume'}`);
      if (counts) counts.paused = !!res.paused;
      renderCounts();
      (res.paused ? resumeBtn : pauseBtn).focus();
      announce(res.changed ? `${res.paused ? 'Paused' : 'Resumed'} queue ${name}.` : `Queue ${name} was already ${res.paused ? 'paused' : 'running'}.`);
    } catch (e) {
      setText(pauseError, errText(e));
      show(pauseError, true);
      announce(`${pause ? 'Pause' : 'Resume'} failed: ${errText(e)}`);
    }
  }

  /** Requeue / cancel / delete of the selection or of all matching jobs. */
  async function runAction(action) {
    const spec = ACTIONS[action];
    show(actionError, false);
    const ids = jobs.map((j) => j.id).filter((id) => selected.has(id));
    const all = allMatching;
    const stateCount = counts ? counts[f.state] : null;
    const what = all
      ? (filtered(f) ? `all ${STATE_LABEL[f.state]} jobs matching the filter` : `all ${plural(stateCount, `${STATE_LABEL[f.state]} job`)}`)
      : plural(ids.length, 'job');
    if (!all && ids.length === 0) return;
    if (all || (action !== 'requeue' && ids.length > 1)) {
      const text = action === 'requeue'
        ? `They go back to pending with a fresh retry budget.`
        : `This cannot be undone: ${action === 'delete' ? 'the jobs and everything stored for them are removed' : 'the jobs will not run'}.`;
      if (!(await confirmDialog(`${spec.label} ${what} in queue ${name}?`, text, `${spec.label} ${what}`))) return;
    }
    Object.values(actionBtns).forEach((b) => { b.disabled = true; });
    let changed = 0;
    const notDone = {};
    try {
      const bodies = all
        ? [{ all: true, state: f.state, ...(f.kind && { kind: f.kind }), ...(f.search && { search: f.search }), ...(f.since && { since: f.since }) }]
        : chunks(ids, CHUNK).map((c) => ({ ids: c }));
      for (const body of bodies) {
        const res = await api('POST', `/v1/queues/${enc(name)}/${action}`, body);
        changed += res.changed || 0;
        for (const r of res.results || []) if (r.outcome !== spec.done) notDone[r.outcome] = (notDone[r.outcome] || 0) + 1;
      }
      const rest = Object.entries(notDone).map(([o, n]) => `${fmtNum(n)} ${o.replace(/_/g, ' ')}`);
      announce(`${spec.past} ${plural(changed, 'job')}` + (rest.length ? `; not done: ${rest.join(', ')}.` : '.'));
    } catch (e) {
      const msg = `${spec.label} failed${changed ? ` after ${changed} changed` : ''}: ${errText(e)}`;
      setText(actionError, msg);
      show(actionError, true);
      announce(msg);
    }
    clearSelection();
    reload();
  }

  resetTable();
  syncControls();
  renderCounts();
  renderRange();
  renderSelection();
};

function chunks(list, n) {
  const out = [];
  for (let i = 0; i < list.length; i += n) out.push(list.slice(i, i + n));
  return out;
}

// ------------------------------------------------------------------ enqueue form (queue page, admin)

const ENQUEUE_FIELDS = [
  ['kind', 'Kind', 'input', { required: true, autocomplete: 'off', spellcheck: 'false' }],
  ['payload', 'Payload (JSON)', 'textarea', { rows: 5, spellcheck: 'false', class: 'mono' }],
  ['id', 'ID (optional)', 'input', { autocomplete: 'off', spellcheck: 'false' }],
  ['idempotency_key', 'Idempotency key (optional)', 'input', { autocomplete: 'off', spellcheck: 'false' }],
  ['delay', 'Delay (optional, e.g. 30s)', 'input', { autocomplete: 'off', spellcheck: 'false' }],
  ['max_retries', 'Max retries (optional)', 'input', { type: 'number', min: 0, step: 1, inputmode: 'numeric' }],
  ['timeout', 'Timeout (optional, e.g. 5m)', 'input', { autocomplete: 'off', spellcheck: 'false' }],
];

/** The "Enqueue a job" toggle button and its (collapsed) form. */
function enqueueSection(queue, onDone) {
  const inputs = {};
  const errors = {};
  const fields = ENQUEUE_FIELDS.map(([key, label, tag, attrs]) => {
    const id = `enqueue-${key.replace(/_/g, '-')}`;
    errors[key] = h('p', { id: `enqueue-error-${key}`, class: 'field-error', hidden: true });
    inputs[key] = h(tag, { id, name: key, 'aria-describedby': `enqueue-error-${key}`, ...attrs });
    return h('div', { class: `field field-${key}` }, h('label', { for: id }, label), inputs[key], errors[key]);
  });
  inputs.payload.value = '{}';
  errors.form = h('p', { id: 'enqueue-error-form', class: 'field-error', hidden: true });
  const result = h('p', { id: 'enqueue-result', class: 'ok-text', hidden: true });
  const submit = h('button', { id: 'enqueue-submit', type: 'submit', class: 'primary' }, 'Enqueue');
  const form = h('form', { id: 'enqueue-form', class: 'enqueue', novalidate: true, hidden: true, 'aria-label': `Enqueue a job in ${queue}` },
    h('div', { class: 'grid-fields' }, fields), errors.form, h('div', { class: 'buttons' }, submit), result);
  const toggle = h('button', { id: 'enqueue-toggle', type: 'button', 'aria-expanded': 'false', 'aria-controls': 'enqueue-form' }, 'Enqueue a job');
  toggle.addEventListener('click', () => {
    const open = form.hidden;
    form.hidden = !open;
    toggle.setAttribute('aria-expanded', String(open));
    if (open) inputs.kind.focus();
  });

  const setError = (key, text) => {
    const el = errors[key] || errors.form;
    setText(el, text);
    show(el, true);
    if (inputs[key]) inputs[key].setAttribute('aria-invalid', 'true');
  };
  const clearErrors = () => {
    for (const k in errors) show(errors[k], false);
    for (const k in inputs) inputs[k].removeAttribute('aria-invalid');
  };

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors();
    show(result, false);
    const v = (k) => inputs[k].value.trim();
    const spec = { kind: v('kind') };
    if (!spec.kind) setError('kind', 'Kind is required.');
    try {
      spec.payload = JSON.parse(inputs.payload.value.trim() || '{}');
    } catch (e) {
      setError('payload', `The payload is not valid JSON: ${e.message}`);
    }
    for (const k of ['id', 'idempotency_key', 'delay', 'timeout']) if (v(k)) spec[k] = v(k);
    if (v('max_retries')) {
      if (/^\d+$/.test(v('max_retries'))) spec.max_retries = Number(v('max_retries'));
      else setError('max_retries', 'Max retries is a whole number, 0 or more.');
    }
    const bad = ENQUEUE_FIELDS.find(([k]) => !errors[k].hidden);
    if (bad) return inputs[bad[0]].focus();
    submit.disabled = true;
    try {
      const res = await api('POST', `/v1/jobs?queue=${enc(queue)}`, spec);
      const item = Array.isArray(res) ? res[0] : res;
      const link = () => jobLink(item.id, item.queue || queue);
      const parts = item.status === 'duplicate'
        ? ['Not enqueued: job ', link(), ' already exists (duplicate).']
        : ['Enqueued job ', link(), '.'];
      fill(result, ...parts);
      show(result, true);
      announce(...parts.map((p) => (p instanceof Node ? link() : p)));
      onDone();
    } catch (e) {
      if (e.field && inputs[e.field]) {
        setError(e.field, e.message);
        inputs[e.field].focus();
      } else setError('form', `Not enqueued: ${errText(e)}`);
      announce(`Not enqueued: ${errText(e)}`);
    } finally {
      submit.disabled = false;
    }
  });

  return { toggle, form };
}

// ------------------------------------------------------------------ job page

const JOB_ACTIONS = ['requeue', 'cancel', 'delete'];

PAGES.job = (page, main, r) => {
  const id = r.id;
  const queue = r.params.get('queue') || '';
  pageStart(page, main, `Job ${id}`, h('span', { class: 'muted-label' }, 'Job '), h('span', { id: 'job-id', class: 'mono' }, id));
  const crumbs = h('p', { class: 'crumbs' }, queue ? ['Queue ', queueLink(queue)] : h('a', { href: '#/' }, 'Overview'));
  const tools = h('div', { class: 'page-tools' });
  const body = h('div', { class: 'job-body' });
  main.querySelector('h1').before(crumbs);
  main.querySelector('h1').after(tools);
  append(main, [body]);
  let sig = null;
  let actionError = null;

  const poller = poll(page, async () => {
    let job;
    try {
      job = await pageGet(page, `/v1/jobs/${enc(id)}${queue ? '?queue=' + enc(queue) : ''}`);
    } catch (e) {
      if (e.status !== 404) throw e;
      sig = null;
      tools.replaceChildren();
      fill(body, h('p', { id: 'job-not-found', class: 'notice' },
        `No job ${id}${queue ? ` in queue ${queue}` : ''} (it may have been trimmed by retention).`));
      return STOP;
    }
    const s = JSON.stringify(job);
    if (s !== sig) {
      sig = s;
      renderJob(job);
    } else refreshAges(job);
    return ['pending', 'scheduled', 'inflight'].includes(job.state) ? undefined : STOP;
  });

  /** Re-renders only the relative times (they move while nothing else does). */
  function refreshAges() {
    for (const t of body.querySelectorAll('time[data-full]')) setText(t, `${fmtLocal(t.dateTime)} (${fmtRelative(t.dateTime)})`);
  }

  function renderJob(job) {
    document.title = `Job ${job.id} — dtq`;
    const hadFocus = tools.contains(document.activeElement) || body.contains(document.activeElement);
    fill(tools,
      h('span', { id: 'job-state', class: `badge badge-${job.state}` }, STATE_LABEL[job.state] || job.state),
      job.corrupt ? h('span', { id: 'job-corrupt', class: 'badge badge-corrupt' }, 'corrupt') : null,
      isAdmin() ? JOB_ACTIONS.filter((a) => ACTIONS[a].states.includes(job.state)).map((a) =>
        h('button', { id: `job-${a}`, type: 'button', class: a === 'requeue' ? 'primary' : 'danger-quiet', onclick: () => act(a, job) }, ACTIONS[a].label)) : null);
    actionError = h('p', { id: 'job-action-error', class: 'field-error', hidden: true });
    tools.append(actionError);
    const full = (iso) => {
      const t = timeEl(iso, true);
      if (iso) t.dataset.full = '1';
      return t;
    };
    const facts = [
      ['queue', 'Queue', queueLink(job.queue)],
      ['kind', 'Kind', job.kind ?? '—'],
      ['state', 'State', STATE_LABEL[job.state] || job.state],
      ['attempts', 'Attempts', fmtNum(job.attempts)],
      ['max_retries', 'Max retries', job.max_retries == null ? '—' : fmtNum(job.max_retries)],
      ['enqueued_at', 'Enqueued', full(job.enqueued_at)],
      ['run_at', 'Runs at', full(job.run_at)],
      job.lease_until ? ['lease_until', 'Lease ends', full(job.lease_until)] : null,
      ['finished_at', 'Finished', full(job.finished_at)],
      ['idempotency_key', 'Idempotency key', job.idempotency_key ?? '—'],
    ].filter(Boolean);
    fill(body,
      h('dl', { id: 'job-fields', class: 'facts facts-wide' }, facts.map(([k, label, v]) => [h('dt', {}, label), h('dd', { 'data-field': k }, v)])),
      h('section', { 'aria-labelledby': 'payload-title' }, h('h2', { id: 'payload-title' }, 'Payload'),
        h('pre', { id: 'job-payload', class: 'code', tabindex: '0', 'aria-labelledby': 'payload-title' }, pretty(job.payload))),
      job.result != null ? h('section', { 'aria-labelledby': 'result-title' }, h('h2', { id: 'result-title' }, 'Result'),
        h('pre', { id: 'job-result', class: 'code', tabindex: '0', 'aria-labelledby': 'result-title' }, pretty(job.result))) : null,
      job.error ? h('section', { 'aria-labelledby': 'error-title' }, h('h2', { id: 'error-title' }, 'Error'),
        h('pre', { id: 'job-error', class: 'code code-error', tabindex: '0', 'aria-labelledby': 'error-title' }, job.error)) : null,
      h('section', { 'aria-labelledby': 'history-title' }, h('h2', { id: 'history-title' }, 'History'), history(job.history || [])));
    if (hadFocus && !main.contains(document.activeElement)) $('#page-title', main).focus();
  }

  function history(items) {
    if (!items.length) return h('p', { id: 'job-history', class: 'muted' }, 'No attempt yet.');
    return h('ol', { id: 'job-history', class: 'timeline' }, items.map((a) => {
      const end = a.finished_at ? Date.parse(a.finished_at) : null;
      const took = (end ?? Date.now()) - Date.parse(a.started_at);
      const outcome = a.outcome || (a.finished_at ? 'unknown' : 'running');
      return h('li', { 'data-attempt': a.attempt, class: `outcome-${outcome}` },
        h('p', { class: 'attempt-head' }, h('strong', {}, `Attempt ${a.attempt}`), ' ', badge(outcome)),
        h('p', {}, clockEl(a.started_at, true), ' → ', a.finished_at ? clockEl(a.finished_at, false) : 'still running',
          ` (${a.finished_at ? 'took' : 'running for'} ${fmtDuration(took)})`),
        a.error ? h('pre', { class: 'code code-error' }, a.error) : null,
        a.worker ? h('p', { class: 'muted' }, 'Worker ', h('span', { class: 'mono', 'data-test': 'attempt-worker' }, a.worker)) : null);
    }));
  }

  async function act(action, job) {
    const spec = ACTIONS[action];
    try {
      const res = await api('POST', `/v1/queues/${enc(job.queue)}/${action}`, { ids: [job.id] });
      const out = (res.results || [])[0];
      announce(res.changed ? `${spec.past} job ${job.id}.` : `Not ${spec.past.toLowerCase()}: ${out ? out.outcome.replace(/_/g, ' ') : 'nothing changed'}.`);
    } catch (e) {
      setText(actionError, `${spec.label} failed: ${errText(e)}`);
      show(actionError, true);
      announce(`${spec.label} failed: ${errText(e)}`);
      return;
    }
    sig = null;
    poller.now();
  }
};

// ------------------------------------------------------------------ workers page

PAGES.workers = (page, main) => {
  pageStart(page, main, 'Workers');
  const tbody = h('tbody');
  const table = h('table', { id: 'worker-table', class: 'data', hidden: true },
    h('caption', { class: 'sr-only' }, 'Running workers'),
    thead(['Host', ['PID', 'num'], 'Version', 'Queues (weight)', 'Busy', 'Started', 'Last heartbeat']), tbody);
  const empty = h('p', { id: 'no-workers', class: 'notice', hidden: true }, 'No worker is running.');
  const note = h('p', { class: 'muted', id: 'worker-count' });
  append(main, [note, h('div', { class: 'table-wrap' }, table), empty]);
  const rows = new Map();
  poll(page, async () => {
    const res = await pageGet(page, '/v1/workers');
    const workers = res.workers || [];
    syncRows(tbody, rows, workers, (w) => w.id, workerRow);
    setText(note, workers.length ? `${plural(workers.length, 'worker')}, ${fmtNum(workers.reduce((n, w) => n + (w.busy_count ?? (w.busy || []).length), 0))} busy of ${fmtNum(workers.reduce((n, w) => n + (w.concurrency || 0), 0))} slots` : '');
    show(table, workers.length > 0);
    show(empty, workers.length === 0);
  });
};

function workerRow(w) {
  const cells = {};
  const td = (k, cls) => (cells[k] = h('td', { class: cls }));
  const summary = h('summary');
  const list = h('div', { class: 'busy-list' });
  const details = h('details', { 'data-test': 'busy-jobs' }, summary, list);
  const tr = h('tr', { 'data-worker': w.id },
    h('th', { scope: 'row' }, h('span', {}, w.host || '—'), h('br'), h('span', { class: 'mono small muted' }, w.id)),
    td('pid', 'num'), td('version'), td('queues'), h('td', {}, details), td('started', 'nowrap'), td('heartbeat', 'nowrap'));
  let sig = null;
  return {
    tr,
    update(w) {
      setText(cells.pid, w.pid ?? '—');
      setText(cells.version, w.version || '—');
      setText(cells.queues, (w.queues || []).map((q) => `${q.name} (${q.weight})`).join(', ') || '—');
      const busy = w.busy || [];
      setText(summary, `${fmtNum(w.busy_count ?? busy.length)} / ${fmtNum(w.concurrency)}`);
      const s = JSON.stringify(busy);
      if (s !== sig) {
        sig = s;
        fill(list, busy.length
          ? h('ul', {}, busy.map((b) => h('li', {}, jobLink(b.id, b.queue), ' in ', b.queue, ' — running ', h('span', { 'data-started': b.started_at }, fmtAge(since(b.started_at))))))
          : h('p', { class: 'muted' }, 'Idle.'));
      } else {
        for (const el of list.querySelectorAll('[data-started]')) setText(el, fmtAge(since(el.dataset.started)));
      }
      fill(cells.started, timeEl(w.started_at));
      fill(cells.heartbeat, timeEl(w.heartbeat_at));
    },
  };
}

// ------------------------------------------------------------------ schedules page

PAGES.schedules = (page, main) => {
  pageStart(page, main, 'Schedules');
  const tbody = h('tbody');
  const cols = ['Name', 'Definition', 'Kind → queue', 'Next run', 'Last run', 'Last job', 'Paused'];
  if (isAdmin()) cols.push('Actions');
  const table = h('table', { id: 'schedule-table', class: 'data', hidden: true },
    h('caption', { class: 'sr-only' }, 'Schedules'), thead(cols), tbody);
  const error = h('p', { id: 'schedule-error', class: 'field-error', hidden: true });
  const empty = h('p', { id: 'no-schedules', class: 'notice', hidden: true }, 'No schedules. Add one with ', h('code', {}, 'dtq admin schedule add'), '.');
  append(main, [error, h('div', { class: 'table-wrap' }, table), empty]);
  const rows = new Map();
  const poller = poll(page, async () => {
    const res = await pageGet(page, '/v1/schedules');
    const list = res.schedules || [];
    syncRows(tbody, rows, list, (s) => s.name, (s) => scheduleRow(s, act));
    show(table, list.length > 0);
    show(empty, list.length === 0);
  });

  async function act(name, action) {
    show(error, false);
    try {
      const res = await api('POST', `/v1/schedules/${enc(name)}/${action}`);
      if (action === 'trigger') {
        announce(`Triggered schedule ${name}`, [': job ', jobLink(res.id, res.queue)], '.');
      } else {
        announce(`${action === 'pause' ? 'Paused' : 'Resumed'} schedule ${name}.`);
      }
    } catch (e) {
      setText(error, `${action[0].toUpperCase() + action.slice(1)} of schedule ${name} failed: ${errText(e)}`);
      show(error, true);
      announce(error.textContent);
    }
    poller.now();
  }
};

function scheduleRow(s, act) {
  const cells = {};
  const td = (k, cls) => (cells[k] = h('td', { class: cls, 'data-field': k }));
  const pauseBtn = h('button', { type: 'button', 'data-test': 'schedule-pause', 'aria-label': `Pause schedule ${s.name}`, onclick: () => act(s.name, 'pause') }, 'Pause');
  const resumeBtn = h('button', { type: 'button', 'data-test': 'schedule-resume', 'aria-label': `Resume schedule ${s.name}`, onclick: () => act(s.name, 'resume') }, 'Resume');
  const trigger = h('button', { type: 'button', 'data-test': 'schedule-trigger', 'aria-label': `Trigger now: schedule ${s.name}`, onclick: () => act(s.name, 'trigger') }, 'Trigger now');
  const tr = h('tr', { 'data-schedule': s.name },
    h('th', { scope: 'row' }, s.name), td('def', 'mono'), td('target'), td('next', 'nowrap'), td('last', 'nowrap'), td('job'), td('paused'),
    isAdmin() ? h('td', { class: 'row-actions' }, pauseBtn, resumeBtn, trigger) : null);
  let sig = null;
  return {
    tr,
    update(s) {
      const key = JSON.stringify(s);
      if (key !== sig) {
        sig = key;
        setText(cells.def, s.every ? `every ${s.every}` : `${s.cron}${s.tz ? ` (${s.tz})` : ''}`);
        fill(cells.target, s.kind || '—', ' → ', s.queue ? queueLink(s.queue) : '—');
        fill(cells.job, s.last_job_id ? [jobLink(s.last_job_id, s.queue), ' ', s.last_state ? badge(STATE_LABEL[s.last_state] || s.last_state, s.last_state) : null] : h('span', { class: 'muted' }, '—'));
        fill(cells.paused, s.paused ? badge('paused') : h('span', { class: 'muted' }, 'no'));
        const focused = document.activeElement;
        show(pauseBtn, !s.paused);
        show(resumeBtn, !!s.paused);
        if (focused === pauseBtn && s.paused) resumeBtn.focus();
        if (focused === resumeBtn && !s.paused) pauseBtn.focus();
      }
      fill(cells.next, timeEl(s.next_run));
      fill(cells.last, timeEl(s.last_run));
    },
  };
}

// ------------------------------------------------------------------ start

boot();
