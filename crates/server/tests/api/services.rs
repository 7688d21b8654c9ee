//! The team's services checking tokens: `POST /v1/introspect` (RFC 7662, HTTP Basic with a
//! `[[services]]` credential) and `/v1/verify` (forward auth), for opaque and JWT tokens.

use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use wxauth::config::{ServiceConfig, TokenFormat};

use crate::helpers::*;

const SERVICE: &str = "orders";
const SECRET: &str = "orders-secret-0123456789";

async fn app_with(format: TokenFormat) -> TestApp {
    spawn_app_with(Options {
        tweak: Box::new(move |config| {
            config.tokens.format = format;
            config.services = vec![ServiceConfig {
                name: SERVICE.to_owned(),
                secret: Some(SecretString::from(SECRET)),
                secret_file: None,
                secret_env: None,
            }];
        }),
        ..Options::default()
    })
    .await
}

async fn introspect(app: &TestApp, token: &str) -> reqwest::Response {
    app.http
        .post(app.url("/v1/introspect"))
        .basic_auth(SERVICE, Some(SECRET))
        .form(&[("token", token), ("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap()
}

async fn introspected(app: &TestApp, token: &str) -> Value {
    let response = introspect(app, token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

const FORMATS: [TokenFormat; 2] = [TokenFormat::Opaque, TokenFormat::Jwt];

#[tokio::test]
async fn a_live_access_token_introspects_as_active_with_its_identity() {
    for format in FORMATS {
        let app = app_with(format).await;
        let login = app.login("alice").await;
        let access = token(&login, "access_token");
        assert_eq!(access.starts_with("eyJ"), format == TokenFormat::Jwt);
        let body = introspected(&app, &access).await;
        assert_eq!(body["active"], true, "{body}");
        assert_eq!(body["sub"], login["user"]["id"]);
        assert_eq!(body["app_id"], app.app_id);
        assert_eq!(body["client_id"], app.app_id);
        assert_eq!(body["openid"], login["user"]["openid"]);
        assert_eq!(body["unionid"], login["user"]["unionid"]);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["aud"], json!(["wxauth"]));
        assert_eq!(body["iss"], app.addr);
        let now = app.clock_now();
        assert_eq!(body["iat"], now);
        assert_eq!(body["exp"], now + 7200);
        assert!(body["sid"].as_str().is_some_and(|s| !s.is_empty()));

        // JSON is accepted as well as the form RFC 7662 asks for.
        let response = app
            .http
            .post(app.url("/v1/introspect"))
            .basic_auth(SERVICE, Some(SECRET))
            .json(&json!({ "token": access }))
            .send()
            .await
            .unwrap();
        let json_body: Value = response.json().await.unwrap();
        assert_eq!(json_body, body);
    }
}

#[tokio::test]
async fn anything_but_a_live_access_token_is_exactly_inactive() {
    for format in FORMATS {
        let app = app_with(format).await;
        let login = app.login("bob").await;
        let refresh = token(&login, "refresh_token");
        for junk in [
            refresh.as_str(),
            "garbage",
            "",
            "wxa_unknown",
            "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln",
        ] {
            assert_eq!(introspected(&app, junk).await, json!({ "active": false }));
        }

        // Expired.
        app.clock.advance(7201);
        let access = token(&login, "access_token");
        assert_eq!(
            introspected(&app, &access).await,
            json!({ "active": false })
        );

        // Logged out.
        let login = app.login("carol").await;
        let access = token(&login, "access_token");
        assert_eq!(introspected(&app, &access).await["active"], true);
        let out = app.post_authed("/v1/auth/logout", &access, json!({})).await;
        assert_eq!(out.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            introspected(&app, &access).await,
            json!({ "active": false })
        );

        // Revoked by refresh-token reuse.
        let login = app.login("dave").await;
        let access = token(&login, "access_token");
        let refresh = token(&login, "refresh_token");
        for _ in 0..2 {
            app.post("/v1/auth/refresh", json!({ "refresh_token": refresh }))
                .await;
        }
        assert_eq!(
            introspected(&app, &access).await,
            json!({ "active": false })
        );
    }
}

#[tokio::test]
async fn introspection_needs_a_service_credential() {
    let app = app_with(TokenFormat::Opaque).await;
    let access = token(&app.login("erin").await, "access_token");
    let no_auth = app
        .http
        .post(app.url("/v1/introspect"))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        no_auth.headers()["www-authenticate"],
        "Basic realm=\"wxauth\""
    );
    assert_error(no_auth, StatusCode::UNAUTHORIZED, "invalid_client").await;
    for (name, secret) in [(SERVICE, "wrong"), ("payments", SECRET), ("", "")] {
        let response = app
            .http
            .post(app.url("/v1/introspect"))
            .basic_auth(name, Some(secret))
            .form(&[("token", access.as_str())])
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    }
    // A user's own bearer token is no service credential.
    let response = app
        .http
        .post(app.url("/v1/introspect"))
        .bearer_auth(&access)
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    // No token in the body.
    let response = app
        .http
        .post(app.url("/v1/introspect"))
        .basic_auth(SERVICE, Some(SECRET))
        .form(&[("nothing", "here")])
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn introspection_never_touches_the_session() {
    let app = app_with(TokenFormat::Opaque).await;
    let login = app.login("frank").await;
    let access = token(&login, "access_token");
    let before = app.backend.session_last_seen().await;
    app.clock.advance(600);
    for _ in 0..3 {
        assert_eq!(introspected(&app, &access).await["active"], true);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(app.backend.session_last_seen().await, before);
    // A use by the user does touch it (so the check above could fail).
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_ne!(app.backend.session_last_seen().await, before);
}

#[tokio::test]
async fn verify_answers_204_with_identity_headers_or_401_invalid_token() {
    for format in FORMATS {
        let app = app_with(format).await;
        let login = app.login("grace").await;
        let access = token(&login, "access_token");
        for method in [
            reqwest::Method::GET,
            reqwest::Method::POST,
            reqwest::Method::HEAD,
        ] {
            let response = app
                .http
                .request(method.clone(), app.url("/v1/verify"))
                .bearer_auth(&access)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NO_CONTENT, "{method}");
            let h = response.headers();
            assert_eq!(h["x-wxauth-user-id"], login["user"]["id"].as_str().unwrap());
            assert_eq!(h["x-wxauth-app-id"], app.app_id.as_str());
            assert_eq!(
                h["x-wxauth-openid"],
                login["user"]["openid"].as_str().unwrap()
            );
            assert!(h.contains_key("x-wxauth-session-id"));
            assert_eq!(
                h.get("x-wxauth-unionid")
                    .map(|v| v.to_str().unwrap().to_owned()),
                login["user"]["unionid"].as_str().map(str::to_owned)
            );
        }
        // Envoy's ext_authz appends the original path.
        let envoy = app
            .http
            .get(app.url("/v1/verify/api/orders/42"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(envoy.status(), StatusCode::NO_CONTENT);
        let no_token = app.http.get(app.url("/v1/verify")).send().await.unwrap();
        assert_eq!(
            no_token.headers()["www-authenticate"],
            "Bearer realm=\"wxauth\", error=\"invalid_token\""
        );
        assert_error(no_token, StatusCode::UNAUTHORIZED, "unauthorized").await;

        // Revocation takes effect at once.
        let out = app.post_authed("/v1/auth/logout", &access, json!({})).await;
        assert_eq!(out.status(), StatusCode::NO_CONTENT);
        let revoked = app
            .http
            .get(app.url("/v1/verify"))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(
            revoked.headers()["www-authenticate"],
            "Bearer realm=\"wxauth\", error=\"invalid_token\""
        );
        assert_error(revoked, StatusCode::UNAUTHORIZED, "token_revoked").await;
    }
}

#[tokio::test]
async fn jwt_access_tokens_refresh_into_jwts_of_the_same_session() {
    let app = app_with(TokenFormat::Jwt).await;
    let login = app.login("heidi").await;
    let first = introspected(&app, &token(&login, "access_token")).await;
    let response = app
        .post(
            "/v1/auth/refresh",
            json!({ "refresh_token": token(&login, "refresh_token") }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let pair: Value = response.json().await.unwrap();
    let access = token(&pair, "access_token");
    assert!(access.starts_with("eyJ"));
    let second = introspected(&app, &access).await;
    assert_eq!(second["active"], true);
    assert_eq!(second["sid"], first["sid"]);
    assert_eq!(second["sub"], first["sub"]);
    assert_eq!(app.me(&access).await.status(), StatusCode::OK);
}
