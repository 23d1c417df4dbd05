//! `podstack hook`: Claude Code's (and Codex's) SessionStart hook.
//!
//! The order is the contract: the exports are written first (every host,
//! port and secret is known before any service is ready, so the session's
//! first shell has them), then the stack is brought up within a budget. A
//! warm stack is answered in-process without an engine call; otherwise
//! `podstack up` runs detached (its own session, stdin /dev/null, output to
//! a log in the state folder, no descriptor of the hook's: Claude Code
//! waits for EOF on the hook's pipes) and the hook waits for it until the
//! budget is spent, then reports what it knows and exits 0 while the start
//! goes on. A hook that finds another `up` of the stack under way joins it
//! (waits on the same lock); it never starts a second stack.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::env::Env;
use crate::exit::Outcome;
use crate::export::Var;
use crate::stack::file::EngineChoice;
use crate::stack::up::Report;

/// The default budget: the VS Code extension gives all of start-up 60 s.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(30);

/// The SessionStart input, read leniently: every field may be missing.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Input {
    /// The session.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The session's folder.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// `startup`, `resume`, `clear`, `compact`, `fork`.
    #[serde(default)]
    pub source: Option<String>,
}

/// Parses the hook's stdin; anything that is not the expected JSON reads as
/// no input (the session must start whatever the harness sent) (pure).
pub fn parse_input(bytes: &[u8]) -> Input {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .filter(serde_json::Value::is_object)
        .map(|v| {
            // Field by field: a field of an unexpected type is dropped alone.
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
            Input {
                session_id: s("session_id"),
                cwd: s("cwd").map(PathBuf::from),
                source: s("source"),
            }
        })
        .unwrap_or_default()
}

/// How the hook runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--budget`, over `[hook] budget`.
    pub budget: Option<Duration>,
    /// Exit 2 (reason on stderr) when the stack is not ready.
    pub strict: bool,
    /// `--lock-timeout`.
    pub lock_timeout: Duration,
    /// `--engine`.
    pub engine: Option<EngineChoice>,
}

/// What the hook prints: Claude Code's SessionStart output.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Output {
    hook_specific_output: Specific,
    system_message: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Specific {
    hook_event_name: &'static str,
    additional_context: String,
}

/// The result file a detached `up` leaves for the hook that started it.
#[derive(Serialize, Deserialize)]
pub struct Result_ {
    /// The hook's token.
    pub token: String,
    /// The report, when `up` got as far.
    pub report: Option<Report>,
    /// The error, when it did not.
    pub error: Option<String>,
}

/// How the stack ended up, for the summary.
enum Verdict {
    Ready(Report),
    NotReady(Report),
    Failed(String),
    Starting { pid: Option<u32>, log: PathBuf },
}

/// The environment files to write: `CLAUDE_ENV_FILE`, `CODEX_ENV_FILE`.
fn env_files(env: &Env) -> Vec<(&'static str, PathBuf)> {
    ["CLAUDE_ENV_FILE", "CODEX_ENV_FILE"]
        .into_iter()
        .filter_map(|k| {
            env.get(k)
                .filter(|v| !v.is_empty())
                .map(|v| (k, env.absolute(Path::new(v))))
        })
        .collect()
}

/// Reads stdin (at most 1 MiB, at most 2 s: a harness that never closes it
/// does not hold the session). A plain thread reads, not the runtime's
/// blocking pool, whose threads the runtime would wait for at exit.
async fn read_stdin() -> Vec<u8> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = Vec::new();
        let _ = std::io::stdin().lock().take(1 << 20).read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    tokio::time::timeout(Duration::from_secs(2), rx)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// Runs the hook. Never fails for what it can describe: the session starts.
pub async fn run(
    env: &Env,
    file: Option<&Path>,
    project_name: Option<&str>,
    opts: &Options,
) -> Result<Outcome> {
    let start = Instant::now();
    let input = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        Input::default()
    } else {
        parse_input(&read_stdin().await)
    };
    crate::log::info(|| {
        format!(
            "SessionStart: source {}, session {}",
            input.source.as_deref().unwrap_or("?"),
            input.session_id.as_deref().unwrap_or("?")
        )
    });
    let (summary, ready) = match body(env, file, project_name, opts, &input, start).await {
        Ok(v) => v,
        Err(e) => (
            (
                format!(
                    "podstack could not prepare this session's stack: {}. `podstack doctor` and `podstack up` show more.",
                    crate::proc::cut(&format!("{e:#}"), 600)
                ),
                format!("podstack: {}", crate::proc::cut(&format!("{e:#}"), 150)),
            ),
            false,
        ),
    };
    let (context, message) = summary;
    let out = Output {
        hook_specific_output: Specific {
            hook_event_name: "SessionStart",
            additional_context: crate::proc::cut(&context, 1900),
        },
        system_message: one_line(&message),
    };
    // One line: Claude Code looks at the first line of a hook's output first.
    crate::report::text(&format!("{}\n", serde_json::to_string(&out)?))?;
    if opts.strict && !ready {
        crate::log::error(one_line(&message).trim_start_matches("podstack: "));
        return Ok(Outcome::Error);
    }
    Ok(Outcome::Done)
}

type Summary = (String, String);

/// `s` on one line (a person's status line).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn body(
    env: &Env,
    file: Option<&Path>,
    project_name: Option<&str>,
    opts: &Options,
    input: &Input,
    start: Instant,
) -> Result<(Summary, bool)> {
    let targets = env_files(env);
    let stack_file = crate::stack::try_find_file(env, file, input.cwd.as_deref());
    // The sockets are asked only when there is no stack to say where things are.
    let facts = crate::detect::gather(&crate::detect::Probe {
        root: Path::new("/"),
        env,
        ping: stack_file.is_none(),
    });
    let root = facts
        .layout
        .as_ref()
        .context("HOME is not set: cannot tell where podstack keeps its state")?
        .state_dir
        .clone();
    let Some(stack_file) = stack_file else {
        let vars = crate::export::from_sockets(&facts);
        let written = write_all(&targets, "detected", &vars, opts, &root).await;
        return Ok((
            (
                format!(
                    "podstack: no {} in this project, so no stack was started.{}",
                    crate::stack::FILE_NAME,
                    exported_sentence(&vars, &written)
                ),
                "podstack: no stack file; nothing started".into(),
            ),
            true,
        ));
    };
    let project = crate::stack::open(env, Some(&stack_file), project_name, &root)?;
    let keys = crate::stack::keys(&project)?;
    // 1. The exports, first. A daemon may be started here: a fresh VM's
    // dockerd is not running yet.
    let vars = crate::stack::cmd::exports(
        env,
        &facts,
        &project,
        opts.engine,
        opts.lock_timeout,
        true,
        &keys,
    )
    .await?;
    // Locks of env files live in the user's state folder, one per file
    // whichever stack writes it.
    let written = write_all(&targets, &project.name, &vars, opts, &root).await;
    crate::log::info(|| format!("exports written after {} ms", start.elapsed().as_millis()));
    // 2. The stack, within the budget.
    let budget = opts
        .budget
        .or(project.file.hook_budget)
        .unwrap_or(DEFAULT_BUDGET);
    let verdict = bring_up(&project, opts, &keys, start + budget).await?;
    // A warm stack's API socket (a fresh VM's detached up makes its own).
    if let Verdict::Ready(r) = &verdict
        && r.warm
    {
        crate::stack::cmd::ensure_api(&facts, &project, r.engine).await?;
    }
    Ok(summarise(&project, &vars, &written, verdict, budget))
}

/// The targets written, and a sentence per target that could not be.
struct Written {
    ok: Vec<&'static str>,
    failed: Vec<String>,
}

/// Writes the block into every target. A target that cannot be written is
/// reported, not fatal: the stack still comes up.
async fn write_all(
    targets: &[(&'static str, PathBuf)],
    name: &str,
    vars: &[Var],
    opts: &Options,
    state: &Path,
) -> Written {
    let mut w = Written {
        ok: Vec::new(),
        failed: Vec::new(),
    };
    for (var, path) in targets {
        match crate::export::write_block(path, name, vars, opts.lock_timeout, state).await {
            Ok(_) => w.ok.push(*var),
            Err(e) => w.failed.push(format!(
                "{var} ({}) could not be written: {}",
                path.display(),
                crate::proc::cut(&format!("{e:#}"), 200)
            )),
        }
    }
    w
}

/// The warm answer, or a detached `up` waited for until `deadline`.
async fn bring_up(
    project: &crate::stack::Project,
    opts: &Options,
    keys: &crate::stack::Keys,
    deadline: Instant,
) -> Result<Verdict> {
    let up_opts = crate::stack::up::Options {
        services: Vec::new(),
        timeout: None,
        lock_timeout: opts.lock_timeout,
        engine: opts.engine,
    };
    let lock_path = project.state_dir.join("up.lock");
    let log = project.state_dir.join("hook-up.log");
    let result = project.state_dir.join("hook-result.json");
    fs_err::create_dir_all(&project.state_dir)?;
    let started = project.state_dir.join("hook-up.json");
    let mut token = None;
    let mut pid = None;
    {
        // One hook at a time decides; a detached `up` a hook started and
        // that still runs is joined, never doubled.
        let _decide = crate::fsx::Lock::acquire(
            &project.state_dir.join("hook.lock"),
            opts.lock_timeout,
            "starting the stack for a SessionStart hook",
        )
        .await?;
        if let Some(s) = started_up(&project.state_dir).filter(StartedUp::running) {
            pid = Some(s.pid);
            token = Some(s.token);
        } else if let Some(lock) = crate::fsx::Lock::try_acquire(&lock_path)? {
            // Nobody is bringing it up: answer a warm stack here, else start `up`.
            if let Some(r) = crate::stack::up::warm_report(project, &up_opts, keys).await? {
                return Ok(Verdict::Ready(r));
            }
            drop(lock);
            let t = crate::stack::random_string(16)?;
            let mut cmd = crate::proc::Cmd::new(std::env::current_exe()?)
                .arg("--file")
                .arg(&project.file.path)
                .arg("--project-name")
                .arg(&project.name);
            if let Some(e) = opts.engine {
                cmd = cmd.arg("--engine").arg(e.as_str());
            }
            cmd = cmd
                .args(["up", "--json", "--result-file"])
                .arg(&result)
                .args(["--result-token", &t]);
            // The continuation inherits the hook's environment. One start
            // per log: what it says is this start's.
            let _ = fs_err::rename(&log, log.with_extension("log.1"));
            let p = cmd.spawn_detached(&log)?;
            let record = StartedUp {
                pid: p,
                start_time: crate::stack::record::start_time(p),
                token: t.clone(),
            };
            crate::fsx::write_atomic(&started, serde_json::to_string(&record)?.as_bytes(), 0o600)?;
            pid = Some(p);
            token = Some(t);
        }
    }
    // Wait for this hook's `up`, or for whoever holds the lock.
    loop {
        if let Some(t) = &token
            && let Some(r) = read_result(&result, t)
        {
            return Ok(match (r.report, r.error) {
                (Some(rep), _) if rep.ready() => Verdict::Ready(rep),
                (Some(rep), _) => Verdict::NotReady(rep),
                (None, e) => Verdict::Failed(e.unwrap_or_else(|| "podstack up failed".into())),
            });
        }
        if token.is_none()
            && let Some(_lock) = crate::fsx::Lock::try_acquire(&lock_path)?
        {
            // The other `up` is done: the record and the probes tell.
            return Ok(match crate::stack::up::warm_report(project, &up_opts, keys).await? {
                Some(r) => Verdict::Ready(r),
                None => Verdict::Failed(
                    "another podstack brought the stack up, and it is not ready now: `podstack status` shows why".into(),
                ),
            });
        }
        if let Some(p) = pid
            && crate::stack::record::start_time(p).is_none()
            && token
                .as_ref()
                .is_some_and(|t| read_result(&result, t).is_none())
        {
            return Ok(Verdict::Failed(format!(
                "podstack up (pid {p}) ended without a result; its output is in {}",
                log.display()
            )));
        }
        if Instant::now() >= deadline {
            return Ok(Verdict::Starting { pid, log });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What `STATE/stacks/NAME/hook-up.json` says of the detached `up` a hook
/// started: its pid, that pid's start time (a reused pid is not it), the
/// token its result will carry.
#[derive(Serialize, Deserialize)]
struct StartedUp {
    pid: u32,
    start_time: Option<u64>,
    token: String,
}

fn started_up(state_dir: &Path) -> Option<StartedUp> {
    serde_json::from_str(&fs_err::read_to_string(state_dir.join("hook-up.json")).ok()?).ok()
}

impl StartedUp {
    fn running(&self) -> bool {
        self.start_time.is_some() && crate::stack::record::start_time(self.pid) == self.start_time
    }
}

/// When the last detached `up` a hook started ended without leaving its
/// result (killed), the sentence that says so.
pub fn unfinished_start(state_dir: &Path) -> Option<String> {
    let s = started_up(state_dir)?;
    if s.running() || read_result(&state_dir.join("hook-result.json"), &s.token).is_some() {
        return None;
    }
    Some(format!(
        "the background start a hook made (pid {}) ended before it finished; its output is in {}; podstack up starts the stack",
        s.pid,
        state_dir.join("hook-up.log").display()
    ))
}

fn read_result(path: &Path, token: &str) -> Option<Result_> {
    let text = fs_err::read_to_string(path).ok()?;
    serde_json::from_str::<Result_>(&text)
        .ok()
        .filter(|r| r.token == token)
}

fn exported_sentence(vars: &[Var], w: &Written) -> String {
    let mut failed = String::new();
    for f in &w.failed {
        failed.push_str(&format!(" {f}."));
    }
    if vars.is_empty() {
        return failed;
    }
    let written = &w.ok;
    let names: Vec<String> = vars
        .iter()
        .map(|v| {
            if v.secret {
                format!("{} (secret)", v.name)
            } else {
                v.name.clone()
            }
        })
        .collect();
    let said = if written.is_empty() {
        format!(
            " Variables {} were not exported: no CLAUDE_ENV_FILE or CODEX_ENV_FILE was written (`podstack env` prints them).",
            names.join(", ")
        )
    } else {
        format!(
            " Exported to every shell ({}): {}.",
            written.join(", "),
            names.join(", ")
        )
    };
    format!("{said}{failed}")
}

fn services_sentence(r: &Report) -> String {
    r.services
        .iter()
        .map(|s| {
            let ports: Vec<String> = s.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
            let state = if s.ready { "ready" } else { "not ready" };
            if ports.is_empty() {
                format!("{} {state}", s.name)
            } else {
                format!("{} {state} on {}", s.name, ports.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn summarise(
    project: &crate::stack::Project,
    vars: &[Var],
    written: &Written,
    verdict: Verdict,
    budget: Duration,
) -> (Summary, bool) {
    let name = &project.name;
    let file = project.file.path.display();
    let mut exported = exported_sentence(vars, written);
    let cold = !matches!(&verdict, Verdict::Ready(r) if r.warm);
    let log = fs_err::read_to_string(project.state_dir.join("hook-up.log")).unwrap_or_default();
    if cold && (log.contains("is missing; building it") || log.contains(": pulling ")) {
        exported.push_str(
            " Images were missing, so this start builds or pulls them: `podstack prepare` in the environment's setup script makes them once.",
        );
    }
    match verdict {
        Verdict::Ready(r) => (
            (
                format!(
                    "podstack: the stack `{name}` ({file}) is up on {} ({} network): {}.{exported} `podstack status` shows it; `podstack logs SERVICE` shows a service's output.",
                    r.engine,
                    r.mode,
                    services_sentence(&r)
                ),
                format!(
                    "podstack: {name} ready ({} services{})",
                    r.services.len(),
                    if r.warm {
                        ", already up".to_string()
                    } else {
                        format!(", {} ms", r.elapsed_ms)
                    }
                ),
            ),
            true,
        ),
        Verdict::NotReady(r) => {
            let fails: Vec<String> = r
                .failures
                .iter()
                .map(|f| format!("{}: {}", f.service, crate::proc::cut(&f.reason, 200)))
                .collect();
            let first = r.failures.first().map_or("SERVICE", |f| f.service.as_str());
            (
                (
                    format!(
                        "podstack: the stack `{name}` ({file}) is NOT ready: {}. Services: {}.{exported} `podstack logs {first}` shows its output; `podstack up` tries again.",
                        fails.join("; "),
                        services_sentence(&r)
                    ),
                    format!("podstack: {name} NOT ready ({})", fails.join("; ")),
                ),
                false,
            )
        }
        Verdict::Failed(e) => (
            (
                format!(
                    "podstack: the stack `{name}` ({file}) could not be brought up: {}.{exported} `podstack up` shows the whole error.",
                    crate::proc::cut(&e, 600)
                ),
                format!("podstack: {name} failed: {}", crate::proc::cut(&e, 150)),
            ),
            false,
        ),
        Verdict::Starting { pid, log } => (
            (
                format!(
                    "podstack: the stack `{name}` ({file}) is still starting in the background{} (not ready within the hook's {} s); its output goes to {}.{exported} `podstack wait` blocks until it is ready and reports.",
                    pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                    budget.as_secs(),
                    log.display()
                ),
                format!("podstack: {name} still starting (podstack wait)"),
            ),
            false,
        ),
    }
}

/// The SessionStart entry of `.claude/settings.json` that runs `command`.
pub fn settings_entry(command: &str, timeout_s: u64) -> serde_json::Value {
    serde_json::json!({
        "matcher": "startup|resume|clear|compact",
        "hooks": [{ "type": "command", "command": command, "timeout": timeout_s }]
    })
}

/// Merges podstack's SessionStart entry into a settings.json text: an entry
/// whose command runs `podstack hook` is replaced in place, else one is
/// appended; every other key and hook stays as it was (pure).
pub fn merge_settings(existing: &str, command: &str, timeout_s: u64) -> Result<String> {
    use serde_json::{Map, Value};
    let mut root: Value = if existing.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(existing).map_err(|e| {
            anyhow::anyhow!("line {}, column {}: not JSON: {e}", e.line(), e.column())
        })?
    };
    let Value::Object(obj) = &mut root else {
        anyhow::bail!("the file holds JSON that is not an object");
    };
    let hooks = obj
        .entry("hooks")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(hooks) = hooks else {
        anyhow::bail!("`hooks` is not an object");
    };
    let list = hooks
        .entry("SessionStart")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(list) = list else {
        anyhow::bail!("`hooks.SessionStart` is not an array");
    };
    // Ours: a hook whose command runs a podstack binary's `hook` and nothing
    // else (`.../podstack hook`, `'...podstack' hook`, with its flags).
    let is_ours = |h: &Value| {
        h.get("command").and_then(Value::as_str).is_some_and(|c| {
            let c = c.trim();
            let (bin, rest) = match c.strip_prefix('\'') {
                Some(q) => match q.split_once('\'') {
                    Some((b, r)) => (b, r),
                    None => return false,
                },
                None => c.split_once(' ').unwrap_or((c, "")),
            };
            (bin == "podstack" || bin.ends_with("/podstack"))
                && (rest.trim() == "hook" || rest.trim().starts_with("hook "))
        })
    };
    let found = list.iter_mut().find_map(|e| {
        e.get_mut("hooks")
            .and_then(Value::as_array_mut)
            .and_then(|hs| hs.iter_mut().find(|h| is_ours(h)))
    });
    match found {
        // Only our hook changes; its entry's matcher and other hooks stay.
        Some(h) => {
            h["command"] = Value::from(command);
            h["timeout"] = Value::from(timeout_s);
            h["type"] = Value::from("command");
        }
        None => list.push(settings_entry(command, timeout_s)),
    }
    let mut text = serde_json::to_string_pretty(&root)?;
    text.push('\n');
    Ok(text)
}

/// `podstack __claude-settings DIR`: merges the entry into
/// DIR/.claude/settings.json (install.sh --claude-hook).
pub fn install_settings(dir: &Path, command: &str, timeout_s: u64) -> Result<Outcome> {
    let path = dir.join(".claude").join("settings.json");
    let existing = match crate::fsx::read_bounded(&path, 4 << 20) {
        Ok(b) => {
            String::from_utf8(b).map_err(|_| anyhow::anyhow!("{} is not UTF-8", path.display()))?
        }
        Err(crate::fsx::ReadError::Missing) => String::new(),
        Err(e) => anyhow::bail!("cannot read {}: {e:?}", path.display()),
    };
    let new = merge_settings(&existing, command, timeout_s)
        .with_context(|| format!("{}: podstack leaves it as it is", path.display()))?;
    if new != existing {
        crate::fsx::write_atomic(&path, new.as_bytes(), 0o644)?;
        crate::log::say(&format!(
            "SessionStart hook `{command}` in {}",
            path.display()
        ));
    } else {
        crate::log::say(&format!("{} already runs `{command}`", path.display()));
    }
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_keep_everything_else_and_hold_one_podstack_entry() {
        let theirs = r#"{
  "permissions": {"allow": ["Bash(ls)"]},
  "hooks": {
    "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "lint"}]}],
    "SessionStart": [{"hooks": [{"type": "command", "command": "echo theirs"}]}]
  },
  "z_last": 1
}"#;
        let once = merge_settings(theirs, "/usr/local/bin/podstack hook", 90).unwrap();
        let twice = merge_settings(&once, "/usr/local/bin/podstack hook", 90).unwrap();
        assert_eq!(once, twice);
        let v: serde_json::Value = serde_json::from_str(&once).unwrap();
        assert_eq!(v["permissions"]["allow"][0], "Bash(ls)");
        assert_eq!(v["hooks"]["PreToolUse"][0]["hooks"][0]["command"], "lint");
        let ss = v["hooks"]["SessionStart"].as_array().unwrap();
        assert_eq!(ss.len(), 2);
        assert_eq!(ss[0]["hooks"][0]["command"], "echo theirs");
        assert_eq!(ss[1]["matcher"], "startup|resume|clear|compact");
        // Key order kept.
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["permissions", "hooks", "z_last"]);
        assert!(merge_settings("[1]", "x", 1).is_err());
        // Someone else's hook that merely mentions podstack is not ours, and
        // a hook of theirs beside ours survives an update of ours.
        let mixed = r#"{"hooks":{"SessionStart":[{"matcher":"startup","hooks":[{"type":"command","command":"$HOME/bin/podstack-notify hook"},{"type":"command","command":"/old/bin/podstack hook --budget 5"},{"type":"command","command":"echo mine"}]}]}}"#;
        let v: serde_json::Value =
            serde_json::from_str(&merge_settings(mixed, "'/a b/podstack' hook", 90).unwrap())
                .unwrap();
        let ss = v["hooks"]["SessionStart"].as_array().unwrap();
        assert_eq!(ss.len(), 1);
        assert_eq!(ss[0]["matcher"], "startup");
        let hs = ss[0]["hooks"].as_array().unwrap();
        assert_eq!(hs[0]["command"], "$HOME/bin/podstack-notify hook");
        assert_eq!(hs[1]["command"], "'/a b/podstack' hook");
        assert_eq!(hs[2]["command"], "echo mine");
        let again = merge_settings(
            &serde_json::to_string(&v).unwrap(),
            "'/a b/podstack' hook",
            90,
        )
        .unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&again).unwrap(),
            v
        );
        assert!(
            merge_settings("{ nope", "x", 1)
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
    }

    #[test]
    fn input_is_read_leniently() {
        let i = parse_input(br#"{"session_id":"s1","cwd":"/p","source":"resume","extra":{"x":1},"permission_mode":7}"#);
        assert_eq!(i.session_id.as_deref(), Some("s1"));
        assert_eq!(i.cwd.as_deref(), Some(Path::new("/p")));
        assert_eq!(i.source.as_deref(), Some("resume"));
        let odd = parse_input(br#"{"session_id":5,"cwd":"/q"}"#);
        assert_eq!(odd.session_id, None);
        assert_eq!(odd.cwd.as_deref(), Some(Path::new("/q")));
        for junk in [&b""[..], b"not json", b"[1,2]", b"\xff\xfe", b"null"] {
            assert!(parse_input(junk).cwd.is_none());
        }
    }
}
