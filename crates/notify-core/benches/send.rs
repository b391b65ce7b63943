//! Delivery benchmark over loopback against the real rig (run with `make bench`):
//! median/p90 latency of one send with `none` (aiosmtpd), `plain` (Dovecot, STARTTLS), XOAUTH2
//! with a cached access token, and XOAUTH2 with a token refresh (rotating refresh token,
//! persisted) before each send; plus token requests per 100 sends, and 100 notifications as
//! separate sends against one burst over one session.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use notify_core::*;
use std::time::{Duration, Instant};

const N: usize = 40;

fn stats(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<34} n={:<4} median {:>7.2} ms   p90 {:>7.2} ms   min {:>7.2} ms",
        samples.len(),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() * 9 / 10]),
        ms(samples[0])
    );
}

fn time_sends(env: &Env, target: &str, before_each: impl Fn()) -> Vec<Duration> {
    let n = note("bench");
    // one warm-up send (connection setup paths, first TLS config load)
    env.notifier.delivery().send_to_target(target, &n).unwrap();
    (0..N)
        .map(|_| {
            before_each();
            let t0 = Instant::now();
            env.notifier.delivery().send_to_target(target, &n).unwrap();
            t0.elapsed()
        })
        .collect()
}

fn main() {
    let rig = Rig::get();
    let env = Env::new();

    let mut none = base_target(&rig, "none", "bench@example.test");
    none.mode = SmtpMode::Insecure;
    none.server = "127.0.0.1".into();
    none.port = Some(rig.sink_port);
    env.add_target(&none, &SmtpSecrets::default());

    let mut plain = base_target(&rig, "plain", &rig.plain_user);
    plain.auth_method = AuthMethod::Plain;
    plain.username = Some(rig.plain_user.clone());
    env.add_target(
        &plain,
        &SmtpSecrets {
            password: Some(Secret::new(rig.plain_password.clone())),
            oauth2_client_secret: None,
            oauth2_private_key: None,
        },
    );

    let (xo, xs) = microsoft_target(&rig, "xoauth2", "bench-xo@example.test");
    env.add_target(&xo, &xs);
    env.authorize(&rig, &xo, &xs, "bench-xo@example.test");

    println!("oxnotify send benchmark over loopback ({N} sends each, after 1 warm-up)");
    stats(
        "none (aiosmtpd, plain TCP)",
        time_sends(&env, "none", || {}),
    );
    stats(
        "plain (Dovecot, STARTTLS)",
        time_sends(&env, "plain", || {}),
    );

    let before = env.token_requests();
    let cached = time_sends(&env, "xoauth2", || {});
    let cached_requests = env.token_requests() - before;
    stats("xoauth2, cached token (STARTTLS)", cached);

    // send() spools each message before its first attempt (and removes it once the server
    // took it); send_to_target() does not: the difference is the cost of durability
    let n = note("bench");
    let spooled: Vec<Duration> = (0..N)
        .map(|_| {
            let t0 = Instant::now();
            let r = env.notifier.delivery().send(&["xoauth2"], &n).unwrap();
            assert!(matches!(r[0].result, Ok(Delivery::Sent)));
            t0.elapsed()
        })
        .collect();
    stats("xoauth2, cached token, send() spooled", spooled);

    let drop_cache = || {
        let mut st = env.state_json("xoauth2");
        st.as_object_mut().unwrap().remove("access_token");
        env.write_state_json("xoauth2", &st);
    };
    stats(
        "xoauth2, refresh + rotate + send",
        time_sends(&env, "xoauth2", drop_cache),
    );

    drop_cache(); // start cold: the first send must refresh
    let before = env.token_requests();
    for i in 0..100 {
        env.notifier
            .delivery()
            .send_to_target("xoauth2", &note(&format!("bench-100 #{i}")))
            .unwrap();
    }
    println!(
        "token requests: {} per 100 sends from a cold cache ({} during the {} cached-token sends above)",
        env.token_requests() - before,
        cached_requests,
        N + 1
    );
    let rotations = env.state_json("xoauth2")["rotations"].clone();
    println!("refresh-token rotations persisted during the run: {rotations}");

    // a burst: 100 notifications over one session (one connect, one AUTH) against 100 sends
    let list: Vec<Notification> = (0..100)
        .map(|i| note(&format!("bench-burst #{i}")))
        .collect();
    let t0 = Instant::now();
    for n in &list {
        let r = env.notifier.delivery().send(&["xoauth2"], n).unwrap();
        assert!(matches!(r[0].result, Ok(Delivery::Sent)));
    }
    let separate = t0.elapsed();
    let t0 = Instant::now();
    let results = env
        .notifier
        .delivery()
        .send_burst("xoauth2", &list)
        .unwrap();
    let burst = t0.elapsed();
    let sent = results
        .iter()
        .filter(|r| matches!(r, Ok(Delivery::Sent)))
        .count();
    println!(
        "xoauth2, 100 notifications: 100 separate sends {:.2} s (100 sessions), one burst {:.2} s (1 session, {sent} sent)",
        separate.as_secs_f64(),
        burst.as_secs_f64()
    );

    // the caller's wait when the server is unreachable (a closed port): one bound
    // (OXNOTIFY_CALLER_WAIT, default 10 s) for all targets of the call together
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let names: Vec<String> = (0..5).map(|i| format!("unreachable{i}")).collect();
    for name in &names {
        let mut t = none.clone();
        t.name = name.clone();
        t.port = Some(closed);
        env.add_target(&t, &SmtpSecrets::default());
    }
    for k in [1, 5] {
        let targets: Vec<&str> = names[..k].iter().map(String::as_str).collect();
        let t0 = Instant::now();
        let r = env
            .notifier
            .delivery()
            .send(&targets, &note("unreachable"))
            .unwrap();
        let waited = t0.elapsed();
        let queued = r
            .iter()
            .filter(|r| matches!(r.result, Ok(Delivery::Queued { .. })))
            .count();
        println!(
            "caller wait, {k} unreachable target(s): {:.2} s ({queued} queued, caller bound {} s)",
            waited.as_secs_f64(),
            env.settings
                .caller_wait
                .min(env.settings.delivery_deadline)
                .as_secs()
        );
    }
}
