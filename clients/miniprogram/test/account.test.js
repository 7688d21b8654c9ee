'use strict';
// Account deletion (注销) and the data export, against the real wxauth binary and simulator.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { createAuth } = require('../wxauth.js');
const { startStack } = require('./support/stack.js');
const { createWx } = require('./support/wx.js');

let stack;

before(async () => {
  stack = await startStack({ accessTtl: '1h' });
});

after(async () => {
  if (stack) await stack.stop();
});

function client(user) {
  const env = createWx({ simUrl: stack.simUrl, appId: stack.appId, user });
  const auth = createAuth({ baseUrl: stack.baseUrl, appId: stack.appId, wx: env.wx });
  return { env, auth };
}

/** The access token a client last sent to wxauth. */
function lastAccessToken(env) {
  const sent = env.calls.requests.filter((r) => r.header && r.header.Authorization);
  const header = sent.length ? sent[sent.length - 1].header.Authorization : '';
  const match = /^Bearer (wxa_[A-Za-z0-9_-]+)$/.exec(header);
  return match ? match[1] : null;
}

/** Whether wxauth takes an access token for GET /v1/me (status). */
async function meStatus(token) {
  const res = await fetch(`${stack.baseUrl}/v1/me`, { headers: { Authorization: `Bearer ${token}` } });
  return res.status;
}

test('exportData gives everything stored: profile, full phone, identities, sessions, merges', async () => {
  const { env, auth } = client('export');
  const first = await auth.login();
  await auth.updateProfile({ nickname: '导出' });
  await auth.bindPhone(await env.phoneButton('13800138001'));

  const data = await auth.exportData();

  assert.equal(data.user.id, first.user.id);
  assert.equal(data.user.nickname, '导出');
  assert.deepEqual(data.user.phone, { country_code: '86', number: '13800138001' });
  assert.deepEqual(
    data.identities.map((i) => [i.app_id, i.openid]),
    [[stack.appId, first.user.openid]]
  );
  assert.equal(data.sessions.length, 1);
  assert.equal(data.sessions[0].ip, '127.0.0.1');
  assert.equal(data.sessions[0].active, true);
  assert.match(data.sessions[0].created_at, /Z$/);
  assert.deepEqual(data.merges, []);
  const export_ = env.calls.requests.find((r) => r.path === '/v1/me/export');
  assert.equal(export_.method, 'GET');
});

test('deleteAccount erases the user on the server, forgets the tokens, and a new login is a new user', async () => {
  const { env, auth } = client('leaver');
  const first = await auth.login();
  await auth.updateProfile({ nickname: 'Leaver' });
  const token = lastAccessToken(env);
  assert.ok(token, 'an access token was used');
  assert.equal(await meStatus(token), 200);

  await auth.deleteAccount();

  assert.equal(auth.isLoggedIn(), false);
  const sent = env.calls.requests.find((r) => r.path === '/v1/me/delete');
  assert.equal(sent.method, 'POST', 'POST: wx.request has no DELETE on every base library');
  assert.equal(await meStatus(token), 401, 'the old token is dead');

  const again = await auth.login();
  assert.equal(again.is_new_user, true);
  assert.notEqual(again.user.id, first.user.id);
  const user = await auth.user();
  assert.equal(user.nickname, null);
});

test('deleteAccount without stored tokens logs in first and deletes that same user', async () => {
  const { env, auth } = client('returning-leaver');
  const first = await auth.login();
  await auth.user();
  const token = lastAccessToken(env);
  assert.equal(await meStatus(token), 200);
  const relaunched = createAuth({
    baseUrl: stack.baseUrl,
    appId: stack.appId,
    wx: createWx({ simUrl: stack.simUrl, appId: stack.appId, user: 'returning-leaver' }).wx,
  });
  await relaunched.deleteAccount();
  assert.equal(await meStatus(token), 401, "the first client's session went with the user");
  const again = await auth.login();
  assert.notEqual(again.user.id, first.user.id);
});
