//! A compose file turned into podstack.toml text (pure over the parsed
//! YAML, the variables and the env files it names).
//!
//! The text is what `podstack import` writes and what `podstack up -f
//! compose.yaml` parses, so both always agree. Each line of it remembers
//! the compose line it came from, so a problem the stack file's own checks
//! find is still named at the compose file's line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::interp;
use super::yaml::{Key, Node, Value};
use crate::stack::file::{self, PortMap};

/// The inputs a conversion reads besides the YAML.
pub struct Inputs<'a> {
    /// The compose file (its folder anchors relative paths).
    pub path: &'a Path,
    /// Variables: the process environment, then the `.env` beside the file.
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Reads an `env_file` (relative paths already resolved).
    pub read: &'a dyn Fn(&Path) -> Result<String, String>,
    /// Active profiles (`COMPOSE_PROFILES`, `--profile`).
    pub profiles: &'a [String],
    /// The project name when neither `name:` nor `-p` gives one.
    pub folder_name: &'a str,
    /// `-p` / `PODSTACK_PROJECT`: wins over `name:` (as compose's `-p`
    /// does), and so names the default volumes and networks.
    pub project: Option<&'a str>,
}

/// A problem, at a compose line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong, and the fix.
    pub message: String,
}

/// The result of a conversion.
#[derive(Clone, Debug, Default)]
pub struct Converted {
    /// podstack.toml text.
    pub toml: String,
    /// For each line of `toml` (0-based), the compose line it came from.
    pub lines: Vec<usize>,
    /// Refused or malformed keys: `up` stops on any.
    pub problems: Vec<Problem>,
    /// Things said but not fatal (an unset variable, a dropped profile).
    pub notes: Vec<String>,
}

/// Keys of a service podstack runs as compose does.
const SERVICE_KEYS: &[&str] = &[
    "image",
    "build",
    "container_name",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "volumes",
    "ports",
    "expose",
    "depends_on",
    "healthcheck",
    "restart",
    "networks",
    "network_mode",
    "extra_hosts",
    "user",
    "working_dir",
    "labels",
    "ulimits",
    "shm_size",
    "stop_grace_period",
    "profiles",
    "init",
    "stop_signal",
    "x-podstack",
];

const TOP_KEYS: &[&str] = &["version", "name", "services", "volumes", "networks"];

struct Conv<'a> {
    inp: &'a Inputs<'a>,
    out: String,
    lines: Vec<usize>,
    problems: Vec<Problem>,
    notes: Vec<String>,
    unset: Vec<String>,
}

impl Conv<'_> {
    fn emit(&mut self, src: usize, text: &str) {
        for l in text.split('\n') {
            self.out.push_str(l);
            self.out.push('\n');
            self.lines.push(src);
        }
    }

    fn bad(&mut self, n: (usize, usize), message: impl Into<String>) {
        self.problems.push(Problem {
            line: n.0,
            col: n.1,
            message: message.into(),
        });
    }

    /// A string value with compose's variables filled, escaped for
    /// podstack (podstack's own `${secrets.X}`, `${services.X.Y}`, `${net.X}`
    /// pass through).
    fn s(&mut self, n: &Node, what: &str) -> Option<String> {
        match &n.v {
            Value::Str(s) => match interp_keep_refs(s, self.inp.lookup, &mut self.unset) {
                Ok(v) if v.contains('\0') => {
                    self.bad(
                        at(n),
                        format!(
                            "{what}: a NUL byte, which no command line or environment can carry"
                        ),
                    );
                    None
                }
                Ok(v) => Some(v),
                Err(e) => {
                    self.bad(at(n), format!("{what}: {e}"));
                    None
                }
            },
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => n.text(),
            _ => {
                self.bad(at(n), format!("{what} must be a string, not {}", n.kind()));
                None
            }
        }
    }

    /// [`Self::s`] with podstack's escapes undone: for values podstack does
    /// not expand (paths, names, ports).
    fn plain(&mut self, n: &Node, what: &str) -> Option<String> {
        self.s(n, what).map(|v| v.replace("$${", "${"))
    }

    /// A boolean: YAML's, or the text `true`/`false` (what a variable
    /// gives), as compose reads it.
    fn boolean(&mut self, n: &Node, what: &str) -> Option<bool> {
        let text = match &n.v {
            Value::Bool(b) => return Some(*b),
            Value::Str(_) => self.plain(n, what)?,
            _ => String::new(),
        };
        match text.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.bad(
                    at(n),
                    format!("{what} must be true or false, not {}", n.kind()),
                );
                None
            }
        }
    }

    fn strings(&mut self, n: &Node, what: &str) -> Option<Vec<String>> {
        match &n.v {
            Value::Seq(items) => items.iter().map(|i| self.s(i, what)).collect(),
            _ => {
                self.bad(at(n), format!("{what} must be a list, not {}", n.kind()));
                None
            }
        }
    }

    /// A string (split like a shell line, as compose does) or a list.
    fn argv(&mut self, n: &Node, what: &str) -> Option<Vec<String>> {
        match &n.v {
            Value::Seq(_) => self.strings(n, what),
            Value::Null => Some(Vec::new()),
            _ => {
                let line = self.s(n, what)?;
                match split_words(&line) {
                    Some(words) => Some(words),
                    None => {
                        self.bad(at(n), format!("{what}: an unclosed quote in `{line}`"));
                        None
                    }
                }
            }
        }
    }

    fn unsupported(&mut self, k: &Key, place: &str, why: &str) {
        self.bad(
            (k.line, k.col),
            format!("`{}` in {place} is not supported by podstack{why}", k.name),
        );
    }
}

fn at(n: &Node) -> (usize, usize) {
    (n.line, n.col)
}

/// A TOML string literal.
pub fn q(s: &str) -> String {
    toml_edit::Value::from(s).to_string()
}

fn list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", inner.join(", "))
}

/// A TOML key: bare when it can be.
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        q(k)
    }
}

/// Compose interpolation whose output podstack reads as written: `${` that
/// is text becomes `$${`, podstack's own references are kept.
fn interp_keep_refs(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    loop {
        // The next podstack reference, if any, is kept verbatim.
        let next = find_podstack_ref(rest)?;
        let (before, after) = match next {
            Some((i, j)) => (&rest[..i], Some((&rest[i..j], &rest[j..]))),
            None => (rest, None),
        };
        let text = interp::interpolate(before, lookup, unset)?;
        if let Some((r, _)) = after
            && text.ends_with('$')
        {
            return Err(format!(
                "a `$` right before {r} cannot be written for podstack (it would read `$${{` as a literal `${{`): put another character between them"
            ));
        }
        out.push_str(&text.replace("${", "$${"));
        match after {
            Some((r, tail)) => {
                out.push_str(r);
                rest = tail;
            }
            None => return Ok(out),
        }
    }
}

/// The byte range of the first `${secrets.X}` / `${services.X.Y}` /
/// `${net.X}` of `s` outside compose's own `${...}` (and not escaped by
/// `$$`); an error for one written with a compose operator or inside a
/// compose default.
fn find_podstack_ref(s: &str) -> Result<Option<(usize, usize)>, String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => i += 2,
            Some(b'{') => {
                let inner = &s[i + 2..];
                // An unclosed `${` is compose's interpolation's to report.
                let Some(end) = interp::closing_brace(inner) else {
                    return Ok(None);
                };
                let body = &inner[..end];
                let head = body
                    .split(|c: char| !(c.is_ascii_alphanumeric() || "_.-".contains(c)))
                    .next()
                    .unwrap_or_default();
                if head.contains('.')
                    && (file::is_podstack_reference(head) || head.starts_with("env."))
                {
                    if head.len() != body.len() {
                        return Err(format!(
                            "`${{{body}}}`: podstack's references take no default or other operator"
                        ));
                    }
                    return Ok(Some((i, i + 3 + end)));
                }
                if ["${secrets.", "${services.", "${net.", "${env."]
                    .iter()
                    .any(|p| body.contains(p))
                {
                    return Err(format!(
                        "`${{{body}}}`: a podstack reference cannot sit inside a compose variable's default"
                    ));
                }
                i += 3 + end;
            }
            _ => i += 1,
        }
    }
    Ok(None)
}

/// Splits a command line into words the way compose does (shell quoting,
/// no expansion); `None` on an unclosed quote.
pub fn split_words(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        x => cur.push(x),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => {
                            let x = chars.next()?;
                            if !matches!(x, '"' | '\\' | '$' | '`') {
                                cur.push('\\');
                            }
                            cur.push(x);
                        }
                        x => cur.push(x),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(x) = chars.next() {
                    cur.push(x);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

/// Compose's durations: `1m30s`, `10s`, `500ms`, `1h`, or seconds as a number.
pub fn duration(s: &str) -> Option<Duration> {
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(digits);
        let n: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let secs = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += Duration::try_from_secs_f64(n * secs).ok()?;
        rest = tail;
    }
    Some(total)
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A YAML node as a TOML inline value (for `x-podstack`, which is written
/// in podstack's own vocabulary).
fn toml_value(c: &mut Conv<'_>, n: &Node, what: &str) -> Option<String> {
    match &n.v {
        Value::Str(_) => c.s(n, what).map(|s| q(&s)),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Seq(items) => {
            let parts: Option<Vec<String>> = items.iter().map(|i| toml_value(c, i, what)).collect();
            Some(format!("[{}]", parts?.join(", ")))
        }
        Value::Map(m) => {
            let parts: Option<Vec<String>> = m
                .iter()
                .map(|(k, v)| toml_value(c, v, what).map(|v| format!("{} = {v}", key(&k.name))))
                .collect();
            Some(format!("{{ {} }}", parts?.join(", ")))
        }
        Value::Null => {
            c.bad(at(n), format!("{what} has no value"));
            None
        }
    }
}

/// Converts a parsed compose file.
pub fn convert(doc: &Node, inp: &Inputs<'_>) -> Converted {
    let mut c = Conv {
        inp,
        out: String::new(),
        lines: Vec::new(),
        problems: Vec::new(),
        notes: Vec::new(),
        unset: Vec::new(),
    };
    let file_name = inp
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(top) = doc.map() else {
        c.bad(
            at(doc),
            format!(
                "a compose file is a mapping with `services:`, not {}",
                doc.kind()
            ),
        );
        return finish(c);
    };
    for (k, _) in top {
        if !TOP_KEYS.contains(&k.name.as_str()) && !k.name.starts_with("x-") {
            let why = match k.name.as_str() {
                "secrets" | "configs" => {
                    ": write the values as environment variables, or as podstack secrets under `x-podstack: secrets:`"
                }
                "include" => ": list the services in one file",
                _ => "",
            };
            c.unsupported(k, "the top level", why);
        }
    }
    let name = doc.get("name").and_then(|n| c.plain(n, "name"));
    let project = inp
        .project
        .map(str::to_string)
        .or_else(|| name.clone())
        .unwrap_or_else(|| inp.folder_name.to_string());
    let xp = doc.get("x-podstack");
    c.emit(
        1,
        &format!(
            "# podstack.toml, converted from {file_name} by `podstack import`.\n# Compose's keys became podstack's; `podstack up` runs this file as it runs the compose file.\n\n[stack]"
        ),
    );
    if inp.project.is_some() || name.is_some() {
        c.emit(
            doc.get("name").map_or(1, |n| n.line),
            &format!("name = {}", q(&project)),
        );
    }
    // Compose isolates services on bridge networks; podstack does where the
    // engine can make networks here, and falls back to the host's network
    // (service names then resolve to 127.0.0.1).
    let host_only = network_mode_host(&mut c, doc);
    let mut stack_keys: Vec<(usize, String)> = Vec::new();
    let mut env_lines: Vec<(usize, String)> = Vec::new();
    let mut secret_lines: Vec<(usize, String)> = Vec::new();
    let mut hook_lines: Vec<(usize, String)> = Vec::new();
    if let Some(x) = xp {
        match x.map() {
            Some(m) => {
                for (k, v) in m {
                    match k.name.as_str() {
                        "engine" | "network" | "api_socket" => {
                            if let Some(t) = toml_value(&mut c, v, "x-podstack") {
                                stack_keys.push((k.line, format!("{} = {t}", k.name)));
                            }
                        }
                        "env" | "secrets" | "hook" => match v.map() {
                            Some(entries) => {
                                for (ek, ev) in entries {
                                    if let Some(t) = toml_value(&mut c, ev, &format!("x-podstack {}", k.name)) {
                                        let line = (ek.line, format!("{} = {t}", key(&ek.name)));
                                        match k.name.as_str() {
                                            "env" => env_lines.push(line),
                                            "secrets" => secret_lines.push(line),
                                            _ => hook_lines.push(line),
                                        }
                                    }
                                }
                            }
                            None => c.bad(at(v), format!("x-podstack {} must be a mapping", k.name)),
                        },
                        _ => c.bad((k.line, k.col), format!("unknown key `{}` in x-podstack; known: engine, network, api_socket, env, secrets, hook", k.name)),
                    }
                }
            }
            None => c.bad(at(x), "x-podstack must be a mapping"),
        }
    }
    if !stack_keys.iter().any(|(_, l)| l.starts_with("network ")) {
        stack_keys.push((
            1,
            if host_only {
                "network = \"host\"                  # network_mode: host".into()
            } else {
                "network = \"auto\"                  # isolated where the engine can make networks here, else the host's".into()
            },
        ));
    }
    for (line, l) in stack_keys {
        c.emit(line, &l);
    }
    if !secret_lines.is_empty() {
        c.emit(1, "\n[secrets]");
        for (line, l) in secret_lines {
            c.emit(line, &l);
        }
    }
    if !hook_lines.is_empty() {
        c.emit(1, "\n[hook]");
        for (line, l) in hook_lines {
            c.emit(line, &l);
        }
    }
    // Top-level volumes: compose names them PROJECT_KEY unless `name:`.
    let mut volume_names: Vec<(String, String)> = Vec::new();
    if let Some(vols) = doc.get("volumes") {
        match &vols.v {
            Value::Map(m) => {
                for (k, v) in m {
                    let mut name = format!("{project}_{}", k.name);
                    if let Some(vm) = v.map() {
                        for (vk, vv) in vm {
                            match vk.name.as_str() {
                                "name" => {
                                    if let Some(n) = c.plain(vv, "volume name") {
                                        name = n;
                                    }
                                }
                                "external" => {
                                    if c.boolean(vv, "volume external") == Some(true)
                                        && v.get("name").is_none()
                                    {
                                        name.clone_from(&k.name);
                                    }
                                }
                                "labels" | "driver"
                                    if vk.name == "labels"
                                        || vv.text().as_deref() == Some("local") => {}
                                n if n.starts_with("x-") => {}
                                _ => c.unsupported(vk, &format!("volume {}", k.name), ""),
                            }
                        }
                    } else if v.v != Value::Null {
                        c.bad(
                            at(v),
                            format!("volume {} must be a mapping or empty", k.name),
                        );
                    }
                    volume_names.push((k.name.clone(), name));
                }
            }
            Value::Null => {}
            _ => c.bad(at(vols), "top-level volumes must be a mapping"),
        }
    }
    // Top-level networks.
    let mut network_keys: Vec<String> = Vec::new();
    if let Some(nets) = doc.get("networks") {
        match &nets.v {
            Value::Map(m) => {
                let mut first = true;
                for (k, v) in m {
                    if k.name == "default" {
                        continue;
                    }
                    let mut name = format!("{project}_{}", k.name);
                    if let Some(nm) = v.map() {
                        for (nk, nv) in nm {
                            match nk.name.as_str() {
                                "name" => {
                                    if let Some(n) = c.plain(nv, "network name") {
                                        name = n;
                                    }
                                }
                                "driver" if nv.text().as_deref() == Some("bridge") => {}
                                "labels" | "attachable" => {}
                                "external" if c.boolean(nv, "network external") == Some(true) => c
                                    .unsupported(
                                        nk,
                                        &format!("network {}", k.name),
                                        ": podstack makes and removes its networks itself",
                                    ),
                                n if n.starts_with("x-") => {}
                                _ => c.unsupported(nk, &format!("network {}", k.name), ""),
                            }
                        }
                    } else if v.v != Value::Null {
                        c.bad(
                            at(v),
                            format!("network {} must be a mapping or empty", k.name),
                        );
                    }
                    if first {
                        c.emit(k.line, "");
                        first = false;
                    }
                    c.emit(
                        k.line,
                        &format!("[networks.{}]\nname = {}", key(&k.name), q(&name)),
                    );
                    network_keys.push(k.name.clone());
                }
            }
            Value::Null => {}
            _ => c.bad(at(nets), "top-level networks must be a mapping"),
        }
    }
    let Some(services) = doc.get("services") else {
        c.bad(at(doc), "a compose file needs `services:`");
        return finish(c);
    };
    let Some(services) = services.map() else {
        c.bad(
            at(services),
            format!("services must be a mapping, not {}", services.kind()),
        );
        return finish(c);
    };
    // Services others wait on to complete are jobs.
    let mut jobs: BTreeSet<String> = BTreeSet::new();
    for (_, s) in services {
        if let Some(deps) = s.get("depends_on").and_then(Node::map) {
            for (dk, dv) in deps {
                if dv.get("condition").and_then(Node::text).as_deref()
                    == Some("service_completed_successfully")
                {
                    jobs.insert(dk.name.clone());
                }
            }
        }
    }
    for (k, svc) in services {
        if let Some(p) = svc.get("profiles")
            && p.seq()
                .is_none_or(|items| items.iter().any(|i| !matches!(i.v, Value::Str(_))))
        {
            c.bad(
                at(p),
                format!(
                    "service {} profiles must be a list of names, like [debug]",
                    k.name
                ),
            );
        }
    }
    let checked: BTreeSet<String> = services
        .iter()
        .filter(|(_, s)| {
            let hc = s.get("healthcheck").is_some_and(|h| {
                h.get("disable").and_then(Node::text).as_deref() != Some("true")
                    && h.get("test")
                        .and_then(Node::seq)
                        .and_then(|t| t.first())
                        .and_then(Node::text)
                        .as_deref()
                        != Some("NONE")
            });
            hc || s.get("x-podstack").and_then(|x| x.get("ready")).is_some()
        })
        .map(|(k, _)| k.name.clone())
        .collect();
    let active: Vec<&str> = services
        .iter()
        .filter(|(_, s)| profile_active(s, inp.profiles))
        .map(|(k, _)| k.name.as_str())
        .collect();
    for (k, s) in services {
        if !active.contains(&k.name.as_str()) {
            c.notes.push(format!(
                "service {} left out: its profiles are not active (COMPOSE_PROFILES)",
                k.name
            ));
            continue;
        }
        service(
            &mut c,
            k,
            s,
            &ServiceCtx {
                project: &project,
                checked: &checked,
                volumes: &volume_names,
                networks: &network_keys,
                jobs: &jobs,
                active: &active,
            },
        );
    }
    if !env_lines.is_empty() {
        c.emit(1, "\n[env]");
        for (line, l) in env_lines {
            c.emit(line, &l);
        }
    } else {
        c.emit(1, "\n# [env]: what the shells that run next get, e.g.\n# [env]\n# DATABASE_URL = \"postgres://postgres@${services.db.host}:${services.db.port}/postgres\"");
    }
    finish(c)
}

fn finish(mut c: Conv<'_>) -> Converted {
    for u in std::mem::take(&mut c.unset) {
        c.notes.push(format!(
            "the variable {u} is not set: it became an empty string (as under compose)"
        ));
    }
    Converted {
        toml: c.out,
        lines: c.lines,
        problems: c.problems,
        notes: c.notes,
    }
}

fn profile_active(s: &Node, active: &[String]) -> bool {
    match s.get("profiles").and_then(Node::seq) {
        None | Some([]) => true,
        Some(p) => p
            .iter()
            .filter_map(Node::text)
            .any(|p| active.iter().any(|a| *a == p || a == "*")),
    }
}

/// Whether every service asks for the host's network; mixing is refused.
fn network_mode_host(c: &mut Conv<'_>, doc: &Node) -> bool {
    let Some(services) = doc.get("services").and_then(Node::map) else {
        return false;
    };
    let modes: Vec<(&Key, Option<String>)> = services
        .iter()
        .map(|(k, s)| (k, s.get("network_mode").and_then(Node::text)))
        .collect();
    let host = modes
        .iter()
        .filter(|(_, m)| m.as_deref() == Some("host"))
        .count();
    for (k, m) in &modes {
        if let Some(m) = m
            && m != "host"
        {
            let n = services
                .iter()
                .find(|(sk, _)| sk.name == k.name)
                .and_then(|(_, s)| s.get("network_mode"))
                .map_or((k.line, k.col), at);
            c.bad(
                n,
                format!(
                    "service {}: network_mode `{m}` is not supported by podstack (only `host`)",
                    k.name
                ),
            );
        }
    }
    if host > 0 && host < modes.len() {
        let (k, _) = modes
            .iter()
            .find(|(_, m)| m.as_deref() != Some("host"))
            .unwrap_or(&modes[0]);
        c.bad(
            (k.line, k.col),
            format!("service {} is on a bridge network while others use network_mode: host; podstack runs a stack on one kind of network: give every service network_mode: host, or none", k.name),
        );
    }
    host > 0
}

struct ServiceCtx<'a> {
    project: &'a str,
    /// Services with a check of their own (a healthcheck, or an
    /// x-podstack probe): what `service_healthy` can wait for.
    checked: &'a BTreeSet<String>,
    volumes: &'a [(String, String)],
    networks: &'a [String],
    jobs: &'a BTreeSet<String>,
    active: &'a [&'a str],
}

fn service(c: &mut Conv<'_>, k: &Key, s: &Node, cx: &ServiceCtx<'_>) {
    let name = &k.name;
    let place = format!("service {name}");
    if !file::valid_name(name) {
        c.bad(
            (k.line, k.col),
            format!(
                "service name `{name}`: podstack names are lower-case letters, digits, `-` or `_`, starting with a letter or digit, at most 63 characters"
            ),
        );
    }
    let Some(entries) = s.map() else {
        c.bad(
            at(s),
            format!("{place} must be a mapping, not {}", s.kind()),
        );
        return;
    };
    for (key_, _) in entries {
        let known = SERVICE_KEYS.contains(&key_.name.as_str()) || key_.name.starts_with("x-");
        if !known {
            let why = match key_.name.as_str() {
                "deploy" => ": podstack runs one container per service",
                "secrets" | "configs" => {
                    ": pass the value as an environment variable (or a podstack secret, `${secrets.NAME}`)"
                }
                "tmpfs" => ": use a named volume",
                "privileged" | "cap_add" | "cap_drop" | "security_opt" | "devices" => {
                    ": a test stack in a sandbox cannot count on extra privileges"
                }
                "hostname" => ": other services reach it by its service name",
                "links" => ": services reach each other by name (links are legacy)",
                _ => "",
            };
            c.unsupported(key_, &place, why);
        }
    }
    let mut lines: Vec<(usize, String)> = Vec::new();
    let line_of = |key: &str| s.get(key).map_or(k.line, |n| n.line);
    let image = match s.get("image") {
        Some(n) => c.plain(n, &format!("{place} image")),
        None if s.get("build").is_some() => Some(format!("{}-{name}", cx.project)),
        None => {
            c.bad((k.line, k.col), format!("{place} needs `image` or `build`"));
            None
        }
    };
    let image = image.unwrap_or_default();
    lines.push((line_of("image"), format!("image = {}", q(&image))));
    if let Some(b) = s.get("build")
        && let Some(cmd) = build_command(c, b, &image, &place)
    {
        lines.push((
            b.line,
            format!("build = {}   # run when the image is missing", q(&cmd)),
        ));
    }
    // Text copied as it is, under podstack's name for it.
    for (from, to) in [
        ("container_name", "container_name"),
        ("user", "user"),
        ("working_dir", "workdir"),
        ("restart", "restart"),
        ("stop_signal", "stop_signal"),
    ] {
        if let Some(n) = s.get(from)
            && let Some(v) = c.plain(n, &format!("{place} {from}"))
        {
            lines.push((n.line, format!("{to} = {}", q(&v))));
        }
    }
    if let Some(n) = s.get("entrypoint")
        && let Some(v) = c.argv(n, &format!("{place} entrypoint"))
    {
        lines.push((n.line, format!("entrypoint = {}", list(&v))));
    }
    if let Some(n) = s.get("command")
        && let Some(v) = c.argv(n, &format!("{place} command"))
    {
        lines.push((n.line, format!("command = {}", list(&v))));
    }
    // env_file first, environment over it (compose's order).
    let mut env = EnvList::default();
    let set = |env: &mut EnvList, line: usize, k: String, v: String| env.set(line, k, v);
    if let Some(n) = s.get("env_file") {
        let items: Vec<&Node> = match &n.v {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![n],
        };
        for item in items {
            let (path_node, required) = match item.map() {
                Some(m) => {
                    for (ek, _) in m {
                        if !["path", "required"].contains(&ek.name.as_str()) {
                            c.unsupported(ek, &format!("{place} env_file"), "");
                        }
                    }
                    let required = match item.get("required") {
                        Some(r) => c
                            .boolean(r, &format!("{place} env_file required"))
                            .unwrap_or(true),
                        None => true,
                    };
                    (item.get("path"), required)
                }
                None => (Some(item), true),
            };
            let Some(path) = path_node.and_then(|p| c.plain(p, &format!("{place} env_file")))
            else {
                c.bad(at(item), format!("{place} env_file needs a path"));
                continue;
            };
            let full = relative_to(c.inp.path, &path);
            match (c.inp.read)(&full) {
                Ok(text) => match interp::dotenv(&text, c.inp.lookup, &mut c.unset) {
                    Ok(entries) => {
                        for (_, ek, ev) in entries {
                            set(&mut env, item.line, ek, ev.replace("${", "$${"));
                        }
                    }
                    Err((line, e)) => c.bad(at(item), format!("{}:{line}: {e}", full.display())),
                },
                Err(_) if !required => {}
                Err(e) => c.bad(
                    at(item),
                    format!("{place} env_file {}: {e}", full.display()),
                ),
            }
        }
    }
    if let Some(n) = s.get("environment") {
        match &n.v {
            Value::Map(m) => {
                for (ek, ev) in m {
                    match &ev.v {
                        // `KEY:` with no value passes the caller's variable on.
                        Value::Null => {
                            if let Some(v) = (c.inp.lookup)(&ek.name) {
                                set(&mut env, ek.line, ek.name.clone(), v.replace("${", "$${"));
                            }
                        }
                        _ => {
                            if let Some(v) = c.s(ev, &format!("{place} environment {}", ek.name)) {
                                set(&mut env, ek.line, ek.name.clone(), v);
                            }
                        }
                    }
                }
            }
            Value::Seq(items) => {
                for item in items {
                    let Some(text) = c.s(item, &format!("{place} environment")) else {
                        continue;
                    };
                    match text.split_once('=') {
                        Some((ek, ev)) => set(&mut env, item.line, ek.to_string(), ev.to_string()),
                        None => {
                            if let Some(v) = (c.inp.lookup)(&text) {
                                set(&mut env, item.line, text, v.replace("${", "$${"));
                            }
                        }
                    }
                }
            }
            _ => c.bad(
                at(n),
                format!("{place} environment must be a mapping or a list of KEY=VALUE"),
            ),
        }
    }
    if let Some(n) = s.get("volumes") {
        let vols = volumes(c, n, cx, &place);
        if !vols.is_empty() {
            lines.push((n.line, format!("volumes = {}", list(&vols))));
        }
    }
    let mut first_port: Option<(usize, u16)> = None;
    if let Some(n) = s.get("ports") {
        let ports = ports(c, n, &place);
        if !ports.is_empty() {
            lines.push((n.line, format!("ports = {}", list(&ports))));
            first_port = PortMap::parse(&ports[0]).map(|p| (n.line, p.host));
        }
    }
    // Networks and the names the service is reached by.
    let mut nets: Vec<String> = Vec::new();
    let mut aliases: Vec<String> = vec![name.clone()];
    if let Some(n) = s.get("networks") {
        let mut add = |c: &mut Conv<'_>, key_: &str, kn: &Node| {
            if key_ == "default" {
                c.bad(at(kn), format!("{place}: the network `default` cannot be named together with others in podstack; give it a name under top-level networks"));
            } else if !cx.networks.iter().any(|x| x == key_) {
                c.bad(
                    at(kn),
                    format!(
                        "{place} joins network `{key_}`, which is not under the top-level networks"
                    ),
                );
            }
            nets.push(key_.to_string());
        };
        match &n.v {
            Value::Seq(items) => {
                for item in items {
                    if let Some(t) = c.plain(item, &format!("{place} networks")) {
                        add(c, &t, item);
                    }
                }
            }
            Value::Map(m) => {
                for (nk, nv) in m {
                    if nk.name == "default" && m.len() == 1 {
                        continue;
                    }
                    add(c, &nk.name, n);
                    if let Some(nm) = nv.map() {
                        for (ak, av) in nm {
                            match ak.name.as_str() {
                                "aliases" => {
                                    if let Some(a) = c.strings(
                                        av,
                                        &format!("{place} networks {} aliases", nk.name),
                                    ) {
                                        aliases.extend(a);
                                    }
                                }
                                _ => {
                                    c.unsupported(ak, &format!("{place} networks {}", nk.name), "")
                                }
                            }
                        }
                    }
                }
            }
            _ => c.bad(
                at(n),
                format!("{place} networks must be a list or a mapping"),
            ),
        }
    }
    if !nets.is_empty() {
        lines.push((line_of("networks"), format!("networks = {}", list(&nets))));
    }
    let mut seen = BTreeSet::new();
    aliases.retain(|a| seen.insert(a.clone()));
    lines.push((
        line_of("networks"),
        format!(
            "aliases = {}   # the names other services reach it by",
            list(&aliases)
        ),
    ));
    // depends_on: a list means "started", a mapping names the condition.
    if let Some(n) = s.get("depends_on") {
        let mut deps: Vec<(String, &'static str)> = Vec::new();
        match &n.v {
            Value::Seq(items) => {
                for item in items {
                    if let Some(d) = c.plain(item, &format!("{place} depends_on")) {
                        deps.push((d, "started"));
                    }
                }
            }
            Value::Map(m) => {
                for (dk, dv) in m {
                    let mut when = "started";
                    if !matches!(dv.v, Value::Map(_) | Value::Null) {
                        c.bad(at(dv), format!("{place} depends_on {}: takes a mapping such as {{ condition: service_healthy }}, not {}", dk.name, dv.kind()));
                    }
                    if let Some(dm) = dv.map() {
                        for (ck, cv) in dm {
                            match (ck.name.as_str(), cv.text().as_deref()) {
                                ("condition", Some("service_started")) => when = "started",
                                ("condition", Some("service_healthy")) if !cx.checked.contains(&dk.name) => c.bad(
                                    at(cv),
                                    format!("{place} waits for {} to be healthy, but {} has no healthcheck (give it one, or use condition: service_started)", dk.name, dk.name),
                                ),
                                ("condition", Some("service_healthy" | "service_completed_successfully")) => when = "ready",
                                ("condition", other) => c.bad(at(cv), format!("{place} depends_on {}: condition {} is not one of service_started, service_healthy, service_completed_successfully", dk.name, other.unwrap_or("?"))),
                                ("restart", _) => {}
                                ("required", Some("true")) => {}
                                _ => c.unsupported(ck, &format!("{place} depends_on {}", dk.name), ""),
                            }
                        }
                    }
                    deps.push((dk.name.clone(), when));
                }
            }
            _ => c.bad(
                at(n),
                format!("{place} depends_on must be a list or a mapping"),
            ),
        }
        for (d, _) in &deps {
            if !cx.active.contains(&d.as_str()) {
                c.bad(
                    at(n),
                    format!(
                        "{place} depends on `{d}`, which is not an active service of this file"
                    ),
                );
            }
        }
        if !deps.is_empty() {
            let parts: Vec<String> = deps
                .iter()
                .map(|(d, w)| format!("{} = {}", key(d), q(w)))
                .collect();
            lines.push((n.line, format!("depends_on = {{ {} }}", parts.join(", "))));
        }
    }
    // Readiness: x-podstack's host-side probe, else the healthcheck run in
    // the container, else none (ready once it runs).
    let job = cx.jobs.contains(name);
    let xp = s.get("x-podstack");
    let mut timeout: Option<Duration> = None;
    let mut have_ready = false;
    if let Some(x) = xp {
        match x.map() {
            Some(m) => {
                for (xk, xv) in m {
                    match xk.name.as_str() {
                        "ready" | "timeout" | "retries" | "build" => {
                            if let Some(t) = toml_value(c, xv, &format!("{place} x-podstack {}", xk.name)) {
                                have_ready |= xk.name == "ready";
                                lines.push((xk.line, format!("{} = {t}", xk.name)));
                            }
                        }
                        _ => c.bad((xk.line, xk.col), format!("unknown key `{}` in {place} x-podstack; known: ready, timeout, retries, build", xk.name)),
                    }
                }
            }
            None => c.bad(at(x), format!("{place} x-podstack must be a mapping")),
        }
    }
    if let Some(h) = s.get("healthcheck")
        && !have_ready
        && !job
        && let Some(health) = healthcheck(c, h, &place)
    {
        if let Some(argv) = &health.argv {
            // One check's own bound (compose's default is 30 s, as is podstack's).
            let each = health.check_timeout.map_or(String::new(), |t| {
                format!(", check_timeout = {}", q(&secs(t)))
            });
            lines.push((h.line, format!("ready = {{ container = {}{each} }}   # the healthcheck, run in the container from the start, polled fast", list(argv))));
        }
        timeout = health.deadline;
    }
    // No healthcheck: compose waits for nothing; podstack waits until the
    // service's first published port accepts connections.
    if !have_ready
        && !job
        && !lines.iter().any(|(_, l)| l.starts_with("ready "))
        && s.get("healthcheck").is_none()
        && let Some((line, port)) = first_port
    {
        lines.push((line, format!("ready = {{ tcp = \"127.0.0.1:{port}\" }}   # no healthcheck: ready when its first port answers")));
    }
    if job {
        lines.push((
            k.line,
            "job = true                          # others wait for it to complete (exit 0)".into(),
        ));
    }
    if let Some(t) = timeout
        && !lines.iter().any(|(_, l)| l.starts_with("timeout "))
    {
        lines.push((line_of("healthcheck"), format!("timeout = {}", q(&secs(t)))));
    }
    // Options passed to the engine.
    if let Some(n) = s.get("labels") {
        let mut labels: Vec<(String, String)> = Vec::new();
        match &n.v {
            Value::Map(m) => {
                for (lk, lv) in m {
                    let v = if lv.v == Value::Null {
                        Some(String::new())
                    } else {
                        c.plain(lv, &format!("{place} labels"))
                    };
                    if let Some(v) = v {
                        labels.push((lk.name.clone(), v));
                    }
                }
            }
            Value::Seq(items) => {
                for item in items {
                    if let Some(t) = c.plain(item, &format!("{place} labels")) {
                        let (lk, lv) = t.split_once('=').unwrap_or((&t, ""));
                        labels.push((lk.to_string(), lv.to_string()));
                    }
                }
            }
            _ => c.bad(at(n), format!("{place} labels must be a mapping or a list")),
        }
        if !labels.is_empty() {
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{} = {}", q(k), q(v)))
                .collect();
            lines.push((n.line, format!("labels = {{ {} }}", parts.join(", "))));
        }
    }
    if let Some(n) = s.get("extra_hosts") {
        let mut hosts = Vec::new();
        match &n.v {
            Value::Seq(items) => {
                for item in items {
                    if let Some(t) = c.plain(item, &format!("{place} extra_hosts")) {
                        // "name:ip", "name=ip" (compose accepts both).
                        let t = match t.split_once('=') {
                            Some((h, ip)) => format!("{h}:{ip}"),
                            None => t,
                        };
                        hosts.push(t);
                    }
                }
            }
            Value::Map(m) => {
                for (hk, hv) in m {
                    if let Some(ip) = c.plain(hv, &format!("{place} extra_hosts")) {
                        hosts.push(format!("{}:{ip}", hk.name));
                    }
                }
            }
            _ => c.bad(
                at(n),
                format!("{place} extra_hosts must be a list or a mapping"),
            ),
        }
        if !hosts.is_empty() {
            lines.push((n.line, format!("extra_hosts = {}", list(&hosts))));
        }
    }
    if let Some(n) = s.get("ulimits") {
        let mut parts = Vec::new();
        match n.map() {
            Some(m) => {
                for (uk, uv) in m {
                    let v = match (
                        &uv.v,
                        uv.get("soft").and_then(Node::text),
                        uv.get("hard").and_then(Node::text),
                    ) {
                        (Value::Int(i), ..) => Some(i.to_string()),
                        (Value::Str(_), ..) => c.plain(uv, &format!("{place} ulimits {}", uk.name)),
                        (Value::Map(_), Some(s), Some(h)) => Some(format!("{s}:{h}")),
                        _ => {
                            c.bad(
                                at(uv),
                                format!(
                                    "{place} ulimits {} must be a number or soft: and hard:",
                                    uk.name
                                ),
                            );
                            None
                        }
                    };
                    if let Some(v) = v {
                        parts.push(format!("{} = {}", key(&uk.name), q(&v)));
                    }
                }
            }
            None => c.bad(at(n), format!("{place} ulimits must be a mapping")),
        }
        if !parts.is_empty() {
            lines.push((n.line, format!("ulimits = {{ {} }}", parts.join(", "))));
        }
    }
    if let Some(n) = s.get("shm_size")
        && let Some(v) = c.plain(n, &format!("{place} shm_size"))
    {
        lines.push((n.line, format!("shm_size = {}", q(&v.to_lowercase()))));
    }
    if let Some(n) = s.get("stop_grace_period")
        && let Some(v) = c.plain(n, &format!("{place} stop_grace_period"))
    {
        match duration(&v) {
            Some(d) => lines.push((n.line, format!("stop_timeout = {}", q(&secs(d))))),
            None => c.bad(
                at(n),
                format!("{place} stop_grace_period `{v}` is not a duration like 10s or 1m30s"),
            ),
        }
    }
    if let Some(n) = s.get("init")
        && let Some(b) = c.boolean(n, &format!("{place} init"))
    {
        lines.push((n.line, format!("init = {b}")));
    }
    c.emit(k.line, "");
    c.emit(k.line, &format!("[services.{}]", key(name)));
    for (line, l) in lines {
        c.emit(line, &l);
    }
    // One variable a line, each at its own compose line.
    if !env.items.is_empty() {
        c.emit(env.items[0].0, &format!("[services.{}.env]", key(name)));
        for (line, k, v) in env.items {
            c.emit(line, &format!("{} = {}", key(&k), q(&v)));
        }
    }
}

/// A service's environment in order, a later value of a name replacing
/// the earlier one in place (env_file, then environment).
#[derive(Default)]
struct EnvList {
    items: Vec<(usize, String, String)>,
    index: std::collections::HashMap<String, usize>,
}

impl EnvList {
    fn set(&mut self, line: usize, k: String, v: String) {
        match self.index.get(&k) {
            Some(&i) => self.items[i] = (line, k, v),
            None => {
                self.index.insert(k.clone(), self.items.len());
                self.items.push((line, k, v));
            }
        }
    }
}

fn relative_to(compose: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        compose.parent().unwrap_or(Path::new(".")).join(p)
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `build:` as the command podstack runs when the image is missing; it runs
/// in the stack file's folder.
fn build_command(c: &mut Conv<'_>, b: &Node, image: &str, place: &str) -> Option<String> {
    let mut context = ".".to_string();
    let mut args: Vec<String> = Vec::new();
    match &b.v {
        Value::Map(m) => {
            for (bk, bv) in m {
                match bk.name.as_str() {
                    "context" => context = c.plain(bv, &format!("{place} build context"))?,
                    "dockerfile" => {
                        let f = c.plain(bv, &format!("{place} build dockerfile"))?;
                        args.push("-f".into());
                        args.push(f);
                    }
                    "target" => {
                        args.push("--target".into());
                        args.push(c.plain(bv, &format!("{place} build target"))?);
                    }
                    "args" => match &bv.v {
                        Value::Map(am) => {
                            for (ak, av) in am {
                                let v = if av.v == Value::Null {
                                    (c.inp.lookup)(&ak.name).unwrap_or_default()
                                } else {
                                    c.plain(av, &format!("{place} build args"))?
                                };
                                args.push("--build-arg".into());
                                args.push(format!("{}={v}", ak.name));
                            }
                        }
                        Value::Seq(items) => {
                            for item in items {
                                args.push("--build-arg".into());
                                args.push(c.plain(item, &format!("{place} build args"))?);
                            }
                        }
                        _ => c.bad(
                            at(bv),
                            format!("{place} build args must be a mapping or a list"),
                        ),
                    },
                    n if n.starts_with("x-") => {}
                    _ => c.unsupported(bk, &format!("{place} build"), ""),
                }
            }
        }
        _ => context = c.plain(b, &format!("{place} build"))?,
    }
    if context.contains("://") || context.starts_with("git@") {
        c.bad(
            at(b),
            format!(
                "{place} build context `{context}` is remote; podstack builds from a local folder"
            ),
        );
        return None;
    }
    // A dockerfile is relative to the context, as compose reads it.
    if let Some(i) = args.iter().position(|a| a == "-f") {
        let f = &args[i + 1];
        if !Path::new(f).is_absolute() {
            args[i + 1] = Path::new(&context).join(f).to_string_lossy().into_owned();
        }
    }
    let mut cmd = vec![
        "\"$PODSTACK_ENGINE\"".to_string(),
        "build".into(),
        "-t".into(),
        shell_quote(image),
    ];
    cmd.extend(args.iter().map(|a| shell_quote(a)));
    cmd.push(shell_quote(&context));
    Some(cmd.join(" "))
}

fn volumes(c: &mut Conv<'_>, n: &Node, cx: &ServiceCtx<'_>, place: &str) -> Vec<String> {
    let Some(items) = n.seq() else {
        c.bad(at(n), format!("{place} volumes must be a list"));
        return Vec::new();
    };
    let named = |c: &mut Conv<'_>, src: &str, at_: (usize, usize)| -> Option<String> {
        match cx.volumes.iter().find(|(k, _)| k == src) {
            Some((_, name)) => Some(name.clone()),
            None => {
                c.bad(
                    at_,
                    format!(
                        "{place} uses volume `{src}`, which is not under the top-level volumes"
                    ),
                );
                None
            }
        }
    };
    let host_path = |src: &str| -> String {
        if src.starts_with('/') {
            src.to_string()
        } else {
            // Relative to the stack file's folder: podstack resolves it there.
            if src.starts_with("./") || src.starts_with("../") || src == "." || src == ".." {
                src.to_string()
            } else {
                format!("./{src}")
            }
        }
    };
    let mut out = Vec::new();
    for item in items {
        match &item.v {
            Value::Map(m) => {
                let get = |k: &str| m.iter().find(|(mk, _)| mk.name == k).map(|(_, v)| v);
                let kind = get("type")
                    .and_then(Node::text)
                    .unwrap_or_else(|| "volume".into());
                let Some(target) =
                    get("target").and_then(|t| c.plain(t, &format!("{place} volume target")))
                else {
                    c.bad(at(item), format!("{place}: a volume needs a target"));
                    continue;
                };
                let source =
                    get("source").and_then(|s| c.plain(s, &format!("{place} volume source")));
                let mut opts: Vec<&str> = Vec::new();
                for (mk, mv) in m {
                    match mk.name.as_str() {
                        "type" | "target" | "source" => {}
                        "read_only" => {
                            if c.boolean(mv, &format!("{place} volume read_only")) == Some(true) {
                                opts.push("ro");
                            }
                        }
                        "volume"
                            if mv.get("nocopy").is_some()
                                && mv.map().is_some_and(|x| x.len() == 1) => {}
                        "bind"
                            if mv.map().is_some_and(|x| {
                                x.iter().all(|(k, _)| k.name == "create_host_path")
                            }) => {}
                        _ => c.unsupported(mk, &format!("{place} volume {target}"), ""),
                    }
                }
                let spec = match (kind.as_str(), source) {
                    ("volume", None) => Some(target.clone()),
                    ("volume", Some(s)) => named(c, &s, at(item)).map(|v| format!("{v}:{target}")),
                    ("bind", Some(s)) => Some(format!("{}:{target}", host_path(&s))),
                    ("bind", None) => {
                        c.bad(at(item), format!("{place}: a bind volume needs a source"));
                        None
                    }
                    (other, _) => {
                        c.bad(at(item), format!("{place}: volume type `{other}` is not supported by podstack (volume and bind are)"));
                        None
                    }
                };
                if let Some(mut spec) = spec {
                    if !opts.is_empty() {
                        spec = format!("{spec}:{}", opts.join(","));
                    }
                    out.push(spec);
                }
            }
            _ => {
                let Some(t) = c.plain(item, &format!("{place} volumes")) else {
                    continue;
                };
                let parts: Vec<&str> = t.splitn(3, ':').collect();
                match parts.as_slice() {
                    [target] => out.push((*target).to_string()),
                    [src, rest @ ..] => {
                        let rest = rest.join(":");
                        if src.starts_with('/') || src.starts_with('.') || src.starts_with('~') {
                            if src.starts_with('~') {
                                c.bad(
                                    at(item),
                                    format!("{place}: `{src}` starts with ~: write the path out"),
                                );
                                continue;
                            }
                            out.push(format!("{}:{rest}", host_path(src)));
                        } else if let Some(v) = named(c, src, at(item)) {
                            out.push(format!("{v}:{rest}"));
                        }
                    }
                    [] => {}
                }
            }
        }
    }
    out
}

fn ports(c: &mut Conv<'_>, n: &Node, place: &str) -> Vec<String> {
    let Some(items) = n.seq() else {
        c.bad(at(n), format!("{place} ports must be a list"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let text = match &item.v {
            Value::Map(m) => {
                let get = |k: &str| m.iter().find(|(mk, _)| mk.name == k).map(|(_, v)| v);
                for (mk, _) in m {
                    if ![
                        "target",
                        "published",
                        "host_ip",
                        "protocol",
                        "mode",
                        "name",
                        "app_protocol",
                    ]
                    .contains(&mk.name.as_str())
                    {
                        c.unsupported(mk, &format!("{place} ports"), "");
                    }
                }
                let target =
                    get("target").and_then(|t| c.plain(t, &format!("{place} ports target")));
                let published =
                    get("published").and_then(|t| c.plain(t, &format!("{place} ports published")));
                let ip = get("host_ip").and_then(|t| c.plain(t, &format!("{place} ports host_ip")));
                let proto = get("protocol").and_then(Node::text);
                let Some(target) = target else {
                    c.bad(at(item), format!("{place}: a port needs a target"));
                    continue;
                };
                let mut t = match (ip, published) {
                    (Some(ip), Some(p)) => format!("{ip}:{p}:{target}"),
                    (None, Some(p)) => format!("{p}:{target}"),
                    (_, None) => target,
                };
                if let Some(p) = proto {
                    t = format!("{t}/{p}");
                }
                t
            }
            _ => match c.plain(item, &format!("{place} ports")) {
                Some(t) => t,
                None => continue,
            },
        };
        let (body, proto) = text.rsplit_once('/').unwrap_or((&text, "tcp"));
        if !proto.eq_ignore_ascii_case("tcp") {
            c.bad(
                at(item),
                format!("{place} port `{text}`: only TCP ports are supported by podstack"),
            );
            continue;
        }
        // Ranges expand to one pair per port.
        match expand_range(body) {
            Some(pairs) => {
                for p in pairs {
                    if PortMap::parse(&p).is_none() {
                        c.bad(at(item), format!("{place} port `{text}` is not HOST:CONTAINER, IP:HOST:CONTAINER or a port number"));
                        break;
                    }
                    out.push(p);
                }
            }
            None => c.bad(
                at(item),
                format!(
                    "{place} port `{text}`: a range is FIRST-LAST (at most 1000 ports), with as many host ports as container ports"
                ),
            ),
        }
    }
    out
}

/// `8000-8002:9000-9002` as `8000:9000`, `8001:9001`, `8002:9002`.
fn expand_range(s: &str) -> Option<Vec<String>> {
    if !s.contains('-') {
        return Some(vec![s.to_string()]);
    }
    let parts: Vec<&str> = s.rsplitn(3, ':').collect();
    let range = |r: &str| -> Option<(u16, u16)> {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        let (a, b) = (a.parse::<u16>().ok()?, b.parse::<u16>().ok()?);
        (a <= b && b - a < 1000).then_some((a, b))
    };
    let (c_, h, ip) = match parts.as_slice() {
        [c_] => (range(c_)?, None, None),
        [c_, h] => (range(c_)?, Some(range(h)?), None),
        [c_, h, ip] => (range(c_)?, Some(range(h)?), Some(*ip)),
        _ => return None,
    };
    let h = h.unwrap_or(c_);
    if h.1 - h.0 != c_.1 - c_.0 {
        return None;
    }
    Some(
        (0..=(c_.1 - c_.0))
            .map(|i| match ip {
                Some(ip) => format!("{ip}:{}:{}", h.0 + i, c_.0 + i),
                None => format!("{}:{}", h.0 + i, c_.0 + i),
            })
            .collect(),
    )
}

/// The healthcheck: its command, the deadline its timing implies, one
/// check's bound.
fn healthcheck(c: &mut Conv<'_>, h: &Node, place: &str) -> Option<Health> {
    let Some(m) = h.map() else {
        c.bad(at(h), format!("{place} healthcheck must be a mapping"));
        return None;
    };
    let mut argv: Option<Vec<String>> = None;
    let mut interval = Duration::from_secs(30);
    let mut retries: u32 = 3;
    let mut start_period = Duration::ZERO;
    let mut disabled = false;
    let mut check_timeout: Option<Duration> = None;
    for (hk, hv) in m {
        let what = format!("{place} healthcheck {}", hk.name);
        match hk.name.as_str() {
            "test" => match &hv.v {
                Value::Seq(_) => {
                    let words = c.strings(hv, &what)?;
                    match words.first().map(String::as_str) {
                        Some("CMD") => argv = Some(words[1..].to_vec()),
                        Some("CMD-SHELL") => {
                            argv = Some(vec!["/bin/sh".into(), "-c".into(), words[1..].join(" ")])
                        }
                        Some("NONE") => disabled = true,
                        _ => c.bad(
                            at(hv),
                            format!("{what}: a list starts with CMD, CMD-SHELL or NONE"),
                        ),
                    }
                }
                _ => {
                    let line = c.s(hv, &what)?;
                    argv = Some(vec!["/bin/sh".into(), "-c".into(), line]);
                }
            },
            "interval" | "start_period" | "timeout" | "start_interval" => {
                let text = c.plain(hv, &what)?;
                match duration(&text) {
                    Some(d) if hk.name == "interval" => interval = d,
                    Some(d) if hk.name == "start_period" => start_period = d,
                    Some(d) if hk.name == "timeout" && !d.is_zero() => check_timeout = Some(d),
                    Some(_) => {}
                    None => c.bad(
                        at(hv),
                        format!("{what} `{text}` is not a duration like 10s or 1m30s"),
                    ),
                }
            }
            "retries" => match &hv.v {
                Value::Int(n) if *n >= 0 => retries = u32::try_from(*n).unwrap_or(u32::MAX),
                _ => c.bad(at(hv), format!("{what} must be a number")),
            },
            "disable" => disabled = c.boolean(hv, &what) == Some(true),
            _ => c.unsupported(hk, &format!("{place} healthcheck"), ""),
        }
    }
    if disabled {
        return Some(Health::default());
    }
    // `sh -c ""` would pass at once: an empty test is refused.
    let empty = argv.as_ref().is_some_and(|a| {
        a.is_empty() || (a.len() == 3 && a[0] == "/bin/sh" && a[2].trim().is_empty())
    });
    if empty {
        c.bad(at(h), format!("{place} healthcheck test has no command"));
        return None;
    }

    // Compose calls a service unhealthy after `retries` failed checks
    // `interval` apart, once `start_period` is over; podstack waits as long
    // (at least its usual minute) but checks at once and often.
    let budget = start_period + interval.saturating_mul(retries);
    let timeout = budget
        .max(file::DEFAULT_TIMEOUT)
        .min(Duration::from_secs(30 * 60));
    Some(Health {
        argv,
        deadline: Some(timeout),
        check_timeout,
    })
}

/// A healthcheck as podstack runs it.
#[derive(Default)]
struct Health {
    /// The command in the container (`None`: disabled).
    argv: Option<Vec<String>>,
    /// What compose would wait before calling the service unhealthy.
    deadline: Option<Duration>,
    /// One check's bound (`timeout:`).
    check_timeout: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_durations_ranges() {
        assert_eq!(
            split_words(r#"sh -c "echo 'a b' \"c\"" x\ y"#).unwrap(),
            ["sh", "-c", "echo 'a b' \"c\"", "x y"]
        );
        assert!(split_words("a 'b").is_none());
        assert_eq!(duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(duration("10x"), None);
        assert_eq!(
            expand_range("127.0.0.1:8000-8001:9000-9001").unwrap(),
            ["127.0.0.1:8000:9000", "127.0.0.1:8001:9001"]
        );
        assert!(expand_range("8000-8002:9000-9001").is_none());
    }

    #[test]
    fn podstack_references_pass_compose_interpolation() {
        let look = |n: &str| (n == "PORT").then(|| "15432".to_string());
        let mut unset = Vec::new();
        let out = interp_keep_refs(
            "${PORT}|${secrets.pw}|$${HOME}|$${secrets.x}|${services.db.port}",
            &look,
            &mut unset,
        )
        .unwrap();
        assert_eq!(
            out,
            "15432|${secrets.pw}|$${HOME}|$${secrets.x}|${services.db.port}"
        );
    }
}
