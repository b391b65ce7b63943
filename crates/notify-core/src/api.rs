//! Management operations for API handlers: list/get/create/update/delete SMTP targets, test
//! them, and the locked refresh the daily job runs. Parameters come as a JSON object of config
//! keys (as an API request carries them); each function documents the HTTP-style error it
//! returns. Config changes take the [`ConfigLock`] themselves and check the caller's `digest`.

use crate::binding::Binding;
use crate::config::keys;
use crate::config::section::Section;
use crate::config::smtp::{SmtpSecrets, SmtpTarget, SMTP_TYPE};
use crate::config::{validate, ConfigLock, NotificationConfig};
use crate::error::{Error, Result};
use crate::notification::{Notification, Severity};
use crate::secret::Secret;
use crate::state::StateStore;
use crate::status::first_warning;
use crate::Notifier;
use serde_json::{Map, Value};

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
    let cfg = NotificationConfig::load(n.settings())?;
    Ok(cfg
        .smtp_targets()
        .into_iter()
        .map(|(name, t)| match t {
            Ok(t) => with_forecast(n, with_outbox(n, target_view(&t, cfg.digest()), &name), &t),
            Err(e) => serde_json::json!({ "name": name, "type": SMTP_TYPE, "error": e.to_string(), "digest": cfg.digest() }),
        })
        .collect())
}

/// Every target as a notification stack lists all its targets (`GET targets`): name, type,
/// `disable` as 0/1, origin `user-created`, and comment, error and warning where present.
pub fn target_summaries(n: &Notifier) -> Result<Vec<Value>> {
    Ok(list_targets(n)?
        .into_iter()
        .map(|t| {
            let mut out = Map::new();
            out.insert("name".into(), t["name"].clone());
            out.insert("type".into(), t["type"].clone());
            let disabled = t["disable"].as_bool().unwrap_or(false);
            out.insert("disable".into(), Value::from(u8::from(disabled)));
            out.insert("origin".into(), Value::from("user-created"));
            for k in ["comment", "error", "warning"] {
                if let Some(v) = t.get(k).filter(|v| !v.is_null()) {
                    out.insert(k.into(), v.clone());
                }
            }
            Value::Object(out)
        })
        .collect())
}

/// One target (`GET endpoints/smtp/{name}`): 404 if missing, 400 if its config is invalid.
pub fn get_target(n: &Notifier, name: &str) -> Result<Value> {
    let cfg = NotificationConfig::load(n.settings())?;
    let target = cfg.smtp_target(name)?;
    Ok(with_forecast(
        n,
        with_outbox(n, target_view(&target, cfg.digest()), name),
        &target,
    ))
}

/// A target's view with its `forecast` (the status's: what is coming or wrong, each with a
/// ready sentence), so the list shows what the status and the alerts say.
fn with_forecast(n: &Notifier, mut view: Value, target: &SmtpTarget) -> Value {
    let forecast = n
        .status()
        .of(target)
        .map(|s| s.forecast)
        .unwrap_or_default();
    if let Value::Object(m) = &mut view {
        m.insert(
            "forecast".into(),
            serde_json::to_value(forecast).unwrap_or_default(),
        );
    }
    view
}

/// A target's view with its outbox: queue depth, oldest age, and the outbox warning (a
/// waiting or lost notification) ahead of any other.
fn with_outbox(n: &Notifier, mut view: Value, name: &str) -> Value {
    let o = crate::delivery::outbox::status(n.settings(), name);
    if let Value::Object(m) = &mut view {
        m.insert("outbox-queued".into(), Value::from(o.queued));
        if let Some(age) = o.oldest_age_secs {
            m.insert("outbox-oldest-age".into(), Value::from(age));
        }
        let other = m.get("warning").and_then(Value::as_str).map(str::to_string);
        if let Some(w) = first_warning(o.warning, other) {
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
        } else if keys::key(k).is_some_and(|k| k.private()) || k == REFRESH_TOKEN_PARAM {
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
        } else if keys::key(k).is_some() {
            push_value(&mut entries, k, v)?;
        } else {
            return Err(Error::param(
                k,
                format!(
                    "unknown parameter (known: name, {}, {REFRESH_TOKEN_PARAM})",
                    keys::KEYS
                        .iter()
                        .map(|k| k.name)
                        .collect::<Vec<_>>()
                        .join(", ")
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
        if let Some(slot) = keys::key(&k).and_then(|k| k.slot(secrets)) {
            if v.is_some() {
                *slot = v;
            }
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

/// 400 unless the endpoints of an OAuth2 target are on its provider's hosts, or on hosts root
/// allows ([`crate::Settings::provider_hosts`]): pinned when written, not only when used.
fn check_endpoint_hosts(n: &Notifier, target: &SmtpTarget) -> Result<()> {
    if !target.auth_method.is_oauth2() {
        return Ok(());
    }
    let params =
        crate::oauth2::EndpointParams::of_target(target).allowing(&n.settings().provider_hosts);
    crate::oauth2::provider::resolve(target.auth_method, &params).map(|_| ())
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
    check_endpoint_hosts(n, &target)?;
    let mut secrets = SmtpSecrets::default();
    apply_secrets(&mut secrets, extra.secrets);
    let lock = ConfigLock::acquire(n.settings())?;
    let mut cfg = NotificationConfig::load(n.settings())?;
    cfg.add_smtp_target(&target, &secrets)?;
    cfg.save(n.settings(), &lock)?;
    if let Some(rt) = extra.refresh_token {
        n.authorization().store_refresh_token(&target, rt)?;
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
        match keys::key(d) {
            None => {
                return Err(Error::param(
                    "delete",
                    format!("cannot delete unknown key '{}'", d.escape_debug()),
                ))
            }
            Some(k) if !k.deletable => {
                return Err(Error::param(
                    "delete",
                    format!("'{d}' is required and cannot be deleted"),
                ))
            }
            Some(_) => {}
        }
        if updates.iter().any(|(k, _)| k == d) {
            return Err(Error::param(
                "delete",
                format!("'{d}' is both set and deleted"),
            ));
        }
    }
    let lock = ConfigLock::acquire(n.settings())?;
    let mut cfg = NotificationConfig::load(n.settings())?;
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
    check_endpoint_hosts(n, &target)?;
    for key in delete.iter().filter_map(|d| keys::key(d)) {
        if let Some(slot) = key.slot(&mut secrets) {
            *slot = None;
        }
    }
    let (before, after) = (Binding::of(&current), Binding::of(&target));
    let registration_changed = before.registration_changed(&after);
    let delivery_changed = before.delivery_changed(&after);
    // a credential that can obtain tokens without anyone's consent (a minting flow's client
    // secret or key, any password) goes only where it was set for: a changed destination
    // drops it, unless this update supplies it again
    let mints = current.auth_method.is_oauth2() && current.flow().mints()
        || target.auth_method.is_oauth2() && target.flow().mints();
    let mut dropped = Vec::new();
    if registration_changed || (delivery_changed && mints) {
        dropped.extend(
            secrets
                .oauth2_client_secret
                .take()
                .map(|_| "oauth2-client-secret"),
        );
        dropped.extend(secrets.oauth2_private_key.take().map(|_| PRIVATE_KEY_PARAM));
    }
    if delivery_changed || registration_changed {
        dropped.extend(secrets.password.take().map(|_| "password"));
    }
    let confirmed = extra.secrets.iter().any(|(_, v)| v.is_some())
        && target.auth_method.is_oauth2()
        && target.flow().mints();
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
    cfg.update_smtp_target(&target, &secrets)
        .map_err(|e| say_why_dropped(e, &dropped))?;
    cfg.save(n.settings(), &lock)?;
    // a newly supplied credential confirms the target as it is now: what was minted or
    // authorized before is not kept beside it
    if registration_changed || delivery_changed || confirmed {
        forget_tokens(n, name)?;
    }
    if let Some(rt) = extra.refresh_token {
        n.authorization().store_refresh_token(&target, rt)?;
    }
    Ok(())
}

/// A 400 about a secret this update dropped says why it is missing: the destination changed.
fn say_why_dropped(e: Error, dropped: &[&str]) -> Error {
    match e {
        Error::Parameter { param, message } if dropped.contains(&param.as_str()) => Error::param(
            param.clone(),
            format!(
                "{message}: the stored {param} was not kept because this update changes where \
                 or as whom the target delivers (server, port, mode, identity, broker \
                 allow-list) or its OAuth2 registration; supply it again with this update"
            ),
        ),
        other => other,
    }
}

/// Drop the OAuth2 state of target `name` after an update changed what it is bound to.
fn forget_tokens(n: &Notifier, name: &str) -> Result<()> {
    let store = StateStore::new(n.settings());
    let lock = store.lock(name)?;
    store.remove(name, &lock)
}

/// Delete target `name` with its secrets, OAuth2 state and waiting messages (`DELETE
/// endpoints/smtp/{name}`; each waiting message is recorded as given up).
/// 404 if missing, 409 on a digest mismatch.
pub fn delete_target(n: &Notifier, name: &str, digest: Option<&str>) -> Result<()> {
    let lock = ConfigLock::acquire(n.settings())?;
    let mut cfg = NotificationConfig::load(n.settings())?;
    cfg.check_digest(digest)?;
    cfg.remove_smtp_target(name)?;
    cfg.save(n.settings(), &lock)?;
    // what waits for the deleted target goes with it: a new target of the same name (maybe
    // pointing elsewhere) must not deliver it
    n.delivery()
        .discard_outbox(name, "its target was deleted")?;
    let store = StateStore::new(n.settings());
    let tl = store.lock(name)?;
    store.remove(name, &tl)
}

/// Send a test notification to target `name` (`POST targets/{name}/test`); `context`
/// resolves the target's `mailto-user` entries (see [`crate::Context`]).
pub fn test_target(n: &Notifier, name: &str, context: Option<&dyn crate::Context>) -> Result<()> {
    let note = Notification {
        title: format!("Test notification from oxnotify (target '{name}')"),
        body: format!(
            "This is a test of the notification target '{name}'.\nIf you can read this, delivery works.\n"
        ),
        severity: Severity::Info,
        ..Default::default()
    };
    match context {
        Some(c) => n.delivery().with_context(c).send_to_target(name, &note),
        None => n.delivery().send_to_target(name, &note),
    }
}
