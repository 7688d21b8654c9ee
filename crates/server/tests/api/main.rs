//! End-to-end tests of the service over real HTTP: the real `Application` on port 0 against
//! the real WeChat simulator on port 0.

// Tests panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

#[path = "../support/backend.rs"]
mod backend;
mod helpers;

mod auth;
mod cancellation;
mod data_key;
mod errors;
mod events;
mod me;
mod people;
mod profile;
mod races;
mod services;
mod sessions;
mod wechat_errors;
mod wellknown;
