//! End-to-end tests of the service over real HTTP: the real `Application` on port 0 against
//! the real WeChat simulator on port 0.

mod helpers;

mod auth;
mod errors;
mod me;
mod sessions;
