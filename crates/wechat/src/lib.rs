//! A client for WeChat's Mini Program server API, and the open-data crypto.
//!
//! # Layout
//! - [`client`]: [`WechatClient`], the HTTP client for `code2Session`, access tokens,
//!   `getuserphonenumber`, `checksession` and `resetusersessionkey`, with busy retries,
//!   timeouts and secrets kept out of every error and log line; configured by [`ClientConfig`].
//! - [`token`]: [`AccessToken`] and the [`TokenStore`] that caches it per app and lets
//!   instances share one refresher ([`MemoryTokenStore`] by default).
//! - [`types`]: identifiers (`AppId`, `OpenId`, `UnionId`, `JsCode`) and secrets (`AppSecret`,
//!   `SessionKey`) parsed once at the edge; decrypted payloads (`UserInfo`, `PhoneInfo`).
//! - [`crypto`]: strict `WXBizDataCrypt` decryption, the `rawData` and checksession signatures.
//! - [`error`]: WeChat errcodes classified by what to do about them, plus transport failures.
//! - [`observe`]: an [`observe::Observer`] hook told about every call (for a service's metrics),
//!   and a bounded label for each outcome.
//!
//! No web framework here: the crate is usable on its own.

pub mod client;
pub mod crypto;
pub mod error;
pub mod observe;
pub mod token;
pub mod types;

/// Compiles the README's example as a doctest, so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use client::{ClientConfig, TokenMode, WechatClient};
pub use error::{ApiErrorKind, WechatError};
pub use token::{AccessToken, MemoryTokenStore, TokenStore, TokenStoreError};
pub use types::{
    AppCredentials, AppId, AppSecret, Code2Session, JsCode, OpenId, ParseError, PhoneInfo,
    SessionKey, UnionId, UserInfo, Watermark,
};
