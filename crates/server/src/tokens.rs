//! Opaque tokens: a recognisable prefix plus 32 random bytes; only their SHA-256 is stored.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

/// Prefix of access tokens.
pub const ACCESS_PREFIX: &str = "wxa_";
/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "wxr_";

/// The SHA-256 of a token: what the store keeps and looks up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Hashes a token as presented.
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Hex form, for stores that key by string.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A short prefix of the hash identifies a token in logs without revealing it.
        write!(f, "TokenHash({}…)", &hex::encode(&self.0[..4]))
    }
}

/// A freshly minted token: the value goes to the client once, the hash to the store.
pub struct NewToken {
    /// The token string.
    pub value: String,
    /// Its hash.
    pub hash: TokenHash,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl NewToken {
    /// Mints a token with `prefix` and 256 random bits.
    pub fn generate(prefix: &str) -> Self {
        let random: [u8; 32] = rand::random();
        let mut value = String::with_capacity(prefix.len() + 43);
        value.push_str(prefix);
        URL_SAFE_NO_PAD.encode_string(random, &mut value);
        Self::from_value(value)
    }

    /// A token made elsewhere (a signed JWT), with its hash.
    pub fn from_value(value: String) -> Self {
        let hash = TokenHash::of(&value);
        Self { value, hash }
    }
}

/// A new random id (for file names): 16 random bytes in hex.
pub fn random_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// A new session id: a UUIDv7 in 32 hex digits, so time-ordered. New sessions then go at the
/// end of the indexes keyed by session (the sessions' and their tokens'), instead of
/// changing a page at a random place in each with every login. It is not a secret (it names
/// the session to operators and in introspection; the tokens are the credentials).
pub fn session_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_32_hex_digits_in_the_order_they_were_made() {
        let ids: Vec<String> = (0..1000).map(|_| session_id()).collect();
        assert!(
            ids.iter()
                .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "not in order: {ids:?}");
    }

    #[test]
    fn tokens_carry_their_prefix_and_256_random_bits() {
        let a = NewToken::generate(ACCESS_PREFIX);
        let b = NewToken::generate(ACCESS_PREFIX);
        assert!(a.value.starts_with("wxa_"));
        assert_eq!(a.value.len(), 4 + 43);
        assert_ne!(a.value, b.value);
        assert_eq!(TokenHash::of(&a.value), a.hash);
        assert!(!format!("{a:?}").contains(&a.value[4..]));
    }
}
