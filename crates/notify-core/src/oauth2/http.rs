//! The HTTP client for token requests: our own [`TokenHttpClient`] trait (so callers and
//! tests can plug in another one) and its implementation over `ureq` 3. The `oauth2` crate's
//! built-in ureq support targets ureq 2, hence this module.
//!
//! Token requests never follow redirects (a redirected POST could carry the client secret
//! elsewhere), have one overall timeout, use the system trust store (honouring
//! `SSL_CERT_FILE`), and go through the configured HTTPS proxy, if any.

use crate::settings::Settings;
pub use oauth2::{HttpRequest, HttpResponse};
use std::sync::OnceLock;

/// A failed HTTP exchange (connect, TLS, timeout, proxy). The message never contains the
/// request body.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HttpError {
    message: String,
    timeout: bool,
}

impl HttpError {
    /// A failure that is not a timeout (connect, TLS, proxy, reading the body).
    pub fn new(message: impl Into<String>) -> Self {
        HttpError {
            message: message.into(),
            timeout: false,
        }
    }

    /// The request ran into its deadline.
    pub fn timeout(message: impl Into<String>) -> Self {
        HttpError {
            message: message.into(),
            timeout: true,
        }
    }

    /// True if the request ran into its deadline.
    pub fn is_timeout(&self) -> bool {
        self.timeout
    }
}

fn from_ureq(e: ureq::Error) -> HttpError {
    match e {
        ureq::Error::Timeout(t) => HttpError::timeout(format!("no answer in time ({t})")),
        other => HttpError::new(other.to_string()),
    }
}

/// Something that performs one HTTP request for the OAuth2 flows.
pub trait TokenHttpClient: Send + Sync {
    /// Send `request` and return the response, whatever its status.
    fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError>;
}

/// Largest token response we read (real ones are a few KB).
const MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

/// [`TokenHttpClient`] over a `ureq` agent.
pub struct UreqClient {
    agent: ureq::Agent,
    timeout: std::time::Duration,
}

impl std::fmt::Debug for UreqClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UreqClient")
    }
}

impl UreqClient {
    /// An agent configured from `settings` (timeout, proxy).
    pub fn new(settings: &Settings) -> Result<Self, HttpError> {
        let native = rustls_native_certs::load_native_certs();
        let roots: Vec<ureq::tls::Certificate<'static>> = native
            .certs
            .iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let root_certs = if roots.is_empty() {
            ureq::tls::RootCerts::WebPki
        } else {
            ureq::tls::RootCerts::new_with_certs(&roots)
        };
        let proxy = match &settings.http_proxy {
            Some(p) => Some(
                ureq::Proxy::new(p)
                    .map_err(|e| HttpError::new(format!("invalid HTTP proxy setting: {e}")))?,
            ),
            None => None,
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_global(Some(settings.http_timeout))
            .user_agent(concat!("oxnotify/", env!("CARGO_PKG_VERSION")))
            .proxy(proxy)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(root_certs)
                    .build(),
            )
            .build()
            .new_agent();
        Ok(UreqClient {
            agent,
            timeout: settings.http_timeout,
        })
    }
}

impl TokenHttpClient for UreqClient {
    fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        // a caller's deadline cuts this request's timeout (never lengthens it)
        let request = match request.extensions().get::<super::RequestDeadline>() {
            Some(super::RequestDeadline(deadline)) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let timeout = left.min(self.timeout);
                self.agent
                    .configure_request(request)
                    .timeout_global(Some(timeout))
                    .build()
            }
            None => request,
        };
        let response = self.agent.run(request).map_err(from_ureq)?;
        let (parts, body) = response.into_parts();
        let bytes = body
            .into_with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| match from_ureq(e) {
                t if t.is_timeout() => t,
                other => HttpError::new(format!("reading the response: {other}")),
            })?;
        Ok(HttpResponse::from_parts(parts, bytes))
    }
}

/// The HTTP client for token requests, built on first use: a cached token needs none, and
/// building one loads the system trust store (milliseconds a send
/// with a cached token or a password, and `oxnotify token`, need not spend).
pub struct LazyHttp {
    settings: Settings,
    client: OnceLock<std::result::Result<UreqClient, String>>,
}

impl LazyHttp {
    /// A client for `settings` (proxy, timeouts), not built yet.
    pub fn new(settings: &Settings) -> Self {
        LazyHttp {
            settings: settings.clone(),
            client: OnceLock::new(),
        }
    }
}

impl TokenHttpClient for LazyHttp {
    fn call(&self, request: HttpRequest) -> std::result::Result<HttpResponse, HttpError> {
        let client = self
            .client
            .get_or_init(|| UreqClient::new(&self.settings).map_err(|e| e.to_string()));
        match client {
            Ok(c) => c.call(request),
            Err(e) => Err(HttpError::new(e.clone())),
        }
    }
}
