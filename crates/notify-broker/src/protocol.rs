//! The broker's wire protocol: one request line in, one answer out, then the broker closes.
//!
//! Requests (the trailing newline is optional: exim's `readsocket` sends none):
//!
//! - `SMTP <address>`: the raw SASL XOAUTH2 string `user=<id>\x01auth=Bearer <token>\x01\x01`
//!   (not base64: exim's `plaintext` authenticator encodes it), for the target `<address>` names.
//! - `TOKEN <address>`: the bare access token.
//!
//! A success answer is exactly those bytes, without a newline. A failure answer is one line
//! `ERR <kind> <message>\n`, where `<kind>` is an [`notify_core::ErrorKind`] name
//! (`transient`, `needs-reauthorization`, `needs-admin-fix`, `not-found`, `invalid-input`,
//! `internal`, ...) or `denied`; the message never contains a secret.

/// Longest request line accepted (an address is at most 254 bytes).
pub const MAX_REQUEST: usize = 512;

/// What the client wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The raw XOAUTH2 string.
    Smtp,
    /// The bare access token.
    Token,
}

impl Want {
    /// The protocol keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Want::Smtp => "SMTP",
            Want::Token => "TOKEN",
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What to answer.
    pub want: Want,
    /// The address naming the target (its SASL identity or from-address).
    pub address: String,
}

/// Parse one request line (without or with its line ending). The error is the message of an
/// `ERR invalid-input` answer.
pub fn parse(line: &[u8]) -> Result<Request, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_string())?;
    let (verb, address) = line
        .split_once(' ')
        .ok_or_else(|| "expected `SMTP <address>` or `TOKEN <address>`".to_string())?;
    let want = match verb {
        "SMTP" => Want::Smtp,
        "TOKEN" => Want::Token,
        _ => return Err("unknown request: expected `SMTP <address>` or `TOKEN <address>`".into()),
    };
    let address = address.trim();
    let plausible = !address.is_empty()
        && address.len() <= 254
        && address.contains('@')
        && !address.chars().any(|c| c.is_whitespace() || c.is_control());
    if !plausible {
        return Err("the address is not an e-mail address".into());
    }
    Ok(Request {
        want,
        address: address.to_string(),
    })
}

/// A failure answer: `ERR <kind> <message>\n`, the message on one line.
pub fn error_line(kind: &str, message: &str) -> String {
    let message = notify_core::redact::one_line(message, 400);
    format!("ERR {kind} {message}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_requests_with_or_without_newline() {
        assert_eq!(
            parse(b"SMTP alerts@example.com"),
            Ok(Request {
                want: Want::Smtp,
                address: "alerts@example.com".into()
            })
        );
        assert_eq!(
            parse(b"TOKEN a@b.example\r\n").map(|r| r.want),
            Ok(Want::Token)
        );
    }

    #[test]
    fn refuses_what_is_not_a_request() {
        for bad in [
            &b"SMTP"[..],
            b"SMTP ",
            b"HELO x@y",
            b"smtp a@b",
            b"SMTP not-an-address",
            b"SMTP a@b c",
            b"SMTP a@b\x01",
            b"SMTP \xff@b",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn xoauth2_string_has_the_sasl_layout() {
        assert_eq!(
            notify_core::delivery::smtp::xoauth2_string("a@b", &notify_core::Secret::new("T0K"))
                .expose(),
            "user=a@b\u{1}auth=Bearer T0K\u{1}\u{1}"
        );
    }

    #[test]
    fn error_lines_are_one_line() {
        assert_eq!(
            error_line("transient", "a\nb"),
            format!(
                "ERR transient {}\n",
                notify_core::redact::one_line("a\nb", 400)
            )
        );
        assert_eq!(error_line("denied", "x\ny").matches('\n').count(), 1);
    }
}
