//! Login: a `wx.login` code exchanged with WeChat at most once, the person found or created,
//! a session opened with the session_key sealed inside, a token pair minted.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wxauth_wechat::{AppCredentials, AppId, Code2Session, JsCode, OpenId, SessionKey, UnionId};

use super::people;
use super::sessions::{self, TokenPair};
use crate::error::ApiError;
use crate::model::User;
use crate::state::AppState;
use crate::store::{CodeClaim, Session};
use crate::tokens::{TokenHash, session_id};

/// How long WeChat keeps a login code valid, and so how long its exchange is remembered.
const CODE_LIFETIME_SECS: i64 = 300;

/// The client's address and agent, kept on the session (where it was used from).
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    /// The client's address (the peer, or what a trusted proxy forwarded).
    pub ip: Option<String>,
    /// The User-Agent header (capped).
    pub user_agent: Option<String>,
}

/// What a login gives.
pub struct LoggedIn {
    /// The new tokens.
    pub tokens: TokenPair,
    /// The person.
    pub user: User,
    /// The mini program logged in through.
    pub app_id: AppId,
    /// The openid there.
    pub openid: OpenId,
    /// A new person was created by this login.
    pub is_new_user: bool,
    /// This mini program saw this person for the first time.
    pub is_new_identity: bool,
}

/// Exchanges a login code and opens a session. `app_id` may be left out when one app is
/// configured.
pub async fn login(
    state: &AppState,
    app_id: Option<&str>,
    code: String,
    meta: ClientMeta,
) -> Result<LoggedIn, ApiError> {
    let app = state.app(app_id)?;
    let code =
        JsCode::parse(code).map_err(|err| ApiError::InvalidRequest(err.to_string().into()))?;
    let wx = exchange_code(state, app, &code).await?;
    let now = state.now();
    let outcome = state
        .stores
        .users
        .login(
            &app.app_id,
            &wx.openid,
            wx.unionid.as_ref(),
            now,
            people::merge,
        )
        .await?;
    let tokens = open_session(
        state,
        &outcome.user,
        &app.app_id,
        &wx.openid,
        &wx.session_key,
        meta,
        now,
    )
    .await?;
    tracing::info!(
        app_id = %app.app_id,
        user_id = %outcome.user.id,
        is_new_user = outcome.is_new_user,
        "login"
    );
    Ok(LoggedIn {
        tokens,
        user: outcome.user,
        app_id: app.app_id.clone(),
        openid: wx.openid,
        is_new_user: outcome.is_new_user,
        is_new_identity: outcome.is_new_identity,
    })
}

/// What a remembered exchange holds (sealed at rest).
#[derive(Serialize, Deserialize)]
struct Remembered {
    openid: String,
    unionid: Option<String>,
    session_key: String,
}

/// What a remembered exchange of the code with hash `hash` (hex) is sealed for.
pub(crate) fn code_context(hash: &str) -> String {
    format!("login_code:{hash}")
}

/// Exchanges a login code with WeChat at most once. A retry of the same code within its five
/// minutes (a client whose response was lost) gets the remembered answer instead of
/// WeChat's "code already used"; a concurrent duplicate waits for the first exchange.
pub async fn exchange_code(
    state: &AppState,
    app: &AppCredentials,
    code: &JsCode,
) -> Result<Code2Session, ApiError> {
    let hash = TokenHash::of(&format!("{}:{}", app.app_id, code.as_str())).to_hex();
    let context = code_context(&hash);
    // Poll for a concurrent exchange at most as long as that exchange may take.
    let deadline = tokio::time::Instant::now() + state.wechat_timeout + Duration::from_secs(1);
    loop {
        let now = state.now();
        match state
            .stores
            .codes
            .claim(&hash, now, now + CODE_LIFETIME_SECS)
            .await?
        {
            CodeClaim::Claimed => {
                // The exchange finishes in its own task even if this request is dropped: a
                // claim left neither fulfilled nor released would make every retry of the
                // code wait for an exchange that never ends.
                let exchange = tokio::spawn(exchange_claimed(
                    state.clone(),
                    app.clone(),
                    code.clone(),
                    hash,
                    context,
                    now,
                ));
                return exchange
                    .await
                    .map_err(|err| anyhow::anyhow!("a code exchange did not finish: {err}"))?;
            }
            CodeClaim::Done(sealed) => {
                let Some(remembered) = state
                    .data_key
                    .open_bytes(&sealed, &context)
                    .ok()
                    .and_then(|json| serde_json::from_slice::<Remembered>(&json).ok())
                else {
                    // Sealed under another data key: forget it and ask WeChat, which will
                    // say whether the code is still good.
                    tracing::warn!("a remembered login code could not be opened");
                    state.stores.codes.release(&hash).await?;
                    continue;
                };
                return Ok(Code2Session {
                    openid: OpenId::parse(remembered.openid).map_err(anyhow::Error::from)?,
                    unionid: remembered
                        .unionid
                        .map(UnionId::parse)
                        .transpose()
                        .map_err(anyhow::Error::from)?,
                    session_key: SessionKey::parse(remembered.session_key)
                        .map_err(anyhow::Error::from)?,
                });
            }
            CodeClaim::Pending => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ApiError::CodeInProgress);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Asks WeChat about a claimed code, then remembers the answer (or gives the claim up).
async fn exchange_claimed(
    state: AppState,
    app: AppCredentials,
    code: JsCode,
    hash: String,
    context: String,
    now: i64,
) -> Result<Code2Session, ApiError> {
    let result = state.wechat.code2session(&app, &code).await;
    let Ok(wx) = result else {
        state.stores.codes.release(&hash).await?;
        return result.map_err(ApiError::from);
    };
    let remembered = Remembered {
        openid: wx.openid.to_string(),
        unionid: wx.unionid.as_ref().map(ToString::to_string),
        session_key: wx.session_key.expose_secret().to_owned(),
    };
    let json = serde_json::to_vec(&remembered).map_err(anyhow::Error::from)?;
    let sealed = state.data_key.seal_bytes(&json, &context);
    state
        .stores
        .codes
        .fulfil(&hash, &sealed, now + CODE_LIFETIME_SECS)
        .await?;
    Ok(wx)
}

/// Stores a new session for the identity and mints its first token pair.
async fn open_session(
    state: &AppState,
    user: &User,
    app_id: &AppId,
    openid: &OpenId,
    session_key: &SessionKey,
    meta: ClientMeta,
    now: i64,
) -> Result<TokenPair, ApiError> {
    let id = session_id();
    let expires_at = now + state.lifetimes.session;
    let session = Session {
        sealed_session_key: state.data_key.seal(session_key, &id),
        id,
        app_id: app_id.clone(),
        openid: openid.clone(),
        created_at: now,
        last_seen_at: now,
        expires_at,
        revoked_at: None,
        user_agent: meta.user_agent,
        ip: meta.ip,
    };
    let subject = sessions::Subject {
        user,
        session: &session,
    };
    let (pair, access, refresh) = sessions::mint_pair(state, now, expires_at, Some(&subject))?;
    state
        .stores
        .sessions
        .create(&session, access, refresh)
        .await?;
    Ok(pair)
}
