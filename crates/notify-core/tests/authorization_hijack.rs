//! Issue 17 item 2, "authorization hijack": a named provider's endpoints are pinned to its
//! hosts (sovereign clouds included; others only through root's setting), a device
//! endpoint's verification URL must be on the provider's hosts, a pending authorization is
//! bound to the registration it was started for, and begin answers say what is being
//! authorized (client ID, scope, hosts).
//!
//! The provider is `CannedProvider`, a STAND-IN answering token and device requests in
//! memory: what matters here is which requests are made at all, and what is done with the
//! device answer; the real flows run against the rig in rig_oauth2.rs / rig_flows.rs.

use notify_core::config::smtp::OAuth2Flow;
use notify_core::config::ConfigLock;
use notify_core::oauth2::{HttpError, TokenHttpClient};
use notify_core::*;
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex};

/// STAND-IN provider: answers a device authorization request with `device` and any other
/// request with a token response; records every URL asked.
struct CannedProvider {
    device: Mutex<Value>,
    asked: Mutex<Vec<String>>,
}

impl CannedProvider {
    fn new() -> Arc<Self> {
        Arc::new(CannedProvider {
            device: Mutex::new(device_answer(
                "https://microsoft.com/devicelogin",
                "ABCD-EFGH",
            )),
            asked: Mutex::new(Vec::new()),
        })
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

fn device_answer(uri: &str, code: &str) -> Value {
    json!({ "device_code": "dev-code-1", "user_code": code, "verification_uri": uri,
            "expires_in": 900, "interval": 1 })
}

impl TokenHttpClient for CannedProvider {
    fn call(&self, req: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, HttpError> {
        let uri = req.uri().to_string();
        self.asked.lock().unwrap().push(uri.clone());
        let body = if uri.contains("devicecode") || uri.contains("/device") {
            self.device.lock().unwrap().to_string()
        } else {
            json!({ "access_token": "at-1", "token_type": "Bearer", "expires_in": 3600,
                    "refresh_token": "rt-1" })
            .to_string()
        };
        Ok(::oauth2::http::Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(body.into_bytes())
            .unwrap())
    }
}

fn setup(extra_hosts: &[&str]) -> (tempfile::TempDir, Notifier, Arc<CannedProvider>) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    s.provider_hosts = extra_hosts.iter().map(|h| h.to_string()).collect();
    let http = CannedProvider::new();
    let n = Notifier::with_http_client(s, http.clone());
    (dir, n, http)
}

const TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT: &str = "11111111-2222-3333-4444-555555555555";

fn params(extra: Value) -> Map<String, Value> {
    let mut m = json!({
        "name": "m365", "server": "smtp.office365.com", "from-address": "a@example.com",
        "mailto": ["b@example.com"], "auth-method": "microsoft-oauth2",
        "oauth2-client-id": CLIENT, "oauth2-tenant-id": TENANT,
    });
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    m.as_object().unwrap().clone()
}

/// Write `target` (and a client secret) to the config as a hand edit would.
fn put(n: &Notifier, target: &SmtpTarget) {
    let lock = ConfigLock::acquire(n.settings()).unwrap();
    let mut cfg = NotificationConfig::load(n.settings()).unwrap();
    let secrets = SmtpSecrets {
        oauth2_client_secret: Some(Secret::new("client-secret-1")),
        ..Default::default()
    };
    if cfg.smtp_target(&target.name).is_ok() {
        cfg.update_smtp_target(target, &secrets).unwrap();
    } else {
        cfg.add_smtp_target(target, &secrets).unwrap();
    }
    cfg.save(n.settings(), &lock).unwrap();
}

fn microsoft(name: &str) -> SmtpTarget {
    let mut t = SmtpTarget::new(
        name,
        "smtp.office365.com",
        "a@example.com",
        vec!["b@example.com".into()],
    );
    t.auth_method = AuthMethod::MicrosoftOAuth2;
    t.oauth2_client_id = Some(CLIENT.into());
    t.oauth2_tenant_id = Some(TENANT.into());
    t
}

#[test]
fn named_providers_endpoints_are_pinned_to_their_hosts() {
    let (_d, n, http) = setup(&[]);
    for (key, url) in [
        ("oauth2-token-url", "https://evil.example/token"),
        (
            "oauth2-authorize-url",
            "https://login.microsoftonline.com.evil.example/authorize",
        ),
        (
            "oauth2-device-authorize-url",
            "https://evil.example/devicecode",
        ),
    ] {
        let mut p = params(json!({ key: url }));
        if key == "oauth2-device-authorize-url" {
            p.insert("oauth2-flow".into(), json!("device-code"));
        }
        let err = api::create_target(&n, &p).unwrap_err();
        assert_eq!(err.http_code(), 400, "{key}: {err}");
        let m = err.to_string();
        assert!(
            m.contains("login.microsoftonline.com") && m.contains("OXNOTIFY_ALLOW_PROVIDER_HOSTS"),
            "{key}: {m}"
        );
    }
    let google = json!({ "auth-method": "google-oauth2", "oauth2-tenant-id": null,
                         "oauth2-token-url": "https://oauth2.evil.example/token" });
    let mut g = params(google);
    g.remove("oauth2-tenant-id");
    let err = api::create_target(&n, &g).unwrap_err();
    assert!(err.to_string().contains("oauth2.googleapis.com"), "{err}");
    assert!(NotificationConfig::load(n.settings())
        .unwrap()
        .smtp_target_names()
        .is_empty());

    // the sovereign clouds are the provider's own hosts
    for (i, host) in [
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    ]
    .iter()
    .enumerate()
    {
        let mut p = params(json!({
            "oauth2-token-url": format!("https://{host}/{{tenant}}/oauth2/v2.0/token"),
            "oauth2-authorize-url": format!("https://{host}/{{tenant}}/oauth2/v2.0/authorize"),
        }));
        p.insert("name".into(), json!(format!("cloud{i}")));
        api::create_target(&n, &p).unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    // a host root allows through the environment's setting (never a parameter)
    let (_d2, n2, _) = setup(&["idp.example"]);
    api::create_target(
        &n2,
        &params(json!({ "oauth2-token-url": "https://idp.example/token" })),
    )
    .unwrap();

    // a hand edit cannot get around the pin: nothing is asked of the host
    let mut t = microsoft("edited");
    t.oauth2_token_url = Some("https://evil.example/token".into());
    put(&n, &t);
    n.authorization()
        .store_refresh_token(&t, Secret::new("stored-refresh-token"))
        .unwrap();
    let secrets = NotificationConfig::load(n.settings())
        .unwrap()
        .smtp_secrets("edited")
        .unwrap();
    let err = n.tokens().refresh(&t, &secrets).unwrap_err();
    assert!(err.to_string().contains("evil.example"), "{err}");
    assert!(n
        .authorization()
        .begin("edited", "http://127.0.0.1:1/cb")
        .is_err());
    assert!(http.asked().is_empty(), "{:?}", http.asked());
}

#[test]
fn device_answers_that_point_elsewhere_are_refused() {
    let (_d, n, http) = setup(&[]);
    let mut t = microsoft("dev");
    t.oauth2_flow = Some(OAuth2Flow::DeviceCode);
    put(&n, &t);
    for (uri, code) in [
        ("https://evil.example/devicelogin", "ABCD-EFGH"),
        (
            "https://microsoft.com.evil.example/devicelogin",
            "ABCD-EFGH",
        ),
        ("http://microsoft.com/devicelogin", "ABCD-EFGH"),
        ("https://microsoft.com/devicelogin", "ABCD\u{1b}[2J"),
    ] {
        *http.device.lock().unwrap() = device_answer(uri, code);
        let err = n.authorization().device_begin("dev").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NeedsAdminFix, "{uri}: {err}");
        let m = err.to_string();
        assert!(
            m.contains("target 'dev'")
                && m.contains("oauth2-device-authorize-url")
                && !m.contains("/devicelogin")
                && !m.contains('\u{1b}'),
            "{uri}: {m}"
        );
    }
    for uri in [
        "https://microsoft.com/devicelogin",
        "https://www.microsoft.com/deviceloginus",
        "https://login.microsoft.com/device",
        "https://login.microsoftonline.us/common/oauth2/deviceauth",
    ] {
        *http.device.lock().unwrap() = device_answer(uri, "ABCD-EFGH");
        let v = n
            .authorization()
            .device_begin("dev")
            .unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert_eq!(v["verification_uri"], uri);
        assert_eq!(v["client-id"], CLIENT);
        assert_eq!(
            v["scope"],
            "https://outlook.office.com/SMTP.Send offline_access"
        );
        assert_eq!(v["authorize-host"], "login.microsoftonline.com");
        assert_eq!(v["token-host"], "login.microsoftonline.com");
    }
    // the generic provider: the device endpoint's own host
    let mut g = SmtpTarget::new(
        "gen",
        "mail.example.com",
        "a@example.com",
        vec!["b@example.com".into()],
    );
    g.auth_method = AuthMethod::OAuth2;
    g.oauth2_client_id = Some("cid".into());
    g.oauth2_flow = Some(OAuth2Flow::DeviceCode);
    g.oauth2_token_url = Some("https://idp.example/token".into());
    g.oauth2_device_authorize_url = Some("https://idp.example/device".into());
    g.oauth2_scope = Some("smtp offline_access".into());
    put(&n, &g);
    *http.device.lock().unwrap() = device_answer("https://idp.example/verify", "WXYZ");
    let v = n.authorization().device_begin("gen").unwrap();
    assert_eq!(v["authorize-host"], "idp.example");
    *http.device.lock().unwrap() = device_answer("https://other.example/verify", "WXYZ");
    let err = n.authorization().device_begin("gen").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NeedsAdminFix, "{err}");
}

#[test]
fn a_pending_authorization_completes_only_for_the_registration_it_was_started_for() {
    let (_d, n, http) = setup(&["idp.example"]);
    let t = microsoft("m365");
    put(&n, &t);
    let begun = n
        .authorization()
        .begin("m365", "http://127.0.0.1:1/cb")
        .unwrap();
    // what the admin is about to authorize
    assert_eq!(begun["client-id"], CLIENT);
    assert_eq!(
        begun["scope"],
        "https://outlook.office.com/SMTP.Send offline_access"
    );
    assert_eq!(begun["authorize-host"], "login.microsoftonline.com");
    assert_eq!(begun["token-host"], "login.microsoftonline.com");
    // someone with an edit right repoints the token URL during the 10 minutes
    let mut repointed = t.clone();
    repointed.oauth2_token_url = Some("https://idp.example/token".into());
    put(&n, &repointed);
    let err = n
        .authorization()
        .complete(begun["state"].as_str().unwrap(), "the-code", Some("m365"))
        .unwrap_err();
    assert_eq!(err.http_code(), 400);
    let m = err.to_string();
    assert!(
        m.contains("target 'm365'") && m.contains("changed after this authorization was started"),
        "{m}"
    );
    assert!(
        http.asked().is_empty(),
        "the code went to {:?}",
        http.asked()
    );

    // unchanged, it completes
    put(&n, &t);
    let begun = n
        .authorization()
        .begin("m365", "http://127.0.0.1:1/cb")
        .unwrap();
    assert_eq!(
        n.authorization()
            .complete(begun["state"].as_str().unwrap(), "the-code", None)
            .unwrap(),
        "m365"
    );
    assert_eq!(http.asked().len(), 1);
    assert!(http.asked()[0].starts_with("https://login.microsoftonline.com/"));

    // the device flow: a device code is not polled for at a changed registration either
    let mut d = microsoft("dev");
    d.oauth2_flow = Some(OAuth2Flow::DeviceCode);
    put(&n, &d);
    let begun = n.authorization().device_begin("dev").unwrap();
    let mut changed = d.clone();
    changed.oauth2_tenant_id = Some("fabrikam.onmicrosoft.com".into());
    put(&n, &changed);
    let asked_before = http.asked().len();
    let err = n
        .authorization()
        .device_complete(
            begun["handle"].as_str().unwrap(),
            None,
            std::time::Duration::from_secs(1),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("changed after this authorization was started"),
        "{err}"
    );
    assert_eq!(http.asked().len(), asked_before);
}
