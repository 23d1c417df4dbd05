//! podman's TOML configuration files (storage.conf, containers.conf): read,
//! checked as podman reads them, and edited in place with `toml_edit`.
//!
//! Guarantees:
//! - a file podman could not read is refused with `FILE:LINE:COLUMN`, what
//!   is wrong and the fix, and never edited: invalid TOML, constructs of
//!   TOML 1.1 that podman's TOML 1.0 parser rejects (`toml_edit` accepts
//!   them), and the keys podstack touches holding the wrong kind of value;
//! - an edit keeps every byte it does not need to change: comments, order,
//!   spacing, keys podstack does not own, a BOM, CRLF line endings, comments
//!   inside multi-line arrays, and the user's shape (inline table, dotted
//!   keys, a table implied by `[engine.runtimes]`);
//! - every edited text is checked again by the same rules before anyone
//!   writes it ([`Loaded::render`]).
//!
//! Everything here is pure over text, except [`load`], the one way podstack
//! reads such a file.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;
use toml_edit::{Array, DocumentMut, Item, Table, Value};

/// The largest configuration file podstack reads (podman's own are ~30 KiB).
pub const MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Which file a text is: the keys podstack checks differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// storage.conf.
    Storage,
    /// containers.conf.
    Containers,
}

/// A configuration file podman could not read, or podstack will not edit:
/// where, what, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (0 when the whole file is meant).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub fix: String,
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)?;
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                self.line,
                self.column,
                self.message
            )?;
        }
        write!(f, "; podstack left the file untouched: {}", self.fix)
    }
}

impl std::error::Error for ConfError {}

const FIX_LINE: &str = "fix that line, or move the file aside to start from podman's defaults";

/// How a file's bytes differ from the plain text `toml_edit` edits (LF line
/// endings, no BOM, a final newline): restored on writing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Form {
    bom: bool,
    /// The text after the BOM, line endings as they were.
    body: String,
    /// The plain text that was parsed.
    plain: String,
}

/// A configuration file as read: its exact text and its editable document.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The file's text exactly as read.
    pub text: String,
    /// The document, parsed from the text without BOM and CRLF.
    pub doc: DocumentMut,
    form: Form,
    kind: Kind,
    path: PathBuf,
}

impl Loaded {
    /// An empty file that does not exist yet.
    pub fn empty(path: &Path, kind: Kind) -> Loaded {
        Loaded {
            text: String::new(),
            doc: DocumentMut::new(),
            form: Form::default(),
            kind,
            path: path.to_path_buf(),
        }
    }

    /// The text to write for `doc` (an edited copy of [`Loaded::doc`]), in
    /// the file's own form (BOM, line endings), checked by the same rules as
    /// a file read from disk. An error here means podstack's edit would give
    /// a file podman could not read, so nothing may be written.
    pub fn render(&self, doc: &DocumentMut) -> Result<String, ConfError> {
        let plain = doc.to_string();
        if plain == self.form.plain {
            return Ok(self.text.clone());
        }
        check(&self.path, &plain, self.kind).map_err(|e| ConfError {
            message: format!(
                "podstack's edit would make this file unreadable to podman ({})",
                e.message
            ),
            fix: "report this as a podstack bug; edit the file by hand meanwhile".into(),
            ..e
        })?;
        let mut text = restore_endings(&self.form.body, &plain);
        if self.form.bom {
            text.insert(0, '\u{feff}');
        }
        Ok(text)
    }
}

/// Parses `text` (read from `path`): strips a BOM and CRLF line endings (both
/// restored by [`Loaded::render`]), then checks it as podman would read it.
pub fn parse(path: &Path, text: &str, kind: Kind) -> Result<Loaded, ConfError> {
    let bom = text.starts_with('\u{feff}');
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut plain = body.replace("\r\n", "\n");
    if !plain.is_empty() && !plain.ends_with('\n') {
        // What podstack appends must start on a line of its own (a last
        // line that is a comment would swallow it).
        plain.push('\n');
    }
    let doc = check(path, &plain, kind)?;
    Ok(Loaded {
        text: text.to_string(),
        doc: doc.into_mut(),
        form: Form {
            bom,
            body: body.to_string(),
            plain,
        },
        kind,
        path: path.to_path_buf(),
    })
}

/// `new` (LF line endings) with each line that was in `original` given the
/// ending it had there (CRLF or LF), and new lines the ending most of the
/// original's lines have (pure).
pub fn restore_endings(original: &str, new: &str) -> String {
    let orig: Vec<(&str, &str)> = original
        .split_inclusive('\n')
        .map(|l| match (l.strip_suffix("\r\n"), l.strip_suffix('\n')) {
            (Some(c), _) => (c, "\r\n"),
            (None, Some(c)) => (c, "\n"),
            _ => (l, ""),
        })
        .collect();
    let crlf = orig.iter().filter(|(_, e)| *e == "\r\n").count();
    let default = if crlf * 2 > orig.iter().filter(|(_, e)| !e.is_empty()).count() {
        "\r\n"
    } else {
        "\n"
    };
    let mut next = 0;
    let mut out = String::with_capacity(new.len() + new.len() / 16);
    for line in new.split_inclusive('\n') {
        let (content, newline) = match line.strip_suffix('\n') {
            Some(c) => (c, true),
            None => (line, false),
        };
        let found = match orig.get(next) {
            Some((c, _)) if *c == content => Some(next),
            _ if content.trim().is_empty() => None,
            _ => orig[next.min(orig.len())..]
                .iter()
                .position(|(c, _)| *c == content)
                .map(|k| next + k),
        };
        let ending = match found {
            Some(k) => {
                next = k + 1;
                if orig[k].1.is_empty() {
                    default
                } else {
                    orig[k].1
                }
            }
            None => default,
        };
        out.push_str(content);
        if newline {
            out.push_str(ending);
        }
    }
    out
}

/// Reads and parses the file at `path`; `None` when it does not exist. Any
/// other read error, a file that is too big or not UTF-8, and everything
/// [`parse`] refuses, is an error naming the file.
pub fn load(path: &Path, kind: Kind) -> anyhow::Result<Option<Loaded>> {
    let whole = |message: String, fix: &str| ConfError {
        path: path.to_path_buf(),
        line: 0,
        column: 0,
        message,
        fix: fix.to_string(),
    };
    let bytes = match crate::fsx::read_bounded(path, MAX_BYTES) {
        Ok(b) => b,
        Err(crate::fsx::ReadError::Missing) => return Ok(None),
        Err(crate::fsx::ReadError::NotAFile(what)) => {
            return Err(whole(
                format!("is {what}, where podman expects a regular file"),
                "move it aside (podman itself would hang or fail on it)",
            )
            .into());
        }
        Err(crate::fsx::ReadError::TooBig(n)) => {
            return Err(whole(
                format!(
                    "is {n} bytes or more, too big for a podman configuration file (at most {MAX_BYTES})"
                ),
                "move it aside and start from podman's defaults",
            )
            .into());
        }
        Err(crate::fsx::ReadError::Io(e)) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot read podman's configuration file {}",
                path.display()
            )));
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        let (line, column) = line_column_bytes(e.as_bytes(), e.utf8_error().valid_up_to());
        ConfError {
            path: path.to_path_buf(),
            line,
            column,
            message: "not UTF-8 text: TOML files are UTF-8".into(),
            fix: "save the file as UTF-8, or move it aside".into(),
        }
    })?;
    Ok(Some(parse(path, &text, kind)?))
}

/// Where a TOML parse error is (a byte offset) and its message's first line.
pub fn toml_error(e: &toml_edit::TomlError) -> (usize, String) {
    let message = e
        .message()
        .lines()
        .next()
        .unwrap_or("parse error")
        .trim()
        .to_string();
    (e.span().map_or(0, |s| s.start), message)
}

/// Parses and checks plain text (no BOM, LF line endings).
fn check(path: &Path, text: &str, kind: Kind) -> Result<toml_edit::Document<String>, ConfError> {
    let at = |offset: usize, message: String, fix: &str| {
        let (line, column) = line_column(text, offset);
        ConfError {
            path: path.to_path_buf(),
            line,
            column,
            message,
            fix: fix.to_string(),
        }
    };
    let doc = toml_edit::Document::parse(text.to_string()).map_err(|e| {
        let (offset, message) = toml_error(&e);
        let fix = if message.contains("duplicate key") || message.contains("cannot extend") {
            "podman 4.3 reads a table split this way, but TOML forbids it and podstack cannot edit such a file safely: gather the table's keys under one [TABLE] header"
        } else {
            FIX_LINE
        };
        at(offset, format!("invalid TOML: {message}"), fix)
    })?;
    let mut problems = Vec::new();
    toml10(doc.as_table(), text, &mut problems);
    shape(&doc, text, kind, &mut problems);
    match problems.into_iter().min_by_key(|(span, _)| span.start) {
        Some((span, message)) => Err(at(span.start, message, FIX_LINE)),
        None => Ok(doc),
    }
}

type Problem = (Range<usize>, String);

/// Finds the TOML 1.1 constructs podman's TOML 1.0 parser rejects.
fn toml10(table: &Table, text: &str, out: &mut Vec<Problem>) {
    for (key, item) in table.iter() {
        if let Some(span) = table.key(key).and_then(|k| k.span()) {
            escapes10(text.get(span.clone()).unwrap_or(""), span, out);
        }
        match item {
            Item::Value(v) => value10(v, text, out),
            Item::Table(t) => toml10(t, text, out),
            Item::ArrayOfTables(a) => a.iter().for_each(|t| toml10(t, text, out)),
            Item::None => {}
        }
    }
}

fn value10(v: &Value, text: &str, out: &mut Vec<Problem>) {
    let Some(span) = v.span() else { return };
    let raw = text.get(span.clone()).unwrap_or("");
    let tomll_11 = |what: &str| {
        (
            span.clone(),
            format!("{what} is TOML 1.1, which podman's TOML 1.0 parser rejects"),
        )
    };
    match v {
        Value::InlineTable(t) => {
            for (k, _) in t.iter() {
                if let Some(span) = t.key(k).and_then(|k| k.span()) {
                    escapes10(text.get(span.clone()).unwrap_or(""), span, out);
                }
            }
            if raw.contains('\n') {
                out.push(tomll_11(
                    "an inline table spanning lines (or holding a comment)",
                ));
            } else if raw.trim_end_matches('}').trim_end().ends_with(',') {
                out.push(tomll_11("a trailing comma in an inline table"));
            }
            for (_, v) in t.iter() {
                value10(v, text, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| value10(v, text, out)),
        Value::String(_) => escapes10(raw, span.clone(), out),
        Value::Datetime(_) => {
            let time = match raw.find(['T', 't', ' ']) {
                Some(i) => &raw[i + 1..],
                None if raw.contains(':') => raw,
                None => "",
            };
            if !time.is_empty() {
                if time.as_bytes().get(5) != Some(&b':') {
                    out.push(tomll_11("a time without seconds"));
                } else if time.get(6..8).is_some_and(|sec| sec > "59") {
                    out.push((
                        span.clone(),
                        "a time with a leap second (:60) is refused by podman's TOML parser".into(),
                    ));
                } else if let Some(frac) = time.get(8..).and_then(|r| r.strip_prefix('.'))
                    && frac.chars().take_while(char::is_ascii_digit).count() > 9
                {
                    out.push((span.clone(), "a time with more than 9 fractional digits is refused by podman's TOML parser".into()));
                }
            }
        }
        _ => {}
    }
}

/// The `\e` and `\xHH` escapes (TOML 1.1) in a basic string or quoted key.
fn escapes10(raw: &str, span: Range<usize>, out: &mut Vec<Problem>) {
    if !raw.starts_with('"') {
        return;
    }
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let what = match chars.next() {
                Some('e') => "the escape \\e",
                Some('x') => "the escape \\xHH",
                _ => continue,
            };
            out.push((
                span.clone(),
                format!("{what} is TOML 1.1, which podman's TOML 1.0 parser rejects"),
            ));
            return;
        }
    }
}

/// What a key podstack reads or writes must hold.
#[derive(Clone, Copy)]
enum Want {
    Table,
    Str,
    OneOf(&'static [&'static str]),
    Strings,
    Ulimits,
}

/// The keys podstack reads or writes, and what podman needs in them.
fn schema(kind: Kind) -> &'static [(&'static str, &'static str, Want)] {
    const STORAGE: &[(&str, &str, Want)] = &[
        ("storage", "", Want::Table),
        (
            "storage",
            "driver",
            Want::OneOf(&[
                "",
                "overlay",
                "overlay2",
                "vfs",
                "btrfs",
                "zfs",
                "devicemapper",
                "aufs",
            ]),
        ),
        ("storage", "runroot", Want::Str),
        ("storage", "graphroot", Want::Str),
        ("storage", "rootless_storage_path", Want::Str),
    ];
    const CONTAINERS: &[(&str, &str, Want)] = &[
        ("containers", "", Want::Table),
        ("engine", "", Want::Table),
        ("network", "", Want::Table),
        ("engine", "runtime", Want::Str),
        (
            "engine",
            "cgroup_manager",
            Want::OneOf(&["systemd", "cgroupfs"]),
        ),
        (
            "engine",
            "events_logger",
            Want::OneOf(&["journald", "file", "none"]),
        ),
        ("engine", "tmp_dir", Want::Str),
        ("containers", "netns", Want::Str),
        ("containers", "log_driver", Want::Str),
        ("containers", "default_ulimits", Want::Ulimits),
        ("containers", "env", Want::Strings),
    ];
    match kind {
        Kind::Storage => STORAGE,
        Kind::Containers => CONTAINERS,
    }
}

fn shape(doc: &toml_edit::Document<String>, text: &str, kind: Kind, out: &mut Vec<Problem>) {
    let root = doc.as_table();
    for (table, key, want) in schema(kind) {
        let Some(t) = root.get(table) else { continue };
        let t_span = root
            .key(table)
            .and_then(|k| k.span())
            .or_else(|| t.span())
            .unwrap_or(0..0);
        if key.is_empty() {
            let what = match t {
                Item::Table(_) => continue,
                Item::Value(Value::InlineTable(_)) => continue,
                Item::ArrayOfTables(_) => "an array of tables ([[...]])",
                Item::Value(v) => v.type_name(),
                Item::None => continue,
            };
            let _ = want;
            out.push((
                t_span,
                format!("`{table}` is {what} here; podman reads it as a table: [{table}]"),
            ));
            continue;
        }
        let Some(item) = t.get(key) else { continue };
        let span = item.span().unwrap_or(t_span.clone());
        let raw = crate::proc::cut(text.get(span.clone()).unwrap_or(""), 80);
        let raw = raw.as_str();
        let v = item.as_value();
        let problem = match (want, v) {
            (Want::Table, _) => None,
            (Want::Str, Some(Value::String(_))) => None,
            (Want::Str, _) => Some(format!("[{table}] {key} must be a string, not {raw}")),
            (Want::OneOf(allowed), Some(Value::String(s))) => {
                (!allowed.contains(&s.value().as_str())).then(|| {
                    format!(
                        "[{table}] {key} = {raw} is not one podman knows ({})",
                        allowed
                            .iter()
                            .filter(|a| !a.is_empty())
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            }
            (Want::OneOf(allowed), _) => Some(format!(
                "[{table}] {key} must be a string such as \"{}\", not {raw}",
                allowed.iter().find(|a| !a.is_empty()).unwrap_or(&"")
            )),
            (Want::Strings | Want::Ulimits, Some(Value::Array(a)))
                if a.iter().all(|v| v.as_str().is_some()) =>
            {
                match want {
                    Want::Ulimits => a
                        .iter()
                        .filter_map(|v| v.as_str())
                        .find(|s| !is_ulimit(s))
                        .map(|s| {
                            format!(
                                "[{table}] {key} holds \"{}\", which is not NAME=SOFT:HARD with a limit podman knows and soft at most hard (\"nofile=1024:1024\")", crate::proc::cut(s, 80)
                            )
                        }),
                    _ => None,
                }
            }
            (Want::Strings | Want::Ulimits, _) => Some(format!(
                "[{table}] {key} must be an array of strings, not {raw}"
            )),
        };
        if let Some(p) = problem {
            out.push((span, p));
        }
    }
}

/// Whether `s` reads as podman's `NAME=SOFT:HARD` (or `NAME=N`): a limit
/// podman knows, numbers, soft at most hard.
fn is_ulimit(s: &str) -> bool {
    const NAMES: &[&str] = &[
        "as",
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ];
    let Some((name, limits)) = s.split_once('=') else {
        return false;
    };
    // -1 is unlimited.
    let num = |v: &str| match v {
        "-1" => Some(u64::MAX),
        _ => v.parse::<u64>().ok(),
    };
    NAMES.contains(&name)
        && match limits.split_once(':') {
            Some((soft, hard)) => matches!((num(soft), num(hard)), (Some(s), Some(h)) if s <= h),
            None => num(limits).is_some(),
        }
}

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

fn line_column_bytes(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    (
        line,
        String::from_utf8_lossy(&before[start..]).chars().count() + 1,
    )
}

/// A value podstack writes: a string or a list of strings (all it needs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ConfValue {
    /// `key = "value"`.
    Str(String),
    /// `key = ["a", "b"]`.
    List(Vec<String>),
}

impl ConfValue {
    fn matches(&self, item: &Item) -> bool {
        match (self, item.as_value()) {
            (ConfValue::Str(s), Some(Value::String(v))) => v.value() == s,
            (ConfValue::List(want), Some(Value::Array(arr))) => {
                arr.len() == want.len()
                    && arr
                        .iter()
                        .zip(want)
                        .all(|(v, w)| v.as_str() == Some(w.as_str()))
            }
            _ => false,
        }
    }

    fn to_value(&self) -> Value {
        match self {
            ConfValue::Str(s) => Value::from(s.as_str()),
            ConfValue::List(items) => {
                let mut arr = Array::new();
                for i in items {
                    arr.push(i.as_str());
                }
                Value::Array(arr)
            }
        }
    }
}

impl fmt::Display for ConfValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_value().to_string().trim())
    }
}

/// The string at `table.key`, if it is one.
pub fn get_str<'a>(doc: &'a DocumentMut, table: &str, key: &str) -> Option<&'a str> {
    doc.get(table)?.get(key)?.as_str()
}

/// The string list at `table.key`, if it is one.
pub fn get_list(doc: &DocumentMut, table: &str, key: &str) -> Option<Vec<String>> {
    let arr = doc.get(table)?.get(key)?.as_array()?;
    Some(
        arr.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
    )
}

/// What [`set`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The key already held the value.
    Unchanged,
    /// The key was added.
    Added,
    /// The key held another value, shown here as TOML.
    Replaced {
        /// The value before.
        was: String,
    },
}

/// Sets `table.key` to `value` in the shape the document already uses.
///
/// An existing key keeps its place, its comments and the spacing around its
/// value; an existing array is edited element by element, so comments among
/// its elements stay. A new key goes at the end of its table (standard,
/// implied, dotted or inline) with `note` as a comment above it (above the
/// whole line for an inline table); a missing table is added at the end of
/// the file, after a file made only of comments. `Err` names a shape podstack
/// will not edit (these are refused by [`parse`] first).
pub fn set(
    doc: &mut DocumentMut,
    table: &str,
    key: &str,
    value: &ConfValue,
    note: &str,
) -> Result<Change, String> {
    let comment = if note.is_empty() {
        String::new()
    } else {
        format!("# podstack: {note}\n")
    };
    let only_comments =
        doc.as_table().is_empty() && !doc.trailing().as_str().unwrap_or("").is_empty();
    let root = doc.as_table_mut();
    if !root.contains_key(table) {
        let mut t = Table::new();
        t.set_implicit(false);
        root.insert(table, Item::Table(t));
        if only_comments {
            // A file made only of comments keeps them on top.
            let trailing = doc.trailing().as_str().unwrap_or("").to_string();
            doc.set_trailing("");
            if let Some(t) = doc.get_mut(table).and_then(Item::as_table_mut) {
                t.decor_mut().set_prefix(trailing);
            }
        }
    }
    let root = doc.as_table_mut();
    let inline = matches!(root.get(table), Some(Item::Value(Value::InlineTable(_))));
    let Some(t) = root.get_mut(table).and_then(Item::as_table_like_mut) else {
        return Err(format!("`{table}` is not a table"));
    };
    let change = match t.get_mut(key) {
        Some(item) if value.matches(item) => return Ok(Change::Unchanged),
        Some(item) => {
            let was = item
                .as_value()
                .map(|v| {
                    let mut v = v.clone();
                    v.decor_mut().clear();
                    v.to_string()
                })
                .unwrap_or_else(|| "a table".into());
            if !replace(item, value) {
                return Err(format!("[{table}] {key} is a table, not a value"));
            }
            Change::Replaced { was }
        }
        None => {
            if inline {
                // The previous last value's trailing space would sit before the comma.
                if let Some((_, last)) = t.iter_mut().last()
                    && let Some(v) = last.as_value_mut()
                {
                    v.decor_mut().set_suffix("");
                }
                let mut v = value.to_value();
                v.decor_mut().set_prefix(" ");
                v.decor_mut().set_suffix(" ");
                t.insert(key, Item::Value(v));
            } else {
                t.insert(key, Item::Value(value.to_value()));
                if let Some(mut k) = t.key_mut(key) {
                    k.leaf_decor_mut().set_prefix(comment.clone());
                }
            }
            Change::Added
        }
    };
    if inline
        && change == Change::Added
        && !comment.is_empty()
        && let Some(mut k) = root.key_mut(table)
    {
        let prefix = k
            .leaf_decor()
            .prefix()
            .and_then(|p| p.as_str())
            .unwrap_or("")
            .to_string();
        if !prefix.contains(comment.trim_end()) {
            k.leaf_decor_mut().set_prefix(format!("{prefix}{comment}"));
        }
    }
    Ok(change)
}

/// Replaces `item`'s value with `value`, keeping its decor, and editing an
/// array element by element. `false` when `item` is not a value.
fn replace(item: &mut Item, value: &ConfValue) -> bool {
    let Some(old) = item.as_value_mut() else {
        return false;
    };
    match (old, value) {
        (Value::Array(arr), ConfValue::List(want)) => {
            // New elements of a multi-line array go on lines of their own,
            // indented like the last one.
            let indent = arr.iter().last().and_then(|v| {
                let p = v.decor().prefix()?.as_str()?;
                p.rfind('\n').map(|i| p[i..].to_string())
            });
            for (i, w) in want.iter().enumerate() {
                match arr.get_mut(i) {
                    Some(v) if v.as_str() == Some(w.as_str()) => {}
                    Some(v) => {
                        let decor = v.decor().clone();
                        *v = Value::from(w.as_str());
                        *v.decor_mut() = decor;
                    }
                    None => {
                        let mut v = Value::from(w.as_str());
                        if let Some(indent) = &indent {
                            v.decor_mut().set_prefix(indent.clone());
                        }
                        arr.push_formatted(v);
                    }
                }
            }
            while arr.len() > want.len() {
                arr.remove(arr.len() - 1);
            }
        }
        (old, value) => {
            let mut new = value.to_value();
            *new.decor_mut() = old.decor().clone();
            *old = new;
        }
    }
    true
}

/// Merges `over` into `base` the way podman layers containers.conf files:
/// key by key, tables recursively (inline and dotted ones too), any other
/// value (arrays too) replaced whole.
pub fn merge(base: &mut DocumentMut, over: &DocumentMut) {
    merge_table(base.as_table_mut(), over.as_table());
}

fn merge_table(base: &mut dyn toml_edit::TableLike, over: &dyn toml_edit::TableLike) {
    for (key, item) in over.iter() {
        let both = base
            .get_mut(key)
            .and_then(Item::as_table_like_mut)
            .zip(item.as_table_like());
        match both {
            Some((b, o)) => merge_table(b, o),
            None => {
                let mut item = item.clone();
                if let Some(v) = item.as_value_mut() {
                    v.decor_mut().clear();
                }
                base.insert(key, normal(item));
            }
        }
    }
}

/// An item with every inline table in it made a standard table, so merged
/// documents render in one plain shape and tables merge into tables.
fn normal(item: Item) -> Item {
    let mut table = match item {
        Item::Value(Value::InlineTable(t)) => t.into_table(),
        Item::Table(t) => t,
        other => return other,
    };
    let keys: Vec<String> = table.iter().map(|(k, _)| k.to_string()).collect();
    for k in keys {
        if let Some(child) = table.remove(&k) {
            table.insert(&k, normal(child));
        }
    }
    table.set_dotted(false);
    Item::Table(table)
}

/// What a storage.conf says about the driver and roots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StorageSettings {
    /// `[storage] driver`.
    pub driver: Option<String>,
    /// `[storage] graphroot`.
    pub graphroot: Option<PathBuf>,
    /// `[storage] runroot`.
    pub runroot: Option<PathBuf>,
}

/// Reads the `[storage]` settings podstack cares about.
pub fn storage_settings(doc: &DocumentMut) -> StorageSettings {
    let path = |k| {
        get_str(doc, "storage", k)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    StorageSettings {
        driver: get_str(doc, "storage", "driver")
            .filter(|s| !s.is_empty())
            .map(|d| if d == "overlay2" { "overlay" } else { d }.to_string()),
        graphroot: path("graphroot"),
        runroot: path("runroot"),
    }
}

/// Where `table.key` is set in `text` (1-based line), for messages.
pub fn line_of(loaded: &Loaded, table: &str, key: &str) -> Option<usize> {
    let plain = loaded
        .text
        .strip_prefix('\u{feff}')
        .unwrap_or(&loaded.text)
        .replace("\r\n", "\n");
    let doc = toml_edit::Document::parse(plain.clone()).ok()?;
    let span = doc.get(table)?.get(key)?.span()?;
    Some(line_column(&plain, span.start).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER_STORAGE: &str = "\
# My storage settings, keep these comments.
[storage]
driver = \"overlay\"   # chosen by hand
runroot = \"/run/containers/storage\"
graphroot = \"/var/lib/containers/storage\"

[storage.options]
# Extra images.
additionalimagestores = []
pull_options = {enable_partial_images = \"false\", use_hard_links = \"false\"}
mystery_key = 42
";

    fn storage(text: &str) -> Loaded {
        parse(Path::new("s.conf"), text, Kind::Storage).unwrap()
    }

    fn containers(text: &str) -> Loaded {
        parse(Path::new("c.conf"), text, Kind::Containers).unwrap()
    }

    fn refused(text: &str, kind: Kind) -> ConfError {
        parse(Path::new("/x/f.conf"), text, kind).unwrap_err()
    }

    /// Sets one key and renders, as configure does.
    fn edit(l: &Loaded, table: &str, key: &str, value: &ConfValue, note: &str) -> String {
        let mut doc = l.doc.clone();
        set(&mut doc, table, key, value, note).unwrap();
        l.render(&doc).unwrap()
    }

    fn s(v: &str) -> ConfValue {
        ConfValue::Str(v.into())
    }

    #[test]
    fn untouched_documents_round_trip_byte_for_byte() {
        let l = storage(USER_STORAGE);
        assert_eq!(l.render(&l.doc).unwrap(), USER_STORAGE);
    }

    #[test]
    fn changing_a_value_keeps_its_comment_and_everything_else() {
        let l = storage(USER_STORAGE);
        let mut doc = l.doc.clone();
        let change = set(&mut doc, "storage", "driver", &s("vfs"), "why").unwrap();
        assert_eq!(
            change,
            Change::Replaced {
                was: "\"overlay\"".into()
            }
        );
        let want = USER_STORAGE.replace("driver = \"overlay\"", "driver = \"vfs\"");
        assert_eq!(l.render(&doc).unwrap(), want);
        assert_eq!(
            set(&mut doc, "storage", "driver", &s("vfs"), "why"),
            Ok(Change::Unchanged)
        );
    }

    #[test]
    fn new_keys_and_tables_are_appended_with_a_note() {
        let text = "# user header\n[containers]\nfoo = \"bar\" # theirs\n";
        let l = containers(text);
        let mut doc = l.doc.clone();
        let ulimits = ConfValue::List(vec!["nofile=20000:20000".into()]);
        set(
            &mut doc,
            "containers",
            "default_ulimits",
            &ulimits,
            "rlimits capped here",
        )
        .unwrap();
        set(&mut doc, "engine", "runtime", &s("runc"), "crun fails").unwrap();
        let out = l.render(&doc).unwrap();
        assert_eq!(
            out,
            "# user header\n[containers]\nfoo = \"bar\" # theirs\n# podstack: rlimits capped here\ndefault_ulimits = [\"nofile=20000:20000\"]\n\n[engine]\n# podstack: crun fails\nruntime = \"runc\"\n"
        );
    }

    #[test]
    fn an_inline_table_is_edited_in_place_and_stays_on_one_line() {
        let l = containers("engine = { tmp_dir = \"/x\", runtime = \"crun\" }\n");
        assert_eq!(
            edit(&l, "engine", "runtime", &s("runc"), "why"),
            "engine = { tmp_dir = \"/x\", runtime = \"runc\" }\n"
        );
        assert_eq!(
            edit(&l, "engine", "events_logger", &s("file"), "no journald"),
            "# podstack: no journald\nengine = { tmp_dir = \"/x\", runtime = \"crun\", events_logger = \"file\" }\n"
        );
    }

    #[test]
    fn dotted_keys_and_implied_tables_keep_their_shape() {
        let l = containers("engine.tmp_dir = \"/x\"\n[containers]\nx = 1\n");
        assert_eq!(
            edit(&l, "engine", "runtime", &s("runc"), "why"),
            "engine.tmp_dir = \"/x\"\n# podstack: why\nengine.runtime = \"runc\"\n[containers]\nx = 1\n"
        );
        let l = containers("[engine.runtimes]\nrunc = [\"/usr/sbin/runc\"]\n");
        let out = edit(&l, "engine", "runtime", &s("runc"), "why");
        let again = containers(&out);
        assert_eq!(get_str(&again.doc, "engine", "runtime"), Some("runc"));
        assert!(
            out.contains("[engine.runtimes]\nrunc = [\"/usr/sbin/runc\"]\n"),
            "{out}"
        );
    }

    #[test]
    fn a_file_of_comments_keeps_them_on_top() {
        let l = containers("# my notes\n# more\n");
        assert_eq!(
            edit(&l, "engine", "runtime", &s("runc"), "why"),
            "# my notes\n# more\n[engine]\n# podstack: why\nruntime = \"runc\"\n"
        );
    }

    #[test]
    fn crlf_and_bom_survive_an_edit() {
        let text = "\u{feff}# mine\r\n[engine]\r\nruntime = \"crun\" # note\r\n";
        let l = containers(text);
        assert_eq!(l.render(&l.doc).unwrap(), text);
        assert_eq!(
            edit(&l, "engine", "runtime", &s("runc"), "why"),
            "\u{feff}# mine\r\n[engine]\r\nruntime = \"runc\" # note\r\n"
        );
    }

    #[test]
    fn mixed_line_endings_and_a_missing_final_newline_are_kept() {
        let text = "[engine]\r\ntmp_dir = \"/t\"\r\n# LF-only\nnum_locks = 2048\r\n";
        let l = containers(text);
        let out = edit(&l, "engine", "runtime", &s("runc"), "why");
        assert_eq!(
            out,
            "[engine]\r\ntmp_dir = \"/t\"\r\n# LF-only\nnum_locks = 2048\r\n# podstack: why\r\nruntime = \"runc\"\r\n"
        );
        let l = containers("# my settings");
        assert_eq!(l.render(&l.doc).unwrap(), "# my settings");
        let out = edit(&l, "engine", "runtime", &s("runc"), "why");
        assert_eq!(
            out,
            "# my settings\n[engine]\n# podstack: why\nruntime = \"runc\"\n"
        );
        let l = containers("[engine]\ntmp_dir = \"/t\" # last");
        let out = edit(&l, "engine", "runtime", &s("runc"), "why");
        assert_eq!(
            out,
            "[engine]\ntmp_dir = \"/t\" # last\n# podstack: why\nruntime = \"runc\"\n"
        );
        containers(&out);
    }

    #[test]
    fn comments_inside_a_multiline_array_stay() {
        let text = "[containers]\ndefault_ulimits = [\n  # core dumps off\n  \"core=0:0\",\n  # mine\n  \"nofile=1:1\",\n]\n";
        let l = containers(text);
        let want = ConfValue::List(vec![
            "core=0:0".into(),
            "nofile=20000:20000".into(),
            "nproc=5:5".into(),
        ]);
        let out = edit(&l, "containers", "default_ulimits", &want, "why");
        assert_eq!(
            out,
            "[containers]\ndefault_ulimits = [\n  # core dumps off\n  \"core=0:0\",\n  # mine\n  \"nofile=20000:20000\",\n  \"nproc=5:5\",\n]\n"
        );
    }

    #[test]
    fn non_tables_where_podman_wants_tables_are_refused_with_their_line() {
        let e = refused("# x\nengine = 1\n", Kind::Containers);
        assert_eq!((e.line, e.column), (2, 1));
        assert!(e.message.contains("`engine` is integer"), "{e}");
        let e = refused("[[engine]]\nruntime = \"runc\"\n", Kind::Containers);
        assert!(e.message.contains("array of tables"), "{e}");
        let e = refused("storage = \"x\"\n", Kind::Storage);
        assert!(
            e.to_string()
                .starts_with("/x/f.conf:1:1: `storage` is string"),
            "{e}"
        );
    }

    #[test]
    fn toml_11_constructs_are_refused() {
        for (text, what) in [
            (
                "engine = { runtime = \"runc\",\n tmp_dir = \"/t\" }\n",
                "spanning lines",
            ),
            ("engine = { runtime = \"runc\", }\n", "trailing comma"),
            ("[engine]\nruntime = \"\\e\"\n", "\\e"),
            ("[engine]\nruntime = \"\\x41\"\n", "\\xHH"),
            ("[engine]\nt = 07:32\n", "without seconds"),
            ("[engine]\nt = 1979-05-27T07:32Z\n", "without seconds"),
        ] {
            let e = refused(text, Kind::Containers);
            assert!(
                e.message.contains(what) && e.message.contains("TOML 1.1"),
                "{text:?}: {e}"
            );
        }
        for (text, what) in [
            ("[\"mine\\e\"]\nnote = 1\n", "\\e"),
            ("[engine]\n\"k\\x41\" = 1\n", "\\xHH"),
            ("[engine]\nx = { \"k\\e\" = 1 }\n", "\\e"),
            ("[engine]\nt = 23:59:60\n", "leap second"),
            ("[engine]\nt = 07:32:00.1234567891\n", "9 fractional"),
        ] {
            let e = refused(text, Kind::Containers);
            assert!(e.message.contains(what), "{text:?}: {e}");
        }
        for ok in [
            "[engine]\nt = 07:32:00\nd = 1979-05-27\nx = 1979-05-27T07:32:00.123Z\ns = 'a\\e'\n",
            "[engine]\nr = [\n  \"a\", # c\n]\n",
        ] {
            containers(ok);
        }
    }

    #[test]
    fn wrong_kinds_of_values_are_refused() {
        let e = refused("[storage]\ndriver = 5\n", Kind::Storage);
        assert_eq!((e.line, e.column), (2, 10));
        assert!(e.message.contains("must be a string"), "{e}");
        let e = refused("[storage]\ndriver = \"nonsense\"\n", Kind::Storage);
        assert!(e.message.contains("not one podman knows"), "{e}");
        let e = refused("[engine]\nruntime = 5\n", Kind::Containers);
        assert!(
            e.message.contains("[engine] runtime must be a string"),
            "{e}"
        );
        let e = refused(
            "[containers]\ndefault_ulimits = \"nofile=1:1\"\n",
            Kind::Containers,
        );
        assert!(e.message.contains("array of strings"), "{e}");
        let e = refused(
            "[containers]\ndefault_ulimits = [\"nofile\"]\n",
            Kind::Containers,
        );
        assert!(e.message.contains("NAME=SOFT:HARD"), "{e}");
        containers("[containers]\ndefault_ulimits = [\"nofile=1024:2048\", \"core=-1\"]\n");
        for bad in ["nofile=10:5", "bogus=1:1", "nofile=-1:5"] {
            let e = refused(
                &format!("[containers]\ndefault_ulimits = [\"{bad}\"]\n"),
                Kind::Containers,
            );
            assert!(e.message.contains("soft at most hard"), "{bad}: {e}");
        }
    }

    #[test]
    fn merging_layers_keys_and_replaces_arrays() {
        let base = containers(
            "[engine]\nruntime = \"crun\"\ntmp_dir = \"/t\"\n[engine.runtimes]\nrunc = [\"/a\"]\n[containers]\ndefault_ulimits = [\"core=0:0\", \"stack=1:1\"]\n",
        );
        let over = containers(
            "[engine]\nruntime = \"runc\"\n[engine.runtimes]\ncrun = [\"/b\"]\n[containers]\ndefault_ulimits = [\"nofile=5:5\"]\n",
        );
        let inline =
            containers("engine = { runtimes = { kata = [\"/k\"] }, events_logger = \"file\" }\n");
        let mut doc = base.doc.clone();
        merge(&mut doc, &over.doc);
        merge(&mut doc, &inline.doc);
        assert_eq!(get_str(&doc, "engine", "events_logger"), Some("file"));
        assert!(doc["engine"]["runtimes"].get("kata").is_some());
        assert_eq!(get_str(&doc, "engine", "runtime"), Some("runc"));
        assert_eq!(get_str(&doc, "engine", "tmp_dir"), Some("/t"));
        assert_eq!(
            get_list(&doc, "containers", "default_ulimits").unwrap(),
            vec!["nofile=5:5"]
        );
        let runtimes = doc["engine"]["runtimes"].as_table().unwrap();
        assert!(runtimes.contains_key("runc") && runtimes.contains_key("crun"));
        // The merged document is itself a file podman can read.
        containers(&doc.to_string());
    }

    #[test]
    fn load_tells_missing_from_broken() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            load(&dir.path().join("missing.conf"), Kind::Containers)
                .unwrap()
                .is_none()
        );
        let good = dir.path().join("good.conf");
        fs_err::write(&good, "[engine]\nruntime = \"runc\"\n").unwrap();
        let l = load(&good, Kind::Containers).unwrap().unwrap();
        assert_eq!(l.doc.to_string(), l.text);
        let bad = dir.path().join("bad.conf");
        fs_err::write(&bad, "[engine\n").unwrap();
        let err = format!("{:#}", load(&bad, Kind::Containers).unwrap_err());
        assert!(
            err.contains("bad.conf:1:") && err.contains("invalid TOML"),
            "{err}"
        );
        let binary = dir.path().join("binary.conf");
        fs_err::write(&binary, b"[engine]\nx = \"\xff\xfe\"\n").unwrap();
        let err = format!("{:#}", load(&binary, Kind::Containers).unwrap_err());
        assert!(
            err.contains("binary.conf:2:") && err.contains("not UTF-8"),
            "{err}"
        );
        let huge = dir.path().join("huge.conf");
        let f = fs_err::File::create(&huge).unwrap();
        f.set_len(MAX_BYTES + 1).unwrap();
        let err = format!("{:#}", load(&huge, Kind::Containers).unwrap_err());
        assert!(err.contains("too big"), "{err}");
        // A folder where a file should be is an error too, not "missing".
        assert!(load(dir.path(), Kind::Containers).is_err());
    }

    #[test]
    fn parse_errors_carry_line_and_column() {
        let text = "[storage]\ndriver = \"vfs\"\ngraphroot = /var/lib\n";
        let err = parse(
            Path::new("/etc/containers/storage.conf"),
            text,
            Kind::Storage,
        )
        .unwrap_err();
        assert_eq!((err.line, err.column), (3, 13));
        let shown = err.to_string();
        assert!(
            shown.starts_with("/etc/containers/storage.conf:3:13: invalid TOML"),
            "{shown}"
        );
        assert!(shown.contains("untouched"));
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncdé\nx", 0), (1, 1));
        assert_eq!(line_column("ab\ncdé\nx", 3), (2, 1));
        assert_eq!(line_column("ab\ncdé\nx", 8), (3, 1));
        assert_eq!(line_column("ab\ncdé", 7), (2, 4));
    }

    #[test]
    fn storage_settings_are_read() {
        let l = storage(USER_STORAGE);
        let s = storage_settings(&l.doc);
        assert_eq!(s.driver.as_deref(), Some("overlay"));
        assert_eq!(
            s.graphroot,
            Some(PathBuf::from("/var/lib/containers/storage"))
        );
        assert_eq!(line_of(&l, "storage", "driver"), Some(3));
        let empty = storage("");
        assert_eq!(storage_settings(&empty.doc), StorageSettings::default());
    }
}
