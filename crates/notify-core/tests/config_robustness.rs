//! Config robustness (issue 8, items 3 and 12): a malformed line anywhere stops only what it
//! belongs to, errors name file and line but never show a line's text (the private file holds
//! secrets), `Debug` shows no value, secrets round-trip byte-exact, writes keep what they do
//! not own verbatim and refuse what they cannot round-trip, and a FIFO as config is refused.

use notify_core::config::ConfigLock;
use notify_core::*;
use std::time::Duration;

const SECRET: &str = "Zx9-very-private-VALUE-42";

fn setup(public: &str, private: Option<&str>) -> (tempfile::TempDir, Settings) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    std::fs::create_dir_all(settings.private_config_file().parent().unwrap()).unwrap();
    std::fs::write(settings.config_file(), public).unwrap();
    if let Some(p) = private {
        std::fs::write(settings.private_config_file(), p).unwrap();
    }
    (dir, settings)
}

const TARGET_A: &str = "smtp: a\n\tserver mail.example.com\n\tmode starttls\n\tauth-method plain\n\tusername u\n\tfrom-address a@example.com\n\tmailto b@example.com\n";
const TARGET_B: &str = "smtp: b\n\tserver mail.example.com\n\tmode starttls\n\tauth-method microsoft-oauth2\n\tfrom-address a@example.com\n\tmailto b@example.com\n\toauth2-client-id 11111111-2222-3333-4444-555555555555\n\toauth2-tenant-id contoso.onmicrosoft.com\n";

/// Every text an error or listing could show for this config.
fn all_texts(cfg: &NotificationConfig, names: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = cfg.problems().iter().map(|e| e.to_string()).collect();
    for n in names {
        if let Err(e) = cfg.smtp_target(n) {
            out.push(e.to_string());
        }
        if let Err(e) = cfg.smtp_secrets(n) {
            out.push(e.to_string());
        }
        if let Err(e) = cfg.stored_smtp_secrets(n) {
            out.push(e.to_string());
        }
    }
    out.push(format!("{cfg:?}"));
    out
}

#[test]
fn broken_private_lines_never_show_their_text() {
    let public = format!("{TARGET_A}\n{TARGET_B}");
    for (private, why) in [
        (
            format!("smtp: a\n\tpassword={SECRET}\n"),
            "a `password=VALUE` typo",
        ),
        (
            format!("smtp: a\npassword {SECRET}\n"),
            "a lost indentation inside the section",
        ),
        (
            format!("smtp: a\n\tpassword x\n\npassword {SECRET}\n"),
            "a lost indentation after a blank line",
        ),
        (
            format!("smtp: a\n\tpassword x\n\n\tpassword {SECRET}\n"),
            "an indented line after a blank line",
        ),
        (
            format!("smtp: a\n\tpassword x\n\nsmtp: {SECRET} x\n"),
            "a malformed header",
        ),
        (
            format!("smtp: a\n\tpassword x\n\nsmtp: a\n\tpassword {SECRET}\n"),
            "a duplicate section",
        ),
    ] {
        let (_d, s) = setup(&public, Some(&private));
        let cfg =
            NotificationConfig::load(&s).unwrap_or_else(|e| panic!("{why}: load failed: {e}"));
        let texts = all_texts(&cfg, &["a", "b"]);
        assert!(
            texts
                .iter()
                .any(|t| t.contains("priv/notifications.cfg line")),
            "{why}: the problem is reported with file and line: {texts:?}"
        );
        for t in &texts {
            assert!(!t.contains(SECRET), "{why}: secret in {t}");
            assert!(!t.contains("Zx9"), "{why}: part of the secret in {t}");
        }
        // the other target is not affected
        assert!(cfg.smtp_secrets("b").is_ok(), "{why}");
    }
}

#[test]
fn public_parse_errors_do_not_echo_the_line_either() {
    let (_d, s) = setup(&format!("{TARGET_A}\ngarbage {SECRET}\n"), None);
    let cfg = NotificationConfig::load(&s).unwrap();
    let m = cfg.problems()[0].to_string();
    assert!(m.contains("notifications.cfg line 9"), "{m}");
    assert!(!m.contains(SECRET), "{m}");
}

#[test]
fn debug_of_the_config_shows_no_value() {
    let (_d, s) = setup(
        TARGET_B,
        Some(&format!("smtp: b\n\toauth2-client-secret {SECRET}\n")),
    );
    let cfg = NotificationConfig::load(&s).unwrap();
    assert!(cfg.smtp_secrets("b").is_ok());
    for text in [format!("{cfg:?}"), format!("{cfg:#?}")] {
        assert!(!text.contains(SECRET), "{text}");
        assert!(text.contains("server"), "public keys are shown: {text}");
    }
}

#[test]
fn secrets_with_outer_blanks_round_trip_exactly() {
    let (_d, s) = setup(TARGET_B, None);
    let cfg = NotificationConfig::load(&s).unwrap();
    let target = cfg.smtp_target("b").unwrap();
    for secret in [
        format!("  {SECRET}"),
        format!("{SECRET}   "),
        format!("   {SECRET}  x "),
        " ".to_string(),
    ] {
        let lock = ConfigLock::acquire(&s).unwrap();
        let mut cfg = NotificationConfig::load(&s).unwrap();
        let secrets = SmtpSecrets {
            password: None,
            oauth2_client_secret: Some(Secret::new(secret.clone())),

            oauth2_private_key: None,
        };
        cfg.update_smtp_target(&target, &secrets).unwrap();
        cfg.save(&s, &lock).unwrap();
        drop(lock);
        let read = NotificationConfig::load(&s)
            .unwrap()
            .smtp_secrets("b")
            .unwrap()
            .oauth2_client_secret
            .unwrap();
        assert_eq!(read.expose(), secret, "{secret:?}");
    }
}

const FOREIGN: &str = "sendmail: local\n\tmailto-user root@pam\nthis line lost its indentation\n\tcomment x\n\nmatcher: m1\n\tmode all\n\tmatch-field exact:type=vzdump\n  broken line with : colon\n\n: no-type\n\tjunk\n\n# end\n";

#[test]
fn a_malformed_line_in_a_foreign_section_stops_nothing_and_is_kept() {
    let public = format!("{TARGET_A}\n{FOREIGN}\n{TARGET_B}");
    let (_d, s) = setup(&public, Some("smtp: a\n\tpassword pw\n"));
    let cfg = NotificationConfig::load(&s).unwrap();
    assert!(cfg.smtp_target("a").is_ok() && cfg.smtp_secrets("a").is_ok());
    assert!(cfg.smtp_target("b").is_ok());
    // the block outside any section is reported (file and line, not its text)
    let problems: Vec<String> = cfg.problems().iter().map(|e| e.to_string()).collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("notifications.cfg line 19") && !p.contains("no-type")),
        "{problems:?}"
    );
    // a write elsewhere keeps the foreign sections byte for byte
    let lock = ConfigLock::acquire(&s).unwrap();
    let mut cfg = NotificationConfig::load(&s).unwrap();
    let mut c = cfg.smtp_target("a").unwrap();
    c.name = "c".into();
    cfg.add_smtp_target(&c, &cfg.smtp_secrets("a").unwrap())
        .unwrap();
    cfg.save(&s, &lock).unwrap();
    let written = std::fs::read_to_string(s.config_file()).unwrap();
    assert!(written.starts_with(&public), "{written}");
}

#[test]
fn a_broken_smtp_target_is_reported_and_others_work() {
    let public = format!(
        "{TARGET_A}\nsmtp: broken\n\tserver x.example.com\nmailto lost@example.com\n\tfrom-address a@example.com\n\n{TARGET_B}"
    );
    let (_d, s) = setup(&public, Some("smtp: a\n\tpassword pw\n"));
    let cfg = NotificationConfig::load(&s).unwrap();
    assert!(cfg.smtp_target("a").is_ok() && cfg.smtp_target("b").is_ok());
    let err = cfg.smtp_target("broken").unwrap_err();
    let m = err.to_string();
    assert!(
        m.contains("notifications.cfg line 11")
            && m.contains("target 'broken'")
            && m.contains("not indented")
            && !m.contains("lost@"),
        "{m}"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // it is listed among the targets (as failing), not hidden
    assert!(cfg.smtp_target_names().contains(&"broken".to_string()));

    // updating it would drop the malformed line: refused; other writes keep it verbatim
    let lock = ConfigLock::acquire(&s).unwrap();
    let mut cfg = NotificationConfig::load(&s).unwrap();
    let mut t = cfg.smtp_target("a").unwrap();
    t.name = "broken".into();
    let m = cfg
        .update_smtp_target(&t, &cfg.smtp_secrets("a").unwrap())
        .unwrap_err()
        .to_string();
    assert!(m.contains("line 11") && m.contains("by hand"), "{m}");
    let a = cfg.smtp_target("a").unwrap();
    cfg.update_smtp_target(&a, &cfg.smtp_secrets("a").unwrap())
        .unwrap();
    cfg.save(&s, &lock).unwrap();
    assert_eq!(std::fs::read_to_string(s.config_file()).unwrap(), public);
    // removing it is fine
    cfg.remove_smtp_target("broken").unwrap();
    cfg.save(&s, &lock).unwrap();
    assert!(!std::fs::read_to_string(s.config_file())
        .unwrap()
        .contains("broken"));
}

#[test]
fn a_fifo_as_config_is_refused_not_waited_on() {
    let (_d, s) = setup("", None);
    std::fs::remove_file(s.config_file()).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(s.config_file())
        .status()
        .unwrap();
    assert!(status.success());
    let (tx, rx) = std::sync::mpsc::channel();
    let settings = s.clone();
    std::thread::spawn(move || {
        let _ = tx.send(NotificationConfig::load(&settings).map(|_| ()));
    });
    // a guard against a hang, not a timing assertion
    let result = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("loading a FIFO config must not block");
    let m = result.unwrap_err().to_string();
    assert!(m.contains("not a regular file"), "{m}");
    // unblock the reader thread of the old code, should it be waiting
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags_nonblock()
        .open(s.config_file());
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK on Linux
        self.custom_flags(0o4000)
    }
}

#[test]
fn recipients_are_capped_per_target() {
    let many: String = (0..101)
        .map(|i| format!("\tmailto r{i}@example.com\n"))
        .collect();
    let (_d, s) = setup(
        &format!("smtp: big\n\tserver mail.example.com\n\tfrom-address a@example.com\n{many}"),
        None,
    );
    let cfg = NotificationConfig::load(&s).unwrap();
    let m = cfg.smtp_target("big").unwrap_err().to_string();
    assert!(
        m.contains("key 'mailto'")
            && m.contains("101 recipients (mailto and mailto-user): at most 100"),
        "{m}"
    );
    // through the API path too
    let mut t = SmtpTarget::new(
        "big2",
        "mail.example.com",
        "a@example.com",
        (0..200_000).map(|i| format!("r{i}@example.com")).collect(),
    );
    t.mode = SmtpMode::Starttls;
    let lock = ConfigLock::acquire(&s).unwrap();
    let mut cfg = NotificationConfig::load(&s).unwrap();
    let e = cfg
        .add_smtp_target(&t, &SmtpSecrets::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("at most 100"), "{e}");
    t.mailto.truncate(100);
    cfg.add_smtp_target(&t, &SmtpSecrets::default()).unwrap();
    cfg.save(&s, &lock).unwrap();
}

#[test]
fn a_save_removes_temp_files_a_killed_writer_left() {
    let (_d, s) = setup(TARGET_B, Some("smtp: b\n\toauth2-client-secret x\n"));
    let priv_dir = s.private_config_file().parent().unwrap().to_path_buf();
    let leftover = priv_dir.join(".tmp-AbC123");
    std::fs::write(
        &leftover,
        format!("smtp: b\n\toauth2-client-secret {SECRET}\n"),
    )
    .unwrap();
    let public_leftover = s.config_dir.join(".tmp-XyZ789");
    std::fs::write(&public_leftover, TARGET_B).unwrap();
    let lock = ConfigLock::acquire(&s).unwrap();
    let mut cfg = NotificationConfig::load(&s).unwrap();
    cfg.save(&s, &lock).unwrap();
    assert!(!leftover.exists() && !public_leftover.exists());
}

/// A minimal SMTP server on loopback that accepts every message (AUTH PLAIN included).
fn accepting_smtp_server() -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                let _ = s.write_all(b"220 fake ESMTP\r\n");
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                let mut in_data = false;
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    let up = line.to_ascii_uppercase();
                    let reply: &[u8] = if in_data {
                        if line == ".\r\n" {
                            in_data = false;
                            b"250 2.0.0 queued\r\n"
                        } else {
                            b""
                        }
                    } else if up.starts_with("EHLO") {
                        b"250-fake\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n"
                    } else if up.starts_with("AUTH") {
                        b"235 2.7.0 ok\r\n"
                    } else if up.starts_with("DATA") {
                        in_data = true;
                        b"354 go ahead\r\n"
                    } else if up.starts_with("QUIT") {
                        let _ = s.write_all(b"221 bye\r\n");
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    let _ = s.write_all(reply);
                    line.clear();
                }
            });
        }
    });
    port
}

/// Issue 17 item 6, a config fuzzer: bytes that are not UTF-8 (0x80, 0xff, a truncated 3- and
/// 4-byte sequence) inserted into every line of every section of both files, foreign sections
/// included. Each time the file loads, only the section with the byte is reported (file and
/// line, never text) and skipped, every other target lists, shows its status and sends, and a
/// write elsewhere keeps the files byte for byte.
#[test]
fn a_byte_that_is_not_utf8_stops_only_its_section() {
    let port = accepting_smtp_server();
    let canary = "pw-Zx9-very-private-42";
    let smtp = |name: &str, auth: &str| {
        format!(
            "smtp: {name}\n\tserver 127.0.0.1\n\tport {port}\n\tmode insecure\n\tallow-insecure-auth 1\n{auth}\tfrom-address a@example.com\n\tmailto b@example.com\n"
        )
    };
    let public = format!(
        "# notifications, kept by hand\n\n{}\n{}\nsendmail: local\n\tmailto-user root@pam\n\tcomment x\n\nmatcher: m1\n\tmode all\n\tmatch-field exact:type=vzdump\n\n{}",
        smtp("ok1", ""),
        smtp("ok2", "\tauth-method plain\n\tusername u2\n"),
        smtp("vic", "\tauth-method plain\n\tusername u3\n"),
    ) + "\n" + &smtp(
        "oa",
        "\tauth-method microsoft-oauth2\n\toauth2-client-id 11111111-2222-3333-4444-555555555555\n\toauth2-tenant-id contoso.onmicrosoft.com\n",
    );
    let private = format!(
        "smtp: ok2\n\tpassword {canary}-ok2\n\nsmtp: orphan\n\tcomment not ours\n\nsmtp: vic\n\tpassword {canary}-vic\n"
    );
    let targets = ["ok1", "ok2", "vic", "oa"];
    // which section a line of a file belongs to (None: outside any)
    let owner = |text: &str, idx: usize| -> Option<String> {
        let mut current = None;
        for (i, l) in text.lines().enumerate() {
            if l.trim().is_empty() {
                current = None;
            } else if !l.starts_with(['\t', ' ', '#']) {
                current = l
                    .split_once(':')
                    .map(|(t, n)| format!("{}:{}", t, n.trim()));
            }
            if i == idx {
                return current;
            }
        }
        None
    };
    let bad: [&[u8]; 4] = [b"\x80", b"\xff", b"\xe2\x82", b"\xf0\x9f\x98"];
    let mut cases = 0;
    for private_file in [false, true] {
        let text = if private_file { &private } else { &public };
        for (idx, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            for seq in bad {
                for at in [0, line.len() / 2, line.len()] {
                    cases += 1;
                    let mut lines: Vec<Vec<u8>> =
                        text.lines().map(|l| l.as_bytes().to_vec()).collect();
                    lines[idx].splice(at..at, seq.iter().copied());
                    let mutated: Vec<u8> =
                        lines.join(&b"\n"[..]).into_iter().chain(*b"\n").collect();
                    let (pub_bytes, priv_bytes) = if private_file {
                        (public.as_bytes().to_vec(), mutated)
                    } else {
                        (mutated, private.as_bytes().to_vec())
                    };
                    let dir = tempfile::tempdir().unwrap();
                    let s = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
                    std::fs::create_dir_all(s.private_config_file().parent().unwrap()).unwrap();
                    std::fs::write(s.config_file(), &pub_bytes).unwrap();
                    std::fs::write(s.private_config_file(), &priv_bytes).unwrap();
                    let case = format!(
                        "{} line {} +{seq:02x?} at {at}",
                        if private_file { "private" } else { "public" },
                        idx + 1
                    );
                    let cfg = NotificationConfig::load(&s)
                        .unwrap_or_else(|e| panic!("{case}: load failed: {e}"));
                    let owner = owner(text, idx);
                    let hit = owner
                        .as_deref()
                        .and_then(|o| o.strip_prefix("smtp:"))
                        .filter(|n| targets.contains(n));
                    // what every output path shows
                    let n = Notifier::new(s.clone()).unwrap();
                    let listed =
                        api::list_targets(&n).unwrap_or_else(|e| panic!("{case}: list: {e}"));
                    let mut shown: Vec<String> =
                        cfg.problems().iter().map(|e| e.to_string()).collect();
                    for t in &listed {
                        if let Some(e) = t["error"].as_str() {
                            shown.push(e.to_string());
                        }
                    }
                    for t in targets {
                        for r in [cfg.smtp_target(t).err(), cfg.smtp_secrets(t).err()] {
                            shown.extend(r.map(|e| e.to_string()));
                        }
                    }
                    shown.push(format!("{cfg:?}"));
                    for m in &shown {
                        assert!(
                            !m.contains(canary)
                                && !m.contains('\u{fffd}')
                                && !m
                                    .chars()
                                    .any(|c| ('\u{10ff80}'..='\u{10ffff}').contains(&c)),
                            "{case}: shows text: {m}"
                        );
                    }
                    // the section with the byte is reported by file and line
                    let file = if private_file {
                        "priv/notifications.cfg"
                    } else {
                        "etc/notifications.cfg"
                    };
                    let at_line = format!("{file} line {}", idx + 1);
                    if hit.is_some() || owner.is_none() {
                        assert!(
                            shown
                                .iter()
                                .any(|m| m.contains(&at_line) && m.contains("UTF-8")),
                            "{case}: not reported: {shown:?}"
                        );
                    }
                    // every other target works: listed without error, status, send
                    for t in targets.iter().filter(|t| Some(**t) != hit) {
                        assert!(
                            cfg.smtp_target(t).is_ok() && cfg.smtp_secrets(t).is_ok(),
                            "{case}: {t}"
                        );
                        let entry = listed.iter().find(|v| v["name"] == *t);
                        assert!(
                            entry.is_some_and(|v| v.get("error").is_none()),
                            "{case}: {t} listed as {entry:?}"
                        );
                    }
                    if hit != Some("oa") {
                        let st = n
                            .status()
                            .target("oa")
                            .unwrap_or_else(|e| panic!("{case}: status: {e}"));
                        assert!(!st.authorized, "{case}");
                    }
                    let to = if hit == Some("ok2") { "ok1" } else { "ok2" };
                    let report = n
                        .delivery()
                        .send(
                            &[to],
                            &Notification {
                                title: "t".into(),
                                body: "b\n".into(),
                                ..Default::default()
                            },
                        )
                        .unwrap_or_else(|e| panic!("{case}: send: {e}"));
                    assert!(
                        matches!(report[0].result, Ok(Delivery::Sent)),
                        "{case}: send to {to}: {:?}",
                        report[0].result
                    );
                    // a write elsewhere keeps both files byte for byte
                    let lock = ConfigLock::acquire(&s).unwrap();
                    let mut cfg = NotificationConfig::load(&s).unwrap();
                    let src = if hit == Some("ok1") { "ok2" } else { "ok1" };
                    let mut new = cfg.smtp_target(src).unwrap();
                    new.name = "new1".into();
                    cfg.add_smtp_target(&new, &cfg.smtp_secrets(src).unwrap())
                        .unwrap_or_else(|e| panic!("{case}: add: {e}"));
                    cfg.save(&s, &lock)
                        .unwrap_or_else(|e| panic!("{case}: save: {e}"));
                    let written = std::fs::read(s.config_file()).unwrap();
                    assert!(written.starts_with(&pub_bytes), "{case}: public rewritten");
                    let written_private = std::fs::read(s.private_config_file()).unwrap();
                    assert!(
                        written_private.starts_with(&priv_bytes),
                        "{case}: private rewritten"
                    );
                    assert!(
                        !String::from_utf8_lossy(&written[pub_bytes.len()..]).contains('\u{fffd}')
                    );
                    let again = NotificationConfig::load(&s).unwrap();
                    assert!(again.smtp_target("new1").is_ok(), "{case}");
                }
            }
        }
    }
    assert!(cases > 300, "{cases}");
}
