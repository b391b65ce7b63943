//! Management operations for API handlers: list/get/create/update/delete SMTP targets, test
//! them, and the locked refresh the daily job runs. Parameters come as a JSON object of config
//! keys (as an API request carries them); each function documents the HTTP-style error it
//! returns. Config changes take the [`ConfigLock`] themselves and check the caller's `digest`.

use crate::binding::Binding;
use crate::config::section::Section;
use crate::config::smtp::{private_keys, public_keys, SmtpSecrets, SmtpTarget, SMTP_TYPE};
use crate::config::{validate, ConfigLock};
use crate::error::{Error, Result};
use crate::fsutil::FileLock;
use crate::lock::StoreLock;
use crate::notification::{Notification, Severity};
use crate::secret::Secret;
use crate::settings::StoreKind;
use crate::state::StateStore;
use crate::{Notifier, RefreshReport};
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

/// Parameter that carries a refresh token into the target's state (never into the config).
pub const REFRESH_TOKEN_PARAM: &str = "oauth2-refresh-token";

/// Parameter that carries a private key: PEM, or a service account's JSON key file (whose
/// `client_email`, `private_key_id` and `client_id` then fill `oauth2-service-account`,
/// `oauth2-key-id` and `oauth2-client-id` unless the request gives them).
pub const PRIVATE_KEY_PARAM: &str = "oauth2-private-key";

/// A target as GET returns it: its public keys plus the config digest. Never a secret.
pub fn target_view(target: &SmtpTarget, digest: &str) -> Value {
    let mut v = serde_json::to_value(target).unwrap_or_else(|_| Value::Object(Map::new()));
    if let Value::Object(m) = &mut v {
        m.insert("digest".into(), Value::String(digest.to_string()));
        m.insert("type".into(), Value::String(SMTP_TYPE.into()));
        if let Some(w) = target.insecure_auth_warning() {
            m.insert("warning".into(), Value::String(w));
        }
    }
    v
}

/// All SMTP targets (`GET endpoints/smtp`). Targets whose config is invalid are listed with
/// their name and `error`, so an admin can see and fix them.
pub fn list_targets(n: &Notifier) -> Result<Vec<Value>> {
    let cfg = n.load_config()?;
    Ok(cfg
        .smtp_targets()
        .into_iter()
        .map(|(name, t)| match t {
            Ok(t) => with_outbox(n, target_view(&t, cfg.digest()), &name),
            Err(e) => serde_json::json!({ "name": name, "type": SMTP_TYPE, "error": e.to_string(), "digest": cfg.digest() }),
        })
        .collect())
}

/// One target (`GET endpoints/smtp/{name}`): 404 if missing, 400 if its config is invalid.
pub fn get_target(n: &Notifier, name: &str) -> Result<Value> {
    let cfg = n.load_config()?;
    Ok(with_outbox(
        n,
        target_view(&cfg.smtp_target(name)?, cfg.digest()),
        name,
    ))
}

/// A target's view with its outbox: queue depth, oldest age, and the outbox warning (a
/// waiting or lost notification) ahead of any other.
fn with_outbox(n: &Notifier, mut view: Value, name: &str) -> Value {
    let o = crate::outbox::status(n.settings(), name);
    if let Value::Object(m) = &mut view {
        m.insert("outbox-queued".into(), Value::from(o.queued));
        if let Some(age) = o.oldest_age_secs {
            m.insert("outbox-oldest-age".into(), Value::from(age));
        }
        if let Some(w) = o.warning {
            let w = match m.get("warning").and_then(Value::as_str) {
                Some(other) => format!("{w}; {other}"),
                None => w,
            };
            m.insert("warning".into(), Value::String(w));
        }
    }
    view
}

/// Convert API values to config lines: strings as they are, numbers, booleans as 1/0, arrays
/// as repeated keys. Anything else is a 400 naming the parameter.
fn push_value(entries: &mut Vec<(String, String)>, key: &str, v: &Value) -> Result<()> {
    match v {
        Value::String(s) => entries.push((key.into(), s.clone())),
        Value::Number(num) => entries.push((key.into(), num.to_string())),
        Value::Bool(b) => entries.push((key.into(), if *b { "1" } else { "0" }.into())),
        Value::Array(items)
            if matches!(
                key,
                "mailto" | "mailto-user" | "broker-allow-user" | "broker-allow-group"
            ) =>
        {
            for item in items {
                match item {
                    Value::String(s) => entries.push((key.into(), s.clone())),
                    _ => return Err(Error::param(key, "must be a list of strings")),
                }
            }
        }
        Value::Null => {}
        _ => return Err(Error::param(key, "must be a string, number or boolean")),
    }
    Ok(())
}

/// What a create/update request carries besides the public keys.
struct Extra {
    secrets: Vec<(String, Option<Secret>)>,
    refresh_token: Option<Secret>,
}

/// Split `params` into public entries and secrets; reject unknown parameters (400).
fn split_params(
    params: &Map<String, Value>,
    allowed_extra: &[&str],
) -> Result<(Vec<(String, String)>, Extra)> {
    let mut entries = Vec::new();
    let mut derived = Vec::new();
    let mut extra = Extra {
        secrets: Vec::new(),
        refresh_token: None,
    };
    for (key, v) in params {
        let k = key.as_str();
        if allowed_extra.contains(&k) {
            continue;
        }
        if k == PRIVATE_KEY_PARAM {
            // PEM or a JSON key file: several lines, stored as one
            let input = match v {
                Value::String(s) => Secret::new(s.clone()),
                Value::Null => Secret::new(""),
                _ => return Err(Error::param(k, "must be a string")),
            };
            if input.expose().trim().is_empty() {
                extra.secrets.push((k.to_string(), None));
                continue;
            }
            let key = crate::oauth2::private_key::parse_input(input.expose())?;
            // a JSON key file also names the service account: its values fill the keys the
            // request leaves out
            for (pk, value) in [
                ("oauth2-service-account", key.service_account),
                ("oauth2-key-id", key.key_id),
                ("oauth2-client-id", key.client_id),
            ] {
                if let Some(value) = value.filter(|_| !params.contains_key(pk)) {
                    derived.push((pk.to_string(), value));
                }
            }
            extra.secrets.push((k.to_string(), Some(key.stored)));
        } else if private_keys().contains(&k) || k == REFRESH_TOKEN_PARAM {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                _ => return Err(Error::param(k, "must be a string")),
            };
            validate::no_control_chars(&s).map_err(|m| Error::param(k, m))?;
            // an empty secret means "leave as it is", never "erase"
            let secret = Some(Secret::new(s)).filter(|s| !s.is_empty());
            if k == REFRESH_TOKEN_PARAM {
                extra.refresh_token = secret;
            } else {
                extra.secrets.push((k.to_string(), secret));
            }
        } else if public_keys().contains(&k) {
            push_value(&mut entries, k, v)?;
        } else {
            return Err(Error::param(
                k,
                format!(
                    "unknown parameter (known: name, {}, {}, {REFRESH_TOKEN_PARAM})",
                    public_keys().join(", "),
                    private_keys().join(", ")
                ),
            ));
        }
    }
    entries.extend(derived);
    Ok((entries, extra))
}

fn build_target(name: &str, entries: &[(String, String)]) -> Result<SmtpTarget> {
    validate::target_name(name).map_err(|m| Error::param("name", m))?;
    let mut section = Section::new(SMTP_TYPE, name);
    section.set_entries(entries);
    let as_param = |(key, message): (Option<&str>, String)| Error::Parameter {
        param: key.unwrap_or("name").to_string(),
        message,
    };
    let target = SmtpTarget::from_section(&section).map_err(|(_, invalid)| as_param(invalid))?;
    // what loads from an existing file may still be refused as a change (insecure auth)
    target.validate_change().map_err(as_param)?;
    Ok(target)
}

fn apply_secrets(secrets: &mut SmtpSecrets, given: Vec<(String, Option<Secret>)>) {
    for (k, v) in given {
        let slot = match k.as_str() {
            "password" => &mut secrets.password,
            "oauth2-private-key" => &mut secrets.oauth2_private_key,
            _ => &mut secrets.oauth2_client_secret,
        };
        if v.is_some() {
            *slot = v;
        }
    }
}

fn string_param<'a>(params: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::param(key, "must be a string")),
    }
}

/// Create an SMTP target (`POST endpoints/smtp`). `params` holds `name`, config keys,
/// `password` / `oauth2-client-secret` (to the private file) and optionally
/// `oauth2-refresh-token` (to the target's state). 400 on invalid input or a taken name;
/// nothing is written then.
pub fn create_target(n: &Notifier, params: &Map<String, Value>) -> Result<()> {
    let name = string_param(params, "name")?.ok_or_else(|| Error::param("name", "missing"))?;
    validate::config_id(name).map_err(|m| Error::param("name", m))?;
    let (entries, extra) = split_params(params, &["name"])?;
    let target = build_target(name, &entries)?;
    let mut secrets = SmtpSecrets::default();
    apply_secrets(&mut secrets, extra.secrets);
    let lock = ConfigLock::acquire(n.settings())?;
    let mut cfg = n.load_config()?;
    cfg.add_smtp_target(&target, &secrets)?;
    cfg.save(n.settings(), &lock)?;
    if let Some(rt) = extra.refresh_token {
        n.store_refresh_token(&target, rt)?;
    }
    Ok(())
}

/// Update target `name` (`PUT endpoints/smtp/{name}`): given keys replace, keys listed in
/// `delete` are removed, empty secrets are left as they are. 404 if missing, 409 if `digest`
/// is given and the config changed since, 400 on invalid input (nothing written).
///
/// Stored secrets never follow a repointed target ([`crate::binding`]): if the update changes
/// the app registration (auth method, client ID, tenant, endpoints, scope) or where and as whom
/// the target delivers (server, port, mode, allow-insecure-auth, identity), the stored OAuth2
/// state is deleted (the target needs authorization: a refresh token could otherwise mint an
/// access token for the new server). A changed registration also drops the stored client
/// secret, a changed delivery the stored password, unless this update supplies them again.
pub fn update_target(
    n: &Notifier,
    name: &str,
    params: &Map<String, Value>,
    delete: &[String],
    digest: Option<&str>,
) -> Result<()> {
    let (updates, extra) = split_params(params, &["name", "delete", "digest"])?;
    for d in delete {
        if !public_keys().contains(&d.as_str()) && !private_keys().contains(&d.as_str()) {
            return Err(Error::param(
                "delete",
                format!("cannot delete unknown key '{}'", d.escape_debug()),
            ));
        }
        if updates.iter().any(|(k, _)| k == d) {
            return Err(Error::param(
                "delete",
                format!("'{d}' is both set and deleted"),
            ));
        }
    }
    let lock = ConfigLock::acquire(n.settings())?;
    let mut cfg = n.load_config()?;
    cfg.check_digest(digest)?;
    let current = cfg.smtp_target(name)?;
    let mut secrets = cfg.stored_smtp_secrets(name)?;
    let mut entries: Vec<(String, String)> = current
        .to_entries()
        .into_iter()
        .filter(|(k, _)| !delete.contains(k) && !updates.iter().any(|(u, _)| u == k))
        .collect();
    entries.extend(updates);
    let target = build_target(name, &entries)?;
    if delete.iter().any(|d| d == "password") {
        secrets.password = None;
    }
    if delete.iter().any(|d| d == "oauth2-client-secret") {
        secrets.oauth2_client_secret = None;
    }
    if delete.iter().any(|d| d == PRIVATE_KEY_PARAM) {
        secrets.oauth2_private_key = None;
    }
    let (before, after) = (Binding::of(&current), Binding::of(&target));
    let registration_changed = before.registration_changed(&after);
    let delivery_changed = before.delivery_changed(&after);
    if registration_changed {
        secrets.oauth2_client_secret = None;
        secrets.oauth2_private_key = None;
    }
    if delivery_changed || registration_changed {
        // a password (plain, or the password grant's) goes only where it was set for
        secrets.password = None;
    }
    apply_secrets(&mut secrets, extra.secrets);
    // secrets that no longer fit the auth method go away with it
    let ropc = target.auth_method.is_oauth2()
        && target.flow() == crate::config::smtp::OAuth2Flow::Password;
    if target.auth_method != crate::AuthMethod::Plain && !ropc {
        secrets.password = None;
    }
    if !target.auth_method.is_oauth2() {
        secrets.oauth2_client_secret = None;
        secrets.oauth2_private_key = None;
    }
    cfg.update_smtp_target(&target, &secrets)?;
    cfg.save(n.settings(), &lock)?;
    if registration_changed || delivery_changed {
        forget_tokens(n, name)?;
    }
    if let Some(rt) = extra.refresh_token {
        n.store_refresh_token(&target, rt)?;
    }
    Ok(())
}

/// Drop the OAuth2 state of target `name` after an update changed what it is bound to.
fn forget_tokens(n: &Notifier, name: &str) -> Result<()> {
    let store = StateStore::new(n.settings());
    let lock = store.lock(name)?;
    store.remove(name, &lock)
}

/// Delete target `name` with its secrets and OAuth2 state (`DELETE endpoints/smtp/{name}`).
/// 404 if missing, 409 on a digest mismatch.
pub fn delete_target(n: &Notifier, name: &str, digest: Option<&str>) -> Result<()> {
    let lock = ConfigLock::acquire(n.settings())?;
    let mut cfg = n.load_config()?;
    cfg.check_digest(digest)?;
    cfg.remove_smtp_target(name)?;
    cfg.save(n.settings(), &lock)?;
    let store = StateStore::new(n.settings());
    let tl = store.lock(name)?;
    store.remove(name, &tl)
}

/// Send a test notification to target `name` (`POST targets/{name}/test`). `user_emails`
/// resolves the target's `mailto-user` entries (see [`Notification::user_emails`]).
pub fn test_target(
    n: &Notifier,
    name: &str,
    user_emails: Option<std::collections::BTreeMap<String, String>>,
) -> Result<()> {
    let note = Notification {
        title: format!("Test notification from oxnotify (target '{name}')"),
        body: format!(
            "This is a test of the notification target '{name}'.\nIf you can read this, delivery works.\n"
        ),
        severity: Severity::Info,
        user_emails,
        ..Default::default()
    };
    n.send_to_target(name, &note)
}

/// The daily refresh. One run at a time: waits up to `lock_timeout` for another run to end
/// and gives up with `Ok(None)` if it is still busy then. The config lock is held only while
/// the config is read, not through the token requests, so config edits never wait for the
/// network.
pub fn refresh_targets_locked(n: &Notifier, lock_timeout: Duration) -> Result<Option<DailyRun>> {
    let settings = n.settings();
    let deadline = Instant::now() + lock_timeout;
    let _run = match settings.store {
        StoreKind::Local => {
            let run_lock = settings.daily_lock_file();
            crate::fsutil::ensure_dir(&settings.state_dir, 0o700, false)?;
            loop {
                if let Some(l) = FileLock::try_exclusive(&run_lock)? {
                    break StoreLock::Local(l);
                }
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // one run per node (the other nodes' runs skip what was refreshed within the
        // window); a read-only cluster file system fails here, before any token request
        StoreKind::Cluster => match StoreLock::acquire_until(
            settings,
            &settings.daily_lock_file(),
            &format!("daily-{}", settings.node_name),
            deadline,
            "the daily refresh of this node",
        ) {
            Ok(l) => l,
            Err(Error::LockTimeout { .. }) => return Ok(None),
            Err(e) => return Err(e),
        },
    };
    let config = {
        let _read = ConfigLock::acquire(n.settings())?;
        n.load_config()?
    };
    Ok(Some(DailyRun {
        reports: n.refresh_configured(&config)?,
        problems: config_problems(&config),
    }))
}

/// What one daily refresh did.
#[derive(Debug)]
pub struct DailyRun {
    /// One report per OAuth2 target.
    pub reports: Vec<RefreshReport>,
    /// Malformed config lines that belong to no target (file and line, never their text).
    pub problems: Vec<String>,
}

/// The config's problems as messages (see [`crate::NotificationConfig::problems`]).
pub fn config_problems(config: &crate::NotificationConfig) -> Vec<String> {
    config.problems().iter().map(ToString::to_string).collect()
}

/// Start authorizing target `name` (`POST smtp-oauth2-authorize-url`): returns the provider's
/// authorize URL and the `state`; the PKCE verifier stays server-side, bound to the state
/// (single use, 10 minutes). 404 if the target is missing, 400 if it is not an OAuth2 target.
pub fn authorize_begin(n: &Notifier, name: &str, redirect_uri: &str) -> Result<Value> {
    let req = n.authorize_url(name, redirect_uri)?;
    crate::pending::store(
        n.settings(),
        &req.state,
        &crate::pending::Pending {
            target: name.to_string(),
            redirect_uri: redirect_uri.to_string(),
            pkce_verifier: req.pkce_verifier.clone(),
            created: crate::state::now(),
            device: None,
        },
    )?;
    Ok(serde_json::json!({ "url": req.url.as_str(), "state": req.state, "target": name }))
}

/// Finish an authorization started with [`authorize_begin`]: the `state` from the redirect
/// selects the pending request (single use), `code` is exchanged with the target's client
/// registration and PKCE verifier, and the result is stored in the target's state. If
/// `expected_target` is given it must match the target the state was issued for. Returns
/// the target name. 400 on an unknown, replayed, expired or foreign state.
pub fn authorize_complete(
    n: &Notifier,
    state: &str,
    code: &str,
    expected_target: Option<&str>,
) -> Result<String> {
    let pending = crate::pending::take(n.settings(), state)?;
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
    let cfg = n.load_config()?;
    let target = cfg.smtp_target(&pending.target)?;
    let secrets = cfg.smtp_secrets(&pending.target)?;
    n.exchange_smtp_oauth2_code(&crate::CodeExchange {
        auth_method: target.auth_method,
        client_id: target.oauth2_client_id.as_deref().unwrap_or_default(),
        client_secret: secrets.oauth2_client_secret.clone(),
        code,
        redirect_uri: &pending.redirect_uri,
        pkce_verifier: Some(pending.pkce_verifier),
        endpoints: crate::oauth2::EndpointParams::of_target(&target),
        target: Some(&pending.target),
    })?;
    Ok(pending.target)
}

/// Start a device authorization (RFC 8628) for target `name` (`oauth2-flow device-code`):
/// returns `verification_uri`, `verification_uri_complete` (if offered), `user_code`,
/// `expires_in`, `interval` and a `handle` for [`device_complete`]. The device code stays
/// server-side, bound to the handle (single use, 10 minutes). 404 if the target is missing,
/// 400 if it does not use the device flow.
pub fn device_begin(n: &Notifier, name: &str) -> Result<Value> {
    let auth = n.device_authorization_start(name)?;
    let handle = ::oauth2::CsrfToken::new_random().secret().clone();
    crate::pending::store(
        n.settings(),
        &handle,
        &crate::pending::Pending {
            target: name.to_string(),
            redirect_uri: String::new(),
            pkce_verifier: Secret::new(""),
            created: crate::state::now(),
            device: Some(auth.details.clone()),
        },
    )?;
    let mut v = serde_json::to_value(&auth).unwrap_or_else(|_| Value::Object(Map::new()));
    if let Value::Object(m) = &mut v {
        m.insert("handle".into(), Value::String(handle));
        m.insert("target".into(), Value::String(name.to_string()));
    }
    Ok(v)
}

/// Finish a device authorization started with [`device_begin`]: polls the provider (at its
/// interval) for at most `max_wait` until the user approved (the refresh token is stored in the
/// target's state; the handle is used up), declined or the code expired (errors; the handle is
/// used up). Returns `{target, authorized}`; `authorized: false` means the user has not
/// finished yet: call again with the same handle. 400 on an unknown, used or expired handle,
/// or one issued for another target than `expected_target`.
pub fn device_complete(
    n: &Notifier,
    handle: &str,
    expected_target: Option<&str>,
    max_wait: Duration,
) -> Result<Value> {
    let pending = crate::pending::peek(n.settings(), handle)?;
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
    let result =
        n.device_authorization_finish(&pending.target, &details, pending.created, max_wait);
    if !matches!(result, Ok(false)) {
        // done, either way: the handle is used up (a concurrent caller may have taken it)
        let _ = crate::pending::take(n.settings(), handle);
    }
    Ok(serde_json::json!({ "target": pending.target, "authorized": result? }))
}
