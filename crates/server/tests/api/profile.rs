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
    // Stored as decoded and encoded again: the same pixels.
    let served = image::load_from_memory(&served.bytes().await.unwrap()).unwrap();
    let sent = image::load_from_memory(PNG).unwrap();
    assert_eq!(served.to_rgba8(), sent.to_rgba8());

    // A raw body with an image type works too, and the avatar it replaces is deleted.
    let response = upload(&app, &access, "image/png", PNG.to_vec()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let again: Value = response.json().await.unwrap();
    assert_ne!(again["avatar_url"], url.as_str());
    let replaced = app.http.get(&url).send().await.unwrap();
    assert_error(replaced, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(avatar_files(&app), 1);
    // So does one set by URL.
    let patched = app
        .patch_authed(
            "/v1/me",
            &access,
            json!({ "avatar_url": "https://example.com/a.png" }),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(avatar_files(&app), 0);

    let missing = app
        .http
        .get(app.url("/media/avatars/nothing.png"))
        .send()
        .await
        .unwrap();
    assert_error(missing, StatusCode::NOT_FOUND, "not_found").await;
}

fn avatar_files(app: &TestApp) -> usize {
    std::fs::read_dir(app.backend.dir().join("media/avatars")).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.'))
        })
        .count()
    })
}

/// An image of `width` x `height` in `format`, with a gradient so that it is not trivial.
fn encoded(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let pixels = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(pixels)
        .write_to(&mut out, format)
        .unwrap();
    out.into_inner()
}

/// A JPEG carrying an EXIF segment (orientation 1, then a GPS note after the directory), the
/// way phone photos carry their position.
fn jpeg_with_exif(note: &str) -> Vec<u8> {
    let jpeg = encoded(32, 24, image::ImageFormat::Jpeg);
    let mut payload =
        b"Exif\0\0II\x2a\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x01\0\0\0\0\0\0\0".to_vec();
    payload.extend_from_slice(note.as_bytes());
    let length = u16::try_from(payload.len() + 2).unwrap();
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

async fn served(app: &TestApp, response: reqwest::Response) -> (String, Vec<u8>) {
    assert_eq!(response.status(), StatusCode::OK);
    let me: Value = response.json().await.unwrap();
    let url = me["avatar_url"].as_str().unwrap().to_owned();
    let bytes = app
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    (url, bytes.to_vec())
}

#[tokio::test]
async fn avatars_are_decoded_and_encoded_again_keeping_nothing_but_pixels() {
    let app = spawn_app().await;
    let login = app.login("pia").await;
    let access = token(&login, "access_token");

    // A PNG with a page appended: the page does not survive.
    let mut polyglot = encoded(16, 16, image::ImageFormat::Png);
    polyglot.extend_from_slice(b"<html><script>alert(document.cookie)</script></html>");
    let (url, bytes) = served(&app, upload(&app, &access, "image/png", polyglot).await).await;
    assert!(url.ends_with(".png"), "{url}");
    assert!(!String::from_utf8_lossy(&bytes).contains("<script"));
    assert_eq!(image::load_from_memory(&bytes).unwrap().width(), 16);

    // A phone photo's metadata does not survive either.
    let photo = jpeg_with_exif("GPS 22.5431N 114.0579E");
    assert!(
        image::load_from_memory(&photo).is_ok(),
        "the fixture is a valid JPEG"
    );
    let (url, bytes) = served(&app, upload(&app, &access, "image/jpeg", photo).await).await;
    assert!(url.ends_with(".jpg"), "{url}");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains("GPS 22.5431N") && !text.contains("Exif"),
        "{text}"
    );

    // WebP is stored as PNG; a large image is scaled down to 640 pixels a side.
    let webp = encoded(20, 10, image::ImageFormat::WebP);
    let (url, _) = served(&app, upload(&app, &access, "image/webp", webp).await).await;
    assert!(url.ends_with(".png"), "{url}");
    let wide = encoded(2000, 100, image::ImageFormat::Png);
    let (_, bytes) = served(&app, upload(&app, &access, "image/png", wide).await).await;
    let stored = image::load_from_memory(&bytes).unwrap();
    assert_eq!((stored.width(), stored.height()), (640, 32));
    assert_eq!(avatar_files(&app), 1, "each upload replaced the one before");

    // A truncated image and one too large to decode are refused, and nothing is stored.
    let whole = encoded(64, 64, image::ImageFormat::Png);
    let truncated = whole[..whole.len() / 2].to_vec();
    let response = upload(&app, &access, "image/png", truncated).await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_image").await;
    let enormous = encoded(5000, 1, image::ImageFormat::Png);
    let response = upload(&app, &access, "image/png", enormous).await;
    let body = assert_error(response, StatusCode::BAD_REQUEST, "invalid_image").await;
    assert!(body.to_string().contains("4096"), "{body}");
    assert_eq!(avatar_files(&app), 1);
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
