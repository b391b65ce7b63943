//! OAuth2 + XOAUTH2 flows against the real rig: oidc-provider (auth code + PKCE, rotating
//! refresh tokens with reuse detection, revocation) and Dovecot submission validating each
//! bearer token by introspection.

mod common;
use common::*;
use notify_core::delivery::smtp;
use notify_core::*;
use std::os::unix::fs::MetadataExt;

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn full_flow_code_exchange_send_delivers_mail() {
    let rig = Rig::get();
    let env = Env::new();
    let (t, s) = microsoft_target(&rig, "m365", "alice-full@example.test");
    env.add_target(&t, &s);

    let rt = env.authorize(&rig, &t, &s, "alice-full@example.test");
    assert!(!rt.expose().is_empty());
    assert_eq!(env.token_requests(), 1, "one code exchange");

    let subject = tag("full-flow");
    let reports = env
        .notifier
        .delivery()
        .send(&["m365"], &note(&subject))
        .unwrap();
    assert!(reports[0].result.is_ok(), "{:?}", reports[0].result);
    // the access token from the exchange was cached: sending needed no token request
    assert_eq!(env.token_requests(), 1);

    let mail = rig
        .find_mail(&subject)
        .expect("mail delivered to the Maildir");
    assert!(
        mail.contains("From: \"oxnotify test\" <alice-full@example.test>"),
        "{mail}"
    );
    assert!(
        mail.contains("To: ops@example.test, oncall@example.test"),
        "{mail}"
    );
    assert!(mail.contains(&format!("Subject: {subject}")), "{mail}");
    assert!(mail.contains("X-OxNotify-Severity: error"), "{mail}");
    assert!(mail.contains("hostname: pve1"), "{mail}");
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn microsoft_style_rotation_is_persisted_and_old_token_not_needed() {
    let rig = Rig::get();
    let env = Env::new();
    let (t, s) = microsoft_target(&rig, "rot", "bob-rot@example.test");
    env.add_target(&t, &s);
    let first_rt = env.authorize(&rig, &t, &s, "bob-rot@example.test");

    let r1 = env.notifier.refresh().all().unwrap();
    assert_eq!(r1.len(), 1);
    assert_eq!(r1[0].outcome, RefreshOutcome::Rotated, "{:?}", r1[0].error);
    let st = env.state_json("rot");
    let second_rt = st["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second_rt, first_rt.expose(), "the rotated token is stored");
    assert_eq!(st["rotations"], 1);

    // another process (another Notifier, fresh HTTP client) continues from the stored token
    let other = env.another_notifier();
    let r2 = other.refresh().all().unwrap();
    assert_eq!(r2[0].outcome, RefreshOutcome::Rotated, "{:?}", r2[0].error);
    assert_eq!(env.state_json("rot")["rotations"], 2);

    let subject = tag("after-rotation");
    other
        .delivery()
        .send_to_target("rot", &note(&subject))
        .unwrap();
    assert!(rig.find_mail(&subject).is_some());

    // replaying the very first token is what a lost rotation would cause: the rig's reuse
    // detection then revokes the whole grant. We never needed it; prove the rig does detect it.
    let replay = rig.raw_refresh(first_rt.expose(), "rig-post");
    assert_eq!(replay["error"], "invalid_grant");
    // ...and the library now reports a clear re-authorize error, keeping its stored token
    let before = env.state_json("rot")["refresh_token"].clone();
    let r3 = env.notifier.refresh().all().unwrap();
    assert_eq!(r3[0].outcome, RefreshOutcome::NeedsReauthorization);
    let err = r3[0].error.as_deref().unwrap();
    assert!(
        err.contains("re-authorize") && err.contains("'rot'"),
        "{err}"
    );
    let after = env.state_json("rot");
    assert_eq!(
        after["refresh_token"], before,
        "stored refresh token left untouched"
    );
    assert_eq!(after["needs_reauthorization"], true);
    let status = r3[0].status.as_ref().unwrap();
    assert!(status.needs_reauthorization);
    assert!(status.warning.as_deref().unwrap().contains("re-authorize"));
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn google_style_refresh_in_place() {
    let rig = Rig::get();
    let env = Env::new();
    let (t, s) = google_target(&rig, "gmail", "carol-g@example.test");
    env.add_target(&t, &s);
    let rt = env.authorize(&rig, &t, &s, "carol-g@example.test");
    let at_before = env.state_json("gmail")["access_token"].clone();

    let r = env.notifier.refresh().all().unwrap();
    assert_eq!(r[0].outcome, RefreshOutcome::Refreshed, "{:?}", r[0].error);
    let st = env.state_json("gmail");
    assert_eq!(
        st["refresh_token"],
        rt.expose(),
        "Google-style: same refresh token"
    );
    assert_eq!(st["rotations"], 0);
    assert_ne!(st["access_token"], at_before, "new access token cached");

    // implicit TLS (port 465 style) send with the refreshed token
    let subject = tag("google-tls");
    env.notifier
        .delivery()
        .send_to_target("gmail", &note(&subject))
        .unwrap();
    assert!(rig.find_mail(&subject).is_some());
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn cached_access_token_one_token_request_for_twenty_sends() {
    let rig = Rig::get();
    let env = Env::new();
    let (t, s) = microsoft_target(&rig, "cache", "dave-cache@example.test");
    env.add_target(&t, &s);
    let rt = env.authorize(&rig, &t, &s, "dave-cache@example.test");
    // start from a refresh token only (as after `create` with oauth2-refresh-token)
    env.notifier
        .authorization()
        .store_refresh_token(&t, rt)
        .unwrap();
    let before = env.token_requests();
    let subject = tag("cache");
    for i in 0..20 {
        env.notifier
            .delivery()
            .send_to_target("cache", &note(&format!("{subject} #{i}")))
            .unwrap();
    }
    assert_eq!(
        env.token_requests() - before,
        1,
        "20 sends cost 1 token request"
    );
    assert!(rig.find_mail(&format!("{subject} #19")).is_some());
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn revoked_refresh_token_gives_reauthorize_error_and_keeps_state() {
    let rig = Rig::get();
    let env = Env::new();
    let (t, s) = microsoft_target(&rig, "revoked", "erin-rev@example.test");
    env.add_target(&t, &s);
    let rt = env.authorize(&rig, &t, &s, "erin-rev@example.test");
    rig.revoke(rt.expose(), "rig-post");
    let before = env.state_json("revoked");

    // drop the cached access token so the send has to refresh
    let mut st = before.clone();
    st.as_object_mut().unwrap().remove("access_token");
    env.write_state_json("revoked", &st);

    let err = env
        .notifier
        .delivery()
        .send_to_target("revoked", &note("never"))
        .unwrap_err();
    assert!(matches!(err, Error::NeedsReauthorization { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("target 'revoked'") && msg.contains("re-authorize"),
        "{msg}"
    );
    assert_eq!(err.http_code(), 400);
    let after = env.state_json("revoked");
    assert_eq!(after["refresh_token"], before["refresh_token"]);
    assert_eq!(after["authorized_at"], before["authorized_at"]);
    assert!(after["last_error"]["message"]
        .as_str()
        .unwrap()
        .contains("invalid_grant"));

    // a new authorization clears it
    env.authorize(&rig, &t, &s, "erin-rev@example.test");
    let ok = env.notifier.refresh().all().unwrap();
    assert_eq!(ok[0].outcome, RefreshOutcome::Rotated, "{:?}", ok[0].error);
    assert_eq!(env.state_json("revoked")["needs_reauthorization"], false);
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn smtp_rejects_cached_token_then_one_refresh_and_retry() {
    let rig = Rig::get();
    let env = Env::new();
    let (t, s) = microsoft_target(&rig, "retry", "frank-retry@example.test");
    env.add_target(&t, &s);
    env.authorize(&rig, &t, &s, "frank-retry@example.test");
    // a cached access token the server will reject (e.g. revoked since it was cached)
    let mut st = env.state_json("retry");
    st["access_token"] = "revoked-or-garbage-token".into();
    env.write_state_json("retry", &st);

    let before = env.token_requests();
    let subject = tag("retry");
    env.notifier
        .delivery()
        .send_to_target("retry", &note(&subject))
        .unwrap();
    assert_eq!(env.token_requests() - before, 1, "exactly one refresh");
    assert!(rig.find_mail(&subject).is_some());
    assert_ne!(
        env.state_json("retry")["access_token"],
        "revoked-or-garbage-token"
    );
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn smtp_rejects_fresh_token_too_gives_clear_error_after_one_retry() {
    let rig = Rig::get();
    let env = Env::new();
    // authorized as grace@, but the target sends as someone else: Dovecot answers 535
    let (t, s) = microsoft_target(&rig, "wronguser", "mallory@example.test");
    env.add_target(&t, &s);
    env.authorize(&rig, &t, &s, "grace-wrong@example.test");
    let before = env.token_requests();
    let err = env
        .notifier
        .delivery()
        .send_to_target("wronguser", &note("nope"))
        .unwrap_err();
    assert_eq!(
        env.token_requests() - before,
        1,
        "one refresh, one retry, then stop"
    );
    match &err {
        Error::Smtp {
            step: SmtpStep::Auth,
            code: Some(535),
            target,
            ..
        } => assert_eq!(target, "wronguser"),
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("target 'wronguser'") && msg.contains("authentication"),
        "{msg}"
    );
    assert!(
        msg.contains("mallory@example.test"),
        "names the identity: {msg}"
    );
    assert_eq!(err.http_code(), 502);
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn long_token_uses_two_step_auth() {
    // a 3000-character token (Microsoft JWTs are 1.5-2.5 KB) would hit Dovecot's 1024-byte
    // SASL initial-response limit ("500 Line too long"); sent after the 334 it reaches the
    // token check and gets a proper 535
    let rig = Rig::get();
    let settings = Settings::with_dirs("/nonexistent", "/nonexistent");
    let t = base_target(&rig, "long", "henry@example.test");
    let msg = note("long").to_message(&t).unwrap();
    let token = Secret::new("x".repeat(3000));
    let mut ports = vec![rig.starttls_port];
    ports.extend(rig.pf_starttls_port); // Postfix cuts lines at 2048
    for port in ports {
        let mut t = t.clone();
        t.port = Some(port);
        let err = smtp::deliver(
            &settings,
            &t,
            &smtp::Credential::Bearer {
                user: "henry@example.test",
                token: &token,
            },
            &msg,
            std::time::Instant::now() + std::time::Duration::from_secs(30),
        )
        .unwrap_err();
        match err {
            Error::Smtp {
                step: SmtpStep::Auth,
                code: Some(535),
                ..
            } => {}
            other => panic!("port {port}: expected a 535 from the token check, got {other:?}"),
        }
    }
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn state_files_are_private_and_atomic() {
    let rig = Rig::get();
    let env = Env::new();
    let (t, s) = google_target(&rig, "perm", "ivan-perm@example.test");
    env.add_target(&t, &s);
    env.authorize(&rig, &t, &s, "ivan-perm@example.test");
    env.notifier.refresh().all().unwrap();
    let dir = env.settings.oauth2_state_dir();
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let mode = e.metadata().unwrap().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", e.path().display());
        assert!(
            !e.file_name().to_string_lossy().starts_with(".tmp"),
            "temp file left"
        );
    }
    let priv_dir = env
        .settings
        .private_config_file()
        .parent()
        .unwrap()
        .to_path_buf();
    assert_eq!(std::fs::metadata(&priv_dir).unwrap().mode() & 0o777, 0o700);
    assert_eq!(
        std::fs::metadata(env.settings.private_config_file())
            .unwrap()
            .mode()
            & 0o777,
        0o600
    );
    // the public file holds no secret
    let public = std::fs::read_to_string(env.settings.config_file()).unwrap();
    assert!(!public.contains("rig-secret"), "{public}");
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn concurrent_sends_and_refreshes_lose_no_rotation() {
    let rig = Rig::get();
    let env = Env::new();
    let (t, s) = microsoft_target(&rig, "race", "judy-race@example.test");
    env.add_target(&t, &s);
    env.authorize(&rig, &t, &s, "judy-race@example.test");
    let subject = tag("race");
    std::thread::scope(|sc| {
        for w in 0..4 {
            let settings = env.settings.clone();
            let subject = &subject;
            sc.spawn(move || {
                let n = Notifier::new(settings).unwrap();
                for i in 0..3 {
                    let r = n.refresh().all().unwrap();
                    assert!(
                        matches!(r[0].outcome, RefreshOutcome::Rotated),
                        "worker {w}: {:?}",
                        r[0].error
                    );
                    n.delivery()
                        .send_to_target("race", &note(&format!("{subject} {w}-{i}")))
                        .unwrap();
                }
            });
        }
    });
    // 12 rotations, each persisted before the next refresh used it: with reuse detection a
    // single lost rotation would have revoked the grant
    assert_eq!(env.state_json("race")["rotations"], 12);
    let r = env.notifier.refresh().all().unwrap();
    assert_eq!(r[0].outcome, RefreshOutcome::Rotated, "{:?}", r[0].error);
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn generic_provider_with_basic_client_auth_and_public_client() {
    let rig = Rig::get();
    let env = Env::new();
    let mut t = base_target(&rig, "generic", "kim-gen@example.test");
    t.auth_method = AuthMethod::OAuth2;
    t.oauth2_client_id = Some("rig-client".into());
    t.oauth2_authorize_url = Some(format!("{}/auth", rig.issuer));
    t.oauth2_token_url = Some(format!("{}/token", rig.issuer));
    t.oauth2_scope = Some("openid offline_access".into());
    let s = SmtpSecrets {
        password: None,
        oauth2_client_secret: Some(Secret::new("rig-secret")),
        oauth2_private_key: None,
    };
    env.add_target(&t, &s);
    env.authorize(&rig, &t, &s, "kim-gen@example.test");
    let subject = tag("generic");
    env.notifier
        .delivery()
        .send_to_target("generic", &note(&subject))
        .unwrap();
    assert!(rig.find_mail(&subject).is_some());

    // a public client (no secret) must use PKCE; the exchange works with our verifier
    let mut p = t.clone();
    p.name = "public".into();
    p.oauth2_client_id = Some("rig-public".into());
    let none = SmtpSecrets::default();
    env.add_target(&p, &none);
    env.authorize(&rig, &p, &none, "kim-gen@example.test");
    assert_eq!(env.notifier.refresh().all().unwrap().len(), 2);
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn code_exchange_rejects_wrong_pkce_verifier() {
    let rig = Rig::get();
    let env = Env::new();
    let (t, s) = microsoft_target(&rig, "pkce", "leo-pkce@example.test");
    env.add_target(&t, &s);
    let req = env
        .notifier
        .authorization()
        .authorize_url("pkce", REDIRECT_URI)
        .unwrap();
    assert!(req.url.as_str().contains("code_challenge_method=S256"));
    assert!(req.url.as_str().contains("offline_access"));
    let (code, _) = rig.login_and_consent("leo-pkce@example.test", req.url.as_str());
    let err = env
        .notifier
        .authorization()
        .exchange_code(&CodeExchange {
            auth_method: t.auth_method,
            client_id: "rig-post",
            client_secret: s.oauth2_client_secret.clone(),
            code: &code,
            redirect_uri: REDIRECT_URI,
            pkce_verifier: Some(Secret::new(
                "a-wrong-verifier-a-wrong-verifier-a-wrong-verifier",
            )),
            endpoints: oauth2::EndpointParams::of_target(&t),
            target: Some("pkce"),
        })
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("authorization code was rejected") && msg.contains("authorize again"),
        "{msg}"
    );
    assert!(!msg.contains(&code), "the code is not echoed");
    assert!(
        !env.settings.oauth2_state_file("pkce").exists(),
        "nothing stored"
    );
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn plain_and_none_targets_deliver() {
    let rig = Rig::get();
    let env = Env::new();
    let mut p = base_target(&rig, "pw", "plain@example.test");
    p.auth_method = AuthMethod::Plain;
    p.username = Some(rig.plain_user.clone());
    env.add_target(
        &p,
        &SmtpSecrets {
            password: Some(Secret::new(rig.plain_password.clone())),
            oauth2_client_secret: None,
            oauth2_private_key: None,
        },
    );
    let mut n = base_target(&rig, "open", "nobody@example.test");
    n.mode = SmtpMode::Insecure;
    n.port = Some(rig.sink_port);
    n.server = "127.0.0.1".into();
    env.add_target(&n, &SmtpSecrets::default());
    let subject = tag("plain-none");
    // lines starting with '.' (and a lone '.') must survive SMTP transparency unchanged
    let mut n = note(&subject);
    n.body = "line one\n.hidden dot line\n.\n..two dots\nend\n".into();
    let reports = env
        .notifier
        .delivery()
        .send(&["pw", "open", "missing"], &n)
        .unwrap();
    assert!(reports[0].result.is_ok(), "{:?}", reports[0].result);
    assert!(reports[1].result.is_ok(), "{:?}", reports[1].result);
    assert_eq!(reports[2].result.as_ref().unwrap_err().http_code(), 404);
    let mail = rig.find_mail(&subject).unwrap();
    assert!(
        mail.contains("line one\n.hidden dot line\n.\n..two dots\nend\n"),
        "{mail}"
    );

    // a wrong password is a clear auth error that names the target
    let mut bad = p.clone();
    bad.name = "badpw".into();
    env.add_target(
        &bad,
        &SmtpSecrets {
            password: Some(Secret::new("wrong-pw-123")),
            oauth2_client_secret: None,
            oauth2_private_key: None,
        },
    );
    let err = env
        .notifier
        .delivery()
        .send_to_target("badpw", &note("x"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Smtp {
                step: SmtpStep::Auth,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("wrong-pw-123"));
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn tls_errors_and_missing_starttls_are_clear() {
    let rig = Rig::get();
    let env = Env::new();
    // implicit TLS against the STARTTLS port: handshake fails -> TLS step error
    let mut t = base_target(&rig, "tlsmix", "x@example.test");
    t.mode = SmtpMode::Tls;
    env.add_target(&t, &SmtpSecrets::default());
    let err = env
        .notifier
        .delivery()
        .send_to_target("tlsmix", &note("x"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Smtp {
                step: SmtpStep::Tls,
                ..
            }
        ),
        "{err:?}"
    );
    // STARTTLS mode against a server that does not offer it (the sink): refused, no plaintext
    let mut s = base_target(&rig, "nostarttls", "x@example.test");
    s.port = Some(rig.sink_port);
    env.add_target(&s, &SmtpSecrets::default());
    let err = env
        .notifier
        .delivery()
        .send_to_target("nostarttls", &note("x"))
        .unwrap_err();
    assert!(err.to_string().contains("does not offer STARTTLS"), "{err}");
    // nothing listening
    let mut c = base_target(&rig, "closed", "x@example.test");
    c.port = Some(1);
    env.add_target(&c, &SmtpSecrets::default());
    let err = env
        .notifier
        .delivery()
        .send_to_target("closed", &note("x"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Smtp {
                step: SmtpStep::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("target 'closed'"));
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn state_binding_single_use_and_target_bound() {
    let rig = Rig::get();
    let env = Env::new();
    let (a, sa) = microsoft_target(&rig, "first", "nina-state@example.test");
    env.add_target(&a, &sa);
    let (mut b, sb) = microsoft_target(&rig, "second", "nina-state@example.test");
    b.name = "second".into();
    env.add_target(&b, &sb);

    let begun = env
        .notifier
        .authorization()
        .begin("first", REDIRECT_URI)
        .unwrap();
    let url = begun["url"].as_str().unwrap();
    assert!(
        !url.contains("code_verifier"),
        "the verifier never leaves the server"
    );
    let (code, state) = rig.login_and_consent("nina-state@example.test", url);
    assert_eq!(state, begun["state"]);
    // a state issued for 'first' cannot complete 'second'
    let err = env
        .notifier
        .authorization()
        .complete(&state, &code, Some("second"))
        .unwrap_err();
    assert!(
        err.to_string().contains("started for target 'first'"),
        "{err}"
    );
    assert_eq!(err.http_code(), 400);
    // and that attempt consumed it: single use
    let err = env
        .notifier
        .authorization()
        .complete(&state, &code, None)
        .unwrap_err();
    assert!(err.to_string().contains("unknown or already used"), "{err}");

    let begun = env
        .notifier
        .authorization()
        .begin("first", REDIRECT_URI)
        .unwrap();
    let (code, state) =
        rig.login_and_consent("nina-state@example.test", begun["url"].as_str().unwrap());
    assert_eq!(
        env.notifier
            .authorization()
            .complete(&state, &code, Some("first"))
            .unwrap(),
        "first"
    );
    assert!(env.notifier.status().target("first").unwrap().authorized);
    let replay = env
        .notifier
        .authorization()
        .complete(&state, &code, Some("first"))
        .unwrap_err();
    assert!(replay.to_string().contains("already used"), "{replay}");
    let forged = env
        .notifier
        .authorization()
        .complete("forged-state", &code, None)
        .unwrap_err();
    assert!(
        forged.to_string().contains("unknown or already used"),
        "{forged}"
    );
    let dir = env.settings.state_dir.join("pending");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing left pending"
    );
}
