'use strict';
// A stand-in for the mini-program `wx` global, close enough to the real one for the client:
//
// - wx.login gets a code from wechat-sim's /sim/login for one simulated WeChat user (which,
//   like WeChat, may rotate that user's session_key);
// - wx.request / wx.uploadFile do real HTTP and behave as the runtime does: callbacks rather
//   than Promises, `success` for every HTTP status, `fail` only when the request cannot be
//   made, JSON bodies parsed (dataType "json"), only the methods wx.request accepts (no PATCH),
//   uploadFile's `data` left as a string; response header names lower case, or as
//   `headerName` spells them (the runtime passes them on as the server wrote them on some
//   platforms and lower-cased on others);
// - storage is an in-memory map that stores copies, like the real (serialising) storage.
//
// Every call is recorded, so tests can count wx.login calls and requests by path.

const fs = require('node:fs');
const path = require('node:path');

const WX_METHODS = ['OPTIONS', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'TRACE', 'CONNECT'];

const MIME = { '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.gif': 'image/gif', '.webp': 'image/webp' };

/** Runs a wx-style callback later, like the runtime does. */
function later(fn, arg) {
  if (typeof fn === 'function') setImmediate(() => fn(arg));
}

function finish(opts, ok, res) {
  if (ok) later(opts.success, res);
  else later(opts.fail, res);
  later(opts.complete, res);
}

function headerValue(header, name) {
  const key = Object.keys(header || {}).find((k) => k.toLowerCase() === name.toLowerCase());
  return key === undefined ? undefined : header[key];
}

function queryString(data) {
  return Object.keys(data)
    .map((k) => `${encodeURIComponent(k)}=${encodeURIComponent(String(data[k]))}`)
    .join('&');
}

/**
 * A `wx` stand-in for one simulated WeChat user of one mini program.
 * @param {{simUrl: string, appId: string, user: string, storage?: Map, headerName?: (name: string) => string}} opts
 *   `storage`: share one map between stand-ins to model a relaunch of the same mini program;
 *   `headerName`: how wx.request's `res.header` spells each (lower-case) response header name
 */
function createWx({ simUrl, appId, user, storage, headerName }) {
  const store = storage || new Map();
  const calls = { login: 0, requests: [], uploads: [] };
  /** When set, wx.request fails (as with no network) for URLs it returns true for. */
  let offline = null;

  async function sim(pathname, body) {
    const res = await fetch(simUrl + pathname, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`simulator ${pathname} answered ${res.status}: ${text}`);
    return JSON.parse(text);
  }

  async function doRequest(opts) {
    const method = String(opts.method || 'GET').toUpperCase();
    if (!WX_METHODS.includes(method)) {
      return [false, { errMsg: `request:fail parameter error: method should be one of ${WX_METHODS.join(', ')}` }];
    }
    let url = opts.url;
    calls.requests.push({ method, url, path: new URL(url).pathname, header: Object.assign({}, opts.header), data: opts.data });
    if (offline && offline(url)) return [false, { errMsg: 'request:fail net::ERR_INTERNET_DISCONNECTED' }];
    const header = Object.assign({}, opts.header);
    if (headerValue(header, 'content-type') === undefined) header['content-type'] = 'application/json';
    const contentType = String(headerValue(header, 'content-type'));
    let body;
    const data = opts.data;
    if (method === 'GET' || method === 'HEAD') {
      if (data && typeof data === 'object') {
        const qs = queryString(data);
        if (qs) url += (url.includes('?') ? '&' : '?') + qs;
      }
    } else if (data !== undefined && data !== null) {
      if (typeof data === 'string' || data instanceof ArrayBuffer) body = data;
      else if (contentType.includes('application/x-www-form-urlencoded')) body = queryString(data);
      else body = JSON.stringify(data);
    }
    let res;
    try {
      res = await fetch(url, { method, headers: header, body, signal: AbortSignal.timeout(opts.timeout || 60000) });
    } catch (err) {
      return [false, { errMsg: `request:fail ${err.message}` }];
    }
    const text = await res.text();
    let parsed = text;
    if ((opts.dataType || 'json') === 'json' && text !== '') {
      try {
        parsed = JSON.parse(text);
      } catch (_) {
        // the runtime leaves non-JSON text as it is
      }
    }
    const resHeader = {};
    for (const [name, value] of res.headers) resHeader[headerName ? headerName(name) : name] = value;
    return [true, { statusCode: res.status, data: parsed, header: resHeader, errMsg: 'request:ok' }];
  }

  async function doUpload(opts) {
    calls.uploads.push({ path: new URL(opts.url).pathname, name: opts.name });
    if (offline && offline(opts.url)) return [false, { errMsg: 'uploadFile:fail net::ERR_INTERNET_DISCONNECTED' }];
    let bytes;
    try {
      bytes = fs.readFileSync(opts.filePath);
    } catch (err) {
      return [false, { errMsg: `uploadFile:fail file not found: ${opts.filePath}` }];
    }
    // multipart/form-data as the runtime sends it: the formData fields, then the file.
    const boundary = `----wxauthStandIn${Date.now().toString(16)}${Math.random().toString(16).slice(2)}`;
    const parts = [];
    for (const [k, v] of Object.entries(opts.formData || {})) {
      parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`));
    }
    const type = MIME[path.extname(opts.filePath).toLowerCase()] || 'application/octet-stream';
    parts.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${opts.name}"; filename="${path.basename(opts.filePath)}"\r\n` +
          `Content-Type: ${type}\r\n\r\n`
      ),
      bytes,
      Buffer.from(`\r\n--${boundary}--\r\n`)
    );
    const headers = Object.assign({}, opts.header, { 'Content-Type': `multipart/form-data; boundary=${boundary}` });
    let res;
    try {
      res = await fetch(opts.url, { method: 'POST', headers, body: Buffer.concat(parts) });
    } catch (err) {
      return [false, { errMsg: `uploadFile:fail ${err.message}${err.cause ? ` (${err.cause.code || err.cause.message})` : ''}` }];
    }
    // wx.uploadFile does not parse the answer: data is the body text.
    return [true, { statusCode: res.status, data: await res.text(), errMsg: 'uploadFile:ok' }];
  }

  const wx = {
    login(opts = {}) {
      calls.login += 1;
      sim('/sim/login', { appid: appId, user }).then(
        (r) => finish(opts, true, { code: r.code, errMsg: 'login:ok' }),
        (err) => finish(opts, false, { errMsg: `login:fail ${err.message}` })
      );
    },
    request(opts = {}) {
      doRequest(opts).then(([ok, res]) => finish(opts, ok, res));
    },
    uploadFile(opts = {}) {
      doUpload(opts).then(([ok, res]) => finish(opts, ok, res));
    },
    /** What wx.getUserInfo gives: encryptedData etc. under the user's current session_key. */
    getUserInfo(opts = {}) {
      sim('/sim/userinfo', { appid: appId, user, profile: opts.profile }).then(
        (r) => finish(opts, true, Object.assign({ userInfo: JSON.parse(r.rawData), errMsg: 'getUserInfo:ok' }, r)),
        (err) => finish(opts, false, { errMsg: `getUserInfo:fail ${err.message}` })
      );
    },
    getStorageSync(key) {
      // The runtime answers '' for a missing key.
      return store.has(key) ? JSON.parse(store.get(key)) : '';
    },
    setStorageSync(key, value) {
      store.set(key, JSON.stringify(value));
    },
    removeStorageSync(key) {
      store.delete(key);
    },
  };

  return {
    wx,
    calls,
    storage: store,
    /** Requests made to `pathname` so far. */
    count(pathname) {
      return calls.requests.filter((r) => r.path === pathname).length;
    },
    /** Makes wx.request/wx.uploadFile fail for URLs matching `predicate` (null: back online). */
    setOffline(predicate) {
      offline = predicate;
    },
    /** The event detail of a getPhoneNumber button press (code, encryptedData, iv). */
    async phoneButton(phone) {
      const r = await sim('/sim/phone', { appid: appId, user, phone });
      return { errMsg: 'getPhoneNumber:ok', code: r.code, encryptedData: r.encryptedData, iv: r.iv };
    },
    /** wx.getUserInfo as a Promise. */
    getUserInfo(profile) {
      return new Promise((resolve, reject) => wx.getUserInfo({ profile, success: resolve, fail: reject }));
    },
  };
}

module.exports = { createWx };
