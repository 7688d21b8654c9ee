// Type declarations for wxauth.js, the mini-program client of the wxauth login service.

/** The part of the mini-program `wx` object the client uses. */
export interface WxLike {
  login(options: {
    success?: (res: { code: string; errMsg?: string }) => void;
    fail?: (err: { errMsg: string }) => void;
  }): void;
  request(options: {
    url: string;
    method?: string;
    data?: unknown;
    header?: Record<string, string>;
    success?: (res: { statusCode: number; data: unknown; header?: Record<string, string> }) => void;
    fail?: (err: { errMsg: string }) => void;
  }): void;
  uploadFile(options: {
    url: string;
    filePath: string;
    name: string;
    header?: Record<string, string>;
    formData?: Record<string, string>;
    success?: (res: { statusCode: number; data: string; header?: Record<string, string> }) => void;
    fail?: (err: { errMsg: string }) => void;
  }): void;
  getStorageSync(key: string): any;
  setStorageSync(key: string, value: any): void;
  removeStorageSync(key: string): void;
}

export interface CreateAuthOptions {
  /** The wxauth server, e.g. `https://auth.example.com` (no trailing path needed). */
  baseUrl: string;
  /**
   * Where `request()` sends a relative `url` (`/api/orders`): your own API, e.g.
   * `https://api.example.com` (a path is kept: `https://example.com/shop` + `/orders`).
   * Absent, null or `''`: `baseUrl`. The client's own calls (`user()`, `login()`, ...) always go
   * to `baseUrl`.
   */
  apiBaseUrl?: string | null;
  /**
   * More origins `request()` may send the access token to, besides `baseUrl`'s and
   * `apiBaseUrl`'s: scheme, host and optional port, no path (`https://files.example.com`,
   * `https://api.example.com:8443`). The token goes only over https, or plain http to
   * localhost, 127.0.0.0/8 or [::1]; any other URL is requested without it.
   */
  trustedOrigins?: string[] | null;
  /**
   * This mini program's AppID. Sent with every login (a server with several apps requires it)
   * and used to namespace the stored tokens (`wxauth:<appId>:tokens`).
   */
  appId?: string;
  /** The `wx` object to use; defaults to the global `wx`. Tests and simulators pass their own. */
  wx?: WxLike;
}

/** The user as the server returns it. */
export interface User {
  id: string;
  app_id: string;
  openid: string;
  unionid: string | null;
  nickname: string | null;
  avatar_url: string | null;
  gender: number;
  /** Masked unless asked for with `user({ includePhone: true })`; absent when not bound. */
  phone?: unknown;
  extra?: Record<string, unknown>;
  created_at: string;
  [field: string]: unknown;
}

/** What `login()` resolves with: the login answer without its tokens. */
export interface LoginResult {
  user: User;
  is_new_user: boolean;
  is_new_identity?: boolean;
  [field: string]: unknown;
}

export interface RequestOptions {
  /**
   * A path on `apiBaseUrl` (`/api/orders`; `apiBaseUrl` defaults to `baseUrl`) or an absolute
   * http(s) URL. The access token is sent only to the origins of `baseUrl` and `apiBaseUrl`
   * and those in `trustedOrigins`, over https or to loopback; other URLs are requested
   * without an Authorization header.
   */
  url: string;
  /** Default GET. PATCH (which wx.request cannot send) goes as POST with `X-HTTP-Method-Override`. */
  method?: string;
  data?: unknown;
  header?: Record<string, string>;
  /** Handed on to wx.request as they are. */
  timeout?: number;
  dataType?: 'json' | string;
  responseType?: 'text' | 'arraybuffer';
  enableHttp2?: boolean;
  enableQuic?: boolean;
  enableCache?: boolean;
  forceCellularNetwork?: boolean;
}

export interface Response<T = any> {
  statusCode: number;
  data: T;
  header?: Record<string, string>;
}

export interface ProfileFields {
  nickname?: string;
  avatar_url?: string;
  /** 0 unknown, 1 male, 2 female. */
  gender?: number;
  /** App-specific fields, a JSON object. */
  extra?: Record<string, unknown>;
}

/** The `detail` of a `<button open-type="getPhoneNumber">` event. */
export interface PhoneNumberDetail {
  errMsg?: string;
  code?: string;
  encryptedData?: string;
  iv?: string;
}

/** What `wx.getUserInfo` / `wx.getUserProfile` give (or the getuserinfo button's `detail`). */
export interface UserInfoResult {
  encryptedData: string;
  iv: string;
  rawData?: string;
  signature?: string;
  /** A `wx.login` code obtained before the data; sent with it when given. */
  code?: string;
  [field: string]: unknown;
}

/**
 * How every method rejects: an `Error` with the server's error `code` (`token_revoked`,
 * `invalid_request`, `decrypt_failed`, ...) and HTTP status, or one of the client's own codes
 * with status 0: `network_error`, `wx_login_failed`, `invalid_argument`, `phone_denied`,
 * `invalid_response`. `http_<status>` when an error answer had no wxauth error body.
 */
export interface WxAuthError extends Error {
  name: 'WxAuthError';
  code: string;
  statusCode: number;
  /** The same as `statusCode`. */
  status: number;
  /** The parsed response body, when there was one. */
  data?: unknown;
  /** WeChat's errcode, when WeChat's answer caused the error. */
  wechatErrcode?: number;
}

export interface WxAuth {
  /** `wx.login` → `POST /v1/auth/login`; stores the tokens. Concurrent calls share one login. */
  login(): Promise<LoginResult>;
  /**
   * `wx.request` with the bearer token where it may go (see `RequestOptions.url`), logging in
   * first if needed. On 401 with `{"error":{"code":"token_expired"}}` or with
   * `WWW-Authenticate: Bearer error="invalid_token"` it refreshes (a failed refresh logs in
   * again) and retries once; a 401 to that retry logs in with `wx.login` and retries a last
   * time. On 401 `token_revoked`/`unauthorized` it logs in again and retries once. Concurrent
   * 401s share one refresh or login. Other answers, errors included, are resolved as they
   * are, not retried. A request sent without the token is never retried.
   */
  request<T = any>(options: RequestOptions): Promise<Response<T>>;
  /** `GET /v1/me` (`?include=phone` with `includePhone`). */
  user(options?: { includePhone?: boolean }): Promise<User>;
  /** `PATCH /v1/me` (sent as POST + `X-HTTP-Method-Override: PATCH`). */
  updateProfile(fields: ProfileFields): Promise<User>;
  /** `POST /v1/me/avatar` via `wx.uploadFile` (field `file`), e.g. chooseAvatar's `avatarUrl`. */
  uploadAvatar(tempFilePath: string): Promise<User>;
  /** `POST /v1/me/phone` from the getPhoneNumber button's detail: `code`, else `encryptedData`/`iv`. */
  bindPhone(detail: PhoneNumberDetail | { detail: PhoneNumberDetail }): Promise<User>;
  /**
   * `POST /v1/me/userinfo` with encryptedData, iv, rawData, signature. On `decrypt_failed` (the
   * server's session_key is stale) calls `wx.login` and sends the data again with the new code.
   */
  sendUserInfo(res: UserInfoResult | { detail: UserInfoResult }): Promise<User>;
  /**
   * `POST /v1/auth/logout` with the refresh token (the session ends even after the access token
   * expired) and forget the tokens (forgotten even if the server is unreachable).
   */
  logout(): Promise<void>;
  /** Whether tokens are stored (the server may still refuse them). */
  isLoggedIn(): boolean;
}

export function createAuth(options: CreateAuthOptions): WxAuth;
