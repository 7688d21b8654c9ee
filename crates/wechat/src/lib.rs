//! A client for WeChat's Mini Program server API, and the open-data crypto.
//!
//! # Layout
//! - [`types`]: identifiers (`AppId`, `OpenId`, `UnionId`, `JsCode`) and secrets (`AppSecret`,
//!   `SessionKey`) parsed once at the edge; decrypted payloads (`UserInfo`, `PhoneInfo`).
//! - [`crypto`]: strict `WXBizDataCrypt` decryption, the `rawData` and checksession signatures.
//! - [`error`]: WeChat errcodes classified by what to do about them, plus transport failures.
//!
//! No web framework here: the crate is usable on its own.

pub mod crypto;
pub mod error;
pub mod types;

pub use error::{ApiErrorKind, WechatError};
pub use types::{
    AppCredentials, AppId, AppSecret, Code2Session, JsCode, OpenId, ParseError, PhoneInfo,
    SessionKey, UnionId, UserInfo, Watermark,
};
