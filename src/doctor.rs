//! `podstack doctor`: can containers run here, with which settings, and if
//! not, what exactly is wrong (the error, its cause, the fix).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::canary::{self, Diagnosis, Finding};
use crate::conf;
use crate::detect::{Binary, Facts};
use crate::env::Env;

/// The doctor's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// Containers can run here.
    pub can_run: bool,
    /// podman, with its version.
    pub podman: Option<Binary>,
    /// Rootless or rootful.
    pub rootless: bool,
    /// Running under gVisor.
    pub gvisor: bool,
    /// The storage driver podman is configured with (`null`: podman's default).
    pub storage_driver: Option<String>,
    /// The containers.conf settings that matter in sandboxes, and where each comes from.
    pub settings: Vec<Effective>,
    /// Wall time of the canary, in milliseconds.
    pub canary_ms: Option<u64>,
    /// What is wrong, when something is.
    pub diagnosis: Option<Diagnosis>,
    /// Problems that do not stop containers from running.
    pub warnings: Vec<String>,
    /// The Docker daemon, when a docker client is installed.
    pub docker: Option<DockerVerdict>,
}

/// What the doctor found of Docker.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DockerVerdict {
    /// The endpoint asked (`DOCKER_HOST`, else the default socket).
    pub url: String,
    /// Whether it answered `GET /_ping`.
    pub answers: bool,
    /// The daemon's version.
    pub server_version: Option<String>,
    /// Its API version.
    pub api_version: Option<String>,
    /// Its storage driver.
    pub storage_driver: Option<String>,
    /// Whether a container ran (the canary, this binary imported as an image).
    pub can_run: Option<bool>,
    /// Wall time of that canary, in milliseconds.
    pub canary_ms: Option<u64>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// Whether `dockerd` is installed (`podstack up` starts it as root when nothing answers).
    pub dockerd_installed: bool,
}

/// Examines the Docker daemon within `budget`: ping, versions, storage
/// driver, and a canary container made of this binary.
pub async fn docker(facts: &Facts, env: &Env, budget: Duration) -> Option<DockerVerdict> {
    let client = facts.docker.as_ref()?;
    let mut v = DockerVerdict {
        url: crate::stack::choose::docker_url(env).unwrap_or_else(|e| format!("{e:#}")),
        dockerd_installed: which::which_in("dockerd", Some(crate::detect::search_path(env)), "/")
            .is_ok(),
        ..DockerVerdict::default()
    };
    let deadline = std::time::Instant::now() + budget.min(Duration::from_secs(2));
    v.answers = crate::detect::sockets::ping(&v.url, deadline) == Some(true);
    if !v.answers {
        v.error = Some(format!(
            "no Docker daemon answers on {}{}",
            v.url,
            if v.dockerd_installed {
                " (dockerd is installed: `podstack up --engine docker` starts it as root)"
            } else {
                ""
            }
        ));
        return Some(v);
    }
    let cmd = |args: &[&str]| {
        crate::proc::Cmd::new(&client.path)
            .args(args)
            .timeout(budget.min(Duration::from_secs(10)))
    };
    if let Ok(out) = cmd(&[
        "version",
        "--format",
        "{{.Server.Version}} {{.Server.APIVersion}}",
    ])
    .run()
    .await
        && out.success()
    {
        let mut w = out.stdout.split_whitespace();
        v.server_version = w.next().map(str::to_string);
        v.api_version = w.next().map(str::to_string);
    }
    if let Ok(out) = cmd(&["info", "--format", "{{.Driver}}"]).run().await
        && out.success()
    {
        v.storage_driver = Some(out.stdout.trim().to_string()).filter(|d| !d.is_empty());
    }
    let start = std::time::Instant::now();
    let image = format!("localhost/podstack-canary:{}", env!("CARGO_PKG_VERSION"));
    let docker = crate::stack::client::Client {
        engine: crate::engine::Engine::Docker,
        path: client.path.clone(),
        env: Vec::new(),
    };
    let ran = async {
        if !docker.image_exists(&image).await? {
            crate::stack::demo::make_image_in(&docker, &image).await?;
        }
        let out = cmd(&["run", "--rm", "--network", "host", &image, "canary"])
            .timeout(budget.min(Duration::from_secs(60)))
            .run()
            .await?;
        anyhow::ensure!(
            canary::passed(&out),
            "the canary failed ({}): {}",
            out.ending(),
            out.tail(2)
        );
        anyhow::Ok(())
    }
    .await;
    v.canary_ms = Some(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
    v.can_run = Some(ran.is_ok());
    if let Err(e) = ran {
        v.error = Some(format!("{e:#}"));
    }
    Some(v)
}

/// One effective containers.conf value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Effective {
    /// `table.key`.
    pub key: String,
    /// The value as TOML.
    pub value: String,
    /// The file that set it.
    pub source: PathBuf,
}

const KEYS: [(&str, &str); 6] = [
    ("engine", "runtime"),
    ("engine", "cgroup_manager"),
    ("engine", "events_logger"),
    ("containers", "netns"),
    ("containers", "default_ulimits"),
    ("containers", "log_driver"),
];

/// Examines the host within `timeout` in all (every podman call included).
pub async fn run(facts: &Facts, env: &Env, timeout: Duration) -> Result<Verdict> {
    let deadline = tokio::time::Instant::now() + timeout.min(crate::proc::MAX_TIMEOUT);
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let settings = facts
        .layout
        .as_ref()
        .map(|l| effective(&crate::layout::containers_conf_chain(env, l)))
        .unwrap_or_default();
    let mut verdict = Verdict {
        can_run: false,
        podman: facts.podman.clone(),
        rootless: facts.rootless,
        gvisor: facts.gvisor,
        storage_driver: facts.storage.driver.clone(),
        settings,
        canary_ms: None,
        diagnosis: None,
        warnings: Vec::new(),
        docker: None,
    };
    verdict.docker = docker(facts, env, left()).await;
    let others = crate::plan::other_drivers(
        facts.storage.driver.as_deref(),
        &facts.storage.drivers_on_disk,
    );
    if !others.is_empty() {
        let graphroot = facts.storage.graphroot.clone().unwrap_or_default();
        verdict
            .warnings
            .push(crate::plan::mixed_storage_warning(&graphroot, &others));
    }
    if let Some(p) = crate::layout::override_file(env) {
        verdict.warnings.push(format!(
            "CONTAINERS_CONF_OVERRIDE names {}: podman 4.5 and later read it after every other containers.conf, podman 4.3 ignores it",
            p.display()
        ));
    }
    let Some(podman) = &mut verdict.podman else {
        verdict.diagnosis = Some(Diagnosis {
            finding: Finding::NoPodman,
            error: "podman: not found on PATH".into(),
            cause: "podman is not installed".into(),
            fix: "apt-get install podman runc uidmap slirp4netns (or install.sh --with-podman), then podstack configure".into(),
        });
        return Ok(verdict);
    };
    if podman.version.is_none() {
        let ask = left().min(Duration::from_secs(5));
        podman.version = crate::detect::binary_version(&podman.path, "podman", ask).await;
    }
    let path = podman.path.clone();
    let layout = facts
        .layout
        .as_ref()
        .context("HOME is not set: cannot tell where podman's configuration lives")?;
    let mountinfo = fs_err::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let scratch = crate::scratch::Base::pick(env, &mountinfo, &layout.state_dir)?;
    scratch.sweep();
    let out = canary::run(&path, &canary::Candidate::default(), left(), &scratch).await?;
    verdict.canary_ms = Some(out.millis());
    verdict.can_run = canary::passed(&out);
    if verdict.can_run
        && let Some(w) = canary::slow_warning(out.millis())
    {
        verdict.warnings.push(w);
    }
    if !verdict.can_run {
        let mut d = canary::diagnose(&out, facts);
        if fixable(&d.finding) {
            d.fix = format!(
                "{}; run `podstack configure` to apply it",
                d.fix.trim_end_matches(" (podstack configure sets it)")
            );
        }
        verdict.diagnosis = Some(d);
    }
    Ok(verdict)
}

fn fixable(f: &Finding) -> bool {
    matches!(
        f,
        Finding::Runtime
            | Finding::Ulimit { .. }
            | Finding::Network
            | Finding::CgroupManager
            | Finding::EventsLogger
            | Finding::LogDriver
    )
}

/// The effective values of the keys podstack manages, read from `chain`
/// (files that are missing or do not parse are skipped).
pub fn effective(chain: &[PathBuf]) -> Vec<Effective> {
    let docs: Vec<(PathBuf, toml_edit::DocumentMut)> = chain
        .iter()
        .filter_map(|p| Some((p.clone(), conf::load(p, conf::Kind::Containers).ok()??.doc)))
        .collect();
    KEYS.iter()
        .filter_map(|(table, key)| {
            docs.iter().rev().find_map(|(path, doc)| {
                let item = doc.get(table)?.get(key)?;
                Some(Effective {
                    key: format!("{table}.{key}"),
                    value: {
                        let mut v = item.as_value()?.clone();
                        v.decor_mut().clear();
                        v.to_string()
                    },
                    source: path.clone(),
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_files_win_and_sources_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.conf");
        let b = dir.path().join("b.conf");
        let broken = dir.path().join("broken.conf");
        fs_err::write(
            &a,
            "[engine]\nruntime = \"crun\"\ncgroup_manager = \"systemd\"\n",
        )
        .unwrap();
        fs_err::write(
            &b,
            "[engine]\nruntime = \"runc\" # ours\n[containers]\nnetns = \"host\"\n",
        )
        .unwrap();
        fs_err::write(&broken, "[engine\n").unwrap();
        let eff = effective(&[a.clone(), b.clone(), broken, dir.path().join("missing")]);
        assert_eq!(
            eff,
            vec![
                Effective {
                    key: "engine.runtime".into(),
                    value: "\"runc\"".into(),
                    source: b.clone()
                },
                Effective {
                    key: "engine.cgroup_manager".into(),
                    value: "\"systemd\"".into(),
                    source: a
                },
                Effective {
                    key: "containers.netns".into(),
                    value: "\"host\"".into(),
                    source: b
                },
            ]
        );
    }
}
