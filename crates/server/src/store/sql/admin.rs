//! What the admin API and account deletion need of the user tables: finding persons, their
//! merges, and erasing a person whole in one transaction.

use sqlx::Row as _;

use super::users::user_from_row;
use super::{SqlStore, store_error};
use crate::model::{AuditEntry, Identity, MergeRecord, User, UserId};
use crate::store::StoreError;

/// What to find persons by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserFilter {
    /// Everyone.
    All,
    /// One person id.
    Id(String),
    /// An openid, in whichever mini program.
    OpenId(String),
    /// A unionid.
    UnionId(String),
    /// A whole phone number: the national number, or `+` and the country code before it.
    Phone(String),
    /// A part of the nickname (case-insensitive where the database can).
    Nickname(String),
}

/// What erasing a person removed, for what must follow outside the database (sessions in
/// Redis, the avatar file, the event).
#[derive(Debug, Clone)]
pub struct Erased {
    /// The person as it was.
    pub user: User,
    /// Its identities, as they were.
    pub identities: Vec<Identity>,
}

macro_rules! select_users {
    ($where:literal) => {
        concat!(
            "SELECT u.id, u.unionid, u.nickname, u.avatar_url, u.gender, u.city, u.province, \
             u.country, u.language, u.phone_country_code, u.phone_number, u.extra, \
             u.created_at, u.updated_at FROM users u WHERE ",
            $where,
            " AND u.id > ? ORDER BY u.id LIMIT ?"
        )
    };
}

impl SqlStore {
    /// Up to `limit` persons matching `filter` whose id sorts after `after`, by id (UUIDv7s:
    /// oldest first).
    pub async fn find_users(
        &self,
        filter: &UserFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<User>, StoreError> {
        const ALL: &str = select_users!("1 = 1");
        const BY_ID: &str = select_users!("u.id = ?");
        const BY_OPENID: &str =
            select_users!("u.id IN (SELECT i.user_id FROM identities i WHERE i.openid = ?)");
        const BY_UNIONID: &str = select_users!("u.unionid = ?");
        const BY_PHONE: &str = select_users!(
            "((u.phone_country_code = ? AND u.phone_number = ?) \
             OR (u.phone_country_code = ? AND u.phone_number = ?) \
             OR (u.phone_country_code = ? AND u.phone_number = ?) OR u.phone_number = ?)"
        );
        const BY_NICKNAME: &str = select_users!("LOWER(u.nickname) LIKE ? ESCAPE '!'");
        let after = after.unwrap_or("").to_owned();
        let query = match filter {
            UserFilter::All => sqlx::query(self.q(ALL)),
            UserFilter::Id(id) => sqlx::query(self.q(BY_ID)).bind(id.clone()),
            UserFilter::OpenId(openid) => sqlx::query(self.q(BY_OPENID)).bind(openid.clone()),
            UserFilter::UnionId(unionid) => sqlx::query(self.q(BY_UNIONID)).bind(unionid.clone()),
            UserFilter::Phone(phone) => {
                let mut query = sqlx::query(self.q(BY_PHONE));
                for value in phone_binds(phone) {
                    query = query.bind(value);
                }
                query
            }
            UserFilter::Nickname(part) => sqlx::query(self.q(BY_NICKNAME)).bind(like_pattern(part)),
        };
        let rows = query
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(user_from_row)
            .collect::<Result<_, _>>()
            .map_err(store_error)
    }

    /// One person by id.
    pub async fn user_by_id(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        let mut users = self
            .find_users(&UserFilter::Id(id.to_string()), None, 1)
            .await?;
        Ok(users.pop())
    }

    /// Every merge that made this person what it is: the persons merged into it, and into
    /// those, and so on.
    pub async fn merges_into(&self, id: &UserId) -> Result<Vec<MergeRecord>, StoreError> {
        const SQL: &str = "SELECT merged_id, survivor_id, unionid, merged_at FROM user_merges \
                           WHERE survivor_id = ? ORDER BY merged_at, merged_id";
        let mut found = Vec::new();
        let mut pending = vec![id.clone()];
        while let Some(survivor) = pending.pop() {
            let rows = sqlx::query(self.q(SQL))
                .bind(survivor.to_string())
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
            for row in &rows {
                let record = merge_from_row(row).map_err(store_error)?;
                // Merge records form a tree (a merged person is gone and merges no more), but
                // a broken table must not loop forever.
                if found.len() < 10_000 {
                    pending.push(record.merged_id.clone());
                    found.push(record);
                }
            }
        }
        found.sort_by_key(|m: &MergeRecord| m.merged_at);
        Ok(found)
    }

    /// Erases a person in one transaction: its sessions and their tokens, its identities, the
    /// records of the persons merged into it, the person itself, and writes `audit` beside.
    /// `None` when there is no such person. Detached, so a dropped request cannot leave it
    /// half-done, and it moves the auth cache on: the person's tokens stop at once.
    pub async fn erase_person(
        &self,
        id: &UserId,
        audit: &AuditEntry,
    ) -> Result<Option<Erased>, StoreError> {
        let merges = self.merges_into(id).await?;
        let (id, audit) = (id.clone(), audit.clone());
        self.detached(move |store| {
            let (id, audit, merges) = (id.clone(), audit.clone(), merges.clone());
            async move { store.run_erase_person(&id, &audit, &merges).await }
        })
        .await
    }

    async fn run_erase_person(
        &self,
        id: &UserId,
        audit: &AuditEntry,
        merges: &[MergeRecord],
    ) -> Result<Option<Erased>, StoreError> {
        const USER: &str = "SELECT u.id, u.unionid, u.nickname, u.avatar_url, u.gender, u.city, \
             u.province, u.country, u.language, u.phone_country_code, u.phone_number, u.extra, \
             u.created_at, u.updated_at FROM users u WHERE u.id = ? FOR UPDATE";
        const IDENTITIES: &str = "SELECT app_id, openid, created_at FROM identities \
                                  WHERE user_id = ? ORDER BY created_at, app_id";
        const TOKENS: &str = "DELETE FROM tokens WHERE session_id IN \
             (SELECT s.id FROM sessions s WHERE s.app_id = ? AND s.openid = ?)";
        const SESSIONS: &str = "DELETE FROM sessions WHERE app_id = ? AND openid = ?";
        const DELETE_IDENTITIES: &str = "DELETE FROM identities WHERE user_id = ?";
        const DELETE_MERGE: &str = "DELETE FROM user_merges WHERE merged_id = ?";
        const DELETE_USER: &str = "DELETE FROM users WHERE id = ?";
        let mut tx = self.begin().await?;
        let row = sqlx::query(self.q(USER))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(store_error)?;
            return Ok(None);
        };
        let user = user_from_row(&row).map_err(store_error)?;
        let identities: Vec<Identity> = sqlx::query(self.q(IDENTITIES))
            .bind(id.to_string())
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?
            .iter()
            .map(super::users::identity_from_row)
            .collect::<Result<_, _>>()
            .map_err(store_error)?;
        for identity in &identities {
            for sql in [TOKENS, SESSIONS] {
                sqlx::query(self.q(sql))
                    .bind(identity.app_id.to_string())
                    .bind(identity.openid.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
            }
        }
        sqlx::query(self.q(DELETE_IDENTITIES))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        for merge in merges {
            sqlx::query(self.q(DELETE_MERGE))
                .bind(merge.merged_id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        sqlx::query(self.q(DELETE_USER))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        self.insert_audit(&mut tx, audit)
            .await
            .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(Some(Erased { user, identities }))
    }
}

/// What a phone search binds: three (country code, number) splits of a number given with
/// `+` (country codes have one to three digits), then a national number. The parts that do
/// not apply get "-", which no stored country code or number is.
fn phone_binds(phone: &str) -> [String; 7] {
    let none = || "-".to_owned();
    match phone.strip_prefix('+') {
        Some(full) => {
            let split = |n: usize| match (full.get(..n), full.get(n..)) {
                (Some(cc), Some(number)) if !number.is_empty() => {
                    (cc.to_owned(), number.to_owned())
                }
                _ => (none(), none()),
            };
            let [(a, b), (c, d), (e, f)] = [split(1), split(2), split(3)];
            [a, b, c, d, e, f, none()]
        }
        None => [
            none(),
            none(),
            none(),
            none(),
            none(),
            none(),
            phone.to_owned(),
        ],
    }
}

/// `%part%`, lowercased, with LIKE's wildcards in `part` taken literally (`!` escapes).
fn like_pattern(part: &str) -> String {
    let mut pattern = String::with_capacity(part.len() + 2);
    pattern.push('%');
    for c in part.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '!') {
            pattern.push('!');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

fn merge_from_row(row: &sqlx::any::AnyRow) -> Result<MergeRecord, sqlx::Error> {
    Ok(MergeRecord {
        merged_id: UserId::new(row.try_get::<String, _>("merged_id")?),
        survivor_id: UserId::new(row.try_get::<String, _>("survivor_id")?),
        unionid: row.try_get("unionid")?,
        merged_at: row.try_get("merged_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nickname_search_takes_wildcards_literally() {
        assert_eq!(like_pattern("Ab"), "%ab%");
        assert_eq!(like_pattern("50%_!"), "%50!%!_!!%");
    }

    #[test]
    fn a_phone_search_binds_each_country_code_split_or_the_national_number() {
        let with_plus = phone_binds("+8613800000000");
        assert_eq!(with_plus[2..4], ["86".to_owned(), "13800000000".to_owned()]);
        assert_eq!(with_plus[6], "-");
        let national = phone_binds("13800000000");
        assert_eq!(national[6], "13800000000");
        assert!(national[..6].iter().all(|v| v == "-"));
        assert_eq!(phone_binds("+86")[2..4], ["-".to_owned(), "-".to_owned()]);
    }
}
