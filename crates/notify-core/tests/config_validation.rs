//! Config parsing and validation: every error names file, line, target and key, says what to
//! do, and a rejected change leaves the files as they were.

use notify_core::config::ConfigLock;
use notify_core::*;
use std::path::Path;

fn setup(public: &str, private: Option<&str>) -> (tempfile::TempDir, Settings) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    std::fs::create_dir_all(settings.private_config_file().parent().unwrap()).unwrap();
    std::fs::write(settings.config_file(), public).unwrap();
    if let Some(p) = private {
        std::fs::write(settings.private_config_file(), p).unwrap();
    }
    (dir, settings)
}

const OK_TARGET: &str = "smtp: m365\n\tserver smtp.office365.com\n\tmode starttls\n\tauth-method microsoft-oauth2\n\tfrom-address alerts@example.com\n\tmailto ops@example.com\n\toauth2-client-id 11111111-2222-3333-4444-555555555555\n\toauth2-tenant-id 12345678-90ab-cdef-1234-567890abcdef\n";

/// The error for target `name` in a config whose only SMTP section is `body`.
fn target_error(body: &str) -> String {
    let (_d, s) = setup(&format!("smtp: t1\n{body}"), None);
    let cfg = NotificationConfig::load(&s).unwrap();
    let err = cfg.smtp_target("t1").unwrap_err();
    assert_eq!(err.http_code(), 400);
    let msg = err.to_string();
    assert!(
        msg.contains("notifications.cfg") && msg.contains("target 't1'"),
        "{msg}"
    );
    msg
}

const BASE: &str =
    "\tserver mail.example.com\n\tfrom-address a@example.com\n\tmailto b@example.com\n";

#[test]
fn valid_config_reads_with_defaults() {
    let (_d, s) = setup(
        OK_TARGET,
        Some("smtp: m365\n\toauth2-client-secret s3cr3t\n"),
    );
    let cfg = NotificationConfig::load(&s).unwrap();
    let t = cfg.smtp_target("m365").unwrap();
    assert_eq!(t.effective_port(), 587);
    assert_eq!(t.auth_method, AuthMethod::MicrosoftOAuth2);
    assert_eq!(
        cfg.smtp_secrets("m365")
            .unwrap()
            .oauth2_client_secret
            .unwrap()
            .expose(),
        "s3cr3t"
    );
}

#[test]
fn auth_method_is_inferred_for_old_configs() {
    let (_d, s) = setup(
        &format!("smtp: old\n{BASE}\tusername u\n\nsmtp: anon\n{BASE}"),
        Some("smtp: old\n\tpassword pw\n"),
    );
    let cfg = NotificationConfig::load(&s).unwrap();
    assert_eq!(
        cfg.smtp_target("old").unwrap().auth_method,
        AuthMethod::Plain
    );
    assert_eq!(
        cfg.smtp_target("anon").unwrap().auth_method,
        AuthMethod::None
    );
    assert_eq!(
        cfg.smtp_target("anon").unwrap().effective_port(),
        465,
        "default mode tls"
    );
}

#[test]
fn unknown_key_names_line_and_key() {
    let m = target_error(&format!("{BASE}\tcolour blue\n"));
    assert!(
        m.contains("line 5") && m.contains("unknown key 'colour'"),
        "{m}"
    );
    let m = target_error(&format!("{BASE}\tpassword pw\n"));
    assert!(m.contains("private file"), "{m}");
}

#[test]
fn bad_values_are_rejected_with_line_and_key() {
    for (extra, key, what) in [
        ("\tport 70000\n", "port", "not a port"),
        ("\tport 0\n", "port", "not a port"),
        ("\tmode ssl\n", "mode", "not a mode"),
        ("\tmailto not-an-address\n", "mailto", "not a valid e-mail"),
        ("\tdisable maybe\n", "disable", "boolean"),
        (
            "\tauth-method kerberos\n",
            "auth-method",
            "not an auth method",
        ),
        ("\tcomment ok\r\n", "comment", "carriage return"),
        ("\tserver x\n", "server", "more than once"),
    ] {
        let m = target_error(&format!("{BASE}{extra}"));
        assert!(
            m.contains(&format!("key '{key}'")) && m.contains(what),
            "{extra:?}: {m}"
        );
        assert!(m.contains("line "), "{m}");
    }
    let m =
        target_error("\tserver mail.example.com\n\tfrom-address nope\n\tmailto b@example.com\n");
    assert!(m.contains("line 3") && m.contains("'from-address'"), "{m}");
}

#[test]
fn duplicate_names_are_reported_and_the_first_section_kept() {
    let (_d, s) = setup(
        &format!("smtp: a\n{BASE}\nsendmail: a\n\tmailto x@example.com\n"),
        None,
    );
    let cfg = NotificationConfig::load(&s).unwrap();
    assert!(cfg.smtp_target("a").is_ok());
    let m: Vec<String> = cfg.problems().iter().map(|e| e.to_string()).collect();
    assert!(
        m.len() == 1 && m[0].contains("line 6") && m[0].contains("duplicate section name"),
        "{m:?}"
    );
}

#[test]
fn oauth2_requirements() {
    let m = target_error(&format!(
        "{BASE}\tmode starttls\n\tauth-method google-oauth2\n"
    ));
    assert!(
        m.contains("'oauth2-client-id'") && m.contains("client (application) ID"),
        "{m}"
    );
    let m = target_error(&format!(
        "{BASE}\tmode starttls\n\tauth-method microsoft-oauth2\n\toauth2-client-id c\n"
    ));
    assert!(m.contains("'oauth2-tenant-id'"), "{m}");
    for bad in ["contoso", "../evil", "a/b", "1234-5678", "evil.com?x=1"] {
        let m = target_error(&format!(
            "{BASE}\tmode starttls\n\tauth-method microsoft-oauth2\n\toauth2-client-id c\n\toauth2-tenant-id {bad}\n"
        ));
        assert!(
            m.contains("not a tenant ID") && m.contains("line 8"),
            "{bad}: {m}"
        );
    }
    let m = target_error(&format!("{BASE}\tmode starttls\n\tauth-method google-oauth2\n\toauth2-client-id c\n\toauth2-tenant-id contoso.com\n"));
    assert!(
        m.contains("only valid with auth-method microsoft-oauth2"),
        "{m}"
    );
    let m = target_error(&format!(
        "{BASE}\tmode starttls\n\tauth-method oauth2\n\toauth2-client-id c\n\toauth2-scope x\n"
    ));
    assert!(m.contains("'oauth2-token-url'"), "{m}");
    let m = target_error(&format!("{BASE}\tmode starttls\n\tauth-method oauth2\n\toauth2-client-id c\n\toauth2-scope x\n\toauth2-token-url http://idp.example.com/token\n"));
    assert!(m.contains("https://"), "{m}");
}

#[test]
fn authenticated_smtp_needs_tls_unless_explicitly_allowed() {
    // an existing section (the reference accepts it) loads and keeps sending, with a warning
    let legacy = format!("smtp: t1\n{BASE}\tmode insecure\n\tusername u\n");
    let (_d, s) = setup(&legacy, Some("smtp: t1\n\tpassword pw\n"));
    let t = NotificationConfig::load(&s)
        .unwrap()
        .smtp_target("t1")
        .unwrap();
    let w = t.insecure_auth_warning().expect("a warning");
    assert!(
        w.contains("clear text") && w.contains("allow-insecure-auth"),
        "{w}"
    );
    let n = Notifier::new(s.clone()).unwrap();
    let listed = api::list_targets(&n).unwrap();
    assert_eq!(listed[0]["warning"].as_str(), Some(w.as_str()));
    // ... but creating or updating one is refused
    let params = |extra: serde_json::Value| {
        let mut m = serde_json::json!({
            "name": "t2", "server": "mail.example.com", "from-address": "a@example.com",
            "mailto": ["b@example.com"], "mode": "insecure", "username": "u", "password": "pw",
        });
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        m.as_object().unwrap().clone()
    };
    let err = api::create_target(&n, &params(serde_json::json!({}))).unwrap_err();
    assert_eq!(err.http_code(), 400);
    assert!(
        err.to_string().contains("'mode'") && err.to_string().contains("allow-insecure-auth"),
        "{err}"
    );
    let comment = serde_json::json!({ "comment": "x" });
    let err = api::update_target(&n, "t1", comment.as_object().unwrap(), &[], None).unwrap_err();
    assert!(err.to_string().contains("allow-insecure-auth"), "{err}");
    api::create_target(&n, &params(serde_json::json!({ "allow-insecure-auth": 1 }))).unwrap();
    let t2 = notify_core::NotificationConfig::load(n.settings())
        .unwrap()
        .smtp_target("t2")
        .unwrap();
    assert!(t2.insecure_auth_warning().is_none());
}

#[test]
fn mailto_user_is_a_recipient_and_new_names_are_pve_config_ids() {
    let (_d, s) = setup(
        &format!("smtp: t1\n\tserver mail.example.com\n\tfrom-address a@example.com\n\tmailto-user root@pam\n\tmailto-user alice@pve\n\nsmtp: old.name\n{BASE}"),
        None,
    );
    let cfg = NotificationConfig::load(&s).unwrap();
    let t = cfg.smtp_target("t1").unwrap();
    assert_eq!(t.mailto_user, ["root@pam", "alice@pve"]);
    assert!(t.mailto.is_empty());
    // names written before the pve-configid rule still load
    assert!(cfg.smtp_target("old.name").is_ok());
    let m = target_error(
        "\tserver mail.example.com\n\tfrom-address a@example.com\n\tmailto-user not-a-user\n",
    );
    assert!(
        m.contains("'mailto-user'") && m.contains("user@realm"),
        "{m}"
    );
    let m = target_error("\tserver mail.example.com\n\tfrom-address a@example.com\n");
    assert!(m.contains("mailto-user"), "{m}");

    let n = Notifier::new(s.clone()).unwrap();
    let mut note = Notification {
        title: "t".into(),
        ..Default::default()
    };
    let err = note.recipients(&t).unwrap_err();
    assert!(err.to_string().contains("set_user_email_resolver"), "{err}");
    note.user_emails = Some([("root@pam".to_string(), "root@example.com".to_string())].into());
    assert_eq!(note.recipients(&t).unwrap(), ["root@example.com"]);
    note.user_emails = Some(Default::default());
    let err = note.recipients(&t).unwrap_err();
    assert!(err.to_string().contains("no recipient"), "{err}");

    let create = |name: &str| {
        let p = serde_json::json!({ "name": name, "server": "mail.example.com",
            "from-address": "a@example.com", "mailto-user": ["root@pam"] });
        api::create_target(&n, p.as_object().unwrap())
    };
    for bad in ["x", "a.b", "1a"] {
        let err = create(bad).unwrap_err();
        assert!(err.to_string().contains("pve-configid"), "{bad}: {err}");
    }
    create("ok_name-2").unwrap();
    // delete mailto-user while mailto is set: fine; delete the last recipient key: refused
    let set = serde_json::json!({ "mailto": ["b@example.com"] });
    api::update_target(&n, "ok_name-2", set.as_object().unwrap(), &[], None).unwrap();
    api::update_target(
        &n,
        "ok_name-2",
        &Default::default(),
        &["mailto-user".into()],
        None,
    )
    .unwrap();
    let err = api::update_target(
        &n,
        "ok_name-2",
        &Default::default(),
        &["mailto".into()],
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("recipient"), "{err}");
}

#[test]
fn plain_without_password_is_reported_against_the_private_file() {
    let (_d, s) = setup(
        &format!("smtp: t1\n{BASE}\tauth-method plain\n\tusername u\n"),
        None,
    );
    let cfg = NotificationConfig::load(&s).unwrap();
    let m = cfg.smtp_secrets("t1").unwrap_err().to_string();
    assert!(
        m.contains("priv/notifications.cfg") && m.contains("needs a password"),
        "{m}"
    );
}

#[test]
fn one_bad_target_does_not_break_the_others() {
    let (_d, s) = setup(
        &format!("smtp: bad\n\tserver x\n\nsmtp: good\n{BASE}"),
        None,
    );
    let cfg = NotificationConfig::load(&s).unwrap();
    let all = cfg.smtp_targets();
    assert!(all[0].1.is_err() && all[1].1.is_ok());
}

#[test]
fn write_keeps_unknown_sections_comments_and_order() {
    let original = format!("# site notifications\nsendmail: local\n\tmailto-user root@pam\n\n{OK_TARGET}\nmatcher: everything\n\tmode all\n\ttarget m365\n");
    let (_d, s) = setup(
        &original,
        Some("smtp: m365\n\toauth2-client-secret s3cr3t\n"),
    );
    let lock = ConfigLock::acquire(&s).unwrap();
    let mut cfg = NotificationConfig::load(&s).unwrap();
    let mut t = cfg.smtp_target("m365").unwrap();
    t.comment = Some("rotated to new tenant".into());
    let secrets = cfg.smtp_secrets("m365").unwrap();
    cfg.update_smtp_target(&t, &secrets).unwrap();
    cfg.save(&s, &lock).unwrap();
    let text = std::fs::read_to_string(s.config_file()).unwrap();
    assert!(text.starts_with("# site notifications\nsendmail: local\n\tmailto-user root@pam\n\nsmtp: m365\n\tserver smtp.office365.com\n"), "{text}");
    assert!(text.contains("\tcomment rotated to new tenant\n"), "{text}");
    assert!(
        text.ends_with("\nmatcher: everything\n\tmode all\n\ttarget m365\n"),
        "{text}"
    );
}

#[test]
fn rejected_changes_leave_files_intact_and_digest_detects_conflicts() {
    let (_d, s) = setup(
        OK_TARGET,
        Some("smtp: m365\n\toauth2-client-secret s3cr3t\n"),
    );
    let before_pub = std::fs::read(s.config_file()).unwrap();
    let before_priv = std::fs::read(s.private_config_file()).unwrap();
    let lock = ConfigLock::acquire(&s).unwrap();
    let mut cfg = NotificationConfig::load(&s).unwrap();
    let digest = cfg.digest().to_string();
    let mut t = cfg.smtp_target("m365").unwrap();
    t.name = "m365".into();
    t.from_address = "evil@example.com\r\nBcc: everyone@example.com".into();
    let err = cfg
        .update_smtp_target(&t, &SmtpSecrets::default())
        .unwrap_err();
    assert!(err.to_string().contains("carriage return"), "{err}");
    let dup = cfg.smtp_target("m365").unwrap();
    assert_eq!(
        cfg.add_smtp_target(&dup, &SmtpSecrets::default())
            .unwrap_err()
            .to_string(),
        "notification target 'm365' already exists"
    );
    assert_eq!(std::fs::read(s.config_file()).unwrap(), before_pub);
    assert_eq!(std::fs::read(s.private_config_file()).unwrap(), before_priv);

    // someone else changes the file: our digest no longer matches
    cfg.check_digest(Some(&digest)).unwrap();
    let mut other = NotificationConfig::load(&s).unwrap();
    other.remove_smtp_target("m365").unwrap();
    other.save(&s, &lock).unwrap();
    let fresh = NotificationConfig::load(&s).unwrap();
    let err = fresh.check_digest(Some(&digest)).unwrap_err();
    assert_eq!(err.http_code(), 409);
}

#[test]
fn malformed_files_give_clear_errors() {
    for (text, want) in [
        ("\tserver x\n", "outside of a section"),
        ("smtp a\n", "section header"),
        ("smtp: a b\n", "malformed section header"),
    ] {
        let (_d, s) = setup(text, None);
        let cfg = NotificationConfig::load(&s).unwrap();
        let m = cfg.problems()[0].to_string();
        assert!(m.contains(want) && m.contains("line 1"), "{text:?}: {m}");
    }
    let (_d, s) = setup("smtp: a\n", None);
    std::fs::write(s.config_file(), b"smtp: a\n\tcomment \xff\n").unwrap();
    let m = NotificationConfig::load(&s).unwrap_err().to_string();
    assert!(m.contains("not valid UTF-8"), "{m}");
    let _ = Path::new("");
}

#[test]
fn max_connections_is_read_checked_and_defaults_to_two() {
    let (_d, s) = setup(&format!("smtp: t1\n{BASE}"), None);
    let t = NotificationConfig::load(&s)
        .unwrap()
        .smtp_target("t1")
        .unwrap();
    assert_eq!((t.max_connections, t.connection_limit()), (None, 2));
    let (_d, s) = setup(&format!("smtp: t1\n{BASE}\tmax-connections 3\n"), None);
    let t = NotificationConfig::load(&s)
        .unwrap()
        .smtp_target("t1")
        .unwrap();
    assert_eq!(t.connection_limit(), 3);
    assert!(t
        .to_entries()
        .contains(&("max-connections".into(), "3".into())));
    for bad in ["0", "101", "x", "-1"] {
        let msg = target_error(&format!("{BASE}\tmax-connections {bad}\n"));
        assert!(
            msg.contains("key 'max-connections'") && msg.contains("from 1 to 100"),
            "{msg}"
        );
    }
}

/// The OAuth2 modes: combinations that cannot work are refused with the reason and the way out.
#[test]
fn oauth2_flow_combinations_that_cannot_work_are_refused_with_the_reason() {
    let ms =
        "\tauth-method microsoft-oauth2\n\toauth2-client-id c\n\toauth2-tenant-id contoso.com\n";
    let google = "\tauth-method google-oauth2\n\toauth2-client-id c\n";
    let cases: [(String, &str, &str); 8] = [
        (format!("{google}\toauth2-flow client-credentials\n"), "oauth2-flow", "service-account"),
        (format!("{google}\toauth2-flow device-code\n"), "oauth2-flow", "https://mail.google.com/"),
        (format!("{google}\toauth2-flow password\n"), "oauth2-flow", "no password grant"),
        (format!("{ms}\toauth2-flow service-account\n"), "oauth2-flow", "client-credentials"),
        (format!("{google}\toauth2-flow service-account\n"), "oauth2-service-account", "client_email"),
        (
            "\tauth-method microsoft-oauth2\n\toauth2-client-id c\n\toauth2-tenant-id common\n\toauth2-flow password\n".to_string(),
            "oauth2-tenant-id",
            "/common",
        ),
        (format!("{ms}\toauth2-flow sideways\n"), "oauth2-flow", "not an OAuth2 flow"),
        (
            format!("{ms}\toauth2-client-auth private-key-jwt\n\toauth2-certificate-thumbprint abc\n"),
            "oauth2-certificate-thumbprint",
            "40 hex digits",
        ),
    ];
    for (keys, key, says) in cases {
        let msg = target_error(&format!("{BASE}{keys}"));
        assert!(msg.contains(key) && msg.contains(says), "{keys}: {msg}");
    }
}

#[test]
fn oauth2_flow_secrets_are_checked() {
    let (_d, s) = setup("", None);
    let t = |flow: &str, auth: Option<&str>| {
        let mut t = SmtpTarget::new(
            "t1",
            "mail.example.com",
            "a@example.com",
            vec!["b@example.com".into()],
        );
        t.auth_method = AuthMethod::MicrosoftOAuth2;
        t.oauth2_client_id = Some("c".into());
        t.oauth2_tenant_id = Some("contoso.com".into());
        t.oauth2_flow = config::smtp::OAuth2Flow::parse(flow);
        t.oauth2_client_auth = auth.and_then(config::smtp::ClientAuthMethod::parse);
        t
    };
    let add = |target: &SmtpTarget, secrets: SmtpSecrets| {
        let _lock = ConfigLock::acquire(&s).unwrap();
        let mut cfg = NotificationConfig::load(&s).unwrap();
        cfg.add_smtp_target(target, &secrets)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let e = add(&t("client-credentials", None), SmtpSecrets::default()).unwrap_err();
    assert!(
        e.contains("oauth2-client-secret") && e.contains("private-key-jwt"),
        "{e}"
    );
    let e = add(
        &t("client-credentials", Some("private-key-jwt")),
        SmtpSecrets::default(),
    )
    .unwrap_err();
    assert!(e.contains("oauth2-private-key"), "{e}");
    let e = add(&t("password", None), SmtpSecrets::default()).unwrap_err();
    assert!(e.contains("password"), "{e}");
    let e = add(
        &t("device-code", Some("private-key-jwt")),
        SmtpSecrets {
            oauth2_private_key: Some(Secret::new("x")),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.contains("single-use client assertion"), "{e}");
}
