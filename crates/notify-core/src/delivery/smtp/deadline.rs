//! A hard deadline for one SMTP session, on the session's own connection.
//!
//! lettre's blocking client times out per read and per write and keeps its socket to itself:
//! a server that drips one byte every few seconds (or sends an endless multi-line reply) would
//! hold a delivery, and the process with it, for as long as it likes. So the session runs on
//! lettre's async client, in a single-threaded runtime of its own, under one
//! `tokio::time::timeout_at`: at the deadline the session's future is dropped, which closes its
//! socket. No second connection and no copy threads (the loopback relay this replaced cost a
//! connection, two threads and a 2 ms accept poll per session).

use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

/// Why a session did not run to its end.
pub(super) enum Cut {
    /// The deadline came first; the session's socket is closed.
    Expired,
    /// The runtime could not be set up (out of file descriptors, say).
    Runtime(io::Error),
}

/// Run `session` to its end or until `deadline`, whichever comes first. Call it from a
/// blocking thread (an async caller: from `spawn_blocking`), like every blocking client.
pub(super) fn run<F: Future<Output = ()>>(deadline: Instant, session: F) -> Result<(), Cut> {
    let rt = runtime().map_err(Cut::Runtime)?;
    // the timer is made inside the runtime: it needs the runtime's clock
    rt.block_on(async { tokio::time::timeout_at(deadline.into(), session).await })
        .map_err(|_| Cut::Expired)
}

/// The server's addresses (a blocking resolver lookup, as every other client on the host).
pub(super) fn resolve(server: (&str, u16)) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = server.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the server name resolves to no address",
        ));
    }
    Ok(addrs)
}

/// The single-threaded runtime a session runs in (its sockets and timers; no threads).
pub(super) fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
}
