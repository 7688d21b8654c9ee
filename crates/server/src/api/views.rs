//! The JSON shapes of users and token pairs, shared by several routes.

use serde::Serialize;

use crate::clock::rfc3339;
use wxauth_wechat::{AppId, OpenId};

use crate::model::{Identity, User};

/// A user as login shows it.
#[derive(Debug, Serialize)]
pub struct UserView {
    /// Person id.
    pub id: String,
    /// The app of the identity logged in.
    pub app_id: String,
    /// The openid in that app.
    pub openid: String,
    /// The person across apps, once known.
    pub unionid: Option<String>,
    /// Nickname.
    pub nickname: Option<String>,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// 0 unknown, 1 male, 2 female.
    pub gender: i64,
    /// RFC 3339.
    pub created_at: String,
}

impl UserView {
    /// The view of `user` through one identity.
    pub fn new(user: &User, app_id: &AppId, openid: &OpenId) -> Self {
        Self {
            id: user.id.to_string(),
            app_id: app_id.to_string(),
            openid: openid.to_string(),
            unionid: user.unionid.as_ref().map(ToString::to_string),
            nickname: user.profile.nickname.clone(),
            avatar_url: user.profile.avatar_url.clone(),
            gender: user.profile.gender,
            created_at: rfc3339(user.created_at),
        }
    }
}

/// One identity of the person.
#[derive(Debug, Serialize)]
pub struct IdentityView {
    /// The mini program.
    pub app_id: String,
    /// The openid there.
    pub openid: String,
    /// RFC 3339.
    pub created_at: String,
}

/// A phone number, masked unless asked for.
#[derive(Debug, Serialize)]
pub struct PhoneView {
    /// e.g. "86".
    pub country_code: String,
    /// The number, e.g. "13800000000" or masked "138****0000".
    pub number: String,
}

/// The full profile, as `GET /v1/me` shows it.
#[derive(Debug, Serialize)]
pub struct MeView {
    /// The login fields.
    #[serde(flatten)]
    pub user: UserView,
    /// City.
    pub city: Option<String>,
    /// Province.
    pub province: Option<String>,
    /// Country.
    pub country: Option<String>,
    /// Language.
    pub language: Option<String>,
    /// Phone, masked unless `?include=phone`.
    pub phone: Option<PhoneView>,
    /// The app's own fields.
    pub extra: Option<serde_json::Value>,
    /// Every identity of the person, across mini programs.
    pub identities: Vec<IdentityView>,
    /// RFC 3339.
    pub updated_at: String,
}

impl MeView {
    /// The view of `user` through one identity.
    pub fn new(
        user: &User,
        identities: &[Identity],
        app_id: &AppId,
        openid: &OpenId,
        include_phone: bool,
    ) -> Self {
        let phone = user.phone.as_ref().map(|phone| PhoneView {
            country_code: phone.country_code.clone(),
            number: if include_phone {
                phone.number.clone()
            } else {
                mask(&phone.number)
            },
        });
        Self {
            user: UserView::new(user, app_id, openid),
            city: user.profile.city.clone(),
            province: user.profile.province.clone(),
            country: user.profile.country.clone(),
            language: user.profile.language.clone(),
            phone,
            extra: user
                .extra
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
            identities: identities
                .iter()
                .map(|i| IdentityView {
                    app_id: i.app_id.to_string(),
                    openid: i.openid.to_string(),
                    created_at: rfc3339(i.created_at),
                })
                .collect(),
            updated_at: rfc3339(user.updated_at),
        }
    }
}

/// `13800000000` → `138****0000`; shorter numbers keep less.
pub fn mask(number: &str) -> String {
    crate::model::mask_phone(number)
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn phone_numbers_are_masked_in_the_middle() {
        assert_eq!(mask("13800000000"), "138****0000");
        assert_eq!(mask("2025550100"), "202***0100");
        assert_eq!(mask("12345"), "1***5");
        assert_eq!(mask("12"), "**");
    }
}
