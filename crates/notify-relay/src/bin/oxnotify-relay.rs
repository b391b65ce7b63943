//! `oxnotify-relay [--config PATH] [--listen IP:PORT]`: the relay service. Under systemd it
//! serves the socket of `oxnotify-relay.socket`; standalone it binds relay.conf's `listen`.
//! See `man oxnotify-relay`.

use notify_core::delivery::relay::RelayPool;
use notify_core::oauth2::UreqClient;
use notify_core::Settings;
use notify_relay::config::{RelayConfig, DEFAULT_PATH};
use notify_relay::server;
use notify_relay::session::Shared;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "usage: oxnotify-relay [--config PATH] [--listen IP:PORT]\n\
    A loopback SMTP relay for the host's MTA: each message goes on through an oxnotify\n\
    target (XOAUTH2). Config: /etc/oxnotify/relay.conf; see man oxnotify-relay.\n";

fn main() -> ExitCode {
    let mut config = PathBuf::from(DEFAULT_PATH);
    let mut listen: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => match args.next() {
                Some(p) => config = PathBuf::from(p),
                None => return usage_error("--config needs a path"),
            },
            "--listen" => listen = args.next(),
            "--help" | "-h" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument '{other}'")),
        }
    }
    let mut relay = match RelayConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("oxnotify-relay: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(l) = listen {
        match RelayConfig::parse(&format!("listen = {l}")) {
            Ok(c) => relay.listen = c.listen,
            Err(e) => return usage_error(&format!("--listen: {e}")),
        }
    }
    if relay.client_password_sha256.is_none() {
        eprintln!(
            "oxnotify-relay: {} has no client-password-sha256: no client could log in (run \
             `oxnotify relay setup-postfix`)",
            config.display()
        );
        return ExitCode::from(1);
    }
    let listener = match server::listener_from_systemd() {
        Some(l) => l,
        None => match TcpListener::bind(relay.listen) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("oxnotify-relay: cannot listen on {}: {e}", relay.listen);
                return ExitCode::from(1);
            }
        },
    };
    let settings = Settings::from_env();
    let http = match UreqClient::new(&settings) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("oxnotify-relay: HTTP client: {e}");
            return ExitCode::from(1);
        }
    };
    let hostname = settings.hello_name.clone();
    let shared = Arc::new(Shared {
        pool: RelayPool::new(settings, Arc::new(http)),
        relay,
        hostname,
    });
    eprintln!(
        "oxnotify-relay: serving on {}",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into())
    );
    match server::serve(listener, shared) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxnotify-relay: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage_error(m: &str) -> ExitCode {
    eprintln!("oxnotify-relay: {m}\n{USAGE}");
    ExitCode::from(2)
}
