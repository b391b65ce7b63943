//! The device authorization grant (RFC 8628) for headless hosts, with the `oauth2` crate's
//! device flow: [`device_start`] asks the provider for a user code (the CLI or the page shows
//! it with the verification URL), [`device_finish`] polls the token endpoint at the server's
//! interval (`slow_down` adds 5 s, `authorization_pending` waits) until the user approved,
//! declined (`access_denied`) or the code expired (`expired_token`). The result is a refresh
//! token, kept as for the authorization-code flow.
//!
//! Google's device endpoint refuses the Gmail scope: `oauth2-flow device-code` is refused for
//! `google-oauth2` at validation, with the loopback flow as the way out.

use super::flow::{ClientRegistration, RequestDeadline, TokenSet};
use super::http::{HttpError, TokenHttpClient};
use super::token_error::{self, Answer, Grant};
use crate::error::{Error, Result, TokenProblem};
use crate::secret::Secret;
use oauth2::basic::BasicErrorResponse;
use oauth2::{DeviceAuthorizationUrl, RequestTokenError, StandardDeviceAuthorizationResponse};
use oauth2::{DeviceCodeErrorResponse, DeviceCodeErrorResponseType};
use serde::Serialize;
use std::time::{Duration, Instant};

/// What the user needs to approve the device, plus what the poll needs (kept server-side).
#[derive(Debug, Serialize)]
pub struct DeviceAuthorization {
    /// Where the user goes.
    pub verification_uri: String,
    /// The same with the code filled in, if the provider offers it.
    pub verification_uri_complete: Option<String>,
    /// The code the user enters.
    pub user_code: String,
    /// Seconds until the code expires.
    pub expires_in: u64,
    /// Seconds between polls.
    pub interval: u64,
    /// The provider's full answer (with the device code): never shown, passed to
    /// [`device_finish`].
    #[serde(skip)]
    pub details: Secret,
}

fn device_url(reg: &ClientRegistration) -> Result<DeviceAuthorizationUrl> {
    reg.endpoints
        .device_authorize_url
        .clone()
        .map(DeviceAuthorizationUrl::from_url)
        .ok_or_else(|| {
            Error::param(
                "oauth2-device-authorize-url",
                "this provider has no device authorization endpoint: set oauth2-device-authorize-url",
            )
        })
}

fn caller(
    http: &dyn TokenHttpClient,
    deadline: Instant,
) -> impl Fn(oauth2::HttpRequest) -> std::result::Result<oauth2::HttpResponse, HttpError> + '_ {
    move |mut req: oauth2::HttpRequest| {
        req.extensions_mut().insert(RequestDeadline(deadline));
        http.call(req)
    }
}

/// Ask the provider for a device code and user code.
pub fn device_start(
    http: &dyn TokenHttpClient,
    reg: &ClientRegistration,
    deadline: Instant,
) -> Result<DeviceAuthorization> {
    let client = reg
        .token_client()
        .set_device_authorization_url(device_url(reg)?);
    let scopes = reg.scopes();
    let call = caller(http, deadline);
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(scopes)
        .request(&call)
        .map_err(|e| {
            token_error::classify(e, Grant::Code, reg, Answer::default(), &reg.redactor())
        })?;
    let json = serde_json::to_string(&details)
        .map_err(|e| Error::param("device", format!("unexpected device answer: {e}")))?;
    Ok(DeviceAuthorization {
        verification_uri: details.verification_uri().to_string(),
        verification_uri_complete: details
            .verification_uri_complete()
            .map(|u| u.secret().to_string()),
        user_code: details.user_code().secret().to_string(),
        expires_in: details.expires_in().as_secs(),
        interval: details.interval().as_secs(),
        details: Secret::new(json),
    })
}

/// Poll until the user approved (tokens), declined or the code expired (errors that say to
/// start again), for at most `max_wait`: `Ok(None)` if the sign-in is still pending then (call
/// again; a server must not block a worker for the code's whole lifetime). `started` is when
/// the code was issued (Unix seconds).
pub fn device_finish(
    http: &dyn TokenHttpClient,
    reg: &ClientRegistration,
    details: &Secret,
    started: i64,
    max_wait: Duration,
    target: &str,
) -> Result<Option<TokenSet>> {
    let details: StandardDeviceAuthorizationResponse = serde_json::from_str(details.expose())
        .map_err(|_| Error::param("handle", "unreadable device authorization record"))?;
    let client = reg.token_client();
    let request = client.exchange_device_access_token(&details);
    let expires_at = started
        + details
            .expires_in()
            .min(Duration::from_secs(1800))
            .as_secs() as i64;
    let left = Duration::from_secs(expires_at.saturating_sub(crate::state::now()).max(0) as u64);
    // a whole number of intervals, so the next call's first poll keeps the interval too
    let step = details.interval().max(Duration::from_secs(1));
    let rounded = step * max_wait.as_secs().div_ceil(step.as_secs()).max(1) as u32;
    let expires = left.min(rounded);
    let until = Instant::now() + expires;
    // never sleep past this call's limit (the crate sleeps a full interval otherwise)
    let sleep =
        |d: Duration| std::thread::sleep(d.min(until.saturating_duration_since(Instant::now())));
    let redactor = reg
        .redactor()
        .secret(Some(&Secret::new(details.device_code().secret().clone())));
    let http_timeout = Duration::from_secs(30);
    // each poll gets its own deadline; the whole wait ends with the code's expiry
    let call = |mut req: oauth2::HttpRequest| {
        req.extensions_mut()
            .insert(RequestDeadline(Instant::now() + http_timeout));
        http.call(req)
    };
    let again = |why: &str| Error::Token {
        target: Some(target.to_string()),
        problem: TokenProblem::CodeRejected,
        message: format!("{why}: start the device authorization again"),
        retry_after: None,
    };
    match request.request(&call, sleep, Some(expires)) {
        Ok(t) => Ok(Some(t.into())),
        Err(RequestTokenError::ServerResponse(e)) => match e.error() {
            DeviceCodeErrorResponseType::AccessDenied => Err(again(
                "the sign-in was declined at the provider (access_denied)",
            )),
            // the crate reports its own wait limit as expired_token: the code may still be good
            DeviceCodeErrorResponseType::ExpiredToken
                if crate::state::now() < expires_at
                    && e.error_description().map(String::as_str)
                        == Some("This device code has expired.") =>
            {
                Ok(None)
            }
            DeviceCodeErrorResponseType::ExpiredToken => Err(again(
                "the code expired before the sign-in was completed (expired_token)",
            )),
            _ => Err(token_error::classify(
                as_basic(&e),
                Grant::Code,
                reg,
                Answer::default(),
                &redactor,
            )),
        },
        Err(RequestTokenError::Request(e)) => Err(token_error::classify(
            RequestTokenError::Request(e),
            Grant::Code,
            reg,
            Answer::default(),
            &redactor,
        )),
        Err(RequestTokenError::Parse(_, _)) | Err(RequestTokenError::Other(_)) => {
            Err(token_error::classify(
                RequestTokenError::Other("not a token response".into()),
                Grant::Code,
                reg,
                Answer::default(),
                &redactor,
            ))
        }
    }
}

/// A device-flow error response in the standard form (same JSON fields).
fn as_basic(e: &DeviceCodeErrorResponse) -> RequestTokenError<HttpError, BasicErrorResponse> {
    match serde_json::to_value(e).and_then(serde_json::from_value::<BasicErrorResponse>) {
        Ok(b) => RequestTokenError::ServerResponse(b),
        Err(_) => RequestTokenError::Other("unexpected device error".into()),
    }
}
