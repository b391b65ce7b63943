//! The provider table: where each OAuth2 auth method authorizes and gets tokens. Endpoints
//! are data; a target may override them (sovereign clouds, test rigs) with
//! `oauth2-authorize-url` / `oauth2-token-url` / `oauth2-scope`.
//!
//! The named providers' endpoints are pinned to their own hosts, sovereign clouds included
//! ([`Provider::endpoint_hosts`]): whoever may edit a target cannot send its codes, PKCE
//! verifiers and client secret to a host of their choosing by overriding a URL. Other hosts
//! only through [`crate::Settings::provider_hosts`] (root's environment). A device
//! authorization's verification URL must be on the provider's hosts as well
//! ([`check_verification_uri`]).

use crate::config::smtp::{AuthMethod, OAuth2Flow, SmtpTarget};
use crate::config::validate;
use crate::error::{Error, Result};

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic (`client_secret_basic`, the RFC 6749 default).
    Basic,
    /// `client_id` / `client_secret` in the form body (`client_secret_post`).
    Post,
    /// `client_id` plus a signed client assertion in the form body (`private_key_jwt`).
    PrivateKeyJwt,
}

impl From<crate::config::smtp::ClientAuthMethod> for ClientAuth {
    fn from(m: crate::config::smtp::ClientAuthMethod) -> Self {
        use crate::config::smtp::ClientAuthMethod as M;
        match m {
            M::ClientSecretPost => ClientAuth::Post,
            M::ClientSecretBasic => ClientAuth::Basic,
            M::PrivateKeyJwt => ClientAuth::PrivateKeyJwt,
        }
    }
}

/// Static facts about a provider.
#[derive(Debug, Clone, Copy)]
pub struct Provider {
    /// The auth method it belongs to.
    pub method: AuthMethod,
    /// Authorize endpoint; `{tenant}` is replaced by the validated tenant.
    pub authorize_url: &'static str,
    /// Token endpoint; `{tenant}` is replaced by the validated tenant.
    pub token_url: &'static str,
    /// Scopes requested.
    pub scope: &'static str,
    /// Scope of app-only (client-credentials) tokens, if the provider has its own.
    pub app_only_scope: &'static str,
    /// Device authorization endpoint (RFC 8628), if the provider offers one for mail.
    pub device_authorize_url: &'static str,
    /// Extra authorize-request parameters (offline access, consent).
    pub extra_authorize_params: &'static [(&'static str, &'static str)],
    /// Token endpoint client authentication.
    pub client_auth: ClientAuth,
    /// Lifetime of a refresh token from issue, if the provider documents a fixed one.
    pub refresh_token_lifetime_days: Option<i64>,
    /// Idle time after which an unused refresh token dies, if documented.
    pub refresh_token_idle_days: Option<i64>,
    /// Hint shown when the grant is gone.
    pub reauth_hint: &'static str,
    /// The hosts its authorize, token and device endpoints may be on (empty: any, for the
    /// generic provider).
    pub endpoint_hosts: &'static [&'static str],
    /// The hosts a device authorization's verification URL may be on, besides
    /// [`Provider::endpoint_hosts`] (the generic provider: the device or authorize
    /// endpoint's host).
    pub verification_hosts: &'static [&'static str],
}

/// Microsoft Entra's token service hosts: global, US Government (GCC High and DoD) and China
/// (21Vianet; both of its names).
pub const MICROSOFT_HOSTS: &[&str] = &[
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
];

/// Microsoft Graph's hosts (the `server` of a `transport graph` target): global (and GCC),
/// US Government L4 (GCC High) and L5 (DoD), China (21Vianet). Tokens are not interchangeable
/// between these clouds: each host's tokens are for its own resource ([`graph_resource`]).
pub const GRAPH_HOSTS: &[&str] = &[
    "graph.microsoft.com",
    "graph.microsoft.us",
    "dod-graph.microsoft.us",
    "microsoftgraph.chinacloudapi.cn",
];

/// The Graph resource (token audience) of the Graph host `host`: the host's own root for
/// Microsoft's clouds; for another host root allowed (a test rig standing in for Graph),
/// the global resource.
pub fn graph_resource(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    if GRAPH_HOSTS.contains(&host.as_str()) {
        format!("https://{host}")
    } else {
        "https://graph.microsoft.com".into()
    }
}

/// The delegated scope of a Graph target on `host`: `Mail.Send` of that cloud's Graph, plus
/// `offline_access` for the refresh token.
pub fn graph_delegated_scope(host: &str) -> String {
    format!("{}/Mail.Send offline_access", graph_resource(host))
}

/// The app-only (client-credentials) scope of a Graph target on `host`: the resource's
/// `.default` (the Mail.Send application permission, or Exchange's RBAC for Applications).
pub fn graph_app_only_scope(host: &str) -> String {
    format!("{}/.default", graph_resource(host))
}

/// The `sendMail` URL of a Graph target: `https://{server}[:port]/v1.0/users/{mailbox}/sendMail`,
/// the mailbox being the target's `username` (else `from-address`). The host is pinned to
/// [`GRAPH_HOSTS`] like the token endpoints, other hosts only if root allows them
/// (`extra_hosts`, from [`crate::Settings::provider_hosts`]); a bearer token goes nowhere else.
pub fn graph_url(target: &SmtpTarget, extra_hosts: &[String]) -> Result<url::Url> {
    let host = target.server.to_ascii_lowercase();
    let mut url = validate::endpoint_url(&format!("https://{host}/"))
        .map_err(|m| Error::param("server", m))?;
    if !host_allowed(&url, GRAPH_HOSTS, extra_hosts) {
        return Err(Error::param(
            "server",
            format!(
                "target '{}': transport graph sends only to Microsoft Graph ({}); host '{host}' \
                 is not one of them (other hosts only if root allows them in \
                 OXNOTIFY_ALLOW_PROVIDER_HOSTS)",
                target.name,
                GRAPH_HOSTS.join(", ")
            ),
        ));
    }
    if target.effective_port() != 443 {
        url.set_port(Some(target.effective_port()))
            .map_err(|()| Error::param("port", "not a port for an https URL"))?;
    }
    url.path_segments_mut()
        .map_err(|()| Error::param("server", "not a base URL"))?
        .extend(["v1.0", "users", target.auth_identity(), "sendMail"]);
    Ok(url)
}

/// Google's authorize and token hosts.
pub const GOOGLE_HOSTS: &[&str] = &["accounts.google.com", "oauth2.googleapis.com"];

/// Google: the refresh token is refreshed in place; it dies after 6 months unused, on a
/// password change, or after 7 days while the OAuth consent screen is in "Testing".
pub const GOOGLE: Provider = Provider {
    method: AuthMethod::GoogleOAuth2,
    authorize_url: "https://accounts.google.com/o/oauth2/v2/auth",
    token_url: "https://oauth2.googleapis.com/token",
    scope: "https://mail.google.com/",
    app_only_scope: "",
    // Google has a device endpoint, but it refuses https://mail.google.com/
    device_authorize_url: "",
    extra_authorize_params: &[("access_type", "offline"), ("prompt", "consent")],
    client_auth: ClientAuth::Post,
    refresh_token_lifetime_days: None,
    refresh_token_idle_days: Some(180),
    reauth_hint: "Google refresh tokens die after 7 days while the app's consent screen is in \
                  'Testing' status (publish it to 'In production'), after 6 months unused, or \
                  when the account password changes",
    endpoint_hosts: GOOGLE_HOSTS,
    verification_hosts: &["www.google.com", "google.com"],
};

/// Microsoft Entra ID: every refresh rotates the refresh token; each lives 90 days.
pub const MICROSOFT: Provider = Provider {
    method: AuthMethod::MicrosoftOAuth2,
    authorize_url: "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
    token_url: "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
    scope: "https://outlook.office.com/SMTP.Send offline_access",
    // SMTP.SendAsApp is granted to the app; app-only tokens ask for the resource's .default
    app_only_scope: "https://outlook.office365.com/.default",
    device_authorize_url: "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode",
    // not prompt=consent: in tenants where users may not consent, that blocks every
    // non-admin mailbox even after an admin consented for the organisation
    extra_authorize_params: &[("prompt", "select_account")],
    client_auth: ClientAuth::Post,
    refresh_token_lifetime_days: Some(90),
    refresh_token_idle_days: None,
    reauth_hint: "Microsoft refresh tokens expire 90 days after issue, and are revoked by a \
                  password reset or an admin; the app must be registered as a 'Web' app and SMTP \
                  AUTH must be enabled for the mailbox",
    endpoint_hosts: MICROSOFT_HOSTS,
    // microsoft.com/devicelogin (and /deviceloginus, /deviceloginchina), login.microsoft.com/device
    verification_hosts: &["microsoft.com", "www.microsoft.com", "login.microsoft.com"],
};

/// A generic OAuth2 provider: everything comes from the target.
pub const GENERIC: Provider = Provider {
    method: AuthMethod::OAuth2,
    authorize_url: "",
    token_url: "",
    scope: "",
    app_only_scope: "",
    device_authorize_url: "",
    extra_authorize_params: &[],
    client_auth: ClientAuth::Basic,
    refresh_token_lifetime_days: None,
    refresh_token_idle_days: None,
    reauth_hint: "the provider no longer accepts the refresh token",
    endpoint_hosts: &[],
    verification_hosts: &[],
};

/// The provider of an OAuth2 auth method (`None` for `none` / `plain`).
pub fn provider(method: AuthMethod) -> Option<&'static Provider> {
    match method {
        AuthMethod::GoogleOAuth2 => Some(&GOOGLE),
        AuthMethod::MicrosoftOAuth2 => Some(&MICROSOFT),
        AuthMethod::OAuth2 => Some(&GENERIC),
        AuthMethod::None | AuthMethod::Plain => None,
    }
}

/// Everything needed to talk to one OAuth2 client registration.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The provider.
    pub provider: &'static Provider,
    /// Authorize endpoint, if known.
    pub authorize_url: Option<url::Url>,
    /// Token endpoint.
    pub token_url: url::Url,
    /// Device authorization endpoint, if known.
    pub device_authorize_url: Option<url::Url>,
    /// Scopes to request.
    pub scopes: Vec<String>,
    /// The flow these endpoints are for.
    pub flow: OAuth2Flow,
}

/// Parameters that select endpoints; the API's token exchange passes them without a target.
#[derive(Debug, Clone, Default)]
pub struct EndpointParams<'a> {
    /// Microsoft tenant.
    pub tenant_id: Option<&'a str>,
    /// Authorize URL override / generic value.
    pub authorize_url: Option<&'a str>,
    /// Token URL override / generic value.
    pub token_url: Option<&'a str>,
    /// Scope override / generic value.
    pub scope: Option<&'a str>,
    /// The flow (decides the default scope: app-only tokens have their own).
    pub flow: OAuth2Flow,
    /// Device authorization URL override / generic value.
    pub device_authorize_url: Option<&'a str>,
    /// The Graph host of a `transport graph` target (decides the default scope: Graph's
    /// Mail.Send instead of SMTP's).
    pub graph_host: Option<&'a str>,
    /// Hosts allowed besides the provider's own ([`crate::Settings::provider_hosts`]; never
    /// from a caller).
    pub extra_hosts: &'a [String],
}

impl<'a> EndpointParams<'a> {
    /// The endpoint keys of a configured target.
    pub fn of_target(t: &'a SmtpTarget) -> Self {
        EndpointParams {
            tenant_id: t.oauth2_tenant_id.as_deref(),
            authorize_url: t.oauth2_authorize_url.as_deref(),
            token_url: t.oauth2_token_url.as_deref(),
            scope: t.oauth2_scope.as_deref(),
            flow: t.flow(),
            device_authorize_url: t.oauth2_device_authorize_url.as_deref(),
            graph_host: t.is_graph().then_some(t.server.as_str()),
            extra_hosts: &[],
        }
    }

    /// The same parameters, with `hosts` allowed besides the provider's own.
    pub fn allowing(self, hosts: &'a [String]) -> Self {
        EndpointParams {
            extra_hosts: hosts,
            ..self
        }
    }
}

/// Resolve endpoints for `method`. The tenant is validated before it goes into a URL; all
/// URLs are checked (https, or http to loopback only), and a named provider's must be on its
/// hosts or on `p.extra_hosts`.
pub fn resolve(method: AuthMethod, p: &EndpointParams<'_>) -> Result<Endpoints> {
    let e = resolve_any_host(method, p)?;
    if e.provider.endpoint_hosts.is_empty() {
        return Ok(e);
    }
    let urls = [
        ("authorize-url", e.authorize_url.as_ref()),
        ("token-url", Some(&e.token_url)),
        ("device-authorize-url", e.device_authorize_url.as_ref()),
    ];
    for (param, url) in urls {
        let Some(url) = url else { continue };
        if !host_allowed(url, e.provider.endpoint_hosts, p.extra_hosts) {
            return Err(Error::param(
                param,
                format!(
                    "{} endpoints must be on {} (host '{}' is not); other hosts only if root \
                     allows them in OXNOTIFY_ALLOW_PROVIDER_HOSTS",
                    method.as_str(),
                    e.provider.endpoint_hosts.join(", "),
                    url.host_str().unwrap_or_default()
                ),
            ));
        }
    }
    Ok(e)
}

fn host_allowed(url: &url::Url, own: &[&str], extra: &[String]) -> bool {
    let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
        return false;
    };
    own.contains(&host.as_str()) || extra.contains(&host)
}

/// Check the verification URL a device endpoint answered with before anyone is sent there:
/// `https` (or `http` to loopback), on the provider's hosts (Microsoft:
/// microsoft.com/devicelogin, its login hosts, sovereign clouds included; Google:
/// google.com/device), or for the generic provider the host of the device or authorize
/// endpoint; `extra_hosts` are allowed too. `Err` says what is wrong (no URL text).
pub fn check_verification_uri(
    e: &Endpoints,
    uri: &str,
    extra_hosts: &[String],
) -> std::result::Result<(), String> {
    let url = validate::endpoint_url(uri)
        .map_err(|_| "its verification URL is not an https:// URL".to_string())?;
    let allowed = if e.provider.endpoint_hosts.is_empty() {
        let own: Vec<&str> = [e.device_authorize_url.as_ref(), e.authorize_url.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|u| u.host_str())
            .collect();
        host_allowed(&url, &own, extra_hosts)
    } else {
        host_allowed(&url, e.provider.verification_hosts, extra_hosts)
            || host_allowed(&url, e.provider.endpoint_hosts, extra_hosts)
    };
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "its verification URL is on host '{}', which is not a host of the provider",
            url.host_str().unwrap_or_default()
        ))
    }
}

/// [`resolve`] without the host pin: the fingerprint of a target's registration
/// ([`crate::binding`]) is computed for whatever it names, usable or not.
pub(crate) fn resolve_any_host(method: AuthMethod, p: &EndpointParams<'_>) -> Result<Endpoints> {
    let provider = provider(method).ok_or_else(|| {
        Error::param(
            "auth-method",
            format!("'{}' is not an OAuth2 auth method", method.as_str()),
        )
    })?;
    let tenant = match (method, p.tenant_id) {
        (AuthMethod::MicrosoftOAuth2, Some(t)) => {
            validate::tenant_id(t).map_err(|m| Error::param("tenant-id", m))?;
            Some(t)
        }
        (AuthMethod::MicrosoftOAuth2, None) => {
            return Err(Error::param(
                "tenant-id",
                "microsoft-oauth2 needs the directory (tenant) ID",
            ))
        }
        (_, Some(_)) => {
            return Err(Error::param(
                "tenant-id",
                "only valid with microsoft-oauth2",
            ));
        }
        (_, None) => None,
    };
    let build = |param: &str, template: &str| -> Result<url::Url> {
        // the tenant passed validation: letters, digits, '-', '.' only
        let s = template.replace("{tenant}", tenant.unwrap_or("common"));
        validate::endpoint_url(&s).map_err(|m| Error::param(param, m))
    };
    let authorize_template = p.authorize_url.unwrap_or(provider.authorize_url);
    let authorize_url = if authorize_template.is_empty() {
        None
    } else {
        Some(build("authorize-url", authorize_template)?)
    };
    let token_template = p.token_url.unwrap_or(provider.token_url);
    if token_template.is_empty() {
        return Err(Error::param(
            "token-url",
            "the generic oauth2 method needs a token URL",
        ));
    }
    let token_url = build("token-url", token_template)?;
    let device_template = p
        .device_authorize_url
        .unwrap_or(provider.device_authorize_url);
    let device_authorize_url = if device_template.is_empty() {
        None
    } else {
        Some(build("device-authorize-url", device_template)?)
    };
    let default_scope = match (p.graph_host, p.flow) {
        (Some(host), OAuth2Flow::ClientCredentials) if method == AuthMethod::MicrosoftOAuth2 => {
            graph_app_only_scope(host)
        }
        (Some(host), _) if method == AuthMethod::MicrosoftOAuth2 => graph_delegated_scope(host),
        (_, OAuth2Flow::ClientCredentials) if !provider.app_only_scope.is_empty() => {
            provider.app_only_scope.to_string()
        }
        _ => provider.scope.to_string(),
    };
    let scope = p.scope.unwrap_or(&default_scope);
    validate::scope(scope).map_err(|m| Error::param("scope", m))?;
    Ok(Endpoints {
        provider,
        authorize_url,
        token_url,
        device_authorize_url,
        flow: p.flow,
        scopes: scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsoft_tenant_goes_into_the_path() {
        let e = resolve(
            AuthMethod::MicrosoftOAuth2,
            &EndpointParams {
                tenant_id: Some("contoso.onmicrosoft.com"),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            e.token_url.as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(
            e.scopes,
            ["https://outlook.office.com/SMTP.Send", "offline_access"]
        );
        let bad = resolve(
            AuthMethod::MicrosoftOAuth2,
            &EndpointParams {
                tenant_id: Some("evil.com/../../x?"),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(bad.to_string().contains("tenant"), "{bad}");
    }

    #[test]
    fn graph_targets_ask_for_mail_send_of_their_cloud_and_are_pinned() {
        let mut t = SmtpTarget {
            auth_method: AuthMethod::MicrosoftOAuth2,
            oauth2_tenant_id: Some("contoso.com".into()),
            transport: Some(crate::config::smtp::Transport::Graph),
            ..SmtpTarget::new("g", "graph.microsoft.com", "a@contoso.com", vec![])
        };
        let e = resolve(AuthMethod::MicrosoftOAuth2, &EndpointParams::of_target(&t)).unwrap();
        assert_eq!(
            e.scopes,
            ["https://graph.microsoft.com/Mail.Send", "offline_access"]
        );
        t.server = "graph.microsoft.us".into();
        t.oauth2_flow = Some(OAuth2Flow::ClientCredentials);
        let e = resolve(AuthMethod::MicrosoftOAuth2, &EndpointParams::of_target(&t)).unwrap();
        assert_eq!(e.scopes, ["https://graph.microsoft.us/.default"]);
        assert_eq!(
            graph_url(&t, &[]).unwrap().as_str(),
            "https://graph.microsoft.us/v1.0/users/a@contoso.com/sendMail"
        );
        t.server = "evil.example.net".into();
        let err = graph_url(&t, &[]).unwrap_err();
        assert!(err.to_string().contains("graph.microsoft.com"), "{err}");
        assert!(graph_url(&t, &["evil.example.net".into()]).is_ok());
        // a mailbox cannot leave its path segment
        t.server = "graph.microsoft.com".into();
        t.username = Some("x/../../me@contoso.com".into());
        let u = graph_url(&t, &[]).unwrap();
        assert_eq!(u.path_segments().unwrap().count(), 4, "{u}");
    }

    #[test]
    fn google_and_generic() {
        let g = resolve(AuthMethod::GoogleOAuth2, &EndpointParams::default()).unwrap();
        assert_eq!(g.token_url.as_str(), "https://oauth2.googleapis.com/token");
        assert!(resolve(AuthMethod::OAuth2, &EndpointParams::default()).is_err());
        assert!(resolve(AuthMethod::Plain, &EndpointParams::default()).is_err());
    }
}
