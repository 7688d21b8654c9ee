//! wxauth: login and identity for WeChat Mini Programs.
//!
//! # Layout
//! - [`cli`]: the `wxauth` commands; [`demo`]: the all-in-one demo; [`admin`]: operator verbs.
//! - [`config`]: defaults → TOML → `WXAUTH_*` environment, secrets resolved and checked.
//! - [`startup`]: `Application::build(config)` binds, `run_until_stopped()` serves.
//! - [`state`]: the shared [`state::AppState`]; [`clock`]: time as a parameter.
//! - [`api`]: the HTTP routes, one module per area, each handler parsing, calling one
//!   [`service`] function and serializing; [`extract`]: JSON and bearer extractors;
//!   [`error`]: the one API error type and its JSON shape.
//! - [`service`]: what the service does (login, sessions, people), without HTTP.
//! - [`events`]: what happened, for the team's backends (webhooks, the feed).
//! - [`model`]: persons, profiles, phones, identities, as the stores give them.
//! - [`store`]: users and sessions behind narrow traits, one implementation per backend.
//! - [`tokens`]: opaque tokens and their hashes; [`seal`]: session_keys sealed at rest.
//! - [`jwt`]: signed access tokens, the signing keys and the published key set.
//! - [`client_ip`]: the client's address behind trusted proxies.
//! - [`instruments`]: Prometheus metrics (`GET /metrics`); [`limits`]: rate limits;
//!   [`stats`]: login and WeChat statistics, counted in memory and flushed in batches.
//! - [`import`]: `wxauth import django`, users of a Django backend brought over.

pub mod admin;
pub mod api;
pub mod cli;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod demo;
pub mod error;
pub mod events;
pub mod extract;
pub mod import;
pub mod instruments;
pub mod jwt;
pub mod limits;
pub mod model;
pub mod seal;
pub mod service;
pub mod startup;
pub mod state;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod tokens;

pub use config::Config;
pub use startup::Application;
