//! Stored secrets never follow a repointed target (issue: an edit right must never be enough
//! to send a stored refresh token, access token, client secret or password somewhere new).
//!
//! The target is authorized at the rig's real OAuth2 server and sends through its real
//! Dovecot; then it is repointed, through the API or by editing the config file, at a
//! `CredentialCapturingListener`: a hand-written stand-in for an attacker's endpoint (HTTP or
//! SMTP, it records every byte it receives). It must never see a stored secret.

mod common;

use common::capture::{CredentialCapturingListener, Speaks};
use common::*;
use notify_core::*;
use serde_json::json;
use std::time::Duration;

/// An authorized target that has sent once (so an access token is cached).
fn authorized(rig: &Rig, env: &Env, name: &str, user: &str) -> (String, String) {
    let (t, s) = microsoft_target(rig, name, user);
    env.add_target(&t, &s);
    env.authorize(rig, &t, &s, user);
    env.notifier
        .delivery()
        .send_to_target(name, &note(&tag(name)))
        .unwrap();
    let st = env.state_json(name);
    (
        st["refresh_token"].as_str().unwrap().to_string(),
        st["access_token"].as_str().unwrap().to_string(),
    )
}

const TENANT2: &str = "87654321-90ab-cdef-1234-567890abcdef";

fn params(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().unwrap().clone()
}

/// Every way a stored credential could leave: a send, the test endpoint, the daily refresh.
fn try_everything(env: &Env, name: &str) -> Vec<Error> {
    let mut errors = Vec::new();
    if let Err(e) = env
        .notifier
        .delivery()
        .send_to_target(name, &note("after repoint"))
    {
        errors.push(e);
    }
    if let Err(e) = api::test_target(&env.notifier, name, None) {
        errors.push(e);
    }
    for r in env.notifier.refresh().all().unwrap() {
        assert_ne!(r.outcome, RefreshOutcome::Refreshed);
        assert_ne!(r.outcome, RefreshOutcome::Rotated);
    }
    errors
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn repointed_token_url_through_the_api_never_receives_stored_secrets() {
    let rig = Rig::get();
    let env = Env::new();
    let (rt, at) = authorized(&rig, &env, "repoint", "erin-repoint@example.test");
    let evil = CredentialCapturingListener::start(Speaks::Http);
    let url = format!("http://127.0.0.1:{}/token", evil.port);
    api::update_target(
        &env.notifier,
        "repoint",
        &params(json!({ "oauth2-token-url": url })),
        &[],
        None,
    )
    .unwrap();
    let errors = try_everything(&env, "repoint");
    assert!(
        errors.iter().all(Error::needs_reauthorization),
        "{errors:?}"
    );
    evil.assert_never_received(&[&rt, &at, "rig-secret"]);
    // the target says it needs authorization, and the secret is gone from the private file
    let st = env.notifier.status().target("repoint").unwrap();
    assert!(!st.authorized, "{st:?}");
    let private = std::fs::read_to_string(env.settings.private_config_file()).unwrap();
    assert!(!private.contains("rig-secret"), "{private}");
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn repointed_smtp_server_through_the_api_never_receives_a_token() {
    let rig = Rig::get();
    let env = Env::new();
    let (rt, at) = authorized(&rig, &env, "smtp-repoint", "erin-smtp@example.test");
    let evil = CredentialCapturingListener::start(Speaks::Smtp);
    api::update_target(
        &env.notifier,
        "smtp-repoint",
        &params(json!({
            "server": "127.0.0.1", "port": evil.port, "mode": "insecure",
            "allow-insecure-auth": true,
        })),
        &[],
        None,
    )
    .unwrap();
    let errors = try_everything(&env, "smtp-repoint");
    assert!(!errors.is_empty());
    evil.assert_never_received(&[&rt, &at, "rig-secret"]);
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn supplying_the_secret_again_with_the_update_keeps_it() {
    let rig = Rig::get();
    let env = Env::new();
    authorized(&rig, &env, "resupply", "erin-resupply@example.test");
    api::update_target(
        &env.notifier,
        "resupply",
        &params(json!({ "oauth2-tenant-id": TENANT2, "oauth2-client-secret": "rig-secret" })),
        &[],
        None,
    )
    .unwrap();
    let private = std::fs::read_to_string(env.settings.private_config_file()).unwrap();
    assert!(private.contains("rig-secret"));
    // still needs authorization: the tokens were for the old tenant
    assert!(!env.notifier.status().target("resupply").unwrap().authorized);
    // a change of a key that is not bound (recipients) keeps everything
    let (t, s) = microsoft_target(&rig, "resupply", "erin-resupply@example.test");
    let t = SmtpTarget {
        oauth2_tenant_id: Some(TENANT2.into()),
        ..t
    };
    env.authorize(&rig, &t, &s, "erin-resupply@example.test");
    api::update_target(
        &env.notifier,
        "resupply",
        &params(json!({ "mailto": ["other@example.test"], "comment": "x" })),
        &[],
        None,
    )
    .unwrap();
    assert!(env.notifier.status().target("resupply").unwrap().authorized);
    env.notifier
        .delivery()
        .send_to_target("resupply", &note(&tag("resupply")))
        .unwrap();
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn a_config_file_edited_by_hand_cannot_redirect_the_refresh_token() {
    let rig = Rig::get();
    let env = Env::new();
    let (rt, at) = authorized(&rig, &env, "byhand", "erin-byhand@example.test");
    let evil = CredentialCapturingListener::start(Speaks::Http);
    let cfg_file = env.settings.config_file();
    let text = std::fs::read_to_string(&cfg_file).unwrap();
    let text = text.replace(
        &format!("{}/token", rig.issuer),
        &format!("http://127.0.0.1:{}/token", evil.port),
    );
    std::fs::write(&cfg_file, text).unwrap();
    // expire the cached access token so that a send would have to refresh
    let mut st = env.state_json("byhand");
    st["access_token_expires_at"] = json!(0);
    env.write_state_json("byhand", &st);
    let errors = try_everything(&env, "byhand");
    assert!(
        errors.iter().all(Error::needs_reauthorization),
        "{errors:?}"
    );
    evil.assert_never_received(&[&rt, &at, "rig-secret"]);
    // the stored refresh token was left as it was (the admin may undo the edit)
    assert_eq!(env.state_json("byhand")["refresh_token"], rt);
}

/// The reference-compatible code exchange (no `state`) must not POST a code and a client
/// secret to a URL its caller chose, nor store tokens under a target that does not exist.
#[test]
fn code_exchange_without_state_is_limited_to_known_endpoints_and_targets() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    let n = Notifier::new(settings.clone()).unwrap();
    let evil = CredentialCapturingListener::start(Speaks::Http);
    let url = format!("http://127.0.0.1:{}/token", evil.port);
    let exchange = |method, target, token_url: Option<&str>, client_id| {
        n.authorization()
            .exchange_code(&CodeExchange {
                auth_method: method,
                client_id,
                client_secret: Some(Secret::new("CLIENT-SECRET-xyz")),
                code: "CODE-xyz",
                redirect_uri: "https://pve.example.com/oauth2/callback",
                pkce_verifier: None,
                endpoints: oauth2::EndpointParams {
                    tenant_id: (method == AuthMethod::MicrosoftOAuth2).then_some("contoso.com"),
                    token_url,
                    scope: (method == AuthMethod::OAuth2).then_some("smtp"),
                    ..Default::default()
                },
                target,
            })
            .unwrap_err()
    };
    // a caller-chosen token URL without a target
    let e = exchange(AuthMethod::MicrosoftOAuth2, None, Some(&url), "cid");
    assert!(
        matches!(&e, Error::Parameter { param, .. } if param == "token-url"),
        "{e}"
    );
    // the generic method has no endpoint of its own: it needs a target
    let e = exchange(AuthMethod::OAuth2, None, Some(&url), "cid");
    assert_eq!(e.http_code(), 400, "{e}");
    // a target that does not exist
    let e = exchange(AuthMethod::MicrosoftOAuth2, Some("later"), None, "cid");
    assert_eq!(e.http_code(), 404, "{e}");
    assert!(!settings.oauth2_state_file("later").exists());
    // a target whose registration differs from the request
    let target = SmtpTarget {
        auth_method: AuthMethod::OAuth2,
        oauth2_client_id: Some("cid".into()),
        oauth2_token_url: Some("https://idp.example.com/token".into()),
        oauth2_scope: Some("smtp".into()),
        broker_allow: Default::default(),
        ..SmtpTarget::new(
            "real",
            "127.0.0.1",
            "a@example.com",
            vec!["b@example.com".into()],
        )
    };
    let lock = notify_core::config::ConfigLock::acquire(&settings).unwrap();
    let mut cfg = NotificationConfig::load(&settings).unwrap();
    cfg.add_smtp_target(&target, &SmtpSecrets::default())
        .unwrap();
    cfg.save(&settings, &lock).unwrap();
    drop(lock);
    let e = exchange(AuthMethod::OAuth2, Some("real"), Some(&url), "cid");
    assert!(
        matches!(&e, Error::Parameter { param, .. } if param == "target"),
        "{e}"
    );
    let e = exchange(AuthMethod::OAuth2, Some("real"), None, "other-client");
    assert!(
        matches!(&e, Error::Parameter { param, .. } if param == "target"),
        "{e}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        evil.received().is_empty(),
        "the caller-chosen token URL was contacted"
    );
}

/// The Graph stand-in's requests for `mailbox` so far (its log: one line per request, with
/// the mailbox of the sendMail URL, written whatever the token).
fn graph_requests(mailbox: &str) -> usize {
    std::fs::read_to_string(rig_env("RIG_GRAPH_LOG"))
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some(mailbox))
        .count()
}

/// A Graph target authorized at the rig that has sent once through the Graph stand-in.
fn graph_authorized(rig: &Rig, env: &Env, name: &str, user: &str) -> (String, String) {
    let (mut t, s) = microsoft_target(rig, name, user);
    t.transport = Some(config::smtp::Transport::Graph);
    t.server = rig_env("RIG_GRAPH_HOST");
    t.port = Some(rig_env("RIG_GRAPH_PORT").parse().unwrap());
    t.mode = SmtpMode::Tls;
    env.add_target(&t, &s);
    env.authorize(rig, &t, &s, user);
    env.notifier
        .delivery()
        .send_to_target(name, &note(&tag(name)))
        .unwrap();
    let st = env.state_json(name);
    (
        st["refresh_token"].as_str().unwrap().to_string(),
        st["access_token"].as_str().unwrap().to_string(),
    )
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn a_graph_tokens_host_and_mailbox_are_bound_and_an_smtp_token_never_goes_to_graph() {
    let rig = Rig::get();
    let env = Env::new();
    // the Graph host: the same stand-in under another name (its certificate covers both),
    // so a token sent there would show in its log
    let user = format!("{}@example.test", tag("gb-host"));
    graph_authorized(&rig, &env, "gb-host", &user);
    let before = graph_requests(&user);
    api::update_target(
        &env.notifier,
        "gb-host",
        &params(json!({ "server": "localhost" })),
        &[],
        None,
    )
    .unwrap();
    let errors = try_everything(&env, "gb-host");
    assert!(
        !errors.is_empty() && errors.iter().all(Error::needs_reauthorization),
        "{errors:?}"
    );
    assert_eq!(
        graph_requests(&user),
        before,
        "no request reached the new host"
    );

    // the mailbox of the sendMail URL
    let user = format!("{}@example.test", tag("gb-box"));
    let other = format!("{}@example.test", tag("gb-other"));
    graph_authorized(&rig, &env, "gb-box", &user);
    api::update_target(
        &env.notifier,
        "gb-box",
        &params(json!({ "username": other })),
        &[],
        None,
    )
    .unwrap();
    let errors = try_everything(&env, "gb-box");
    assert!(
        errors.iter().all(Error::needs_reauthorization),
        "{errors:?}"
    );
    assert_eq!(
        graph_requests(&other),
        0,
        "the token went to another mailbox"
    );

    // an SMTP target switched to Graph: its SMTP token is not sent there
    let user = format!("{}@example.test", tag("gb-switch"));
    authorized(&rig, &env, "gb-switch", &user);
    api::update_target(
        &env.notifier,
        "gb-switch",
        &params(json!({
            "transport": "graph", "server": rig_env("RIG_GRAPH_HOST"),
            "port": rig_env("RIG_GRAPH_PORT").parse::<u16>().unwrap(), "mode": "tls",
        })),
        &[],
        None,
    )
    .unwrap();
    let errors = try_everything(&env, "gb-switch");
    assert!(
        errors.iter().all(Error::needs_reauthorization),
        "{errors:?}"
    );
    assert_eq!(graph_requests(&user), 0, "an SMTP token reached Graph");
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn a_graph_target_edited_by_hand_does_not_send_its_token_to_the_new_host() {
    let rig = Rig::get();
    let env = Env::new();
    let user = format!("{}@example.test", tag("gb-hand"));
    let (rt, _) = graph_authorized(&rig, &env, "gb-hand", &user);
    let before = graph_requests(&user);
    let cfg_file = env.settings.config_file();
    let text = std::fs::read_to_string(&cfg_file).unwrap();
    let edited = text.replace(
        &format!("server {}", rig_env("RIG_GRAPH_HOST")),
        "server localhost",
    );
    assert_ne!(edited, text);
    std::fs::write(&cfg_file, edited).unwrap();
    let errors = try_everything(&env, "gb-hand");
    assert!(
        !errors.is_empty() && errors.iter().all(Error::needs_reauthorization),
        "{errors:?}"
    );
    assert_eq!(graph_requests(&user), before, "the cached token was sent");
    assert_eq!(
        env.state_json("gb-hand")["refresh_token"],
        rt,
        "kept for an undo"
    );
}
