//! Message hygiene (issue 8, item 10), checked on the mail as the rig's real servers deliver
//! it (Dovecot submission -> aiosmtpd -> Maildir): no bare CR or LF, every line within 998
//! bytes, a long unbreakable subject arrives intact.

mod common;

use base64::Engine;
use common::*;
use notify_core::notification::MAX_RECIPIENTS;
use notify_core::*;

/// The raw message in `maildir` that contains `needle` anywhere, waiting up to 5 s.
fn find_raw(maildir: &std::path::Path, needle: &str) -> Option<Vec<u8>> {
    for _ in 0..50 {
        for dir in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(maildir.join(dir)) {
                for e in rd.flatten() {
                    let bytes = std::fs::read(e.path()).unwrap_or_default();
                    if String::from_utf8_lossy(&bytes).contains(needle) {
                        return Some(bytes);
                    }
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

/// The decoded Subject of `raw` (unfolded; RFC 2047 base64 words decoded).
fn subject_of(raw: &str) -> String {
    let mut lines = raw.lines();
    let mut value = String::new();
    for l in lines.by_ref() {
        if let Some(v) = l.strip_prefix("Subject:") {
            value.push_str(v.trim_start());
            break;
        }
    }
    for l in lines {
        if l.starts_with([' ', '\t']) {
            value.push_str(l);
        } else {
            break;
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let words: Vec<&str> = value.split_whitespace().collect();
    if words.iter().all(|w| w.starts_with("=?utf-8?b?")) {
        let bytes: Vec<u8> = words
            .iter()
            .flat_map(|w| {
                b64.decode(&w["=?utf-8?b?".len()..w.len() - 2])
                    .expect("valid base64 word")
            })
            .collect();
        String::from_utf8(bytes).unwrap()
    } else {
        words.join(" ")
    }
}

fn plain_env(rig: &Rig) -> Env {
    let env = Env::new();
    let mut p = base_target(rig, "pw", "plain@example.test");
    p.auth_method = AuthMethod::Plain;
    p.username = Some(rig.plain_user.clone());
    env.add_target(
        &p,
        &SmtpSecrets {
            password: Some(Secret::new(rig.plain_password.clone())),
            oauth2_client_secret: None,

            oauth2_private_key: None,
        },
    );
    env
}

/// Assert that no line of `raw` has a bare CR or exceeds 998 bytes.
fn assert_clean(raw: &[u8]) {
    // Maildir stores LF line ends; a CR there came over the wire as a bare CR
    for (i, line) in raw.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(
            !line.contains(&b'\r'),
            "line {i} has a bare CR: {:?}",
            String::from_utf8_lossy(line)
        );
        assert!(line.len() <= 998, "line {i} is {} bytes", line.len());
    }
}

#[test]
fn bare_cr_and_lf_in_a_body_arrive_as_line_breaks() {
    let rig = Rig::get();
    let env = plain_env(&rig);
    // straight to aiosmtpd, which stores what came over the wire (Dovecot would repair it)
    let mut open = base_target(&rig, "open", "nobody@example.test");
    open.mode = SmtpMode::Insecure;
    open.port = Some(rig.sink_port);
    open.server = "127.0.0.1".into();
    env.add_target(&open, &SmtpSecrets::default());
    let id = tag("bare-cr");
    let mut n = note(&id);
    n.body = format!("marker {id}\rbare CR above\nbare LF\r\nCRLF\r\rend\n");
    for target in ["open", "pw"] {
        env.notifier.delivery().send_to_target(target, &n).unwrap();
    }
    let raw = find_raw(&rig.maildir, &format!("marker {id}")).expect("mail delivered");
    assert_clean(&raw);
    let text = String::from_utf8(raw).unwrap();
    for l in ["bare CR above", "bare LF", "CRLF", "end"] {
        assert!(
            text.lines().any(|x| x.trim_end() == l),
            "{l:?} not on its own line:\n{text}"
        );
    }
}

#[test]
fn a_long_unbreakable_subject_and_long_body_lines_stay_within_998_bytes() {
    let rig = Rig::get();
    let env = plain_env(&rig);
    let id = tag("hygiene");
    let title = format!("{id}-{}", "S".repeat(1200));
    let mut n = note(&title);
    n.body = format!("marker {id}\n{}\nend\n", "L".repeat(1500));
    env.notifier.delivery().send_to_target("pw", &n).unwrap();
    let raw = find_raw(&rig.maildir, &format!("marker {id}")).expect("mail delivered");
    assert_clean(&raw);
    let text = String::from_utf8(raw).unwrap();
    assert_eq!(subject_of(&text), title, "the subject arrives intact");
}

/// The message as handed to DATA: only CRLF line breaks, no line over 998 bytes. (The rig's
/// Maildir writer turns a bare CR into a line break itself, so this is checked here too.)
#[test]
fn the_formatted_message_has_only_crlf_and_short_lines() {
    // the most recipients a target may have, with long addresses: the To header is folded
    let target = SmtpTarget::new(
        "t",
        "localhost",
        "a@example.com",
        (0..MAX_RECIPIENTS)
            .map(|i| format!("recipient-{i}-{}@example.com", "x".repeat(40)))
            .collect(),
    );
    for (title, body) in [
        (
            "short".to_string(),
            "one\rtwo\nthree\r\nfour\r\r".to_string(),
        ),
        (
            format!("subject {}", "S".repeat(1100)),
            format!("a\r{}\nb", "L".repeat(1500)),
        ),
    ] {
        let mut n = note(&title);
        n.body = body;
        let raw = n.to_message(&target).unwrap().formatted();
        let text = String::from_utf8(raw).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        for (i, l) in lines.iter().enumerate() {
            assert!(!l.contains(['\r', '\n']), "line {i}: bare CR/LF in {l:?}");
            assert!(l.len() <= 998, "line {i} is {} bytes", l.len());
        }
    }
}
