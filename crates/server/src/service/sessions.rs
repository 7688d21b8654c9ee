//! Sessions: a bearer token authenticated into one [`Principal`], token pairs minted and
//! rotated, sessions revoked, the session_key opened.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use wxauth_wechat::{AppId, OpenId, SessionKey, UnionId};

use crate::config::{LimitedAction, TokenFormat};
use crate::error::ApiError;
use crate::jwt;
use crate::limits::Bucket;
use crate::model::{User, UserId};
use crate::service::audit;
use crate::state::AppState;
use crate::store::{
    AccessCheck, RefreshOutcome, Session, StoreError, Stores, Successor, TokenEntry,
};
use crate::tokens::{ACCESS_PREFIX, NewToken, REFRESH_PREFIX, TokenHash};

/// Who a live access token speaks for: what other services are told about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The person.
    pub user_id: UserId,
    /// The session the token belongs to.
    pub session_id: String,
    /// The mini program logged in through.
    pub app_id: AppId,
    /// The openid there.
    pub openid: OpenId,
    /// The person across mini programs, once known.
    pub unionid: Option<UnionId>,
    /// When the token was issued (Unix seconds; for opaque tokens, as their lifetime implies).
    pub issued_at: i64,
    /// When the token expires (Unix seconds).
    pub expires_at: i64,
}

/// An authenticated request's caller: the principal, its session and its person as stored.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who the token speaks for.
    pub principal: Principal,
    /// The session (with its sealed session_key).
    pub session: Session,
    /// The person.
    pub user: User,
}

/// A new access/refresh pair.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// Bearer token for API calls.
    pub access_token: String,
    /// Always "Bearer".
    #[schema(value_type = String, example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Single-use token for `POST /v1/auth/refresh`.
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: i64,
}

/// Authenticates a bearer token: a live token of a live session of an existing person. The
/// session is marked as used (at most once a minute).
pub async fn authenticate(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let caller = resolve(state, token).await?;
    // The person is active: counted with the session's use, so at most once a minute.
    if state.touch_later(&caller.session, state.now()) {
        state
            .stats
            .active(&caller.principal.app_id, &caller.principal.user_id);
    }
    Ok(caller)
}

/// What a token is, without touching its session (introspection never extends a session).
pub async fn resolve(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    if !looks_like_access_token(token) {
        return Err(ApiError::Unauthorized("the access token is not valid"));
    }
    let now = state.now();
    let hash = TokenHash::of(token);
    // Sessions in SQL: the session and its person in one read; in Redis, one read each.
    let (check, user) = match &state.stores.redis {
        None => state.stores.sql.authenticate_with_user(&hash, now).await?,
        Some(_) => (state.stores.sessions.authenticate(&hash, now).await?, None),
    };
    let (session, expires_at) = match check {
        AccessCheck::Valid {
            session,
            token_expires_at,
        } => (session, token_expires_at),
        AccessCheck::Expired => return Err(ApiError::TokenExpired),
        AccessCheck::Revoked => return Err(ApiError::TokenRevoked),
        AccessCheck::Unknown => {
            return Err(ApiError::Unauthorized("the access token is not valid"));
        }
    };
    let user = match (user, &state.stores.redis) {
        (Some(user), _) => Some(user),
        (None, None) => None,
        (None, Some(_)) => {
            state
                .stores
                .users
                .user_by_identity(&session.app_id, &session.openid)
                .await?
        }
    }
    .ok_or(ApiError::Unauthorized(
        "the user of this session no longer exists",
    ))?;
    Ok(Caller {
        principal: Principal {
            user_id: user.id.clone(),
            session_id: session.id.clone(),
            app_id: session.app_id.clone(),
            openid: session.openid.clone(),
            unionid: user.unionid.clone(),
            issued_at: (expires_at - state.lifetimes.access).max(session.created_at),
            expires_at,
        },
        session,
        user,
    })
}

/// Opaque tokens carry their prefix; JWTs are three dot-separated parts. Anything else is not
/// worth a store read.
fn looks_like_access_token(token: &str) -> bool {
    token.len() <= 4096
        && (token.starts_with(ACCESS_PREFIX)
            || (token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2))
}

/// Whom a new pair of tokens is for (a JWT names them; an opaque token does not need to).
pub struct Subject<'a> {
    /// The person.
    pub user: &'a User,
    /// The session.
    pub session: &'a Session,
}

/// Mints an access/refresh pair that ends no later than the session: the access token is a
/// JWT when so configured (it then needs its `subject`), else opaque; either way only its
/// hash is stored.
pub fn mint_pair(
    state: &AppState,
    now: i64,
    session_end: i64,
    subject: Option<&Subject<'_>>,
) -> Result<(TokenPair, TokenEntry, TokenEntry), ApiError> {
    let access_exp = (now + state.lifetimes.access).min(session_end);
    let refresh_exp = (now + state.lifetimes.refresh).min(session_end);
    let access = match (state.token_format, subject) {
        (TokenFormat::Opaque, _) | (TokenFormat::Jwt, None) => NewToken::generate(ACCESS_PREFIX),
        (TokenFormat::Jwt, Some(subject)) => {
            let mut claims = state.keys.claims(
                jwt::Subject {
                    user_id: subject.user.id.as_str(),
                    session_id: &subject.session.id,
                    app_id: subject.session.app_id.as_str(),
                    openid: subject.session.openid.as_str(),
                    unionid: subject.user.unionid.as_ref().map(UnionId::as_str),
                },
                now,
            );
            claims.exp = access_exp;
            NewToken::from_value(state.keys.sign(&claims)?)
        }
    };
    let refresh = NewToken::generate(REFRESH_PREFIX);
    let pair = TokenPair {
        access_token: access.value,
        token_type: "Bearer",
        expires_in: access_exp - now,
        refresh_token: refresh.value,
        refresh_expires_in: refresh_exp - now,
    };
    Ok((
        pair,
        TokenEntry {
            hash: access.hash,
            expires_at: access_exp,
        },
        TokenEntry {
            hash: refresh.hash,
            expires_at: refresh_exp,
        },
    ))
}

/// A rotation's pair as kept for a replay within `tokens.refresh_grace` (sealed; no `Debug`).
#[derive(Serialize, Deserialize)]
struct KeptPair {
    access_token: String,
    access_expires_at: i64,
    refresh_token: String,
    refresh_expires_at: i64,
}

/// What the sealed successor of the refresh token with hash `hash` (hex) is bound to.
pub(crate) fn successor_context(hash: &str) -> String {
    format!("refresh-successor:{hash}")
}

fn keep_pair(state: &AppState, hash: &TokenHash, pair: &TokenPair, now: i64) -> Option<Successor> {
    if state.lifetimes.refresh_grace <= 0 {
        return None;
    }
    let kept = KeptPair {
        access_token: pair.access_token.clone(),
        access_expires_at: now + pair.expires_in,
        refresh_token: pair.refresh_token.clone(),
        refresh_expires_at: now + pair.refresh_expires_in,
    };
    let json = serde_json::to_vec(&kept).ok()?;
    Some(Successor {
        sealed: state
            .data_key
            .seal_bytes(&json, &successor_context(&hash.to_hex())),
        expires_at: now + state.lifetimes.refresh_grace,
    })
}

/// The pair a replayed refresh token gets again, its lifetimes counted from `now`.
fn replayed_pair(
    state: &AppState,
    hash: &TokenHash,
    sealed: &str,
    session: &Session,
    now: i64,
) -> Option<TokenPair> {
    let json = state
        .data_key
        .open_bytes(sealed, &successor_context(&hash.to_hex()))
        .ok()?;
    let kept: KeptPair = serde_json::from_slice(&json).ok()?;
    let end = |at: i64| (at.min(session.expires_at) - now).max(0);
    Some(TokenPair {
        expires_in: end(kept.access_expires_at),
        refresh_expires_in: end(kept.refresh_expires_at),
        access_token: kept.access_token,
        token_type: "Bearer",
        refresh_token: kept.refresh_token,
    })
}

/// Uses a refresh token once: a new pair. The same token again within
/// `tokens.refresh_grace` gets the same pair back (a double submit, a retry after a lost
/// answer); any later use is reuse and revokes the session. `ip` is the client's address,
/// for the rate limits.
pub async fn refresh(
    state: &AppState,
    refresh_token: &str,
    ip: Option<IpAddr>,
) -> Result<TokenPair, ApiError> {
    if !refresh_token.starts_with(REFRESH_PREFIX) {
        return Err(ApiError::Unauthorized("the refresh token is not valid"));
    }
    let hash = TokenHash::of(refresh_token);
    // A JWT names its person and session, and the per-app limit needs the session's app:
    // then the session is found first. The rotation below still decides, atomically,
    // whether this refresh wins.
    let known = if state.token_format == TokenFormat::Jwt
        || state.limiter.is_on(LimitedAction::Refresh, Bucket::App)
    {
        state.stores.sessions.session_of_refresh(&hash).await?
    } else {
        None
    };
    state
        .limiter
        .check(
            LimitedAction::Refresh,
            ip,
            known.as_ref().map(|session| &session.app_id),
        )
        .await?;
    let now = state.now();
    let (mut pair, access, refresh) = match state.token_format {
        // Lifetimes are capped to the session's end inside the store, which knows it.
        TokenFormat::Opaque => mint_pair(state, now, i64::MAX, None)?,
        TokenFormat::Jwt => {
            let session = known.ok_or(ApiError::Unauthorized("the refresh token is not valid"))?;
            let user = state
                .stores
                .users
                .user_by_identity(&session.app_id, &session.openid)
                .await?
                .ok_or(ApiError::Unauthorized(
                    "the user of this session no longer exists",
                ))?;
            let subject = Subject {
                user: &user,
                session: &session,
            };
            mint_pair(state, now, session.expires_at, Some(&subject))?
        }
    };
    let successor = keep_pair(state, &hash, &pair, now);
    let outcome = state
        .stores
        .sessions
        .rotate(&hash, access, refresh, successor, now)
        .await?;
    match outcome {
        RefreshOutcome::Rotated(session) => {
            pair.expires_in = pair.expires_in.min(session.expires_at - now);
            pair.refresh_expires_in = pair.refresh_expires_in.min(session.expires_at - now);
            Ok(pair)
        }
        RefreshOutcome::Replayed { session, successor } => {
            replayed_pair(state, &hash, &successor, &session, now).ok_or_else(|| {
                tracing::warn!(session_id = %session.id, "cannot open a kept refresh successor");
                ApiError::Unauthorized("the refresh token is not valid")
            })
        }
        RefreshOutcome::Reused(session_id) => {
            tracing::warn!(%session_id, "refresh token presented twice: session revoked");
            let by = audit::Requester {
                actor: audit::Actor::System,
                ip: None,
            };
            let entry = audit::entry(
                &by,
                "session.refresh_token_reused",
                Some(audit::session_target(&session_id)),
                None,
                now,
            );
            audit::record_event(&state.stores, &entry).await;
            Err(ApiError::TokenRevoked)
        }
        RefreshOutcome::Revoked => Err(ApiError::TokenRevoked),
        RefreshOutcome::Expired => Err(ApiError::TokenExpired),
        RefreshOutcome::Unknown => Err(ApiError::Unauthorized("the refresh token is not valid")),
    }
}

/// Logs a session out: the one a refresh token belongs to, or the one of an access token,
/// live or expired (an access token normally has expired by the time a user logs out; its
/// session and refresh token live on). A refresh token of a session that has already ended is
/// a logout done.
pub async fn logout(
    state: &AppState,
    access_token: Option<&str>,
    refresh_token: Option<&str>,
) -> Result<(), ApiError> {
    let session = match (refresh_token, access_token) {
        (Some(refresh_token), _) => {
            if !refresh_token.starts_with(REFRESH_PREFIX) {
                return Err(ApiError::Unauthorized("the refresh token is not valid"));
            }
            let session = state
                .stores
                .sessions
                .session_of_refresh(&TokenHash::of(refresh_token))
                .await?
                .ok_or(ApiError::Unauthorized("the refresh token is not valid"))?;
            if session.revoked_at.is_some() || session.expires_at <= state.now() {
                return Ok(());
            }
            session.id
        }
        (None, Some(access_token)) => match resolve(state, access_token).await {
            Ok(caller) => caller.principal.session_id,
            Err(ApiError::TokenExpired) => {
                let session = state
                    .stores
                    .sessions
                    .session_of_access(&TokenHash::of(access_token))
                    .await?
                    .ok_or(ApiError::TokenExpired)?;
                if session.revoked_at.is_some() {
                    return Err(ApiError::TokenRevoked);
                }
                if session.expires_at <= state.now() {
                    return Ok(());
                }
                session.id
            }
            Err(err) => return Err(err),
        },
        (None, None) => {
            return Err(ApiError::Unauthorized(
                "send Authorization: Bearer <access_token> or {\"refresh_token\": ...}",
            ));
        }
    };
    revoke(state, &session, "logout").await
}

/// Ends a session at once: every token of it stops working.
pub async fn revoke(state: &AppState, session_id: &str, reason: &str) -> Result<(), ApiError> {
    state
        .stores
        .sessions
        .revoke(session_id, reason, state.now())
        .await?;
    Ok(())
}

/// Revokes every live session of a person, in every mini program; returns how many.
/// `None` when there is no such person.
pub async fn revoke_user(
    stores: &Stores,
    user_id: &UserId,
    reason: &str,
    now: i64,
) -> Result<Option<u64>, StoreError> {
    let identities = stores.users.identities(user_id).await?;
    if identities.is_empty() {
        return Ok(None);
    }
    let mut revoked = 0;
    for identity in identities {
        revoked += stores
            .sessions
            .revoke_identity(&identity.app_id, &identity.openid, reason, now)
            .await?;
    }
    tracing::info!(%user_id, revoked, reason, "sessions of a person revoked");
    Ok(Some(revoked))
}

/// The session's own session_key; `None` only when the data key changed since it was sealed
/// (a fresh code heals that, as it heals a rotated key).
pub fn session_key(state: &AppState, session: &Session) -> Option<SessionKey> {
    match state
        .data_key
        .open(&session.sealed_session_key, &session.id)
    {
        Ok(key) => Some(key),
        Err(err) => {
            tracing::warn!(session_id = %session.id, error = %err, "cannot open session_key");
            None
        }
    }
}

/// Keeps a fresh session_key (after a new `wx.login`) on the session.
pub async fn set_session_key(
    state: &AppState,
    session: &Session,
    key: &SessionKey,
) -> Result<(), ApiError> {
    let sealed = state.data_key.seal(key, &session.id);
    state
        .stores
        .sessions
        .set_session_key(&session.id, &sealed)
        .await?;
    Ok(())
}

/// Whether WeChat still accepts the caller's session_key (`false` also when it cannot be
/// opened): when not, the mini program should call `wx.login` before sending encrypted data.
pub async fn check_session_key(state: &AppState, caller: &Caller) -> Result<bool, ApiError> {
    let app = state.configured_app(&caller.principal.app_id)?;
    match session_key(state, &caller.session) {
        Some(key) => Ok(state
            .wechat
            .check_session_key(app, &caller.principal.openid, &key)
            .await?),
        None => Ok(false),
    }
}
