'use strict';
// Starts the real `wxauth` binary twice: the WeChat simulator (`wxauth sim`) and the service
// (`wxauth serve`, configured by environment variables only), on free ports, with SQLite in a
// temporary directory. `stop()` kills both; they are also killed when the test process exits.

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..', '..');
const DEMO_APP_ID = 'wx1234567890abcdef';
const DEMO_APP_SECRET = 'demo-secret-0123456789abcdef0123';

/** The binary under test: $WXAUTH_BIN, else <repo>/target/debug/wxauth. */
function wxauthBin() {
  const bin = process.env.WXAUTH_BIN || path.join(REPO, 'target', 'debug', 'wxauth');
  if (!fs.existsSync(bin)) {
    throw new Error(
      `wxauth binary not found at ${bin}: build it first (cd ${REPO} && cargo build -p wxauth) ` +
        'or point WXAUTH_BIN at it'
    );
  }
  return bin;
}

/** A port that was free a moment ago (bind port 0, read it, release it). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try {
      child.kill('SIGKILL');
    } catch (_) {
      // already gone
    }
  }
});

/** Spawns a child that keeps the tail of its output for error messages. */
function start(name, bin, args, env, cwd) {
  const child = spawn(bin, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (chunk) => {
    output = (output + chunk.toString()).slice(-8000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  running.add(child);
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });
  return { name, child, exited, output: () => output };
}

/** Waits until GET `url` answers 200, or throws with the process's output. */
async function waitHealthy(proc, url, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  let dead = null;
  proc.exited.then((status) => {
    dead = status;
  });
  while (Date.now() < deadline) {
    if (dead) {
      throw new Error(
        `${proc.name} exited (${JSON.stringify(dead)}) before answering ${url}:\n${proc.output()}`
      );
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch (_) {
      // not up yet
    }
    await sleep(50);
  }
  throw new Error(`${proc.name} did not answer ${url} within ${timeoutMs} ms:\n${proc.output()}`);
}

async function stopProc(proc) {
  if (proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  proc.child.kill('SIGTERM');
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), 3000);
  await proc.exited;
  clearTimeout(timer);
}

/** The environment for a child: ours without any WXAUTH_ settings, plus `extra`. */
function childEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('WXAUTH_')) env[k] = v;
  }
  env.RUST_LOG = process.env.WXAUTH_TEST_LOG || 'warn';
  return Object.assign(env, extra);
}

/**
 * Starts the simulator and the service.
 * @param {{accessTtl?: string}} [opts] `accessTtl`: the access-token lifetime (default "2s")
 */
async function startStack(opts = {}) {
  const bin = wxauthBin();
  const accessTtl = opts.accessTtl || '2s';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wxauth-js-'));
  const dataKey = execFileSync(bin, ['gen-key'], { cwd: dir, env: childEnv({}) })
    .toString()
    .trim();
  const [simPort, apiPort] = [await freePort(), await freePort()];
  const simUrl = `http://127.0.0.1:${simPort}`;
  const baseUrl = `http://127.0.0.1:${apiPort}`;

  const procs = [];
  const stop = async () => {
    await Promise.all(procs.map(stopProc));
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    // cwd is the temp dir, so no ./wxauth.toml of the developer's is picked up.
    const sim = start('wxauth sim', bin, ['sim', '--listen', `127.0.0.1:${simPort}`], childEnv({}), dir);
    procs.push(sim);
    await waitHealthy(sim, `${simUrl}/sim/stats`);
    const server = start(
      'wxauth serve',
      bin,
      ['serve'],
      childEnv({
        WXAUTH_SERVER__LISTEN: `127.0.0.1:${apiPort}`,
        WXAUTH_SERVER__PUBLIC_URL: baseUrl,
        WXAUTH_DATABASE__URL: `sqlite://${path.join(dir, 'wxauth.db')}`,
        WXAUTH_WECHAT__API_BASE: simUrl,
        WXAUTH_SECURITY__DATA_KEY: dataKey,
        WXAUTH_TOKENS__ACCESS_TTL: accessTtl,
        WXAUTH_APPS: `[{app_id="${DEMO_APP_ID}",secret="${DEMO_APP_SECRET}"}]`,
      }),
      dir
    );
    procs.push(server);
    await waitHealthy(server, `${baseUrl}/healthz`);
  } catch (err) {
    await stop();
    throw err;
  }

  /** POST to the simulator's control API; throws on an error answer. */
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

  /** A plain JSON call to the service, outside the client (for test set-up and checks). */
  async function api(method, pathname, { token, body } = {}) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(baseUrl + pathname, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let data = text;
    try {
      data = JSON.parse(text);
    } catch (_) {
      // not JSON
    }
    return { statusCode: res.status, data };
  }

  return { baseUrl, simUrl, appId: DEMO_APP_ID, dir, sim, api, stop };
}

module.exports = { startStack, wxauthBin, sleep, DEMO_APP_ID, REPO };
