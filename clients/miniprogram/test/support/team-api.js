'use strict';
// A team's own API, as a mini program's backend would be written: node's `http` module,
// checking every bearer token by asking wxauth's `GET /v1/me` with it. It speaks only
// standard HTTP about tokens, no wxauth error codes:
//
// - no bearer token: 401 with `WWW-Authenticate: Bearer realm="team"` (RFC 6750: no error);
// - wxauth refuses the token: 401 with `WWW-Authenticate: Bearer realm="team",
//   error="invalid_token"` (or the challenge set with `setChallenge`) and a plain-text body;
// - wxauth accepts it: 200 `{user_id, method, path}`.
//
// `refuseNext(n)` makes it refuse the next n tokens as invalid whatever wxauth says, as an API
// does that keeps a revocation list of its own. Every request is recorded with the
// Authorization header it carried and the status it got.

const http = require('node:http');

const INVALID_TOKEN = 'Bearer realm="team", error="invalid_token"';

/**
 * Starts the API on a free port of `host`.
 * @param {{wxauthUrl: string, host?: string}} opts `host`: the address to listen on and to
 *   name in `url` (default 127.0.0.1)
 */
async function startTeamApi({ wxauthUrl, host = '127.0.0.1' }) {
  /** @type {{method: string, path: string, authorization: string | undefined, status: number}[]} */
  const requests = [];
  let refusals = 0;
  let challenge = INVALID_TOKEN;

  async function answer(req) {
    const authorization = req.headers.authorization;
    if (!authorization || !/^Bearer /.test(authorization)) {
      return { status: 401, headers: { 'WWW-Authenticate': 'Bearer realm="team"' }, body: 'sign in first' };
    }
    if (refusals > 0) {
      refusals -= 1;
      return { status: 401, headers: { 'WWW-Authenticate': challenge }, body: 'invalid token' };
    }
    // The real check: wxauth says whose token this is, or that it is no good.
    const me = await fetch(`${wxauthUrl}/v1/me`, { headers: { Authorization: authorization } });
    const text = await me.text();
    if (me.status === 401) {
      return { status: 401, headers: { 'WWW-Authenticate': challenge }, body: 'invalid token' };
    }
    if (me.status !== 200) {
      return { status: 502, headers: {}, body: `wxauth answered ${me.status}` };
    }
    const user = JSON.parse(text);
    return {
      status: 200,
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user_id: user.id, method: req.method, path: req.url }),
    };
  }

  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const entry = { method: req.method, path: req.url, authorization: req.headers.authorization, status: 0 };
      requests.push(entry);
      answer(req).then(
        (a) => {
          entry.status = a.status;
          res.writeHead(a.status, Object.assign({ 'Content-Type': 'text/plain' }, a.headers));
          res.end(a.body);
        },
        (err) => {
          entry.status = 500;
          res.writeHead(500, { 'Content-Type': 'text/plain' });
          res.end(`team API failed: ${err.message}`);
        }
      );
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  const { port } = server.address();
  const hostInUrl = host.includes(':') ? `[${host}]` : host;

  return {
    url: `http://${hostInUrl}:${port}`,
    requests,
    /** Refuse the next `n` bearer tokens as invalid, without asking wxauth. */
    refuseNext(n) {
      refusals = n;
    },
    /** The `WWW-Authenticate` value (or values) of the invalid-token 401; null: the default. */
    setChallenge(value) {
      challenge = value === null ? INVALID_TOKEN : value;
    },
    stop() {
      return new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
}

module.exports = { startTeamApi };
