//! `transport graph` end to end against the rig: tokens from the rig's real oidc-provider
//! (authorization code, device code, client credentials with a secret and with a
//! certificate), sent to the rig's Graph STAND-IN (`scripts/rig/graph-standin.mjs`: no
//! open-source Graph server exists), which checks each token by introspection (Graph scope,
//! the mailbox it may send as), parses the request as Graph documents it and delivers into
//! the rig's Maildir. Its mailboxes choose Graph's documented errors (`throttle-N-*`,
//! `busy-*`, `missing-*`, `large-*`, ...; see its header).

mod common;
use common::*;
use notify_core::*;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

/// Create parameters of a Graph target at the stand-in, with `extra` keys added.
fn graph_params(rig: &Rig, name: &str, mailbox: &str, extra: Value) -> Map<String, Value> {
    let mut p = microsoft_params(rig, name, mailbox, extra);
    p.insert("transport".into(), json!("graph"));
    p.insert("server".into(), json!(rig_env("RIG_GRAPH_HOST")));
    p.insert(
        "port".into(),
        json!(rig_env("RIG_GRAPH_PORT").parse::<u16>().unwrap()),
    );
    p.insert("mode".into(), json!("tls"));
    p
}

/// App-only (client credentials with the app's secret) at the stand-in; `mailbox` is the
/// mailbox in the sendMail URL (`username`), From stays the app's granted mailbox.
fn app_params(rig: &Rig, name: &str, mailbox: &str) -> Map<String, Value> {
    let granted = rig_env("RIG_APP_MAILBOX");
    let mut p = graph_params(
        rig,
        name,
        &granted,
        json!({
            "oauth2-flow": "client-credentials",
            "oauth2-client-id": rig_env("RIG_APP_CLIENT_ID"),
            "oauth2-client-secret": rig_env("RIG_APP_CLIENT_SECRET"),
        }),
    );
    if mailbox != granted {
        p.insert("username".into(), json!(mailbox));
    }
    p
}

/// A delegated (authorization code) Graph target, authorized by `user` at the rig.
fn delegated(rig: &Rig, env: &Env, name: &str, user: &str, from: &str) -> SmtpTarget {
    let (mut t, s) = microsoft_target(rig, name, from);
    t.transport = Some(config::smtp::Transport::Graph);
    t.server = rig_env("RIG_GRAPH_HOST");
    t.port = Some(rig_env("RIG_GRAPH_PORT").parse().unwrap());
    t.mode = SmtpMode::Tls;
    if user != from {
        t.username = Some(user.into());
    }
    env.add_target(&t, &s);
    env.authorize(rig, &t, &s, user);
    t
}

/// The stand-in's log lines for `mailbox`: `(status, client)` per request.
fn requests(mailbox: &str) -> Vec<(u16, String)> {
    std::fs::read_to_string(rig_env("RIG_GRAPH_LOG"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() == 4 && f[0] == "sendMail" && f[1] == mailbox)
                .then(|| (f[2].parse().unwrap(), f[3].to_string()))
        })
        .collect()
}

fn assert_graph_mail(rig: &Rig, subject: &str, mailbox: &str) -> String {
    let mail = rig
        .find_mail(subject)
        .expect("delivered by the Graph stand-in");
    assert!(
        mail.contains(&format!("X-Graph-Standin-Mailbox: {mailbox}")),
        "{mail}"
    );
    // the JSON form: not saved to Sent Items, the custom x- header kept
    assert!(
        mail.contains("X-Graph-Standin-SaveToSentItems: false"),
        "{mail}"
    );
    assert!(mail.contains("X-OxNotify-Severity: error"), "{mail}");
    assert!(mail.contains("To: ops@example.test"), "{mail}");
    mail
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn app_only_with_a_client_secret_sends_through_graph_and_verifies() {
    let rig = Rig::get();
    let env = Env::new();
    let mailbox = rig_env("RIG_APP_MAILBOX");
    api::create_target(&env.notifier, &app_params(&rig, "g-app", &mailbox)).unwrap();
    let subject = tag("graph-app");
    env.notifier
        .delivery()
        .send_to_target("g-app", &note(&subject))
        .unwrap();
    let mail = assert_graph_mail(&rig, &subject, &mailbox);
    assert!(
        mail.contains(&format!("From: \"oxnotify test\" <{mailbox}>")),
        "{mail}"
    );
    assert_eq!(env.token_requests(), 2, "one token request, one sendMail");
    // the login check: the token (cached now), then a sendMail without recipients that
    // Graph refuses after its permission checks; nothing is delivered
    let refused = |m: &str| requests(m).iter().filter(|r| r.0 == 400).count();
    let before = refused(&mailbox);
    let v = env.notifier.delivery().verify("g-app").unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.credential, "cached token");
    assert_eq!(
        v.steps.iter().map(|s| s.step).collect::<Vec<_>>(),
        ["token", "graph"]
    );
    assert_eq!(
        refused(&mailbox),
        before + 1,
        "a sendMail without recipients"
    );
    assert!(rig.find_mail("oxnotify login check").is_none());
    // the daily job mints a fresh Graph token
    let r = env.notifier.refresh().all().unwrap();
    assert_eq!(r[0].outcome, RefreshOutcome::Refreshed, "{:?}", r[0].error);
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn app_only_with_a_certificate_credential_sends_through_graph() {
    let rig = Rig::get();
    let env = Env::new();
    let mailbox = rig_env("RIG_APP_MAILBOX");
    let p = graph_params(&rig, "g-cert", &mailbox, app_certificate_keys());
    api::create_target(&env.notifier, &p).unwrap();
    let subject = tag("graph-cert");
    env.notifier
        .delivery()
        .send_to_target("g-cert", &note(&subject))
        .unwrap();
    assert_graph_mail(&rig, &subject, &mailbox);
    let jwt_app = rig_env("RIG_APP_JWT_CLIENT_ID");
    assert!(
        requests(&mailbox).contains(&(202, jwt_app)),
        "sent with the certificate app's token"
    );
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn authorization_code_sends_as_the_signed_in_mailbox_and_refreshes_once_on_401() {
    let rig = Rig::get();
    let env = Env::new();
    let user = &format!("{}@example.test", tag("gina-graph"));
    delegated(&rig, &env, "g-code", user, user);
    // the authorization asked for Graph's delegated Mail.Send, not SMTP.Send
    let st = env.state_json("g-code");
    let rt = st["refresh_token"].as_str().unwrap().to_string();
    let subject = tag("graph-code");
    env.notifier
        .delivery()
        .send_to_target("g-code", &note(&subject))
        .unwrap();
    assert_graph_mail(&rig, &subject, user);
    let v = env.notifier.delivery().verify("g-code").unwrap();
    assert!(v.ok, "{v:?}");

    // the cached access token is no longer accepted (revoked since it was cached): Graph
    // answers 401, oxnotify refreshes once and the message goes
    let mut st = env.state_json("g-code");
    st["access_token"] = "revoked-or-garbage-token".into();
    env.write_state_json("g-code", &st);
    let subject = tag("graph-401");
    env.notifier
        .delivery()
        .send_to_target("g-code", &note(&subject))
        .unwrap();
    assert_graph_mail(&rig, &subject, user);
    let statuses: Vec<u16> = requests(user).iter().map(|r| r.0).collect();
    assert_eq!(statuses[statuses.len() - 2..], [401, 202], "{statuses:?}");
    assert_ne!(env.state_json("g-code")["refresh_token"], rt, "rotated");

    // the grant is gone too: 401, the refresh fails, the target needs re-authorization
    let mut st = env.state_json("g-code");
    rig.revoke(st["refresh_token"].as_str().unwrap(), "rig-post");
    st["access_token"] = "revoked-or-garbage-token".into();
    env.write_state_json("g-code", &st);
    let e = env
        .notifier
        .delivery()
        .send_to_target("g-code", &note(&tag("graph-revoked")))
        .unwrap_err();
    assert!(e.needs_reauthorization(), "{e}");
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn device_code_sends_through_graph() {
    let rig = Rig::get();
    let env = Env::new();
    let user = &format!("{}@example.test", tag("dora-graph"));
    let p = graph_params(
        &rig,
        "g-dev",
        user,
        json!({
            "oauth2-flow": "device-code",
            "oauth2-client-id": "rig-post",
            "oauth2-client-secret": "rig-secret",
            "oauth2-device-authorize-url": format!("{}/device/auth", rig.issuer),
        }),
    );
    api::create_target(&env.notifier, &p).unwrap();
    let start = env.notifier.authorization().device_begin("g-dev").unwrap();
    let handle = start["handle"].as_str().unwrap().to_string();
    let out = std::process::Command::new("python3")
        .arg(&rig.driver)
        .args([
            rig.issuer.as_str(),
            "approve",
            user,
            start["verification_uri"].as_str().unwrap(),
            start["user_code"].as_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = env
            .notifier
            .authorization()
            .device_complete(&handle, Some("g-dev"), Duration::from_secs(2))
            .unwrap();
        if r["authorized"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "never authorized: {r}");
    }
    let subject = tag("graph-device");
    env.notifier
        .delivery()
        .send_to_target("g-dev", &note(&subject))
        .unwrap();
    assert_graph_mail(&rig, &subject, user);
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn throttling_is_waited_out_as_graph_asks_and_an_outage_is_queued() {
    let rig = Rig::get();
    let env = Env::new();
    // the first 2 requests get 429 TooManyRequests with Retry-After: 1.5
    let user = format!("throttle-2-{}@example.test", tag("t"));
    delegated(&rig, &env, "g-429", &user, &user);
    let subject = tag("graph-429");
    let t0 = Instant::now();
    env.notifier
        .delivery()
        .send_to_target("g-429", &note(&subject))
        .unwrap();
    let waited = t0.elapsed();
    assert_graph_mail(&rig, &subject, &user);
    let statuses: Vec<u16> = requests(&user).iter().map(|r| r.0).collect();
    assert_eq!(statuses, [429, 429, 202]);
    assert!(
        waited >= Duration::from_millis(3000),
        "Retry-After 1.5 s was honoured twice: {waited:?}"
    );

    // 503 with Retry-After every time: transient, the message waits in the outbox
    let user = format!("busy-{}@example.test", tag("b"));
    delegated(&rig, &env, "g-503", &user, &user);
    let r = env
        .notifier
        .delivery()
        .send(&["g-503"], &note(&tag("graph-503")))
        .unwrap();
    match &r[0].result {
        Ok(Delivery::Queued { reason, .. }) => {
            assert!(reason.contains("serviceNotAvailable"), "{reason}");
            assert!(reason.contains("temporary"), "{reason}");
        }
        other => panic!("not queued: {other:?}"),
    }
    assert_eq!(
        env.notifier
            .delivery()
            .outbox_list(Some("g-503"))
            .unwrap()
            .len(),
        1
    );
    assert!(
        requests(&user).len() >= 2,
        "retried within the caller's bound"
    );
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn documented_refusals_need_an_admin_and_name_mailbox_from_and_permission() {
    let rig = Rig::get();
    let env = Env::new();
    let send = |name: &str| {
        env.notifier
            .delivery()
            .send_to_target(name, &note(&tag(name)))
            .unwrap_err()
    };
    // From another address without Send As
    let user = "hank-graph@example.test";
    delegated(&rig, &env, "g-sendas", user, "boss@example.test");
    let e = send("g-sendas");
    assert_eq!(e.kind(), ErrorKind::NeedsAdminFix, "{e}");
    let m = e.to_string();
    assert!(m.contains("ErrorSendAsDenied") && m.contains(user), "{m}");
    assert!(
        m.contains("boss@example.test") && m.contains("Send As"),
        "{m}"
    );
    // ... which the verify probe finds without sending
    let v = env.notifier.delivery().verify("g-sendas").unwrap();
    assert!(!v.ok && v.kind == Some(ErrorKind::NeedsAdminFix), "{v:?}");
    // a From the mailbox may send as goes
    delegated(&rig, &env, "g-alias", user, "alerts@example.test");
    env.notifier
        .delivery()
        .send_to_target("g-alias", &note(&tag("g-alias")))
        .unwrap();

    // app-only: a mailbox outside the app's RBAC scope, an unknown one, one without EXO
    for (name, mailbox, code, says) in [
        (
            "g-rbac",
            "someone-else@example.test",
            "ErrorAccessDenied",
            "Application Mail.Send",
        ),
        (
            "g-missing",
            "missing-x@example.test",
            "ErrorInvalidUser",
            "missing-x@example.test",
        ),
        (
            "g-onprem",
            "onprem-x@example.test",
            "MailboxNotEnabledForRESTAPI",
            "onprem-x@example.test",
        ),
    ] {
        api::create_target(&env.notifier, &app_params(&rig, name, mailbox)).unwrap();
        let e = send(name);
        assert_eq!(e.kind(), ErrorKind::NeedsAdminFix, "{name}: {e}");
        let m = e.to_string();
        assert!(m.contains(code) && m.contains(says), "{name}: {m}");
        assert!(m.contains("request-id"), "{name}: {m}");
        assert_eq!(e.http_code(), 502);
    }
    // too large: permanent for this message, not queued
    let user = "large-graph@example.test";
    delegated(&rig, &env, "g-large", user, user);
    let r = env
        .notifier
        .delivery()
        .send(&["g-large"], &note(&tag("g-large")))
        .unwrap();
    let e = r[0].result.as_ref().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("413"), "{e}");
    assert!(env
        .notifier
        .delivery()
        .outbox_list(Some("g-large"))
        .unwrap()
        .is_empty());
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn concurrent_sends_stay_within_graphs_four_per_mailbox() {
    let rig = Rig::get();
    let env = Env::new();
    // the stand-in holds each request of a slow- mailbox 1.5 s and answers a 5th concurrent
    // one with 429 ApplicationThrottled (MailboxConcurrency)
    let user = format!("slow-{}@example.test", tag("c"));
    delegated(&rig, &env, "g-slow", &user, &user);
    api::update_target(
        &env.notifier,
        "g-slow",
        &json!({"max-connections": 4}).as_object().unwrap().clone(),
        &[],
        None,
    )
    .unwrap();
    let e = api::update_target(
        &env.notifier,
        "g-slow",
        &json!({"max-connections": 5}).as_object().unwrap().clone(),
        &[],
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("4 concurrent requests"), "{e}");
    std::thread::scope(|s| {
        for i in 0..6 {
            let env = &env;
            s.spawn(move || {
                env.notifier
                    .delivery()
                    .send_to_target("g-slow", &note(&format!("slow {i}")))
                    .unwrap()
            });
        }
    });
    let statuses: Vec<u16> = requests(&user).iter().map(|r| r.0).collect();
    assert_eq!(statuses, [202; 6], "never over Graph's limit: {statuses:?}");
}

#[test]
fn a_graph_target_sends_only_to_graph_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    let env = Env::with_settings(
        dir,
        Settings {
            provider_hosts: vec!["127.0.0.1".into()],
            ..settings
        },
    );
    let p = json!({
        "name": "g-evil", "transport": "graph", "server": "graph.evil.example.net",
        "auth-method": "microsoft-oauth2", "oauth2-flow": "client-credentials",
        "oauth2-tenant-id": "contoso.com", "oauth2-client-id": "cid",
        "oauth2-client-secret": "CLIENT-SECRET-graph-0123",
        "from-address": "a@example.test", "mailto": ["b@example.test"],
    });
    api::create_target(&env.notifier, p.as_object().unwrap()).unwrap();
    let e = env
        .notifier
        .delivery()
        .send_to_target("g-evil", &note("x"))
        .unwrap_err();
    // refused before any token is minted: the secret went nowhere
    assert_eq!(env.token_requests(), 0, "{e}");
    assert!(e.to_string().contains("graph.microsoft.com"), "{e}");
    assert!(!e.to_string().contains("CLIENT-SECRET-graph-0123"), "{e}");
    // the combinations Graph cannot do are refused with the key
    for (extra, key) in [
        (
            json!({"auth-method": "google-oauth2", "oauth2-tenant-id": null}),
            "transport",
        ),
        (json!({"mode": "starttls"}), "mode"),
        (json!({"max-connections": 5}), "max-connections"),
    ] {
        let mut q = p.as_object().unwrap().clone();
        q.insert("name".into(), json!("g-bad"));
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                q.remove(k);
            } else {
                q.insert(k.clone(), v.clone());
            }
        }
        let e = api::create_target(&env.notifier, &q).unwrap_err();
        assert!(e.to_string().contains(key), "{key}: {e}");
    }
}
