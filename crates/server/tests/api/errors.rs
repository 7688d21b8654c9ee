//! Bad input of every kind gets a 4xx in the API's error shape, never a 500.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_body_that_is_not_json_is_unsupported() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/v1/auth/login"))
        .header("content-type", "text/plain")
        .body("code=abc")
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn malformed_json_is_an_invalid_request() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/v1/auth/login"))
        .header("content-type", "application/json")
        .body("{\"code\":")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn a_json_array_of_the_fields_values_is_not_a_body() {
    let app = spawn_app().await;
    let code = app.code("ann").await;
    // serde reads a struct from an array of its fields' values; the API takes objects only.
    let response = app.post("/v1/auth/login", json!([code])).await;
    let body = assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(body["error"]["message"], "the JSON body must be an object");
    let token = app.login("bea").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = app
        .patch_authed("/v1/me", &token, json!([null, null]))
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = app
        .post_authed("/v1/me", &token, json!(["nick", null, 1]))
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn missing_or_mistyped_fields_are_invalid_requests() {
    let app = spawn_app().await;
    for body in [
        json!({}),
        json!({ "code": 5 }),
        json!({ "code": "" }),
        json!({ "code": "a b" }),
        json!([1]),
    ] {
        let response = app.post("/v1/auth/login", body.clone()).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let response = app
        .post("/v1/auth/refresh", json!({ "refresh": "x" }))
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn a_body_over_64_kib_is_too_large() {
    let app = spawn_app().await;
    let big = "x".repeat(65 * 1024);
    let response = app.post("/v1/auth/login", json!({ "code": big })).await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/v1/nothing")).send().await.unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app
        .http
        .get(app.url("/v1/auth/login"))
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "ok");
}
