//! Shared test harness: the real rig (oidc-provider + Dovecot + aiosmtpd, started by
//! `scripts/rig/start-rig.sh`, see `make test`), temp config/state dirs, target helpers, and a
//! counting wrapper around the real HTTP client.
#![allow(dead_code)]

pub mod capture;
pub mod counting_proxy;

use notify_core::config::ConfigLock;
use notify_core::oauth2::{HttpError, TokenHttpClient, UreqClient};
use notify_core::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The running rig, from the `RIG_*` environment `start-rig.sh` prints.
pub struct Rig {
    pub issuer: String,
    pub smtp_host: String,
    pub starttls_port: u16,
    pub tls_port: u16,
    pub sink_port: u16,
    pub maildir: PathBuf,
    pub pf_starttls_port: Option<u16>,
    pub plain_user: String,
    pub plain_password: String,
    pub driver: PathBuf,
}

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| {
        panic!("{k} is not set: these tests need the rig; run `make test`, or `eval \"$(scripts/rig/start-rig.sh /tmp/rig.x)\"` and export SSL_CERT_FILE=$RIG_CA_FILE")
    })
}

impl Rig {
    pub fn get() -> Rig {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        assert_eq!(
            std::env::var("SSL_CERT_FILE").ok(),
            Some(env("RIG_CA_FILE")),
            "SSL_CERT_FILE must point to the rig CA ($RIG_CA_FILE)"
        );
        Rig {
            issuer: env("RIG_ISSUER"),
            smtp_host: "localhost".into(),
            starttls_port: env("RIG_SMTP_STARTTLS_PORT").parse().unwrap(),
            tls_port: env("RIG_SMTP_TLS_PORT").parse().unwrap(),
            sink_port: env("RIG_SINK_PORT").parse().unwrap(),
            maildir: PathBuf::from(env("RIG_MAILDIR")),
            pf_starttls_port: std::env::var("RIG_PF_STARTTLS_PORT")
                .ok()
                .and_then(|p| p.parse().ok()),
            plain_user: env("RIG_PLAIN_USER"),
            plain_password: env("RIG_PLAIN_PASSWORD"),
            driver: root.join("scripts/rig/oauth_driver.py"),
        }
    }

    fn driver(&self, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg(&self.driver)
            .arg(&self.issuer)
            .args(args)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "oauth_driver {:?} failed: {}",
            args.first(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Act as the user's browser: log in as `user` and consent at `authorize_url`, return the
    /// `(code, state)` from the redirect.
    pub fn login_and_consent(&self, user: &str, authorize_url: &str) -> (String, String) {
        let final_url = self.driver(&["browse", user, authorize_url, REDIRECT_URI]);
        let url = url::Url::parse(&final_url).unwrap();
        let get = |k: &str| {
            url.query_pairs()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_string())
        };
        (
            get("code").unwrap_or_else(|| panic!("no code in {final_url}")),
            get("state").unwrap(),
        )
    }

    /// RFC 7009 revocation of a token at the rig, as client `client_id`.
    pub fn revoke(&self, token: &str, client_id: &str) {
        let out = self.driver(&["revoke", token, client_id, "rig-secret"]);
        assert!(out.contains("200"), "revocation failed: {out}");
    }

    /// A token grant done by the driver itself (for tests that need a raw refresh token).
    pub fn raw_refresh(&self, refresh_token: &str, client_id: &str) -> serde_json::Value {
        serde_json::from_str(&self.driver(&["refresh", refresh_token, client_id, "rig-secret"]))
            .unwrap()
    }

    /// The message in the sink Maildir whose Subject contains `needle`, waiting up to 5 s.
    pub fn find_mail(&self, needle: &str) -> Option<String> {
        find_mail_in(&self.maildir, needle)
    }
}

pub fn find_mail_in(maildir: &Path, needle: &str) -> Option<String> {
    for _ in 0..50 {
        for dir in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(maildir.join(dir)) {
                for e in rd.flatten() {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    if text
                        .lines()
                        .any(|l| l.starts_with("Subject:") && l.contains(needle))
                    {
                        return Some(text);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// The rig stands in for Microsoft and Google on loopback: the hosts root would allow with
/// `OXNOTIFY_ALLOW_PROVIDER_HOSTS` (named providers' endpoints are pinned to their own hosts).
pub fn rig_provider_hosts() -> Vec<String> {
    vec!["127.0.0.1".into(), "localhost".into()]
}

/// The redirect URI registered at the rig (native client: any loopback port).
pub const REDIRECT_URI: &str = "http://127.0.0.1:47123/callback";

/// A unique-enough tag for subjects and users.
pub fn tag(name: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{}", std::process::id(), n % 1_000_000_000)
}

/// The real ureq client, counting the token requests that go through it.
pub struct CountingHttp {
    inner: UreqClient,
    pub count: AtomicUsize,
}

impl TokenHttpClient for CountingHttp {
    fn call(&self, request: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, HttpError> {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.inner.call(request)
    }
}

/// An isolated installation: temp config and state dirs.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub settings: Settings,
    pub http: Arc<CountingHttp>,
    pub notifier: Notifier,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
        settings.http_timeout = Duration::from_secs(5);
        settings.smtp_timeout = Duration::from_secs(10);
        // transient failures are retried until the delivery deadline: keep it short in tests
        // that provoke them (a closed port, a server that went away)
        settings.delivery_deadline = Duration::from_secs(8);
        settings.provider_hosts = rig_provider_hosts();
        Self::with_settings(dir, settings)
    }

    pub fn with_settings(dir: tempfile::TempDir, mut settings: Settings) -> Env {
        if settings.provider_hosts.is_empty() {
            settings.provider_hosts = rig_provider_hosts();
        }
        let http = Arc::new(CountingHttp {
            inner: UreqClient::new(&settings).unwrap(),
            count: AtomicUsize::new(0),
        });
        let notifier = Notifier::with_http_client(settings.clone(), http.clone());
        Env {
            dir,
            settings,
            http,
            notifier,
        }
    }

    /// A second notifier over the same files (another process, in effect).
    pub fn another_notifier(&self) -> Notifier {
        Notifier::new(self.settings.clone()).unwrap()
    }

    pub fn token_requests(&self) -> usize {
        self.http.count.load(Ordering::SeqCst)
    }

    pub fn add_target(&self, target: &SmtpTarget, secrets: &SmtpSecrets) {
        let lock = ConfigLock::acquire(&self.settings).unwrap();
        let mut cfg = NotificationConfig::load(&self.settings).unwrap();
        cfg.add_smtp_target(target, secrets).unwrap();
        cfg.save(&self.settings, &lock).unwrap();
    }

    pub fn state_json(&self, target: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.settings.oauth2_state_file(target)).unwrap())
            .unwrap()
    }

    pub fn write_state_json(&self, target: &str, v: &serde_json::Value) {
        std::fs::write(
            self.settings.oauth2_state_file(target),
            serde_json::to_vec(v).unwrap(),
        )
        .unwrap();
    }

    /// Authorize `target` like an admin would: authorize URL -> login/consent at the rig ->
    /// check state -> exchange the code (with the PKCE verifier) -> stored in the target's state.
    pub fn authorize(
        &self,
        rig: &Rig,
        target: &SmtpTarget,
        secrets: &SmtpSecrets,
        user: &str,
    ) -> Secret {
        let req = self
            .notifier
            .authorization()
            .authorize_url(&target.name, REDIRECT_URI)
            .unwrap();
        let (code, state) = rig.login_and_consent(user, req.url.as_str());
        assert_eq!(state, req.state, "state must round-trip");
        self.notifier
            .authorization()
            .exchange_code(&CodeExchange {
                auth_method: target.auth_method,
                client_id: target.oauth2_client_id.as_deref().unwrap(),
                client_secret: secrets.oauth2_client_secret.clone(),
                code: &code,
                redirect_uri: REDIRECT_URI,
                pkce_verifier: Some(req.pkce_verifier.clone()),
                endpoints: oauth2::EndpointParams::of_target(target),
                target: Some(&target.name),
            })
            .unwrap()
    }
}

/// A target skeleton for the rig's Dovecot (STARTTLS port).
pub fn base_target(rig: &Rig, name: &str, from: &str) -> SmtpTarget {
    SmtpTarget {
        port: Some(rig.starttls_port),
        mode: SmtpMode::Starttls,
        author: Some("oxnotify test".into()),
        ..SmtpTarget::new(
            name,
            &rig.smtp_host,
            from,
            vec!["ops@example.test".into(), "oncall@example.test".into()],
        )
    }
}

/// Microsoft-style target at the rig: rotating refresh tokens, client_secret_post.
pub fn microsoft_target(rig: &Rig, name: &str, from: &str) -> (SmtpTarget, SmtpSecrets) {
    let mut t = base_target(rig, name, from);
    t.auth_method = AuthMethod::MicrosoftOAuth2;
    t.oauth2_client_id = Some("rig-post".into());
    t.oauth2_tenant_id = Some("12345678-90ab-cdef-1234-567890abcdef".into());
    t.oauth2_authorize_url = Some(format!("{}/auth", rig.issuer));
    t.oauth2_token_url = Some(format!("{}/token", rig.issuer));
    (
        t,
        SmtpSecrets {
            password: None,
            oauth2_client_secret: Some(Secret::new("rig-secret")),
            oauth2_private_key: None,
        },
    )
}

/// Google-style target at the rig: the refresh token is refreshed in place.
pub fn google_target(rig: &Rig, name: &str, from: &str) -> (SmtpTarget, SmtpSecrets) {
    let mut t = base_target(rig, name, from);
    t.auth_method = AuthMethod::GoogleOAuth2;
    t.mode = SmtpMode::Tls;
    t.port = Some(rig.tls_port);
    t.oauth2_client_id = Some("rig-inplace".into());
    t.oauth2_authorize_url = Some(format!("{}/auth", rig.issuer));
    t.oauth2_token_url = Some(format!("{}/token", rig.issuer));
    (
        t,
        SmtpSecrets {
            password: None,
            oauth2_client_secret: Some(Secret::new("rig-secret")),
            oauth2_private_key: None,
        },
    )
}

pub fn note(title: &str) -> Notification {
    Notification {
        title: title.into(),
        body: "Backup job 42 failed on node pve1.\n".into(),
        severity: Severity::Error,
        fields: [("hostname".to_string(), "pve1".to_string())].into(),
        ..Default::default()
    }
}

/// A `RIG_*` variable the rig's start script exported.
pub fn rig_env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: start the rig"))
}

/// Create-request parameters of a Microsoft target at the rig (STARTTLS submission, the rig's
/// token endpoint standing in for Entra), with `extra` keys added or replaced.
pub fn microsoft_params(
    rig: &Rig,
    name: &str,
    from: &str,
    extra: serde_json::Value,
) -> serde_json::Map<String, serde_json::Value> {
    let mut v = serde_json::json!({
        "name": name,
        "server": rig.smtp_host,
        "port": rig.starttls_port,
        "mode": "starttls",
        "auth-method": "microsoft-oauth2",
        "oauth2-tenant-id": "12345678-90ab-cdef-1234-567890abcdef",
        "oauth2-token-url": format!("{}/token", rig.issuer),
        "from-address": from,
        "author": "oxnotify test",
        "mailto": ["ops@example.test"],
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v.as_object().unwrap().clone()
}

/// The keys of the rig's app registration with a certificate credential (client credentials,
/// `private_key_jwt`): merge them into [`microsoft_params`]' `extra`.
pub fn app_certificate_keys() -> serde_json::Value {
    serde_json::json!({
        "oauth2-flow": "client-credentials",
        "oauth2-client-auth": "private-key-jwt",
        "oauth2-client-id": rig_env("RIG_APP_JWT_CLIENT_ID"),
        "oauth2-key-id": rig_env("RIG_APP_JWT_KEY_ID"),
        "oauth2-certificate-thumbprint": "0123456789abcdef0123456789abcdef01234567",
        "oauth2-private-key": std::fs::read_to_string(rig_env("RIG_APP_JWT_KEY_FILE")).unwrap(),
    })
}
