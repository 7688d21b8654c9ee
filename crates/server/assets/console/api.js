// The admin API, with the admin key from sessionStorage (this tab only, gone when it closes).

const KEY = 'wxauth-console.key';

export function adminKey() {
  try { return sessionStorage.getItem(KEY); } catch (_) { return null; }
}

export function setAdminKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
  } catch (_) { /* nothing kept */ }
}

/** An answer of the API that was not a success: `status`, `code` and `message`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the admin API; resolves to the JSON answer, or rejects with an ApiError. */
export async function api(path, { method = 'GET', key = adminKey() } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${key}`, Accept: 'application/json' },
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (err) {
    throw new ApiError(0, 'network', String(err));
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new ApiError(response.status, error.code || 'http_' + response.status,
      error.message || response.statusText);
  }
  return body;
}

/** A query string of the non-empty `params`. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') q.set(name, String(value));
  }
  const text = q.toString();
  return text ? '?' + text : '';
}
