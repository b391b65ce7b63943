//! Making untrusted text safe to show: provider error descriptions, SMTP replies and anything
//! else a peer sends back reaches error messages, logs, terminals and state files.
//!
//! [`Redactor`] removes known secrets in every form a peer might echo them: as sent, URL- or
//! form-encoded (token request bodies), and base64-encoded (HTTP Basic client credentials,
//! SASL PLAIN/LOGIN/XOAUTH2 responses), including base64 that does not start on the secret's
//! boundary. [`one_line`] strips control characters (no log or terminal injection) and caps
//! the length.

use crate::secret::Secret;
use base64::Engine;

/// How a removed secret is shown.
pub const REDACTED: &str = "***";

/// Longest text we pass on from a peer, in characters.
pub const MAX_PEER_TEXT: usize = 300;

/// Secrets shorter than this are not searched for (they would match ordinary words).
const MIN_SECRET_LEN: usize = 4;

/// Replace control characters (CR, LF, ESC, ...) with spaces, collapse runs of blanks, and
/// cut to `max` characters, marking the cut.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 3));
    let mut blank = false;
    let mut count = 0;
    for c in text.chars() {
        let c = if c.is_control() || is_bidi_control(c) {
            ' '
        } else {
            c
        };
        if c == ' ' {
            if blank {
                continue;
            }
            blank = true;
        } else {
            blank = false;
        }
        if count == max {
            out.push_str("...");
            return out.trim().to_string();
        }
        out.push(c);
        count += 1;
    }
    out.trim().to_string()
}

/// Unicode formatting characters that reorder what a terminal shows.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// Removes a set of secrets, in all their encoded forms, from text.
#[derive(Default, Clone)]
pub struct Redactor {
    /// Every literal form to remove (raw, URL-encoded, base64 of composite values, ...).
    forms: Vec<String>,
    /// The raw secrets, for the check of decoded base64 runs.
    raw: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").finish_non_exhaustive()
    }
}

impl Redactor {
    /// An empty redactor.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remove `secret` (if set): raw, percent-encoded, form-encoded and base64-encoded.
    pub fn secret(mut self, secret: Option<&Secret>) -> Self {
        if let Some(s) = secret {
            self.add_value(s.expose());
        }
        self
    }

    /// Remove the HTTP Basic credentials value for `client_id` / `secret` (RFC 6749 2.3.1:
    /// both form-encoded, joined by ':', base64).
    pub fn basic_auth(mut self, client_id: &str, secret: Option<&Secret>) -> Self {
        if let Some(s) = secret {
            let pair = format!("{}:{}", form_encode(client_id), form_encode(s.expose()));
            self.add_composite(&pair);
        }
        self
    }

    /// Remove a base64 SASL response built from secrets (PLAIN's `\0user\0password`,
    /// XOAUTH2's `user=..\x01auth=Bearer ..\x01\x01`), as sent and as decoded.
    pub fn sasl(mut self, base64_response: &Secret) -> Self {
        let b64 = base64_response.expose();
        self.add_form(b64.trim_end_matches('=').to_string());
        if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) {
            let raw = String::from_utf8_lossy(&raw).to_string();
            if raw.len() >= MIN_SECRET_LEN && !self.raw.contains(&raw) {
                self.raw.push(raw);
            }
        }
        self
    }

    fn add_value(&mut self, v: &str) {
        if v.len() < MIN_SECRET_LEN {
            return;
        }
        self.raw.push(v.to_string());
        self.add_form(v.to_string());
        self.add_form(percent_encode(v));
        self.add_form(form_encode(v));
        self.add_composite(v);
    }

    fn add_composite(&mut self, v: &str) {
        let b64 = base64::engine::general_purpose::STANDARD;
        let url = base64::engine::general_purpose::URL_SAFE;
        let encoded = b64.encode(v);
        self.add_form(encoded.trim_end_matches('=').to_string());
        self.add_form(url.encode(v).trim_end_matches('=').to_string());
        if v.len() >= MIN_SECRET_LEN && !self.raw.iter().any(|r| r == v) {
            self.raw.push(v.to_string());
        }
    }

    fn add_form(&mut self, f: String) {
        if f.len() >= MIN_SECRET_LEN && !self.forms.contains(&f) {
            self.forms.push(f);
        }
    }

    /// `text` with every known form removed. Runs of base64 characters that decode to text
    /// containing a secret (an echo of a larger base64 value) are removed as a whole.
    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        // longest first, so a form that contains another is removed whole
        let mut forms: Vec<&String> = self.forms.iter().collect();
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        for f in forms {
            if out.contains(f.as_str()) {
                out = out.replace(f.as_str(), REDACTED);
            }
            if f.contains('%') {
                // `%2f` is `%2F` (RFC 3986 2.1): a peer may echo escapes in either case
                out = replace_escapes_any_case(&out, f);
            }
        }
        if self.raw.is_empty() {
            return out;
        }
        for r in &self.raw {
            out = replace_percent_variants(&out, r);
        }
        self.remove_base64_echoes(&out)
    }

    fn remove_base64_echoes(&self, text: &str) -> String {
        let is_b64 =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '-' | '_' | '=');
        let mut out = String::with_capacity(text.len());
        let mut run = String::new();
        let flush = |run: &mut String, out: &mut String| {
            if run.len() >= 8 && self.decodes_to_secret(run) {
                out.push_str(REDACTED);
            } else {
                out.push_str(run);
            }
            run.clear();
        };
        for c in text.chars() {
            if is_b64(c) {
                run.push(c);
            } else {
                flush(&mut run, &mut out);
                out.push(c);
            }
        }
        flush(&mut run, &mut out);
        out
    }

    /// Try the run at each of the 4 alignments, standard and URL-safe alphabets.
    fn decodes_to_secret(&self, run: &str) -> bool {
        let engines = [
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        let trimmed = run.trim_end_matches('=');
        for skip in 0..4.min(trimmed.len()) {
            let part = &trimmed[skip..];
            let usable = part.len() - part.len() % 4;
            for e in &engines {
                if let Ok(bytes) = e.decode(&part[..usable]) {
                    let decoded = String::from_utf8_lossy(&bytes);
                    if self.raw.iter().any(|r| decoded.contains(r.as_str())) {
                        return true;
                    }
                    // a secret cut by the alignment: look for a long enough piece of it
                    if self.raw.iter().any(|r| {
                        r.len() >= 12 && {
                            let piece = &r[..r.len() / 2];
                            r.is_char_boundary(r.len() / 2) && decoded.contains(piece)
                        }
                    }) {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// [`Redactor::apply`], then [`one_line`] with [`MAX_PEER_TEXT`]: for any text a peer sent.
    pub fn peer_text(&self, text: &str) -> String {
        one_line(&self.apply(text), MAX_PEER_TEXT)
    }
}

/// `text` with every occurrence of the percent-encoded `form` replaced by [`REDACTED`], the
/// hex digits of its escapes matched in either case (the rest of `form` exactly).
fn replace_escapes_any_case(text: &str, form: &str) -> String {
    let (t, f) = (text.as_bytes(), form.as_bytes());
    // which bytes of the form are the two hex digits of an escape
    let hex: Vec<bool> = (0..f.len())
        .map(|i| (i >= 1 && f[i - 1] == b'%') || (i >= 2 && f[i - 2] == b'%'))
        .collect();
    let matches_at = |start: usize| {
        t.len() - start >= f.len()
            && f.iter().enumerate().all(|(i, b)| {
                let c = t[start + i];
                if hex[i] {
                    c.eq_ignore_ascii_case(b)
                } else {
                    c == *b
                }
            })
    };
    let mut out = String::with_capacity(text.len());
    let (mut i, mut copied) = (0, 0);
    while i + f.len() <= t.len() && !f.is_empty() {
        if matches_at(i) {
            // a match is a whole UTF-8 sequence (its bytes equal the form's, up to ASCII
            // case), so it starts and ends on character boundaries
            out.push_str(&text[copied..i]);
            out.push_str(REDACTED);
            i += f.len();
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// `text` with every occurrence of `secret` in which any byte may be percent-encoded (`%2D`
/// for `-`, in either case: RFC 3986 lets a peer escape even unreserved characters) or, for a
/// space, form-encoded as `+`, replaced by [`REDACTED`].
fn replace_percent_variants(text: &str, secret: &str) -> String {
    let (t, s) = (text.as_bytes(), secret.as_bytes());
    let hex = |a: u8, b: u8| {
        let d = |c: u8| (c as char).to_digit(16);
        Some((d(a)? * 16 + d(b)?) as u8)
    };
    // the end of a variant of `secret` starting at `i`, if one does
    let match_at = |i: usize| {
        let mut j = i;
        for &b in s {
            if j < t.len() && t[j] == b {
                j += 1;
            } else if j + 2 < t.len() && t[j] == b'%' && hex(t[j + 1], t[j + 2]) == Some(b) {
                j += 3;
            } else if j < t.len() && b == b' ' && t[j] == b'+' {
                j += 1;
            } else {
                return None;
            }
        }
        Some(j)
    };
    let mut out = String::with_capacity(text.len());
    let (mut i, mut copied) = (0, 0);
    while i < t.len() && !s.is_empty() {
        match match_at(i) {
            Some(end) if text.is_char_boundary(i) && text.is_char_boundary(end) => {
                out.push_str(&text[copied..i]);
                out.push_str(REDACTED);
                i = end;
                copied = end;
            }
            _ => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn percent_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len() * 3);
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `application/x-www-form-urlencoded`, as token request bodies carry values.
fn form_encode(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t+/value with space&=";

    #[test]
    fn removes_every_encoding() {
        let s = Secret::new(SECRET);
        let r = Redactor::new()
            .secret(Some(&s))
            .basic_auth("client", Some(&s));
        let b64 = base64::engine::general_purpose::STANDARD;
        let basic = b64.encode(format!("client:{}", form_encode(SECRET)));
        let texts = [
            SECRET.to_string(),
            percent_encode(SECRET),
            form_encode(SECRET),
            b64.encode(SECRET),
            format!("Authorization: Basic {basic}"),
            // an echo of a larger base64 value that contains the secret off its boundary
            b64.encode(format!("xy\0user\0{SECRET}")),
        ];
        for t in texts {
            let out = r.apply(&format!("echo: {t} end"));
            assert!(!out.contains(SECRET), "{out}");
            assert!(!out.contains(&form_encode(SECRET)), "{out}");
            assert!(
                !out.contains(b64.encode(SECRET).trim_end_matches('=')),
                "{out}"
            );
            assert!(out.contains(REDACTED), "{out}");
        }
    }

    #[test]
    fn percent_escapes_in_any_case_are_removed() {
        let s = Secret::new(SECRET);
        let r = Redactor::new().secret(Some(&s));
        let upper = percent_encode(SECRET);
        // lowercase hex digits (RFC 3986 says equivalent), and a mix of both
        let lower = lower_escapes(&upper, |_| true);
        let mixed = lower_escapes(&upper, |i| i % 2 == 0);
        let form_lower = lower_escapes(&form_encode(SECRET), |_| true);
        for t in [lower, mixed, form_lower] {
            assert_ne!(t, upper);
            let out = r.apply(&format!("error_description: bad value {t} end"));
            assert!(!out.contains(&t), "{out}");
            assert!(out.contains(REDACTED), "{out}");
            assert!(out.starts_with("error_description: bad value ") && out.ends_with(" end"));
        }
    }

    #[test]
    fn escaped_unreserved_characters_are_removed_too() {
        let s = Secret::new("ACCESS-TOKEN.x_y~z");
        let r = Redactor::new().secret(Some(&s));
        for t in [
            "ACCESS%2DTOKEN.x_y~z",
            "%41CCESS%2dTOKEN%2Ex%5Fy%7Ez",
            "%41%43%43%45%53%53%2D%54%4F%4B%45%4E%2E%78%5F%79%7E%7A",
        ] {
            let out = r.apply(&format!("echo {t} end"));
            assert_eq!(out, "echo *** end", "{t}");
        }
        assert_eq!(
            r.apply("ACCESS%2DTOKEN"),
            "ACCESS%2DTOKEN",
            "a prefix stays"
        );
    }

    /// `text` with the hex digits of the `n`-th escape lowercased where `which(n)`.
    fn lower_escapes(text: &str, which: impl Fn(usize) -> bool) -> String {
        let mut out = String::new();
        let mut n = 0;
        let mut rest = 0;
        for c in text.chars() {
            if c == '%' {
                rest = 2;
                n += 1;
                out.push(c);
            } else if rest > 0 {
                rest -= 1;
                out.push(if which(n) { c.to_ascii_lowercase() } else { c });
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn leaves_other_text_alone() {
        let s = Secret::new(SECRET);
        let r = Redactor::new().secret(Some(&s));
        let text = "535 5.7.3 Authentication unsuccessful [SGXP274CA0016 2025-03-20T11:25:21Z]";
        assert_eq!(r.apply(text), text);
    }

    #[test]
    fn one_line_strips_controls_and_caps() {
        assert_eq!(one_line("a\r\nb\x1b[31mc\u{202e}d", 100), "a b [31mc d");
        let long = "x".repeat(1000);
        let out = one_line(&long, 10);
        assert_eq!(out, format!("{}...", "x".repeat(10)));
    }
}
