//! The records the service keeps, typed once where they leave the store: persons, their
//! profiles and phones, their identities in each mini program.

use std::fmt;

use serde::Serialize;
use wxauth_wechat::{AppId, OpenId, UnionId};

/// A person's stable id (a UUIDv7 as text), handed to other services as `sub`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// A new id: time-ordered, so that older persons sort first.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// An id as stored or as given by an operator (not checked: an unknown id finds nobody).
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a person tells about themselves (or WeChat's open data tells).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
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
}

/// A phone number, kept as WeChat gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone {
    /// e.g. "86".
    pub country_code: String,
    /// The number without the country code.
    pub number: String,
}

/// `13800000000` → `138****0000`; shorter numbers keep less.
pub fn mask_phone(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    let n = chars.len();
    let (head, tail) = match n {
        0..=2 => (0, 0),
        3..=6 => (1, 1),
        _ => (3, 4),
    };
    let mut out: String = chars[..head].iter().collect();
    out.push_str(&"*".repeat(n - head - tail));
    out.extend(&chars[n - tail..]);
    out
}

/// A person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id.
    pub id: UserId,
    /// The person across mini programs, once known.
    pub unionid: Option<UnionId>,
    /// The profile.
    pub profile: Profile,
    /// The phone, once bound.
    pub phone: Option<Phone>,
    /// The app's own fields: a JSON object, as text.
    pub extra: Option<String>,
    /// When the person was first seen (Unix seconds).
    pub created_at: i64,
    /// When the profile last changed (Unix seconds).
    pub updated_at: i64,
}

/// One identity of a person: a mini program and the openid there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The mini program.
    pub app_id: AppId,
    /// The user there.
    pub openid: OpenId,
    /// When the identity first logged in (Unix seconds).
    pub created_at: i64,
}

/// Profile fields to set; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfileUpdate {
    /// Nickname.
    pub nickname: Option<String>,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// Gender.
    pub gender: Option<i64>,
    /// City.
    pub city: Option<String>,
    /// Province.
    pub province: Option<String>,
    /// Country.
    pub country: Option<String>,
    /// Language.
    pub language: Option<String>,
    /// The phone.
    pub phone: Option<Phone>,
    /// The app's own fields (a JSON object as text); replaces what was stored.
    pub extra: Option<String>,
}

impl ProfileUpdate {
    /// Whether writing this update (and linking `unionid`, when the person has none) would
    /// leave `user` as it is, but for `updated_at`: the same profile sent again.
    pub fn leaves(&self, user: &User, unionid: Option<&UnionId>) -> bool {
        self.changed_fields(user).is_empty()
            && self
                .phone
                .as_ref()
                .is_none_or(|phone| user.phone.as_ref() == Some(phone))
            && (unionid.is_none() || user.unionid.is_some())
    }

    /// The names of the profile fields this update changes in `user` (the phone has an
    /// event of its own).
    pub fn changed_fields(&self, user: &User) -> Vec<&'static str> {
        let p = &user.profile;
        let differs = |new: &Option<String>, old: &Option<String>| {
            new.as_ref().is_some_and(|new| old.as_ref() != Some(new))
        };
        [
            ("nickname", differs(&self.nickname, &p.nickname)),
            ("avatar_url", differs(&self.avatar_url, &p.avatar_url)),
            ("gender", self.gender.is_some_and(|g| g != p.gender)),
            ("city", differs(&self.city, &p.city)),
            ("province", differs(&self.province, &p.province)),
            ("country", differs(&self.country, &p.country)),
            ("language", differs(&self.language, &p.language)),
            ("extra", differs(&self.extra, &user.extra)),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

/// Two persons found to be one (by a unionid): who stays, who goes, and what the one who
/// stays looks like afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// The person kept, as it is after the merge (its id is the survivor's).
    pub survivor: User,
    /// The person that disappears into it.
    pub merged: UserId,
}

/// Decides a merge of two persons; the stores apply what it decides.
pub type MergeRule = fn(&User, &User, &UnionId, i64) -> Merge;

/// One line of the audit log: who did what to which target, when and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// A UUIDv7: time-ordered, the paging cursor.
    pub id: String,
    /// When (Unix seconds).
    pub occurred_at: i64,
    /// Who acted: "admin" (the admin API), "cli" (a `wxauth` verb), "user" (the person
    /// themselves) or "system" (the service, on a security event).
    pub actor_kind: String,
    /// The admin's name, when an admin acted.
    pub actor: Option<String>,
    /// What happened, e.g. "user.delete", "session.refresh_token_reused".
    pub action: String,
    /// What it happened to, by id only: "user:<id>", "session:<id>".
    pub target: Option<String>,
    /// The client's address, when a request caused it.
    pub ip: Option<String>,
    /// Anything else worth knowing (a JSON object as text), never a person's data.
    pub detail: Option<String>,
}

/// A merge of two persons, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRecord {
    /// The person that disappeared.
    pub merged_id: UserId,
    /// The person it became part of.
    pub survivor_id: UserId,
    /// The unionid that showed them to be one.
    pub unionid: String,
    /// When (Unix seconds).
    pub merged_at: i64,
}
