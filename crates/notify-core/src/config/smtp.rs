//! The SMTP target: typed keys, defaults, validation, and conversion to/from a section.

use super::validate;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};

/// Section type of SMTP targets.
pub const SMTP_TYPE: &str = "smtp";

/// Most recipients (`mailto` and `mailto-user` together) one target may have: a notification
/// is one message; larger audiences belong behind a mailing list address.
pub const MAX_RECIPIENTS: usize = 100;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpMode {
    /// Plain SMTP, no TLS (port 25).
    Insecure,
    /// SMTP, then STARTTLS (port 587). The upgrade is mandatory.
    Starttls,
    /// Implicit TLS (port 465).
    #[default]
    Tls,
}

impl SmtpMode {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpMode::Insecure => "insecure",
            SmtpMode::Starttls => "starttls",
            SmtpMode::Tls => "tls",
        }
    }

    /// The default port of the mode.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpMode::Insecure => 25,
            SmtpMode::Starttls => 587,
            SmtpMode::Tls => 465,
        }
    }

    pub(crate) fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "insecure" => SmtpMode::Insecure,
            "starttls" => SmtpMode::Starttls,
            "tls" => SmtpMode::Tls,
            _ => return None,
        })
    }
}

/// How the target authenticates to the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AuthMethod {
    /// No authentication.
    #[serde(rename = "none")]
    #[default]
    None,
    /// Username and password (SASL PLAIN or LOGIN).
    #[serde(rename = "plain")]
    Plain,
    /// Google OAuth2 (XOAUTH2).
    #[serde(rename = "google-oauth2")]
    GoogleOAuth2,
    /// Microsoft Entra ID OAuth2 (XOAUTH2).
    #[serde(rename = "microsoft-oauth2")]
    MicrosoftOAuth2,
    /// Any other OAuth2 provider, with explicit endpoints and scope (XOAUTH2).
    #[serde(rename = "oauth2")]
    OAuth2,
}

impl AuthMethod {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Plain => "plain",
            AuthMethod::GoogleOAuth2 => "google-oauth2",
            AuthMethod::MicrosoftOAuth2 => "microsoft-oauth2",
            AuthMethod::OAuth2 => "oauth2",
        }
    }

    /// Parse a config/API value.
    pub fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "none" => AuthMethod::None,
            "plain" => AuthMethod::Plain,
            "google-oauth2" => AuthMethod::GoogleOAuth2,
            "microsoft-oauth2" => AuthMethod::MicrosoftOAuth2,
            "oauth2" => AuthMethod::OAuth2,
            _ => return None,
        })
    }

    /// True for the OAuth2 (XOAUTH2) methods.
    pub fn is_oauth2(self) -> bool {
        matches!(
            self,
            AuthMethod::GoogleOAuth2 | AuthMethod::MicrosoftOAuth2 | AuthMethod::OAuth2
        )
    }
}

/// How an OAuth2 target obtains its tokens (`oauth2-flow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OAuth2Flow {
    /// A user authorizes once in a browser (code + PKCE); a refresh token is kept.
    #[default]
    AuthorizationCode,
    /// App-only (client credentials): no user, no refresh token; access tokens are minted
    /// on demand with the client's own credential (Microsoft's SMTP.SendAsApp).
    ClientCredentials,
    /// Google service account with domain-wide delegation: a signed JWT (RFC 7523 bearer
    /// grant) per access token, impersonating the mailbox; no refresh token.
    ServiceAccount,
    /// Resource owner password credentials (ROPC): the mailbox's password is sent to the
    /// token endpoint for every access token. Discouraged (no MFA).
    Password,
    /// Device authorization grant (RFC 8628): a user enters a code on another device; a
    /// refresh token is kept as for `authorization-code`.
    DeviceCode,
}

impl OAuth2Flow {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            OAuth2Flow::AuthorizationCode => "authorization-code",
            OAuth2Flow::ClientCredentials => "client-credentials",
            OAuth2Flow::ServiceAccount => "service-account",
            OAuth2Flow::Password => "password",
            OAuth2Flow::DeviceCode => "device-code",
        }
    }

    /// Parse a config/API value.
    pub fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "authorization-code" => OAuth2Flow::AuthorizationCode,
            "client-credentials" => OAuth2Flow::ClientCredentials,
            "service-account" => OAuth2Flow::ServiceAccount,
            "password" => OAuth2Flow::Password,
            "device-code" => OAuth2Flow::DeviceCode,
            _ => return None,
        })
    }

    /// True for flows that mint every access token from a stored credential (no refresh
    /// token, nothing to authorize interactively).
    pub fn mints(self) -> bool {
        matches!(
            self,
            OAuth2Flow::ClientCredentials | OAuth2Flow::ServiceAccount | OAuth2Flow::Password
        )
    }
}

/// How a target hands its notifications over (`transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// SMTP submission with SASL (the default).
    #[default]
    Smtp,
    /// Microsoft Graph `sendMail` over HTTPS (`microsoft-oauth2` only): for tenants that turned
    /// SMTP AUTH off. `server` is then the Graph host (`graph.microsoft.com`, or a national
    /// cloud's), `username` (else `from-address`) the mailbox that sends.
    Graph,
}

impl Transport {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Smtp => "smtp",
            Transport::Graph => "graph",
        }
    }

    /// Parse a config/API value.
    pub fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "smtp" => Transport::Smtp,
            "graph" => Transport::Graph,
            _ => return None,
        })
    }
}

/// Microsoft Graph allows 4 concurrent requests per app and mailbox (Outlook workload
/// throttling): more is refused with 429 `ApplicationThrottled` (MailboxConcurrency).
pub const GRAPH_MAX_CONNECTIONS: u32 = 4;

/// How the client authenticates at the token endpoint (`oauth2-client-auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuthMethod {
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// HTTP Basic with `client_id:client_secret`.
    ClientSecretBasic,
    /// A JWT signed with the client's private key (RFC 7523 client assertion); Microsoft
    /// calls this a certificate credential.
    PrivateKeyJwt,
}

impl ClientAuthMethod {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::ClientSecretPost => "client-secret-post",
            ClientAuthMethod::ClientSecretBasic => "client-secret-basic",
            ClientAuthMethod::PrivateKeyJwt => "private-key-jwt",
        }
    }

    /// Parse a config/API value.
    pub fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "client-secret-post" => ClientAuthMethod::ClientSecretPost,
            "client-secret-basic" => ClientAuthMethod::ClientSecretBasic,
            "private-key-jwt" => ClientAuthMethod::PrivateKeyJwt,
            _ => return None,
        })
    }
}

/// An SMTP notification target (the public part; secrets are in [`SmtpSecrets`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SmtpTarget {
    /// Target name (section name).
    pub name: String,
    /// SMTP server host name or IP.
    pub server: String,
    /// Port; default from the mode (25/587/465).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Connection security.
    pub mode: SmtpMode,
    /// Authentication method.
    pub auth_method: AuthMethod,
    /// Login for `plain`; for OAuth2 the SASL identity when it differs from `from-address`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Envelope and header sender; the XOAUTH2 identity unless `username` is set.
    pub from_address: String,
    /// Display name in the From header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Recipients.
    pub mailto: Vec<String>,
    /// Recipients given as users of the host stack (`user@realm`); the host resolves them to
    /// e-mail addresses when sending (see [`crate::Notification::user_emails`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mailto_user: Vec<String>,
    /// Free-text comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Disabled targets are skipped by `send` and `refresh_targets`.
    pub disable: bool,
    /// Permit authentication over `mode insecure` (refused otherwise).
    pub allow_insecure_auth: bool,
    /// OAuth2 client (application) ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_client_id: Option<String>,
    /// Microsoft Entra tenant (GUID or domain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_tenant_id: Option<String>,
    /// Authorize endpoint (required for `oauth2`; override for Google/Microsoft).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_authorize_url: Option<String>,
    /// Token endpoint (required for `oauth2`; override for Google/Microsoft).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_token_url: Option<String>,
    /// Scopes (required for `oauth2`; override for Google/Microsoft).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_scope: Option<String>,
    /// At most this many simultaneous SMTP sessions to this target from this host (all
    /// processes); `None` = [`DEFAULT_MAX_CONNECTIONS`]. Microsoft 365 allows 3 per mailbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Who may fetch this target's access token from the token broker.
    #[serde(flatten)]
    pub broker_allow: BrokerAllow,
    /// How tokens are obtained (absent: `authorization-code`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_flow: Option<OAuth2Flow>,
    /// Token-endpoint client authentication (absent: the provider's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_client_auth: Option<ClientAuthMethod>,
    /// `service-account`: the service account's e-mail (the assertion's `iss`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_service_account: Option<String>,
    /// The signing key's ID (`kid`): Google's `private_key_id`, or the key ID registered for
    /// `private-key-jwt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_key_id: Option<String>,
    /// `private-key-jwt` with Microsoft: the certificate's thumbprint in hex, SHA-1 (as Entra
    /// shows it; sent as `x5t`) or SHA-256 (sent as `x5t#S256`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_certificate_thumbprint: Option<String>,
    /// `device-code`: the device authorization endpoint (override / generic value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_device_authorize_url: Option<String>,
    /// How notifications are handed over (absent: `smtp`); `graph` needs `microsoft-oauth2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// Where alerts about this target go: another target's name, or `sendmail` (the host's
    /// own MTA); never this target itself (see [`crate::alerts`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_target: Option<String>,
    /// When the app registration's client secret or certificate expires (`YYYY-MM-DD`, as
    /// the admin copies it from the registration): alerts at 30, 7 and 1 days before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2_credential_expires: Option<String>,
}

/// The local users and groups the token broker (`oxnotify-broker`) serves a target's access
/// token to (`broker-allow-user`, `broker-allow-group`; names or numeric IDs). Empty: root only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BrokerAllow {
    /// User names or UIDs.
    #[serde(
        default,
        rename = "broker-allow-user",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub users: Vec<String>,
    /// Group names or GIDs.
    #[serde(
        default,
        rename = "broker-allow-group",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub groups: Vec<String>,
}

/// Simultaneous SMTP sessions per target when `max-connections` is not set (below Microsoft
/// 365's limit of 3 per mailbox, leaving one for other senders of the mailbox).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 2;

/// The secrets of an SMTP target, stored in the private config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmtpSecrets {
    /// Password for `plain`.
    pub password: Option<Secret>,
    /// OAuth2 client secret (absent for public clients).
    pub oauth2_client_secret: Option<Secret>,
    /// The private key of `service-account` and `private-key-jwt` (PEM, stored on one line).
    pub oauth2_private_key: Option<Secret>,
}

/// A validation failure: the key it concerns (if one) and the message.
pub type Invalid = (Option<&'static str>, String);

impl SmtpTarget {
    /// A target with the required keys; every other key has its default (mode `tls`,
    /// auth-method `none`, nothing optional set).
    pub fn new(name: &str, server: &str, from_address: &str, mailto: Vec<String>) -> Self {
        SmtpTarget {
            name: name.to_string(),
            server: server.to_string(),
            from_address: from_address.to_string(),
            mailto,
            ..Default::default()
        }
    }

    /// The per-target connection limit (`max-connections`, default 2).
    pub fn connection_limit(&self) -> u32 {
        self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS)
    }

    /// The transport (`smtp` unless set).
    pub fn transport(&self) -> Transport {
        self.transport.unwrap_or_default()
    }

    /// True if the target sends through Microsoft Graph.
    pub fn is_graph(&self) -> bool {
        self.transport() == Transport::Graph
    }

    /// The OAuth2 flow (`authorization-code` unless set).
    pub fn flow(&self) -> OAuth2Flow {
        self.oauth2_flow.unwrap_or_default()
    }

    /// The port to connect to (Graph: HTTPS, 443).
    pub fn effective_port(&self) -> u16 {
        match self.port {
            Some(p) => p,
            None if self.is_graph() => 443,
            None => self.mode.default_port(),
        }
    }

    /// The SASL identity: `username` if set, else `from-address`.
    pub fn auth_identity(&self) -> &str {
        self.username.as_deref().unwrap_or(&self.from_address)
    }

    /// Check every value and the combination of keys (not the secrets: see
    /// [`SmtpTarget::validate_secrets`]).
    pub fn validate(&self) -> Result<(), Invalid> {
        validate::target_name(&self.name).map_err(|m| (None, m))?;
        if self.server.is_empty() {
            return Err((
                Some("server"),
                "missing: set the SMTP server host name".into(),
            ));
        }
        validate::server(&self.server).map_err(|m| (Some("server"), m))?;
        if self.port == Some(0) {
            return Err((Some("port"), "0 is not a port (1-65535)".into()));
        }
        if self
            .max_connections
            .is_some_and(|n| !(1..=100).contains(&n))
        {
            return Err((
                Some("max-connections"),
                "must be a number from 1 to 100".into(),
            ));
        }
        if self.from_address.is_empty() {
            return Err((
                Some("from-address"),
                "missing: set the sender address".into(),
            ));
        }
        validate::email(&self.from_address).map_err(|m| (Some("from-address"), m))?;
        if self.mailto.is_empty() && self.mailto_user.is_empty() {
            return Err((
                Some("mailto"),
                "missing: give at least one recipient (mailto, or mailto-user for users of the stack)"
                    .into(),
            ));
        }
        let recipients = self.mailto.len() + self.mailto_user.len();
        if recipients > MAX_RECIPIENTS {
            return Err((
                Some(if self.mailto.len() >= self.mailto_user.len() {
                    "mailto"
                } else {
                    "mailto-user"
                }),
                format!(
                    "{recipients} recipients (mailto and mailto-user): at most {} per target; \
                     use a mailing list address, or several targets",
                    MAX_RECIPIENTS
                ),
            ));
        }
        for m in &self.mailto {
            validate::email(m).map_err(|e| (Some("mailto"), e))?;
        }
        for u in &self.mailto_user {
            validate::user_id(u).map_err(|e| (Some("mailto-user"), e))?;
        }
        for (key, names) in [
            ("broker-allow-user", &self.broker_allow.users),
            ("broker-allow-group", &self.broker_allow.groups),
        ] {
            for n in names {
                validate::account_name(n).map_err(|e| (Some(key), e))?;
            }
            if !names.is_empty() && !self.auth_method.is_oauth2() {
                return Err((
                    Some(key),
                    "only valid with an OAuth2 auth-method (the broker serves access tokens)"
                        .into(),
                ));
            }
        }
        if let Some(a) = &self.alert_target {
            validate::alert_target(&self.name, a).map_err(|m| (Some("alert-target"), m))?;
        }
        let oauth2 = self.auth_method.is_oauth2();
        if let Some(u) = &self.username {
            if oauth2 {
                validate::email(u).map_err(|e| (Some("username"), e))?;
            }
        }
        if self.auth_method == AuthMethod::Plain && self.username.is_none() {
            return Err((
                Some("username"),
                "auth-method plain needs a username".into(),
            ));
        }
        let only_for = |key: &'static str, set: bool, allowed: bool, what: &str| {
            if set && !allowed {
                Err((Some(key), format!("only valid with {what}")))
            } else {
                Ok(())
            }
        };
        only_for(
            "oauth2-client-id",
            self.oauth2_client_id.is_some(),
            oauth2,
            "an OAuth2 auth-method",
        )?;
        only_for(
            "oauth2-tenant-id",
            self.oauth2_tenant_id.is_some(),
            self.auth_method == AuthMethod::MicrosoftOAuth2,
            "auth-method microsoft-oauth2",
        )?;
        for (key, v) in [
            ("oauth2-authorize-url", &self.oauth2_authorize_url),
            ("oauth2-token-url", &self.oauth2_token_url),
            ("oauth2-scope", &self.oauth2_scope),
            ("oauth2-service-account", &self.oauth2_service_account),
            ("oauth2-key-id", &self.oauth2_key_id),
            (
                "oauth2-certificate-thumbprint",
                &self.oauth2_certificate_thumbprint,
            ),
            (
                "oauth2-device-authorize-url",
                &self.oauth2_device_authorize_url,
            ),
            ("oauth2-credential-expires", &self.oauth2_credential_expires),
        ] {
            only_for(key, v.is_some(), oauth2, "an OAuth2 auth-method")?;
        }
        if let Some(d) = &self.oauth2_credential_expires {
            validate::date(d).map_err(|m| (Some("oauth2-credential-expires"), m))?;
        }
        only_for(
            "oauth2-flow",
            self.oauth2_flow.is_some(),
            oauth2,
            "an OAuth2 auth-method",
        )?;
        only_for(
            "oauth2-client-auth",
            self.oauth2_client_auth.is_some(),
            oauth2,
            "an OAuth2 auth-method",
        )?;
        self.validate_transport()?;
        if !oauth2 {
            return Ok(());
        }
        self.validate_flow()?;
        if self.oauth2_client_id.is_none() && self.flow() != OAuth2Flow::ServiceAccount {
            return Err((
                Some("oauth2-client-id"),
                format!(
                    "auth-method {} needs the OAuth2 client (application) ID of your registered app",
                    self.auth_method.as_str()
                ),
            ));
        }
        if let Some(t) = &self.oauth2_tenant_id {
            validate::tenant_id(t).map_err(|m| (Some("oauth2-tenant-id"), m))?;
        } else if self.auth_method == AuthMethod::MicrosoftOAuth2 {
            return Err((
                Some("oauth2-tenant-id"),
                "auth-method microsoft-oauth2 needs the directory (tenant) ID of your Entra tenant"
                    .into(),
            ));
        }
        for (key, v) in [
            ("oauth2-authorize-url", &self.oauth2_authorize_url),
            ("oauth2-token-url", &self.oauth2_token_url),
            (
                "oauth2-device-authorize-url",
                &self.oauth2_device_authorize_url,
            ),
        ] {
            if let Some(u) = v {
                validate::endpoint_url(u).map_err(|m| (Some(key), m))?;
            }
        }
        if let Some(s) = &self.oauth2_scope {
            validate::scope(s).map_err(|m| (Some("oauth2-scope"), m))?;
        }
        if self.auth_method == AuthMethod::OAuth2 {
            if self.oauth2_token_url.is_none() {
                return Err((
                    Some("oauth2-token-url"),
                    "auth-method oauth2 needs the provider's token endpoint URL".into(),
                ));
            }
            if self.oauth2_scope.is_none() {
                return Err((
                    Some("oauth2-scope"),
                    "auth-method oauth2 needs the scope(s) that allow SMTP sending".into(),
                ));
            }
        }
        Ok(())
    }

    /// The checks of `transport graph`: Microsoft's OAuth2 only, over HTTPS, within Graph's
    /// concurrency per mailbox. The Graph host itself is pinned where it is used
    /// ([`crate::oauth2::provider::graph_url`]), like the token endpoints.
    fn validate_transport(&self) -> Result<(), Invalid> {
        if !self.is_graph() {
            return Ok(());
        }
        if self.auth_method != AuthMethod::MicrosoftOAuth2 {
            return Err((
                Some("transport"),
                "transport graph sends through Microsoft Graph and needs auth-method \
                 microsoft-oauth2"
                    .into(),
            ));
        }
        if self.mode != SmtpMode::Tls {
            return Err((
                Some("mode"),
                "transport graph is HTTPS only: leave mode at tls".into(),
            ));
        }
        if self.allow_insecure_auth {
            return Err((
                Some("allow-insecure-auth"),
                "not valid with transport graph (HTTPS only)".into(),
            ));
        }
        if self
            .max_connections
            .is_some_and(|n| n > GRAPH_MAX_CONNECTIONS)
        {
            return Err((
                Some("max-connections"),
                format!(
                    "Microsoft Graph allows {GRAPH_MAX_CONNECTIONS} concurrent requests per app \
                     and mailbox: at most {GRAPH_MAX_CONNECTIONS}"
                ),
            ));
        }
        Ok(())
    }

    /// The checks that depend on `oauth2-flow` and `oauth2-client-auth` (OAuth2 targets only).
    fn validate_flow(&self) -> Result<(), Invalid> {
        let flow = self.flow();
        let method = self.auth_method;
        let refuse = |key: &'static str, m: &str| Err((Some(key), m.to_string()));
        match (flow, method) {
            (OAuth2Flow::ClientCredentials, AuthMethod::GoogleOAuth2) => {
                return refuse(
                    "oauth2-flow",
                    "Google has no app-only grant for Gmail: use oauth2-flow service-account \
                     (a service account with domain-wide delegation)",
                )
            }
            (OAuth2Flow::ServiceAccount, AuthMethod::MicrosoftOAuth2) => {
                return refuse(
                    "oauth2-flow",
                    "service-account is Google's JWT-bearer grant: for Microsoft app-only \
                     sending use oauth2-flow client-credentials",
                )
            }
            (OAuth2Flow::Password, AuthMethod::GoogleOAuth2) => {
                return refuse(
                    "oauth2-flow",
                    "Google has no password grant: use authorization-code or service-account",
                )
            }
            (OAuth2Flow::DeviceCode, AuthMethod::GoogleOAuth2) => {
                return refuse(
                    "oauth2-flow",
                    "Google's device endpoint does not allow the Gmail scope \
                     (https://mail.google.com/): use authorization-code with the loopback \
                     redirect of `oxnotify authorize` (forward its port with ssh -L on a \
                     headless host)",
                )
            }
            _ => {}
        }
        if flow == OAuth2Flow::Password && method == AuthMethod::MicrosoftOAuth2 {
            if let Some(t) = &self.oauth2_tenant_id {
                if matches!(t.as_str(), "common" | "consumers") {
                    return refuse(
                        "oauth2-tenant-id",
                        "Microsoft's password grant (ROPC) does not work with /common or \
                         /consumers: set the tenant GUID or domain",
                    );
                }
            }
        }
        if flow == OAuth2Flow::ServiceAccount {
            match &self.oauth2_service_account {
                Some(sa) => validate::email(sa).map_err(|m| (Some("oauth2-service-account"), m))?,
                None => {
                    return refuse(
                        "oauth2-service-account",
                        "oauth2-flow service-account needs the service account's e-mail \
                         (client_email in its JSON key file)",
                    )
                }
            }
            if self.oauth2_client_auth.is_some() {
                return refuse(
                    "oauth2-client-auth",
                    "service-account requests carry no client authentication (the signed \
                     assertion is the credential)",
                );
            }
        } else if self.oauth2_service_account.is_some() {
            return refuse(
                "oauth2-service-account",
                "only valid with oauth2-flow service-account",
            );
        }
        if let Some(tp) = &self.oauth2_certificate_thumbprint {
            if (tp.len() != 40 && tp.len() != 64) || !tp.chars().all(|c| c.is_ascii_hexdigit()) {
                return refuse(
                    "oauth2-certificate-thumbprint",
                    "must be the certificate's thumbprint: 40 hex digits (SHA-1, as Entra shows it \
                     under Certificates & secrets) or 64 (SHA-256)",
                );
            }
            if self.oauth2_client_auth != Some(ClientAuthMethod::PrivateKeyJwt) {
                return refuse(
                    "oauth2-certificate-thumbprint",
                    "only valid with oauth2-client-auth private-key-jwt",
                );
            }
        }
        if let Some(kid) = &self.oauth2_key_id {
            if kid.len() > 256 || kid.chars().any(|c| c.is_whitespace()) {
                return refuse(
                    "oauth2-key-id",
                    "must be a key ID without spaces (at most 256 characters)",
                );
            }
            if flow != OAuth2Flow::ServiceAccount
                && self.oauth2_client_auth != Some(ClientAuthMethod::PrivateKeyJwt)
            {
                return refuse(
                    "oauth2-key-id",
                    "only valid with oauth2-flow service-account or oauth2-client-auth \
                     private-key-jwt",
                );
            }
        }
        if flow == OAuth2Flow::DeviceCode
            && self.oauth2_client_auth == Some(ClientAuthMethod::PrivateKeyJwt)
        {
            return refuse(
                "oauth2-client-auth",
                "the device flow polls with one request form, so a single-use client assertion \
                 cannot go with it: use a client secret or a public client",
            );
        }
        if self.oauth2_device_authorize_url.is_some() && flow != OAuth2Flow::DeviceCode {
            return refuse(
                "oauth2-device-authorize-url",
                "only valid with oauth2-flow device-code",
            );
        }
        if flow == OAuth2Flow::DeviceCode
            && method == AuthMethod::OAuth2
            && self.oauth2_device_authorize_url.is_none()
        {
            return refuse(
                "oauth2-device-authorize-url",
                "oauth2-flow device-code with the generic provider needs the device authorization \
                 endpoint URL",
            );
        }
        Ok(())
    }

    /// True if the target authenticates over `mode insecure` without `allow-insecure-auth`:
    /// configs written before that key existed (the reference accepts them). They load and
    /// send, with [`SmtpTarget::insecure_auth_warning`]; creating or updating one is refused
    /// ([`SmtpTarget::validate_change`]).
    pub fn legacy_insecure_auth(&self) -> bool {
        self.auth_method != AuthMethod::None
            && self.mode == SmtpMode::Insecure
            && !self.allow_insecure_auth
    }

    /// The warning for [`SmtpTarget::legacy_insecure_auth`] targets (status, daily job).
    pub fn insecure_auth_warning(&self) -> Option<String> {
        self.legacy_insecure_auth().then(|| {
            format!(
                "auth-method {} over mode insecure sends credentials in clear text: use mode \
                 starttls or tls, or set allow-insecure-auth 1 to keep it deliberately",
                self.auth_method.as_str()
            )
        })
    }

    /// The stricter check for a create or update through the API: everything
    /// [`SmtpTarget::validate`] checks, and no authentication over `mode insecure` unless
    /// `allow-insecure-auth` is set.
    pub fn validate_change(&self) -> Result<(), Invalid> {
        self.validate()?;
        if self.legacy_insecure_auth() {
            return Err((
                Some("mode"),
                format!(
                    "auth-method {} over mode insecure would send credentials in clear text: use \
                     mode starttls or tls (or set allow-insecure-auth 1 if you really must)",
                    self.auth_method.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// Check that the secrets this target needs are present.
    pub fn validate_secrets(&self, secrets: &SmtpSecrets) -> Result<(), Invalid> {
        for (key, s) in [
            ("password", &secrets.password),
            ("oauth2-client-secret", &secrets.oauth2_client_secret),
            ("oauth2-private-key", &secrets.oauth2_private_key),
        ] {
            if s.as_ref()
                .is_some_and(|s| s.expose().chars().any(char::is_control))
            {
                return Err((
                    Some(key),
                    "value contains a control character (CR/LF?)".into(),
                ));
            }
        }
        if self.auth_method == AuthMethod::Plain && secrets.password.is_none() {
            return Err((
                Some("password"),
                "auth-method plain needs a password (set it; it is stored in the private file)"
                    .into(),
            ));
        }
        let ropc = self.auth_method.is_oauth2() && self.flow() == OAuth2Flow::Password;
        if secrets.password.is_some() && self.auth_method != AuthMethod::Plain && !ropc {
            return Err((
                Some("password"),
                "only valid with auth-method plain or oauth2-flow password".into(),
            ));
        }
        if secrets.oauth2_client_secret.is_some() && !self.auth_method.is_oauth2() {
            return Err((
                Some("oauth2-client-secret"),
                "only valid with an OAuth2 auth-method".into(),
            ));
        }
        if !self.auth_method.is_oauth2() {
            if secrets.oauth2_private_key.is_some() {
                return Err((
                    Some("oauth2-private-key"),
                    "only valid with an OAuth2 auth-method".into(),
                ));
            }
            return Ok(());
        }
        let flow = self.flow();
        let key_jwt = self.oauth2_client_auth == Some(ClientAuthMethod::PrivateKeyJwt);
        let needs_key = flow == OAuth2Flow::ServiceAccount || key_jwt;
        if secrets.oauth2_private_key.is_some() && !needs_key {
            return Err((
                Some("oauth2-private-key"),
                "only valid with oauth2-flow service-account or oauth2-client-auth private-key-jwt"
                    .into(),
            ));
        }
        if needs_key && secrets.oauth2_private_key.is_none() {
            return Err((
                Some("oauth2-private-key"),
                format!(
                    "{} needs the private key (PEM, or the service account's JSON key file; it is \
                     stored in the private file)",
                    if key_jwt {
                        "oauth2-client-auth private-key-jwt"
                    } else {
                        "oauth2-flow service-account"
                    }
                ),
            ));
        }
        if key_jwt && secrets.oauth2_client_secret.is_some() {
            return Err((
                Some("oauth2-client-secret"),
                "not used with oauth2-client-auth private-key-jwt (the signed assertion replaces \
                 the secret): remove it"
                    .into(),
            ));
        }
        if flow == OAuth2Flow::ClientCredentials
            && !key_jwt
            && secrets.oauth2_client_secret.is_none()
        {
            return Err((
                Some("oauth2-client-secret"),
                "oauth2-flow client-credentials needs the app's client secret, or \
                 oauth2-client-auth private-key-jwt with a certificate's private key"
                    .into(),
            ));
        }
        if ropc && secrets.password.is_none() {
            return Err((
                Some("password"),
                "oauth2-flow password needs the mailbox's password (stored in the private file)"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl SmtpSecrets {
    /// True if no secret is set.
    pub fn is_empty(&self) -> bool {
        self.password.is_none()
            && self.oauth2_client_secret.is_none()
            && self.oauth2_private_key.is_none()
    }
}
