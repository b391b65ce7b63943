//! The broker service: accepts connections on a UNIX socket, reads one request, checks the
//! peer, answers with the token or an `ERR` line ([`crate::protocol`]), closes. One thread
//! per connection, at most [`Broker::max_connections`] at once; every answer is due within the
//! deadline (lock wait and token request included). The log (stderr, journald under systemd)
//! gets one line per request: who asked, for which target, served or why not; never a token.

use crate::access::Peer;
use crate::peer;
use crate::protocol::{self, Want, MAX_REQUEST};
use crate::select::{self, NoTarget};
use crate::token::{self, LazyHttp};
use notify_core::delivery::smtp::xoauth2_string;
use notify_core::{NotificationConfig, Secret, Settings};
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One log line on stderr (journald under systemd), written with one `write` so lines of
/// concurrent requests never interleave.
macro_rules! log {
    ($($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = std::io::stderr().write_all(line.as_bytes());
    }};
}

/// How long a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The broker: settings, the token HTTP client, limits.
pub struct Broker {
    settings: Settings,
    http: LazyHttp,
    /// Every answer is due this long after the request arrived.
    pub deadline: Duration,
    /// Connections served at once; more are answered `ERR transient` at once.
    pub max_connections: usize,
    active: AtomicUsize,
}

impl Broker {
    /// A broker for `settings`, answering within `deadline`.
    pub fn new(settings: Settings, deadline: Duration) -> Self {
        Broker {
            http: LazyHttp::new(&settings),
            settings,
            deadline,
            max_connections: 64,
            active: AtomicUsize::new(0),
        }
    }

    /// Serve connections on `listener` until it fails.
    pub fn serve(self: Arc<Self>, listener: UnixListener) -> std::io::Result<()> {
        for conn in listener.incoming() {
            let mut stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and the like: wait for connections to finish instead of spinning
                    log!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if self.active.fetch_add(1, Ordering::SeqCst) >= self.max_connections {
                self.active.fetch_sub(1, Ordering::SeqCst);
                let _ = stream.write_all(
                    protocol::error_line("transient", "the broker is busy: try again").as_bytes(),
                );
                continue;
            }
            let me = Arc::clone(&self);
            let spawned = std::thread::Builder::new()
                .name("broker-conn".into())
                .spawn(move || {
                    me.handle(stream);
                    me.active.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                self.active.fetch_sub(1, Ordering::SeqCst);
                log!("cannot start a connection thread: {e}");
            }
        }
        Ok(())
    }

    /// Serve one connection.
    pub fn handle(&self, mut stream: UnixStream) {
        let cred = match peer::peer_cred(&stream) {
            Ok(c) => c,
            Err(e) => {
                log!("refused a connection: no peer credentials ({e})");
                return;
            }
        };
        let peer = Peer::of(cred);
        let answer = match read_request(&mut stream) {
            Ok(line) => self.answer(&peer, &line),
            Err(e) => {
                log!("{}: no request ({e})", peer.describe());
                Secret::new(protocol::error_line(
                    "invalid-input",
                    "no request line in time",
                ))
            }
        };
        let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
        let _ = stream.write_all(answer.expose().as_bytes());
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }

    /// The answer to request `line` from `peer` (the token, or an `ERR` line), logged.
    pub fn answer(&self, peer: &Peer, line: &[u8]) -> Secret {
        let started = Instant::now();
        let who = peer.describe();
        let req = match protocol::parse(line) {
            Ok(r) => r,
            Err(m) => {
                log!("{who}: invalid request: {m}");
                return Secret::new(protocol::error_line("invalid-input", &m));
            }
        };
        let what = format!("{} {}", req.want.as_str(), req.address);
        let fail = |kind: &str, message: &str, log: &str| {
            log!("{who}: {what}: {log}");
            Secret::new(protocol::error_line(kind, message))
        };
        let config = match NotificationConfig::load(&self.settings) {
            Ok(c) => c,
            Err(e) => {
                let m = e.to_string();
                return fail(e.kind().as_str(), &m, &format!("failed: {m}"));
            }
        };
        let target = match select::target_for(&config, &req.address, peer) {
            Ok(t) => t,
            Err(no) => {
                let m = no.message(&req.address);
                let log = match &no {
                    NoTarget::Denied(names) => format!(
                        "REFUSED: not in broker-allow-user/broker-allow-group of {}",
                        names.join(", ")
                    ),
                    _ => format!("failed: {m}"),
                };
                return fail(no.kind(), &m, &log);
            }
        };
        let deadline = started + self.deadline;
        match token::fetch(&self.settings, &self.http, &config, &target, deadline) {
            Ok(t) => {
                log!(
                    "{who}: {what}: served target '{}' ({}, {} ms)",
                    target.name,
                    if t.from_cache {
                        "cached token"
                    } else {
                        "refreshed"
                    },
                    started.elapsed().as_millis()
                );
                match req.want {
                    Want::Smtp => xoauth2_string(target.auth_identity(), &t.token),
                    Want::Token => t.token,
                }
            }
            Err(e) => {
                let m = e.to_string();
                fail(
                    e.kind().as_str(),
                    &m,
                    &format!("target '{}' failed: {m}", target.name),
                )
            }
        }
    }
}

/// Read the request line: up to a newline, the client's end of writing, or
/// [`MAX_REQUEST`] bytes, within [`REQUEST_TIMEOUT`].
fn read_request(stream: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let until = Instant::now() + REQUEST_TIMEOUT;
    let mut line = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&buf[..n]);
        if line.contains(&b'\n') || line.len() >= MAX_REQUEST {
            break;
        }
    }
    if let Some(end) = line.iter().position(|b| *b == b'\n') {
        line.truncate(end);
    }
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "empty request",
        ));
    }
    Ok(line)
}

/// The listening socket systemd passed (socket activation: `LISTEN_PID` is us,
/// `LISTEN_FDS` >= 1, the socket is fd 3), if any.
pub fn listener_from_systemd() -> Option<UnixListener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    // not for our children
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    // SAFETY: systemd hands fd 3 to this process as a listening socket (sd_listen_fds(3)).
    Some(unsafe { UnixListener::from_raw_fd(3) })
}

/// Bind `path` (a stale socket file there is replaced) for standalone use. The socket is
/// mode 0666: any local process may connect, the peer check decides who gets an answer.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}
