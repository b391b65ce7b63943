//! Authorizing a target: the authorization-code flow with `state` and PKCE
//! ([`Authorizer::begin`] / [`Authorizer::complete`], the reference's code exchange
//! [`Authorizer::exchange_code`]), the device flow ([`Authorizer::device_begin`] /
//! [`Authorizer::device_complete`]), and a refresh token obtained elsewhere
//! ([`Authorizer::store_refresh_token`]). What a started authorization needs until the
//! provider's answer comes back waits server-side in [`pending`], bound to its `state` or
//! handle (single use, 10 minutes). Every authorization is stored bound to the target as
//! configured now ([`crate::binding`]).

pub mod pending;

use crate::binding::Binding;
use crate::config::smtp::{AuthMethod, OAuth2Flow, SmtpTarget};
use crate::config::{validate, NotificationConfig};
use crate::error::{Error, Result, TokenProblem};
use crate::oauth2::{
    self, AuthorizeRequest, ClientRegistration, DeviceAuthorization, EndpointParams,
    TokenHttpClient, TokenSet,
};
use crate::secret::Secret;
use crate::settings::Settings;
use crate::state::now;
use crate::tokens::TokenManager;
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

/// Parameters of an authorization-code exchange (the `smtp-oauth2-token` API call).
#[derive(Debug, Clone)]
pub struct CodeExchange<'a> {
    /// OAuth2 auth method (selects the provider).
    pub auth_method: AuthMethod,
    /// Client (application) ID.
    pub client_id: &'a str,
    /// Client secret, if the app has one.
    pub client_secret: Option<Secret>,
    /// The code from the provider's redirect.
    pub code: &'a str,
    /// The redirect URI used in the authorize request.
    pub redirect_uri: &'a str,
    /// The PKCE verifier of the authorize request.
    pub pkce_verifier: Option<Secret>,
    /// Microsoft tenant and the authorize/token URL and scope overrides (generic provider,
    /// sovereign clouds, tests).
    pub endpoints: EndpointParams<'a>,
    /// If set, the new authorization is stored in this target's state.
    pub target: Option<&'a str>,
}

/// Authorizes targets ([`crate::Notifier::authorization`]).
pub struct Authorizer<'a> {
    settings: &'a Settings,
    http: &'a dyn TokenHttpClient,
}

impl<'a> Authorizer<'a> {
    /// An authorizer with these settings, making token requests with `http`.
    pub fn new(settings: &'a Settings, http: &'a dyn TokenHttpClient) -> Self {
        Authorizer { settings, http }
    }

    fn load_config(&self) -> Result<NotificationConfig> {
        NotificationConfig::load(self.settings)
    }

    fn tokens(&self) -> TokenManager<'a> {
        TokenManager::new(self.settings, self.http)
    }

    /// The authorize URL for configured target `name`, with fresh `state` and PKCE verifier.
    /// The caller keeps both until the redirect comes back.
    pub fn authorize_url(&self, name: &str, redirect_uri: &str) -> Result<AuthorizeRequest> {
        self.authorize_request(name, redirect_uri)
            .map(|(req, _, _)| req)
    }

    /// [`Authorizer::authorize_url`], with the target and registration it was made for.
    fn authorize_request(
        &self,
        name: &str,
        redirect_uri: &str,
    ) -> Result<(AuthorizeRequest, SmtpTarget, ClientRegistration)> {
        let config = self.load_config()?;
        let target = config.smtp_target(name)?;
        let secrets = config.smtp_secrets(name)?;
        oauth2::flow::interactive_flow_only(&target)?;
        let reg = ClientRegistration::of_target(&target, &secrets, &self.settings.provider_hosts)?;
        let req = oauth2::authorize_url(&reg, redirect_uri, Some(target.auth_identity()))?;
        Ok((req, target, reg))
    }

    /// Exchange an authorization code for a refresh token (backend side, as Microsoft
    /// requires for Web apps). With `req.target` set, the target must exist and the request
    /// must describe its registration (parameters left out are taken from the target); the
    /// new authorization is then stored in the target's state, bound to that registration.
    /// Without a target only the provider table's endpoints are used (a caller cannot make
    /// the server send a code and client secret to a URL of its choosing); the generic
    /// provider therefore needs a target.
    pub fn exchange_code(&self, req: &CodeExchange<'_>) -> Result<Secret> {
        let target = match req.target {
            Some(t) => {
                validate::target_name(t).map_err(|m| Error::param("target", m))?;
                let config = self.load_config()?;
                Some((config.smtp_target(t)?, config.smtp_secrets(t)?))
            }
            None => None,
        };
        let reg = match &target {
            Some((t, secrets)) => {
                oauth2::flow::interactive_flow_only(t)?;
                let mut reg = Self::registration_for(req, t, &self.settings.provider_hosts)?;
                // the code goes to the token endpoint authenticated as the target is configured
                reg.apply_client_auth(t, secrets);
                reg
            }
            None => {
                for (param, given) in [
                    ("token-url", req.endpoints.token_url),
                    ("authorize-url", req.endpoints.authorize_url),
                    ("scope", req.endpoints.scope),
                ] {
                    if given.is_some_and(|v| !v.is_empty()) {
                        return Err(Error::param(
                            param,
                            "only allowed together with 'target' (the target's configured value \
                             is used); without a target the provider's own endpoints apply",
                        ));
                    }
                }
                if req.auth_method == AuthMethod::OAuth2 {
                    return Err(Error::param(
                        "target",
                        "the generic oauth2 method needs the target whose token URL and scope \
                         to use: create the target first",
                    ));
                }
                // the hosts allowed besides the provider's are root's setting, never the caller's
                ClientRegistration::new(
                    req.auth_method,
                    req.client_id,
                    req.client_secret.clone(),
                    &req.endpoints
                        .clone()
                        .allowing(&self.settings.provider_hosts),
                )?
            }
        };
        let tokens = oauth2::exchange_code(
            self.http,
            &reg,
            req.code,
            req.redirect_uri,
            req.pkce_verifier.as_ref(),
            Instant::now() + self.settings.http_timeout,
        )?;
        if let Some((t, _)) = &target {
            self.tokens().store_authorization(t, &tokens)?;
        }
        tokens.refresh_token.ok_or_else(|| {
            Error::token(
                None,
                TokenProblem::NoRefreshToken,
                "no refresh token issued",
            )
        })
    }

    /// The registration of an exchange for configured `target`: the request's values where
    /// given, else the target's; 400 unless the result is the target's registration.
    fn registration_for(
        req: &CodeExchange<'_>,
        target: &SmtpTarget,
        extra_hosts: &[String],
    ) -> Result<ClientRegistration> {
        if !target.auth_method.is_oauth2() {
            return Err(Error::param(
                "target",
                format!("target '{}' does not use OAuth2", target.name),
            ));
        }
        let configured = EndpointParams::of_target(target);
        let params = EndpointParams {
            tenant_id: req.endpoints.tenant_id.or(configured.tenant_id),
            authorize_url: req.endpoints.authorize_url.or(configured.authorize_url),
            token_url: req.endpoints.token_url.or(configured.token_url),
            scope: req.endpoints.scope.or(configured.scope),
            flow: configured.flow,
            device_authorize_url: configured.device_authorize_url,
            graph_host: configured.graph_host,
            extra_hosts,
        };
        let client_id = if req.client_id.is_empty() {
            target.oauth2_client_id.as_deref().unwrap_or_default()
        } else {
            req.client_id
        };
        let reg = ClientRegistration::new(
            req.auth_method,
            client_id,
            req.client_secret.clone(),
            &params,
        )?;
        let mut as_requested = target.clone();
        as_requested.auth_method = req.auth_method;
        as_requested.oauth2_client_id = Some(client_id.to_string());
        as_requested.oauth2_tenant_id = params.tenant_id.map(str::to_string);
        as_requested.oauth2_authorize_url = params.authorize_url.map(str::to_string);
        as_requested.oauth2_token_url = params.token_url.map(str::to_string);
        as_requested.oauth2_scope = params.scope.map(str::to_string);
        if Binding::of(&as_requested).registration_changed(&Binding::of(target)) {
            return Err(Error::param(
                "target",
                format!(
                    "the request's auth method, client ID, tenant or endpoints differ from target \
                     '{}': update the target first, then authorize it",
                    target.name
                ),
            ));
        }
        Ok(reg)
    }

    /// Start a device authorization for target `name` (`oauth2-flow device-code`): the
    /// verification URL and user code to show, and the provider's answer for
    /// [`Authorizer::device_complete`].
    /// The answer is refused (needs an admin fix) unless its verification URL is on the
    /// provider's hosts ([`oauth2::provider::check_verification_uri`]) and its user code is a
    /// short printable string: a device endpoint set by whoever may edit the target must not
    /// be able to send the admin to a page of its choosing.
    fn device_start(
        &self,
        name: &str,
    ) -> Result<(DeviceAuthorization, SmtpTarget, ClientRegistration)> {
        let config = self.load_config()?;
        let target = config.smtp_target(name)?;
        let reg = self.device_registration(&config, &target)?;
        let auth =
            oauth2::device_start(self.http, &reg, Instant::now() + self.settings.http_timeout)?;
        let hosts = &self.settings.provider_hosts;
        let checked =
            oauth2::provider::check_verification_uri(&reg.endpoints, &auth.verification_uri, hosts)
                .and_then(|()| match &auth.verification_uri_complete {
                    Some(u) => oauth2::provider::check_verification_uri(&reg.endpoints, u, hosts),
                    None => Ok(()),
                })
                .and_then(|()| {
                    let code = &auth.user_code;
                    let printable = code.chars().all(|c| c.is_ascii_graphic() || c == ' ');
                    if code.trim().is_empty() || code.len() > 64 || !printable {
                        Err("its user code is not a short printable code".to_string())
                    } else {
                        Ok(())
                    }
                });
        if let Err(why) = checked {
            return Err(Error::Token {
                target: Some(name.to_string()),
                problem: TokenProblem::BadResponse,
                message: format!(
                    "the device authorization endpoint's answer is refused and not shown: {why}; \
                     an admin must check the target's oauth2-device-authorize-url (it must be \
                     the provider's own device endpoint)"
                ),
                retry_after: None,
            });
        }
        Ok((auth, target, reg))
    }

    /// Poll (for at most `max_wait`) until the device authorization `details` of target
    /// `name`, issued at `started` (Unix seconds), is approved, and store the resulting refresh
    /// token, bound to the target as configured now. `Ok(false)`: still waiting for the user.
    /// Refused if the target's registration is not `registration` (the one the device code
    /// was issued for) any more.
    fn device_finish(
        &self,
        name: &str,
        details: &Secret,
        started: i64,
        max_wait: Duration,
        registration: Option<&str>,
    ) -> Result<bool> {
        let config = self.load_config()?;
        let target = config.smtp_target(name)?;
        check_same_registration(&target, registration, "handle")?;
        let reg = self.device_registration(&config, &target)?;
        let Some(tokens) =
            oauth2::device_finish(self.http, &reg, details, started, max_wait, name)?
        else {
            return Ok(false);
        };
        if tokens.refresh_token.is_none() {
            return Err(Error::token(
                Some(name),
                TokenProblem::NoRefreshToken,
                "the provider issued no refresh token: the scope must include offline access \
                 (Microsoft: offline_access)",
            ));
        }
        self.tokens().store_authorization(&target, &tokens)?;
        Ok(true)
    }

    fn device_registration(
        &self,
        config: &NotificationConfig,
        target: &SmtpTarget,
    ) -> Result<ClientRegistration> {
        if !target.auth_method.is_oauth2() || target.flow() != OAuth2Flow::DeviceCode {
            return Err(Error::param(
                "target",
                format!(
                    "target '{}' does not use oauth2-flow device-code",
                    target.name
                ),
            ));
        }
        let secrets = config.smtp_secrets(&target.name)?;
        ClientRegistration::of_target(target, &secrets, &self.settings.provider_hosts)
    }

    /// Store a refresh token obtained elsewhere (the `oauth2-refresh-token` parameter of
    /// create/update) as the authorization of `target` as configured now.
    pub fn store_refresh_token(&self, target: &SmtpTarget, refresh_token: Secret) -> Result<()> {
        if refresh_token.is_empty() || refresh_token.expose().chars().any(char::is_control) {
            return Err(Error::param(
                "oauth2-refresh-token",
                "empty or contains control characters",
            ));
        }
        self.tokens().store_authorization(
            target,
            &TokenSet {
                access_token: Secret::new(""),
                expires_in: None,
                refresh_token: Some(refresh_token),
            },
        )
    }

    /// Start authorizing target `name` (`POST smtp-oauth2-authorize-url`): returns the provider's
    /// authorize URL and the `state`; the PKCE verifier stays server-side, bound to the state
    /// (single use, 10 minutes). 404 if the target is missing, 400 if it is not an OAuth2 target.
    ///
    /// The answer also says what the admin is about to authorize: `client-id`, `scope`,
    /// `authorize-host` and `token-host` (host, and port where one is given).
    pub fn begin(&self, name: &str, redirect_uri: &str) -> Result<Value> {
        let (req, target, reg) = self.authorize_request(name, redirect_uri)?;
        pending::store(
            self.settings,
            &req.state,
            &pending::Pending {
                target: name.to_string(),
                redirect_uri: redirect_uri.to_string(),
                pkce_verifier: req.pkce_verifier.clone(),
                created: now(),
                device: None,
                registration: Binding::of(&target).registration,
            },
        )?;
        let mut v =
            serde_json::json!({ "url": req.url.as_str(), "state": req.state, "target": name });
        add_registration_facts(&mut v, &reg, reg.endpoints.authorize_url.as_ref());
        Ok(v)
    }

    /// Finish an authorization started with [`Authorizer::begin`]: the `state` from the redirect
    /// selects the pending request (single use), `code` is exchanged with the target's client
    /// registration and PKCE verifier, and the result is stored in the target's state. If
    /// `expected_target` is given it must match the target the state was issued for. Returns
    /// the target name. 400 on an unknown, replayed, expired or foreign state.
    pub fn complete(
        &self,
        state: &str,
        code: &str,
        expected_target: Option<&str>,
    ) -> Result<String> {
        let pending = pending::take(self.settings, state)?;
        if pending.device.is_some() {
            return Err(Error::param(
                "state",
                "this is a device authorization: finish it with the device call",
            ));
        }
        if let Some(t) = expected_target {
            if t != pending.target {
                return Err(Error::param(
                    "state",
                    format!(
                        "this authorization was started for target '{}', not '{t}'",
                        pending.target
                    ),
                ));
            }
        }
        let cfg = self.load_config()?;
        let target = cfg.smtp_target(&pending.target)?;
        check_same_registration(&target, pending.registration.as_deref(), "state")?;
        let secrets = cfg.smtp_secrets(&pending.target)?;
        self.exchange_code(&CodeExchange {
            auth_method: target.auth_method,
            client_id: target.oauth2_client_id.as_deref().unwrap_or_default(),
            client_secret: secrets.oauth2_client_secret.clone(),
            code,
            redirect_uri: &pending.redirect_uri,
            pkce_verifier: Some(pending.pkce_verifier),
            endpoints: EndpointParams::of_target(&target),
            target: Some(&pending.target),
        })?;
        Ok(pending.target)
    }

    /// Start a device authorization (RFC 8628) for target `name` (`oauth2-flow device-code`):
    /// returns `verification_uri`, `verification_uri_complete` (if offered), `user_code`,
    /// `expires_in`, `interval` and a `handle` for [`Authorizer::device_complete`]. The device code stays
    /// server-side, bound to the handle (single use, 10 minutes). 404 if the target is missing,
    /// 400 if it does not use the device flow; needs-admin-fix if the device endpoint's
    /// verification URL is not on the provider's hosts. Like [`Authorizer::begin`] the answer
    /// has `client-id`, `scope`, `authorize-host` (here: the device authorization endpoint's
    /// host) and `token-host`.
    pub fn device_begin(&self, name: &str) -> Result<Value> {
        let (auth, target, reg) = self.device_start(name)?;
        let handle = ::oauth2::CsrfToken::new_random().secret().clone();
        pending::store(
            self.settings,
            &handle,
            &pending::Pending {
                target: name.to_string(),
                redirect_uri: String::new(),
                pkce_verifier: Secret::new(""),
                created: now(),
                device: Some(auth.details.clone()),
                registration: Binding::of(&target).registration,
            },
        )?;
        let mut v = serde_json::to_value(&auth).unwrap_or_else(|_| Value::Object(Map::new()));
        if let Value::Object(m) = &mut v {
            m.insert("handle".into(), Value::String(handle));
            m.insert("target".into(), Value::String(name.to_string()));
        }
        add_registration_facts(&mut v, &reg, reg.endpoints.device_authorize_url.as_ref());
        Ok(v)
    }

    /// Finish a device authorization started with [`Authorizer::device_begin`]: polls the provider (at its
    /// interval) for at most `max_wait` until the user approved (the refresh token is stored in the
    /// target's state; the handle is used up), declined or the code expired (errors; the handle is
    /// used up). Returns `{target, authorized}`; `authorized: false` means the user has not
    /// finished yet: call again with the same handle. 400 on an unknown, used or expired handle,
    /// or one issued for another target than `expected_target`.
    pub fn device_complete(
        &self,
        handle: &str,
        expected_target: Option<&str>,
        max_wait: Duration,
    ) -> Result<Value> {
        let pending = pending::peek(self.settings, handle)?;
        let details = pending.device.clone().ok_or_else(|| {
            Error::param(
                "handle",
                "not a device authorization: use the code exchange",
            )
        })?;
        if let Some(t) = expected_target.filter(|t| *t != pending.target) {
            return Err(Error::param(
                "handle",
                format!(
                    "this device authorization was started for target '{}', not '{t}'",
                    pending.target
                ),
            ));
        }
        let result = self.device_finish(
            &pending.target,
            &details,
            pending.created,
            max_wait,
            pending.registration.as_deref(),
        );
        if !matches!(result, Ok(false)) {
            // done, either way: the handle is used up (a concurrent caller may have taken it)
            let _ = pending::take(self.settings, handle);
        }
        Ok(serde_json::json!({ "target": pending.target, "authorized": result? }))
    }
}

/// `host` or `host:port` of `url`.
fn host_of(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// Add what the admin is about to authorize to a begin answer: `client-id`, `scope`,
/// `authorize-host` (of `authorize`) and `token-host`.
fn add_registration_facts(v: &mut Value, reg: &ClientRegistration, authorize: Option<&url::Url>) {
    if let Value::Object(m) = v {
        m.insert("client-id".into(), Value::String(reg.client_id.clone()));
        m.insert(
            "scope".into(),
            Value::String(reg.endpoints.scopes.join(" ")),
        );
        m.insert(
            "authorize-host".into(),
            authorize.map_or(Value::Null, |u| Value::String(host_of(u))),
        );
        m.insert(
            "token-host".into(),
            Value::String(host_of(&reg.endpoints.token_url)),
        );
    }
}

/// Refuse to finish an authorization of `target` started for another client registration
/// (`started_for`, [`Binding::registration`] when it began): a token URL changed meanwhile
/// must not receive the code and PKCE verifier, nor a device code.
fn check_same_registration(
    target: &SmtpTarget,
    started_for: Option<&str>,
    param: &str,
) -> Result<()> {
    let now = Binding::of(target).registration;
    if started_for.is_some() && now.as_deref() == started_for {
        return Ok(());
    }
    Err(Error::param(
        param,
        format!(
            "target '{}': its OAuth2 settings (auth method, client ID, tenant, endpoints or \
             scope) changed after this authorization was started, so it is not completed: \
             start the authorization again (Authorize button or `oxnotify authorize {}`)",
            target.name, target.name
        ),
    ))
}
