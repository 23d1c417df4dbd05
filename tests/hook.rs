//! `podstack env` and `podstack hook`, for real: hostile values sourced by
//! real bash and sh, GITHUB_ENV read as GitHub documents it, the hook with
//! a SessionStart JSON and a CLAUDE_ENV_FILE another hook filled first, a
//! session shell that reaches PostgreSQL and the registry through it, 100
//! hooks in a row, and a budget shorter than the stack.

// Tests may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Run, Sandbox, docker_here, free_port, json, project_of, require};

/// Values a shell would mangle if they were not quoted right.
const HOSTILE: &[(&str, &str)] = &[
    ("SQUOTE", "it's 'quoted'"),
    ("DQUOTE", "say \"hi\""),
    ("DOLLAR", "$HOME ${HOME} $(id) $$"),
    ("BACKTICK", "`id` and \\`"),
    ("SPACES", "  lead and trail  "),
    ("SEMI", "a; rm -rf /tmp/nothing; b"),
    ("NEWLINES", "line one\nline two\n\nlast"),
    ("UNICODE", "grüß dich 🐧 ĳ"),
    ("EMPTY", ""),
    ("BACKSLASH", "C:\\path\\ends\\"),
    ("HASH", "# not a comment"),
];

/// A TOML basic string holding `s` exactly (`${` escaped as podstack reads it).
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.replace("${", "$${").chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn hostile_file() -> String {
    let mut t = String::from(
        "[secrets]\npw = { generate = 24 }\n\n[services.unused]\nimage = \"localhost/nothing:1\"\n\n[env]\n",
    );
    for (k, v) in HOSTILE {
        t.push_str(&format!("{k} = {}\n", toml_str(v)));
    }
    t.push_str("PASSWORD = \"${secrets.pw}\"\n");
    t
}

/// The values a shell sees after sourcing `file`, NUL-separated.
fn sourced(shell: &str, file: &std::path::Path) -> Vec<String> {
    let names: Vec<String> = HOSTILE.iter().map(|(k, _)| format!("\"${k}\"")).collect();
    let script = format!(
        ". '{}' && printf '%s\\0' {} \"$OTHER_HOOK\"",
        file.display(),
        names.join(" ")
    );
    let out = Command::new(shell).args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{shell}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .map(str::to_string)
        .collect()
}

#[test]
fn hostile_values_survive_bash_and_sh_and_secrets_stay_in_the_file() {
    let sb = Sandbox::plain();
    sb.write(&sb.path("podstack.toml"), &hostile_file());
    let file = sb.path("session-env.sh");
    // Another hook's lines, the last without its newline.
    let theirs = "export OTHER_HOOK='kept'\n# their comment\nexport TAIL=1";
    fs_err::write(&file, theirs).unwrap();
    let w = sb.podstack(&["env", "--write", file.to_str().unwrap()]);
    assert!(w.ok(), "{}", w.all());
    let first = fs_err::read(&file).unwrap();
    let text = String::from_utf8(first.clone()).unwrap();
    assert!(text.starts_with(&format!("{theirs}\n")), "{text}");
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with(": podstack-end"),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs_err::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a file with a secret must be the owner's only");
    for shell in ["bash", "sh"] {
        let got = sourced(shell, &file);
        for (i, (k, v)) in HOSTILE.iter().enumerate() {
            assert_eq!(&got[i], v, "{shell}: {k}");
        }
        assert_eq!(got[HOSTILE.len()], "kept", "{shell}: the other hook's line");
    }
    // A second run changes no byte.
    let again = sb.podstack(&["env", "--write", file.to_str().unwrap()]);
    assert!(again.ok(), "{}", again.all());
    assert_eq!(fs_err::read(&file).unwrap(), first);
    // The secret is in the file and nowhere else.
    let secrets: serde_json::Value = serde_json::from_str(&sb.read(&sb.path(&format!(
        "state/podstack/stacks/{}/secrets.json",
        project_of(&sb)
    ))))
    .unwrap();
    let pw = secrets["pw"].as_str().unwrap();
    assert!(text.contains(pw));
    for format in ["sh", "dotenv", "json", "github"] {
        let r = sb.podstack(&["env", "--format", format]);
        // dotenv cannot hold the multi-line value: refused, naming it.
        if format == "dotenv" {
            assert_eq!(r.code, 2, "{}", r.all());
            assert!(r.stderr.contains("NEWLINES spans lines"), "{}", r.all());
            continue;
        }
        assert!(r.ok(), "{format}: {}", r.all());
        assert!(
            !r.stdout.contains(pw) && !r.stderr.contains(pw),
            "{format} printed the secret"
        );
    }
    // An invalid name is refused, naming the key.
    sb.write(
        &sb.path("podstack.toml"),
        "[services.x]\nimage = \"i\"\n[env]\n\"1BAD\" = \"x\"\n",
    );
    let bad = sb.podstack(&["env"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(
        bad.stderr.contains("`1BAD` is not a valid variable name"),
        "{}",
        bad.all()
    );
}

/// Reads a GITHUB_ENV file as GitHub documents it: `NAME=value` lines, and
/// `NAME<<DELIMITER` ... `DELIMITER` for values over several lines.
fn read_github_env(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.split('\n');
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        if let Some((name, delim)) = line.split_once("<<") {
            let mut value = Vec::new();
            loop {
                let l = lines.next().expect("an unterminated heredoc");
                if l == delim {
                    break;
                }
                value.push(l);
            }
            out.push((name.to_string(), value.join("\n")));
        } else {
            let (name, value) = line.split_once('=').expect("NAME=value");
            out.push((name.to_string(), value.to_string()));
        }
    }
    out
}

#[test]
fn github_env_is_read_back_exactly() {
    let sb = Sandbox::plain();
    sb.write(&sb.path("podstack.toml"), &hostile_file());
    let file = sb.path("github-env");
    fs_err::write(&file, "EARLIER=1\n").unwrap();
    let w = sb.podstack(&[
        "env",
        "--format",
        "github",
        "--write",
        file.to_str().unwrap(),
    ]);
    assert!(w.ok(), "{}", w.all());
    let vars = read_github_env(&sb.read(&file));
    assert_eq!(vars[0], ("EARLIER".to_string(), "1".to_string()));
    for (k, v) in HOSTILE {
        let got = vars
            .iter()
            .find(|(n, _)| n == k)
            .unwrap_or_else(|| panic!("no {k}"));
        assert_eq!(&got.1, v, "{k}");
    }
}

/// Runs the hook with `stdin`, waiting for EOF on both its pipes (as Claude
/// Code does); returns the run and how long until both closed.
/// `podstack hook ARGS` in the sandbox, every pipe piped.
fn hook_cmd(sb: &Sandbox, args: &[&str], extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(&sb.bin);
    cmd.arg("hook")
        .args(args)
        .env_clear()
        .envs(sb.env())
        .envs(extra.iter().copied())
        .current_dir(sb.path(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn hook(sb: &Sandbox, args: &[&str], stdin: &str, extra: &[(&str, &str)]) -> (Run, Duration) {
    let mut cmd = hook_cmd(sb, args, extra);
    let start = Instant::now();
    let mut child = common::spawn(&mut cmd);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    // wait_with_output reads both pipes to EOF: a descendant holding either
    // keeps it waiting, exactly as it keeps Claude Code waiting.
    let out = child.wait_with_output().unwrap();
    (out.into(), start.elapsed())
}

fn hook_json(run: &Run) -> serde_json::Value {
    let v = json(run);
    assert_eq!(
        v["hookSpecificOutput"]["hookEventName"],
        "SessionStart",
        "{}",
        run.all()
    );
    let ctx = v["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(ctx.len() < 2000, "{ctx}");
    assert!(
        v["systemMessage"]
            .as_str()
            .is_some_and(|m| !m.contains('\n'))
    );
    v
}

const START: &str = r#"{"session_id":"s-1","transcript_path":"/tmp/t.jsonl","cwd":"/","hook_event_name":"SessionStart","source":"startup","model":"m","unknown":{"a":[1]}}"#;

#[test]
fn the_hook_exports_first_and_a_session_shell_reaches_postgres_and_the_registry() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    sb.use_test_images();
    let (pg, reg) = (free_port(), free_port());
    let p = project_of(&sb);
    sb.write(
        &sb.path("podstack.toml"),
        &format!(
            r#"[secrets]
pg_password = {{ generate = 32 }}

[env]
PGHOST = "${{services.postgres.host}}"
PGPORT = "${{services.postgres.host_port}}"
PGUSER = "postgres"
PGPASSWORD = "${{secrets.pg_password}}"
PGDATABASE = "eval_results"
REGISTRY_URL = "http://127.0.0.1:${{services.registry.host_port}}/v2/"

[services.postgres]
image = "localhost/podstack-test/postgres:15"
command = ["-p", "{pg}"]
env = {{ POSTGRES_PASSWORD = "${{secrets.pg_password}}", POSTGRES_DB = "eval_results" }}
volumes = ["{p}_pg:/var/lib/postgresql/data"]
ports = [{pg}]
ready = {{ postgres = "127.0.0.1:{pg}", password = "${{secrets.pg_password}}", database = "eval_results" }}
timeout = "90s"

[services.registry]
image = "localhost/podstack-test/registry:2"
env = {{ REGISTRY_HTTP_ADDR = "127.0.0.1:{reg}" }}
ports = [{reg}]
ready = {{ http = "http://127.0.0.1:{reg}/v2/", status = [200, 401] }}
"#
        ),
    );
    let env_file = sb.path("home/.claude/session-env/s-1/sessionstart-hook-1.sh");
    fs_err::create_dir_all(env_file.parent().unwrap()).unwrap();
    let theirs = "export OTHER_HOOK='kept' # written by another hook\n";
    fs_err::write(&env_file, theirs).unwrap();
    let ef = env_file.display().to_string();
    let root = sb.path("").display().to_string();
    let extra = [
        ("CLAUDE_ENV_FILE", ef.as_str()),
        ("CLAUDE_PROJECT_DIR", root.as_str()),
    ];
    let (first, took) = hook(&sb, &[], START, &extra);
    assert!(first.ok(), "{}", first.all());
    let v = hook_json(&first);
    let ctx = v["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(ctx.contains("is up on podman"), "{ctx}");
    assert!(ctx.contains("PGPASSWORD (secret)"), "{ctx}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    let pw = serde_json::from_str::<serde_json::Value>(
        &sb.read(&sb.path(&format!("state/podstack/stacks/{p}/secrets.json"))),
    )
    .unwrap()["pg_password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!first.stdout.contains(&pw) && !first.stderr.contains(&pw));

    // The session's shell: the other hook's line kept, the stack reached.
    let text = sb.read(&env_file);
    assert!(text.starts_with(theirs), "{text}");
    let shell = Command::new("bash")
        .args([
            "-c",
            "source \"$CLAUDE_ENV_FILE\" && [ \"$OTHER_HOOK\" = kept ] && psql -Atc 'select 1' && curl -s -o /dev/null -w '%{http_code}' \"$REGISTRY_URL\"",
        ])
        .env("CLAUDE_ENV_FILE", &env_file)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&shell.stdout).to_string();
    assert!(
        shell.status.success() && (out == "1\n200" || out == "1\n401"),
        "{out}\n{}",
        String::from_utf8_lossy(&shell.stderr)
    );

    // 100 hooks in a row: not a byte of the file changes, no container either.
    let ids = |sb: &Sandbox| {
        sb.podman(&["ps", "-a", "--format", "{{.ID}} {{.StartedAt}}"])
            .stdout
    };
    let before = (fs_err::read(&env_file).unwrap(), ids(&sb));
    let start = Instant::now();
    for i in 0..100 {
        let source = ["startup", "resume", "clear", "compact"][i % 4];
        let (r, _) = hook(&sb, &[], &START.replace("startup", source), &extra);
        assert!(r.ok(), "run {i}: {}", r.all());
        assert_eq!(
            fs_err::read(&env_file).unwrap(),
            before.0,
            "run {i} changed the file"
        );
    }
    assert_eq!(ids(&sb), before.1);
    eprintln!("100 warm hooks: {:?}", start.elapsed());
    // Missing or broken input is tolerated.
    for junk in ["", "not json", "[]", "{\"cwd\": 5}"] {
        let (r, _) = hook(&sb, &[], junk, &extra);
        assert!(r.ok(), "{junk:?}: {}", r.all());
        hook_json(&r);
    }
    assert!(sb.podstack(&["down", "--volumes"]).ok());
}

#[test]
fn a_stack_slower_than_the_budget_keeps_starting_and_no_hook_starts_a_second() {
    if !docker_here() {
        return;
    }
    let sb = Sandbox::plain();
    let p = project_of(&sb);
    let port = free_port();
    let image = format!("localhost/{p}-web:1");
    // Ready only 6 s from now: slower than a 2 s budget.
    sb.write(&sb.path("podstack.toml"), &slow_web_file(&sb, port, 6));
    let env_file = sb.path("claude-env.sh");
    let ef = env_file.display().to_string();
    let codex_file = sb.path("codex-env.sh");
    let cf = codex_file.display().to_string();
    let extra = [
        ("CLAUDE_ENV_FILE", ef.as_str()),
        ("CODEX_ENV_FILE", cf.as_str()),
    ];
    let (first, took) = hook(&sb, &["--budget", "2"], START, &extra);
    assert!(first.ok(), "{}", first.all());
    assert!(
        took < Duration::from_secs(3),
        "the hook took {took:?} with a 2 s budget"
    );
    let v = hook_json(&first);
    let ctx = v["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ctx.contains("still starting in the background"), "{ctx}");
    // The exports were there before the stack, for Claude Code and Codex.
    for f in [&env_file, &codex_file] {
        assert!(
            sb.read(f)
                .contains(&format!("export WEB='http://127.0.0.1:{port}/'"))
        );
    }
    // A hook meanwhile joins the start under way.
    let (second, took2) = hook(&sb, &["--budget", "1"], START, &extra);
    assert!(second.ok(), "{}", second.all());
    assert!(took2 < Duration::from_secs(2), "{took2:?}");
    let w = sb.podstack(&["wait", "--timeout", "60", "--json"]);
    assert!(w.ok(), "{}", w.all());
    assert_eq!(json(&w)["services"][0]["state"], "ready", "{}", w.all());
    let ps = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=io.podstack.project={p}"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout).lines().count(),
        1,
        "one stack, one container"
    );
    // Now warm: the hook answers at once.
    let (warm, took3) = hook(&sb, &[], START, &extra);
    assert!(
        warm.ok() && warm.stdout.contains("is up on docker"),
        "{}",
        warm.all()
    );
    assert!(took3 < Duration::from_secs(1), "{took3:?}");
    assert!(sb.podstack(&["down"]).ok());
    let _ = Command::new("docker").args(["rmi", &image]).output();
}

/// The real Claude Code CLI (PyPI's claude-agent-sdk wheel, fetched and
/// cached by tests/claude/fetch), or `None` (skips; fails in CI).
fn claude() -> Option<std::path::PathBuf> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/claude/fetch");
    let out = Command::new("sh").arg(script).output().ok()?;
    let path = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let ok = out.status.success() && path.is_file();
    if !require(
        "the Claude Code CLI (tests/claude/fetch: pip download claude-agent-sdk)",
        ok,
    ) {
        return None;
    }
    Some(path)
}

/// Runs `claude --init-only` in the sandbox's project, as Claude Code runs
/// SessionStart hooks; returns its debug log and wall time.
fn init_only(sb: &Sandbox, claude: &std::path::Path) -> (String, Duration) {
    let log = sb.path("claude-debug.log");
    let start = Instant::now();
    let out = Command::new(claude)
        .args(["--init-only", "--debug-file"])
        .arg(&log)
        .env_clear()
        .envs(sb.env())
        .current_dir(sb.path("project"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "claude --init-only: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (sb.read(&log), took)
}

/// The hook's own run time as Claude Code logged it.
fn hook_ms(log: &str) -> u64 {
    log.lines()
        .find(|l| {
            l.contains("Hooks: SessionStart:startup")
                && l.contains("podstack hook")
                && l.contains("finished with status 0")
        })
        .and_then(|l| l.rsplit('(').next())
        .and_then(|t| {
            t.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no finished hook in the debug log:\n{log}"))
}

#[test]
fn claude_code_runs_the_hook_from_install_sh_for_real() {
    if !docker_here() {
        return;
    }
    let Some(claude) = claude() else { return };
    let sb = Sandbox::plain();
    let p = project_of(&sb);
    let project = sb.path("project");
    fs_err::create_dir_all(project.join(".claude")).unwrap();
    // Someone's settings, to be kept.
    fs_err::write(
        project.join(".claude/settings.json"),
        "{\n  \"permissions\": {\"allow\": [\"Bash(ls)\"]},\n  \"hooks\": {\"SessionStart\": [{\"hooks\": [{\"type\": \"command\", \"command\": \"true\"}]}]}\n}\n",
    )
    .unwrap();
    let install = concat!(env!("CARGO_MANIFEST_DIR"), "/install.sh");
    let prefix = sb.path("prefix").display().to_string();
    let env = common::install_env(&prefix);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for _ in 0..2 {
        let r = sb.run_with(
            "sh",
            &[
                install,
                "--prefix",
                &prefix,
                "--claude-hook",
                project.to_str().unwrap(),
            ],
            &env,
        );
        assert!(r.ok(), "{}", r.all());
    }
    let settings: serde_json::Value =
        serde_json::from_str(&sb.read(&project.join(".claude/settings.json"))).unwrap();
    let ss = settings["hooks"]["SessionStart"].as_array().unwrap();
    assert_eq!(ss.len(), 2, "{settings}");
    assert_eq!(settings["permissions"]["allow"][0], "Bash(ls)");
    let port = free_port();
    let image = format!("localhost/{p}-web:1");
    let bin = sb.path("prefix/bin/podstack");
    let write = |ready: &str, budget: &str| {
        sb.write(
            &project.join("podstack.toml"),
            &format!(
                "[stack]\nengine = \"docker\"\n[hook]\nbudget = \"{budget}\"\n[env]\nWEB = \"http://127.0.0.1:${{services.web.host_port}}/\"\n[services.web]\nimage = \"{image}\"\nbuild = \"'{}' __demo-image {image}\"\ncommand = [\"__serve\", \"http\", \"127.0.0.1:{port}\"]\nports = [{port}]\nready = {ready}\ntimeout = \"60s\"\n",
                bin.display()
            ),
        )
    };
    write(&format!("{{ http = \"http://127.0.0.1:{port}/\" }}"), "30s");
    let _cleanup = DockerDown {
        sb: &sb,
        image: image.clone(),
    };
    let (log, took) = init_only(&sb, &claude);
    assert!(
        log.contains("Successfully parsed and validated hook JSON output"),
        "{log}"
    );
    assert!(log.contains("provided additionalContext"), "{log}");
    let ms = hook_ms(&log);
    assert!(took < Duration::from_secs(30), "{took:?}");
    eprintln!("claude --init-only: {took:?}, the hook {ms} ms");
    // The env file Claude Code gave the hook sources in bash and reaches the stack.
    let env_file = walk(&sb.path("home/.claude/session-env"))
        .into_iter()
        .find(|f| sb.read(f).contains("export WEB="))
        .expect("an env file with podstack's block");
    let shell = Command::new("bash")
        .args(["-c", "source \"$1\" && curl -fsS \"$WEB\"", "bash"])
        .arg(&env_file)
        .output()
        .unwrap();
    assert!(
        shell.status.success(),
        "{}",
        String::from_utf8_lossy(&shell.stderr)
    );
    // A service slower than the budget: Claude Code is not held past it
    // (no pipe of the hook's left open by the background start).
    assert!(
        sb.run_with(
            &bin.display().to_string(),
            &[
                "-f",
                project.join("podstack.toml").to_str().unwrap(),
                "down"
            ],
            &[]
        )
        .ok()
    );
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 8;
    write(
        &format!("{{ exec = [\"sh\", \"-c\", \"[ $(date +%s) -ge {at} ]\"] }}"),
        "2s",
    );
    let (log, took) = init_only(&sb, &claude);
    let ms = hook_ms(&log);
    assert!(ms < 3500, "the hook took {ms} ms with a 2 s budget");
    assert!(
        took < Duration::from_secs(6),
        "claude --init-only took {took:?}"
    );
    assert!(log.contains("provided additionalContext"), "{log}");
    let w = sb.run_with(
        &bin.display().to_string(),
        &[
            "-f",
            project.join("podstack.toml").to_str().unwrap(),
            "wait",
            "--timeout",
            "60",
        ],
        &[],
    );
    assert!(w.ok(), "{}", w.all());
}

/// Every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs_err::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Takes the project's Docker stack down, and its image, at the end.
struct DockerDown<'a> {
    sb: &'a Sandbox,
    image: String,
}

impl Drop for DockerDown<'_> {
    fn drop(&mut self) {
        let bin = self.sb.path("prefix/bin/podstack");
        let file = self.sb.path("project/podstack.toml");
        let _ = self.sb.run_with(
            &bin.display().to_string(),
            &["-f", file.to_str().unwrap(), "down"],
            &[],
        );
        let _ = Command::new("docker").args(["rmi", &self.image]).output();
    }
}

fn api_socket_for(sb: &Sandbox) {
    if !require("the docker CLI", common::have("docker")) {
        return;
    }
    sb.write_stock();
    let p = project_of(sb);
    let port = free_port();
    let image = format!("localhost/{p}-web:1");
    sb.write(
        &sb.path("podstack.toml"),
        &format!(
            "[stack]\napi_socket = true\n[services.web]\nimage = \"{image}\"\nbuild = \"'{}' __demo-image {image}\"\ncommand = [\"__serve\", \"http\", \"127.0.0.1:{port}\"]\nports = [{port}]\nready = {{ http = \"http://127.0.0.1:{port}/\" }}\n",
            sb.bin.display()
        ),
    );
    let up = sb.podstack(&["up"]);
    assert!(up.ok(), "{}", up.all());
    let env = sb.podstack(&["env", "--format", "json"]);
    let vars = json(&env);
    let url = vars["DOCKER_HOST"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", env.all()))
        .to_string();
    assert_eq!(vars["CONTAINER_HOST"], url.as_str());
    // The real docker CLI, as the sandbox's user, through the socket.
    let version = sb.run_with(
        "docker",
        &["version", "--format", "{{.Server.Version}}"],
        &[("DOCKER_HOST", &url)],
    );
    assert!(version.ok(), "{}", version.all());
    assert!(
        version.stdout.trim().starts_with('4'),
        "podman answers: {}",
        version.stdout
    );
    let ps = sb.run_with(
        "docker",
        &["ps", "--format", "{{.Names}}"],
        &[("DOCKER_HOST", &url)],
    );
    assert!(
        ps.ok() && ps.stdout.contains(&format!("{p}-web")),
        "{}",
        ps.all()
    );
    // Warm: the same socket, no second service.
    let again = sb.podstack(&["up"]);
    assert!(
        again.ok() && !again.stderr.contains("started podman's API"),
        "{}",
        again.all()
    );
    let down = sb.podstack(&["down"]);
    assert!(down.ok(), "{}", down.all());
    std::thread::sleep(Duration::from_millis(500));
    let gone = sb.run_with("docker", &["version"], &[("DOCKER_HOST", &url)]);
    assert!(!gone.ok(), "the API service outlived down");
}

#[test]
fn the_api_socket_serves_the_docker_cli_rootful() {
    if let Some(sb) = Sandbox::rootful() {
        api_socket_for(&sb);
    }
}

#[test]
fn the_api_socket_serves_the_docker_cli_rootless() {
    if let Some(sb) = Sandbox::rootless() {
        api_socket_for(&sb);
    }
}

#[test]
fn on_github_actions_up_masks_secrets_annotates_failures_and_writes_a_summary() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    let p = project_of(&sb);
    let image = format!("localhost/{p}-web:1");
    sb.write(
        &sb.path("podstack.toml"),
        &format!(
            "[secrets]\ntoken = {{ generate = 20 }}\n[services.web]\nimage = \"{image}\"\nbuild = \"'{}' __demo-image {image}\"\ncommand = [\"__serve\", \"http\", \"999.0.0.1:1\"]\nenv = {{ TOKEN = \"${{secrets.token}}\" }}\nready = {{ tcp = \"127.0.0.1:1\" }}\ntimeout = \"20s\"\n",
            sb.bin.display()
        ),
    );
    let summary = sb.path("step-summary.md");
    let s = summary.display().to_string();
    let bin = sb.bin.display().to_string();
    let up = sb.run_with(
        &bin,
        &["up", "--json"],
        &[("GITHUB_ACTIONS", "true"), ("GITHUB_STEP_SUMMARY", &s)],
    );
    assert_eq!(up.code, 1, "{}", up.all());
    let token = serde_json::from_str::<serde_json::Value>(
        &sb.read(&sb.path(&format!("state/podstack/stacks/{p}/secrets.json"))),
    )
    .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        up.stderr.starts_with(&format!("::add-mask::{token}\n")),
        "{}",
        up.all()
    );
    assert!(!up.stdout.contains(&token), "the report carried the secret");
    json(&up);
    assert!(up.stderr.contains("::error title=podstack"), "{}", up.all());
    assert!(up.stderr.contains("::group::web logs\n"), "{}", up.all());
    assert!(up.stderr.contains("::endgroup::"), "{}", up.all());
    let table = sb.read(&summary);
    assert!(table.contains("| web | **not ready** |"), "{table}");
    assert!(!table.contains(&token));
    let _ = sb.podstack(&["down"]);
}

/// The demo image's HTTP service on the host network, on Docker.
fn web_file(sb: &Sandbox, port: u16) -> String {
    let image = format!("localhost/{}-web:1", project_of(sb));
    format!(
        "[stack]\nengine = \"docker\"\n[env]\nWEB = \"http://127.0.0.1:${{services.web.host_port}}/\"\n[services.web]\nimage = \"{image}\"\nbuild = \"'{}' __demo-image {image}\"\ncommand = [\"__serve\", \"http\", \"127.0.0.1:{port}\"]\nports = [{port}]\nready = {{ http = \"http://127.0.0.1:{port}/\" }}\n",
        sb.bin.display()
    )
}

/// [`web_file`], ready only `secs` from now (an exec probe on the clock).
fn slow_web_file(sb: &Sandbox, port: u16, secs: u64) -> String {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs;
    web_file(sb, port).replace(
        &format!("ready = {{ http = \"http://127.0.0.1:{port}/\" }}"),
        &format!("ready = {{ exec = [\"sh\", \"-c\", \"[ $(date +%s) -ge {at} ]\"] }}"),
    )
}

#[test]
fn prepare_makes_the_images_so_up_neither_builds_nor_pulls() {
    if !docker_here() {
        return;
    }
    let sb = Sandbox::plain();
    let p = project_of(&sb);
    let port = free_port();
    sb.write(&sb.path("podstack.toml"), &web_file(&sb, port));
    let image = format!("localhost/{p}-web:1");
    let first = sb.podstack(&["prepare"]);
    assert!(first.ok(), "{}", first.all());
    assert!(
        first.stdout.contains(&format!("{image}  built")),
        "{}",
        first.all()
    );
    let ps = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=io.podstack.project={p}"),
            "-q",
        ])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "prepare started a container");
    let again = sb.podstack(&["prepare"]);
    assert!(
        again.stdout.contains(&format!("{image}  present")),
        "{}",
        again.all()
    );
    let up = sb.podstack(&["up"]);
    assert!(up.ok() && !up.stderr.contains("is missing"), "{}", up.all());
    assert!(sb.podstack(&["down"]).ok());
    let _ = Command::new("docker").args(["rmi", &image]).output();
}

#[test]
fn a_resume_on_a_fresh_machine_is_not_taken_for_a_running_stack() {
    if !docker_here() {
        return;
    }
    let sb = Sandbox::plain();
    let p = project_of(&sb);
    let port = free_port();
    sb.write(&sb.path("podstack.toml"), &web_file(&sb, port));
    let env_file = sb.path("claude-env.sh");
    let ef = env_file.display().to_string();
    let extra = [("CLAUDE_ENV_FILE", ef.as_str())];
    let (first, _) = hook(&sb, &[], START, &extra);
    assert!(
        first.ok() && first.stdout.contains("is up on docker"),
        "{}",
        first.all()
    );
    // The record survives; the container does not (a new VM from a cached disk).
    assert!(
        Command::new("docker")
            .args(["rm", "-f", &format!("{p}-web")])
            .output()
            .unwrap()
            .status
            .success()
    );
    let resume = START.replace("startup", "resume");
    let (second, _) = hook(&sb, &[], &resume, &extra);
    assert!(second.ok(), "{}", second.all());
    let v = hook_json(&second);
    let ctx = v["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(ctx.contains("is up on docker"), "{ctx}");
    assert!(
        !v["systemMessage"].as_str().unwrap().contains("already up"),
        "{v}"
    );
    let body = Command::new("curl")
        .args(["-fsS", &format!("http://127.0.0.1:{port}/")])
        .output()
        .unwrap();
    assert!(body.status.success());
    assert!(sb.podstack(&["down"]).ok());
    let _ = Command::new("docker")
        .args(["rmi", &format!("localhost/{p}-web:1")])
        .output();
}

#[test]
fn five_hooks_at_once_start_one_up_and_a_stdin_left_open_holds_none() {
    if !docker_here() {
        return;
    }
    let sb = Sandbox::plain();
    let p = project_of(&sb);
    let port = free_port();
    let image = format!("localhost/{p}-web:1");
    sb.write(&sb.path("podstack.toml"), &slow_web_file(&sb, port, 5));
    // The image first, so that the hooks race on the start itself.
    assert!(sb.podstack(&["prepare"]).ok());
    let hooks: Vec<_> = (0..5)
        .map(|_| {
            let mut cmd = hook_cmd(&sb, &["--budget", "1"], &[]);
            cmd.stdin(Stdio::null());
            common::spawn(&mut cmd)
        })
        .collect();
    for h in hooks {
        let out = h.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let w = sb.podstack(&["wait", "--timeout", "60"]);
    assert!(w.ok(), "{}", w.all());
    let state = sb.path(&format!("state/podstack/stacks/{p}"));
    assert!(
        !state.join("hook-up.log.1").exists(),
        "a second detached up was started"
    );
    // A harness that never closes stdin: the hook still ends (about 2 s).
    let mut cmd = hook_cmd(&sb, &[], &[]);
    cmd.stderr(Stdio::null());
    let start = Instant::now();
    let mut child = common::spawn(&mut cmd);
    let stdin = child.stdin.take();
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(stdout.contains("is up on docker"), "{stdout}");
    drop(stdin);
    assert!(sb.podstack(&["down"]).ok());
    let _ = Command::new("docker").args(["rmi", &image]).output();
}

#[test]
fn wait_says_when_the_background_start_was_killed() {
    if !docker_here() {
        return;
    }
    let sb = Sandbox::plain();
    let p = project_of(&sb);
    let port = free_port();
    sb.write(&sb.path("podstack.toml"), &slow_web_file(&sb, port, 60));
    let (first, _) = hook(&sb, &["--budget", "1"], START, &[]);
    assert!(first.stdout.contains("still starting"), "{}", first.all());
    let started: serde_json::Value = serde_json::from_str(
        &sb.read(&sb.path(&format!("state/podstack/stacks/{p}/hook-up.json"))),
    )
    .unwrap();
    let pid = started["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let w = sb.podstack(&["wait", "--timeout", "10"]);
    assert!(
        w.stderr
            .contains(&format!("(pid {pid}) ended before it finished")),
        "{}",
        w.all()
    );
    assert!(sb.podstack(&["down"]).ok());
    let _ = Command::new("docker")
        .args(["rmi", &format!("localhost/{p}-web:1")])
        .output();
}

#[test]
fn a_full_disk_leaves_the_env_file_as_it_was_and_a_killed_writers_temp_file_goes() {
    if !require("root (to mount a small tmpfs)", common::is_root()) {
        return;
    }
    let sb = Sandbox::plain();
    sb.write(&sb.path("podstack.toml"), &hostile_file());
    let full = sb.path("full");
    fs_err::create_dir_all(&full).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&full)
        .status()
        .unwrap();
    assert!(mounted.success());
    // Another hook's lines, the last without its newline, 4090 bytes: the
    // block does not fit the page the file already has.
    let file = full.join("env.sh");
    let theirs = format!("export OTHER=1\n{}\nexport TAIL=1", "#".repeat(4090 - 29));
    fs_err::write(&file, &theirs).unwrap();
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1k", "count=200"])
        .arg(format!("of={}", full.join("filler").display()))
        .output();
    let w = sb.podstack(&["env", "--write", file.to_str().unwrap()]);
    assert_eq!(w.code, 2, "{}", w.all());
    assert!(
        w.stderr.contains(&file.display().to_string()),
        "{}",
        w.all()
    );
    assert_eq!(sb.read(&file), theirs, "a failed write changed the file");
    let left: Vec<String> = fs_err::read_dir(&full)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".podstack-"))
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
    let _ = Command::new("umount").arg(&full).status();
    // A temp file a killed podstack left beside the file (pid 2^22 + 1 runs
    // nowhere) goes with the next write.
    let file = sb.path("env2.sh");
    let stale = sb.path(".podstack-4194305-AbCdEf");
    fs_err::write(&stale, "export LEFT='by a killed podstack'\n").unwrap();
    let w = sb.podstack(&["env", "--write", file.to_str().unwrap()]);
    assert!(w.ok(), "{}", w.all());
    assert!(!stale.exists(), "the killed writer's temp file stayed");
}
