//! What a stored authorization belongs to.
//!
//! A refresh token (and the client secret that goes with it) is valid for one app
//! registration: auth method, client ID, tenant, token and authorize URL, scope. A cached
//! access token is, in addition, only meant for one SMTP server, port, mode and identity, and
//! for the local accounts the token broker may hand it to (`broker-allow-user/-group`).
//! Someone who may edit a target must not be able to send these secrets somewhere new by
//! changing one of those keys, so:
//!
//! - the API drops the stored tokens when an update changes what they are bound to (a refresh
//!   token left in place could mint an access token for a new server), and the stored client
//!   secret or password unless the same update supplies it again ([`Binding::of`] before and
//!   after, compared with [`Binding::registration_changed`] / [`Binding::delivery_changed`]);
//! - the token layer checks the fingerprints stored with the state before it uses a refresh
//!   token or a cached access token, so a changed config file (edited by hand, restored from
//!   a backup) cannot redirect them either.
//!
//! Fingerprints are SHA-256 over the resolved values, so the state file does not reveal them
//! and any change, including of a provider default, is noticed.

use crate::config::smtp::SmtpTarget;
use crate::digest::sha256_hex_of_parts as fingerprint;
use crate::oauth2::{EndpointParams, Endpoints};
use crate::state::OAuth2State;

/// The fingerprints of a target's configuration that stored secrets are bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The app registration (`None` for targets without OAuth2, or an invalid one).
    pub registration: Option<String>,
    /// Where and as whom the target delivers (server, port, mode, insecure auth, identity,
    /// auth method, transport: for Graph the host and mailbox of the sendMail URL), plus the
    /// registration.
    pub delivery: String,
}

impl Binding {
    /// The fingerprints of `target` as configured now.
    pub fn of(target: &SmtpTarget) -> Self {
        let registration = if target.auth_method.is_oauth2() {
            crate::oauth2::provider::resolve_any_host(
                target.auth_method,
                &EndpointParams::of_target(target),
            )
            .ok()
            .map(|e| registration_fingerprint(target, &e))
        } else {
            None
        };
        // the local accounts the token broker hands the token to are destinations too
        let mut allowed: Vec<String> = target
            .broker_allow
            .users
            .iter()
            .map(|u| format!("u:{u}"))
            .chain(target.broker_allow.groups.iter().map(|g| format!("g:{g}")))
            .collect();
        allowed.sort();
        allowed.dedup();
        let port = target.effective_port().to_string();
        let mut parts = vec![
            "delivery-v2",
            target.auth_method.as_str(),
            &target.server,
            &port,
            target.mode.as_str(),
            if target.allow_insecure_auth { "1" } else { "0" },
            target.auth_identity(),
            registration.as_deref().unwrap_or(""),
        ];
        let allowed = allowed.join(",");
        parts.push(&allowed);
        // Graph: the transport is part of where the token goes (`server` is then the Graph
        // host, the identity the mailbox in the sendMail URL); SMTP targets keep the
        // fingerprint they had before the transport key existed
        if target.is_graph() {
            parts.extend(["transport", target.transport().as_str()]);
        }
        let delivery = fingerprint(&parts);
        Binding {
            registration,
            delivery,
        }
    }

    /// True if a refresh token or client secret obtained for `self` must not be used for
    /// `new`.
    pub fn registration_changed(&self, new: &Binding) -> bool {
        self.registration != new.registration
    }

    /// True if tokens or a password for `self` must not be sent for `new`.
    pub fn delivery_changed(&self, new: &Binding) -> bool {
        self.delivery != new.delivery
    }

    /// Whether the tokens in `state` may be used with this binding (the target as configured
    /// now): the one check before any stored token is used or sent.
    pub fn admits(&self, state: &OAuth2State) -> Fit {
        if state.registration_binding.is_none() && state.delivery_binding.is_none() {
            return Fit::Unbound;
        }
        let same_registration =
            self.registration.is_some() && state.registration_binding == self.registration;
        let same_delivery = state.delivery_binding.as_deref() == Some(self.delivery.as_str());
        match (same_registration, same_delivery) {
            (true, true) => Fit::Here,
            (false, _) => Fit::Elsewhere(
                "its OAuth2 settings (auth method, client ID, tenant, endpoints or scope) changed \
                 since it was authorized, so the stored authorization is not used with them",
            ),
            (true, false) => Fit::Elsewhere(
                "its SMTP server, port, mode, identity or broker allow-list changed since it was \
                 authorized, so its tokens are not sent there",
            ),
        }
    }

    /// Bind `state` to this binding: what is stored from now on belongs to the target as
    /// configured now (the one stamp, after every authorization, refresh and mint).
    pub fn stamp(&self, state: &mut OAuth2State) {
        state.registration_binding = self.registration.clone();
        state.delivery_binding = Some(self.delivery.clone());
    }
}

/// How a stored state fits the target as configured now ([`Binding::admits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Obtained for exactly this configuration.
    Here,
    /// Written before bindings existed: it belongs to the target it is used with, and is
    /// stamped at its next use.
    Unbound,
    /// Obtained for another configuration (the reason says which part changed): never used
    /// or sent here.
    Elsewhere(&'static str),
}

fn registration_fingerprint(target: &SmtpTarget, e: &Endpoints) -> String {
    let mut parts = vec![
        "registration-v1",
        target.auth_method.as_str(),
        target.oauth2_client_id.as_deref().unwrap_or(""),
        target.oauth2_tenant_id.as_deref().unwrap_or(""),
        e.token_url.as_str(),
        e.authorize_url.as_ref().map(url::Url::as_str).unwrap_or(""),
    ];
    let scopes = e.scopes.join(" ");
    parts.push(&scopes);
    // keys added with the flows of issue 11: part of the fingerprint only when set, so the
    // fingerprints (and stored authorizations) of targets without them stay as they were
    let flow_keys = [
        ("flow", target.oauth2_flow.map(|f| f.as_str())),
        ("client-auth", target.oauth2_client_auth.map(|a| a.as_str())),
        ("service-account", target.oauth2_service_account.as_deref()),
        ("key-id", target.oauth2_key_id.as_deref()),
        (
            "certificate-thumbprint",
            target.oauth2_certificate_thumbprint.as_deref(),
        ),
        (
            "device-authorize-url",
            e.device_authorize_url
                .as_ref()
                .map(url::Url::as_str)
                .filter(|_| target.oauth2_device_authorize_url.is_some()),
        ),
    ];
    for (key, value) in flow_keys {
        if let Some(v) = value {
            parts.push(key);
            parts.push(v);
        }
    }
    fingerprint(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::smtp::{AuthMethod, ClientAuthMethod, OAuth2Flow, SmtpMode};

    fn target() -> SmtpTarget {
        SmtpTarget {
            mode: SmtpMode::Starttls,
            auth_method: AuthMethod::OAuth2,
            oauth2_client_id: Some("cid".into()),
            oauth2_token_url: Some("https://idp.example.com/token".into()),
            oauth2_authorize_url: Some("https://idp.example.com/auth".into()),
            oauth2_scope: Some("smtp".into()),
            broker_allow: Default::default(),
            ..SmtpTarget::new(
                "t",
                "smtp.example.com",
                "a@example.com",
                vec!["b@example.com".into()],
            )
        }
    }

    #[test]
    fn each_bound_key_changes_the_right_fingerprint() {
        let base = Binding::of(&target());
        assert!(base.registration.is_some());
        let registration_keys: Vec<fn(&mut SmtpTarget)> = vec![
            |t| t.oauth2_token_url = Some("https://evil.example.net/token".into()),
            |t| t.oauth2_authorize_url = Some("https://evil.example.net/auth".into()),
            |t| t.oauth2_client_id = Some("other".into()),
            |t| t.oauth2_scope = Some("smtp other".into()),
            |t| t.auth_method = AuthMethod::GoogleOAuth2,
            |t| t.oauth2_flow = Some(OAuth2Flow::ClientCredentials),
            |t| t.oauth2_client_auth = Some(ClientAuthMethod::ClientSecretPost),
            |t| t.oauth2_service_account = Some("sa@p.iam.gserviceaccount.com".into()),
            |t| t.oauth2_key_id = Some("k1".into()),
            |t| t.oauth2_certificate_thumbprint = Some("00".repeat(20)),
            |t| t.oauth2_device_authorize_url = Some("https://idp.example.com/device".into()),
        ];
        for change in registration_keys {
            let mut t = target();
            change(&mut t);
            let b = Binding::of(&t);
            assert!(base.registration_changed(&b), "{t:?}");
            assert!(base.delivery_changed(&b), "{t:?}");
        }
        let delivery_keys: Vec<fn(&mut SmtpTarget)> = vec![
            |t| t.server = "smtp.evil.example.net".into(),
            |t| t.port = Some(2525),
            |t| t.mode = SmtpMode::Insecure,
            |t| t.allow_insecure_auth = true,
            |t| t.username = Some("other@example.com".into()),
            |t| t.broker_allow.groups.push("mail".into()),
            |t| t.broker_allow.users.push("nobody".into()),
            |t| t.transport = Some(crate::config::smtp::Transport::Graph),
        ];
        for change in delivery_keys {
            let mut t = target();
            change(&mut t);
            let b = Binding::of(&t);
            assert!(!base.registration_changed(&b), "{t:?}");
            assert!(base.delivery_changed(&b), "{t:?}");
        }
        // keys that are not bound: recipients, author, comment
        let mut t = target();
        t.mailto.push("c@example.com".into());
        t.author = Some("x".into());
        t.comment = Some("y".into());
        assert_eq!(Binding::of(&t), base);
        // an explicit `transport smtp` is the default: nothing to re-authorize
        let mut t = target();
        t.transport = Some(crate::config::smtp::Transport::Smtp);
        assert_eq!(Binding::of(&t), base);
    }

    #[test]
    fn a_graph_targets_host_and_mailbox_are_bound() {
        let graph = || SmtpTarget {
            auth_method: AuthMethod::MicrosoftOAuth2,
            oauth2_client_id: Some("cid".into()),
            oauth2_tenant_id: Some("contoso.com".into()),
            transport: Some(crate::config::smtp::Transport::Graph),
            ..SmtpTarget::new(
                "g",
                "graph.microsoft.com",
                "a@contoso.com",
                vec!["b@contoso.com".into()],
            )
        };
        let base = Binding::of(&graph());
        let changes: Vec<fn(&mut SmtpTarget)> = vec![
            |t| t.server = "graph.microsoft.us".into(),
            |t| t.port = Some(8443),
            |t| t.username = Some("other@contoso.com".into()),
            |t| t.from_address = "other@contoso.com".into(),
        ];
        for change in changes {
            let mut t = graph();
            change(&mut t);
            assert!(base.delivery_changed(&Binding::of(&t)), "{t:?}");
        }
        // the national cloud's host also changes the scope: the registration too
        let mut t = graph();
        t.server = "graph.microsoft.us".into();
        assert!(base.registration_changed(&Binding::of(&t)));
    }
}
