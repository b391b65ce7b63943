//! The cluster state store (issue 13), simulated on loopback against the rig's real
//! oidc-provider (rotating refresh tokens with reuse detection: a lost race revokes the grant)
//! and Dovecot. Each "node" is a separate process (this test binary, run as
//! `cluster_node_child`) with its own `OXNOTIFY_NODE_NAME`, sharing one config and one state
//! directory, as the nodes of a PVE cluster share `/etc/pve`. Token requests are counted at a
//! `CountingTokenProxy` (a test helper) in front of the rig's token endpoint.
//!
//! Root is needed only for the read-only test (a read-only bind mount); it skips otherwise.

mod common;

use common::counting_proxy::CountingTokenProxy;
use common::*;
use notify_core::state::StateStore;
use notify_core::store::Kind as StoreKind;
use notify_core::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "OXNOTIFY_CLUSTER_TEST_CHILD";

/// One cluster node: the mode in `OXNOTIFY_CLUSTER_TEST_CHILD` (`daily`, `send <target> <n>
/// <subject>`: n concurrent senders, `hold <target>`: take the target's lock and hang), the
/// installation from the `OXNOTIFY_*` environment. Prints `RESULT ...` lines. Run only by the
/// tests below.
#[test]
#[ignore = "helper process: one node of the cluster tests"]
fn cluster_node_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let settings = Settings::from_env();
    assert_eq!(settings.store, StoreKind::Cluster);
    let words: Vec<&str> = mode.split(' ').collect();
    match words[..] {
        ["daily"] => {
            let n = Notifier::new(settings).unwrap();
            match n.refresh().locked(Duration::from_secs(30)) {
                Ok(run) if run.busy => println!("RESULT busy"),
                Ok(run) => {
                    for r in run.reports {
                        let outcome = serde_json::to_string(&r.outcome).unwrap();
                        println!(
                            "RESULT {} {} {:?}",
                            r.target,
                            outcome.trim_matches('"'),
                            r.error
                        );
                    }
                }
                Err(e) => println!("RESULT error {e}"),
            }
        }
        ["send", target, n, subject] => {
            let n: usize = n.parse().unwrap();
            std::thread::scope(|s| {
                for i in 0..n {
                    let settings = settings.clone();
                    s.spawn(move || {
                        let notifier = Notifier::new(settings).unwrap();
                        match notifier
                            .delivery()
                            .send_to_target(target, &note(&format!("{subject}-{i}")))
                        {
                            Ok(()) => println!("RESULT sent"),
                            Err(e) => println!("RESULT failed {e}"),
                        }
                    });
                }
            });
        }
        ["hold", target] => {
            let _lock = StateStore::new(&settings).lock(target).unwrap();
            println!("RESULT locked");
            std::thread::sleep(Duration::from_secs(600));
        }
        _ => panic!("unknown mode {mode}"),
    }
}

/// A cluster installation (temp dirs) with one Microsoft-style target whose token requests go
/// through `proxy`, authorized at the rig.
struct Cluster {
    env: Env,
    proxy: CountingTokenProxy,
    target: SmtpTarget,
}

impl Cluster {
    fn new(rig: &Rig, name: &str, stale: Duration) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("shared"));
        settings.store = StoreKind::Cluster;
        // PVE-like: secrets apart from the public file (as /etc/pve/priv/oxnotify)
        settings.private_config_dir = Some(dir.path().join("shared-priv/oxnotify"));
        settings.node_name = "node0".into();
        // each node's outbox and connection slots stay on the node (not in the shared dir)
        settings.node_local_dir = Some(dir.path().join("local-node0"));
        settings.cluster_lock_stale = stale;
        settings.http_timeout = Duration::from_secs(10);
        settings.delivery_deadline = Duration::from_secs(30);
        let env = Env::with_settings(dir, settings);
        let proxy = CountingTokenProxy::start(&rig.issuer);
        let user = format!("{}@example.test", tag(name));
        let (mut t, s) = microsoft_target(rig, name, &user);
        t.oauth2_token_url = Some(proxy.token_url());
        env.add_target(&t, &s);
        env.authorize(rig, &t, &s, &user);
        Cluster {
            env,
            proxy,
            target: t,
        }
    }

    /// A node process running `mode`.
    fn node(&self, node: &str, mode: &str) -> Child {
        let s = &self.env.settings;
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "cluster_node_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, mode)
            .env("OXNOTIFY_CONFIG_DIR", &s.config_dir)
            .env("OXNOTIFY_STATE_DIR", &s.state_dir)
            .env(
                "OXNOTIFY_PRIVATE_CONFIG_DIR",
                s.private_config_dir.as_ref().unwrap(),
            )
            .env("OXNOTIFY_STATE_STORE", "cluster")
            .env("OXNOTIFY_NODE_NAME", node)
            .env(
                "OXNOTIFY_LOCAL_STATE_DIR",
                s.state_dir.with_file_name(format!("local-{node}")),
            )
            .env(
                "OXNOTIFY_CLUSTER_LOCK_STALE",
                s.cluster_lock_stale.as_secs().to_string(),
            )
            .env("OXNOTIFY_HTTP_TIMEOUT", "20")
            .env("OXNOTIFY_DELIVERY_DEADLINE", "30")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }

    fn state(&self) -> serde_json::Value {
        self.env.state_json(&self.target.name)
    }

    /// Let the cached access token expire (as an hour without sends would).
    /// What is left in the lock directory (nothing once every node released its locks).
    fn locks_left(&self) -> Vec<String> {
        std::fs::read_dir(self.env.settings.cluster_lock_dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect()
    }

    fn expire_access_token(&self) {
        let mut v = self.state();
        v["access_token_expires_at"] = serde_json::json!(0);
        self.env.write_state_json(&self.target.name, &v);
    }
}

/// The `RESULT` lines of a node that has finished.
fn results(child: Child) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "node failed: {:?}", out.status);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        // libtest's "test cluster_node_child ... " may precede the first one on its line
        .filter_map(|l| l.split_once("RESULT ").map(|(_, r)| r.to_string()))
        .collect()
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn three_daily_jobs_on_three_nodes_rotate_once_and_the_grant_survives() {
    let rig = Rig::get();
    let c = Cluster::new(&rig, "cl-daily", Duration::from_secs(120));
    let before = c.proxy.requests();
    let rt_before = c.state()["refresh_token"].clone();
    let nodes: Vec<Child> = (1..=3)
        .map(|i| c.node(&format!("node{i}"), "daily"))
        .collect();
    let mut outcomes: Vec<String> = nodes.into_iter().flat_map(results).collect();
    outcomes.sort();
    let rotated = outcomes.iter().filter(|l| l.contains(" rotated ")).count();
    let not_due = outcomes.iter().filter(|l| l.contains(" not-due ")).count();
    assert_eq!((rotated, not_due), (1, 2), "{outcomes:?}");
    assert_eq!(
        c.proxy.requests() - before,
        1,
        "one token request in the cluster"
    );
    let st = c.state();
    assert_eq!(st["rotations"], 1);
    assert_ne!(st["refresh_token"], rt_before);
    assert!(st["refreshed_by"].as_str().unwrap().starts_with("node"));
    // the grant survives: the next refresh (forced by an expired access token) works
    c.expire_access_token();
    let subject = tag("cl-daily-after");
    let r = results(c.node("node2", &format!("send cl-daily 1 {subject}")));
    assert_eq!(r, ["sent"]);
    assert!(rig.find_mail(&format!("{subject}-0")).is_some());
    assert_eq!(c.state()["rotations"], 2);
    // and a daily run on any node the same day leaves the target alone
    let again = results(c.node("node3", "daily"));
    assert!(again[0].contains(" not-due "), "{again:?}");
    assert_eq!(c.locks_left(), Vec::<String>::new());
    // the secret went to the private directory, not beside the public file
    assert!(c.env.settings.private_config_file().exists());
    assert!(!c.env.settings.config_dir.join("priv").exists());
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn three_nodes_times_ten_senders_after_expiry_cost_one_token_request() {
    let rig = Rig::get();
    let c = Cluster::new(&rig, "cl-burst", Duration::from_secs(120));
    c.expire_access_token();
    let before = c.proxy.requests();
    let subject = tag("cl-burst");
    let nodes: Vec<Child> = (1..=3)
        .map(|i| {
            c.node(
                &format!("node{i}"),
                &format!("send cl-burst 10 {subject}-n{i}"),
            )
        })
        .collect();
    let r: Vec<String> = nodes.into_iter().flat_map(results).collect();
    assert_eq!(r.len(), 30, "{r:?}");
    assert!(r.iter().all(|l| l == "sent"), "{r:?}");
    assert_eq!(
        c.proxy.requests() - before,
        1,
        "30 sends on 3 nodes, one token request"
    );
    assert_eq!(c.state()["rotations"], 1);
    for i in 1..=3 {
        assert!(rig.find_mail(&format!("{subject}-n{i}-9")).is_some());
    }
    assert_eq!(c.locks_left(), Vec::<String>::new(), "every lock released");
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn a_lock_holder_killed_with_sigkill_is_taken_over_after_the_stale_time() {
    let rig = Rig::get();
    let c = Cluster::new(&rig, "cl-kill", Duration::from_secs(3));
    let mut holder = c.node("node1", "hold cl-kill");
    // kept open until the holder is killed (a closed pipe would end it early)
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("RESULT locked") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the holder ended");
    }
    let lock_dir = c.env.settings.cluster_lock_dir().join("oauth2-cl-kill");
    let owner = notify_core::store::cluster::read_owner(&lock_dir).unwrap();
    assert_eq!((owner.node.as_str(), owner.pid), ("node1", holder.id()));
    holder.kill().unwrap(); // SIGKILL: no release
    holder.wait().unwrap();
    assert!(
        lock_dir.exists(),
        "a killed holder leaves its lock directory"
    );
    c.expire_access_token();
    let before = c.proxy.requests();
    let subject = tag("cl-kill");
    let r = results(c.node("node2", &format!("send cl-kill 1 {subject}")));
    assert_eq!(r, ["sent"], "node2 took the stale lock over and refreshed");
    assert!(rig.find_mail(&format!("{subject}-0")).is_some());
    assert_eq!(c.proxy.requests() - before, 1);
    assert!(!lock_dir.exists(), "node2 released the lock it took over");
    assert_eq!(
        c.locks_left(),
        Vec::<String>::new(),
        "no grave or guard left"
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `dir` bind-mounted read-only onto itself (a node without quorum), undone on drop.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn mount(dir: &Path) -> ReadOnly {
        let d = dir.to_str().unwrap();
        let run =
            |args: &[&str]| assert!(Command::new("mount").args(args).status().unwrap().success());
        run(&["--bind", d, d]);
        let m = ReadOnly(dir.to_path_buf());
        run(&["-o", "remount,bind,ro", d]);
        m
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Every file below `dir` with its content.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn without_quorum_sends_use_the_cached_token_and_a_refresh_says_why_it_cannot() {
    if !is_root() {
        eprintln!("skipped: needs root to mount");
        return;
    }
    let rig = Rig::get();
    let c = Cluster::new(&rig, "cl-ro", Duration::from_secs(120));
    // due for its daily refresh
    let mut v = c.state();
    v["last_refresh"] = serde_json::json!(0);
    c.env.write_state_json("cl-ro", &v);
    let shared = c.env.settings.state_dir.clone();
    let before = snapshot(&shared);
    let requests = c.proxy.requests();
    {
        let _ro = ReadOnly::mount(&shared);
        let subject = tag("cl-ro");
        let r = results(c.node("node1", &format!("send cl-ro 3 {subject}")));
        assert_eq!(r, ["sent", "sent", "sent"], "sends with the cached token");
        assert!(rig.find_mail(&format!("{subject}-2")).is_some());
        let daily = results(c.node("node2", "daily"));
        assert_eq!(daily.len(), 1, "{daily:?}");
        assert!(
            daily[0].contains("the cluster filesystem is not writable (no quorum?)"),
            "{daily:?}"
        );
        // a refresh of the target itself (not only the daily job's lock) says the same
        let cfg = notify_core::NotificationConfig::load(c.env.notifier.settings()).unwrap();
        let err = tokens::TokenManager::new(&c.env.settings, c.env.http.as_ref())
            .refresh_if_due(&c.target, &cfg.smtp_secrets("cl-ro").unwrap())
            .unwrap_err();
        assert!(
            err.to_string().contains("not writable (no quorum?)"),
            "{err}"
        );
        assert!(err.is_transient());
        let status = c.env.notifier.status().target("cl-ro").unwrap();
        assert_eq!(status.store_writable, Some(false));
        let w = status.warning.unwrap();
        assert!(
            w.contains("the cluster filesystem is not writable (no quorum?)"),
            "{w}"
        );
        assert!(w.contains("cached access token is valid"), "{w}");
    }
    assert_eq!(
        c.proxy.requests(),
        requests,
        "no token request without a writable store"
    );
    assert_eq!(
        snapshot(&shared),
        before,
        "nothing stored changed or was truncated"
    );
    assert_eq!(
        c.env
            .notifier
            .status()
            .target("cl-ro")
            .unwrap()
            .store_writable,
        Some(true)
    );
}

#[test]
fn state_of_an_older_generation_never_replaces_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let node = |name: &str| {
        let mut s = Settings::with_dirs(dir.path().join("etc"), dir.path().join("shared"));
        s.store = StoreKind::Cluster;
        s.node_name = name.into();
        StateStore::new(&s)
    };
    let (a, b) = (node("node1"), node("node2"));
    let mut first = state::OAuth2State::authorized(Secret::new("rt-1"));
    {
        let l = a.lock("t").unwrap();
        a.save_next("t", &mut first, &l).unwrap();
    }
    // node1 read generation 1 ...
    let mut stale_copy = a.load("t").unwrap().unwrap();
    // ... node2 rotates meanwhile (generation 2) ...
    {
        let l = b.lock("t").unwrap();
        let mut s = b.load_locked("t", &l).unwrap().unwrap();
        s.refresh_token = Some(Secret::new("rt-2"));
        b.save_next("t", &mut s, &l).unwrap();
    }
    // ... and node1's write based on generation 1 is refused, under the lock or not
    let l = a.lock("t").unwrap();
    stale_copy.refresh_token = Some(Secret::new("rt-old-based"));
    let err = a.save_next("t", &mut stale_copy.clone(), &l).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NewerStateStored {
                ours: 1,
                stored: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("newer one (generation 2)"),
        "{err}"
    );
    let stored = a.load("t").unwrap().unwrap();
    assert_eq!(stored.refresh_token.unwrap().expose(), "rt-2");
    assert_eq!(stored.generation, 2);
    // save_or_keep keeps it aside instead; the next access still takes the stored newer one
    match a.save_or_keep("t", &mut stale_copy, &l) {
        state::SaveOutcome::Kept { error, .. } => {
            assert!(matches!(error, Error::NewerStateStored { .. }))
        }
        state::SaveOutcome::Saved => panic!("an older state replaced a newer one"),
    }
    drop(l);
    let l = b.lock("t").unwrap();
    let got = b.load_locked("t", &l).unwrap().unwrap();
    assert_eq!(got.refresh_token.unwrap().expose(), "rt-2");
}

/// FAKE token endpoint for fault injection (no real server hangs on demand): accepts
/// connections and never answers. Loopback only.
fn fault_injecting_hanging_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    url
}

#[test]
fn work_under_a_cluster_lock_ends_well_before_the_lock_goes_stale() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("shared"));
    settings.store = StoreKind::Cluster;
    // a token request may take 30 s, but a lock that goes stale after 8 s allows 3 s of work
    settings.http_timeout = Duration::from_secs(30);
    settings.cluster_lock_stale = Duration::from_secs(8);
    let target = SmtpTarget {
        port: Some(1),
        mode: SmtpMode::Starttls,
        auth_method: AuthMethod::OAuth2,
        oauth2_client_id: Some("cid".into()),
        oauth2_token_url: Some(fault_injecting_hanging_endpoint()),
        oauth2_scope: Some("smtp".into()),
        ..SmtpTarget::new(
            "hang",
            "127.0.0.1",
            "a@example.com",
            vec!["b@example.com".into()],
        )
    };
    let env = Env::with_settings(dir, settings);
    env.add_target(&target, &SmtpSecrets::default());
    let store = StateStore::new(&env.settings);
    let l = store.lock("hang").unwrap();
    let mut s = state::OAuth2State::authorized(Secret::new("rt"));
    store.save_next("hang", &mut s, &l).unwrap();
    drop(l);
    let t0 = std::time::Instant::now();
    let r = env.notifier.refresh().all().unwrap();
    let took = t0.elapsed();
    assert_eq!(r[0].outcome, RefreshOutcome::Transient, "{:?}", r[0].error);
    assert!(
        r[0].error
            .as_deref()
            .unwrap()
            .contains("did not answer in time"),
        "{:?}",
        r[0].error
    );
    // 3 s of work (3/8 of the stale time) plus slack; the HTTP timeout alone would be 30 s
    assert!(
        took < Duration::from_secs(10),
        "not bounded by the lock: {took:?}"
    );
    assert_eq!(
        store
            .load("hang")
            .unwrap()
            .unwrap()
            .refresh_token
            .unwrap()
            .expose(),
        "rt"
    );
}
