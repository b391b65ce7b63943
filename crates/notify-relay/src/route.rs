//! Where a message goes: the target its envelope sender names (the target's SASL identity,
//! else its from-address: the broker's rule, [`notify_broker::select`]), else the relay's
//! default target. Upstream the envelope sender is always the target's from-address (the
//! mailbox may send as nothing else), and the header From is rewritten only for the targets
//! the admin listed in `rewrite-from` (Office 365 refuses a From the mailbox may not send as:
//! 550 5.7.60); the original From then becomes the Reply-To, unless one is set.

use crate::config::RelayConfig;
use lettre::Address;
use notify_broker::access::Peer;
use notify_broker::peer::PeerCred;
use notify_broker::select::{self, NoTarget};
use notify_core::delivery::smtp::Outgoing;
use notify_core::NotificationConfig;
use std::str::FromStr;

/// A message ready for a target.
#[derive(Debug)]
pub struct Routed {
    /// Target name.
    pub target: String,
    /// Upstream envelope and bytes.
    pub message: Outgoing,
}

/// Why a message has no target: the admin must fix the configuration (the client keeps the
/// message: a 4xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoute(pub String);

/// The target for `sender` (`None`: the null sender) and the message to send through it.
pub fn route(
    config: &NotificationConfig,
    relay: &RelayConfig,
    sender: Option<&str>,
    recipients: &[Address],
    body: Vec<u8>,
) -> Result<Routed, NoRoute> {
    // the relay acts for the host's MTA, which root set up: every target counts
    let root = Peer {
        cred: PeerCred {
            pid: 0,
            uid: 0,
            gid: 0,
        },
        user: Some("root".into()),
    };
    let chosen = match sender.map(|s| select::target_for(config, s, &root)) {
        Some(Ok(t)) => Some(t.name),
        Some(Err(NoTarget::Ambiguous(names))) => {
            return Err(NoRoute(
                NoTarget::Ambiguous(names).message(sender.unwrap_or("")),
            ))
        }
        _ => None,
    };
    let name = chosen
        .or_else(|| relay.default_target.clone())
        .ok_or_else(|| {
            NoRoute(format!(
                "no target has {} as its username or from-address, and relay.conf names no \
                 default-target",
                sender.unwrap_or("the null sender")
            ))
        })?;
    let target = config
        .smtp_target(&name)
        .map_err(|e| NoRoute(e.to_string()))?;
    let from = Address::from_str(&target.from_address).map_err(|_| {
        NoRoute(format!(
            "target '{name}': from-address '{}' is not an address",
            target.from_address
        ))
    })?;
    let own = header_from(&body)
        .is_some_and(|f| address_of(&f).eq_ignore_ascii_case(&target.from_address));
    let body = if relay.rewrites_from(&name) && !own {
        rewrite_from(&body, &target.from_address)
    } else {
        body
    };
    Ok(Routed {
        target: name,
        message: Outgoing {
            from: Some(from),
            to: recipients.to_vec(),
            body,
        },
    })
}

/// The value of the header From, unfolded.
fn header_from(body: &[u8]) -> Option<String> {
    let head = &body[..header_end(body)];
    let text = String::from_utf8_lossy(head);
    let mut value: Option<String> = None;
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        match &mut value {
            Some(v) if line.starts_with([' ', '\t']) => v.push_str(line),
            Some(_) => break,
            None => {
                if line.len() > 5 && line[..5].eq_ignore_ascii_case("from:") {
                    value = Some(line[5..].to_string());
                }
            }
        }
    }
    value.map(|v| v.trim().to_string())
}

/// The address in a From value: inside `<>` if there are any, else the whole value.
fn address_of(value: &str) -> &str {
    match (value.rfind('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.trim(),
    }
}

/// `body` with its header From replaced by `from`; the old From becomes the Reply-To if the
/// message has none. Only the header section is touched; folded fields stay whole.
pub fn rewrite_from(body: &[u8], from: &str) -> Vec<u8> {
    let end = header_end(body);
    let (head, rest) = body.split_at(end);
    let mut fields: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    for (i, w) in head.windows(1).enumerate() {
        if w[0] == b'\n' {
            let next = head.get(i + 1).copied();
            // a line starting with blank or tab continues the field
            if !matches!(next, Some(b' ') | Some(b'\t')) {
                fields.push(&head[start..=i]);
                start = i + 1;
            }
        }
    }
    if start < head.len() {
        fields.push(&head[start..]);
    }
    let name_is = |f: &[u8], n: &str| {
        f.len() > n.len() && f[..n.len()].eq_ignore_ascii_case(n.as_bytes()) && f[n.len()] == b':'
    };
    let old_from = fields.iter().find(|f| name_is(f, "From")).map(|f| {
        String::from_utf8_lossy(&f[5..])
            .replace(['\r', '\n'], "")
            .trim()
            .to_string()
    });
    let has_reply_to = fields.iter().any(|f| name_is(f, "Reply-To"));
    let mut out = Vec::with_capacity(body.len() + 64);
    out.extend_from_slice(format!("From: {from}\r\n").as_bytes());
    if let (Some(old), false) = (&old_from, has_reply_to) {
        if !old.is_empty() {
            out.extend_from_slice(format!("Reply-To: {old}\r\n").as_bytes());
        }
    }
    for f in fields.iter().filter(|f| !name_is(f, "From")) {
        out.extend_from_slice(f);
    }
    out.extend_from_slice(rest);
    out
}

/// Where the header section ends (the start of the empty line, or the end of the message).
fn header_end(body: &[u8]) -> usize {
    let mut line_start = 0;
    for (i, b) in body.iter().enumerate() {
        if *b == b'\n' {
            let line = &body[line_start..i];
            if line.is_empty() || line == b"\r" {
                return line_start;
            }
            line_start = i + 1;
        }
    }
    body.len()
}

#[cfg(test)]
mod tests {
    use super::{address_of, header_from, rewrite_from};

    #[test]
    fn the_from_address_is_found_in_folded_and_bare_forms() {
        let m = b"To: x\r\nFrom: \"A\r\n B\" <a@b.c>\r\n\r\nFrom: no";
        assert_eq!(address_of(&header_from(m).unwrap()), "a@b.c");
        assert_eq!(
            address_of(&header_from(b"From: a@b.c\n\nx").unwrap()),
            "a@b.c"
        );
        assert_eq!(header_from(b"To: x\r\n\r\nFrom: a@b"), None);
    }

    #[test]
    fn from_is_replaced_and_kept_as_reply_to() {
        let m =
            b"Subject: x\r\nFrom: root <root@pve1.local>\r\nTo: a@b\r\n\r\nFrom: body stays\r\n";
        let out = String::from_utf8(rewrite_from(m, "alerts@example.com")).unwrap();
        assert!(
            out.starts_with("From: alerts@example.com\r\nReply-To: root <root@pve1.local>\r\n"),
            "{out}"
        );
        assert!(
            out.contains("Subject: x\r\nTo: a@b\r\n\r\nFrom: body stays\r\n"),
            "{out}"
        );
        assert_eq!(out.matches("From:").count(), 2, "{out}");
    }

    #[test]
    fn a_folded_from_goes_whole_and_a_reply_to_is_kept() {
        let m = b"From: \"Long\r\n Name\" <x@y>\r\nReply-To: r@y\r\n\r\nbody";
        let out = String::from_utf8(rewrite_from(m, "a@b")).unwrap();
        assert_eq!(out, "From: a@b\r\nReply-To: r@y\r\n\r\nbody");
    }
}
