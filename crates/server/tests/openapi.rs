//! The OpenAPI document against the real `wxauth serve`: every documented operation is
//! routed, and Schemathesis (from requirements.txt, installed by `scripts/ext-tools`) fuzzes
//! every operation with the document, without credentials and with real ones (a user logged
//! in through the simulator, an admin key, a service's credentials), following the document's
//! links where it can: no answer may be a 5xx, and every answer (status, content type,
//! headers, body) must be what the document says. That a route the code registers is in the
//! document is checked by the unit tests of `api::openapi`.

// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

#[path = "support/backend.rs"]
mod backend;
#[path = "support/binary.rs"]
mod binary;
#[path = "support/ext.rs"]
mod ext;

use std::path::Path;
use std::time::{Duration, Instant};

use backend::TestBackend;
use binary::{Wxauth, serve, sim};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::process::Command;
use wechat_sim::{DEMO_APP_ID, SimHandle};
use wxauth::service::admins::NewAdminKey;

const SERVICE_NAME: &str = "billing";
const SERVICE_SECRET: &str = "billing-secret-0000000000000000";

/// Test cases per operation and phase: enough to reach every documented answer, few enough
/// for a run of about a minute.
const MAX_EXAMPLES: &str = "8";
/// Every check Schemathesis has, but two that do not fit this API:
/// - `positive_data_acceptance` expects every request the schema allows to succeed, but a
///   login code or encrypted data that fits the schema is still refused unless WeChat made it;
/// - `unsupported_method` on `/v1/verify`: forward auth answers for every method a proxy
///   forwards (`any`), also ones such as QUERY that an OpenAPI document cannot list.
const CONFIG: &str = r#"
[checks.positive_data_acceptance]
enabled = false

[[operations]]
include-path-regex = "^/v1/verify"
checks.unsupported_method.enabled = false
"#;

/// The longest either run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// `wxauth serve` with an operator key and a `[[services]]` credential; a short request
/// timeout bounds the event feed's `wait` that fuzzing asks for.
async fn service(backend: &TestBackend, sim: &SimHandle, admin: &NewAdminKey) -> Wxauth {
    let admins = format!("[{{name=\"ops\",key_hash=\"{}\"}}]", admin.key_hash);
    let services = format!("[{{name=\"{SERVICE_NAME}\",secret=\"{SERVICE_SECRET}\"}}]");
    serve(
        backend,
        sim,
        &[
            ("WXAUTH_ADMINS", admins.as_str()),
            ("WXAUTH_SERVICES", services.as_str()),
            ("WXAUTH_SERVER__REQUEST_TIMEOUT", "3s"),
        ],
    )
    .await
}

async fn document(server: &Wxauth) -> Value {
    let response = server
        .http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    response.json().await.unwrap()
}

/// The document's operations: path template and method.
fn operations(doc: &Value) -> Vec<(String, Method)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            found.push((
                path.clone(),
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
            ));
        }
    }
    found
}

#[tokio::test]
async fn every_documented_operation_is_routed_by_the_live_service() {
    let backend = TestBackend::from_env().await;
    let sim = sim().await;
    let admin = NewAdminKey::generate();
    let server = service(&backend, &sim, &admin).await;
    let doc = document(&server).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    // A file for `/media/{file}` to find.
    let media = backend.dir().join("media");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(media.join("probe.png"), b"\x89PNG\r\n\x1a\n").unwrap();

    let operations = operations(&doc);
    assert!(operations.len() > 40, "{operations:?}");
    // `/metrics` is on the main listener unless `[metrics] listen` moves it.
    assert!(operations.contains(&("/metrics".to_owned(), Method::GET)));
    for (template, method) in operations {
        let path = template
            .replace("{file}", "probe.png")
            .replace("{id}", "0190d5a8-0000-7000-8000-000000000001")
            .replace("{original}", "some/path");
        let response = server
            .http
            .request(method.clone(), server.url(&path))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str();
        let fallback = (status == StatusCode::NOT_FOUND
            && body["error"]["message"] == "no such route")
            || status == StatusCode::METHOD_NOT_ALLOWED;
        assert!(
            !fallback,
            "{method} {template} is documented but not routed: {status} {code:?}"
        );
    }
}

#[tokio::test]
async fn openapi_json_does_not_list_metrics_where_another_listener_serves_them() {
    let backend = TestBackend::from_env().await;
    let sim = sim().await;
    let server = serve(&backend, &sim, &[("WXAUTH_METRICS__LISTEN", "127.0.0.1:0")]).await;
    let doc = document(&server).await;
    assert!(doc["paths"]["/metrics"].is_null());
    assert!(doc["paths"]["/healthz"]["get"].is_object());
}

/// One Schemathesis run over the whole document; panics with its report on a failure.
async fn schemathesis(
    python: &Path,
    server: &Wxauth,
    admin: &NewAdminKey,
    with_credentials: bool,
) -> Duration {
    let report = tempfile::tempdir().unwrap();
    std::fs::write(report.path().join("schemathesis.toml"), CONFIG).unwrap();
    let schemathesis = python.with_file_name("schemathesis");
    let mut command = Command::new(&schemathesis);
    command
        .arg("run")
        .arg(server.url("/openapi.json"))
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", "14"])
        .args(["--workers", "2"])
        .args(["--request-timeout", "10"])
        .args(["--suppress-health-check", "all"])
        .args(["--warnings", "off"])
        .arg("--no-color")
        .current_dir(report.path())
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("PYTHONPATH", ext::ext_dir())
        .env("WXTEST_WXAUTH_URL", &server.url)
        .env("WXTEST_SIM_URL", &server.sim_url)
        .env("WXTEST_APP_ID", DEMO_APP_ID)
        .env("WXTEST_ADMIN_KEY", &admin.key)
        .env("WXTEST_SERVICE_NAME", SERVICE_NAME)
        .env("WXTEST_SERVICE_SECRET", SERVICE_SECRET);
    if !with_credentials {
        command.env_remove("SCHEMATHESIS_HOOKS");
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", schemathesis.display()));
    let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish in {RUN_TIMEOUT:?}"))
        .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let label = if with_credentials {
        "with credentials"
    } else {
        "without credentials"
    };
    assert!(
        output.status.success(),
        "schemathesis ({label}) found problems:\n{stdout}\n{stderr}"
    );
    eprintln!("schemathesis ({label}) took {took:?}:\n{stdout}");
    took
}

#[tokio::test]
async fn schemathesis_finds_every_answer_true_to_the_document_with_and_without_credentials() {
    let test = "openapi::schemathesis_finds_every_answer_true_to_the_document_with_and_without_credentials";
    let Some(python) = ext::python(test) else {
        return;
    };
    let backend = TestBackend::from_env().await;
    let sim = sim().await;
    let admin = NewAdminKey::generate();
    let server = service(&backend, &sim, &admin).await;
    // Persons and sessions for the admin routes to find (and the stateful phase to follow).
    for user in ["alice", "bob"] {
        server.logged_in(user).await;
    }
    schemathesis(&python, &server, &admin, false).await;
    schemathesis(&python, &server, &admin, true).await;
    // The service is still well.
    let (status, _) = server.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    server.terminate().await;
}
