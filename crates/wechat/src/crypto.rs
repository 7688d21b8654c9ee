//! Open-data crypto: WeChat's `WXBizDataCrypt` done strictly, plus the two signatures.
//!
//! Decryption checks everything the tutorials skip: base64 of each part, a 16-byte key and iv,
//! a ciphertext whose length is a non-zero multiple of 16, strict PKCS#7 padding, UTF-8 JSON, a
//! watermark naming this app, and (when the caller gives a clock and a maximum) its age.
//! Every failure before the JSON is parsed is the same [`DecryptError::Decrypt`], so a caller
//! cannot be turned into a padding oracle by answering differently.

use std::time::Duration;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut as _, BlockEncryptMut as _, KeyIvInit as _};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac as _};
use serde::de::DeserializeOwned;
use sha1::{Digest as _, Sha1};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::types::{AppId, PhoneInfo, SessionKey, UserInfo};

type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;
type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;

/// How far into the future a watermark may be stamped (clock skew between WeChat and us).
const MAX_FUTURE_SKEW_SECS: i64 = 300;

/// Why open data was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// The data could not be decrypted to JSON: bad base64, wrong key or iv length, bad length,
    /// bad padding, not UTF-8 or not JSON. Usually the session_key has rotated.
    #[error("the data could not be decrypted with this session_key")]
    Decrypt,
    /// The watermark is missing or names another app.
    #[error("the data's watermark does not name this app")]
    WatermarkMismatch,
    /// The watermark is older than allowed (or stamped too far in the future).
    #[error("the data is {age_secs} s old, older than allowed")]
    Expired {
        /// Age in seconds at the caller's clock (negative when stamped in the future).
        age_secs: i64,
    },
    /// The JSON decrypted but does not have the expected fields.
    #[error("the decrypted data does not have the expected shape")]
    Malformed,
}

/// What the watermark must satisfy.
///
/// ```
/// use std::time::Duration;
/// use wxauth_wechat::{AppId, crypto::WatermarkCheck};
/// let app = AppId::parse("wx4f4bc4dec97d474b").unwrap();
/// let check = WatermarkCheck::new(&app).max_age(1_700_000_000, Duration::from_secs(600));
/// assert_eq!(check.max_age, Some(Duration::from_secs(600)));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct WatermarkCheck<'a> {
    /// The app the data must be for.
    pub app_id: &'a AppId,
    /// The caller's clock, in Unix seconds.
    pub now_unix: i64,
    /// The oldest acceptable watermark; `None` turns the freshness check off.
    pub max_age: Option<Duration>,
}

impl<'a> WatermarkCheck<'a> {
    /// Checks the appid only.
    pub fn new(app_id: &'a AppId) -> Self {
        Self {
            app_id,
            now_unix: 0,
            max_age: None,
        }
    }

    /// Also checks freshness: the watermark must be at most `max_age` older than `now_unix`.
    pub fn max_age(self, now_unix: i64, max_age: Duration) -> Self {
        Self {
            now_unix,
            max_age: Some(max_age),
            ..self
        }
    }

    fn verify(&self, watermark: &serde_json::Value) -> Result<(), DecryptError> {
        let appid = watermark.get("appid").and_then(serde_json::Value::as_str);
        if appid != Some(self.app_id.as_str()) {
            return Err(DecryptError::WatermarkMismatch);
        }
        if let Some(max_age) = self.max_age {
            let timestamp = watermark
                .get("timestamp")
                .and_then(serde_json::Value::as_i64)
                .ok_or(DecryptError::Malformed)?;
            let age_secs = self.now_unix.saturating_sub(timestamp);
            let max = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
            if age_secs > max || age_secs < -MAX_FUTURE_SKEW_SECS {
                return Err(DecryptError::Expired { age_secs });
            }
        }
        Ok(())
    }
}

/// Decrypts to the raw plaintext bytes, with strict PKCS#7. Every failure is
/// [`DecryptError::Decrypt`].
///
/// ```
/// use wxauth_wechat::{SessionKey, crypto};
/// let key = SessionKey::generate();
/// let iv = [7u8; 16];
/// let data = crypto::encrypt(&key, &iv, b"hello");
/// let plain = crypto::decrypt_bytes(&key, &data, &crypto::encode_iv(&iv)).unwrap();
/// assert_eq!(plain, b"hello");
/// ```
pub fn decrypt_bytes(
    session_key: &SessionKey,
    encrypted_data: &str,
    iv: &str,
) -> Result<Vec<u8>, DecryptError> {
    let iv = BASE64
        .decode(iv.as_bytes())
        .map_err(|_| DecryptError::Decrypt)?;
    let iv: [u8; 16] = iv.try_into().map_err(|_| DecryptError::Decrypt)?;
    let ciphertext = BASE64
        .decode(encrypted_data.as_bytes())
        .map_err(|_| DecryptError::Decrypt)?;
    if ciphertext.is_empty() || ciphertext.len() % 16 != 0 {
        return Err(DecryptError::Decrypt);
    }
    Aes128CbcDec::new(session_key.bytes().into(), &iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(&ciphertext)
        .map_err(|_| DecryptError::Decrypt)
}

/// Decrypts open data to a JSON value and checks its watermark.
///
/// ```
/// use wxauth_wechat::{AppId, SessionKey, crypto};
/// let app = AppId::parse("wxdemo").unwrap();
/// let key = SessionKey::generate();
/// let json = br#"{"x":1,"watermark":{"appid":"wxdemo","timestamp":1}}"#;
/// let data = crypto::encrypt(&key, &[0; 16], json);
/// let value = crypto::decrypt_value(&key, &data, &crypto::encode_iv(&[0; 16]),
///     &crypto::WatermarkCheck::new(&app)).unwrap();
/// assert_eq!(value["x"], 1);
/// ```
pub fn decrypt_value(
    session_key: &SessionKey,
    encrypted_data: &str,
    iv: &str,
    check: &WatermarkCheck<'_>,
) -> Result<serde_json::Value, DecryptError> {
    let plaintext = decrypt_bytes(session_key, encrypted_data, iv)?;
    let value: serde_json::Value =
        serde_json::from_slice(&plaintext).map_err(|_| DecryptError::Decrypt)?;
    let watermark = value
        .get("watermark")
        .ok_or(DecryptError::WatermarkMismatch)?;
    check.verify(watermark)?;
    Ok(value)
}

/// Decrypts open data into a typed value after checking its watermark.
///
/// ```
/// use wxauth_wechat::{AppId, SessionKey, PhoneInfo, crypto};
/// let app = AppId::parse("wxdemo").unwrap();
/// let key = SessionKey::generate();
/// let json = br#"{"phoneNumber":"13800000000","purePhoneNumber":"13800000000","countryCode":"86","watermark":{"appid":"wxdemo","timestamp":1}}"#;
/// let data = crypto::encrypt(&key, &[1; 16], json);
/// let phone: PhoneInfo = crypto::decrypt(&key, &data, &crypto::encode_iv(&[1; 16]),
///     &crypto::WatermarkCheck::new(&app)).unwrap();
/// assert_eq!(phone.country_code, "86");
/// ```
pub fn decrypt<T: DeserializeOwned>(
    session_key: &SessionKey,
    encrypted_data: &str,
    iv: &str,
    check: &WatermarkCheck<'_>,
) -> Result<T, DecryptError> {
    let value = decrypt_value(session_key, encrypted_data, iv, check)?;
    serde_json::from_value(value).map_err(|_| DecryptError::Malformed)
}

/// Decrypts `wx.getUserInfo`'s encryptedData.
///
/// ```
/// use wxauth_wechat::{AppId, SessionKey, crypto};
/// let app = AppId::parse("wxdemo").unwrap();
/// let key = SessionKey::generate();
/// let json = r#"{"nickName":"小明😀","watermark":{"appid":"wxdemo","timestamp":1}}"#;
/// let data = crypto::encrypt(&key, &[2; 16], json.as_bytes());
/// let info = crypto::decrypt_user_info(&key, &data, &crypto::encode_iv(&[2; 16]),
///     &crypto::WatermarkCheck::new(&app)).unwrap();
/// assert_eq!(info.nick_name.as_deref(), Some("小明😀"));
/// ```
pub fn decrypt_user_info(
    session_key: &SessionKey,
    encrypted_data: &str,
    iv: &str,
    check: &WatermarkCheck<'_>,
) -> Result<UserInfo, DecryptError> {
    decrypt(session_key, encrypted_data, iv, check)
}

/// Decrypts the legacy `getPhoneNumber` encryptedData.
///
/// ```
/// use wxauth_wechat::{AppId, SessionKey, crypto};
/// let app = AppId::parse("wxdemo").unwrap();
/// let key = SessionKey::generate();
/// let json = br#"{"phoneNumber":"13800000000","purePhoneNumber":"13800000000","countryCode":"86","watermark":{"appid":"wxdemo","timestamp":1}}"#;
/// let data = crypto::encrypt(&key, &[3; 16], json);
/// let phone = crypto::decrypt_phone_info(&key, &data, &crypto::encode_iv(&[3; 16]),
///     &crypto::WatermarkCheck::new(&app)).unwrap();
/// assert_eq!(phone.pure_phone_number, "13800000000");
/// ```
pub fn decrypt_phone_info(
    session_key: &SessionKey,
    encrypted_data: &str,
    iv: &str,
    check: &WatermarkCheck<'_>,
) -> Result<PhoneInfo, DecryptError> {
    decrypt(session_key, encrypted_data, iv, check)
}

/// Encrypts `plaintext` the way WeChat does (AES-128-CBC, PKCS#7), returning base64.
/// For the simulator and tests.
///
/// ```
/// use wxauth_wechat::{SessionKey, crypto};
/// let key = SessionKey::generate();
/// let data = crypto::encrypt(&key, &[0; 16], b"0123456789abcdef");
/// assert_eq!(data.len(), 44); // 32 bytes: a full block of padding is added
/// ```
pub fn encrypt(session_key: &SessionKey, iv: &[u8; 16], plaintext: &[u8]) -> String {
    let ciphertext = Aes128CbcEnc::new(session_key.bytes().into(), iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    BASE64.encode(ciphertext)
}

/// Base64 of an iv, as WeChat sends it.
///
/// ```
/// assert_eq!(wxauth_wechat::crypto::encode_iv(&[0; 16]), "AAAAAAAAAAAAAAAAAAAAAA==");
/// ```
pub fn encode_iv(iv: &[u8; 16]) -> String {
    BASE64.encode(iv)
}

/// The signature of `rawData`: `hex(sha1(rawData + session_key))`, with the session_key in its
/// base64 form.
///
/// ```
/// use wxauth_wechat::{SessionKey, crypto};
/// let key = SessionKey::parse("HyVFkGl5F5OQWJZZaNzBBg==").unwrap();
/// assert_eq!(crypto::raw_data_signature("{}", &key).len(), 40);
/// ```
pub fn raw_data_signature(raw_data: &str, session_key: &SessionKey) -> String {
    let mut hasher = Sha1::new();
    hasher.update(raw_data.as_bytes());
    hasher.update(session_key.expose_secret().as_bytes());
    hex::encode(hasher.finalize())
}

/// Checks a `rawData` signature in constant time (hex, either case).
///
/// ```
/// use wxauth_wechat::{SessionKey, crypto};
/// let key = SessionKey::generate();
/// let sig = crypto::raw_data_signature("{\"nickName\":\"Band\"}", &key);
/// assert!(crypto::verify_raw_data_signature("{\"nickName\":\"Band\"}", &sig, &key));
/// assert!(!crypto::verify_raw_data_signature("{\"nickName\":\"Bond\"}", &sig, &key));
/// ```
pub fn verify_raw_data_signature(
    raw_data: &str,
    signature: &str,
    session_key: &SessionKey,
) -> bool {
    let expected = raw_data_signature(raw_data, session_key);
    let given = signature.to_ascii_lowercase();
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// The signature `checksession` and `resetusersessionkey` expect:
/// `hex(hmac_sha256(key = the session_key's base64 string, message))`. WeChat signs the empty
/// message for these calls.
///
/// ```
/// use wxauth_wechat::{SessionKey, crypto};
/// let key = SessionKey::parse("o0q0otL8aEzpcZL/FT9WsQ==").unwrap();
/// assert_eq!(
///     crypto::session_key_signature(&key, br#"{"foo":"bar"}"#),
///     "654571f79995b2ce1e149e53c0a33dc39c0a74090db514261454e8dbe432aa0b",
/// );
/// ```
pub fn session_key_signature(session_key: &SessionKey, message: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        <Hmac<Sha256> as hmac::Mac>::new_from_slice(session_key.expose_secret().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// WeChat's published WXBizDataCrypt sample.
    const SAMPLE_APPID: &str = "wx4f4bc4dec97d474b";
    const SAMPLE_SESSION_KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
    const SAMPLE_IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";
    const SAMPLE_ENCRYPTED: &str = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==";
    const SAMPLE_UNIONID: &str = "ocMvos6NjeKLIBqg5Mr9QjxrP1FA";

    fn sample_key() -> SessionKey {
        SessionKey::parse(SAMPLE_SESSION_KEY).unwrap()
    }

    #[test]
    fn wechats_published_sample_decrypts_to_band_in_guangzhou() {
        let app = AppId::parse(SAMPLE_APPID).unwrap();
        let check = WatermarkCheck::new(&app);
        let info = decrypt_user_info(&sample_key(), SAMPLE_ENCRYPTED, SAMPLE_IV, &check).unwrap();
        assert_eq!(info.nick_name.as_deref(), Some("Band"));
        assert_eq!(info.city.as_deref(), Some("Guangzhou"));
        assert_eq!(
            info.open_id.as_deref(),
            Some("oGZUI0egBJY1zhBYw2KhdUfwVJJE")
        );
        assert_eq!(info.union_id.as_deref(), Some(SAMPLE_UNIONID));
        assert_eq!(info.watermark.timestamp, 1_477_314_187);
        assert_eq!(info.watermark.appid, SAMPLE_APPID);
    }

    #[test]
    fn the_sample_is_refused_for_another_app() {
        let app = AppId::parse("wx0000000000000000").unwrap();
        let err = decrypt_user_info(
            &sample_key(),
            SAMPLE_ENCRYPTED,
            SAMPLE_IV,
            &WatermarkCheck::new(&app),
        )
        .unwrap_err();
        assert_eq!(err, DecryptError::WatermarkMismatch);
    }

    #[test]
    fn the_sample_is_stale_ten_minutes_after_its_timestamp() {
        let app = AppId::parse(SAMPLE_APPID).unwrap();
        let fresh =
            WatermarkCheck::new(&app).max_age(1_477_314_187 + 599, Duration::from_secs(600));
        assert!(decrypt_user_info(&sample_key(), SAMPLE_ENCRYPTED, SAMPLE_IV, &fresh).is_ok());
        let stale =
            WatermarkCheck::new(&app).max_age(1_477_314_187 + 601, Duration::from_secs(600));
        assert_eq!(
            decrypt_user_info(&sample_key(), SAMPLE_ENCRYPTED, SAMPLE_IV, &stale).unwrap_err(),
            DecryptError::Expired { age_secs: 601 }
        );
    }

    #[test]
    fn wechats_checksession_hmac_example_matches() {
        let key = SessionKey::parse("o0q0otL8aEzpcZL/FT9WsQ==").unwrap();
        assert_eq!(
            session_key_signature(&key, br#"{"foo":"bar"}"#),
            "654571f79995b2ce1e149e53c0a33dc39c0a74090db514261454e8dbe432aa0b"
        );
    }

    #[test]
    fn wechats_raw_data_signature_example_matches() {
        // WeChat's documented rawData example for session_key HyVFkGl5F5OQWJZZaNzBBg==.
        let key = SessionKey::parse("HyVFkGl5F5OQWJZZaNzBBg==").unwrap();
        let raw_data = r#"{"nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/1vZvI39NWFQ9XM4LtQpFrQJ1xlgZxx3w7bQxKARol6503Iuswjjn6nIGBiaycAjAtpujxyzYsrztuuICqIM5ibXQ/0"}"#;
        let expected = "75e81ceda165f4ffa64f4068af58c64b8f54b88c";
        assert_eq!(raw_data_signature(raw_data, &key), expected);
        assert!(verify_raw_data_signature(raw_data, expected, &key));
        assert!(verify_raw_data_signature(
            raw_data,
            &expected.to_uppercase(),
            &key
        ));
        assert!(!verify_raw_data_signature(raw_data, &expected[..39], &key));
    }

    #[test]
    fn bad_padding_is_the_same_error_as_bad_base64() {
        let key = SessionKey::generate();
        let iv = [9u8; 16];
        // A block whose plaintext ends in 0x00 is not valid PKCS#7 once decrypted.
        let raw = Aes128CbcEnc::new(key.bytes().into(), &iv.into())
            .encrypt_padded_vec_mut::<aes::cipher::block_padding::NoPadding>(&[0u8; 16]);
        let data = BASE64.encode(raw);
        assert_eq!(
            decrypt_bytes(&key, &data, &encode_iv(&iv)).unwrap_err(),
            DecryptError::Decrypt
        );
        assert_eq!(
            decrypt_bytes(&key, "%%%", &encode_iv(&iv)).unwrap_err(),
            DecryptError::Decrypt
        );
    }

    #[test]
    fn padding_with_unequal_bytes_is_refused() {
        let key = SessionKey::generate();
        let iv = [5u8; 16];
        let mut block = [b'a'; 16];
        block[13] = 2; // claims 3 bytes of padding, but they differ
        block[14] = 3;
        block[15] = 3;
        let raw = Aes128CbcEnc::new(key.bytes().into(), &iv.into())
            .encrypt_padded_vec_mut::<aes::cipher::block_padding::NoPadding>(&block);
        assert_eq!(
            decrypt_bytes(&key, &BASE64.encode(raw), &encode_iv(&iv)).unwrap_err(),
            DecryptError::Decrypt
        );
    }
}
