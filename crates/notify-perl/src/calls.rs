//! The functions behind the C ABI: typed parameters (unknown keys are rejected), a call into
//! notify-core, a JSON result. Parameter names are the API's (kebab-case).

use crate::CallError;
use notify_core::oauth2::EndpointParams;
use notify_core::{
    api, AuthMethod, CodeExchange, Delivery, Notification, Notifier, Secret, Settings, Severity,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::ffi::{c_void, CStr, CString};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn parse<T: DeserializeOwned>(what: &str, params: Value) -> Result<T, CallError> {
    serde_json::from_value(params)
        .map_err(|e| CallError::bad_request(format!("invalid parameters for {what}: {e}")))
}

fn object(params: Value) -> Map<String, Value> {
    match params {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// One notifier per distinct settings (the environment may change between calls, e.g. in
/// tests); building one loads the system trust store, so it is reused.
fn notifier() -> Result<Arc<Notifier>, CallError> {
    static CACHE: Mutex<Option<(String, Arc<Notifier>)>> = Mutex::new(None);
    let settings = Settings::from_env();
    let key = format!("{settings:?}");
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((k, n)) = cache.as_ref() {
        if *k == key {
            return Ok(n.clone());
        }
    }
    let n = Arc::new(Notifier::new(settings)?);
    *cache = Some((key, n.clone()));
    Ok(n)
}

/// The host's registered user -> e-mail lookup (`oxnotify_set_user_email_resolver`).
pub(crate) static RESOLVER: Mutex<Option<crate::UserEmailResolver>> = Mutex::new(None);

extern "C" {
    /// The C library's `free`: the resolver's answers are `malloc`ed (Perl's `strdup`).
    fn free(p: *mut c_void);
}

/// The registered resolver as the core's [`notify_core::Context`].
struct HostContext(crate::UserEmailResolver);

impl notify_core::Context for HostContext {
    fn user_email(&self, user: &str) -> Option<String> {
        let user = CString::new(user).ok()?;
        // SAFETY: the resolver was registered as callable; it gets a valid C string
        let p = unsafe { (self.0)(user.as_ptr()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: a non-NULL answer is a malloc'ed NUL-terminated string, ours to free once
        let address = unsafe { CStr::from_ptr(p) }
            .to_str()
            .ok()
            .map(str::to_string);
        unsafe { free(p.cast()) };
        address
    }
}

/// A map given with the call (`user-emails`) as a context.
struct GivenEmails(BTreeMap<String, String>);

impl notify_core::Context for GivenEmails {
    fn user_email(&self, user: &str) -> Option<String> {
        self.0.get(user).cloned()
    }
}

/// What resolves `mailto-user` for this call: the map given with it, else the registered
/// resolver, else nothing (a target with `mailto-user` then says the host must register one).
fn context(given: Option<BTreeMap<String, String>>) -> Option<Box<dyn notify_core::Context>> {
    match given {
        Some(map) => Some(Box::new(GivenEmails(map))),
        None => RESOLVER
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|r| Box::new(HostContext(r)) as Box<dyn notify_core::Context>),
    }
}

/// The notifier's deliverer with this call's context.
fn delivering<'a>(
    n: &'a Notifier,
    context: &'a Option<Box<dyn notify_core::Context>>,
) -> notify_core::Deliverer<'a> {
    match context {
        Some(c) => n.delivery().with_context(c.as_ref()),
        None => n.delivery(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Name {
    name: String,
}

/// `selftest(any)`: returns its parameters; `{"panic": true}` panics (tests the boundary).
pub fn selftest(params: Value) -> Result<Value, CallError> {
    if params.get("panic") == Some(&Value::Bool(true)) {
        panic!("selftest panic requested");
    }
    Ok(params)
}

/// `list_targets({})` -> list of targets (public keys + digest).
pub fn list_targets(_params: Value) -> Result<Value, CallError> {
    Ok(Value::Array(api::list_targets(&*notifier()?)?))
}

/// `get_targets({})` -> every target as the notification stack lists its targets: `{name,
/// type, disable, origin, comment?, error?, warning?}`.
pub fn get_targets(_params: Value) -> Result<Value, CallError> {
    Ok(Value::Array(api::target_summaries(&*notifier()?)?))
}

/// `verify({name})` -> `{target, ok, credential, steps: [{step, ms}], error?, kind?}`: a
/// login check that sends nothing (token, connect, EHLO, TLS, AUTH, QUIT); at most one per
/// target every 10 s.
pub fn verify(params: Value) -> Result<Value, CallError> {
    let p: Name = parse("verify", params)?;
    let v = notifier()?.delivery().verify(&p.name)?;
    serde_json::to_value(v).map_err(internal)
}

/// `config_keys({})` -> the SMTP target keys: `[{name, kind, private, multi, deletable,
/// applies, needed, choices}]`.
pub fn config_keys(_params: Value) -> Result<Value, CallError> {
    Ok(notify_core::config::keys::describe())
}

/// `providers({})` -> the named OAuth2 providers as an admin registers an app for them:
/// `[{auth-method, scope, app-only-scope, device, refresh-token-lifetime-days?,
/// refresh-token-idle-days?, reauth-hint}]` (the page shows what to paste where).
pub fn providers(_params: Value) -> Result<Value, CallError> {
    use notify_core::oauth2::provider;
    use notify_core::AuthMethod;
    Ok([
        AuthMethod::MicrosoftOAuth2,
        AuthMethod::GoogleOAuth2,
        AuthMethod::OAuth2,
    ]
    .into_iter()
    .filter_map(provider::provider)
    .map(|p| {
        json!({
            "auth-method": p.method.as_str(), "scope": p.scope,
            "app-only-scope": p.app_only_scope, "device": !p.device_authorize_url.is_empty(),
            "refresh-token-lifetime-days": p.refresh_token_lifetime_days,
            "refresh-token-idle-days": p.refresh_token_idle_days, "reauth-hint": p.reauth_hint,
        })
    })
    .collect())
}

/// `get_target({name})` -> the target (public keys + digest).
pub fn get_target(params: Value) -> Result<Value, CallError> {
    let p: Name = parse("get_target", params)?;
    Ok(api::get_target(&*notifier()?, &p.name)?)
}

/// `create_target({name, <config keys>, password?, oauth2-client-secret?, oauth2-refresh-token?})`.
pub fn create_target(params: Value) -> Result<Value, CallError> {
    api::create_target(&*notifier()?, &object(params))?;
    Ok(Value::Null)
}

/// `update_target({name, <keys>, delete?: [keys], digest?})`.
pub fn update_target(params: Value) -> Result<Value, CallError> {
    let m = object(params);
    let name = match m.get("name") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(CallError::bad_request(
                "invalid parameters for update_target: 'name' (string) is required",
            ))
        }
    };
    let delete: Vec<String> = match m.get("delete") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s
            .split([',', ' ', ';'])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            CallError::bad_request(
                "invalid parameters for update_target: 'delete' must be a list of keys",
            )
        })?,
    };
    let digest = match m.get("digest") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(CallError::bad_request(
                "invalid parameters for update_target: 'digest' must be a string",
            ))
        }
    };
    api::update_target(&*notifier()?, &name, &m, &delete, digest.as_deref())?;
    Ok(Value::Null)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delete {
    name: String,
    digest: Option<String>,
}

/// `delete_target({name, digest?})`.
pub fn delete_target(params: Value) -> Result<Value, CallError> {
    let p: Delete = parse("delete_target", params)?;
    api::delete_target(&*notifier()?, &p.name, p.digest.as_deref())?;
    Ok(Value::Null)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TestParams {
    name: String,
    user_emails: Option<BTreeMap<String, String>>,
}

/// `test_target({name, user-emails?})`: sends a test notification; `user-emails` maps the
/// target's `mailto-user` entries to addresses (the Perl layer fills it from the host's resolver).
pub fn test_target(params: Value) -> Result<Value, CallError> {
    let p: TestParams = parse("test_target", params)?;
    let context = context(p.user_emails);
    api::test_target(&*notifier()?, &p.name, context.as_deref())?;
    Ok(Value::Null)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct AuthorizeParams {
    name: String,
    redirect_uri: String,
}

/// `authorize_url({name, redirect-uri})` -> `{url, state, pkce-verifier}`; the caller keeps
/// state and verifier (server side) until the redirect comes back.
pub fn authorize_url(params: Value) -> Result<Value, CallError> {
    let p: AuthorizeParams = parse("authorize_url", params)?;
    let r = notifier()?
        .authorization()
        .authorize_url(&p.name, &p.redirect_uri)?;
    Ok(
        json!({ "url": r.url.as_str(), "state": r.state, "pkce-verifier": r.pkce_verifier.expose() }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ExchangeParams {
    auth_method: String,
    client_id: String,
    client_secret: Option<String>,
    tenant_id: Option<String>,
    authorization_code: String,
    redirect_uri: String,
    pkce_verifier: Option<String>,
    authorize_url: Option<String>,
    token_url: Option<String>,
    scope: Option<String>,
    target: Option<String>,
}

/// `smtp_oauth2_token({state, authorization-code, target?})` finishes an authorization
/// started with `authorize_begin` (`{target}`); without `state` (the reference's form:
/// `{auth-method, client-id, redirect-uri, authorization-code, ...}` as for
/// `exchange_smtp_oauth2_code`) the code is exchanged and the refresh token returned.
pub fn smtp_oauth2_token(params: Value) -> Result<Value, CallError> {
    let mut p = object(params);
    if p.get("state").is_some_and(|s| !s.is_null()) {
        let keep = ["state", "authorization-code", "target"];
        p.retain(|k, _| keep.contains(&k.as_str()));
        return authorize_complete(Value::Object(p));
    }
    p.remove("state");
    let missing: BTreeMap<String, String> = ["auth-method", "client-id", "redirect-uri"]
        .into_iter()
        .filter(|k| p.get(*k).is_none_or(Value::is_null))
        .map(|k| {
            (
                k.to_string(),
                "property is required without state".to_string(),
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(CallError {
            message: format!(
                "parameter verification failed - {}",
                missing
                    .iter()
                    .map(|(k, m)| format!("{k}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            code: 400,
            kind: notify_core::ErrorKind::InvalidInput,
            param: None,
            errors: missing,
        });
    }
    exchange_smtp_oauth2_code(Value::Object(p))
}

/// `exchange_smtp_oauth2_code({auth-method, client-id, client-secret?, tenant-id?,
/// authorization-code, redirect-uri, pkce-verifier?, token-url?, authorize-url?, scope?,
/// target?})` -> `{refresh-token}`; with `target` the authorization is also stored.
pub fn exchange_smtp_oauth2_code(params: Value) -> Result<Value, CallError> {
    let p: ExchangeParams = parse("exchange_smtp_oauth2_code", params)?;
    let method = AuthMethod::parse(&p.auth_method)
        .filter(|m| m.is_oauth2())
        .ok_or_else(|| {
            CallError::bad_request("auth-method must be google-oauth2, microsoft-oauth2 or oauth2")
        })?;
    let rt = notifier()?.authorization().exchange_code(&CodeExchange {
        auth_method: method,
        client_id: &p.client_id,
        client_secret: p.client_secret.map(Secret::new),
        code: &p.authorization_code,
        redirect_uri: &p.redirect_uri,
        pkce_verifier: p.pkce_verifier.map(Secret::new),
        endpoints: EndpointParams {
            tenant_id: p.tenant_id.as_deref().filter(|t| !t.is_empty()),
            authorize_url: p.authorize_url.as_deref(),
            token_url: p.token_url.as_deref(),
            scope: p.scope.as_deref(),
            ..Default::default()
        },
        target: p.target.as_deref(),
    })?;
    Ok(json!({ "refresh-token": rt.expose() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RefreshParams {
    /// Seconds to wait for the config lock (default 60).
    lock_timeout: Option<u64>,
}

/// `refresh_targets({lock-timeout?})` -> `{locked, holder?, reports: [...], problems: [...],
/// warnings: [[target, warning], ...]}` (`oxnotify refresh`): every OAuth2 target refreshed,
/// one run at a time; `locked: true` means another run went on for the whole timeout
/// (`holder` names it); `problems` are malformed config lines that belong to no target (file
/// and line, never their text); `warnings` those of targets that were not refreshed.
pub fn refresh_targets(params: Value) -> Result<Value, CallError> {
    let p: RefreshParams = parse("refresh_targets", params)?;
    let timeout = Duration::from_secs(p.lock_timeout.unwrap_or(60));
    daily_json(notifier()?.refresh().locked(timeout)?)
}

/// `daily({lock-timeout?})` -> [`refresh_targets`]' answer plus `flush` (one report per
/// outbox): the whole daily job in one call and one config read.
pub fn daily(params: Value) -> Result<Value, CallError> {
    let p: RefreshParams = parse("daily", params)?;
    let timeout = Duration::from_secs(p.lock_timeout.unwrap_or(60));
    daily_json(notifier()?.refresh().daily(timeout)?)
}

fn daily_json(run: notify_core::DailyRun) -> Result<Value, CallError> {
    let mut v = serde_json::to_value(&run).map_err(internal)?;
    v["locked"] = json!(run.busy);
    Ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SendParams {
    targets: Vec<String>,
    user_emails: Option<BTreeMap<String, String>>,
}

/// One notification as the calls take it: `{title, body?, html-body?, severity?, fields?}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Message {
    title: String,
    #[serde(default)]
    body: String,
    html_body: Option<String>,
    #[serde(default)]
    severity: Severity,
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

impl From<Message> for Notification {
    fn from(m: Message) -> Self {
        Notification {
            title: m.title,
            body: m.body,
            html_body: m.html_body,
            severity: m.severity,
            fields: m.fields,
            user_emails: None,
        }
    }
}

/// `send({targets: [...], title, body?, html-body?, severity?, fields?, user-emails?})` -> one
/// `{target, ok, queued?, id?, message?, code?, kind?}` per target. `ok` is true when the
/// server took the message or it waits in the outbox (then `queued` is true, `id` names the
/// outbox entry and `message` says why it could not be sent now).
pub fn send(params: Value) -> Result<Value, CallError> {
    let mut message = object(params);
    let mut routing = Map::new();
    for k in ["targets", "user-emails"] {
        if let Some(v) = message.remove(k) {
            routing.insert(k.into(), v);
        }
    }
    let p: SendParams = parse("send", Value::Object(routing))?;
    let n: Notification = parse::<Message>("send", Value::Object(message))?.into();
    if p.targets.is_empty() {
        return Err(CallError::bad_request(
            "invalid parameters for send: 'targets' is empty",
        ));
    }
    let context = context(p.user_emails);
    let names: Vec<&str> = p.targets.iter().map(String::as_str).collect();
    let notifier = notifier()?;
    let reports = delivering(&notifier, &context).send(&names, &n)?;
    Ok(Value::Array(
        reports
            .into_iter()
            .map(|r| delivery_json(&r.target, r.result))
            .collect(),
    ))
}

fn delivery_json(target: &str, result: notify_core::Result<Delivery>) -> Value {
    match result {
        Ok(Delivery::Sent) => json!({ "target": target, "ok": true }),
        Ok(Delivery::Queued { id, reason }) => {
            json!({ "target": target, "ok": true, "queued": true, "id": id, "message": reason })
        }
        Err(e) => json!({
            "target": target, "ok": false, "message": e.to_string(), "code": e.http_code(),
            "kind": e.kind().as_str(), "transient": e.is_transient(),
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct BurstParams {
    target: String,
    notifications: Vec<Message>,
    user_emails: Option<BTreeMap<String, String>>,
}

/// `send_burst({target, notifications: [{title, body?, html-body?, severity?, fields?}],
/// user-emails?})` -> one `{target, ok, queued?, id?, message?}` per notification, in order:
/// all go over one SMTP session.
pub fn send_burst(params: Value) -> Result<Value, CallError> {
    let p: BurstParams = parse("send_burst", params)?;
    let list: Vec<Notification> = p
        .notifications
        .into_iter()
        .map(Notification::from)
        .collect();
    let context = context(p.user_emails);
    let notifier = notifier()?;
    let results = delivering(&notifier, &context).send_burst(&p.target, &list)?;
    Ok(Value::Array(
        results
            .into_iter()
            .map(|r| delivery_json(&p.target, r))
            .collect(),
    ))
}

fn internal(e: serde_json::Error) -> CallError {
    CallError {
        errors: Default::default(),
        message: e.to_string(),
        code: 500,
        kind: notify_core::ErrorKind::Internal,
        param: None,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaybeTarget {
    target: Option<String>,
}

/// `outbox_list({target?})` -> the waiting messages (metadata, no content), oldest first.
pub fn outbox_list(params: Value) -> Result<Value, CallError> {
    let p: MaybeTarget = parse("outbox_list", params)?;
    let list = notifier()?.delivery().outbox_list(p.target.as_deref())?;
    serde_json::to_value(list).map_err(internal)
}

/// `outbox_flush({target?})` -> one flush report per target with a spool.
pub fn outbox_flush(params: Value) -> Result<Value, CallError> {
    let p: MaybeTarget = parse("outbox_flush", params)?;
    let n = notifier()?;
    let delivery = n.delivery();
    let reports = match p.target {
        Some(t) => {
            let config = notify_core::NotificationConfig::load(n.settings())?;
            config.smtp_target(&t)?;
            vec![delivery.flush_target(&config, &t)]
        }
        None => delivery.flush_outbox()?,
    };
    serde_json::to_value(reports).map_err(internal)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Id {
    id: String,
}

/// `outbox_drop({id})` -> the dropped entry's metadata (404 if there is no such entry).
pub fn outbox_drop(params: Value) -> Result<Value, CallError> {
    let p: Id = parse("outbox_drop", params)?;
    let dropped = notifier()?.delivery().outbox_drop(&p.id)?;
    serde_json::to_value(dropped).map_err(internal)
}

/// `outbox_status({name})` -> queue depth, oldest age, given-up messages of a target.
pub fn outbox_status(params: Value) -> Result<Value, CallError> {
    let p: Name = parse("outbox_status", params)?;
    let s = notifier()?.status().outbox(&p.name)?;
    serde_json::to_value(s).map_err(internal)
}

/// `target_status({name})` -> OAuth2 health of the target.
pub fn target_status(params: Value) -> Result<Value, CallError> {
    let p: Name = parse("target_status", params)?;
    let s = notifier()?.status().target(&p.name)?;
    serde_json::to_value(s).map_err(internal)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct BeginParams {
    name: String,
    redirect_uri: String,
}

/// `authorize_begin({name, redirect-uri})` -> `{url, state, target}`; the PKCE verifier stays
/// server-side, bound to `state` (single use, 10 minutes).
pub fn authorize_begin(params: Value) -> Result<Value, CallError> {
    let p: BeginParams = parse("authorize_begin", params)?;
    Ok(notifier()?
        .authorization()
        .begin(&p.name, &p.redirect_uri)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CompleteParams {
    state: String,
    authorization_code: String,
    target: Option<String>,
}

/// `authorize_complete({state, authorization-code, target?})` -> `{target}`: exchanges the
/// code of an authorization started with `authorize_begin` and stores it.
pub fn authorize_complete(params: Value) -> Result<Value, CallError> {
    let p: CompleteParams = parse("authorize_complete", params)?;
    let t = notifier()?.authorization().complete(
        &p.state,
        &p.authorization_code,
        p.target.as_deref(),
    )?;
    Ok(json!({ "target": t }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct DeviceBeginParams {
    name: String,
}

/// `device_begin({name})` -> `{verification_uri, verification_uri_complete?, user_code,
/// expires_in, interval, handle, target}`: starts a device authorization (RFC 8628); the
/// device code stays server-side, bound to `handle` (single use, 10 minutes).
pub fn device_begin(params: Value) -> Result<Value, CallError> {
    let p: DeviceBeginParams = parse("device_begin", params)?;
    Ok(notifier()?.authorization().device_begin(&p.name)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct DeviceCompleteParams {
    handle: String,
    target: Option<String>,
    wait: Option<u64>,
}

/// `device_complete({handle, target?, wait?})` -> `{target, authorized}`: polls (at the
/// provider's interval) for at most `wait` seconds (default 10, at most 120) until the user
/// approved the code (the refresh token is stored), declined or it expired (errors).
/// `authorized: false`: not yet, call again with the same handle.
pub fn device_complete(params: Value) -> Result<Value, CallError> {
    let p: DeviceCompleteParams = parse("device_complete", params)?;
    let wait = std::time::Duration::from_secs(p.wait.unwrap_or(10).clamp(1, 120));
    Ok(notifier()?
        .authorization()
        .device_complete(&p.handle, p.target.as_deref(), wait)?)
}
