//! The OAuth2 flows: authorize URL (with `state` and PKCE S256), authorization-code exchange,
//! refresh. Pure request/response logic: persisting tokens is [`crate::tokens`]' job.

use super::http::{HttpError, TokenHttpClient};
use super::provider::{self, ClientAuth, EndpointParams, Endpoints};
use crate::config::smtp::{AuthMethod, SmtpSecrets, SmtpTarget};
use crate::error::{Error, Result};
use crate::secret::Secret;
use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenResponse};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use std::cell::Cell;
use std::time::Duration;

/// One OAuth2 client registration: provider endpoints plus client credentials.
#[derive(Debug, Clone)]
pub struct ClientRegistration {
    /// The auth method (selects the provider).
    pub method: AuthMethod,
    /// Client (application) ID.
    pub client_id: String,
    /// Client secret; `None` for public clients (PKCE only).
    pub client_secret: Option<Secret>,
    /// Resolved endpoints.
    pub endpoints: Endpoints,
}

impl ClientRegistration {
    /// Build from explicit parameters (the API's token exchange, before a target exists).
    pub fn new(
        method: AuthMethod,
        client_id: &str,
        client_secret: Option<Secret>,
        params: &EndpointParams<'_>,
    ) -> Result<Self> {
        if client_id.trim().is_empty() || client_id.chars().any(char::is_control) {
            return Err(Error::param(
                "client-id",
                "missing or contains control characters",
            ));
        }
        Ok(ClientRegistration {
            method,
            client_id: client_id.to_string(),
            client_secret: client_secret.filter(|s| !s.is_empty()),
            endpoints: provider::resolve(method, params)?,
        })
    }

    /// Build from a configured target.
    pub fn of_target(target: &SmtpTarget, secrets: &SmtpSecrets) -> Result<Self> {
        let client_id = target.oauth2_client_id.as_deref().unwrap_or_default();
        Self::new(
            target.auth_method,
            client_id,
            secrets.oauth2_client_secret.clone(),
            &EndpointParams::of_target(target),
        )
    }

    fn token_client(
        &self,
    ) -> BasicClient<
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointSet,
    > {
        let mut c = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_token_uri(TokenUrl::from_url(self.endpoints.token_url.clone()))
            .set_auth_type(match self.endpoints.provider.client_auth {
                ClientAuth::Basic => AuthType::BasicAuth,
                ClientAuth::Post => AuthType::RequestBody,
            });
        if let Some(s) = &self.client_secret {
            c = c.set_client_secret(ClientSecret::new(s.expose().to_string()));
        }
        c
    }
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
        .add_scopes(reg.endpoints.scopes.iter().cloned().map(Scope::new));
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

/// What a token request was for: shapes the error messages.
#[derive(Debug, Clone, Copy)]
enum Grant<'a> {
    Code,
    Refresh { target: &'a str },
}

/// Exchange an authorization code for tokens (the provider must return a refresh token).
pub fn exchange_code(
    http: &dyn TokenHttpClient,
    reg: &ClientRegistration,
    code: &str,
    redirect_uri: &str,
    pkce_verifier: Option<&Secret>,
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
    let mut req = client.exchange_code(AuthorizationCode::new(code.to_string()));
    if let Some(v) = pkce_verifier {
        req = req.set_pkce_verifier(PkceCodeVerifier::new(v.expose().to_string()));
    }
    let status = Cell::new(None);
    let call = |r| record_status(http, r, &status);
    let secrets = [reg.client_secret.clone(), Some(Secret::new(code))];
    let tokens: TokenSet = req
        .request(&call)
        .map_err(|e| token_error(e, Grant::Code, reg, status.get(), &secrets))?
        .into();
    if tokens.refresh_token.is_none() {
        return Err(Error::Token {
            target: None,
            message: format!(
                "the provider issued no refresh token, so the target could not keep working; {}",
                match reg.method {
                    AuthMethod::GoogleOAuth2 => "Google only returns one with access_type=offline and prompt=consent: authorize again from oxnotify's Authorize URL",
                    AuthMethod::MicrosoftOAuth2 => "Microsoft needs the offline_access scope and a 'Web' app registration (not SPA)",
                    _ => "make sure the scope includes offline access (often 'offline_access')",
                }
            ),
        });
    }
    Ok(tokens)
}

/// Refresh: trade `refresh_token` for a new access token (and maybe a rotated refresh token).
pub fn refresh(
    http: &dyn TokenHttpClient,
    reg: &ClientRegistration,
    refresh_token: &Secret,
    target: &str,
) -> Result<TokenSet> {
    let client = reg.token_client();
    let rt = RefreshToken::new(refresh_token.expose().to_string());
    let status = Cell::new(None);
    let call = |r| record_status(http, r, &status);
    let secrets = [reg.client_secret.clone(), Some(refresh_token.clone())];
    client
        .exchange_refresh_token(&rt)
        .request(&call)
        .map(TokenSet::from)
        .map_err(|e| token_error(e, Grant::Refresh { target }, reg, status.get(), &secrets))
}

fn record_status(
    http: &dyn TokenHttpClient,
    req: oauth2::HttpRequest,
    status: &Cell<Option<u16>>,
) -> Result<oauth2::HttpResponse, HttpError> {
    let resp = http.call(req)?;
    status.set(Some(resp.status().as_u16()));
    Ok(resp)
}

/// Remove every known secret from a provider-supplied message and make it one short line.
fn scrub(text: &str, secrets: &[Option<Secret>]) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    for s in secrets.iter().flatten() {
        if s.expose().len() >= 4 {
            out = out.replace(s.expose(), "***");
        }
    }
    if out.chars().count() > 300 {
        out = out.chars().take(300).collect::<String>() + "...";
    }
    out
}

fn token_error(
    e: RequestTokenError<HttpError, oauth2::basic::BasicErrorResponse>,
    grant: Grant<'_>,
    reg: &ClientRegistration,
    status: Option<u16>,
    secrets: &[Option<Secret>],
) -> Error {
    let target = match grant {
        Grant::Refresh { target } => Some(target.to_string()),
        Grant::Code => None,
    };
    let url = reg.endpoints.token_url.as_str();
    let message = match e {
        RequestTokenError::ServerResponse(resp) => {
            let desc = resp
                .error_description()
                .map(|d| format!(": {}", scrub(d, secrets)))
                .unwrap_or_default();
            let code = scrub(resp.error().as_ref(), secrets);
            match (resp.error(), grant) {
                (BasicErrorResponseType::InvalidGrant, Grant::Refresh { target }) => {
                    return Error::NeedsReauthorization {
                        target: target.to_string(),
                        reason: format!(
                            "the provider rejected the refresh token (invalid_grant{desc}): it was \
                             revoked, has expired or was replaced; {}",
                            reg.endpoints.provider.reauth_hint
                        ),
                    }
                }
                (BasicErrorResponseType::InvalidGrant, Grant::Code) => format!(
                    "the authorization code was rejected (invalid_grant{desc}): codes are single-use \
                     and expire within minutes, and the redirect URI and PKCE verifier must match \
                     the authorize request; authorize again"
                ),
                (BasicErrorResponseType::InvalidClient, _)
                | (BasicErrorResponseType::UnauthorizedClient, _) => format!(
                    "the provider rejected the client ({code}{desc}): check oauth2-client-id and \
                     the client secret (Microsoft: use the secret's Value, not its ID; it may have \
                     expired)"
                ),
                _ => format!("the provider answered {code}{desc}"),
            }
        }
        RequestTokenError::Request(err) => format!(
            "could not reach the token endpoint {url}: {err}; check the network, DNS, proxy \
             (OXNOTIFY_HTTP_PROXY) and the endpoint URL"
        ),
        RequestTokenError::Parse(_, _) => format!(
            "the token endpoint {url} answered {} with something that is not an OAuth2 token \
             response; check the token URL (is it the provider's token endpoint?) and try again later",
            status.map_or("a response".to_string(), |s| format!("HTTP {s}"))
        ),
        RequestTokenError::Other(m) => format!(
            "unexpected answer from the token endpoint {url} ({}): {}",
            status.map_or("no status".to_string(), |s| format!("HTTP {s}")),
            scrub(&m, secrets)
        ),
    };
    Error::Token { target, message }
}
