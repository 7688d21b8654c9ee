//! Operators (`[[admins]]`), who call the admin API with `Authorization: Bearer <admin key>`.
//!
//! An admin key is a recognisable prefix ([`ADMIN_KEY_PREFIX`], unlike any user token's) plus
//! 256 random bits. Only its SHA-256 is configured (`key_hash = "sha256:<hex>"`): a key with
//! that much entropy needs no slow hash, and the configuration never holds the key itself.

use std::fmt;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::tokens::NewToken;

/// Prefix of admin keys: never taken for a user's token, and a user's token never for one.
pub const ADMIN_KEY_PREFIX: &str = "wxadm_";

/// How a `key_hash` is written: the algorithm, a colon, 64 hex digits.
const HASH_SCHEME: &str = "sha256:";

/// The configured operators: a name and the hash of its key each.
#[derive(Clone, Default)]
pub struct AdminKeys {
    admins: Vec<(String, [u8; 32])>,
}

impl fmt::Debug for AdminKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.admins.iter().map(|(name, _)| name).collect();
        f.debug_struct("AdminKeys").field("names", &names).finish()
    }
}

impl AdminKeys {
    /// The operators as configured: (name, hash of the key).
    pub fn new(admins: Vec<(String, [u8; 32])>) -> Self {
        Self { admins }
    }

    /// The operator a key belongs to, if any. Every configured hash is compared, each in
    /// constant time, so timing tells neither the key nor which entry came close.
    pub fn authenticate(&self, key: &str) -> Option<&str> {
        if !key.starts_with(ADMIN_KEY_PREFIX) || key.len() > 256 {
            return None;
        }
        let presented = digest(key);
        let mut found = None;
        for (name, expected) in &self.admins {
            if bool::from(presented.ct_eq(expected)) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// Whether any operator is configured (without one, the admin API refuses everyone).
    pub fn is_empty(&self) -> bool {
        self.admins.is_empty()
    }
}

/// A new admin key and the `key_hash` that goes into the configuration for it.
pub struct NewAdminKey {
    /// The key: shown once, to the operator.
    pub key: String,
    /// `sha256:<hex>`, for `[[admins]] key_hash`.
    pub key_hash: String,
}

impl NewAdminKey {
    /// 256 random bits behind the admin prefix.
    pub fn generate() -> Self {
        let token = NewToken::generate(ADMIN_KEY_PREFIX);
        Self {
            key_hash: format!("{HASH_SCHEME}{}", token.hash.to_hex()),
            key: token.value,
        }
    }
}

/// Reads a configured `key_hash`; the problem in words when it is not one.
pub fn parse_key_hash(text: &str) -> Result<[u8; 32], String> {
    let hex_digits = text.trim().strip_prefix(HASH_SCHEME).ok_or_else(|| {
        "key_hash must be \"sha256:\" and 64 hex digits (`wxauth gen-admin-key` prints one)"
            .to_owned()
    })?;
    if hex_digits.starts_with(ADMIN_KEY_PREFIX) {
        return Err(
            "key_hash holds an admin key, not its hash: put only the key_hash line that \
             `wxauth gen-admin-key` prints in the configuration"
                .to_owned(),
        );
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut hash).map_err(|_| {
        "key_hash must be \"sha256:\" and 64 hex digits (`wxauth gen-admin-key` prints one)"
            .to_owned()
    })?;
    Ok(hash)
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_authenticates_through_its_printed_hash_only() {
        let new = NewAdminKey::generate();
        assert!(new.key.starts_with(ADMIN_KEY_PREFIX));
        assert_eq!(new.key.len(), ADMIN_KEY_PREFIX.len() + 43, "256 bits");
        let hash = parse_key_hash(&new.key_hash).unwrap();
        let admins = AdminKeys::new(vec![("ops".to_owned(), hash)]);
        assert_eq!(admins.authenticate(&new.key), Some("ops"));
        assert_eq!(admins.authenticate(&new.key[..new.key.len() - 1]), None);
        assert_eq!(admins.authenticate(&NewAdminKey::generate().key), None);
        assert!(!format!("{admins:?}").contains(&new.key_hash[7..]));
    }

    #[test]
    fn a_user_token_is_never_an_admin_key_even_with_a_matching_hash() {
        let user_token = NewToken::generate(crate::tokens::ACCESS_PREFIX);
        let admins = AdminKeys::new(vec![("ops".to_owned(), user_token.hash.0)]);
        assert_eq!(admins.authenticate(&user_token.value), None);
    }

    #[test]
    fn a_key_hash_that_is_not_one_is_explained() {
        assert!(parse_key_hash("sha256:abc").is_err());
        assert!(parse_key_hash(&"a".repeat(64)).is_err());
        let key = NewAdminKey::generate().key;
        let err = parse_key_hash(&format!("sha256:{key}")).unwrap_err();
        assert!(err.contains("not its hash"), "{err}");
        assert!(!err.contains(&key));
    }
}
