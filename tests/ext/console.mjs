#!/usr/bin/env node
// Drives the web console at /admin/ in a real headless Chromium (playwright-core, the
// system's chromium), as an operator would:
//
//     node console.mjs '{"url": ..., "key": ..., "chromium": ..., "screenshots": DIR,
//                        "nickname": ..., "user_id": ..., "day": START, "hour": START,
//                        "logins": {APP: N}, "new_persons": {APP: N}, "second_app": APP,
//                        "failed_code": CODE, "errcode": ERRCODE, "bob_openid": ...,
//                        "bob_id": ..., "markup_nickname": ...}'
//
// A wrong admin key is refused first; then it signs in with the right one and checks that
// the dashboard's charts are drawn with the figures of the day bucket START (logins and new
// persons per app, the failed share, failures by reason, WeChat errcodes and latency), for
// one app only, and by hour; switches to Chinese and back (remembered across a reload);
// checks that a Chinese browser starts in Chinese; searches the user by nickname, opens
// them, revokes their live session; lists every user (a nickname of markup must show as
// text); finds another by openid and revokes all his sessions; reads the audit log; signs
// out. A screenshot of each page goes to DIR. No console error, page error or CSP violation
// may happen (and an inline script, tried on purpose at the end, must be refused). Prints
// {"revoked_session": ID} on success; exits 1 with the reason otherwise, 2 on a usage error.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

if (process.argv.length !== 3) {
  console.error('usage: node console.mjs CONFIG_JSON');
  process.exit(2);
}
const cfg = JSON.parse(process.argv[2]);
fs.mkdirSync(cfg.screenshots, { recursive: true });

const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** A browser with a fresh profile (its own --user-data-dir), speaking `locale`. */
async function browser(locale) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'wxauth-console-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: cfg.chromium,
    args: ARGS,
    headless: true,
    locale,
    viewport: { width: 1280, height: 900 },
  });
  const page = context.pages()[0] || (await context.newPage());
  const problems = [];
  const csp = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') problems.push(`console ${msg.type()}: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('requestfailed', (req) => problems.push(`request failed: ${req.url()} ${req.failure()?.errorText}`));
  await page.exposeFunction('__wxCspViolation', (v) => csp.push(v));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__wxCspViolation(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  return {
    page, problems, csp,
    close: async () => {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(cfg.screenshots, `${name}.png`), fullPage: true });
}

/** Figures of the chart `id`'s marks: [{start, series, value}]. */
async function marks(page, id, selector) {
  return page.$$eval(`svg[data-chart="${id}"] ${selector}`, (nodes) => nodes.map((n) => ({
    start: n.getAttribute('data-start'),
    series: n.getAttribute('data-series'),
    value: Number(n.getAttribute('data-value')),
  })));
}

async function run() {
  const day = String(cfg.day);
  const en = await browser('en-US');
  const { page } = en;

  // Sign in (through /admin, which redirects to /admin/).
  const first = await page.goto(`${cfg.url}/admin`);
  check(first.ok(), `GET /admin answered ${first.status()}`);
  check(new URL(page.url()).pathname === '/admin/', `/admin led to ${page.url()}`);
  await page.waitForSelector('#key');
  check(await page.getAttribute('html', 'lang') === 'en', 'an English browser gets English');
  await shot(page, '01-signin');
  // A wrong key is refused on the spot and not kept. (The browser logs the 401 answer as a
  // failed resource: that one message is expected.)
  await page.fill('#key', 'wxadm_not-a-key-of-this-service');
  await page.click('#signin-submit');
  await page.waitForFunction(() => document.getElementById('signin-error').textContent !== '');
  check((await page.textContent('#signin-error')).includes('not accepted'), 'a wrong key is refused');
  check(await page.evaluate(() => sessionStorage.length) === 0, 'a wrong key is not kept');
  const refused = en.problems.splice(0);
  check(refused.length === 1 && refused[0].includes('401'), `signing in with a wrong key: ${JSON.stringify(refused)}`);
  await page.fill('#key', cfg.key);
  await page.click('#signin-submit');

  // Dashboard: the charts have today's figures.
  await page.waitForSelector('svg[data-chart="logins"]');
  check(await page.evaluate(() => sessionStorage.getItem('wxauth-console.key')) === cfg.key,
    'the key is kept in sessionStorage');
  check(await page.evaluate(() => Object.keys(localStorage).every((k) => !localStorage.getItem(k).includes('wxadm_'))),
    'the key is not in localStorage');
  const total = (byApp) => Object.values(byApp).reduce((a, n) => a + n, 0);
  const perApp = (list) => list.reduce((acc, m) => ({ ...acc, [m.series]: (acc[m.series] || 0) + m.value }), {});
  const same = (a, b) => JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());
  const logins = (await marks(page, 'logins', 'rect.bar')).filter((m) => m.start === day);
  check(logins.length > 0, 'the logins chart has a bar for the day');
  check(same(perApp(logins), cfg.logins),
    `the logins chart shows ${JSON.stringify(logins)} for the day, not ${JSON.stringify(cfg.logins)}`);
  const persons = (await marks(page, 'new_persons', 'rect.bar')).filter((m) => m.start === day);
  check(same(perApp(persons), cfg.new_persons),
    `the new persons chart shows ${JSON.stringify(persons)}, not ${JSON.stringify(cfg.new_persons)}`);
  const share = (await marks(page, 'failed_share', 'circle.point')).filter((m) => m.start === day);
  const expectedShare = (100 * 1) / (total(cfg.logins) + 1);
  check(share.length === 1 && Math.abs(share[0].value - expectedShare) < 0.01,
    `the failed share of the day is ${JSON.stringify(share)}, not ${expectedShare}`);
  const reasons = await marks(page, 'failed_reasons', 'rect.bar');
  check(reasons.some((m) => m.series === cfg.failed_code && m.value === 1),
    `failed logins by reason: ${JSON.stringify(reasons)}`);
  const errcodes = await marks(page, 'errcodes', 'rect.bar');
  check(errcodes.some((m) => m.series === cfg.errcode && m.value === 1),
    `WeChat errcodes: ${JSON.stringify(errcodes)}`);
  const latency = (await marks(page, 'latency', 'circle.point')).filter((m) => m.start === day);
  check(latency.some((m) => m.series === 'jscode2session' && m.value >= 0),
    `WeChat latency of the day: ${JSON.stringify(latency)}`);
  check(await page.textContent('[data-tile="logins"] .value') === String(total(cfg.logins)), 'the logins tile');
  await shot(page, '02-dashboard');

  // One mini program only, then by hour.
  const drawn = (hash) => page.waitForFunction((h) => document.getElementById('main').dataset.ready === h, hash);
  await page.selectOption('#app', cfg.second_app);
  await drawn(`#/?range=7d&app=${cfg.second_app}`);
  const only = await marks(page, 'logins', 'rect.bar');
  check(only.length > 0 && only.every((m) => m.series === cfg.second_app),
    `the logins chart of ${cfg.second_app} shows ${JSON.stringify(only)}`);
  check(same(perApp(only.filter((m) => m.start === day)), { [cfg.second_app]: cfg.logins[cfg.second_app] }),
    `the logins of ${cfg.second_app}: ${JSON.stringify(only)}`);
  await page.selectOption('#range', '24h');
  await drawn(`#/?range=24h&app=${cfg.second_app}`);
  const hourly = await marks(page, 'logins', 'rect.bar');
  check(hourly.length > 0 && hourly.every((m) => Number(m.start) % 3600 === 0 && Number(m.start) <= cfg.hour),
    `hourly logins: ${JSON.stringify(hourly)}`);
  await shot(page, '02-dashboard-hourly');
  await page.click('[data-nav="dashboard"]');
  await drawn('#/');

  // Chinese, remembered across a reload; then English again.
  await page.click('#lang');
  await page.waitForSelector('html[lang="zh-CN"]');
  check((await page.textContent('[data-nav="users"]')).trim() === '用户', 'the navigation is in Chinese');
  check((await page.textContent('main h1')).trim() === '概览', 'the dashboard is in Chinese');
  await page.waitForSelector('svg[data-chart="logins"] rect.bar');
  await shot(page, '03-dashboard-zh');
  await page.reload();
  await page.waitForSelector('svg[data-chart="logins"] rect.bar');
  check(await page.getAttribute('html', 'lang') === 'zh-CN', 'the language choice is remembered');
  await page.click('#lang');
  await page.waitForSelector('html[lang="en"]');
  check((await page.textContent('[data-nav="users"]')).trim() === 'Users', 'back in English');

  // Find the user by nickname and open them.
  await page.click('[data-nav="users"]');
  await page.waitForSelector('#search');
  await page.selectOption('#search-by', 'q');
  await page.fill('#search', cfg.nickname);
  await page.click('#search-submit');
  await page.waitForSelector(`tr[data-row="${cfg.user_id}"]`);
  const rows = await page.$$eval('#results tbody tr', (trs) => trs.map((tr) => tr.getAttribute('data-row')));
  check(rows.length === 1 && rows[0] === cfg.user_id, `the search found ${JSON.stringify(rows)}`);
  await shot(page, '04-users');
  await page.click(`tr[data-row="${cfg.user_id}"] a[data-user-id]`);
  await page.waitForSelector('[data-card="sessions"] tr[data-session]');
  check((await page.textContent('[data-card="profile"]')).includes(cfg.nickname), 'the profile shows the nickname');
  await shot(page, '05-user');

  // Revoke the live session.
  const buttons = await page.$$('button[data-revoke]');
  check(buttons.length === 1, `${buttons.length} revoke buttons, not 1`);
  const session = await buttons[0].getAttribute('data-revoke');
  page.once('dialog', (dialog) => dialog.accept());
  await buttons[0].click();
  await page.waitForSelector('#notice');
  check((await page.textContent('#notice')).includes('1'), 'the notice says one session was revoked');
  check(await page.$$eval('button[data-revoke]', (b) => b.length) === 0, 'no live session is left');
  check(await page.$eval(`tr[data-session="${session}"] .badge`, (b) => b.classList.contains('revoked')),
    'the session shows as revoked');
  await shot(page, '06-user-revoked');

  // Every user, a nickname of markup shown as text; then Bob by openid, and all his sessions.
  await page.click('[data-nav="users"]');
  await drawn('#/users');
  const markup = await page.$$eval('#results tbody td', (tds) => tds.map((td) => td.textContent));
  check(markup.includes(cfg.markup_nickname), `the nickname is not shown as text: ${JSON.stringify(markup)}`);
  check(await page.$$eval('#results img', (imgs) => imgs.length) === 0, 'a nickname became an element');
  check(await page.evaluate(() => window.__xss) === undefined, 'a nickname ran a script');
  await shot(page, '06-users-all');
  await page.selectOption('#search-by', 'openid');
  await page.fill('#search', cfg.bob_openid);
  await page.click('#search-submit');
  await page.waitForSelector(`tr[data-row="${cfg.bob_id}"]`);
  check(await page.$$eval('#results tbody tr', (trs) => trs.length) === 1, 'the openid finds one user');
  await page.click(`tr[data-row="${cfg.bob_id}"] a[data-user-id]`);
  await page.waitForSelector('#revoke-all');
  check(await page.$$eval('button[data-revoke]', (b) => b.length) === 2, 'Bob has two live sessions');
  page.once('dialog', (dialog) => dialog.accept());
  await page.click('#revoke-all');
  await page.waitForSelector('#notice');
  check((await page.textContent('#notice')).includes('2'), 'the notice says two sessions were revoked');
  check(await page.$$eval('button[data-revoke], #revoke-all', (b) => b.length) === 0, 'no live session is left');
  await shot(page, '06-user-revoked-all');

  // The audit log shows the revocation.
  await page.click('[data-nav="audit"]');
  await page.waitForSelector('tr[data-entry]');
  const actions = await page.$$eval('tr[data-entry] td:nth-child(3)', (tds) => tds.map((td) => td.textContent));
  check(actions.includes('session.revoke'), `audit actions: ${JSON.stringify(actions)}`);
  await shot(page, '07-audit');

  // Signing out forgets the key.
  await page.click('#signout');
  await page.waitForSelector('#key');
  check(await page.evaluate(() => sessionStorage.length) === 0, 'signing out forgets the key');

  check(en.problems.length === 0, `problems in the page:\n${en.problems.join('\n')}`);
  check(en.csp.length === 0, `CSP violations: ${JSON.stringify(en.csp)}`);
  // The policy is enforced (and violations would be seen): an inline script is refused.
  await page.evaluate(() => {
    const script = document.createElement('script');
    script.textContent = 'window.__inlineRan = true;';
    document.body.appendChild(script);
  });
  await page.waitForTimeout(200);
  check(await page.evaluate(() => window.__inlineRan) === undefined, 'an inline script ran');
  check(en.csp.some((v) => v.startsWith('script-src')), `the inline script was not reported: ${JSON.stringify(en.csp)}`);
  await en.close();

  // A Chinese browser starts in Chinese.
  const zh = await browser('zh-CN');
  await zh.page.goto(`${cfg.url}/admin/`);
  await zh.page.waitForSelector('#key');
  check(await zh.page.getAttribute('html', 'lang') === 'zh-CN', 'a Chinese browser gets Chinese');
  check((await zh.page.textContent('main h1')).trim() === '登录', 'the sign-in page is in Chinese');
  await shot(zh.page, '00-signin-zh');
  check(zh.problems.length === 0, `problems in the page:\n${zh.problems.join('\n')}`);
  check(zh.csp.length === 0, `CSP violations: ${JSON.stringify(zh.csp)}`);
  await zh.close();

  return { revoked_session: session };
}

try {
  const result = await run();
  console.log(JSON.stringify(result));
} catch (err) {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
}
