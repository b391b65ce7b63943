//! Flows that mint their tokens (client credentials with a secret or a certificate, Google
//! service accounts, ROPC) need no user's consent: whoever may use the stored credential gets
//! a fresh token. So an edit right must not be enough to point the target somewhere new and
//! have the next send mint a token for it. Each flow is set up at the rig's real OAuth2
//! server and sends once; then it is repointed at `CredentialCapturingListener`, a hand-written
//! stand-in for an attacker's SMTP server on loopback that offers every AUTH mechanism
//! without TLS and records every line it receives.
//!
//! Through the API the repoint is refused unless the update supplies the credential again
//! (the error says why); by editing the config file it goes through, but nothing is minted or
//! sent: the send, the test button and the daily job fail with needs-admin-fix.

mod common;

use common::capture::{CredentialCapturingListener, Speaks};
use common::*;
use notify_core::*;
use serde_json::{json, Map, Value};

fn object(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// A minting target of each kind: (create parameters, the key whose value is the credential).
fn flows(rig: &Rig) -> Vec<(&'static str, Map<String, Value>, &'static str)> {
    let microsoft = |name: &str, from: &str, extra: Value| microsoft_params(rig, name, from, extra);
    let mailbox = rig_env("RIG_APP_MAILBOX");
    vec![
        (
            "app-secret",
            microsoft(
                "app-secret",
                &mailbox,
                json!({
                    "oauth2-flow": "client-credentials",
                    "oauth2-client-id": rig_env("RIG_APP_CLIENT_ID"),
                    "oauth2-client-secret": rig_env("RIG_APP_CLIENT_SECRET"),
                }),
            ),
            "oauth2-client-secret",
        ),
        (
            "app-cert",
            microsoft("app-cert", &mailbox, app_certificate_keys()),
            "oauth2-private-key",
        ),
        (
            "ropc",
            microsoft(
                "ropc",
                &rig_env("RIG_ROPC_USER"),
                json!({
                    "oauth2-flow": "password",
                    "oauth2-client-id": rig_env("RIG_ROPC_CLIENT_ID"),
                    "oauth2-client-secret": rig_env("RIG_ROPC_CLIENT_SECRET"),
                    "password": rig_env("RIG_ROPC_PASSWORD"),
                }),
            ),
            "password",
        ),
        (
            "sa",
            object(json!({
                "name": "sa", "server": rig.smtp_host, "port": rig.tls_port, "mode": "tls",
                "auth-method": "google-oauth2", "oauth2-flow": "service-account",
                "oauth2-token-url": format!("{}/token", rig.issuer),
                "from-address": "sa-mailbox@example.test", "author": "oxnotify test",
                "mailto": ["ops@example.test"],
                "oauth2-private-key": std::fs::read_to_string(rig_env("RIG_SA_KEY_FILE")).unwrap(),
            })),
            "oauth2-private-key",
        ),
    ]
}

/// Each minting flow, set up and used once (a token is minted and cached).
fn minted(rig: &Rig, env: &Env) -> Vec<(&'static str, Map<String, Value>, &'static str)> {
    let all = flows(rig);
    for (name, params, _) in &all {
        api::create_target(&env.notifier, params).unwrap();
        env.notifier
            .delivery()
            .send_to_target(name, &note(&tag(name)))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    all
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn a_delivery_change_through_the_api_drops_a_minting_credential_unless_supplied_again() {
    let rig = Rig::get();
    let env = Env::new();
    let capture = CredentialCapturingListener::start(Speaks::Smtp);
    for (name, params, key) in minted(&rig, &env) {
        let repoint = json!({
            "server": "127.0.0.1", "port": capture.port, "mode": "insecure",
            "allow-insecure-auth": true,
        });
        let before = std::fs::read(env.settings.config_file()).unwrap();
        let e = api::update_target(&env.notifier, name, &object(repoint.clone()), &[], None)
            .unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}: {msg}");
        assert!(
            msg.contains(key) && msg.contains("was not kept because this update changes where"),
            "{name}: the error must say why the credential is missing: {msg}"
        );
        // nothing changed
        assert_eq!(
            std::fs::read(env.settings.config_file()).unwrap(),
            before,
            "{name}"
        );
        // the same through the broker allow-list: whoever may fetch the token is a destination
        let e = api::update_target(
            &env.notifier,
            name,
            &object(json!({ "broker-allow-user": ["nobody"] })),
            &[],
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains(key), "{name}: {e}");
        // supplying the credential with the update confirms the new destination
        let mut confirmed = object(repoint);
        confirmed.insert(key.into(), params[key].clone());
        api::update_target(&env.notifier, name, &confirmed, &[], None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn a_config_file_edited_by_hand_cannot_make_a_minting_target_mint_for_a_new_destination() {
    let rig = Rig::get();
    let env = Env::new();
    let capture = CredentialCapturingListener::start(Speaks::Smtp);
    let all = minted(&rig, &env);
    let requests = env.token_requests();
    // repoint every target by hand, and expire the cached tokens so a send would mint
    let cfg_file = env.settings.config_file();
    let text = std::fs::read_to_string(&cfg_file).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let l = line.trim_start();
        if l.starts_with("server ") {
            out.push_str("\tserver 127.0.0.1\n");
        } else if l.starts_with("port ") {
            out.push_str(&format!("\tport {}\n", capture.port));
        } else if l.starts_with("mode ") {
            out.push_str("\tmode insecure\n\tallow-insecure-auth 1\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(&cfg_file, out).unwrap();
    for (name, _, _) in &all {
        let mut st = env.state_json(name);
        st["access_token_expires_at"] = json!(0);
        env.write_state_json(name, &st);
    }
    for (name, _, _) in &all {
        let e = env
            .notifier
            .delivery()
            .send_to_target(name, &note("after a hand edit"))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NeedsAdminFix, "{name}: {e}");
        assert!(e.to_string().contains("supplies it again"), "{name}: {e}");
        let e = api::test_target(&env.notifier, name, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NeedsAdminFix, "{name}: {e}");
        let st = env.notifier.status().target(name).unwrap();
        assert!(!st.authorized, "{name}: {st:?}");
        assert!(
            st.warning
                .as_deref()
                .is_some_and(|w| w.contains("confirm the credential")),
            "{name}: {st:?}"
        );
    }
    for r in env.notifier.refresh().all().unwrap() {
        assert_eq!(r.outcome, RefreshOutcome::NeedsAdminFix, "{r:?}");
    }
    assert_eq!(env.token_requests(), requests, "nothing was minted");
    let got = capture.received();
    assert!(
        !got.to_ascii_uppercase().contains("AUTH"),
        "a login reached the repointed server: {got}"
    );
}

/// The Graph stand-in's requests for `mailbox` so far.
fn graph_requests(mailbox: &str) -> usize {
    std::fs::read_to_string(rig_env("RIG_GRAPH_LOG"))
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some(mailbox))
        .count()
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn a_graph_app_only_target_does_not_mint_for_a_new_host_or_mailbox() {
    let rig = Rig::get();
    let env = Env::new();
    let mailbox = rig_env("RIG_APP_MAILBOX");
    let secret = rig_env("RIG_APP_CLIENT_SECRET");
    let mut p = microsoft_params(
        &rig,
        "g-mint",
        &mailbox,
        json!({
            "oauth2-flow": "client-credentials",
            "oauth2-client-id": rig_env("RIG_APP_CLIENT_ID"),
            "oauth2-client-secret": secret,
            "transport": "graph", "mode": "tls",
            "server": rig_env("RIG_GRAPH_HOST"),
            "port": rig_env("RIG_GRAPH_PORT").parse::<u16>().unwrap(),
        }),
    );
    api::create_target(&env.notifier, &p).unwrap();
    env.notifier
        .delivery()
        .send_to_target("g-mint", &note(&tag("g-mint")))
        .unwrap();
    // through the API: another mailbox, another Graph host need the secret again
    for change in [
        json!({ "username": "someone-else@example.test" }),
        json!({ "server": "localhost" }),
    ] {
        let e = api::update_target(&env.notifier, "g-mint", &object(change.clone()), &[], None)
            .unwrap_err();
        assert!(
            e.to_string().contains("oauth2-client-secret"),
            "{change}: {e}"
        );
    }
    // by hand: the new host gets nothing, nothing is minted
    let requests = env.token_requests();
    let sent = graph_requests(&mailbox);
    let cfg_file = env.settings.config_file();
    let text = std::fs::read_to_string(&cfg_file).unwrap();
    std::fs::write(
        &cfg_file,
        text.replace(
            &format!("server {}", rig_env("RIG_GRAPH_HOST")),
            "server localhost",
        ),
    )
    .unwrap();
    let mut st = env.state_json("g-mint");
    st["access_token_expires_at"] = json!(0);
    env.write_state_json("g-mint", &st);
    let e = env
        .notifier
        .delivery()
        .send_to_target("g-mint", &note("after a hand edit"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NeedsAdminFix, "{e}");
    assert!(e.to_string().contains("supplies it again"), "{e}");
    assert_eq!(env.token_requests(), requests, "nothing was minted");
    assert_eq!(graph_requests(&mailbox), sent, "nothing reached Graph");
    // supplying the secret with the update confirms the new destination
    p.clear();
    p.insert("oauth2-client-secret".into(), json!(secret));
    api::update_target(&env.notifier, "g-mint", &p, &[], None).unwrap();
    env.notifier
        .delivery()
        .send_to_target("g-mint", &note(&tag("g-mint-confirmed")))
        .unwrap();
}
