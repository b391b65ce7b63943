//! Alerts through a second channel, with real delivery: a target broken at the rig (its
//! refresh token revoked at the rig's oidc-provider) alerts through a working target on the
//! rig's Dovecot, once a day however often the daily job runs, and notes its recovery once; a
//! client secret near its expiry alerts through the host's `sendmail` (the rig's Postfix, its
//! own config directory given with `-C`), once per stage (30, 7, 1 day).
//!
//! "A day later" is made by moving the alert state's `alerted_at` back by a day: the state is
//! what the next process reads, so this is what a run on the next day sees.

mod common;
use common::*;
use notify_core::config::ConfigLock;
use notify_core::*;
use std::path::Path;
use std::time::Duration;

/// `text` with quoted-printable soft line breaks and `=XX` escapes undone.
/// One daily run (what the timer starts), which must succeed.
fn daily(env: &Env) -> notify_core::DailyRun {
    env.notifier
        .refresh()
        .daily(Duration::from_secs(30))
        .unwrap()
}

fn unquote(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let mut out = Vec::new();
    let b = joined.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(v) if b[i] == b'=' => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The distinct messages (by Message-Id: a Maildir holds one copy per recipient) in
/// `maildir` whose Subject contains `needle`, bodies decoded, once no new one arrived for a
/// second (delivery through Dovecot to the sink, or Postfix's pickup, is asynchronous).
fn mails(maildir: &Path, needle: &str) -> Vec<String> {
    let count = || -> Vec<String> {
        let mut found = Vec::new();
        let mut ids = std::collections::BTreeSet::new();
        for dir in ["new", "cur"] {
            for e in std::fs::read_dir(maildir.join(dir))
                .into_iter()
                .flatten()
                .flatten()
            {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                if text
                    .lines()
                    .any(|l| l.starts_with("Subject:") && l.contains(needle))
                {
                    let id = text
                        .lines()
                        .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                        .map(str::to_string)
                        // the sink writes one file per message, without adding an id
                        .unwrap_or_else(|| e.path().display().to_string());
                    if ids.insert(id) {
                        found.push(unquote(&text));
                    }
                }
            }
        }
        found
    };
    let mut last = count();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(500));
        let now = count();
        if now.len() == last.len() && !now.is_empty() {
            return now;
        }
        last = now;
    }
    last
}

/// Move every alert of `target` back by a day: the next run is "tomorrow" for them.
fn a_day_passes(env: &Env, target: &str) {
    let path = env
        .settings
        .state_dir
        .join("alerts")
        .join(format!("{target}.json"));
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (_, r) in v["problems"].as_object_mut().unwrap() {
        let at = r["alerted_at"].as_i64().unwrap();
        r["alerted_at"] = (at - 86_400).into();
    }
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn update(env: &Env, t: &SmtpTarget) -> Result<()> {
    let lock = ConfigLock::acquire(&env.settings).unwrap();
    let mut cfg = NotificationConfig::load(&env.settings).unwrap();
    let secrets = cfg.stored_smtp_secrets(&t.name).unwrap();
    cfg.update_smtp_target(t, &secrets)?;
    cfg.save(&env.settings, &lock)
}

/// A plain-login target on the rig's Dovecot: the working alert channel.
fn pager(rig: &Rig, env: &Env, name: &str) {
    let mut p = base_target(rig, name, "pager@example.test");
    p.auth_method = AuthMethod::Plain;
    p.username = Some(rig.plain_user.clone());
    env.add_target(
        &p,
        &SmtpSecrets {
            password: Some(Secret::new(rig.plain_password.clone())),
            oauth2_client_secret: None,
            oauth2_private_key: None,
        },
    );
}

fn today() -> i64 {
    notify_core::state::now().div_euclid(86_400)
}

/// `YYYY-MM-DD` of the day `days` from today (UTC).
fn date_in(days: i64) -> String {
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", (today() + days) * 86_400),
            "+%F",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn a_broken_target_alerts_once_a_day_through_its_alert_target_and_its_recovery_once() {
    let rig = Rig::get();
    let env = Env::new();
    let (pager_name, name) = (tag("pager"), tag("m365"));
    pager(&rig, &env, &pager_name);
    let (mut t, s) = microsoft_target(&rig, &name, "erin-alert@example.test");
    t.alert_target = Some(pager_name.clone());
    env.add_target(&t, &s);
    let rt = env.authorize(&rig, &t, &s, "erin-alert@example.test");
    // broken at the rig: the provider no longer knows the grant
    rig.revoke(rt.expose(), "rig-post");

    let subject = format!("oxnotify alert: target '{name}'");
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(
            env.notifier
                .refresh()
                .daily(Duration::from_secs(30))
                .unwrap(),
        );
    }
    // a send through the broken target fails and checks too: still the same day
    let sent = env.notifier.delivery().send(&[&name], &note(&tag("never")));
    assert!(sent.unwrap()[0].result.is_err());
    let alerts = mails(&rig.maildir, &subject);
    assert_eq!(alerts.len(), 1, "one alert however often the job runs");
    let mail = &alerts[0];
    assert!(mail.contains("needs re-authorization"), "{mail}");
    assert!(
        mail.contains(&format!("oxnotify authorize {name}")),
        "{mail}"
    );
    assert!(
        mail.contains("Microsoft refresh tokens expire 90 days"),
        "{mail}"
    );
    // through the alert target, never the broken one
    assert!(mail.contains("X-MailFrom: pager@example.test"), "{mail}");
    assert!(!mail.contains(rt.expose()), "a secret in the alert");
    assert_eq!(
        runs[0].alerts[0].alerted,
        [ForecastKind::NeedsReauthorization]
    );
    assert_eq!(runs[0].alerts[0].via, pager_name);
    assert!(runs[1].alerts.is_empty() && runs[2].alerts.is_empty());
    // the status shows the same forecast, and where alerts go
    let st = env.notifier.status().target(&name).unwrap();
    assert_eq!(st.alert_target.as_deref(), Some(pager_name.as_str()));
    assert!(st
        .forecast
        .iter()
        .any(|f| f.kind == ForecastKind::NeedsReauthorization && f.alert));

    // the next day: one more
    a_day_passes(&env, &name);
    daily(&env);
    daily(&env);
    assert_eq!(mails(&rig.maildir, &subject).len(), 2);

    // fixed: one recovery note, however often the job runs
    env.authorize(&rig, &t, &s, "erin-alert@example.test");
    let fixed = daily(&env);
    assert_eq!(
        fixed.alerts[0].recovered,
        [ForecastKind::NeedsReauthorization]
    );
    daily(&env);
    let notes = mails(
        &rig.maildir,
        &format!("oxnotify: target '{name}' works again"),
    );
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].contains("resolved: needs re-authorization"),
        "{}",
        notes[0]
    );
    assert_eq!(
        mails(&rig.maildir, &subject).len(),
        2,
        "no alert after the fix"
    );
}

#[test]
#[ignore = "needs the rig with Postfix (make test runs it)"]
fn a_client_secret_near_its_expiry_alerts_through_the_hosts_sendmail_once_per_stage() {
    let rig = Rig::get();
    let var =
        |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}: start the rig with Postfix"));
    let pf_maildir = std::path::PathBuf::from(var("RIG_PF_MAILDIR"));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
    settings.http_timeout = Duration::from_secs(5);
    settings.smtp_timeout = Duration::from_secs(10);
    settings.delivery_deadline = Duration::from_secs(8);
    // the rig's Postfix, not the host's: its own config directory
    settings.sendmail_command = vec![
        "/usr/sbin/sendmail".into(),
        "-C".into(),
        format!("{}/postfix", var("RIG_DIR")),
    ];
    let env = Env::with_settings(dir, settings);
    let name = tag("sec");
    let (mut t, s) = microsoft_target(&rig, &name, "erin-sec@example.test");
    t.alert_target = Some("sendmail".into());
    t.oauth2_credential_expires = Some(date_in(20));
    env.add_target(&t, &s);
    env.authorize(&rig, &t, &s, "erin-sec@example.test");
    let subject = format!("oxnotify alert: target '{name}'");

    // 20 days left: the 30-day stage, once (also a day later: stages are not daily)
    let run = daily(&env);
    assert_eq!(
        run.alerts[0].alerted,
        [ForecastKind::CredentialExpires],
        "{run:?}"
    );
    assert_eq!(run.alerts[0].error, None);
    daily(&env);
    a_day_passes(&env, &name);
    daily(&env);
    let first = mails(&pf_maildir, &subject);
    assert_eq!(first.len(), 1);
    assert!(
        first[0].contains("client secret expires in 20 day(s)"),
        "{}",
        first[0]
    );
    assert!(
        first[0].contains(&format!("oxnotify target update {name}")),
        "{}",
        first[0]
    );
    // the status says the same
    let st = env.notifier.status().target(&name).unwrap();
    let f = st
        .forecast
        .iter()
        .find(|f| f.kind == ForecastKind::CredentialExpires)
        .unwrap();
    assert_eq!(f.days_left, Some(20));
    assert!(
        f.text.starts_with("client secret expires in 20 day(s)"),
        "{}",
        f.text
    );

    // 5 days left: the 7-day stage
    t.oauth2_credential_expires = Some(date_in(5));
    update(&env, &t).unwrap();
    daily(&env);
    daily(&env);
    let second = mails(&pf_maildir, &subject);
    assert_eq!(second.len(), 2);
    assert!(second.iter().any(|m| m.contains("expires in 5 day(s)")));

    // a new secret with a new date: one recovery note
    t.oauth2_credential_expires = Some(date_in(700));
    update(&env, &t).unwrap();
    daily(&env);
    daily(&env);
    let notes = mails(
        &pf_maildir,
        &format!("oxnotify: target '{name}' works again"),
    );
    assert_eq!(notes.len(), 1);
    assert_eq!(mails(&pf_maildir, &subject).len(), 2);
}

#[test]
fn alert_targets_that_loop_or_point_at_themselves_are_refused_when_written() {
    let env = Env::new();
    let target = |name: &str, via: Option<&str>| {
        let mut t = SmtpTarget::new(
            name,
            "smtp.example.com",
            "a@example.com",
            vec!["b@example.com".into()],
        );
        t.alert_target = via.map(str::to_string);
        t
    };
    env.add_target(&target("ta", None), &SmtpSecrets::default());
    env.add_target(&target("tb", Some("ta")), &SmtpSecrets::default());
    env.add_target(&target("tc", Some("tb")), &SmtpSecrets::default());
    // ta -> tc -> tb -> ta
    let e = update(&env, &target("ta", Some("tc"))).unwrap_err();
    assert!(
        e.to_string().contains("ta -> tc -> tb -> ta") && e.to_string().contains("alert-target"),
        "{e}"
    );
    let e = update(&env, &target("ta", Some("ta"))).unwrap_err();
    assert!(e.to_string().contains("cannot alert through itself"), "{e}");
    let e = update(&env, &target("ta", Some("nosuch"))).unwrap_err();
    assert!(e.to_string().contains("no target 'nosuch'"), "{e}");
    update(&env, &target("ta", Some("sendmail"))).unwrap();
    // a loop written by hand is found before an alert would go round it
    let cfg = env.settings.config_file();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("alert-target sendmail", "alert-target tc"),
    )
    .unwrap();
    let config = NotificationConfig::load(&env.settings).unwrap();
    assert!(config.alert_chain("ta").is_err());
    assert!(config.alert_chain("tc").is_err());
}

/// Settings of "node" `node` of an installation in `dir` (`cluster`: several nodes share the
/// config and state directories; each keeps its own outbox).
fn node_settings(dir: &Path, node: &str, cluster: bool) -> Settings {
    let mut s = Settings::with_dirs(dir.join("etc"), dir.join("shared"));
    s.http_timeout = Duration::from_secs(5);
    s.smtp_timeout = Duration::from_secs(10);
    s.delivery_deadline = Duration::from_secs(8);
    s.provider_hosts = rig_provider_hosts();
    s.node_name = node.into();
    if cluster {
        s.store = notify_core::store::Kind::Cluster;
        s.node_local_dir = Some(dir.join(format!("local-{node}")));
    }
    s
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn checks_of_many_processes_and_nodes_at_once_alert_once() {
    let rig = Rig::get();
    for cluster in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let env = Env::with_settings(
            tempfile::tempdir().unwrap(),
            node_settings(dir.path(), "node0", cluster),
        );
        let pager_name = tag("pager");
        pager(&rig, &env, &pager_name);
        let name = tag("sec");
        let (mut t, s) = microsoft_target(&rig, &name, "erin-race@example.test");
        t.alert_target = Some(pager_name.clone());
        t.oauth2_credential_expires = Some(date_in(3));
        env.add_target(&t, &s);
        // three processes on each of two nodes check at the same moment
        let start = std::sync::Barrier::new(6);
        let reports: Vec<Vec<notify_core::alerts::AlertReport>> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..6)
                .map(|i| {
                    let settings = node_settings(dir.path(), &format!("node{}", i % 2), cluster);
                    let start = &start;
                    sc.spawn(move || {
                        let n = Notifier::new(settings.clone()).unwrap();
                        let config = NotificationConfig::load(&settings).unwrap();
                        start.wait();
                        n.alerts().check_configured(&config)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let alerted: Vec<_> = reports.iter().flatten().collect();
        assert_eq!(alerted.len(), 1, "cluster {cluster}: {reports:?}");
        assert_eq!(alerted[0].alerted, [ForecastKind::CredentialExpires]);
        assert_eq!(alerted[0].error, None);
        let subject = format!("oxnotify alert: target '{name}'");
        let got = mails(&rig.maildir, &subject);
        assert_eq!(got.len(), 1, "cluster {cluster}");
        assert!(
            got[0].contains("client secret expires in 3 day(s)"),
            "{}",
            got[0]
        );
    }
}

#[test]
#[ignore = "needs the rig (make test runs it)"]
fn a_message_waiting_for_an_hour_and_messages_given_up_alert() {
    use notify_core::delivery::outbox::{self, Entry};
    use notify_core::delivery::smtp::Outgoing;
    let rig = Rig::get();
    let env = Env::new();
    let pager_name = tag("pager");
    pager(&rig, &env, &pager_name);
    // a target nothing answers for
    let name = tag("slow");
    let mut t = SmtpTarget::new(
        &name,
        "127.0.0.1",
        "slow@example.test",
        vec!["ops@example.test".into()],
    );
    t.mode = SmtpMode::Insecure;
    t.port = Some(9);
    t.alert_target = Some(pager_name.clone());
    env.add_target(&t, &SmtpSecrets::default());
    let config = || NotificationConfig::load(&env.settings).unwrap();
    let check = || env.notifier.alerts().check_configured(&config());
    let subject = format!("oxnotify alert: target '{name}'");

    // a message that waited for 10 minutes: nothing yet
    let m = Outgoing::of(&note("waits").to_message(&t).unwrap());
    let young = Entry::new(
        &name,
        "waits",
        &m,
        notify_core::state::now() - 600,
        "421 busy",
    );
    outbox::save(&env.settings, &young).unwrap();
    assert_eq!(check(), []);
    // ... for two hours: an alert
    outbox::remove(&env.settings, &name, &young.id).unwrap();
    let old = Entry::new(
        &name,
        "waits",
        &m,
        notify_core::state::now() - 7200,
        "421 busy",
    );
    outbox::save(&env.settings, &old).unwrap();
    let r = check();
    assert_eq!(r[0].alerted, [ForecastKind::OutboxWaiting], "{r:?}");
    assert_eq!(r[0].error, None);
    let first = mails(&rig.maildir, &subject);
    assert_eq!(first.len(), 1);
    assert!(
        first[0].contains("waiting in the outbox, the oldest for 2 h"),
        "{}",
        first[0]
    );

    // a message given up: alerted at once, though the waiting one was alerted today
    outbox::record_given_up(&env.settings, &name, "lost one", "refused for good: 550").unwrap();
    let r = check();
    assert_eq!(r[0].alerted, [ForecastKind::MessagesGivenUp], "{r:?}");
    let both = mails(&rig.maildir, &subject);
    assert_eq!(both.len(), 2);
    assert!(
        both.iter()
            .any(|m| m.contains("'lost one': refused for good: 550")),
        "{both:?}"
    );
    // nothing new: nothing said
    assert_eq!(check(), []);

    // the waiting message is gone: one recovery note
    outbox::remove(&env.settings, &name, &old.id).unwrap();
    let r = check();
    assert_eq!(r[0].recovered, [ForecastKind::OutboxWaiting], "{r:?}");
    assert_eq!(check(), []);
    assert_eq!(
        mails(
            &rig.maildir,
            &format!("oxnotify: target '{name}' works again")
        )
        .len(),
        1
    );
}
