//! The HTTP edge of the real `wxauth serve` binary, over real sockets: slow clients are cut
//! by the header and request deadlines, idle connections are closed, connections over the
//! limit are answered 503, shutdown ends within its grace while letting a request in flight
//! finish, every answer (the file server's included) is in the error shape with the right
//! headers, and a taken port names the setting to change.
//!
//! Time bounds here are generous: they tell "cut" from "never cut", not fast from slow.

// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader,
};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};
use wechat_sim::{DEMO_APP_ID, DEMO_APP_SECRET, SimConfig, SimHandle};

const DATA_KEY: &str = "dGVzdC1kYXRhLWtleS0zMi1ieXRlcy1sb25nLXh4eHg=";

/// One `wxauth serve` process on a fresh SQLite file, against its own simulator.
struct Server {
    child: Child,
    addr: SocketAddr,
    sim: SimHandle,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// Starts `wxauth serve` with these `WXAUTH_*` settings on top of a working config.
async fn serve(settings: &[(&str, &str)]) -> Server {
    let sim = wechat_sim::spawn(
        SimConfig::default(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_wxauth"));
    command.arg("serve").current_dir(dir.path());
    for (key, _) in std::env::vars() {
        if key.starts_with("WXAUTH_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .env("WXAUTH_SERVER__LISTEN", "127.0.0.1:0")
        .env("WXAUTH_DATABASE__URL", "sqlite://wxauth.db")
        .env("WXAUTH_STORAGE__MEDIA_DIR", dir.path().join("media"))
        .env("WXAUTH_WECHAT__API_BASE", sim.base_url())
        .env("WXAUTH_SECURITY__DATA_KEY", DATA_KEY)
        .env("TEST_APP_SECRET", DEMO_APP_SECRET)
        .env(
            "WXAUTH_APPS",
            format!("[{{app_id=\"{DEMO_APP_ID}\",secret_env=\"TEST_APP_SECRET\"}}]"),
        )
        .env("WXAUTH_LOG__FORMAT", "json")
        .env("RUST_LOG", "info")
        .envs(settings.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = timeout(Duration::from_secs(30), async {
        let mut said = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && let Some(addr) = event["fields"]["addr"].as_str()
            {
                return addr.parse::<SocketAddr>().unwrap();
            }
            said.push(line);
        }
        panic!("wxauth serve exited before listening:\n{}", said.join("\n"));
    })
    .await
    .expect("wxauth serve starts listening");
    // Keep reading the log so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server {
        child,
        addr,
        sim,
        dir,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    async fn sim(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}{path}", self.sim.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn code(&self, user: &str) -> String {
        let v = self
            .sim("/sim/login", json!({ "appid": DEMO_APP_ID, "user": user }))
            .await;
        v["code"].as_str().unwrap().to_owned()
    }

    async fn login(&self, user: &str) -> reqwest::Response {
        let code = self.code(user).await;
        self.http
            .post(self.url("/v1/auth/login"))
            .json(&json!({ "code": code }))
            .send()
            .await
            .unwrap()
    }

    /// Sends SIGTERM, as systemd or Kubernetes would.
    fn terminate(&self) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `within`.
    async fn exit_within(&mut self, within: Duration) -> std::process::ExitStatus {
        timeout(within, self.child.wait())
            .await
            .expect("wxauth exits")
            .unwrap()
    }

    fn put_media(&self, name: &str, bytes: &[u8]) {
        let path = self.dir.path().join("media").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// An HTTP/1.1 response read off a raw socket.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Reads one response (with a Content-Length body); `None` when the server closed first.
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> Option<RawResponse> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

/// Whether the server closes the connection (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = Vec::new();
    timeout(within, async {
        let mut chunk = [0u8; 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => sink.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .is_ok()
}

/// Writes the headers of a login with a 60,000-byte body, then the body a byte a second, in
/// the background for up to `seconds`.
fn trickle_a_body(
    stream: TcpStream,
    seconds: u64,
) -> (tokio::net::tcp::OwnedReadHalf, tokio::task::JoinHandle<()>) {
    let (read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let head = "POST /v1/auth/login HTTP/1.1\r\nHost: wxauth\r\n\
                    Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n";
        if write.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for _ in 0..seconds {
            if write.write_all(b" ").await.is_err() {
                return;
            }
            sleep(Duration::from_secs(1)).await;
        }
    });
    (read, writer)
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_after_the_header_timeout() {
    let server = serve(&[("WXAUTH_SERVER__HEADER_READ_TIMEOUT", "1s")]).await;
    let stream = server.connect().await;
    let (mut read, mut write) = stream.into_split();
    // One header line a second, for a minute, unless the server hangs up.
    let writer = tokio::spawn(async move {
        if write
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: wxauth\r\n")
            .await
            .is_err()
        {
            return;
        }
        for i in 0..60 {
            if write
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            sleep(Duration::from_secs(1)).await;
        }
    });
    let started = Instant::now();
    let answer = timeout(Duration::from_secs(15), read_response(&mut read))
        .await
        .expect("the server hangs up on a client that never finishes its headers");
    assert!(
        answer.as_ref().is_none_or(|r| r.status != 200),
        "{answer:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    writer.abort();

    // A normal client on the same server is served.
    let response = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_client_trickling_its_body_gets_408_request_timeout() {
    let server = serve(&[("WXAUTH_SERVER__REQUEST_TIMEOUT", "1s")]).await;
    let (mut read, writer) = trickle_a_body(server.connect().await, 60);
    let response = timeout(Duration::from_secs(15), read_response(&mut read))
        .await
        .expect("the server answers a request that does not finish in time")
        .expect("with a response, not a bare hang-up");
    writer.abort();
    assert_eq!(response.status, 408, "{response:?}");
    let body = response.json();
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = serve(&[
        ("WXAUTH_SERVER__IDLE_TIMEOUT", "1s"),
        ("WXAUTH_SERVER__HEADER_READ_TIMEOUT", "60s"),
    ])
    .await;
    let mut stream = server.connect().await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: wxauth\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(&mut stream).await.unwrap();
    assert_eq!(response.status, 200);
    assert_ne!(response.header("connection"), Some("close"));
    assert!(
        closed_within(&mut stream, Duration::from_secs(15)).await,
        "an idle connection is closed long before the header timeout (60s)"
    );
}

#[tokio::test]
async fn over_the_connection_limit_requests_are_answered_503_overloaded() {
    let server = serve(&[
        ("WXAUTH_SERVER__MAX_CONNECTIONS", "2"),
        ("WXAUTH_SERVER__HEADER_READ_TIMEOUT", "60s"),
        ("WXAUTH_SERVER__IDLE_TIMEOUT", "60s"),
    ])
    .await;
    // Two connections that say nothing take both places.
    let first = server.connect().await;
    let _second = server.connect().await;

    let http = reqwest::Client::new();
    let response = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");

    // A place frees up when a connection closes; then requests are served again.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = reqwest::Client::new()
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the freed place is never reused");
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn shutdown_ends_within_the_grace_whatever_a_trickling_client_does() {
    let mut server = serve(&[
        ("WXAUTH_SERVER__SHUTDOWN_GRACE", "1s"),
        ("WXAUTH_SERVER__REQUEST_TIMEOUT", "300s"),
    ])
    .await;
    // A request in flight that would take a minute to arrive.
    let (_read, writer) = trickle_a_body(server.connect().await, 60);
    sleep(Duration::from_secs(2)).await;
    server.terminate();
    let status = server.exit_within(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
    writer.abort();
}

#[tokio::test]
async fn a_request_in_flight_at_shutdown_still_completes() {
    let mut server = serve(&[("WXAUTH_SERVER__SHUTDOWN_GRACE", "20s")]).await;
    let code = server.code("alice").await;
    server
        .sim(
            "/sim/faults",
            json!({ "path": "/sns/jscode2session", "delay_ms": 3000, "times": 1 }),
        )
        .await;
    let login = tokio::spawn({
        let http = server.http.clone();
        let url = server.url("/v1/auth/login");
        async move {
            http.post(url)
                .json(&json!({ "code": code }))
                .send()
                .await
                .unwrap()
        }
    });
    // Until the login is in the service's hands.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = server
            .http
            .get(format!("{}/sim/stats", server.sim.base_url()));
        let stats: Value = stats.send().await.unwrap().json().await.unwrap();
        if stats.to_string().contains("jscode2session") {
            break;
        }
        assert!(Instant::now() < deadline, "the login never reached WeChat");
        sleep(Duration::from_millis(50)).await;
    }
    server.terminate();

    // New connections are refused while the login is still being answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(server.addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !login.is_finished(),
        "the login ended before shutdown began"
    );

    let response = login.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert!(body["access_token"].is_string(), "{body}");
    let status = server.exit_within(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn http2_without_tls_is_served_too() {
    let server = serve(&[]).await;
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
}

async fn assert_error(
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
) -> reqwest::header::HeaderMap {
    assert_eq!(response.status(), status);
    let headers = response.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{headers:?}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    headers
}

#[tokio::test]
async fn the_file_server_answers_in_the_error_shape() {
    let server = serve(&[]).await;
    server.put_media("avatars/a.png", b"not really a png, but bytes");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let long = format!("/media/avatars/{}", "a".repeat(256));
    let response = http.get(server.url(&long)).send().await.unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;

    for method in [
        reqwest::Method::POST,
        reqwest::Method::DELETE,
        reqwest::Method::PUT,
    ] {
        let response = http
            .request(method, server.url("/media/avatars/a.png"))
            .send()
            .await
            .unwrap();
        let headers = assert_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
        assert!(headers.contains_key("allow"), "{headers:?}");
    }

    let response = http
        .get(server.url("/media/avatars/a.png"))
        .header("range", "bytes=99999999-")
        .send()
        .await
        .unwrap();
    let headers = assert_error(
        response,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
    )
    .await;
    assert_eq!(headers["content-range"], "bytes */27");

    let response = http
        .get(server.url("/media/avatars/a.png"))
        .header("if-unmodified-since", "Mon, 01 Jan 2001 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
    )
    .await;

    // Directories are neither listed nor redirected to (the redirect dropped /media).
    for dir in ["/media/avatars", "/media/avatars/", "/media", "/media/"] {
        let response = http.get(server.url(dir)).send().await.unwrap();
        let headers = assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
        assert!(!headers.contains_key("location"), "{dir}: {headers:?}");
    }
    let response = http
        .get(server.url("/media/avatars/missing.png"))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;

    // The file itself, sandboxed should a browser open it.
    let response = http
        .get(server.url("/media/avatars/a.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-security-policy"], "sandbox");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert!(!response.headers().contains_key("cache-control"));
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        b"not really a png, but bytes"
    );
    let response = http
        .get(server.url("/media/avatars/a.png"))
        .header("range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"not ");
}

#[tokio::test]
async fn a_query_string_that_does_not_fit_is_an_invalid_request() {
    let server = serve(&[]).await;
    let login: Value = server.login("alice").await.json().await.unwrap();
    let token = login["access_token"].as_str().unwrap();
    for query in ["include=phone&include=phone", "include=a&include=b"] {
        let response = server
            .http
            .get(server.url(&format!("/v1/me?{query}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let response = server
        .http
        .get(server.url("/v1/me?include=phone"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn token_responses_are_never_cached_and_nothing_is_sniffed() {
    let server = serve(&[]).await;
    let response = server.login("alice").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let login: Value = response.json().await.unwrap();

    let response = server
        .http
        .post(server.url("/v1/auth/refresh"))
        .json(&json!({ "refresh_token": login["refresh_token"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");

    // Errors too, and routes that do not exist.
    for path in ["/v1/auth/login", "/nowhere"] {
        let response = server
            .http
            .post(server.url(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error());
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
}

#[tokio::test]
async fn serve_on_a_taken_port_names_the_setting_to_change() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_wxauth"))
        .arg("serve")
        .current_dir(dir.path())
        .env("WXAUTH_SERVER__LISTEN", &addr)
        .env("WXAUTH_DATABASE__URL", "sqlite://wxauth.db")
        .env("WXAUTH_SECURITY__DATA_KEY", DATA_KEY)
        .env("TEST_APP_SECRET", DEMO_APP_SECRET)
        .env(
            "WXAUTH_APPS",
            format!("[{{app_id=\"{DEMO_APP_ID}\",secret_env=\"TEST_APP_SECRET\"}}]"),
        )
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    for needed in [
        addr.as_str(),
        "already in use",
        "server.listen",
        "WXAUTH_SERVER__LISTEN",
    ] {
        assert!(said.contains(needed), "missing {needed:?} in: {said}");
    }
    // Nothing was touched before the port was found taken.
    assert!(!dir.path().join("wxauth.db").exists());

    let output = Command::new(env!("CARGO_BIN_EXE_wxauth"))
        .args(["demo", "--listen", &addr, "--sim-listen", "127.0.0.1:0"])
        .arg("--database")
        .arg(format!("sqlite://{}", dir.path().join("demo.db").display()))
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    for needed in [addr.as_str(), "already in use", "--listen"] {
        assert!(said.contains(needed), "missing {needed:?} in: {said}");
    }
    drop(taken);
}
