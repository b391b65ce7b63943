//! A hard deadline for one SMTP session.
//!
//! lettre's timeouts are per read and per write, and it keeps the socket to itself: a server
//! that drips one byte every few seconds (or sends an endless multi-line reply) holds a
//! delivery, and the process with it, for as long as it likes. So the session runs through a
//! [`DeadlineRelay`]: we connect to the server ourselves, lettre connects to a one-shot
//! listener on loopback, two threads copy the bytes, and at the deadline both sockets are shut
//! down, which makes lettre's pending read fail at once. TLS is unaffected: lettre still does
//! the handshake with the server, through the relay, and verifies the server's name.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The relay of one SMTP session. Dropping it ends the session.
pub(super) struct DeadlineRelay {
    local: SocketAddr,
    expired: Arc<AtomicBool>,
    stop: Option<mpsc::Sender<()>>,
}

impl DeadlineRelay {
    /// Connect to `server` (each resolved address in turn, each attempt bounded by
    /// `connect_timeout` and the deadline) and open the loopback side for lettre.
    pub(super) fn start(
        server: (&str, u16),
        connect_timeout: Duration,
        deadline: Instant,
    ) -> io::Result<Self> {
        let upstream = connect(server, connect_timeout, deadline)?;
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let local = listener.local_addr()?;
        let expired = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let flag = expired.clone();
        std::thread::Builder::new()
            .name("oxnotify-smtp-relay".into())
            .spawn(move || run(listener, upstream, deadline, stopped, flag))?;
        Ok(DeadlineRelay {
            local,
            expired,
            stop: Some(stop),
        })
    }

    /// Where lettre connects.
    pub(super) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// True once the deadline cut the session.
    pub(super) fn expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }
}

impl Drop for DeadlineRelay {
    fn drop(&mut self) {
        // dropping the sender wakes the watchdog, which closes both sockets
        self.stop.take();
    }
}

fn connect(server: (&str, u16), timeout: Duration, deadline: Instant) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in server.to_socket_addrs()? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, timeout.min(left)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "no address of the server could be reached before the deadline",
        )
    }))
}

fn run(
    listener: TcpListener,
    upstream: TcpStream,
    deadline: Instant,
    stopped: mpsc::Receiver<()>,
    expired: Arc<AtomicBool>,
) {
    let Some(downstream) = accept_own(&listener, deadline) else {
        let _ = upstream.shutdown(Shutdown::Both);
        return;
    };
    drop(listener);
    let _ = upstream.set_nodelay(true);
    let _ = downstream.set_nodelay(true);
    let pipes = [(&downstream, &upstream), (&upstream, &downstream)].map(|(from, to)| {
        match (from.try_clone(), to.try_clone()) {
            (Ok(from), Ok(to)) => std::thread::Builder::new()
                .name("oxnotify-smtp-copy".into())
                .spawn(move || copy(from, to))
                .is_ok(),
            _ => false,
        }
    });
    if pipes.contains(&false) {
        let _ = upstream.shutdown(Shutdown::Both);
        let _ = downstream.shutdown(Shutdown::Both);
        return;
    }
    // wait for the end of the session or the deadline, whichever comes first
    let left = deadline.saturating_duration_since(Instant::now());
    if let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(left) {
        expired.store(true, Ordering::SeqCst);
    }
    let _ = upstream.shutdown(Shutdown::Both);
    let _ = downstream.shutdown(Shutdown::Both);
}

/// Accept lettre's connection: the first one from this host before the deadline.
fn accept_own(listener: &TcpListener, deadline: Instant) -> Option<TcpStream> {
    listener.set_nonblocking(true).ok()?;
    loop {
        match listener.accept() {
            Ok((s, peer)) if peer.ip().is_loopback() => {
                s.set_nonblocking(false).ok()?;
                return Some(s);
            }
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => return None,
        }
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    // pass the end on: the other side sees EOF
    let _ = to.shutdown(Shutdown::Write);
}
