//! YAML read into a small tree that keeps every node's line and column, so
//! each problem in a compose file can be named `FILE:LINE:COLUMN` (pure).
//!
//! Anchors and aliases are resolved by the parser (with its bound on alias
//! expansion); merge keys (`<<: *defaults`), which compose files use
//! widely, are applied here: the mapping's own keys win.

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

/// A node and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What it holds.
    pub v: Value,
}

/// A node's content.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<(Key, Node)>),
}

/// A mapping key and where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// The key as text.
    pub name: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

/// A YAML syntax or shape error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl Node {
    /// The scalar as text (numbers and booleans as YAML wrote them),
    /// `None` for null, sequences and mappings.
    pub fn text(&self) -> Option<String> {
        match &self.v {
            Value::Str(s) => Some(s.clone()),
            Value::Int(n) => Some(n.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// The entries of a mapping.
    pub fn map(&self) -> Option<&[(Key, Node)]> {
        match &self.v {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The items of a sequence.
    pub fn seq(&self) -> Option<&[Node]> {
        match &self.v {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// What kind of node it is, for messages.
    pub fn kind(&self) -> &'static str {
        match self.v {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// What the document may expand to (text bytes plus a share per node),
/// aliases counted each time they are used: far above any compose file,
/// far below what would exhaust memory.
const MAX_EXPANDED: u64 = 32 << 20;
/// The share of one node in [`MAX_EXPANDED`].
const NODE_COST: u64 = 64;

/// Sizes the document as aliases expand it, before anything is copied.
/// Syntax errors are left to the loader, which reports them.
fn expansion_guard(text: &str) -> Result<(), Error> {
    use saphyr_parser::{Event, Parser};
    use std::collections::HashMap;
    let mut parser = Parser::new_from_str(text);
    // Per open collection: its anchor and its cost so far.
    let mut open: Vec<(usize, u64)> = Vec::new();
    let mut anchors: HashMap<usize, u64> = HashMap::new();
    let mut total: u64 = 0;
    while let Some(Ok((event, span))) = parser.next_event() {
        let cost = match event {
            Event::Scalar(v, _, anchor, _) => {
                let cost = v.len() as u64 + NODE_COST;
                if anchor > 0 {
                    anchors.insert(anchor, cost);
                }
                cost
            }
            Event::Alias(id) => anchors.get(&id).copied().unwrap_or(NODE_COST),
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                open.push((anchor, NODE_COST));
                total += NODE_COST;
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, cost)) = open.pop() {
                    if anchor > 0 {
                        anchors.insert(anchor, cost);
                    }
                    if let Some(parent) = open.last_mut() {
                        parent.1 = parent.1.saturating_add(cost);
                    }
                }
                continue;
            }
            _ => continue,
        };
        if let Some(parent) = open.last_mut() {
            parent.1 = parent.1.saturating_add(cost);
        }
        total = total.saturating_add(cost);
        if total > MAX_EXPANDED {
            return Err(Error {
                line: span.start.line(),
                col: span.start.col() + 1,
                message: format!(
                    "the document expands to more than {} MiB (aliases are copied each time they are used)",
                    MAX_EXPANDED >> 20
                ),
            });
        }
    }
    Ok(())
}

/// Parses one YAML document.
pub fn load(text: &str) -> Result<Node, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    expansion_guard(text)?;
    let docs = MarkedYaml::load_from_str(text).map_err(|e| Error {
        line: e.marker().line(),
        col: e.marker().col() + 1,
        message: e.info().to_string(),
    })?;
    let mut docs = docs.into_iter();
    let Some(first) = docs.next() else {
        return Ok(Node {
            line: 1,
            col: 1,
            v: Value::Null,
        });
    };
    if let Some(second) = docs.next() {
        return Err(Error {
            line: second.span.start.line(),
            col: 1,
            message: "a second YAML document (`---`): a compose file is one document".into(),
        });
    }
    convert(&first, 0)
}

/// Deeper than this is not a compose file (and would exhaust the stack).
const MAX_DEPTH: usize = 64;

fn convert(n: &MarkedYaml<'_>, depth: usize) -> Result<Node, Error> {
    let (line, col) = (n.span.start.line(), n.span.start.col() + 1);
    let err = |message: String| Error { line, col, message };
    if depth > MAX_DEPTH {
        return Err(err(format!("nested more than {MAX_DEPTH} levels deep")));
    }
    let v = match &n.data {
        YamlData::Value(s) => scalar(s),
        YamlData::Representation(s, ..) => Value::Str(s.to_string()),
        YamlData::Tagged(_, inner) => return convert(inner, depth + 1),
        YamlData::Sequence(items) => Value::Seq(
            items
                .iter()
                .map(|i| convert(i, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        YamlData::Mapping(m) => {
            let mut own: Vec<(Key, Node)> = Vec::new();
            let mut merged: Vec<(Key, Node)> = Vec::new();
            let mut merged_names: std::collections::HashSet<String> = Default::default();
            for (k, v) in m.iter() {
                let key = convert(k, depth + 1)?;
                let Some(name) = key.text() else {
                    return Err(Error {
                        line: key.line,
                        col: key.col,
                        message: format!("a mapping key must be a plain value, not {}", key.kind()),
                    });
                };
                let value = convert(v, depth + 1)?;
                if name == "<<" && matches!(key.v, Value::Str(_)) {
                    let sources: Vec<&Node> = match &value.v {
                        Value::Seq(s) => s.iter().collect(),
                        _ => vec![&value],
                    };
                    for src in sources {
                        let Some(entries) = src.map() else {
                            return Err(Error {
                                line: src.line,
                                col: src.col,
                                message: format!(
                                    "a merge key (`<<`) takes a mapping or a list of mappings, not {}",
                                    src.kind()
                                ),
                            });
                        };
                        for (k, v) in entries {
                            if merged_names.insert(k.name.clone()) {
                                merged.push((k.clone(), v.clone()));
                            }
                        }
                    }
                    continue;
                }
                own.push((
                    Key {
                        name,
                        line: key.line,
                        col: key.col,
                    },
                    value,
                ));
            }
            let own_names: std::collections::HashSet<String> =
                own.iter().map(|(k, _)| k.name.clone()).collect();
            for (k, v) in merged {
                if !own_names.contains(&k.name) {
                    own.push((k, v));
                }
            }
            Value::Map(own)
        }
        YamlData::Alias(_) | YamlData::BadValue => {
            return Err(err(
                "a value podstack cannot read (a tag such as !!binary, or a bad alias)".into(),
            ));
        }
    };
    Ok(Node { line, col, v })
}

fn scalar(s: &Scalar<'_>) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Int(*i),
        Scalar::FloatingPoint(f) => Value::Float(f.into_inner()),
        Scalar::String(s) => Value::Str(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_columns_merges_and_errors() {
        let doc = load(
            "\u{feff}x-base: &base\r\n  image: a\r\n  restart: always\r\nservices:\r\n  web:\r\n    <<: *base\r\n    image: b\r\n    ports: [\"80:80\", 81]\r\n",
        )
        .unwrap();
        let web = doc.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.get("image").unwrap().text().as_deref(), Some("b"));
        assert_eq!(
            web.get("restart").unwrap().text().as_deref(),
            Some("always")
        );
        let ports = web.get("ports").unwrap();
        assert_eq!((ports.line, ports.col), (8, 12));
        assert_eq!(ports.seq().unwrap()[1].v, Value::Int(81));
        let e = load("services:\n  web:\n    image: [a\n").unwrap_err();
        assert_eq!(e.line, 4, "{e:?}");
        let e = load("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.message.contains("second YAML document"), "{e:?}");
        assert_eq!(load("").unwrap().v, Value::Null);
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n";
        assert!(load(bomb).is_err(), "alias expansion is bounded");
        // Few aliases of one big string: bounded by bytes, not nodes.
        let big = format!(
            "x-a: &a \"{}\"\nx-b: [{}]\n",
            "z".repeat(1_000_000),
            vec!["*a"; 100].join(",")
        );
        let e = load(&big).unwrap_err();
        assert!(e.message.contains("expands to more than"), "{e:?}");
        // A merge of many keys is linear.
        let keys: Vec<String> = (0..50_000).map(|i| format!("k{i}: 1")).collect();
        let many = format!("x:\n  <<: {{{}}}\n  k1: 2\n", keys.join(", "));
        let doc = load(&many).unwrap();
        assert_eq!(doc.get("x").unwrap().get("k1").unwrap().v, Value::Int(2));
    }
}
