//! Identifiers and secrets of the WeChat login flow, parsed once at the edge.
//!
//! Each newtype is built only through `parse`, so code that holds one knows it is well formed.
//! The two secrets, [`AppSecret`] and [`SessionKey`], never print their value: their `Debug`
//! shows a placeholder, they implement neither `Display` nor `Serialize`, and the value is
//! reached only through an explicit `expose_secret()`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

/// Why a value could not be parsed into one of this module's types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {reason}")]
pub struct ParseError {
    /// The kind of value, e.g. "app_id".
    pub what: &'static str,
    /// What is wrong with it, in plain words.
    pub reason: &'static str,
}

impl ParseError {
    fn new(what: &'static str, reason: &'static str) -> Self {
        Self { what, reason }
    }
}

/// Checks the shape shared by WeChat's opaque identifiers: 1..=max printable ASCII characters
/// without spaces. WeChat does not promise lengths, so only a sane cap is enforced.
fn check_token_like(what: &'static str, value: &str, max: usize) -> Result<(), ParseError> {
    if value.is_empty() {
        return Err(ParseError::new(what, "is empty"));
    }
    if value.len() > max {
        return Err(ParseError::new(what, "is too long"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ParseError::new(
            what,
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("Parses a ", $what, ": 1 to ", stringify!($max), " printable ASCII characters.")]
            pub fn parse(value: impl Into<String>) -> Result<Self, ParseError> {
                let value = value.into();
                check_token_like($what, &value, $max)?;
                Ok(Self(value))
            }

            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The value as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A mini program's AppID (`wx` followed by 16 hex digits in practice).
    ///
    /// ```
    /// let app = wxauth_wechat::AppId::parse("wx4f4bc4dec97d474b").unwrap();
    /// assert_eq!(app.as_str(), "wx4f4bc4dec97d474b");
    /// ```
    AppId,
    "app_id",
    64
);

id_type!(
    /// One user in one mini program. 28 characters in practice; up to 128 accepted.
    ///
    /// ```
    /// let id = wxauth_wechat::OpenId::parse("oGZUI0egBJY1zhBYw2KhdUfwVJJE").unwrap();
    /// assert_eq!(id.to_string(), "oGZUI0egBJY1zhBYw2KhdUfwVJJE");
    /// ```
    OpenId,
    "openid",
    128
);

id_type!(
    /// One person across all mini programs bound to one Open Platform account.
    ///
    /// ```
    /// let id = wxauth_wechat::UnionId::parse("ocMvos6NjeKLIBqg5Mr9QjxrP1FA").unwrap();
    /// assert_eq!(id.as_str(), "ocMvos6NjeKLIBqg5Mr9QjxrP1FA");
    /// ```
    UnionId,
    "unionid",
    128
);

id_type!(
    /// The temporary code from `wx.login` (valid 5 minutes, single use).
    ///
    /// ```
    /// assert!(wxauth_wechat::JsCode::parse("081abcDEF").is_ok());
    /// assert!(wxauth_wechat::JsCode::parse("").is_err());
    /// ```
    JsCode,
    "code",
    256
);

/// A mini program's AppSecret. Its `Debug` never shows the value.
///
/// ```
/// let secret = wxauth_wechat::AppSecret::new("0123456789abcdef");
/// assert_eq!(format!("{secret:?}"), "AppSecret([redacted])");
/// ```
#[derive(Clone)]
pub struct AppSecret(SecretString);

impl AppSecret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The secret value. Call only to put it on the wire.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppSecret([redacted])")
    }
}

/// The credentials of one mini program.
///
/// ```
/// use wxauth_wechat::{AppCredentials, AppId, AppSecret};
/// let app = AppCredentials::new(AppId::parse("wxdemo").unwrap(), AppSecret::new("s3cr3t"));
/// assert!(!format!("{app:?}").contains("s3cr3t"));
/// ```
#[derive(Clone, Debug)]
pub struct AppCredentials {
    /// The AppID.
    pub app_id: AppId,
    /// The AppSecret.
    pub secret: AppSecret,
}

impl AppCredentials {
    /// Pairs an AppID with its AppSecret.
    pub fn new(app_id: AppId, secret: AppSecret) -> Self {
        Self { app_id, secret }
    }
}

/// A user's session_key: 16 random bytes, carried as 24 characters of base64.
///
/// It never leaves the server. Its `Debug` never shows the value.
///
/// ```
/// let key = wxauth_wechat::SessionKey::parse("tiihtNczf5v6AKRyjwEUhQ==").unwrap();
/// assert_eq!(key.bytes().len(), 16);
/// assert_eq!(format!("{key:?}"), "SessionKey([redacted])");
/// assert!(wxauth_wechat::SessionKey::parse("c2hvcnQ=").is_err());
/// ```
#[derive(Clone)]
pub struct SessionKey {
    encoded: SecretString,
    bytes: zeroize::Zeroizing<[u8; 16]>,
}

impl SessionKey {
    /// Parses the base64 form WeChat sends; it must decode to exactly 16 bytes.
    pub fn parse(encoded: impl Into<String>) -> Result<Self, ParseError> {
        let encoded = encoded.into();
        let decoded = BASE64
            .decode(encoded.as_bytes())
            .map_err(|_| ParseError::new("session_key", "is not valid base64"))?;
        let bytes: [u8; 16] = decoded
            .try_into()
            .map_err(|_| ParseError::new("session_key", "does not decode to 16 bytes"))?;
        Ok(Self {
            encoded: SecretString::from(encoded),
            bytes: zeroize::Zeroizing::new(bytes),
        })
    }

    /// Makes a session_key from its 16 raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self {
            encoded: SecretString::from(BASE64.encode(bytes)),
            bytes: zeroize::Zeroizing::new(bytes),
        }
    }

    /// A new random session_key (for the simulator and tests).
    pub fn generate() -> Self {
        Self::from_bytes(rand::random())
    }

    /// The base64 form, as WeChat sends it.
    pub fn expose_secret(&self) -> &str {
        self.encoded.expose_secret()
    }

    /// The 16 raw key bytes.
    pub fn bytes(&self) -> &[u8; 16] {
        &self.bytes
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey([redacted])")
    }
}

impl PartialEq for SessionKey {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        self.bytes().ct_eq(other.bytes()).into()
    }
}

impl Eq for SessionKey {}

/// What `code2Session` gives for a login code.
#[derive(Debug, Clone)]
pub struct Code2Session {
    /// The user in this mini program.
    pub openid: OpenId,
    /// The key that encrypts this user's open data; keep it on the server.
    pub session_key: SessionKey,
    /// The person across mini programs, when the app is bound to an Open Platform account.
    pub unionid: Option<UnionId>,
}

/// The watermark WeChat puts in every piece of open data.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Watermark {
    /// The AppID the data was made for.
    pub appid: String,
    /// When it was made, in Unix seconds.
    pub timestamp: i64,
}

/// A user's profile as `wx.getUserInfo` encrypts it.
///
/// Since 2022 WeChat fills it with an anonymous profile ("微信用户"); the fields stay optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    /// The user in this mini program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_id: Option<String>,
    /// The person across mini programs, when the app is bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub union_id: Option<String>,
    /// Nickname.
    #[serde(default)]
    pub nick_name: Option<String>,
    /// 0 unknown, 1 male, 2 female.
    #[serde(default)]
    pub gender: Option<i64>,
    /// Language, e.g. "zh_CN".
    #[serde(default)]
    pub language: Option<String>,
    /// City.
    #[serde(default)]
    pub city: Option<String>,
    /// Province.
    #[serde(default)]
    pub province: Option<String>,
    /// Country.
    #[serde(default)]
    pub country: Option<String>,
    /// Avatar URL.
    #[serde(default)]
    pub avatar_url: Option<String>,
    /// Who the data was made for, and when.
    pub watermark: Watermark,
}

/// A user's phone number, from `getuserphonenumber` or the legacy encrypted form.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneInfo {
    /// With country code for foreign numbers, e.g. "13800000000" or "+1 2025550100".
    pub phone_number: String,
    /// Without country code.
    pub pure_phone_number: String,
    /// Country code, e.g. "86".
    pub country_code: String,
    /// Who the data was made for, and when.
    pub watermark: Watermark,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let secret = AppSecret::new("very-secret-value");
        let creds = AppCredentials::new(AppId::parse("wxabc").unwrap(), secret);
        let key = SessionKey::parse("HyVFkGl5F5OQWJZZaNzBBg==").unwrap();
        let debug = format!("{creds:?} {key:?}");
        assert!(!debug.contains("very-secret-value"));
        assert!(!debug.contains("HyVFkGl5F5OQWJZZaNzBBg"));
    }

    #[test]
    fn identifiers_reject_spaces_empty_and_overlong_values() {
        assert!(OpenId::parse("a b").is_err());
        assert!(OpenId::parse("").is_err());
        assert!(OpenId::parse("x".repeat(129)).is_err());
        assert!(OpenId::parse("x".repeat(128)).is_ok());
        assert!(AppId::parse("wx😀").is_err());
    }

    #[test]
    fn session_key_must_be_sixteen_bytes_of_base64() {
        assert!(SessionKey::parse("not base64!").is_err());
        assert!(SessionKey::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAA=").is_err());
        let key = SessionKey::generate();
        assert_eq!(SessionKey::parse(key.expose_secret()).unwrap(), key);
    }
}
