//! Delivery that loses nothing, against the rig's real Postfix: a listener that accepts only
//! `RIG_PF_LIMIT` (3) connections per client and answers more with `421 4.7.0 too many
//! connections` (logging as `postfix/limited`, so sessions can be counted), one mailbox that
//! is refused with `550 5.1.1`, and the listener stopped and started again with `postfix
//! reload`. The tests share that listener, so they run one at a time.

mod common;
use common::*;
use notify_core::delivery::outbox::{self, Entry};
use notify_core::delivery::smtp::Outgoing;
use notify_core::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static LISTENER: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    LISTENER.lock().unwrap_or_else(|p| p.into_inner())
}

struct Limited {
    port: u16,
    log: PathBuf,
    maildir: PathBuf,
    rig_dir: PathBuf,
    rejected: String,
}

fn limited() -> Limited {
    let var = |k: &str| {
        std::env::var(k)
            .unwrap_or_else(|_| panic!("{k} is not set: these tests need the rig with Postfix"))
    };
    Limited {
        port: var("RIG_PF_LIMITED_PORT").parse().unwrap(),
        log: var("RIG_PF_LOG").into(),
        maildir: var("RIG_PF_MAILDIR").into(),
        rig_dir: var("RIG_DIR").into(),
        rejected: var("RIG_PF_REJECTED_RCPT"),
    }
}

impl Limited {
    /// The end of the Postfix log once it stopped growing (earlier connections, such as a
    /// readiness probe, are logged asynchronously).
    fn mark(&self) -> u64 {
        self.settle();
        self.size()
    }

    fn size(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    fn settle(&self) {
        let mut last = u64::MAX;
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(150));
            let now = self.size();
            if now == last {
                break;
            }
            last = now;
        }
    }

    /// Log lines of the limited listener written after `mark` (postlogd writes asynchronously:
    /// wait until the log stops growing).
    fn lines_since(&self, mark: u64) -> Vec<String> {
        self.settle();
        let bytes = std::fs::read(&self.log).unwrap();
        String::from_utf8_lossy(&bytes[mark as usize..])
            .lines()
            .filter(|l| l.contains("postfix/limited/smtpd["))
            .map(str::to_string)
            .collect()
    }

    fn connections_since(&self, mark: u64) -> (usize, usize) {
        let lines = self.lines_since(mark);
        let connects = lines
            .iter()
            .filter(|l| l.contains("]: connect from"))
            .count();
        let refused = lines
            .iter()
            .filter(|l| l.contains("Connection concurrency limit exceeded"))
            .count();
        (connects, refused)
    }

    /// Stop (comment out) or start the limited listener and make Postfix reload.
    fn set_listening(&self, on: bool) {
        let mc = self.rig_dir.join("postfix/master.cf");
        let text = std::fs::read_to_string(&mc).unwrap();
        let key = format!("127.0.0.1:{} ", self.port);
        let out: Vec<String> = text
            .lines()
            .map(|l| {
                let bare = l.trim_start_matches('#');
                if bare.starts_with(&key) {
                    if on {
                        bare.to_string()
                    } else {
                        format!("#{bare}")
                    }
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(&mc, out.join("\n") + "\n").unwrap();
        let st = Command::new("postfix")
            .args([
                "-c",
                self.rig_dir.join("postfix").to_str().unwrap(),
                "reload",
            ])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() != on {
            assert!(Instant::now() < until, "listener did not change to {on}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The limited listener stopped until this is dropped (also when the test fails).
struct Stopped<'a>(&'a Limited);

impl<'a> Stopped<'a> {
    fn new(l: &'a Limited) -> Self {
        l.set_listening(false);
        Stopped(l)
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.set_listening(true);
    }
}

/// Subject -> number of copies in the Maildir, for subjects starting with `prefix`.
fn copies(maildir: &Path, prefix: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for dir in ["new", "cur"] {
        for e in std::fs::read_dir(maildir.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if let Some(s) = text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .filter(|s| s.starts_with(prefix))
            {
                *out.entry(s.to_string()).or_insert(0) += 1;
            }
        }
    }
    out
}

/// Wait until `n` distinct subjects with `prefix` arrived (Postfix delivers asynchronously).
fn wait_for(maildir: &Path, prefix: &str, n: usize) -> BTreeMap<String, usize> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let c = copies(maildir, prefix);
        if c.len() >= n || Instant::now() > until {
            // a duplicate may trail its original by a moment
            std::thread::sleep(Duration::from_millis(500));
            return copies(maildir, prefix);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn env_with_deadline(secs: u64) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    settings.http_timeout = Duration::from_secs(5);
    settings.smtp_timeout = Duration::from_secs(10);
    settings.delivery_deadline = Duration::from_secs(secs);
    Env::with_settings(dir, settings)
}

fn plain_target(rig: &Rig, l: &Limited, name: &str) -> (SmtpTarget, SmtpSecrets) {
    let mut t = base_target(rig, name, &rig.plain_user);
    t.port = Some(l.port);
    // one recipient: the catch-all Maildir then holds one copy per delivery
    t.mailto = vec!["ops@example.test".into()];
    t.auth_method = AuthMethod::Plain;
    t.username = Some(rig.plain_user.clone());
    (
        t,
        SmtpSecrets {
            password: Some(Secret::new(rig.plain_password.clone())),
            oauth2_client_secret: None,

            oauth2_private_key: None,
        },
    )
}

fn spool_len(env: &Env, target: &str) -> usize {
    outbox::entries(&env.settings, target).unwrap().0.len()
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn thirty_concurrent_sends_to_a_three_connection_server_are_all_delivered_once() {
    let _serial = serial();
    let rig = Rig::get();
    let l = limited();
    let env = env_with_deadline(60);
    let (mut t, s) = microsoft_target(&rig, "burst30", "kate-burst@example.test");
    t.port = Some(l.port);
    t.mailto = vec!["ops@example.test".into()];
    env.add_target(&t, &s);
    env.authorize(&rig, &t, &s, "kate-burst@example.test");
    let before = env.token_requests();
    let prefix = tag("c30");
    let mark = l.mark();
    // 30 senders at once, each with its own notifier (as separate processes would be), all
    // counting their token requests through the same counter
    let results: Vec<Result<Delivery>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let env = &env;
                let prefix = &prefix;
                sc.spawn(move || {
                    let n = Notifier::with_http_client(env.settings.clone(), env.http.clone());
                    n.delivery()
                        .send(&["burst30"], &note(&format!("{prefix} #{i:02}")))
                        .unwrap()
                        .pop()
                        .unwrap()
                        .result
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in results.iter().enumerate() {
        assert!(matches!(r, Ok(Delivery::Sent)), "send #{i}: {r:?}");
    }
    let got = wait_for(&l.maildir, &prefix, 30);
    assert_eq!(got.len(), 30, "every notification arrived: {got:?}");
    assert!(got.values().all(|c| *c == 1), "each exactly once: {got:?}");
    assert!(
        env.token_requests() - before <= 1,
        "at most one token request"
    );
    let (connects, refused) = l.connections_since(mark);
    // the slots kept us at 2 sessions at a time: the server never had to refuse one
    assert_eq!(refused, 0, "connections refused by the server");
    assert_eq!(connects, 30);
    assert_eq!(spool_len(&env, "burst30"), 0);
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn server_down_queues_then_one_flush_session_delivers_everything() {
    let _serial = serial();
    let rig = Rig::get();
    let l = limited();
    let env = env_with_deadline(3);
    let (t, s) = plain_target(&rig, &l, "down");
    env.add_target(&t, &s);
    let prefix = tag("down");
    let stopped = Stopped::new(&l);
    let mut ids = Vec::new();
    for i in 0..4 {
        let r = env
            .notifier
            .delivery()
            .send(&["down"], &note(&format!("{prefix} #{i}")))
            .unwrap()
            .pop()
            .unwrap();
        match r.result {
            Ok(Delivery::Queued { id, reason }) => {
                assert!(reason.contains("connect"), "{reason}");
                ids.push(id);
            }
            other => panic!("send #{i} while the server is down: {other:?}"),
        }
    }
    assert_eq!(spool_len(&env, "down"), 4);
    let listed = env.notifier.delivery().outbox_list(Some("down")).unwrap();
    assert_eq!(
        listed.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        ids,
        "oldest first"
    );
    let status = env.notifier.status().outbox("down").unwrap();
    assert_eq!(status.queued, 4);
    assert!(status.warning.unwrap().contains("4 message(s) waiting"));

    drop(stopped);
    let mark = l.mark();
    let reports = env.notifier.delivery().flush_outbox().unwrap();
    let r = reports.iter().find(|r| r.target == "down").unwrap();
    assert_eq!((r.delivered, r.sessions, r.remaining), (4, 1, 0), "{r:?}");
    assert_eq!(spool_len(&env, "down"), 0);
    // nothing waits: the spool directory is gone, so the timer's condition is false
    assert!(!env.settings.state_dir.join("outbox").exists());
    let got = wait_for(&l.maildir, &prefix, 4);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got.values().all(|c| *c == 1), "{got:?}");
    let (connects, _) = l.connections_since(mark);
    assert_eq!(connects, 1, "the flush used one SMTP session");
}

/// The caller waits for its bound, not for the delivery deadline, and not once per target:
/// three targets whose server is down, in one call, return queued within a few seconds.
#[test]
#[ignore = "needs the rig (make test runs it)"]
fn a_caller_waits_its_bound_for_all_targets_together() {
    let _serial = serial();
    let rig = Rig::get();
    let l = limited();
    let mut env = env_with_deadline(120);
    env.settings.caller_wait = Duration::from_secs(2);
    env.notifier = Notifier::new(env.settings.clone()).unwrap();
    let names = ["down-a", "down-b", "down-c"];
    for n in names {
        let (t, s) = plain_target(&rig, &l, n);
        env.add_target(&t, &s);
    }
    let _stopped = Stopped::new(&l);
    let t0 = Instant::now();
    let reports = env
        .notifier
        .delivery()
        .send(&names, &note(&tag("bound")))
        .unwrap();
    let waited = t0.elapsed();
    for r in &reports {
        assert!(
            matches!(r.result, Ok(Delivery::Queued { .. })),
            "{}: {:?}",
            r.target,
            r.result
        );
    }
    // one bound for all three (not 3 x the bound, far from 3 x the 120 s delivery deadline)
    assert!(
        waited < Duration::from_secs(15),
        "the caller waited {waited:?}"
    );
    for n in names {
        assert_eq!(spool_len(&env, n), 1, "{n}");
    }
}

/// Child side of the killed-sender test: send once and wait (the parent kills it).
#[test]
#[ignore = "helper process of a_killed_sender_loses_nothing"]
fn child_send_process() {
    let Ok(dir) = std::env::var("OXNOTIFY_TEST_CHILD_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let mut settings = Settings::with_dirs(dir.join("etc"), dir.join("var"));
    settings.caller_wait = Duration::from_secs(6);
    let title = std::env::var("OXNOTIFY_TEST_TITLE").unwrap();
    let _ = Notifier::new(settings)
        .unwrap()
        .delivery()
        .send(&["killed-sender"], &note(&title));
}

/// A sender killed while it still tries (a job timeout, a restarted API worker) loses
/// nothing: the message is in the outbox from the moment the call accepted it, no flush
/// takes it while the sender may still deliver it, and the next flush after that does. The
/// sender is caught mid-attempt by a server that accepts the connection and never greets
/// (a stand-in for a hung server: no real server hangs on demand).
#[test]
#[ignore = "needs the rig (make test runs it)"]
fn a_killed_sender_loses_nothing() {
    let _serial = serial();
    let rig = Rig::get();
    let l = limited();
    let env = env_with_deadline(120);
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_port = hung.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in hung.incoming().flatten() {
            held.push(c); // accepted, never answered
        }
    });
    let (mut t, s) = plain_target(&rig, &l, "killed-sender");
    t.port = Some(hung_port);
    env.add_target(&t, &s);
    let title = tag("killed-sender");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_send_process", "--ignored", "--nocapture"])
        .env("OXNOTIFY_TEST_CHILD_DIR", env.dir.path())
        .env("OXNOTIFY_TEST_TITLE", &title)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while spool_len(&env, "killed-sender") == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    // the sender now waits for the hung server's greeting
    std::thread::sleep(Duration::from_millis(200));
    let _ = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert_eq!(
        spool_len(&env, "killed-sender"),
        1,
        "the message was in the outbox while its sender was still trying"
    );
    // while the killed sender's claim lasts, no flush tries it (it could still be on the wire)
    let r = env.notifier.delivery().flush_outbox().unwrap();
    assert_eq!((r[0].sessions, r[0].remaining), (0, 0), "{:?}", r[0]);
    // the admin points the target at a working server
    let mut params = serde_json::Map::new();
    params.insert("port".into(), l.port.into());
    params.insert("password".into(), rig.plain_password.clone().into());
    api::update_target(&env.notifier, "killed-sender", &params, &[], None).unwrap();
    let claim_ends = Instant::now() + Duration::from_secs(20);
    let mut delivered = 0;
    while delivered == 0 && Instant::now() < claim_ends {
        std::thread::sleep(Duration::from_millis(500));
        delivered = env.notifier.delivery().flush_outbox().unwrap()[0].delivered;
    }
    assert_eq!(delivered, 1, "the next flush after the claim delivers it");
    let got = wait_for(&l.maildir, &title, 1);
    assert_eq!(
        got.values().copied().collect::<Vec<_>>(),
        vec![1],
        "{got:?}"
    );
}

/// What waits for a deleted target goes with it: a new target of the same name (which may
/// point elsewhere) never delivers it, and the message is recorded as given up.
#[test]
#[ignore = "needs the rig (make test runs it)"]
fn the_outbox_of_a_deleted_target_is_not_delivered_by_a_new_one_of_the_same_name() {
    let _serial = serial();
    let rig = Rig::get();
    let l = limited();
    let env = env_with_deadline(3);
    let (t, s) = plain_target(&rig, &l, "reborn");
    env.add_target(&t, &s);
    let title = tag("reborn");
    {
        let _stopped = Stopped::new(&l);
        let r = env
            .notifier
            .delivery()
            .send(&["reborn"], &note(&title))
            .unwrap();
        assert!(matches!(r[0].result, Ok(Delivery::Queued { .. })), "{r:?}");
    }
    assert_eq!(spool_len(&env, "reborn"), 1);
    api::delete_target(&env.notifier, "reborn", None).unwrap();
    assert_eq!(
        spool_len(&env, "reborn"),
        0,
        "the queue went with its target"
    );
    env.add_target(&t, &s);
    let r = env.notifier.delivery().flush_outbox().unwrap();
    assert!(r.iter().all(|r| r.delivered == 0), "{r:?}");
    let status = env.notifier.status().outbox("reborn").unwrap();
    assert!(
        status
            .warning
            .as_deref()
            .is_some_and(|w| w.contains("its target was deleted")),
        "{status:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(copies(&l.maildir, &title).is_empty(), "delivered after all");
}

/// Puts `n` messages for `target` into the spool as a failed send would have.
fn spool(env: &Env, t: &SmtpTarget, prefix: &str, n: usize) {
    for i in 0..n {
        let title = format!("{prefix} #{i:03}");
        let m = Outgoing::of(&note(&title).to_message(t).unwrap());
        let e = Entry::new(&t.name, &title, &m, notify_core::state::now(), "421 test");
        outbox::save(&env.settings, &e).unwrap();
    }
}

/// Child side of the kill test: flush and exit (the parent kills it part-way).
#[test]
#[ignore = "helper process of kill_during_flush_loses_nothing"]
fn child_flush_process() {
    let Ok(dir) = std::env::var("OXNOTIFY_TEST_CHILD_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let settings = Settings::with_dirs(dir.join("etc"), dir.join("var"));
    Notifier::new(settings)
        .unwrap()
        .delivery()
        .flush_outbox()
        .unwrap();
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn kill_during_flush_loses_nothing() {
    let _serial = serial();
    let rig = Rig::get();
    let l = limited();
    let env = env_with_deadline(60);
    let (t, s) = plain_target(&rig, &l, "killed");
    env.add_target(&t, &s);
    let prefix = tag("kill");
    spool(&env, &t, &prefix, 60);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_flush_process", "--ignored", "--nocapture"])
        .env("OXNOTIFY_TEST_CHILD_DIR", env.dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // kill -9 in the middle of the session
    let until = Instant::now() + Duration::from_secs(30);
    while spool_len(&env, "killed") > 35 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let left = spool_len(&env, "killed");
    assert!(left > 0 && left < 60, "killed part-way: {left} left");
    // no torn spool file: every one parses (entries() reports the others)
    let (_, bad) = outbox::entries(&env.settings, "killed").unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let r = env.notifier.delivery().flush_outbox().unwrap();
    assert_eq!(r[0].remaining, 0, "{:?}", r[0]);
    let got = wait_for(&l.maildir, &prefix, 60);
    assert_eq!(got.len(), 60, "every message delivered");
    let duplicates: usize = got.values().map(|c| c - 1).sum();
    println!("kill -9 during flush: {left} left in the spool, {duplicates} duplicate(s)");
    // only the message on the wire when the flush died may come twice (accepted by the
    // server, spool file not yet removed)
    assert!(duplicates <= 1, "{got:?}");
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn permanent_rejection_fails_and_is_not_queued() {
    let _serial = serial();
    let rig = Rig::get();
    let l = limited();
    let env = env_with_deadline(20);
    let (mut t, s) = plain_target(&rig, &l, "rejects");
    t.mailto = vec![l.rejected.clone()];
    env.add_target(&t, &s);
    let r = env
        .notifier
        .delivery()
        .send(&["rejects"], &note(&tag("rejected")))
        .unwrap()
        .pop()
        .unwrap();
    let err = r.result.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("RCPT TO") && msg.contains("550") && msg.contains("permanent"),
        "{msg}"
    );
    assert_eq!(
        spool_len(&env, "rejects"),
        0,
        "a permanent failure is not queued"
    );

    // in a flush, a message refused for good is dropped (and recorded); the session goes on
    let (good, _) = plain_target(&rig, &l, "rejects");
    let prefix = tag("mixed");
    spool(&env, &good, &prefix, 1);
    let bad = Outgoing::of(&note(&format!("{prefix} bad")).to_message(&t).unwrap());
    outbox::save(
        &env.settings,
        &Entry::new(
            "rejects",
            &format!("{prefix} bad"),
            &bad,
            notify_core::state::now(),
            "x",
        ),
    )
    .unwrap();
    let mut later = good.clone();
    later.name = "rejects".into();
    let m = Outgoing::of(&note(&format!("{prefix} #last")).to_message(&later).unwrap());
    outbox::save(
        &env.settings,
        &Entry::new(
            "rejects",
            &format!("{prefix} #last"),
            &m,
            notify_core::state::now(),
            "x",
        ),
    )
    .unwrap();
    let mark = l.mark();
    let r = env.notifier.delivery().flush_outbox().unwrap();
    assert_eq!(
        (r[0].delivered, r[0].failed.len(), r[0].remaining),
        (2, 1, 0),
        "{:?}",
        r[0]
    );
    assert_eq!(l.connections_since(mark).0, 1);
    let st = env.notifier.status().outbox("rejects").unwrap();
    assert_eq!(st.given_up.count, 1);
    assert!(st.warning.unwrap().contains("given up"));
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn expired_message_is_dropped_with_a_warning() {
    let _serial = serial();
    let rig = Rig::get();
    let l = limited();
    let env = env_with_deadline(20);
    let (t, s) = plain_target(&rig, &l, "old");
    env.add_target(&t, &s);
    let prefix = tag("old");
    let m = Outgoing::of(&note(&format!("{prefix} stale")).to_message(&t).unwrap());
    let three_days_ago = notify_core::state::now() - 3 * 86_400;
    outbox::save(
        &env.settings,
        &Entry::new(
            "old",
            &format!("{prefix} stale"),
            &m,
            three_days_ago,
            "421 busy",
        ),
    )
    .unwrap();
    spool(&env, &t, &prefix, 1);
    let r = env.notifier.delivery().flush_outbox().unwrap();
    assert_eq!(r[0].expired.len(), 1, "{:?}", r[0]);
    assert_eq!((r[0].delivered, r[0].remaining), (1, 0), "{:?}", r[0]);
    let st = env.notifier.status().outbox("old").unwrap();
    assert_eq!(st.queued, 0);
    let w = st.warning.unwrap();
    assert!(w.contains("given up") && w.contains("stale"), "{w}");
    let got = wait_for(&l.maildir, &prefix, 1);
    assert!(!got.keys().any(|k| k.contains("stale")), "{got:?}");
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn bench_burst_of_100_versus_100_separate_sends() {
    let _serial = serial();
    let rig = Rig::get();
    let l = limited();
    let env = env_with_deadline(120);
    let (t, s) = plain_target(&rig, &l, "bench");
    env.add_target(&t, &s);

    let prefix = tag("sep");
    let mark = l.mark();
    let started = Instant::now();
    for i in 0..100 {
        let r = env
            .notifier
            .delivery()
            .send(&["bench"], &note(&format!("{prefix} #{i:03}")))
            .unwrap();
        assert!(
            matches!(r[0].result, Ok(Delivery::Sent)),
            "{:?}",
            r[0].result
        );
    }
    let separate = started.elapsed();
    let got = wait_for(&l.maildir, &prefix, 100);
    let (sep_conn, _) = l.connections_since(mark);

    let prefix2 = tag("burst");
    let list: Vec<Notification> = (0..100)
        .map(|i| note(&format!("{prefix2} #{i:03}")))
        .collect();
    let mark = l.mark();
    let started = Instant::now();
    let results = env.notifier.delivery().send_burst("bench", &list).unwrap();
    let burst = started.elapsed();
    assert!(results.iter().all(|r| matches!(r, Ok(Delivery::Sent))));
    let got2 = wait_for(&l.maildir, &prefix2, 100);
    let (burst_conn, _) = l.connections_since(mark);
    println!(
        "BENCH 100 separate sends: {} delivered, {} lost, {sep_conn} connections, {:.2} s",
        got.len(),
        100 - got.len(),
        separate.as_secs_f64()
    );
    println!(
        "BENCH 100 in one burst:   {} delivered, {} lost, {burst_conn} connection(s), {:.2} s",
        got2.len(),
        100 - got2.len(),
        burst.as_secs_f64()
    );
    assert_eq!((got.len(), got2.len()), (100, 100));
    assert_eq!(sep_conn, 100);
    assert_eq!(burst_conn, 1);
}
