//! Everything the simulator remembers, and the rules WeChat applies to it.
//!
//! The rules are plain methods on [`Sim`] that return WeChat's answer ([`WxError`] on
//! refusal) or the control API's ([`ControlError`]); the HTTP modules only translate. All
//! mutable state sits behind one `std::sync::Mutex`, never held across an `.await`: every
//! rule runs to completion under the lock, so concurrent calls see WeChat's single-use and
//! quota guarantees exactly.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use wxauth_wechat::{OpenId, SessionKey, UnionId, crypto};

use crate::SimApp;
use crate::clock::Clock;
use crate::control::ControlError;
use crate::faults::{Faults, Stats};
use crate::people::{Identity, Person, Phone, Profile, ProfilePatch};

/// How long a `wx.login` code or a phone code lives.
pub const CODE_TTL_SECS: i64 = 300;
/// How long an access token lives.
pub const TOKEN_TTL_SECS: i64 = 7200;
/// The classic token's overlap after it is superseded, and how early a stable token renews.
pub const TOKEN_OVERLAP_SECS: i64 = 300;
/// code2Session's per-user quota: this many calls...
pub const QUOTA_CALLS: usize = 100;
/// ...within this many seconds.
pub const QUOTA_WINDOW_SECS: i64 = 60;
/// How long an expired token is still recognised (answering 42001 rather than 40001).
const EXPIRED_TOKEN_MEMORY_SECS: i64 = 86_400;

/// A WeChat refusal: an errcode and its errmsg (the `rid` is added when it is sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WxError {
    /// WeChat's errcode.
    pub errcode: i64,
    /// WeChat's errmsg, without the `rid` suffix.
    pub errmsg: &'static str,
}

impl WxError {
    const fn new(errcode: i64, errmsg: &'static str) -> Self {
        Self { errcode, errmsg }
    }

    /// 40013: unknown or missing AppID.
    pub const INVALID_APPID: Self = Self::new(40013, "invalid appid");
    /// 40125: wrong or missing AppSecret.
    pub const INVALID_SECRET: Self = Self::new(40125, "invalid appsecret");
    /// 40002: grant_type is not the one the endpoint takes.
    pub const INVALID_GRANT_TYPE: Self = Self::new(40002, "invalid grant_type");
    /// 41008: no js_code.
    pub const MISSING_CODE: Self = Self::new(41008, "missing code");
    /// 40029: unknown, expired or foreign code.
    pub const INVALID_CODE: Self = Self::new(40029, "invalid code");
    /// 40163: the code was used already.
    pub const CODE_USED: Self = Self::new(40163, "code been used");
    /// 45011: more than 100 code2Session calls for one user within a minute.
    pub const MINUTE_QUOTA: Self = Self::new(
        45011,
        "api minute-quota reach limit  mustslower  retry next minute",
    );
    /// 40001: unknown access token, or one that is no longer the latest.
    pub const INVALID_TOKEN: Self = Self::new(
        40001,
        "invalid credential, access_token is invalid or not latest",
    );
    /// 42001: the access token expired.
    pub const TOKEN_EXPIRED: Self = Self::new(42001, "access_token expired");
    /// 41001: no access token.
    pub const MISSING_TOKEN: Self = Self::new(41001, "access_token missing");
    /// 40003: no such openid in this app.
    pub const INVALID_OPENID: Self = Self::new(40003, "invalid openid");
    /// 87009: the session_key signature is wrong.
    pub const INVALID_SIGNATURE: Self = Self::new(87009, "invalid signature");
    /// 47001: the request body is not the JSON the endpoint takes.
    pub const DATA_FORMAT: Self = Self::new(47001, "data format error");
    /// -1: WeChat is busy (only ever injected as a fault).
    pub const BUSY: Self = Self::new(-1, "system error");

    /// WeChat's errmsg for an errcode, for injected faults.
    pub fn for_errcode(errcode: i64) -> Self {
        [
            Self::INVALID_APPID,
            Self::INVALID_SECRET,
            Self::INVALID_GRANT_TYPE,
            Self::MISSING_CODE,
            Self::INVALID_CODE,
            Self::CODE_USED,
            Self::MINUTE_QUOTA,
            Self::INVALID_TOKEN,
            Self::TOKEN_EXPIRED,
            Self::MISSING_TOKEN,
            Self::INVALID_OPENID,
            Self::INVALID_SIGNATURE,
            Self::DATA_FORMAT,
            Self::BUSY,
            Self::new(40014, "invalid access_token"),
            Self::new(40226, "code blocked"),
        ]
        .into_iter()
        .find(|e| e.errcode == errcode)
        .unwrap_or(Self::new(errcode, "simulated error"))
    }
}

/// The watermark WeChat stamps on open data and phone numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Watermark {
    /// When, by the simulator's clock.
    pub timestamp: i64,
    /// For which app.
    pub appid: String,
}

/// A successful code2Session.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// The user's current session_key.
    pub session_key: String,
    /// The user's openid in the calling app.
    pub openid: String,
    /// The person's unionid, for bound apps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
}

/// A successful access-token call.
#[derive(Debug, Clone, Serialize)]
pub struct Token {
    /// The token.
    pub access_token: String,
    /// Seconds it has left.
    pub expires_in: i64,
}

/// A person as the control API shows them to one app.
#[derive(Debug, Clone, Serialize)]
pub struct PersonView {
    /// The app.
    pub appid: String,
    /// The person's name in the simulator.
    pub user: String,
    /// Their openid in this app.
    pub openid: String,
    /// Their unionid, or null when the app is unbound.
    pub unionid: Option<String>,
    /// Their current session_key in this app.
    pub session_key: String,
    /// Their profile.
    pub profile: Profile,
    /// Their phone.
    pub phone: Phone,
}

/// Fixed values to give a person (`POST /sim/users`), already validated.
#[derive(Debug, Clone, Default)]
pub struct PersonUpdate {
    /// A new openid in this app.
    pub openid: Option<OpenId>,
    /// A new session_key in this app; it is then pinned.
    pub session_key: Option<SessionKey>,
    /// A new unionid.
    pub unionid: Option<UnionId>,
    /// Profile fields to change.
    pub profile: Option<ProfilePatch>,
    /// A new phone.
    pub phone: Option<Phone>,
}

/// What `/sim/userinfo` needs to produce encrypted open data.
#[derive(Debug, Clone)]
pub struct UserInfoMaterial {
    /// The key to encrypt and sign with.
    pub session_key: SessionKey,
    /// The openid to put in.
    pub openid: String,
    /// The unionid to put in, for bound apps.
    pub unionid: Option<String>,
    /// The profile to put in.
    pub profile: Profile,
    /// The watermark to put in.
    pub watermark: Watermark,
}

/// What `/sim/phone` needs to produce its answer.
#[derive(Debug, Clone)]
pub struct PhoneMaterial {
    /// The new phone code.
    pub code: String,
    /// The key for the legacy encrypted form.
    pub session_key: SessionKey,
    /// The phone.
    pub phone: Phone,
    /// The watermark.
    pub watermark: Watermark,
}

/// One issued code (login or phone).
#[derive(Debug)]
struct CodeEntry<T> {
    appid: String,
    issued_at: i64,
    used: bool,
    payload: T,
}

/// Codes of one kind, with WeChat's rules: five minutes, single use, only for the app that
/// issued them.
#[derive(Debug)]
struct CodeBook<T> {
    entries: HashMap<String, CodeEntry<T>>,
    /// Issue order, so expired codes are dropped from the front without a scan.
    order: VecDeque<(i64, String)>,
}

impl<T> Default for CodeBook<T> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T> CodeBook<T> {
    fn issue(&mut self, code: String, appid: &str, payload: T, now: i64) {
        self.prune(now);
        self.order.push_back((now, code.clone()));
        self.entries.insert(
            code,
            CodeEntry {
                appid: appid.to_owned(),
                issued_at: now,
                used: false,
                payload,
            },
        );
    }

    /// Forgets expired codes: WeChat answers 40029 for them, exactly as for unknown ones.
    fn prune(&mut self, now: i64) {
        while self
            .order
            .front()
            .is_some_and(|(issued_at, _)| now - issued_at >= CODE_TTL_SECS)
        {
            if let Some((_, code)) = self.order.pop_front() {
                self.entries.remove(&code);
            }
        }
    }

    /// The code, if `appid` may redeem it now.
    fn check(&self, appid: &str, code: &str, now: i64) -> Result<&CodeEntry<T>, WxError> {
        let entry = self
            .entries
            .get(code)
            .filter(|entry| entry.appid == appid)
            .ok_or(WxError::INVALID_CODE)?;
        if now - entry.issued_at >= CODE_TTL_SECS {
            return Err(WxError::INVALID_CODE);
        }
        if entry.used {
            return Err(WxError::CODE_USED);
        }
        Ok(entry)
    }

    fn mark_used(&mut self, code: &str) {
        if let Some(entry) = self.entries.get_mut(code) {
            entry.used = true;
        }
    }
}

/// An access token WeChat issued.
#[derive(Debug)]
struct AccessToken {
    appid: String,
    expires_at: i64,
    /// From when it stops working before its expiry: superseded (classic, after the overlap)
    /// or force-refreshed (stable, at once).
    revoked_at: Option<i64>,
}

/// The mutable part of the simulator.
#[derive(Debug, Default)]
struct World {
    /// People by name.
    persons: HashMap<String, Person>,
    /// unionid -> name, to keep unionids unique.
    unionid_owners: HashMap<String, String>,
    /// (appid, name) -> the person in that app.
    identities: HashMap<(String, String), Identity>,
    /// (appid, openid) -> name.
    openid_owners: HashMap<(String, String), String>,
    /// `wx.login` codes; the payload is the person's name.
    login_codes: CodeBook<String>,
    /// Phone codes; the payload is the phone as it was when the button was pressed.
    phone_codes: CodeBook<Phone>,
    /// (appid, name) -> times of recent code2Session calls, oldest first.
    quotas: HashMap<(String, String), VecDeque<i64>>,
    /// Every token issued and not long expired.
    tokens: HashMap<String, AccessToken>,
    /// Tokens in issue order with their expiry, to forget old ones without a scan.
    token_order: VecDeque<(i64, String)>,
    /// appid -> its current stable token.
    stable: HashMap<String, String>,
    /// appid -> its latest classic token.
    classic: HashMap<String, String>,
}

impl World {
    /// The app a token belongs to, if it works now.
    fn check_token(&self, token: Option<&str>, now: i64) -> Result<String, WxError> {
        let token = token.ok_or(WxError::MISSING_TOKEN)?;
        let entry = self.tokens.get(token).ok_or(WxError::INVALID_TOKEN)?;
        match entry.revoked_at {
            // Revoked before it would have expired: "not latest".
            Some(revoked_at) if now >= revoked_at && revoked_at < entry.expires_at => {
                Err(WxError::INVALID_TOKEN)
            }
            _ if now >= entry.expires_at => Err(WxError::TOKEN_EXPIRED),
            _ => Ok(entry.appid.clone()),
        }
    }

    fn mint_token(&mut self, appid: &str, now: i64) -> String {
        while self
            .token_order
            .front()
            .is_some_and(|(expires_at, _)| now - expires_at >= EXPIRED_TOKEN_MEMORY_SECS)
        {
            if let Some((_, token)) = self.token_order.pop_front() {
                self.tokens.remove(&token);
            }
        }
        let token = random_access_token();
        let expires_at = now + TOKEN_TTL_SECS;
        self.token_order.push_back((expires_at, token.clone()));
        self.tokens.insert(
            token.clone(),
            AccessToken {
                appid: appid.to_owned(),
                expires_at,
                revoked_at: None,
            },
        );
        token
    }

    /// Counts a code2Session call against the person's minute quota, or refuses it.
    fn take_quota(&mut self, appid: &str, user: &str, now: i64) -> Result<(), WxError> {
        let calls = self
            .quotas
            .entry((appid.to_owned(), user.to_owned()))
            .or_default();
        while calls
            .front()
            .is_some_and(|&at| now - at >= QUOTA_WINDOW_SECS)
        {
            calls.pop_front();
        }
        if calls.len() >= QUOTA_CALLS {
            return Err(WxError::MINUTE_QUOTA);
        }
        calls.push_back(now);
        Ok(())
    }

    /// The name behind an openid in an app.
    fn owner_of_openid(&self, appid: &str, openid: Option<&str>) -> Result<String, WxError> {
        let openid = openid.ok_or(WxError::INVALID_OPENID)?;
        self.openid_owners
            .get(&(appid.to_owned(), openid.to_owned()))
            .cloned()
            .ok_or(WxError::INVALID_OPENID)
    }

    fn identity(&self, appid: &str, user: &str) -> Option<&Identity> {
        self.identities.get(&(appid.to_owned(), user.to_owned()))
    }

    fn identity_mut(&mut self, appid: &str, user: &str) -> Option<&mut Identity> {
        self.identities
            .get_mut(&(appid.to_owned(), user.to_owned()))
    }

    /// Creates the person and their identity in `appid` on first mention.
    fn ensure(&mut self, appid: &str, user: &str) -> Result<(), ControlError> {
        if !self.persons.contains_key(user) {
            let person = Person::new(user);
            // Only a unionid pinned through /sim/users can collide with a derived one.
            if self.unionid_owners.contains_key(&person.unionid) {
                return Err(ControlError::bad_request(format!(
                    "the unionid derived for user {user} is already given to another user"
                )));
            }
            self.unionid_owners
                .insert(person.unionid.clone(), user.to_owned());
            self.persons.insert(user.to_owned(), person);
        }
        let key = (appid.to_owned(), user.to_owned());
        if !self.identities.contains_key(&key) {
            let identity = Identity::new(appid, user);
            let openid_key = (appid.to_owned(), identity.openid.clone());
            if self.openid_owners.contains_key(&openid_key) {
                return Err(ControlError::bad_request(format!(
                    "the openid derived for user {user} is already given to another user"
                )));
            }
            self.openid_owners.insert(openid_key, user.to_owned());
            self.identities.insert(key, identity);
        }
        Ok(())
    }

    fn view(&self, app: &SimApp, user: &str) -> Result<PersonView, ControlError> {
        let missing = || ControlError::bad_request(format!("user {user} vanished"));
        let person = self.persons.get(user).ok_or_else(missing)?;
        let identity = self.identity(&app.appid, user).ok_or_else(missing)?;
        Ok(PersonView {
            appid: app.appid.clone(),
            user: user.to_owned(),
            openid: identity.openid.clone(),
            unionid: app.bound.then(|| person.unionid.clone()),
            session_key: identity.session_key.expose_secret().to_owned(),
            profile: person.profile.clone(),
            phone: person.phone.clone(),
        })
    }
}

/// The simulator: its apps, clock, memory, faults and statistics.
#[derive(Debug)]
pub struct Sim {
    apps: BTreeMap<String, SimApp>,
    keep_session_key: bool,
    /// The simulator's clock.
    pub clock: Clock,
    world: Mutex<World>,
    /// Faults waiting for WeChat calls.
    pub faults: Faults,
    /// Counts of WeChat calls.
    pub stats: Stats,
}

impl Sim {
    /// A fresh simulator for `config`.
    pub fn new(config: crate::SimConfig) -> Result<Self, String> {
        let apps = config
            .effective_apps()?
            .into_iter()
            .map(|app| (app.appid.clone(), app))
            .collect();
        Ok(Self {
            apps,
            keep_session_key: config.keep_session_key,
            clock: Clock::new(),
            world: Mutex::new(World::default()),
            faults: Faults::default(),
            stats: Stats::default(),
        })
    }

    fn world(&self) -> MutexGuard<'_, World> {
        // A panic elsewhere cannot leave the world half-updated in a way that matters more
        // than a simulator that stops answering.
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The configured app with this AppID.
    pub fn app(&self, appid: &str) -> Option<&SimApp> {
        self.apps.get(appid)
    }

    fn control_app(&self, appid: &str) -> Result<&SimApp, ControlError> {
        self.app(appid)
            .ok_or_else(|| ControlError::not_found(format!("no app {appid} is configured")))
    }

    /// The app for an AppID and AppSecret pair, checked in WeChat's order.
    fn authenticate(&self, appid: Option<&str>, secret: Option<&str>) -> Result<&SimApp, WxError> {
        let app = appid
            .and_then(|appid| self.app(appid))
            .ok_or(WxError::INVALID_APPID)?;
        if secret != Some(app.secret.as_str()) {
            return Err(WxError::INVALID_SECRET);
        }
        Ok(app)
    }

    /// The app a token belongs to, working or not; for statistics.
    pub fn token_owner(&self, token: Option<&str>) -> Option<String> {
        let world = self.world();
        token
            .and_then(|token| world.tokens.get(token))
            .map(|entry| entry.appid.clone())
    }

    // ----- WeChat rules -----

    /// `auth.code2Session`. Checks appid, secret, grant_type, code presence, code validity,
    /// then the user's minute quota; only a successful call uses the code up.
    pub fn code2session(
        &self,
        appid: Option<&str>,
        secret: Option<&str>,
        grant_type: Option<&str>,
        js_code: Option<&str>,
    ) -> Result<Session, WxError> {
        let app = self.authenticate(appid, secret)?;
        // SDKs always send it; a wrong value is a client bug worth surfacing.
        if grant_type.is_some_and(|g| g != "authorization_code") {
            return Err(WxError::INVALID_GRANT_TYPE);
        }
        let code = js_code.ok_or(WxError::MISSING_CODE)?;
        let now = self.clock.now();
        let mut world = self.world();
        let user = world
            .login_codes
            .check(&app.appid, code, now)?
            .payload
            .clone();
        world.take_quota(&app.appid, &user, now)?;
        world.login_codes.mark_used(code);
        let identity = world
            .identity(&app.appid, &user)
            .ok_or(WxError::INVALID_CODE)?;
        let session_key = identity.session_key.expose_secret().to_owned();
        let openid = identity.openid.clone();
        let unionid = if app.bound {
            world.persons.get(&user).map(|p| p.unionid.clone())
        } else {
            None
        };
        Ok(Session {
            session_key,
            openid,
            unionid,
        })
    }

    /// `POST /cgi-bin/stable_token`: the app's current token while it has more than five
    /// minutes left, else a new one (the old one keeps working until it expires);
    /// `force_refresh` makes a new one and kills the old one at once.
    pub fn stable_token(
        &self,
        grant_type: Option<&str>,
        appid: Option<&str>,
        secret: Option<&str>,
        force_refresh: bool,
    ) -> Result<Token, WxError> {
        if grant_type != Some("client_credential") {
            return Err(WxError::INVALID_GRANT_TYPE);
        }
        let app = self.authenticate(appid, secret)?;
        let now = self.clock.now();
        let mut world = self.world();
        let current = world.stable.get(&app.appid).cloned();
        if let Some(current) = current {
            if let Some(entry) = world.tokens.get_mut(&current) {
                if force_refresh {
                    entry.revoked_at = Some(now);
                } else if entry.revoked_at.is_none() && entry.expires_at - now > TOKEN_OVERLAP_SECS
                {
                    return Ok(Token {
                        access_token: current,
                        expires_in: entry.expires_at - now,
                    });
                }
            }
        }
        let token = world.mint_token(&app.appid, now);
        world.stable.insert(app.appid.clone(), token.clone());
        Ok(Token {
            access_token: token,
            expires_in: TOKEN_TTL_SECS,
        })
    }

    /// `GET /cgi-bin/token`: always a new token; the previous one works five more minutes.
    pub fn classic_token(
        &self,
        grant_type: Option<&str>,
        appid: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Token, WxError> {
        if grant_type != Some("client_credential") {
            return Err(WxError::INVALID_GRANT_TYPE);
        }
        let app = self.authenticate(appid, secret)?;
        let now = self.clock.now();
        let mut world = self.world();
        let previous = world.classic.get(&app.appid).cloned();
        if let Some(entry) = previous.and_then(|token| world.tokens.get_mut(&token)) {
            let end = now + TOKEN_OVERLAP_SECS;
            entry.revoked_at = Some(entry.revoked_at.map_or(end, |at| at.min(end)));
        }
        let token = world.mint_token(&app.appid, now);
        world.classic.insert(app.appid.clone(), token.clone());
        Ok(Token {
            access_token: token,
            expires_in: TOKEN_TTL_SECS,
        })
    }

    /// `getuserphonenumber`: checks the token, then the JSON body, then the phone code.
    pub fn phone_number(
        &self,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<(Phone, Watermark), WxError> {
        let now = self.clock.now();
        let mut world = self.world();
        let appid = world.check_token(token, now)?;
        let body: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| WxError::DATA_FORMAT)?;
        let code = body
            .get("code")
            .and_then(serde_json::Value::as_str)
            .filter(|code| !code.is_empty())
            .ok_or(WxError::DATA_FORMAT)?;
        let phone = world.phone_codes.check(&appid, code, now)?.payload.clone();
        world.phone_codes.mark_used(code);
        Ok((
            phone,
            Watermark {
                timestamp: now,
                appid,
            },
        ))
    }

    /// `checksession` and the first half of `resetusersessionkey`: the token, the openid,
    /// then the signature over the empty message with the current session_key.
    fn verify_session(
        world: &World,
        token: Option<&str>,
        openid: Option<&str>,
        signature: Option<&str>,
        sig_method: Option<&str>,
        now: i64,
    ) -> Result<(String, String), WxError> {
        let appid = world.check_token(token, now)?;
        let user = world.owner_of_openid(&appid, openid)?;
        let identity = world
            .identity(&appid, &user)
            .ok_or(WxError::INVALID_OPENID)?;
        let expected = crypto::session_key_signature(&identity.session_key, b"");
        let matches = sig_method == Some("hmac_sha256")
            && signature.is_some_and(|s| s.eq_ignore_ascii_case(&expected));
        if !matches {
            return Err(WxError::INVALID_SIGNATURE);
        }
        Ok((appid, user))
    }

    /// `GET /wxa/checksession`.
    pub fn check_session(
        &self,
        token: Option<&str>,
        openid: Option<&str>,
        signature: Option<&str>,
        sig_method: Option<&str>,
    ) -> Result<(), WxError> {
        let now = self.clock.now();
        let world = self.world();
        Self::verify_session(&world, token, openid, signature, sig_method, now).map(|_| ())
    }

    /// `GET /wxa/resetusersessionkey`: a new session_key, returned with the openid.
    pub fn reset_session_key(
        &self,
        token: Option<&str>,
        openid: Option<&str>,
        signature: Option<&str>,
        sig_method: Option<&str>,
    ) -> Result<(String, String), WxError> {
        let now = self.clock.now();
        let mut world = self.world();
        let (appid, user) =
            Self::verify_session(&world, token, openid, signature, sig_method, now)?;
        let identity = world
            .identity_mut(&appid, &user)
            .ok_or(WxError::INVALID_OPENID)?;
        identity.session_key = SessionKey::generate();
        Ok((
            identity.openid.clone(),
            identity.session_key.expose_secret().to_owned(),
        ))
    }

    // ----- the mini-program side (control API) -----

    /// `wx.login`: a new code for the person, rotating their session_key unless it is kept.
    pub fn login(&self, appid: &str, user: &str) -> Result<String, ControlError> {
        let app = self.control_app(appid)?;
        let now = self.clock.now();
        let mut world = self.world();
        world.ensure(&app.appid, user)?;
        let keep = self.keep_session_key;
        if let Some(identity) = world.identity_mut(&app.appid, user) {
            if !keep && !identity.pinned {
                identity.session_key = SessionKey::generate();
            }
        }
        let code = random_login_code();
        world
            .login_codes
            .issue(code.clone(), &app.appid, user.to_owned(), now);
        Ok(code)
    }

    /// Creates the person if needed and gives them the fixed values in `update`; nothing
    /// changes when any value is refused.
    pub fn upsert_person(
        &self,
        appid: &str,
        user: &str,
        update: PersonUpdate,
    ) -> Result<PersonView, ControlError> {
        let app = self.control_app(appid)?;
        let mut world = self.world();
        world.ensure(&app.appid, user)?;
        // Every check first, so a refusal leaves no half-applied update.
        if let Some(openid) = &update.openid {
            let owner = world
                .openid_owners
                .get(&(app.appid.clone(), openid.as_str().to_owned()));
            if owner.is_some_and(|owner| owner != user) {
                return Err(ControlError::bad_request(format!(
                    "openid {openid} already belongs to another user of {appid}"
                )));
            }
        }
        if let Some(unionid) = &update.unionid {
            let owner = world.unionid_owners.get(unionid.as_str());
            if owner.is_some_and(|owner| owner != user) {
                return Err(ControlError::bad_request(format!(
                    "unionid {unionid} already belongs to another user"
                )));
            }
        }
        if let Some(openid) = update.openid {
            if let Some(identity) = world.identity_mut(&app.appid, user) {
                let old = std::mem::replace(&mut identity.openid, openid.into_string());
                let new = identity.openid.clone();
                world.openid_owners.remove(&(app.appid.clone(), old));
                world
                    .openid_owners
                    .insert((app.appid.clone(), new), user.to_owned());
            }
        }
        if let Some(session_key) = update.session_key {
            if let Some(identity) = world.identity_mut(&app.appid, user) {
                identity.session_key = session_key;
                identity.pinned = true;
            }
        }
        if let Some(unionid) = update.unionid {
            if let Some(person) = world.persons.get_mut(user) {
                let old = std::mem::replace(&mut person.unionid, unionid.into_string());
                let new = person.unionid.clone();
                world.unionid_owners.remove(&old);
                world.unionid_owners.insert(new, user.to_owned());
            }
        }
        if let Some(person) = world.persons.get_mut(user) {
            if let Some(patch) = &update.profile {
                patch.apply(&mut person.profile);
            }
            if let Some(phone) = update.phone {
                person.phone = phone;
            }
        }
        world.view(app, user)
    }

    /// `getUserInfo`: stores the profile changes and returns what to encrypt, under the
    /// person's current session_key.
    pub fn user_info(
        &self,
        appid: &str,
        user: &str,
        patch: Option<&ProfilePatch>,
    ) -> Result<UserInfoMaterial, ControlError> {
        let app = self.control_app(appid)?;
        let now = self.clock.now();
        let mut world = self.world();
        world.ensure(&app.appid, user)?;
        let person = world
            .persons
            .get_mut(user)
            .ok_or_else(|| ControlError::bad_request(format!("user {user} vanished")))?;
        if let Some(patch) = patch {
            patch.apply(&mut person.profile);
        }
        let view = world.view(app, user)?;
        let session_key = world
            .identity(&app.appid, user)
            .map(|identity| identity.session_key.clone())
            .ok_or_else(|| ControlError::bad_request(format!("user {user} vanished")))?;
        Ok(UserInfoMaterial {
            session_key,
            openid: view.openid,
            unionid: view.unionid,
            profile: view.profile,
            watermark: Watermark {
                timestamp: now,
                appid: app.appid.clone(),
            },
        })
    }

    /// The getPhoneNumber button: stores the phone override, issues a phone code and returns
    /// what the legacy encrypted form needs.
    pub fn press_phone_button(
        &self,
        appid: &str,
        user: &str,
        phone: Option<Phone>,
    ) -> Result<PhoneMaterial, ControlError> {
        let app = self.control_app(appid)?;
        let now = self.clock.now();
        let mut world = self.world();
        world.ensure(&app.appid, user)?;
        let person = world
            .persons
            .get_mut(user)
            .ok_or_else(|| ControlError::bad_request(format!("user {user} vanished")))?;
        if let Some(phone) = phone {
            person.phone = phone;
        }
        let phone = person.phone.clone();
        let session_key = world
            .identity(&app.appid, user)
            .map(|identity| identity.session_key.clone())
            .ok_or_else(|| ControlError::bad_request(format!("user {user} vanished")))?;
        let code = random_phone_code();
        world
            .phone_codes
            .issue(code.clone(), &app.appid, phone.clone(), now);
        Ok(PhoneMaterial {
            code,
            session_key,
            phone,
            watermark: Watermark {
                timestamp: now,
                appid: app.appid.clone(),
            },
        })
    }
}

/// A `wx.login` code: 32 alphanumerics, like WeChat's.
fn random_login_code() -> String {
    use rand::Rng as _;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// A phone code: 64 hex digits, like WeChat's.
fn random_phone_code() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// An access token shaped like WeChat's: a short numeric prefix and 132 URL-safe characters.
fn random_access_token() -> String {
    let bytes: [u8; 99] = std::array::from_fn(|_| rand::random());
    format!("86_{}", URL_SAFE_NO_PAD.encode(bytes))
}
