//! Events: what happened to persons, identities, profiles and sessions, told to the team's
//! backends (signed webhooks, and the `GET /v1/events` feed).
//!
//! Every event is written to the outbox (`store/sql/events.rs`) in the same database
//! transaction as the change it describes, so a crash can neither lose an event nor report a
//! change that was rolled back. With Redis sessions, `session.revoked` is written right after
//! the Redis change: at least once, never lost, but a crash between the two can leave a
//! revocation without its event.
//!
//! The envelope is `{"id": "<UUIDv7>", "type": "...", "occurred_at": "<RFC 3339>", "data":
//! {...}}`; `data` always has `user_id`.

pub mod delivery;

use serde::Serialize;
use serde_json::{Value, json};
use wxauth_wechat::{AppId, OpenId, UnionId};

use crate::clock::rfc3339;
use crate::model::UserId;

/// The types of events, as receivers see them.
pub const TYPES: [&str; 7] = [
    PERSON_CREATED,
    IDENTITY_CREATED,
    PERSON_MERGED,
    PROFILE_UPDATED,
    PHONE_BOUND,
    SESSION_REVOKED,
    PERSON_DELETED,
];

/// A person appeared for the first time (once per person, ever).
pub const PERSON_CREATED: &str = "person.created";
/// A person appeared in a mini program for the first time.
pub const IDENTITY_CREATED: &str = "identity.created";
/// Two persons were found to be one (by unionid) and became one.
pub const PERSON_MERGED: &str = "person.merged";
/// Profile fields changed (their names only).
pub const PROFILE_UPDATED: &str = "profile.updated";
/// A phone number was set (masked).
pub const PHONE_BOUND: &str = "phone.bound";
/// A session was revoked.
pub const SESSION_REVOKED: &str = "session.revoked";
/// A person was erased.
pub const PERSON_DELETED: &str = "person.deleted";

/// One event, ready for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// A UUIDv7: the feed cursor and the webhook-id.
    pub id: String,
    /// One of [`TYPES`].
    pub kind: &'static str,
    /// The person it concerns (the one whose events it is ordered with).
    pub user_id: UserId,
    /// When it happened (Unix seconds, by the service's clock).
    pub occurred_at: i64,
    /// The payload (`user_id` included).
    pub data: Value,
}

/// The identity an event happened through.
#[derive(Debug, Clone, Copy)]
pub struct Through<'a> {
    /// The mini program.
    pub app_id: &'a AppId,
    /// The openid there.
    pub openid: &'a OpenId,
}

impl Event {
    /// An event of `kind` about `user_id`; `data` gets `user_id` added.
    pub fn new(kind: &'static str, user_id: &UserId, occurred_at: i64, data: Value) -> Self {
        let mut data = match data {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        data.insert("user_id".to_owned(), json!(user_id.as_str()));
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            kind,
            user_id: user_id.clone(),
            occurred_at,
            data: Value::Object(data),
        }
    }

    /// `person.created`, with the identity the person came through.
    pub fn person_created(
        user_id: &UserId,
        through: Through<'_>,
        unionid: Option<&UnionId>,
        now: i64,
    ) -> Self {
        Self::new(
            PERSON_CREATED,
            user_id,
            now,
            identity_data(through, unionid),
        )
    }

    /// `identity.created`; `is_new_user` says whether the person is new too.
    pub fn identity_created(
        user_id: &UserId,
        through: Through<'_>,
        unionid: Option<&UnionId>,
        is_new_user: bool,
        now: i64,
    ) -> Self {
        let mut data = identity_data(through, unionid);
        data["is_new_user"] = json!(is_new_user);
        Self::new(IDENTITY_CREATED, user_id, now, data)
    }

    /// `person.merged`: `merged_id` went into `survivor_id` (the event's person).
    pub fn person_merged(
        survivor_id: &UserId,
        merged_id: &UserId,
        unionid: &UnionId,
        now: i64,
    ) -> Self {
        Self::new(
            PERSON_MERGED,
            survivor_id,
            now,
            json!({
                "survivor_id": survivor_id.as_str(),
                "merged_id": merged_id.as_str(),
                "unionid": unionid.as_str(),
            }),
        )
    }

    /// `profile.updated`: the names of the fields that changed.
    pub fn profile_updated(
        user_id: &UserId,
        through: Through<'_>,
        fields: &[&str],
        now: i64,
    ) -> Self {
        let mut data = identity_data(through, None);
        data["fields"] = json!(fields);
        Self::new(PROFILE_UPDATED, user_id, now, data)
    }

    /// `phone.bound`: the masked number only.
    pub fn phone_bound(user_id: &UserId, through: Through<'_>, masked: &str, now: i64) -> Self {
        let mut data = identity_data(through, None);
        data["phone"] = json!(masked);
        Self::new(PHONE_BOUND, user_id, now, data)
    }

    /// `session.revoked`.
    pub fn session_revoked(
        user_id: &UserId,
        through: Through<'_>,
        session_id: &str,
        reason: &str,
        now: i64,
    ) -> Self {
        let mut data = identity_data(through, None);
        data["session_id"] = json!(session_id);
        data["reason"] = json!(reason);
        Self::new(SESSION_REVOKED, user_id, now, data)
    }

    /// `person.deleted`: the person's id, and the openids it had only as salted hashes
    /// (`openid_sha256` = hex SHA-256 of `salt` followed by the openid), so that a receiver
    /// can recognise the openids it holds without the event naming them.
    pub fn person_deleted(user_id: &UserId, identities: &[(&AppId, &OpenId)], now: i64) -> Self {
        use sha2::{Digest as _, Sha256};
        let salt = hex::encode(rand::random::<[u8; 16]>());
        let openids: Vec<Value> = identities
            .iter()
            .map(|(app_id, openid)| {
                let mut hasher = Sha256::new();
                hasher.update(salt.as_bytes());
                hasher.update(openid.as_str().as_bytes());
                json!({
                    "app_id": app_id.as_str(),
                    "openid_sha256": hex::encode(hasher.finalize()),
                })
            })
            .collect();
        Self::new(
            PERSON_DELETED,
            user_id,
            now,
            json!({ "salt": salt, "openids": openids }),
        )
    }

    /// The envelope as receivers get it.
    pub fn envelope(&self) -> Envelope<'_> {
        Envelope {
            id: &self.id,
            kind: self.kind,
            occurred_at: rfc3339(self.occurred_at),
            data: &self.data,
        }
    }

    /// The envelope as JSON text (what is stored, sent and signed).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.envelope()).unwrap_or_default()
    }
}

/// `{"id", "type", "occurred_at", "data"}`.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    /// The event id.
    pub id: &'a str,
    /// The type.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// RFC 3339.
    pub occurred_at: String,
    /// The payload.
    pub data: &'a Value,
}

fn identity_data(through: Through<'_>, unionid: Option<&UnionId>) -> Value {
    let mut data = json!({
        "app_id": through.app_id.as_str(),
        "openid": through.openid.as_str(),
    });
    if let Some(unionid) = unionid {
        data["unionid"] = json!(unionid.as_str());
    }
    data
}

/// Whether `kind` is an event type.
pub fn is_type(kind: &str) -> bool {
    TYPES.contains(&kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_has_id_type_time_and_data_with_the_user_id() {
        let app = AppId::parse("wx0123456789abcdef").unwrap();
        let openid = OpenId::parse("o-abc").unwrap();
        let user = UserId::new("u1");
        let event = Event::identity_created(
            &user,
            Through {
                app_id: &app,
                openid: &openid,
            },
            None,
            true,
            0,
        );
        let json: Value = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(json["type"], "identity.created");
        assert_eq!(json["occurred_at"], "1970-01-01T00:00:00Z");
        assert_eq!(json["data"]["user_id"], "u1");
        assert_eq!(json["data"]["is_new_user"], true);
        assert_eq!(json["data"]["app_id"], "wx0123456789abcdef");
        assert_eq!(
            uuid::Uuid::parse_str(&event.id).unwrap().get_version_num(),
            7
        );
    }
}
