//! # notify-broker
//!
//! Hands the access tokens oxnotify keeps fresh to the host's own mail stack:
//!
//! - [`server`]: `oxnotify-broker`, a service on a UNIX socket (systemd socket activation or
//!   `--socket PATH`) speaking a one-line protocol ([`protocol`]): `SMTP <address>` answers the
//!   raw XOAUTH2 string for exim's `plaintext` authenticator, `TOKEN <address>` the bare token.
//! - [`access`]: who may ask, decided per target from the peer's credentials (`SO_PEERCRED`,
//!   [`peer`]) and the target's `broker-allow-user` / `broker-allow-group`; and at connect,
//!   whether any target allows the peer at all.
//! - [`fair`]: what one local user may hold of the broker (connections without a request,
//!   queued requests, workers), so no user keeps root or another allowed user from a token.
//! - [`select`]: which target an address means (its SASL identity, else its from-address).
//! - [`token`]: one token through [`notify_core::tokens::TokenManager::access_token`] (cache,
//!   else a refresh under the per-target lock, within a deadline), and its output formats; used
//!   by the broker and by [`token_cli`] (the `oxnotify token` command).
//!
//! Tokens are never logged and never part of an error line.

pub mod access;
pub mod fair;
pub mod peer;
pub mod protocol;
pub mod select;
pub mod server;
pub mod token;
pub mod token_cli;
