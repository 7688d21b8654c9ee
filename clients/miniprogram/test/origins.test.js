'use strict';
// Which URLs request() sends the access token to, for origins no test can serve (https,
// lookalike hosts, userinfo tricks): a `wx` that answers every request with 200 and records
// what it was asked, over tokens already in storage. The same rule against real servers is in
// team-api.test.js.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { createAuth } = require('../wxauth.js');

const APP_ID = 'wx1234567890abcdef';
const TOKEN = 'wxa_stored-access-token';

/** A logged-in `wx` whose wx.request records and answers 200; wx.login must not be called. */
function recordingWx() {
  const map = new Map([[`wxauth:${APP_ID}:tokens`, { accessToken: TOKEN, refreshToken: 'wxr_stored' }]]);
  const requests = [];
  return {
    requests,
    getStorageSync: (k) => (map.has(k) ? map.get(k) : ''),
    setStorageSync: (k, v) => map.set(k, v),
    removeStorageSync: (k) => map.delete(k),
    login: () => assert.fail('no wx.login expected'),
    request(opts) {
      requests.push({ url: opts.url, header: opts.header });
      setImmediate(() => opts.success({ statusCode: 200, data: {}, header: {} }));
    },
    uploadFile: () => assert.fail('no wx.uploadFile expected'),
  };
}

const OPTIONS = {
  baseUrl: 'https://auth.example.com',
  apiBaseUrl: 'https://api.example.com/v2',
  appId: APP_ID,
  trustedOrigins: [
    'https://files.example.com',
    'https://cdn.example.com:8443/',
    'http://localhost:8080',
    'http://127.0.0.1:9001',
    'http://[::1]:9000',
    'http://192.168.1.20:8080',
  ],
};

/** Where request({url}) went and whether it carried the token. */
async function sent(url) {
  const wx = recordingWx();
  const auth = createAuth(Object.assign({ wx }, OPTIONS));
  await auth.request({ url, header: { 'X-Trace': 't' } });
  assert.equal(wx.requests.length, 1);
  const [r] = wx.requests;
  assert.equal(r.header['X-Trace'], 't', "the caller's header fields are always sent");
  return { url: r.url, token: r.header.Authorization === `Bearer ${TOKEN}`, header: r.header };
}

test('relative urls go to apiBaseUrl, path kept, with the token', async () => {
  assert.deepEqual(await sent('/orders?id=7'), {
    url: 'https://api.example.com/v2/orders?id=7',
    token: true,
    header: { 'X-Trace': 't', Authorization: `Bearer ${TOKEN}` },
  });
  assert.equal((await sent('orders')).url, 'https://api.example.com/v2/orders');
});

test('the token goes to the origins of baseUrl, apiBaseUrl and trustedOrigins over https, in any spelling of the same origin', async () => {
  for (const url of [
    'https://auth.example.com/v1/me',
    'https://api.example.com/other/path',
    'https://files.example.com/a?b=%20c#d',
    'HTTPS://FILES.Example.COM:443/a',
    'https://cdn.example.com:8443',
    'https://cdn.example.com:08443/x',
  ]) {
    const r = await sent(url);
    assert.equal(r.url, url, 'absolute urls are requested as given');
    assert.equal(r.token, true, url);
  }
});

test('over plain http the token goes only to trusted loopback origins', async () => {
  for (const url of ['http://localhost:8080/x', 'http://127.0.0.1:9001/', 'http://[::1]:9000/x']) {
    assert.equal((await sent(url)).token, true, url);
  }
  // Trusted, but on the network in the clear.
  assert.equal((await sent('http://192.168.1.20:8080/x')).token, false);
  // The https origin's host over http is another origin.
  assert.equal((await sent('http://files.example.com/x')).token, false);
});

test('no token for other origins, lookalikes and urls parsers read differently', async () => {
  for (const url of [
    'https://evil.example.com/',
    'https://api.example.com:444/',
    'https://api.example.com.evil.com/',
    'https://evilapi.example.com/',
    'https://api.example.com./',
    'https://api.example.com@evil.com/',
    'https://user:pass@api.example.com/',
    'https://evil.com\\@api.example.com/',
    'https://api.example.com\\.evil.com/',
    'https://%61pi.example.com/',
    'https://api.example.com%2f@evil.com/',
    'https://api.example.com:99999/',
    'http://localhost:8081/',
    'http://127.0.0.1:8080/',
    'http://[::2]:9000/',
  ]) {
    const r = await sent(url);
    assert.equal(r.url, url);
    assert.equal(r.token, false, url);
    assert.equal(r.header.Authorization, undefined, url);
  }
});

test('request refuses a url with a scheme other than http and https', async () => {
  const wx = recordingWx();
  const auth = createAuth(Object.assign({ wx }, OPTIONS));
  await assert.rejects(auth.request({ url: 'ftp://files.example.com/a' }), { code: 'invalid_argument', statusCode: 0 });
  await assert.rejects(auth.request({ url: '' }), { code: 'invalid_argument' });
  assert.equal(wx.requests.length, 0);
});

test('createAuth refuses an apiBaseUrl or a trustedOrigins entry that is not an http(s) origin', () => {
  const make = (extra) => () =>
    createAuth(Object.assign({ baseUrl: 'https://auth.example.com', wx: recordingWx() }, extra));
  for (const apiBaseUrl of ['api.example.com', 'ftp://api.example.com', 'https://a@api.example.com', 42]) {
    assert.throws(make({ apiBaseUrl }), { code: 'invalid_argument' }, String(apiBaseUrl));
  }
  const notOrigins = [
    'files.example.com',
    'https://files.example.com/path',
    'https://files.example.com?x',
    'wss://files.example.com',
    7,
  ];
  for (const entry of notOrigins) {
    assert.throws(make({ trustedOrigins: [entry] }), { code: 'invalid_argument' }, String(entry));
  }
  assert.throws(make({ trustedOrigins: 'https://files.example.com' }), { code: 'invalid_argument' });
  assert.throws(make({ baseUrl: 'auth.example.com' }), { code: 'invalid_argument' });
  assert.doesNotThrow(make({ apiBaseUrl: 'https://api.example.com/v2/', trustedOrigins: ['https://files.example.com/'] }));
  assert.doesNotThrow(make({ apiBaseUrl: '', trustedOrigins: null }), 'empty settings mean none');
});
