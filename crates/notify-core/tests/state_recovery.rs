//! A rotated token is never dropped (issue 8, item 9), against the rig's real oidc-provider
//! (rotating refresh tokens with reuse detection) and Dovecot: a read-only state directory
//! (a read-only bind mount) still sends with a cached token; a full file system (a small
//! tmpfs) keeps the rotated refresh token in a recovery file, the send goes through, and the
//! next access takes it over; with nowhere to write, the token is kept in memory and the
//! refresh reports it loudly. Mounting needs root: run as root (as `make test` does).

mod common;

use common::*;
use notify_core::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?} failed");
}

/// A mount, undone on drop.
struct Mount(PathBuf);

impl Mount {
    /// `dir` bind-mounted onto itself, read-only.
    fn read_only(dir: &Path) -> Mount {
        let d = dir.to_str().unwrap();
        run(&["mount", "--bind", d, d]);
        let m = Mount(dir.to_path_buf());
        run(&["mount", "-o", "remount,bind,ro", d]);
        m
    }

    /// A tmpfs of `size` on `dir`.
    fn tmpfs(dir: &Path, size: &str) -> Mount {
        let d = dir.to_str().unwrap();
        run(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
            d,
        ]);
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fill the file system of `dir` until a write fails with ENOSPC; the filler file's path.
fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match f.write_all(&chunk).and_then(|()| f.sync_all()) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "{e}");
                break;
            }
        }
    }
    // the last partial chunk may have left a few bytes: fill those too
    while f.write(&[0u8]).is_ok_and(|n| n == 1) {}
    p
}

fn expire_cached_token(env: &Env, name: &str) {
    let mut v = env.state_json(name);
    v["access_token_expires_at"] = serde_json::json!(0);
    env.write_state_json(name, &v);
}

fn refresh_token_of(env: &Env, name: &str) -> String {
    env.state_json(name)["refresh_token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn authorized_env(rig: &Rig, name: &str) -> (Env, SmtpTarget) {
    let env = Env::new();
    let user = format!("{}@example.test", tag(name));
    let (t, s) = microsoft_target(rig, name, &user);
    env.add_target(&t, &s);
    env.authorize(rig, &t, &s, &user);
    (env, t)
}

#[test]
fn a_read_only_state_dir_still_sends_with_a_cached_token() {
    if !is_root() {
        eprintln!("skipped: needs root to mount");
        return;
    }
    let rig = Rig::get();
    let (env, _t) = authorized_env(&rig, "rostate");
    let dir = env.settings.oauth2_state_dir();
    let requests = env.token_requests();
    for with_lock_file in [false, true] {
        let lock = env.settings.oauth2_lock_file("rostate");
        if with_lock_file {
            std::fs::File::create(&lock).unwrap();
        } else {
            std::fs::remove_file(&lock).unwrap();
        }
        assert_eq!(lock.exists(), with_lock_file);
        let _ro = Mount::read_only(&dir);
        assert!(
            std::fs::write(dir.join("probe"), b"x").is_err(),
            "mount is read-only"
        );
        let subject = tag("ro-send");
        env.notifier
            .delivery()
            .send_to_target("rostate", &note(&subject))
            .unwrap_or_else(|e| panic!("lock file present: {with_lock_file}: {e}"));
        assert!(rig.find_mail(&subject).is_some());
    }
    assert_eq!(env.token_requests(), requests, "the cached token was used");
}

#[test]
fn a_rotated_token_survives_a_full_state_file_system() {
    if !is_root() {
        eprintln!("skipped: needs root to mount");
        return;
    }
    let rig = Rig::get();
    let env = Env::new();
    let dir = env.settings.oauth2_state_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let _fs = Mount::tmpfs(&dir, "256k");
    let user = format!("{}@example.test", tag("full"));
    let (t, s) = microsoft_target(&rig, "full", &user);
    env.add_target(&t, &s);
    env.authorize(&rig, &t, &s, &user);
    expire_cached_token(&env, "full");
    let old_rt = refresh_token_of(&env, "full");
    let filler = fill(&dir);

    // the refresh rotates, the save fails (ENOSPC): the send still goes out
    let subject = tag("full-send");
    env.notifier
        .delivery()
        .send_to_target("full", &note(&subject))
        .expect("a send with a good new access token must not fail on a full disk");
    assert!(rig.find_mail(&subject).is_some());
    assert_eq!(
        refresh_token_of(&env, "full"),
        old_rt,
        "state file unchanged"
    );
    let recovery = env.settings.state_dir.join("full.oauth2-recovery.json");
    assert!(
        recovery.exists(),
        "the rotated token is in the recovery file"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&recovery).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // space again: the next access takes the recovery file over; the grant is alive (with
    // the old refresh token the provider would detect reuse and revoke it)
    std::fs::remove_file(filler).unwrap();
    let r = env.notifier.refresh().all().unwrap();
    assert_eq!(r[0].outcome, RefreshOutcome::Rotated, "{:?}", r[0].error);
    assert!(!recovery.exists());
    assert_ne!(refresh_token_of(&env, "full"), old_rt);
}

#[test]
fn with_nowhere_to_write_a_refresh_reports_loudly_and_keeps_the_token_in_memory() {
    if !is_root() {
        eprintln!("skipped: needs root to mount");
        return;
    }
    let rig = Rig::get();
    let (env, _t) = authorized_env(&rig, "nowhere");
    expire_cached_token(&env, "nowhere");
    let old_rt = refresh_token_of(&env, "nowhere");
    {
        let _ro = Mount::read_only(&env.settings.state_dir);
        let r = env.notifier.refresh().all().unwrap();
        assert_eq!(r[0].outcome, RefreshOutcome::Failed);
        let e = r[0].error.clone().unwrap();
        assert!(
            e.contains("WARNING")
                && e.contains("rotated refresh token")
                && e.contains("memory")
                && e.contains("target 'nowhere'"),
            "{e}"
        );
        assert!(!e.contains(&old_rt), "{e}");
        // a send in the same process uses the kept access token
        let subject = tag("nowhere-send");
        env.notifier
            .delivery()
            .send_to_target("nowhere", &note(&subject))
            .unwrap();
        assert!(rig.find_mail(&subject).is_some());
    }
    // writable again: the memory copy is saved, and the grant is alive
    let r = env.notifier.refresh().all().unwrap();
    assert_eq!(r[0].outcome, RefreshOutcome::Rotated, "{:?}", r[0].error);
    assert_ne!(refresh_token_of(&env, "nowhere"), old_rt);
}
