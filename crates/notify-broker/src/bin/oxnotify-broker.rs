//! `oxnotify-broker [--socket PATH] [--deadline SECONDS]`: the token broker service. Under
//! systemd it serves the socket of `oxnotify-broker.socket`; standalone (tests, other init
//! systems) it binds `--socket PATH`. See `man oxnotify-broker`.

use notify_broker::server::{self, Broker};
use notify_core::Settings;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "usage: oxnotify-broker [--socket PATH] [--deadline SECONDS]\n\
    Serves OAuth2 access tokens of oxnotify targets to local MTAs over a UNIX socket\n\
    (systemd socket activation, or --socket PATH). Protocol: `SMTP <address>` or\n\
    `TOKEN <address>`; see man oxnotify-broker.\n";

fn main() -> ExitCode {
    let mut socket: Option<PathBuf> = None;
    let mut deadline = Duration::from_secs(10);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--socket" => socket = args.next().map(PathBuf::from),
            "--deadline" => match args.next().and_then(|v| v.parse::<u64>().ok()) {
                Some(s) if s > 0 => deadline = Duration::from_secs(s),
                _ => return usage_error("--deadline needs a number of seconds > 0"),
            },
            "--help" | "-h" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown argument '{other}'")),
        }
    }
    let listener = match (server::listener_from_systemd(), socket) {
        (Some(l), _) => l,
        (None, Some(path)) => match server::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("oxnotify-broker: cannot listen on {}: {e}", path.display());
                return ExitCode::from(1);
            }
        },
        (None, None) => {
            return usage_error("no socket from systemd: give --socket PATH to run standalone")
        }
    };
    let broker = Arc::new(Broker::new(Settings::from_env(), deadline));
    eprintln!(
        "oxnotify-broker: serving (answers within {} s)",
        deadline.as_secs()
    );
    match broker.serve(listener) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxnotify-broker: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage_error(m: &str) -> ExitCode {
    eprintln!("oxnotify-broker: {m}\n{USAGE}");
    ExitCode::from(2)
}
