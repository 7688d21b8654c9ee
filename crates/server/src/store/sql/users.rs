//! Persons and identities in SQL: the login upsert, unionid linking (and the merge it may
//! lead to, as the service's rule decides), profiles.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row as _, Transaction};
use wxauth_wechat::{AppId, OpenId, UnionId};

use super::events::{Inserts, insert as emit};
use super::{
    Dialect, Query, SqlStore, abandon, corrupt, is_deadlock, is_unique_violation, store_error,
};
use crate::events::{Event, Through};
use crate::model::{Identity, MergeRule, Phone, Profile, ProfileUpdate, User, UserId, mask_phone};
use crate::service::audit;
use crate::store::{LoginOutcome, StoreError, UserStore};

/// How many times a login retries after losing a race on a unique key or a deadlock.
const LOGIN_ATTEMPTS: usize = 5;

macro_rules! user_columns {
    () => {
        "u.id, u.unionid, u.nickname, u.avatar_url, u.gender, u.city, u.province, u.country, \
         u.language, u.phone_country_code, u.phone_number, u.extra, u.created_at, u.updated_at"
    };
}

/// The user columns beside a session's, with the names both share renamed
/// ([`UserNames::JOINED`]).
macro_rules! joined_user_columns {
    () => {
        "u.id AS user_id, u.unionid, u.nickname, u.avatar_url, u.gender, u.city, u.province, \
         u.country, u.language, u.phone_country_code, u.phone_number, u.extra, \
         u.created_at AS user_created_at, u.updated_at AS user_updated_at"
    };
}
pub(super) use joined_user_columns;

impl SqlStore {
    async fn fetch_user_by_identity(
        &self,
        app_id: &AppId,
        openid: &OpenId,
    ) -> Result<Option<User>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            user_columns!(),
            " FROM identities i JOIN users u ON u.id = i.user_id \
             WHERE i.app_id = ? AND i.openid = ?"
        );
        let row = sqlx::query(self.q(SQL))
            .bind(app_id.as_str())
            .bind(openid.as_str())
            .fetch_optional(&mut *self.reader().await?)
            .await
            .map_err(store_error)?;
        row.as_ref()
            .map(user_from_row)
            .transpose()
            .map_err(store_error)
    }

    async fn run_login(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        unionid: Option<&UnionId>,
        now: i64,
        merge: MergeRule,
    ) -> Result<LoginOutcome, StoreError> {
        for _ in 0..LOGIN_ATTEMPTS {
            // A returning user costs one read.
            if let Some(mut user) = self.fetch_user_by_identity(app_id, openid).await? {
                if let (Some(unionid), None) = (unionid, &user.unionid) {
                    let (user_id, unionid) = (user.id.clone(), unionid.clone());
                    self.detached(move |store| {
                        let (user_id, unionid) = (user_id.clone(), unionid.clone());
                        async move { store.link_unionid(&user_id, &unionid, now, merge).await }
                    })
                    .await?;
                    user = self
                        .fetch_user_by_identity(app_id, openid)
                        .await?
                        .unwrap_or(user);
                }
                return Ok(LoginOutcome {
                    user,
                    is_new_user: false,
                    is_new_identity: false,
                });
            }
            if let Some(outcome) = self
                .try_create_identity(app_id, openid, unionid, now)
                .await?
            {
                return Ok(outcome);
            }
        }
        Err(StoreError::Other(anyhow::anyhow!(
            "login kept losing races on the identity after {LOGIN_ATTEMPTS} attempts"
        )))
    }

    /// One attempt at creating the identity (and its person); `Ok(None)` when another login
    /// won a race and the caller should look again. One write transaction (on SQLite, in the
    /// group commit), and no read of the rows it has just written.
    async fn try_create_identity(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        unionid: Option<&UnionId>,
        now: i64,
    ) -> Result<Option<LoginOutcome>, StoreError> {
        let (app_id, openid, unionid) = (app_id.clone(), openid.clone(), unionid.cloned());
        self.grouped(true, move |store, conn| {
            let (app_id, openid, unionid) = (app_id.clone(), openid.clone(), unionid.clone());
            Box::pin(async move {
                store
                    .create_identity_in(conn, &app_id, &openid, unionid.as_ref(), now)
                    .await
            })
        })
        .await
    }

    /// [`SqlStore::try_create_identity`] inside the caller's transaction: the outcome, and
    /// whether the changes are kept (not when a unique key or a deadlock says another login
    /// won a race: it is rolled back whole, events included, so a person is announced once,
    /// by the login that made it).
    async fn create_identity_in(
        &self,
        conn: &mut AnyConnection,
        app_id: &AppId,
        openid: &OpenId,
        unionid: Option<&UnionId>,
        now: i64,
    ) -> Result<(Option<LoginOutcome>, bool), StoreError> {
        const USER_BY_UNIONID: &str = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users u WHERE u.unionid = ?"
        );
        const INSERT_USER: &str = "INSERT INTO users (id, unionid, gender, created_at, \
                                   updated_at) VALUES (?, ?, 0, ?, ?)";
        const INSERT_IDENTITY: &str =
            "INSERT INTO identities (app_id, openid, user_id, created_at) VALUES (?, ?, ?, ?)";
        /// A statement that failed: a lost race is worth another try, the rest is an error.
        fn lost_race(err: sqlx::Error) -> Result<(Option<LoginOutcome>, bool), StoreError> {
            if is_unique_violation(&err) || is_deadlock(&err) {
                Ok((None, false))
            } else {
                Err(store_error(err))
            }
        }
        fn bind_user<'q>(query: Query<'q>, user: &'q User, now: i64) -> Query<'q> {
            query
                .bind(user.id.as_str())
                .bind(user.unionid.as_ref().map(UnionId::as_str))
                .bind(now)
                .bind(now)
        }
        fn bind_identity<'q>(
            query: Query<'q>,
            app_id: &'q AppId,
            openid: &'q OpenId,
            user_id: &'q UserId,
            now: i64,
        ) -> Query<'q> {
            query
                .bind(app_id.as_str())
                .bind(openid.as_str())
                .bind(user_id.as_str())
                .bind(now)
        }
        let existing = match unionid {
            Some(unionid) => sqlx::query(self.q(USER_BY_UNIONID))
                .bind(unionid.as_str())
                .fetch_optional(&mut *conn)
                .await
                .map_err(store_error)?
                .as_ref()
                .map(user_from_row)
                .transpose()
                .map_err(store_error)?,
            None => None,
        };
        let is_new_user = existing.is_none();
        // The row about to be written, as a read would give it back.
        let user = existing.unwrap_or_else(|| User {
            id: UserId::generate(),
            unionid: unionid.cloned(),
            profile: Profile::default(),
            phone: None,
            extra: None,
            created_at: now,
            updated_at: now,
        });
        let through = Through { app_id, openid };
        let mut events = Vec::with_capacity(2);
        if is_new_user {
            events.push(Event::person_created(&user.id, through, unionid, now));
        }
        events.push(Event::identity_created(
            &user.id,
            through,
            unionid,
            is_new_user,
            now,
        ));
        let written = if self.dialect == Dialect::Sqlite {
            // SQLite: every statement in one text, one hand-off to the connection's thread
            // (the caller's savepoint keeps all or none of them).
            let endpoints = self.outbox.endpoints();
            let inserts = Inserts::new(&events, &endpoints, self.settle_ms());
            let mut sql = String::with_capacity(1024);
            if is_new_user {
                sql.push_str(INSERT_USER);
                sql.push_str("; ");
            }
            sql.push_str(INSERT_IDENTITY);
            inserts.sql(&mut sql);
            let mut query = sqlx::query(&sql);
            if is_new_user {
                query = bind_user(query, &user, now);
            }
            let query = bind_identity(query, app_id, openid, &user.id, now);
            inserts.bind(query).execute(&mut *conn).await.map(drop)
        } else {
            async {
                if is_new_user {
                    bind_user(sqlx::query(self.q(INSERT_USER)), &user, now)
                        .execute(&mut *conn)
                        .await?;
                }
                bind_identity(
                    sqlx::query(self.q(INSERT_IDENTITY)),
                    app_id,
                    openid,
                    &user.id,
                    now,
                )
                .execute(&mut *conn)
                .await?;
                for event in &events {
                    emit(self, &mut *conn, event).await?;
                }
                Ok(())
            }
            .await
        };
        if let Err(err) = written {
            return lost_race(err);
        }
        Ok((
            Some(LoginOutcome {
                user,
                is_new_user,
                is_new_identity: true,
            }),
            true,
        ))
    }

    /// Links a unionid to a person. When another person already holds it (an identity
    /// that first came through an unbound app), the two persons merge as `merge` decides;
    /// the one that goes hands its identities to the one that stays, and a merge record keeps
    /// who went into whom. Sessions follow, since they belong to identities.
    async fn link_unionid(
        &self,
        user_id: &UserId,
        unionid: &UnionId,
        now: i64,
        merge: MergeRule,
    ) -> Result<(), StoreError> {
        for _ in 0..LOGIN_ATTEMPTS {
            let mut tx = self.begin().await?;
            match self.link_in(&mut tx, user_id, unionid, now, merge).await {
                Ok(()) => {
                    tx.commit().await.map_err(store_error)?;
                    self.events_written();
                    return Ok(());
                }
                Err(err) => abandon(tx, err).await?,
            }
        }
        Err(StoreError::Other(anyhow::anyhow!(
            "linking a unionid kept losing races after {LOGIN_ATTEMPTS} attempts"
        )))
    }

    async fn link_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        user_id: &UserId,
        unionid: &UnionId,
        now: i64,
        merge: MergeRule,
    ) -> Result<(), sqlx::Error> {
        const USER_BY_ID: &str = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users u WHERE u.id = ? FOR UPDATE"
        );
        const USER_BY_UNIONID: &str = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users u WHERE u.unionid = ? FOR UPDATE"
        );
        const SET_UNIONID: &str =
            "UPDATE users SET unionid = ?, updated_at = ? WHERE id = ? AND unionid IS NULL";
        let me = sqlx::query(self.q(USER_BY_ID))
            .bind(user_id.as_str())
            .fetch_optional(&mut **tx)
            .await?;
        let Some(me) = me.as_ref().map(user_from_row).transpose()? else {
            // Merged away meanwhile: the survivor has it already.
            return Ok(());
        };
        if let Some(existing) = &me.unionid {
            if existing != unionid {
                tracing::warn!(
                    %user_id,
                    "a person was given a second, different unionid; kept the first"
                );
            }
            return Ok(());
        }
        let holder = sqlx::query(self.q(USER_BY_UNIONID))
            .bind(unionid.as_str())
            .fetch_optional(&mut **tx)
            .await?;
        let Some(holder) = holder.as_ref().map(user_from_row).transpose()? else {
            sqlx::query(self.q(SET_UNIONID))
                .bind(unionid.as_str())
                .bind(now)
                .bind(user_id.as_str())
                .execute(&mut **tx)
                .await?;
            return Ok(());
        };
        let decided = merge(&me, &holder, unionid, now);
        self.apply_merge(tx, &decided.survivor, &decided.merged, unionid, now)
            .await?;
        tracing::info!(
            survivor = %decided.survivor.id,
            merged = %decided.merged,
            "persons merged by unionid"
        );
        Ok(())
    }

    async fn apply_merge(
        &self,
        tx: &mut Transaction<'static, Any>,
        survivor: &User,
        merged: &UserId,
        unionid: &UnionId,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        const MOVE_IDENTITIES: &str = "UPDATE identities SET user_id = ? WHERE user_id = ?";
        const INSERT_MERGE: &str = "INSERT INTO user_merges (merged_id, survivor_id, unionid, \
                                    merged_at) VALUES (?, ?, ?, ?)";
        const DELETE_USER: &str = "DELETE FROM users WHERE id = ?";
        const SET_ALL: &str = "UPDATE users SET unionid = ?, nickname = ?, avatar_url = ?, \
                               gender = ?, city = ?, province = ?, country = ?, language = ?, \
                               phone_country_code = ?, phone_number = ?, extra = ?, \
                               updated_at = ? WHERE id = ?";
        sqlx::query(self.q(MOVE_IDENTITIES))
            .bind(survivor.id.as_str())
            .bind(merged.as_str())
            .execute(&mut **tx)
            .await?;
        sqlx::query(self.q(INSERT_MERGE))
            .bind(merged.as_str())
            .bind(survivor.id.as_str())
            .bind(unionid.as_str())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        sqlx::query(self.q(DELETE_USER))
            .bind(merged.as_str())
            .execute(&mut **tx)
            .await?;
        let by = audit::Requester {
            actor: audit::Actor::System,
            ip: None,
        };
        let entry = audit::entry(
            &by,
            "person.merged",
            Some(audit::user_target(&survivor.id)),
            Some(serde_json::json!({ "merged_id": merged.as_str() })),
            now,
        );
        self.insert_audit(tx, &entry).await?;
        let p = &survivor.profile;
        sqlx::query(self.q(SET_ALL))
            .bind(survivor.unionid.as_ref().map(UnionId::as_str))
            .bind(p.nickname.as_deref())
            .bind(p.avatar_url.as_deref())
            .bind(p.gender)
            .bind(p.city.as_deref())
            .bind(p.province.as_deref())
            .bind(p.country.as_deref())
            .bind(p.language.as_deref())
            .bind(survivor.phone.as_ref().map(|ph| ph.country_code.as_str()))
            .bind(survivor.phone.as_ref().map(|ph| ph.number.as_str()))
            .bind(survivor.extra.as_deref())
            .bind(survivor.updated_at)
            .bind(survivor.id.as_str())
            .execute(&mut **tx)
            .await?;
        emit(
            self,
            tx,
            &Event::person_merged(&survivor.id, merged, unionid, now),
        )
        .await?;
        Ok(())
    }

    async fn run_update_profile(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        update: &ProfileUpdate,
        unionid: Option<&UnionId>,
        now: i64,
        merge: MergeRule,
    ) -> Result<Option<User>, StoreError> {
        // On SQLite in the writer's group commit; elsewhere in a transaction of its own. The
        // same data sent again is answered before this, from the caller's own read (see
        // `service::people`); the write checks again under its lock and then writes nothing.
        let (app, open, change) = (app_id.clone(), openid.clone(), update.clone());
        let user = self
            .grouped(true, move |store, conn| {
                let (app_id, openid, update) = (app.clone(), open.clone(), change.clone());
                Box::pin(async move {
                    store
                        .write_profile_in(conn, &app_id, &openid, &update, now)
                        .await
                })
            })
            .await?;
        let Some(user) = user else {
            return Ok(None);
        };
        if let (Some(unionid), None) = (unionid, &user.unionid) {
            // A link may merge persons: read the result back.
            self.link_unionid(&user.id, unionid, now, merge).await?;
            return self.fetch_user_by_identity(app_id, openid).await;
        }
        if update.leaves(&user, None) {
            // Nothing was written (see `write_profile_in`).
            return Ok(Some(user));
        }
        // The row as the UPDATE left it, without reading it again.
        Ok(Some(updated(user, update, now)))
    }

    /// A profile update inside the caller's transaction, with its events: the person as it
    /// was before (`None`: no such identity, nothing written), and whether to keep it. An
    /// update that would leave the person as they are writes nothing.
    async fn write_profile_in(
        &self,
        conn: &mut AnyConnection,
        app_id: &AppId,
        openid: &OpenId,
        update: &ProfileUpdate,
        now: i64,
    ) -> Result<(Option<User>, bool), StoreError> {
        const CURRENT: &str = concat!(
            "SELECT ",
            user_columns!(),
            " FROM identities i JOIN users u ON u.id = i.user_id \
             WHERE i.app_id = ? AND i.openid = ? FOR UPDATE"
        );
        const UPDATE: &str = "UPDATE users SET nickname = COALESCE(?, nickname), \
             avatar_url = COALESCE(?, avatar_url), gender = COALESCE(?, gender), \
             city = COALESCE(?, city), province = COALESCE(?, province), \
             country = COALESCE(?, country), language = COALESCE(?, language), \
             phone_country_code = COALESCE(?, phone_country_code), \
             phone_number = COALESCE(?, phone_number), extra = COALESCE(?, extra), \
             updated_at = ? WHERE id = ?";
        let current = sqlx::query(self.q(CURRENT))
            .bind(app_id.as_str())
            .bind(openid.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(store_error)?;
        let Some(user) = current
            .as_ref()
            .map(user_from_row)
            .transpose()
            .map_err(store_error)?
        else {
            return Ok((None, false));
        };
        if update.leaves(&user, None) {
            return Ok((Some(user), false));
        }
        let phone = update.phone.as_ref();
        sqlx::query(self.q(UPDATE))
            .bind(update.nickname.as_deref())
            .bind(update.avatar_url.as_deref())
            .bind(update.gender)
            .bind(update.city.as_deref())
            .bind(update.province.as_deref())
            .bind(update.country.as_deref())
            .bind(update.language.as_deref())
            .bind(phone.map(|p| p.country_code.as_str()))
            .bind(phone.map(|p| p.number.as_str()))
            .bind(update.extra.as_deref())
            .bind(now)
            .bind(user.id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(store_error)?;
        let through = Through { app_id, openid };
        let fields = update.changed_fields(&user);
        if !fields.is_empty() {
            let event = Event::profile_updated(&user.id, through, &fields, now);
            emit(self, &mut *conn, &event).await.map_err(store_error)?;
        }
        if let Some(phone) = phone.filter(|p| user.phone.as_ref() != Some(*p)) {
            let event = Event::phone_bound(&user.id, through, &mask_phone(&phone.number), now);
            emit(self, &mut *conn, &event).await.map_err(store_error)?;
        }
        Ok((Some(user), true))
    }
}

/// `user` as `UPDATE ... SET field = COALESCE(?, field)` leaves it.
fn updated(mut user: User, update: &ProfileUpdate, now: i64) -> User {
    let set = |field: &mut Option<String>, new: &Option<String>| {
        if let Some(new) = new {
            *field = Some(new.clone());
        }
    };
    let p = &mut user.profile;
    set(&mut p.nickname, &update.nickname);
    set(&mut p.avatar_url, &update.avatar_url);
    if let Some(gender) = update.gender {
        p.gender = gender;
    }
    set(&mut p.city, &update.city);
    set(&mut p.province, &update.province);
    set(&mut p.country, &update.country);
    set(&mut p.language, &update.language);
    if let Some(phone) = &update.phone {
        user.phone = Some(phone.clone());
    }
    set(&mut user.extra, &update.extra);
    user.updated_at = now;
    user
}

// Reads run in the caller's task; writes run detached (see [`SqlStore`]).
#[async_trait]
impl UserStore for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        SqlStore::ping(self).await
    }

    async fn login(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        unionid: Option<&UnionId>,
        now: i64,
        merge: MergeRule,
    ) -> Result<LoginOutcome, StoreError> {
        // Not detached as a whole: its reads may be dropped anywhere, and each of its writes
        // runs to completion by itself.
        self.run_login(app_id, openid, unionid, now, merge).await
    }

    async fn user_by_identity(
        &self,
        app_id: &AppId,
        openid: &OpenId,
    ) -> Result<Option<User>, StoreError> {
        self.fetch_user_by_identity(app_id, openid).await
    }

    async fn identities(&self, user_id: &UserId) -> Result<Vec<Identity>, StoreError> {
        const SQL: &str = "SELECT app_id, openid, created_at FROM identities WHERE user_id = ? \
                           ORDER BY created_at, app_id";
        let generation = match &self.auth_cache {
            Some(cache) => {
                if let Some(identities) = cache.identities(user_id) {
                    return Ok(identities);
                }
                cache.generation()
            }
            None => 0,
        };
        let rows = sqlx::query(self.q(SQL))
            .bind(user_id.as_str())
            .fetch_all(&mut *self.reader().await?)
            .await
            .map_err(store_error)?;
        let identities: Vec<Identity> = rows
            .iter()
            .map(identity_from_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error)?;
        if let Some(cache) = &self.auth_cache {
            cache.fill_identities(user_id, generation, &identities);
        }
        Ok(identities)
    }

    async fn update_profile(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        update: &ProfileUpdate,
        unionid: Option<&UnionId>,
        now: i64,
        merge: MergeRule,
    ) -> Result<Option<User>, StoreError> {
        let (app_id, openid) = (app_id.clone(), openid.clone());
        let (update, unionid) = (update.clone(), unionid.cloned());
        self.detached(move |store| {
            let (app_id, openid) = (app_id.clone(), openid.clone());
            let (update, unionid) = (update.clone(), unionid.clone());
            async move {
                store
                    .run_update_profile(&app_id, &openid, &update, unionid.as_ref(), now, merge)
                    .await
            }
        })
        .await
    }
}

/// The names of the user columns that other tables share: as selected by [`user_columns`],
/// or renamed where a query joins users to sessions.
pub(super) struct UserNames {
    id: &'static str,
    created_at: &'static str,
    updated_at: &'static str,
}

impl UserNames {
    /// As [`user_columns`] selects them.
    const PLAIN: Self = Self {
        id: "id",
        created_at: "created_at",
        updated_at: "updated_at",
    };
    /// As [`joined_user_columns`] renames them.
    pub(super) const JOINED: Self = Self {
        id: "user_id",
        created_at: "user_created_at",
        updated_at: "user_updated_at",
    };
}

pub(super) fn user_from_row(row: &AnyRow) -> Result<User, sqlx::Error> {
    user_from_named(row, &UserNames::PLAIN)
}

/// A user from a row that names its shared columns as `names` says.
pub(super) fn user_from_named(row: &AnyRow, names: &UserNames) -> Result<User, sqlx::Error> {
    let unionid: Option<String> = row.try_get("unionid")?;
    let phone_country_code: Option<String> = row.try_get("phone_country_code")?;
    let phone_number: Option<String> = row.try_get("phone_number")?;
    Ok(User {
        id: UserId::new(row.try_get::<String, _>(names.id)?),
        unionid: unionid
            .map(UnionId::parse)
            .transpose()
            .map_err(corrupt("unionid"))?,
        profile: Profile {
            nickname: row.try_get("nickname")?,
            avatar_url: row.try_get("avatar_url")?,
            gender: row.try_get("gender")?,
            city: row.try_get("city")?,
            province: row.try_get("province")?,
            country: row.try_get("country")?,
            language: row.try_get("language")?,
        },
        phone: match (phone_country_code, phone_number) {
            (Some(country_code), Some(number)) if !number.is_empty() => Some(Phone {
                country_code,
                number,
            }),
            _ => None,
        },
        extra: row.try_get("extra")?,
        created_at: row.try_get(names.created_at)?,
        updated_at: row.try_get(names.updated_at)?,
    })
}

pub(super) fn identity_from_row(row: &AnyRow) -> Result<Identity, sqlx::Error> {
    Ok(Identity {
        app_id: AppId::parse(row.try_get::<String, _>("app_id")?).map_err(corrupt("app_id"))?,
        openid: OpenId::parse(row.try_get::<String, _>("openid")?).map_err(corrupt("openid"))?,
        created_at: row.try_get("created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_returning_login_keeps_the_auth_cache_and_a_unionid_link_moves_it() {
        const NOW: i64 = 1_700_000_000;
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::sqlite_in(dir.path()).await;
        let app = AppId::parse("wx1234567890abcdef").unwrap();
        let openid = OpenId::parse("o-returning").unwrap();
        let merge = crate::service::people::merge;
        let first = store.login(&app, &openid, None, NOW, merge).await.unwrap();
        assert!(first.is_new_user);
        let cache = store.auth_cache.clone().expect("SQLite has an auth cache");
        let before = cache.generation();
        let again = store
            .login(&app, &openid, None, NOW + 1, merge)
            .await
            .unwrap();
        assert!(!again.is_new_user);
        assert_eq!(again.user.id, first.user.id);
        assert_eq!(
            cache.generation(),
            before,
            "a returning login moved the cache"
        );
        let unionid = UnionId::parse("u-linked").unwrap();
        let linked = store
            .login(&app, &openid, Some(&unionid), NOW + 2, merge)
            .await
            .unwrap();
        assert_eq!(linked.user.unionid.as_ref(), Some(&unionid));
        assert!(
            cache.generation() > before,
            "linking a unionid left the cache as it was"
        );
    }

    #[test]
    fn an_update_sets_what_it_names_and_keeps_the_rest() {
        let user = User {
            id: UserId::new("u1".to_owned()),
            unionid: None,
            profile: Profile {
                nickname: Some("old".into()),
                avatar_url: Some("https://a/1.png".into()),
                gender: 1,
                city: Some("Shenzhen".into()),
                province: None,
                country: None,
                language: Some("zh_CN".into()),
            },
            phone: None,
            extra: Some("{}".into()),
            created_at: 10,
            updated_at: 20,
        };
        let update = ProfileUpdate {
            nickname: Some("new".into()),
            gender: Some(2),
            province: Some("Guangdong".into()),
            phone: Some(Phone {
                country_code: "86".into(),
                number: "13800000000".into(),
            }),
            ..ProfileUpdate::default()
        };
        let after = updated(user.clone(), &update, 30);
        assert_eq!(after.profile.nickname.as_deref(), Some("new"));
        assert_eq!(after.profile.gender, 2);
        assert_eq!(after.profile.province.as_deref(), Some("Guangdong"));
        assert_eq!(after.profile.city, user.profile.city);
        assert_eq!(after.profile.avatar_url, user.profile.avatar_url);
        assert_eq!(after.profile.language, user.profile.language);
        assert_eq!(after.phone, update.phone);
        assert_eq!(after.extra, user.extra);
        assert_eq!((after.created_at, after.updated_at), (10, 30));
    }

    /// The same profile sent again (as a client does on every launch) is answered from a read:
    /// the stored person, its `updated_at` and the events stay as they were.
    #[tokio::test]
    async fn an_update_that_changes_nothing_writes_nothing() {
        use crate::store::UserStore as _;
        const NOW: i64 = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::sqlite_in(dir.path()).await;
        let (app, openid) = (
            AppId::parse("wx1111111111111111").unwrap(),
            OpenId::parse("o-again").unwrap(),
        );
        let merge = crate::service::people::merge;
        store.login(&app, &openid, None, NOW, merge).await.unwrap();
        let events = || async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events")
                .fetch_one(store.pool())
                .await
                .unwrap()
        };
        let update = |nickname: &str| ProfileUpdate {
            nickname: Some(nickname.to_owned()),
            city: Some("Shenzhen".to_owned()),
            ..ProfileUpdate::default()
        };
        let set = |update: ProfileUpdate, now: i64| {
            let (store, app, openid) = (store.clone(), app.clone(), openid.clone());
            async move {
                store
                    .update_profile(&app, &openid, &update, None, now, merge)
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        let first = set(update("A"), NOW + 10).await;
        assert_eq!(first.updated_at, NOW + 10);
        let events_after_first = events().await;

        let again = set(update("A"), NOW + 20).await;
        assert_eq!(again, first);
        let stored = store
            .user_by_identity(&app, &openid)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, first);
        assert_eq!(events().await, events_after_first);

        let changed = set(update("B"), NOW + 30).await;
        assert_eq!(changed.profile.nickname.as_deref(), Some("B"));
        assert_eq!(changed.updated_at, NOW + 30);
        assert_eq!(events().await, events_after_first + 1);
    }

    /// The events of first logins, and a delivery per endpoint that takes each: on SQLite
    /// all of them are written in one text with the person and the identity.
    #[tokio::test]
    async fn a_first_login_writes_its_events_and_a_delivery_for_each_endpoint_that_takes_one() {
        use super::super::events::Endpoint;
        use crate::store::UserStore as _;
        const NOW: i64 = 1_800_000_000;
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::sqlite_in(dir.path()).await;
        store.set_endpoints(vec![
            Endpoint {
                url: "https://all.example/hook".to_owned(),
                types: None,
            },
            Endpoint {
                url: "https://identities.example/hook".to_owned(),
                types: Some(vec!["identity.created".to_owned()]),
            },
            Endpoint {
                url: "https://merges.example/hook".to_owned(),
                types: Some(vec!["person.merged".to_owned()]),
            },
        ]);
        let unionid = UnionId::parse("u-one-person").unwrap();
        let login = |app: &'static str, openid: &'static str| {
            let (store, unionid) = (store.clone(), unionid.clone());
            async move {
                store
                    .login(
                        &AppId::parse(app).unwrap(),
                        &OpenId::parse(openid).unwrap(),
                        Some(&unionid),
                        NOW,
                        crate::service::people::merge,
                    )
                    .await
                    .unwrap()
            }
        };
        let first = login("wx1111111111111111", "o-first").await;
        let second = login("wx2222222222222222", "o-second").await;
        assert!(first.is_new_user && first.is_new_identity);
        assert!(!second.is_new_user && second.is_new_identity);
        assert_eq!(first.user.id, second.user.id);
        assert_eq!(first.user.unionid.as_ref(), Some(&unionid));

        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT e.type, e.user_id, d.endpoint FROM webhook_deliveries d \
             JOIN events e ON e.seq = d.event_seq AND e.user_id = d.user_id \
             ORDER BY d.event_seq, d.endpoint",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        let id = first.user.id.as_str();
        let row =
            |kind: &str, endpoint: &str| (kind.to_owned(), id.to_owned(), endpoint.to_owned());
        assert_eq!(
            rows,
            [
                row("person.created", "https://all.example/hook"),
                row("identity.created", "https://all.example/hook"),
                row("identity.created", "https://identities.example/hook"),
                row("identity.created", "https://all.example/hook"),
                row("identity.created", "https://identities.example/hook"),
            ]
        );
        let identities: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM identities WHERE user_id = ?")
                .bind(id)
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(identities, 2);
        let stored = store
            .user_by_identity(
                &AppId::parse("wx2222222222222222").unwrap(),
                &OpenId::parse("o-second").unwrap(),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, first.user);
    }
}
