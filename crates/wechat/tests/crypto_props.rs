//! Property tests of the open-data crypto: what WeChat encrypts always comes back, and nothing
//! an attacker or a broken client sends makes decryption panic or hand back the original data
//! under the wrong key, iv or ciphertext.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions fail loudly on purpose"
)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use wxauth_wechat::crypto::{self, WatermarkCheck};
use wxauth_wechat::{AppId, SessionKey};

const APP_ID: &str = "wx4f4bc4dec97d474b";

/// JSON without floats: serde_json does not promise that floats survive a text round trip,
/// and WeChat's open data has none.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,12}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// An object like WeChat's open data: arbitrary fields plus a watermark for [`APP_ID`].
fn open_data() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map("\\PC{0,12}", json_value(), 0..8),
        any::<i64>(),
    )
        .prop_map(|(fields, timestamp)| {
            let mut object: Map<String, Value> = fields.into_iter().collect();
            object.insert(
                "watermark".into(),
                json!({ "appid": APP_ID, "timestamp": timestamp }),
            );
            Value::Object(object)
        })
}

fn app() -> AppId {
    AppId::parse(APP_ID).unwrap()
}

proptest! {
    #[test]
    fn any_json_object_with_a_watermark_survives_encryption_and_decryption(
        value in open_data(),
        key in any::<[u8; 16]>(),
        iv in any::<[u8; 16]>(),
    ) {
        let key = SessionKey::from_bytes(key);
        let data = crypto::encrypt(&key, &iv, &serde_json::to_vec(&value).unwrap());
        let app = app();
        let decrypted =
            crypto::decrypt_value(&key, &data, &crypto::encode_iv(&iv), &WatermarkCheck::new(&app));
        prop_assert_eq!(decrypted, Ok(value));
    }

    #[test]
    fn flipping_any_ciphertext_bit_never_gives_back_the_original(
        value in open_data(),
        key in any::<[u8; 16]>(),
        iv in any::<[u8; 16]>(),
        position in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let key = SessionKey::from_bytes(key);
        let plaintext = serde_json::to_vec(&value).unwrap();
        let mut ciphertext = BASE64.decode(crypto::encrypt(&key, &iv, &plaintext)).unwrap();
        let position = position.index(ciphertext.len());
        ciphertext[position] ^= mask;
        let tampered = BASE64.encode(&ciphertext);
        let iv = crypto::encode_iv(&iv);

        if let Ok(bytes) = crypto::decrypt_bytes(&key, &tampered, &iv) {
            prop_assert_ne!(bytes, plaintext);
        }
        let app = app();
        if let Ok(decrypted) = crypto::decrypt_value(&key, &tampered, &iv, &WatermarkCheck::new(&app)) {
            prop_assert_ne!(decrypted, value);
        }
    }

    #[test]
    fn a_tampered_iv_never_gives_back_the_original(
        value in open_data(),
        key in any::<[u8; 16]>(),
        iv in any::<[u8; 16]>(),
        position in 0usize..16,
        mask in 1u8..=255,
    ) {
        let key = SessionKey::from_bytes(key);
        let plaintext = serde_json::to_vec(&value).unwrap();
        let data = crypto::encrypt(&key, &iv, &plaintext);
        let mut tampered_iv = iv;
        tampered_iv[position] ^= mask;
        let tampered_iv = crypto::encode_iv(&tampered_iv);

        // CBC: a different iv changes only the first block, so the padding may well still be
        // valid; the bytes, though, can never be the original ones.
        if let Ok(bytes) = crypto::decrypt_bytes(&key, &data, &tampered_iv) {
            prop_assert_ne!(bytes, plaintext);
        }
        let app = app();
        if let Ok(decrypted) = crypto::decrypt_value(&key, &data, &tampered_iv, &WatermarkCheck::new(&app)) {
            prop_assert_ne!(decrypted, value);
        }
    }

    #[test]
    fn the_wrong_session_key_never_gives_back_the_original(
        value in open_data(),
        key in any::<[u8; 16]>(),
        wrong_key in any::<[u8; 16]>(),
        iv in any::<[u8; 16]>(),
    ) {
        prop_assume!(key != wrong_key);
        let plaintext = serde_json::to_vec(&value).unwrap();
        let data = crypto::encrypt(&SessionKey::from_bytes(key), &iv, &plaintext);
        let wrong_key = SessionKey::from_bytes(wrong_key);
        let iv = crypto::encode_iv(&iv);

        if let Ok(bytes) = crypto::decrypt_bytes(&wrong_key, &data, &iv) {
            prop_assert_ne!(bytes, plaintext);
        }
        let app = app();
        prop_assert!(
            crypto::decrypt_value(&wrong_key, &data, &iv, &WatermarkCheck::new(&app)) != Ok(value)
        );
    }

    #[test]
    fn arbitrary_strings_as_encrypted_data_and_iv_never_panic(
        encrypted_data in "\\PC{0,200}",
        iv in "\\PC{0,40}",
        key in any::<[u8; 16]>(),
    ) {
        let key = SessionKey::from_bytes(key);
        let app = app();
        let check = WatermarkCheck::new(&app);
        let _ = crypto::decrypt_bytes(&key, &encrypted_data, &iv);
        let _ = crypto::decrypt_value(&key, &encrypted_data, &iv, &check);
        let _ = crypto::decrypt_user_info(&key, &encrypted_data, &iv, &check);
        let _ = crypto::decrypt_phone_info(&key, &encrypted_data, &iv, &check);
    }

    #[test]
    fn arbitrary_base64_as_encrypted_data_and_iv_never_panics(
        ciphertext in prop::collection::vec(any::<u8>(), 0..256),
        iv in prop::collection::vec(any::<u8>(), 0..32),
        key in any::<[u8; 16]>(),
    ) {
        // Valid base64 gets past the first checks, so this reaches the cipher and the padding.
        let key = SessionKey::from_bytes(key);
        let app = app();
        let check = WatermarkCheck::new(&app).max_age(0, std::time::Duration::from_secs(60));
        let data = BASE64.encode(&ciphertext);
        let iv = BASE64.encode(&iv);
        let _ = crypto::decrypt_value(&key, &data, &iv, &check);
        let _ = crypto::decrypt_user_info(&key, &data, &iv, &check);
    }

    #[test]
    fn arbitrary_strings_as_a_session_key_never_panic(encoded in "\\PC{0,64}") {
        if let Ok(key) = SessionKey::parse(encoded.as_str()) {
            prop_assert_eq!(key.expose_secret(), encoded.as_str());
        }
    }
}
