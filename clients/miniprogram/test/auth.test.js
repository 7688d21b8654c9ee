'use strict';
// Login, token storage, refresh and re-login, against the real wxauth binary and simulator.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');

const { createAuth } = require('../wxauth.js');
const { startStack, sleep } = require('./support/stack.js');
const { createWx } = require('./support/wx.js');

const ACCESS_TTL_MS = 2000;
/** Long enough for a 2 s access token to be expired on the server. */
const WAIT_FOR_EXPIRY_MS = ACCESS_TTL_MS + 1200;

let stack;

before(async () => {
  stack = await startStack({ accessTtl: `${ACCESS_TTL_MS / 1000}s` });
});

after(async () => {
  if (stack) await stack.stop();
});

/** A stand-in and a client for one simulated user. */
function client(user, storage) {
  const env = createWx({ simUrl: stack.simUrl, appId: stack.appId, user, storage });
  const auth = createAuth({ baseUrl: stack.baseUrl, appId: stack.appId, wx: env.wx });
  return { env, auth };
}

function stored(env) {
  return env.wx.getStorageSync(`wxauth:${stack.appId}:tokens`);
}

test('the first login exchanges a wx.login code and stores the tokens under a namespaced key', async () => {
  const { env, auth } = client('first-login');
  const result = await auth.login();

  assert.equal(env.calls.login, 1);
  assert.equal(result.is_new_user, true);
  assert.equal(result.user.app_id, stack.appId);
  assert.ok(result.user.id);
  assert.equal(result.access_token, undefined, 'tokens are not handed to the caller');
  assert.equal(result.refresh_token, undefined);

  const tokens = stored(env);
  assert.match(tokens.accessToken, /^wxa_/);
  assert.match(tokens.refreshToken, /^wxr_/);
  assert.deepEqual([...env.storage.keys()], [`wxauth:${stack.appId}:tokens`]);
  assert.equal(auth.isLoggedIn(), true);

  // The login carried the app id, as a multi-app server requires.
  const loginCall = env.calls.requests.find((r) => r.path === '/v1/auth/login');
  assert.equal(loginCall.data.app_id, stack.appId);
  assert.equal(typeof loginCall.data.code, 'string');

  const me = await auth.user();
  assert.equal(me.id, result.user.id);
  assert.equal(env.calls.login, 1, 'no second wx.login');
});

test('a request without stored tokens logs in first and sends the bearer token', async () => {
  const { env, auth } = client('lazy-login');
  const res = await auth.request({ url: '/v1/me' });

  assert.equal(res.statusCode, 200);
  assert.equal(res.data.app_id, stack.appId);
  assert.equal(env.calls.login, 1);
  const me = env.calls.requests.find((r) => r.path === '/v1/me');
  assert.equal(me.header.Authorization, `Bearer ${stored(env).accessToken}`);
});

test('request hands wx.request options such as dataType on and still reads 401 answers given as text', async () => {
  const { env, auth } = client('text-answers');
  await auth.login();
  await stack.api('POST', '/v1/auth/logout', { token: stored(env).accessToken });

  const res = await auth.request({ url: '/v1/me', dataType: 'text', timeout: 5000 });

  assert.equal(res.statusCode, 200);
  assert.equal(typeof res.data, 'string');
  assert.equal(JSON.parse(res.data).app_id, stack.appId);
  assert.equal(env.calls.login, 2, 'the text 401 token_revoked was understood');
});

test('concurrent logins share one wx.login and one server login', async () => {
  const { env, auth } = client('concurrent-login');
  const results = await Promise.all([auth.login(), auth.login(), auth.login(), auth.request({ url: '/v1/me' })]);

  assert.equal(env.calls.login, 1);
  assert.equal(env.count('/v1/auth/login'), 1);
  assert.equal(results[0], results[1]);
  assert.equal(results[3].statusCode, 200);
});

test('stored tokens are reused by a relaunched mini program without logging in again', async () => {
  const storage = new Map();
  const first = client('relaunch', storage);
  const { user } = await first.auth.login();

  // A new client over the same storage: the mini program was closed and opened again.
  const second = client('relaunch', storage);
  const me = await second.auth.user();

  assert.equal(me.id, user.id);
  assert.equal(second.env.calls.login, 0);
  assert.equal(second.env.count('/v1/auth/login'), 0);
});

test('an expired access token is refreshed and the request then succeeds', async () => {
  const { env, auth } = client('expiry');
  const { user } = await auth.login();
  const before = stored(env);

  await sleep(WAIT_FOR_EXPIRY_MS);
  const res = await auth.request({ url: '/v1/me' });

  assert.equal(res.statusCode, 200);
  assert.equal(res.data.id, user.id);
  assert.equal(env.count('/v1/auth/refresh'), 1);
  assert.equal(env.count('/v1/me'), 2, 'one 401 token_expired, one retry');
  assert.equal(env.calls.login, 1, 'no new wx.login');
  const after = stored(env);
  assert.notEqual(after.accessToken, before.accessToken);
  assert.notEqual(after.refreshToken, before.refreshToken, 'the refresh token rotated');
});

test('a refresh token that was already used makes the client log in again', async () => {
  const { env, auth } = client('reuse');
  const { user } = await auth.login();
  // Someone else (a stolen copy, another device) uses this session's refresh token first.
  const stolen = await stack.api('POST', '/v1/auth/refresh', { body: { refresh_token: stored(env).refreshToken } });
  assert.equal(stolen.statusCode, 200);

  await sleep(WAIT_FOR_EXPIRY_MS);
  const res = await auth.request({ url: '/v1/me' });

  assert.equal(res.statusCode, 200);
  assert.equal(res.data.id, user.id, 'the same person, in a new session');
  assert.equal(env.count('/v1/auth/refresh'), 1, 'the reused refresh was tried once');
  assert.equal(env.calls.login, 2, 'then wx.login once more');
  // Reuse detection revoked the whole session: the thief's new tokens are dead too.
  const thief = await stack.api('GET', '/v1/me', { token: stolen.data.access_token });
  assert.equal(thief.statusCode, 401);
});

test('twenty concurrent requests on an expired token share a single refresh', async () => {
  const { env, auth } = client('stampede');
  await auth.login();
  await sleep(WAIT_FOR_EXPIRY_MS);

  const results = await Promise.all(Array.from({ length: 20 }, () => auth.request({ url: '/v1/me' })));

  assert.deepEqual(
    results.map((r) => r.statusCode),
    Array(20).fill(200)
  );
  assert.equal(env.count('/v1/auth/refresh'), 1);
  assert.equal(env.calls.login, 1);
  assert.equal(env.count('/v1/me'), 40, 'each request: one 401, one retry');
});

test('a revoked session makes the next request log in again and retry once', async () => {
  const { env, auth } = client('revoked');
  await auth.login();
  // The session is revoked behind the client's back (here: its own token logged out).
  const out = await stack.api('POST', '/v1/auth/logout', { token: stored(env).accessToken });
  assert.equal(out.statusCode, 204);

  const res = await auth.request({ url: '/v1/me' });
  assert.equal(res.statusCode, 200);
  assert.equal(env.calls.login, 2);
  assert.equal(env.count('/v1/auth/refresh'), 0, 'token_revoked is not refreshed');
});

test('logout revokes the session on the server and forgets the tokens', async () => {
  const { env, auth } = client('logout');
  await auth.login();
  const token = stored(env).accessToken;

  await auth.logout();

  assert.equal(stored(env), '', 'storage is empty');
  assert.equal(auth.isLoggedIn(), false);
  assert.equal(env.count('/v1/auth/logout'), 1);
  const res = await stack.api('GET', '/v1/me', { token });
  assert.equal(res.statusCode, 401);
  assert.equal(res.data.error.code, 'token_revoked');

  // Logging out again is a no-op; the next call logs in afresh.
  await auth.logout();
  assert.equal(env.count('/v1/auth/logout'), 1);
  const me = await auth.user();
  assert.ok(me.id);
  assert.equal(env.calls.login, 2);
});

test('logout after the access token expired still ends the session on the server', async () => {
  const { env, auth } = client('logout-expired');
  await auth.login();
  const { refreshToken } = stored(env);
  await sleep(WAIT_FOR_EXPIRY_MS);

  await auth.logout();

  assert.equal(stored(env), '', 'storage is empty');
  assert.equal(env.count('/v1/auth/refresh'), 0, 'no refresh just to log out');
  const call = env.calls.requests.find((r) => r.path === '/v1/auth/logout');
  assert.equal(call.data.refresh_token, refreshToken, 'the refresh token goes along');
  const res = await stack.api('POST', '/v1/auth/refresh', { body: { refresh_token: refreshToken } });
  assert.equal(res.statusCode, 401);
  assert.equal(res.data.error.code, 'token_revoked');
});

test('logout forgets the tokens even when the server cannot be reached', async () => {
  const { env, auth } = client('logout-offline');
  await auth.login();
  env.setOffline(() => true);
  await assert.rejects(auth.logout(), { code: 'network_error', statusCode: 0 });
  assert.equal(stored(env), '');
});

test('error answers other than 401 are returned as they are, not retried', async () => {
  const { env, auth } = client('not-found');
  await auth.login();

  const res = await auth.request({ url: '/v1/nothing-here', method: 'GET' });
  assert.equal(res.statusCode, 404);
  assert.equal(res.data.error.code, 'not_found');
  assert.equal(env.count('/v1/nothing-here'), 1);

  const bad = await auth.request({ url: '/v1/me/userinfo', method: 'POST', data: { iv: 'x' } });
  assert.equal(bad.statusCode, 400);
  assert.equal(env.count('/v1/me/userinfo'), 1);
  assert.equal(env.calls.login, 1);
});

test('a 401 that persists after a refresh and a new login is returned, not looped on', async () => {
  const { env, auth } = client('persistent-401');
  // The wx.request stand-in answers every /v1/me with 401 token_expired.
  const realRequest = env.wx.request;
  env.wx.request = (opts) => {
    if (new URL(opts.url).pathname === '/v1/me') {
      env.calls.requests.push({ method: 'GET', path: '/v1/me', header: opts.header });
      setImmediate(() =>
        opts.success({ statusCode: 401, data: { error: { code: 'token_expired', message: 'expired' } }, header: {} })
      );
      return;
    }
    realRequest(opts);
  };

  const res = await auth.request({ url: '/v1/me' });
  assert.equal(res.statusCode, 401);
  assert.equal(env.count('/v1/me'), 3, 'the first try, the retry after the refresh, the retry after the login');
  assert.equal(env.count('/v1/auth/refresh'), 1);
  assert.equal(env.calls.login, 2, 'the first login and one more');
  await assert.rejects(auth.user(), (err) => {
    assert.ok(err instanceof Error);
    assert.equal(err.code, 'token_expired');
    assert.equal(err.statusCode, 401);
    return true;
  });
});

test('a failed login rejects with the server code and HTTP status', async () => {
  const env = createWx({ simUrl: stack.simUrl, appId: stack.appId, user: 'bad-code' });
  env.wx.login = (opts) => setImmediate(() => opts.success({ code: 'not-a-real-code', errMsg: 'login:ok' }));
  const auth = createAuth({ baseUrl: stack.baseUrl, appId: stack.appId, wx: env.wx });

  await assert.rejects(auth.login(), (err) => {
    assert.ok(err instanceof Error);
    assert.equal(err.code, 'invalid_code');
    assert.equal(err.statusCode, 400);
    assert.equal(err.status, 400);
    assert.equal(err.data.error.code, 'invalid_code');
    return true;
  });
  assert.equal(auth.isLoggedIn(), false);
});

test('an unknown app id is refused with the server code', async () => {
  const env = createWx({ simUrl: stack.simUrl, appId: stack.appId, user: 'other-app' });
  const auth = createAuth({ baseUrl: stack.baseUrl, appId: 'wx0000000000000000', wx: env.wx });
  await assert.rejects(auth.login(), { code: 'unknown_app', statusCode: 404 });
});

test('a failing wx.login rejects with wx_login_failed', async () => {
  const env = createWx({ simUrl: stack.simUrl, appId: stack.appId, user: 'no-login' });
  env.wx.login = (opts) => setImmediate(() => opts.fail({ errMsg: 'login:fail timeout' }));
  const auth = createAuth({ baseUrl: stack.baseUrl, appId: stack.appId, wx: env.wx });
  await assert.rejects(auth.request({ url: '/v1/me' }), { code: 'wx_login_failed', message: 'login:fail timeout' });
});

test('tokens never reach the console', async () => {
  const lines = [];
  const saved = {};
  for (const level of ['log', 'info', 'warn', 'error', 'debug']) {
    saved[level] = console[level];
    console[level] = (...args) => lines.push(args.map(String).join(' '));
  }
  try {
    const { auth } = client('quiet');
    await auth.login();
    await sleep(WAIT_FOR_EXPIRY_MS);
    await auth.user();
    await auth.logout();
  } finally {
    Object.assign(console, saved);
  }
  assert.deepEqual(lines, []);
});

test('an avatar upload with an expired access token refreshes once and uploads again', async () => {
  const { env, auth } = client('upload-expiry');
  await auth.login();
  const file = require('node:path').join(stack.dir, 'upload-expiry.png');
  require('node:fs').writeFileSync(
    file,
    Buffer.from(
      'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==',
      'base64'
    )
  );
  await sleep(WAIT_FOR_EXPIRY_MS);

  const user = await auth.uploadAvatar(file);

  assert.equal(typeof user.avatar_url, 'string');
  assert.equal(env.calls.uploads.length, 2, 'one 401 token_expired, one retry');
  assert.equal(env.count('/v1/auth/refresh'), 1);
  assert.equal(env.calls.login, 1);
});
