//! The authenticated hot path on SQLite, in process memory: an access token's session and
//! person (and the person's identities), kept after the first read so that the next requests
//! with the token cost no database round trip.
//!
//! Coherence. SQLite is served by one process, so every change of a session or a person
//! made through the service passes through this process's [`SqlStore`](super::SqlStore):
//! each such write, once committed, moves the cache to a new generation, and an entry
//! filled in an older one is never served again. A reader takes the generation *before* its
//! read, so a fill racing a write can only be stored as already stale. Writes that cannot
//! change what a cached token means (a new session, a login code, recording use) keep the
//! generation. A change made by another process on the same file (the `wxauth` admin verbs)
//! is seen within [`FOREIGN_WRITES_SEEN_WITHIN`], the longest an entry lives.
//!
//! Expiry is judged again on every hit with the service's clock, and an entry whose session
//! is due to be marked as used ([`TOUCH_EVERY`]) is read again, so the mark lands.
//!
//! Memory: what is no longer served is dropped every [`FOREIGN_WRITES_SEEN_WITHIN`] by the
//! store's sweep (see [`AuthCache::sweep_at`]), so a quiet process keeps none of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::model::{Identity, User, UserId};
use crate::store::{AccessCheck, Session};
use crate::tokens::TokenHash;

/// The longest an entry is served: how soon a change written by another process is seen.
pub const FOREIGN_WRITES_SEEN_WITHIN: Duration = Duration::from_secs(1);

/// How often a session's use is recorded (seconds); see `AppState::touch_later`.
pub const TOUCH_EVERY: i64 = 60;

/// Entries kept at most (a few megabytes: an entry is served for a second at most, so this is
/// room for as many distinct tokens a second); beyond, the stale ones go, or else all.
const CAPACITY: usize = 16_384;

/// Every this many entries, a fill first drops the stale ones: what a burst of requests left
/// behind does not outlive it by more than this many entries (about a kilobyte each).
const SWEEP_EVERY: usize = 1024;

/// A live token's session and person, as read in generation `generation`.
struct Entry {
    generation: u64,
    filled: Instant,
    token_expires_at: i64,
    session: Session,
    user: User,
}

/// A person's identities, as read in generation `generation`.
struct Identities {
    generation: u64,
    filled: Instant,
    identities: Vec<Identity>,
}

/// Sessions and persons by access-token hash; identities by person.
pub struct AuthCache {
    generation: AtomicU64,
    entries: Mutex<HashMap<TokenHash, Entry>>,
    identities: Mutex<HashMap<UserId, Identities>>,
}

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCache")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for AuthCache {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            generation: AtomicU64::new(0),
            entries: Mutex::new(HashMap::new()),
            identities: Mutex::new(HashMap::new()),
        }
    }

    /// Tokens kept (fresh or not yet swept).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The generation a reader takes before it reads.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A committed write may have changed a session or a person: nothing read before it is
    /// served again, and what was kept is let go.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        // Taken under the locks, dropped after them.
        let entries =
            std::mem::take(&mut *self.entries.lock().unwrap_or_else(PoisonError::into_inner));
        let identities = std::mem::take(
            &mut *self
                .identities
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        drop((entries, identities));
    }

    /// The cached answer for a token at `now`, when there is a fresh one.
    pub fn get(&self, hash: &TokenHash, now: i64) -> Option<(AccessCheck, User)> {
        let generation = self.generation();
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(hash)?;
        if !served(entry.generation, entry.filled, generation, Instant::now())
            || now - entry.session.last_seen_at >= TOUCH_EVERY
        {
            return None;
        }
        let check = AccessCheck::judge(entry.session.clone(), entry.token_expires_at, now);
        Some((check, entry.user.clone()))
    }

    /// Drops what is no longer served at `now` (filled before the current generation, or
    /// longer ago than [`FOREIGN_WRITES_SEEN_WITHIN`]), and the room the maps grew to when
    /// that empties them: what a burst of requests left behind does not outlive it in a
    /// quiet process.
    pub fn sweep_at(&self, now: Instant) {
        let generation = self.generation();
        let dropped = sweep(&self.entries, |e| {
            served(e.generation, e.filled, generation, now)
        });
        let dropped_identities = sweep(&self.identities, |e| {
            served(e.generation, e.filled, generation, now)
        });
        // Freed after the locks.
        drop((dropped, dropped_identities));
    }

    /// The room the token map has, in entries (what [`AuthCache::sweep_at`] gives back).
    #[cfg(test)]
    fn room(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .capacity()
    }

    /// A person's identities, when there is a fresh copy.
    pub fn identities(&self, user_id: &UserId) -> Option<Vec<Identity>> {
        let generation = self.generation();
        let cached = self
            .identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = cached.get(user_id)?;
        served(entry.generation, entry.filled, generation, Instant::now())
            .then(|| entry.identities.clone())
    }

    /// Keeps a person's identities as a read that started in `generation` found them.
    pub fn fill_identities(&self, user_id: &UserId, generation: u64, identities: &[Identity]) {
        if generation != self.generation() {
            return;
        }
        let mut cached = self
            .identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        make_room(&mut cached, |e| {
            served(e.generation, e.filled, generation, now)
        });
        cached.insert(
            user_id.clone(),
            Identities {
                generation,
                filled: Instant::now(),
                identities: identities.to_vec(),
            },
        );
    }

    /// Keeps what a read that started in `generation` found for a live token.
    pub fn fill(&self, hash: TokenHash, generation: u64, check: &AccessCheck, user: &User) {
        let AccessCheck::Valid {
            session,
            token_expires_at,
        } = check
        else {
            return;
        };
        if generation != self.generation() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        make_room(&mut entries, |e| {
            served(e.generation, e.filled, generation, now)
        });
        entries.insert(
            hash,
            Entry {
                generation,
                filled: Instant::now(),
                token_expires_at: *token_expires_at,
                session: session.clone(),
                user: user.clone(),
            },
        );
    }
}

/// Whether an entry filled at `filled` in `filled_in` is still served at `now` in generation
/// `generation`.
fn served(filled_in: u64, filled: Instant, generation: u64, now: Instant) -> bool {
    filled_in == generation && now.saturating_duration_since(filled) < FOREIGN_WRITES_SEEN_WITHIN
}

/// Keeps what `keep` says of `map`; gives the map back whole (its room with it) when nothing
/// is kept, for the caller to drop after the lock.
fn sweep<K, V>(map: &Mutex<HashMap<K, V>>, keep: impl Fn(&V) -> bool) -> Option<HashMap<K, V>> {
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    map.retain(|_, v| keep(v));
    map.is_empty().then(|| std::mem::take(&mut *map))
}

/// Before an insert: every [`SWEEP_EVERY`] entries, and at [`CAPACITY`], the stale ones go; and
/// all of them when that leaves less than [`SWEEP_EVERY`] entries of room, so that the next
/// sweep is that many inserts away (a map at capacity with a few stale entries would otherwise
/// be swept on every insert).
fn make_room<K, V>(map: &mut HashMap<K, V>, fresh: impl Fn(&V) -> bool) {
    let len = map.len();
    if len >= CAPACITY || (len > 0 && len % SWEEP_EVERY == 0) {
        map.retain(|_, v| fresh(v));
        if map.len() > CAPACITY - SWEEP_EVERY {
            map.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use wxauth_wechat::{AppId, OpenId};

    use super::*;
    use crate::model::{Profile, UserId};

    fn valid(last_seen_at: i64, token_expires_at: i64) -> AccessCheck {
        AccessCheck::Valid {
            session: Session {
                id: "s".into(),
                app_id: AppId::parse("wx1234567890abcdef".to_owned()).unwrap(),
                openid: OpenId::parse("o-openid".to_owned()).unwrap(),
                sealed_session_key: String::new(),
                created_at: 0,
                last_seen_at,
                expires_at: 10_000,
                revoked_at: None,
                user_agent: None,
                ip: None,
            },
            token_expires_at,
        }
    }

    fn user() -> User {
        User {
            id: UserId::new("u".to_owned()),
            unionid: None,
            profile: Profile::default(),
            phone: None,
            extra: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_sweep_drops_what_is_no_longer_served_and_the_room_it_took() {
        let cache = AuthCache::new();
        for i in 0..100 {
            let hash = TokenHash::of(&format!("t{i}"));
            cache.fill(hash, cache.generation(), &valid(100, 130), &user());
        }
        cache.fill_identities(&UserId::new("u".to_owned()), cache.generation(), &[]);
        // Fresh: kept.
        cache.sweep_at(Instant::now());
        assert_eq!(cache.len(), 100);
        assert!(cache.identities(&UserId::new("u".to_owned())).is_some());
        // Past the time an entry is served: gone, and the map's room with them.
        cache.sweep_at(Instant::now() + FOREIGN_WRITES_SEEN_WITHIN);
        assert_eq!((cache.len(), cache.room()), (0, 0));
        assert!(cache.identities.lock().unwrap().capacity() == 0);
    }

    #[test]
    fn a_fill_is_served_until_a_write_moves_the_generation() {
        let cache = AuthCache::new();
        let hash = TokenHash([1; 32]);
        let before = cache.generation();
        cache.fill(hash, before, &valid(100, 500), &user());
        assert!(matches!(
            cache.get(&hash, 120),
            Some((AccessCheck::Valid { .. }, _))
        ));
        cache.invalidate();
        assert!(cache.get(&hash, 120).is_none());
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let cache = AuthCache::new();
        let hash = TokenHash([2; 32]);
        let before = cache.generation();
        cache.invalidate();
        cache.fill(hash, before, &valid(100, 500), &user());
        assert!(cache.get(&hash, 120).is_none());
    }

    #[test]
    fn expiry_is_judged_on_every_hit_and_a_due_touch_reads_again() {
        let cache = AuthCache::new();
        let hash = TokenHash([3; 32]);
        cache.fill(hash, cache.generation(), &valid(100, 130), &user());
        assert!(matches!(
            cache.get(&hash, 130),
            Some((AccessCheck::Expired, _))
        ));
        assert!(cache.get(&hash, 100 + TOUCH_EVERY).is_none());
    }

    #[test]
    fn identities_are_served_until_a_write_moves_the_generation() {
        let cache = AuthCache::new();
        let id = UserId::new("u".to_owned());
        let identities = vec![Identity {
            app_id: AppId::parse("wx1234567890abcdef".to_owned()).unwrap(),
            openid: OpenId::parse("o-openid".to_owned()).unwrap(),
            created_at: 1,
        }];
        let before = cache.generation();
        cache.fill_identities(&id, before, &identities);
        assert_eq!(cache.identities(&id), Some(identities.clone()));
        cache.invalidate();
        assert_eq!(cache.identities(&id), None);
        cache.fill_identities(&id, before, &identities);
        assert_eq!(
            cache.identities(&id),
            None,
            "a read older than a write is not kept"
        );
    }

    #[test]
    fn a_write_lets_go_of_what_was_kept_and_stale_entries_are_swept() {
        let cache = AuthCache::new();
        let generation = cache.generation();
        for i in 0..10u8 {
            cache.fill(TokenHash([i; 32]), generation, &valid(100, 500), &user());
        }
        assert_eq!(cache.len(), 10);
        cache.invalidate();
        assert_eq!(cache.len(), 0, "nothing read before the write is kept");

        // Entries of an older generation, left by fills that raced a write, go at the next
        // sweep.
        let old = cache.generation();
        for i in 0..SWEEP_EVERY {
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&i.to_le_bytes());
            cache.fill(TokenHash(hash), old, &valid(100, 500), &user());
        }
        assert_eq!(cache.len(), SWEEP_EVERY);
        cache.generation.fetch_add(1, Ordering::AcqRel);
        cache.fill(
            TokenHash([0xff; 32]),
            cache.generation(),
            &valid(100, 500),
            &user(),
        );
        assert_eq!(cache.len(), 1, "the stale entries went");
    }

    #[test]
    fn a_full_cache_with_a_few_stale_entries_makes_room_for_many() {
        // Entries go stale oldest first (by age): at capacity, those older than a second may be
        // only a few. The map's values here say whether an entry is fresh.
        let mut map: HashMap<usize, bool> = (0..CAPACITY).map(|i| (i, i >= 10)).collect();
        make_room(&mut map, |fresh| *fresh);
        assert!(
            map.is_empty(),
            "ten stale entries gone would leave room for ten: all went ({} kept)",
            map.len()
        );
        let mut map: HashMap<usize, bool> = (0..CAPACITY).map(|i| (i, i >= SWEEP_EVERY)).collect();
        make_room(&mut map, |fresh| *fresh);
        assert_eq!(
            map.len(),
            CAPACITY - SWEEP_EVERY,
            "room enough: the fresh stay"
        );
    }

    #[test]
    fn only_live_tokens_are_kept() {
        let cache = AuthCache::new();
        let hash = TokenHash([4; 32]);
        cache.fill(hash, cache.generation(), &AccessCheck::Revoked, &user());
        assert!(cache.get(&hash, 0).is_none());
    }
}
