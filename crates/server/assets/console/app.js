// The console: sign-in, dashboard, user search, a user's page, the audit log. Pages are
// routed by the URL's fragment (#/, #/users?by=q&v=..., #/users/ID, #/audit); every figure
// comes from the admin API. The DOM is built with textContent only (no HTML from data).

import { api, adminKey, setAdminKey, query, ApiError } from './api.js';
import { barChart, lineChart, hbarChart, legend } from './charts.js';
import { t, lang, setLang, locale } from './i18n.js';

const main = document.getElementById('main');
const DAY = 86400;
const HOUR = 3600;

// ---- small DOM helpers ----

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(...nodes) {
  main.replaceChildren(...nodes);
}

function when(rfc3339) {
  if (!rfc3339) return '';
  const d = new Date(rfc3339);
  return Number.isNaN(d.getTime()) ? rfc3339 : d.toLocaleString(locale());
}

function table(columns, rows) {
  return h('table', {},
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', {}, c)))),
    h('tbody', {}, rows));
}

function failure(err) {
  if (err instanceof ApiError && err.status === 0) return t('error.network');
  return t('error.generic', { message: err.message || String(err) });
}

/** Runs a page's loader; a refused key goes back to sign-in, other errors are shown. */
async function guarded(load) {
  try {
    await load();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      setAdminKey(null);
      render();
      return;
    }
    show(h('p', { class: 'error', 'data-error': err.code || 'error' }, failure(err)));
  }
}

// ---- chrome: language, navigation, sign out ----

function applyLanguage() {
  document.documentElement.lang = locale();
  document.title = t('title');
  for (const node of document.querySelectorAll('[data-i18n]')) {
    node.textContent = t(node.dataset.i18n);
  }
  document.getElementById('lang').textContent = t('lang.other');
}

document.getElementById('lang').addEventListener('click', () => {
  setLang(lang() === 'zh' ? 'en' : 'zh');
  applyLanguage();
  render();
});

document.getElementById('signout').addEventListener('click', () => {
  setAdminKey(null);
  location.hash = '#/';
  render();
});

window.addEventListener('hashchange', () => render());

function route() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, search = ''] = hash.split('?');
  return { path, params: new URLSearchParams(search) };
}

function render() {
  const signedIn = Boolean(adminKey());
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('signout').hidden = !signedIn;
  if (!signedIn) {
    signIn();
    return;
  }
  const { path, params } = route();
  let page = 'dashboard';
  if (path === '/users') page = 'users';
  else if (path.startsWith('/users/')) page = 'user';
  else if (path === '/audit') page = 'audit';
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('current', a.dataset.nav === page || (page === 'user' && a.dataset.nav === 'users'));
  }
  main.dataset.page = page;
  // `data-ready` names the view once it is drawn (for tests and scripts).
  const hash = location.hash || '#/';
  main.dataset.ready = '';
  let loading;
  if (page === 'users') loading = guarded(() => users(params));
  else if (page === 'user') loading = guarded(() => user(decodeURIComponent(path.slice('/users/'.length))));
  else if (page === 'audit') loading = guarded(() => audit());
  else loading = guarded(() => dashboard(params));
  loading.then(() => {
    if ((location.hash || '#/') === hash) main.dataset.ready = hash;
  });
}

// ---- sign in ----

function signIn() {
  main.dataset.page = 'signin';
  const input = h('input', {
    type: 'password', id: 'key', name: 'key', autocomplete: 'off', spellcheck: 'false', required: true,
  });
  const message = h('p', { class: 'error', id: 'signin-error' });
  const form = h('form', {
    onsubmit: async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      message.textContent = '';
      try {
        await api('/v1/admin/audit?limit=1', { key });
      } catch (err) {
        message.textContent = err instanceof ApiError && err.status === 401 ? t('signin.wrong') : failure(err);
        return;
      }
      setAdminKey(key);
      render();
    },
  },
  h('label', { for: 'key' }, t('signin.key')), input,
  h('button', { type: 'submit', class: 'primary', id: 'signin-submit' }, t('signin.submit')), message);
  show(h('div', { class: 'card signin' }, h('h1', {}, t('signin.title')), h('p', {}, t('signin.help')), form));
  input.focus();
}

// ---- dashboard ----

const RANGES = {
  '7d': { bucket: 'day', count: 7 },
  '30d': { bucket: 'day', count: 30 },
  '24h': { bucket: 'hour', count: 24 },
};

function bucketLabel(start, bucket) {
  const d = new Date(start * 1000);
  const two = (n) => String(n).padStart(2, '0');
  return bucket === 'hour'
    ? `${two(d.getUTCHours())}:00`
    : `${two(d.getUTCMonth() + 1)}-${two(d.getUTCDate())}`;
}

function sumMap(target, map) {
  for (const [k, v] of Object.entries(map || {})) target[k] = (target[k] || 0) + v;
  return target;
}

function percent(v) {
  return `${Math.round(v * 10) / 10}%`;
}

async function dashboard(params) {
  const rangeName = RANGES[params.get('range')] ? params.get('range') : '7d';
  const range = RANGES[rangeName];
  const appId = params.get('app') || '';
  const size = range.bucket === 'day' ? DAY : HOUR;
  const now = Math.floor(Date.now() / 1000);
  const from = Math.floor(now / size) * size - (range.count - 1) * size;
  show(h('p', { class: 'muted' }, t('loading')));
  const report = await api('/v1/admin/stats' + query({ bucket: range.bucket, from, app_id: appId }));
  // The apps to choose from: those with figures in the range.
  const apps = [...new Set(report.series.map((s) => s.app_id))].sort();
  if (appId && !apps.includes(appId)) apps.push(appId);

  const navigate = (next) => {
    location.hash = '#/' + query({ range: next.range ?? rangeName, app: next.app ?? appId });
  };
  const rangeSelect = h('select', { id: 'range', onchange: (e) => navigate({ range: e.target.value }) },
    Object.keys(RANGES).map((name) => h('option', { value: name, selected: name === rangeName }, t(`dash.range.${name}`))));
  const appSelect = h('select', { id: 'app', onchange: (e) => navigate({ app: e.target.value }) },
    h('option', { value: '' }, t('dash.allApps')),
    apps.map((app) => h('option', { value: app, selected: app === appId }, app)));
  const toolbar = h('div', { class: 'toolbar' },
    h('label', {}, t('dash.range'), ' ', rangeSelect),
    h('label', {}, t('dash.app'), ' ', appSelect),
    h('button', { type: 'button', id: 'refresh', onclick: () => render() }, t('dash.refresh')),
    h('span', { class: 'muted' }, t('dash.utc')));

  const totals = report.totals;
  const labels = totals.map((b) => ({ start: b.start, text: bucketLabel(b.start, report.bucket) }));
  const index = new Map(totals.map((b, i) => [b.start, i]));
  const shownApps = appId ? [appId] : apps;
  const perApp = (field) => shownApps.map((app, k) => {
    const values = labels.map(() => 0);
    for (const s of report.series) {
      if (s.app_id === app && index.has(s.start)) values[index.get(s.start)] += s[field];
    }
    return { name: app, cls: `s${k % 8}`, values };
  });

  // Tiles: the whole range.
  const sum = (f) => totals.reduce((acc, b) => acc + b[f], 0);
  const reasons = totals.reduce((acc, b) => sumMap(acc, b.login_errors), {});
  const errcodes = totals.reduce((acc, b) => sumMap(acc, b.wechat_errcodes), {});
  const failed = Object.values(reasons).reduce((a, b) => a + b, 0);
  const logins = sum('logins');
  const wechatErrors = Object.values(errcodes).reduce((a, b) => a + b, 0);
  const tile = (id, label, value) => h('div', { class: 'tile', 'data-tile': id },
    h('div', { class: 'value' }, value), h('div', { class: 'label' }, label));
  const tiles = h('div', { class: 'tiles' },
    tile('logins', t('tile.logins'), logins),
    tile('new_persons', t('tile.newPersons'), sum('new_persons')),
    tile('active_persons', t('tile.active'), totals.length ? totals[totals.length - 1].active_persons : 0),
    tile('failed', t('tile.failed'), failed),
    tile('failed_share', t('tile.failedShare'), percent(logins + failed ? (100 * failed) / (logins + failed) : 0)),
    tile('wechat_calls', t('tile.wechatCalls'), sum('wechat_calls')),
    tile('wechat_errors', t('tile.wechatErrors'), wechatErrors));

  const card = (id, heading, ...body) => h('section', { class: 'card', 'data-card': id }, h('h2', {}, heading), ...body);
  const empty = () => h('p', { class: 'empty' }, t('chart.empty'));

  const loginSeries = perApp('logins');
  const newSeries = perApp('new_persons');
  const share = [{
    name: t('chart.failedShare'), cls: 's4',
    values: totals.map((b) => {
      const bad = Object.values(b.login_errors).reduce((a, c) => a + c, 0);
      return b.logins + bad ? (100 * bad) / (b.logins + bad) : null;
    }),
  }];
  const endpoints = [...new Set(totals.flatMap((b) => Object.keys(b.wechat)))].sort();
  const latency = endpoints.map((ep, k) => ({
    name: ep, cls: `s${k % 8}`,
    values: totals.map((b) => (b.wechat[ep] && b.wechat[ep].calls ? Math.round(b.wechat[ep].avg_ms * 10) / 10 : null)),
  }));
  const items = (map) => Object.entries(map).map(([label, value]) => ({ label, value }));

  show(
    h('h1', {}, t('dash.title')), toolbar, tiles,
    h('div', { class: 'grid' },
      card('logins', t('chart.logins'), barChart({ id: 'logins', labels, series: loginSeries }), legend(loginSeries)),
      card('new_persons', t('chart.newPersons'), barChart({ id: 'new_persons', labels, series: newSeries }), legend(newSeries)),
      card('failed_share', t('chart.failedShare'), lineChart({ id: 'failed_share', labels, series: share, format: percent, max: 100 })),
      card('failed_reasons', t('chart.failedReasons'), failed ? hbarChart({ id: 'failed_reasons', items: items(reasons) }) : empty()),
      card('errcodes', t('chart.errcodes'), wechatErrors ? hbarChart({ id: 'errcodes', items: items(errcodes) }) : empty()),
      card('latency', t('chart.latency'), endpoints.length
        ? [lineChart({ id: 'latency', labels, series: latency, format: (v) => `${v}` }), legend(latency)]
        : empty())));
}

// ---- users ----

const SEARCH_BY = ['q', 'phone', 'openid', 'unionid', 'id'];

function phoneText(phone) {
  return phone ? `+${phone.country_code} ${phone.number}` : '';
}

function userLink(id, text) {
  return h('a', { href: `#/users/${encodeURIComponent(id)}`, 'data-user-id': id }, text ?? id);
}

async function users(params) {
  const by = SEARCH_BY.includes(params.get('by')) ? params.get('by') : 'q';
  const value = params.get('v') || '';
  const select = h('select', { id: 'search-by' },
    SEARCH_BY.map((name) => h('option', { value: name, selected: name === by }, t(`users.by.${name}`))));
  const input = h('input', { type: 'search', id: 'search', value, autocomplete: 'off' });
  const form = h('form', {
    class: 'toolbar',
    onsubmit: (event) => {
      event.preventDefault();
      location.hash = '#/users' + query({ by: select.value, v: input.value.trim() });
    },
  }, h('label', {}, t('users.by'), ' ', select), input,
  h('button', { type: 'submit', class: 'primary', id: 'search-submit' }, t('users.search')));
  const tbody = h('tbody', {});
  const results = h('div', { id: 'results' }, h('p', { class: 'muted' }, t('loading')));
  show(h('h1', {}, t('users.title')), form, h('section', { class: 'card' }, results));
  input.focus();

  const filter = value ? { [by]: value } : {};
  let cursor = null;
  const more = h('button', { type: 'button', class: 'more', id: 'more' }, t('users.more'));
  const page = async () => {
    const answer = await api('/v1/admin/users' + query({ ...filter, cursor, limit: 20 }));
    for (const u of answer.users) {
      tbody.append(h('tr', { 'data-row': u.id },
        h('td', { class: 'mono' }, userLink(u.id)),
        h('td', {}, u.nickname || ''),
        h('td', {}, phoneText(u.phone)),
        h('td', { class: 'mono' }, u.unionid || ''),
        h('td', {}, when(u.created_at))));
    }
    cursor = answer.next_cursor;
    more.hidden = !cursor;
  };
  more.addEventListener('click', () => guarded(page));
  await page();
  if (!tbody.children.length) {
    results.replaceChildren(h('p', { class: 'empty' }, t('users.none')));
    return;
  }
  results.replaceChildren(table(
    [t('col.id'), t('col.nickname'), t('col.phone'), t('col.unionid'), t('col.created')], []), more);
  results.querySelector('table').replaceChild(tbody, results.querySelector('tbody'));
}

// ---- one user ----

function sessionStatus(s) {
  if (s.revoked) return h('span', { class: 'badge revoked' }, t('status.revoked', { reason: s.revoke_reason || '' }));
  if (s.active) return h('span', { class: 'badge active' }, t('status.active'));
  return h('span', { class: 'badge' }, t('status.expired'));
}

async function user(id, notice) {
  const person = await api(`/v1/admin/users/${encodeURIComponent(id)}`);
  const u = person.user;
  const kv = (label, value) => [h('dt', {}, label), h('dd', {}, value ?? '')];
  const revoke = async (path, confirmText) => {
    if (!window.confirm(confirmText)) return;
    await guarded(async () => {
      const answer = await api(path, { method: 'POST' });
      await user(id, t('user.revoked', { n: answer.revoked }));
    });
  };
  const sessions = person.sessions.map((s) => h('tr', { 'data-session': s.id },
    h('td', { class: 'mono' }, s.app_id), h('td', {}, when(s.created_at)), h('td', {}, when(s.last_seen_at)),
    h('td', {}, when(s.expires_at)), h('td', { class: 'mono' }, s.ip || ''),
    h('td', {}, s.user_agent || ''), h('td', {}, sessionStatus(s)),
    h('td', {}, s.active ? h('button', {
      type: 'button', class: 'danger', 'data-revoke': s.id,
      onclick: () => revoke(`/v1/admin/sessions/${encodeURIComponent(s.id)}/revoke`, t('user.confirmRevoke')),
    }, t('user.revoke')) : '')));
  show(
    h('p', {}, h('a', { href: '#/users' }, t('user.back'))),
    h('h1', {}, t('user.title', { id: u.nickname ? `${u.nickname} · ${u.id}` : u.id })),
    notice ? h('p', { class: 'notice', id: 'notice' }, notice) : null,
    h('section', { class: 'card', 'data-card': 'profile' }, h('h2', {}, t('user.profile')),
      h('dl', { class: 'kv' },
        kv(t('col.id'), h('span', { class: 'mono' }, u.id)), kv(t('col.nickname'), u.nickname),
        kv(t('col.phone'), phoneText(u.phone)), kv(t('col.unionid'), h('span', { class: 'mono' }, u.unionid || '')),
        kv(t('field.gender'), t(`gender.${u.gender}`)),
        kv(t('field.country'), [u.country, u.province, u.city].filter(Boolean).join(' · ')),
        kv(t('field.language'), u.language), kv(t('col.created'), when(u.created_at)),
        kv(t('field.updated'), when(u.updated_at)),
        u.extra ? kv(t('field.extra'), h('span', { class: 'mono' }, JSON.stringify(u.extra))) : null)),
    h('section', { class: 'card', 'data-card': 'identities' }, h('h2', {}, t('user.identities')),
      table([t('col.app'), t('col.openid'), t('col.created')], person.identities.map((i) => h('tr', {},
        h('td', { class: 'mono' }, i.app_id), h('td', { class: 'mono' }, i.openid), h('td', {}, when(i.created_at)))))),
    h('section', { class: 'card', 'data-card': 'sessions' },
      h('div', { class: 'toolbar' }, h('h2', {}, t('user.sessions')),
        person.sessions.some((s) => s.active) ? h('button', {
          type: 'button', class: 'danger', id: 'revoke-all',
          onclick: () => revoke(`/v1/admin/users/${encodeURIComponent(u.id)}/revoke-sessions`, t('user.confirmRevokeAll')),
        }, t('user.revokeAll')) : null),
      person.sessions.length
        ? table([t('col.app'), t('col.created'), t('col.lastSeen'), t('col.expires'), t('col.ip'),
          t('col.userAgent'), t('col.status'), ''], sessions)
        : h('p', { class: 'empty' }, t('user.noSessions'))),
    h('section', { class: 'card', 'data-card': 'merges' }, h('h2', {}, t('user.merges')),
      person.merges.length
        ? table([t('col.merged'), t('col.unionid'), t('col.mergedAt')], person.merges.map((m) => h('tr', {},
          h('td', { class: 'mono' }, m.merged_id), h('td', { class: 'mono' }, m.unionid), h('td', {}, when(m.merged_at)))))
        : h('p', { class: 'empty' }, t('user.noMerges'))));
}

// ---- audit log ----

function target(text) {
  if (text && text.startsWith('user:')) return userLink(text.slice(5), text);
  return text || '';
}

async function audit() {
  const tbody = h('tbody', {});
  const more = h('button', { type: 'button', class: 'more', id: 'more' }, t('audit.more'));
  let cursor = null;
  const page = async () => {
    const answer = await api('/v1/admin/audit' + query({ cursor, limit: 50 }));
    for (const e of answer.entries) {
      tbody.append(h('tr', { 'data-entry': e.id },
        h('td', { class: 'nowrap' }, when(e.occurred_at)),
        h('td', { class: 'nowrap' }, e.actor ? `${e.actor_kind}: ${e.actor}` : e.actor_kind),
        h('td', { class: 'mono' }, e.action), h('td', { class: 'mono' }, target(e.target)),
        h('td', { class: 'mono nowrap' }, e.ip || ''),
        h('td', { class: 'mono' }, e.detail ? JSON.stringify(e.detail) : '')));
    }
    cursor = answer.next_cursor;
    more.hidden = !cursor;
  };
  more.addEventListener('click', () => guarded(page));
  await page();
  const list = table([t('col.time'), t('col.actor'), t('col.action'), t('col.target'), t('col.ip'), t('col.detail')], []);
  list.replaceChild(tbody, list.querySelector('tbody'));
  show(h('h1', {}, t('audit.title')),
    h('section', { class: 'card' }, tbody.children.length ? [list, more] : h('p', { class: 'empty' }, t('audit.none'))));
}

applyLanguage();
render();
