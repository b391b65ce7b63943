//! TLS parameters for SMTP sessions, built once per server name and kept for a while.
//!
//! Building them loads and parses the system trust store (a few hundred certificate files,
//! 5-15 ms), which is more than the rest of a send's own work; a process that sends often (an
//! API worker, a burst, the relay) reuses them. They are rebuilt after [`KEEP`], so a changed
//! trust store (an added CA, `SSL_CERT_FILE`) takes effect in long-running processes too.

use lettre::transport::smtp::client::TlsParameters;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long built parameters are reused.
const KEEP: Duration = Duration::from_secs(300);

/// A server name and `SSL_CERT_FILE` (which the trust store depends on).
type Key = (String, Option<String>);

/// Built parameters, and when they were built.
static CACHE: Mutex<Option<HashMap<Key, (Instant, TlsParameters)>>> = Mutex::new(None);

/// The parameters for a session to `server` (the name its certificate must carry).
pub(super) fn parameters(server: &str) -> Result<TlsParameters, lettre::transport::smtp::Error> {
    let key = (server.to_string(), std::env::var("SSL_CERT_FILE").ok());
    {
        let cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((built, p)) = cache.as_ref().and_then(|c| c.get(&key)) {
            if built.elapsed() < KEEP {
                return Ok(p.clone());
            }
        }
    }
    // built outside the lock: another thread may build the same meanwhile, which is harmless
    let params = TlsParameters::builder(server.to_string()).build_rustls()?;
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    map.retain(|_, (built, _)| built.elapsed() < KEEP);
    map.insert(key, (Instant::now(), params.clone()));
    Ok(params)
}
