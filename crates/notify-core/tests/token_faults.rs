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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the fake answers to one request.
#[derive(Clone)]
enum Reply {
    /// This raw HTTP response.
    Raw(String),
    /// Nothing: keep the connection open and say nothing.
    Hang,
    /// A response built from the request as received (a server echoing it back).
    Echo(fn(&str) -> String),
}

/// FAKE token endpoint for fault injection: answers the n-th request with `replies[n]` (the
/// last one repeats), records each request and when it came. Loopback only; stopped on drop.
struct FaultInjectingTokenEndpoint {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl FaultInjectingTokenEndpoint {
    fn start(response: Option<String>) -> Self {
        Self::replies(vec![match response {
            Some(r) => Reply::Raw(r),
            None => Reply::Hang,
        }])
    }

    fn replies(replies: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (flag, log) = (stop.clone(), requests.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_millis(300)))
                            .unwrap();
                        let request = read_request(&mut s);
                        let n = {
                            let mut l = log.lock().unwrap();
                            l.push((Instant::now(), request.clone()));
                            l.len() - 1
                        };
                        match &replies[n.min(replies.len() - 1)] {
                            Reply::Raw(r) => {
                                let _ = s.write_all(r.as_bytes());
                            }
                            Reply::Echo(f) => {
                                let _ = s.write_all(f(&request).as_bytes());
                            }
                            Reply::Hang => held.push(s),
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultInjectingTokenEndpoint {
            port,
            stop,
            requests,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    fn requests(&self) -> Vec<(Instant, String)> {
        self.requests.lock().unwrap().clone()
    }
}

/// Headers and body (by Content-Length) of one request, as text.
fn read_request(s: &mut std::net::TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&data).to_string()
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
    setup_as(AuthMethod::OAuth2, token_url)
}

/// The same for a target of auth method `method` (its token URL overridden).
fn setup_as(method: AuthMethod, token_url: &str) -> (tempfile::TempDir, Notifier, Settings) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    settings.http_timeout = Duration::from_secs(2);
    let target = SmtpTarget {
        port: Some(1),
        mode: SmtpMode::Starttls,
        auth_method: method,
        oauth2_client_id: Some("cid".into()),
        oauth2_token_url: Some(token_url.into()),
        oauth2_scope: (method == AuthMethod::OAuth2).then(|| "smtp".into()),
        broker_allow: Default::default(),
        oauth2_tenant_id: (method == AuthMethod::MicrosoftOAuth2)
            .then(|| "11111111-2222-3333-4444-555555555555".into()),
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
            oauth2_private_key: None,
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
    let r = n.refresh().all().unwrap();
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
    let st = n.status().target("faulty").unwrap();
    let last = st.last_error.unwrap();
    assert!(last.message.contains("HTTP 500"));
    assert_eq!(last.kind, Some(ErrorKind::Transient));
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
    let r = n.refresh().all().unwrap();
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
    let err = n.status().target("faulty").unwrap_err().to_string();
    assert!(
        err.contains("corrupt") && err.contains("left untouched"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(s.oauth2_state_file("faulty")).unwrap(),
        b"{ not json"
    );
}

/// An Entra error response exactly as Microsoft documents it (JSON with `error`,
/// `error_description` starting with the AADSTS code, `error_codes`, `timestamp`, `trace_id`,
/// `correlation_id`).
fn entra(status: &str, error: &str, code: u32, text: &str) -> String {
    let body = serde_json::json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {text} Trace ID: 0b4f2e0c-1111-2222-3333-444455556666 Correlation ID: 5f7d0c1e-aaaa-bbbb-cccc-ddddeeeeffff Timestamp: 2026-11-23 02:00:00Z"),
        "error_codes": [code],
        "timestamp": "2026-11-23 02:00:00Z",
        "trace_id": "0b4f2e0c-1111-2222-3333-444455556666",
        "correlation_id": "5f7d0c1e-aaaa-bbbb-cccc-ddddeeeeffff",
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    http(status, "application/json; charset=utf-8", &body.to_string())
}

#[test]
fn entra_errors_get_their_kind_and_hint() {
    use RefreshOutcome::*;
    let cases: Vec<(String, RefreshOutcome, &str)> = vec![
        (entra("400 Bad Request", "invalid_grant", 700082, "The refresh token has expired due to inactivity."), NeedsReauthorization, "90 days without use"),
        (entra("400 Bad Request", "invalid_grant", 50173, "The provided grant has expired due to it being revoked."), NeedsReauthorization, "revoked"),
        (entra("401 Unauthorized", "invalid_client", 7000215, "Invalid client secret provided."), NeedsAdminFix, "Value, not its ID"),
        (entra("401 Unauthorized", "invalid_client", 7000222, "The provided client secret keys for app are expired."), NeedsAdminFix, "has expired: create a new one"),
        (entra("400 Bad Request", "invalid_grant", 65001, "The user or administrator has not consented to use the application."), NeedsReauthorization, "admin must grant consent"),
        (entra("400 Bad Request", "interaction_required", 50076, "Due to a configuration change made by your administrator, you must use multi-factor authentication."), NeedsReauthorization, "Conditional Access or MFA"),
        (entra("400 Bad Request", "invalid_request", 90002, "Tenant 'x' not found."), NeedsAdminFix, "check oauth2-tenant-id"),
        (entra("400 Bad Request", "invalid_request", 9002327, "Tokens issued for the 'Single-Page Application' client-type may only be redeemed via cross-origin requests."), NeedsAdminFix, "under 'Web'"),
        (entra("503 Service Unavailable", "temporarily_unavailable", 90055, "The request has been throttled."), Transient, "will retry"),
    ];
    for (response, outcome, hint) in cases {
        let fake = FaultInjectingTokenEndpoint::start(Some(response));
        let (_d, n, s) = setup_as(AuthMethod::MicrosoftOAuth2, &fake.url());
        let e = refresh_error(&n, outcome);
        assert!(e.contains(hint), "expected '{hint}' in: {e}");
        assert_eq!(state_rt(&s), RT, "the stored token is kept");
    }
}

#[test]
fn google_revoked_token_gets_the_testing_status_hint() {
    let fake = FaultInjectingTokenEndpoint::start(Some(http(
        "400 Bad Request",
        "application/json",
        r#"{"error": "invalid_grant", "error_description": "Token has been expired or revoked."}"#,
    )));
    let (_d, n, s) = setup_as(AuthMethod::GoogleOAuth2, &fake.url());
    let e = refresh_error(&n, RefreshOutcome::NeedsReauthorization);
    assert!(e.contains("'Testing' status"), "{e}");
    assert_eq!(state_rt(&s), RT);
    let st = n.status().target("faulty").unwrap();
    assert!(st.needs_reauthorization);
}

const OK: &str = r#"{"access_token":"new-access-token","token_type":"Bearer","expires_in":3600}"#;

#[test]
fn transient_token_errors_are_retried_within_the_deadline() {
    let outage = http("503 Service Unavailable", "text/html", "<html>down</html>");
    let fake = FaultInjectingTokenEndpoint::replies(vec![
        Reply::Raw(outage.clone()),
        Reply::Raw(outage),
        Reply::Raw(http("200 OK", "application/json", OK)),
    ]);
    let (_d, n, _s) = setup(&fake.url());
    let r = n.refresh().all().unwrap();
    assert_eq!(r[0].outcome, RefreshOutcome::Refreshed, "{:?}", r[0].error);
    assert_eq!(fake.requests().len(), 3);
}

#[test]
fn retry_after_is_honoured() {
    let fake = FaultInjectingTokenEndpoint::replies(vec![
        Reply::Raw("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()),
        Reply::Raw(http("200 OK", "application/json", OK)),
    ]);
    let (_d, n, _s) = setup(&fake.url());
    let r = n.refresh().all().unwrap();
    assert_eq!(r[0].outcome, RefreshOutcome::Refreshed, "{:?}", r[0].error);
    let req = fake.requests();
    assert_eq!(req.len(), 2);
    let gap = req[1].0 - req[0].0;
    assert!(gap >= Duration::from_millis(950), "waited only {gap:?}");
}

#[test]
fn permanent_token_errors_are_not_retried() {
    let fake = FaultInjectingTokenEndpoint::start(Some(entra(
        "401 Unauthorized",
        "invalid_client",
        7000215,
        "Invalid client secret provided.",
    )));
    let (_d, n, _s) = setup_as(AuthMethod::MicrosoftOAuth2, &fake.url());
    refresh_error(&n, RefreshOutcome::NeedsAdminFix);
    assert_eq!(fake.requests().len(), 1);
}

#[test]
fn retries_stop_at_the_deadline() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_d, n, _s) = setup(&format!("http://127.0.0.1:{port}/token"));
    let t0 = Instant::now();
    refresh_error(&n, RefreshOutcome::Transient);
    // 2 s deadline (setup); retries at 0.5 s, 1 s, ... must not run past it
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn refresh_requests_carry_the_scope() {
    let fake = FaultInjectingTokenEndpoint::start(Some(http("200 OK", "application/json", OK)));
    let (_d, n, _s) = setup_as(AuthMethod::MicrosoftOAuth2, &fake.url());
    let r = n.refresh().all().unwrap();
    assert_eq!(r[0].outcome, RefreshOutcome::Refreshed, "{:?}", r[0].error);
    let body = fake.requests()[0].1.clone();
    assert!(
        body.contains("scope=https%3A%2F%2Foutlook.office.com%2FSMTP.Send+offline_access"),
        "{body}"
    );
}

/// A token endpoint that echoes the whole request (form body with the refresh token and the
/// client secret, and the `Authorization: Basic` header) in its error description.
#[test]
fn a_token_endpoint_echoing_the_request_leaks_no_secret() {
    fn echo(request: &str) -> String {
        let body = serde_json::json!({ "error": "invalid_request", "error_description": request });
        http("400 Bad Request", "application/json", &body.to_string())
    }
    let fake = FaultInjectingTokenEndpoint::replies(vec![Reply::Echo(echo)]);
    let (_d, n, _s) = setup(&fake.url());
    let e = refresh_error(&n, RefreshOutcome::NeedsAdminFix);
    let request = fake.requests()[0].1.clone();
    assert!(
        request.contains("Authorization: Basic") || request.contains("authorization: Basic"),
        "{request}"
    );
    let b64 = |v: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(v)
    };
    let forms = [
        RT.to_string(),
        CLIENT_SECRET.to_string(),
        b64(&format!("cid:{CLIENT_SECRET}")),
        b64(CLIENT_SECRET).trim_end_matches('=').to_string(),
    ];
    for f in &forms {
        assert!(!e.contains(f.as_str()), "leaked {f} in: {e}");
    }
    assert!(!e.contains('\n') && !e.contains('\r'), "{e}");
    assert!(
        e.chars().count() < 1000,
        "not capped: {} chars",
        e.chars().count()
    );
    // the state's last_error (readable by the audit role via oauth2-status) is as clean
    let st = n.status().target("faulty").unwrap();
    let last = st.last_error.unwrap().message;
    for f in &forms {
        assert!(
            !last.contains(f.as_str()),
            "leaked {f} in last_error: {last}"
        );
    }
}

/// The daily job must not hold the config lock through its token requests: an admin's edit
/// (or a second daily run's config read) would wait for the slowest token endpoint.
#[test]
fn the_daily_refresh_holds_the_config_lock_only_while_reading() {
    let fake = FaultInjectingTokenEndpoint::start(None); // hangs until the 2 s timeout
    let (_d, n, mut s) = setup(&fake.url());
    s.lock_timeout = Duration::from_millis(500);
    std::thread::scope(|scope| {
        let daily = scope.spawn(|| n.refresh().locked(Duration::from_secs(1)));
        // wait until the token request is under way, then edit the config
        let t0 = Instant::now();
        while fake.requests().is_empty() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!fake.requests().is_empty(), "the refresh never started");
        let lock = ConfigLock::acquire(&s);
        assert!(
            lock.is_ok(),
            "the config lock is held by the daily refresh: {lock:?}"
        );
        drop(lock);
        // a second daily run meanwhile gives up cleanly
        let second = n.refresh().locked(Duration::from_millis(200)).unwrap();
        assert!(second.busy);
        let run = daily.join().unwrap().unwrap();
        assert!(!run.busy);
        assert_eq!(run.reports[0].outcome, RefreshOutcome::Transient);
    });
}

/// A target of flow `flow` at the fake endpoint; `secrets` as given.
fn setup_flow(
    token_url: &str,
    edit: impl FnOnce(&mut SmtpTarget),
    secrets: SmtpSecrets,
) -> (tempfile::TempDir, Notifier) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    settings.http_timeout = Duration::from_secs(2);
    let mut target = SmtpTarget {
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
    edit(&mut target);
    let lock = ConfigLock::acquire(&settings).unwrap();
    let mut cfg = NotificationConfig::load(&settings).unwrap();
    cfg.add_smtp_target(&target, &secrets).unwrap();
    cfg.save(&settings, &lock).unwrap();
    drop(lock);
    let n = Notifier::new(settings).unwrap();
    (dir, n)
}

/// A throwaway RSA key (PEM) in the one-line form oxnotify stores.
fn test_key() -> (Secret, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let pem = std::fs::read_to_string(&path).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let stored = notify_core::oauth2::private_key::parse_input(&pem)
        .unwrap()
        .stored;
    (stored, body)
}

/// The value of form field `name` in a captured request.
fn form_field(request: &str, name: &str) -> String {
    let body = request.split("\r\n\r\n").nth(1).unwrap_or_default();
    url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {request}"))
}

/// Echo only the form body, secrets first (headers would push them past the message cap).
fn echo_request(request: &str) -> String {
    let form = request.split("\r\n\r\n").nth(1).unwrap_or_default();
    let mut fields: Vec<&str> = form.split('&').collect();
    fields.sort_by_key(|f| {
        !(f.starts_with("assertion=")
            || f.starts_with("client_assertion=")
            || f.starts_with("password="))
    });
    let body =
        serde_json::json!({ "error": "invalid_grant", "error_description": fields.join(" ") });
    http("400 Bad Request", "application/json", &body.to_string())
}

/// Whatever an endpoint echoes of the service-account assertion, the private key or the
/// password and client assertion of the other modes, it is not in the error or the state.
#[test]
fn token_endpoints_echoing_assertions_keys_and_passwords_leak_nothing() {
    let (key, key_body) = test_key();
    type Case = (
        &'static str,
        fn(&mut SmtpTarget),
        &'static str, // the form field carrying a secret
    );
    let cases: [Case; 3] = [
        (
            "service-account",
            |t| {
                t.oauth2_flow = Some(config::smtp::OAuth2Flow::ServiceAccount);
                t.oauth2_service_account = Some("sa@p.iam.gserviceaccount.com".into());
                t.oauth2_client_id = None;
            },
            "assertion",
        ),
        (
            "private-key-jwt",
            |t| {
                t.oauth2_flow = Some(config::smtp::OAuth2Flow::ClientCredentials);
                t.oauth2_client_auth = Some(config::smtp::ClientAuthMethod::PrivateKeyJwt);
                t.oauth2_key_id = Some("k1".into());
            },
            "client_assertion",
        ),
        (
            "password",
            |t| t.oauth2_flow = Some(config::smtp::OAuth2Flow::Password),
            "password",
        ),
    ];
    for (what, edit, field) in cases {
        let fake = FaultInjectingTokenEndpoint::replies(vec![Reply::Echo(echo_request)]);
        let secrets = if field == "password" {
            SmtpSecrets {
                password: Some(Secret::new("ropc-Password-0123456789")),
                ..Default::default()
            }
        } else {
            SmtpSecrets {
                oauth2_private_key: Some(key.clone()),
                ..Default::default()
            }
        };
        let (_d, n) = setup_flow(&fake.url(), edit, secrets);
        let r = n.refresh().all().unwrap();
        assert_eq!(r[0].outcome, RefreshOutcome::NeedsAdminFix, "{what}: {r:?}");
        let e = r[0].error.clone().unwrap();
        let secret = form_field(&fake.requests()[0].1, field);
        let mut forms = vec![secret.clone(), key_body[..40].to_string()];
        if field != "password" {
            forms.push(secret.rsplit('.').next().unwrap()[..40].to_string());
        }
        let status = serde_json::to_string(&n.status().target("faulty").unwrap()).unwrap();
        for f in &forms {
            assert!(!e.contains(f.as_str()), "{what}: leaked {f} in: {e}");
            assert!(
                !status.contains(f.as_str()),
                "{what}: leaked {f} in: {status}"
            );
        }
    }
}
