//! Turning a failed token request into a typed [`Error`] that says what to do.
//!
//! Microsoft advises reacting to the OAuth2 `error` field, not to AADSTS numbers: the `error`
//! field (plus the HTTP status) decides the [`TokenProblem`] / [`ErrorKind`], and the AADSTS
//! code or Google's description only picks the hint for the admin.
//!
//! [`ErrorKind`]: crate::error::ErrorKind

use super::http::HttpError;
use super::registration::ClientRegistration;
use crate::config::smtp::{AuthMethod, OAuth2Flow};
use crate::error::{Error, TokenProblem};
use crate::redact::Redactor;
use oauth2::basic::BasicErrorResponse;
use oauth2::RequestTokenError;
use std::time::Duration;

/// What a token request was for: shapes the error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Grant<'a> {
    /// Authorization-code exchange (no target yet, or one being authorized).
    Code,
    /// Refresh grant for a configured target.
    Refresh {
        /// The target.
        target: &'a str,
    },
    /// An access token minted from a stored credential (client credentials, service account,
    /// password): a refusal means that credential needs an admin's fix.
    Mint {
        /// The target.
        target: &'a str,
        /// The flow.
        flow: OAuth2Flow,
    },
}

impl Grant<'_> {
    fn target(&self) -> Option<&str> {
        match self {
            Grant::Code => None,
            Grant::Refresh { target } | Grant::Mint { target, .. } => Some(target),
        }
    }
}

/// What we saw of the HTTP answer besides its body.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Answer {
    /// HTTP status.
    pub status: Option<u16>,
    /// `Retry-After` in seconds (delta form).
    pub retry_after: Option<Duration>,
}

/// The Entra AADSTS number at the start of an `error_description`, if any.
fn aadsts(description: &str) -> Option<u32> {
    let rest = description.trim_start().strip_prefix("AADSTS")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Admin hints for the AADSTS codes the Entra documentation lists for token requests.
fn entra_hint(code: u32) -> Option<&'static str> {
    Some(match code {
        700082 => "the refresh token expired after 90 days without use: authorize the target again",
        50173 | 70008 => {
            "the grant was revoked (password change or an admin revoked the sessions): authorize \
             the target again"
        }
        65001 => {
            "the app lacks consent for SMTP.Send: an admin must grant consent in Entra \
             (Enterprise applications > Permissions), then authorize the target again"
        }
        50076 | 50079 | 53003 | 530035 | 50158 => {
            "Conditional Access or MFA requires an interactive sign-in: authorize the target \
             again (and check the policies that apply to this app)"
        }
        70043 => "the sign-in frequency policy ended the session: authorize the target again",
        7000215 | 70002 => {
            "the client secret is wrong: in Entra (Certificates & secrets) copy the secret's \
             Value, not its ID, into oauth2-client-secret"
        }
        7000222 => {
            "the client secret has expired: create a new one in Entra (Certificates & secrets) \
             and set oauth2-client-secret"
        }
        7000218 => "the app needs a client secret: set oauth2-client-secret",
        700027 | 700023 => {
            "the client assertion was refused: upload the certificate of oauth2-private-key to \
             the app registration (Certificates & secrets) and set \
             oauth2-certificate-thumbprint to its thumbprint"
        }
        700024 => "the client assertion is outside its validity: check the host's clock",
        50126 => {
            "the mailbox's username or password was refused (oauth2-flow password): set the \
             current password, or better, move to authorization-code or client-credentials"
        }
        50034 => "the account does not exist in this tenant: check from-address / username",
        70011 | 1002012 => {
            "the scope is not valid for this grant: app-only tokens (client-credentials) use \
             https://outlook.office365.com/.default (remove oauth2-scope)"
        }
        500011 => {
            "Exchange Online is not provisioned in this tenant, or the scope names the wrong \
             resource: use https://outlook.office365.com/.default"
        }
        700025 => {
            "the app is a public client and must not send a secret: remove oauth2-client-secret"
        }
        90002 => "the tenant does not exist: check oauth2-tenant-id (tenant GUID or domain)",
        700016 => {
            "the app is not registered in this tenant: check oauth2-client-id and \
             oauth2-tenant-id"
        }
        9002327 => {
            "the redirect URI is registered as 'Single-page application': register it under \
             'Web' in the app registration (Authentication), then authorize again"
        }
        9002326 => {
            "the token request carried a browser Origin: the code must be redeemed by the backend"
        }
        50011 | 70004 => {
            "the redirect URI is not registered for the app: add it under 'Web' in the app \
             registration"
        }
        54005 => "the authorization code was already used: authorize again",
        9001023 | 50194 => {
            "this app cannot use the /common or /organizations endpoint: set oauth2-tenant-id to \
             the tenant GUID or domain"
        }
        50196 | 90055 | 90024 => "Entra is throttling requests: oxnotify will retry later",
        _ => return None,
    })
}

/// Google's documented token-endpoint descriptions.
fn google_hint(error: &str, description: &str) -> Option<&'static str> {
    match error {
        "invalid_grant" if description.contains("expired or revoked") => Some(
            "Google revoked or expired the refresh token: 7 days after authorization while the \
             app's consent screen is in 'Testing' status (publish it to 'In production'), after \
             6 months unused, on a password change, or by the user; authorize the target again",
        ),
        "invalid_grant" if description.contains("Invalid JWT Signature") => Some(
            "Google refused the key: it was deleted or disabled in the Google Cloud console, or \
             oauth2-private-key / oauth2-key-id do not belong to oauth2-service-account; create a \
             new key and set it (the JSON key file)",
        ),
        "invalid_grant" if description.contains("Invalid JWT") => Some(
            "the signed assertion was refused: check the host's clock (iat/exp must be within \
             the last hour)",
        ),
        "invalid_client" => Some(
            "Google does not know the client: check oauth2-client-id and oauth2-client-secret \
             (an OAuth client of type 'Web application' or 'Desktop app')",
        ),
        "unauthorized_client" => Some(
            "the client may not use this grant or scope: for service accounts, grant domain-wide \
             delegation for https://mail.google.com/ (it can take up to 24 h to apply)",
        ),
        _ => None,
    }
}

/// Classify a failed token request.
pub(crate) fn classify(
    e: RequestTokenError<HttpError, BasicErrorResponse>,
    grant: Grant<'_>,
    reg: &ClientRegistration,
    answer: Answer,
    redactor: &Redactor,
) -> Error {
    let url = reg.endpoints.token_url.as_str();
    let (problem, message) = match e {
        RequestTokenError::ServerResponse(resp) => {
            let error = redactor.peer_text(resp.error().as_ref());
            let description = resp
                .error_description()
                .map(|d| redactor.peer_text(d))
                .unwrap_or_default();
            return from_error_response(grant, reg, answer, &error, &description);
        }
        RequestTokenError::Request(err) if err.is_timeout() => (
            TokenProblem::Timeout,
            format!(
                "the token endpoint {url} did not answer in time ({}); oxnotify will retry",
                redactor.peer_text(&err.to_string())
            ),
        ),
        RequestTokenError::Request(err) => (
            TokenProblem::Unreachable,
            format!(
                "could not reach the token endpoint {url}: {}; check the network, DNS, proxy \
                 (OXNOTIFY_HTTP_PROXY) and the endpoint URL",
                redactor.peer_text(&err.to_string())
            ),
        ),
        RequestTokenError::Parse(_, _) | RequestTokenError::Other(_) => match answer.status {
            Some(s) if s == 429 || s >= 500 => (
                TokenProblem::Unavailable,
                format!(
                    "the token endpoint {url} answered HTTP {s} (not an OAuth2 response): the \
                     provider is overloaded or down; oxnotify will retry"
                ),
            ),
            status => (
                TokenProblem::BadResponse,
                format!(
                    "the token endpoint {url} answered {} with something that is not an OAuth2 \
                     token response: check oauth2-token-url (is it the provider's token \
                     endpoint?)",
                    status.map_or("a response".to_string(), |s| format!("HTTP {s}"))
                ),
            ),
        },
    };
    Error::Token {
        target: grant.target().map(str::to_string),
        problem,
        message,
        retry_after: answer.retry_after,
    }
}

fn from_error_response(
    grant: Grant<'_>,
    reg: &ClientRegistration,
    answer: Answer,
    error: &str,
    description: &str,
) -> Error {
    let desc = if description.is_empty() {
        String::new()
    } else {
        format!(": {description}")
    };
    let hint = match reg.method {
        // MFA / Conditional Access on the password grant: no sign-in can fix that
        AuthMethod::MicrosoftOAuth2
            if matches!(
                grant,
                Grant::Mint {
                    flow: OAuth2Flow::Password,
                    ..
                }
            ) && matches!(aadsts(description), Some(50076 | 50079 | 53003 | 50158)) =>
        {
            Some(
                "the account must do MFA or satisfy Conditional Access, which the password grant \
                 cannot: exclude this account from MFA, or better, use oauth2-flow \
                 authorization-code, device-code or client-credentials",
            )
        }
        AuthMethod::MicrosoftOAuth2 => aadsts(description).and_then(entra_hint),
        AuthMethod::GoogleOAuth2 => google_hint(error, description),
        _ => None,
    };
    let with_hint = |default: String| match hint {
        Some(h) => h.to_string(),
        None => default,
    };
    let error_type = kind_of(error);
    let throttled = matches!(aadsts(description), Some(50196 | 90055 | 90024));
    let overloaded = answer.status.is_some_and(|s| s == 429 || s >= 500)
        || matches!(error, "temporarily_unavailable" | "server_error")
        || throttled;
    let (problem, message) = match (&error_type, grant) {
        _ if overloaded => (
            TokenProblem::Unavailable,
            format!(
                "the provider is temporarily unavailable ({error}{desc}{}); oxnotify will retry",
                answer
                    .status
                    .map(|s| format!(", HTTP {s}"))
                    .unwrap_or_default()
            ),
        ),
        (Kind::InvalidGrant, Grant::Refresh { target })
        | (Kind::Interaction, Grant::Refresh { target }) => {
            return Error::NeedsReauthorization {
                target: target.to_string(),
                reason: format!(
                    "the provider no longer accepts the stored authorization ({error}{desc}); {}",
                    with_hint(reg.endpoints.provider.reauth_hint.to_string())
                ),
            };
        }
        (Kind::InvalidGrant, Grant::Mint { flow, .. })
        | (Kind::Interaction, Grant::Mint { flow, .. }) => (
            TokenProblem::ClientRejected,
            format!(
                "the provider refused the stored credential ({error}{desc}); {}",
                with_hint(
                    match flow {
                        OAuth2Flow::ServiceAccount => {
                            "check oauth2-private-key and oauth2-key-id (was the key deleted?) \
                             and the host's clock"
                        }
                        OAuth2Flow::Password => {
                            "the username or password was refused, or the account needs MFA or \
                             Conditional Access, which the password grant cannot do: set the \
                             current password or use another oauth2-flow"
                        }
                        _ => "check the client secret or certificate of the app registration",
                    }
                    .into()
                )
            ),
        ),
        (Kind::InvalidGrant, Grant::Code) | (Kind::Interaction, Grant::Code) => (
            TokenProblem::CodeRejected,
            format!(
                "the authorization code was rejected ({error}{desc}); {}",
                with_hint(
                    "codes are single-use and expire within minutes, and the redirect URI and \
                     PKCE verifier must match the authorize request: authorize again"
                        .into()
                )
            ),
        ),
        (Kind::Client, _) => (
            TokenProblem::ClientRejected,
            format!(
                "the provider rejected the app registration ({error}{desc}); {}",
                with_hint(
                    "check oauth2-client-id, the client secret (Microsoft: the secret's Value, not \
                     its ID; it may have expired) and the scopes the app may request"
                        .into()
                )
            ),
        ),
        (Kind::Other, _) => (
            TokenProblem::ClientRejected,
            format!(
                "the provider refused the request ({error}{desc}); {}",
                with_hint(
                    "check the target's OAuth2 settings (tenant, client ID, endpoints, scope)"
                        .into()
                )
            ),
        ),
    };
    Error::Token {
        target: grant.target().map(str::to_string),
        problem,
        message,
        retry_after: answer.retry_after,
    }
}

/// The `error` values, grouped by what the admin must do.
enum Kind {
    /// `invalid_grant`: the grant or code is gone.
    InvalidGrant,
    /// `interaction_required`, `consent_required`, `login_required`: the user must sign in
    /// interactively again.
    Interaction,
    /// `invalid_client`, `unauthorized_client`, `invalid_scope`, `unsupported_grant_type`:
    /// the app registration must be fixed.
    Client,
    /// Anything else (`invalid_request`, unknown extensions): the request was malformed for
    /// this provider, so its settings need a look.
    Other,
}

/// Group an `error` value by what the admin must do.
fn kind_of(error: &str) -> Kind {
    match error {
        "invalid_grant" => Kind::InvalidGrant,
        "interaction_required" | "consent_required" | "login_required" => Kind::Interaction,
        "invalid_client" | "unauthorized_client" | "invalid_scope" | "unsupported_grant_type" => {
            Kind::Client
        }
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::oauth2::EndpointParams;

    fn mint_error(method: AuthMethod, flow: OAuth2Flow, error: &str, description: &str) -> Error {
        let reg = ClientRegistration::new(
            method,
            "cid",
            None,
            &EndpointParams {
                tenant_id: (method == AuthMethod::MicrosoftOAuth2).then_some("contoso.com"),
                flow,
                ..Default::default()
            },
        )
        .unwrap();
        let grant = Grant::Mint { target: "t", flow };
        from_error_response(grant, &reg, Answer::default(), error, description)
    }

    #[test]
    fn service_account_refusals_are_admin_fixes_with_their_own_hints() {
        let skew = mint_error(
            AuthMethod::GoogleOAuth2,
            OAuth2Flow::ServiceAccount,
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
             timeframe. Check your iat and exp values in the JWT claim.",
        );
        assert_eq!(skew.kind(), ErrorKind::NeedsAdminFix, "{skew:?}");
        assert!(skew.to_string().contains("clock"), "{skew}");
        let key = mint_error(
            AuthMethod::GoogleOAuth2,
            OAuth2Flow::ServiceAccount,
            "invalid_grant",
            "Invalid JWT Signature.",
        );
        assert!(key.to_string().contains("deleted or disabled"), "{key}");
        let dwd = mint_error(
            AuthMethod::GoogleOAuth2,
            OAuth2Flow::ServiceAccount,
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method, or client not \
             authorized for any of the scopes requested.",
        );
        assert_eq!(dwd.kind(), ErrorKind::NeedsAdminFix);
        assert!(dwd.to_string().contains("domain-wide delegation"), "{dwd}");
    }

    #[test]
    fn app_only_and_ropc_refusals_name_the_fix() {
        let scope = mint_error(
            AuthMethod::MicrosoftOAuth2,
            OAuth2Flow::ClientCredentials,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid.",
        );
        assert_eq!(scope.kind(), ErrorKind::NeedsAdminFix);
        assert!(scope.to_string().contains(".default"), "{scope}");
        let mfa = mint_error(
            AuthMethod::MicrosoftOAuth2,
            OAuth2Flow::Password,
            "invalid_grant",
            "AADSTS50076: you must use multi-factor authentication",
        );
        assert_eq!(mfa.kind(), ErrorKind::NeedsAdminFix, "{mfa:?}");
        assert!(mfa.to_string().contains("password grant"), "{mfa}");
    }

    #[test]
    fn aadsts_code_is_read_from_the_description() {
        assert_eq!(
            aadsts("AADSTS700082: The refresh token has expired due to inactivity."),
            Some(700082)
        );
        assert_eq!(aadsts("Token has been expired or revoked."), None);
    }
}
