//! The relay's own configuration, `/etc/oxnotify/relay.conf` (root, 0600): `key = value`
//! lines, `#` comments. Kept apart from the targets' config because it belongs to the host's
//! MTA set-up, not to any target.
//!
//! ```text
//! listen = 127.0.0.1:10587          # loopback only
//! default-target = mail365          # for senders no target uses
//! rewrite-from = mail365            # targets whose header From becomes their from-address (* = all)
//! accept = upstream                 # or: outbox (250 once durably in oxnotify's outbox)
//! max-message-size = 36700160       # bytes (Office 365: 35 MB before encoding)
//! max-connections = 20              # client connections at once
//! client-user = postfix
//! client-password-sha256 = <hex>    # SHA-256 of the random password Postfix sends
//! ```

use notify_core::delivery::relay::RelayMode;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;

/// The default file.
pub const DEFAULT_PATH: &str = "/etc/oxnotify/relay.conf";

/// Office 365's limit on a message before encoding.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 35 * 1024 * 1024;

/// The relay's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Where to listen (a loopback address).
    pub listen: SocketAddr,
    /// The target for senders that no target uses.
    pub default_target: Option<String>,
    /// Targets whose header From is replaced by their from-address; `*` means all.
    pub rewrite_from: Vec<String>,
    /// When a message counts as accepted.
    pub accept: RelayMode,
    /// Largest message accepted, in bytes.
    pub max_message_size: usize,
    /// Client connections served at once.
    pub max_connections: usize,
    /// The SASL user the MTA logs in as.
    pub client_user: String,
    /// SHA-256 of the MTA's password (lower-case hex); no password means no client gets in.
    pub client_password_sha256: Option<String>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 10587)),
            default_target: None,
            rewrite_from: Vec::new(),
            accept: RelayMode::Upstream,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_connections: 20,
            client_user: "postfix".into(),
            client_password_sha256: None,
        }
    }
}

impl RelayConfig {
    /// Read `path`; every error names the file and line.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parse the text of a relay.conf.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut c = RelayConfig::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = |m: String| format!("line {}: {m}", n + 1);
            let (k, v) = line
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| at("expected 'key = value'".into()))?;
            let number = |v: &str| {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| at(format!("{k} must be a number > 0")))
            };
            match k {
                "listen" => {
                    let a: SocketAddr = v
                        .parse()
                        .map_err(|_| at(format!("listen must be IP:PORT, not '{v}'")))?;
                    if !a.ip().is_loopback() {
                        return Err(at(format!(
                            "listen must be a loopback address (127.0.0.1 or ::1), not {a}: \
                             the relay sends as your mailbox and must not be reachable from \
                             the network"
                        )));
                    }
                    c.listen = a;
                }
                "default-target" => {
                    c.default_target = Some(v.to_string()).filter(|v| !v.is_empty())
                }
                "rewrite-from" => {
                    c.rewrite_from = v
                        .split([',', ' '])
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                "accept" => {
                    c.accept = match v {
                        "upstream" => RelayMode::Upstream,
                        "outbox" => RelayMode::Outbox,
                        _ => {
                            return Err(at(format!("accept must be upstream or outbox, not '{v}'")))
                        }
                    }
                }
                "max-message-size" => c.max_message_size = number(v)?,
                "max-connections" => c.max_connections = number(v)?,
                "client-user" => c.client_user = v.to_string(),
                "client-password-sha256" => {
                    let hex = v.to_ascii_lowercase();
                    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(at("client-password-sha256 must be 64 hex digits".into()));
                    }
                    c.client_password_sha256 = Some(hex);
                }
                other => return Err(at(format!("unknown key '{other}'"))),
            }
        }
        Ok(c)
    }

    /// True if `user` / `password` is the MTA's credential (compared in constant time).
    pub fn admits(&self, user: &str, password: &str) -> bool {
        let Some(want) = &self.client_password_sha256 else {
            return false;
        };
        let got = hex(&Sha256::digest(password.as_bytes()));
        let same = got
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        same == 0 && got.len() == want.len() && user == self.client_user
    }

    /// True if the header From of messages through `target` is rewritten.
    pub fn rewrites_from(&self, target: &str) -> bool {
        self.rewrite_from.iter().any(|t| t == "*" || t == target)
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_a_non_loopback_listener() {
        let pw = hex(&Sha256::digest(b"s3cret"));
        let c = RelayConfig::parse(&format!(
            "# comment\nlisten = 127.0.0.1:2525\ndefault-target = m365\nrewrite-from = a, b\n\
             accept = outbox\nclient-password-sha256 = {pw}\n"
        ))
        .unwrap();
        assert_eq!(c.listen.port(), 2525);
        assert_eq!(c.default_target.as_deref(), Some("m365"));
        assert!(c.rewrites_from("b") && !c.rewrites_from("c"));
        assert_eq!(c.accept, RelayMode::Outbox);
        assert!(c.admits("postfix", "s3cret"));
        assert!(!c.admits("postfix", "s3creT"));
        assert!(!c.admits("root", "s3cret"));
        let e = RelayConfig::parse("listen = 0.0.0.0:25\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("loopback"), "{e}");
        assert!(RelayConfig::parse("bogus = 1")
            .unwrap_err()
            .contains("unknown key"));
        // no password configured: nobody gets in
        assert!(!RelayConfig::default().admits("postfix", ""));
    }
}
