//! `oxnotify`: the command line.
//!
//! The two commands a host runs for every message are served here, without starting Perl
//! (its interpreter and the CLI's modules cost about 250 ms a call): `token`, which an MTA
//! runs per message (msmtp's passwordeval), and `send` in its plain form, which cron jobs and
//! scripts run. Every other command, and any `send` with more than `NAME... --title T
//! [--body B] [--severity S]` (help, JSON output, an option it does not know), is the Perl
//! CLI's ([`OxNotify::CLI`]): this program execs it with the same arguments, so its
//! messages and exit codes are the only ones.

mod send;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

/// The Perl CLI as the package installs it.
const PACKAGED_PERL_CLI: &str = "/usr/lib/oxnotify/oxnotify-cli";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let text: Option<Vec<String>> = args.iter().map(|a| a.to_str().map(String::from)).collect();
    if let Some(text) = text {
        match text.first().map(String::as_str) {
            Some("token") => return notify_broker::token_cli::run(text[1..].to_vec()),
            Some("send") => {
                if let Some(request) = send::Request::parse(&text[1..]) {
                    return request.run();
                }
            }
            _ => {}
        }
    }
    exec_perl_cli(args)
}

/// Replace this process with the Perl CLI; returns only if that fails.
fn exec_perl_cli(args: Vec<OsString>) -> ExitCode {
    let cli = perl_cli();
    let err = std::process::Command::new(&cli).args(args).exec();
    eprintln!(
        "oxnotify: cannot run the command line at {}: {err}",
        cli.display()
    );
    ExitCode::from(3)
}

/// Where the Perl CLI is: `$OXNOTIFY_PERL_CLI`; in a source checkout (this binary under
/// `target/<profile>/`) the checkout's `bin/oxnotify-cli`; else the package's.
fn perl_cli() -> PathBuf {
    if let Some(p) = std::env::var_os("OXNOTIFY_PERL_CLI").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let checkout = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("bin/oxnotify-cli")));
    match checkout {
        Some(p) if p.is_file() => p,
        _ => PathBuf::from(PACKAGED_PERL_CLI),
    }
}
