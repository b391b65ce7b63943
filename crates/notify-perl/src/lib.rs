//! # notify-perl: the C ABI that Perl loads
//!
//! The `perlmod` crate is not reachable from our registries, so Perl talks to notify-core
//! through this small C ABI, loaded with FFI::Platypus by `OxNotify::Core`.
//!
//! **ABI version 1** ([`ABI_VERSION`]; `OxNotify::Core` refuses a library with another one):
//!
//! - `uint32_t oxnotify_abi_version(void)` — the ABI version.
//! - `char *oxnotify_<function>(const char *params)` — `params` is a UTF-8 JSON object (NULL
//!   means `{}`); the return value is a NUL-terminated UTF-8 JSON object, either
//!   `{"ok": <result>}` or `{"error": {"message": "...", "code": <HTTP-style status>,
//!   "kind": "...", "transient": <bool>, "exit_code": <int>, "param": "..."}}`. `kind` says what must happen next
//!   (`invalid-input`, `not-found`, `conflict`, `needs-reauthorization`, `needs-admin-fix`,
//!   `transient`, `internal`); `exit_code` is the kind's exit code for a command line
//!   (`ErrorKind::exit_code`, the one map); `param` names the parameter at fault, where there is one;
//!   `errors` (if present) maps several parameters at fault to their messages.
//!   The caller owns the returned string and must release it with `oxnotify_free`.
//! - `void oxnotify_free(char *)` — free a returned string (NULL is ignored).
//! - `void oxnotify_set_user_email_resolver(char *(*resolve)(const char *userid))` — the
//!   host's user -> e-mail lookup (NULL removes it); it answers a `malloc`ed string or NULL.
//!
//! Functions: `list_targets`, `get_target`, `create_target`, `update_target`, `delete_target`,
//! `test_target`, `authorize_url`, `authorize_begin`, `authorize_complete`, `device_begin`,
//! `device_complete`,
//! `exchange_smtp_oauth2_code`, `smtp_oauth2_token`, `get_targets`, `config_keys`, `providers`, `verify`,
//! `refresh_targets`, `daily`, `send`, `send_burst`, `outbox_list`,
//! `outbox_flush`, `outbox_drop`, `outbox_status`,
//! `target_status`, and `selftest` (echoes its parameters; panics on `{"panic": true}` so the
//! boundary can be tested). Parameters are documented in [`calls`].
//!
//! Nothing crosses the boundary as a panic: every call runs under `catch_unwind` and a panic
//! becomes a 500 error. Invalid UTF-8 or JSON is a 400 error. Paths and timeouts come from the
//! environment (`OXNOTIFY_CONFIG_DIR`, `OXNOTIFY_STATE_DIR`, ...; see `Settings::from_env`).

pub mod calls;

use serde_json::{json, Value};
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Version of the C ABI described above.
pub const ABI_VERSION: u32 = 1;

/// An error crossing the boundary: message, HTTP-style code, what to do about it.
#[derive(Debug)]
pub struct CallError {
    /// Human-readable, secret-free message.
    pub message: String,
    /// HTTP-style status.
    pub code: u16,
    /// What must happen next ([`notify_core::ErrorKind`]).
    pub kind: notify_core::ErrorKind,
    /// The parameter at fault, for invalid-parameter errors.
    pub param: Option<String>,
    /// Several parameters at fault (parameter -> message), as a schema check reports them.
    pub errors: std::collections::BTreeMap<String, String>,
}

impl From<notify_core::Error> for CallError {
    fn from(e: notify_core::Error) -> Self {
        CallError {
            code: e.http_code(),
            kind: e.kind(),
            param: match &e {
                notify_core::Error::Parameter { param, .. } => Some(param.clone()),
                _ => None,
            },
            message: e.to_string(),
            errors: Default::default(),
        }
    }
}

impl CallError {
    /// A 400 error.
    pub fn bad_request(message: impl Into<String>) -> Self {
        CallError {
            message: message.into(),
            code: 400,
            kind: notify_core::ErrorKind::InvalidInput,
            param: None,
            errors: Default::default(),
        }
    }

    /// The error object of the answer.
    fn to_json(&self) -> Value {
        let mut v = json!({
            "message": self.message,
            "code": self.code,
            "kind": self.kind.as_str(),
            "transient": self.kind == notify_core::ErrorKind::Transient,
            "exit_code": self.kind.exit_code(),
        });
        if let Some(p) = &self.param {
            v["param"] = json!(p);
        }
        if !self.errors.is_empty() {
            v["errors"] = json!(self.errors);
        }
        v
    }
}

/// Run `f` on the parsed parameters and encode the answer; never panics, never unwinds.
fn boundary(params: *const c_char, f: fn(Value) -> Result<Value, CallError>) -> *mut c_char {
    quiet_panics();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let params = if params.is_null() {
            Value::Object(Default::default())
        } else {
            // SAFETY: the caller passes a NUL-terminated string (ABI contract)
            let bytes = unsafe { CStr::from_ptr(params) }.to_bytes();
            let text = std::str::from_utf8(bytes).map_err(|e| {
                CallError::bad_request(format!(
                    "parameters are not valid UTF-8 (at byte {})",
                    e.valid_up_to()
                ))
            })?;
            serde_json::from_str(text).map_err(|e| {
                CallError::bad_request(format!("parameters are not valid JSON: {e}"))
            })?
        };
        if !params.is_object() {
            return Err(CallError::bad_request("parameters must be a JSON object"));
        }
        f(params)
    }));
    let answer = match outcome {
        Ok(Ok(v)) => json!({ "ok": v }),
        Ok(Err(e)) => json!({ "error": e.to_json() }),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            json!({ "error": { "message": format!("internal error in oxnotify (panic: {what})"), "code": 500, "kind": "internal", "transient": false, "exit_code": notify_core::ErrorKind::Internal.exit_code() } })
        }
    };
    // serde_json escapes NUL as \u0000, so this cannot fail; fall back to a fixed error anyway
    CString::new(answer.to_string())
        .unwrap_or_else(|_| {
            CString::from(c"{\"error\":{\"message\":\"internal encoding error\",\"code\":500}}")
        })
        .into_raw()
}

/// A panic becomes an exception in Perl; print one line instead of a backtrace into the host
/// process's stderr.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            eprintln!("oxnotify: internal panic{at} (reported to the caller as an error)");
        }));
    });
}

/// The ABI version (see the crate documentation).
#[no_mangle]
pub extern "C" fn oxnotify_abi_version() -> u32 {
    ABI_VERSION
}

/// Free a string returned by any `oxnotify_*` function.
///
/// # Safety
/// `s` must be NULL or a pointer returned by this library, freed at most once.
#[no_mangle]
pub unsafe extern "C" fn oxnotify_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: per the contract it came from CString::into_raw in `boundary`
        drop(unsafe { CString::from_raw(s) });
    }
}

/// The host's user -> e-mail lookup: `char *resolve(const char *userid)`, answering a
/// `malloc`ed NUL-terminated address (the caller frees it with `free`) or NULL.
pub type UserEmailResolver = unsafe extern "C" fn(*const c_char) -> *mut c_char;

/// Register (or, with NULL, remove) the host's user -> e-mail lookup. `send`, `send_burst`
/// and `test_target` ask it, on the calling thread and within the one call, for the
/// `mailto-user` entries of the targets they send to.
///
/// # Safety
/// `resolve` must be NULL or stay callable until it is replaced or removed.
#[no_mangle]
pub unsafe extern "C" fn oxnotify_set_user_email_resolver(resolve: Option<UserEmailResolver>) {
    *calls::RESOLVER.lock().unwrap_or_else(|p| p.into_inner()) = resolve;
}

macro_rules! export {
    ($($sym:ident => $f:path),* $(,)?) => {$(
        #[doc = concat!("C entry point for [`", stringify!($f), "`].\n\n# Safety\n`params` must be NULL or a NUL-terminated string.")]
        #[no_mangle]
        pub unsafe extern "C" fn $sym(params: *const c_char) -> *mut c_char {
            boundary(params, $f)
        }
    )*};
}

export! {
    oxnotify_selftest => calls::selftest,
    oxnotify_list_targets => calls::list_targets,
    oxnotify_get_target => calls::get_target,
    oxnotify_create_target => calls::create_target,
    oxnotify_update_target => calls::update_target,
    oxnotify_delete_target => calls::delete_target,
    oxnotify_test_target => calls::test_target,
    oxnotify_authorize_url => calls::authorize_url,
    oxnotify_authorize_begin => calls::authorize_begin,
    oxnotify_authorize_complete => calls::authorize_complete,
    oxnotify_device_begin => calls::device_begin,
    oxnotify_device_complete => calls::device_complete,
    oxnotify_exchange_smtp_oauth2_code => calls::exchange_smtp_oauth2_code,
    oxnotify_refresh_targets => calls::refresh_targets,
    oxnotify_daily => calls::daily,
    oxnotify_smtp_oauth2_token => calls::smtp_oauth2_token,
    oxnotify_get_targets => calls::get_targets,
    oxnotify_config_keys => calls::config_keys,
    oxnotify_providers => calls::providers,
    oxnotify_verify => calls::verify,
    oxnotify_send => calls::send,
    oxnotify_send_burst => calls::send_burst,
    oxnotify_outbox_list => calls::outbox_list,
    oxnotify_outbox_flush => calls::outbox_flush,
    oxnotify_outbox_drop => calls::outbox_drop,
    oxnotify_outbox_status => calls::outbox_status,
    oxnotify_target_status => calls::target_status,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(f: unsafe extern "C" fn(*const c_char) -> *mut c_char, params: &[u8]) -> Value {
        let c = CString::new(params).unwrap();
        unsafe {
            let out = f(c.as_ptr());
            let v = serde_json::from_str(CStr::from_ptr(out).to_str().unwrap()).unwrap();
            oxnotify_free(out);
            v
        }
    }

    #[test]
    fn boundary_turns_bad_input_and_panics_into_errors() {
        assert_eq!(call(oxnotify_selftest, br#"{"a":1}"#)["ok"]["a"], 1);
        assert_eq!(call(oxnotify_selftest, b"\xff\xfe")["error"]["code"], 400);
        assert_eq!(call(oxnotify_selftest, b"[1]")["error"]["code"], 400);
        assert_eq!(call(oxnotify_selftest, b"{")["error"]["code"], 400);
        let p = call(oxnotify_selftest, br#"{"panic":true}"#);
        assert_eq!(p["error"]["code"], 500);
        assert!(p["error"]["message"].as_str().unwrap().contains("panic"));
        unsafe { oxnotify_free(std::ptr::null_mut()) };
    }
}
