//! podman's TOML configuration files (storage.conf, containers.conf): parsed
//! with exact error positions and edited in place with `toml_edit`, so that
//! comments, order, formatting and keys podstack does not own survive byte
//! for byte. Every function here is pure over text, except [`load`], the one
//! way podstack reads such a file.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use toml_edit::{Array, DocumentMut, Item, Table, Value};

/// A TOML file that does not parse: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// The parser's message, first line.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: invalid TOML: {}; podstack left the file untouched: fix that line, or move the file aside to start from podman's defaults",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// Parses `text` (read from `path`) into an editable document.
pub fn parse(path: &Path, text: &str) -> Result<DocumentMut, ParseError> {
    text.parse::<DocumentMut>().map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start).min(text.len());
        let (line, column) = line_column(text, offset);
        let message = e
            .message()
            .lines()
            .next()
            .unwrap_or("parse error")
            .trim()
            .to_string();
        ParseError {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    })
}

/// Reads and parses the file at `path`: its text and document, or `None` when
/// it does not exist. Any other read error, and a parse error, is an error.
pub fn load(path: &Path) -> anyhow::Result<Option<(String, DocumentMut)>> {
    let text = match fs_err::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::Error::new(e).context("cannot read podman's configuration")),
    };
    let doc = parse(path, &text)?;
    Ok(Some((text, doc)))
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

/// Sets `table.key` to `value`, returning whether the document changed.
///
/// An existing key keeps its place, its comments and the spacing around its
/// value; a new key goes at the end of its table with `note` as a comment
/// above it; a missing table is added at the end of the file.
pub fn set(doc: &mut DocumentMut, table: &str, key: &str, value: &ConfValue, note: &str) -> bool {
    let root = doc.as_table_mut();
    if !root.contains_key(table) {
        let mut t = Table::new();
        t.set_implicit(false);
        root.insert(table, Item::Table(t));
    }
    let Some(t) = root.get_mut(table).and_then(Item::as_table_like_mut) else {
        // `table` exists but is not a table (e.g. `engine = 1`): replace it, keeping nothing
        // that could not have worked for podman anyway.
        root.insert(table, Item::Table(Table::new()));
        return set(doc, table, key, value, note);
    };
    match t.get_mut(key) {
        Some(item) if value.matches(item) => false,
        Some(item) => {
            let mut new = value.to_value();
            if let Some(old) = item.as_value() {
                *new.decor_mut() = old.decor().clone();
            }
            *item = Item::Value(new);
            true
        }
        None => {
            t.insert(key, Item::Value(value.to_value()));
            if let Some(mut k) = t.key_mut(key) {
                let prefix = if note.is_empty() {
                    String::new()
                } else {
                    format!("# podstack: {note}\n")
                };
                k.leaf_decor_mut().set_prefix(prefix);
            }
            true
        }
    }
}

/// Merges `over` into `base` the way podman layers containers.conf files:
/// key by key, tables recursively, any other value (arrays too) replaced whole.
pub fn merge(base: &mut DocumentMut, over: &DocumentMut) {
    merge_table(base.as_table_mut(), over.as_table());
}

fn merge_table(base: &mut Table, over: &Table) {
    for (key, item) in over.iter() {
        match (
            base.get_mut(key).and_then(Item::as_table_mut),
            item.as_table(),
        ) {
            (Some(b), Some(o)) => merge_table(b, o),
            _ => {
                base.insert(key, item.clone());
            }
        }
    }
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
            .map(str::to_string),
        graphroot: path("graphroot"),
        runroot: path("runroot"),
    }
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

    #[test]
    fn untouched_documents_round_trip_byte_for_byte() {
        let doc = parse(Path::new("s.conf"), USER_STORAGE).unwrap();
        assert_eq!(doc.to_string(), USER_STORAGE);
    }

    #[test]
    fn changing_a_value_keeps_its_comment_and_everything_else() {
        let mut doc = parse(Path::new("s.conf"), USER_STORAGE).unwrap();
        assert!(set(
            &mut doc,
            "storage",
            "driver",
            &ConfValue::Str("vfs".into()),
            "why"
        ));
        let want = USER_STORAGE.replace("driver = \"overlay\"", "driver = \"vfs\"");
        assert_eq!(doc.to_string(), want);
        assert!(!set(
            &mut doc,
            "storage",
            "driver",
            &ConfValue::Str("vfs".into()),
            "why"
        ));
    }

    #[test]
    fn new_keys_and_tables_are_appended_with_a_note() {
        let text = "# user header\n[containers]\nfoo = \"bar\" # theirs\n";
        let mut doc = parse(Path::new("c.conf"), text).unwrap();
        let ulimits = ConfValue::List(vec!["nofile=20000:20000".into()]);
        assert!(set(
            &mut doc,
            "containers",
            "default_ulimits",
            &ulimits,
            "rlimits capped here"
        ));
        assert!(set(
            &mut doc,
            "engine",
            "runtime",
            &ConfValue::Str("runc".into()),
            "crun fails"
        ));
        let out = doc.to_string();
        assert!(
            out.starts_with("# user header\n[containers]\nfoo = \"bar\" # theirs\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "# podstack: rlimits capped here\ndefault_ulimits = [\"nofile=20000:20000\"]\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("\n[engine]\n# podstack: crun fails\nruntime = \"runc\"\n"),
            "{out}"
        );
        let reparsed = parse(Path::new("c.conf"), &out).unwrap();
        assert_eq!(get_str(&reparsed, "engine", "runtime"), Some("runc"));
        assert_eq!(
            get_list(&reparsed, "containers", "default_ulimits").unwrap(),
            vec!["nofile=20000:20000"]
        );
        assert!(!set(
            &mut doc,
            "containers",
            "default_ulimits",
            &ulimits,
            ""
        ));
    }

    #[test]
    fn merging_layers_keys_and_replaces_arrays() {
        let mut base = parse(Path::new("a"), "[engine]\nruntime = \"crun\"\ntmp_dir = \"/t\"\n[engine.runtimes]\nrunc = [\"/a\"]\n[containers]\ndefault_ulimits = [\"core=0:0\", \"x=1:1\"]\n").unwrap();
        let over = parse(Path::new("b"), "[engine]\nruntime = \"runc\"\n[engine.runtimes]\ncrun = [\"/b\"]\n[containers]\ndefault_ulimits = [\"nofile=5:5\"]\n").unwrap();
        merge(&mut base, &over);
        assert_eq!(get_str(&base, "engine", "runtime"), Some("runc"));
        assert_eq!(get_str(&base, "engine", "tmp_dir"), Some("/t"));
        assert_eq!(
            get_list(&base, "containers", "default_ulimits").unwrap(),
            vec!["nofile=5:5"]
        );
        let runtimes = base["engine"]["runtimes"].as_table().unwrap();
        assert!(runtimes.contains_key("runc") && runtimes.contains_key("crun"));
    }

    #[test]
    fn load_tells_missing_from_broken() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("missing.conf")).unwrap().is_none());
        let good = dir.path().join("good.conf");
        fs_err::write(&good, "[engine]\nruntime = \"runc\"\n").unwrap();
        let (text, doc) = load(&good).unwrap().unwrap();
        assert_eq!(doc.to_string(), text);
        let bad = dir.path().join("bad.conf");
        fs_err::write(&bad, "[engine\n").unwrap();
        let err = format!("{:#}", load(&bad).unwrap_err());
        assert!(
            err.contains("bad.conf:1:") && err.contains("invalid TOML"),
            "{err}"
        );
        // A folder where a file should be is an error too, not "missing".
        assert!(load(dir.path()).is_err());
    }

    #[test]
    fn parse_errors_carry_line_and_column() {
        let text = "[storage]\ndriver = \"vfs\"\ngraphroot = /var/lib\n";
        let err = parse(Path::new("/etc/containers/storage.conf"), text).unwrap_err();
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
        let doc = parse(Path::new("s"), USER_STORAGE).unwrap();
        let s = storage_settings(&doc);
        assert_eq!(s.driver.as_deref(), Some("overlay"));
        assert_eq!(
            s.graphroot,
            Some(PathBuf::from("/var/lib/containers/storage"))
        );
        let empty = parse(Path::new("s"), "").unwrap();
        assert_eq!(storage_settings(&empty), StorageSettings::default());
    }
}
