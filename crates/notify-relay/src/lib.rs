//! # notify-relay
//!
//! `oxnotify-relay`: a small SMTP submission service on loopback that the host's MTA
//! (Postfix, as Proxmox VE and PMG ship it) uses as its relayhost. Every message goes on
//! through an oxnotify target with XOAUTH2, over the shared
//! [`notify_core::delivery::relay::RelayPool`] (one token cache, the targets' connection slots,
//! few long upstream sessions), and Postfix hears 250 only once the upstream server took it.
//!
//! - [`config`]: `/etc/oxnotify/relay.conf` (listen address, default target, From rewriting,
//!   accept mode, limits, the client credential's hash).
//! - [`route`]: which target a message goes through (its envelope sender, else the default),
//!   the upstream envelope and the optional From rewrite.
//! - [`session`]: one client connection, driven through `mailin`'s SMTP state machine.
//! - [`server`]: the accept loop (loopback only, connection cap, socket activation).

pub mod config;
pub mod route;
pub mod server;
pub mod session;
