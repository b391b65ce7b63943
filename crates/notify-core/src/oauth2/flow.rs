//! The OAuth2 flows: authorize URL (with `state` and PKCE S256), authorization-code exchange,
//! refresh. Pure request/response logic: persisting tokens is [`crate::tokens`]' job.

use super::http::{HttpError, TokenHttpClient};
pub use super::registration::ClientRegistration;
use super::token_error::{self, Answer, Grant};
use crate::config::smtp::{AuthMethod, OAuth2Flow, SmtpTarget};
use crate::error::{Error, Result};
use crate::redact::Redactor;
use crate::secret::Secret;
use oauth2::basic::{BasicClient, BasicTokenResponse};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RefreshToken, RequestTokenError, TokenResponse,
};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// 400 unless `target` is authorized in a browser (`authorization-code`): flows that mint
/// their tokens have nothing to authorize, the device flow has its own start.
pub fn interactive_flow_only(target: &SmtpTarget) -> Result<()> {
    let flow = target.flow();
    if flow == OAuth2Flow::AuthorizationCode || !target.auth_method.is_oauth2() {
        return Ok(());
    }
    Err(Error::param(
        "target",
        if flow.mints() {
            format!(
                "target '{}' uses oauth2-flow {}: there is nothing to authorize, access tokens \
                 are minted on demand (send a test to check the credential)",
                target.name,
                flow.as_str()
            )
        } else {
            format!(
                "target '{}' uses oauth2-flow device-code: start it with `oxnotify authorize {} \
                 --device` (or the page's Authorize button)",
                target.name, target.name
            )
        },
    ))
}

/// Everything the caller must keep from an authorize request to finish the flow.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    /// Where to send the user's browser.
    pub url: url::Url,
    /// The `state` value; the callback must return exactly this.
    pub state: String,
    /// The PKCE verifier to pass to the code exchange.
    pub pkce_verifier: Secret,
}

/// Build the provider's authorize URL with a random `state` and a PKCE S256 challenge, plus
/// the provider's offline-access parameters. `login_hint` pre-fills the account.
pub fn authorize_url(
    reg: &ClientRegistration,
    redirect_uri: &str,
    login_hint: Option<&str>,
) -> Result<AuthorizeRequest> {
    let auth_url = reg.endpoints.authorize_url.clone().ok_or_else(|| {
        Error::param(
            "authorize-url",
            "this OAuth2 provider has no authorize URL configured (set oauth2-authorize-url)",
        )
    })?;
    let redirect = redirect_url(redirect_uri)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let client = BasicClient::new(ClientId::new(reg.client_id.clone()))
        .set_auth_uri(AuthUrl::from_url(auth_url))
        .set_redirect_uri(redirect);
    let mut req = client
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge)
        .add_scopes(reg.scopes());
    for (k, v) in reg.endpoints.provider.extra_authorize_params {
        req = req.add_extra_param(*k, *v);
    }
    if let Some(hint) = login_hint.filter(|h| !h.is_empty()) {
        req = req.add_extra_param("login_hint", hint.to_string());
    }
    let (url, state) = req.url();
    Ok(AuthorizeRequest {
        url,
        state: state.secret().clone(),
        pkce_verifier: Secret::new(verifier.secret().clone()),
    })
}

fn redirect_url(redirect_uri: &str) -> Result<RedirectUrl> {
    let url = url::Url::parse(redirect_uri)
        .map_err(|e| Error::param("redirect-uri", format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "https" | "http") || url.fragment().is_some() {
        return Err(Error::param(
            "redirect-uri",
            "must be an http(s) URL without a fragment",
        ));
    }
    Ok(RedirectUrl::from_url(url))
}

/// Tokens from a successful token request.
#[derive(Debug, Clone)]
pub struct TokenSet {
    /// The access token.
    pub access_token: Secret,
    /// Its lifetime, if the provider said.
    pub expires_in: Option<Duration>,
    /// A (new) refresh token, if the provider sent one.
    pub refresh_token: Option<Secret>,
}

impl From<BasicTokenResponse> for TokenSet {
    fn from(r: BasicTokenResponse) -> Self {
        TokenSet {
            access_token: Secret::new(r.access_token().secret().clone()),
            expires_in: r.expires_in(),
            refresh_token: r.refresh_token().map(|t| Secret::new(t.secret().clone())),
        }
    }
}

/// Exchange an authorization code for tokens (the provider must return a refresh token).
pub fn exchange_code(
    http: &dyn TokenHttpClient,
    reg: &ClientRegistration,
    code: &str,
    redirect_uri: &str,
    pkce_verifier: Option<&Secret>,
    deadline: Instant,
) -> Result<TokenSet> {
    if code.is_empty() || code.chars().any(char::is_control) {
        return Err(Error::param(
            "authorization-code",
            "missing or contains control characters",
        ));
    }
    let client = reg
        .token_client()
        .set_redirect_uri(redirect_url(redirect_uri)?);
    let redactor = reg
        .redactor()
        .secret(Some(&Secret::new(code)))
        .secret(pkce_verifier);
    let tokens = with_retries(
        http,
        deadline,
        Grant::Code,
        reg,
        &redactor,
        |call, assertion| {
            let mut req = client.exchange_code(AuthorizationCode::new(code.to_string()));
            if let Some(v) = pkce_verifier {
                req = req.set_pkce_verifier(PkceCodeVerifier::new(v.expose().to_string()));
            }
            for (k, v) in assertion_params(assertion) {
                req = req.add_extra_param(k, v);
            }
            req.request(&call)
        },
    )?;
    if tokens.refresh_token.is_none() {
        return Err(Error::token(
            None,
            crate::error::TokenProblem::NoRefreshToken,
            format!(
                "the provider issued no refresh token, so the target could not keep working; {}",
                match reg.method {
                    AuthMethod::GoogleOAuth2 => "Google only returns one with access_type=offline and prompt=consent: authorize again from oxnotify's Authorize URL",
                    AuthMethod::MicrosoftOAuth2 => "Microsoft needs the offline_access scope and a 'Web' app registration (not SPA)",
                    _ => "make sure the scope includes offline access (often 'offline_access')",
                }
            ),
        ));
    }
    Ok(tokens)
}

/// Refresh: trade `refresh_token` for a new access token (and maybe a rotated refresh token).
pub fn refresh(
    http: &dyn TokenHttpClient,
    reg: &ClientRegistration,
    refresh_token: &Secret,
    target: &str,
    deadline: Instant,
) -> Result<TokenSet> {
    let client = reg.token_client();
    let rt = RefreshToken::new(refresh_token.expose().to_string());
    let redactor = reg.redactor().secret(Some(refresh_token));
    let scopes = reg.scopes();
    with_retries(
        http,
        deadline,
        Grant::Refresh { target },
        reg,
        &redactor,
        |call, assertion| {
            // the scope goes on refresh requests too: Entra otherwise answers with the scopes of
            // the original grant, which may not include SMTP for multi-resource consents
            let mut req = client
                .exchange_refresh_token(&rt)
                .add_scopes(scopes.clone());
            for (k, v) in assertion_params(assertion) {
                req = req.add_extra_param(k, v);
            }
            req.request(&call)
        },
    )
}

/// The form parameters of a `private_key_jwt` client assertion (RFC 7523 section 2.2).
pub(crate) fn assertion_params(assertion: Option<&Secret>) -> Vec<(&'static str, String)> {
    match assertion {
        Some(a) => vec![
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
            ),
            ("client_assertion", a.expose().to_string()),
        ],
        None => Vec::new(),
    }
}

/// One token request with retries: transient failures (unreachable, timeout, HTTP 429/5xx,
/// `temporarily_unavailable`) are tried again with exponential backoff, honouring
/// `Retry-After`, until `deadline`; every attempt's HTTP timeout is cut to the time left.
/// `send` builds and sends the request once per attempt (a request builder is consumed), with
/// a fresh client assertion if the client uses `private_key_jwt` (redacted from errors).
pub(crate) fn with_retries<F>(
    http: &dyn TokenHttpClient,
    deadline: Instant,
    grant: Grant<'_>,
    reg: &ClientRegistration,
    redactor: &Redactor,
    send: F,
) -> Result<TokenSet>
where
    F: Fn(
        &dyn Fn(oauth2::HttpRequest) -> Result<oauth2::HttpResponse, HttpError>,
        Option<&Secret>,
    ) -> std::result::Result<
        BasicTokenResponse,
        RequestTokenError<HttpError, oauth2::basic::BasicErrorResponse>,
    >,
{
    let mut backoff = Duration::from_millis(500);
    loop {
        let assertion = reg.client_assertion()?;
        let signature = assertion.as_ref().and_then(super::jwt::signature_part);
        let redactor = redactor
            .clone()
            .secret(assertion.as_ref())
            .secret(signature.as_ref());
        let answer = Cell::new(Answer::default());
        let call = |mut req: oauth2::HttpRequest| {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HttpError::timeout("the token request deadline has passed"));
            }
            req.extensions_mut().insert(RequestDeadline(deadline));
            let resp = http.call(req)?;
            answer.set(Answer {
                status: Some(resp.status().as_u16()),
                retry_after: retry_after(&resp),
            });
            Ok(resp)
        };
        let err = match send(&call, assertion.as_ref()) {
            Ok(r) => return Ok(r.into()),
            Err(e) => token_error::classify(e, grant, reg, answer.get(), &redactor),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = err.retry_after().unwrap_or(backoff);
        // retry only what may go away, and only if a wait plus a short attempt still fit
        if !err.is_transient() || wait + Duration::from_millis(200) >= left {
            return Err(err);
        }
        std::thread::sleep(wait);
        backoff = (backoff * 2).min(Duration::from_secs(8));
    }
}

/// The deadline of a token request, carried in the request's extensions so that the HTTP
/// client can cut its own timeout to it.
#[derive(Debug, Clone, Copy)]
pub struct RequestDeadline(pub Instant);

/// `Retry-After` in its delta-seconds form (the HTTP-date form is rare on token endpoints and
/// is treated as absent: the backoff applies). Capped at a minute.
fn retry_after(resp: &oauth2::HttpResponse) -> Option<Duration> {
    let v = resp.headers().get("retry-after")?.to_str().ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth2::EndpointParams;

    fn query(method: AuthMethod, tenant: Option<&str>) -> Vec<(String, String)> {
        let reg = ClientRegistration::new(
            method,
            "cid",
            None,
            &EndpointParams {
                tenant_id: tenant,
                ..Default::default()
            },
        )
        .unwrap();
        let req = authorize_url(&reg, "https://pve.example.com/cb", Some("a@example.com")).unwrap();
        req.url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn microsoft_asks_to_select_the_account_not_for_consent() {
        let q = query(AuthMethod::MicrosoftOAuth2, Some("contoso.com"));
        assert!(
            q.contains(&("prompt".into(), "select_account".into())),
            "{q:?}"
        );
        assert!(!q.iter().any(|(_, v)| v == "consent"), "{q:?}");
        assert!(q.iter().any(|(k, _)| k == "code_challenge"), "{q:?}");
        assert!(q.iter().any(|(k, _)| k == "state"), "{q:?}");
    }

    #[test]
    fn google_asks_for_consent_and_offline_access() {
        let q = query(AuthMethod::GoogleOAuth2, None);
        assert!(q.contains(&("prompt".into(), "consent".into())), "{q:?}");
        assert!(
            q.contains(&("access_type".into(), "offline".into())),
            "{q:?}"
        );
    }
}
