//! Cluster store benchmark (not timed; run with `make bench-cluster` or
//! `scripts/run-with-rig.sh cargo bench -p notify-core --bench cluster`): refreshes and token
//! requests per node-day for N = 1, 3, 16 simulated nodes sharing one config and state
//! directory (each node a process of this binary with its own `OXNOTIFY_NODE_NAME`), against
//! the rig's real oidc-provider (rotating refresh tokens), counted at a `CountingTokenProxy`.
//!
//! One simulated day: every node runs the daily job (all at once), then two alerts go out
//! from every node after the cached access token expired (each node sends 2 notifications per
//! alert, all nodes at once): 4 sends per node-day. Between days the state is aged by a day.
//! The reference design (one rotation per node per day from the daily job, a token request
//! for every send, no shared cache) needs 1 rotation and 1 + 4 token requests per node-day.

#[path = "../tests/common/mod.rs"]
mod common;

use common::counting_proxy::CountingTokenProxy;
use common::*;
use notify_core::store::Kind as StoreKind;
use notify_core::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const NODE_ENV: &str = "OXNOTIFY_CLUSTER_BENCH_NODE";
const DAYS: usize = 3;
const ALERTS_PER_DAY: usize = 2;
const SENDS_PER_ALERT: usize = 2;

/// One node: `daily`, or `send <target> <n> <subject>` (n concurrent sends).
fn node_main(mode: &str) {
    let settings = Settings::from_env();
    let words: Vec<&str> = mode.split(' ').collect();
    match words[..] {
        ["daily"] => {
            let n = Notifier::new(settings).unwrap();
            let reports = n.refresh().locked(Duration::from_secs(60)).unwrap().reports;
            for r in reports {
                assert!(r.error.is_none(), "{:?}", r.error);
            }
        }
        ["send", target, n, subject] => {
            let n: usize = n.parse().unwrap();
            std::thread::scope(|s| {
                for i in 0..n {
                    let settings = settings.clone();
                    s.spawn(move || {
                        Notifier::new(settings)
                            .unwrap()
                            .delivery()
                            .send_to_target(target, &note(&format!("{subject}-{i}")))
                            .unwrap();
                    });
                }
            });
        }
        _ => panic!("unknown mode {mode}"),
    }
}

struct Sim {
    env: Env,
    proxy: CountingTokenProxy,
    name: String,
}

impl Sim {
    fn node(&self, i: usize, mode: &str) -> Child {
        let s = &self.env.settings;
        Command::new(std::env::current_exe().unwrap())
            .env(NODE_ENV, mode)
            .env("OXNOTIFY_CONFIG_DIR", &s.config_dir)
            .env("OXNOTIFY_STATE_DIR", &s.state_dir)
            .env("OXNOTIFY_STATE_STORE", "cluster")
            .env("OXNOTIFY_NODE_NAME", format!("node{i}"))
            .env(
                "OXNOTIFY_LOCAL_STATE_DIR",
                s.state_dir.with_file_name(format!("local-node{i}")),
            )
            .env("OXNOTIFY_HTTP_TIMEOUT", "20")
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Every node runs `mode` at once; all must succeed.
    fn all_nodes(&self, n: usize, mode: &str) {
        let children: Vec<Child> = (1..=n).map(|i| self.node(i, mode)).collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "a node failed: {mode}");
        }
    }

    fn edit_state(&self, f: impl Fn(&mut serde_json::Value)) {
        let mut v = self.env.state_json(&self.name);
        f(&mut v);
        self.env.write_state_json(&self.name, &v);
    }

    fn rotations(&self) -> u64 {
        self.env.state_json(&self.name)["rotations"]
            .as_u64()
            .unwrap()
    }
}

fn simulate(rig: &Rig, nodes: usize) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("shared"));
    settings.store = StoreKind::Cluster;
    settings.node_name = "admin".into();
    let env = Env::with_settings(dir, settings);
    let proxy = CountingTokenProxy::start(&rig.issuer);
    let name = format!("bench{nodes}");
    let user = format!("{}@example.test", tag(&name));
    let (mut t, s) = microsoft_target(rig, &name, &user);
    t.oauth2_token_url = Some(proxy.token_url());
    env.add_target(&t, &s);
    env.authorize(rig, &t, &s, &user);
    let sim = Sim { env, proxy, name };
    let (requests0, rotations0) = (sim.proxy.requests(), sim.rotations());
    let mut daily_refreshes = 0;
    for day in 0..DAYS {
        // a day has passed since the last refresh (none on day 0: authorized just now)
        sim.edit_state(|v| {
            v["last_refresh"] = serde_json::json!(state::now() - 86_400 - 60);
            v["access_token_expires_at"] = serde_json::json!(0);
        });
        let before = sim.rotations();
        sim.all_nodes(nodes, "daily");
        daily_refreshes += sim.rotations() - before;
        for alert in 0..ALERTS_PER_DAY {
            sim.edit_state(|v| v["access_token_expires_at"] = serde_json::json!(0));
            let subject = tag(&format!("bench-d{day}-a{alert}"));
            sim.all_nodes(
                nodes,
                &format!("send {} {SENDS_PER_ALERT} {subject}", sim.name),
            );
        }
    }
    let node_days = (nodes * DAYS) as f64;
    (
        daily_refreshes as f64 / node_days,
        (sim.rotations() - rotations0) as f64 / node_days,
        (sim.proxy.requests() - requests0) as f64 / node_days,
    )
}

fn main() {
    if let Ok(mode) = std::env::var(NODE_ENV) {
        node_main(&mode);
        return;
    }
    let rig = Rig::get();
    let sends = ALERTS_PER_DAY * SENDS_PER_ALERT;
    println!(
        "cluster store, {DAYS} simulated days, {sends} sends per node-day in {ALERTS_PER_DAY} \
         cluster-wide alerts after the access token expired; per node-day:"
    );
    println!(
        "{:>5}  {:>22}  {:>22}  {:>22}  {:>28}",
        "nodes",
        "daily-job refreshes",
        "rotations (all)",
        "token requests",
        "reference: rotations / requests"
    );
    for nodes in [1, 3, 16] {
        let (daily, rotations, requests) = simulate(&rig, nodes);
        println!(
            "{nodes:>5}  {daily:>22.3}  {rotations:>22.3}  {requests:>22.3}  {:>28}",
            format!("1 / {}", 1 + sends)
        );
    }
}
