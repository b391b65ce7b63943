//! The accept loop: a TCP listener on loopback (bound from relay.conf, or handed over by
//! systemd), one thread per client connection up to `max-connections` (beyond that a client
//! gets 421 and retries later), peers other than loopback refused.

use crate::session::{self, Shared};
use std::io::Write;
use std::net::TcpListener;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The listening socket systemd passed, if any (the broker's one copy of that check).
pub fn listener_from_systemd() -> Option<TcpListener> {
    let fd = notify_broker::server::systemd_socket_fd()?;
    // SAFETY: systemd hands this fd to this process as a listening TCP socket (the unit's
    // ListenStream is a loopback address).
    Some(unsafe { TcpListener::from_raw_fd(fd) })
}

/// Serve clients on `listener` forever.
pub fn serve(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    let busy = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(mut stream) = conn else { continue };
        let loopback = stream.peer_addr().is_ok_and(|a| a.ip().is_loopback());
        if !loopback {
            // a listener someone bound elsewhere (socket unit edited): refuse, never relay
            let _ = stream.write_all(b"554 5.7.1 oxnotify-relay serves loopback clients only\r\n");
            continue;
        }
        if busy.fetch_add(1, Ordering::SeqCst) >= shared.relay.max_connections {
            busy.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.write_all(b"421 4.7.0 too many connections, try again later\r\n");
            continue;
        }
        let (shared, busy) = (shared.clone(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("oxnotify-relay-client".into())
            .spawn(move || {
                session::serve(stream, &shared);
                busy.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            session::log("cannot start a thread for a client; it was dropped and will retry");
        }
    }
    Ok(())
}
