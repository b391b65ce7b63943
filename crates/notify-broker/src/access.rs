//! Whether a peer may have a target's token: root always (it can read the state anyway);
//! anyone else only if the target lists its user (`broker-allow-user`) or a group it is in
//! (`broker-allow-group`: the peer's primary group, or a group listing the peer's user as a
//! member). Names are resolved at every request, so account changes apply at once; a name
//! that does not resolve matches nobody.

use crate::peer::{self, PeerCred};
use notify_core::config::smtp::BrokerAllow;

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
}
