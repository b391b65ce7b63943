//! The one table of SMTP target keys. Parsing a section, writing it back, the API's key
//! lists, which keys may be deleted, and the Perl side's lists (through `config_keys`) are all
//! derived from [`KEYS`]; what a value must look like beyond its kind is checked in
//! [`super::smtp::SmtpTarget::validate`].

use super::section::Section;
use super::smtp::{
    AuthMethod, ClientAuthMethod, Invalid, OAuth2Flow, SmtpMode, SmtpSecrets, SmtpTarget, Transport,
};
use super::validate;
use crate::secret::Secret;
use serde::Serialize;

/// What a key's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ValueKind {
    /// Free text (validated per key).
    Text,
    /// `1` / `0`.
    Bool,
    /// A whole number.
    Number,
    /// One of a fixed set of words.
    Choice,
    /// A secret: stored in the private file, never shown.
    Secret,
}

/// How a key is read from and written to a target.
#[derive(Clone, Copy)]
enum Access {
    /// A public key of [`SmtpTarget`]: set from one config line (a multi-valued key once per
    /// line), and its values in canonical form.
    Public {
        set: fn(&mut SmtpTarget, &str) -> Result<(), String>,
        get: fn(&SmtpTarget) -> Vec<String>,
    },
    /// A secret of [`SmtpSecrets`].
    Private(fn(&mut SmtpSecrets) -> &mut Option<Secret>),
}

/// One SMTP target key.
#[derive(Clone, Copy)]
pub struct Key {
    /// The key as it appears in the config and the API (`oauth2-client-id`).
    pub name: &'static str,
    /// What its value is.
    pub kind: ValueKind,
    /// May appear on several lines (a list).
    pub multi: bool,
    /// May be removed with an update's `delete` (every key a target can do without).
    pub deletable: bool,
    access: Access,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// Stored in the private file (a secret).
    pub fn private(&self) -> bool {
        matches!(self.access, Access::Private(_))
    }

    /// Set this public key of `target` from one config value; `Err` says what is wrong.
    pub(crate) fn set(&self, target: &mut SmtpTarget, value: &str) -> Result<(), String> {
        match self.access {
            Access::Public { set, .. } => set(target, value),
            Access::Private(_) => Err("a secret belongs in the private file".into()),
        }
    }

    /// The values of this public key of `target` (none if unset).
    pub(crate) fn values(&self, target: &SmtpTarget) -> Vec<String> {
        match self.access {
            Access::Public { get, .. } => get(target),
            Access::Private(_) => Vec::new(),
        }
    }

    /// The slot of this private key in `secrets`.
    pub(crate) fn slot<'s>(&self, secrets: &'s mut SmtpSecrets) -> Option<&'s mut Option<Secret>> {
        match self.access {
            Access::Private(slot) => Some(slot(secrets)),
            Access::Public { .. } => None,
        }
    }
}

/// The key named `name`.
pub fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// The names of the public keys, in canonical order.
pub fn public_names() -> impl Iterator<Item = &'static str> {
    KEYS.iter().filter(|k| !k.private()).map(|k| k.name)
}

/// The names of the private keys (secrets).
pub fn private_names() -> impl Iterator<Item = &'static str> {
    KEYS.iter().filter(|k| k.private()).map(|k| k.name)
}

fn opt(v: &str) -> Option<String> {
    Some(v.to_string()).filter(|v| !v.is_empty())
}

fn one(v: &Option<String>) -> Vec<String> {
    v.iter().cloned().collect()
}

/// The items of a list value (separated by commas or blanks).
fn items(v: &str) -> impl Iterator<Item = String> + '_ {
    v.split([',', ' ', '\t'])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("'{v}' is not a boolean (use 1 or 0)")),
    }
}

fn flag(b: bool) -> Vec<String> {
    if b {
        vec!["1".into()]
    } else {
        Vec::new()
    }
}

fn choice<T>(v: &str, parse: fn(&str) -> Option<T>, what: &str) -> Result<T, String> {
    parse(v).ok_or_else(|| format!("'{v}' is not {what}"))
}

macro_rules! text {
    ($name:literal, $field:ident) => {
        Key {
            name: $name,
            kind: ValueKind::Text,
            multi: false,
            deletable: true,
            access: Access::Public {
                set: |t, v| {
                    t.$field = opt(v);
                    Ok(())
                },
                get: |t| one(&t.$field),
            },
        }
    };
}

macro_rules! list {
    ($name:literal, $($field:ident).+) => {
        Key {
            name: $name,
            kind: ValueKind::Text,
            multi: true,
            deletable: true,
            access: Access::Public {
                set: |t, v| {
                    t.$($field).+.extend(items(v));
                    Ok(())
                },
                get: |t| t.$($field).+.clone(),
            },
        }
    };
}

macro_rules! secret {
    ($name:literal, $field:ident) => {
        Key {
            name: $name,
            kind: ValueKind::Secret,
            multi: false,
            deletable: true,
            access: Access::Private(|s| &mut s.$field),
        }
    };
}

/// Every key of an SMTP target, in the order a section is written.
pub static KEYS: &[Key] = &[
    Key {
        name: "server",
        kind: ValueKind::Text,
        multi: false,
        deletable: false,
        access: Access::Public {
            set: |t, v| {
                t.server = v.to_string();
                Ok(())
            },
            get: |t| vec![t.server.clone()],
        },
    },
    Key {
        name: "port",
        kind: ValueKind::Number,
        multi: false,
        deletable: true,
        access: Access::Public {
            set: |t, v| {
                t.port = Some(
                    v.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("'{v}' is not a port (1-65535)"))?,
                );
                Ok(())
            },
            get: |t| t.port.iter().map(u16::to_string).collect(),
        },
    },
    Key {
        name: "mode",
        kind: ValueKind::Choice,
        multi: false,
        deletable: true,
        access: Access::Public {
            set: |t, v| {
                t.mode = choice(v, SmtpMode::parse, "a mode (insecure, starttls or tls)")?;
                Ok(())
            },
            get: |t| vec![t.mode.as_str().to_string()],
        },
    },
    Key {
        name: "auth-method",
        kind: ValueKind::Choice,
        multi: false,
        deletable: true,
        access: Access::Public {
            set: |t, v| {
                t.auth_method = choice(
                    v,
                    AuthMethod::parse,
                    "an auth method (none, plain, google-oauth2, microsoft-oauth2, oauth2)",
                )?;
                Ok(())
            },
            get: |t| vec![t.auth_method.as_str().to_string()],
        },
    },
    text!("username", username),
    Key {
        name: "from-address",
        kind: ValueKind::Text,
        multi: false,
        deletable: false,
        access: Access::Public {
            set: |t, v| {
                t.from_address = v.to_string();
                Ok(())
            },
            get: |t| vec![t.from_address.clone()],
        },
    },
    text!("author", author),
    list!("mailto", mailto),
    list!("mailto-user", mailto_user),
    text!("oauth2-client-id", oauth2_client_id),
    text!("oauth2-tenant-id", oauth2_tenant_id),
    text!("oauth2-authorize-url", oauth2_authorize_url),
    text!("oauth2-token-url", oauth2_token_url),
    text!("oauth2-scope", oauth2_scope),
    Key {
        name: "max-connections",
        kind: ValueKind::Number,
        multi: false,
        deletable: true,
        access: Access::Public {
            set: |t, v| {
                t.max_connections = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| format!("'{v}' is not a number from 1 to 100"))?,
                );
                Ok(())
            },
            get: |t| t.max_connections.iter().map(u32::to_string).collect(),
        },
    },
    list!("broker-allow-user", broker_allow.users),
    list!("broker-allow-group", broker_allow.groups),
    Key {
        name: "oauth2-flow",
        kind: ValueKind::Choice,
        multi: false,
        deletable: true,
        access: Access::Public {
            set: |t, v| {
                t.oauth2_flow = Some(choice(
                    v,
                    OAuth2Flow::parse,
                    "an OAuth2 flow (authorization-code, client-credentials, service-account, \
                     password, device-code)",
                )?);
                Ok(())
            },
            get: |t| {
                t.oauth2_flow
                    .iter()
                    .map(|f| f.as_str().to_string())
                    .collect()
            },
        },
    },
    Key {
        name: "oauth2-client-auth",
        kind: ValueKind::Choice,
        multi: false,
        deletable: true,
        access: Access::Public {
            set: |t, v| {
                t.oauth2_client_auth = Some(choice(
                    v,
                    ClientAuthMethod::parse,
                    "a client authentication (client-secret-post, client-secret-basic, \
                     private-key-jwt)",
                )?);
                Ok(())
            },
            get: |t| {
                t.oauth2_client_auth
                    .iter()
                    .map(|a| a.as_str().to_string())
                    .collect()
            },
        },
    },
    text!("oauth2-service-account", oauth2_service_account),
    text!("oauth2-key-id", oauth2_key_id),
    text!(
        "oauth2-certificate-thumbprint",
        oauth2_certificate_thumbprint
    ),
    text!("oauth2-device-authorize-url", oauth2_device_authorize_url),
    text!("comment", comment),
    Key {
        name: "disable",
        kind: ValueKind::Bool,
        multi: false,
        deletable: true,
        access: Access::Public {
            set: |t, v| {
                t.disable = parse_bool(v)?;
                Ok(())
            },
            get: |t| flag(t.disable),
        },
    },
    Key {
        name: "allow-insecure-auth",
        kind: ValueKind::Bool,
        multi: false,
        deletable: true,
        access: Access::Public {
            set: |t, v| {
                t.allow_insecure_auth = parse_bool(v)?;
                Ok(())
            },
            get: |t| flag(t.allow_insecure_auth),
        },
    },
    // `smtp` (default): SMTP submission with XOAUTH2. `graph` (microsoft-oauth2 only): Microsoft
    // Graph sendMail over HTTPS, for tenants or mailboxes with SMTP AUTH disabled; `server` is
    // then the Graph host (graph.microsoft.com; graph.microsoft.us, dod-graph.microsoft.us or
    // microsoftgraph.chinacloudapi.cn for national clouds) and the app needs Mail.Send
    Key {
        name: "transport",
        kind: ValueKind::Choice,
        multi: false,
        deletable: true,
        access: Access::Public {
            set: |t, v| {
                t.transport = Some(choice(
                    v,
                    Transport::parse,
                    "a transport (smtp, or graph for Microsoft Graph sendMail)",
                )?);
                Ok(())
            },
            get: |t| t.transport.iter().map(|x| x.as_str().to_string()).collect(),
        },
    },
    secret!("password", password),
    secret!("oauth2-client-secret", oauth2_client_secret),
    secret!("oauth2-private-key", oauth2_private_key),
    text!("alert-target", alert_target),
    text!("oauth2-credential-expires", oauth2_credential_expires),
];

/// Parsing and writing a target's sections, derived from [`KEYS`].
impl SmtpTarget {
    /// Build from a parsed section. Returns the failing key's line for error messages via
    /// `Err((line, key, message))`.
    pub fn from_section(section: &Section) -> Result<Self, (Option<usize>, Invalid)> {
        let mut t = SmtpTarget::new(&section.name, "", "", Vec::new());
        let mut seen: Vec<&str> = Vec::new();
        for e in section.entries() {
            let line = Some(e.line).filter(|l| *l > 0);
            let Some(key) = key(&e.key).filter(|k| !k.private()) else {
                let hint = if key(&e.key).is_some() {
                    " (secrets belong in the private file priv/notifications.cfg)".to_string()
                } else {
                    format!(
                        " (known keys: {})",
                        public_names().collect::<Vec<_>>().join(", ")
                    )
                };
                return Err((
                    line,
                    (
                        None,
                        format!("unknown key '{}'{hint}", e.key.escape_debug()),
                    ),
                ));
            };
            let fail = |m: String| (line, (Some(key.name), m));
            validate::no_control_chars(&e.value).map_err(fail)?;
            if !key.multi {
                if seen.contains(&key.name) {
                    return Err(fail("key given more than once".into()));
                }
                seen.push(key.name);
            }
            key.set(&mut t, &e.value).map_err(fail)?;
        }
        // older configs have no auth-method: username set -> plain, else none
        if !seen.contains(&"auth-method") {
            t.auth_method = if t.username.is_some() {
                AuthMethod::Plain
            } else {
                AuthMethod::None
            };
        }
        t.validate().map_err(|(key, msg)| {
            let line = key.and_then(|k| section.entries().find(|e| e.key == k).map(|e| e.line));
            (line.or(Some(section.line)).filter(|l| *l > 0), (key, msg))
        })?;
        Ok(t)
    }

    /// The `key value` pairs of the public section, in canonical order ([`KEYS`]).
    pub fn to_entries(&self) -> Vec<(String, String)> {
        KEYS.iter()
            .flat_map(|k| k.values(self).into_iter().map(|v| (k.name.to_string(), v)))
            .collect()
    }
}

/// Parsing and writing a target's private section, derived from [`KEYS`].
impl SmtpSecrets {
    /// Read from a private-file section.
    pub fn from_section(section: &Section) -> Result<Self, (Option<usize>, Invalid)> {
        let mut s = SmtpSecrets::default();
        for e in section.entries() {
            let line = Some(e.line).filter(|l| *l > 0);
            let Some(slot) = key(&e.key).and_then(|k| k.slot(&mut s)) else {
                return Err((
                    line,
                    (
                        None,
                        // not the key's text: in this file a typo like `password=VALUE`
                        // makes the secret the "key"
                        format!(
                            "unknown key in the private file (known keys: {}); the line's \
                             text is not shown",
                            private_names().collect::<Vec<_>>().join(", ")
                        ),
                    ),
                ));
            };
            if slot.is_some() {
                return Err((
                    line,
                    (None, format!("key '{}' given more than once", e.key)),
                ));
            }
            if !e.value.is_empty() {
                *slot = Some(Secret::new(e.value.clone()));
            }
        }
        Ok(s)
    }

    /// The `key value` pairs of the private section.
    pub fn to_entries(&self) -> Vec<(String, String)> {
        let mut copy = self.clone();
        KEYS.iter()
            .filter_map(|k| {
                let v = k.slot(&mut copy)?.as_ref()?;
                Some((k.name.to_string(), v.expose().to_string()))
            })
            .collect()
    }
}

/// `Err` naming the first key of `target` whose value holds a control character.
pub fn check_values(target: &SmtpTarget) -> Result<(), Invalid> {
    for key in KEYS {
        for v in key.values(target) {
            validate::no_control_chars(&v).map_err(|m| (Some(key.name), m))?;
        }
    }
    Ok(())
}

/// A condition on another key of the same target: it holds while `key` has one of `values`
/// (`""`: the key is unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct When {
    /// The key whose value decides.
    pub key: &'static str,
    /// The values for which the condition holds.
    pub values: &'static [&'static str],
}

/// A condition on a target's keys: one of the alternatives holds when all of its [`When`]s
/// hold. [`ALWAYS`] is one empty alternative, [`NEVER`] none.
pub type Condition = &'static [&'static [When]];

/// Every target.
pub const ALWAYS: Condition = &[&[]];
/// No target.
pub const NEVER: Condition = &[];

/// Where a key belongs, so that the page (and any front end reading [`describe`]) shows an
/// admin only what the chosen auth method and flow use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Applies {
    /// The targets the key means something for (elsewhere it is hidden).
    pub applies: Condition,
    /// The targets that need it set (or decided): shown first; the others that apply are
    /// optional settings.
    pub needed: Condition,
}

/// One allowed value of a [`ValueKind::Choice`] key and the targets it is allowed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// The value as written in the config.
    pub value: &'static str,
    /// The targets that may choose it.
    pub applies: Condition,
}

const OAUTH2: &[&str] = &["google-oauth2", "microsoft-oauth2", "oauth2"];
const ANY_AUTH: &[&str] = &["plain", "google-oauth2", "microsoft-oauth2", "oauth2"];
const MICROSOFT: &[&str] = &["microsoft-oauth2"];
/// The flows in which the client authenticates at the token endpoint (all but
/// service-account, whose signed assertion is the credential); `""`: unset, authorization-code.
const CLIENT_FLOWS: &[&str] = &[
    "",
    "authorization-code",
    "client-credentials",
    "password",
    "device-code",
];
const CODE_FLOW: &[&str] = &["", "authorization-code"];
const SECRET_AUTH: &[&str] = &["", "client-secret-post", "client-secret-basic"];
const KEY_AUTH: &[&str] = &["private-key-jwt"];

macro_rules! when {
    ($($key:literal = $values:expr),*) => {
        &[$(When { key: $key, values: $values }),*] as &[When]
    };
}

const ON_OAUTH2: Condition = &[when!("auth-method" = OAUTH2)];
const ON_GENERIC: Condition = &[when!("auth-method" = &["oauth2"])];
const ON_CLIENT: Condition = &[when!("auth-method" = OAUTH2, "oauth2-flow" = CLIENT_FLOWS)];
const ON_SERVICE_ACCOUNT: Condition = &[when!(
    "auth-method" = &["google-oauth2", "oauth2"],
    "oauth2-flow" = &["service-account"]
)];
const ON_PRIVATE_KEY: Condition = &[
    when!(
        "auth-method" = &["google-oauth2", "oauth2"],
        "oauth2-flow" = &["service-account"]
    ),
    when!(
        "auth-method" = OAUTH2,
        "oauth2-flow" = CLIENT_FLOWS,
        "oauth2-client-auth" = KEY_AUTH
    ),
];

/// Where key `name` belongs (see [`Applies`]). Keys not listed here apply to every target
/// and are optional. (An arm for a key this build does not have is harmless: only the keys
/// of [`KEYS`] are described.)
pub fn applicability(name: &str) -> Applies {
    let (applies, needed) = match name {
        "server" | "port" | "mode" | "auth-method" | "from-address" | "mailto" => (ALWAYS, ALWAYS),
        "username" => (
            &[when!("auth-method" = ANY_AUTH)][..],
            &[when!("auth-method" = &["plain"])][..],
        ),
        "password" => {
            const C: Condition = &[
                when!("auth-method" = &["plain"]),
                when!(
                    "auth-method" = &["microsoft-oauth2", "oauth2"],
                    "oauth2-flow" = &["password"]
                ),
            ];
            (C, C)
        }
        "allow-insecure-auth" => {
            const C: Condition = &[when!("auth-method" = ANY_AUTH, "mode" = &["insecure"])];
            (C, C)
        }
        "oauth2-client-id" => (ON_CLIENT, ON_CLIENT),
        "oauth2-tenant-id" => {
            const C: Condition = &[when!("auth-method" = MICROSOFT)];
            (C, C)
        }
        "oauth2-authorize-url" => (
            &[when!("auth-method" = OAUTH2, "oauth2-flow" = CODE_FLOW)][..],
            &[when!(
                "auth-method" = &["oauth2"],
                "oauth2-flow" = CODE_FLOW
            )][..],
        ),
        "oauth2-token-url" | "oauth2-scope" => (ON_OAUTH2, ON_GENERIC),
        "oauth2-flow" => (ON_OAUTH2, ON_OAUTH2),
        "broker-allow-user" | "broker-allow-group" => (ON_OAUTH2, NEVER),
        "oauth2-client-auth" => (ON_CLIENT, NEVER),
        "oauth2-client-secret" => (
            &[when!(
                "auth-method" = OAUTH2,
                "oauth2-flow" = CLIENT_FLOWS,
                "oauth2-client-auth" = SECRET_AUTH
            )][..],
            // a device-code client may be a public one
            &[when!(
                "auth-method" = OAUTH2,
                "oauth2-flow" = &["", "authorization-code", "client-credentials", "password"],
                "oauth2-client-auth" = SECRET_AUTH
            )][..],
        ),
        "oauth2-service-account" => (ON_SERVICE_ACCOUNT, ON_SERVICE_ACCOUNT),
        "oauth2-private-key" => (ON_PRIVATE_KEY, ON_PRIVATE_KEY),
        "oauth2-key-id" => (ON_PRIVATE_KEY, NEVER),
        "oauth2-certificate-thumbprint" => {
            const C: Condition = &[when!(
                "auth-method" = MICROSOFT,
                "oauth2-flow" = CLIENT_FLOWS,
                "oauth2-client-auth" = KEY_AUTH
            )];
            (C, C)
        }
        "oauth2-device-authorize-url" => (
            &[when!(
                "auth-method" = OAUTH2,
                "oauth2-flow" = &["device-code"]
            )][..],
            &[when!(
                "auth-method" = &["oauth2"],
                "oauth2-flow" = &["device-code"]
            )][..],
        ),
        // SMTP or Microsoft Graph sendMail: a Microsoft target decides
        "transport" => {
            const C: Condition = &[when!("auth-method" = MICROSOFT)];
            (C, C)
        }
        // when the client secret or certificate runs out
        "oauth2-credential-expires" => (ON_OAUTH2, NEVER),
        _ => (ALWAYS, NEVER),
    };
    Applies { applies, needed }
}

/// The values a [`ValueKind::Choice`] key takes, each with the targets it is allowed for (empty
/// for other keys).
pub fn choices(name: &str) -> &'static [Choice] {
    macro_rules! any {
        ($($v:literal),*) => { &[$(Choice { value: $v, applies: ALWAYS }),*] };
    }
    match name {
        "mode" => any!("tls", "starttls", "insecure"),
        "auth-method" => any!(
            "microsoft-oauth2",
            "google-oauth2",
            "oauth2",
            "plain",
            "none"
        ),
        "oauth2-flow" => {
            const CODE: Condition = ON_OAUTH2;
            const NOT_GOOGLE: Condition = &[when!("auth-method" = &["microsoft-oauth2", "oauth2"])];
            const NOT_MICROSOFT: Condition = &[when!("auth-method" = &["google-oauth2", "oauth2"])];
            &[
                Choice {
                    value: "authorization-code",
                    applies: CODE,
                },
                Choice {
                    value: "client-credentials",
                    applies: NOT_GOOGLE,
                },
                Choice {
                    value: "service-account",
                    applies: NOT_MICROSOFT,
                },
                Choice {
                    value: "password",
                    applies: NOT_GOOGLE,
                },
                Choice {
                    value: "device-code",
                    applies: NOT_GOOGLE,
                },
            ]
        }
        "oauth2-client-auth" => {
            // the device flow polls with one request form: no single-use assertion
            const NOT_DEVICE: Condition = &[when!(
                "oauth2-flow" = &["", "authorization-code", "client-credentials", "password"]
            )];
            &[
                Choice {
                    value: "client-secret-post",
                    applies: ALWAYS,
                },
                Choice {
                    value: "client-secret-basic",
                    applies: ALWAYS,
                },
                Choice {
                    value: "private-key-jwt",
                    applies: NOT_DEVICE,
                },
            ]
        }
        "transport" => &[
            Choice {
                value: "smtp",
                applies: ALWAYS,
            },
            Choice {
                value: "graph",
                applies: &[when!("auth-method" = MICROSOFT)],
            },
        ],
        _ => &[],
    }
}

/// The table as data, for the Perl side (`config_keys`) and the page: name, kind, private,
/// multi, deletable, and where the key belongs ([`applicability`]: `applies`, `needed`) and
/// the values of a choice ([`choices`]).
pub fn describe() -> serde_json::Value {
    KEYS.iter()
        .map(|k| {
            let a = applicability(k.name);
            serde_json::json!({
                "name": k.name, "kind": k.kind, "private": k.private(),
                "multi": k.multi, "deletable": k.deletable,
                "applies": a.applies, "needed": a.needed, "choices": choices(k.name),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_round_trips_through_its_accessors() {
        let mut t = SmtpTarget::new("t", "", "", Vec::new());
        let samples = [
            ("server", "smtp.example.com"),
            ("port", "587"),
            ("mode", "starttls"),
            ("auth-method", "microsoft-oauth2"),
            ("max-connections", "3"),
            ("oauth2-flow", "client-credentials"),
            ("oauth2-client-auth", "private-key-jwt"),
            ("disable", "1"),
            ("allow-insecure-auth", "1"),
            ("transport", "graph"),
            ("oauth2-credential-expires", "2027-03-01"),
        ];
        for k in KEYS.iter().filter(|k| !k.private()) {
            let v = samples
                .iter()
                .find(|(n, _)| *n == k.name)
                .map_or("value-of-key", |(_, v)| *v);
            k.set(&mut t, v)
                .unwrap_or_else(|e| panic!("{}: {e}", k.name));
            assert_eq!(k.values(&t), vec![v.to_string()], "{}", k.name);
        }
        let mut s = SmtpSecrets::default();
        for k in KEYS.iter().filter(|k| k.private()) {
            *k.slot(&mut s).unwrap() = Some(Secret::new(k.name));
        }
        assert_eq!(s.to_entries().len(), private_names().count());
        // names are unique
        let mut names: Vec<_> = KEYS.iter().map(|k| k.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KEYS.len());
    }

    /// A condition names only keys of the table, and only values those keys take.
    fn check_condition(c: Condition, of: &str) {
        for w in c.iter().flat_map(|alt| alt.iter()) {
            let k = key(w.key).unwrap_or_else(|| panic!("{of}: unknown key {}", w.key));
            for v in w.values.iter().filter(|v| !v.is_empty()) {
                let mut t = SmtpTarget::new("t", "", "", Vec::new());
                assert!(
                    choices(k.name).iter().any(|c| c.value == *v) && k.set(&mut t, v).is_ok(),
                    "{of}: {} never is {v}",
                    w.key
                );
            }
        }
    }

    #[test]
    fn applicability_and_choices_name_real_keys_and_values() {
        for k in KEYS {
            let a = applicability(k.name);
            check_condition(a.applies, k.name);
            check_condition(a.needed, k.name);
            for c in choices(k.name) {
                let mut t = SmtpTarget::new("t", "", "", Vec::new());
                k.set(&mut t, c.value)
                    .unwrap_or_else(|e| panic!("{}: choice {}: {e}", k.name, c.value));
                check_condition(c.applies, k.name);
            }
            assert_eq!(
                !choices(k.name).is_empty(),
                k.kind == ValueKind::Choice,
                "{}: a choice key lists its values, no other key does",
                k.name
            );
        }
        // what every target needs, and what only some flows need
        assert_eq!(applicability("server").needed, ALWAYS);
        assert_eq!(applicability("comment").needed, NEVER);
        assert_eq!(applicability("no-such-key").applies, ALWAYS);
    }
}
