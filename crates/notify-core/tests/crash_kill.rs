//! Crash leftovers (issue 8, item 13), against the rig's real oidc-provider, which rotates
//! refresh tokens and revokes the whole grant when a used one is presented again: a process
//! that refreshes in a loop is killed (SIGKILL) at random moments; after each kill the next
//! access under the lock must take over whatever the killed process had written (a complete
//! `.tmp-<target>~*` file with a higher generation), remove the rest, and refresh with the
//! newest refresh token. A lost grant shows as `invalid_grant` (needs re-authorization).
//!
//! What a kill can cost: once the refresh request has left the process, the provider rotates;
//! until the answer is on disk (a complete temp file), a kill loses the new token and with it
//! the grant, and no client can prevent that. Once it is on disk, nothing may be lost: that is
//! what this test asserts. Each kill is classified from the provider's log (grants issued to
//! the killed process) and an `strace` of it (answers received, the newest refresh token):
//! answer in flight; answer received but not yet on disk; newest token on disk.
//!
//! `OXNOTIFY_KILLS` sets the number of kills (default 40).

mod common;

use common::*;
use notify_core::*;
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "OXNOTIFY_KILL_TEST_CHILD";

/// The process that gets killed: refreshes every OAuth2 target of the installation named in
/// `OXNOTIFY_KILL_TEST_CHILD` until it dies. Run only by the test below.
#[test]
#[ignore = "helper process of refreshes_killed_at_random_moments_lose_no_grant"]
fn refresh_loop_child() {
    let Ok(dirs) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (config_dir, state_dir) = dirs.split_once('\n').unwrap();
    let mut settings = Settings::with_dirs(
        std::path::PathBuf::from(config_dir),
        std::path::PathBuf::from(state_dir),
    );
    settings.http_timeout = Duration::from_secs(5);
    let n = Notifier::new(settings).unwrap();
    loop {
        let _ = n.refresh().all();
    }
}

/// A small xorshift generator: random kill moments without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn temp_files(env: &Env) -> usize {
    std::fs::read_dir(env.settings.oauth2_state_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .count()
}

#[test]
fn refreshes_killed_at_random_moments_lose_no_grant() {
    let rig = Rig::get();
    let env = Env::new();
    let user = format!("{}@example.test", tag("killed"));
    let (t, s) = microsoft_target(&rig, "killed", &user);
    env.add_target(&t, &s);
    env.authorize(&rig, &t, &s, &user);
    let kills: usize = std::env::var("OXNOTIFY_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng(seed | 1);
    let dirs = format!(
        "{}\n{}",
        env.settings.config_dir.display(),
        env.settings.state_dir.display()
    );
    let trace = env.dir.path().join("child.strace");
    let provider_log =
        std::path::PathBuf::from(std::env::var("RIG_DIR").unwrap()).join("logs/oidc-provider.log");
    let issued = || {
        std::fs::read_to_string(&provider_log)
            .unwrap()
            .matches("grant.success refresh_token rig-post")
            .count()
    };
    let (mut in_flight, mut not_on_disk, mut on_disk) = ((0, 0), (0, 0), (0, 0));
    let mut left_temp = 0;
    for _ in 0..kills {
        let _ = std::fs::remove_file(&trace);
        let issued_before = issued();
        let mut tracer = Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-s",
                "4096",
                "-e",
                "trace=sendto,recvfrom",
                "-o",
            ])
            .arg(&trace)
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "refresh_loop_child",
                "--ignored",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dirs)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("strace is installed (scripts/install-deps.sh)");
        std::thread::sleep(Duration::from_millis(150 + rng.below(400)));
        // SIGKILL the traced process itself (killing strace would only detach it)
        let child = traced_child(tracer.id());
        let _reaper = Reaper(child);
        let st = Command::new("kill")
            .args(["-KILL", &child.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        tracer.wait().unwrap();
        // a request the killed process had sent is answered (and logged) all the same
        std::thread::sleep(Duration::from_millis(300));
        // the trace is in the test's temp dir, removed with it
        let text = std::fs::read_to_string(&trace).unwrap();
        let answers: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("recvfrom") && l.contains("refresh_token\\\":"))
            .collect();
        let answer_in_flight = issued() - issued_before > answers.len();
        let newest = answers.last().and_then(|l| refresh_token_in(l));
        let on_disk_now = newest.as_deref().is_none_or(|rt| token_on_disk(&env, rt));
        if temp_files(&env) > 0 {
            left_temp += 1;
        }
        let r = env.notifier.refresh().all().unwrap();
        let lost = match r[0].outcome {
            RefreshOutcome::Rotated => false,
            RefreshOutcome::NeedsReauthorization => {
                env.authorize(&rig, &t, &s, &user);
                true
            }
            other => panic!("{other:?}: {:?}", r[0].error),
        };
        let class = if answer_in_flight {
            &mut in_flight
        } else if !on_disk_now {
            &mut not_on_disk
        } else {
            &mut on_disk
        };
        class.0 += 1;
        class.1 += usize::from(lost);
        assert_eq!(temp_files(&env), 0, "leftovers are removed under the lock");
    }
    eprintln!(
        "{kills} kills during refreshes (kills / grants lost): answer in flight {in_flight:?}, \
         answer received but not yet on disk {not_on_disk:?}, newest token on disk \
         {on_disk:?}; {left_temp} kills left a temp file behind"
    );
    assert_eq!(
        on_disk.1, 0,
        "grants lost although the newest refresh token was on disk, in {} such kills",
        on_disk.0
    );
}

/// The pid of the process `strace` (pid `tracer`) started, once it runs.
fn traced_child(tracer: u32) -> u32 {
    for _ in 0..500 {
        let children = std::fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children"))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("strace started no process");
}

/// The refresh token in a traced token answer (JSON, escaped by strace).
fn refresh_token_in(line: &str) -> Option<String> {
    let key = "refresh_token\\\":\\\"";
    let start = line.find(key)? + key.len();
    let len = line[start..].find('\\')?;
    Some(line[start..start + len].to_string())
}

/// True if `rt` is in the state file or a temp file of the state directory.
fn token_on_disk(env: &Env, rt: &str) -> bool {
    std::fs::read_dir(env.settings.oauth2_state_dir())
        .unwrap()
        .flatten()
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(rt)))
}

/// Kills the refresh loop should the test fail before it does (no stray process).
struct Reaper(u32);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}
