//! The JSON shapes of users and token pairs, shared by several routes.

use serde::Serialize;

use crate::clock::rfc3339;
use crate::store::User;

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
    pub fn new(user: &User, app_id: &str, openid: &str) -> Self {
        Self {
            id: user.id.clone(),
            app_id: app_id.to_owned(),
            openid: openid.to_owned(),
            unionid: user.unionid.clone(),
            nickname: user.nickname.clone(),
            avatar_url: user.avatar_url.clone(),
            gender: user.gender,
            created_at: rfc3339(user.created_at),
        }
    }
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
    /// RFC 3339.
    pub updated_at: String,
}

impl MeView {
    /// The view of `user` through one identity.
    pub fn new(user: &User, app_id: &str, openid: &str) -> Self {
        Self {
            user: UserView::new(user, app_id, openid),
            city: user.city.clone(),
            province: user.province.clone(),
            country: user.country.clone(),
            language: user.language.clone(),
            updated_at: rfc3339(user.updated_at),
        }
    }
}
