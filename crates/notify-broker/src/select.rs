//! Which target an address means: the enabled OAuth2 targets whose SASL identity
//! (`username`, else `from-address`) is the address; if none, those whose `from-address` is.
//! Addresses compare case-insensitively. Of several candidates only those the peer may use
//! count; more than one left is an admin's ambiguity to fix, not a guess.

use crate::access::{self, Peer};
use notify_core::{NotificationConfig, SmtpTarget};

/// Why no target was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoTarget {
    /// No enabled OAuth2 target uses the address; the names of invalid target sections (one
    /// of them may have been meant).
    Unknown(Vec<String>),
    /// Targets exist for the address (their names), but the peer may use none of them.
    Denied(Vec<String>),
    /// Several targets the peer may use have the address (their names).
    Ambiguous(Vec<String>),
}

impl NoTarget {
    /// The `ERR` kind of the answer.
    pub fn kind(&self) -> &'static str {
        match self {
            NoTarget::Unknown(invalid) if !invalid.is_empty() => "needs-admin-fix",
            NoTarget::Unknown(_) => "not-found",
            NoTarget::Denied(_) => "denied",
            NoTarget::Ambiguous(_) => "needs-admin-fix",
        }
    }

    /// The message of the answer, for `address`. A refused peer learns nothing about targets.
    pub fn message(&self, address: &str) -> String {
        match self {
            NoTarget::Unknown(invalid) => {
                let mut m = format!(
                    "no enabled OAuth2 target has {address} as its username or from-address: \
                     create or enable one (oxnotify target list)"
                );
                if !invalid.is_empty() {
                    m.push_str(&format!(
                        "; the config has invalid targets ({}), fix them",
                        invalid.join(", ")
                    ));
                }
                m
            }
            NoTarget::Denied(_) => format!(
                "this user may not fetch tokens for {address}: the target must list it in \
                 broker-allow-user or one of its groups in broker-allow-group"
            ),
            NoTarget::Ambiguous(names) => format!(
                "targets {} all use {address}: disable all but one or give them different \
                 identities",
                names
                    .iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The target `address` names for `peer`.
pub fn target_for(
    config: &NotificationConfig,
    address: &str,
    peer: &Peer,
) -> Result<SmtpTarget, NoTarget> {
    let mut invalid = Vec::new();
    let targets: Vec<SmtpTarget> = config
        .smtp_targets()
        .into_iter()
        .filter_map(|(name, t)| match t {
            Ok(t) => Some(t),
            Err(_) => {
                invalid.push(name);
                None
            }
        })
        .filter(|t| t.auth_method.is_oauth2() && !t.disable)
        .collect();
    let by_identity: Vec<&SmtpTarget> = targets
        .iter()
        .filter(|t| t.auth_identity().eq_ignore_ascii_case(address))
        .collect();
    let candidates = if by_identity.is_empty() {
        targets
            .iter()
            .filter(|t| t.from_address.eq_ignore_ascii_case(address))
            .collect()
    } else {
        by_identity
    };
    if candidates.is_empty() {
        return Err(NoTarget::Unknown(invalid));
    }
    let usable: Vec<&SmtpTarget> = candidates
        .iter()
        .copied()
        .filter(|t| access::allowed(peer, &t.broker_allow))
        .collect();
    match usable.as_slice() {
        [] => Err(NoTarget::Denied(
            candidates.iter().map(|t| t.name.clone()).collect(),
        )),
        [one] => Ok((*one).clone()),
        several => Err(NoTarget::Ambiguous(
            several.iter().map(|t| t.name.clone()).collect(),
        )),
    }
}
