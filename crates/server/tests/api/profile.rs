//! The modern profile: fields the user sets, and the avatar upload.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// A real 1x1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0xF8, 0xCF, 0xC0, 0xF0,
    0x1F, 0x00, 0x05, 0x00, 0x01, 0xFF, 0x89, 0x99, 0x3D, 0x1D, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

/// A multipart body the way `wx.uploadFile` sends one.
fn multipart(field: &str, filename: &str, content_type: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----wxauthTestBoundary7MA4YWxkTrZu0gW";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n\
         Content-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(
    app: &TestApp,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    app.http
        .post(app.url("/v1/me/avatar"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_profile_fields_a_user_sets_are_stored_with_emoji_intact() {
    let app = spawn_app().await;
    let login = app.login("amy").await;
    let access = token(&login, "access_token");
    let response = app
        .patch_authed(
            "/v1/me",
            &access,
            json!({ "nickname": "小明😀🎉", "gender": 2, "avatar_url": "https://example.com/a.png",
                    "extra": { "grade": 3, "tags": ["vip"] } }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["nickname"], "小明😀🎉");
    assert_eq!(me["gender"], 2);
    assert_eq!(me["avatar_url"], "https://example.com/a.png");
    assert_eq!(me["extra"], json!({ "grade": 3, "tags": ["vip"] }));

    // wx.request cannot send PATCH: POST /v1/me does the same.
    let response = app
        .post_authed("/v1/me", &access, json!({ "nickname": "Amy" }))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.unwrap();
    assert_eq!(
        (me["nickname"].as_str(), me["gender"].as_i64()),
        (Some("Amy"), Some(2))
    );
}

#[tokio::test]
async fn bad_profile_fields_are_refused_and_nothing_is_changed() {
    let app = spawn_app().await;
    let login = app.login("ben").await;
    let access = token(&login, "access_token");
    let bad = [
        json!({ "nickname": "" }),
        json!({ "nickname": "   " }),
        json!({ "nickname": "x".repeat(65) }),
        json!({ "nickname": "a\u{0007}b" }),
        json!({ "gender": 3 }),
        json!({ "gender": "male" }),
        json!({ "avatar_url": "ftp://example.com/a.png" }),
        json!({ "avatar_url": "not a url" }),
        json!({ "extra": [1, 2] }),
        json!({ "extra": { "blob": "x".repeat(4100) } }),
        json!({ "nickname": "ok", "favourite_colour": "blue" }),
    ];
    for body in bad {
        let response = app.patch_authed("/v1/me", &access, body.clone()).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["nickname"], Value::Null);
    let ok = app
        .patch_authed("/v1/me", &access, json!({ "nickname": "x".repeat(64) }))
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_uploaded_png_becomes_the_avatar_and_is_served_back() {
    let app = spawn_app().await;
    let login = app.login("cat").await;
    let access = token(&login, "access_token");
    let (content_type, body) = multipart("file", "tmp_abc.png", "image/png", PNG);
    let response = upload(&app, &access, &content_type, body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.unwrap();
    let url = me["avatar_url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("{}/media/avatars/", app.addr)),
        "{url}"
    );
    assert!(url.ends_with(".png"));
    let served = app.http.get(&url).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.headers()["content-type"], "image/png");
    assert_eq!(served.bytes().await.unwrap().as_ref(), PNG);

    // A raw body with an image type works too.
    let response = upload(&app, &access, "image/png", PNG.to_vec()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let again: Value = response.json().await.unwrap();
    assert_ne!(again["avatar_url"], url.as_str());

    let missing = app
        .http
        .get(app.url("/media/avatars/nothing.png"))
        .send()
        .await
        .unwrap();
    assert_error(missing, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_renamed_text_file_an_oversized_image_and_other_types_are_refused() {
    let app = spawn_app_with(Options {
        tweak: Box::new(|config| config.storage.avatar_max_bytes = 1000),
        ..Options::default()
    })
    .await;
    let login = app.login("dan").await;
    let access = token(&login, "access_token");

    let (content_type, body) = multipart("file", "photo.png", "image/png", b"hello, I am text");
    let response = upload(&app, &access, &content_type, body).await;
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_image",
    )
    .await;

    let mut big = PNG.to_vec();
    big.resize(1500, 0);
    let (content_type, body) = multipart("file", "big.png", "image/png", &big);
    let response = upload(&app, &access, &content_type, body).await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let mut huge = PNG.to_vec();
    huge.resize(200_000, 0);
    let response = upload(&app, &access, "image/png", huge).await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    let response = upload(&app, &access, "text/plain", b"hello".to_vec()).await;
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let (content_type, body) = multipart("photo", "a.png", "image/png", PNG);
    let response = upload(&app, &access, &content_type, body).await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;

    let me: Value = app.me(&access).await.json().await.unwrap();
    assert_eq!(me["avatar_url"], Value::Null);
    assert_eq!(
        std::fs::read_dir(app.backend.dir().join("media/avatars")).map_or(0, |d| d.count()),
        0,
        "nothing half-written"
    );
}
