//! Whether a peer may have a target's token: root always (it can read the state anyway);
//! anyone else only if the target lists its user (`broker-allow-user`) or a group it is in
//! (`broker-allow-group`: the peer's primary group, or a group listing the peer's user as a
//! member). Names are resolved at every request, so account changes apply at once; a name
//! that does not resolve matches nobody.
//!
//! Before that, at connect time, the [`Gate`] lets in only root and the users some target's
//! allow-list admits ([`AllowIndex`]): anyone else is refused before the broker holds anything
//! for them, so no number of their connections takes a place an allowed user needs.

use crate::peer::{self, PeerCred};
use notify_core::config::smtp::BrokerAllow;
use notify_core::{NotificationConfig, Settings};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// Who the peer is, for the decision and for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Kernel-provided credentials.
    pub cred: PeerCred,
    /// The user's name, if it has one.
    pub user: Option<String>,
}

impl Peer {
    /// Resolve the user name of `cred`.
    pub fn of(cred: PeerCred) -> Self {
        Peer {
            cred,
            user: peer::user_name(cred.uid),
        }
    }

    /// `uid 101 (Debian-exim) gid 104 pid 4242`, for log lines.
    pub fn describe(&self) -> String {
        format!(
            "uid {}{} gid {} pid {}",
            self.cred.uid,
            self.user
                .as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default(),
            self.cred.gid,
            self.cred.pid
        )
    }
}

/// True if `peer` may fetch the token of a target with `allow`.
pub fn allowed(peer: &Peer, allow: &BrokerAllow) -> bool {
    if peer.cred.uid == 0 {
        return true;
    }
    let user_matches = allow.users.iter().any(|u| match u.parse::<u32>() {
        Ok(uid) => uid == peer.cred.uid,
        Err(_) => peer::user_id(u) == Some(peer.cred.uid),
    });
    user_matches
        || allow.groups.iter().any(|g| match g.parse::<u32>() {
            Ok(gid) => gid == peer.cred.gid,
            Err(_) => peer::group(g).is_some_and(|grp| {
                grp.gid == peer.cred.gid
                    || peer
                        .user
                        .as_ref()
                        .is_some_and(|u| grp.members.iter().any(|m| m == u))
            }),
        })
}

/// Everyone some allow-list admits, resolved to IDs: the UIDs of the listed users and of the
/// members of the listed groups, and the GIDs of the listed groups (a peer's primary group).
/// The rule of [`allowed`] over all lists at once, with names looked up when the index is
/// built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowIndex {
    uids: HashSet<u32>,
    gids: HashSet<u32>,
}

impl AllowIndex {
    /// The index of `lists` (account names are looked up now).
    pub fn of<'a>(lists: impl IntoIterator<Item = &'a BrokerAllow>) -> Self {
        let mut index = AllowIndex::default();
        for allow in lists {
            for u in &allow.users {
                let uid = u.parse::<u32>().ok().or_else(|| peer::user_id(u));
                index.uids.extend(uid);
            }
            for g in &allow.groups {
                match g.parse::<u32>() {
                    Ok(gid) => {
                        index.gids.insert(gid);
                    }
                    Err(_) => {
                        if let Some(grp) = peer::group(g) {
                            index.gids.insert(grp.gid);
                            index
                                .uids
                                .extend(grp.members.iter().filter_map(|m| peer::user_id(m)));
                        }
                    }
                }
            }
        }
        index
    }

    /// The index of the allow-lists of every valid target of `config` (enabled or not: an
    /// allow-list says whom the admin trusts; which target a request may use is decided per
    /// request). Invalid target sections contribute nothing.
    pub fn of_config(config: &NotificationConfig) -> Self {
        let targets: Vec<_> = config
            .smtp_targets()
            .into_iter()
            .filter_map(|(_, t)| t.ok())
            .collect();
        AllowIndex::of(targets.iter().map(|t| &t.broker_allow))
    }

    /// True for root and for a peer some allow-list admits.
    pub fn admits(&self, cred: PeerCred) -> bool {
        cred.uid == 0 || self.uids.contains(&cred.uid) || self.gids.contains(&cred.gid)
    }
}

/// The gate's answer for a connecting peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Root, or a user some target allows.
    Admitted,
    /// No target allows this user: refuse at once.
    Refused,
    /// The configuration could not be read (the message says why) and there is no earlier
    /// index: let the peer in, the request's answer will carry the error. The per-user caps
    /// ([`crate::fair`]) still bound what it holds.
    Unknown(String),
}

/// How long an index is used before account names are looked up again, if the config file
/// did not change (a user added to an allowed group is let in after at most this long).
const INDEX_TTL: Duration = Duration::from_secs(2);

/// The config file's identity and version: a change means a new index.
type Stamp = Option<(u64, u64, i64, i64, u64)>;

fn stamp(settings: &Settings) -> Stamp {
    std::fs::metadata(settings.config_file())
        .ok()
        .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

/// The connect-time check: [`AllowIndex`] of the current configuration, rebuilt when the
/// config file changed or 2 s passed (account changes). Building it reads the config (a
/// fraction of a millisecond), so a flood of connections costs one build per 2 s, not one each.
pub struct Gate {
    settings: Settings,
    built: Option<Built>,
}

/// The last build: the index (an earlier one if this build failed), why it failed, when.
struct Built {
    index: Option<AllowIndex>,
    problem: Option<String>,
    stamp: Stamp,
    at: Instant,
}

impl Gate {
    /// A gate for the configuration of `settings`; the index is built at the first peer.
    pub fn new(settings: &Settings) -> Self {
        Gate {
            settings: settings.clone(),
            built: None,
        }
    }

    /// Whether `cred` may come in (at `now`).
    pub fn admit(&mut self, cred: PeerCred, now: Instant) -> Admission {
        if cred.uid == 0 {
            return Admission::Admitted;
        }
        let current = stamp(&self.settings);
        let fresh = self
            .built
            .as_ref()
            .is_some_and(|b| b.stamp == current && now.saturating_duration_since(b.at) < INDEX_TTL);
        if !fresh {
            let earlier = self.built.take().and_then(|b| b.index);
            self.built = Some(match NotificationConfig::load(&self.settings) {
                Ok(config) => Built {
                    index: Some(AllowIndex::of_config(&config)),
                    problem: None,
                    stamp: current,
                    at: now,
                },
                // an earlier index is better than none
                Err(e) => Built {
                    index: earlier,
                    problem: Some(e.to_string()),
                    stamp: current,
                    at: now,
                },
            });
        }
        match self.built.as_ref() {
            Some(Built {
                index: Some(index), ..
            }) => {
                if index.admits(cred) {
                    Admission::Admitted
                } else {
                    Admission::Refused
                }
            }
            Some(Built {
                problem: Some(m), ..
            }) => Admission::Unknown(m.clone()),
            _ => Admission::Refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer::of(PeerCred { pid: 1, uid, gid })
    }

    fn allow(users: &[&str], groups: &[&str]) -> BrokerAllow {
        BrokerAllow {
            users: users.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn root_always_others_only_when_listed() {
        let none = allow(&[], &[]);
        assert!(allowed(&peer(0, 0), &none));
        assert!(!allowed(&peer(65534, 65534), &none));
        assert!(allowed(&peer(65534, 1), &allow(&["65534"], &[])));
        assert!(allowed(&peer(4242, 65534), &allow(&[], &["65534"])));
        assert!(!allowed(&peer(4242, 4242), &allow(&["65534"], &["65534"])));
    }

    #[test]
    fn names_resolve_through_the_account_database() {
        // nobody/nogroup exist on every Debian system
        let nobody = peer(65534, 65534);
        assert!(allowed(&nobody, &allow(&["nobody"], &[])));
        assert!(allowed(&nobody, &allow(&[], &["nogroup"])));
        assert!(!allowed(&nobody, &allow(&["root"], &["root"])));
        assert!(!allowed(
            &nobody,
            &allow(&["no-such-user-oxnotify"], &["no-such-group"])
        ));
    }

    #[test]
    fn the_index_admits_whom_some_list_allows() {
        let lists = [
            allow(&["4242", "no-such-user-oxnotify"], &[]),
            allow(&["nobody"], &["4343", "no-such-group"]),
            allow(&[], &["nogroup"]),
        ];
        let index = AllowIndex::of(lists.iter());
        let cred = |uid, gid| PeerCred { pid: 1, uid, gid };
        assert!(index.admits(cred(0, 0)), "root always");
        assert!(index.admits(cred(4242, 1)));
        assert!(index.admits(cred(65534, 65534)), "by name");
        assert!(index.admits(cred(5000, 4343)), "by primary group");
        assert!(index.admits(cred(5000, 65534)), "by primary group's name");
        assert!(!index.admits(cred(5000, 5000)));
        assert!(!AllowIndex::default().admits(cred(4242, 4242)));
        // every peer the index admits, some list allows (for peers with a resolvable name too)
        for (uid, gid) in [(4242, 1), (65534, 65534), (5000, 4343), (5000, 65534)] {
            assert!(lists.iter().any(|l| allowed(&peer(uid, gid), l)));
        }
    }

    #[test]
    fn the_gate_follows_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::with_dirs(dir.path().join("etc"), dir.path().join("var"));
        let mut gate = Gate::new(&settings);
        let now = Instant::now();
        let cred = PeerCred {
            pid: 1,
            uid: 4242,
            gid: 4242,
        };
        // no config at all: root only
        assert_eq!(gate.admit(cred, now), Admission::Refused);
        assert_eq!(
            gate.admit(PeerCred { uid: 0, ..cred }, now),
            Admission::Admitted
        );
        std::fs::create_dir_all(&settings.config_dir).unwrap();
        std::fs::write(
            settings.config_file(),
            "smtp: relay\n\tserver smtp.example.com\n\tmode starttls\n\tauth-method oauth2\n\
             \tfrom-address a@example.com\n\tmailto b@example.com\n\toauth2-client-id cid\n\
             \toauth2-token-url https://login.example.com/token\n\toauth2-scope smtp\n\
             \tbroker-allow-user 4242\n",
        )
        .unwrap();
        // a changed file is seen at once, without waiting for the index to age
        assert_eq!(gate.admit(cred, now), Admission::Admitted);
        assert_eq!(
            gate.admit(PeerCred { uid: 4243, ..cred }, now),
            Admission::Refused
        );
    }
}
