//! The engine calls the stack engine makes, through podman's command line:
//! each one bounded, each failure naming the command and podman's message.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::engine::{self, ContainerSpec, Engine};
use crate::proc::{Cmd, Output};

/// podman, found on PATH.
#[derive(Clone, Debug)]
pub struct Podman {
    /// Its path.
    pub path: PathBuf,
}

/// A container podman knows about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Existing {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `running`, `exited`, `created`, ...
    pub state: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The main process, when running.
    pub pid: Option<u32>,
    /// The exit code, when exited.
    pub exit_code: Option<i32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PsEntry {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    state: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    exit_code: Option<i32>,
}

/// Parses `podman ps -a --format json` (pure).
pub fn parse_ps(json: &str) -> Result<Vec<Existing>> {
    let json = if json.trim().is_empty() { "[]" } else { json };
    let entries: Vec<PsEntry> =
        serde_json::from_str(json).context("podman ps printed something that is not its JSON")?;
    Ok(entries
        .into_iter()
        .map(|e| Existing {
            id: e.id,
            name: e.names.into_iter().next().unwrap_or_default(),
            state: e.state,
            labels: e.labels.unwrap_or_default(),
            pid: e.pid.filter(|p| *p > 0),
            exit_code: e.exit_code,
        })
        .collect())
}

/// How a pull failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullError {
    /// Worth another try: the registry is not there yet, or overloaded.
    Transient,
    /// Cannot pass by retrying: no such image, or the login is refused.
    Permanent,
}

/// Classifies podman's pull error text (pure).
pub fn classify_pull(text: &str) -> PullError {
    let t = text.to_ascii_lowercase();
    let permanent = [
        "manifest unknown",
        "name unknown",
        "not found",
        "unauthorized",
        "authentication required",
        "denied",
        "invalid reference",
        "short-name",
        "repository name must",
        "http response to https client",
    ];
    if permanent.iter().any(|p| t.contains(p)) {
        PullError::Permanent
    } else {
        PullError::Transient
    }
}

impl Podman {
    fn cmd(&self) -> Cmd {
        Cmd::new(&self.path).timeout(Duration::from_secs(60))
    }

    async fn ok(&self, cmd: Cmd) -> Result<Output> {
        let out = cmd.run().await?;
        if !out.success() {
            bail!(
                "`{}` failed ({}): {}",
                out.display,
                out.ending(),
                out.tail(3)
            );
        }
        Ok(out)
    }

    /// Every container podman knows (one call).
    pub async fn list(&self) -> Result<Vec<Existing>> {
        let out = self
            .ok(self.cmd().args(["ps", "--all", "--format", "json"]))
            .await?;
        parse_ps(&out.stdout)
    }

    /// The names of every local image (one call).
    pub async fn image_names(&self) -> Result<std::collections::BTreeSet<String>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Img {
            #[serde(default)]
            names: Option<Vec<String>>,
        }
        let out = self
            .ok(self.cmd().args(["images", "--format", "json"]))
            .await?;
        let json = if out.stdout.trim().is_empty() {
            "[]"
        } else {
            out.stdout.as_str()
        };
        let imgs: Vec<Img> = serde_json::from_str(json)
            .context("podman images printed something that is not its JSON")?;
        Ok(imgs
            .into_iter()
            .flat_map(|i| i.names.unwrap_or_default())
            .collect())
    }

    /// Imports the tar at `tar` as `image`, with `changes` (Containerfile
    /// lines such as `ENTRYPOINT ["/podstack"]`) applied.
    pub async fn import(&self, tar: &std::path::Path, image: &str, changes: &[&str]) -> Result<()> {
        let mut cmd = self.cmd().arg("import");
        for c in changes {
            cmd = cmd.args(["--change", c]);
        }
        self.ok(cmd.arg(tar).arg(image).timeout(Duration::from_secs(120)))
            .await
            .map(drop)
    }

    /// Whether `image` is in the local store.
    pub async fn image_exists(&self, image: &str) -> Result<bool> {
        let out = self.cmd().args(["image", "exists", image]).run().await?;
        match out.status.and_then(|s| s.code()) {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => bail!(
                "`{}` failed ({}): {}",
                out.display,
                out.ending(),
                out.tail(3)
            ),
        }
    }

    /// Pulls `image` once; the error says whether another try may pass.
    pub async fn pull(&self, image: &str, timeout: Duration) -> Result<(), (PullError, String)> {
        let out = self
            .cmd()
            .args(["pull", "--quiet", image])
            .timeout(timeout)
            .run()
            .await
            .map_err(|e| (PullError::Permanent, format!("{e:#}")))?;
        if out.success() {
            return Ok(());
        }
        let tail = out.tail(3);
        let kind = if out.status.is_none() {
            PullError::Transient
        } else {
            classify_pull(&tail)
        };
        Err((kind, format!("{}: {tail}", out.ending())))
    }

    /// Creates the container (or, when `spec.detach` is set, creates and
    /// starts it in one call); returns its id. Images are made beforehand,
    /// so podman never pulls here.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let argv = engine::run_argv(Engine::Podman, spec)?;
        // `run` and `create` take the same flags.
        let mut args = argv.args;
        if !spec.detach {
            args[0] = "create".into();
        }
        args.insert(1, "--pull=never".into());
        let mut cmd = self.cmd().args(&args);
        for (k, v) in &argv.env {
            cmd = cmd.env(k, v.expose());
        }
        let out = self.ok(cmd).await?;
        let id = out.stdout.lines().last().unwrap_or("").trim().to_string();
        if id.is_empty() {
            bail!("`podman create` printed no container id");
        }
        Ok(id)
    }

    /// Starts a created or stopped container.
    pub async fn start(&self, id: &str) -> Result<()> {
        self.ok(self.cmd().args(["start", id])).await.map(drop)
    }

    /// The container's main pid (0 when not running), status and exit code.
    pub async fn state(&self, id: &str) -> Result<(u32, String, i32)> {
        let out = self
            .ok(self.cmd().args([
                "inspect",
                "--format",
                "{{.State.Pid}} {{.State.Status}} {{.State.ExitCode}}",
                id,
            ]))
            .await?;
        let mut words = out.stdout.split_whitespace();
        let pid = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        let status = words.next().unwrap_or("unknown").to_string();
        let code = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        Ok((pid, status, code))
    }

    /// Removes containers (running ones too).
    pub async fn remove(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.ok(self.cmd().args(["rm", "--force", "--time", "3"]).args(ids))
            .await
            .map(drop)
    }

    /// Removes named volumes; ones that do not exist are fine.
    pub async fn remove_volumes(&self, names: &[String]) -> Result<()> {
        for n in names {
            let out = self
                .cmd()
                .args(["volume", "rm", "--force", n])
                .run()
                .await?;
            if !out.success() && !out.tail(1).contains("no such volume") {
                bail!("`{}` failed: {}", out.display, out.tail(2));
            }
        }
        Ok(())
    }

    /// The last `n` lines of the container's output.
    pub async fn logs(&self, id: &str, n: usize) -> String {
        let out = self
            .cmd()
            .args(["logs", "--tail", &n.to_string(), id])
            .timeout(Duration::from_secs(10))
            .run()
            .await;
        match out {
            Ok(o) => {
                let mut text = o.stdout;
                text.push_str(&o.stderr);
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(n)..].join("\n")
            }
            Err(e) => format!("(no logs: {e:#})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_json_is_read() {
        let json = r#"[{"AutoRemove":false,"Command":["true"],"Created":1,"Exited":true,"ExitCode":3,"Id":"abc","Image":"x","Labels":{"io.podstack.project":"p"},"Names":["p-web"],"Pid":0,"State":"exited"},
        {"Id":"def","Names":["other"],"Labels":null,"Pid":42,"State":"running"}]"#;
        let list = parse_ps(json).unwrap();
        assert_eq!(list[0].name, "p-web");
        assert_eq!(list[0].exit_code, Some(3));
        assert_eq!(list[0].pid, None);
        assert_eq!(list[0].labels["io.podstack.project"], "p");
        assert_eq!(list[1].pid, Some(42));
        assert!(list[1].labels.is_empty());
        assert!(parse_ps("").unwrap().is_empty());
        assert!(parse_ps("Error: x").is_err());
    }

    #[test]
    fn pull_errors_are_classified() {
        assert_eq!(
            classify_pull(
                "Error: initializing source docker://127.0.0.1:5999/x:1: pinging container registry 127.0.0.1:5999: Get \"http://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: connection refused"
            ),
            PullError::Transient
        );
        assert_eq!(
            classify_pull(
                "Error: reading manifest latest in 127.0.0.1:5000/nope: manifest unknown: manifest unknown"
            ),
            PullError::Permanent
        );
        assert_eq!(
            classify_pull("Error: ... unauthorized: authentication required"),
            PullError::Permanent
        );
        assert_eq!(
            classify_pull("received unexpected HTTP status: 503 Service Unavailable"),
            PullError::Transient
        );
    }
}
