//! The JSON shapes of users and token pairs, shared by several routes.

use serde::Serialize;
use utoipa::ToSchema;

use crate::clock::rfc3339;
use wxauth_wechat::{AppId, OpenId};

use crate::model::{AuditEntry, Identity, User};
use crate::service::account::PersonRecord;
use crate::store::SessionRecord;

/// A user as login shows it.
#[derive(Debug, Serialize, ToSchema)]
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
#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityView {
    /// The mini program.
    pub app_id: String,
    /// The openid there.
    pub openid: String,
    /// RFC 3339.
    pub created_at: String,
}

impl IdentityView {
    /// The view of an identity.
    pub fn new(identity: &Identity) -> Self {
        Self {
            app_id: identity.app_id.to_string(),
            openid: identity.openid.to_string(),
            created_at: rfc3339(identity.created_at),
        }
    }
}

/// A phone number, masked unless asked for.
#[derive(Debug, Serialize, ToSchema)]
pub struct PhoneView {
    /// e.g. "86".
    pub country_code: String,
    /// The number, e.g. "13800000000" or masked "138****0000".
    pub number: String,
}

/// The full profile, as `GET /v1/me` shows it.
#[derive(Debug, Serialize, ToSchema)]
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

/// A person whole, as the admin API and the data export show it: the phone unmasked.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserRecordView {
    /// Person id.
    pub id: String,
    /// The person across apps, once known.
    pub unionid: Option<String>,
    /// Nickname.
    pub nickname: Option<String>,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// 0 unknown, 1 male, 2 female.
    pub gender: i64,
    /// City.
    pub city: Option<String>,
    /// Province.
    pub province: Option<String>,
    /// Country.
    pub country: Option<String>,
    /// Language.
    pub language: Option<String>,
    /// Phone, unmasked.
    pub phone: Option<PhoneView>,
    /// The app's own fields.
    pub extra: Option<serde_json::Value>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl UserRecordView {
    /// The view of a person.
    pub fn new(user: &User) -> Self {
        Self {
            id: user.id.to_string(),
            unionid: user.unionid.as_ref().map(ToString::to_string),
            nickname: user.profile.nickname.clone(),
            avatar_url: user.profile.avatar_url.clone(),
            gender: user.profile.gender,
            city: user.profile.city.clone(),
            province: user.profile.province.clone(),
            country: user.profile.country.clone(),
            language: user.profile.language.clone(),
            phone: user.phone.as_ref().map(|phone| PhoneView {
                country_code: phone.country_code.clone(),
                number: phone.number.clone(),
            }),
            extra: user
                .extra
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
            created_at: rfc3339(user.created_at),
            updated_at: rfc3339(user.updated_at),
        }
    }
}

/// A session, as the admin API and the data export show it (never its session_key).
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// The mini program.
    pub app_id: String,
    /// The openid there.
    pub openid: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339 (recorded at most once a minute).
    pub last_seen_at: String,
    /// RFC 3339: the session's absolute end.
    pub expires_at: String,
    /// Whether it still works (neither revoked nor past its end).
    pub active: bool,
    /// Whether it was revoked.
    pub revoked: bool,
    /// RFC 3339, when revoked.
    pub revoked_at: Option<String>,
    /// Why ("logout", "admin", "refresh_token_reused"), when revoked.
    pub revoke_reason: Option<String>,
    /// The client's address at login.
    pub ip: Option<String>,
    /// The client's User-Agent at login.
    pub user_agent: Option<String>,
}

impl SessionView {
    /// The view of a stored session at `now`.
    pub fn new(record: &SessionRecord, now: i64) -> Self {
        let s = &record.session;
        Self {
            id: s.id.clone(),
            app_id: s.app_id.to_string(),
            openid: s.openid.to_string(),
            created_at: rfc3339(s.created_at),
            last_seen_at: rfc3339(s.last_seen_at),
            expires_at: rfc3339(s.expires_at),
            active: s.revoked_at.is_none() && s.expires_at > now,
            revoked: s.revoked_at.is_some(),
            revoked_at: s.revoked_at.map(rfc3339),
            revoke_reason: record.revoke_reason.clone(),
            ip: s.ip.clone(),
            user_agent: s.user_agent.clone(),
        }
    }
}

/// A merge of another person into this one.
#[derive(Debug, Serialize, ToSchema)]
pub struct MergeView {
    /// The person that went.
    pub merged_id: String,
    /// The person it went into.
    pub survivor_id: String,
    /// The unionid that showed them to be one.
    pub unionid: String,
    /// RFC 3339.
    pub merged_at: String,
}

/// Everything stored about a person: the admin view and the data export.
#[derive(Debug, Serialize, ToSchema)]
pub struct PersonView {
    /// The person, phone unmasked.
    pub user: UserRecordView,
    /// Every identity, across mini programs.
    pub identities: Vec<IdentityView>,
    /// Every session of those identities, newest first (until purged).
    pub sessions: Vec<SessionView>,
    /// The persons merged into this one.
    pub merges: Vec<MergeView>,
}

impl PersonView {
    /// The view of a person's record at `now`.
    pub fn new(record: &PersonRecord, now: i64) -> Self {
        Self {
            user: UserRecordView::new(&record.user),
            identities: record.identities.iter().map(IdentityView::new).collect(),
            sessions: record
                .sessions
                .iter()
                .map(|s| SessionView::new(s, now))
                .collect(),
            merges: record
                .merges
                .iter()
                .map(|m| MergeView {
                    merged_id: m.merged_id.to_string(),
                    survivor_id: m.survivor_id.to_string(),
                    unionid: m.unionid.clone(),
                    merged_at: rfc3339(m.merged_at),
                })
                .collect(),
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    /// Entry id (time-ordered).
    pub id: String,
    /// RFC 3339.
    pub occurred_at: String,
    /// "admin", "cli", "user" or "system".
    pub actor_kind: String,
    /// The admin's name, when an admin acted.
    pub actor: Option<String>,
    /// What happened.
    pub action: String,
    /// What it happened to: "user:<id>" or "session:<id>".
    pub target: Option<String>,
    /// The client's address, when a request caused it.
    pub ip: Option<String>,
    /// More about it.
    pub detail: Option<serde_json::Value>,
}

impl AuditView {
    /// The view of an entry.
    pub fn new(entry: &AuditEntry) -> Self {
        Self {
            id: entry.id.clone(),
            occurred_at: rfc3339(entry.occurred_at),
            actor_kind: entry.actor_kind.clone(),
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            target: entry.target.clone(),
            ip: entry.ip.clone(),
            detail: entry
                .detail
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
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
