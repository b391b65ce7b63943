//! Google service accounts with domain-wide delegation: the JWT bearer grant (RFC 7523
//! section 2.1). Each access token is minted with an assertion signed by the service
//! account's key, impersonating the mailbox (`sub`); Google issues no refresh token.
//! The `oauth2` crate has no request type for this grant, so the form is built here and the
//! answer parsed into the crate's standard token / error responses.

use super::flow::{with_retries, ClientRegistration, TokenSet};
use super::http::{HttpError, TokenHttpClient};
use super::jwt;
use super::token_error::Grant;
use crate::error::{Error, Result};
use crate::secret::Secret;
use oauth2::basic::{BasicErrorResponse, BasicTokenResponse};
use oauth2::http::{header, Method, Request};
use oauth2::RequestTokenError;
use std::time::Instant;

/// The grant type of RFC 7523 section 2.1.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Mint an access token acting as `mailbox`.
pub fn service_account(
    http: &dyn TokenHttpClient,
    reg: &ClientRegistration,
    mailbox: &str,
    target: &str,
    deadline: Instant,
) -> Result<TokenSet> {
    let sa = reg.service_account.as_deref().ok_or_else(|| {
        Error::param(
            "oauth2-service-account",
            "the service account's e-mail is missing",
        )
    })?;
    let key = reg.private_key.as_ref().ok_or_else(|| {
        Error::param("oauth2-private-key", "the service account's key is missing")
    })?;
    let token_url = reg.endpoints.token_url.as_str();
    let assertion = jwt::service_account_assertion(
        sa,
        mailbox,
        &reg.endpoints.scopes,
        token_url,
        key,
        reg.key_id.as_deref(),
    )?;
    let redactor = reg
        .redactor()
        .secret(Some(&assertion))
        .secret(jwt::signature_part(&assertion).as_ref());
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", JWT_BEARER)
        .append_pair("assertion", assertion.expose())
        .finish();
    let body = Secret::new(body);
    let grant = Grant::Mint {
        target,
        flow: reg.flow(),
    };
    with_retries(http, deadline, grant, reg, &redactor, |call, _| {
        let req = Request::builder()
            .method(Method::POST)
            .uri(token_url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(body.expose().as_bytes().to_vec())
            .map_err(|e| RequestTokenError::Other(format!("building the request: {e}")))?;
        let resp = call(req).map_err(RequestTokenError::Request)?;
        parse_response(resp)
    })
}

/// A token response on 2xx, the OAuth2 error response otherwise.
fn parse_response(
    resp: oauth2::HttpResponse,
) -> std::result::Result<BasicTokenResponse, RequestTokenError<HttpError, BasicErrorResponse>> {
    let body = resp.body();
    if resp.status().is_success() {
        serde_json::from_slice(body)
            .map_err(|e| RequestTokenError::Other(format!("not a token response: {e}")))
    } else {
        match serde_json::from_slice::<BasicErrorResponse>(body) {
            Ok(err) => Err(RequestTokenError::ServerResponse(err)),
            Err(_) => Err(RequestTokenError::Other(format!(
                "HTTP {} without an OAuth2 error",
                resp.status().as_u16()
            ))),
        }
    }
}
