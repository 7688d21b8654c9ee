'use strict';
// request() against a team's own API (test/support/team-api.js: node's http module, checking
// tokens with wxauth's GET /v1/me and answering 401 the standard way), with the real wxauth
// binary and simulator: where the token goes, and how a standard 401 is renewed.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const os = require('node:os');

const { createAuth } = require('../wxauth.js');
const { startStack, sleep } = require('./support/stack.js');
const { startTeamApi } = require('./support/team-api.js');
const { createWx } = require('./support/wx.js');

/** A stack whose tokens outlive every test but the one that waits for expiry. */
let stack;
/** The team API of `stack`, at apiBaseUrl. */
let team;
/** Another API of the team, on another origin. */
let other;

before(async () => {
  stack = await startStack({ accessTtl: '1h' });
  team = await startTeamApi({ wxauthUrl: stack.baseUrl });
  other = await startTeamApi({ wxauthUrl: stack.baseUrl });
});

after(async () => {
  if (team) await team.stop();
  if (other) await other.stop();
  if (stack) await stack.stop();
});

/** A stand-in and a client for one simulated user; `options` go to createAuth. */
function client(user, options = {}, on = stack, wxOptions = {}) {
  const env = createWx(Object.assign({ simUrl: on.simUrl, appId: on.appId, user }, wxOptions));
  const auth = createAuth(Object.assign({ baseUrl: on.baseUrl, appId: on.appId, wx: env.wx }, options));
  return { env, auth };
}

function stored(env, on = stack) {
  return env.wx.getStorageSync(`wxauth:${on.appId}:tokens`);
}

/** The requests `api` got since `from` (an index into its record). */
function since(api, from) {
  return api.requests.slice(from);
}

/** An IPv4 address of this machine that is not loopback, or undefined. */
function nonLoopbackAddress() {
  for (const addrs of Object.values(os.networkInterfaces())) {
    for (const a of addrs || []) {
      if ((a.family === 'IPv4' || a.family === 4) && !a.internal) return a.address;
    }
  }
  return undefined;
}

/** Polls wxauth until it calls `token` expired (its lifetime is short). */
async function untilExpired(on, token) {
  const deadline = Date.now() + 30000;
  for (;;) {
    const res = await on.api('GET', '/v1/me', { token });
    if (res.statusCode === 401) {
      assert.equal(res.data.error.code, 'token_expired');
      return;
    }
    assert.equal(res.statusCode, 200);
    if (Date.now() > deadline) assert.fail('the access token did not expire within 30 s');
    await sleep(100);
  }
}

test('a relative url goes to apiBaseUrl with the bearer token, and the team API accepts it', async () => {
  const from = team.requests.length;
  const { env, auth } = client('relative', { apiBaseUrl: team.url });

  const res = await auth.request({ url: '/api/orders?page=2', method: 'POST', data: { item: 'tea' } });

  assert.equal(res.statusCode, 200);
  assert.deepEqual(since(team, from), [
    { method: 'POST', path: '/api/orders?page=2', authorization: `Bearer ${stored(env).accessToken}`, status: 200 },
  ]);
  // The client's own calls still go to wxauth, for the same person.
  const me = await auth.user();
  assert.equal(res.data.user_id, me.id);
  assert.equal(env.calls.requests.find((r) => r.path === '/v1/me').url, `${stack.baseUrl}/v1/me`);
  assert.equal(env.calls.login, 1);
});

test('apiBaseUrl keeps its path, and without apiBaseUrl a relative url goes to baseUrl', async () => {
  const from = team.requests.length;
  const { auth } = client('api-path', { apiBaseUrl: `${team.url}/shop/` });
  const res = await auth.request({ url: 'orders' });
  assert.equal(res.statusCode, 200);
  assert.equal(res.data.path, '/shop/orders');
  assert.equal(since(team, from).length, 1);

  const plain = client('no-api-base').auth;
  const me = await plain.request({ url: '/v1/me' });
  assert.equal(me.statusCode, 200);
  assert.equal(me.data.app_id, stack.appId);
});

test('an absolute url on an untrusted origin is sent without the token, and a 401 from it is not renewed', async () => {
  const from = other.requests.length;
  const { env, auth } = client('untrusted', { apiBaseUrl: team.url });

  // Not logged in yet: the request goes out as it is, without a wx.login.
  const first = await auth.request({ url: `${other.url}/api/public`, header: { 'X-Trace': 'one' } });
  assert.equal(first.statusCode, 401);
  assert.equal(env.calls.login, 0, 'no login for a request that carries no token');
  assert.equal(env.calls.requests[0].header['X-Trace'], 'one', "the caller's own header fields are sent");

  // Logged in: still no token for that origin.
  await auth.login();
  const second = await auth.request({ url: `${other.url}/api/public` });
  assert.equal(second.statusCode, 401);
  assert.deepEqual(
    since(other, from).map((r) => r.authorization),
    [undefined, undefined]
  );
  assert.equal(env.count('/v1/auth/refresh'), 0);
  assert.equal(env.calls.login, 1);
});

test('an absolute url on a trusted origin, or on baseUrl, gets the token', async () => {
  const from = other.requests.length;
  const { env, auth } = client('trusted', { apiBaseUrl: team.url, trustedOrigins: [other.url] });

  const res = await auth.request({ url: `${other.url}/api/files` });
  assert.equal(res.statusCode, 200);
  assert.deepEqual(since(other, from), [
    { method: 'GET', path: '/api/files', authorization: `Bearer ${stored(env).accessToken}`, status: 200 },
  ]);

  const me = await auth.request({ url: `${stack.baseUrl}/v1/me` });
  assert.equal(me.statusCode, 200);
  assert.equal(me.data.id, res.data.user_id);
});

test('a trusted origin over plain http that is not loopback gets no token', async (t) => {
  const address = nonLoopbackAddress();
  if (!address) {
    if (process.env.CI) assert.fail('this machine has no non-loopback IPv4 address, and CI requires this test');
    t.skip('this machine has no non-loopback IPv4 address');
    return;
  }
  const lan = await startTeamApi({ wxauthUrl: stack.baseUrl, host: address });
  try {
    const { env, auth } = client('plain-http', { apiBaseUrl: team.url, trustedOrigins: [lan.url] });
    await auth.login();

    const res = await auth.request({ url: `${lan.url}/api/orders` });

    assert.equal(res.statusCode, 401, 'the team API saw no token');
    assert.deepEqual(lan.requests, [{ method: 'GET', path: '/api/orders', authorization: undefined, status: 401 }]);
    assert.equal(env.count('/v1/auth/refresh'), 0);
    assert.equal(env.calls.login, 1);
  } finally {
    await lan.stop();
  }
});

test('a 401 with WWW-Authenticate Bearer error="invalid_token" from the team API refreshes the expired token once and the retries succeed', async () => {
  const short = await startStack({ accessTtl: '2s' });
  const api = await startTeamApi({ wxauthUrl: short.baseUrl });
  try {
    const { env, auth } = client('expired-at-team', { apiBaseUrl: api.url }, short);
    await auth.login();
    const before = stored(env, short);
    await untilExpired(short, before.accessToken);

    const results = await Promise.all(Array.from({ length: 5 }, () => auth.request({ url: '/api/orders' })));

    assert.deepEqual(
      results.map((r) => r.statusCode),
      Array(5).fill(200)
    );
    const after = stored(env, short);
    assert.notEqual(after.accessToken, before.accessToken);
    assert.equal(env.count('/v1/auth/refresh'), 1, 'five 401s, one shared refresh');
    assert.equal(env.calls.login, 1, 'no new wx.login');
    const refused = api.requests.filter((r) => r.status === 401);
    const accepted = api.requests.filter((r) => r.status === 200);
    assert.equal(refused.length, 5);
    assert.ok(refused.every((r) => r.authorization === `Bearer ${before.accessToken}`));
    assert.equal(accepted.length, 5);
    assert.ok(accepted.every((r) => r.authorization === `Bearer ${after.accessToken}`));
  } finally {
    await api.stop();
    await short.stop();
  }
});

test('a team API that refuses the refreshed token too makes the client log in once with wx.login, and that retry succeeds', async () => {
  const from = team.requests.length;
  const { env, auth } = client('refused-twice', { apiBaseUrl: team.url });
  await auth.login();
  team.refuseNext(2);

  const res = await auth.request({ url: '/api/orders' });

  assert.equal(res.statusCode, 200);
  const seen = since(team, from);
  assert.deepEqual(
    seen.map((r) => r.status),
    [401, 401, 200]
  );
  assert.equal(
    new Set(seen.map((r) => r.authorization)).size,
    3,
    'the first token, the refreshed one, the one from the new login'
  );
  assert.equal(seen[2].authorization, `Bearer ${stored(env).accessToken}`);
  assert.equal(env.count('/v1/auth/refresh'), 1);
  assert.equal(env.calls.login, 2, 'the first login and one more');
});

test('a team API that keeps refusing gets three tries and its 401 back, not a loop', async () => {
  const from = team.requests.length;
  const { env, auth } = client('refused-always', { apiBaseUrl: team.url });
  await auth.login();
  team.refuseNext(3);

  const res = await auth.request({ url: '/api/orders' });

  assert.equal(res.statusCode, 401);
  assert.equal(res.data, 'invalid token');
  assert.equal(since(team, from).length, 3);
  assert.equal(env.count('/v1/auth/refresh'), 1);
  assert.equal(env.calls.login, 2);
  team.refuseNext(0);
});

test('the invalid_token challenge is understood among other challenges, in token form, and whatever the header name looks like', async () => {
  const cases = [
    {
      challenge: 'Bearer error="invalid_token"',
      headerName: (n) => n.replace(/^www-authenticate$/, 'WWW-Authenticate'),
    },
    {
      challenge: 'Basic realm="team", Bearer realm="team", error=invalid_token',
      headerName: (n) => n.replace(/^www-/, 'Www-'),
    },
    {
      // Two header lines, a quoted comma and escaped quotes before the bearer challenge.
      challenge: [
        'Newauth realm="apps", type=1, title="Login to \\"apps\\""',
        'bearer error_description="gone, for good", error="invalid_token"',
      ],
      headerName: (n) => n.toUpperCase(),
    },
  ];
  try {
    for (const [i, c] of cases.entries()) {
      team.setChallenge(c.challenge);
      team.refuseNext(1);
      const { env, auth } = client(`challenge-${i}`, { apiBaseUrl: team.url }, stack, { headerName: c.headerName });
      await auth.login();
      const res = await auth.request({ url: '/api/orders' });
      assert.equal(res.statusCode, 200, JSON.stringify(c.challenge));
      assert.equal(env.count('/v1/auth/refresh'), 1, JSON.stringify(c.challenge));
    }
  } finally {
    team.setChallenge(null);
    team.refuseNext(0);
  }
});

test('a 401 whose challenge names no invalid token is returned as it is, not renewed', async () => {
  const challenges = [
    'Bearer realm="team"',
    'Bearer error="insufficient_scope"',
    'Basic realm="team", error="invalid_token"',
    'Bearer realm="team", error_description="not error=invalid_token, just no token"',
  ];
  try {
    for (const [i, challenge] of challenges.entries()) {
      team.setChallenge(challenge);
      team.refuseNext(1);
      const { env, auth } = client(`no-renewal-${i}`, { apiBaseUrl: team.url });
      await auth.login();
      const res = await auth.request({ url: '/api/orders' });
      assert.equal(res.statusCode, 401, challenge);
      assert.equal(res.header['www-authenticate'], challenge);
      assert.equal(env.count('/v1/auth/refresh'), 0, challenge);
      assert.equal(env.calls.login, 1, challenge);
    }
  } finally {
    team.setChallenge(null);
    team.refuseNext(0);
  }
});
