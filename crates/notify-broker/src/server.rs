//! The broker service: accepts connections on a UNIX socket, reads one request, checks the
//! peer, answers with the token or an `ERR` line ([`crate::protocol`]), closes.
//!
//! One thread, the poll loop of [`Broker::serve`], accepts connections and reads request
//! lines; a worker thread per request answers it. Who gets what ([`crate::fair`]):
//!
//! - At connect, before anything is held for it, a peer that is neither root nor admitted by
//!   some target's `broker-allow-user` / `broker-allow-group` ([`crate::access::Gate`]) gets
//!   `ERR denied` and the connection is closed.
//! - An admitted connection must complete its request line within
//!   [`Limits::request_timeout`](crate::fair::Limits) (1 s) of connecting; until then it is a
//!   file descriptor in the loop, not a thread, and one user may have only so many.
//! - Complete requests get a worker by fair share: a user's share of workers is capped, some
//!   are reserved for root, and a free worker goes to the user with the fewest. A request that
//!   finds no worker by the deadline is answered `ERR transient`.
//!
//! Every answer is due within the deadline of the request's arrival (waiting for a worker,
//! lock wait and token request included). The log (stderr, journald under systemd) gets one
//! line per request: who asked, for which target, served or why not; never a token. Refusals
//! before a request are logged once per user and reason every 10 s, with the number not
//! logged in between.

use crate::access::{Admission, Gate, Peer};
use crate::fair::{Limits, Shares};
use crate::peer::{self, PeerCred};
use crate::protocol::{self, Want, MAX_REQUEST};
use crate::select::{self, NoTarget};
use crate::token::{self, LazyHttp};
use notify_core::delivery::smtp::xoauth2_string;
use notify_core::{NotificationConfig, Secret, Settings};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc;
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

/// How long writing an answer may take (it fits the socket buffer: it never should).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections accepted per round of the poll loop before it reads and answers again.
const ACCEPT_BATCH: usize = 64;

/// What a peer no allow-list admits is told.
const DENIED: &str = "this user may not fetch tokens from this broker: a target must list it in \
                      broker-allow-user or one of its groups in broker-allow-group";

/// The broker: settings, the token HTTP client, limits.
pub struct Broker {
    settings: Settings,
    http: LazyHttp,
    /// Every answer is due this long after the request arrived.
    pub deadline: Duration,
    /// What one user may hold, and in all (see [`crate::fair`]).
    pub limits: Limits,
}

/// A connection the poll loop holds: waiting for its request line, or queued for a worker.
struct Conn {
    stream: UnixStream,
    cred: PeerCred,
    accepted: Instant,
    line: Vec<u8>,
    /// When the request line was complete (then it waits for a worker).
    arrived: Option<Instant>,
}

/// What reading a waiting connection gave.
enum Got {
    /// Not complete yet.
    More,
    /// The request line is complete.
    Line,
    /// The client ended (or failed) without a request.
    Nothing(String),
}

impl Conn {
    /// Read what the client sent so far, without blocking.
    fn read_some(&mut self) -> Got {
        let mut buf = [0u8; 256];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) if self.line.is_empty() => return Got::Nothing("empty request".into()),
                // the client's end of writing ends the request (exim's readsocket sends no
                // newline)
                Ok(0) => return Got::Line,
                Ok(n) => {
                    self.line.extend_from_slice(&buf[..n]);
                    if let Some(end) = self.line.iter().position(|b| *b == b'\n') {
                        self.line.truncate(end);
                        return Got::Line;
                    }
                    if self.line.len() >= MAX_REQUEST {
                        return Got::Line;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Got::More,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Got::Nothing(e.to_string()),
            }
        }
    }

    /// When the loop gives up on it.
    fn due(&self, limits: &Limits, deadline: Duration) -> Instant {
        match self.arrived {
            None => self.accepted + limits.request_timeout,
            Some(at) => at + deadline,
        }
    }
}

/// Answer `line` on a connection the loop will not serve, without blocking, and close it.
/// What the client sent is read first (a little of it), so that closing does not reset the
/// connection before the client has read the answer.
fn turn_away(stream: UnixStream, line: &str) {
    let _ = stream.set_nonblocking(true);
    let _ = (&stream).write(line.as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut buf = [0u8; 1024];
    for _ in 0..4 {
        match (&stream).read(&mut buf) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

/// Log lines about refusals before a request, at most one per user and reason per interval.
#[derive(Default)]
struct QuietLog {
    last: HashMap<(u32, &'static str), (Instant, u64)>,
}

impl QuietLog {
    const INTERVAL: Duration = Duration::from_secs(10);

    /// Whether to log `what` of `uid` now: `Some(n)` with the number of such events not
    /// logged since the last line.
    fn due(&mut self, uid: u32, what: &'static str, now: Instant) -> Option<u64> {
        if self.last.len() > 4096 {
            self.last
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < Self::INTERVAL);
        }
        match self.last.get_mut(&(uid, what)) {
            Some((at, skipped)) if now.saturating_duration_since(*at) < Self::INTERVAL => {
                *skipped += 1;
                None
            }
            Some((at, skipped)) => {
                let n = *skipped;
                *at = now;
                *skipped = 0;
                Some(n)
            }
            None => {
                self.last.insert((uid, what), (now, 0));
                Some(0)
            }
        }
    }

    /// Log `message` about `cred` unless a line for the same user and `what` was logged less
    /// than [`Self::INTERVAL`] ago.
    fn log(&mut self, cred: PeerCred, what: &'static str, message: &str, now: Instant) {
        if let Some(skipped) = self.due(cred.uid, what, now) {
            let who = Peer::of(cred).describe();
            if skipped > 0 {
                log!("{who}: {message} ({skipped} more like it not logged)");
            } else {
                log!("{who}: {message}");
            }
        }
    }
}

/// The poll loop's state.
struct Loop {
    gate: Gate,
    shares: Shares,
    conns: Vec<Conn>,
    quiet: QuietLog,
}

impl Broker {
    /// A broker for `settings`, answering within `deadline`.
    pub fn new(settings: Settings, deadline: Duration) -> Self {
        Broker {
            http: LazyHttp::new(&settings),
            settings,
            deadline,
            limits: Limits::default(),
        }
    }

    /// Serve connections on `listener` until polling it fails.
    pub fn serve(self: Arc<Self>, listener: UnixListener) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        // finished workers report their user on `done` and wake the loop through `wake`
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let wake_tx = Arc::new(wake_tx);
        let (done_tx, done_rx) = mpsc::channel::<u32>();
        let mut st = Loop {
            gate: Gate::new(&self.settings),
            shares: Shares::new(self.limits),
            conns: Vec::new(),
            quiet: QuietLog::default(),
        };
        let mut polls: Vec<libc::pollfd> = Vec::new();
        loop {
            let now = Instant::now();
            let timeout = st
                .conns
                .iter()
                .map(|c| c.due(&self.limits, self.deadline))
                .min()
                .map(|due| {
                    let left = due.saturating_duration_since(now);
                    // round up: waking early only means another round
                    i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX)
                })
                .unwrap_or(-1);
            polls.clear();
            let watch = |fd: i32| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            polls.push(watch(listener.as_raw_fd()));
            polls.push(watch(wake_rx.as_raw_fd()));
            // queued connections are not read again (fd -1: poll skips it)
            polls.extend(st.conns.iter().map(|c| {
                watch(match c.arrived {
                    None => c.stream.as_raw_fd(),
                    Some(_) => -1,
                })
            }));
            let nfds = libc::nfds_t::try_from(polls.len()).unwrap_or(libc::nfds_t::MAX);
            // SAFETY: `polls` is a valid array of `nfds` pollfd entries for the call.
            let rc = unsafe { libc::poll(polls.as_mut_ptr(), nfds, timeout) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            if polls[1].revents != 0 {
                let mut buf = [0u8; 256];
                while matches!((&wake_rx).read(&mut buf), Ok(n) if n > 0) {}
            }
            while let Ok(uid) = done_rx.try_recv() {
                st.shares.finish(uid);
            }
            // requests: backwards, so that swap_remove leaves the indices still to visit alone
            for i in (0..st.conns.len()).rev() {
                if polls.get(2 + i).is_some_and(|p| p.revents != 0) {
                    self.progress(&mut st, i, now);
                }
            }
            for i in (0..st.conns.len()).rev() {
                if st.conns[i].due(&self.limits, self.deadline) <= now {
                    self.expire(&mut st, i, now);
                }
            }
            if polls[0].revents != 0 {
                self.accept(&listener, &mut st, now);
            }
            self.start_workers(&mut st, &done_tx, &wake_tx);
        }
    }

    /// Take in new connections (up to [`ACCEPT_BATCH`]): refuse those the gate or the shares
    /// do not admit, read what the others sent already.
    fn accept(&self, listener: &UnixListener, st: &mut Loop, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: let connections finish instead of spinning
                    log!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    return;
                }
            };
            let cred = match peer::peer_cred(&stream) {
                Ok(c) => c,
                Err(e) => {
                    log!("refused a connection: no peer credentials ({e})");
                    continue;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            match st.gate.admit(cred, now) {
                Admission::Admitted => {}
                Admission::Refused => {
                    st.quiet.log(
                        cred,
                        "denied",
                        "REFUSED at connect: not in broker-allow-user/broker-allow-group of \
                         any target",
                        now,
                    );
                    turn_away(stream, &protocol::error_line("denied", DENIED));
                    continue;
                }
                Admission::Unknown(m) => st.quiet.log(
                    cred,
                    "unknown",
                    &format!("let in unchecked: the config could not be read ({m})"),
                    now,
                ),
            }
            if let Err(full) = st.shares.connect(cred.uid) {
                st.quiet.log(cred, "busy", full.describe(), now);
                turn_away(
                    stream,
                    &protocol::error_line("transient", "the broker is busy: try again"),
                );
                continue;
            }
            st.conns.push(Conn {
                stream,
                cred,
                accepted: now,
                line: Vec::with_capacity(128),
                arrived: None,
            });
            self.progress(st, st.conns.len() - 1, now);
        }
    }

    /// Read from waiting connection `i`; queue it once its request line is complete.
    fn progress(&self, st: &mut Loop, i: usize, now: Instant) {
        let Some(conn) = st.conns.get_mut(i) else {
            return;
        };
        if conn.arrived.is_some() {
            return;
        }
        match conn.read_some() {
            Got::More => {}
            Got::Line => match st.shares.request(conn.cred.uid) {
                Ok(()) => conn.arrived = Some(now),
                Err(full) => {
                    let c = st.conns.swap_remove(i);
                    st.quiet.log(c.cred, "busy", full.describe(), now);
                    turn_away(
                        c.stream,
                        &protocol::error_line("transient", "the broker is busy: try again"),
                    );
                }
            },
            Got::Nothing(why) => {
                let c = st.conns.swap_remove(i);
                st.shares.drop_waiting(c.cred.uid);
                st.quiet
                    .log(c.cred, "no request", &format!("no request ({why})"), now);
                turn_away(
                    c.stream,
                    &protocol::error_line("invalid-input", "no request line"),
                );
            }
        }
    }

    /// Connection `i` is due: no request line in time, or no worker by the deadline.
    fn expire(&self, st: &mut Loop, i: usize, now: Instant) {
        let c = st.conns.swap_remove(i);
        if c.arrived.is_none() {
            st.shares.drop_waiting(c.cred.uid);
            let t = self.limits.request_timeout;
            st.quiet.log(
                c.cred,
                "no request",
                &format!("no request line within {} ms", t.as_millis()),
                now,
            );
            turn_away(
                c.stream,
                &protocol::error_line("invalid-input", "no request line in time"),
            );
        } else {
            st.shares.drop_queued(c.cred.uid);
            st.quiet.log(
                c.cred,
                "no worker",
                "not served: no worker was free for this user by the deadline",
                now,
            );
            turn_away(
                c.stream,
                &protocol::error_line("transient", "the broker is busy: try again"),
            );
        }
    }

    /// Hand queued requests to worker threads while the shares allow.
    fn start_workers(
        self: &Arc<Self>,
        st: &mut Loop,
        done: &mpsc::Sender<u32>,
        wake: &Arc<UnixStream>,
    ) {
        loop {
            let queued = st
                .conns
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.arrived.map(|at| (i, c.cred.uid, at)));
            let Some(i) = st.shares.pick(queued) else {
                return;
            };
            let c = st.conns.swap_remove(i);
            let uid = c.cred.uid;
            st.shares.start(uid);
            let me = Arc::clone(self);
            let report = Finished {
                uid,
                done: done.clone(),
                wake: Arc::clone(wake),
            };
            let arrived = c.arrived.unwrap_or(c.accepted);
            let spawned = std::thread::Builder::new()
                .name("broker-conn".into())
                .spawn(move || {
                    let _report = report;
                    me.handle(c.stream, c.cred, &c.line, arrived);
                });
            if let Err(e) = spawned {
                // the closure (with the connection and its report) was dropped: the
                // client sees the connection close, the loop the worker finish
                log!("cannot start a connection thread: {e}");
            }
        }
    }

    /// Answer one complete request (a worker thread).
    fn handle(&self, stream: UnixStream, cred: PeerCred, line: &[u8], arrived: Instant) {
        let peer = Peer::of(cred);
        let answer = self.answer_at(&peer, line, arrived);
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let _ = (&stream).write_all(answer.expose().as_bytes());
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }

    /// The answer to request `line` from `peer` (the token, or an `ERR` line), logged; due
    /// within the deadline from now.
    pub fn answer(&self, peer: &Peer, line: &[u8]) -> Secret {
        self.answer_at(peer, line, Instant::now())
    }

    /// The answer to request `line` from `peer`, which arrived at `arrived`, logged; due
    /// within the deadline from `arrived`.
    pub fn answer_at(&self, peer: &Peer, line: &[u8], arrived: Instant) -> Secret {
        let started = arrived;
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

/// Reports a worker's end to the poll loop, also when the worker panicked or never started.
struct Finished {
    uid: u32,
    done: mpsc::Sender<u32>,
    wake: Arc<UnixStream>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let _ = self.done.send(self.uid);
        // a full wake socket means the loop will wake anyway
        let _ = (&*self.wake).write(&[1]);
    }
}

/// The first socket systemd passed to this process (socket activation: `LISTEN_PID` is us,
/// `LISTEN_FDS` >= 1, the socket is fd 3, sd_listen_fds(3)), if any. The variables are
/// cleared, so children do not take it too. Shared by the broker and the relay.
pub fn systemd_socket_fd() -> Option<std::os::fd::RawFd> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    Some(3)
}

/// The listening socket systemd passed, if any ([`systemd_socket_fd`]).
pub fn listener_from_systemd() -> Option<UnixListener> {
    let fd = systemd_socket_fd()?;
    // SAFETY: systemd hands this fd to this process as a listening UNIX socket (the unit's
    // ListenStream is a path).
    Some(unsafe { UnixListener::from_raw_fd(fd) })
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
