//! The private key of a service account or a `private_key_jwt` client: accepted as PEM, as the
//! JSON key file Google hands out, or as the one-line form oxnotify stores (the private file
//! holds one value per line), and turned into a signing key.

use crate::error::{Error, Result};
use crate::secret::Secret;
use base64::Engine;
use jsonwebtoken::EncodingKey;
use zeroize::Zeroize;

/// What a private-key input gave: the key in its stored one-line form, and, from a Google JSON
/// key file, the service account's identity.
#[derive(Debug)]
pub struct KeyInput {
    /// `-----BEGIN <label>----- <base64> -----END <label>-----` on one line.
    pub stored: Secret,
    /// `client_email` of a JSON key file.
    pub service_account: Option<String>,
    /// `client_id` of a JSON key file (the ID domain-wide delegation is granted to).
    pub client_id: Option<String>,
    /// `private_key_id` of a JSON key file.
    pub key_id: Option<String>,
}

/// Parse a private-key input (PEM, Google JSON key file, or the stored one-line form). Only
/// RSA keys are accepted (RS256 is what Google and Entra verify). Errors never contain the key.
pub fn parse_input(input: &str) -> Result<KeyInput> {
    let bad = |m: &str| Error::param("oauth2-private-key", m.to_string());
    let trimmed = input.trim();
    if trimmed.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(trimmed)
            .map_err(|_| bad("looks like JSON but is not a valid key file"))?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        if field("type").as_deref() != Some("service_account") {
            return Err(bad(
                "a JSON key file must be a service account's key (\"type\": \"service_account\")",
            ));
        }
        let mut pem = field("private_key").ok_or_else(|| bad("the key file has no private_key"))?;
        let stored = one_line(&pem);
        pem.zeroize();
        let stored = stored?;
        return Ok(KeyInput {
            stored,
            service_account: field("client_email"),
            client_id: field("client_id"),
            key_id: field("private_key_id"),
        });
    }
    Ok(KeyInput {
        stored: one_line(trimmed)?,
        service_account: None,
        client_id: None,
        key_id: None,
    })
}

/// The one-line form of a PEM key (also accepts the one-line form itself), checked to be a
/// usable RSA private key.
fn one_line(pem: &str) -> Result<Secret> {
    let bad = |m: &str| Error::param("oauth2-private-key", m.to_string());
    let (label, body) = split_pem(pem).ok_or_else(|| {
        bad("not a PEM private key (expected -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----), nor a service account's JSON key file")
    })?;
    if label != "PRIVATE KEY" && label != "RSA PRIVATE KEY" {
        return Err(bad(
            "only RSA private keys are supported (PEM 'PRIVATE KEY' or 'RSA PRIVATE KEY'; an encrypted key must be decrypted first)",
        ));
    }
    let stored = Secret::new(format!(
        "-----BEGIN {label}----- {body} -----END {label}-----"
    ));
    signing_key(&stored)?;
    Ok(stored)
}

/// Label and base64 body (whitespace removed) of a PEM block, multi-line or one-line.
fn split_pem(pem: &str) -> Option<(String, String)> {
    let rest = pem.trim().strip_prefix("-----BEGIN ")?;
    let (label, rest) = rest.split_once("-----")?;
    let end = format!("-----END {label}-----");
    let body = rest.trim_end().strip_suffix(end.as_str())?;
    let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let ok = !body.is_empty()
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
    ok.then(|| (label.to_string(), body))
}

/// The signing key of a stored one-line private key.
pub fn signing_key(stored: &Secret) -> Result<EncodingKey> {
    let bad = || {
        Error::param(
            "oauth2-private-key",
            "the stored private key is not a valid RSA private key: set it again",
        )
    };
    let (label, body) = split_pem(stored.expose()).ok_or_else(bad)?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|_| bad())?;
    let mut pem = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| bad());
    pem.zeroize();
    drop(der);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_non_rsa_keys_are_refused_without_echo() {
        let e = parse_input("not a key at all SECRETISH").unwrap_err();
        assert!(!e.to_string().contains("SECRETISH"), "{e}");
        let ec = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIByR\n-----END EC PRIVATE KEY-----";
        assert!(parse_input(ec)
            .unwrap_err()
            .to_string()
            .contains("only RSA"));
        let json = r#"{"type":"authorized_user","client_id":"x"}"#;
        assert!(parse_input(json)
            .unwrap_err()
            .to_string()
            .contains("service_account"));
    }
}
