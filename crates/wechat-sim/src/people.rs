//! Simulated people: who they are in each app (openid, session_key), who they are across apps
//! (unionid), and what WeChat knows about them (profile, phone).
//!
//! Identifiers are derived deterministically from the app and the person's name, so the same
//! name gives the same openid after a restart: benchmarks and demos can be replayed.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use wxauth_wechat::SessionKey;

/// The grey "微信用户" avatar WeChat hands out since profiles went anonymous.
pub const DEFAULT_AVATAR_URL: &str = "https://thirdwx.qlogo.cn/mmopen/vi_32/POgEwh4mIHO4nibH0KlMECNjjGxQUq24ZEaGT4poC6icRiccVGKSyXwibcPq4BWmiaIGuG1icwxaQX6grC9VemZoJ8rg/132";

/// The nickname WeChat hands out since profiles went anonymous.
pub const DEFAULT_NICKNAME: &str = "微信用户";

/// A profile as `wx.getUserInfo` shows it. Field order is WeChat's `rawData` order, which
/// matters because `rawData` is signed as the exact string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Nickname.
    pub nick_name: String,
    /// 0 unknown, 1 male, 2 female.
    pub gender: i64,
    /// Language, e.g. "zh_CN".
    pub language: String,
    /// City.
    pub city: String,
    /// Province.
    pub province: String,
    /// Country.
    pub country: String,
    /// Avatar URL.
    pub avatar_url: String,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            nick_name: DEFAULT_NICKNAME.to_owned(),
            gender: 0,
            language: "zh_CN".to_owned(),
            city: String::new(),
            province: String::new(),
            country: String::new(),
            avatar_url: DEFAULT_AVATAR_URL.to_owned(),
        }
    }
}

/// Some profile fields to change; the others stay.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfilePatch {
    /// New nickname.
    pub nick_name: Option<String>,
    /// New avatar URL.
    pub avatar_url: Option<String>,
    /// New gender (0, 1 or 2).
    pub gender: Option<i64>,
    /// New city.
    pub city: Option<String>,
    /// New province.
    pub province: Option<String>,
    /// New country.
    pub country: Option<String>,
    /// New language.
    pub language: Option<String>,
}

impl ProfilePatch {
    /// Checks the values WeChat constrains.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(gender) = self.gender {
            if !(0..=2).contains(&gender) {
                return Err("profile.gender must be 0, 1 or 2".to_owned());
            }
        }
        Ok(())
    }

    /// Applies the given fields to `profile`.
    pub fn apply(&self, profile: &mut Profile) {
        let Self {
            nick_name,
            avatar_url,
            gender,
            city,
            province,
            country,
            language,
        } = self.clone();
        let set = |slot: &mut String, value: Option<String>| {
            if let Some(value) = value {
                *slot = value;
            }
        };
        set(&mut profile.nick_name, nick_name);
        set(&mut profile.avatar_url, avatar_url);
        set(&mut profile.city, city);
        set(&mut profile.province, province);
        set(&mut profile.country, country);
        set(&mut profile.language, language);
        if let Some(gender) = gender {
            profile.gender = gender;
        }
    }
}

/// A phone number in WeChat's three fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Phone {
    /// With the country code for foreign numbers ("+1 2025550100"); bare for China.
    pub phone_number: String,
    /// Without the country code.
    pub pure_phone_number: String,
    /// The country code without "+", e.g. "86".
    pub country_code: String,
}

impl Phone {
    /// A phone from a country code and a bare number, formatted as WeChat formats it.
    pub fn new(country_code: &str, pure_phone_number: &str) -> Result<Self, String> {
        let country_code = country_code.strip_prefix('+').unwrap_or(country_code);
        if country_code.is_empty()
            || country_code.len() > 4
            || !country_code.bytes().all(|b| b.is_ascii_digit())
        {
            return Err("phone.countryCode must be 1 to 4 digits".to_owned());
        }
        if pure_phone_number.len() < 3
            || pure_phone_number.len() > 20
            || !pure_phone_number.bytes().all(|b| b.is_ascii_digit())
        {
            return Err("phone number must be 3 to 20 digits".to_owned());
        }
        let phone_number = if country_code == "86" {
            pure_phone_number.to_owned()
        } else {
            format!("+{country_code} {pure_phone_number}")
        };
        Ok(Self {
            phone_number,
            pure_phone_number: pure_phone_number.to_owned(),
            country_code: country_code.to_owned(),
        })
    }

    /// Reads the control API's `phone`: a digit string (a Chinese number) or
    /// `{"countryCode","purePhoneNumber"}`.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        match value {
            serde_json::Value::String(digits) => Self::new("86", digits),
            serde_json::Value::Object(fields) => {
                let field = |name: &str| {
                    fields
                        .get(name)
                        .and_then(serde_json::Value::as_str)
                        .ok_or_else(|| format!("phone.{name} must be a string"))
                };
                if let Some(unknown) = fields
                    .keys()
                    .find(|k| !matches!(k.as_str(), "countryCode" | "purePhoneNumber"))
                {
                    return Err(format!("phone has an unknown field {unknown}"));
                }
                Self::new(field("countryCode")?, field("purePhoneNumber")?)
            }
            _ => Err(
                "phone must be a digit string or {\"countryCode\",\"purePhoneNumber\"}".to_owned(),
            ),
        }
    }
}

/// What is true of a person in every app.
#[derive(Debug, Clone)]
pub struct Person {
    /// The same in every bound app.
    pub unionid: String,
    /// What `getUserInfo` shows.
    pub profile: Profile,
    /// What the phone button shows.
    pub phone: Phone,
}

impl Person {
    /// A new person with the deterministic defaults for `user`.
    pub fn new(user: &str) -> Self {
        Self {
            unionid: derive_unionid(user),
            profile: Profile::default(),
            phone: derive_phone(user),
        }
    }
}

/// A person as one app sees them.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Their openid in this app.
    pub openid: String,
    /// Their current session_key in this app.
    pub session_key: SessionKey,
    /// Set through the control API: logins do not rotate it.
    pub pinned: bool,
}

impl Identity {
    /// A new identity with the deterministic openid and a random session_key.
    pub fn new(appid: &str, user: &str) -> Self {
        Self {
            openid: derive_openid(appid, user),
            session_key: SessionKey::generate(),
            pinned: false,
        }
    }
}

/// SHA-256 over length-prefixed parts, so ("ab","c") and ("a","bc") differ.
fn digest(parts: &[&str]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

/// "o" and 27 characters of base64url: the 28-character shape of real openids and unionids.
fn wechat_style_id(parts: &[&str]) -> String {
    let mut id = URL_SAFE_NO_PAD.encode(digest(parts));
    // base64 output is ASCII, so any index is a character boundary.
    id.truncate(27);
    format!("o{id}")
}

/// The openid `user` has in `appid`.
///
/// ```
/// let id = wechat_sim::people::derive_openid("wx1234567890abcdef", "alice");
/// assert_eq!(id.len(), 28);
/// assert_eq!(id, wechat_sim::people::derive_openid("wx1234567890abcdef", "alice"));
/// assert_ne!(id, wechat_sim::people::derive_openid("wx0000000000000000", "alice"));
/// ```
pub fn derive_openid(appid: &str, user: &str) -> String {
    wechat_style_id(&["openid", appid, user])
}

/// The unionid `user` has in every bound app.
pub fn derive_unionid(user: &str) -> String {
    wechat_style_id(&["unionid", user])
}

/// A Chinese mobile number, "138" and 8 digits, fixed for `user`.
///
/// ```
/// let phone = wechat_sim::people::derive_phone("alice");
/// assert_eq!(phone.country_code, "86");
/// assert!(phone.pure_phone_number.starts_with("138"));
/// assert_eq!(phone.pure_phone_number.len(), 11);
/// ```
pub fn derive_phone(user: &str) -> Phone {
    let d = digest(&["phone", user]);
    let n = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]) % 100_000_000;
    let pure = format!("138{n:08}");
    Phone {
        phone_number: pure.clone(),
        pure_phone_number: pure,
        country_code: "86".to_owned(),
    }
}
