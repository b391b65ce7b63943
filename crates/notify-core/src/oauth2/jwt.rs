//! Signed JWTs (RS256, with the `jsonwebtoken` crate): the client assertion of
//! `private_key_jwt` (RFC 7523 section 2.2) and the service-account assertion of the JWT
//! bearer grant (RFC 7523 section 2.1, as Google documents it).

use super::private_key::signing_key;
use crate::error::{Error, Result};
use crate::secret::Secret;
use base64::Engine;
use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;

/// Lifetime of a client assertion: it is used once, right away.
const CLIENT_ASSERTION_SECS: i64 = 300;
/// Lifetime of a service-account assertion: Google accepts at most an hour.
const SERVICE_ACCOUNT_ASSERTION_SECS: i64 = 3600;

#[derive(Serialize)]
struct ClientClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: i64,
    nbf: i64,
    exp: i64,
}

#[derive(Serialize)]
struct ServiceAccountClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    scope: String,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// A certificate thumbprint as a JWS header carries it (base64url of the digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Thumbprint {
    /// `x5t`: SHA-1, what Entra's portal shows.
    Sha1(String),
    /// `x5t#S256`: SHA-256, what Entra prefers where it is offered.
    Sha256(String),
}

/// The header form of a thumbprint given in hex: 40 digits are SHA-1 (`x5t`), 64 digits
/// SHA-256 (`x5t#S256`). `None` for anything else.
pub fn thumbprint_of_hex(hex: &str) -> Option<Thumbprint> {
    if hex.len() != 40 && hex.len() != 64 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes?);
    Some(if hex.len() == 40 {
        Thumbprint::Sha1(b64)
    } else {
        Thumbprint::Sha256(b64)
    })
}

fn sign<T: Serialize>(header: &Header, claims: &T, key: &Secret) -> Result<Secret> {
    let key = signing_key(key)?;
    jsonwebtoken::encode(header, claims, &key)
        .map(Secret::new)
        .map_err(|e| {
            Error::param(
                "oauth2-private-key",
                format!("signing the assertion failed ({:?})", e.kind()),
            )
        })
}

/// A `private_key_jwt` client assertion: `iss` = `sub` = the client ID, `aud` = the token URL,
/// a random `jti`, valid 5 minutes; `kid` and `x5t` / `x5t#S256` in the header when known.
pub fn client_assertion(
    client_id: &str,
    token_url: &str,
    key: &Secret,
    kid: Option<&str>,
    thumbprint: Option<&Thumbprint>,
) -> Result<Secret> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_string);
    match thumbprint {
        Some(Thumbprint::Sha1(t)) => header.x5t = Some(t.clone()),
        Some(Thumbprint::Sha256(t)) => header.x5t_s256 = Some(t.clone()),
        None => {}
    }
    let iat = crate::state::now();
    let claims = ClientClaims {
        iss: client_id,
        sub: client_id,
        aud: token_url,
        jti: oauth2::CsrfToken::new_random().secret().clone(),
        iat,
        nbf: iat,
        exp: iat + CLIENT_ASSERTION_SECS,
    };
    sign(&header, &claims, key)
}

/// A service-account assertion: `iss` = the service account, `sub` = the mailbox to act as,
/// `scope`, `aud` = the token URL, `exp` = `iat` + 1 hour; `kid` = the key's ID.
pub fn service_account_assertion(
    service_account: &str,
    mailbox: &str,
    scopes: &[String],
    token_url: &str,
    key: &Secret,
    kid: Option<&str>,
) -> Result<Secret> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_string);
    let iat = crate::state::now();
    let claims = ServiceAccountClaims {
        iss: service_account,
        sub: mailbox,
        scope: scopes.join(" "),
        aud: token_url,
        iat,
        exp: iat + SERVICE_ACCOUNT_ASSERTION_SECS,
    };
    sign(&header, &claims, key)
}

/// The signature part of a compact JWS (what must never be shown on its own either).
pub fn signature_part(jws: &Secret) -> Option<Secret> {
    jws.expose().rsplit('.').next().map(Secret::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_are_base64url_of_their_bytes() {
        assert_eq!(
            thumbprint_of_hex("0000000000000000000000000000000000000001"),
            Some(Thumbprint::Sha1("AAAAAAAAAAAAAAAAAAAAAAAAAAE".into()))
        );
        assert!(matches!(
            thumbprint_of_hex(&"ab".repeat(32)),
            Some(Thumbprint::Sha256(t)) if t.len() == 43
        ));
        assert_eq!(thumbprint_of_hex("xyz"), None);
        assert_eq!(
            thumbprint_of_hex("zz00000000000000000000000000000000000001"),
            None
        );
    }
}
