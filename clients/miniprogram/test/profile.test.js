'use strict';
// Profile, avatar, phone and open-data helpers, against the real wxauth binary and simulator.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const { createAuth } = require('../wxauth.js');
const { startStack } = require('./support/stack.js');
const { createWx } = require('./support/wx.js');

/** A valid 1x1 PNG. */
const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==',
  'base64'
);

let stack;

before(async () => {
  // A long access TTL: these tests are not about expiry.
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

/** A temp file, as the chooseAvatar button gives one. */
function tempFile(name, bytes) {
  const file = path.join(stack.dir, name);
  fs.writeFileSync(file, bytes);
  return file;
}

test('updateProfile sets nickname, gender and extra fields, emoji intact', async () => {
  const { env, auth } = client('profile');
  const updated = await auth.updateProfile({ nickname: '小明😀', gender: 1, extra: { level: 3 } });

  assert.equal(updated.nickname, '小明😀');
  assert.equal(updated.gender, 1);
  const me = await auth.user();
  assert.equal(me.nickname, '小明😀');
  assert.equal(me.gender, 1);

  // wx.request has no PATCH: the update went as POST with a method override.
  const call = env.calls.requests.find((r) => r.path === '/v1/me' && r.method === 'POST');
  assert.ok(call, 'sent as POST');
  assert.equal(call.header['X-HTTP-Method-Override'], 'PATCH');
});

test('an invalid profile field rejects with the server code and HTTP status', async () => {
  const { auth } = client('bad-profile');
  await assert.rejects(auth.updateProfile({ gender: 7 }), (err) => {
    assert.ok(err instanceof Error);
    assert.equal(err.statusCode, 400);
    assert.equal(err.code, 'invalid_request');
    return true;
  });
  await assert.rejects(auth.updateProfile('nickname'), { code: 'invalid_argument' });
});

test('uploadAvatar sends the chosen image as the file field and the service serves it back', async () => {
  const { env, auth } = client('avatar');
  const user = await auth.uploadAvatar(tempFile('avatar.png', PNG));

  assert.equal(typeof user.avatar_url, 'string');
  assert.deepEqual(env.calls.uploads, [{ path: '/v1/me/avatar', name: 'file' }]);
  const me = await auth.user();
  assert.equal(me.avatar_url, user.avatar_url);

  const image = await fetch(new URL(user.avatar_url, stack.baseUrl));
  assert.equal(image.status, 200);
  assert.match(image.headers.get('content-type') || '', /^image\//);
});

test('uploadAvatar refuses a file that is not an image with the server code', async () => {
  const { auth } = client('avatar-text');
  await assert.rejects(auth.uploadAvatar(tempFile('notes.png', 'not an image at all')), (err) => {
    assert.ok(err.statusCode >= 400 && err.statusCode < 500, `a 4xx, got ${err.statusCode} ${err.code}: ${err.message}`);
    assert.equal(typeof err.code, 'string');
    assert.notEqual(err.code, 'not_found', 'the avatar route exists');
    return true;
  });
});

test('bindPhone sends the getPhoneNumber code and the phone is shown in full only when asked', async () => {
  const { env, auth } = client('phone');
  await auth.login();
  const detail = await env.phoneButton('13800138000');

  await auth.bindPhone(detail);

  const sent = env.calls.requests.find((r) => r.path === '/v1/me/phone');
  assert.deepEqual(sent.data, { code: detail.code }, 'the code only, not the encrypted data');
  const full = await auth.user({ includePhone: true });
  assert.match(JSON.stringify(full.phone), /13800138000/);
  const masked = await auth.user();
  assert.doesNotMatch(JSON.stringify(masked.phone === undefined ? null : masked.phone), /13800138000/);
});

test('bindPhone falls back to encryptedData and iv when the button gives no code', async () => {
  const { env, auth } = client('phone-legacy');
  await auth.login();
  const { encryptedData, iv } = await env.phoneButton('13900139000');

  // The whole event works too, not only its detail.
  await auth.bindPhone({ type: 'getphonenumber', detail: { errMsg: 'getPhoneNumber:ok', encryptedData, iv } });

  const sent = env.calls.requests.find((r) => r.path === '/v1/me/phone');
  assert.deepEqual(sent.data, { encrypted_data: encryptedData, iv });
  const full = await auth.user({ includePhone: true });
  assert.match(JSON.stringify(full.phone), /13900139000/);
});

test('bindPhone rejects with phone_denied when the user refused, without calling the server', async () => {
  const { env, auth } = client('phone-denied');
  await assert.rejects(auth.bindPhone({ errMsg: 'getPhoneNumber:fail user deny' }), {
    code: 'phone_denied',
    message: 'getPhoneNumber:fail user deny',
  });
  assert.equal(env.calls.requests.length, 0);
});

test('sendUserInfo sends encryptedData, iv, rawData and signature and updates the profile', async () => {
  const { env, auth } = client('userinfo');
  await auth.login();
  const res = await env.getUserInfo({ nickName: 'Band😀', city: 'Guangzhou' });

  const user = await auth.sendUserInfo(res);

  assert.equal(user.nickname, 'Band😀');
  const sent = env.calls.requests.filter((r) => r.path === '/v1/me/userinfo');
  assert.equal(sent.length, 1);
  assert.deepEqual(Object.keys(sent[0].data).sort(), ['encrypted_data', 'iv', 'raw_data', 'signature']);
  assert.equal(env.calls.login, 1, 'the session_key of this session was current: no wx.login');
});

test('sendUserInfo calls wx.login and sends the new code when the server session_key is stale', async () => {
  const { env, auth } = client('userinfo-stale');
  await auth.login();
  // WeChat rotates the user's session_key behind the server's back (e.g. another wx.login).
  await stack.sim('/sim/users', {
    appid: stack.appId,
    user: 'userinfo-stale',
    session_key: crypto.randomBytes(16).toString('base64'),
  });
  const res = await env.getUserInfo({ nickName: 'Stale' });

  const user = await auth.sendUserInfo(res);

  assert.equal(user.nickname, 'Stale');
  const sent = env.calls.requests.filter((r) => r.path === '/v1/me/userinfo');
  assert.equal(sent.length, 2, 'decrypt_failed, then again with a code');
  assert.equal(sent[0].data.code, undefined);
  assert.equal(typeof sent[1].data.code, 'string');
  assert.equal(sent[1].data.encrypted_data, res.encryptedData);
  assert.equal(env.calls.login, 2);
});

test('sendUserInfo sends a code given with the data at once', async () => {
  const { env, auth } = client('userinfo-code');
  await auth.login();
  // The recommended order: wx.login first (it may rotate the key), then get the data.
  const code = await new Promise((resolve, reject) =>
    env.wx.login({ success: (r) => resolve(r.code), fail: reject })
  );
  const res = await env.getUserInfo({ nickName: 'Early' });

  const user = await auth.sendUserInfo(Object.assign({}, res, { code }));

  assert.equal(user.nickname, 'Early');
  const sent = env.calls.requests.filter((r) => r.path === '/v1/me/userinfo');
  assert.equal(sent.length, 1);
  assert.equal(sent[0].data.code, code);
});

test('sendUserInfo rejects data that is not open data without calling the server', async () => {
  const { env, auth } = client('userinfo-missing');
  await assert.rejects(auth.sendUserInfo({ errMsg: 'getUserInfo:fail auth deny' }), { code: 'invalid_argument' });
  assert.equal(env.calls.requests.length, 0);
});

test('request sends PATCH as POST with X-HTTP-Method-Override, since wx.request has no PATCH', async () => {
  const { env, auth } = client('patch-tunnel');
  const res = await auth.request({ url: '/v1/me', method: 'PATCH', data: { nickname: 'Tunnelled' } });

  const call = env.calls.requests.filter((r) => r.path === '/v1/me').pop();
  assert.equal(call.method, 'POST');
  assert.equal(call.header['X-HTTP-Method-Override'], 'PATCH');
  assert.equal(res.statusCode, 200);
  assert.equal(res.data.nickname, 'Tunnelled');
});
