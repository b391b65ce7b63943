//! One access token for one target, the way a send gets it: the cached token, else a refresh
//! grant under the per-target lock ([`TokenManager::access_token`]), all within a deadline. A
//! burst of requests therefore costs one token request. Also the output formats.

use notify_core::delivery::smtp::{xoauth2_response, xoauth2_string};
pub use notify_core::oauth2::LazyHttp;
use notify_core::oauth2::TokenHttpClient;
use notify_core::tokens::TokenManager;
use notify_core::{NotificationConfig, Result, Secret, Settings, SmtpTarget};
use std::time::Instant;

/// A token and whether it came from the cache (for the broker's log).
pub struct Fetched {
    /// The access token.
    pub token: Secret,
    /// True if no token request was made.
    pub from_cache: bool,
}

/// The access token of `target` (which must be an OAuth2 target of `config`), by `deadline`.
pub fn fetch(
    settings: &Settings,
    http: &dyn TokenHttpClient,
    config: &NotificationConfig,
    target: &SmtpTarget,
    deadline: Instant,
) -> Result<Fetched> {
    let secrets = config.smtp_secrets(&target.name)?;
    let t = TokenManager::new(settings, http)
        .with_deadline(deadline)
        .access_token(target, &secrets, false)?;
    Ok(Fetched {
        token: t.token,
        from_cache: t.from_cache,
    })
}

/// How `oxnotify token` prints the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The bare access token (msmtp `passwordeval`, `curl --oauth2-bearer`).
    Bearer,
    /// The raw SASL XOAUTH2 string `user=…\x01auth=Bearer …\x01\x01`.
    Xoauth2,
    /// The same, base64-encoded (what goes on the wire after `AUTH XOAUTH2`).
    Xoauth2Base64,
}

impl Format {
    /// Parse a `--format` value.
    pub fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "bearer" => Format::Bearer,
            "xoauth2" => Format::Xoauth2,
            "xoauth2-b64" => Format::Xoauth2Base64,
            _ => return None,
        })
    }

    /// The bytes to print for `token` of `user`: bearer and base64 end with a newline, the
    /// raw XOAUTH2 string is exact (it is binary-ish already).
    pub fn render(self, user: &str, token: &Secret) -> Secret {
        Secret::new(match self {
            Format::Bearer => format!("{}\n", token.expose()),
            Format::Xoauth2 => xoauth2_string(user, token).expose().to_string(),
            Format::Xoauth2Base64 => format!("{}\n", xoauth2_response(user, token).expose()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let t = Secret::new("TOK");
        assert_eq!(
            Format::parse("bearer").unwrap().render("u@x", &t).expose(),
            "TOK\n"
        );
        assert_eq!(
            Format::parse("xoauth2").unwrap().render("u@x", &t).expose(),
            "user=u@x\u{1}auth=Bearer TOK\u{1}\u{1}"
        );
        assert_eq!(
            Format::parse("xoauth2-b64")
                .unwrap()
                .render("u@x", &t)
                .expose(),
            "dXNlcj11QHgBYXV0aD1CZWFyZXIgVE9LAQE=\n"
        );
        assert_eq!(Format::parse("plain"), None);
    }
}
