//! The stack commands' edges: `init`, `up`, `down`, `status`, `logs` and
//! `demo`, each a thin layer over the modules beside it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::detect::Facts;
use crate::env::Env;
use crate::exit::Outcome;
use crate::report;
use crate::stack::podman::Podman;
use crate::stack::probe::{self, Verdict};
use crate::stack::resolve::LABEL_PROJECT;
use crate::stack::{self, Project, record, up};

/// Which stack, as the command line named it.
pub struct Which<'a> {
    /// `-f FILE`.
    pub file: Option<&'a Path>,
    /// `-p NAME`.
    pub project: Option<&'a str>,
}

fn state_root(facts: &Facts) -> Result<PathBuf> {
    Ok(facts
        .layout
        .as_ref()
        .context("HOME is not set: cannot tell where podstack keeps its state")?
        .state_dir
        .clone())
}

fn podman(facts: &Facts) -> Result<Podman> {
    Ok(Podman {
        path: facts.podman.as_ref().map(|b| b.path.clone()).context(
            "podman is not installed: install it with `apt-get install podman runc uidmap slirp4netns` (or `install.sh --with-podman`)",
        )?,
    })
}

/// Opens the stack the command line names.
pub fn open(env: &Env, facts: &Facts, which: &Which<'_>) -> Result<Project> {
    stack::open(env, which.file, which.project, &state_root(facts)?)
}

/// `podstack init`: writes the starter stack file.
pub fn init(env: &Env, force: bool) -> Result<Outcome> {
    let dir = env.cwd().context("cannot tell the current folder")?;
    let path = dir.join(stack::FILE_NAME);
    if path.exists() && !force {
        bail!(
            "{} exists; podstack init leaves it alone (--force replaces it)",
            path.display()
        );
    }
    crate::fsx::write_atomic(&path, stack::file::STARTER.as_bytes(), 0o644)?;
    report::text(&format!(
        "wrote {}: seed 000's stack (PostgreSQL on 127.0.0.1:5433, a registry on :5050, its proxy on :5051); edit it, then run podstack up\n",
        path.display()
    ))?;
    Ok(Outcome::Done)
}

/// `podstack up`.
pub async fn up(
    env: &Env,
    facts: &Facts,
    project: &Project,
    opts: &up::Options,
    json: bool,
) -> Result<Outcome> {
    let ctx = up::Ctx {
        podman: podman(facts)?,
        facts,
        env,
    };
    let r = up::run(&ctx, project, opts).await?;
    if json {
        report::json(&r)?;
    } else {
        report::text(&report::up(&r))?;
    }
    Ok(Outcome::answer(r.ready()))
}

/// What `down` did.
#[derive(Serialize)]
struct Down {
    project: String,
    removed: Vec<String>,
    volumes_removed: Vec<String>,
}

/// `podstack down`: removes the stack's containers (only those carrying its
/// project label), and its named volumes when asked.
pub async fn down(
    facts: &Facts,
    project: &Project,
    volumes: bool,
    lock_timeout: Duration,
    json: bool,
) -> Result<Outcome> {
    let podman = podman(facts)?;
    fs_err::create_dir_all(&project.state_dir)?;
    let _lock = crate::fsx::Lock::acquire(
        &project.state_dir.join("up.lock"),
        lock_timeout,
        &format!("taking down {}", project.name),
    )
    .await?;
    let ours: Vec<_> = podman
        .list()
        .await?
        .into_iter()
        .filter(|e| e.labels.get(LABEL_PROJECT) == Some(&project.name))
        .collect();
    let ids: Vec<String> = ours.iter().map(|e| e.id.clone()).collect();
    podman.remove(&ids).await?;
    record::clear(&project.state_dir);
    let mut vols = Vec::new();
    if volumes {
        let secrets = stack::secrets(project)?;
        let key = stack::hash_key(project)?;
        for s in &project.file.services {
            let r = stack::resolve::resolve(&project.name, s, &secrets, &key)?;
            for v in r.named_volumes {
                if !vols.contains(&v) {
                    vols.push(v);
                }
            }
        }
        podman.remove_volumes(&vols).await?;
    }
    let d = Down {
        project: project.name.clone(),
        removed: ours.iter().map(|e| e.name.clone()).collect(),
        volumes_removed: vols,
    };
    if json {
        report::json(&d)?;
    } else {
        let mut s = format!(
            "podstack down: {}: removed {} container(s)",
            d.project,
            d.removed.len()
        );
        if !d.removed.is_empty() {
            s.push_str(&format!(" ({})", d.removed.join(", ")));
        }
        if volumes {
            s.push_str(&format!(
                "; volumes removed: {}",
                if d.volumes_removed.is_empty() {
                    "none".into()
                } else {
                    d.volumes_removed.join(", ")
                }
            ));
        } else {
            s.push_str("; volumes kept (--volumes removes them)");
        }
        s.push('\n');
        report::text(&s)?;
    }
    Ok(Outcome::Done)
}

/// One service in `status`.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// Its container.
    pub container: String,
    /// `ready`, `running` (not ready), `stopped`, `outdated` (its definition
    /// changed since), `not started`.
    pub state: String,
    /// Host ports.
    pub ports: Vec<u16>,
    /// Seconds since it became ready.
    pub age_s: Option<u64>,
    /// The probe's error, when not ready.
    pub error: Option<String>,
}

/// The stack's status.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The project.
    pub project: String,
    /// The stack file.
    pub file: PathBuf,
    /// Every service.
    pub services: Vec<ServiceStatus>,
}

/// `podstack status`: from the record and the probes (no podman call).
pub async fn status(project: &Project, json: bool) -> Result<Outcome> {
    let rec = record::load(&project.state_dir);
    let secrets = stack::secrets(project)?;
    let key = stack::hash_key(project)?;
    let mut services = Vec::new();
    for s in crate::stack::file::start_order(&project.file.services) {
        let r = stack::resolve::resolve(&project.name, s, &secrets, &key)?;
        let (state, age, error) = match rec.services.get(&s.name) {
            None => ("not started".to_string(), None, None),
            Some(st) if !record::alive(st) => (
                "stopped".to_string(),
                None,
                Some(format!(
                    "its container is not running: `podstack logs {}` shows why, `podstack up` starts it",
                    s.name
                )),
            ),
            Some(st) => {
                let verdict = match &r.ready {
                    Some(p) => probe::check(p, false).await,
                    None => Verdict::Ready,
                };
                let age = (st.ready_at != 0).then(|| record::now().saturating_sub(st.ready_at));
                match verdict {
                    Verdict::Ready if st.hash != r.hash => (
                        "outdated".to_string(),
                        age,
                        Some(
                            "its definition changed since it started: podstack up recreates it"
                                .to_string(),
                        ),
                    ),
                    Verdict::Ready => ("ready".to_string(), age, None),
                    Verdict::NotYet(e) | Verdict::Fatal(e) => ("running".to_string(), age, Some(e)),
                }
            }
        };
        services.push(ServiceStatus {
            name: s.name.clone(),
            container: r.container.clone(),
            state,
            ports: s.ports.clone(),
            age_s: age,
            error,
        });
    }
    let st = Status {
        project: project.name.clone(),
        file: project.file.path.clone(),
        services,
    };
    if json {
        report::json(&st)?;
    } else {
        report::text(&report::status(&st))?;
    }
    Ok(Outcome::answer(
        st.services.iter().all(|s| s.state == "ready"),
    ))
}

/// `podstack logs SERVICE`: podman's own `logs`, its output passed through.
pub async fn logs(
    facts: &Facts,
    project: &Project,
    service: &str,
    follow: bool,
    tail: usize,
) -> Result<Outcome> {
    let names: Vec<&str> = project
        .file
        .services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    if !names.contains(&service) {
        let hint = crate::stack::file::closest(service, &names)
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        bail!(
            "`{service}` is not a service of {}{hint}",
            project.file.path.display()
        );
    }
    let podman = podman(facts)?;
    let container = format!("{}-{service}", project.name);
    let mut cmd = tokio::process::Command::new(&podman.path);
    cmd.args(["logs", "--tail", &tail.to_string()]);
    if follow {
        cmd.arg("--follow");
    }
    cmd.arg(&container)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let status = cmd.status().await.context("cannot run podman logs")?;
    Ok(if status.success() {
        Outcome::Done
    } else {
        Outcome::Error
    })
}

/// The demo's project: its stack file written into the state folder.
pub fn demo_project(facts: &Facts, env: &Env) -> Result<Project> {
    let root = state_root(facts)?;
    let dir = root.join("demo");
    let file = stack::demo::write_stack_file(&dir)?;
    stack::open(env, Some(&file), None, &root)
}
