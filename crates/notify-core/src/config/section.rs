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
//!
//! Reading is lenient, like the stack's own section-config parser: a malformed line does not
//! fail the file. A section with a bad line is kept verbatim and carries a [`Problem`] (its
//! owner decides: an SMTP target with a problem is unusable, a `matcher:` section is none of
//! our business); lines that belong to no section are kept verbatim as a broken block. Problem
//! messages name the line but never contain its text (the private file holds secrets, and a
//! lost indentation or a `password=VALUE` typo must not put the value into an error).

use crate::error::{Error, Result};
use crate::store::local;
use std::path::{Path, PathBuf};

/// How the value after a key is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueMode {
    /// Blanks between key and value and at the end of the line are not part of the value
    /// (as the stack's parser reads hand-aligned public files).
    #[default]
    Trimmed,
    /// Exactly one blank separates key and value; everything after it, leading and trailing
    /// blanks included, is the value. For the private file: secrets stay byte-exact.
    Exact,
}

/// A malformed line: where it is and what is wrong (never the line's text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong and what to do.
    pub message: String,
}

/// One `key value` line of a section.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value (may be empty).
    pub value: String,
    /// 1-based line number in the file it was read from (0 for entries added in memory).
    pub line: usize,
}

// values may be secrets (private file): Debug shows the key only
impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq)]
enum BodyLine {
    Comment(String),
    Entry(Entry),
    /// A line that is neither a comment nor an indented entry (lost indentation).
    Invalid(String),
}

/// A section: header plus body. `original` holds the exact text it was read from, written
/// back unchanged unless the section was modified.
#[derive(Clone, PartialEq, Eq)]
pub struct Section {
    /// Section type (`smtp`, `sendmail`, `matcher`, ...).
    pub section_type: String,
    /// Section name (the target name).
    pub name: String,
    /// 1-based line of the header (0 for new sections).
    pub line: usize,
    body: Vec<BodyLine>,
    original: Option<Vec<String>>,
    problems: Vec<Problem>,
}

// the body may hold secrets: Debug shows type, name, keys and problems only
impl std::fmt::Debug for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Section")
            .field("section_type", &self.section_type)
            .field("name", &self.name)
            .field("line", &self.line)
            .field("entries", &self.entries().collect::<Vec<_>>())
            .field("problems", &self.problems)
            .finish_non_exhaustive()
    }
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
            problems: Vec::new(),
        }
    }

    /// The key/value entries in file order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.body.iter().filter_map(|l| match l {
            BodyLine::Entry(e) => Some(e),
            _ => None,
        })
    }

    /// The malformed lines of this section (empty for a well-formed one).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Replace the entries with `new` (key, value) pairs. Keys that stay keep their position
    /// and comments stay where they were; new keys are appended in the given order.
    pub fn set_entries(&mut self, new: &[(String, String)]) {
        let mut pending: Vec<Option<&(String, String)>> = new.iter().map(Some).collect();
        let old = std::mem::take(&mut self.body);
        let mut body = Vec::with_capacity(old.len() + new.len());
        for line in old.iter().cloned() {
            match line {
                BodyLine::Comment(_) | BodyLine::Invalid(_) => body.push(line),
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
                BodyLine::Comment(c) | BodyLine::Invalid(c) => out.push_str(c),
                BodyLine::Entry(e) if e.value.is_empty() => out.push_str(&format!("\t{}", e.key)),
                // one blank: read back exactly in both value modes as long as the value
                // has no outer blanks (the private file, read exactly, keeps those too)
                BodyLine::Entry(e) => out.push_str(&format!("\t{} {}", e.key, e.value)),
            }
            out.push('\n');
        }
    }
}

/// Lines that belong to no section (a malformed header and what follows it up to the next
/// blank line or header), kept verbatim.
#[derive(Clone, PartialEq, Eq)]
struct Broken {
    problem: Problem,
    lines: Vec<String>,
}

#[derive(Clone, PartialEq, Eq)]
enum Item {
    /// Blank lines and comments between sections, verbatim.
    Text(String),
    Section(Section),
    Broken(Broken),
}

/// A parsed section-config file.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SectionFile {
    /// The file it was read from (for error messages).
    pub path: PathBuf,
    items: Vec<Item>,
    mode: ValueMode,
    /// False if rendering would not reproduce the text it was read from: writes refuse.
    round_trips: bool,
}

// the file may hold secrets: Debug shows the sections' names and keys only
impl std::fmt::Debug for SectionFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("SectionFile");
        d.field("path", &self.path);
        if self.mode == ValueMode::Exact {
            // the private file: even a key may be a secret (`password=VALUE`)
            let names: Vec<_> = self
                .sections()
                .map(|s| (&s.section_type, &s.name, s.line))
                .collect();
            d.field("sections", &names);
        } else {
            d.field("sections", &self.sections().collect::<Vec<_>>());
        }
        d.field("problems", &self.problems())
            .finish_non_exhaustive()
    }
}

impl SectionFile {
    /// An empty file that will be written to `path`.
    pub fn empty(path: &Path) -> Self {
        SectionFile {
            path: path.to_path_buf(),
            items: Vec::new(),
            mode: ValueMode::Trimmed,
            round_trips: true,
        }
    }

    /// An empty file read in `mode` (the private file reads values exactly).
    pub fn empty_with(path: &Path, mode: ValueMode) -> Self {
        SectionFile {
            mode,
            ..Self::empty(path)
        }
    }

    /// Parse `text` read from `path` strictly: the first malformed line is an error naming
    /// the file and line (not its text).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let file = Self::parse_lenient(path, text, ValueMode::Trimmed);
        match file.problems().into_iter().next() {
            Some(p) => Err(problem_error(path, None, &p)),
            None => Ok(file),
        }
    }

    /// Parse `text` read from `path`, keeping malformed parts verbatim (see
    /// [`SectionFile::problems`] and [`Section::problems`]).
    pub fn parse_lenient(path: &Path, text: &str, mode: ValueMode) -> Self {
        let mut p = Parser {
            mode,
            items: Vec::new(),
            current: None,
            broken: None,
            seen: Vec::new(),
            last_section: None,
        };
        // the final newline terminates the last line; it does not start another one
        let lines = text.strip_suffix('\n').unwrap_or(text);
        let lines = (!text.is_empty())
            .then(|| lines.split('\n'))
            .into_iter()
            .flatten();
        for (idx, raw) in lines.enumerate() {
            p.line(idx + 1, raw);
        }
        p.close();
        let mut file = SectionFile {
            path: path.to_path_buf(),
            items: p.items,
            mode,
            round_trips: true,
        };
        let rendered = file.render();
        // a missing final newline is the one change a write may make
        file.round_trips =
            rendered == text || (!text.ends_with('\n') && rendered == format!("{text}\n"));
        file
    }

    /// Read and parse `path` leniently; a missing file is an empty config. Anything but a
    /// regular file (a FIFO would block every reader) is refused.
    pub fn read(path: &Path, mode: ValueMode) -> Result<Self> {
        match local::read_regular(path)? {
            Some(bytes) => {
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
                Ok(Self::parse_lenient(path, &text, mode))
            }
            None => Ok(Self::empty_with(path, mode)),
        }
    }

    /// Malformed lines outside any section, and every problem of every section, in file
    /// order.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for item in &self.items {
            match item {
                Item::Broken(b) => out.push(b.problem.clone()),
                Item::Section(s) => out.extend(s.problems.iter().cloned()),
                Item::Text(_) => {}
            }
        }
        out
    }

    /// Malformed lines that belong to no section (a bad header, a duplicate name).
    pub fn stray_problems(&self) -> Vec<Problem> {
        self.items
            .iter()
            .filter_map(|i| match i {
                Item::Broken(b) => Some(b.problem.clone()),
                _ => None,
            })
            .collect()
    }

    /// False if writing the file back would change it in a way this parser cannot account
    /// for; callers must then refuse to write.
    pub fn round_trips(&self) -> bool {
        self.round_trips
    }

    /// All sections in file order.
    pub fn sections(&self) -> impl Iterator<Item = &Section> {
        self.items.iter().filter_map(|i| match i {
            Item::Section(s) => Some(s),
            _ => None,
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
        if matches!(self.items.last(), Some(Item::Section(_) | Item::Broken(_))) {
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
                Item::Broken(b) => {
                    for l in &b.lines {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }
}

/// The config error for `problem` in `file` (section name where it belongs to one).
pub fn problem_error(file: &Path, section: Option<&str>, problem: &Problem) -> Error {
    Error::Config {
        file: file.to_path_buf(),
        line: Some(problem.line),
        section: section.map(str::to_string),
        key: None,
        message: problem.message.clone(),
    }
}

struct Parser {
    mode: ValueMode,
    items: Vec<Item>,
    current: Option<Section>,
    broken: Option<Broken>,
    /// Section names and the line they were first defined on.
    seen: Vec<(String, usize)>,
    /// Index in `items` of the last section closed, while only blank lines and comments
    /// followed it.
    last_section: Option<usize>,
}

enum Header {
    Valid(String, String),
    Malformed(&'static str),
}

fn header(raw: &str) -> Header {
    let Some((ty, name)) = raw.split_once(':') else {
        return Header::Malformed(
            "expected a section header '<type>: <name>' (an entry that lost its indentation?)",
        );
    };
    let (ty, name) = (ty.trim(), name.trim());
    let word = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !word(ty) || !word(name) {
        return Header::Malformed(
            "malformed section header (expected '<type>: <name>' of letters, digits, '-', '_', '.')",
        );
    }
    Header::Valid(ty.to_string(), name.to_string())
}

impl Parser {
    fn line(&mut self, lineno: usize, raw: &str) {
        let is_blank = raw.trim().is_empty();
        let is_comment = raw.trim_start().starts_with('#');
        let indented = raw.starts_with([' ', '\t']);
        if let Some(sec) = self.current.as_mut() {
            if is_blank {
                self.close();
                self.items.push(Item::Text(raw.to_string()));
                return;
            }
            if is_comment {
                sec.body.push(BodyLine::Comment(raw.to_string()));
                push_original(sec, raw);
                return;
            }
            if indented {
                let entry = self.entry(lineno, raw);
                if let Some(sec) = self.current.as_mut() {
                    sec.body.push(BodyLine::Entry(entry));
                    push_original(sec, raw);
                }
                return;
            }
            if let Header::Malformed(_) = header(raw) {
                // inside a section: an entry that lost its indentation, part of this section
                sec.problems.push(Problem {
                    line: lineno,
                    message: "line is not indented: entries of a section start with a blank \
                              or tab (the line's text is not shown)"
                        .into(),
                });
                sec.body.push(BodyLine::Invalid(raw.to_string()));
                push_original(sec, raw);
                return;
            }
            // a new header right after a section: close the old one
            self.close();
        }
        if let Some(b) = self.broken.as_mut() {
            let is_header = !indented && matches!(header(raw), Header::Valid(..));
            if !is_blank && !is_header {
                b.lines.push(raw.to_string());
                return;
            }
            self.close();
        }
        if is_blank || is_comment {
            self.items.push(Item::Text(raw.to_string()));
            return;
        }
        if indented {
            // a blank line inside a section split it: the part before must not be used
            // without what follows (a lost `disable 1`)
            if let Some(Item::Section(prev)) = self.last_section.and_then(|i| self.items.get_mut(i))
            {
                prev.problems.push(Problem {
                    line: lineno,
                    message: format!(
                        "indented lines after a blank line (line {lineno} ff.) belong to no \
                         section: a blank line ends a section; remove it or fix the indentation"
                    ),
                });
            }
            self.start_broken(
                lineno,
                raw,
                "indented 'key value' line outside of a section (expected '<type>: <name>' first)",
            );
            return;
        }
        match header(raw) {
            Header::Malformed(message) => self.start_broken(lineno, raw, message),
            Header::Valid(ty, name) => {
                if let Some((_, first)) = self.seen.iter().find(|(n, _)| *n == name) {
                    let message =
                        format!("duplicate section name (first defined on line {first}); this section is ignored");
                    self.start_broken(lineno, raw, &message);
                    return;
                }
                self.seen.push((name.clone(), lineno));
                self.current = Some(Section {
                    section_type: ty,
                    name,
                    line: lineno,
                    body: Vec::new(),
                    original: Some(vec![raw.to_string()]),
                    problems: Vec::new(),
                });
            }
        }
    }

    fn entry(&self, lineno: usize, raw: &str) -> Entry {
        let t = raw.trim_start_matches([' ', '\t']);
        let (key, value) = match t.find([' ', '\t']) {
            Some(i) => match self.mode {
                ValueMode::Trimmed => (
                    &t[..i],
                    // trailing blanks are not part of a value (CR is, and validation rejects it)
                    t[i..]
                        .trim_start_matches([' ', '\t'])
                        .trim_end_matches([' ', '\t']),
                ),
                // the separator is one ASCII blank: skipping one byte stays on a char boundary
                ValueMode::Exact => (&t[..i], &t[i + 1..]),
            },
            None => (t, ""),
        };
        Entry {
            key: key.to_string(),
            value: value.to_string(),
            line: lineno,
        }
    }

    fn start_broken(&mut self, lineno: usize, raw: &str, message: &str) {
        self.broken = Some(Broken {
            problem: Problem {
                line: lineno,
                message: message.to_string(),
            },
            lines: vec![raw.to_string()],
        });
    }

    fn close(&mut self) {
        if let Some(sec) = self.current.take() {
            self.items.push(Item::Section(sec));
            self.last_section = Some(self.items.len() - 1);
        }
        if let Some(b) = self.broken.take() {
            self.items.push(Item::Broken(b));
            self.last_section = None;
        }
    }
}

fn push_original(sec: &mut Section, raw: &str) {
    if let Some(orig) = sec.original.as_mut() {
        orig.push(raw.to_string());
    }
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
