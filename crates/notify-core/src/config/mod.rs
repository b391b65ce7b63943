//! The notification configuration: the public `notifications.cfg` plus the root-only
//! `priv/notifications.cfg` holding secrets.
//!
//! Reading is lenient per target: a broken SMTP section makes that target fail with a clear
//! error naming file, line and key (never a value), while the others keep working; a
//! malformed line elsewhere (in a `sendmail:` or `matcher:` section, or outside any section)
//! is kept verbatim and reported by [`NotificationConfig::problems`]. Writing replaces both
//! files atomically; sections of types we do not handle and comments are kept verbatim, and
//! a write refuses to touch a file it could not reproduce or a target with malformed lines.
//! Callers that modify the config must hold [`ConfigLock`].

pub mod keys;
pub mod section;
pub mod smtp;
pub mod validate;

use crate::error::{Error, Result};
use crate::settings::Settings;
use crate::store::{self, Access, StoreLock};
use section::{problem_error, Section, SectionFile, ValueMode};
use smtp::{Invalid, SmtpSecrets, SmtpTarget, SMTP_TYPE};
use std::path::Path;

/// Exclusive lock over the notification config (and the daily refresh), held until dropped:
/// an `flock`, or in the cluster store the lock directory `config` (all nodes).
#[derive(Debug)]
pub struct ConfigLock(#[allow(dead_code)] StoreLock);

impl ConfigLock {
    /// Wait for the config lock.
    pub fn acquire(settings: &Settings) -> Result<ConfigLock> {
        let deadline = std::time::Instant::now() + settings.lock_timeout;
        Self::acquire_until(settings, deadline)
    }

    /// Take the config lock if free, `None` if another process holds it.
    pub fn try_acquire(settings: &Settings) -> Result<Option<ConfigLock>> {
        match Self::acquire_until(settings, std::time::Instant::now()) {
            Ok(l) => Ok(Some(l)),
            Err(Error::LockTimeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn acquire_until(settings: &Settings, deadline: std::time::Instant) -> Result<ConfigLock> {
        let store = settings.store();
        store.ensure_dir(&settings.config_dir, Access::Public, false)?;
        // the cluster store's lock directories are in the state directory
        store
            .lock_until(
                &settings.config_lock_file(),
                "config",
                deadline,
                "the configuration",
            )
            .map(ConfigLock)
    }
}

/// Both config files, parsed. `Debug` shows section names and keys, never values.
#[derive(Debug, Clone)]
pub struct NotificationConfig {
    public: SectionFile,
    private: SectionFile,
    digest: String,
}

fn config_error(file: &Path, section: &str, line: Option<usize>, invalid: Invalid) -> Error {
    Error::Config {
        file: file.to_path_buf(),
        line,
        section: Some(section.to_string()),
        key: invalid.0.map(str::to_string),
        message: invalid.1,
    }
}

fn digest_of(bytes: &[u8]) -> String {
    crate::digest::sha256_hex(bytes)
}

impl NotificationConfig {
    /// Read both files (missing files are empty). Only unreadable files fail here (not a
    /// regular file, I/O errors); malformed lines (bytes that are not UTF-8 included) and
    /// invalid values of a target fail when that target is used, other malformed lines are
    /// in [`Self::problems`].
    pub fn load(settings: &Settings) -> Result<Self> {
        let public = SectionFile::read(&settings.config_file(), ValueMode::Trimmed)?;
        // secrets are read byte-exact (a leading or trailing blank is part of the value)
        let private = SectionFile::read(&settings.private_config_file(), ValueMode::Exact)?;
        let digest = digest_of(&public.render_bytes());
        Ok(NotificationConfig {
            public,
            private,
            digest,
        })
    }

    /// Malformed lines that belong to no target (a bad header, a duplicate section name,
    /// lines outside any section), in both files: file and line, never the line's text.
    /// Malformed lines inside an SMTP section are reported by that target instead.
    pub fn problems(&self) -> Vec<Error> {
        [&self.public, &self.private]
            .into_iter()
            .flat_map(|f| {
                f.stray_problems()
                    .into_iter()
                    .map(|p| problem_error(&f.path, None, &p))
            })
            .collect()
    }

    /// SHA-256 of the public file as read; API callers pass it back to detect concurrent edits.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Fail with [`Error::DigestMismatch`] unless `expected` (if given) matches.
    pub fn check_digest(&self, expected: Option<&str>) -> Result<()> {
        match expected {
            Some(d) if !d.is_empty() && d != self.digest => Err(Error::DigestMismatch),
            _ => Ok(()),
        }
    }

    /// Names of all SMTP sections, in file order (valid or not).
    pub fn smtp_target_names(&self) -> Vec<String> {
        self.public
            .sections()
            .filter(|s| s.section_type == SMTP_TYPE)
            .map(|s| s.name.clone())
            .collect()
    }

    /// Every SMTP target, each parsed and validated on its own.
    pub fn smtp_targets(&self) -> Vec<(String, Result<SmtpTarget>)> {
        self.smtp_target_names()
            .into_iter()
            .map(|n| {
                let t = self.smtp_target(&n);
                (n, t)
            })
            .collect()
    }

    /// The SMTP target `name`, validated (404 if it does not exist).
    pub fn smtp_target(&self, name: &str) -> Result<SmtpTarget> {
        let section = self
            .public
            .section(name)
            .filter(|s| s.section_type == SMTP_TYPE)
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        if let Some(p) = section.problems().first() {
            return Err(problem_error(&self.public.path, Some(name), p));
        }
        SmtpTarget::from_section(section)
            .map_err(|(line, inv)| config_error(&self.public.path, name, line, inv))
    }

    /// Where key `key` of target `name` is set: "FILE line N" (the first line with it), for
    /// messages that must point the admin at the line to change.
    pub fn key_location(&self, name: &str, key: &str) -> Option<String> {
        let line = self
            .public
            .section(name)?
            .entries()
            .find(|e| e.key == key)?
            .line;
        Some(format!("{} line {line}", self.public.path.display()))
    }

    /// The secrets stored for `name` as they are (parse errors fail; no check against the
    /// target's auth method). Used when updating, so nothing stored is lost.
    pub fn stored_smtp_secrets(&self, name: &str) -> Result<SmtpSecrets> {
        match self.private.section(name) {
            Some(s) if !s.problems().is_empty() => Err(problem_error(
                &self.private.path,
                Some(name),
                &s.problems()[0],
            )),
            Some(s) => SmtpSecrets::from_section(s)
                .map_err(|(line, inv)| config_error(&self.private.path, name, line, inv)),
            None => Ok(SmtpSecrets::default()),
        }
    }

    /// The secrets of target `name` (empty if it has none), checked against its auth method.
    pub fn smtp_secrets(&self, name: &str) -> Result<SmtpSecrets> {
        let secrets = self.stored_smtp_secrets(name)?;
        let target = self.smtp_target(name)?;
        target
            .validate_secrets(&secrets)
            .map_err(|inv| config_error(&self.private.path, name, None, inv))?;
        Ok(secrets)
    }

    /// Add a new target (400 if the name is taken by any section).
    pub fn add_smtp_target(&mut self, target: &SmtpTarget, secrets: &SmtpSecrets) -> Result<()> {
        if self.public.section(&target.name).is_some() {
            return Err(Error::AlreadyExists(target.name.clone()));
        }
        Self::check_new(target, secrets)?;
        self.check_alert_target(target)?;
        let mut s = Section::new(SMTP_TYPE, &target.name);
        s.set_entries(&target.to_entries());
        self.public.push(s);
        self.set_private(&target.name, secrets);
        Ok(())
    }

    /// Replace target `target.name` (404 if missing); key order and comments are kept.
    pub fn update_smtp_target(&mut self, target: &SmtpTarget, secrets: &SmtpSecrets) -> Result<()> {
        Self::check_new(target, secrets)?;
        self.check_alert_target(target)?;
        // a section with malformed lines cannot be rewritten without losing them
        for file in [&self.public, &self.private] {
            if let Some(p) = file
                .section(&target.name)
                .and_then(|s| s.problems().first())
            {
                let mut e = problem_error(&file.path, Some(&target.name), p);
                if let Error::Config { message, .. } = &mut e {
                    message.push_str("; fix this line by hand before changing the target");
                }
                return Err(e);
            }
        }
        let section = self
            .public
            .section_mut(&target.name)
            .filter(|s| s.section_type == SMTP_TYPE)
            .ok_or_else(|| Error::NotFound(target.name.clone()))?;
        section.set_entries(&target.to_entries());
        self.set_private(&target.name, secrets);
        Ok(())
    }

    /// Remove target `name` and its secrets (404 if missing). The caller removes its state.
    pub fn remove_smtp_target(&mut self, name: &str) -> Result<()> {
        if self
            .public
            .section(name)
            .is_none_or(|s| s.section_type != SMTP_TYPE)
        {
            return Err(Error::NotFound(name.to_string()));
        }
        self.public.remove(name);
        self.private.remove(name);
        Ok(())
    }

    /// The `alert-target` of `target` (to be added or changed) names an existing target or
    /// `sendmail`, and no loop of targets alerting each other follows from it.
    fn check_alert_target(&self, target: &SmtpTarget) -> Result<()> {
        let Some(via) = &target.alert_target else {
            return Ok(());
        };
        if via != validate::ALERT_VIA_SENDMAIL && self.smtp_target_names().iter().all(|n| n != via)
        {
            return Err(Error::param(
                "alert-target",
                format!("no target '{via}': name an existing target, or 'sendmail'"),
            ));
        }
        validate::alert_loop(&target.name, |n| {
            if n == target.name {
                target.alert_target.clone()
            } else {
                self.alert_target_of(n)
            }
        })
        .map_err(|m| Error::param("alert-target", m))
    }

    /// The `alert-target` of target `name` as the file has it (`None`: none, or the target is
    /// missing or invalid).
    pub fn alert_target_of(&self, name: &str) -> Option<String> {
        self.smtp_target(name).ok()?.alert_target
    }

    /// `Err` (the loop) if the `alert-target`s from `name` on form a loop: a file edited by
    /// hand is checked again before an alert is sent.
    pub fn alert_chain(&self, name: &str) -> Result<()> {
        validate::alert_loop(name, |n| self.alert_target_of(n)).map_err(|m| Error::Config {
            file: self.public.path.clone(),
            line: None,
            section: Some(name.to_string()),
            key: Some("alert-target".into()),
            message: m,
        })
    }

    fn check_new(target: &SmtpTarget, secrets: &SmtpSecrets) -> Result<()> {
        let to_param = |(key, message): Invalid| Error::Parameter {
            param: key.unwrap_or("name").to_string(),
            message,
        };
        keys::check_values(target).map_err(to_param)?;
        target.validate().map_err(to_param)?;
        target.validate_secrets(secrets).map_err(to_param)
    }

    fn set_private(&mut self, name: &str, secrets: &SmtpSecrets) {
        if secrets.is_empty() {
            self.private.remove(name);
        } else if let Some(s) = self.private.section_mut(name) {
            s.set_entries(&secrets.to_entries());
        } else {
            let mut s = Section::new(SMTP_TYPE, name);
            s.set_entries(&secrets.to_entries());
            self.private.push(s);
        }
    }

    /// Write both files atomically: the private one first (0600, directory 0700), then the
    /// public one (0644). The caller must hold the [`ConfigLock`].
    pub fn save(&mut self, settings: &Settings, _lock: &ConfigLock) -> Result<()> {
        // both checked before either is written
        let private = self.private.bytes_to_write()?;
        let text = self.public.bytes_to_write()?;
        let store = settings.store();
        let priv_file = settings.private_config_file();
        if let Some(dir) = priv_file.parent() {
            store.ensure_dir(dir, Access::Private, true)?;
            // a writer killed mid-save left its temp file (secrets included): every writer
            // holds the config lock, so none of these belongs to a live one
            store::sweep(dir, is_temp_file, None);
        }
        store::sweep(&settings.config_dir, is_temp_file, None);
        store.write(&priv_file, &private, Access::Private, TEMP_PREFIX)?;
        store.ensure_dir(&settings.config_dir, Access::Public, false)?;
        store.write(&settings.config_file(), &text, Access::Public, TEMP_PREFIX)?;
        self.digest = digest_of(&text);
        Ok(())
    }
}

/// Prefix of the temp files of config writes.
const TEMP_PREFIX: &str = ".tmp-";

/// A temp file a killed config writer left.
fn is_temp_file(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}
