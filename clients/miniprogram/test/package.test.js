'use strict';
// The module itself: what it exports, its type declarations, the syntax it may use, and the
// example's copy of it.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
const SOURCE = path.join(ROOT, 'wxauth.js');
const EXAMPLE_COPY = path.resolve(ROOT, '..', '..', 'examples', 'miniprogram', 'utils', 'wxauth.js');
const wxauth = require('../wxauth.js');

/** The source without comments, strings and regex literals (good enough for this file). */
function codeOnly(src) {
  return src
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/\/\/.*$/gm, '')
    .replace(/'(?:\\.|[^'\\\n])*'/g, "''")
    .replace(/"(?:\\.|[^"\\\n])*"/g, '""')
    .replace(/\/(?:\\.|[^/\\\n])+\/[gimsuy]*/g, '/r/');
}

/** A `wx` that only remembers storage, for tests that make no calls. */
function storageOnlyWx() {
  const map = new Map();
  return {
    getStorageSync: (k) => (map.has(k) ? map.get(k) : ''),
    setStorageSync: (k, v) => map.set(k, v),
    removeStorageSync: (k) => map.delete(k),
    login: () => assert.fail('no wx.login expected'),
    request: () => assert.fail('no wx.request expected'),
    uploadFile: () => assert.fail('no wx.uploadFile expected'),
  };
}

test('the module exports createAuth and the client has every documented method', () => {
  assert.deepEqual(Object.keys(wxauth), ['createAuth']);
  const auth = wxauth.createAuth({ baseUrl: 'http://127.0.0.1:9', appId: 'wx1234567890abcdef', wx: storageOnlyWx() });
  assert.deepEqual(Object.keys(auth).sort(), [
    'bindPhone',
    'deleteAccount',
    'exportData',
    'isLoggedIn',
    'login',
    'logout',
    'request',
    'sendUserInfo',
    'updateProfile',
    'uploadAvatar',
    'user',
  ]);
});

test('the type declarations name exactly the methods the client has', () => {
  const dts = fs.readFileSync(path.join(ROOT, 'wxauth.d.ts'), 'utf8');
  const block = dts.match(/export interface WxAuth \{([\s\S]*?)\n\}/);
  assert.ok(block, 'wxauth.d.ts declares interface WxAuth');
  const declared = [...block[1].matchAll(/^\s{2}(\w+)(?:<[^>]*>)?\(/gm)].map((m) => m[1]).sort();
  const auth = wxauth.createAuth({ baseUrl: 'http://127.0.0.1:9', wx: storageOnlyWx() });
  assert.deepEqual(declared, Object.keys(auth).sort());
  assert.match(dts, /export function createAuth\(options: CreateAuthOptions\): WxAuth;/);
});

test('the module uses only syntax old base libraries accept and never logs', () => {
  const code = codeOnly(fs.readFileSync(SOURCE, 'utf8'));
  assert.doesNotMatch(code, /\?\./, 'no optional chaining');
  assert.doesNotMatch(code, /\?\?/, 'no nullish coalescing');
  assert.doesNotMatch(code, /^\s*(import|export)\b/m, 'no ES modules');
  assert.doesNotMatch(code, /\basync\b|\bawait\b/, 'no async functions');
  assert.doesNotMatch(code, /\.\.\.\w/, 'no spread');
  assert.doesNotMatch(code, /\bconsole\b/, 'no logging');
  assert.doesNotMatch(code, /\brequire\(/, 'no dependencies');
});

test('tokens are stored under a key namespaced by the app id', () => {
  const wx = storageOnlyWx();
  wx.setStorageSync('wxauth:wxaaaaaaaaaaaaaaaa:tokens', { accessToken: 'wxa_a', refreshToken: 'wxr_a' });
  const a = wxauth.createAuth({ baseUrl: 'http://127.0.0.1:9', appId: 'wxaaaaaaaaaaaaaaaa', wx });
  const b = wxauth.createAuth({ baseUrl: 'http://127.0.0.1:9', appId: 'wxbbbbbbbbbbbbbbbb', wx });
  assert.equal(a.isLoggedIn(), true);
  assert.equal(b.isLoggedIn(), false);
});

test('createAuth refuses to start without a baseUrl or a wx object', () => {
  assert.throws(() => wxauth.createAuth({ wx: storageOnlyWx() }), { code: 'invalid_argument' });
  assert.throws(() => wxauth.createAuth({ baseUrl: 'http://127.0.0.1:9' }), { code: 'invalid_argument' });
});

test('the example mini program carries an identical copy of the client', () => {
  assert.ok(fs.existsSync(EXAMPLE_COPY), `${EXAMPLE_COPY} exists`);
  assert.ok(
    fs.readFileSync(EXAMPLE_COPY).equals(fs.readFileSync(SOURCE)),
    'examples/miniprogram/utils/wxauth.js differs from clients/miniprogram/wxauth.js: ' +
      'copy it again (cp clients/miniprogram/wxauth.js examples/miniprogram/utils/wxauth.js)'
  );
});
