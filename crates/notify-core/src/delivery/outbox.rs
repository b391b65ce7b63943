//! The durable outbox: messages that could not be delivered within the delivery deadline for
//! a transient reason wait here until a flush delivers them (see `delivery`).
//!
//! Layout: `<state>/outbox/<target>/<id>.json`, one file per message, 0600, written atomically
//! (temp file, fsync, rename, fsync of the directory): a crash leaves a complete file or none.
//! Each file holds the complete formatted message and its envelope plus the delivery metadata
//! (attempts, first and last attempt, last error), so a flush needs neither the notification
//! nor the target's recipients of that time. Ids sort by creation time, so the name order is
//! the delivery order (oldest first). Messages given up (too old, or refused for good during a
//! flush) are recorded in `<state>/outbox.meta/<target>.given-up.json` for the status warning;
//! the flush locks live there too, so `<state>/outbox` is empty exactly when nothing waits.

use super::smtp::Outgoing;
use crate::error::{Error, Result};
use crate::settings::Settings;
use crate::state::now;
use crate::store::local;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

/// Show a warning in the status for this long after a message was given up.
pub const GIVEN_UP_WARNING_SECS: i64 = 7 * 86_400;

/// One spooled message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// The id (also the file name without `.json`).
    pub id: String,
    /// Target name.
    pub target: String,
    /// The notification's title (the Subject), for listings.
    pub title: String,
    /// Envelope sender.
    pub from: Option<String>,
    /// Envelope recipients.
    pub to: Vec<String>,
    /// The formatted message, base64.
    pub message: String,
    /// When the message was first tried (Unix time).
    pub first_attempt: i64,
    /// When it was last tried.
    pub last_attempt: i64,
    /// Delivery attempts so far (sessions, not retries within one).
    pub attempts: u32,
    /// The last error (secret-free).
    pub last_error: String,
    /// A sender is still trying it until then (Unix time): a flush leaves it alone, so the
    /// message is never sent twice. A sender that was killed leaves it to the next flush
    /// after that time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight_until: Option<i64>,
}

impl Entry {
    /// A new entry for `message`, tried once and failed with `error`.
    pub fn new(
        target: &str,
        title: &str,
        message: &Outgoing,
        first_attempt: i64,
        error: &str,
    ) -> Self {
        Entry {
            id: new_id(),
            target: target.to_string(),
            title: title.to_string(),
            from: message.from.as_ref().map(|a| a.to_string()),
            to: message.to.iter().map(|a| a.to_string()).collect(),
            message: base64::engine::general_purpose::STANDARD.encode(&message.body),
            first_attempt,
            last_attempt: now(),
            attempts: 1,
            last_error: error.to_string(),
            in_flight_until: None,
        }
    }

    /// A message a caller handed over, spooled before its first attempt, which its sender
    /// makes until `in_flight_until` at the latest.
    pub fn accepted(target: &str, title: &str, message: &Outgoing, in_flight_until: i64) -> Self {
        Entry {
            attempts: 0,
            last_error: "not delivered yet: the first attempt is under way".into(),
            in_flight_until: Some(in_flight_until),
            ..Entry::new(target, title, message, now(), "")
        }
    }

    /// True while its sender is still trying it.
    pub fn in_flight(&self) -> bool {
        self.in_flight_until.is_some_and(|t| t > now())
    }

    /// The message as it goes on the wire; an error if the file was edited into nonsense.
    pub fn outgoing(&self) -> Result<Outgoing> {
        let bad = |what: &str| Error::CorruptState {
            path: PathBuf::from(format!("outbox/{}/{}.json", self.target, self.id)),
            message: format!("bad {what}"),
        };
        let addr = |a: &str| lettre::Address::from_str(a).map_err(|_| bad("address"));
        Ok(Outgoing {
            from: self.from.as_deref().map(addr).transpose()?,
            to: self.to.iter().map(|a| addr(a)).collect::<Result<_>>()?,
            body: base64::engine::general_purpose::STANDARD
                .decode(&self.message)
                .map_err(|_| bad("message encoding"))?,
        })
    }

    /// Seconds since the first attempt.
    pub fn age_secs(&self) -> i64 {
        (now() - self.first_attempt).max(0)
    }
}

/// A listing entry: the metadata without the message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Listed {
    /// Id (for `oxnotify outbox drop ID`).
    pub id: String,
    /// Target name.
    pub target: String,
    /// Title.
    pub title: String,
    /// Recipients.
    pub to: Vec<String>,
    /// First attempt (Unix time).
    pub first_attempt: i64,
    /// Last attempt.
    pub last_attempt: i64,
    /// Attempts.
    pub attempts: u32,
    /// Age in seconds.
    pub age_secs: i64,
    /// Last error.
    pub last_error: String,
}

impl From<&Entry> for Listed {
    fn from(e: &Entry) -> Self {
        Listed {
            id: e.id.clone(),
            target: e.target.clone(),
            title: e.title.clone(),
            to: e.to.clone(),
            first_attempt: e.first_attempt,
            last_attempt: e.last_attempt,
            attempts: e.attempts,
            age_secs: e.age_secs(),
            last_error: e.last_error.clone(),
        }
    }
}

/// What was given up for a target (newest last), for the status warning.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GivenUp {
    /// Messages given up so far.
    pub count: u64,
    /// When the last one was given up.
    pub last_at: Option<i64>,
    /// Its title.
    pub last_title: Option<String>,
    /// Why.
    pub last_reason: Option<String>,
}

/// The outbox of one target, for the status and the page.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct OutboxStatus {
    /// Messages waiting.
    pub queued: usize,
    /// Age of the oldest waiting message in seconds.
    pub oldest_age_secs: Option<i64>,
    /// The last error of the oldest waiting message.
    pub last_error: Option<String>,
    /// Messages given up (ever), and the last one.
    pub given_up: GivenUp,
    /// What the admin should know, if anything.
    pub warning: Option<String>,
}

fn root(settings: &Settings) -> PathBuf {
    settings.local_dir().join("outbox")
}

/// The spool directory of `target`.
pub fn dir(settings: &Settings, target: &str) -> PathBuf {
    root(settings).join(target)
}

/// Beside the spool, not in it: the spool holds nothing but waiting messages, so the timer's
/// `ConditionDirectoryNotEmpty` sees exactly whether anything waits.
fn meta_dir(settings: &Settings) -> PathBuf {
    settings.local_dir().join("outbox.meta")
}

/// The lock file that makes one flush per target run at a time.
pub fn flush_lock_file(settings: &Settings, target: &str) -> PathBuf {
    meta_dir(settings).join(format!("{target}.flush.lock"))
}

fn given_up_file(settings: &Settings, target: &str) -> PathBuf {
    meta_dir(settings).join(format!("{target}.given-up.json"))
}

/// Create the directory of the flush locks and given-up records.
pub fn ensure_meta_dir(settings: &Settings) -> Result<()> {
    local::ensure_dir(&settings.local_dir(), 0o700, false)?;
    local::ensure_dir(&meta_dir(settings), 0o700, true)
}

/// Remove `target`'s spool directory if it is empty (after a flush, under its lock). A send
/// that queues at the same moment recreates it ([`save`] retries).
pub fn remove_dir_if_empty(settings: &Settings, target: &str) {
    // temp files of writes a crash interrupted (a live write's is seconds old)
    crate::store::sweep(
        &dir(settings, target),
        |n| n.starts_with(".tmp-"),
        Some(std::time::Duration::from_secs(3600)),
    );
    let _ = std::fs::remove_dir(dir(settings, target));
    let _ = std::fs::remove_dir(root(settings));
}

/// Time-ordered, unique across processes: nanoseconds, pid, a per-process counter.
fn new_id() -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos:020}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// True for strings that can be ids (digits and '-'): a caller-given id never escapes the
/// spool directory.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_digit() || c == '-')
}

fn ensure_dirs(settings: &Settings, target: &str) -> Result<()> {
    local::ensure_dir(&settings.local_dir(), 0o700, false)?;
    local::ensure_dir(&root(settings), 0o700, true)?;
    local::ensure_dir(&dir(settings, target), 0o700, true)
}

/// Write `entry` (new or updated) atomically, 0600, fsynced.
pub fn save(settings: &Settings, entry: &Entry) -> Result<()> {
    save_with(settings, entry, true)
}

/// Spool a message a caller hands over, before its first attempt: atomically, but without
/// the fsync (it must survive the caller being killed, which needs none; it is fsynced by
/// [`save`] when the first attempt fails, so a queued message also survives a power loss).
/// A healthy send then costs a small write and a removal, not two disk flushes.
pub fn spool(settings: &Settings, entry: &Entry) -> Result<()> {
    save_with(settings, entry, false)
}

fn save_with(settings: &Settings, entry: &Entry, durable: bool) -> Result<()> {
    let json = serde_json::to_vec_pretty(entry).map_err(|e| Error::CorruptState {
        path: dir(settings, &entry.target),
        message: e.to_string(),
    })?;
    let path = entry_file(settings, &entry.target, &entry.id);
    let mut tries = 0;
    loop {
        ensure_dirs(settings, &entry.target)?;
        match local::write_atomic_with(&path, &json, 0o600, ".tmp-", durable) {
            // a flush removed the empty directory between our mkdir and our write
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && tries < 3 =>
            {
                tries += 1
            }
            other => return other,
        }
    }
}

fn entry_file(settings: &Settings, target: &str, id: &str) -> PathBuf {
    dir(settings, target).join(format!("{id}.json"))
}

/// Remove a delivered or dropped entry; the directory is synced so the removal survives a
/// crash (otherwise the message could be sent again after a reboot).
pub fn remove(settings: &Settings, target: &str, id: &str) -> Result<()> {
    let path = entry_file(settings, target, id);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&path, e)),
    }
    let d = dir(settings, target);
    std::fs::File::open(&d)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&d, e))
}

/// The entries of `target`, oldest first. Files that cannot be read or parsed are left in
/// place and reported as errors (they are never deleted automatically).
pub fn entries(settings: &Settings, target: &str) -> Result<(Vec<Entry>, Vec<Error>)> {
    let d = dir(settings, target);
    let rd = match std::fs::read_dir(&d) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(Error::io(&d, e)),
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && n.ends_with(".json"))
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    let mut bad = Vec::new();
    for n in names {
        let path = d.join(&n);
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Entry>(&bytes) {
                Ok(e) if e.target == target && format!("{}.json", e.id) == n => out.push(e),
                Ok(_) => bad.push(Error::CorruptState {
                    path,
                    message: "the entry's id or target does not match its file".into(),
                }),
                Err(e) => bad.push(Error::CorruptState {
                    path,
                    message: e.to_string(),
                }),
            },
            // removed by a concurrent flush meanwhile
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bad.push(Error::io(&path, e)),
        }
    }
    Ok((out, bad))
}

/// Names of the targets that have a spool directory.
pub fn targets(settings: &Settings) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root(settings))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// True if `target` has at least one waiting message (cheap: no parsing).
pub fn has_entries(settings: &Settings, target: &str) -> bool {
    std::fs::read_dir(dir(settings, target)).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| !n.starts_with('.') && n.ends_with(".json"))
        })
    })
}

/// Find entry `id` in any target's spool.
pub fn find(settings: &Settings, id: &str) -> Result<Option<Entry>> {
    if !valid_id(id) {
        return Err(Error::param(
            "id",
            "not an outbox id (see `oxnotify outbox list`)",
        ));
    }
    for t in targets(settings) {
        let path = entry_file(settings, &t, id);
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let e = serde_json::from_slice::<Entry>(&bytes).map_err(|e| Error::CorruptState {
                path: path.clone(),
                message: e.to_string(),
            })?;
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// Record that a message of `target` was given up (status warning).
pub fn record_given_up(settings: &Settings, target: &str, title: &str, reason: &str) -> Result<()> {
    ensure_meta_dir(settings)?;
    let mut g = given_up(settings, target);
    g.count += 1;
    g.last_at = Some(now());
    g.last_title = Some(title.to_string());
    g.last_reason = Some(reason.to_string());
    let json = serde_json::to_vec(&g).map_err(|e| Error::CorruptState {
        path: given_up_file(settings, target),
        message: e.to_string(),
    })?;
    local::write_atomic(&given_up_file(settings, target), &json, 0o600)
}

fn given_up(settings: &Settings, target: &str) -> GivenUp {
    std::fs::read(given_up_file(settings, target))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Queue depth, oldest age and the warning for `target`.
pub fn status(settings: &Settings, target: &str) -> OutboxStatus {
    let (entries, bad) = entries(settings, target).unwrap_or_default();
    let oldest = entries.first();
    let given_up = given_up(settings, target);
    let max_age = settings.outbox_max_age.as_secs() as i64;
    let mut warnings = Vec::new();
    if let Some(o) = oldest {
        warnings.push(format!(
            "{} message(s) waiting in the outbox, the oldest for {} (given up after {}); last error: {}",
            entries.len(),
            human_age(o.age_secs()),
            human_age(max_age),
            o.last_error
        ));
    }
    if !bad.is_empty() {
        warnings.push(format!(
            "{} unreadable outbox file(s) in {} (left untouched; inspect or remove them)",
            bad.len(),
            dir(settings, target).display()
        ));
    }
    if let Some(at) = given_up
        .last_at
        .filter(|at| now() - at < GIVEN_UP_WARNING_SECS)
    {
        warnings.push(format!(
            "{} message(s) given up so far, the last {} ago ('{}': {})",
            given_up.count,
            human_age(now() - at),
            given_up.last_title.as_deref().unwrap_or(""),
            given_up.last_reason.as_deref().unwrap_or("")
        ));
    }
    OutboxStatus {
        queued: entries.len(),
        oldest_age_secs: oldest.map(Entry::age_secs),
        last_error: oldest.map(|o| o.last_error.clone()),
        given_up,
        warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
    }
}

/// "3 min", "5 h", "2 d".
pub fn human_age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Outgoing {
        Outgoing {
            from: Some("a@example.com".parse().unwrap()),
            to: vec!["b@example.com".parse().unwrap()],
            body: b"Subject: x\r\n\r\nhello\r\n".to_vec(),
        }
    }

    #[test]
    fn entries_round_trip_private_and_oldest_first() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let s = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
        let a = Entry::new("t", "first", &sample(), now(), "421 busy");
        let b = Entry::new("t", "second", &sample(), now(), "421 busy");
        save(&s, &b).unwrap();
        save(&s, &a).unwrap();
        let (list, bad) = entries(&s, "t").unwrap();
        assert!(bad.is_empty());
        assert_eq!(
            list.iter().map(|e| e.title.as_str()).collect::<Vec<_>>(),
            ["first", "second"]
        );
        assert_eq!(list[0].outgoing().unwrap(), sample());
        let meta = std::fs::metadata(super::entry_file(&s, "t", &a.id)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(find(&s, &b.id).unwrap().unwrap().title, "second");
        assert!(find(&s, "../x").is_err());
        remove(&s, "t", &a.id).unwrap();
        assert_eq!(status(&s, "t").queued, 1);
    }
}
