//! The broker over a real UNIX socket, without the rig: a cached token is served without any
//! token request; when the token endpoint never answers or another process holds the
//! target's lock, the answer is an `ERR transient` line by the broker's deadline, not a hang.
//! (Real MTAs, peer refusal and revocation: perl/t/85-broker.t with the rig.)

use notify_broker::server::{self, Broker};
use notify_core::config::ConfigLock;
use notify_core::oauth2::{TokenSet, UreqClient};
use notify_core::state::StateStore;
use notify_core::tokens::TokenManager;
use notify_core::{AuthMethod, NotificationConfig, Secret, Settings, SmtpSecrets, SmtpTarget};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADDRESS: &str = "relay@example.com";
const TOKEN: &str = "AT-cached-0123456789abcdef";

/// A token endpoint that accepts connections and never answers (a hung provider).
struct FaultInjectingSilentEndpoint {
    listener: TcpListener,
}

impl FaultInjectingSilentEndpoint {
    fn start() -> Self {
        FaultInjectingSilentEndpoint {
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
        }
    }
    fn url(&self) -> String {
        format!("http://{}/token", self.listener.local_addr().unwrap())
    }
}

struct Env {
    _dir: tempfile::TempDir,
    settings: Settings,
    socket: PathBuf,
    target: SmtpTarget,
}

fn setup(token_url: &str, deadline: Duration) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    let target = SmtpTarget {
        auth_method: AuthMethod::OAuth2,
        port: Some(587),
        mode: notify_core::SmtpMode::Starttls,
        oauth2_client_id: Some("cid".into()),
        oauth2_token_url: Some(token_url.into()),
        oauth2_authorize_url: Some("http://127.0.0.1:9/auth".into()),
        oauth2_scope: Some("smtp".into()),
        ..SmtpTarget::new(
            "relay",
            "smtp.example.com",
            ADDRESS,
            vec!["ops@example.com".into()],
        )
    };
    let lock = ConfigLock::acquire(&settings).unwrap();
    let mut cfg = NotificationConfig::load(&settings).unwrap();
    cfg.add_smtp_target(&target, &SmtpSecrets::default())
        .unwrap();
    cfg.save(&settings, &lock).unwrap();
    drop(lock);
    let socket = dir.path().join("broker.sock");
    let listener = server::bind(&socket).unwrap();
    let broker = Arc::new(Broker::new(settings.clone(), deadline));
    std::thread::spawn(move || broker.serve(listener));
    Env {
        _dir: dir,
        settings,
        socket,
        target,
    }
}

fn authorize(env: &Env, expires_in: Option<Duration>) {
    let http = UreqClient::new(&env.settings).unwrap();
    TokenManager::new(&env.settings, &http)
        .store_authorization(
            &env.target,
            &TokenSet {
                access_token: Secret::new(TOKEN),
                expires_in,
                refresh_token: Some(Secret::new("RT-0123456789abcdef")),
            },
        )
        .unwrap();
}

/// One request; the answer, read with a generous bound so a hanging broker fails the test.
fn ask(env: &Env, line: &str) -> String {
    let mut c = UnixStream::connect(&env.socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(line.as_bytes()).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serves_the_cached_token_without_a_token_request() {
    // the token URL leads nowhere: any token request would fail
    let env = setup("http://127.0.0.1:9/token", Duration::from_secs(5));
    authorize(&env, Some(Duration::from_secs(3600)));
    assert_eq!(
        ask(&env, &format!("SMTP {ADDRESS}\n")),
        format!("user={ADDRESS}\x01auth=Bearer {TOKEN}\x01\x01")
    );
    assert_eq!(
        ask(&env, &format!("TOKEN {}", ADDRESS.to_uppercase())),
        TOKEN
    );
}

#[test]
fn a_hung_token_endpoint_is_a_transient_error_by_the_deadline() {
    let endpoint = FaultInjectingSilentEndpoint::start();
    let env = setup(&endpoint.url(), Duration::from_secs(2));
    authorize(&env, None); // no cached token: the broker must refresh
    let started = Instant::now();
    let answer = ask(&env, &format!("SMTP {ADDRESS}\n"));
    assert!(answer.starts_with("ERR transient "), "{answer}");
    assert!(answer.ends_with('\n') && answer.matches('\n').count() == 1);
    assert!(!answer.contains("RT-0123"), "{answer}");
    // the answer came from the broker's deadline, not from the client's 30 s bound
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_held_target_lock_is_a_transient_error_by_the_deadline() {
    let env = setup("http://127.0.0.1:9/token", Duration::from_secs(2));
    authorize(&env, Some(Duration::from_secs(3600)));
    let store = StateStore::new(&env.settings);
    let _held = store
        .lock_until("relay", Instant::now() + Duration::from_secs(1))
        .unwrap();
    let answer = ask(&env, &format!("SMTP {ADDRESS}\n"));
    assert!(answer.starts_with("ERR transient "), "{answer}");
    assert!(!answer.contains(TOKEN));
}

#[test]
fn an_unknown_address_names_invalid_targets_the_admin_may_have_meant() {
    let env = setup("http://127.0.0.1:9/token", Duration::from_secs(2));
    assert!(ask(&env, "TOKEN other@example.com\n").starts_with("ERR not-found "));
    let mut cfg = std::fs::read_to_string(env.settings.config_file()).unwrap();
    cfg.push_str("\nsmtp: broken\n\tserver smtp.example.com\n\tmailto ops@example.com\n");
    std::fs::write(env.settings.config_file(), cfg).unwrap();
    let answer = ask(&env, "TOKEN other@example.com\n");
    assert!(answer.starts_with("ERR needs-admin-fix "), "{answer}");
    assert!(answer.contains("invalid targets (broken)"), "{answer}");
}
