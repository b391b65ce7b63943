//! The HTTP client for token requests: our own [`TokenHttpClient`] trait (so callers and
//! tests can plug in another one) and its implementation over `ureq` 3. The `oauth2` crate's
//! built-in ureq support targets ureq 2, hence this module.
//!
//! Token requests never follow redirects (a redirected POST could carry the client secret
//! elsewhere), have one overall timeout, use the system trust store (honouring
//! `SSL_CERT_FILE`), and go through the configured HTTPS proxy, if any.

use crate::settings::Settings;
pub use oauth2::{HttpRequest, HttpResponse};

/// A failed HTTP exchange (connect, TLS, timeout, proxy). The message never contains the
/// request body.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(pub String);

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
                    .map_err(|e| HttpError(format!("invalid HTTP proxy setting: {e}")))?,
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
        Ok(UreqClient { agent })
    }
}

impl TokenHttpClient for UreqClient {
    fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let response = self
            .agent
            .run(request)
            .map_err(|e| HttpError(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let bytes = body
            .into_with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| HttpError(format!("reading the response: {e}")))?;
        Ok(HttpResponse::from_parts(parts, bytes))
    }
}
