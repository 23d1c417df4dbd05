//! Shared by the integration tests: a sandbox in which podstack and podman
//! run for real, as root or as the unprivileged test user, with HOME, XDG_*,
//! CONTAINERS_CONF, CONTAINERS_STORAGE_CONF and podman's roots all pointing
//! into a temporary folder, so tests neither read nor change the machine's
//! own podman configuration and can run in parallel.
//!
//! A test that needs a tool this machine lacks skips with a message, except
//! under `CI=true`, where a missing tool fails the test: a green CI run always
//! means the real thing ran.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The unprivileged user rootless tests run as (`.ci/run` creates it).
pub fn test_user() -> String {
    std::env::var("PODSTACK_TEST_USER").unwrap_or_else(|_| "podstack-test".into())
}

/// Whether this is CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns true when `what` is available; otherwise skips (false) or, in CI, fails.
pub fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    assert!(
        !in_ci(),
        "CI=true but {what} is missing: .ci/run must install it"
    );
    eprintln!("SKIPPED: {what} is not available on this machine");
    // cargo test hides a passing test's stderr: tests/run prints this log.
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped.log");
    let test = std::thread::current().name().unwrap_or("?").to_string();
    if let Ok(mut f) = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = std::io::Write::write_all(&mut f, format!("{test}: {what}\n").as_bytes());
    }
    false
}

/// A command's stdout as JSON (the failure shows both streams).
pub fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.all()))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The project name podstack gives a sandbox's stack (its folder's name).
pub fn project_of(sb: &Sandbox) -> String {
    sb.path("")
        .file_name()
        .expect("a folder")
        .to_string_lossy()
        .to_lowercase()
}

/// Whether the machine's Docker daemon answers (skips, or fails in CI, if not).
pub fn docker_here() -> bool {
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    require("a Docker daemon (docker version)", ok)
}

/// The environment install.sh needs in a sandbox (whose HOME is its own):
/// the toolchain's cargo on PATH after `prefix/bin`, its crate cache, the
/// project's target folder.
pub fn install_env(prefix: &str) -> Vec<(String, String)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let cargo_dir = Path::new(&cargo)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let cargo_home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    vec![
        (
            "PATH".into(),
            format!(
                "{prefix}/bin:{cargo_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            ),
        ),
        ("CARGO_HOME".into(), cargo_home),
        (
            "CARGO_TARGET_DIR".into(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/target").into(),
        ),
    ]
}

/// Serialises the tests that use the demo's fixed ports (47080, 47081).
pub fn demo_ports_lock() -> std::fs::File {
    named_lock("demo-ports")
}

/// Serialises the tests that run `podman kube play`: they share podman's
/// kube network, which each removes when it is done.
pub fn kube_play_lock() -> std::fs::File {
    named_lock("kube-play")
}

fn named_lock(name: &str) -> std::fs::File {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.lock"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .expect("lock file");
    f.lock().expect("lock");
    f
}

/// Spawns `cmd`, retrying while its binary is busy: a binary copied a moment
/// ago may still be open for writing in a child another test thread forked
/// (ETXTBSY until that child execs).
pub fn spawn(cmd: &mut Command) -> std::process::Child {
    for _ in 0..100 {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.expect("spawn"),
        }
    }
    panic!("{cmd:?} stayed busy (ETXTBSY)");
}

/// Whether an executable called `name` is on the standard search path.
pub fn have(name: &str) -> bool {
    [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .any(|d| Path::new(d).join(name).exists())
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The podstack binary under test.
pub fn podstack_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_podstack"))
}

/// uid and gid of `user`, from /etc/passwd.
pub fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = fs_err::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

/// Who runs the commands.
#[derive(Clone, Debug)]
pub enum Who {
    /// This process's user (root in CI).
    Root,
    /// The unprivileged test user, through runuser.
    User { name: String, uid: u32, gid: u32 },
}

/// A temporary, isolated podman world.
pub struct Sandbox {
    dir: tempfile::TempDir,
    pub who: Who,
    pub bin: PathBuf,
}

/// A finished command.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
    /// stdout and stderr together, for messages.
    pub fn all(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Sandbox {
    /// A rootful sandbox: needs root and podman, else skips (fails in CI).
    pub fn rootful() -> Option<Sandbox> {
        if !require("root", is_root()) || !require("podman", have("podman")) {
            return None;
        }
        Some(Sandbox::new(Who::Root))
    }

    /// A rootless sandbox for the test user: needs root (to switch user), the
    /// user, runuser and podman.
    pub fn rootless() -> Option<Sandbox> {
        let user = test_user();
        if !require("root", is_root())
            || !require("podman", have("podman"))
            || !require("runuser", have("runuser"))
        {
            return None;
        }
        let ids = user_ids(&user);
        if !require(&format!("the test user {user}"), ids.is_some()) {
            return None;
        }
        let (uid, gid) = ids?;
        Some(Sandbox::new(Who::User {
            name: user,
            uid,
            gid,
        }))
    }

    /// A sandbox with no podman prerequisites (for tests that only need the binary).
    pub fn plain() -> Sandbox {
        Sandbox::new(Who::Root)
    }

    fn new(who: Who) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("podstack-test-")
            .tempdir()
            .expect("tempdir");
        let bin = dir.path().join("bin/podstack");
        let sb = Sandbox { dir, who, bin };
        for d in [
            "home",
            "config",
            "data",
            "state",
            "tmp",
            "run-user",
            "bin",
            "storage/root",
            "storage/run",
            "podman-tmp",
        ] {
            fs_err::create_dir_all(sb.path(d)).expect("mkdir");
        }
        // A copy the test user can execute (the target folder may not be reachable).
        fs_err::copy(podstack_bin(), &sb.bin).expect("copy podstack");
        std::fs::set_permissions(sb.dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::set_permissions(sb.path("run-user"), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        sb.chown_all();
        sb
    }

    /// Hands every file in the sandbox to the sandbox's user.
    pub fn chown_all(&self) {
        if let Who::User { uid, gid, .. } = &self.who {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(self.dir.path())
                .status()
                .expect("chown");
            assert!(status.success());
        }
    }

    /// A path inside the sandbox.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn storage_conf(&self) -> PathBuf {
        self.path("config/containers/storage.conf")
    }

    pub fn containers_conf(&self) -> PathBuf {
        self.path("config/containers/containers.conf")
    }

    /// podman's stock configuration, isolated: storage.conf names only the
    /// sandbox's roots, containers.conf only the sandbox's temp folder.
    /// Nothing that makes containers run.
    pub fn write_stock(&self) {
        self.write(
            &self.storage_conf(),
            &format!(
                "# podman's roots for this test only\n[storage]\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
                self.path("storage/run").display(),
                self.path("storage/root").display()
            ),
        );
        self.write(
            &self.containers_conf(),
            &format!(
                "[engine]\ntmp_dir = \"{}\"\n",
                self.path("podman-tmp").display()
            ),
        );
    }

    /// Writes a file (as the sandbox's user).
    pub fn write(&self, path: &Path, text: &str) {
        fs_err::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs_err::write(path, text).expect("write");
        self.chown_all();
    }

    /// The environment every command in the sandbox gets (and nothing else).
    pub fn env(&self) -> Vec<(String, String)> {
        let p = |rel: &str| self.path(rel).display().to_string();
        let mut env = vec![
            (
                "PATH".to_string(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ),
            ("HOME".into(), p("home")),
            ("XDG_CONFIG_HOME".into(), p("config")),
            ("XDG_DATA_HOME".into(), p("data")),
            ("XDG_STATE_HOME".into(), p("state")),
            ("XDG_RUNTIME_DIR".into(), p("run-user")),
            ("TMPDIR".into(), p("tmp")),
            (
                "CONTAINERS_CONF".into(),
                self.containers_conf().display().to_string(),
            ),
            (
                "CONTAINERS_STORAGE_CONF".into(),
                self.storage_conf().display().to_string(),
            ),
        ];
        if let Who::User { name, .. } = &self.who {
            env.push(("USER".into(), name.clone()));
        }
        env
    }

    /// Runs `program args` in the sandbox, as its user, with extra env pairs
    /// (an empty value unsets the variable).
    pub fn run_with(&self, program: &str, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let mut env = self.env();
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            if !v.is_empty() {
                env.push((k.to_string(), v.to_string()));
            }
        }
        let mut cmd = match &self.who {
            Who::Root => Command::new(program),
            Who::User { name, .. } => {
                let mut c = Command::new("runuser");
                c.args(["-u", name, "--", program]);
                c
            }
        };
        cmd.args(args)
            .env_clear()
            .envs(env)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        // A binary copied a moment ago may still be open for writing in a child that
        // another test thread forked (ETXTBSY until that child execs): retry briefly.
        for _ in 0..50 {
            match cmd.output() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other.expect("spawn").into(),
            }
        }
        panic!("{program} stayed busy (ETXTBSY)");
    }

    /// Runs podstack.
    pub fn podstack(&self, args: &[&str]) -> Run {
        let bin = self.bin.display().to_string();
        self.run_with(&bin, args, &[])
    }

    /// Runs podman.
    pub fn podman(&self, args: &[&str]) -> Run {
        self.run_with("podman", args, &[])
    }

    /// A shell command line in the sandbox.
    pub fn sh(&self, script: &str) -> Run {
        self.run_with("/bin/sh", &["-c", script], &[])
    }

    /// Makes the test images (PostgreSQL 15, a registry) readable by this
    /// sandbox's podman: built once into a store of the sandbox's user by
    /// tests/images/build, shared read-only as an additional image store.
    pub fn use_test_images(&self) {
        let cache = std::env::var("PODSTACK_IMAGE_CACHE")
            .unwrap_or_else(|_| "/var/cache/podstack-test".into());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/images/build");
        let build = |who: &Who, store: &str| {
            let mut cmd = match who {
                Who::Root => Command::new("sh"),
                Who::User { name, uid, .. } => {
                    let mut c = Command::new("runuser");
                    c.args([
                        "-u",
                        name,
                        "--",
                        "env",
                        &format!("XDG_RUNTIME_DIR=/run/user/{uid}"),
                        &format!("HOME={cache}/home-{uid}"),
                        "sh",
                    ]);
                    c
                }
            };
            let out = cmd
                .args([script, "--store", store, "--driver", "overlay"])
                .stdin(Stdio::null())
                .output()
                .expect("tests/images/build");
            assert!(
                out.status.success(),
                "tests/images/build failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // The root file system is built as root, once; then the store of this sandbox's user.
        let root_store = format!("{cache}/store-root");
        build(&Who::Root, &root_store);
        let store = match &self.who {
            Who::Root => root_store,
            Who::User { uid, gid, .. } => {
                let store = format!("{cache}/store-{uid}");
                for d in [store.clone(), format!("{cache}/home-{uid}")] {
                    fs_err::create_dir_all(&d).expect("mkdir");
                    let _ = Command::new("chown")
                        .arg(format!("{uid}:{gid}"))
                        .arg(&d)
                        .status();
                }
                build(&self.who, &store);
                store
            }
        };
        let mut text = self.read(&self.storage_conf());
        text = text.replace("[storage]\n", "[storage]\ndriver = \"overlay\"\n");
        if matches!(self.who, Who::User { .. }) {
            text.push_str(&format!(
                "rootless_storage_path = \"{}\"\n",
                self.path("storage/root").display()
            ));
        }
        text.push_str(&format!(
            "\n[storage.options]\nadditionalimagestores = [\"{store}\"]\n"
        ));
        self.write(&self.storage_conf(), &text);
    }

    /// Imports a tiny image (busybox as /bin/sh, /bin/true, ...) named `name`.
    pub fn import_tiny_image(&self, name: &str) {
        let rootfs = self.path("tiny-rootfs");
        fs_err::create_dir_all(rootfs.join("bin")).expect("mkdir");
        fs_err::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static is needed");
        for applet in ["sh", "true", "false", "cat", "echo"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                .expect("symlink");
        }
        self.chown_all();
        let r = self.sh(&format!(
            "tar -C '{}' -cf - . | podman import - {name}",
            rootfs.display()
        ));
        assert!(r.ok(), "podman import failed:\n{}", r.all());
    }

    /// Bytes of a file.
    pub fn read(&self, path: &Path) -> String {
        fs_err::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Containers run with --rm, but a failed test may leave one: stop them and
        // undo any mount below the sandbox so the folder can be removed.
        if self.storage_conf().exists() && have("podman") {
            let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        }
        let root = self.dir.path().display().to_string();
        if let Who::User { uid, .. } = &self.who {
            kill_processes_of(*uid, &format!("XDG_RUNTIME_DIR={root}/"));
        }
        if let Ok(mountinfo) = fs_err::read_to_string("/proc/self/mountinfo") {
            let mut points: Vec<&str> = mountinfo
                .lines()
                .filter_map(|l| l.split_whitespace().nth(4))
                .filter(|m| m.starts_with(&root))
                .collect();
            points.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in points {
                let _ = Command::new("umount").args(["-l", m]).status();
            }
        }
    }
}

/// Kills `uid`'s processes whose environment has a variable starting with
/// `marker`: rootless podman leaves a pause process per runtime folder, which
/// would outlive the sandbox.
fn kill_processes_of(uid: u32, marker: &str) {
    let Ok(entries) = fs_err::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let status = fs_err::read_to_string(entry.path().join("status")).unwrap_or_default();
        let owner = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok());
        if owner != Some(uid) {
            continue;
        }
        let environ = fs_err::read(entry.path().join("environ")).unwrap_or_default();
        if environ
            .split(|b| *b == 0)
            .any(|kv| kv.starts_with(marker.as_bytes()))
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Seed 000's stack on the test images, as a hand-written podstack.toml:
/// PostgreSQL (max_connections 200, its data on a named volume), the
/// registry, and the proxy (made by its build command) that waits for
/// both; the networks `internal` and `agents`; `[env]` for the shells.
/// `engine`: `[stack] engine`, when given.
pub fn seed_000_toml(sb: &Sandbox, engine: Option<&str>, pg: u16, reg: u16, proxy: u16) -> String {
    let p = project_of(sb);
    let image = format!("localhost/{p}-registry-proxy:latest");
    let build = format!("'{}' __demo-image {image}", sb.bin.display())
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let engine = engine
        .map(|e| format!("engine = \"{e}\"\n"))
        .unwrap_or_default();
    format!(
        r#"[stack]
name = "{p}"
{engine}
[secrets]
pg_password = {{ generate = 32 }}

[networks.internal]
name = "{p}-internal"
[networks.agents]
name = "{p}-agents"

[services.postgres]
image = "localhost/podstack-test/postgres:15"
command = ["-c", "max_connections=200", "-p", "{pg}"]
env = {{ POSTGRES_PASSWORD = "${{secrets.pg_password}}", POSTGRES_DB = "eval_results" }}
volumes = ["{p}_eval_results_data:/var/lib/postgresql/data"]
networks = ["internal", "agents"]
aliases = ["postgres"]
ports = ["{pg}:{pg}"]
ready = {{ postgres = "127.0.0.1:{pg}", user = "postgres", password = "${{secrets.pg_password}}", database = "eval_results" }}
timeout = "90s"

[services.registry]
image = "localhost/podstack-test/registry:2"
env = {{ REGISTRY_HTTP_ADDR = "${{net.bind}}:{reg}" }}
networks = ["internal"]
aliases = ["registry"]
ports = ["{reg}:{reg}"]
ready = {{ http = "http://127.0.0.1:{reg}/v2/", status = [200, 401] }}

[services.registry-proxy]
image = "{image}"
build = "{build}"
command = ["__serve", "tcp", "${{net.bind}}:{proxy}"]
env = {{ PGHOST = "${{services.postgres.host}}", PGPORT = "${{services.postgres.port}}", PGPASSWORD = "${{secrets.pg_password}}", UPSTREAM = "http://${{services.registry.host}}:${{services.registry.port}}" }}
depends_on = ["postgres", "registry"]
networks = ["internal", "agents"]
aliases = ["registry-proxy"]
ports = ["{proxy}:{proxy}"]
ready = {{ tcp = "127.0.0.1:{proxy}" }}

[env]
PGHOST = "127.0.0.1"
PGPORT = "${{services.postgres.host_port}}"
PGUSER = "postgres"
PGPASSWORD = "${{secrets.pg_password}}"
PGDATABASE = "eval_results"
AGENT_PGHOST = "${{services.postgres.host}}"
PROPS_DOCKER_NETWORK = "${{net.name.agents}}"
REGISTRY_PROXY = "http://${{services.registry-proxy.host}}:${{services.registry-proxy.port}}"
"#
    )
}
