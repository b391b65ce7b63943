//! App-only tokens: the client-credentials grant (RFC 6749 section 4.4), Microsoft's way for
//! a daemon to send as a mailbox it was granted (SMTP.SendAsApp). No user, no refresh token:
//! every access token is minted with the client's secret or certificate.

use super::flow::{assertion_params, with_retries, ClientRegistration, TokenSet};
use super::http::TokenHttpClient;
use super::token_error::Grant;
use crate::error::Result;
use std::time::Instant;

/// Mint an access token for `target` with the client's own credential.
pub fn client_credentials(
    http: &dyn TokenHttpClient,
    reg: &ClientRegistration,
    target: &str,
    deadline: Instant,
) -> Result<TokenSet> {
    let client = reg.token_client();
    let scopes = reg.scopes();
    let grant = Grant::Mint {
        target,
        flow: reg.flow(),
    };
    with_retries(
        http,
        deadline,
        grant,
        reg,
        &reg.redactor(),
        |call, assertion| {
            let mut req = client
                .exchange_client_credentials()
                .add_scopes(scopes.clone());
            for (k, v) in assertion_params(assertion) {
                req = req.add_extra_param(k, v);
            }
            req.request(&call)
        },
    )
}
