//! The OAuth2 modes without an interactive authorization, against the real rig: Microsoft
//! app-only (client credentials at oidc-provider; its tokens carry the one mailbox the app was
//! granted, which Dovecot checks by introspection) and Google service accounts (the rig's
//! JWT-bearer grant extension, emulating Google's token endpoint). Each: create -> mint ->
//! send -> mail in the Maildir with the right From; the daily job; refused credentials with
//! the right kind and hint; no secret in any output.

mod common;
use common::*;
use notify_core::*;
use serde_json::{json, Map, Value};

/// A Microsoft app-only target at the rig (tenant and token URL point there).
fn app_only_target(rig: &Rig, name: &str, from: &str, secret: &str) -> (SmtpTarget, SmtpSecrets) {
    let mut t = base_target(rig, name, from);
    t.auth_method = AuthMethod::MicrosoftOAuth2;
    t.oauth2_flow = Some(config::smtp::OAuth2Flow::ClientCredentials);
    t.oauth2_client_id = Some(rig_env("RIG_APP_CLIENT_ID"));
    t.oauth2_tenant_id = Some("12345678-90ab-cdef-1234-567890abcdef".into());
    t.oauth2_token_url = Some(format!("{}/token", rig.issuer));
    (
        t,
        SmtpSecrets {
            oauth2_client_secret: Some(Secret::new(secret)),
            ..Default::default()
        },
    )
}

/// Create-request parameters of a Google service-account target from the rig's JSON key file.
fn service_account_params(rig: &Rig, name: &str, from: &str, key_file: &str) -> Map<String, Value> {
    let v = json!({
        "name": name,
        "server": rig.smtp_host,
        "port": rig.tls_port,
        "mode": "tls",
        "auth-method": "google-oauth2",
        "oauth2-flow": "service-account",
        "oauth2-token-url": format!("{}/token", rig.issuer),
        "from-address": from,
        "author": "oxnotify test",
        "mailto": ["ops@example.test"],
        "oauth2-private-key": key_file,
    });
    v.as_object().unwrap().clone()
}

fn assert_no_secret(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!s.is_empty());
        assert!(!text.contains(s), "a secret leaked into: {text}");
    }
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn microsoft_app_only_mints_caches_sends_and_the_daily_job_checks_it() {
    let rig = Rig::get();
    let env = Env::new();
    let mailbox = rig_env("RIG_APP_MAILBOX");
    let (t, s) = app_only_target(&rig, "app", &mailbox, &rig_env("RIG_APP_CLIENT_SECRET"));
    env.add_target(&t, &s);

    // nothing to authorize: the authorize URL is refused with the reason
    let e = env
        .notifier
        .authorization()
        .authorize_url("app", REDIRECT_URI)
        .unwrap_err();
    assert!(e.to_string().contains("minted on demand"), "{e}");

    let subject = tag("app-only");
    env.notifier
        .delivery()
        .send_to_target("app", &note(&subject))
        .unwrap();
    assert_eq!(env.token_requests(), 1, "one client-credentials request");
    let mail = rig.find_mail(&subject).expect("mail delivered");
    assert!(
        mail.contains(&format!("From: \"oxnotify test\" <{mailbox}>")),
        "{mail}"
    );
    // the rig's app-only tokens are 4500 characters (longer than 4 KB) and went through
    let st = env.state_json("app");
    assert!(st["access_token"].as_str().unwrap().len() > 4096, "{st}");
    assert!(st.get("refresh_token").is_none(), "no refresh token: {st}");

    // cached: the next send needs no token request
    env.notifier
        .delivery()
        .send_to_target("app", &note(&tag("app-only-2")))
        .unwrap();
    assert_eq!(env.token_requests(), 1);

    // the daily job mints one now, so a dead credential shows before a notification needs it
    let r = env.notifier.refresh().all().unwrap();
    assert_eq!(r[0].outcome, RefreshOutcome::Refreshed, "{:?}", r[0].error);
    assert_eq!(env.token_requests(), 2);
    let status = env.notifier.status().target("app").unwrap();
    assert!(status.authorized, "{status:?}");
    assert_eq!(status.warning, None, "{status:?}");
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn app_only_token_for_a_mailbox_the_app_was_not_granted_is_refused() {
    let rig = Rig::get();
    let env = Env::new();
    let (t, s) = app_only_target(
        &rig,
        "app-other",
        "not-granted@example.test",
        &rig_env("RIG_APP_CLIENT_SECRET"),
    );
    env.add_target(&t, &s);
    let e = env
        .notifier
        .delivery()
        .send_to_target("app-other", &note(&tag("app-other")))
        .unwrap_err();
    assert!(e.is_auth_rejected(), "{e:?}");
    assert!(!e.is_transient(), "{e:?}");
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn app_only_wrong_secret_needs_an_admin_fix_and_is_not_shown() {
    let rig = Rig::get();
    let env = Env::new();
    let wrong = "wrong-app-secret-0123456789";
    let (t, s) = app_only_target(&rig, "app-bad", &rig_env("RIG_APP_MAILBOX"), wrong);
    env.add_target(&t, &s);
    let e = env
        .notifier
        .delivery()
        .send_to_target("app-bad", &note(&tag("app-bad")))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NeedsAdminFix, "{e:?}");
    assert!(e.to_string().contains("invalid_client"), "{e}");
    let r = env.notifier.refresh().all().unwrap();
    assert_eq!(r[0].outcome, RefreshOutcome::NeedsAdminFix);
    let status = env.notifier.status().target("app-bad").unwrap();
    let warning = status.warning.clone().expect("a warning");
    assert!(warning.contains("token request failed"), "{warning}");
    let everything = format!(
        "{e} {e:?} {:?} {} {}",
        r,
        serde_json::to_string(&status).unwrap(),
        std::fs::read_to_string(env.settings.oauth2_state_file("app-bad")).unwrap()
    );
    assert_no_secret(&everything, &[wrong]);
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn google_service_account_from_its_json_key_file() {
    let rig = Rig::get();
    let env = Env::new();
    let key_file = std::fs::read_to_string(rig_env("RIG_SA_KEY_FILE")).unwrap();
    let key: Value = serde_json::from_str(&key_file).unwrap();
    let pem = key["private_key"].as_str().unwrap();
    let key_body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let from = "sa-mailbox@example.test";
    api::create_target(
        &env.notifier,
        &service_account_params(&rig, "sa", from, &key_file),
    )
    .unwrap();

    // the key file named the service account, its key ID and client ID
    let view = api::get_target(&env.notifier, "sa").unwrap();
    assert_eq!(view["oauth2-service-account"], key["client_email"]);
    assert_eq!(view["oauth2-key-id"], key["private_key_id"]);
    assert_eq!(view["oauth2-client-id"], key["client_id"]);
    // the key is in the private file, on one line, and nowhere else
    let private = std::fs::read_to_string(env.settings.private_config_file()).unwrap();
    let stored = private
        .lines()
        .find(|l| l.contains("oauth2-private-key"))
        .expect("key stored");
    assert!(stored.contains(&key_body[..64]), "stored as one line");
    let public = std::fs::read_to_string(env.settings.config_file()).unwrap();

    let subject = tag("service-account");
    env.notifier
        .delivery()
        .send_to_target("sa", &note(&subject))
        .unwrap();
    let mail = rig.find_mail(&subject).expect("mail delivered");
    assert!(
        mail.contains(&format!("From: \"oxnotify test\" <{from}>")),
        "{mail}"
    );
    assert_eq!(env.token_requests(), 1);
    let r = env.notifier.refresh().all().unwrap();
    assert_eq!(r[0].outcome, RefreshOutcome::Refreshed, "{:?}", r[0].error);

    let everything = format!(
        "{public} {} {:?} {}",
        serde_json::to_string(&api::list_targets(&env.notifier).unwrap()).unwrap(),
        r,
        serde_json::to_string(&env.notifier.status().target("sa").unwrap()).unwrap()
    );
    assert_no_secret(
        &everything,
        &[&key_body[..40], &key_body[key_body.len() - 40..]],
    );
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn service_account_for_a_mailbox_outside_the_delegation_is_unauthorized_client() {
    let rig = Rig::get();
    let env = Env::new();
    let key_file = std::fs::read_to_string(rig_env("RIG_SA_KEY_FILE")).unwrap();
    api::create_target(
        &env.notifier,
        &service_account_params(&rig, "sa-out", "someone@gmail.example", &key_file),
    )
    .unwrap();
    let e = env
        .notifier
        .delivery()
        .send_to_target("sa-out", &note(&tag("sa-out")))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NeedsAdminFix, "{e:?}");
    let m = e.to_string();
    assert!(m.contains("unauthorized_client"), "{m}");
    assert!(m.contains("domain-wide delegation"), "{m}");
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn service_account_with_a_key_google_does_not_know_gets_the_key_hint() {
    let rig = Rig::get();
    let env = Env::new();
    // a key of our own under the service account's name: Google answers "Invalid JWT Signature."
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("other.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key_path)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let pem = std::fs::read_to_string(&key_path).unwrap();
    let key: Value =
        serde_json::from_str(&std::fs::read_to_string(rig_env("RIG_SA_KEY_FILE")).unwrap())
            .unwrap();
    let mut p = service_account_params(&rig, "sa-key", "sa-key@example.test", &pem);
    p.insert("oauth2-service-account".into(), key["client_email"].clone());
    p.insert("oauth2-key-id".into(), key["private_key_id"].clone());
    api::create_target(&env.notifier, &p).unwrap();
    let e = env
        .notifier
        .delivery()
        .send_to_target("sa-key", &note(&tag("sa-key")))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NeedsAdminFix, "{e:?}");
    let m = e.to_string();
    assert!(m.contains("Invalid JWT Signature"), "{m}");
    assert!(m.contains("deleted or disabled"), "{m}");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert_no_secret(&format!("{m} {e:?}"), &[&body[..40]]);
}

/// Create-request parameters of a Microsoft target at the rig.

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn microsoft_app_only_with_a_certificate_credential_private_key_jwt() {
    let rig = Rig::get();
    let env = Env::new();
    let mailbox = rig_env("RIG_APP_MAILBOX");
    let p = microsoft_params(&rig, "app-cert", &mailbox, app_certificate_keys());
    api::create_target(&env.notifier, &p).unwrap();
    let subject = tag("app-cert");
    env.notifier
        .delivery()
        .send_to_target("app-cert", &note(&subject))
        .unwrap();
    let mail = rig.find_mail(&subject).expect("mail delivered");
    assert!(mail.contains(&format!("<{mailbox}>")), "{mail}");
    // two more token requests (daily job twice): each with a fresh assertion (the rig refuses
    // a replayed jti)
    for _ in 0..2 {
        let r = env.notifier.refresh().all().unwrap();
        assert_eq!(r[0].outcome, RefreshOutcome::Refreshed, "{:?}", r[0].error);
    }
    assert_eq!(env.token_requests(), 3);
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn private_key_jwt_with_an_unregistered_key_needs_an_admin_fix() {
    let rig = Rig::get();
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("other.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key_path)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let pem = std::fs::read_to_string(&key_path).unwrap();
    let p = microsoft_params(
        &rig,
        "app-cert-bad",
        &rig_env("RIG_APP_MAILBOX"),
        json!({
            "oauth2-flow": "client-credentials",
            "oauth2-client-auth": "private-key-jwt",
            "oauth2-client-id": rig_env("RIG_APP_JWT_CLIENT_ID"),
            "oauth2-key-id": rig_env("RIG_APP_JWT_KEY_ID"),
            "oauth2-private-key": pem,
        }),
    );
    api::create_target(&env.notifier, &p).unwrap();
    let e = env
        .notifier
        .delivery()
        .send_to_target("app-cert-bad", &note(&tag("app-cert-bad")))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NeedsAdminFix, "{e:?}");
    assert!(e.to_string().contains("invalid_client"), "{e}");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert_no_secret(&format!("{e} {e:?}"), &[&body[..40]]);
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn microsoft_ropc_mints_with_the_password_and_refusals_say_what_to_do() {
    let rig = Rig::get();
    let env = Env::new();
    let user = rig_env("RIG_ROPC_USER");
    let base = json!({
        "oauth2-flow": "password",
        "oauth2-client-id": rig_env("RIG_ROPC_CLIENT_ID"),
        "oauth2-client-secret": rig_env("RIG_ROPC_CLIENT_SECRET"),
    });
    let mut good = base.clone();
    good["password"] = json!(rig_env("RIG_ROPC_PASSWORD"));
    api::create_target(&env.notifier, &microsoft_params(&rig, "ropc", &user, good)).unwrap();
    let subject = tag("ropc");
    env.notifier
        .delivery()
        .send_to_target("ropc", &note(&subject))
        .unwrap();
    let mail = rig.find_mail(&subject).expect("mail delivered");
    assert!(mail.contains(&format!("<{user}>")), "{mail}");
    let r = env.notifier.refresh().all().unwrap();
    assert_eq!(r[0].outcome, RefreshOutcome::Refreshed, "{:?}", r[0].error);
    assert!(env.state_json("ropc").get("refresh_token").is_none());

    // a wrong password: admin fix, Entra's hint, the password nowhere
    let wrong = "wrong-password-0123456789";
    let mut bad = base.clone();
    bad["password"] = json!(wrong);
    api::create_target(
        &env.notifier,
        &microsoft_params(&rig, "ropc-bad", &user, bad),
    )
    .unwrap();
    let e = env
        .notifier
        .delivery()
        .send_to_target("ropc-bad", &note(&tag("ropc-bad")))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NeedsAdminFix, "{e:?}");
    assert!(
        e.to_string().contains("username or password was refused"),
        "{e}"
    );
    assert_no_secret(&format!("{e} {e:?}"), &[wrong]);

    // an account that must do MFA cannot use the password grant
    let mut mfa = base;
    mfa["password"] = json!(rig_env("RIG_ROPC_PASSWORD"));
    api::create_target(
        &env.notifier,
        &microsoft_params(&rig, "ropc-mfa", &rig_env("RIG_ROPC_MFA_USER"), mfa),
    )
    .unwrap();
    let e = env
        .notifier
        .delivery()
        .send_to_target("ropc-mfa", &note(&tag("ropc-mfa")))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NeedsAdminFix, "{e:?}");
    assert!(e.to_string().contains("AADSTS50076"), "{e}");
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn device_flow_prints_a_code_polls_until_approved_and_keeps_a_refresh_token() {
    let rig = Rig::get();
    let env = Env::new();
    let user = "dora-device@example.test";
    let p = microsoft_params(
        &rig,
        "dev",
        user,
        json!({
            "oauth2-flow": "device-code",
            "oauth2-client-id": "rig-post",
            "oauth2-client-secret": "rig-secret",
            "oauth2-device-authorize-url": format!("{}/device/auth", rig.issuer),
        }),
    );
    api::create_target(&env.notifier, &p).unwrap();
    // the browser flow is refused with the way to start this one
    let e = env
        .notifier
        .authorization()
        .authorize_url("dev", REDIRECT_URI)
        .unwrap_err();
    assert!(e.to_string().contains("device"), "{e}");

    let start = env.notifier.authorization().device_begin("dev").unwrap();
    let uri = start["verification_uri"].as_str().unwrap().to_string();
    let code = start["user_code"].as_str().unwrap().to_string();
    assert!(start["interval"].as_u64().unwrap() >= 1, "{start}");
    assert!(
        start.get("device_code").is_none(),
        "the device code stays server-side: {start}"
    );
    let handle = start["handle"].as_str().unwrap().to_string();
    // before the user did anything, a completion call returns "not yet" after its wait
    let wait = std::time::Duration::from_secs(1);
    let first = env
        .notifier
        .authorization()
        .device_complete(&handle, Some("dev"), wait)
        .unwrap();
    assert_eq!(first["authorized"], false, "{first}");
    // the user approves on another device while oxnotify polls
    let issuer = rig.issuer.clone();
    let driver = rig.driver.clone();
    let approver = std::thread::spawn(move || {
        let out = std::process::Command::new("python3")
            .arg(driver)
            .args([issuer.as_str(), "approve", user, &uri, &code])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let mut calls = 1;
    let done = loop {
        let r = env
            .notifier
            .authorization()
            .device_complete(&handle, Some("dev"), wait)
            .unwrap();
        calls += 1;
        if r["authorized"] == true {
            break r;
        }
        assert!(calls < 60, "never approved");
    };
    approver.join().unwrap();
    assert_eq!(done["target"], "dev");
    assert!(env.state_json("dev")["refresh_token"].is_string());
    // the handle is single-use
    assert!(env
        .notifier
        .authorization()
        .device_complete(&handle, None, wait)
        .is_err());

    let subject = tag("device");
    env.notifier
        .delivery()
        .send_to_target("dev", &note(&subject))
        .unwrap();
    let mail = rig.find_mail(&subject).expect("mail delivered");
    assert!(mail.contains(&format!("<{user}>")), "{mail}");
    let r = env.notifier.refresh().all().unwrap();
    assert_eq!(r[0].outcome, RefreshOutcome::Rotated, "{:?}", r[0].error);
}

#[test]
fn google_device_flow_is_refused_with_the_reason() {
    let env = Env::new();
    let p = json!({
        "name": "gdev", "server": "smtp.gmail.com", "auth-method": "google-oauth2",
        "oauth2-flow": "device-code", "oauth2-client-id": "x.apps.googleusercontent.com",
        "from-address": "a@example.com", "mailto": ["b@example.com"],
    });
    let e = api::create_target(&env.notifier, p.as_object().unwrap()).unwrap_err();
    let m = e.to_string();
    assert!(m.contains("https://mail.google.com/"), "{m}");
    assert!(m.contains("oxnotify authorize"), "{m}");
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn generic_client_authentication_is_chosen_per_target() {
    // rig-post-only accepts only client_secret_post; the generic provider's default is basic
    let rig = Rig::get();
    let env = Env::new();
    let user = "gene-post@example.test";
    let make = |name: &str, auth: Option<config::smtp::ClientAuthMethod>| {
        let mut t = base_target(&rig, name, user);
        t.auth_method = AuthMethod::OAuth2;
        t.oauth2_client_id = Some("rig-post-only".into());
        t.oauth2_authorize_url = Some(format!("{}/auth", rig.issuer));
        t.oauth2_token_url = Some(format!("{}/token", rig.issuer));
        t.oauth2_scope = Some("openid offline_access".into());
        t.oauth2_client_auth = auth;
        let s = SmtpSecrets {
            oauth2_client_secret: Some(Secret::new("rig-secret")),
            ..Default::default()
        };
        env.add_target(&t, &s);
        (t, s)
    };
    let (t, s) = make(
        "gpost",
        Some(config::smtp::ClientAuthMethod::ClientSecretPost),
    );
    env.authorize(&rig, &t, &s, user);
    let subject = tag("generic-post");
    env.notifier
        .delivery()
        .send_to_target("gpost", &note(&subject))
        .unwrap();
    assert!(rig.find_mail(&subject).is_some());

    let (t, s) = make("gbasic", None);
    let req = env
        .notifier
        .authorization()
        .authorize_url("gbasic", REDIRECT_URI)
        .unwrap();
    let (code, _) = rig.login_and_consent(user, req.url.as_str());
    let e = env
        .notifier
        .authorization()
        .exchange_code(&CodeExchange {
            auth_method: t.auth_method,
            client_id: "rig-post-only",
            client_secret: s.oauth2_client_secret.clone(),
            code: &code,
            redirect_uri: REDIRECT_URI,
            pkce_verifier: Some(req.pkce_verifier.clone()),
            endpoints: oauth2::EndpointParams::of_target(&t),
            target: Some("gbasic"),
        })
        .unwrap_err();
    assert!(e.to_string().contains("invalid_client"), "{e}");
    assert_eq!(e.kind(), ErrorKind::NeedsAdminFix, "{e:?}");
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn device_flow_declined_by_the_user_says_to_start_again() {
    let rig = Rig::get();
    let env = Env::new();
    let p = microsoft_params(
        &rig,
        "dev-no",
        "dev-no@example.test",
        json!({
            "oauth2-flow": "device-code",
            "oauth2-client-id": "rig-post",
            "oauth2-client-secret": "rig-secret",
            "oauth2-device-authorize-url": format!("{}/device/auth", rig.issuer),
        }),
    );
    api::create_target(&env.notifier, &p).unwrap();
    let start = env.notifier.authorization().device_begin("dev-no").unwrap();
    let out = std::process::Command::new("python3")
        .arg(&rig.driver)
        .args([
            rig.issuer.as_str(),
            "deny",
            "dev-no@example.test",
            start["verification_uri"].as_str().unwrap(),
            start["user_code"].as_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "denied",
        "{out:?}"
    );
    let handle = start["handle"].as_str().unwrap();
    let wait = std::time::Duration::from_secs(1);
    let e = env
        .notifier
        .authorization()
        .device_complete(handle, None, wait)
        .unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("access_denied") && m.contains("start the device authorization again"),
        "{m}"
    );
    assert!(!e.is_transient(), "{e:?}");
    assert!(env
        .notifier
        .status()
        .target("dev-no")
        .unwrap()
        .warning
        .is_some());
}
