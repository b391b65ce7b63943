//! The login check that sends nothing (`Deliverer::verify`), against the rig's real OAuth2
//! server and Dovecot: a token (cached or new, and it says which), then connect, EHLO,
//! STARTTLS, AUTH, QUIT, each step timed; nothing is delivered.

mod common;

use common::*;
use notify_core::*;

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn verify_logs_in_sends_nothing_and_says_where_the_token_came_from() {
    let rig = Rig::get();
    let env = Env::new();
    let (t, s) = microsoft_target(&rig, "check", "verify-me@example.test");
    env.add_target(&t, &s);
    env.authorize(&rig, &t, &s, "verify-me@example.test");
    let v = env.notifier.delivery().verify("check").unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(
        v.steps.iter().map(|s| s.step).collect::<Vec<_>>(),
        ["token", "smtp"]
    );
    let first = v.credential;
    // a second check within the interval is refused: it costs a login each time
    let e = env.notifier.delivery().verify("check").unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        e.to_string().contains("at most one per 10 s; try again in"),
        "{e}"
    );
    assert_eq!(e.http_code(), 429);
    // after the interval the cached token is used
    std::thread::sleep(std::time::Duration::from_secs(11));
    let v = env.notifier.delivery().verify("check").unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.credential, "cached token", "first: {first}");
    assert!(
        rig.find_mail("verify-me").is_none(),
        "the login check delivered something"
    );
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn verify_names_the_failing_step_and_what_to_do() {
    let rig = Rig::get();
    let env = Env::new();
    let mut t = base_target(&rig, "wrong-pw", &rig.plain_user);
    t.auth_method = AuthMethod::Plain;
    t.username = Some(rig.plain_user.clone());
    env.add_target(
        &t,
        &SmtpSecrets {
            password: Some(Secret::new("not-the-password-0123")),
            ..Default::default()
        },
    );
    let v = env.notifier.delivery().verify("wrong-pw").unwrap();
    assert!(!v.ok, "{v:?}");
    assert_eq!(v.credential, "password");
    let error = v.error.unwrap();
    assert!(error.contains("SMTP authentication failed"), "{error}");
    assert!(!error.contains("not-the-password-0123"), "{error}");
    assert_ne!(
        v.kind,
        Some(ErrorKind::Transient),
        "a refused login is not transient"
    );
}
