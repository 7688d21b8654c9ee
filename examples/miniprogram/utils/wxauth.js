/**
 * wxauth: the mini-program side of the wxauth login service.
 *
 * CommonJS, no dependencies, plain Promises (no async/await, no optional chaining), so it runs
 * on old base libraries as well as new ones. It uses the global `wx`: `wx.login`, `wx.request`,
 * `wx.uploadFile` and the synchronous storage calls.
 *
 *     var wxauth = require('./utils/wxauth.js');
 *     var auth = wxauth.createAuth({
 *       baseUrl: 'https://auth.example.com',    // the wxauth server
 *       apiBaseUrl: 'https://api.example.com',  // your API: where request('/api/...') goes
 *       appId: 'wx...'
 *     });
 *     auth.user().then(function (me) { ... });
 *     auth.request({ url: '/api/orders' }).then(function (res) { ... });
 *
 * Tokens are kept in storage under `wxauth:<appId>:tokens` and are never logged. The access
 * token is sent only to the wxauth server, `apiBaseUrl` and `trustedOrigins`, over https (or
 * plain http to this device).
 *
 * @module wxauth
 */
'use strict';

/** The methods `wx.request` accepts. It has no PATCH. */
var WX_METHODS = ['OPTIONS', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'TRACE', 'CONNECT'];

/** Options of request() handed on to wx.request as they are. */
var PASSED_ON = ['timeout', 'dataType', 'responseType', 'enableHttp2', 'enableQuic', 'enableCache', 'forceCellularNetwork'];

/** Fields of the login/refresh answers that are credentials, not for the caller. */
var TOKEN_FIELDS = ['access_token', 'token_type', 'expires_in', 'refresh_token', 'refresh_expires_in'];

/**
 * An `Error` carrying the server's error code and the HTTP status.
 *
 * Codes come from the server (`token_revoked`, `invalid_request`, `decrypt_failed`, ...) or
 * from this module: `network_error` (wx.request/wx.uploadFile failed, statusCode 0),
 * `wx_login_failed` (wx.login failed, statusCode 0), `invalid_argument` (statusCode 0),
 * `phone_denied` (the getPhoneNumber button gave no data, statusCode 0), `http_<status>`
 * (an error answer without a wxauth error body).
 *
 * @param {string} code
 * @param {string} message
 * @param {number} statusCode
 * @param {*} [data] the response body, if any
 * @returns {Error & {code: string, statusCode: number, status: number, data: *}}
 */
function makeError(code, message, statusCode, data) {
  var err = new Error(message);
  err.name = 'WxAuthError';
  err.code = code;
  err.statusCode = statusCode;
  err.status = statusCode;
  if (data !== undefined) err.data = data;
  return err;
}

/** Copies own enumerable properties of `src` onto `dst` (Object.assign without relying on it). */
function assign(dst, src) {
  if (src) {
    Object.keys(src).forEach(function (k) {
      dst[k] = src[k];
    });
  }
  return dst;
}

/** `data` as an object when it is JSON text, else as it is. */
function parseBody(data) {
  if (typeof data !== 'string') return data;
  if (data === '') return data;
  try {
    return JSON.parse(data);
  } catch (e) {
    return data;
  }
}

/** The wxauth error code in a response body, or ''. */
function errorCodeOf(data) {
  var body = parseBody(data);
  if (body && typeof body === 'object' && body.error && typeof body.error.code === 'string') {
    return body.error.code;
  }
  return '';
}

/**
 * The error for a non-2xx response.
 * @param {{statusCode: number, data: *}} res
 */
function errorFromResponse(res) {
  var body = parseBody(res.data);
  var e = body && typeof body === 'object' ? body.error : null;
  var code = e && typeof e.code === 'string' ? e.code : 'http_' + res.statusCode;
  var message = e && typeof e.message === 'string' ? e.message : 'HTTP ' + res.statusCode;
  var err = makeError(code, message, res.statusCode, body);
  if (e && e.wechat_errcode !== undefined) err.wechatErrcode = e.wechat_errcode;
  return err;
}

function isOk(res) {
  return res.statusCode >= 200 && res.statusCode < 300;
}

// ---- origins -----------------------------------------------------------------------------

/** Ports that an origin leaves out, so `https://a.example:443` and `https://a.example` are one. */
var DEFAULT_PORTS = { http: '80', https: '443' };

/**
 * The origin of an absolute http(s) URL as `{scheme, host, port, origin}` (lower case, default
 * port dropped), or null.
 *
 * Deliberately narrow, because a token follows what this says: null when the authority has
 * userinfo (`https://a.example@b.example`) or anything but a plain DNS name, dotted IPv4
 * address or bracketed IPv6 address and a port: no backslash, whitespace, control character
 * or percent sign. URL parsers disagree on such URLs; refusing them means no parser can send
 * the token somewhere this function did not name. (Mini programs have no `URL` class.)
 *
 * @param {string} url
 */
function parseOrigin(url) {
  if (typeof url !== 'string') return null;
  var m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/([^\/?#]*)/.exec(url);
  if (!m) return null;
  var scheme = m[1].toLowerCase();
  if (!DEFAULT_PORTS[scheme]) return null;
  var authority = m[2].toLowerCase();
  if (authority.indexOf('@') >= 0) return null;
  var hp = /^(\[[0-9a-f:.]+\]|[a-z0-9-]+(?:\.[a-z0-9-]+)*)(?::([0-9]{1,5}))?$/.exec(authority);
  if (!hp) return null;
  var host = hp[1];
  var port = hp[2] === undefined ? DEFAULT_PORTS[scheme] : String(Number(hp[2]));
  if (Number(port) < 1 || Number(port) > 65535) return null;
  var origin = scheme + '://' + host + (port === DEFAULT_PORTS[scheme] ? '' : ':' + port);
  return { scheme: scheme, host: host, port: port, origin: origin };
}

/** Whether `host` (as parseOrigin gives it) is this device: localhost, 127.0.0.0/8 or [::1]. */
function isLoopback(host) {
  if (host === 'localhost' || host === '[::1]') return true;
  var m = /^127\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$/.exec(host);
  return !!m && Number(m[1]) < 256 && Number(m[2]) < 256 && Number(m[3]) < 256;
}

// ---- 401 answers -------------------------------------------------------------------------

/** The value of header `name` in a wx response header object, whatever the name's case. */
function headerValue(header, name) {
  if (!header || typeof header !== 'object') return '';
  var lower = name.toLowerCase();
  var keys = Object.keys(header);
  var values = [];
  for (var i = 0; i < keys.length; i++) {
    if (keys[i].toLowerCase() !== lower) continue;
    var v = header[keys[i]];
    values.push(Array.isArray(v) ? v.join(', ') : String(v));
  }
  return values.join(', ');
}

/** RFC 9110 token characters. */
var TCHAR = /[A-Za-z0-9!#$%&'*+.^_`|~-]/;

/**
 * The challenges of a `WWW-Authenticate` value (RFC 9110 11.6.1) as
 * `[{scheme, params}]`, scheme in lower case, parameter names in lower case.
 * Forgiving: what it cannot read it skips.
 * @param {string} value
 */
function parseChallenges(value) {
  var s = String(value || '');
  var i = 0;
  var challenges = [];
  var current = null;
  function spaces() {
    while (i < s.length && (s.charAt(i) === ' ' || s.charAt(i) === '\t')) i++;
  }
  function token() {
    var start = i;
    while (i < s.length && TCHAR.test(s.charAt(i))) i++;
    return s.slice(start, i);
  }
  function quoted() {
    var out = '';
    i++; // opening quote
    while (i < s.length && s.charAt(i) !== '"') {
      if (s.charAt(i) === '\\' && i + 1 < s.length) i++;
      out += s.charAt(i);
      i++;
    }
    i++; // closing quote
    return out;
  }
  while (i < s.length) {
    var c = s.charAt(i);
    if (c === ' ' || c === '\t' || c === ',') {
      i++;
      continue;
    }
    var name = token();
    if (name === '') {
      i++;
      continue;
    }
    spaces();
    if (s.charAt(i) === '=') {
      i++;
      spaces();
      var v = s.charAt(i) === '"' ? quoted() : token();
      if (current) current.params[name.toLowerCase()] = v;
    } else {
      current = { scheme: name.toLowerCase(), params: {} };
      challenges.push(current);
    }
  }
  return challenges;
}

/** Whether a response carries `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750). */
function saysInvalidToken(header) {
  return parseChallenges(headerValue(header, 'WWW-Authenticate')).some(function (ch) {
    return ch.scheme === 'bearer' && ch.params.error === 'invalid_token';
  });
}

/**
 * What a 401 asks of the client: 'refresh', 'login', or '' (nothing: return it as it is).
 *
 * wxauth's error code is the more precise and wins: `token_expired` → refresh,
 * `token_revoked`/`unauthorized` → log in. Otherwise the standard bearer challenge
 * `error="invalid_token"`, which is what any other API can answer, → refresh (a refresh that
 * fails logs in).
 */
function renewalFor(res) {
  if (res.statusCode !== 401) return '';
  var code = errorCodeOf(res.data);
  if (code === 'token_expired') return 'refresh';
  if (code === 'token_revoked' || code === 'unauthorized') return 'login';
  if (saysInvalidToken(res.header)) return 'refresh';
  return '';
}

/**
 * Creates a client for one wxauth server and one mini program. Create it once (in app.js) and
 * share it: concurrent logins and refreshes are merged per client.
 *
 * @param {object} options
 * @param {string} options.baseUrl the wxauth server, e.g. `https://auth.example.com`
 * @param {string} [options.apiBaseUrl] where `request()` sends relative URLs (your own API,
 *   e.g. `https://api.example.com`); defaults to `baseUrl`
 * @param {string[]} [options.trustedOrigins] more origins (`https://files.example.com`) that
 *   `request()` may send the access token to, besides those of `baseUrl` and `apiBaseUrl`
 * @param {string} [options.appId] this mini program's AppID; sent with every login (required by
 *   the server when it serves several apps) and used to namespace the stored tokens
 * @param {object} [options.wx] the `wx` object to use; defaults to the global `wx` (tests and
 *   simulators pass a stand-in)
 */
function createAuth(options) {
  options = options || {};
  if (typeof options.baseUrl !== 'string' || options.baseUrl === '') {
    throw makeError('invalid_argument', 'createAuth: baseUrl is required', 0);
  }
  var baseUrl = options.baseUrl.replace(/\/+$/, '');
  if (!parseOrigin(baseUrl)) {
    throw makeError('invalid_argument', 'createAuth: baseUrl must be an http(s) URL, e.g. https://auth.example.com', 0);
  }
  var apiBaseUrl = baseUrl;
  // Absent, null or '' (an empty line in a config file): relative URLs go to baseUrl.
  if (options.apiBaseUrl !== undefined && options.apiBaseUrl !== null && options.apiBaseUrl !== '') {
    if (typeof options.apiBaseUrl !== 'string' || !parseOrigin(options.apiBaseUrl)) {
      throw makeError('invalid_argument', 'createAuth: apiBaseUrl must be an http(s) URL, e.g. https://api.example.com', 0);
    }
    apiBaseUrl = options.apiBaseUrl.replace(/\/+$/, '');
  }
  /** Origins request() may send the access token to (over https, or plain http on loopback). */
  var trusted = [parseOrigin(baseUrl).origin, parseOrigin(apiBaseUrl).origin];
  var extraOrigins = options.trustedOrigins === undefined || options.trustedOrigins === null ? [] : options.trustedOrigins;
  if (!Array.isArray(extraOrigins)) {
    throw makeError('invalid_argument', 'createAuth: trustedOrigins must be an array of origins', 0);
  }
  extraOrigins.forEach(function (entry) {
    var o = typeof entry === 'string' ? parseOrigin(entry) : null;
    // An origin is scheme, host and port; a path would suggest trust limited to it, which
    // there is not.
    if (!o || !/^[^:]+:\/\/[^\/?#]+\/?$/.test(entry)) {
      throw makeError(
        'invalid_argument',
        'createAuth: a trustedOrigins entry is an origin, scheme://host[:port] with no path, ' +
          'e.g. https://files.example.com; got ' +
          String(entry),
        0
      );
    }
    trusted.push(o.origin);
  });
  var appId = options.appId || '';
  /* global wx */
  var wxApi = options.wx || (typeof wx !== 'undefined' ? wx : null);
  if (!wxApi) {
    throw makeError('invalid_argument', 'createAuth: no wx object (run it in a mini program or pass options.wx)', 0);
  }
  var storageKey = 'wxauth:' + (appId || 'default') + ':tokens';

  /** The tokens in memory; undefined until first read from storage, null when logged out. */
  var current;
  /** The login in flight, shared by concurrent callers. */
  var loginInFlight = null;
  /** The refresh in flight, shared by concurrent callers. */
  var refreshInFlight = null;
  /** Completed logins so far: tells withAuth whether fresh tokens came from a login. */
  var logins = 0;

  // ---- token storage -------------------------------------------------------------------

  function tokens() {
    if (current === undefined) {
      current = null;
      try {
        var stored = wxApi.getStorageSync(storageKey);
        if (stored && typeof stored === 'object' && typeof stored.accessToken === 'string') {
          current = stored;
        }
      } catch (e) {
        // Unreadable storage: behave as logged out.
      }
    }
    return current;
  }

  function saveTokens(body) {
    var now = Date.now();
    current = {
      accessToken: body.access_token,
      refreshToken: body.refresh_token,
      // Local clock at receipt: only used as a hint, the server decides.
      accessExpiresAt: now + (Number(body.expires_in) || 0) * 1000,
      refreshExpiresAt: now + (Number(body.refresh_expires_in) || 0) * 1000
    };
    try {
      wxApi.setStorageSync(storageKey, current);
    } catch (e) {
      // Storage full or unavailable: the tokens still live in memory for this run.
    }
    return current;
  }

  function clearTokens() {
    current = null;
    try {
      wxApi.removeStorageSync(storageKey);
    } catch (e) {
      // Nothing more to do.
    }
  }

  // ---- transport -----------------------------------------------------------------------

  /** `path` on the wxauth server. */
  function fullUrl(path) {
    return baseUrl + (path.charAt(0) === '/' ? '' : '/') + path;
  }

  /** What request() calls: an absolute http(s) URL as it is, anything else on apiBaseUrl. */
  function requestUrl(url) {
    if (typeof url !== 'string' || url === '') {
      throw makeError('invalid_argument', 'request: url is required', 0);
    }
    if (/^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//.test(url)) {
      if (/^https?:\/\//i.test(url)) return url;
      throw makeError('invalid_argument', 'request: url must be a path or an http(s) URL', 0);
    }
    return apiBaseUrl + (url.charAt(0) === '/' ? '' : '/') + url;
  }

  /**
   * Whether request() sends the access token to `url`: only to a trusted origin, and only
   * over https, or plain http to this device (`wxauth demo`, a local API).
   */
  function carriesToken(url) {
    var o = parseOrigin(url);
    if (!o || trusted.indexOf(o.origin) < 0) return false;
    return o.scheme === 'https' || isLoopback(o.host);
  }

  /**
   * One wx.request, as a Promise of `{statusCode, data, header}`. Never rejects for an HTTP
   * status; rejects with `network_error` when the request itself fails.
   */
  function send(method, url, data, header, extra) {
    var m = (method || 'GET').toUpperCase();
    var h = assign({}, header);
    if (WX_METHODS.indexOf(m) < 0) {
      // wx.request cannot send PATCH (or other methods): tunnel them through POST.
      h['X-HTTP-Method-Override'] = m;
      m = 'POST';
    }
    return new Promise(function (resolve, reject) {
      var opts = assign({}, extra);
      assign(opts, {
        url: url,
        method: m,
        header: h,
        success: function (res) {
          resolve({ statusCode: res.statusCode, data: res.data, header: res.header });
        },
        fail: function (err) {
          reject(makeError('network_error', (err && err.errMsg) || 'request:fail', 0));
        }
      });
      if (data !== undefined) opts.data = data;
      wxApi.request(opts);
    });
  }

  function sendJson(method, path, body, header) {
    var h = assign({ 'Content-Type': 'application/json' }, header);
    return send(method, fullUrl(path), body, h);
  }

  /** wx.uploadFile as a Promise of `{statusCode, data}` (data parsed when JSON). */
  function upload(path, filePath, name, header) {
    return new Promise(function (resolve, reject) {
      wxApi.uploadFile({
        url: fullUrl(path),
        filePath: filePath,
        name: name,
        header: header,
        success: function (res) {
          resolve({ statusCode: res.statusCode, data: parseBody(res.data), header: res.header });
        },
        fail: function (err) {
          reject(makeError('network_error', (err && err.errMsg) || 'uploadFile:fail', 0));
        }
      });
    });
  }

  /** wx.login as a Promise of the code. */
  function wxLogin() {
    return new Promise(function (resolve, reject) {
      wxApi.login({
        success: function (res) {
          if (res && res.code) resolve(res.code);
          else reject(makeError('wx_login_failed', (res && res.errMsg) || 'login:fail no code', 0));
        },
        fail: function (err) {
          reject(makeError('wx_login_failed', (err && err.errMsg) || 'login:fail', 0));
        }
      });
    });
  }

  // ---- login and refresh ---------------------------------------------------------------

  /**
   * `wx.login` → `POST /v1/auth/login`; stores the tokens. Concurrent calls share one login.
   * Resolves with the login answer without its tokens: `{user, is_new_user, ...}`.
   */
  function login() {
    if (loginInFlight) return loginInFlight;
    var p = wxLogin()
      .then(function (code) {
        var body = { code: code };
        if (appId) body.app_id = appId;
        return sendJson('POST', '/v1/auth/login', body);
      })
      .then(function (res) {
        if (!isOk(res)) throw errorFromResponse(res);
        var data = parseBody(res.data);
        if (!data || typeof data.access_token !== 'string') {
          throw makeError('invalid_response', 'the login answer has no access_token', res.statusCode);
        }
        saveTokens(data);
        logins += 1;
        var result = {};
        Object.keys(data).forEach(function (k) {
          if (TOKEN_FIELDS.indexOf(k) < 0) result[k] = data[k];
        });
        return result;
      });
    loginInFlight = p;
    var done = function () {
      if (loginInFlight === p) loginInFlight = null;
    };
    p.then(done, done);
    return p;
  }

  /** Logs in and resolves with the new tokens. */
  function loginForTokens() {
    return login().then(function () {
      return tokens();
    });
  }

  /** Tokens to send: waits for a login or refresh in flight, logs in when there are none. */
  function ensureTokens() {
    if (loginInFlight) return loginInFlight.then(tokens);
    if (refreshInFlight) return refreshInFlight;
    var t = tokens();
    if (t) return Promise.resolve(t);
    return loginForTokens();
  }

  /**
   * After `failedAccess` got 401 token_expired: new tokens, from one shared refresh. A failed
   * refresh (any 4xx: reused, revoked, expired) logs in again.
   */
  function renewByRefresh(failedAccess) {
    if (loginInFlight) return loginInFlight.then(tokens);
    if (refreshInFlight) return refreshInFlight;
    var t = tokens();
    if (t && t.accessToken !== failedAccess) return Promise.resolve(t); // already renewed
    if (!t || !t.refreshToken) return loginForTokens();
    var p = sendJson('POST', '/v1/auth/refresh', { refresh_token: t.refreshToken }).then(function (res) {
      if (isOk(res)) {
        var data = parseBody(res.data);
        if (data && typeof data.access_token === 'string') return saveTokens(data);
        throw makeError('invalid_response', 'the refresh answer has no access_token', res.statusCode);
      }
      if (res.statusCode >= 400 && res.statusCode < 500) {
        clearTokens();
        return loginForTokens();
      }
      throw errorFromResponse(res);
    });
    refreshInFlight = p;
    var done = function () {
      if (refreshInFlight === p) refreshInFlight = null;
    };
    p.then(done, done);
    return p;
  }

  /** After `failedAccess` got 401 unauthorized/token_revoked: log in again (shared). */
  function renewByLogin(failedAccess) {
    if (loginInFlight) return loginInFlight.then(tokens);
    if (refreshInFlight) return refreshInFlight;
    var t = tokens();
    if (t && t.accessToken !== failedAccess) return Promise.resolve(t);
    clearTokens();
    return loginForTokens();
  }

  /**
   * Runs `attempt(accessToken)` (a Promise of a response) with the bearer token. A 401 that
   * asks for it (see renewalFor) renews the tokens and runs it once more: by a refresh, or by
   * logging in. When tokens from a refresh are refused as well, it logs in and runs it a last
   * time; tokens from a login are not renewed again. So at most one refresh and one wx.login
   * per call, and no loop.
   */
  function withAuth(attempt) {
    return ensureTokens().then(function (t) {
      return attempt(t.accessToken).then(function (res) {
        var renewal = renewalFor(res);
        if (!renewal) return res;
        var loginsBefore = logins;
        var renew = renewal === 'refresh' ? renewByRefresh(t.accessToken) : renewByLogin(t.accessToken);
        return renew.then(function (fresh) {
          if (!fresh) return res; // logged out meanwhile
          return attempt(fresh.accessToken).then(function (again) {
            if (!renewalFor(again) || logins !== loginsBefore) return again;
            return renewByLogin(fresh.accessToken).then(function (relogged) {
              if (!relogged) return again;
              return attempt(relogged.accessToken);
            });
          });
        });
      });
    });
  }

  function bearer(header, accessToken) {
    return assign(assign({}, header), { Authorization: 'Bearer ' + accessToken });
  }

  /** An authenticated JSON call to the wxauth API: resolves with the body, rejects on non-2xx. */
  function api(method, path, body) {
    return withAuth(function (accessToken) {
      return sendJson(method, path, body, bearer(null, accessToken));
    }).then(function (res) {
      if (!isOk(res)) throw errorFromResponse(res);
      return parseBody(res.data);
    });
  }

  // ---- public API ----------------------------------------------------------------------

  /**
   * `wx.request`, with the bearer token where it may go.
   *
   * A relative `url` (`/api/orders`) is on `apiBaseUrl` (default `baseUrl`); an absolute
   * http(s) URL is used as it is. The access token is added (logging in first if needed) only
   * when the URL's origin is `baseUrl`'s, `apiBaseUrl`'s or one of `trustedOrigins`, and only
   * over https, or plain http to localhost, 127.0.0.0/8 or [::1]. Any other URL is sent
   * without an Authorization header, and without logging in: the request still goes out, the
   * token does not.
   *
   * On a 401 with wxauth's `token_expired`, or with `WWW-Authenticate: Bearer
   * error="invalid_token"` (what any API can answer), it refreshes (a failed refresh logs in
   * again) and retries once; if that retry gets such a 401 too, it logs in with wx.login and
   * retries a last time. On 401 `token_revoked`/`unauthorized` it logs in and retries once.
   * Concurrent 401s share one refresh or login. Other answers, errors included, are returned
   * as they are and not retried.
   *
   * PATCH, which wx.request cannot send, goes as POST with `X-HTTP-Method-Override: PATCH`.
   * Other wx.request options (`timeout`, `dataType`, `responseType`, ...) are passed on;
   * callbacks are not (use the Promise).
   *
   * @param {{url: string, method?: string, data?: *, header?: object, timeout?: number}} opts
   * @returns {Promise<{statusCode: number, data: *, header: object}>}
   */
  function request(opts) {
    opts = opts || {};
    var url;
    try {
      url = requestUrl(opts.url);
    } catch (e) {
      return Promise.reject(e);
    }
    var extra = {};
    Object.keys(opts).forEach(function (k) {
      if (PASSED_ON.indexOf(k) < 0) return;
      extra[k] = opts[k];
    });
    if (!carriesToken(url)) return send(opts.method, url, opts.data, opts.header, extra);
    return withAuth(function (accessToken) {
      return send(opts.method, url, opts.data, bearer(opts.header, accessToken), extra);
    });
  }

  /**
   * The logged-in user (`GET /v1/me`).
   * @param {{includePhone?: boolean}} [opts] `includePhone`: the full phone number, not masked
   */
  function user(opts) {
    var path = '/v1/me' + (opts && opts.includePhone ? '?include=phone' : '');
    return api('GET', path);
  }

  /**
   * Sets profile fields (`PATCH /v1/me`): `nickname`, `avatar_url`, `gender`, `extra`. Sent as
   * POST with `X-HTTP-Method-Override: PATCH`, since wx.request has no PATCH.
   * @param {{nickname?: string, avatar_url?: string, gender?: number, extra?: object}} fields
   */
  function updateProfile(fields) {
    if (!fields || typeof fields !== 'object' || Array.isArray(fields)) {
      return Promise.reject(makeError('invalid_argument', 'updateProfile: fields must be an object', 0));
    }
    return api('PATCH', '/v1/me', fields);
  }

  /**
   * Uploads an avatar (`POST /v1/me/avatar`, multipart field `file`), e.g. the `avatarUrl`
   * temp path from `<button open-type="chooseAvatar">`. Resolves with the user.
   * @param {string} tempFilePath
   */
  function uploadAvatar(tempFilePath) {
    if (typeof tempFilePath !== 'string' || tempFilePath === '') {
      return Promise.reject(makeError('invalid_argument', 'uploadAvatar: tempFilePath is required', 0));
    }
    return withAuth(function (accessToken) {
      return upload('/v1/me/avatar', tempFilePath, 'file', bearer(null, accessToken));
    }).then(function (res) {
      if (!isOk(res)) throw errorFromResponse(res);
      return res.data;
    });
  }

  /**
   * Binds the phone number from `<button open-type="getPhoneNumber">` (`POST /v1/me/phone`).
   * Pass the event's `detail` (the event itself is accepted too): its `code` is used, or
   * `encryptedData`/`iv` on old base libraries. Rejects with `phone_denied` when the user
   * refused or the button gave no data.
   * @param {{code?: string, encryptedData?: string, iv?: string, errMsg?: string}} detail
   */
  function bindPhone(detail) {
    var d = detail;
    if (d && d.detail && typeof d.detail === 'object' && !d.code && !d.encryptedData) d = d.detail;
    if (!d || typeof d !== 'object') {
      return Promise.reject(makeError('invalid_argument', 'bindPhone: pass the getPhoneNumber event detail', 0));
    }
    var body;
    if (d.code) body = { code: d.code };
    else if (d.encryptedData && d.iv) body = { encrypted_data: d.encryptedData, iv: d.iv };
    else {
      return Promise.reject(makeError('phone_denied', d.errMsg || 'getPhoneNumber gave no code', 0));
    }
    return api('POST', '/v1/me/phone', body);
  }

  /**
   * Sends `wx.getUserInfo`/`getUserProfile` data (`POST /v1/me/userinfo`): encryptedData, iv,
   * rawData, signature. When the server answers `decrypt_failed` (its session_key is stale),
   * calls `wx.login` and sends the data again with the new `code`, once. If `res.code` is set
   * (you called wx.login before getting the data), that code is sent at once.
   *
   * The data is first tried without a new code on purpose: a `wx.login` made after the data
   * was encrypted may rotate the session_key and make that data undecryptable.
   *
   * @param {{encryptedData: string, iv: string, rawData?: string, signature?: string, code?: string}} res
   */
  function sendUserInfo(res) {
    if (res && res.detail && typeof res.detail === 'object' && !res.encryptedData) res = res.detail;
    if (!res || !res.encryptedData || !res.iv) {
      return Promise.reject(makeError('invalid_argument', 'sendUserInfo: encryptedData and iv are required', 0));
    }
    var body = { encrypted_data: res.encryptedData, iv: res.iv };
    if (res.rawData && res.signature) {
      body.raw_data = res.rawData;
      body.signature = res.signature;
    }
    if (res.code) {
      return api('POST', '/v1/me/userinfo', assign(body, { code: res.code }));
    }
    return api('POST', '/v1/me/userinfo', body).catch(function (err) {
      if (err.code !== 'decrypt_failed') throw err;
      return wxLogin().then(function (code) {
        return api('POST', '/v1/me/userinfo', assign(assign({}, body), { code: code }));
      });
    });
  }

  /**
   * Logs out (`POST /v1/auth/logout`) and forgets the tokens, even when the server cannot be
   * reached. Does nothing on the server when not logged in. The refresh token goes along, so
   * the session ends on the server even when the access token has expired (the usual case
   * after two hours).
   */
  function logout() {
    var pending = loginInFlight || refreshInFlight;
    var ready = pending ? pending.then(tokens, tokens) : Promise.resolve(tokens());
    return ready.then(function (t) {
      clearTokens();
      if (!t) return undefined;
      var body = t.refreshToken ? { refresh_token: t.refreshToken } : undefined;
      return sendJson('POST', '/v1/auth/logout', body, bearer(null, t.accessToken)).then(
        function (res) {
          // 401: the session was already gone, which is what logging out wants.
          if (!isOk(res) && res.statusCode !== 401) throw errorFromResponse(res);
          return undefined;
        }
      );
    });
  }

  /** Whether tokens are stored (the server may still reject them). */
  function isLoggedIn() {
    return !!tokens();
  }

  return {
    login: login,
    request: request,
    user: user,
    updateProfile: updateProfile,
    uploadAvatar: uploadAvatar,
    bindPhone: bindPhone,
    sendUserInfo: sendUserInfo,
    logout: logout,
    isLoggedIn: isLoggedIn
  };
}

module.exports = {
  createAuth: createAuth
};
