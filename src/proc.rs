//! The one way podstack runs a child process.
//!
//! Guarantees: stdin is null, stdout and stderr are drained concurrently (a
//! chatty child cannot deadlock on a full pipe), the child runs in its own
//! process group and the whole group is killed at the deadline or when the
//! guard is dropped, and failures name the command, its exit code and the
//! tail of its stderr.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// A command to run: program, arguments, extra environment and a deadline.
#[derive(Clone, Debug)]
pub struct Cmd {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    timeout: Duration,
}

/// What a finished (or timed-out) child left behind.
#[derive(Clone, Debug)]
pub struct Output {
    /// The exit status; `None` when the child was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
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
        }
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

    /// Sets the deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
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
    /// not an error here (see [`Output::check`]); failing to spawn is.
    pub fn run(&self) -> Result<Output> {
        let display = self.display();
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let start = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("cannot run `{display}`"))?;
        let mut guard = Guard(Some(child));
        let child = guard.0.as_mut().context("child vanished")?;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());

        let deadline = start + self.timeout;
        let mut pause = Duration::from_millis(1);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                guard.kill();
                break None;
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(25));
        };
        let elapsed = start.elapsed();
        guard.0 = None;
        // A grandchild may keep a pipe open after the child exits; do not wait for it.
        let grace = Duration::from_millis(if status.is_some() { 500 } else { 100 });
        Ok(Output {
            status,
            stdout: collect(stdout, grace),
            stderr: collect(stderr, grace),
            elapsed,
            display,
        })
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

    /// The last `n` non-empty lines of stderr (stdout if stderr is empty).
    pub fn tail(&self, n: usize) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Kills the child's process group unless it has been reaped.
struct Guard(Option<Child>);

impl Guard {
    fn kill(&mut self) {
        if let Some(child) = self.0.as_mut() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

type Drained = mpsc::Receiver<Vec<u8>>;

fn drain(pipe: Option<impl Read + Send + 'static>) -> Option<Drained> {
    let mut pipe = pipe?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    Some(rx)
}

fn collect(rx: Option<Drained>, grace: Duration) -> String {
    let Some(rx) = rx else { return String::new() };
    let deadline = Instant::now() + grace;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_both_streams_and_exit_code() {
        let out = Cmd::new("/bin/sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .run()
            .unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.ending(), "exit code 3");
        assert!(!out.success());
        assert!(out.display.starts_with("/bin/sh -c"));
        assert_eq!(out.tail(5), "err");
    }

    #[test]
    fn large_output_does_not_deadlock() {
        let out = Cmd::new("/bin/sh")
            .args([
                "-c",
                "head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2",
            ])
            .run()
            .unwrap();
        assert_eq!(out.stdout.len(), 1_000_000);
        assert_eq!(out.stderr.len(), 1_000_000);
    }

    #[test]
    fn deadline_kills_the_whole_group() {
        let out = Cmd::new("/bin/sh")
            .args(["-c", "sleep 30 & sleep 30"])
            .timeout(Duration::from_millis(200))
            .run()
            .unwrap();
        assert!(out.status.is_none());
        assert!(out.elapsed < Duration::from_secs(5));
        assert!(out.ending().starts_with("timed out"));
    }

    #[test]
    fn environment_reaches_the_child() {
        let out = Cmd::new("/bin/sh")
            .args(["-c", "printf %s \"$PODSTACK_X\""])
            .env("PODSTACK_X", "a b")
            .run()
            .unwrap();
        assert_eq!(out.stdout, "a b");
    }

    #[test]
    fn missing_program_is_an_error_naming_it() {
        let err = Cmd::new("/nonexistent/podman").run().unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/podman"));
    }
}
