//! `oxnotify send NAME... --title TITLE [--body TEXT] [--severity LEVEL]`, the plain form,
//! with the Perl CLI's output and exit codes: one line per target (`sent`, `QUEUED as ID
//! (will be retried): ...`, `FAILED (code, kind): ...`); exit 1 if a target failed for good,
//! else 75 (EX_TEMPFAIL) if a notification was queued or failed only for now, else 0; a call
//! that fails as a whole prints `oxnotify: MESSAGE` and exits with its kind's code.

use serde_json::{json, Map, Value};
use std::process::ExitCode;

/// sysexits.h: a temporary failure, worth retrying later.
const EX_TEMPFAIL: u8 = 75;

/// A plain `send`: target names and the three text options.
#[derive(Debug, PartialEq)]
pub struct Request {
    targets: Vec<String>,
    options: Map<String, Value>,
}

impl Request {
    /// The request, if `args` (after `send`) are of the plain form; `None` hands them to the
    /// Perl CLI, which also words every usage error.
    pub fn parse(args: &[String]) -> Option<Request> {
        if args.iter().any(|a| a == "-h" || a == "--help") {
            return None;
        }
        let mut i = 0;
        let mut targets = Vec::new();
        while i < args.len() && !args[i].starts_with("--") {
            targets.push(args[i].clone());
            i += 1;
        }
        let mut options = Map::new();
        while i < args.len() {
            let arg = args[i].strip_prefix("--")?;
            i += 1;
            let (key, value) = match arg.split_once('=') {
                Some((k, v)) => (k, v.to_string()),
                None => {
                    let v = args.get(i)?.clone();
                    i += 1;
                    (arg, v)
                }
            };
            if !matches!(key, "title" | "body" | "severity") {
                return None;
            }
            options.insert(key.to_string(), Value::String(value));
        }
        if targets.is_empty() || !options.contains_key("title") {
            return None;
        }
        Some(Request { targets, options })
    }

    /// Send, print, and say what the process exits with.
    pub fn run(self) -> ExitCode {
        let mut params = self.options;
        params.insert("targets".into(), json!(self.targets));
        match notify_perl::calls::send(Value::Object(params)) {
            Ok(Value::Array(results)) => {
                let mut out = String::new();
                let (mut failed, mut later) = (false, false);
                for r in &results {
                    let text = |k: &str| r.get(k).map(plain).unwrap_or_default();
                    let flag = |k: &str| r.get(k).and_then(Value::as_bool).unwrap_or(false);
                    if !flag("ok") {
                        out.push_str(&format!(
                            "{}: FAILED ({}, {}): {}\n",
                            text("target"),
                            text("code"),
                            text("kind"),
                            text("message")
                        ));
                        if flag("transient") {
                            later = true
                        } else {
                            failed = true
                        }
                    } else if flag("queued") {
                        out.push_str(&format!(
                            "{}: QUEUED as {} (will be retried): {}\n",
                            text("target"),
                            text("id"),
                            text("message")
                        ));
                        later = true;
                    } else {
                        out.push_str(&format!("{}: sent\n", text("target")));
                    }
                }
                print!("{out}");
                ExitCode::from(if failed {
                    1
                } else if later {
                    EX_TEMPFAIL
                } else {
                    0
                })
            }
            Ok(other) => {
                eprintln!("oxnotify: send: malformed answer from the library: {other}");
                ExitCode::from(3)
            }
            Err(e) => {
                let nl = if e.message.ends_with('\n') { "" } else { "\n" };
                eprint!("oxnotify: {}{nl}", e.message);
                ExitCode::from(e.kind.exit_code())
            }
        }
    }
}

/// A JSON value as Perl prints it in a string: strings bare, numbers as numbers.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn the_plain_form_is_served_here() {
        let r = Request::parse(&args("a b --title T --body=x=y --severity error")).unwrap();
        assert_eq!(r.targets, ["a", "b"]);
        assert_eq!(r.options["title"], "T");
        assert_eq!(r.options["body"], "x=y");
        assert_eq!(r.options["severity"], "error");
    }

    #[test]
    fn everything_else_goes_to_the_perl_cli() {
        for a in [
            "a --title",            // a missing value
            "--title T",            // no target
            "a --body x",           // no title
            "a --title T --help",   // help
            "a -h --title T",       // help
            "a --title T extra",    // a stray argument
            "a --title T --json x", // an option it does not know
        ] {
            assert_eq!(Request::parse(&args(a)), None, "{a}");
        }
    }
}
