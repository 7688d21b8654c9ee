//! Sessions and their tokens in SQL: tokens by SHA-256 only; a used refresh token stays until
//! it expires, so that presenting it again is recognised as reuse.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row as _};
use wxauth_wechat::{AppId, OpenId};

use super::events::session_revoked;
use super::users::{UserNames, joined_user_columns, user_from_named};
use super::{Query, SqlStore, corrupt, store_error};
use crate::model::User;
use crate::store::{
    AccessCheck, RefreshOutcome, Session, SessionRecord, SessionStore, StoreError, Successor,
    TokenEntry,
};
use crate::tokens::TokenHash;

macro_rules! session_columns {
    () => {
        "s.id, s.app_id, s.openid, s.session_key, s.created_at, s.last_seen_at, s.expires_at, \
         s.revoked_at, s.user_agent, s.ip"
    };
}

/// The claim of a refresh token, once its rotation is decided.
macro_rules! claim_decided {
    () => {
        "UPDATE tokens SET used_at = ? WHERE hash = ? AND kind = 'refresh'"
    };
}

/// Keeps the pair a rotation gave, for a second use of its token within the grace.
macro_rules! keep_successor {
    () => {
        "INSERT INTO refresh_grace (hash, session_id, successor, expires_at) VALUES (?, ?, ?, ?)"
    };
}

/// The access tokens a rotation replaces: one already expired goes now, a live one expires
/// now (and is kept for a logout until the purge, like any expired one).
macro_rules! drop_expired_access {
    () => {
        "DELETE FROM tokens WHERE session_id = ? AND kind = 'access' AND expires_at <= ?"
    };
}
macro_rules! expire_access {
    () => {
        "UPDATE tokens SET expires_at = ? WHERE session_id = ? AND kind = 'access' \
         AND expires_at > ?"
    };
}

/// A session's new pair of tokens.
macro_rules! insert_token_pair {
    () => {
        "INSERT INTO tokens (hash, session_id, kind, expires_at) \
         VALUES (?, ?, 'access', ?), (?, ?, 'refresh', ?)"
    };
}

macro_rules! touch {
    () => {
        "UPDATE sessions SET last_seen_at = ? WHERE id = ?"
    };
}

/// Binds [`insert_token_pair`]'s values.
fn bind_token_pair<'q>(
    query: Query<'q>,
    session_id: &'q str,
    access: &TokenEntry,
    refresh: &TokenEntry,
) -> Query<'q> {
    query
        .bind(access.hash.to_hex())
        .bind(session_id)
        .bind(access.expires_at)
        .bind(refresh.hash.to_hex())
        .bind(session_id)
        .bind(refresh.expires_at)
}

/// The writes of a rotation whose token was claimed (or, on SQLite, is to be), its session
/// live: lifetimes already capped to the session's.
struct Rotation<'a> {
    hash: &'a str,
    session_id: &'a str,
    access: TokenEntry,
    refresh: TokenEntry,
    /// The kept pair (sealed) and until when.
    successor: Option<(&'a str, i64)>,
    now: i64,
}

impl<'a> Rotation<'a> {
    /// SQLite: the claim and every write in one text, one hand-off to the connection's
    /// thread (SQLite runs a text's statements in order; the caller's savepoint keeps them
    /// all or none).
    async fn write_at_once(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        const KEPT: &str = concat!(
            claim_decided!(),
            "; ",
            keep_successor!(),
            "; ",
            drop_expired_access!(),
            "; ",
            expire_access!(),
            "; ",
            insert_token_pair!(),
            "; ",
            touch!()
        );
        const UNKEPT: &str = concat!(
            claim_decided!(),
            "; ",
            drop_expired_access!(),
            "; ",
            expire_access!(),
            "; ",
            insert_token_pair!(),
            "; ",
            touch!()
        );
        let query = match self.successor {
            Some(successor) => self.keep(self.claim(sqlx::query(KEPT)), successor),
            None => self.claim(sqlx::query(UNKEPT)),
        };
        let query = self.expire(self.drop_expired(query));
        self.touch(self.tokens(query)).execute(conn).await?;
        Ok(())
    }

    /// Elsewhere: one statement at a time (after the claim).
    async fn write(&self, store: &SqlStore, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        if let Some(successor) = self.successor {
            self.keep(sqlx::query(store.q(keep_successor!())), successor)
                .execute(&mut *conn)
                .await?;
        }
        self.drop_expired(sqlx::query(store.q(drop_expired_access!())))
            .execute(&mut *conn)
            .await?;
        self.expire(sqlx::query(store.q(expire_access!())))
            .execute(&mut *conn)
            .await?;
        self.tokens(sqlx::query(store.q(insert_token_pair!())))
            .execute(&mut *conn)
            .await?;
        self.touch(sqlx::query(store.q(touch!())))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    fn claim(&self, query: Query<'a>) -> Query<'a> {
        query.bind(self.now).bind(self.hash)
    }

    fn keep(&self, query: Query<'a>, (sealed, until): (&'a str, i64)) -> Query<'a> {
        query
            .bind(self.hash)
            .bind(self.session_id)
            .bind(sealed)
            .bind(until)
    }

    fn drop_expired(&self, query: Query<'a>) -> Query<'a> {
        query.bind(self.session_id).bind(self.now)
    }

    fn expire(&self, query: Query<'a>) -> Query<'a> {
        query.bind(self.now).bind(self.session_id).bind(self.now)
    }

    fn tokens(&self, query: Query<'a>) -> Query<'a> {
        bind_token_pair(query, self.session_id, &self.access, &self.refresh)
    }

    fn touch(&self, query: Query<'a>) -> Query<'a> {
        query.bind(self.now).bind(self.session_id)
    }
}

/// Why a session whose used refresh token came back was revoked.
const REUSED: &str = "refresh_token_reused";

/// Revokes one session (and so all its tokens).
const REVOKE: &str =
    "UPDATE sessions SET revoked_at = ?, revoke_reason = ? WHERE id = ? AND revoked_at IS NULL";

impl SqlStore {
    /// An access token's session and the session's person, in one read (the hot path of every
    /// authenticated request). The person is `None` when it no longer exists.
    pub async fn authenticate_with_user(
        &self,
        access: &TokenHash,
        now: i64,
    ) -> Result<(AccessCheck, Option<User>), StoreError> {
        const SQL: &str = concat!(
            "SELECT t.expires_at AS token_expires_at, ",
            session_columns!(),
            ", ",
            joined_user_columns!(),
            " FROM tokens t JOIN sessions s ON s.id = t.session_id \
             LEFT JOIN identities i ON i.app_id = s.app_id AND i.openid = s.openid \
             LEFT JOIN users u ON u.id = i.user_id \
             WHERE t.hash = ? AND t.kind = 'access'"
        );
        let generation = match &self.auth_cache {
            Some(cache) => {
                if let Some((check, user)) = cache.get(access, now) {
                    return Ok((check, Some(user)));
                }
                cache.generation()
            }
            None => 0,
        };
        let row = sqlx::query(self.q(SQL))
            .bind(access.to_hex())
            .fetch_optional(&mut *self.reader().await?)
            .await
            .map_err(store_error)?;
        let Some(row) = row else {
            return Ok((AccessCheck::Unknown, None));
        };
        let token_expires_at: i64 = row.try_get("token_expires_at").map_err(store_error)?;
        let session = session_from_row(&row).map_err(store_error)?;
        let check = AccessCheck::judge(session, token_expires_at, now);
        let user = match (&check, row.try_get::<Option<String>, _>("user_id")) {
            (AccessCheck::Valid { .. }, Ok(Some(_))) => {
                Some(user_from_named(&row, &UserNames::JOINED).map_err(store_error)?)
            }
            (_, Err(err)) => return Err(store_error(err)),
            _ => None,
        };
        if let (Some(cache), Some(user)) = (&self.auth_cache, &user) {
            cache.fill(*access, generation, &check, user);
        }
        Ok((check, user))
    }

    /// PostgreSQL: the session and its tokens in one statement (atomic by itself), one
    /// round trip instead of four.
    async fn run_create_postgres(
        &self,
        session: &Session,
        access: TokenEntry,
        refresh: TokenEntry,
    ) -> Result<(), StoreError> {
        const INSERT_WITH_TOKENS: &str = "WITH s AS (INSERT INTO sessions (id, app_id, openid, \
             session_key, created_at, last_seen_at, expires_at, user_agent, ip) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)) \
             INSERT INTO tokens (hash, session_id, kind, expires_at) \
             VALUES (?, ?, 'access', ?), (?, ?, 'refresh', ?)";
        bind_session(sqlx::query(self.q(INSERT_WITH_TOKENS)), session)
            .bind(access.hash.to_hex())
            .bind(&session.id)
            .bind(access.expires_at)
            .bind(refresh.hash.to_hex())
            .bind(&session.id)
            .bind(refresh.expires_at)
            .execute(self.writer())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// The session and its tokens, inside the caller's transaction.
    async fn insert_session(
        &self,
        conn: &mut AnyConnection,
        session: &Session,
        access: TokenEntry,
        refresh: TokenEntry,
    ) -> Result<(), StoreError> {
        const INSERT: &str = "INSERT INTO sessions (id, app_id, openid, session_key, created_at, \
                              last_seen_at, expires_at, user_agent, ip) \
                              VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
        bind_session(sqlx::query(self.q(INSERT)), session)
            .execute(&mut *conn)
            .await
            .map_err(store_error)?;
        self.insert_tokens(conn, &session.id, access, refresh).await
    }

    async fn insert_tokens(
        &self,
        conn: &mut AnyConnection,
        session_id: &str,
        access: TokenEntry,
        refresh: TokenEntry,
    ) -> Result<(), StoreError> {
        bind_token_pair(
            sqlx::query(self.q(insert_token_pair!())),
            session_id,
            &access,
            &refresh,
        )
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn run_rotate(
        &self,
        conn: &mut AnyConnection,
        refresh: &TokenHash,
        new_access: TokenEntry,
        new_refresh: TokenEntry,
        successor: Option<&Successor>,
        now: i64,
    ) -> Result<(RefreshOutcome, bool), StoreError> {
        const CLAIM: &str = "UPDATE tokens SET used_at = ? WHERE hash = ? AND kind = 'refresh' \
                             AND used_at IS NULL AND expires_at > ?";
        const WITH_SESSION: &str = concat!(
            "SELECT t.used_at, t.expires_at AS token_expires_at, ",
            session_columns!(),
            " FROM tokens t JOIN sessions s ON s.id = t.session_id \
             WHERE t.hash = ? AND t.kind = 'refresh'"
        );
        const REPLAY: &str =
            "SELECT successor FROM refresh_grace WHERE hash = ? AND expires_at > ?";
        let hash = refresh.to_hex();
        // Exactly one presenter may use the token. On SQLite this transaction is the only
        // writer from its `BEGIN IMMEDIATE` on, so what it reads stays true until it commits,
        // and the claim is written with the rest of the rotation. Elsewhere the claim comes
        // first: the one statement that flips used_at decides between concurrent presenters.
        let sqlite = self.dialect == super::Dialect::Sqlite;
        let claimed_first = !sqlite
            && sqlx::query(self.q(CLAIM))
                .bind(now)
                .bind(&hash)
                .bind(now)
                .execute(&mut *conn)
                .await
                .map_err(store_error)?
                .rows_affected()
                == 1;
        let row = sqlx::query(self.q(WITH_SESSION))
            .bind(&hash)
            .fetch_optional(&mut *conn)
            .await
            .map_err(store_error)?;
        // Every way out says whether the changes are kept: the claim alone is rolled back.
        let Some(row) = row else {
            return Ok((RefreshOutcome::Unknown, false));
        };
        let session = session_from_row(&row).map_err(store_error)?;
        if session.revoked_at.is_some() {
            return Ok((RefreshOutcome::Revoked, false));
        }
        let used_at: Option<i64> = row.try_get("used_at").map_err(store_error)?;
        let claimed = if sqlite {
            let token_expires_at: i64 = row.try_get("token_expires_at").map_err(store_error)?;
            used_at.is_none() && token_expires_at > now
        } else {
            claimed_first
        };
        if !claimed {
            if used_at.is_none() {
                return Ok((RefreshOutcome::Expired, false));
            }
            // Used moments ago: the same answer again, nothing changes.
            let replay: Option<String> = sqlx::query_scalar(self.q(REPLAY))
                .bind(&hash)
                .bind(now)
                .fetch_optional(&mut *conn)
                .await
                .map_err(store_error)?;
            if let Some(successor) = replay {
                return Ok((RefreshOutcome::Replayed { session, successor }, false));
            }
            // Reuse: someone holds a copy of an old refresh token. End the session.
            let revoked = sqlx::query(self.q(REVOKE))
                .bind(now)
                .bind(REUSED)
                .bind(&session.id)
                .execute(&mut *conn)
                .await
                .map_err(store_error)?
                .rows_affected();
            if revoked == 1 {
                session_revoked(
                    self,
                    &mut *conn,
                    &session.id,
                    session.app_id.as_str(),
                    session.openid.as_str(),
                    REUSED,
                    now,
                )
                .await
                .map_err(store_error)?;
            }
            return Ok((RefreshOutcome::Reused(session.id), true));
        }
        if session.expires_at <= now {
            return Ok((RefreshOutcome::Expired, false));
        }
        let cap = |entry: TokenEntry| TokenEntry {
            expires_at: entry.expires_at.min(session.expires_at),
            ..entry
        };
        let rotation = Rotation {
            hash: &hash,
            session_id: &session.id,
            access: cap(new_access),
            refresh: cap(new_refresh),
            successor: successor.map(|s| (s.sealed.as_str(), s.expires_at.min(session.expires_at))),
            now,
        };
        if sqlite {
            rotation.write_at_once(conn).await
        } else {
            rotation.write(self, conn).await
        }
        .map_err(store_error)?;
        Ok((
            RefreshOutcome::Rotated(Session {
                last_seen_at: now,
                ..session
            }),
            true,
        ))
    }

    /// Revokes one live session and writes its `session.revoked`, in one transaction.
    async fn run_revoke(&self, session_id: &str, reason: &str, now: i64) -> Result<(), StoreError> {
        const IDENTITY: &str = "SELECT app_id, openid FROM sessions WHERE id = ?";
        let mut tx = self.begin().await?;
        let revoked = sqlx::query(self.q(REVOKE))
            .bind(now)
            .bind(reason)
            .bind(session_id)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        if revoked == 1 {
            let row = sqlx::query(self.q(IDENTITY))
                .bind(session_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(store_error)?;
            let app_id: String = row.try_get(0).map_err(store_error)?;
            let openid: String = row.try_get(1).map_err(store_error)?;
            session_revoked(self, &mut tx, session_id, &app_id, &openid, reason, now)
                .await
                .map_err(store_error)?;
        }
        tx.commit().await.map_err(store_error)?;
        if revoked == 1 {
            self.events_written();
        }
        Ok(())
    }

    /// Revokes the live sessions of an identity, each with its `session.revoked`, in one
    /// transaction.
    async fn run_revoke_identity(
        &self,
        app_id: &str,
        openid: &str,
        reason: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        const LIVE: &str = "SELECT id FROM sessions WHERE app_id = ? AND openid = ? \
                            AND revoked_at IS NULL AND expires_at > ? FOR UPDATE";
        let mut tx = self.begin().await?;
        let rows = sqlx::query(self.q(LIVE))
            .bind(app_id)
            .bind(openid)
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
        let mut revoked = 0;
        for row in rows {
            let id: String = row.try_get(0).map_err(store_error)?;
            let n = sqlx::query(self.q(REVOKE))
                .bind(now)
                .bind(reason)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
            if n == 1 {
                session_revoked(self, &mut tx, &id, app_id, openid, reason, now)
                    .await
                    .map_err(store_error)?;
                revoked += 1;
            }
        }
        tx.commit().await.map_err(store_error)?;
        if revoked > 0 {
            self.events_written();
        }
        Ok(revoked)
    }

    /// The session of the token `hash`, by `sql` (which selects a session by one token hash).
    async fn session_of_token(
        &self,
        sql: &'static str,
        hash: &TokenHash,
    ) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(self.q(sql))
            .bind(hash.to_hex())
            .fetch_optional(&mut *self.reader().await?)
            .await
            .map_err(store_error)?;
        row.as_ref()
            .map(session_from_row)
            .transpose()
            .map_err(store_error)
    }

    async fn run_purge_expired(&self, now: i64, idle_before: i64) -> Result<u64, StoreError> {
        // A used refresh token stays until it expires (a second use is reuse); an access token
        // stays a while after (an expired token still logs its session out).
        const TOKENS: &str = "DELETE FROM tokens WHERE expires_at <= ? AND kind = 'refresh'";
        const ACCESS: &str = "DELETE FROM tokens WHERE expires_at <= ? AND kind = 'access'";
        const SUCCESSORS: &str = "DELETE FROM refresh_grace WHERE expires_at <= ?";
        const SESSIONS: &str = "DELETE FROM sessions WHERE expires_at <= ? OR (last_seen_at <= ? \
             AND NOT EXISTS (SELECT 1 FROM tokens t WHERE t.session_id = sessions.id))";
        const CODES: &str = "DELETE FROM login_codes WHERE expires_at <= ?";
        let mut tx = self.begin().await?;
        let tokens = sqlx::query(self.q(TOKENS))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        let access = sqlx::query(self.q(ACCESS))
            .bind(idle_before)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        let successors = sqlx::query(self.q(SUCCESSORS))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        let sessions = sqlx::query(self.q(SESSIONS))
            .bind(now)
            .bind(idle_before)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        let codes = sqlx::query(self.q(CODES))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
        tx.commit().await.map_err(store_error)?;
        Ok(tokens + access + successors + sessions + codes)
    }
}

// Reads run in the caller's task; writes run detached (see [`SqlStore`]).
#[async_trait]
impl SessionStore for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        SqlStore::ping(self).await
    }

    async fn create(
        &self,
        session: &Session,
        access: TokenEntry,
        refresh: TokenEntry,
    ) -> Result<(), StoreError> {
        let session = session.clone();
        if self.dialect == super::Dialect::Postgres {
            return self
                .detached_quiet(move |store| {
                    let session = session.clone();
                    async move { store.run_create_postgres(&session, access, refresh).await }
                })
                .await;
        }
        if let Some(group) = &self.group {
            return group
                .insert_session(NewSession {
                    session,
                    access,
                    refresh,
                })
                .await;
        }
        // A new session: nothing cached refers to it.
        self.grouped(false, move |store, conn| {
            let session = session.clone();
            Box::pin(async move {
                store
                    .insert_session(conn, &session, access, refresh)
                    .await
                    .map(|()| ((), true))
            })
        })
        .await
    }

    async fn authenticate(&self, access: &TokenHash, now: i64) -> Result<AccessCheck, StoreError> {
        const SQL: &str = concat!(
            "SELECT t.expires_at AS token_expires_at, ",
            session_columns!(),
            " FROM tokens t JOIN sessions s ON s.id = t.session_id \
             WHERE t.hash = ? AND t.kind = 'access'"
        );
        let row = sqlx::query(self.q(SQL))
            .bind(access.to_hex())
            .fetch_optional(&mut *self.reader().await?)
            .await
            .map_err(store_error)?;
        let Some(row) = row else {
            return Ok(AccessCheck::Unknown);
        };
        let token_expires_at: i64 = row.try_get("token_expires_at").map_err(store_error)?;
        let session = session_from_row(&row).map_err(store_error)?;
        Ok(AccessCheck::judge(session, token_expires_at, now))
    }

    async fn session_of_refresh(&self, refresh: &TokenHash) -> Result<Option<Session>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            session_columns!(),
            " FROM tokens t JOIN sessions s ON s.id = t.session_id \
             WHERE t.hash = ? AND t.kind = 'refresh'"
        );
        self.session_of_token(SQL, refresh).await
    }

    async fn session_of_access(&self, access: &TokenHash) -> Result<Option<Session>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            session_columns!(),
            " FROM tokens t JOIN sessions s ON s.id = t.session_id \
             WHERE t.hash = ? AND t.kind = 'access'"
        );
        self.session_of_token(SQL, access).await
    }

    async fn rotate(
        &self,
        refresh: &TokenHash,
        new_access: TokenEntry,
        new_refresh: TokenEntry,
        successor: Option<Successor>,
        now: i64,
    ) -> Result<RefreshOutcome, StoreError> {
        let refresh = *refresh;
        self.grouped(true, move |store, conn| {
            let successor = successor.clone();
            Box::pin(async move {
                store
                    .run_rotate(
                        conn,
                        &refresh,
                        new_access,
                        new_refresh,
                        successor.as_ref(),
                        now,
                    )
                    .await
            })
        })
        .await
    }

    async fn revoke(&self, session_id: &str, reason: &str, now: i64) -> Result<(), StoreError> {
        let (session_id, reason) = (session_id.to_owned(), reason.to_owned());
        self.detached(move |store| {
            let (session_id, reason) = (session_id.clone(), reason.clone());
            async move { store.run_revoke(&session_id, &reason, now).await }
        })
        .await
    }

    async fn revoke_identity(
        &self,
        app_id: &AppId,
        openid: &OpenId,
        reason: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let (app_id, openid) = (app_id.to_string(), openid.to_string());
        let reason = reason.to_owned();
        self.detached(move |store| {
            let (app_id, openid, reason) = (app_id.clone(), openid.clone(), reason.clone());
            async move {
                store
                    .run_revoke_identity(&app_id, &openid, &reason, now)
                    .await
            }
        })
        .await
    }

    async fn get(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            session_columns!(),
            ", s.revoke_reason FROM sessions s WHERE s.id = ?"
        );
        let row = sqlx::query(self.q(SQL))
            .bind(session_id.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?;
        row.as_ref()
            .map(record_from_row)
            .transpose()
            .map_err(store_error)
    }

    async fn list_identity(
        &self,
        app_id: &AppId,
        openid: &OpenId,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            session_columns!(),
            ", s.revoke_reason FROM sessions s WHERE s.app_id = ? AND s.openid = ? \
             ORDER BY s.created_at DESC, s.id"
        );
        let rows = sqlx::query(self.q(SQL))
            .bind(app_id.as_str())
            .bind(openid.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        rows.iter()
            .map(record_from_row)
            .collect::<Result<_, _>>()
            .map_err(store_error)
    }

    async fn delete_identity(&self, app_id: &AppId, openid: &OpenId) -> Result<u64, StoreError> {
        const TOKENS: &str = "DELETE FROM tokens WHERE session_id IN \
             (SELECT s.id FROM sessions s WHERE s.app_id = ? AND s.openid = ?)";
        const SESSIONS: &str = "DELETE FROM sessions WHERE app_id = ? AND openid = ?";
        let (app_id, openid) = (app_id.to_string(), openid.to_string());
        self.detached(move |store| {
            let (app_id, openid) = (app_id.clone(), openid.clone());
            async move {
                let mut tx = store.begin().await?;
                sqlx::query(store.q(TOKENS))
                    .bind(app_id.clone())
                    .bind(openid.clone())
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                let n = sqlx::query(store.q(SESSIONS))
                    .bind(app_id)
                    .bind(openid)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?
                    .rows_affected();
                tx.commit().await.map_err(store_error)?;
                Ok(n)
            }
        })
        .await
    }

    async fn set_session_key(&self, session_id: &str, sealed: &str) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE sessions SET session_key = ? WHERE id = ?";
        let (session_id, sealed) = (session_id.to_owned(), sealed.to_owned());
        self.write_one(SQL, move |q| {
            q.bind(sealed.clone()).bind(session_id.clone())
        })
        .await?;
        Ok(())
    }

    async fn touch(&self, session_id: &str, now: i64) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE sessions SET last_seen_at = ? WHERE id = ? AND last_seen_at < ?";
        let session_id = session_id.to_owned();
        // The cache reads a session again when its use is due to be recorded.
        self.write_one_quiet(SQL, move |q| q.bind(now).bind(session_id.clone()).bind(now))
            .await?;
        Ok(())
    }

    async fn purge_expired(&self, now: i64, idle_before: i64) -> Result<u64, StoreError> {
        self.detached(move |store| async move { store.run_purge_expired(now, idle_before).await })
            .await
    }
}

fn record_from_row(row: &AnyRow) -> Result<SessionRecord, sqlx::Error> {
    Ok(SessionRecord {
        session: session_from_row(row)?,
        revoke_reason: row.try_get("revoke_reason")?,
    })
}

fn session_from_row(row: &AnyRow) -> Result<Session, sqlx::Error> {
    Ok(Session {
        id: row.try_get("id")?,
        app_id: AppId::parse(row.try_get::<String, _>("app_id")?).map_err(corrupt("app_id"))?,
        openid: OpenId::parse(row.try_get::<String, _>("openid")?).map_err(corrupt("openid"))?,
        sealed_session_key: row.try_get("session_key")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        user_agent: row.try_get("user_agent")?,
        ip: row.try_get("ip")?,
    })
}

/// A new session with its two tokens: rows only, with nothing to read or decide, so that
/// SQLite's group commit writes all the new sessions of a batch at once (see [`super::group`]).
pub(crate) struct NewSession {
    pub(crate) session: Session,
    pub(crate) access: TokenEntry,
    pub(crate) refresh: TokenEntry,
}

/// Writes new sessions and their tokens on `conn` (SQLite): one multi-row statement per table,
/// both in one text, so one execution (one hand-off to the connection's thread) writes them.
/// Nothing of it is kept unless all of it is: the caller rolls back on an error.
pub(crate) async fn insert_sessions(
    conn: &mut AnyConnection,
    new: &[NewSession],
) -> Result<(), sqlx::Error> {
    insert_sessions_in(conn, new, false).await
}

/// [`insert_sessions`], in a transaction of its own when `committed`: `BEGIN IMMEDIATE` and
/// `COMMIT` are part of the same text. After an error, the caller ends the transaction.
pub(crate) async fn insert_sessions_in(
    conn: &mut AnyConnection,
    new: &[NewSession],
    committed: bool,
) -> Result<(), sqlx::Error> {
    let sql = insert_sessions_sql(new.len(), committed);
    // A few sizes are common (a batch at light load); larger ones are prepared each time
    // rather than pushing the hot statements out of the connection's cache.
    let mut query = sqlx::query(&sql).persistent(new.len() <= 8);
    for new in new {
        query = bind_session(query, &new.session);
    }
    for new in new {
        query = bind_token_pair(query, &new.session.id, &new.access, &new.refresh);
    }
    query.execute(conn).await?;
    Ok(())
}

/// The text [`insert_sessions`] runs for `n` sessions.
fn insert_sessions_sql(n: usize, committed: bool) -> String {
    const SESSIONS: &str = "INSERT INTO sessions (id, app_id, openid, session_key, created_at, \
                            last_seen_at, expires_at, user_agent, ip) VALUES ";
    const SESSION_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?)";
    const TOKENS: &str = "; INSERT INTO tokens (hash, session_id, kind, expires_at) VALUES ";
    const TOKEN_ROWS: &str = "(?, ?, 'access', ?), (?, ?, 'refresh', ?)";
    const BEGIN: &str = "BEGIN IMMEDIATE; ";
    const COMMIT: &str = "; COMMIT";
    let mut sql = String::with_capacity(
        BEGIN.len()
            + SESSIONS.len()
            + TOKENS.len()
            + COMMIT.len()
            + n * (SESSION_ROW.len() + TOKEN_ROWS.len() + 4),
    );
    if committed {
        sql.push_str(BEGIN);
    }
    for (head, row) in [(SESSIONS, SESSION_ROW), (TOKENS, TOKEN_ROWS)] {
        sql.push_str(head);
        for i in 0..n {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(row);
        }
    }
    if committed {
        sql.push_str(COMMIT);
    }
    sql
}

/// Binds a session's columns in `INSERT INTO sessions` order (id, app_id, openid,
/// session_key, created_at, last_seen_at, expires_at, user_agent, ip).
fn bind_session<'q>(query: Query<'q>, session: &'q Session) -> Query<'q> {
    query
        .bind(&session.id)
        .bind(session.app_id.as_str())
        .bind(session.openid.as_str())
        .bind(&session.sealed_session_key)
        .bind(session.created_at)
        .bind(session.last_seen_at)
        .bind(session.expires_at)
        .bind(session.user_agent.as_deref())
        .bind(session.ip.as_deref())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::future::join_all;

    use super::*;
    use crate::store::UserStore as _;

    const NOW: i64 = 1_800_000_000;

    async fn store(dir: &tempfile::TempDir) -> SqlStore {
        SqlStore::sqlite_in(dir.path()).await
    }

    fn session(id: &str) -> Session {
        Session {
            id: id.to_owned(),
            app_id: AppId::parse("wx1234567890abcdef").unwrap(),
            openid: OpenId::parse("o-openid").unwrap(),
            sealed_session_key: "sealed".to_owned(),
            created_at: NOW,
            last_seen_at: NOW,
            expires_at: NOW + 3600,
            revoked_at: None,
            user_agent: None,
            ip: Some("10.0.0.1".to_owned()),
        }
    }

    fn token(name: &str) -> TokenEntry {
        TokenEntry {
            hash: TokenHash::of(name),
            expires_at: NOW + 600,
        }
    }

    async fn is_valid(store: &SqlStore, access: &str) -> bool {
        matches!(
            store
                .authenticate(&TokenHash::of(access), NOW)
                .await
                .unwrap(),
            AccessCheck::Valid { .. }
        )
    }

    #[tokio::test]
    async fn an_idle_store_lets_go_of_the_tokens_it_cached() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let session = session("s-idle");
        store
            .login(
                &session.app_id,
                &session.openid,
                None,
                NOW,
                crate::service::people::merge,
            )
            .await
            .unwrap();
        store
            .create(&session, token("a-idle"), token("r-idle"))
            .await
            .unwrap();
        let (check, user) = store
            .authenticate_with_user(&TokenHash::of("a-idle"), NOW)
            .await
            .unwrap();
        assert!(matches!(check, AccessCheck::Valid { .. }) && user.is_some());
        let cache = store.auth_cache.clone().expect("SQLite has an auth cache");
        assert_eq!(cache.len(), 1);
        // Nothing more happens: the entry, no longer served, goes by itself.
        tokio::time::sleep(super::super::FOREIGN_WRITES_SEEN_WITHIN * 3).await;
        assert_eq!(cache.len(), 0);
    }

    /// Writes sessions `ids` as one batch (queued together: the test runtime runs the writer
    /// only once all are queued), with a first login queued among them when `with_login` says
    /// so. The access token of the `i`th is named `a-{label}-{i}`.
    async fn create_together(
        store: &SqlStore,
        label: &str,
        ids: &[String],
        with_login: bool,
    ) -> Vec<bool> {
        let creates = ids.iter().enumerate().map(|(i, id)| {
            let store = store.clone();
            let session = session(id);
            let access = token(&format!("a-{label}-{i}"));
            let refresh = token(&format!("r-{label}-{i}"));
            async move { store.create(&session, access, refresh).await.is_ok() }
        });
        let login = async {
            if with_login {
                let openid = OpenId::parse("o-new-person").unwrap();
                let app = AppId::parse("wx1234567890abcdef").unwrap();
                let outcome = store
                    .login(&app, &openid, None, NOW, crate::service::people::merge)
                    .await
                    .unwrap();
                assert!(outcome.is_new_user);
            }
        };
        let (created, ()) = tokio::join!(join_all(creates), login);
        created
    }

    #[tokio::test]
    async fn a_session_that_cannot_be_written_fails_alone_and_its_batch_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let taken = "0".repeat(32);
        assert_eq!(
            create_together(&store, "first", std::slice::from_ref(&taken), false).await,
            [true]
        );
        for with_login in [false, true] {
            let label = format!("login-{with_login}");
            // Twenty new sessions, the seventh with an id already taken: a batch of sessions
            // alone (one execution with its transaction), then one with a first login in it.
            let ids: Vec<String> = (0..20)
                .map(|i| {
                    if i == 6 {
                        taken.clone()
                    } else {
                        format!("{with_login}-{i:02}")
                    }
                })
                .collect();
            let created = create_together(&store, &label, &ids, with_login).await;
            for (i, (id, created)) in ids.iter().zip(&created).enumerate() {
                assert_eq!(*created, i != 6, "session {id}");
                if i != 6 {
                    assert!(
                        is_valid(&store, &format!("a-{label}-{i}")).await,
                        "session {id}"
                    );
                }
            }
            // Nothing of the failed one was written, and the first session is as it was.
            assert!(!is_valid(&store, &format!("a-{label}-6")).await);
            assert!(is_valid(&store, "a-first-0").await);
            let openid = OpenId::parse("o-new-person").unwrap();
            let app = AppId::parse("wx1234567890abcdef").unwrap();
            assert_eq!(
                store
                    .user_by_identity(&app, &openid)
                    .await
                    .unwrap()
                    .is_some(),
                with_login
            );
        }
        // The writer is not left inside a transaction: writes go on at once.
        store
            .ready_for_writes(Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(
            create_together(&store, "after", &["after".to_owned()], false).await,
            [true]
        );
        assert!(is_valid(&store, "a-after-0").await);
    }

    #[tokio::test]
    async fn what_the_writer_commits_reaches_the_database_file_soon_after() {
        use sqlx::Connection as _;
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        // The file alone, without its WAL: what checkpoints have copied into it.
        let file = format!(
            "sqlite://{}?mode=ro&immutable=1",
            dir.path().join("wxauth.db").display()
        );
        let in_file = || async {
            let mut conn = sqlx::AnyConnection::connect(&file).await.unwrap();
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            n
        };
        let ids: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
        assert!(
            create_together(&store, "ckpt", &ids, false)
                .await
                .iter()
                .all(|ok| *ok)
        );
        assert_eq!(in_file().await, 0, "committed to the WAL only, at first");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while in_file().await != 5 {
            assert!(std::time::Instant::now() < deadline, "never checkpointed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(is_valid(&store, "a-ckpt-4").await);
    }

    #[test]
    fn the_text_for_n_sessions_has_a_row_per_session_in_each_table() {
        let sql = insert_sessions_sql(3, true);
        assert!(sql.starts_with("BEGIN IMMEDIATE; INSERT INTO sessions"));
        assert!(sql.ends_with("; COMMIT"));
        assert_eq!(sql.matches("(?, ?, ?, ?, ?, ?, ?, ?, ?)").count(), 3);
        assert_eq!(sql.matches("'access'").count(), 3);
        assert_eq!(sql.matches("'refresh'").count(), 3);
        assert!(!insert_sessions_sql(1, false).contains("BEGIN"));
    }
}
