//! The one way podstack runs a child process.
//!
//! Guarantees of [`Cmd::run`]: stdin is null; stdout and stderr are drained
//! concurrently (a chatty child cannot block on a full pipe) and only their
//! last [`CAP`] bytes are kept (a child printing 500 MB costs 64 KiB); the
//! child runs in its own process group, and the whole group is killed at the
//! deadline, when the future is dropped (Ctrl-C, an outer deadline) and when
//! a grandchild still holds a pipe after the child exited; failures name the
//! command, how it ended and the tail of its output.
//!
//! [`Cmd::spawn_detached`] starts a process that outlives podstack: its own
//! session (setsid), stdin from /dev/null, stdout and stderr to a log file,
//! and no other inherited file descriptor.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Bytes kept of each output stream (the tail).
pub const CAP: usize = 64 * 1024;

/// The longest deadline podstack accepts (a day); longer ones are clamped,
/// so no arithmetic on instants can overflow.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a grandchild may keep a pipe open after the child exited.
const GRACE: Duration = Duration::from_millis(300);

/// Which stream a streamed line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A command to run: program, arguments, extra environment and a deadline.
#[derive(Clone, Debug)]
pub struct Cmd {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    timeout: Duration,
    finish_on_drop: bool,
}

/// What a finished (or timed-out) child left behind.
#[derive(Clone, Debug)]
pub struct Output {
    /// The exit status; `None` when the child was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// The tail of standard output, lossily decoded.
    pub stdout: String,
    /// The tail of standard error, lossily decoded.
    pub stderr: String,
    /// Bytes the child wrote to stdout and stderr in all.
    pub bytes: u64,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
    /// The command line, for messages.
    pub display: String,
}

impl Cmd {
    /// A command with a 60 s deadline.
    pub fn new(program: impl AsRef<Path>) -> Self {
        Self {
            program: program.as_ref().to_path_buf(),
            args: Vec::new(),
            envs: Vec::new(),
            timeout: Duration::from_secs(60),
            finish_on_drop: false,
        }
    }

    /// Lets the child finish when podstack stops waiting for it (Ctrl-C):
    /// for engine calls that change the host, which killed half-way leave
    /// state behind (netavark's port forwarding rules, say). Its deadline
    /// still kills it while podstack waits.
    pub fn finish_on_drop(mut self) -> Self {
        self.finish_on_drop = true;
        self
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets one environment variable for the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Sets the deadline (clamped to [`MAX_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.min(MAX_TIMEOUT);
        self
    }

    /// The command line as a person would type it.
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs the command to completion or to its deadline. A non-zero exit is
    /// not an error here (see [`Output::success`]); failing to spawn is.
    pub async fn run(&self) -> Result<Output> {
        self.run_streaming(None).await
    }

    /// Like [`Cmd::run`], and sends each output line (at most [`CAP`] bytes)
    /// to `lines` as it arrives.
    pub async fn run_streaming(
        &self,
        lines: Option<mpsc::UnboundedSender<(Stream, String)>>,
    ) -> Result<Output> {
        let display = self.display();
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(!self.finish_on_drop);
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot run `{display}`"))?;
        // The group id is the child's pid (process_group(0)); the guard kills the
        // group if this future is dropped before the child is reaped.
        let mut group = Group(
            child.id().and_then(|p| i32::try_from(p).ok()),
            !self.finish_on_drop,
        );
        let (stop_tx, stop_rx) = watch::channel(None::<Instant>);
        let out = capture(child.stdout.take(), Stream::Stdout, stop_rx.clone(), &lines);
        let err = capture(child.stderr.take(), Stream::Stderr, stop_rx, &lines);
        let wait = async {
            let status = match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(status) => Some(status.with_context(|| format!("waiting for `{display}`"))?),
                Err(_) => {
                    group.kill();
                    let _ = child.wait().await;
                    None
                }
            };
            let elapsed = start.elapsed();
            let _ = stop_tx.send(Some(Instant::now() + GRACE));
            anyhow::Ok((status, elapsed))
        };
        let (waited, out, err) = tokio::join!(wait, out, err);
        let (status, elapsed) = waited?;
        if out.cut_short || err.cut_short {
            // A grandchild still holds a pipe: the group outlived the child.
            group.kill();
        }
        group.0 = None;
        Ok(Output {
            status,
            bytes: out.total + err.total,
            stdout: out.text(),
            stderr: err.text(),
            elapsed,
            display,
        })
    }

    /// Starts the command detached from podstack: a new session (setsid), no
    /// controlling terminal, stdin from /dev/null, stdout and stderr appended
    /// to `log` (created 0600), every other file descriptor closed. Returns
    /// its pid. The process outlives podstack.
    #[allow(
        dead_code,
        reason = "the hook's background start uses it; `detach_and_exec` is tested through the binary"
    )]
    pub fn spawn_detached(&self, log: &Path) -> Result<u32> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(log)
            .with_context(|| format!("cannot open the log file {}", log.display()))?;
        let exe = std::env::current_exe().context("cannot find the podstack binary")?;
        // podstack itself does the setsid and the closing of descriptors (see
        // `detach_and_exec`), then becomes the program through exec.
        let child = std::process::Command::new(exe)
            .arg(DETACH_ARG)
            .arg(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start `{}`", self.display()))?;
        Ok(child.id())
    }
}

/// The hidden first argument that makes podstack [`detach_and_exec`].
pub const DETACH_ARG: &str = "__podstack-detach";

/// The detached child's side of [`Cmd::spawn_detached`]: leaves podstack's
/// session, closes every descriptor above stderr, and execs `argv`. Returns
/// only on failure.
pub fn detach_and_exec(argv: &[OsString]) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    if let Err(e) = nix::unistd::setsid() {
        return anyhow::anyhow!("setsid failed: {e}");
    }
    close_inherited_fds();
    let Some((program, args)) = argv.split_first() else {
        return anyhow::anyhow!("nothing to run");
    };
    let e = std::process::Command::new(program).args(args).exec();
    anyhow::Error::new(e).context(format!("cannot run {}", program.to_string_lossy()))
}

/// Closes every open descriptor above 2 (found in /proc/self/fd). Rust opens
/// its own files close-on-exec; this catches what podstack's parent left open
/// (a hook runner's pipes, say).
fn close_inherited_fds() {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd > 2)
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        let _ = nix::unistd::close(fd);
    }
}

impl Output {
    /// Whether the child exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// A short description of how the child ended: `exit code 2`, `killed by signal 9`,
    /// `timed out after 60 s`.
    pub fn ending(&self) -> String {
        match self.status {
            None => format!("timed out after {:.0} s", self.elapsed.as_secs_f64()),
            Some(s) => match (s.code(), s.signal()) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => "unknown ending".to_string(),
            },
        }
    }

    /// The last `n` non-empty lines of stderr (stdout if stderr is empty),
    /// each cut to 500 characters.
    pub fn tail(&self, n: usize) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| cut(l, 500))
            .collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Milliseconds from spawn to exit.
    pub fn millis(&self) -> u64 {
        u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A process's command line from `/proc/PID/cmdline` (`self` for this one),
/// arguments joined by spaces; empty when it cannot be read.
pub fn cmdline_of(pid: &str) -> String {
    fs_err::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// `s` cut to `max` characters, with `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

/// Kills a process group unless disarmed (`None`).
struct Group(Option<i32>, bool);

impl Group {
    fn kill(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.1 {
            self.kill();
        }
    }
}

/// What was read from one pipe.
struct Captured {
    tail: VecDeque<u8>,
    total: u64,
    cut_short: bool,
}

impl Captured {
    fn text(&self) -> String {
        let (a, b) = self.tail.as_slices();
        let mut bytes = Vec::with_capacity(a.len() + b.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Reads `pipe` until EOF or until the stop time set after the child exits,
/// keeping the last [`CAP`] bytes and streaming lines when asked.
async fn capture(
    pipe: Option<impl AsyncRead + Unpin>,
    stream: Stream,
    mut stop: watch::Receiver<Option<Instant>>,
    lines: &Option<mpsc::UnboundedSender<(Stream, String)>>,
) -> Captured {
    let mut c = Captured {
        tail: VecDeque::new(),
        total: 0,
        cut_short: false,
    };
    let Some(mut pipe) = pipe else { return c };
    let mut buf = vec![0u8; 16 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let far = Instant::now() + MAX_TIMEOUT;
    let mut sender_gone = false;
    loop {
        let stop_at = (*stop.borrow()).unwrap_or(far);
        tokio::select! {
            read = pipe.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    c.total += n as u64;
                    c.tail.extend(&buf[..n]);
                    let excess = c.tail.len().saturating_sub(CAP);
                    c.tail.drain(..excess);
                    if let Some(tx) = lines {
                        for &b in &buf[..n] {
                            if b == b'\n' {
                                let _ = tx.send((stream, String::from_utf8_lossy(&line).into_owned()));
                                line.clear();
                            } else if line.len() < CAP {
                                line.push(b);
                            }
                        }
                    }
                }
            },
            _ = tokio::time::sleep_until(stop_at) => {
                c.cut_short = true;
                break;
            }
            changed = stop.changed(), if !sender_gone => {
                // The sender goes away once the wait is over; its last stop time stays.
                sender_gone = changed.is_err();
            }
        }
    }
    if let Some(tx) = lines
        && !line.is_empty()
    {
        let _ = tx.send((stream, String::from_utf8_lossy(&line).into_owned()));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn run(cmd: Cmd) -> Output {
        rt().block_on(cmd.run()).unwrap()
    }

    fn alive(pid: i32) -> bool {
        // A zombie is dead for this purpose: it runs nothing.
        fs_err::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }

    fn pid_in(path: &Path) -> i32 {
        for _ in 0..100 {
            if let Ok(s) = fs_err::read_to_string(path)
                && let Ok(p) = s.trim().parse()
            {
                return p;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no pid in {}", path.display());
    }

    #[test]
    fn captures_both_streams_and_exit_code() {
        let out = run(Cmd::new("/bin/sh").args(["-c", "echo out; echo err >&2; exit 3"]));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.ending(), "exit code 3");
        assert!(!out.success());
        assert!(out.display.starts_with("/bin/sh -c"));
        assert_eq!(out.tail(5), "err");
    }

    #[test]
    fn huge_output_keeps_only_a_capped_tail() {
        let out = run(Cmd::new("/bin/sh").args([
            "-c",
            "head -c 20000000 /dev/zero | tr '\\0' a; echo END; head -c 3000000 /dev/zero >&2",
        ]));
        assert_eq!(out.bytes, 20_000_004 + 3_000_000);
        assert_eq!(out.stdout.len(), CAP);
        assert!(out.stdout.ends_with("aaaEND\n"));
        assert_eq!(out.stderr.len(), CAP);
        // One huge line is cut for messages too.
        assert!(out.tail(1).chars().count() <= 501);
    }

    #[test]
    fn deadline_kills_the_whole_group_and_leaves_no_survivor() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let out = run(Cmd::new("/bin/sh")
            .args(["-c", &script])
            .timeout(Duration::from_millis(300)));
        assert!(out.status.is_none());
        assert!(out.elapsed < Duration::from_secs(5));
        assert!(out.ending().starts_with("timed out"));
        let grandchild = pid_in(&pidfile);
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !alive(grandchild),
            "the grandchild {grandchild} survived the deadline"
        );
    }

    #[test]
    fn a_grandchild_holding_the_pipe_is_killed_after_the_child_exits() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!("sleep 30 & echo $! > {}; echo done", pidfile.display());
        let out = run(Cmd::new("/bin/sh").args(["-c", &script]));
        assert!(out.success());
        assert_eq!(out.stdout, "done\n");
        assert!(out.elapsed < Duration::from_secs(5));
        let grandchild = pid_in(&pidfile);
        std::thread::sleep(Duration::from_millis(100));
        assert!(!alive(grandchild), "the grandchild {grandchild} survived");
    }

    #[test]
    fn dropping_the_future_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let cmd = Cmd::new("/bin/sh").args(["-c", &script]);
        rt().block_on(async {
            let r = tokio::time::timeout(Duration::from_millis(300), cmd.run()).await;
            assert!(r.is_err(), "the outer deadline fired");
        });
        let grandchild = pid_in(&pidfile);
        std::thread::sleep(Duration::from_millis(100));
        assert!(!alive(grandchild), "the grandchild {grandchild} survived");
    }

    #[test]
    fn a_huge_timeout_is_clamped_not_a_panic() {
        let out = run(Cmd::new("/bin/true").timeout(Duration::from_secs(u64::MAX)));
        assert!(out.success());
    }

    #[test]
    fn lines_are_streamed() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let out = rt()
            .block_on(
                Cmd::new("/bin/sh")
                    .args(["-c", "echo a; echo b >&2; printf c"])
                    .run_streaming(Some(tx)),
            )
            .unwrap();
        assert!(out.success());
        let mut got = Vec::new();
        while let Ok(l) = rx.try_recv() {
            got.push(l);
        }
        got.sort_by_key(|(_, l)| l.clone());
        assert_eq!(
            got,
            vec![
                (Stream::Stdout, "a".to_string()),
                (Stream::Stderr, "b".to_string()),
                (Stream::Stdout, "c".to_string())
            ]
        );
    }

    #[test]
    fn environment_reaches_the_child() {
        let out = run(Cmd::new("/bin/sh")
            .args(["-c", "printf %s \"$PODSTACK_X\""])
            .env("PODSTACK_X", "a b"));
        assert_eq!(out.stdout, "a b");
    }

    #[test]
    fn missing_program_is_an_error_naming_it() {
        let err = rt()
            .block_on(Cmd::new("/nonexistent/podman").run())
            .unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/podman"));
    }
}
