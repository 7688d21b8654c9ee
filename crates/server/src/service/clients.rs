//! The team's own services (`[[services]]`), which call wxauth with HTTP Basic
//! `name:secret` to introspect tokens and read events.

use std::collections::HashMap;

use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The configured services, by name; only a hash of each secret is kept.
#[derive(Clone, Default)]
pub struct ServiceClients {
    secrets: HashMap<String, [u8; 32]>,
}

impl std::fmt::Debug for ServiceClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.secrets.keys().collect();
        names.sort();
        f.debug_struct("ServiceClients")
            .field("names", &names)
            .finish()
    }
}

impl ServiceClients {
    /// The services as configured: (name, secret).
    pub fn new(services: &[(String, SecretString)]) -> Self {
        Self {
            secrets: services
                .iter()
                .map(|(name, secret)| (name.clone(), digest(secret.expose_secret())))
                .collect(),
        }
    }

    /// The service a `name:secret` pair proves to be, if any. The secret is compared in
    /// constant time (by its hash), so timing tells nothing about it.
    pub fn authenticate(&self, name: &str, secret: &str) -> Option<&str> {
        let (known, expected) = self.secrets.get_key_value(name)?;
        bool::from(digest(secret).ct_eq(expected)).then_some(known.as_str())
    }

    /// Whether any service is configured.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_name_and_secret_authenticate() {
        let clients = ServiceClients::new(&[("orders".to_owned(), SecretString::from("s3cr3t"))]);
        assert_eq!(clients.authenticate("orders", "s3cr3t"), Some("orders"));
        assert_eq!(clients.authenticate("orders", "s3cr3"), None);
        assert_eq!(clients.authenticate("payments", "s3cr3t"), None);
        assert!(!format!("{clients:?}").contains("s3cr3t"));
    }
}
