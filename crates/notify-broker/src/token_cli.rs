//! The `oxnotify token` command: `oxnotify token NAME [--format bearer|xoauth2|xoauth2-b64]`
//! prints target NAME's access token (from the cache, else refreshed under the target's lock,
//! as a send would); `--broker ADDRESS` asks oxnotify-broker instead (for users other than
//! root). MTAs run it for every message (msmtp's passwordeval), so it runs in the `oxnotify`
//! binary itself, without Perl. Exit codes: see [`ErrorKind::exit_code`].

use crate::peer;
use crate::token::{self, Format, LazyHttp};
use base64::Engine;
use notify_core::{ErrorKind, NotificationConfig, Settings};
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage: oxnotify token NAME [--format bearer|xoauth2|xoauth2-b64]\n\
    \x20      oxnotify token --broker ADDRESS [--socket PATH] [--format ...]\n\
    Print the OAuth2 access token of target NAME (cached, or refreshed as a send would) for\n\
    msmtp's passwordeval, mutt and scripts. Root only; other users ask oxnotify-broker with\n\
    --broker ADDRESS (the target's username or from-address; the target must allow them).\n";

/// The broker's socket as the Debian package installs it.
const DEFAULT_SOCKET: &str = "/run/oxnotify/broker.sock";

/// Exit codes: 0 printed; otherwise [`ErrorKind::exit_code`] of the failure (77 = EX_NOPERM
/// when the broker denies the caller).
fn fail(kind: ErrorKind, message: &str) -> ExitCode {
    eprintln!("oxnotify token: {message} [{}]", kind.as_str());
    ExitCode::from(kind.exit_code())
}

/// Run the command with its arguments (those after `token`); what the process exits with.
pub fn run(args: impl IntoIterator<Item = String>) -> ExitCode {
    let mut name: Option<String> = None;
    let mut broker: Option<String> = None;
    let mut socket = DEFAULT_SOCKET.to_string();
    let mut format = Format::Bearer;
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let value = |v: Option<String>| v.and_then(|v| Format::parse(&v));
        match a.as_str() {
            "--help" | "-h" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--format" => match value(args.next()) {
                Some(f) => format = f,
                None => return usage("--format must be bearer, xoauth2 or xoauth2-b64"),
            },
            f if f.starts_with("--format=") => {
                match value(f.split_once('=').map(|(_, v)| v.into())) {
                    Some(f) => format = f,
                    None => return usage("--format must be bearer, xoauth2 or xoauth2-b64"),
                }
            }
            "--broker" => match args.next() {
                Some(a) => broker = Some(a),
                None => return usage("--broker needs the target's address"),
            },
            "--socket" => match args.next() {
                Some(p) => socket = p,
                None => return usage("--socket needs a path"),
            },
            n if !n.starts_with('-') && name.is_none() => name = Some(n.to_string()),
            other => return usage(&format!("unexpected argument '{other}'")),
        }
    }
    if let Some(address) = broker {
        if name.is_some() {
            return usage("give a target NAME or --broker ADDRESS, not both");
        }
        return via_broker(&socket, &address, format);
    }
    let Some(name) = name else {
        return usage("missing target name");
    };
    // root only: the state holds every target's tokens. A private installation (both
    // directories given) is guarded by its own file permissions.
    let private = ["OXNOTIFY_CONFIG_DIR", "OXNOTIFY_STATE_DIR"]
        .iter()
        .all(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
    if peer::effective_uid() != 0 && !private {
        eprintln!(
            "oxnotify token: only root may read the OAuth2 state; other users and MTAs ask \
             oxnotify-broker: oxnotify token --broker ADDRESS [permission-denied]"
        );
        return ExitCode::from(77);
    }
    let settings = Settings::from_env();
    let config = match NotificationConfig::load(&settings) {
        Ok(c) => c,
        Err(e) => return fail(e.kind(), &e.to_string()),
    };
    let target = match config.smtp_target(&name) {
        Ok(t) => t,
        Err(e) => return fail(e.kind(), &e.to_string()),
    };
    if !target.auth_method.is_oauth2() {
        return fail(
            ErrorKind::InvalidInput,
            &format!(
                "target '{name}' uses auth-method {}, not OAuth2: it has no access token",
                target.auth_method.as_str()
            ),
        );
    }
    if target.disable {
        return fail(
            ErrorKind::InvalidInput,
            &format!("target '{name}' is disabled (set disable 0 to use it)"),
        );
    }
    let http = LazyHttp::new(&settings);
    let deadline = Instant::now() + settings.http_timeout;
    match token::fetch(&settings, &http, &config, &target, deadline) {
        Ok(t) => {
            let out = format.render(target.auth_identity(), &t.token);
            print_token(&out)
        }
        Err(e) => fail(e.kind(), &e.to_string()),
    }
}

/// Ask the broker at `socket` for the token of the target `address` names; print it in
/// `format`. An `ERR` answer exits as the same error kind would locally (`denied`: 77).
fn via_broker(socket: &str, address: &str, format: Format) -> ExitCode {
    // the XOAUTH2 formats carry the target's SASL identity, which only the broker knows
    let verb = if format == Format::Bearer {
        "TOKEN"
    } else {
        "SMTP"
    };
    let answer = match ask_broker(socket, &format!("{verb} {address}\n")) {
        Ok(a) => a,
        Err(e) => {
            return fail(
                ErrorKind::Transient,
                &format!(
                "cannot ask oxnotify-broker at {socket}: {e} (is oxnotify-broker.socket enabled?)"
            ),
            )
        }
    };
    if let Some(err) = answer.strip_prefix("ERR ") {
        let (kind, message) = err
            .trim_end()
            .split_once(' ')
            .unwrap_or((err.trim_end(), ""));
        eprintln!("oxnotify token: oxnotify-broker: {message} [{kind}]");
        let code = match kind {
            "denied" => 77,
            other => ErrorKind::parse(other)
                .unwrap_or(ErrorKind::Internal)
                .exit_code(),
        };
        return ExitCode::from(code);
    }
    let out = notify_core::Secret::new(match format {
        Format::Bearer => format!("{answer}\n"),
        Format::Xoauth2 => answer,
        Format::Xoauth2Base64 => format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(answer.as_bytes())
        ),
    });
    print_token(&out)
}

/// Write the token to stdout (the only place it goes).
fn print_token(out: &notify_core::Secret) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.expose().as_bytes())
        .and_then(|_| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(ErrorKind::Internal, &format!("writing the token: {e}")),
    }
}

/// One request to the broker; the whole answer. The broker may answer and close before it
/// read the request (it refuses users no target allows at connect): then writing fails or
/// reading ends in a reset, and the answer is what came before.
fn ask_broker(socket: &str, request: &str) -> std::io::Result<String> {
    use std::io::{ErrorKind, Read};
    let mut c = std::os::unix::net::UnixStream::connect(socket)?;
    c.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    match c
        .write_all(request.as_bytes())
        .and_then(|_| c.shutdown(std::net::Shutdown::Write))
    {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {}
        Err(e) => return Err(e),
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.len() > 64 * 1024 {
                    return Err(std::io::Error::new(
                        ErrorKind::InvalidData,
                        "the answer is too long",
                    ));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !answer.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(answer)
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidData, "the answer is not UTF-8"))
}

fn usage(m: &str) -> ExitCode {
    eprintln!("oxnotify token: {m}\n{USAGE}");
    ExitCode::from(2)
}
