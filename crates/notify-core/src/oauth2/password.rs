//! The resource owner password credentials grant (ROPC, RFC 6749 section 4.3), as an
//! appliance's "Microsoft 365 without interactive authorization" mode does it: the mailbox's
//! username and password go to the token endpoint. Supported, but discouraged: Microsoft
//! advises against it, it fails for accounts with MFA, federated or passwordless accounts,
//! and it cannot use /common or /consumers.
//!
//! oxnotify mints each access token with the password (cached until shortly before it
//! expires) and keeps no refresh token: the password is stored anyway, and a second
//! long-lived secret at rest would add nothing but exposure.

use super::flow::{assertion_params, with_retries, ClientRegistration, TokenSet};
use super::http::TokenHttpClient;
use super::token_error::Grant;
use crate::error::Result;
use crate::secret::Secret;
use oauth2::{ResourceOwnerPassword, ResourceOwnerUsername};
use std::time::Instant;

/// Mint an access token for `target` with `username` and `password`.
pub fn password(
    http: &dyn TokenHttpClient,
    reg: &ClientRegistration,
    username: &str,
    password: &Secret,
    target: &str,
    deadline: Instant,
) -> Result<TokenSet> {
    let client = reg.token_client();
    let scopes = reg.scopes();
    let user = ResourceOwnerUsername::new(username.to_string());
    let pass = ResourceOwnerPassword::new(password.expose().to_string());
    let redactor = reg.redactor().secret(Some(password));
    let grant = Grant::Mint {
        target,
        flow: reg.flow(),
    };
    with_retries(http, deadline, grant, reg, &redactor, |call, assertion| {
        let mut req = client
            .exchange_password(&user, &pass)
            .add_scopes(scopes.clone());
        for (k, v) in assertion_params(assertion) {
            req = req.add_extra_param(k, v);
        }
        req.request(&call)
    })
}
