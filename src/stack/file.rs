//! The stack file, `podstack.toml`: parsed and checked as a whole before
//! anything starts (pure over text).
//!
//! Every problem is reported with `FILE:LINE:COLUMN` and what was expected:
//! an unknown key names the closest known one; a dependency cycle, an
//! unknown dependency, an unknown `${secrets.X}`, two services holding one
//! port are each named. All problems are reported at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::Item;

use crate::conf::line_column;

/// A parsed, checked stack file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// `[stack] name`, if set.
    pub name: Option<String>,
    /// `[stack] engine`.
    pub engine: EngineChoice,
    /// `[stack] network` (default: `host` without `[networks]`, else `auto`).
    pub network: NetworkChoice,
    /// `[stack] api_socket`: serve (podman) or name (Docker) a
    /// Docker-compatible API socket, exported as DOCKER_HOST.
    pub api_socket: bool,
    /// `[networks.KEY]`, in file order.
    pub networks: Vec<NetworkDecl>,
    /// `[env]`: the variables exported to the shells that run next, values
    /// as written.
    pub exports: Vec<(String, String)>,
    /// `[hook] budget`: how long `podstack hook` waits before it lets the
    /// rest start in the background.
    pub hook_budget: Option<Duration>,
    /// `[secrets]`, by name.
    pub secrets: BTreeMap<String, SecretSpec>,
    /// `[services.NAME]`, in file order.
    pub services: Vec<Service>,
}

/// Which engine runs the stack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// podman when it can run containers here, else a Docker daemon.
    #[default]
    Auto,
    /// podman.
    Podman,
    /// Docker.
    Docker,
}

impl EngineChoice {
    /// The word `--engine` and `[stack] engine` take.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineChoice::Auto => "auto",
            EngineChoice::Podman => "podman",
            EngineChoice::Docker => "docker",
        }
    }
}

/// How the stack is networked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkChoice {
    /// `isolated` where the engine can make networks here, else `host`.
    Auto,
    /// Everything on the host's network, each service on its own ports.
    Host,
    /// The file's `[networks]`, made by the engine; ports published on 127.0.0.1.
    Isolated,
}

/// A network of the stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkDecl {
    /// Its key in the file (`[networks.KEY]`).
    pub key: String,
    /// Its name for the engine (`name = "..."`, default `PROJECT-KEY`).
    pub name: Option<String>,
}

/// Variables a stack may not export: read-only in bash, the shell's own
/// word splitting and start-up, or the session's wiring.
const RESERVED_ENV: &[&str] = &[
    "IFS",
    "UID",
    "EUID",
    "PPID",
    "BASHOPTS",
    "SHELLOPTS",
    "BASH_ENV",
    "ENV",
    "PS4",
    "PROMPT_COMMAND",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "CLAUDE_ENV_FILE",
    "CODEX_ENV_FILE",
    "CLAUDE_PROJECT_DIR",
];

/// Network names that belong to the engines themselves.
const RESERVED_NETWORKS: &[&str] = &["host", "none", "bridge", "podman", "default", "container"];

/// The network services without `networks` join in isolated mode.
pub const DEFAULT_NETWORK: &str = "default";

/// A port a service holds: `5433`, `"35433:5432"`, `"127.0.0.1:35433:5432"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PortMap {
    /// The port on the host (on 127.0.0.1 unless `ip` says otherwise).
    pub host: u16,
    /// The port the service listens on inside its container.
    pub container: u16,
    /// The host address it is published on (isolated mode).
    pub ip: Option<IpAddr>,
}

impl PortMap {
    /// Parses compose's forms (pure); `None` when it is none of them.
    pub fn parse(s: &str) -> Option<PortMap> {
        let port = |p: &str| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 5)
                .then(|| p.parse::<u16>().ok())
                .flatten()
                .filter(|n| *n > 0)
        };
        let parts: Vec<&str> = s.rsplitn(3, ':').collect();
        match parts.as_slice() {
            [c] => port(c).map(|c| PortMap {
                host: c,
                container: c,
                ip: None,
            }),
            [c, h] => Some(PortMap {
                host: port(h)?,
                container: port(c)?,
                ip: None,
            }),
            [c, h, ip] => Some(PortMap {
                host: port(h)?,
                container: port(c)?,
                ip: Some(
                    ip.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse()
                        .ok()?,
                ),
            }),
            _ => None,
        }
    }
}

/// How a secret is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSpec {
    /// `{ generate = N }`: N random letters and digits, made once and kept.
    Generate(usize),
}

/// One service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Its name (`[services.NAME]`).
    pub name: String,
    /// The image.
    pub image: String,
    /// A shell command that makes the image when it is missing.
    pub build: Option<String>,
    /// Replaces the image's ENTRYPOINT.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's CMD.
    pub command: Option<Vec<String>>,
    /// Environment, values as written (`${secrets.X}` resolved later).
    pub env: Vec<(String, String)>,
    /// `NAME:/path` or `/host:/path[:opts]`.
    pub volumes: Vec<String>,
    /// The ports the service holds.
    pub ports: Vec<PortMap>,
    /// The networks it joins (isolated mode; empty: `default`).
    pub networks: Vec<String>,
    /// Other names it has on its networks (isolated mode).
    pub aliases: Vec<String>,
    /// Services that must be ready first (or only started: `start_only`).
    pub depends_on: Vec<String>,
    /// Those of `depends_on` this service waits for only to start
    /// (`depends_on = { NAME = "started" }`, compose's `service_started`).
    pub start_only: Vec<String>,
    /// Runs to completion: ready when its container exits 0 (compose's
    /// `service_completed_successfully` on the services waiting for it).
    pub job: bool,
    /// Further `run` options.
    pub run: RunOptions,
    /// How to tell it is ready.
    pub ready: Option<Ready>,
    /// Start + ready deadline.
    pub timeout: Duration,
    /// Restarts allowed when the container exits before it is ready.
    pub retries: u32,
}

/// Options passed to the engine as they are (the same flags on podman and Docker).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// The container's name (default `PROJECT-SERVICE`).
    pub container_name: Option<String>,
    /// `--user`.
    pub user: Option<String>,
    /// `--workdir`.
    pub workdir: Option<String>,
    /// `--label`s of the user's own.
    pub labels: Vec<(String, String)>,
    /// `--add-host NAME:IP`.
    pub extra_hosts: Vec<String>,
    /// `--ulimit NAME=SOFT[:HARD]`.
    pub ulimits: Vec<String>,
    /// `--shm-size`.
    pub shm_size: Option<String>,
    /// `--stop-timeout`, in seconds.
    pub stop_timeout: Option<u64>,
    /// `--restart`.
    pub restart: Option<String>,
    /// `--init`: a minimal init reaps zombies and forwards signals.
    pub init: bool,
    /// `--stop-signal`.
    pub stop_signal: Option<String>,
}

impl RunOptions {
    /// The engine flags (pure; both engines take them alike).
    pub fn flags(&self) -> Vec<String> {
        let mut f = Vec::new();
        let mut one = |flag: &str, v: &str| {
            f.push(format!("--{flag}"));
            f.push(v.to_string());
        };
        if let Some(u) = &self.user {
            one("user", u);
        }
        if let Some(w) = &self.workdir {
            one("workdir", w);
        }
        for (k, v) in &self.labels {
            one("label", &format!("{k}={v}"));
        }
        for h in &self.extra_hosts {
            one("add-host", h);
        }
        for u in &self.ulimits {
            one("ulimit", u);
        }
        if let Some(s) = &self.shm_size {
            one("shm-size", s);
        }
        if let Some(t) = self.stop_timeout {
            one("stop-timeout", &t.to_string());
        }
        if let Some(r) = &self.restart {
            one("restart", r);
        }
        if let Some(sig) = &self.stop_signal {
            one("stop-signal", sig);
        }
        if self.init {
            f.push("--init".into());
        }
        f
    }
}

/// A readiness probe, run from the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ready {
    /// A TCP connect succeeds.
    Tcp(SocketAddr),
    /// `GET url` answers with one of `status`.
    Http {
        /// Host and port.
        addr: SocketAddr,
        /// Path and query.
        path: String,
        /// The URL as written.
        url: String,
        /// Accepted status codes (empty: any 2xx).
        status: Vec<u16>,
    },
    /// A PostgreSQL login succeeds (libpq ping semantics).
    Postgres {
        /// Host and port.
        addr: SocketAddr,
        /// User (default `postgres`).
        user: String,
        /// Password as written (`${secrets.X}` resolved later).
        password: Option<String>,
        /// Database (default: the user's name).
        database: Option<String>,
    },
    /// A command on the host exits 0.
    Exec(Vec<String>),
    /// A command run in the service's container (`ENGINE exec`) exits 0:
    /// compose's healthcheck `test`, so `pg_isready` images keep working.
    Container {
        /// The command.
        argv: Vec<String>,
        /// How long one check may take (`check_timeout`, default 30 s).
        check_timeout: Duration,
    },
}

/// A problem in the stack file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Everything wrong with a stack file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// Its problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                p.line,
                p.column,
                p.message
            )?;
        }
        if self.problems.len() > 1 {
            write!(f, "\n{} problems; nothing was started", self.problems.len())?;
        } else {
            write!(f, "; nothing was started")?;
        }
        Ok(())
    }
}

impl std::error::Error for FileError {}

const TOP_KEYS: &[&str] = &["stack", "secrets", "networks", "services", "env", "hook"];
const STACK_KEYS: &[&str] = &["name", "engine", "network", "api_socket"];
const SERVICE_KEYS: &[&str] = &[
    "image",
    "build",
    "entrypoint",
    "command",
    "env",
    "volumes",
    "ports",
    "networks",
    "aliases",
    "depends_on",
    "ready",
    "timeout",
    "retries",
    "job",
    "container_name",
    "user",
    "workdir",
    "labels",
    "extra_hosts",
    "ulimits",
    "shm_size",
    "stop_timeout",
    "restart",
    "init",
    "stop_signal",
];
const READY_KINDS: &[&str] = &["tcp", "http", "postgres", "exec", "container"];
const RESTART: &[&str] = &["no", "always", "on-failure", "unless-stopped"];

/// How long one in-container check may take by default (compose's
/// healthcheck timeout).
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The default start + ready deadline of a service.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Collects problems while walking the document.
struct Check<'a> {
    text: &'a str,
    problems: Vec<(usize, String)>,
}

impl Check<'_> {
    fn at(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.problems
            .push((span.map_or(0, |s| s.start), message.into()));
    }

    fn unknown_keys(&mut self, table: &dyn toml_edit::TableLike, known: &[&str], what: &str) {
        for (key, item) in table.iter() {
            if !known.contains(&key) {
                let span = table
                    .key(key)
                    .and_then(|k| k.span())
                    .or_else(|| item.span());
                let hint = closest(key, known)
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_else(|| format!("; known keys: {}", known.join(", ")));
                self.at(span, format!("unknown key `{key}` in {what}{hint}"));
            }
        }
    }

    fn string(&mut self, item: &Item, what: &str) -> Option<String> {
        match item.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.at(item.span(), format!("{what} must be a string"));
                None
            }
        }
    }

    fn strings(&mut self, item: &Item, what: &str) -> Option<Vec<String>> {
        match item.as_array() {
            Some(a) if a.iter().all(|v| v.as_str().is_some()) => Some(
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            ),
            _ => {
                self.at(
                    item.span(),
                    format!("{what} must be an array of strings, like [\"a\", \"b\"]"),
                );
                None
            }
        }
    }
}

/// Parses and checks `text`, read from `path`.
pub fn parse(path: &Path, text: &str) -> Result<StackFile, FileError> {
    let fail = |problems: Vec<(usize, String)>| {
        let mut problems: Vec<Problem> = problems
            .into_iter()
            .map(|(offset, message)| {
                let (line, column) = line_column(text, offset);
                Problem {
                    line,
                    column,
                    message,
                }
            })
            .collect();
        problems.sort_by_key(|p| (p.line, p.column));
        FileError {
            path: path.to_path_buf(),
            problems,
        }
    };
    let doc = toml_edit::Document::parse(text.to_string()).map_err(|e| {
        let (offset, msg) = crate::conf::toml_error(&e);
        fail(vec![(offset, format!("invalid TOML: {msg}"))])
    })?;
    let mut c = Check {
        text,
        problems: Vec::new(),
    };
    let root = doc.as_table();
    c.unknown_keys(root, TOP_KEYS, "the stack file");

    let mut name = None;
    let mut engine = EngineChoice::Auto;
    let mut network = None;
    let mut api_socket = false;
    if let Some(stack) = root.get("stack") {
        match stack.as_table_like() {
            Some(t) => {
                c.unknown_keys(t, STACK_KEYS, "[stack]");
                if let Some(e) = t.get("engine") {
                    match e.as_str() {
                        Some("auto") => {}
                        Some("podman") => engine = EngineChoice::Podman,
                        Some("docker") => engine = EngineChoice::Docker,
                        _ => c.at(
                            e.span(),
                            "[stack] engine must be \"auto\", \"podman\" or \"docker\"",
                        ),
                    }
                }
                if let Some(a) = t.get("api_socket") {
                    match a.as_bool() {
                        Some(b) => api_socket = b,
                        None => c.at(a.span(), "[stack] api_socket must be true or false"),
                    }
                }
                if let Some(n) = t.get("network") {
                    match n.as_str() {
                        Some("auto") => network = Some(NetworkChoice::Auto),
                        Some("host") => network = Some(NetworkChoice::Host),
                        Some("isolated") => network = Some(NetworkChoice::Isolated),
                        _ => c.at(
                            n.span(),
                            "[stack] network must be \"auto\", \"host\" or \"isolated\"",
                        ),
                    }
                }
                if let Some(n) = t.get("name") {
                    name = c.string(n, "[stack] name");
                    if let Some(n) = &name
                        && !valid_name(n)
                    {
                        c.at(n_span(t, "name"), format!("[stack] name `{n}` must be lower-case letters, digits, `-` or `_`, starting with a letter or digit"));
                    }
                }
            }
            None => c.at(stack.span(), "[stack] must be a table"),
        }
    }

    let mut secrets = BTreeMap::new();
    if let Some(s) = root.get("secrets") {
        match s.as_table_like() {
            Some(t) => {
                for (key, item) in t.iter() {
                    let n = item
                        .as_table_like()
                        .and_then(|st| {
                            c.unknown_keys(st, &["generate"], &format!("[secrets] {key}"));
                            st.get("generate")
                        })
                        .and_then(|g| g.as_integer())
                        .filter(|n| (8..=4096).contains(n));
                    match n {
                        Some(n) => {
                            secrets.insert(key.to_string(), SecretSpec::Generate(n as usize));
                        }
                        None => c.at(
                            item.span().or_else(|| t.key(key).and_then(|k| k.span())),
                            format!("[secrets] {key} must be {{ generate = N }} with N from 8 to 4096 (the length of a random password)"),
                        ),
                    }
                }
            }
            None => c.at(s.span(), "[secrets] must be a table"),
        }
    }

    let mut networks = Vec::new();
    if let Some(n) = root.get("networks") {
        match n.as_table_like() {
            Some(t) => {
                for (key, item) in t.iter() {
                    let key_span = t.key(key).and_then(|k| k.span());
                    if !valid_name(key) {
                        c.at(key_span.clone(), format!("network key `{key}` must be lower-case letters, digits, `-` or `_`, starting with a letter or digit"));
                    }
                    let Some(nt) = item.as_table_like() else {
                        c.at(
                            item.span().or(key_span),
                            format!("[networks.{key}] must be a table, like {{}} or {{ name = \"props-agents\" }}"),
                        );
                        continue;
                    };
                    c.unknown_keys(nt, &["name"], &format!("[networks.{key}]"));
                    let name = nt
                        .get("name")
                        .and_then(|i| c.string(i, &format!("[networks.{key}] name")));
                    if let Some(n) = &name
                        && !valid_engine_name(n)
                    {
                        c.at(n_span(nt, "name"), format!("[networks.{key}] name `{n}` must be letters, digits, `-`, `_` or `.`, starting with a letter or digit"));
                    }
                    if let Some(n) = &name
                        && RESERVED_NETWORKS.contains(&n.as_str())
                    {
                        c.at(n_span(nt, "name"), format!("[networks.{key}] name `{n}` is the engine's own network; give the stack's network a name of its own"));
                    }
                    if let Some(n) = &name
                        && let Some(other) = networks
                            .iter()
                            .find(|d: &&NetworkDecl| d.name.as_ref() == Some(n))
                    {
                        c.at(n_span(nt, "name"), format!("[networks.{key}] and [networks.{}] both name `{n}`: they would be one network, not two isolated ones", other.key));
                    }
                    networks.push(NetworkDecl {
                        key: key.to_string(),
                        name,
                    });
                }
            }
            None => c.at(n.span(), "[networks] must be a table of networks"),
        }
    }
    let mut exports = Vec::new();
    if let Some(e) = root.get("env") {
        match e.as_table_like() {
            Some(t) => {
                for (k, v) in t.iter() {
                    if !valid_env_name(k) {
                        c.at(t.key(k).and_then(|k| k.span()), format!("[env]: `{k}` is not a valid variable name (letters, digits, `_`, not starting with a digit)"));
                    } else if RESERVED_ENV.contains(&k) {
                        c.at(t.key(k).and_then(|k| k.span()), format!("[env]: `{k}` belongs to the shell or to the session (read-only, or it changes how every later command runs); name the variable otherwise"));
                    }
                    if let Some(s) = c.string(v, &format!("[env] {k}")) {
                        exports.push((k.to_string(), s));
                    }
                }
            }
            None => c.at(
                e.span(),
                "[env] must be a table, like PGHOST = \"${services.postgres.host}\"",
            ),
        }
    }
    let mut hook_budget = None;
    if let Some(h) = root.get("hook") {
        match h.as_table_like() {
            Some(t) => {
                c.unknown_keys(t, &["budget"], "[hook]");
                if let Some(b) = t.get("budget") {
                    match b.as_str().map(parse_duration) {
                        Some(Ok(d)) if !d.is_zero() && d <= Duration::from_secs(600) => hook_budget = Some(d),
                        _ => c.at(b.span(), "[hook] budget must be a duration such as \"30s\" (at most 600 s; the VS Code extension gives all SessionStart hooks 60 s)"),
                    }
                }
            }
            None => c.at(h.span(), "[hook] must be a table"),
        }
    }
    let network = network.unwrap_or(if networks.is_empty() {
        NetworkChoice::Host
    } else {
        NetworkChoice::Auto
    });

    let mut services = Vec::new();
    match root.get("services").map(|s| (s, s.as_table_like())) {
        Some((_, Some(t))) => {
            for (key, item) in t.iter() {
                if !valid_name(key) {
                    c.at(t.key(key).and_then(|k| k.span()), format!("service name `{key}` must be lower-case letters, digits, `-` or `_`, starting with a letter or digit"));
                }
                match item.as_table_like() {
                    Some(st) => {
                        if let Some(s) = service(&mut c, key, st) {
                            services.push(s);
                        }
                    }
                    None => c.at(item.span(), format!("[services.{key}] must be a table")),
                }
            }
        }
        Some((s, None)) => c.at(s.span(), "[services] must be a table of services"),
        None => {}
    }
    if services.is_empty() && root.get("services").is_some() {
        // Problems are already named; an empty table is fine.
    }
    let decl = Decl {
        secrets: &secrets,
        networks: &networks,
        network,
    };
    cross_checks(&mut c, &doc, &decl, &services);
    let env_table = root.get("env").and_then(|e| e.as_table_like());
    for (k, v) in &exports {
        for r in references(v) {
            let span = env_table.and_then(|t| t.get(k)).and_then(|i| i.span());
            match r {
                Err(()) => c.at(span, format!("[env] {k}: an unclosed `${{` (close it with `}}`, or write `$${{` for a literal `${{`)")),
                Ok(r) => {
                    if let Err(e) = check_reference(&r, Place::Export, &decl, &services) {
                        c.at(span, format!("[env] {k}: {e}"));
                    }
                }
            }
        }
    }
    let _ = c.text;
    if c.problems.is_empty() {
        Ok(StackFile {
            path: path.to_path_buf(),
            name,
            engine,
            network,
            api_socket,
            networks,
            exports,
            hook_budget,
            secrets,
            services,
        })
    } else {
        Err(fail(c.problems))
    }
}

fn n_span(t: &dyn toml_edit::TableLike, key: &str) -> Option<Range<usize>> {
    t.get(key).and_then(|i| i.span())
}

fn service(c: &mut Check<'_>, name: &str, t: &dyn toml_edit::TableLike) -> Option<Service> {
    let what = |k: &str| format!("[services.{name}] {k}");
    c.unknown_keys(t, SERVICE_KEYS, &format!("[services.{name}]"));
    let image = match t.get("image") {
        Some(i) => c.string(i, &what("image")),
        None => {
            c.at(
                t.key("image")
                    .and_then(|k| k.span())
                    .or_else(|| t.iter().next().and_then(|(_, i)| i.span())),
                format!("[services.{name}] needs an `image`"),
            );
            None
        }
    };
    if let Some(img) = &image
        && !valid_image(img)
    {
        c.at(
            n_span(t, "image"),
            format!("{}: `{img}` is not an image reference (letters, digits and . _ - / : @, not starting with `-`)", what("image")),
        );
    }
    let build = t.get("build").and_then(|i| c.string(i, &what("build")));
    let entrypoint = t
        .get("entrypoint")
        .and_then(|i| c.strings(i, &what("entrypoint")));
    let command = t
        .get("command")
        .and_then(|i| c.strings(i, &what("command")));
    let volumes = t
        .get("volumes")
        .and_then(|i| c.strings(i, &what("volumes")))
        .unwrap_or_default();
    for v in &volumes {
        if let Err(e) = check_volume(v) {
            c.at(
                n_span(t, "volumes"),
                format!("{}: `{v}`: {e}", what("volumes")),
            );
        }
    }
    let mut depends_on = Vec::new();
    let mut start_only = Vec::new();
    match t.get("depends_on") {
        None => {}
        Some(i) if i.is_array() => {
            depends_on = c.strings(i, &what("depends_on")).unwrap_or_default();
        }
        Some(i) => match i.as_table_like() {
            Some(dt) => {
                for (k, v) in dt.iter() {
                    depends_on.push(k.to_string());
                    match v.as_str() {
                        Some("ready") => {}
                        Some("started") => start_only.push(k.to_string()),
                        _ => c.at(v.span(), format!("{} {k} must be \"ready\" (the default: its probe passed) or \"started\" (its container runs)", what("depends_on"))),
                    }
                }
            }
            None => c.at(i.span(), format!("{} must be an array of service names, or a table like {{ db = \"ready\", cache = \"started\" }}", what("depends_on"))),
        },
    }
    let mut env = Vec::new();
    if let Some(e) = t.get("env") {
        match e.as_table_like() {
            Some(et) => {
                for (k, v) in et.iter() {
                    if !valid_env_name(k) {
                        c.at(et.key(k).and_then(|k| k.span()), format!("{}: `{k}` is not a valid variable name (letters, digits, `_`, not starting with a digit)", what("env")));
                    }
                    if let Some(s) = c.string(v, &format!("{} {k}", what("env"))) {
                        if s.contains('\0') {
                            c.at(
                                v.span(),
                                format!(
                                    "{} {k}: a NUL byte, which no environment can carry",
                                    what("env")
                                ),
                            );
                        }
                        env.push((k.to_string(), s));
                    }
                }
            }
            None => c.at(
                e.span(),
                format!(
                    "{} must be a table, like {{ KEY = \"value\" }}",
                    what("env")
                ),
            ),
        }
    }
    let mut ports = Vec::new();
    if let Some(p) = t.get("ports") {
        let form = "a port is a number or a string like \"5433\", \"35433:5432\" or \"127.0.0.1:35433:5432\" (ports from 1 to 65535)";
        match p.as_array() {
            Some(a) => {
                for v in a.iter() {
                    let parsed = match (v.as_integer(), v.as_str()) {
                        (Some(n), _) => u16::try_from(n).ok().filter(|n| *n > 0).map(|n| PortMap {
                            host: n,
                            container: n,
                            ip: None,
                        }),
                        (_, Some(s)) => PortMap::parse(s),
                        _ => None,
                    };
                    match parsed {
                        Some(pm) => ports.push(pm),
                        None => c.at(v.span(), format!("{}: {form}", what("ports"))),
                    }
                }
            }
            None => c.at(
                p.span(),
                format!(
                    "{} must be an array of ports, like [5433] or [\"35433:5432\"]",
                    what("ports")
                ),
            ),
        }
    }
    let networks = t
        .get("networks")
        .and_then(|i| c.strings(i, &what("networks")))
        .unwrap_or_default();
    let aliases = t
        .get("aliases")
        .and_then(|i| c.strings(i, &what("aliases")))
        .unwrap_or_default();
    for a in &aliases {
        if !valid_engine_name(a) {
            c.at(
                n_span(t, "aliases"),
                format!(
                    "{}: `{a}` is not a host name (letters, digits, `-`, `_`, `.`)",
                    what("aliases")
                ),
            );
        }
    }
    let timeout = match t.get("timeout") {
        Some(i) => match i.as_str().map(parse_duration).or_else(|| {
            i.as_integer().map(|n| {
                u64::try_from(n)
                    .ok()
                    .map(Duration::from_secs)
                    .ok_or_else(String::new)
            })
        }) {
            Some(Ok(d)) if !d.is_zero() && d <= crate::proc::MAX_TIMEOUT => d,
            _ => {
                c.at(i.span(), format!("{} must be a duration such as \"60s\", \"500ms\" or \"2m\" (at most a day)", what("timeout")));
                DEFAULT_TIMEOUT
            }
        },
        None => DEFAULT_TIMEOUT,
    };
    let retries = match t.get("retries") {
        Some(i) => match i
            .as_integer()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n <= 100)
        {
            Some(n) => n,
            None => {
                c.at(
                    i.span(),
                    format!("{} must be a number from 0 to 100", what("retries")),
                );
                0
            }
        },
        None => 0,
    };
    let ready = t.get("ready").and_then(|r| ready(c, name, r));
    let job = match t.get("job") {
        None => false,
        Some(i) => i.as_bool().unwrap_or_else(|| {
            c.at(i.span(), format!("{} must be true or false", what("job")));
            false
        }),
    };
    if job && ready.is_some() {
        c.at(
            n_span(t, "ready"),
            format!("[services.{name}] is a job (ready when it exits 0): it takes no `ready`"),
        );
    }
    let run = run_options(c, name, t);
    Some(Service {
        name: name.to_string(),
        image: image?,
        build,
        entrypoint,
        command,
        env,
        volumes,
        ports,
        networks,
        aliases,
        depends_on,
        start_only,
        job,
        run,
        ready,
        timeout,
        retries,
    })
}

fn run_options(c: &mut Check<'_>, name: &str, t: &dyn toml_edit::TableLike) -> RunOptions {
    let what = |k: &str| format!("[services.{name}] {k}");
    let text = |c: &mut Check<'_>, k: &str| t.get(k).and_then(|i| c.string(i, &what(k)));
    let container_name = text(c, "container_name");
    if let Some(n) = &container_name
        && !valid_engine_name(n)
    {
        c.at(
            n_span(t, "container_name"),
            format!(
                "{}: `{n}` is not a container name (letters, digits, `-`, `_`, `.`)",
                what("container_name")
            ),
        );
    }
    let user = text(c, "user");
    let workdir = text(c, "workdir");
    let shm_size = text(c, "shm_size");
    if let Some(s) = &shm_size {
        let digits = s.trim_end_matches(|ch: char| "bkmgBKMG".contains(ch));
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            c.at(
                n_span(t, "shm_size"),
                format!(
                    "{} = \"{s}\" must be a size like \"64m\" or \"1g\"",
                    what("shm_size")
                ),
            );
        }
    }
    let restart = text(c, "restart");
    if let Some(r) = &restart {
        let base = r.split(':').next().unwrap_or_default();
        let count_ok = r
            .split_once(':')
            .is_none_or(|(b, n)| b == "on-failure" && n.parse::<u32>().is_ok());
        if !RESTART.contains(&base) || !count_ok {
            c.at(
                n_span(t, "restart"),
                format!(
                    "{} = \"{r}\" must be one of no, always, on-failure[:N], unless-stopped",
                    what("restart")
                ),
            );
        }
    }
    let stop_timeout = t
        .get("stop_timeout")
        .and_then(|i| match i.as_str().map(parse_duration) {
            Some(Ok(d)) => Some(d.as_secs().max(u64::from(d.subsec_nanos() > 0))),
            _ => {
                c.at(
                    i.span(),
                    format!(
                        "{} must be a duration such as \"10s\"",
                        what("stop_timeout")
                    ),
                );
                None
            }
        });
    let mut labels = Vec::new();
    if let Some(i) = t.get("labels") {
        match i.as_table_like() {
            Some(lt) => {
                for (k, v) in lt.iter() {
                    if k.starts_with("io.podstack.") {
                        c.at(
                            lt.key(k).and_then(|k| k.span()),
                            format!("{}: `{k}` is podstack's own label", what("labels")),
                        );
                    }
                    if let Some(v) = c.string(v, &format!("{} {k}", what("labels"))) {
                        labels.push((k.to_string(), v));
                    }
                }
            }
            None => c.at(
                i.span(),
                format!(
                    "{} must be a table, like {{ \"com.example.team\" = \"qa\" }}",
                    what("labels")
                ),
            ),
        }
    }
    let extra_hosts = t
        .get("extra_hosts")
        .and_then(|i| c.strings(i, &what("extra_hosts")))
        .unwrap_or_default();
    for h in &extra_hosts {
        let ok = h.split_once(':').is_some_and(|(n, ip)| {
            valid_engine_name(n) && ip.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
                || ip == "host-gateway"
        });
        if !ok {
            c.at(
                n_span(t, "extra_hosts"),
                format!(
                    "{}: `{h}` must be NAME:IP, like \"db.test:127.0.0.1\"",
                    what("extra_hosts")
                ),
            );
        }
    }
    let mut ulimits = Vec::new();
    if let Some(i) = t.get("ulimits") {
        match i.as_table_like() {
            Some(ut) => {
                for (k, v) in ut.iter() {
                    let value = v
                        .as_integer()
                        .map(|n| n.to_string())
                        .or_else(|| v.as_str().map(str::to_string));
                    let ok = value.as_deref().is_some_and(|s| {
                        s.split(':').all(|p| {
                            p == "-1" || (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                        }) && s.split(':').count() <= 2
                    });
                    match value {
                        Some(s) if ok && k.bytes().all(|b| b.is_ascii_lowercase()) => ulimits.push(format!("{k}={s}")),
                        _ => c.at(v.span(), format!("{} {k} must be a number or \"SOFT:HARD\", like nofile = \"1024:65536\"", what("ulimits"))),
                    }
                }
            }
            None => c.at(
                i.span(),
                format!(
                    "{} must be a table, like {{ nofile = \"1024:65536\" }}",
                    what("ulimits")
                ),
            ),
        }
    }
    let init = match t.get("init") {
        None => false,
        Some(i) => i.as_bool().unwrap_or_else(|| {
            c.at(i.span(), format!("{} must be true or false", what("init")));
            false
        }),
    };
    let stop_signal = text(c, "stop_signal");
    if let Some(sig) = &stop_signal
        && (sig.is_empty() || !sig.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+'))
    {
        c.at(
            n_span(t, "stop_signal"),
            format!(
                "{} = \"{sig}\" must be a signal such as \"SIGTERM\"",
                what("stop_signal")
            ),
        );
    }
    RunOptions {
        init,
        stop_signal,
        container_name,
        user,
        workdir,
        labels,
        extra_hosts,
        ulimits,
        shm_size,
        stop_timeout,
        restart,
    }
}

fn ready(c: &mut Check<'_>, name: &str, item: &Item) -> Option<Ready> {
    let what = format!("[services.{name}] ready");
    let Some(t) = item.as_table_like() else {
        c.at(
            item.span(),
            format!("{what} must be a table, like {{ tcp = \"127.0.0.1:5051\" }}"),
        );
        return None;
    };
    let kinds: Vec<&str> = READY_KINDS
        .iter()
        .copied()
        .filter(|k| t.contains_key(k))
        .collect();
    let [kind] = kinds.as_slice() else {
        c.at(
            item.span(),
            format!(
                "{what} needs exactly one of tcp, http, postgres, exec, container (found {})",
                if kinds.is_empty() {
                    "none".into()
                } else {
                    kinds.join(", ")
                }
            ),
        );
        return None;
    };
    let allowed: &[&str] = match *kind {
        "tcp" => &["tcp"],
        "http" => &["http", "status"],
        "postgres" => &["postgres", "user", "password", "database"],
        "container" => &["container", "check_timeout"],
        _ => &["exec"],
    };
    c.unknown_keys(t, allowed, &what);
    let value = t.get(kind)?;
    let addr = |c: &mut Check<'_>, v: &Item| -> Option<SocketAddr> {
        let s = c.string(v, &format!("{what} {kind}"))?;
        match parse_addr(&s) {
            Some(a) => Some(a),
            None => {
                c.at(v.span(), format!("{what} {kind} = \"{s}\" must be IP:PORT, like \"127.0.0.1:5433\" (names other than localhost are not looked up)"));
                None
            }
        }
    };
    match *kind {
        "tcp" => addr(c, value).map(Ready::Tcp),
        "http" => {
            let url = c.string(value, &format!("{what} http"))?;
            let Some((addr, path)) = parse_http_url(&url) else {
                c.at(value.span(), format!("{what} http = \"{url}\" must be http://IP:PORT/PATH (plain HTTP; names other than localhost are not looked up)"));
                return None;
            };
            let status = match t.get("status") {
                Some(s) => match s.as_array() {
                    Some(a)
                        if a.iter()
                            .all(|v| v.as_integer().is_some_and(|n| (100..=599).contains(&n))) =>
                    {
                        a.iter()
                            .filter_map(|v| v.as_integer().map(|n| n as u16))
                            .collect()
                    }
                    _ => {
                        c.at(s.span(), format!("{what} status must be an array of HTTP status codes, like [200, 401]"));
                        Vec::new()
                    }
                },
                None => Vec::new(),
            };
            Some(Ready::Http {
                addr,
                path,
                url,
                status,
            })
        }
        "postgres" => {
            let addr = addr(c, value)?;
            let get = |c: &mut Check<'_>, k: &str| {
                t.get(k).and_then(|i| c.string(i, &format!("{what} {k}")))
            };
            Some(Ready::Postgres {
                addr,
                user: get(c, "user").unwrap_or_else(|| "postgres".into()),
                password: get(c, "password"),
                database: get(c, "database"),
            })
        }
        _ => {
            let argv = c.strings(value, &format!("{what} {kind}"))?;
            if argv.is_empty() {
                c.at(value.span(), format!("{what} {kind} needs a command"));
                return None;
            }
            Some(if *kind == "container" {
                let check_timeout = match t.get("check_timeout") {
                    None => DEFAULT_CHECK_TIMEOUT,
                    Some(i) => match i.as_str().map(parse_duration) {
                        Some(Ok(d)) if !d.is_zero() && d <= crate::proc::MAX_TIMEOUT => d,
                        _ => {
                            c.at(
                                i.span(),
                                format!("{what} check_timeout must be a duration such as \"30s\""),
                            );
                            DEFAULT_CHECK_TIMEOUT
                        }
                    },
                };
                Ready::Container {
                    argv,
                    check_timeout,
                }
            } else {
                Ready::Exec(argv)
            })
        }
    }
}

/// What the file declares that references are checked against.
struct Decl<'a> {
    secrets: &'a BTreeMap<String, SecretSpec>,
    networks: &'a [NetworkDecl],
    network: NetworkChoice,
}

/// Where a `${...}` reference is written, which decides what it may name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// A service's env value: anything.
    Env,
    /// A command line (command, entrypoint): no secrets.
    CommandLine,
    /// The postgres probe's password: secrets only.
    Password,
    /// An `[env]` value: anything, and `${env.NAME}` from podstack's own
    /// environment.
    Export,
}

/// Whether `${r}` names something podstack fills in (the rest is left to a
/// shell on command lines).
pub fn is_podstack_reference(r: &str) -> bool {
    ["secrets", "net", "services"]
        .iter()
        .any(|ns| r == *ns || r.starts_with(&format!("{ns}.")))
}

/// Checks one `${NAME}` reference (pure); the error says what is known.
fn check_reference(
    r: &str,
    place: Place,
    decl: &Decl<'_>,
    services: &[Service],
) -> Result<(), String> {
    let parts: Vec<&str> = r.split('.').collect();
    // A command line keeps `${HOME}` and the like for the shell it may run.
    if place == Place::CommandLine && !is_podstack_reference(r) {
        return Ok(());
    }
    match parts.as_slice() {
        ["secrets", ""] | ["secrets"] => Err("`${secrets.}` names no secret".into()),
        ["secrets", name] => {
            if place == Place::CommandLine {
                return Err(format!(
                    "`${{secrets.{name}}}` is filled in only in `env` values and the postgres probe's password (a command line is visible to every user); pass it through env"
                ));
            }
            if decl.secrets.contains_key(*name) {
                return Ok(());
            }
            let known: Vec<&str> = decl.secrets.keys().map(String::as_str).collect();
            Err(match closest(name, &known) {
                Some(c) => format!(
                    "unknown secret `${{secrets.{name}}}`; did you mean `${{secrets.{c}}}`?"
                ),
                None => format!(
                    "unknown secret `${{secrets.{name}}}`; declare it under [secrets], like {name} = {{ generate = 32 }}"
                ),
            })
        }
        ["env", name] if place == Place::Export => {
            if valid_env_name(name) {
                Ok(())
            } else {
                Err(format!(
                    "`${{env.{name}}}`: `{name}` is not a variable name"
                ))
            }
        }
        _ if place == Place::Password => Err(format!(
            "`${{{r}}}` is not known here; only `${{secrets.NAME}}` is (write `$${{...}}` for a literal `${{`)"
        )),
        ["net", "mode"] | ["net", "bind"] => Ok(()),
        ["net", "name", key] => {
            if *key == DEFAULT_NETWORK || decl.networks.iter().any(|n| n.key == *key) {
                Ok(())
            } else {
                Err(format!(
                    "`${{net.name.{key}}}`: no network `{key}` under [networks]"
                ))
            }
        }
        ["services", name, field] => {
            let Some(s) = services.iter().find(|s| s.name == *name) else {
                let known: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
                let hint = closest(name, &known)
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_default();
                return Err(format!("`${{{r}}}`: no service `{name}`{hint}"));
            };
            match *field {
                "host" => Ok(()),
                "port" | "host_port" if s.ports.is_empty() => Err(format!(
                    "`${{{r}}}`: service `{name}` declares no ports; add `ports = [PORT]` to it"
                )),
                "port" | "host_port" => Ok(()),
                other => Err(format!(
                    "`${{{r}}}`: `{other}` is not an address field; use host, port or host_port"
                )),
            }
        }
        _ => Err(format!(
            "`${{{r}}}` is not known; use ${{secrets.NAME}}, ${{net.mode}}, ${{net.bind}}, ${{net.name.NETWORK}}, or ${{services.NAME.host|port|host_port}} (write `$${{...}}` for a literal `${{`)"
        )),
    }
}

/// Checks across services: references, networks, dependencies, ports.
fn cross_checks(
    c: &mut Check<'_>,
    doc: &toml_edit::Document<String>,
    decl: &Decl<'_>,
    services: &[Service],
) {
    let svc_table = doc.get("services").and_then(|s| s.as_table_like());
    let span_of = |svc: &str, key: &str| -> Option<Range<usize>> {
        let t = svc_table?.get(svc)?.as_table_like()?;
        t.get(key)
            .and_then(|i| i.span())
            .or_else(|| t.key(key).and_then(|k| k.span()))
    };
    let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let mut container_names: BTreeMap<&str, &str> = BTreeMap::new();
    for s in services {
        if let Some(n) = s.run.container_name.as_deref()
            && let Some(other) = container_names.insert(n, &s.name)
        {
            c.at(
                span_of(&s.name, "container_name"),
                format!("[services.{}] container_name `{n}` is also the container name of service {other}", s.name),
            );
        }
    }
    for s in services {
        // ${...} references in env values, command lines and the postgres password.
        // Each env value is named at its own line.
        let env_span = |k: &str| -> Option<Range<usize>> {
            svc_table?
                .get(&s.name)?
                .as_table_like()?
                .get("env")?
                .as_table_like()?
                .get(k)?
                .span()
        };
        let mut texts: Vec<(&str, Place, &str, Option<Range<usize>>)> = s
            .env
            .iter()
            .map(|(k, v)| ("env", Place::Env, v.as_str(), env_span(k)))
            .collect();
        for a in s.command.iter().flatten() {
            texts.push(("command", Place::CommandLine, a, None));
        }
        for a in s.entrypoint.iter().flatten() {
            texts.push(("entrypoint", Place::CommandLine, a, None));
        }
        if let Some(Ready::Postgres {
            password: Some(p), ..
        }) = &s.ready
        {
            texts.push(("ready", Place::Password, p.as_str(), None));
        }
        if let Some(Ready::Exec(argv) | Ready::Container { argv, .. }) = &s.ready {
            for a in argv {
                texts.push(("ready", Place::CommandLine, a, None));
            }
        }
        for (key, place, text, span) in texts {
            let span_of = |svc: &str, key: &str| span.clone().or_else(|| span_of(svc, key));
            for r in references(text) {
                let Ok(r) = r else {
                    c.at(
                        span_of(&s.name, key),
                        format!("[services.{}] {key}: an unclosed `${{` (close it with `}}`, or write `$${{` for a literal `${{`)", s.name),
                    );
                    continue;
                };
                if let Err(e) = check_reference(&r, place, decl, services) {
                    c.at(
                        span_of(&s.name, key),
                        format!("[services.{}] {key}: {e}", s.name),
                    );
                }
            }
        }
        let mut seen_nets = BTreeSet::new();
        for n in &s.networks {
            if !seen_nets.insert(n) {
                c.at(
                    span_of(&s.name, "networks"),
                    format!("[services.{}] networks lists `{n}` twice", s.name),
                );
            }
        }
        for a in &s.aliases {
            if let Some(o) = services
                .iter()
                .find(|o| o.name != s.name && (o.aliases.contains(a) || &o.name == a))
            {
                c.at(span_of(&s.name, "aliases"), format!("[services.{}] aliases: `{a}` also names service `{}`; each name on a network must lead to one service", s.name, o.name));
            }
        }
        for n in &s.networks {
            if n != DEFAULT_NETWORK && !decl.networks.iter().any(|d| &d.key == n) {
                let known: Vec<&str> = decl.networks.iter().map(|d| d.key.as_str()).collect();
                let hint = closest(n, &known)
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_else(|| format!("; declare it, like [networks.{n}]"));
                c.at(
                    span_of(&s.name, "networks"),
                    format!(
                        "[services.{}] networks names `{n}`, which is not under [networks]{hint}",
                        s.name
                    ),
                );
            }
        }
        if decl.network == NetworkChoice::Host {
            for p in &s.ports {
                if p.host != p.container {
                    c.at(span_of(&s.name, "ports"), format!("[services.{}] ports: \"{}:{}\" cannot hold on the host network ([stack] network = \"host\"{}), where the service listens on the host port itself; make the service listen on {} (pass `${{services.{}.port}}` in its command) and write {}", s.name, p.host, p.container, if decl.networks.is_empty() { ", the default without [networks]" } else { "" }, p.host, s.name, p.host));
                }
            }
        }
        // Secrets go only where they stay off command lines: env values and
        // the postgres probe's password.
        let elsewhere = [
            ("image", vec![s.image.as_str()]),
            ("build", s.build.iter().map(String::as_str).collect()),
            ("volumes", s.volumes.iter().map(String::as_str).collect()),
        ];
        for (key, values) in elsewhere {
            let named = values
                .iter()
                .flat_map(|v| references(v))
                .flatten()
                .find(|r| r.starts_with("secrets."));
            if let Some(r) = named {
                c.at(
                    span_of(&s.name, key),
                    format!("[services.{}] {key}: `${{{r}}}` is filled in only in `env` values and the postgres probe's password (a command line is visible to every user); pass it through env", s.name),
                );
            }
        }
        for d in &s.depends_on {
            if !names.contains(d.as_str()) {
                let hint = closest(d, &names.iter().copied().collect::<Vec<_>>())
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_default();
                c.at(span_of(&s.name, "depends_on"), format!("[services.{}] depends_on names `{d}`, which is not a service of this file{hint}", s.name));
            } else if d == &s.name {
                c.at(
                    span_of(&s.name, "depends_on"),
                    format!("[services.{}] depends on itself", s.name),
                );
            }
        }
    }
    if let Some(cycle) = find_cycle(services) {
        c.at(
            span_of(&cycle[0], "depends_on"),
            format!("dependency cycle: {}", cycle.join(" -> ")),
        );
    }
    let mut holders: BTreeMap<u16, &str> = BTreeMap::new();
    for s in services {
        let mut own = BTreeSet::new();
        for p in s.ports.iter().map(|p| p.host) {
            if !own.insert(p) {
                c.at(
                    span_of(&s.name, "ports"),
                    format!("[services.{}] ports: host port {p} is listed twice", s.name),
                );
            }
            if let Some(other) = holders.insert(p, &s.name)
                && other != s.name
            {
                c.at(span_of(&s.name, "ports"), format!("port {p} is held by both `{other}` and `{}`; give each service its own ports", s.name));
            }
        }
    }
}

/// The `${...}` references in a value (`$${` is a literal `${`); an
/// unclosed `${` is an `Err`.
pub fn references(text: &str) -> Vec<Result<String, ()>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest[..i].ends_with('$') {
            rest = &rest[i + 2..];
            continue;
        }
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                out.push(Ok(after[..j].to_string()));
                rest = &after[j + 1..];
            }
            None => {
                out.push(Err(()));
                break;
            }
        }
    }
    out
}

/// A dependency cycle, as service names ending where they began.
fn find_cycle(services: &[Service]) -> Option<Vec<String>> {
    let deps: BTreeMap<&str, &[String]> = services
        .iter()
        .map(|s| (s.name.as_str(), s.depends_on.as_slice()))
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        n: &'a str,
        deps: &BTreeMap<&'a str, &'a [String]>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = path.iter().position(|p| *p == n).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n, Mark::Visiting);
        path.push(n);
        for d in deps.get(n).copied().unwrap_or_default() {
            if deps.contains_key(d.as_str())
                && d != n
                && let Some(c) = visit(d, deps, marks, path)
            {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(n, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for s in services {
        if let Some(c) = visit(&s.name, &deps, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

/// Whether `s` is a valid stack or service name.
pub fn valid_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && s.len() <= 63
}

/// Checks one volume: `/path` (anonymous), `SOURCE:/path[:OPTIONS]` where
/// SOURCE is a volume name, an absolute path or one starting `./` or `../`
/// (pure).
pub fn check_volume(v: &str) -> Result<(), String> {
    const OPTIONS: &[&str] = &[
        "ro",
        "rw",
        "z",
        "Z",
        "U",
        "O",
        "copy",
        "nocopy",
        "shared",
        "slave",
        "private",
        "rshared",
        "rslave",
        "rprivate",
        "exec",
        "noexec",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "bind",
        "rbind",
        "idmap",
        "cached",
        "delegated",
        "consistent",
    ];
    if v.contains('\0') {
        return Err("a NUL byte".into());
    }
    let parts: Vec<&str> = v.split(':').collect();
    let target = match parts.as_slice() {
        [t] => t,
        [_, t] | [_, t, _] => t,
        _ => return Err("more than SOURCE:TARGET:OPTIONS".into()),
    };
    if !target.starts_with('/') {
        return Err("the path in the container must be absolute".into());
    }
    if let [src, ..] = parts.as_slice()
        && parts.len() > 1
    {
        let path = src.starts_with('/')
            || src.starts_with("./")
            || src.starts_with("../")
            || *src == "."
            || *src == "..";
        let name = src
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && src
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !path && !name {
            return Err("the source is neither a volume name (letters, digits, _ . -) nor a path (/..., ./..., ../...)".into());
        }
    }
    if let [_, _, opts] = parts.as_slice()
        && let Some(bad) = opts.split(',').find(|o| !OPTIONS.contains(o))
    {
        return Err(format!(
            "unknown option `{bad}` (ro, rw, z, Z, U, nocopy ...)"
        ));
    }
    Ok(())
}

/// Whether `s` reads as an image reference (and never as an engine flag).
pub fn valid_image(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
}

/// Whether `s` can name a network or a host on one.
fn valid_engine_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.len() <= 63
}

fn valid_env_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `60s`, `500ms`, `2m`, `1h`, `90` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration"))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("`{s}` is not a duration")),
    };
    Ok(d)
}

/// `IP:PORT`, with `localhost` read as 127.0.0.1 (a static binary never
/// looks names up).
pub fn parse_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse() {
        return Some(a);
    }
    let port = s.strip_prefix("localhost:")?.parse().ok()?;
    Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}

/// `http://IP:PORT/PATH` as the address and the path.
pub fn parse_http_url(url: &str) -> Option<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = parse_addr(host).or_else(|| {
        // A URL without a port means 80.
        parse_addr(&format!("{host}:80"))
    })?;
    Some((addr, path.to_string()))
}

/// The known word closest to `word`, if close enough to be a likely typo.
pub fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, k)| *d <= (k.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Services in an order where every service comes after its dependencies.
pub fn start_order(services: &[Service]) -> Vec<&Service> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    while out.len() < services.len() {
        let before = out.len();
        for s in services {
            if !done.contains(s.name.as_str())
                && s.depends_on.iter().all(|d| done.contains(d.as_str()))
            {
                done.insert(&s.name);
                out.push(s);
            }
        }
        if out.len() == before {
            break; // a cycle: refused by `parse`
        }
    }
    out
}

/// The starter file `podstack init` writes: seed 000's stack.
pub const STARTER: &str = r#"# podstack.toml: the services this project's end-to-end tests need.
# `podstack up` starts them (dependencies first, independent ones at once),
# waits until each is ready, and `podstack down` stops them.

[stack]
name = "props"                      # container names: props-postgres ...
# engine = "auto"                   # podman when it can run containers here, else a Docker daemon
# network = "auto"                  # isolated where the engine can make networks, else host

[secrets]
pg_password = { generate = 32 }     # made once, kept 0600 in the state dir

# Seed 000's two networks: agents reach postgres and the proxy, not the
# registry. Where only the host's network works (gVisor, rootless podman
# without /dev/net/tun) they collapse onto it, each service on its own ports;
# ${services.NAME.host} and ${services.NAME.port} say where a service is in
# either mode, ${net.name.agents} which network an agent container joins.
[networks.internal]
name = "props-internal"
[networks.agents]
name = "props-agents"

[services.postgres]
image = "docker.io/library/postgres:16"
command = ["-c", "max_connections=200", "-p", "5433"]   # like compose: replaces the image's CMD
# entrypoint = [...]                # replaces the image's ENTRYPOINT
env = { POSTGRES_PASSWORD = "${secrets.pg_password}", POSTGRES_DB = "eval_results" }
volumes = ["props_eval_results_data:/var/lib/postgresql/data"]   # named volume or host path
networks = ["internal", "agents"]
aliases = ["props-postgres"]        # its name on those networks
ports = [5433]                      # also "35433:5432" (isolated only), "127.0.0.1:35433:5432"
ready = { postgres = "127.0.0.1:5433", user = "postgres", password = "${secrets.pg_password}", database = "eval_results" }
timeout = "60s"                     # start + ready deadline
retries = 0                         # restarts allowed when the container exits before it is ready

[services.registry]
image = "docker.io/library/registry:2"
env = { REGISTRY_HTTP_ADDR = "${net.bind}:5050" }   # 127.0.0.1 on the host's network, 0.0.0.0 on its own
networks = ["internal"]
ports = [5050]
ready = { http = "http://127.0.0.1:5050/v2/", status = [200, 401] }

[services.registry-proxy]
image = "props-registry-proxy:latest"
build = "bazelisk run //props/registry_proxy:load"   # run when the image is missing ($PODSTACK_ENGINE: podman or docker)
depends_on = ["postgres", "registry"]
env = { PROPS_REGISTRY_UPSTREAM_URL = "http://${services.registry.host}:${services.registry.port}", PGHOST = "${services.postgres.host}", PGPORT = "${services.postgres.port}", PGUSER = "postgres", PGPASSWORD = "${secrets.pg_password}", PGDATABASE = "eval_results" }
networks = ["internal", "agents"]
aliases = ["registry-proxy"]
ports = [5051]
ready = { tcp = "127.0.0.1:5051" }                  # also: { exec = ["cmd", "arg"] }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> StackFile {
        parse(Path::new("/p/podstack.toml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn problems(text: &str) -> String {
        parse(Path::new("/p/podstack.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_starter_is_seed_000() {
        let f = ok(STARTER);
        assert_eq!(f.name.as_deref(), Some("props"));
        assert_eq!(f.secrets["pg_password"], SecretSpec::Generate(32));
        let names: Vec<&str> = f.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["postgres", "registry", "registry-proxy"]);
        let pg = &f.services[0];
        assert_eq!(
            pg.command.as_deref().unwrap(),
            ["-c", "max_connections=200", "-p", "5433"]
        );
        assert_eq!(pg.ports.iter().map(|p| p.host).collect::<Vec<_>>(), [5433]);
        assert_eq!(f.network, NetworkChoice::Auto);
        assert_eq!(pg.networks, ["internal", "agents"]);
        assert_eq!(pg.timeout, Duration::from_secs(60));
        assert!(
            matches!(&pg.ready, Some(Ready::Postgres { user, database: Some(db), .. }) if user == "postgres" && db == "eval_results")
        );
        let reg = &f.services[1];
        assert!(
            matches!(&reg.ready, Some(Ready::Http { status, path, .. }) if status == &[200, 401] && path == "/v2/")
        );
        let proxy = &f.services[2];
        assert_eq!(proxy.depends_on, ["postgres", "registry"]);
        assert_eq!(
            proxy.build.as_deref(),
            Some("bazelisk run //props/registry_proxy:load")
        );
        let order: Vec<&str> = start_order(&f.services)
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(order.last(), Some(&"registry-proxy"));
    }

    #[test]
    fn unknown_keys_name_the_closest_known_one() {
        let e = problems("[services.db]\nimage = \"x\"\nreadyy = { tcp = \"127.0.0.1:1\" }\n");
        assert_eq!(
            e,
            "/p/podstack.toml:3:1: unknown key `readyy` in [services.db]; did you mean `ready`?; nothing was started"
        );
        let e = problems("[stak]\nname = \"x\"\n");
        assert!(
            e.contains("1:2: unknown key `stak` in the stack file; did you mean `stack`?"),
            "{e}"
        );
    }

    #[test]
    fn every_problem_is_named_at_once_with_its_position() {
        let text = "\
[secrets]
pw = { generate = 32 }

[services.a]
image = \"a\"
env = { P = \"${secrets.pwd}\" }
ports = [5000]
depends_on = [\"b\"]

[services.b]
image = \"b\"
ports = [5000]
depends_on = [\"a\", \"c\"]
ready = { tcp = \"db:5432\" }
timeout = \"soon\"
";
        let e = problems(text);
        assert!(e.contains("6:13: [services.a] env: unknown secret `${secrets.pwd}`; did you mean `${secrets.pw}`?"), "{e}");
        assert!(
            e.contains(
                ":13:14: [services.b] depends_on names `c`, which is not a service of this file"
            ),
            "{e}"
        );
        assert!(e.contains("dependency cycle: a -> b -> a"), "{e}");
        assert!(
            e.contains(":12:9: port 5000 is held by both `a` and `b`"),
            "{e}"
        );
        assert!(
            e.contains(":14:17: [services.b] ready tcp = \"db:5432\" must be IP:PORT"),
            "{e}"
        );
        assert!(
            e.contains(":15:11: [services.b] timeout must be a duration"),
            "{e}"
        );
        assert!(e.ends_with("6 problems; nothing was started"), "{e}");
    }

    #[test]
    fn networks_ports_and_address_variables_are_checked() {
        let f = ok(
            "[stack]\nengine = \"docker\"\n[networks.agents]\n[services.db]\nimage = \"x\"\nports = [5433, \"35432:5432\", \"127.0.0.1:6000:6001\", \"[::1]:7000:7001\"]\nnetworks = [\"agents\"]\n[services.app]\nimage = \"y\"\ncommand = [\"--db\", \"${services.db.host}:${services.db.port}\"]\nenv = { NET = \"${net.name.agents}\", MODE = \"${net.mode}\", HP = \"${services.db.host_port}\" }\n",
        );
        assert_eq!(f.engine, EngineChoice::Docker);
        assert_eq!(f.network, NetworkChoice::Auto);
        let p = &f.services[0].ports;
        assert_eq!((p[0].host, p[0].container, p[0].ip), (5433, 5433, None));
        assert_eq!((p[1].host, p[1].container), (35432, 5432));
        assert_eq!(p[2].ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(p[3].ip, Some("::1".parse().unwrap()));
        // Without [networks] the mode is host, where a pair must agree.
        let e = problems("[services.db]\nimage = \"x\"\nports = [\"35432:5432\"]\n");
        assert!(
            e.contains("3:9: [services.db] ports: \"35432:5432\" cannot hold on the host network"),
            "{e}"
        );
        let e = problems(
            "[stack]\nnetwork = \"bridge\"\nengine = \"lxc\"\n[services.db]\nimage = \"x\"\nports = [\"a:b\", 0]\nnetworks = [\"agnets\"]\n",
        );
        assert!(e.contains("2:11: [stack] network must be"), "{e}");
        assert!(e.contains("3:10: [stack] engine must be"), "{e}");
        assert!(
            e.contains("6:10: [services.db] ports: a port is a number or a string"),
            "{e}"
        );
        assert!(
            e.contains("networks names `agnets`, which is not under [networks]; declare it"),
            "{e}"
        );
        let e = problems(
            "[networks.agents]\n[services.db]\nimage = \"x\"\nnetworks = [\"agnets\"]\nenv = { A = \"${services.dbb.host}\", B = \"${services.db.port}\", C = \"${services.db.ip}\", D = \"${net.name.x}\" }\ncommand = [\"${secrets.pw}\"]\n",
        );
        assert!(e.contains("did you mean `agents`?"), "{e}");
        assert!(e.contains("no service `dbb`; did you mean `db`?"), "{e}");
        assert!(e.contains("service `db` declares no ports"), "{e}");
        assert!(e.contains("`ip` is not an address field"), "{e}");
        assert!(e.contains("no network `x` under [networks]"), "{e}");
        assert!(
            e.contains("command: `${secrets.pw}` is filled in only in `env`"),
            "{e}"
        );
        let e = problems(
            "[networks.a]\nname = \"host\"\n[networks.b]\nname = \"x\"\n[networks.c]\nname = \"x\"\n[services.s]\nimage = \"i\"\nnetworks = [\"b\", \"b\"]\naliases = [\"t\"]\nports = [\"+40001:2\", 7, 7]\nready = { exec = [\"${secrets.pw}\"] }\n[services.t]\nimage = \"i\"\n",
        );
        assert!(e.contains("name `host` is the engine's own network"), "{e}");
        assert!(
            e.contains("[networks.c] and [networks.b] both name `x`"),
            "{e}"
        );
        assert!(e.contains("networks lists `b` twice"), "{e}");
        assert!(e.contains("aliases: `t` also names service `t`"), "{e}");
        assert!(e.contains("ports: a port is a number or a string"), "{e}");
        assert!(e.contains("host port 7 is listed twice"), "{e}");
        assert!(
            e.contains("ready: `${secrets.pw}` is filled in only"),
            "{e}"
        );
    }

    #[test]
    fn wrong_shapes_say_what_was_expected() {
        let e = problems("[services.a]\ncommand = \"postgres -p 5433\"\n");
        assert!(e.contains("needs an `image`"), "{e}");
        assert!(
            e.contains("2:11: [services.a] command must be an array of strings"),
            "{e}"
        );
        let e = problems(
            "[services.a]\nimage = \"x\"\nready = { tcp = \"127.0.0.1:1\", http = \"http://127.0.0.1:2/\" }\n",
        );
        assert!(
            e.contains(
                "needs exactly one of tcp, http, postgres, exec, container (found tcp, http)"
            ),
            "{e}"
        );
        let e = problems("[services.A_b]\nimage = \"x\"\n");
        assert!(e.contains("service name `A_b`"), "{e}");
        let e = problems("[services.a]\nimage = \"x\"\nenv = { P = \"${HOME}\" }\n");
        assert!(
            e.contains("`${HOME}` is not known; use ${secrets.NAME}"),
            "{e}"
        );
        let e = problems("[services.a\n");
        assert!(e.contains("1:12: invalid TOML"), "{e}");
        ok("[services.a]\nimage = \"x\"\nenv = { P = \"$${HOME}\" }\n");
        let e = problems(
            "[secrets]\nx = { generate = 8 }\n[services.a]\nimage = \"x\"\nenv = { A = \"${secrets.x\" }\n",
        );
        assert!(
            e.contains("5:13: [services.a] env: an unclosed `${`"),
            "{e}"
        );
        let e = problems(
            "[secrets]\nx = { generate = 8 }\n[services.a]\nimage = \"x\"\ncommand = [\"--pw\", \"${secrets.x}\"]\n",
        );
        assert!(
            e.contains("[services.a] command: `${secrets.x}` is filled in only in `env`"),
            "{e}"
        );
        ok("[services.a]\nimage = \"x\"\ncommand = [\"sh\", \"-c\", \"echo ${HOME}\"]\n");
    }

    #[test]
    fn small_parsers() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("1.5s").is_err());
        assert_eq!(
            parse_addr("localhost:5433"),
            Some("127.0.0.1:5433".parse().unwrap())
        );
        assert_eq!(parse_addr("db:5433"), None);
        assert_eq!(
            parse_http_url("http://127.0.0.1:5050/v2/"),
            Some(("127.0.0.1:5050".parse().unwrap(), "/v2/".into()))
        );
        assert_eq!(parse_http_url("https://127.0.0.1/"), None);
        assert_eq!(
            references("a ${secrets.x} $${lit} ${y}"),
            vec![Ok("secrets.x".to_string()), Ok("y".to_string())]
        );
        assert_eq!(references("${secrets.x"), vec![Err(())]);
        assert_eq!(
            closest("postgress", &["postgres", "registry"]),
            Some("postgres")
        );
        assert_eq!(closest("zzz", &["postgres"]), None);
    }
}
