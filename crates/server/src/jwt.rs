//! Signed access tokens (JWT) and the keys that sign them.
//!
//! Other services verify a wxauth JWT offline against `/.well-known/jwks.json`. The signing keys
//! live in the database (see [`crate::store::signing_keys`]), their private halves sealed with
//! the data key, so every instance signs with the same key and a restart keeps it. A
//! [`KeyRing`] holds them in memory: it signs with the current key, verifies by `kid`, and
//! reloads from the database now and then (another instance or `wxauth keys rotate` may have
//! made a new key) and when a token names a key it does not know yet.
//!
//! A rotated-out key stays published until every token it signed has expired (its
//! `retire_after`: the rotation time plus the access-token lifetime plus [`RETIRE_MARGIN`]),
//! so verifiers that cache the key set keep working across a rotation.
//!
//! The keys are held as RustCrypto key types, which wipe the private key from memory when
//! dropped; signing and verification (with its algorithm, issuer and audience checks) are
//! jsonwebtoken's, which gets the private key's PKCS#8 form for each signature only.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::seal::DataKey;
use crate::store::StoreError;
use crate::store::signing_keys::{NewKey, SigningKeyStore, StoredKey};

/// Clock skew tolerated on `exp`, in seconds.
pub const LEEWAY_SECS: i64 = 5;
/// How long a rotated-out key stays published beyond the access-token lifetime: covers the
/// time instances take to notice a rotation (they reload every [`RELOAD_EVERY`]) and clock
/// skew.
pub const RETIRE_MARGIN: Duration = Duration::from_secs(300);
/// How often a running instance rereads the keys.
pub const RELOAD_EVERY: Duration = Duration::from_secs(30);
/// Unknown `kid`s and key-set requests reread the keys at most this often, so a flood of
/// made-up key ids costs the database one read per interval.
pub const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(10);
/// Attempts at making a current key when other instances keep winning the race.
const CREATE_ATTEMPTS: usize = 5;

pub use crate::config::JwtAlgorithm;

/// jsonwebtoken's name of an algorithm.
fn jsonwebtoken_algorithm(algorithm: JwtAlgorithm) -> Algorithm {
    match algorithm {
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
        JwtAlgorithm::ES256 => Algorithm::ES256,
    }
}

/// What a wxauth access token says. Never the session_key or anything sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuer (`tokens.issuer`).
    pub iss: String,
    /// The person's id.
    pub sub: String,
    /// The audiences (`tokens.audience`).
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// A random id of this token.
    pub jti: String,
    /// The session the token belongs to.
    pub sid: String,
    /// The mini program.
    pub app_id: String,
    /// The user in that mini program.
    pub openid: String,
    /// The person across mini programs, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
}

/// Who a new token is for.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The person's id.
    pub user_id: &'a str,
    /// The session.
    pub session_id: &'a str,
    /// The mini program.
    pub app_id: &'a str,
    /// The openid there.
    pub openid: &'a str,
    /// The unionid, when known.
    pub unionid: Option<&'a str>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Aud::deserialize(d)? {
        Aud::One(one) => vec![one],
        Aud::Many(many) => many,
    })
}

/// Why a token was not accepted. The texts never include the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a JWT of ours: bad encoding, missing claims, no `kid`.
    #[error("the token is not a well-formed wxauth JWT")]
    Malformed,
    /// Signed by a key that is not (or no longer) published.
    #[error("the token was signed by a key this service does not publish")]
    UnknownKey,
    /// The signature does not verify (tampered with, or the wrong algorithm).
    #[error("the token's signature does not verify")]
    BadSignature,
    /// Issued by someone else.
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    /// Meant for another audience.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// Past its `exp`.
    #[error("the token has expired")]
    Expired,
}

impl JwtError {
    fn from_jsonwebtoken(err: &jsonwebtoken::errors::Error) -> Self {
        match err.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => Self::BadSignature,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::ExpiredSignature => Self::Expired,
            _ => Self::Malformed,
        }
    }
}

/// How this service issues and checks its JWTs.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// `iss` of the tokens made, and the only one accepted.
    pub issuer: String,
    /// `aud` of the tokens made; a token naming any of them is accepted.
    pub audience: Vec<String>,
    /// The algorithm of new keys.
    pub algorithm: JwtAlgorithm,
    /// Lifetime of an access token, in seconds.
    pub access_ttl: i64,
}

impl JwtSettings {
    /// When a key replaced at `now` stops being published.
    pub fn retire_after(&self, now: i64) -> i64 {
        retire_after(now, self.access_ttl)
    }
}

/// When a key replaced at `now` stops being published, for access tokens living
/// `access_ttl` seconds.
pub fn retire_after(now: i64, access_ttl: i64) -> i64 {
    let margin = i64::try_from(RETIRE_MARGIN.as_secs()).unwrap_or(i64::MAX);
    now.saturating_add(access_ttl).saturating_add(margin)
}

/// A private signing key. Wiped from memory on drop; its `Debug` shows nothing of it.
enum Secret {
    Ed25519(ed25519_dalek::SigningKey),
    Es256(p256::ecdsa::SigningKey),
}

impl Secret {
    fn generate(algorithm: JwtAlgorithm) -> Self {
        match algorithm {
            JwtAlgorithm::EdDSA => {
                let seed = Zeroizing::new(rand::random::<[u8; 32]>());
                Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed))
            }
            JwtAlgorithm::ES256 => loop {
                // A random 32-byte string is a valid P-256 scalar but for a 2^-32 chance.
                let bytes = Zeroizing::new(rand::random::<[u8; 32]>());
                if let Ok(key) = p256::ecdsa::SigningKey::from_slice(bytes.as_slice()) {
                    break Self::Es256(key);
                }
            },
        }
    }

    fn from_bytes(algorithm: JwtAlgorithm, bytes: &[u8]) -> Option<Self> {
        match algorithm {
            JwtAlgorithm::EdDSA => {
                let seed: &[u8; 32] = bytes.try_into().ok()?;
                Some(Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(seed)))
            }
            JwtAlgorithm::ES256 => p256::ecdsa::SigningKey::from_slice(bytes)
                .ok()
                .map(Self::Es256),
        }
    }

    fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        match self {
            Self::Ed25519(key) => Zeroizing::new(key.to_bytes().to_vec()),
            Self::Es256(key) => Zeroizing::new(key.to_bytes().to_vec()),
        }
    }

    fn algorithm(&self) -> JwtAlgorithm {
        match self {
            Self::Ed25519(_) => JwtAlgorithm::EdDSA,
            Self::Es256(_) => JwtAlgorithm::ES256,
        }
    }

    /// The public key's JWK members (`kty`, `crv`, `x`, `y`).
    fn public_members(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Ed25519(key) => vec![
                ("crv", "Ed25519".to_owned()),
                ("kty", "OKP".to_owned()),
                ("x", URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes())),
            ],
            Self::Es256(key) => {
                let point = key.verifying_key().to_encoded_point(false);
                let coordinate = |c: Option<&p256::FieldBytes>| {
                    URL_SAFE_NO_PAD.encode(c.map(|c| c.as_slice()).unwrap_or_default())
                };
                vec![
                    ("crv", "P-256".to_owned()),
                    ("kty", "EC".to_owned()),
                    ("x", coordinate(point.x())),
                    ("y", coordinate(point.y())),
                ]
            }
        }
    }

    /// The key as jsonwebtoken signs with it (PKCS#8). Made for one signature and dropped:
    /// the long-lived copy stays in the key type, which wipes it when dropped.
    fn encoding_key(&self) -> anyhow::Result<jsonwebtoken::EncodingKey> {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        let der = match self {
            Self::Ed25519(key) => key.to_pkcs8_der(),
            Self::Es256(key) => p256::pkcs8::EncodePrivateKey::to_pkcs8_der(key),
        }
        .map_err(|err| anyhow::anyhow!("cannot encode the signing key: {err}"))?;
        Ok(match self {
            Self::Ed25519(_) => jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
            Self::Es256(_) => jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()),
        })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}, [redacted])", self.algorithm())
    }
}

/// The RFC 7638 thumbprint of a public key: the `kid`. `members` are sorted by name.
fn thumbprint(members: &[(&str, String)]) -> String {
    let canonical = members
        .iter()
        .map(|(name, value)| format!("\"{name}\":\"{value}\""))
        .collect::<Vec<_>>()
        .join(",");
    URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{{{canonical}}}").as_bytes()))
}

/// A freshly made key: the row to store and the key itself.
fn new_key(algorithm: JwtAlgorithm, data_key: &DataKey, now: i64) -> NewKey {
    let secret = Secret::generate(algorithm);
    let members = secret.public_members();
    let kid = thumbprint(&members);
    let mut jwk = serde_json::Map::new();
    for (name, value) in members {
        jwk.insert(name.to_owned(), Value::String(value));
    }
    jwk.insert("kid".to_owned(), Value::String(kid.clone()));
    jwk.insert(
        "alg".to_owned(),
        Value::String(algorithm.as_str().to_owned()),
    );
    jwk.insert("use".to_owned(), Value::String("sig".to_owned()));
    let sealed_private_key = data_key.seal_bytes(&secret.to_bytes(), &seal_context(&kid));
    NewKey {
        kid,
        algorithm: algorithm.as_str().to_owned(),
        sealed_private_key,
        public_jwk: Value::Object(jwk).to_string(),
        created_at: now,
    }
}

/// What a signing key's sealed private key is bound to.
pub(crate) fn seal_context(kid: &str) -> String {
    format!("signing_key:{kid}")
}

/// Makes a new current key of `algorithm`; the key it replaces stays published until
/// `retire_after`. Returns the new `kid`. Running instances pick it up within
/// [`RELOAD_EVERY`].
pub async fn rotate(
    store: &SigningKeyStore,
    data_key: &DataKey,
    algorithm: JwtAlgorithm,
    now: i64,
    retire_after: i64,
) -> Result<String, StoreError> {
    for _ in 0..CREATE_ATTEMPTS {
        let newest = store.all().await?.into_iter().next();
        let generation = newest.map_or(1, |key| key.generation + 1);
        let key = new_key(algorithm, data_key, now);
        let kid = key.kid.clone();
        if store.make_current(key, generation, retire_after).await? {
            return Ok(kid);
        }
    }
    Err(StoreError::Other(anyhow::anyhow!(
        "another key rotation kept winning after {CREATE_ATTEMPTS} attempts"
    )))
}

/// Makes sure a current key of `algorithm` exists: creates the first one, or replaces a key
/// of another algorithm (the configuration changed). Instances starting together agree on one
/// key: the unique generation lets one insert win, and the others find its key on re-reading.
async fn ensure_current(
    store: &SigningKeyStore,
    data_key: &DataKey,
    settings: &JwtSettings,
    now: i64,
) -> Result<(), StoreError> {
    for _ in 0..CREATE_ATTEMPTS {
        let newest = store.all().await?.into_iter().next();
        if let Some(key) = &newest
            && key.retire_after.is_none()
            && key.algorithm == settings.algorithm.as_str()
        {
            return Ok(());
        }
        let generation = newest.as_ref().map_or(1, |key| key.generation + 1);
        let key = new_key(settings.algorithm, data_key, now);
        let kid = key.kid.clone();
        if store
            .make_current(key, generation, settings.retire_after(now))
            .await?
        {
            match newest {
                None => {
                    tracing::info!(kid, alg = %settings.algorithm, "made the first signing key")
                }
                Some(old) => tracing::warn!(
                    kid,
                    old_kid = old.kid,
                    alg = %settings.algorithm,
                    "tokens.jwt_algorithm changed: made a new signing key; the old one stays \
                     published until the tokens it signed have expired"
                ),
            }
            return Ok(());
        }
    }
    Err(StoreError::Other(anyhow::anyhow!(
        "could not settle on a signing key after {CREATE_ATTEMPTS} attempts"
    )))
}

/// A published public key.
#[derive(Clone)]
struct PublicKey {
    algorithm: JwtAlgorithm,
    jwk: Value,
    decoding: DecodingKey,
    retire_after: Option<i64>,
}

impl PublicKey {
    fn from_row(row: &StoredKey) -> anyhow::Result<Self> {
        let algorithm = JwtAlgorithm::parse(&row.algorithm)
            .with_context(|| format!("unknown algorithm {:?}", row.algorithm))?;
        let jwk: Value = serde_json::from_str(&row.public_jwk).context("public_jwk is not JSON")?;
        let member = |name: &str| {
            jwk[name]
                .as_str()
                .with_context(|| format!("public_jwk has no {name}"))
        };
        let decoding = match algorithm {
            JwtAlgorithm::EdDSA => DecodingKey::from_ed_components(member("x")?),
            JwtAlgorithm::ES256 => DecodingKey::from_ec_components(member("x")?, member("y")?),
        }
        .context("public_jwk is not a valid key")?;
        Ok(Self {
            algorithm,
            jwk,
            decoding,
            retire_after: row.retire_after,
        })
    }

    fn published_at(&self, now: i64) -> bool {
        self.retire_after.is_none_or(|at| at > now)
    }
}

/// The key that signs.
#[derive(Debug)]
struct CurrentKey {
    kid: String,
    secret: Secret,
}

/// What the ring knows at one moment.
struct KeySet {
    current: Arc<CurrentKey>,
    /// By kid.
    public: HashMap<String, PublicKey>,
    /// Kids newest first, for a stable JWKS order.
    order: Vec<String>,
}

struct Ring {
    store: SigningKeyStore,
    data_key: DataKey,
    settings: JwtSettings,
    clock: Arc<dyn Clock>,
    keys: RwLock<Arc<KeySet>>,
    /// When the keys were last reread, by the ring's clock (held while rereading, so rereads
    /// never overlap).
    last_reload: Arc<tokio::sync::Mutex<i64>>,
}

/// The signing keys in memory. Cheap to clone: everything sits behind one `Arc`.
#[derive(Clone)]
pub struct KeyRing(Arc<Ring>);

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("issuer", &self.0.settings.issuer)
            .field("current_kid", &self.current_kid())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Reads the keys, first making a current key of the configured algorithm if there is
    /// none.
    pub async fn load(
        store: SigningKeyStore,
        data_key: DataKey,
        settings: JwtSettings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        ensure_current(&store, &data_key, &settings, clock.now())
            .await
            .context("Failed to set up the JWT signing key")?;
        let loaded_at = clock.now();
        let keys = read_keys(&store, &data_key, loaded_at, None).await?;
        Ok(Self(Arc::new(Ring {
            store,
            data_key,
            settings,
            clock,
            keys: RwLock::new(Arc::new(keys)),
            last_reload: Arc::new(tokio::sync::Mutex::new(loaded_at)),
        })))
    }

    /// The settings the ring was built with.
    pub fn settings(&self) -> &JwtSettings {
        &self.0.settings
    }

    /// The `kid` of the key that signs now.
    pub fn current_kid(&self) -> String {
        self.snapshot().current.kid.clone()
    }

    fn snapshot(&self) -> Arc<KeySet> {
        self.0
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The claims of a new access token for `subject`, issued at `now`.
    pub fn claims(&self, subject: Subject<'_>, now: i64) -> Claims {
        let settings = &self.0.settings;
        Claims {
            iss: settings.issuer.clone(),
            sub: subject.user_id.to_owned(),
            aud: settings.audience.clone(),
            iat: now,
            exp: now.saturating_add(settings.access_ttl),
            jti: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()),
            sid: subject.session_id.to_owned(),
            app_id: subject.app_id.to_owned(),
            openid: subject.openid.to_owned(),
            unionid: subject.unionid.map(str::to_owned),
        }
    }

    /// Signs `claims` with the current key: a compact JWS with `alg`, `typ` and `kid`.
    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let keys = self.snapshot();
        let current = &keys.current;
        let mut header =
            jsonwebtoken::Header::new(jsonwebtoken_algorithm(current.secret.algorithm()));
        header.kid = Some(current.kid.clone());
        jsonwebtoken::encode(&header, claims, &current.secret.encoding_key()?)
            .context("Failed to sign a JWT")
    }

    /// Checks a token's signature (by its `kid`), issuer, audience and expiry at `now`, and
    /// returns its claims. A `kid` not known yet makes the ring reread the keys (at most once
    /// per [`RELOAD_AT_MOST_EVERY`]).
    pub async fn verify(&self, token: &str, now: i64) -> Result<Claims, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        let kid = header.kid.ok_or(JwtError::Malformed)?;
        let key = match self.public_key(&kid, now) {
            Some(key) => key,
            None => {
                self.reload_rate_limited().await;
                self.public_key(&kid, now).ok_or(JwtError::UnknownKey)?
            }
        };
        let settings = &self.0.settings;
        let mut validation = Validation::new(jsonwebtoken_algorithm(key.algorithm));
        // Expiry is checked below against the service's clock, not the system's.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&settings.audience);
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|err| JwtError::from_jsonwebtoken(&err))?;
        if now >= data.claims.exp.saturating_add(LEEWAY_SECS) {
            return Err(JwtError::Expired);
        }
        Ok(data.claims)
    }

    fn public_key(&self, kid: &str, now: i64) -> Option<PublicKey> {
        self.snapshot()
            .public
            .get(kid)
            .filter(|key| key.published_at(now))
            .cloned()
    }

    /// The published keys as an RFC 7517 JWK Set: `{"keys": [...]}`, newest first.
    pub fn jwks(&self) -> Value {
        let now = self.0.clock.now();
        let keys = self.snapshot();
        let published: Vec<Value> = keys
            .order
            .iter()
            .filter_map(|kid| keys.public.get(kid))
            .filter(|key| key.published_at(now))
            .map(|key| key.jwk.clone())
            .collect();
        json!({ "keys": published })
    }

    /// Starts rereading the keys in the background unless they were reread in the last
    /// [`RELOAD_AT_MOST_EVERY`] or a reread is under way. Never waits for the database, so the
    /// key set is served from memory even while the database is slow or down.
    pub fn refresh_soon(&self) {
        let Ok(mut last) = self.0.last_reload.clone().try_lock_owned() else {
            return;
        };
        if !self.is_stale(*last) {
            return;
        }
        let ring = self.clone();
        tokio::spawn(async move {
            if let Err(err) = ring.reload_locked(&mut last).await {
                tracing::warn!(error = %format!("{err:#}"), "could not reread the signing keys");
            }
        });
    }

    /// True when `last` (a reread) is [`RELOAD_AT_MOST_EVERY`] old, or in the future (a clock
    /// that went backwards does not hold rereads off).
    fn is_stale(&self, last: i64) -> bool {
        let now = self.0.clock.now();
        let gap = i64::try_from(RELOAD_AT_MOST_EVERY.as_secs()).unwrap_or(i64::MAX);
        !(last..last.saturating_add(gap)).contains(&now)
    }

    /// Rereads the keys from the database.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let mut last = self.0.last_reload.lock().await;
        self.reload_locked(&mut last).await
    }

    async fn reload_rate_limited(&self) {
        let mut last = self.0.last_reload.lock().await;
        if !self.is_stale(*last) {
            return;
        }
        if let Err(err) = self.reload_locked(&mut last).await {
            tracing::warn!(error = %format!("{err:#}"), "could not reread the signing keys");
        }
    }

    async fn reload_locked(&self, last: &mut i64) -> anyhow::Result<()> {
        let ring = &self.0;
        // A failed reread also counts, so a database that is down is not asked again at once.
        *last = ring.clock.now();
        let previous = self.snapshot();
        let keys = read_keys(
            &ring.store,
            &ring.data_key,
            ring.clock.now(),
            Some(&previous),
        )
        .await?;
        if keys.current.kid != previous.current.kid {
            tracing::info!(kid = keys.current.kid, "signing with a new key");
        }
        *ring.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        Ok(())
    }

    /// Makes a new current key of the configured algorithm and switches to it at once; the
    /// old key stays published until the tokens it signed have expired. Returns the new kid.
    pub async fn rotate(&self) -> anyhow::Result<String> {
        let ring = &self.0;
        let now = ring.clock.now();
        let kid = rotate(
            &ring.store,
            &ring.data_key,
            ring.settings.algorithm,
            now,
            ring.settings.retire_after(now),
        )
        .await
        .context("Failed to rotate the signing key")?;
        self.reload().await?;
        Ok(kid)
    }

    /// Rereads the keys every [`RELOAD_EVERY`], for as long as it runs.
    pub async fn reload_loop(self) {
        let mut interval = tokio::time::interval(RELOAD_EVERY);
        interval.tick().await;
        loop {
            interval.tick().await;
            if let Err(err) = self.reload().await {
                tracing::warn!(error = %format!("{err:#}"), "could not reread the signing keys");
            }
        }
    }
}

/// Reads the published keys; the private half of the current one is opened only when it is
/// not the one already in `previous`.
async fn read_keys(
    store: &SigningKeyStore,
    data_key: &DataKey,
    now: i64,
    previous: Option<&KeySet>,
) -> anyhow::Result<KeySet> {
    let rows = store
        .published(now)
        .await
        .context("Failed to read the signing keys")?;
    let newest = rows
        .first()
        .filter(|row| row.retire_after.is_none())
        .context("no current signing key is stored")?;
    let current = match previous {
        Some(previous) if previous.current.kid == newest.kid => previous.current.clone(),
        _ => Arc::new(open_current(newest, data_key)?),
    };
    let mut public = HashMap::with_capacity(rows.len());
    let mut order = Vec::with_capacity(rows.len());
    for row in &rows {
        match PublicKey::from_row(row) {
            Ok(key) => {
                public.insert(row.kid.clone(), key);
                order.push(row.kid.clone());
            }
            Err(err) => {
                tracing::warn!(kid = row.kid, error = %format!("{err:#}"), "skipped a signing key");
            }
        }
    }
    Ok(KeySet {
        current,
        public,
        order,
    })
}

fn open_current(row: &StoredKey, data_key: &DataKey) -> anyhow::Result<CurrentKey> {
    let algorithm = JwtAlgorithm::parse(&row.algorithm).with_context(|| {
        format!(
            "the current signing key {} has an unknown algorithm {:?}",
            row.kid, row.algorithm
        )
    })?;
    let bytes = Zeroizing::new(
        data_key
            .open_bytes(&row.sealed_private_key, &seal_context(&row.kid))
            .with_context(|| {
                format!(
                    "the signing key {} cannot be opened with this data key (was \
                     security.data_key changed? Put the key it replaced in \
                     security.previous_data_keys, start, and run `wxauth rotate-data-key`)",
                    row.kid
                )
            })?,
    );
    let secret = Secret::from_bytes(algorithm, &bytes)
        .with_context(|| format!("the signing key {} is not a valid {algorithm} key", row.kid))?;
    Ok(CurrentKey {
        kid: row.kid.clone(),
        secret,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::sql::SqlStore;

    const TTL: i64 = 600;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: SigningKeyStore,
        data_key: DataKey,
        clock: ManualClock,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let sql = SqlStore::sqlite_in(dir.path()).await;
        Fixture {
            _dir: dir,
            store: SigningKeyStore::new(&sql),
            data_key: DataKey::new([9; 32]),
            clock: ManualClock::new(),
        }
    }

    fn settings(algorithm: JwtAlgorithm) -> JwtSettings {
        JwtSettings {
            issuer: "https://auth.example.com".to_owned(),
            audience: vec!["wxauth".to_owned(), "orders".to_owned()],
            algorithm,
            access_ttl: TTL,
        }
    }

    impl Fixture {
        async fn ring(&self, settings: JwtSettings) -> KeyRing {
            KeyRing::load(
                self.store.clone(),
                self.data_key.clone(),
                settings,
                Arc::new(self.clock.clone()),
            )
            .await
            .unwrap()
        }

        fn now(&self) -> i64 {
            self.clock.now()
        }
    }

    fn subject() -> Subject<'static> {
        Subject {
            user_id: "user-1",
            session_id: "sess-1",
            app_id: "wx0123456789abcdef",
            openid: "o-openid",
            unionid: Some("u-unionid"),
        }
    }

    fn b64_json(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    async fn round_trip(algorithm: JwtAlgorithm) {
        let f = fixture().await;
        let ring = f.ring(settings(algorithm)).await;
        let claims = ring.claims(subject(), f.now());
        let token = ring.sign(&claims).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = b64_json(parts[0]);
        assert_eq!(header["alg"], algorithm.as_str());
        assert_eq!(header["kid"], ring.current_kid());
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
        assert_eq!(ring.verify(&token, f.now()).await.unwrap(), claims);
        assert_eq!(claims.exp - claims.iat, TTL);
        assert_eq!(claims.aud, ["wxauth", "orders"]);
        assert_eq!(claims.unionid.as_deref(), Some("u-unionid"));
    }

    #[tokio::test]
    async fn an_eddsa_token_verifies_and_gives_back_its_claims() {
        round_trip(JwtAlgorithm::EdDSA).await;
    }

    #[tokio::test]
    async fn an_es256_token_verifies_and_gives_back_its_claims() {
        round_trip(JwtAlgorithm::ES256).await;
    }

    #[tokio::test]
    async fn a_token_for_another_audience_or_issuer_is_refused() {
        let f = fixture().await;
        let ring = f.ring(settings(JwtAlgorithm::EdDSA)).await;
        let mut claims = ring.claims(subject(), f.now());
        claims.aud = vec!["payments".to_owned()];
        let token = ring.sign(&claims).unwrap();
        assert_eq!(
            ring.verify(&token, f.now()).await,
            Err(JwtError::WrongAudience)
        );

        let mut claims = ring.claims(subject(), f.now());
        claims.iss = "https://evil.example.com".to_owned();
        let token = ring.sign(&claims).unwrap();
        assert_eq!(
            ring.verify(&token, f.now()).await,
            Err(JwtError::WrongIssuer)
        );

        // One matching audience among several is enough.
        let mut claims = ring.claims(subject(), f.now());
        claims.aud = vec!["payments".to_owned(), "orders".to_owned()];
        let token = ring.sign(&claims).unwrap();
        assert!(ring.verify(&token, f.now()).await.is_ok());
    }

    #[tokio::test]
    async fn a_token_is_refused_once_expired_with_only_a_few_seconds_of_leeway() {
        let f = fixture().await;
        let ring = f.ring(settings(JwtAlgorithm::EdDSA)).await;
        let claims = ring.claims(subject(), f.now());
        let token = ring.sign(&claims).unwrap();
        assert!(ring.verify(&token, claims.exp - 1).await.is_ok());
        assert!(
            ring.verify(&token, claims.exp + LEEWAY_SECS - 1)
                .await
                .is_ok()
        );
        assert_eq!(
            ring.verify(&token, claims.exp + LEEWAY_SECS).await,
            Err(JwtError::Expired)
        );
        assert_eq!(
            ring.verify(&token, claims.exp + 3600).await,
            Err(JwtError::Expired)
        );
    }

    #[tokio::test]
    async fn a_tampered_token_is_refused() {
        let f = fixture().await;
        let ring = f.ring(settings(JwtAlgorithm::EdDSA)).await;
        let token = ring.sign(&ring.claims(subject(), f.now())).unwrap();
        let parts: Vec<&str> = token.split('.').collect();

        // Another subject under the original signature.
        let mut payload = b64_json(parts[1]);
        payload["sub"] = json!("user-2");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            parts[2]
        );
        assert_eq!(
            ring.verify(&forged, f.now()).await,
            Err(JwtError::BadSignature)
        );

        // A flipped signature bit.
        let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        signature[0] ^= 1;
        let flipped = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            URL_SAFE_NO_PAD.encode(signature)
        );
        assert_eq!(
            ring.verify(&flipped, f.now()).await,
            Err(JwtError::BadSignature)
        );

        // The header claiming another algorithm for the same key.
        let mut header = b64_json(parts[0]);
        header["alg"] = json!("ES256");
        let confused = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            parts[1],
            parts[2]
        );
        assert_eq!(
            ring.verify(&confused, f.now()).await,
            Err(JwtError::BadSignature)
        );

        for garbage in ["", "abc", "a.b.c", "wxa_0123456789"] {
            assert_eq!(
                ring.verify(garbage, f.now()).await,
                Err(JwtError::Malformed)
            );
        }
    }

    #[tokio::test]
    async fn a_token_from_a_key_this_service_never_had_is_refused() {
        let f = fixture().await;
        let ring = f.ring(settings(JwtAlgorithm::EdDSA)).await;
        // Same issuer and audience, but keys in another database.
        let other = fixture().await;
        let stranger = other.ring(settings(JwtAlgorithm::EdDSA)).await;
        let token = stranger.sign(&stranger.claims(subject(), f.now())).unwrap();
        assert_ne!(stranger.current_kid(), ring.current_kid());
        assert_eq!(
            ring.verify(&token, f.now()).await,
            Err(JwtError::UnknownKey)
        );
    }

    #[tokio::test]
    async fn the_jwks_lists_public_keys_only_in_rfc_7517_shape() {
        let f = fixture().await;
        let ring = f.ring(settings(JwtAlgorithm::EdDSA)).await;
        let jwks = ring.jwks();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let key = keys[0].as_object().unwrap();
        let mut names: Vec<&str> = key.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["alg", "crv", "kid", "kty", "use", "x"]);
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["kid"], ring.current_kid());
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(key["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );

        let f = fixture().await;
        let ring = f.ring(settings(JwtAlgorithm::ES256)).await;
        let key = ring.jwks()["keys"][0].clone();
        let mut names: Vec<String> = key.as_object().unwrap().keys().cloned().collect();
        names.sort_unstable();
        assert_eq!(names, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        assert_eq!(key["alg"], "ES256");
    }

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint_of_the_key() {
        // The Ed25519 key and thumbprint of RFC 8037, appendix A.3.
        let members = [
            ("crv", "Ed25519".to_owned()),
            ("kty", "OKP".to_owned()),
            (
                "x",
                "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".to_owned(),
            ),
        ];
        assert_eq!(
            thumbprint(&members),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[tokio::test]
    async fn a_restart_and_a_second_instance_sign_with_the_same_stored_key() {
        let f = fixture().await;
        let first = f.ring(settings(JwtAlgorithm::EdDSA)).await;
        let second = f.ring(settings(JwtAlgorithm::EdDSA)).await;
        assert_eq!(first.current_kid(), second.current_kid());
        let token = second.sign(&second.claims(subject(), f.now())).unwrap();
        assert!(first.verify(&token, f.now()).await.is_ok());
        assert_eq!(f.store.all().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn instances_starting_together_make_one_key() {
        let f = fixture().await;
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let (store, data_key) = (f.store.clone(), f.data_key.clone());
                let clock: Arc<dyn Clock> = Arc::new(f.clock.clone());
                tokio::spawn(KeyRing::load(
                    store,
                    data_key,
                    settings(JwtAlgorithm::EdDSA),
                    clock,
                ))
            })
            .collect();
        let mut kids = std::collections::HashSet::new();
        for start in starts {
            kids.insert(start.await.unwrap().unwrap().current_kid());
        }
        assert_eq!(kids.len(), 1);
        assert_eq!(f.store.all().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn rotation_keeps_the_old_key_published_until_its_tokens_have_expired() {
        let f = fixture().await;
        let ring = f.ring(settings(JwtAlgorithm::EdDSA)).await;
        let old_kid = ring.current_kid();
        let old_token = ring.sign(&ring.claims(subject(), f.now())).unwrap();

        let new_kid = ring.rotate().await.unwrap();
        assert_ne!(new_kid, old_kid);
        assert_eq!(ring.current_kid(), new_kid);
        let new_token = ring.sign(&ring.claims(subject(), f.now())).unwrap();
        assert_eq!(
            b64_json(new_token.split('.').next().unwrap())["kid"],
            new_kid
        );
        let kids: Vec<Value> = ring.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].clone())
            .collect();
        assert_eq!(kids, [json!(new_kid), json!(old_kid)]);
        assert!(ring.verify(&old_token, f.now()).await.is_ok());

        // Just before retire_after the old key is still out; from then on it is gone.
        let retire = retire_after(f.now(), TTL);
        f.clock.advance(retire - f.now() - 1);
        ring.reload().await.unwrap();
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2);
        f.clock.advance(1);
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 1);
        ring.reload().await.unwrap();
        assert_eq!(ring.jwks()["keys"][0]["kid"], new_kid);
        assert_eq!(
            ring.verify(&old_token, f.now() - TTL).await,
            Err(JwtError::UnknownKey)
        );
        assert!(ring.verify(&new_token, f.now() - TTL).await.is_ok());
    }

    #[tokio::test]
    async fn another_instances_new_key_is_found_through_the_unknown_kid_at_most_every_few_seconds()
    {
        let f = fixture().await;
        let a = f.ring(settings(JwtAlgorithm::EdDSA)).await;
        let b = f.ring(settings(JwtAlgorithm::EdDSA)).await;
        let new_kid = b.rotate().await.unwrap();
        let token = b.sign(&b.claims(subject(), f.now())).unwrap();
        // `a` read the keys a moment ago: it does not ask the database again yet.
        assert_eq!(a.verify(&token, f.now()).await, Err(JwtError::UnknownKey));
        f.clock
            .advance(RELOAD_AT_MOST_EVERY.as_secs().try_into().unwrap());
        assert!(a.verify(&token, f.now()).await.is_ok());
        assert_eq!(a.current_kid(), new_kid);
    }

    #[tokio::test]
    async fn the_key_set_picks_up_another_instances_key_in_the_background() {
        let f = fixture().await;
        let a = f.ring(settings(JwtAlgorithm::EdDSA)).await;
        let b = f.ring(settings(JwtAlgorithm::EdDSA)).await;
        let new_kid = b.rotate().await.unwrap();
        // Read a moment ago: no reread yet.
        a.refresh_soon();
        drop(a.0.last_reload.lock().await);
        assert_eq!(a.jwks()["keys"].as_array().unwrap().len(), 1);
        f.clock
            .advance(RELOAD_AT_MOST_EVERY.as_secs().try_into().unwrap());
        a.refresh_soon();
        // The reread holds the lock until it is done.
        drop(a.0.last_reload.lock().await);
        assert_eq!(a.jwks()["keys"][0]["kid"], new_kid);
        assert_eq!(a.jwks()["keys"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_key_change_whose_caller_is_dropped_still_completes_whole() {
        let f = fixture().await;
        let ring = f.ring(settings(JwtAlgorithm::EdDSA)).await;
        let old_kid = ring.current_kid();
        let key = new_key(JwtAlgorithm::EdDSA, &f.data_key, f.now());
        let new_kid = key.kid.clone();
        // Polled once (the transaction's task starts), then dropped, as a cancelled request is.
        let mut change = Box::pin(f.store.make_current(key, 2, f.now() + 100));
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(change.as_mut(), cx))
        })
        .await;
        assert!(first.is_pending());
        drop(change);
        let mut keys = Vec::new();
        for _ in 0..500 {
            keys = f.store.all().await.unwrap();
            if keys.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(keys.len(), 2, "the transaction finished");
        assert_eq!(
            (keys[0].kid.as_str(), keys[0].retire_after),
            (new_kid.as_str(), None)
        );
        assert_eq!(
            (keys[1].kid.as_str(), keys[1].retire_after),
            (old_kid.as_str(), Some(f.now() + 100))
        );
        ring.reload().await.unwrap();
        assert_eq!(ring.current_kid(), new_kid);
    }

    #[tokio::test]
    async fn changing_the_algorithm_makes_a_new_key_and_keeps_the_old_one_published() {
        let f = fixture().await;
        let eddsa = f.ring(settings(JwtAlgorithm::EdDSA)).await;
        let old_token = eddsa.sign(&eddsa.claims(subject(), f.now())).unwrap();
        let es256 = f.ring(settings(JwtAlgorithm::ES256)).await;
        assert_ne!(es256.current_kid(), eddsa.current_kid());
        let algs: Vec<Value> = es256.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["alg"].clone())
            .collect();
        assert_eq!(algs, [json!("ES256"), json!("EdDSA")]);
        assert!(es256.verify(&old_token, f.now()).await.is_ok());
    }

    #[tokio::test]
    async fn a_key_sealed_under_another_data_key_stops_the_start_with_a_clear_message() {
        let f = fixture().await;
        f.ring(settings(JwtAlgorithm::EdDSA)).await;
        let err = KeyRing::load(
            f.store.clone(),
            DataKey::new([1; 32]),
            settings(JwtAlgorithm::EdDSA),
            Arc::new(f.clock.clone()),
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("security.data_key"), "{err:#}");
    }

    #[tokio::test]
    async fn nothing_secret_shows_in_debug_or_in_the_stored_public_key() {
        let f = fixture().await;
        let ring = f.ring(settings(JwtAlgorithm::EdDSA)).await;
        let keys = ring.snapshot();
        let secret = keys.current.secret.to_bytes();
        let encoded = URL_SAFE_NO_PAD.encode(secret.as_slice());
        for shown in [
            format!("{ring:?}"),
            format!("{:?}", keys.current),
            format!("{:?}", f.store.all().await.unwrap()),
            ring.jwks().to_string(),
        ] {
            assert!(!shown.contains(&encoded), "{shown}");
            assert!(!shown.contains(&hex::encode(secret.as_slice())), "{shown}");
        }
        let stored = f.store.all().await.unwrap();
        assert!(!stored[0].public_jwk.contains(&encoded));
        assert!(!stored[0].sealed_private_key.contains(&encoded));
    }
}
