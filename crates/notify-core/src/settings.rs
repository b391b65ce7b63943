//! Where files live and how long we wait: one settings object, so the core never hard-codes a
//! product path and tests run in temp dirs.

use crate::store::{self, Store};
use std::path::PathBuf;
use std::time::Duration;

/// Default public config directory.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/oxnotify";
/// The host MTA's `sendmail` when `OXNOTIFY_SENDMAIL` does not name another.
pub const DEFAULT_SENDMAIL: &str = "/usr/sbin/sendmail";
/// Default state directory (OAuth2 state files go to `<state>/oauth2/`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/oxnotify";

/// Paths, timeouts and limits. Build with [`Settings::from_env`] (production) or
/// [`Settings::with_dirs`] (tests, embedding). `Debug` hides the proxy's credentials.
#[derive(Clone)]
pub struct Settings {
    /// Directory of `notifications.cfg`; the private file is `priv/notifications.cfg` below it.
    pub config_dir: PathBuf,
    /// Directory of the per-target OAuth2 state files (`oauth2/<target>.json`).
    pub state_dir: PathBuf,
    /// Whole-request timeout for OAuth2 token requests.
    pub http_timeout: Duration,
    /// Connect and per-read/write timeout for SMTP.
    pub smtp_timeout: Duration,
    /// Deadline of one whole delivery to one target: lock waits, token requests, connection,
    /// retries and the transfer all fit in it.
    pub delivery_deadline: Duration,
    /// How long a sender waits for its notification, all its targets together: within it a
    /// transient failure is retried; after it the message stays queued in the outbox (where
    /// it is from the moment the call accepted it) and the call returns. Bounded by
    /// [`Settings::delivery_deadline`].
    pub caller_wait: Duration,
    /// Longest wait for the config lock or a target's lock.
    pub lock_timeout: Duration,
    /// Refresh the cached access token when it expires within this margin.
    pub token_expiry_margin: Duration,
    /// How many targets `refresh_targets` refreshes at once.
    pub refresh_parallelism: usize,
    /// Name sent in EHLO.
    pub hello_name: String,
    /// A queued message older than this is given up (logged, shown in the status).
    pub outbox_max_age: Duration,
    /// HTTP(S) proxy for token requests (`http://host:port`); `None` uses no proxy.
    pub http_proxy: Option<String>,
    /// Directory of the private file (`notifications.cfg` with the secrets); `None`:
    /// `<config_dir>/priv`. On PVE: `/etc/pve/priv/oxnotify` (pmxcfs allows 0600 files only
    /// under `priv/`).
    pub private_config_dir: Option<PathBuf>,
    /// How the OAuth2 state is stored and locked ([`store::Kind`]; [`Settings::store`]).
    pub store: store::Kind,
    /// This node's name in cluster lock owners and in the state (who refreshed last).
    pub node_name: String,
    /// A cluster lock directory older than this is stale and may be taken over (pmxcfs
    /// expires its own lock directories after 120 s).
    pub cluster_lock_stale: Duration,
    /// Cluster store: the daily job skips a target that any node refreshed within this window.
    pub refresh_window: Duration,
    /// Directory of what belongs to this host only: the outbox spool and the connection
    /// slots (they need `flock` and may be large). `None`: the state directory with the local
    /// store, [`DEFAULT_STATE_DIR`] with the cluster store (never the shared file system).
    pub node_local_dir: Option<PathBuf>,
    /// Hosts the endpoints of `microsoft-oauth2` / `google-oauth2` targets may point to
    /// besides the providers' own (their sovereign clouds included), from
    /// `OXNOTIFY_ALLOW_PROVIDER_HOSTS`: an identity proxy, a test stand-in. Root-only: it comes
    /// from the environment of the process (service unit, root's shell), never from an API
    /// parameter or the config files an API user may edit.
    pub provider_hosts: Vec<String>,
    /// The host's `sendmail` command (program and arguments) for alerts with `alert-target
    /// sendmail`, from `OXNOTIFY_SENDMAIL` (blank-separated; default `/usr/sbin/sendmail`).
    /// Root's setting, like [`Settings::provider_hosts`]: never from the config an API user may
    /// edit (it names a program to run).
    pub sendmail_command: Vec<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("config_dir", &self.config_dir)
            .field("state_dir", &self.state_dir)
            .field("http_timeout", &self.http_timeout)
            .field("smtp_timeout", &self.smtp_timeout)
            .field("delivery_deadline", &self.delivery_deadline)
            .field("caller_wait", &self.caller_wait)
            .field("lock_timeout", &self.lock_timeout)
            .field("hello_name", &self.hello_name)
            .field("outbox_max_age", &self.outbox_max_age)
            .field("private_config_dir", &self.private_config_dir)
            .field("store", &self.store)
            .field("node_name", &self.node_name)
            .field("cluster_lock_stale", &self.cluster_lock_stale)
            .field("refresh_window", &self.refresh_window)
            .field("node_local_dir", &self.node_local_dir)
            .field("provider_hosts", &self.provider_hosts)
            .field("sendmail_command", &self.sendmail_command)
            .field(
                "http_proxy",
                &self.http_proxy.as_deref().map(proxy_without_credentials),
            )
            .finish_non_exhaustive()
    }
}

/// The proxy URL with any `user:password@` removed (for display).
pub fn proxy_without_credentials(proxy: &str) -> String {
    match url::Url::parse(proxy) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("***");
                let _ = u.set_password(None);
            }
            u.to_string()
        }
        // not a URL: show only the part after a '@', if any
        Err(_) => match proxy.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => proxy.to_string(),
        },
    }
}

impl Settings {
    /// Settings with the given directories and default timeouts.
    pub fn with_dirs(config_dir: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Settings {
            config_dir: config_dir.into(),
            state_dir: state_dir.into(),
            http_timeout: Duration::from_secs(30),
            smtp_timeout: Duration::from_secs(30),
            delivery_deadline: Duration::from_secs(120),
            caller_wait: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(30),
            token_expiry_margin: Duration::from_secs(300),
            refresh_parallelism: 4,
            hello_name: hello_name(),
            outbox_max_age: Duration::from_secs(2 * 86_400),
            http_proxy: None,
            private_config_dir: None,
            store: store::Kind::Local,
            node_name: hello_name(),
            cluster_lock_stale: Duration::from_secs(120),
            refresh_window: Duration::from_secs(20 * 3600),
            node_local_dir: None,
            provider_hosts: Vec::new(),
            sendmail_command: vec![DEFAULT_SENDMAIL.into()],
        }
    }

    /// Where this host's own files go: the outbox and the connection slots
    /// ([`Settings::node_local_dir`]).
    pub fn local_dir(&self) -> PathBuf {
        match &self.node_local_dir {
            Some(d) => d.clone(),
            None => self
                .store
                .default_node_local_dir(&self.state_dir, std::path::Path::new(DEFAULT_STATE_DIR)),
        }
    }

    /// Defaults, overridden by the environment: `OXNOTIFY_CONFIG_DIR`, `OXNOTIFY_STATE_DIR`,
    /// `OXNOTIFY_HTTP_TIMEOUT`, `OXNOTIFY_SMTP_TIMEOUT`, `OXNOTIFY_DELIVERY_DEADLINE`,
    /// `OXNOTIFY_CALLER_WAIT`,
    /// `OXNOTIFY_LOCK_TIMEOUT` and `OXNOTIFY_OUTBOX_MAX_AGE` (seconds), `OXNOTIFY_HTTP_PROXY`
    /// (falls back to `https_proxy` / `HTTPS_PROXY`); the cluster store:
    /// `OXNOTIFY_STATE_STORE` (`local` or `cluster`; anything else is ignored with a warning
    /// on stderr), `OXNOTIFY_NODE_NAME` (default: the host name),
    /// `OXNOTIFY_CLUSTER_LOCK_STALE` and `OXNOTIFY_REFRESH_WINDOW` (seconds),
    /// `OXNOTIFY_PRIVATE_CONFIG_DIR`, `OXNOTIFY_LOCAL_STATE_DIR` (outbox and slots);
    /// `OXNOTIFY_ALLOW_PROVIDER_HOSTS` (host names separated by commas or blanks: see
    /// [`Settings::provider_hosts`]); `OXNOTIFY_SENDMAIL` ([`Settings::sendmail_command`]).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut s = Settings::with_dirs(
            var("OXNOTIFY_CONFIG_DIR").unwrap_or_else(|| DEFAULT_CONFIG_DIR.into()),
            var("OXNOTIFY_STATE_DIR").unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
        );
        let secs = |k: &str| {
            var(k)
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| *v > 0)
        };
        if let Some(t) = secs("OXNOTIFY_HTTP_TIMEOUT") {
            s.http_timeout = Duration::from_secs(t);
        }
        if let Some(t) = secs("OXNOTIFY_SMTP_TIMEOUT") {
            s.smtp_timeout = Duration::from_secs(t);
        }
        if let Some(t) = secs("OXNOTIFY_DELIVERY_DEADLINE") {
            s.delivery_deadline = Duration::from_secs(t);
        }
        if let Some(t) = secs("OXNOTIFY_CALLER_WAIT") {
            s.caller_wait = Duration::from_secs(t);
        }
        if let Some(t) = secs("OXNOTIFY_LOCK_TIMEOUT") {
            s.lock_timeout = Duration::from_secs(t);
        }
        if let Some(t) = secs("OXNOTIFY_OUTBOX_MAX_AGE") {
            s.outbox_max_age = Duration::from_secs(t);
        }
        if let Some(kind) = var("OXNOTIFY_STATE_STORE") {
            match store::Kind::parse(&kind) {
                Some(k) => s.store = k,
                None => eprintln!(
                    "oxnotify: OXNOTIFY_STATE_STORE must be 'local' or 'cluster'; using 'local'"
                ),
            }
        }
        if let Some(node) = var("OXNOTIFY_NODE_NAME") {
            if valid_node_name(&node) {
                s.node_name = node;
            } else {
                eprintln!(
                    "oxnotify: OXNOTIFY_NODE_NAME may hold letters, digits, '-', '.', '_' (at \
                     most 64); using '{}'",
                    s.node_name
                );
            }
        }
        if let Some(t) = secs("OXNOTIFY_CLUSTER_LOCK_STALE") {
            s.cluster_lock_stale = Duration::from_secs(t);
        }
        if let Some(t) = secs("OXNOTIFY_REFRESH_WINDOW") {
            s.refresh_window = Duration::from_secs(t);
        }
        s.private_config_dir = var("OXNOTIFY_PRIVATE_CONFIG_DIR").map(PathBuf::from);
        s.node_local_dir = var("OXNOTIFY_LOCAL_STATE_DIR").map(PathBuf::from);
        s.provider_hosts = var("OXNOTIFY_ALLOW_PROVIDER_HOSTS")
            .map(|v| parse_host_list(&v))
            .unwrap_or_default();
        if let Some(cmd) = var("OXNOTIFY_SENDMAIL") {
            s.sendmail_command = cmd.split_whitespace().map(str::to_string).collect();
        }
        s.http_proxy = var("OXNOTIFY_HTTP_PROXY")
            .or_else(|| var("https_proxy"))
            .or_else(|| var("HTTPS_PROXY"));
        s
    }

    /// The public config file.
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("notifications.cfg")
    }

    /// The private (root-only) config file holding secrets.
    pub fn private_config_file(&self) -> PathBuf {
        match &self.private_config_dir {
            Some(dir) => dir.join("notifications.cfg"),
            None => self.config_dir.join("priv").join("notifications.cfg"),
        }
    }

    /// Directory of the cluster store's lock directories: pmxcfs's own (`/etc/pve/priv/lock`,
    /// where locks expire by its rules) when the state lives on pmxcfs, else `<state>/lock`.
    pub fn cluster_lock_dir(&self) -> PathBuf {
        if self.state_dir.starts_with("/etc/pve") {
            PathBuf::from("/etc/pve/priv/lock")
        } else {
            self.state_dir.join("lock")
        }
    }

    /// The store the state, the config and the pending authorizations are written to.
    pub fn store(&self) -> Store {
        Store::new(
            self.store,
            self.cluster_lock_dir(),
            &self.node_name,
            self.cluster_lock_stale,
        )
    }

    /// The lock file serialising config writers (and the daily job).
    pub fn config_lock_file(&self) -> PathBuf {
        self.config_dir.join(".notifications.lock")
    }

    /// The lock file that lets one daily refresh run at a time.
    pub fn daily_lock_file(&self) -> PathBuf {
        self.state_dir.join("daily.lock")
    }

    /// Directory of the per-target OAuth2 state files.
    pub fn oauth2_state_dir(&self) -> PathBuf {
        self.state_dir.join("oauth2")
    }

    /// The state file of a target (the name is validated by the config layer, so it is a
    /// plain file name).
    pub fn oauth2_state_file(&self, target: &str) -> PathBuf {
        self.oauth2_state_dir().join(format!("{target}.json"))
    }

    /// The per-target lock file serialising token refreshes between processes.
    pub fn oauth2_lock_file(&self, target: &str) -> PathBuf {
        self.oauth2_state_dir().join(format!("{target}.lock"))
    }
}

/// Host names (or bracketed IPv6 addresses, as URLs write them) from a list separated by
/// commas or blanks, lowercased; anything else (a URL, a port, a wildcard) is ignored with a
/// warning on stderr.
pub fn parse_host_list(list: &str) -> Vec<String> {
    let name = |h: &str| {
        h.len() <= 253
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    let ipv6 = |h: &str| {
        h.strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    };
    list.split([',', ' ', '\t', '\n'])
        .filter(|h| !h.is_empty())
        .filter_map(|h| {
            if name(h) || ipv6(h) {
                Some(h.to_ascii_lowercase())
            } else {
                eprintln!(
                    "oxnotify: OXNOTIFY_ALLOW_PROVIDER_HOSTS: ignoring an entry that is not a \
                     host name (no scheme, port or wildcard)"
                );
                None
            }
        })
        .collect()
}

/// Node names go into lock directory names: host-name characters only.
fn valid_node_name(name: &str) -> bool {
    name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
}

fn hello_name() -> String {
    let name = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let name = name.trim();
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        name.to_string()
    } else {
        "localhost".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_provider_hosts_are_host_names_only() {
        assert_eq!(
            parse_host_list("127.0.0.1, LocalHost idp.example.com,[::1]"),
            ["127.0.0.1", "localhost", "idp.example.com", "[::1]"]
        );
        // a URL, a port or a wildcard would widen the pin unexpectedly: ignored
        assert!(parse_host_list("https://evil.example,evil.example:443,*.example,*").is_empty());
    }
}
