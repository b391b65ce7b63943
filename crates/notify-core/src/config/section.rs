//! The section-config text format shared with PVE-style `notifications.cfg` files:
//!
//! ```text
//! # comment
//! smtp: alerts
//!         server smtp.example.com
//!         mailto ops@example.com
//!         mailto oncall@example.com
//!
//! sendmail: local
//!         mailto-user root@pam
//! ```
//!
//! A header line `<type>: <name>`, then indented `key value` lines; a blank line ends the
//! section; repeated keys form a list. This module knows nothing about SMTP: it keeps every
//! line so a file round-trips byte for byte, and sections that are not modified (including
//! types we do not handle) are written back verbatim.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// One `key value` line of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value (may be empty).
    pub value: String,
    /// 1-based line number in the file it was read from (0 for entries added in memory).
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum BodyLine {
    Comment(String),
    Entry(Entry),
}

/// A section: header plus body. `original` holds the exact text it was read from, written
/// back unchanged unless the section was modified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Section type (`smtp`, `sendmail`, `matcher`, ...).
    pub section_type: String,
    /// Section name (the target name).
    pub name: String,
    /// 1-based line of the header (0 for new sections).
    pub line: usize,
    body: Vec<BodyLine>,
    original: Option<Vec<String>>,
}

impl Section {
    /// A new, empty section.
    pub fn new(section_type: &str, name: &str) -> Self {
        Section {
            section_type: section_type.to_string(),
            name: name.to_string(),
            line: 0,
            body: Vec::new(),
            original: None,
        }
    }

    /// The key/value entries in file order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.body.iter().filter_map(|l| match l {
            BodyLine::Entry(e) => Some(e),
            BodyLine::Comment(_) => None,
        })
    }

    /// Replace the entries with `new` (key, value) pairs. Keys that stay keep their position
    /// and comments stay where they were; new keys are appended in the given order.
    pub fn set_entries(&mut self, new: &[(String, String)]) {
        let mut pending: Vec<Option<&(String, String)>> = new.iter().map(Some).collect();
        let old = std::mem::take(&mut self.body);
        let mut body = Vec::with_capacity(old.len() + new.len());
        for line in old.iter().cloned() {
            match line {
                BodyLine::Comment(c) => body.push(BodyLine::Comment(c)),
                BodyLine::Entry(e) => {
                    // the next pending pair with this key takes this line's place
                    if let Some(slot) = pending
                        .iter_mut()
                        .find(|p| p.is_some_and(|(k, _)| *k == e.key))
                    {
                        if let Some((k, v)) = slot.take() {
                            body.push(BodyLine::Entry(Entry {
                                key: k.clone(),
                                value: v.clone(),
                                line: e.line,
                            }));
                        }
                    }
                }
            }
        }
        for (k, v) in pending.into_iter().flatten() {
            body.push(BodyLine::Entry(Entry {
                key: k.clone(),
                value: v.clone(),
                line: 0,
            }));
        }
        // only a real change drops the verbatim text
        if body != old {
            self.original = None;
        }
        self.body = body;
    }

    fn render(&self, out: &mut String) {
        if let Some(lines) = &self.original {
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
            return;
        }
        out.push_str(&format!("{}: {}\n", self.section_type, self.name));
        for line in &self.body {
            match line {
                BodyLine::Comment(c) => out.push_str(c),
                BodyLine::Entry(e) if e.value.is_empty() => out.push_str(&format!("\t{}", e.key)),
                BodyLine::Entry(e) => out.push_str(&format!("\t{} {}", e.key, e.value)),
            }
            out.push('\n');
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// Blank lines and comments between sections, verbatim.
    Text(String),
    Section(Section),
}

/// A parsed section-config file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SectionFile {
    /// The file it was read from (for error messages).
    pub path: PathBuf,
    items: Vec<Item>,
}

impl SectionFile {
    /// An empty file that will be written to `path`.
    pub fn empty(path: &Path) -> Self {
        SectionFile {
            path: path.to_path_buf(),
            items: Vec::new(),
        }
    }

    /// Parse `text` read from `path`. Errors name the file and line.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let err = |line: usize, message: String| Error::Config {
            file: path.to_path_buf(),
            line: Some(line),
            section: None,
            key: None,
            message,
        };
        let mut items = Vec::new();
        let mut current: Option<Section> = None;
        let mut seen: Vec<(String, usize)> = Vec::new();
        // the final newline terminates the last line; it does not start another one
        let lines = text.strip_suffix('\n').unwrap_or(text);
        let lines = (!text.is_empty())
            .then(|| lines.split('\n'))
            .into_iter()
            .flatten();
        for (idx, raw) in lines.enumerate() {
            let lineno = idx + 1;
            let is_blank = raw.trim().is_empty();
            let is_comment = raw.trim_start().starts_with('#');
            let indented = raw.starts_with([' ', '\t']);
            if let Some(sec) = current.as_mut() {
                if is_blank {
                    items.push(Item::Section(current.take().expect("checked above")));
                    items.push(Item::Text(raw.to_string()));
                    continue;
                }
                if is_comment {
                    sec.body.push(BodyLine::Comment(raw.to_string()));
                    push_original(sec, raw);
                    continue;
                }
                if indented {
                    let t = raw.trim_start_matches([' ', '\t']);
                    let (key, value) = match t.find([' ', '\t']) {
                        Some(i) => (&t[..i], t[i..].trim_start_matches([' ', '\t'])),
                        None => (t, ""),
                    };
                    // trailing blanks are not part of a value (CR is, and validation rejects it)
                    let value = value.trim_end_matches([' ', '\t']);
                    sec.body.push(BodyLine::Entry(Entry {
                        key: key.to_string(),
                        value: value.to_string(),
                        line: lineno,
                    }));
                    push_original(sec, raw);
                    continue;
                }
                // a new header right after a section: close the old one
                items.push(Item::Section(current.take().expect("checked above")));
            }
            if is_blank || is_comment {
                items.push(Item::Text(raw.to_string()));
                continue;
            }
            if indented {
                return Err(err(
                    lineno,
                    "indented 'key value' line outside of a section (expected '<type>: <name>' first)"
                        .into(),
                ));
            }
            let Some((ty, name)) = raw.split_once(':') else {
                return Err(err(
                    lineno,
                    format!(
                        "expected a section header '<type>: <name>', got '{}'",
                        shorten(raw)
                    ),
                ));
            };
            let (ty, name) = (ty.trim(), name.trim());
            let word = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            };
            if !word(ty) || !word(name) {
                return Err(err(
                    lineno,
                    format!("malformed section header '{}'", shorten(raw)),
                ));
            }
            if let Some((_, first)) = seen.iter().find(|(n, _)| n == name) {
                return Err(err(
                    lineno,
                    format!("duplicate section name '{name}' (first defined on line {first})"),
                ));
            }
            seen.push((name.to_string(), lineno));
            current = Some(Section {
                section_type: ty.to_string(),
                name: name.to_string(),
                line: lineno,
                body: Vec::new(),
                original: Some(vec![raw.to_string()]),
            });
        }
        if let Some(sec) = current.take() {
            items.push(Item::Section(sec));
        }
        Ok(SectionFile {
            path: path.to_path_buf(),
            items,
        })
    }

    /// Read and parse `path`; a missing file is an empty config.
    pub fn read(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|e| Error::Config {
                    file: path.to_path_buf(),
                    line: None,
                    section: None,
                    key: None,
                    message: format!(
                        "file is not valid UTF-8 (at byte {})",
                        e.utf8_error().valid_up_to()
                    ),
                })?;
                Self::parse(path, &text)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::empty(path)),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// All sections in file order.
    pub fn sections(&self) -> impl Iterator<Item = &Section> {
        self.items.iter().filter_map(|i| match i {
            Item::Section(s) => Some(s),
            Item::Text(_) => None,
        })
    }

    /// The section called `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections().find(|s| s.name == name)
    }

    /// The section called `name`, mutable.
    pub fn section_mut(&mut self, name: &str) -> Option<&mut Section> {
        self.items.iter_mut().find_map(|i| match i {
            Item::Section(s) if s.name == name => Some(s),
            _ => None,
        })
    }

    /// Append a section (separated by a blank line).
    pub fn push(&mut self, section: Section) {
        if matches!(self.items.last(), Some(Item::Section(_))) {
            self.items.push(Item::Text(String::new()));
        }
        self.items.push(Item::Section(section));
    }

    /// Remove the section called `name` (and the blank line after it); true if it existed.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(i) = self
            .items
            .iter()
            .position(|it| matches!(it, Item::Section(s) if s.name == name))
        else {
            return false;
        };
        self.items.remove(i);
        if matches!(self.items.get(i), Some(Item::Text(t)) if t.trim().is_empty()) {
            self.items.remove(i);
        }
        true
    }

    /// The file text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for item in &self.items {
            match item {
                Item::Text(t) => {
                    out.push_str(t);
                    out.push('\n');
                }
                Item::Section(s) => s.render(&mut out),
            }
        }
        out
    }
}

fn push_original(sec: &mut Section, raw: &str) {
    if let Some(orig) = sec.original.as_mut() {
        orig.push(raw.to_string());
    }
}

fn shorten(s: &str) -> String {
    let s: String = s.chars().take(60).collect();
    s.escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# managed by oxnotify\n\nsmtp: alerts\n\tserver smtp.example.com\n    # keep this comment\n\tmailto a@example.com\n\tmailto b@example.com\n\nsendmail: local\n\tmailto-user root@pam\n\tcomment  odd   spacing kept \n\nmatcher: m1\n\tmode all\n";

    #[test]
    fn round_trips_byte_for_byte() {
        let f = SectionFile::parse(Path::new("x.cfg"), SAMPLE).unwrap();
        assert_eq!(f.render(), SAMPLE);
        let names: Vec<_> = f.sections().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["alerts", "local", "m1"]);
        let mailto: Vec<_> = f
            .section("alerts")
            .unwrap()
            .entries()
            .filter(|e| e.key == "mailto")
            .map(|e| (e.value.as_str(), e.line))
            .collect();
        assert_eq!(mailto, [("a@example.com", 6), ("b@example.com", 7)]);
    }

    #[test]
    fn modifying_one_section_keeps_others_and_comments() {
        let mut f = SectionFile::parse(Path::new("x.cfg"), SAMPLE).unwrap();
        let s = f.section_mut("alerts").unwrap();
        s.set_entries(&[
            ("server".into(), "mail.example.org".into()),
            ("mailto".into(), "c@example.com".into()),
            ("port".into(), "587".into()),
        ]);
        let out = f.render();
        assert_eq!(
            out,
            "# managed by oxnotify\n\nsmtp: alerts\n\tserver mail.example.org\n    # keep this comment\n\tmailto c@example.com\n\tport 587\n\nsendmail: local\n\tmailto-user root@pam\n\tcomment  odd   spacing kept \n\nmatcher: m1\n\tmode all\n"
        );
        assert!(f.remove("local"));
        assert!(!f.render().contains("sendmail"));
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = SectionFile::parse(Path::new("/etc/x.cfg"), "smtp: a\n\tserver x\n\nsmtp: a\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/x.cfg line 4") && e.contains("duplicate"),
            "{e}"
        );
        let e = SectionFile::parse(Path::new("x.cfg"), "\tserver x\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 1") && e.contains("outside of a section"),
            "{e}"
        );
        let e = SectionFile::parse(Path::new("x.cfg"), "garbage here\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("section header"), "{e}");
    }
}
