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

/// A hand-written STAND-IN for a Graph endpoint that echoes the bearer token back in every
/// form (raw, `Bearer ...`, base64, percent-encoded) in its error bodies and headers: a fault
/// no real server produces on demand.
struct EchoingGraphStandIn {
    status: u16,
}

impl oauth2::TokenHttpClient for EchoingGraphStandIn {
    fn call(&self, req: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, oauth2::HttpError> {
        use base64::Engine;
        let auth = req.headers()["authorization"].to_str().unwrap().to_string();
        let token = auth.trim_start_matches("Bearer ");
        let echo = format!(
            "got '{auth}' = {} = {} = {}",
            base64::engine::general_purpose::STANDARD.encode(token),
            token.replace('-', "%2D"),
            base64::engine::general_purpose::STANDARD.encode(&auth),
        );
        let body = serde_json::json!({"error": {
            "code": format!("InvalidAuthenticationToken {token}"),
            "message": echo,
            "innerError": {"request-id": token, "date": auth},
        }});
        let mut resp = oauth2::HttpResponse::new(serde_json::to_vec(&body).unwrap());
        *resp.status_mut() = ::oauth2::http::StatusCode::from_u16(self.status).unwrap();
        resp.headers_mut()
            .insert("retry-after", ::oauth2::http::HeaderValue::from_static("1"));
        Ok(resp)
    }
}

#[test]
fn graph_errors_never_carry_the_token_however_it_is_echoed() {
    use notify_core::config::smtp::Transport;
    use notify_core::delivery::graph;
    let settings = Settings::with_dirs("/etc/x", "/var/x");
    let target = SmtpTarget {
        auth_method: AuthMethod::MicrosoftOAuth2,
        transport: Some(Transport::Graph),
        oauth2_client_id: Some("cid".into()),
        oauth2_tenant_id: Some("contoso.com".into()),
        ..SmtpTarget::new(
            "g",
            "graph.microsoft.com",
            "a@contoso.com",
            vec!["b@contoso.com".into()],
        )
    };
    let message = smtp::Outgoing::of(
        &Notification {
            title: "t".into(),
            body: "b".into(),
            ..Default::default()
        }
        .to_message(&target)
        .unwrap(),
    );
    let token = Secret::new("ACCESS-TOKEN-xyz");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for status in [400, 401, 403, 404, 413, 429, 503] {
        let http = EchoingGraphStandIn { status };
        for messages in [std::slice::from_ref(&message), &[]] {
            let b = graph::deliver_batch(
                &settings,
                &http,
                &target,
                &token,
                messages,
                deadline,
                &mut |_| {},
            );
            let errors: Vec<String> = b
                .done
                .iter()
                .filter_map(|r| r.as_ref().err())
                .chain(b.stopped.as_ref())
                .map(|e| format!("{e} {e:?}"))
                .collect();
            assert!(
                !errors.is_empty() || (status == 400 && messages.is_empty()),
                "{status}"
            );
            for e in errors {
                assert_clean(&format!("Graph {status}"), &e);
                assert!(!e.contains("QUNDRVNTLVRPS0VO"), "base64 of the token: {e}");
                assert!(!e.contains("ACCESS%2DTOKEN"), "percent-encoded token: {e}");
            }
        }
    }
}
