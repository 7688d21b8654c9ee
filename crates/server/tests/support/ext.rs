//! External clients the tests run against the real service: Python (a venv with
//! requirements.txt: PyJWT, ...), Node with tests/ext's packages (jose, playwright-core, ...),
//! nginx and Chromium. `scripts/ext-tools` installs them and names them in `WXTEST_PYTHON`,
//! `WXTEST_NODE`, `WXTEST_NODE_MODULES`, `WXTEST_NGINX` and `WXTEST_CHROMIUM`; without those,
//! the default places are looked at (`<target>/ext-venv`, `tests/ext/node_modules`, `nginx` on
//! the PATH, `/usr/bin/chromium`). A missing tool fails
//! the test under `CI` and is a recorded skip elsewhere (see `skip.rs`).
//!
//! [`Nginx`] runs a throwaway nginx in front of an upstream, asking an auth endpoint first
//! (`auth_request`), the way a team puts wxauth in front of its services.

// Shared by several test crates, each of which uses only a part.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

#[path = "skip.rs"]
mod skip;

/// Longest a script or nginx may take to answer.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `tests/ext`, where the scripts are.
pub fn ext_dir() -> PathBuf {
    repo_root().join("tests/ext")
}

/// The Cargo target directory these tests were built in.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo_root().join("target"))
}

fn from_env_or(var: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(var).map_or(default, PathBuf::from)
}

/// The venv's Python, or `None` (a recorded skip) when it is not there.
pub fn python(test: &str) -> Option<PathBuf> {
    let python = from_env_or("WXTEST_PYTHON", target_dir().join("ext-venv/bin/python"));
    if python.is_file() {
        Some(python)
    } else {
        skip::skip(
            test,
            &format!(
                "no Python venv at {} (run scripts/ext-tools)",
                python.display()
            ),
        );
        None
    }
}

/// Node 20 or later, and the directory of tests/ext's installed packages.
#[derive(Debug, Clone)]
pub struct Node {
    /// The `node` binary.
    pub bin: PathBuf,
    /// `tests/ext/node_modules`.
    pub modules: PathBuf,
}

/// Node and tests/ext's packages, or `None` (a recorded skip).
pub fn node(test: &str) -> Option<Node> {
    let bin = from_env_or("WXTEST_NODE", PathBuf::from("node"));
    let modules = from_env_or("WXTEST_NODE_MODULES", ext_dir().join("node_modules"));
    let version = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    let Some(version) = version else {
        skip::skip(test, "node is not installed (Node 20 or later)");
        return None;
    };
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        skip::skip(test, &format!("node {version} is older than 20"));
        return None;
    }
    if !modules.join("jose").is_dir() {
        skip::skip(
            test,
            &format!(
                "tests/ext's Node packages are not installed in {} (run scripts/ext-tools)",
                modules.display()
            ),
        );
        return None;
    }
    Some(Node { bin, modules })
}

/// Whether `package` of tests/ext is installed (a recorded skip when not).
pub fn has_node_package(test: &str, node: &Node, package: &str) -> bool {
    let found = node.modules.join(package).is_dir();
    if !found {
        skip::skip(
            test,
            &format!(
                "tests/ext's {package} is not installed in {} (run scripts/ext-tools)",
                node.modules.display()
            ),
        );
    }
    found
}

/// The system's Chromium (`WXTEST_CHROMIUM`, default `/usr/bin/chromium`), or `None` (a
/// recorded skip).
pub fn chromium(test: &str) -> Option<PathBuf> {
    let path = from_env_or("WXTEST_CHROMIUM", PathBuf::from("/usr/bin/chromium"));
    if path.is_file() {
        Some(path)
    } else {
        skip::skip(test, "chromium is not installed (run scripts/ext-tools)");
        None
    }
}

/// The nginx binary, or `None` (a recorded skip).
pub fn nginx(test: &str) -> Option<PathBuf> {
    let candidates = match std::env::var_os("WXTEST_NGINX") {
        Some(path) => vec![PathBuf::from(path)],
        None => vec![
            PathBuf::from("/usr/sbin/nginx"),
            PathBuf::from("/usr/local/sbin/nginx"),
            PathBuf::from("/usr/bin/nginx"),
        ],
    };
    let found = candidates.into_iter().find(|path| path.is_file());
    if found.is_none() {
        skip::skip(test, "nginx is not installed (run scripts/ext-tools)");
    }
    found
}

/// Runs a tool to the end (at most [`TOOL_TIMEOUT`]).
pub async fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    tokio::time::timeout(TOOL_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{command:?} did not finish in {TOOL_TIMEOUT:?}"))
        .unwrap()
}

/// An HTTP server standing behind nginx: answers every request with what it received
/// (`path`, `x_wxauth_user_id`, `authorization`), and counts them.
pub struct EchoUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl EchoUpstream {
    /// Starts on a free port.
    pub async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let header = |name: &str| {
                    headers
                        .get(name)
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                };
                Json(json!({
                    "path": uri.path(),
                    "x_wxauth_user_id": header("x-wxauth-user-id"),
                    "authorization": header("authorization"),
                }))
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            hits,
            _task: task,
        }
    }

    /// Requests it has answered.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A throwaway nginx (one process, everything in a temporary directory) on a free port that
/// proxies every request to an upstream once the auth endpoint answers 2xx for it, passing on
/// the identity header the auth endpoint sets:
///
/// ```text
/// location = /_wxauth_verify { internal; proxy_pass AUTH_URL; ... }
/// location / { auth_request /_wxauth_verify;
///              auth_request_set $wx_user $upstream_http_x_wxauth_user_id;
///              proxy_set_header X-Wxauth-User-Id $wx_user; proxy_pass http://UPSTREAM; }
/// ```
pub struct Nginx {
    /// Where it listens.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Nginx {
    /// Starts `bin` with `auth_url` (e.g. `http://127.0.0.1:PORT/v1/verify`) as the auth
    /// endpoint in front of `upstream`; returns once it accepts connections.
    pub async fn start(bin: &Path, auth_url: &str, upstream: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().await;
        let conf = config(dir.path(), port, auth_url, upstream);
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut nginx = Self { port, dir, child };
        nginx.wait_until_listening().await;
        nginx
    }

    async fn wait_until_listening(&mut self) {
        let deadline = tokio::time::Instant::now() + TOOL_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("nginx exited ({status}):\n{}", self.error_log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx did not listen on {} in {TOOL_TIMEOUT:?}:\n{}",
                self.port,
                self.error_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A URL through nginx.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What nginx logged (for failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

async fn free_port() -> u16 {
    // The port is free a moment ago; nginx binds it right after.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Running as root, nginx would hand requests to workers running as `nobody`: keep them root
/// so the temporary directory stays theirs.
fn user_line() -> &'static str {
    use std::os::unix::fs::MetadataExt as _;
    match std::fs::metadata("/proc/self") {
        Ok(meta) if meta.uid() == 0 => "user root;",
        _ => "",
    }
}

fn config(dir: &Path, port: u16, auth_url: &str, upstream: SocketAddr) -> String {
    let d = dir.display();
    let user = user_line();
    format!(
        r#"{user}
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location = /_wxauth_verify {{
            internal;
            proxy_pass {auth_url};
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Authorization $http_authorization;
        }}
        location / {{
            auth_request /_wxauth_verify;
            auth_request_set $wx_user $upstream_http_x_wxauth_user_id;
            proxy_set_header X-Wxauth-User-Id $wx_user;
            proxy_pass http://{upstream};
        }}
    }}
}}
"#
    )
}

/// A JSON body, or the text when it is not JSON.
pub fn json_or_text(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}
