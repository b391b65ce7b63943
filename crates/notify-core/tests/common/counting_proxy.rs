//! `CountingTokenProxy`: a test helper, not a fake. A loopback HTTP relay in front of the rig's
//! real token endpoint that forwards every request unchanged (one request per connection) and
//! counts the token requests, so tests that span several processes ("cluster nodes") can count
//! what reached the provider.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The relay; it runs until the test process ends.
pub struct CountingTokenProxy {
    /// `http://127.0.0.1:<port>`: put `<base>/token` into a target's `oauth2-token-url`.
    pub base: String,
    count: Arc<AtomicUsize>,
}

impl CountingTokenProxy {
    /// Start relaying to `upstream` (`http://host:port`, the rig's issuer).
    pub fn start(upstream: &str) -> CountingTokenProxy {
        let upstream = url::Url::parse(upstream).unwrap();
        let addr = format!(
            "{}:{}",
            upstream.host_str().unwrap(),
            upstream.port_or_known_default().unwrap()
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (c, addr) = (c.clone(), addr.clone());
                std::thread::spawn(move || {
                    let _ = relay(conn, &addr, &c);
                });
            }
        });
        CountingTokenProxy { base, count }
    }

    /// The target's token URL through the relay.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base)
    }

    /// Token requests (POST .../token) relayed so far.
    pub fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// One request: read it, count it, send it upstream with `Connection: close`, copy the answer
/// back until the upstream closes.
fn relay(client: TcpStream, upstream: &str, count: &AtomicUsize) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") || lower.starts_with("host:") {
            continue;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    if request_line.starts_with("POST ") && request_line.contains("/token ") {
        count.fetch_add(1, Ordering::SeqCst);
    }
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(request_line.as_bytes())?;
    up.write_all(format!("Host: {upstream}\r\nConnection: close\r\n").as_bytes())?;
    up.write_all(&head)?;
    up.write_all(b"\r\n")?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let mut client = client;
    client.write_all(&answer)?;
    client.shutdown(std::net::Shutdown::Both)
}
