//! The calls the stack engine makes, through the engine's command line
//! (podman's or Docker's): each one bounded, each failure naming the command
//! and the engine's message. Where the two differ, [`Engine::dialect`] says
//! how; the rest is the same call.
//!
//! Why the command line and not Docker's Engine API over its socket: one
//! `docker` call measured 12 ms here, against 22 ms for `curl` on the
//! socket, and a cold `up` makes a handful of them (the warm path makes
//! none); the argv for `run` is already one tested pure function, and the
//! API's create body would be a second description of every flag.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::engine::{self, ContainerSpec, Engine};
use crate::proc::{Cmd, Output};

/// A container engine's command line.
#[derive(Clone, Debug)]
pub struct Client {
    /// Which engine.
    pub engine: Engine,
    /// Its command line program.
    pub path: PathBuf,
    /// Variables for every call (`DOCKER_HOST` for a daemon of podstack's choosing).
    pub env: Vec<(String, String)>,
}

/// A container the engine knows about.
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

/// `docker ps --format` template: one JSON object per container, with the
/// labels podstack reads (`ps` prints the others as one comma-joined string).
const DOCKER_PS: &str = r#"{"Id":{{json .ID}},"Names":{{json .Names}},"State":{{json .State}},"Project":{{json (.Label "io.podstack.project")}},"Service":{{json (.Label "io.podstack.service")}},"Hash":{{json (.Label "io.podstack.hash")}}}"#;

/// Parses `docker ps --format DOCKER_PS` (pure).
pub fn parse_docker_ps(text: &str) -> Result<Vec<Existing>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Line {
        id: String,
        names: String,
        state: String,
        project: String,
        service: String,
        hash: String,
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let e: Line = serde_json::from_str(l)
                .with_context(|| format!("docker ps printed a line that is not its JSON: {l}"))?;
            let labels = [
                (crate::stack::resolve::LABEL_PROJECT, e.project),
                (crate::stack::resolve::LABEL_SERVICE, e.service),
                (crate::stack::resolve::LABEL_HASH, e.hash),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            Ok(Existing {
                id: e.id,
                name: e.names.split(',').next().unwrap_or("").to_string(),
                state: e.state,
                labels,
                pid: None,
                exit_code: None,
            })
        })
        .collect()
}

/// How a pull failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullError {
    /// Worth another try: the registry is not there yet, or overloaded.
    Transient,
    /// Cannot pass by retrying: no such image, or the login is refused.
    Permanent,
}

/// The layer (blob) hosts of well-known registries, which an egress
/// allowlist must let through as well as the registry itself.
const LAYER_HOSTS: &[(&str, &str)] = &[
    ("docker.io", "production.cloudflare.docker.com"),
    ("ghcr.io", "pkg-containers.githubusercontent.com"),
    ("public.ecr.aws", "the ECR layer host (*.cloudfront.net)"),
    ("quay.io", "cdn.quay.io (and cdn01/cdn02/cdn03.quay.io)"),
    (
        "registry.k8s.io",
        "registry.k8s.io's redirect targets (*.pkg.dev, *.amazonaws.com)",
    ),
];

/// When a pull failed with HTTP 403 on a layer download (an egress
/// allowlist that admits the registry but not the host its layers come
/// from), the sentence that says which host to allow (pure).
pub fn egress_hint(image: &str, text: &str) -> Option<String> {
    let t = text.to_ascii_lowercase();
    if !(t.contains("403") || t.contains("forbidden")) {
        return None;
    }
    let registry = registry_of(image);
    // The host named in the error, when it is not the registry.
    let named = text
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .filter_map(|w| {
            w.strip_prefix("https://")
                .or_else(|| w.strip_prefix("http://"))
        })
        .map(|w| w.split(['/', ':', '?']).next().unwrap_or(""))
        .find(|h| !h.is_empty() && *h != registry && !h.ends_with(&format!(".{registry}")));
    let layer = named.map(str::to_string).or_else(|| {
        LAYER_HOSTS
            .iter()
            .find(|(r, _)| *r == registry)
            .map(|(_, h)| h.to_string())
    });
    let about_layers =
        t.contains("blob") || t.contains("layer") || t.contains("download") || named.is_some();
    if !about_layers {
        return None;
    }
    Some(match layer {
        Some(h) => format!(
            "HTTP 403 while downloading the layers of {image}: the network lets {registry} through but not {h}, where its layers come from (an egress allowlist; in Claude Code's cloud: the environment's custom network access); allow {h}, or build or load the image locally"
        ),
        None => format!(
            "HTTP 403 while downloading the layers of {image}: an egress allowlist lets {registry} through but not the host its layers come from; allow that host, or build or load the image locally"
        ),
    })
}

/// The registry host of an image reference (`docker.io` when none is named).
fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.split(':').next().unwrap_or(first).to_string()
        }
        _ => "docker.io".into(),
    }
}

/// Classifies an engine's pull error text (pure).
pub fn classify_pull(text: &str) -> PullError {
    let t = text.to_ascii_lowercase();
    if t.contains("403") || t.contains("forbidden") {
        return PullError::Permanent;
    }
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

impl Client {
    fn cmd(&self) -> Cmd {
        let mut c = Cmd::new(&self.path).timeout(Duration::from_secs(60));
        for (k, v) in &self.env {
            c = c.env(k, v);
        }
        c
    }

    /// A call that changes the host: it runs to its end even when podstack
    /// is interrupted (see [`Cmd::finish_on_drop`]).
    fn change(&self) -> Cmd {
        self.cmd().finish_on_drop()
    }

    fn missing(&self, text: &str) -> bool {
        let t = text.to_ascii_lowercase();
        self.engine.dialect().no_such.iter().any(|m| t.contains(m))
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

    /// One engine command of its own (`kube play`, `secret create` ...),
    /// run to its end; fails with its last lines.
    pub async fn call<S: AsRef<std::ffi::OsStr>>(
        &self,
        args: &[S],
        timeout: Duration,
    ) -> Result<Output> {
        self.ok(self.change().args(args).timeout(timeout)).await
    }

    /// Whether an engine command exits 0 (`volume exists NAME`).
    pub async fn succeeds<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> bool {
        self.cmd().args(args).run().await.is_ok_and(|o| o.success())
    }

    /// Every container the engine knows (one call).
    pub async fn list(&self) -> Result<Vec<Existing>> {
        match self.engine {
            Engine::Podman => {
                let out = self
                    .ok(self.cmd().args(["ps", "--all", "--format", "json"]))
                    .await?;
                parse_ps(&out.stdout)
            }
            Engine::Docker => {
                let out = self
                    .ok(self
                        .cmd()
                        .args(["ps", "--all", "--no-trunc", "--format", DOCKER_PS]))
                    .await?;
                parse_docker_ps(&out.stdout)
            }
        }
    }

    /// The names of every local image (one call).
    pub async fn image_names(&self) -> Result<std::collections::BTreeSet<String>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Img {
            #[serde(default)]
            names: Option<Vec<String>>,
        }
        if self.engine == Engine::Docker {
            let out = self
                .ok(self
                    .cmd()
                    .args(["images", "--format", "{{.Repository}}:{{.Tag}}"]))
                .await?;
            return Ok(out.stdout.lines().map(str::to_string).collect());
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
        let out = match self.engine {
            Engine::Podman => self.cmd().args(["image", "exists", image]).run().await?,
            Engine::Docker => {
                self.cmd()
                    .args(["image", "inspect", "--format", "{{.Id}}", image])
                    .run()
                    .await?
            }
        };
        match out.status.and_then(|s| s.code()) {
            Some(0) => Ok(true),
            Some(1) if self.engine == Engine::Podman || self.missing(&out.stderr) => Ok(false),
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
        if let Some(hint) = egress_hint(image, &tail) {
            return Err((PullError::Permanent, format!("{hint} ({})", tail.trim())));
        }
        let kind = if out.status.is_none() {
            PullError::Transient
        } else {
            classify_pull(&tail)
        };
        Err((kind, format!("{}: {tail}", out.ending())))
    }

    /// Creates the container (or, when `spec.detach` is set, creates and
    /// starts it, in one call where the engine can); returns its id. Images
    /// are made beforehand, so the engine never pulls here.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let argv = engine::run_argv(self.engine, spec)?;
        // `run` and `create` take the same flags; a container joined to more
        // networks after it is made is started after that.
        let one_call = spec.detach && argv.connect.is_empty();
        let mut args = argv.args;
        if !one_call {
            args[0] = "create".into();
            args.retain(|a| a != "--detach");
        }
        args.insert(1, "--pull=never".into());
        let mut cmd = self.change().args(&args);
        for (k, v) in &argv.env {
            cmd = cmd.env(k, v.expose());
        }
        let out = self.ok(cmd).await?;
        let id = out.stdout.lines().last().unwrap_or("").trim().to_string();
        if id.is_empty() {
            bail!("`{} create` printed no container id", self.engine);
        }
        for net in &argv.connect {
            let mut cmd = self.change().args(["network", "connect"]);
            for a in &spec.aliases {
                cmd = cmd.args(["--alias", a]);
            }
            self.ok(cmd.arg(net).arg(&id)).await?;
        }
        if spec.detach && !one_call {
            self.start(&id).await?;
        }
        Ok(id)
    }

    /// The labels of network `name`, or `None` when it does not exist.
    pub async fn network_labels(&self, name: &str) -> Result<Option<BTreeMap<String, String>>> {
        let out = self
            .cmd()
            .args(["network", "inspect", "--format", "{{json .Labels}}", name])
            .run()
            .await?;
        if !out.success() {
            if self.missing(&out.stderr) || self.missing(&out.stdout) {
                return Ok(None);
            }
            bail!(
                "`{}` failed ({}): {}",
                out.display,
                out.ending(),
                out.tail(3)
            );
        }
        let text = out.stdout.trim();
        if text.is_empty() || text == "null" {
            return Ok(Some(BTreeMap::new()));
        }
        Ok(Some(serde_json::from_str(text).with_context(|| {
            format!(
                "`{}` printed something that is not JSON: {text}",
                out.display
            )
        })?))
    }

    /// The bridge interface of network `name` (podman: its configured
    /// `network_interface`, known before any container joins).
    pub async fn network_bridge(&self, name: &str) -> Result<String> {
        let out = self
            .ok(self.cmd().args([
                "network",
                "inspect",
                "--format",
                "{{.NetworkInterface}}",
                name,
            ]))
            .await?;
        let b = out.stdout.trim().to_string();
        if b.is_empty() {
            bail!("`{}` named no bridge", out.display);
        }
        Ok(b)
    }

    /// Makes bridge network `name` with `labels`, isolated from the engine's
    /// other networks.
    pub async fn network_create(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        let mut cmd = self
            .change()
            .args(["network", "create"])
            .args(self.engine.dialect().isolate_opts);
        for (k, v) in labels {
            cmd = cmd.arg("--label").arg(format!("{k}={v}"));
        }
        let out = self.ok(cmd.arg(name)).await?;
        // Docker lets two networks share a name: one made by someone else
        // at the same moment leaves both ambiguous. Ours goes, and says so.
        if self.engine == Engine::Docker {
            let id = out.stdout.trim().to_string();
            let same = self.networks_named(name).await?;
            if same.len() > 1 {
                let _ = self.network_remove(std::slice::from_ref(&id)).await;
                bail!(
                    "another network named {name} was made at the same moment (Docker allows two of one name); podstack removed its own: run up again"
                );
            }
        }
        Ok(())
    }

    /// The ids of the networks named exactly `name`.
    async fn networks_named(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .network_list(&format!("name={name}"))
            .await?
            .into_iter()
            .filter(|(_, n)| n == name)
            .map(|(id, _)| id)
            .collect())
    }

    /// `(id, name)` of every network matching `filter`.
    async fn network_list(&self, filter: &str) -> Result<Vec<(String, String)>> {
        let out = self
            .ok(self.cmd().args([
                "network",
                "ls",
                "--filter",
                filter,
                "--format",
                "{{.ID}} {{.Name}}",
            ]))
            .await?;
        Ok(out
            .stdout
            .lines()
            .filter_map(|l| l.trim().split_once(' '))
            .map(|(id, n)| (id.to_string(), n.to_string()))
            .collect())
    }

    /// `(id, name)` of the networks carrying `label=value`.
    pub async fn networks_labelled(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<(String, String)>> {
        self.network_list(&format!("label={label}={value}")).await
    }

    /// The names of the containers attached to network `name`.
    pub async fn containers_on(&self, name: &str) -> Vec<String> {
        match self
            .cmd()
            .args([
                "ps",
                "-a",
                "--filter",
                &format!("network={name}"),
                "--format",
                "{{.Names}}",
            ])
            .run()
            .await
        {
            Ok(o) if o.success() => o.stdout.lines().map(str::to_string).collect(),
            _ => Vec::new(),
        }
    }

    /// Removes networks (by id or name); ones already gone are fine.
    pub async fn network_remove(&self, names: &[String]) -> Result<()> {
        for n in names {
            let out = self.change().args(["network", "rm", n]).run().await?;
            if !out.success() && !self.missing(&out.stderr) {
                bail!("`{}` failed: {}", out.display, out.tail(2));
            }
        }
        Ok(())
    }

    /// Starts a created or stopped container.
    pub async fn start(&self, id: &str) -> Result<()> {
        self.ok(self.change().args(["start", id])).await.map(drop)
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
        self.ok(self.change().args(self.engine.dialect().rm_force).args(ids))
            .await
            .map(drop)
    }

    /// Removes named volumes; ones that do not exist are fine.
    /// The names of the volumes carrying `key=value` (one call).
    pub async fn volumes_labelled(&self, key: &str, value: &str) -> Result<Vec<String>> {
        let out = self
            .ok(self.cmd().args([
                "volume",
                "ls",
                "--quiet",
                "--filter",
                &format!("label={key}={value}"),
            ]))
            .await?;
        Ok(out.stdout.lines().map(str::to_string).collect())
    }

    /// Makes the named volumes of `names` that do not exist yet, with
    /// `labels` (so `down --volumes` removes only volumes podstack made;
    /// one a user made, or an external one, is used as it is).
    pub async fn ensure_volumes(&self, names: &[String], labels: &[(&str, &str)]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let out = self
            .ok(self.cmd().args(["volume", "ls", "--quiet"]))
            .await?;
        let here: std::collections::BTreeSet<&str> = out.stdout.lines().collect();
        for n in names.iter().filter(|n| !here.contains(n.as_str())) {
            let mut cmd = self.change().args(["volume", "create"]);
            for (k, v) in labels {
                cmd = cmd.args(["--label", &format!("{k}={v}")]);
            }
            let made = cmd.arg(n).run().await?;
            // Made meanwhile by a concurrent up: used as it is.
            if !made.success() && !made.tail(2).to_ascii_lowercase().contains("exists") {
                bail!("`{}` failed: {}", made.display, made.tail(2));
            }
        }
        Ok(())
    }

    pub async fn remove_volumes(&self, names: &[String]) -> Result<()> {
        for n in names {
            let out = self
                .cmd()
                .args(["volume", "rm", "--force", n])
                .run()
                .await?;
            if !out.success() && !self.missing(&out.tail(1)) {
                bail!("`{}` failed: {}", out.display, out.tail(2));
            }
        }
        Ok(())
    }

    /// The last `n` lines of the container's output.
    pub async fn logs(&self, id: &str, n: usize) -> String {
        // A container that exited a moment ago may not have its output in
        // the log yet (conmon writes it): a few short tries before "none".
        let mut last = String::new();
        for attempt in 0..5 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
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
                    last = container_lines(&text, n);
                    if !last.is_empty() {
                        return last;
                    }
                }
                Err(e) => return format!("(no logs: {e:#})"),
            }
        }
        last
    }
}

/// The last `n` lines of `text` that the container wrote: podman's own
/// diagnostics (logrus lines, `time="..." level=...`) are not its output
/// (pure).
pub fn container_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !(l.starts_with("time=\"") && l.contains(" level=")))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podmans_own_warnings_are_not_the_containers_logs() {
        let text = "time=\"2026-11-23T18:09:36Z\" level=error msg=\"The storage 'driver' option must be set\"\ncannot listen on 192.0.2.1:9\n";
        assert_eq!(container_lines(text, 30), "cannot listen on 192.0.2.1:9");
        assert_eq!(container_lines("a\nb\nc\n", 2), "b\nc");
    }

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
    fn docker_ps_lines_are_read() {
        let text = "{\"Id\":\"abc\",\"Names\":\"p-web\",\"State\":\"running\",\"Project\":\"p\",\"Service\":\"web\",\"Hash\":\"h1\"}\n{\"Id\":\"def\",\"Names\":\"theirs,alias\",\"State\":\"exited\",\"Project\":\"\",\"Service\":\"\",\"Hash\":\"\"}\n";
        let list = parse_docker_ps(text).unwrap();
        assert_eq!(list[0].labels["io.podstack.hash"], "h1");
        assert_eq!(list[0].state, "running");
        assert_eq!(list[1].name, "theirs");
        assert!(list[1].labels.is_empty());
        assert!(parse_docker_ps("").unwrap().is_empty());
        assert!(parse_docker_ps("Cannot connect to the Docker daemon").is_err());
    }

    #[test]
    fn a_403_on_the_layer_host_names_the_host_to_allow() {
        let docker = "error pulling image configuration: download failed after attempts=6: received unexpected HTTP status: 403 Forbidden";
        let h = egress_hint("postgres:16", docker).unwrap();
        assert!(h.contains("production.cloudflare.docker.com"), "{h}");
        assert!(h.contains("lets docker.io through"), "{h}");
        let podman = "Error: copying system image from manifest list: reading blob sha256:abc: fetching blob: StatusCode: 403, \"https://pkg-containers.githubusercontent.com/ghcr1/blobs/sha256:abc?...\"";
        let h = egress_hint("ghcr.io/org/app:1", podman).unwrap();
        assert!(
            h.contains("not pkg-containers.githubusercontent.com"),
            "{h}"
        );
        assert_eq!(classify_pull(podman), PullError::Permanent);
        assert!(egress_hint("postgres:16", "manifest unknown").is_none());
        assert_eq!(registry_of("localhost:5000/x"), "localhost");
        assert_eq!(registry_of("library/postgres"), "docker.io");
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
