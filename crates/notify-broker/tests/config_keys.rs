//! The target keys `broker-allow-user` and `broker-allow-group`: parsed (repeatable, comma or
//! blank separated), validated (account names or IDs, OAuth2 targets only), kept by API
//! updates, and not part of what stored tokens are bound to (granting the broker to a local
//! account does not cost the authorization).

use notify_core::binding::Binding;
use notify_core::*;

fn load(body: &str) -> Result<SmtpTarget> {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    std::fs::create_dir_all(&settings.config_dir).unwrap();
    std::fs::write(settings.config_file(), format!("smtp: relay\n{body}")).unwrap();
    NotificationConfig::load(&settings)?.smtp_target("relay")
}

const OAUTH2: &str = "\tserver smtp.example.com\n\tmode starttls\n\tauth-method oauth2\n\tfrom-address a@example.com\n\tmailto b@example.com\n\toauth2-client-id cid\n\toauth2-token-url https://login.example.com/token\n\toauth2-scope smtp\n";

#[test]
fn parses_lists_and_ids() {
    let t = load(&format!(
        "{OAUTH2}\tbroker-allow-user root\n\tbroker-allow-group Debian-exim, 109\n\tbroker-allow-user 65534\n"
    ))
    .unwrap();
    assert_eq!(t.broker_allow.users, ["root", "65534"]);
    assert_eq!(t.broker_allow.groups, ["Debian-exim", "109"]);
    // written back in canonical form, one per line
    let entries = t.to_entries();
    let groups: Vec<_> = entries
        .iter()
        .filter(|(k, _)| k == "broker-allow-group")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(groups, ["Debian-exim", "109"]);
}

#[test]
fn refuses_bad_names_and_non_oauth2_targets() {
    let err = load(&format!("{OAUTH2}\tbroker-allow-user r/oot\n")).unwrap_err();
    let m = err.to_string();
    assert!(
        m.contains("broker-allow-user") && m.contains("not a user or group name"),
        "{m}"
    );
    let err = load(
        "\tserver smtp.example.com\n\tfrom-address a@example.com\n\tmailto b@example.com\n\tbroker-allow-group mail\n",
    )
    .unwrap_err();
    let m = err.to_string();
    assert!(
        m.contains("broker-allow-group") && m.contains("only valid with an OAuth2"),
        "{m}"
    );
}

/// Handing a target's token to another local account is sending a stored secret to a new
/// destination: an edit right alone must not do it, so the stored tokens stop working (the
/// target needs authorizing again) when the allow-list changes.
#[test]
fn changing_who_the_broker_serves_unbinds_stored_tokens() {
    let plain = load(OAUTH2).unwrap();
    let allowed = load(&format!("{OAUTH2}\tbroker-allow-group Debian-exim\n")).unwrap();
    let (a, b) = (Binding::of(&plain), Binding::of(&allowed));
    assert!(
        !a.registration_changed(&b),
        "the app registration is the same"
    );
    assert!(
        a.delivery_changed(&b),
        "but the token may now go to another account"
    );
    // the order of the entries does not matter
    let ab = load(&format!(
        "{OAUTH2}\tbroker-allow-user a\n\tbroker-allow-user b\n"
    ))
    .unwrap();
    let ba = load(&format!(
        "{OAUTH2}\tbroker-allow-user b\n\tbroker-allow-user a\n"
    ))
    .unwrap();
    assert!(!Binding::of(&ab).delivery_changed(&Binding::of(&ba)));
}

#[test]
fn api_updates_set_and_keep_them() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    let n = Notifier::new(settings).unwrap();
    let create = serde_json::json!({ "name": "relay", "server": "smtp.example.com",
        "mode": "starttls", "auth-method": "oauth2", "from-address": "a@example.com",
        "mailto": ["b@example.com"], "oauth2-client-id": "cid",
        "oauth2-token-url": "https://login.example.com/token", "oauth2-scope": "smtp",
        "broker-allow-group": ["Debian-exim"] });
    api::create_target(&n, create.as_object().unwrap()).unwrap();
    let other = serde_json::json!({ "comment": "x" });
    api::update_target(&n, "relay", other.as_object().unwrap(), &[], None).unwrap();
    let t = notify_core::NotificationConfig::load(n.settings())
        .unwrap()
        .smtp_target("relay")
        .unwrap();
    assert_eq!(t.broker_allow.groups, ["Debian-exim"]);
    api::update_target(
        &n,
        "relay",
        &Default::default(),
        &["broker-allow-group".to_string()],
        None,
    )
    .unwrap();
    let t = notify_core::NotificationConfig::load(n.settings())
        .unwrap()
        .smtp_target("relay")
        .unwrap();
    assert!(t.broker_allow.groups.is_empty());
}
