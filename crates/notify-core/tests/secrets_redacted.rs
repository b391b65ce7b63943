//! No secret (client secret, password, refresh/access token, PKCE verifier) appears in any
//! `Debug` output or error message.

use notify_core::delivery::smtp;
use notify_core::oauth2::{self, ClientRegistration, EndpointParams, TokenSet};
use notify_core::state::OAuth2State;
use notify_core::*;
use std::time::Duration;

const SECRETS: &[&str] = &[
    "CLIENT-SECRET-xyz",
    "PASSWORD-xyz",
    "REFRESH-TOKEN-xyz",
    "ACCESS-TOKEN-xyz",
];

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} leaks {s}: {text}");
    }
}

#[test]
fn debug_output_is_redacted() {
    let secrets = SmtpSecrets {
        password: Some(Secret::new("PASSWORD-xyz")),
        oauth2_client_secret: Some(Secret::new("CLIENT-SECRET-xyz")),
        oauth2_private_key: None,
    };
    assert_clean("SmtpSecrets", &format!("{secrets:?}"));
    let mut state = OAuth2State::authorized(Secret::new("REFRESH-TOKEN-xyz"));
    state.access_token = Some(Secret::new("ACCESS-TOKEN-xyz"));
    assert_clean("OAuth2State", &format!("{state:?} {state:#?}"));
    let tokens = TokenSet {
        access_token: Secret::new("ACCESS-TOKEN-xyz"),
        expires_in: Some(Duration::from_secs(3600)),
        refresh_token: Some(Secret::new("REFRESH-TOKEN-xyz")),
    };
    assert_clean("TokenSet", &format!("{tokens:?}"));
    let reg = ClientRegistration::new(
        AuthMethod::GoogleOAuth2,
        "client-id",
        Some(Secret::new("CLIENT-SECRET-xyz")),
        &EndpointParams::default(),
    )
    .unwrap();
    assert_clean("ClientRegistration", &format!("{reg:?}"));
    let req = oauth2::authorize_url(&reg, "http://127.0.0.1:1/cb", None).unwrap();
    let dbg = format!("{req:?}");
    assert!(
        !dbg.contains(req.pkce_verifier.expose()),
        "PKCE verifier leaked: {dbg}"
    );
    // the challenge is in the URL, the verifier is not
    assert!(req.url.as_str().contains("code_challenge="));
    assert!(!req.url.as_str().contains(req.pkce_verifier.expose()));
    // a proxy URL with credentials (OXNOTIFY_HTTP_PROXY) is shown without them
    let mut settings = Settings::with_dirs("/etc/x", "/var/x");
    settings.http_proxy = Some("http://proxyuser:PASSWORD-xyz@proxy.example.com:3128".into());
    let dbg = format!("{settings:?}");
    assert_clean("Settings", &dbg);
    assert!(
        dbg.contains("proxy.example.com:3128") && !dbg.contains("proxyuser"),
        "{dbg}"
    );
    let n = Notifier::new(settings).unwrap();
    assert_clean("Notifier", &format!("{n:?}"));
    let xo = smtp::xoauth2_response("a@example.com", &Secret::new("ACCESS-TOKEN-xyz"));
    assert_clean("xoauth2 response", &format!("{xo:?}"));
}

#[test]
fn errors_from_secret_handling_paths_are_clean() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    // the closed port is transient: retried until this deadline
    settings.http_timeout = std::time::Duration::from_secs(2);
    let n = Notifier::new(settings).unwrap();
    // an exchange against an endpoint that does not exist, with every secret in play
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token_url = format!("http://127.0.0.1:{port}/token");
    let target = SmtpTarget {
        auth_method: AuthMethod::OAuth2,
        oauth2_client_id: Some("cid".into()),
        oauth2_token_url: Some(token_url.clone()),
        oauth2_scope: Some("smtp".into()),
        broker_allow: Default::default(),
        ..SmtpTarget::new(
            "x",
            "127.0.0.1",
            "a@example.com",
            vec!["b@example.com".into()],
        )
    };
    let lock = notify_core::config::ConfigLock::acquire(n.settings()).unwrap();
    let mut cfg = NotificationConfig::load(n.settings()).unwrap();
    cfg.add_smtp_target(&target, &SmtpSecrets::default())
        .unwrap();
    cfg.save(n.settings(), &lock).unwrap();
    drop(lock);
    let err = n
        .authorization()
        .exchange_code(&CodeExchange {
            auth_method: AuthMethod::OAuth2,
            client_id: "cid",
            client_secret: Some(Secret::new("CLIENT-SECRET-xyz")),
            code: "REFRESH-TOKEN-xyz",
            redirect_uri: "http://127.0.0.1:1/cb",
            pkce_verifier: Some(Secret::new("PASSWORD-xyz")),
            endpoints: EndpointParams {
                token_url: Some(&token_url),
                scope: Some("smtp"),
                ..Default::default()
            },
            target: Some("x"),
        })
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("could not reach the token endpoint"),
        "{err}"
    );
    assert_clean("exchange error", &format!("{err} {err:?}"));
    // storing a refresh token with a control character: rejected without echoing it
    let err = n
        .authorization()
        .store_refresh_token(&target, Secret::new("REFRESH-TOKEN-xyz\r\n"))
        .unwrap_err();
    assert_clean("store error", &format!("{err} {err:?}"));
    assert_clean("notifier", &format!("{n:?}"));
}
