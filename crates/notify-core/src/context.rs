//! What the host stack supplies, like proxmox-notify's `Context`: today the e-mail address of
//! a user of the host stack, so that targets can name users (`mailto-user root@pam`) instead
//! of addresses. The Perl binding implements it over the resolver the host registers
//! (`OxNotify::Core::set_user_email_resolver`); it is asked on the calling thread, once per
//! user and send, before anything is delivered.

use std::collections::BTreeMap;

/// Lookups the host stack answers.
pub trait Context {
    /// The e-mail address of host-stack user `user` (`root@pam`), `None` if it has none.
    fn user_email(&self, user: &str) -> Option<String>;
}

/// The addresses of `users` that `context` knows (users without one are left out; a target
/// left without any recipient fails when its message is built).
pub fn user_emails(context: &dyn Context, users: &[String]) -> BTreeMap<String, String> {
    users
        .iter()
        .filter_map(|u| {
            context
                .user_email(u)
                .filter(|a| !a.is_empty())
                .map(|a| (u.clone(), a))
        })
        .collect()
}
