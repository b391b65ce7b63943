//! Typed errors of the library. Every message names the target (where there is one) and says
//! what to do; none ever contains a secret (tests check this).
//!
//! Callers branch on [`Error::kind`] (what must happen next: retry, re-authorize, an admin fix
//! of the app registration or server settings, a corrected request) and on the predicates
//! beside it, never on the message text.

use std::path::PathBuf;
use std::time::Duration;

/// What the caller (or the admin) must do about an error. Stable names ([`ErrorKind::as_str`])
/// cross the Perl boundary, so the API, the page, the CLI and the daily job can branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request or a config value is wrong: fix it and try again.
    InvalidInput,
    /// The named target does not exist.
    NotFound,
    /// Someone else changed the config meanwhile: reload and try again.
    Conflict,
    /// The stored authorization is gone or was never made: authorize the target again.
    NeedsReauthorization,
    /// Retrying cannot help until an admin fixes the app registration (client ID or secret,
    /// consent, scopes), the mailbox or the server settings.
    NeedsAdminFix,
    /// A network problem, a timeout, a busy or failing server: retry later; the setup is fine.
    Transient,
    /// A local fault (file system, corrupt state): see the message.
    Internal,
}

impl ErrorKind {
    /// The stable kebab-case name (`needs-admin-fix`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::NeedsReauthorization => "needs-reauthorization",
            ErrorKind::NeedsAdminFix => "needs-admin-fix",
            ErrorKind::Transient => "transient",
            ErrorKind::Internal => "internal",
        }
    }

    /// The kind of a stable name ([`ErrorKind::as_str`]); `None` for an unknown one.
    pub fn parse(name: &str) -> Option<ErrorKind> {
        [
            ErrorKind::InvalidInput,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::NeedsReauthorization,
            ErrorKind::NeedsAdminFix,
            ErrorKind::Transient,
            ErrorKind::Internal,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }

    /// The process exit code of a command that failed with this kind, the one map of every
    /// command line (`oxnotify`, `oxnotify token`, crosses the Perl boundary as `exit_code`):
    /// 2 invalid input or a conflict (usage), 3 internal, 4 not found, 5 authorize the target
    /// again, 75 transient (`EX_TEMPFAIL`: retry later), 78 an admin must fix the app
    /// registration or the target (`EX_CONFIG`).
    pub fn exit_code(&self) -> u8 {
        match self {
            ErrorKind::InvalidInput | ErrorKind::Conflict => 2,
            ErrorKind::Internal => 3,
            ErrorKind::NotFound => 4,
            ErrorKind::NeedsReauthorization => 5,
            ErrorKind::Transient => 75,
            ErrorKind::NeedsAdminFix => 78,
        }
    }
}

/// Why a token request failed; decides the [`ErrorKind`] of [`Error::Token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// The endpoint could not be reached (DNS, connection refused or reset, TLS I/O): transient.
    Unreachable,
    /// No complete answer within the deadline: transient.
    Timeout,
    /// The provider is overloaded or failing (HTTP 429 or 5xx, `temporarily_unavailable`,
    /// Entra's throttling codes): transient.
    Unavailable,
    /// A 2xx/4xx answer that is not an OAuth2 response (wrong URL?): admin fix.
    BadResponse,
    /// The provider refused the client or its request (`invalid_client`,
    /// `unauthorized_client`, `invalid_scope`, an expired secret, an app registered as SPA):
    /// admin fix of the app registration.
    ClientRejected,
    /// The authorization code was refused (`invalid_grant` on the code exchange): authorize again.
    CodeRejected,
    /// The provider issued no refresh token: admin fix (scope or app type).
    NoRefreshToken,
    /// The HTTP client could not be set up (proxy URL, trust store): local.
    Setup,
}

/// What a Microsoft Graph `sendMail` failure means; decides the [`ErrorKind`] of
/// [`Error::Graph`]. From the HTTP status and Graph's error `code` (never its message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphProblem {
    /// Graph could not be reached, timed out, throttled (429 `TooManyRequests`,
    /// `ApplicationThrottled`) or is failing (500, 502, 503, 504): transient.
    Unavailable,
    /// Graph refused the access token (401) although a fresh one was used: authorize again.
    TokenRefused,
    /// The app, the mailbox or the From address need an admin (403 `ErrorAccessDenied`,
    /// `ErrorSendAsDenied`, 404 `ErrorInvalidUser`, `MailboxNotEnabledForRESTAPI`, a minted
    /// token refused with 401).
    AdminFix,
    /// Graph refused this message for good (400, 413 over about 4 MB): it is not retried.
    MessageRefused,
}

/// Which step of an SMTP delivery failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpStep {
    /// TCP connect, greeting or EHLO.
    Connect,
    /// TLS handshake (implicit TLS or STARTTLS).
    Tls,
    /// SMTP AUTH.
    Auth,
    /// MAIL FROM.
    Sender,
    /// RCPT TO.
    Recipient,
    /// DATA and the message itself.
    Data,
    /// Building the message from the notification.
    Message,
}

impl std::fmt::Display for SmtpStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SmtpStep::Connect => "connect",
            SmtpStep::Tls => "TLS",
            SmtpStep::Auth => "authentication",
            SmtpStep::Sender => "sender (MAIL FROM)",
            SmtpStep::Recipient => "recipient (RCPT TO)",
            SmtpStep::Data => "data",
            SmtpStep::Message => "message",
        })
    }
}

/// Errors returned by notify-core. [`Error::http_code`] maps each to the HTTP-style status an
/// API handler returns.
///
/// `Clone`, so that one session-level failure can be the result of every message it left
/// undelivered (the OS error of [`Error::Io`] is shared behind an `Arc`).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A config file is malformed or a value is invalid (400).
    #[error("{}", config_message(.file, *.line, .section.as_deref(), .key.as_deref(), .message))]
    Config {
        /// The file the problem is in.
        file: PathBuf,
        /// 1-based line number, where known.
        line: Option<usize>,
        /// The section (target) name, where known.
        section: Option<String>,
        /// The offending key, where known.
        key: Option<String>,
        /// What is wrong and what to do.
        message: String,
    },
    /// A parameter given by a caller (API, CLI) is invalid (400).
    #[error("invalid parameter '{param}': {message}")]
    Parameter {
        /// Parameter name.
        param: String,
        /// What is wrong.
        message: String,
    },
    /// The named target does not exist (404).
    #[error("notification target '{0}' does not exist")]
    NotFound(String),
    /// Creating a target whose name is taken (400, as PVE does).
    #[error("notification target '{0}' already exists")]
    AlreadyExists(String),
    /// The config changed since the caller read it (409).
    #[error("configuration was modified by someone else (digest mismatch): reload and try again")]
    DigestMismatch,
    /// The target has no usable OAuth2 authorization: the admin must authorize again (400).
    #[error("target '{target}': {reason}; re-authorize the target (Authorize button, or `oxnotify authorize {target}`)")]
    NeedsReauthorization {
        /// Target name.
        target: String,
        /// Why (e.g. "the refresh token was revoked or has expired (invalid_grant)").
        reason: String,
    },
    /// A token request failed (502; 400 for a refused authorization code). `problem` says
    /// whether to retry ([`TokenProblem`]).
    #[error("{}: {message}", token_context(.target.as_deref(), *.problem))]
    Token {
        /// Target name, if the request was for a configured target.
        target: Option<String>,
        /// The class of failure.
        problem: TokenProblem,
        /// What happened and what to do (secret-free, single line).
        message: String,
        /// The provider's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// An SMTP delivery failed at `step` (502).
    #[error("target '{target}': SMTP {step} failed ({}): {message}", if *.transient { "temporary" } else { "permanent" })]
    Smtp {
        /// Target name.
        target: String,
        /// The step that failed.
        step: SmtpStep,
        /// Server reply or local error, never a credential; control characters removed.
        message: String,
        /// SMTP reply code, when the server gave one.
        code: Option<u16>,
        /// True for failures a later attempt may not meet: 4xx replies, connection failures,
        /// timeouts (RFC 5321 section 4.2.1).
        transient: bool,
    },
    /// A Microsoft Graph `sendMail` request failed (502): `problem` says what must happen.
    #[error("target '{target}': Graph sendMail failed ({}): {message}", graph_class(*.problem))]
    Graph {
        /// Target name.
        target: String,
        /// The class of failure.
        problem: GraphProblem,
        /// HTTP status, when Graph answered.
        status: Option<u16>,
        /// Graph's error code (`ErrorAccessDenied`, ...), when it sent one.
        code: Option<String>,
        /// What happened and what to do (secret-free, single line).
        message: String,
        /// Graph's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// A lock was not obtained within its deadline (503): another process holds it.
    #[error("{what} is busy: {} is held by another process{}; try again later (if this persists, look for a stuck oxnotify process)", .path.display(), .holder.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    LockTimeout {
        /// What is locked ("the configuration", "target 'x' OAuth2 state").
        what: String,
        /// The lock file.
        path: PathBuf,
        /// Who holds it, where known (pid, command).
        holder: Option<String>,
    },
    /// Reading or writing a file failed (500).
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// New tokens could not be written to the state file (500). Nothing is lost yet: they are
    /// kept where `kept_in` says and taken over by the next access; the admin must make the
    /// state directory writable (read-only? full?).
    #[error("target '{target}': WARNING: {what} could not be saved to {} ({reason}); it is kept in {kept_in}; make the state directory writable", .path.display())]
    StateNotSaved {
        /// Target name.
        target: String,
        /// What was not saved ("the rotated refresh token", ...).
        what: String,
        /// The state file.
        path: PathBuf,
        /// Why the write failed (secret-free).
        reason: String,
        /// Where the tokens are now (a recovery file, or this process's memory).
        kept_in: String,
    },
    /// The cluster store's file system refuses writes (503): without quorum pmxcfs is
    /// read-only. Nothing stored was changed; sends still use a valid cached access token.
    #[error("the cluster filesystem is not writable (no quorum?): {} ({reason}); nothing stored was changed; sends use the cached access token while it is valid, a refresh has to wait until the node is quorate (writable) again", .path.display())]
    StoreNotWritable {
        /// What could not be written (a lock directory, a state file).
        path: PathBuf,
        /// The OS error (secret-free).
        reason: String,
    },
    /// A state write was refused because the stored state is newer than the one it was based
    /// on (409): another node or process saved in between. The newer state stays.
    #[error("target '{target}': not saving its OAuth2 state (generation {ours}): {} already holds a newer one (generation {stored}) written by another node or process; the newer state is kept", .path.display())]
    NewerStateStored {
        /// Target name.
        target: String,
        /// The state file.
        path: PathBuf,
        /// The generation this write would have replaced at most.
        ours: u64,
        /// The generation found in the file.
        stored: u64,
    },
    /// A stored credential of a flow that mints its tokens (client secret, private key, the
    /// password grant's password) was last used for another configuration of the target, and
    /// the target was changed without the API (which would have dropped it): it is not used
    /// for the new settings until an admin supplies it again (400, needs an admin fix).
    #[error("target '{target}': {reason}; its stored credential (client secret, private key or password) is not used for the new settings until an admin supplies it again (`oxnotify target update {target}` with --oauth2-client-secret-file, --oauth2-private-key-file or --password-file), which confirms the new destination")]
    CredentialNotConfirmed {
        /// Target name.
        target: String,
        /// What changed.
        reason: String,
    },
    /// The same request came too soon (429): try again after `retry_after_secs`.
    #[error("{what}: at most one per {interval_secs} s; try again in {retry_after_secs} s")]
    RateLimited {
        /// What was asked for ("the login check of target 'x'").
        what: String,
        /// The interval allowed between two.
        interval_secs: u64,
        /// Seconds until the next one is allowed.
        retry_after_secs: u64,
    },
    /// Too many authorizations are in progress (503): a new one can start when some finish
    /// or expire (after 10 minutes).
    #[error("target '{target}': cannot start another authorization: {limit} authorizations are already in progress (started and not finished within 10 minutes); finish or abandon them and try again in a few minutes")]
    TooManyPending {
        /// The target whose authorization was refused.
        target: String,
        /// The limit reached.
        limit: usize,
    },
    /// A state file exists but cannot be parsed (500); it is left untouched.
    #[error("state file {} is corrupt ({message}); it was left untouched: fix or remove it and re-authorize", .path.display())]
    CorruptState {
        /// The state file.
        path: PathBuf,
        /// Parser message (never contains file content).
        message: String,
    },
}

fn config_message(
    file: &std::path::Path,
    line: Option<usize>,
    section: Option<&str>,
    key: Option<&str>,
    message: &str,
) -> String {
    let mut out = file.display().to_string();
    if let Some(line) = line {
        out.push_str(&format!(" line {line}"));
    }
    if let Some(section) = section {
        out.push_str(&format!(", target '{section}'"));
    }
    if let Some(key) = key {
        out.push_str(&format!(", key '{key}'"));
    }
    out.push_str(": ");
    out.push_str(message);
    out
}

fn token_context(target: Option<&str>, problem: TokenProblem) -> String {
    let class = match problem {
        TokenProblem::Unreachable | TokenProblem::Timeout | TokenProblem::Unavailable => {
            "temporary"
        }
        TokenProblem::CodeRejected => "authorize again",
        TokenProblem::Setup => "local setup",
        _ => "needs an admin fix",
    };
    match target {
        Some(t) => format!("target '{t}': OAuth2 token request failed ({class})"),
        None => format!("OAuth2 token request failed ({class})"),
    }
}

fn graph_class(problem: GraphProblem) -> &'static str {
    match problem {
        GraphProblem::Unavailable => "temporary",
        GraphProblem::TokenRefused => "authorize again",
        GraphProblem::AdminFix => "needs an admin fix",
        GraphProblem::MessageRefused => "permanent",
    }
}

impl Error {
    /// The HTTP-style status code an API handler should answer with.
    pub fn http_code(&self) -> u16 {
        match self {
            Error::Config { .. }
            | Error::Parameter { .. }
            | Error::AlreadyExists(_)
            | Error::NeedsReauthorization { .. }
            | Error::CredentialNotConfirmed { .. } => 400,
            Error::Token {
                problem: TokenProblem::CodeRejected,
                ..
            } => 400,
            Error::NotFound(_) => 404,
            Error::DigestMismatch => 409,
            Error::LockTimeout { .. } | Error::StoreNotWritable { .. } => 503,
            Error::RateLimited { .. } => 429,
            Error::NewerStateStored { .. } => 409,
            Error::TooManyPending { .. } => 503,
            Error::Token {
                problem: TokenProblem::Setup,
                ..
            } => 500,
            Error::Token { .. } | Error::Smtp { .. } | Error::Graph { .. } => 502,
            Error::Io { .. } | Error::CorruptState { .. } | Error::StateNotSaved { .. } => 500,
        }
    }

    /// What must happen next (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. } | Error::Parameter { .. } | Error::AlreadyExists(_) => {
                ErrorKind::InvalidInput
            }
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::DigestMismatch => ErrorKind::Conflict,
            Error::NeedsReauthorization { .. } => ErrorKind::NeedsReauthorization,
            Error::CredentialNotConfirmed { .. } => ErrorKind::NeedsAdminFix,
            Error::Token { problem, .. } => match problem {
                TokenProblem::Unreachable | TokenProblem::Timeout | TokenProblem::Unavailable => {
                    ErrorKind::Transient
                }
                TokenProblem::CodeRejected => ErrorKind::NeedsReauthorization,
                TokenProblem::Setup => ErrorKind::Internal,
                TokenProblem::BadResponse
                | TokenProblem::ClientRejected
                | TokenProblem::NoRefreshToken => ErrorKind::NeedsAdminFix,
            },
            Error::Smtp {
                transient: true, ..
            } => ErrorKind::Transient,
            Error::Smtp {
                step: SmtpStep::Message,
                ..
            } => ErrorKind::InvalidInput,
            Error::Smtp { .. } => ErrorKind::NeedsAdminFix,
            Error::Graph { problem, .. } => match problem {
                GraphProblem::Unavailable => ErrorKind::Transient,
                GraphProblem::TokenRefused => ErrorKind::NeedsReauthorization,
                GraphProblem::AdminFix => ErrorKind::NeedsAdminFix,
                GraphProblem::MessageRefused => ErrorKind::InvalidInput,
            },
            Error::LockTimeout { .. }
            | Error::StoreNotWritable { .. }
            | Error::RateLimited { .. } => ErrorKind::Transient,
            Error::NewerStateStored { .. } => ErrorKind::Conflict,
            Error::TooManyPending { .. } => ErrorKind::Transient,
            Error::Io { .. } | Error::CorruptState { .. } | Error::StateNotSaved { .. } => {
                ErrorKind::Internal
            }
        }
    }

    /// True if a later attempt may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// True if the target must be authorized again.
    pub fn needs_reauthorization(&self) -> bool {
        self.kind() == ErrorKind::NeedsReauthorization
    }

    /// True if an admin must fix the app registration, mailbox or server settings first.
    pub fn needs_admin_fix(&self) -> bool {
        self.kind() == ErrorKind::NeedsAdminFix
    }

    /// True if the server rejected our credentials (SMTP 535, Graph 401): the only failure
    /// that a fresh access token can fix.
    pub fn is_auth_rejected(&self) -> bool {
        matches!(
            self,
            Error::Smtp {
                step: SmtpStep::Auth,
                code: Some(535),
                ..
            } | Error::Graph {
                status: Some(401),
                ..
            }
        )
    }

    /// How long the server asked us to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Token { retry_after, .. } | Error::Graph { retry_after, .. } => *retry_after,
            Error::RateLimited {
                retry_after_secs, ..
            } => Some(Duration::from_secs(*retry_after_secs)),
            _ => None,
        }
    }

    /// A token-request error.
    pub(crate) fn token(
        target: Option<&str>,
        problem: TokenProblem,
        message: impl Into<String>,
    ) -> Self {
        Error::Token {
            target: target.map(str::to_string),
            problem,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Shorthand for an invalid caller parameter.
    pub fn param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Parameter {
            param: param.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source: std::sync::Arc::new(source),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
