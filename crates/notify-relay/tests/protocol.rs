//! The relay's SMTP side over a real TCP socket, without the rig: the upstream target points
//! at a closed port, so every message gets the transient answer (451, Postfix keeps it). What
//! is checked is the protocol a client such as Postfix relies on: no MAIL before AUTH, a wrong
//! password refused, the login kept across RSET (Postfix sends RSET before it reuses a cached
//! connection), a refused message does not break the session, too big is 552.
//! (Real Postfix and real upstream servers: perl/t/86-relay.t.)

use notify_core::config::ConfigLock;
use notify_core::delivery::relay::{RelayMode, RelayPool};
use notify_core::oauth2::UreqClient;
use notify_core::{NotificationConfig, Settings, SmtpSecrets, SmtpTarget};
use notify_relay::config::{hex, RelayConfig};
use notify_relay::server;
use notify_relay::session::Shared;
use sha2::Digest;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

struct Client {
    out: TcpStream,
    input: BufReader<TcpStream>,
}

impl Client {
    /// The last line of the reply to `line`.
    fn say(&mut self, line: &str) -> String {
        self.out
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }
    fn reply(&mut self) -> String {
        loop {
            let mut l = String::new();
            assert!(
                self.input.read_line(&mut l).unwrap() > 0,
                "connection closed"
            );
            if l.as_bytes().get(3) != Some(&b'-') {
                return l.trim_end().to_string();
            }
        }
    }
    fn message(&mut self, from: &str, body: &str) -> String {
        assert!(self.say(&format!("MAIL FROM:<{from}>")).starts_with("250"));
        assert!(self.say("RCPT TO:<ops@example.com>").starts_with("250"));
        assert!(self.say("DATA").starts_with("354"));
        self.say(&format!("{body}\r\n."))
    }
}

fn start(max_size: usize) -> (tempfile::TempDir, u16) {
    start_with(max_size, RelayMode::Upstream)
}

fn start_with(max_size: usize, accept: RelayMode) -> (tempfile::TempDir, u16) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    settings.delivery_deadline = Duration::from_secs(5);
    // a closed port: the upstream is "down"
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = SmtpTarget {
        port: Some(closed),
        mode: notify_core::SmtpMode::Insecure,
        ..SmtpTarget::new(
            "down",
            "127.0.0.1",
            "alerts@example.com",
            vec!["ops@example.com".into()],
        )
    };
    let lock = ConfigLock::acquire(&settings).unwrap();
    let mut cfg = NotificationConfig::load(&settings).unwrap();
    cfg.add_smtp_target(&target, &SmtpSecrets::default())
        .unwrap();
    cfg.save(&settings, &lock).unwrap();
    drop(lock);
    let relay = RelayConfig {
        default_target: Some("down".into()),
        max_message_size: max_size,
        accept,
        client_password_sha256: Some(hex(&sha2::Sha256::digest(b"pw-123"))),
        ..RelayConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let http = UreqClient::new(&settings).unwrap();
    let shared = Arc::new(Shared {
        pool: RelayPool::new(settings, Arc::new(http)),
        relay,
        hostname: "relay.test".into(),
    });
    std::thread::spawn(move || server::serve(listener, shared));
    (dir, port)
}

fn connect(port: u16) -> Client {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut c = Client {
        input: BufReader::new(s.try_clone().unwrap()),
        out: s,
    };
    assert!(c.reply().starts_with("220"));
    assert!(c.say("EHLO client.test").starts_with("250"));
    c
}

/// base64 of "\0postfix\0<password>"
fn plain(password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0postfix\0{password}"))
}

#[test]
fn no_mail_before_auth_and_a_wrong_password_is_refused() {
    let (_dir, port) = start(1 << 20);
    let mut c = connect(port);
    assert!(c.say("MAIL FROM:<a@example.com>").starts_with("503"));
    assert!(c
        .say(&format!("AUTH PLAIN {}", plain("wrong")))
        .starts_with("535"));
    assert!(c.say("MAIL FROM:<a@example.com>").starts_with("503"));
    assert!(c
        .say(&format!("AUTH PLAIN {}", plain("pw-123")))
        .starts_with("235"));
    assert!(c.say("MAIL FROM:<a@example.com>").starts_with("250"));
}

#[test]
fn the_login_survives_rset_and_a_refused_message() {
    let (_dir, port) = start(1 << 20);
    let mut c = connect(port);
    assert!(c
        .say(&format!("AUTH PLAIN {}", plain("pw-123")))
        .starts_with("235"));
    // upstream down: transient, the client keeps the message
    let r = c.message("root@host.test", "Subject: one\r\n\r\nbody");
    assert!(r.starts_with("451 4.4.0"), "{r}");
    assert!(r.contains("down") && r.contains("connect"), "{r}");
    // Postfix's connection reuse: RSET, then the next message on the same session
    assert!(c.say("RSET").starts_with("250"));
    let r = c.message("root@host.test", "Subject: two\r\n\r\nbody");
    assert!(r.starts_with("451"), "{r}");
    // the null sender (bounces) is accepted too
    assert!(c.say("RSET").starts_with("250"));
    assert!(c.message("", "Subject: dsn\r\n\r\nbody").starts_with("451"));
    assert!(c.say("QUIT").starts_with("221"));
}

#[test]
fn a_message_over_the_size_limit_is_552_and_the_session_goes_on() {
    let (_dir, port) = start(100);
    let mut c = connect(port);
    assert!(c
        .say(&format!("AUTH PLAIN {}", plain("pw-123")))
        .starts_with("235"));
    let big = format!("Subject: big\r\n\r\n{}", "x".repeat(300));
    let r = c.message("root@host.test", &big);
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert!(c.say("MAIL FROM:<root@host.test>").starts_with("250"));
}

#[test]
fn in_outbox_mode_250_means_durably_in_the_outbox() {
    let (dir, port) = start_with(1 << 20, RelayMode::Outbox);
    let mut c = connect(port);
    assert!(c
        .say(&format!("AUTH PLAIN {}", plain("pw-123")))
        .starts_with("235"));
    // upstream down, but the outbox took it: accepted
    let r = c.message("root@host.test", "Subject: kept\r\n\r\nbody");
    assert!(
        r.starts_with("250 2.0.0 queued in the outbox of target 'down'"),
        "{r}"
    );
    let settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    // the immediate flush fails (upstream down) and leaves it there, titled by its Subject
    std::thread::sleep(Duration::from_millis(500));
    let (entries, _) = notify_core::delivery::outbox::entries(&settings, "down").unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].title, "kept");
    assert!(entries[0].outgoing().unwrap().body.ends_with(b"body\r\n"));
}
