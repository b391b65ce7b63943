//! SMTP replies that the rig's real servers do not produce on demand: Office 365's and Gmail's
//! exact failure replies, a busy server's 421, a server that echoes credentials back, one that
//! sends terminal escape sequences, and one that drips its greeting a byte at a time. These
//! use `FaultInjectingSmtpServer`, a hand-written fake, *only* for these faults; delivery
//! itself is tested against the real Dovecot and Postfix in rig_oauth2.rs.

use notify_core::config::ConfigLock;
use notify_core::delivery::smtp::{self, Credential};
use notify_core::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the fake answers one command line (`None`: answer 250).
type Script = fn(conn: usize, line: &str) -> Option<String>;

/// FAKE SMTP server for fault injection: greets with `greeting` (or drips it), then answers
/// each line through `script`. Plain text, loopback only; counts connections and keeps every
/// line it received.
struct FaultInjectingSmtpServer {
    port: u16,
    connections: Arc<AtomicUsize>,
    received: Arc<Mutex<String>>,
}

#[derive(Clone, Copy)]
enum Greeting {
    Normal,
    /// `421` for the first `n` connections, then normal.
    BusyFirst(usize),
    /// One byte every 300 ms, forever.
    Drip,
}

impl FaultInjectingSmtpServer {
    fn start(greeting: Greeting, script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(String::new()));
        let (count, log) = (connections.clone(), received.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(s) = stream else { return };
                let n = count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                std::thread::spawn(move || serve(s, n, greeting, script, log));
            }
        });
        FaultInjectingSmtpServer {
            port,
            connections,
            received,
        }
    }
}

fn serve(mut s: TcpStream, n: usize, greeting: Greeting, script: Script, log: Arc<Mutex<String>>) {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    match greeting {
        Greeting::BusyFirst(k) if n < k => {
            let _ = s.write_all(b"421 4.7.0 Too many concurrent connections, try again later\r\n");
            return;
        }
        Greeting::Drip => {
            for b in b"220 very slow server ".iter().cycle() {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        _ => {}
    }
    let _ = s.write_all(b"220 fault.example ESMTP\r\n");
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    let mut in_data = false;
    while r.read_line(&mut line).unwrap_or(0) > 0 {
        log.lock().unwrap().push_str(&line);
        let reply = if in_data {
            if line == ".\r\n" {
                in_data = false;
                script(n, "END-OF-DATA").unwrap_or_else(|| "250 2.0.0 queued\r\n".into())
            } else {
                String::new()
            }
        } else if let Some(r) = script(n, line.trim_end()) {
            r
        } else if line.to_ascii_uppercase().starts_with("EHLO") {
            "250-fault.example\r\n250-AUTH PLAIN LOGIN XOAUTH2\r\n250 8BITMIME\r\n".into()
        } else if line.to_ascii_uppercase().starts_with("DATA") {
            in_data = true;
            "354 go ahead\r\n".into()
        } else if line.to_ascii_uppercase().starts_with("QUIT") {
            let _ = s.write_all(b"221 bye\r\n");
            return;
        } else {
            "250 ok\r\n".into()
        };
        if s.write_all(reply.as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

const TOKEN: &str = "ACCESS-TOKEN-0123456789abcdef";
const PASSWORD: &str = "pa55-word-0123456789";

fn target(port: u16, method: AuthMethod) -> SmtpTarget {
    SmtpTarget {
        port: Some(port),
        mode: SmtpMode::Insecure,
        allow_insecure_auth: true,
        auth_method: method,
        username: (method == AuthMethod::Plain).then(|| "alerts@example.com".into()),
        oauth2_client_id: method.is_oauth2().then(|| "cid".into()),
        oauth2_tenant_id: (method == AuthMethod::MicrosoftOAuth2)
            .then(|| "11111111-2222-3333-4444-555555555555".into()),
        ..SmtpTarget::new(
            "fault",
            "127.0.0.1",
            "alerts@example.com",
            vec!["ops@example.com".into()],
        )
    }
}

fn settings() -> Settings {
    let mut s = Settings::with_dirs("/nonexistent", "/nonexistent");
    s.smtp_timeout = Duration::from_secs(5);
    s.delivery_deadline = Duration::from_secs(5);
    s
}

/// One XOAUTH2 delivery to the fake; its error.
fn bearer_error(server: &FaultInjectingSmtpServer, method: AuthMethod) -> Error {
    let t = target(server.port, method);
    let msg = Notification {
        title: "t".into(),
        ..Default::default()
    }
    .to_message(&t)
    .unwrap();
    let token = Secret::new(TOKEN);
    let credential = Credential::Bearer {
        user: "alerts@example.com",
        token: &token,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    smtp::deliver(&settings(), &t, &credential, &msg, deadline).unwrap_err()
}

fn auth_reply(line: &str, reply: &str) -> Option<String> {
    // the XOAUTH2 response line (base64) follows "AUTH XOAUTH2"
    if line.eq_ignore_ascii_case("AUTH XOAUTH2") {
        Some("334 \r\n".into())
    } else if line.starts_with("dXNlcj") {
        Some(reply.into())
    } else {
        None
    }
}

#[test]
fn office365_smtp_auth_disabled() {
    let server = FaultInjectingSmtpServer::start(Greeting::Normal, |_, l| {
        auth_reply(l, "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [DB8PR09CA0123.eurprd09.prod.outlook.com 2026-11-23T02:00:00.000Z 08DD66ED]\r\n")
    });
    let e = bearer_error(&server, AuthMethod::MicrosoftOAuth2);
    assert!(e.needs_admin_fix(), "{e}");
    let m = e.to_string();
    assert!(
        m.contains("SMTP AUTH is disabled") && m.contains("Set-CASMailbox"),
        "{m}"
    );
    // the other door: Graph does not depend on SMTP AUTH
    assert!(
        m.contains("switch this target to Graph (transport graph"),
        "{m}"
    );
}

#[test]
fn office365_token_refused() {
    let server = FaultInjectingSmtpServer::start(Greeting::Normal, |_, l| {
        auth_reply(l, "535 5.7.3 Authentication unsuccessful [SGXP274CA0016.SGPP274.PROD.OUTLOOK.COM 2025-03-20T11:25:21.972Z 08DD66ED]\r\n")
    });
    let e = bearer_error(&server, AuthMethod::MicrosoftOAuth2);
    assert!(e.is_auth_rejected() && !e.is_transient(), "{e}");
    let m = e.to_string();
    assert!(
        m.contains("alerts@example.com") && m.contains("SMTP.Send"),
        "{m}"
    );
}

#[test]
fn office365_send_as_denied() {
    let server = FaultInjectingSmtpServer::start(Greeting::Normal, |_, l| {
        auth_reply(l, "235 2.7.0 Authentication successful\r\n").or_else(|| {
            (l == "END-OF-DATA").then(|| {
                "550 5.7.60 SMTP; Client does not have permissions to send as this sender\r\n"
                    .into()
            })
        })
    });
    let e = bearer_error(&server, AuthMethod::MicrosoftOAuth2);
    assert!(e.needs_admin_fix(), "{e}");
    assert!(
        e.to_string().contains("may not send as alerts@example.com"),
        "{e}"
    );
}

#[test]
fn gmail_error_challenge_then_535() {
    let server = FaultInjectingSmtpServer::start(Greeting::Normal, |_, l| {
        if l.is_empty() {
            return Some("535-5.7.8 Username and Password not accepted. For more information, go to\r\n535 5.7.8  https://support.google.com/mail/?p=BadCredentials a1-20020a05 - gsmtp\r\n".into());
        }
        // {"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}
        auth_reply(l, "334 eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==\r\n")
    });
    let e = bearer_error(&server, AuthMethod::GoogleOAuth2);
    let m = e.to_string();
    assert!(e.is_auth_rejected(), "{m}");
    assert!(
        m.contains("status 400") && m.contains("https://mail.google.com/"),
        "{m}"
    );
    assert!(m.contains("Gmail refused the token"), "{m}");
    // the empty line was sent (RFC 7628), so the final 535 was read
    assert!(server.received.lock().unwrap().contains("\r\n\r\n"));
}

#[test]
fn a_server_echoing_the_credentials_leaks_nothing() {
    let server = FaultInjectingSmtpServer::start(Greeting::Normal, |_, l| {
        if l.eq_ignore_ascii_case("AUTH XOAUTH2") {
            return Some("334 \r\n".into());
        }
        // echo the base64 SASL response, its decoded form and an escape sequence
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(l)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).replace(['\x01'], " "));
        decoded.map(|d| {
            format!("535-5.7.8 you sent {l}\r\n535 5.7.8 which is {d} \x1b[2J\x1b]0;pwned\x07\r\n")
        })
    });
    let e = bearer_error(&server, AuthMethod::OAuth2);
    let m = format!("{e} {e:?}");
    assert!(!m.contains(TOKEN), "{m}");
    assert!(!m.contains("dXNlcj"), "base64 of the SASL response: {m}");
    assert!(
        !m.contains('\x1b') && !m.contains('\x07') && !m.contains('\n'),
        "{m:?}"
    );
    assert!(m.contains("***"), "{m}");
}

#[test]
fn a_server_echoing_the_password_leaks_nothing() {
    let server = FaultInjectingSmtpServer::start(Greeting::Normal, |_, l| {
        l.to_ascii_uppercase()
            .starts_with("AUTH PLAIN")
            .then(|| format!("535 5.7.8 bad credentials {l}\r\n"))
    });
    let t = target(server.port, AuthMethod::Plain);
    let msg = Notification::default().to_message(&t);
    let msg = msg.unwrap_or_else(|_| {
        Notification {
            title: "t".into(),
            ..Default::default()
        }
        .to_message(&t)
        .unwrap()
    });
    let password = Secret::new(PASSWORD);
    let credential = Credential::Password {
        user: "alerts@example.com",
        password: &password,
    };
    let e = smtp::deliver(
        &settings(),
        &t,
        &credential,
        &msg,
        Instant::now() + Duration::from_secs(5),
    )
    .unwrap_err();
    let m = format!("{e} {e:?}");
    assert!(server.received.lock().unwrap().contains("AUTH PLAIN"));
    assert!(!m.contains(PASSWORD), "{m}");
    assert!(
        !m.contains("AGFsZXJ0c0BleGFtcGxlLmNvbQBwYTU1"),
        "PLAIN response: {m}"
    );
}

#[test]
fn a_dripping_server_is_cut_at_the_delivery_deadline() {
    let server = FaultInjectingSmtpServer::start(Greeting::Drip, |_, _| None);
    let t0 = Instant::now();
    let e = bearer_error(&server, AuthMethod::OAuth2);
    let took = t0.elapsed();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("delivery deadline"), "{e}");
    // the 5 s per-read timeout alone would never end it: each read gets a byte in 300 ms
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

/// A Notifier over a temp config with one `none` target at `port`.
fn notifier_with_target(port: u16) -> (tempfile::TempDir, Notifier) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    s.smtp_timeout = Duration::from_secs(5);
    s.delivery_deadline = Duration::from_secs(10);
    let t = SmtpTarget {
        auth_method: AuthMethod::None,
        allow_insecure_auth: false,
        username: None,
        ..target(port, AuthMethod::None)
    };
    let lock = ConfigLock::acquire(&s).unwrap();
    let mut cfg = NotificationConfig::load(&s).unwrap();
    cfg.add_smtp_target(&t, &SmtpSecrets::default()).unwrap();
    cfg.save(&s, &lock).unwrap();
    drop(lock);
    (dir, Notifier::new(s).unwrap())
}

#[test]
fn a_busy_server_421_is_retried_within_the_deadline() {
    let server = FaultInjectingSmtpServer::start(Greeting::BusyFirst(2), |_, _| None);
    let (_d, n) = notifier_with_target(server.port);
    let note = Notification {
        title: "retried".into(),
        ..Default::default()
    };
    n.delivery().send_to_target("fault", &note).unwrap();
    assert_eq!(server.connections.load(Ordering::SeqCst), 3);
    assert!(server.received.lock().unwrap().contains("Subject: retried"));
}

#[test]
fn a_permanent_rejection_is_not_retried() {
    let server = FaultInjectingSmtpServer::start(Greeting::Normal, |_, l| {
        l.to_ascii_uppercase().starts_with("RCPT TO").then(|| {
            "550 5.1.1 <ops@example.com>: Recipient address rejected: User unknown\r\n".into()
        })
    });
    let (_d, n) = notifier_with_target(server.port);
    let e = n
        .delivery()
        .send_to_target(
            "fault",
            &Notification {
                title: "x".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(
        e.to_string()
            .contains("recipient (RCPT TO) failed (permanent)"),
        "{e}"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn a_temporary_reply_mid_burst_ends_the_session_and_only_the_rest_is_sent_again() {
    // connection 0 takes the first message, then answers the second MAIL FROM with 451;
    // later connections take everything
    static MAILS_ON_FIRST: AtomicUsize = AtomicUsize::new(0);
    let server = FaultInjectingSmtpServer::start(Greeting::Normal, |conn, l| {
        (conn == 0
            && l.to_ascii_uppercase().starts_with("MAIL FROM")
            && MAILS_ON_FIRST.fetch_add(1, Ordering::SeqCst) == 1)
            .then(|| "451 4.3.0 Temporary local problem, try again later\r\n".into())
    });
    let (_d, n) = notifier_with_target(server.port);
    let list: Vec<Notification> = (0..3)
        .map(|i| Notification {
            title: format!("burst #{i}"),
            ..Default::default()
        })
        .collect();
    let results = n.delivery().send_burst("fault", &list).unwrap();
    assert!(
        results.iter().all(|r| matches!(r, Ok(Delivery::Sent))),
        "{results:?}"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    let got = server.received.lock().unwrap().clone();
    for i in 0..3 {
        let copies = got.matches(&format!("Subject: burst #{i}")).count();
        assert_eq!(copies, 1, "burst #{i} sent once: {copies}");
    }
}

#[test]
fn a_server_that_stays_busy_queues_the_message_and_a_flush_sends_it() {
    // 421 for the first 2 connections: as many attempts as fit into a 4 s deadline (one
    // retry after 1 s; after the next backoff of 2 s too little time would be left)
    let server = FaultInjectingSmtpServer::start(Greeting::BusyFirst(2), |_, _| None);
    let (_d, n) = notifier_with_target(server.port);
    let mut settings = n.settings().clone();
    settings.delivery_deadline = Duration::from_secs(4);
    let n = Notifier::new(settings).unwrap();
    let r = n
        .delivery()
        .send(
            &["fault"],
            &Notification {
                title: "later".into(),
                ..Default::default()
            },
        )
        .unwrap()
        .pop()
        .unwrap();
    let Ok(Delivery::Queued { id, reason }) = r.result else {
        panic!("expected queued: {:?}", r.result)
    };
    assert!(
        reason.contains("421") && reason.contains("temporary"),
        "{reason}"
    );
    let listed = n.delivery().outbox_list(Some("fault")).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert!(!server.received.lock().unwrap().contains("Subject: later"));
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    let reports = n.delivery().flush_outbox().unwrap();
    assert_eq!(reports[0].delivered, 1, "{:?}", reports[0]);
    assert!(n.delivery().outbox_list(None).unwrap().is_empty());
    assert!(server.received.lock().unwrap().contains("Subject: later"));
}

#[test]
fn a_message_the_outbox_cannot_take_fails_and_says_it_was_not_kept() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (d, n) = notifier_with_target(closed);
    let mut settings = n.settings().clone();
    settings.delivery_deadline = Duration::from_secs(2);
    // the state "directory" is a file: no spool file (and no slot file) can be written
    let file = d.path().join("state-file");
    std::fs::write(&file, b"").unwrap();
    settings.state_dir = file;
    let n = Notifier::new(settings).unwrap();
    let r = n
        .delivery()
        .send(
            &["fault"],
            &Notification {
                title: "nowhere".into(),
                ..Default::default()
            },
        )
        .unwrap()
        .pop()
        .unwrap();
    let e = r.result.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("cannot connect"), "{msg}");
    assert!(msg.contains("NOT kept"), "{msg}");
    assert_eq!(e.kind(), ErrorKind::Internal);
}
