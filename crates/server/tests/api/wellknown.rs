//! The well-known documents other services trust tokens by: the JWK Set and the RFC 8414
//! metadata, with keys that survive restarts and are shared by every instance.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::{Value, json};
use wxauth::jwt::{Claims, JwtAlgorithm, Subject};

use crate::helpers::*;

async fn get(app: &TestApp, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = app.http.get(app.url(path)).send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

async fn jwks(app: &TestApp) -> Value {
    let (status, _, body) = get(app, "/.well-known/jwks.json").await;
    assert_eq!(status, StatusCode::OK);
    body
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn sign(app: &TestApp) -> (Claims, String) {
    let keys = &app.state.keys;
    let claims = keys.claims(
        Subject {
            user_id: "user-1",
            session_id: "sess-1",
            app_id: &app.app_id,
            openid: "o-1",
            unionid: None,
        },
        app.clock_now(),
    );
    let token = keys.sign(&claims).unwrap();
    (claims, token)
}

/// Verifies `token` the way another service would: with the published JWK Set alone.
fn verify_with(jwks: &Value, token: &str, issuer: &str) -> Result<Claims, String> {
    let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .ok_or("no published key has the token's kid")?;
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&["wxauth"]);
    jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|err| err.to_string())
}

#[tokio::test]
async fn the_jwks_publishes_the_signing_key_for_anyone_to_cache() {
    let app = spawn_app().await;
    let (status, headers, body) = get(&app, "/.well-known/jwks.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["cache-control"], "public, max-age=300");
    assert_eq!(headers["content-type"], "application/json");
    let keys = body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{body}");
    let key = &keys[0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["kid"], app.state.keys.current_kid());
    assert!(key.get("d").is_none(), "no private part: {key}");

    let (claims, token) = sign(&app);
    assert_eq!(verify_with(&body, &token, &app.addr), Ok(claims));
}

#[tokio::test]
async fn the_metadata_names_the_issuer_the_keys_and_the_introspection_endpoint() {
    let app = spawn_app().await;
    let (status, headers, body) = get(&app, "/.well-known/oauth-authorization-server").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["cache-control"], "public, max-age=300");
    assert_eq!(
        body,
        json!({
            "issuer": app.addr,
            "jwks_uri": format!("{}/.well-known/jwks.json", app.addr),
            "introspection_endpoint": format!("{}/v1/introspect", app.addr),
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
            "response_types_supported": [],
        })
    );
    // The jwks_uri it gives is where the keys are.
    let published: Value = app
        .http
        .get(body["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(kids(&published), [app.state.keys.current_kid()]);
}

#[tokio::test]
async fn a_configured_issuer_public_url_and_es256_show_in_both_documents() {
    let app = spawn_app_with(Options {
        tweak: Box::new(|config| {
            config.server.public_url = Some("https://id.example.com/wxauth/".parse().unwrap());
            config.tokens.issuer = Some("https://id.example.com".to_owned());
            config.tokens.jwt_algorithm = JwtAlgorithm::ES256;
        }),
        ..Options::default()
    })
    .await;
    let (_, _, metadata) = get(&app, "/.well-known/oauth-authorization-server").await;
    assert_eq!(metadata["issuer"], "https://id.example.com");
    assert_eq!(
        metadata["jwks_uri"],
        "https://id.example.com/wxauth/.well-known/jwks.json"
    );
    assert_eq!(
        metadata["introspection_endpoint"],
        "https://id.example.com/wxauth/v1/introspect"
    );
    let published = jwks(&app).await;
    let key = &published["keys"][0];
    assert_eq!(
        (&key["kty"], &key["crv"], &key["alg"]),
        (&json!("EC"), &json!("P-256"), &json!("ES256"))
    );
    let (claims, token) = sign(&app);
    assert_eq!(
        verify_with(&published, &token, "https://id.example.com"),
        Ok(claims)
    );
}

#[tokio::test]
async fn a_restart_and_a_second_instance_publish_and_sign_with_the_same_key() {
    // Instances behind one public URL issue tokens under one issuer.
    let app = spawn_app_with(Options {
        tweak: Box::new(|config| {
            config.server.public_url = Some("https://id.example.com".parse().unwrap());
        }),
        ..Options::default()
    })
    .await;
    let before = jwks(&app).await;
    let sibling = app.sibling().await;
    assert_eq!(jwks(&sibling).await, before);
    let (claims, token) = sign(&sibling);
    assert_eq!(
        app.state.keys.verify(&token, app.clock_now()).await,
        Ok(claims)
    );
    drop(sibling);
    let app = app.restart().await;
    assert_eq!(jwks(&app).await, before);
}

#[tokio::test]
async fn after_a_rotation_both_keys_are_published_newest_first() {
    let app = spawn_app().await;
    let old_kid = app.state.keys.current_kid();
    let (old_claims, old_token) = sign(&app);
    let new_kid = app.state.keys.rotate().await.unwrap();
    let published = jwks(&app).await;
    assert_eq!(kids(&published), [new_kid.clone(), old_kid]);
    let (claims, token) = sign(&app);
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid,
        Some(new_kid)
    );
    assert_eq!(verify_with(&published, &token, &app.addr), Ok(claims));
    assert_eq!(
        verify_with(&published, &old_token, &app.addr),
        Ok(old_claims)
    );
}

#[tokio::test]
async fn the_well_known_documents_are_read_only() {
    let app = spawn_app().await;
    for path in [
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
    ] {
        let response = app.post(path, json!({})).await;
        assert_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
    }
}

#[tokio::test]
async fn instances_starting_at_the_same_moment_settle_on_one_signing_key() {
    use std::sync::Arc;

    use wxauth::clock::SystemClock;
    use wxauth::config::Config;
    use wxauth::jwt::{JwtSettings, KeyRing};
    use wxauth::seal::DataKey;
    use wxauth::store::signing_keys::SigningKeyStore;
    use wxauth::store::sql::SqlStore;

    let backend = TestBackend::from_env().await;
    let mut config = Config::default();
    backend.apply(&mut config);
    // One pool per instance, all migrated before the race starts.
    let mut stores = Vec::new();
    for _ in 0..4 {
        let sql = SqlStore::connect(&config.database).await.unwrap();
        stores.push(SigningKeyStore::new(&sql));
    }
    let starts: Vec<_> = stores
        .iter()
        .map(|store| {
            tokio::spawn(KeyRing::load(
                store.clone(),
                DataKey::new([3; 32]),
                JwtSettings {
                    issuer: "https://id.example.com".to_owned(),
                    audience: vec!["wxauth".to_owned()],
                    algorithm: JwtAlgorithm::EdDSA,
                    access_ttl: 600,
                },
                Arc::new(SystemClock),
            ))
        })
        .collect();
    let mut kids = std::collections::HashSet::new();
    for start in starts {
        kids.insert(start.await.unwrap().unwrap().current_kid());
    }
    assert_eq!(kids.len(), 1);
    assert_eq!(stores[0].all().await.unwrap().len(), 1);
}
