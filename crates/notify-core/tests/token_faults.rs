//! Token-endpoint faults that no real authorization server produces on demand: it hangs, it
//! answers HTTP 500 with HTML, it answers garbage, it redirects, it leaves out `expires_in`.
//! These use `FaultInjectingTokenEndpoint`, a hand-written fake, *only* for fault injection;
//! every working flow is tested against the real rig in rig_oauth2.rs.

use notify_core::config::ConfigLock;
use notify_core::state::{OAuth2State, StateStore};
use notify_core::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// FAKE token endpoint for fault injection: answers every request with `response` (raw HTTP),
/// or never answers if `response` is `None`. Loopback only; stopped on drop.
struct FaultInjectingTokenEndpoint {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl FaultInjectingTokenEndpoint {
    fn start(response: Option<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_millis(500)))
                            .unwrap();
                        let mut buf = [0u8; 8192];
                        let _ = s.read(&mut buf);
                        match &response {
                            Some(r) => {
                                let _ = s.write_all(r.as_bytes());
                            }
                            None => held.push(s), // hang: keep the socket open, say nothing
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FaultInjectingTokenEndpoint { port, stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

impl Drop for FaultInjectingTokenEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn http(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

const RT: &str = "stored-refresh-token-0123456789";
const CLIENT_SECRET: &str = "client-secret-abcdef";

/// A target whose token URL is `token_url`, with a stored refresh token.
fn setup(token_url: &str) -> (tempfile::TempDir, Notifier, Settings) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    settings.http_timeout = Duration::from_secs(2);
    let target = SmtpTarget {
        port: Some(1),
        mode: SmtpMode::Starttls,
        auth_method: AuthMethod::OAuth2,
        oauth2_client_id: Some("cid".into()),
        oauth2_token_url: Some(token_url.into()),
        oauth2_scope: Some("smtp".into()),
        ..SmtpTarget::new(
            "faulty",
            "127.0.0.1",
            "a@example.com",
            vec!["b@example.com".into()],
        )
    };
    let lock = ConfigLock::acquire(&settings).unwrap();
    let mut cfg = NotificationConfig::load(&settings).unwrap();
    cfg.add_smtp_target(
        &target,
        &SmtpSecrets {
            password: None,
            oauth2_client_secret: Some(Secret::new(CLIENT_SECRET)),
        },
    )
    .unwrap();
    cfg.save(&settings, &lock).unwrap();
    let store = StateStore::new(&settings);
    let tl = store.lock("faulty").unwrap();
    store
        .save("faulty", &OAuth2State::authorized(Secret::new(RT)), &tl)
        .unwrap();
    drop(tl);
    let n = Notifier::new(settings.clone()).unwrap();
    (dir, n, settings)
}

fn refresh_error(n: &Notifier, expected: RefreshOutcome) -> String {
    let r = n.refresh_targets().unwrap();
    assert_eq!(r[0].outcome, expected, "{:?}", r[0].error);
    let e = r[0].error.clone().unwrap();
    assert!(e.contains("target 'faulty'"), "{e}");
    assert!(
        !e.contains(RT) && !e.contains(CLIENT_SECRET),
        "secret leaked: {e}"
    );
    e
}

fn state_rt(settings: &Settings) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(settings.oauth2_state_file("faulty")).unwrap())
            .unwrap();
    v["refresh_token"].as_str().unwrap().to_string()
}

#[test]
fn endpoint_down() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed again
    let (_d, n, s) = setup(&format!("http://127.0.0.1:{port}/token"));
    let e = refresh_error(&n, RefreshOutcome::Transient);
    assert!(
        e.contains("could not reach the token endpoint") && e.contains("proxy"),
        "{e}"
    );
    assert_eq!(state_rt(&s), RT);
}

#[test]
fn endpoint_hangs_and_we_give_up_at_the_timeout() {
    let fake = FaultInjectingTokenEndpoint::start(None);
    let (_d, n, s) = setup(&fake.url());
    let t0 = Instant::now();
    let e = refresh_error(&n, RefreshOutcome::Transient);
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "not bounded by the 2 s timeout: {took:?}"
    );
    assert!(e.contains("did not answer in time"), "{e}");
    assert_eq!(state_rt(&s), RT);
}

#[test]
fn http_500_html() {
    let fake = FaultInjectingTokenEndpoint::start(Some(http(
        "500 Internal Server Error",
        "text/html",
        "<html>oops</html>",
    )));
    let (_d, n, s) = setup(&fake.url());
    let e = refresh_error(&n, RefreshOutcome::Transient);
    assert!(
        e.contains("HTTP 500") && e.contains("not an OAuth2 response") && e.contains("will retry"),
        "{e}"
    );
    assert_eq!(state_rt(&s), RT);
    // the failure is recorded in the state for the status report
    let st = n.target_status("faulty").unwrap();
    assert!(st.last_error.unwrap().message.contains("HTTP 500"));
}

#[test]
fn malformed_json() {
    let fake = FaultInjectingTokenEndpoint::start(Some(http(
        "200 OK",
        "application/json",
        "{\"access_token\": ",
    )));
    let (_d, n, s) = setup(&fake.url());
    let e = refresh_error(&n, RefreshOutcome::NeedsAdminFix);
    assert!(
        e.contains("HTTP 200") && e.contains("not an OAuth2 token response"),
        "{e}"
    );
    assert_eq!(state_rt(&s), RT);
}

#[test]
fn redirects_are_not_followed() {
    let fake = FaultInjectingTokenEndpoint::start(Some(
        "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/steal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    ));
    let (_d, n, _s) = setup(&fake.url());
    let e = refresh_error(&n, RefreshOutcome::NeedsAdminFix);
    assert!(e.contains("HTTP 302"), "{e}");
}

#[test]
fn missing_expires_in_is_not_cached() {
    let fake = FaultInjectingTokenEndpoint::start(Some(http(
        "200 OK",
        "application/json",
        "{\"access_token\":\"at-without-expiry\",\"token_type\":\"Bearer\"}",
    )));
    let (_d, n, s) = setup(&fake.url());
    let r = n.refresh_targets().unwrap();
    assert_eq!(r[0].outcome, RefreshOutcome::Refreshed, "{:?}", r[0].error);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.oauth2_state_file("faulty")).unwrap()).unwrap();
    assert!(
        v.get("access_token").is_none(),
        "a token of unknown lifetime is not cached: {v}"
    );
    assert_eq!(v["refresh_token"], RT);
}

#[test]
fn provider_error_description_is_scrubbed_of_secrets() {
    let body = format!("{{\"error\":\"invalid_client\",\"error_description\":\"bad secret {CLIENT_SECRET} for token {RT}\"}}");
    let fake = FaultInjectingTokenEndpoint::start(Some(http(
        "401 Unauthorized",
        "application/json",
        &body,
    )));
    let (_d, n, _s) = setup(&fake.url());
    let e = refresh_error(&n, RefreshOutcome::NeedsAdminFix);
    assert!(
        e.contains("invalid_client") && e.contains("check oauth2-client-id") && e.contains("***"),
        "{e}"
    );
}

#[test]
fn corrupt_state_is_reported_and_left_untouched() {
    let (_d, n, s) = setup("https://idp.example.com/token");
    std::fs::write(s.oauth2_state_file("faulty"), b"{ not json").unwrap();
    let err = n.target_status("faulty").unwrap_err().to_string();
    assert!(
        err.contains("corrupt") && err.contains("left untouched"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(s.oauth2_state_file("faulty")).unwrap(),
        b"{ not json"
    );
}
