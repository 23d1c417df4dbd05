//! `podstack up`: bring the stack up, correctly, every time.
//!
//! The flow: lock the stack; if the record, /proc and the probes agree that
//! every service is up, stop there (the warm path: no engine call at all);
//! else choose the engine and the network mode (podman configured only when
//! its recorded proof is stale), make the stack's networks, ask the engine
//! once what exists, decide per service (adopt, restart,
//! recreate, create), check that every port to be taken is free, make the
//! missing images (build command, else pull with retries), create every
//! container at once, then start each as soon as its dependencies are ready
//! and probe it from the host until it is ready, it exits, or its deadline
//! passes. What was started is recorded for the next run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::engine::{Engine, NetworkMode};
use crate::stack::client::{Client, Existing, PullError};
use crate::stack::file::EngineChoice;
use crate::stack::net::Mode;
use crate::stack::probe::{self, Verdict};
use crate::stack::record::{self, Record, Started};
use crate::stack::resolve::{self, LABEL_HASH, LABEL_PROJECT, LABEL_SERVICE, Resolved, Scope};
use crate::stack::{Project, ports};

/// How to bring the stack up.
#[derive(Clone, Debug)]
pub struct Options {
    /// Only these services (and what they depend on); empty: all.
    pub services: Vec<String>,
    /// A deadline for the whole `up`, on top of each service's own.
    pub timeout: Option<Duration>,
    /// How long to wait for another `up` of the same stack.
    pub lock_timeout: Duration,
    /// `--engine`, over the file's `[stack] engine`.
    pub engine: Option<EngineChoice>,
}

/// What happened to one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Already running with this definition (warm path or adopted).
    Kept,
    /// Existed with this definition but was stopped: started again.
    Restarted,
    /// Existed with another definition: removed and made anew.
    Recreated,
    /// Made.
    Created,
    /// Not started: a dependency failed.
    Skipped,
}

/// One service in the report.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ServiceReport {
    /// Its name.
    pub name: String,
    /// Its container.
    pub container: String,
    /// What `up` did.
    pub action: Action,
    /// Whether it is ready.
    pub ready: bool,
    /// Milliseconds from `up`'s start until it was ready.
    pub ready_ms: Option<u64>,
    /// Host ports it holds.
    pub ports: Vec<u16>,
}

/// Why a service did not become ready: one screen of facts.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Failure {
    /// The service.
    pub service: String,
    /// What went wrong.
    pub reason: String,
    /// The probe's last error.
    pub probe_error: Option<String>,
    /// The container's state (`exited`, `running`, ...).
    pub state: Option<String>,
    /// Its exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Its last log lines.
    pub logs: Vec<String>,
}

/// What `up` did.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Report {
    /// The project.
    pub project: String,
    /// Everything was already up: no engine call was made.
    pub warm: bool,
    /// The engine that runs the stack.
    pub engine: Engine,
    /// How the stack is networked.
    pub mode: Mode,
    /// Every service, in start order.
    pub services: Vec<ServiceReport>,
    /// Milliseconds `up` took.
    pub elapsed_ms: u64,
    /// What failed: every service that did not become ready for a reason of
    /// its own (services left waiting on a failed dependency are `skipped`).
    pub failures: Vec<Failure>,
}

impl Report {
    /// Whether every service is ready.
    pub fn ready(&self) -> bool {
        self.failures.is_empty() && self.services.iter().all(|s| s.ready)
    }
}

/// The host podstack works on.
pub struct Ctx<'a> {
    /// The host's facts.
    pub facts: &'a crate::detect::Facts,
    /// The environment.
    pub env: &'a crate::env::Env,
}

/// The services to act on: the ones asked for and everything they depend on,
/// in start order.
pub fn selection(project: &Project, wanted: &[String]) -> Result<Vec<String>> {
    let order = crate::stack::file::start_order(&project.file.services);
    if wanted.is_empty() {
        return Ok(order.iter().map(|s| s.name.clone()).collect());
    }
    let known: BTreeSet<&str> = order.iter().map(|s| s.name.as_str()).collect();
    let mut keep: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = wanted.to_vec();
    while let Some(n) = todo.pop() {
        if !known.contains(n.as_str()) {
            let hint = crate::stack::file::closest(&n, &known.iter().copied().collect::<Vec<_>>())
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            bail!(
                "`{n}` is not a service of {}{hint}",
                project.file.path.display()
            );
        }
        if keep.insert(n.clone())
            && let Some(s) = order.iter().find(|s| s.name == n)
        {
            todo.extend(s.depends_on.iter().cloned());
        }
    }
    Ok(order
        .iter()
        .filter(|s| keep.contains(&s.name))
        .map(|s| s.name.clone())
        .collect())
}

/// Reports a service's progress (see `progress`).
fn progress(start: Instant, service: &str, state: &str) {
    crate::stack::progress::say(start, service, state);
}

/// The services of `names`, resolved in `mode`.
fn resolve_in(
    project: &Project,
    names: &[String],
    mode: Mode,
    secrets: &BTreeMap<String, crate::engine::Secret>,
    key: &str,
) -> Result<Vec<Resolved>> {
    let scope = Scope::new(&project.name, &project.file, mode, secrets, key);
    names
        .iter()
        .filter_map(|n| project.file.services.iter().find(|s| &s.name == n))
        .map(|s| resolve::resolve(&scope, s))
        .collect()
}

/// The engine and mode of the last `up`, when the file (and `--engine`)
/// still admit them: what the warm path and the exports go by.
pub fn recorded(
    project: &Project,
    rec: &Record,
    engine: Option<EngineChoice>,
) -> Option<(Engine, Mode)> {
    let (Some(e), Some(m)) = (rec.engine, rec.mode) else {
        return None;
    };
    (choice_allows(engine.unwrap_or(project.file.engine), e)
        && mode_allowed(project.file.network, m))
    .then_some((e, m))
}

/// The warm path: the engine and mode recorded, if the file still allows
/// them, and the record, /proc and the probes agree that every service is
/// up. No engine call, no lock: `None` when any of it does not hold.
pub async fn warm_report(
    project: &Project,
    opts: &Options,
    keys: &crate::stack::Keys,
) -> Result<Option<Report>> {
    let start = Instant::now();
    let names = selection(project, &opts.services)?;
    let rec = record::load(&project.state_dir);
    let Some((engine, mode)) = recorded(project, &rec, opts.engine) else {
        return Ok(None);
    };
    let Ok(resolved) = resolve_in(project, &names, mode, &keys.secrets, &keys.key) else {
        return Ok(None);
    };
    if !warm(&rec, &resolved).await {
        return Ok(None);
    }
    Ok(Some(Report {
        project: project.name.clone(),
        warm: true,
        engine,
        mode,
        services: resolved
            .iter()
            .map(|r| ServiceReport {
                name: r.service.clone(),
                container: r.container.clone(),
                action: Action::Kept,
                ready: true,
                ready_ms: Some(0),
                ports: r.ports.clone(),
            })
            .collect(),
        elapsed_ms: millis(start),
        failures: Vec::new(),
    }))
}

/// Runs `up`.
pub async fn run(ctx: &Ctx<'_>, project: &Project, opts: &Options) -> Result<Report> {
    let start = Instant::now();
    fs_err::create_dir_all(&project.state_dir)?;
    let _lock = crate::fsx::Lock::acquire(
        &project.state_dir.join("up.lock"),
        opts.lock_timeout,
        &format!("bringing up {}", project.name),
    )
    .await?;
    let keys = crate::stack::keys(project)?;
    if let Some(mut r) = warm_report(project, opts, &keys).await? {
        r.elapsed_ms = millis(start);
        return Ok(r);
    }
    let names = selection(project, &opts.services)?;
    let (secrets, key) = (&keys.secrets, &keys.key);
    let file = &project.file;
    let engine_choice = opts.engine.unwrap_or(file.engine);
    let mut rec = record::load(&project.state_dir);

    let chosen = crate::stack::choose::engine(
        ctx.facts,
        ctx.env,
        engine_choice,
        opts.lock_timeout,
        true,
        rec.engine,
    )
    .await?;
    let mode = crate::stack::choose::mode(ctx.facts, ctx.env, &chosen.client, file.network).await?;
    crate::log::info(|| format!("engine {}: {}", chosen.client.engine, chosen.why));
    crate::log::info(|| format!("network {}: {}", mode.mode, mode.why));
    let resolved = resolve_in(project, &names, mode.mode, secrets, key)?;
    if rec.engine.is_some_and(|e| e != chosen.client.engine) {
        crate::log::say(&format!(
            "this stack ran on {} before; it now runs on {} (`podstack down --engine {}` removes what is left there)",
            rec.engine.map_or_else(String::new, |e| e.to_string()),
            chosen.client.engine,
            rec.engine.map_or_else(String::new, |e| e.to_string()),
        ));
        rec.services.clear();
    }
    rec.engine = Some(chosen.client.engine);
    rec.mode = Some(mode.mode);
    // --timeout bounds every service's own deadline, so a stack that is
    // not ready in time still gets its one-screen report.
    let deadline = opts.timeout.map(|t| start + t);
    let ctx = Engaged {
        client: &chosen.client,
        mode: mode.mode,
    };
    cold(&ctx, project, &resolved, &mut rec, start, deadline).await
}

/// `podstack prepare`: the engine chosen (podman configured, a Docker
/// daemon started, as `up` would) and every image of the stack made
/// (built or pulled), so that a later `up` (a hook's) neither builds nor
/// pulls. Starts no container. Returns the engine and each image with what
/// was done to it.
pub async fn prepare(
    ctx: &Ctx<'_>,
    project: &Project,
    opts: &Options,
) -> Result<(Engine, Vec<(String, &'static str)>)> {
    let start = Instant::now();
    let rec = record::load(&project.state_dir);
    let chosen = crate::stack::choose::engine(
        ctx.facts,
        ctx.env,
        opts.engine.unwrap_or(project.file.engine),
        opts.lock_timeout,
        true,
        rec.engine,
    )
    .await?;
    let mode = crate::stack::choose::mode(ctx.facts, ctx.env, &chosen.client, project.file.network)
        .await?;
    crate::log::info(|| format!("network {}: {}", mode.mode, mode.why));
    let here = chosen.client.image_names().await.unwrap_or_default();
    let dir = &stack_dir(project);
    let mut done = Vec::new();
    for s in &project.file.services {
        if done.iter().any(|(i, _): &(String, &str)| i == &s.image) {
            continue;
        }
        let what = if here.contains(&s.image) || chosen.client.image_exists(&s.image).await? {
            "present"
        } else {
            ensure_image(
                &chosen.client,
                &s.image,
                s.build.as_deref().map(|b| (b, dir.as_path())),
                &s.name,
                start,
            )
            .await?;
            if s.build.is_some() { "built" } else { "pulled" }
        };
        done.push((s.image.clone(), what));
    }
    Ok((chosen.client.engine, done))
}

/// Whether an engine setting admits `engine`.
fn choice_allows(choice: EngineChoice, engine: Engine) -> bool {
    match choice {
        EngineChoice::Auto => true,
        EngineChoice::Podman => engine == Engine::Podman,
        EngineChoice::Docker => engine == Engine::Docker,
    }
}

/// Whether a network setting admits `mode`.
fn mode_allowed(choice: crate::stack::file::NetworkChoice, mode: Mode) -> bool {
    use crate::stack::file::NetworkChoice;
    match choice {
        NetworkChoice::Auto => true,
        NetworkChoice::Host => mode == Mode::Host,
        NetworkChoice::Isolated => mode == Mode::Isolated,
    }
}

/// The engine chosen for a cold `up`, and the mode.
struct Engaged<'a> {
    client: &'a Client,
    mode: Mode,
}

/// Makes every network the services join, or adopts it when it carries this
/// stack's labels; a network of the same name that is not this stack's is
/// left alone and refused.
async fn ensure_networks(
    client: &Client,
    project: &Project,
    resolved: &[Resolved],
    start: Instant,
) -> Result<()> {
    let mut wanted: Vec<String> = Vec::new();
    for r in resolved {
        if let NetworkMode::Networks(nets) = &r.spec.network {
            for n in nets {
                if !wanted.contains(n) {
                    wanted.push(n.clone());
                }
            }
        }
    }
    let keys: BTreeMap<String, String> = crate::stack::net::networks(&project.name, &project.file)
        .into_iter()
        .map(|(k, n)| (n, k))
        .collect();
    // A stack has a few networks: one look-up each, in turn.
    for name in &wanted {
        match client.network_labels(name).await? {
            Some(l) if l.get(LABEL_PROJECT) == Some(&project.name) => {}
            Some(_) => bail!(
                "a network named {name} exists and was not made by podstack for this stack (its labels do not say project {}); podstack will not touch it: remove it ({} network rm {name}) or give the network another name in {}",
                project.name,
                client.engine,
                project.file.path.display()
            ),
            None => {
                let labels: BTreeMap<String, String> = [
                    (LABEL_PROJECT.to_string(), project.name.clone()),
                    (
                        LABEL_NETWORK.to_string(),
                        keys.get(name).cloned().unwrap_or_default(),
                    ),
                ]
                .into_iter()
                .collect();
                client
                    .network_create(name, &labels)
                    .await
                    .with_context(|| format!("cannot make network {name}"))?;
                crate::stack::progress::say(start, name, "network made");
            }
        }
    }
    if client.engine == Engine::Podman && wanted.len() > 1 && nix::unistd::geteuid().is_root() {
        let mut bridges = Vec::new();
        for name in &wanted {
            bridges.push(client.network_bridge(name).await?);
        }
        if let Err(e) = crate::stack::firewall::ensure(&project.name, &bridges).await {
            crate::log::say(&format!(
                "cannot add podstack's isolation rules ({e:#}): the networks are isolated only by netavark's own rule, which netavark 1.4 drops whenever any container on an isolated network stops"
            ));
        }
    }
    Ok(())
}

/// Removes this stack's networks that its file no longer has in this mode
/// (all of them in host mode; a renamed one), once nothing uses them; one
/// still in use stays, to be removed by a later `up` or `down`.
async fn drop_stale_networks(client: &Client, project: &Project, mode: Mode) {
    let keep: Vec<String> = match mode {
        Mode::Host => Vec::new(),
        Mode::Isolated => crate::stack::net::networks(&project.name, &project.file)
            .into_iter()
            .map(|(_, n)| n)
            .collect(),
    };
    let Ok(ours) = client.networks_labelled(LABEL_PROJECT, &project.name).await else {
        return;
    };
    for (id, name) in ours.into_iter().filter(|(_, n)| !keep.contains(n)) {
        if client.containers_on(&name).await.is_empty() {
            match client.network_remove(std::slice::from_ref(&id)).await {
                Ok(()) => crate::log::info(|| {
                    format!(
                        "removed network {name}: no longer in {}",
                        project.file.path.display()
                    )
                }),
                Err(e) => crate::log::info(|| format!("network {name} stays: {e:#}")),
            }
        }
    }
}

/// Label: the key of a network in the stack file.
pub const LABEL_NETWORK: &str = "io.podstack.network";

/// Whether the record, /proc and a light probe agree that every service is
/// up with its current definition. No engine call.
async fn warm(rec: &Record, resolved: &[Resolved]) -> bool {
    for r in resolved {
        let Some(s) = rec.services.get(&r.service) else {
            return false;
        };
        // A job that completed has no process left; a service that never
        // got ready is not up, whatever its container does now.
        let done = r.job && s.pid == 0 && s.ready_at != 0;
        if s.hash != r.hash || s.ready_at == 0 || !(done || record::alive(s)) {
            return false;
        }
    }
    for r in resolved {
        if let Some(p) = &r.ready
            && probe::check(p, true, None).await != Verdict::Ready
        {
            return false;
        }
    }
    true
}

/// The decision for one service, from what the engine has.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Plan {
    Keep(String),
    Restart(String),
    Recreate(String),
    Create,
}

/// Decides per service from the engine's list (pure).
fn decide(
    engine: Engine,
    project: &str,
    resolved: &[Resolved],
    existing: &[Existing],
) -> Result<BTreeMap<String, Plan>> {
    let mut out = BTreeMap::new();
    for r in resolved {
        let found = existing.iter().find(|e| e.name == r.container);
        let plan = match found {
            None => Plan::Create,
            Some(e) => {
                let ours = e.labels.get(LABEL_PROJECT).map(String::as_str) == Some(project)
                    && e.labels.get(LABEL_SERVICE) == Some(&r.service);
                if !ours {
                    bail!(
                        "a container named {} exists and was not made by podstack for this stack (its labels do not say project {project}, service {}); podstack will not touch it: remove or rename it ({engine} rm -f {}), or pick another project name with -p",
                        r.container,
                        r.service,
                        r.container
                    );
                }
                match (e.labels.get(LABEL_HASH) == Some(&r.hash), e.state.as_str()) {
                    (true, "running") => Plan::Keep(e.id.clone()),
                    (true, _) => Plan::Restart(e.id.clone()),
                    (false, _) => Plan::Recreate(e.id.clone()),
                }
            }
        };
        out.insert(r.service.clone(), plan);
    }
    Ok(out)
}

/// A service's progress, shared with the services that wait for it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Status {
    Pending,
    /// Its container runs (probe not passed yet).
    Started,
    Ready,
    Failed,
}

async fn cold(
    ctx: &Engaged<'_>,
    project: &Project,
    resolved: &[Resolved],
    rec: &mut Record,
    start: Instant,
    deadline: Option<Instant>,
) -> Result<Report> {
    // What exists and which images are here: two calls, at once.
    let (existing, images_here) = tokio::join!(ctx.client.list(), ctx.client.image_names());
    let (existing, images_here) = (existing?, images_here.unwrap_or_default());
    let plans = decide(ctx.client.engine, &project.name, resolved, &existing)?;
    let names: Vec<String> = resolved.iter().map(|r| r.service.clone()).collect();
    crate::stack::progress::begin(start, &names);

    // Ports: every port a service is about to take must be free, or held by
    // that service's own running container.
    let mut busy = Vec::new();
    for r in resolved {
        let own_running = existing
            .iter()
            .any(|e| e.name == r.container && e.state == "running");
        if matches!(plans[&r.service], Plan::Keep(_)) || own_running {
            continue;
        }
        for h in ports::holders(&r.ports) {
            busy.push(format!("{}: {h}", r.service));
        }
    }
    if !busy.is_empty() {
        bail!(
            "{}; nothing was started: stop that process, or give the service other ports in {}",
            busy.join("; "),
            project.file.path.display()
        );
    }

    if ctx.mode == Mode::Isolated {
        ensure_networks(ctx.client, project, resolved, start).await?;
    }

    // At most this many engine calls at once: a stack of a thousand
    // services must not start a thousand engine processes together.
    let slots = Arc::new(tokio::sync::Semaphore::new(8));

    // Images, each once, for the containers to be made.
    let mut images: Vec<(&str, Option<&str>, &str)> = Vec::new();
    for r in resolved {
        if matches!(plans[&r.service], Plan::Create | Plan::Recreate(_))
            && !images.iter().any(|(i, _, _)| *i == r.image)
        {
            images.push((&r.image, r.build.as_deref(), &r.service));
        }
    }
    let mut image_jobs = tokio::task::JoinSet::new();
    for (image, build, service) in images {
        if images_here.contains(image) {
            continue;
        }
        let engine = ctx.client.clone();
        let (image, build, service) = (
            image.to_string(),
            build.map(str::to_string),
            service.to_string(),
        );
        let slots = slots.clone();
        let dir = stack_dir(project);
        image_jobs.spawn(async move {
            let _slot = slots.acquire_owned().await;
            ensure_image(
                &engine,
                &image,
                build.as_deref().map(|b| (b, dir.as_path())),
                &service,
                start,
            )
            .await
        });
    }
    let images_made = async {
        while let Some(r) = image_jobs.join_next().await {
            r.context("an image job failed")??;
        }
        anyhow::Ok(())
    };
    match deadline {
        Some(d) => tokio::time::timeout_at(d, images_made)
            .await
            .map_err(|_| {
                anyhow::anyhow!("the images were not made within --timeout; nothing was started")
            })??,
        None => images_made.await?,
    }

    // Containers: old definitions out, new ones made, all at once.
    let stale: Vec<String> = plans
        .values()
        .filter_map(|p| match p {
            Plan::Recreate(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    ctx.client.remove(&stale).await?;
    // Named volumes are made here, labelled, unless they exist.
    let mut volumes: Vec<String> = Vec::new();
    for r in resolved {
        for v in crate::stack::resolve::named_volumes(&r.spec.volumes) {
            if !volumes.contains(&v) {
                volumes.push(v);
            }
        }
    }
    ctx.client
        .ensure_volumes(&volumes, &[(LABEL_PROJECT, project.name.as_str())])
        .await?;
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut creating = tokio::task::JoinSet::new();
    for r in resolved {
        match &plans[&r.service] {
            Plan::Keep(id) | Plan::Restart(id) => {
                ids.insert(r.service.clone(), id.clone());
            }
            Plan::Create | Plan::Recreate(_) => {
                let engine = ctx.client.clone();
                let mut r = r.clone();
                // A service that waits for nothing is created and started in
                // one engine call; the others are created now, started later.
                r.spec.detach = r.depends_on.is_empty();
                let slots = slots.clone();
                creating.spawn(async move {
                    let _slot = slots.acquire_owned().await;
                    let id = engine.create(&r.spec).await;
                    (r, id)
                });
            }
        }
    }
    let mut started_early: BTreeSet<String> = BTreeSet::new();
    while let Some(done) = creating.join_next().await {
        let (r, id) = done.context("a create job failed")?;
        match id {
            Ok(id) => {
                ids.insert(r.service.clone(), id);
                if r.spec.detach {
                    started_early.insert(r.service.clone());
                    progress(start, &r.service, "started");
                } else {
                    progress(start, &r.service, "created");
                }
            }
            // It exists but would not start: its own start below fails again
            // and reports its state and logs.
            Err(e) if r.spec.detach && ctx.client.state(&r.container).await.is_ok() => {
                crate::log::info(|| format!("{}: {e:#}", r.service));
                ids.insert(r.service.clone(), r.container.clone());
            }
            Err(e) => {
                return Err(e.context(format!("cannot create the container of {}", r.service)));
            }
        }
    }

    // Start each service once its dependencies are ready.
    let mut channels: BTreeMap<String, (watch::Sender<Status>, watch::Receiver<Status>)> =
        BTreeMap::new();
    for r in resolved {
        channels.insert(r.service.clone(), watch::channel(Status::Pending));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for r in resolved {
        let deps: Vec<(String, watch::Receiver<Status>)> = r
            .depends_on
            .iter()
            .filter_map(|d| channels.get(d).map(|(_, rx)| (d.clone(), rx.clone())))
            .collect();
        let tx = channels[&r.service].0.clone();
        let engine = ctx.client.clone();
        let r = Arc::new(r.clone());
        let id = ids[&r.service].clone();
        let plan = plans[&r.service].clone();
        let started = started_early.contains(&r.service);
        let slots = slots.clone();
        tasks.spawn(async move {
            let job = Job {
                r: &r,
                id: &id,
                plan: &plan,
                started,
                deadline,
            };
            let out = bring_up(&engine, &job, deps, &tx, start, &slots).await;
            let _ = tx.send(if out.is_ok() {
                Status::Ready
            } else {
                Status::Failed
            });
            (r, id, plan, out)
        });
    }
    drop(channels);
    let mut services = Vec::new();
    let mut failures: Vec<Failure> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (r, id, plan, out) = done.context("a service task failed")?;
        let action = match (&plan, &out) {
            (_, Err(Outcome::Skipped)) => Action::Skipped,
            (Plan::Keep(_), _) => Action::Kept,
            (Plan::Restart(_), _) => Action::Restarted,
            (Plan::Recreate(_), _) => Action::Recreated,
            (Plan::Create, _) => Action::Created,
        };
        match out {
            Ok(started) => {
                rec.services.insert(r.service.clone(), started);
                services.push(ServiceReport {
                    name: r.service.clone(),
                    container: r.container.clone(),
                    action,
                    ready: true,
                    ready_ms: Some(millis(start)),
                    ports: r.ports.clone(),
                });
            }
            Err(o) => {
                // Kept in the record with no process: `status` then says it
                // stopped (not that it never started), and the next `up`
                // cannot take the warm path.
                let pid = match &o {
                    Outcome::Failed(_, pid) => *pid,
                    Outcome::Skipped => 0,
                };
                if matches!(o, Outcome::Skipped) {
                    rec.services.remove(&r.service);
                } else {
                    rec.services.insert(
                        r.service.clone(),
                        Started {
                            id: id.clone(),
                            pid,
                            start_time: record::start_time(pid).unwrap_or(0),
                            hash: r.hash.clone(),
                            ready_at: 0,
                        },
                    );
                }
                if let Outcome::Failed(f, _) = o {
                    failures.push(*f);
                }
                services.push(ServiceReport {
                    name: r.service.clone(),
                    container: r.container.clone(),
                    action,
                    ready: false,
                    ready_ms: None,
                    ports: r.ports.clone(),
                });
            }
        }
    }
    let order: Vec<&str> = resolved.iter().map(|r| r.service.as_str()).collect();
    services.sort_by_key(|s| order.iter().position(|n| *n == s.name));
    crate::stack::progress::end();
    drop_stale_networks(ctx.client, project, ctx.mode).await;
    record::save(&project.state_dir, rec)?;
    Ok(Report {
        project: project.name.clone(),
        warm: false,
        engine: ctx.client.engine,
        mode: ctx.mode,
        services,
        elapsed_ms: millis(start),
        failures,
    })
}

/// How a service task ended when it did not get ready.
enum Outcome {
    Skipped,
    /// The failure, and the container's main pid when it still runs (0 if not).
    Failed(Box<Failure>, u32),
}

/// One service to bring up: its container and what was decided for it.
struct Job<'a> {
    r: &'a Resolved,
    id: &'a str,
    plan: &'a Plan,
    /// Already started by `ENGINE run -d`.
    started: bool,
    /// `up --timeout`'s deadline, on top of the service's own.
    deadline: Option<Instant>,
}

async fn bring_up(
    engine: &Client,
    job: &Job<'_>,
    deps: Vec<(String, watch::Receiver<Status>)>,
    tx: &watch::Sender<Status>,
    start: Instant,
    slots: &tokio::sync::Semaphore,
) -> std::result::Result<Started, Outcome> {
    let Job {
        r,
        id,
        plan,
        started,
        deadline: overall,
    } = *job;
    for (name, mut rx) in deps {
        let start_only = r.start_only.contains(&name);
        let ready = rx
            .wait_for(|s| *s != Status::Pending && (start_only || *s != Status::Started))
            .await
            .is_ok_and(|s| *s == Status::Ready || (start_only && *s == Status::Started));
        if !ready {
            progress(
                start,
                &r.service,
                &format!("not started: {name} is not ready"),
            );
            return Err(Outcome::Skipped);
        }
    }
    let fail = |reason: String, probe_error: Option<String>| Failure {
        service: r.service.clone(),
        reason,
        probe_error,
        state: None,
        exit_code: None,
        logs: Vec::new(),
    };
    if !matches!(plan, Plan::Keep(_)) && !started {
        let started = {
            let _slot = slots.acquire().await;
            engine.start(id).await
        };
        if let Err(e) = started {
            let mut f = fail(format!("{} could not start it: {e:#}", engine.engine), None);
            fill_state(engine, id, &mut f).await;
            return Err(Outcome::Failed(Box::new(f), 0));
        }
        progress(start, &r.service, "started");
    }
    let _ = tx.send(Status::Started);
    let own = Instant::now() + r.timeout;
    let deadline = overall.map_or(own, |o| o.min(own));
    let mut retries = r.retries;
    let mut pause = Duration::from_millis(10);
    let mut pid = 0u32;
    let mut last_error = None;
    loop {
        let probe = async {
            match &r.ready {
                // A probe that hangs (a server that never answers) ends at
                // the service's deadline, not its own.
                // The last real answer is kept as the error to report.
                Some(p) => tokio::time::timeout_at(deadline, probe::check(p, false, Some(engine)))
                    .await
                    .unwrap_or_else(|_| {
                        Verdict::NotYet(
                            last_error
                                .clone()
                                .unwrap_or_else(|| "no answer before the deadline".into()),
                        )
                    }),
                // A job is ready when it has exited 0 (seen below).
                None if r.job => Verdict::NotYet("still running".into()),
                None => Verdict::Ready,
            }
        };
        // The container's pid comes from the engine; its first probe does not
        // wait for that answer (both run at once).
        let (state, verdict) = if pid == 0 || record::start_time(pid).is_none() {
            let (state, verdict) = tokio::join!(engine.state(id), probe);
            (Some(state), verdict)
        } else {
            (None, probe.await)
        };
        if let Some(state) = state {
            let (p, status, code) = match state {
                Ok(s) => s,
                Err(e) => {
                    return Err(Outcome::Failed(
                        Box::new(fail(format!("{e:#}"), last_error)),
                        0,
                    ));
                }
            };
            if status != "running" && r.job && code == 0 && status != "created" {
                progress(start, &r.service, "completed");
                return Ok(Started {
                    id: id.to_string(),
                    pid: 0,
                    start_time: 0,
                    hash: r.hash.clone(),
                    ready_at: record::now(),
                });
            }
            if status != "running" {
                if retries > 0 {
                    retries -= 1;
                    progress(
                        start,
                        &r.service,
                        &format!(
                            "exited ({code}) before it was ready; restarting ({retries} retries left)"
                        ),
                    );
                    let _ = engine.start(id).await;
                    pid = 0;
                    continue;
                }
                let mut f = fail(
                    format!("its container {status} (exit code {code}) before it was ready"),
                    last_error,
                );
                f.state = Some(status);
                f.exit_code = Some(code);
                f.logs = engine
                    .logs(id, 30)
                    .await
                    .lines()
                    .map(str::to_string)
                    .collect();
                return Err(Outcome::Failed(Box::new(f), 0));
            }
            pid = p;
        }
        match verdict {
            Verdict::Ready => {
                let start_time = record::start_time(pid).unwrap_or(0);
                progress(start, &r.service, "ready");
                return Ok(Started {
                    id: id.to_string(),
                    pid,
                    start_time,
                    hash: r.hash.clone(),
                    ready_at: record::now(),
                });
            }
            Verdict::Fatal(e) => {
                let mut f = fail(e.clone(), Some(e));
                fill_state(engine, id, &mut f).await;
                return Err(Outcome::Failed(Box::new(f), pid));
            }
            Verdict::NotYet(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            let why = if deadline < own {
                "not ready within up's --timeout".to_string()
            } else {
                format!(
                    "not ready within its timeout of {} s",
                    r.timeout.as_secs_f64()
                )
            };
            let mut f = fail(why, last_error);
            fill_state(engine, id, &mut f).await;
            return Err(Outcome::Failed(Box::new(f), pid));
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 3 / 2).min(Duration::from_millis(50));
    }
}

async fn fill_state(engine: &Client, id: &str, f: &mut Failure) {
    if let Ok((_, status, code)) = engine.state(id).await {
        f.exit_code = (status != "running").then_some(code);
        f.state = Some(status);
    }
    f.logs = engine
        .logs(id, 30)
        .await
        .lines()
        .map(str::to_string)
        .collect();
}

/// Makes `image` exist: nothing when it does, its build command when it has
/// one, else a pull retried with backoff while the error may pass.
/// Makes every service's image exist (its build command, else a pull), one
/// image at a time: for `kube --play`, whose engine would otherwise try a
/// registry for an image the stack builds.
pub async fn ensure_images(client: &Client, project: &Project) -> Result<()> {
    let dir = stack_dir(project);
    let start = Instant::now();
    let mut done: Vec<&str> = Vec::new();
    for s in &project.file.services {
        if done.contains(&s.image.as_str()) {
            continue;
        }
        ensure_image(
            client,
            &s.image,
            s.build.as_deref().map(|b| (b, dir.as_path())),
            &s.name,
            start,
        )
        .await?;
        done.push(&s.image);
    }
    Ok(())
}

/// The stack file's folder: build commands and relative paths start there.
fn stack_dir(project: &Project) -> std::path::PathBuf {
    project
        .file
        .path
        .parent()
        .map_or_else(|| ".".into(), Path::to_path_buf)
}

async fn ensure_image(
    engine: &Client,
    image: &str,
    build: Option<(&str, &Path)>,
    service: &str,
    start: Instant,
) -> Result<()> {
    if engine.image_exists(image).await? {
        return Ok(());
    }
    if let Some((cmd, dir)) = build {
        progress(
            start,
            service,
            &format!("image {image} is missing; building it with `{cmd}`"),
        );
        // The build command runs in the stack file's folder and learns
        // which engine to build for.
        let out = crate::proc::Cmd::new("/bin/sh")
            .args(["-c", "cd -- \"$1\" || exit; eval \"$2\"", "podstack-build"])
            .arg(dir)
            .arg(cmd)
            .env("PODSTACK_ENGINE", engine.engine.to_string())
            .timeout(Duration::from_secs(30 * 60))
            .run()
            .await?;
        if !out.success() {
            bail!(
                "{service}: the build command `{cmd}` failed ({}); its last lines:\n{}",
                out.ending(),
                out.tail(30)
            );
        }
        if !engine.image_exists(image).await? {
            bail!(
                "{service}: the build command `{cmd}` succeeded but made no image {image}: make it tag the image it builds as {image}"
            );
        }
        progress(start, service, &format!("built {image}"));
        return Ok(());
    }
    let mut pause = Duration::from_millis(500);
    for attempt in 1..=8 {
        progress(
            start,
            service,
            &format!("pulling {image} (attempt {attempt})"),
        );
        match engine.pull(image, Duration::from_secs(10 * 60)).await {
            Ok(()) => return Ok(()),
            Err((PullError::Permanent, e)) => {
                bail!("{service}: cannot pull {image}: {e}; a retry would not help")
            }
            Err((PullError::Transient, e)) if attempt < 8 => {
                progress(
                    start,
                    service,
                    &format!(
                        "pull failed ({e}); retrying in {:.1} s",
                        pause.as_secs_f64()
                    ),
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(8));
            }
            Err((PullError::Transient, e)) => {
                bail!("{service}: cannot pull {image} after {attempt} attempts: {e}")
            }
        }
    }
    unreachable!("the loop returns")
}

fn millis(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::file;
    use std::path::Path;

    fn resolved() -> Vec<Resolved> {
        let f = file::parse(Path::new("p.toml"), file::STARTER).unwrap();
        let secrets: BTreeMap<String, crate::engine::Secret> =
            [("pg_password".to_string(), crate::engine::Secret::new("x"))]
                .into_iter()
                .collect();
        let scope = Scope::new("props", &f, Mode::Host, &secrets, "k");
        f.services
            .iter()
            .map(|s| resolve::resolve(&scope, s).unwrap())
            .collect()
    }

    fn existing(r: &Resolved, hash: &str, state: &str, project: &str) -> Existing {
        Existing {
            id: format!("id-{}", r.service),
            name: r.container.clone(),
            state: state.into(),
            labels: [
                (LABEL_PROJECT.to_string(), project.to_string()),
                (LABEL_SERVICE.to_string(), r.service.clone()),
                (LABEL_HASH.to_string(), hash.to_string()),
            ]
            .into_iter()
            .collect(),
            pid: None,
            exit_code: None,
        }
    }

    #[test]
    fn decisions_follow_labels_hash_and_state() {
        let r = resolved();
        let ex = vec![
            existing(&r[0], &r[0].hash, "running", "props"),
            existing(&r[1], "old", "running", "props"),
        ];
        let plans = decide(Engine::Podman, "props", &r, &ex).unwrap();
        assert_eq!(plans["postgres"], Plan::Keep("id-postgres".into()));
        assert_eq!(plans["registry"], Plan::Recreate("id-registry".into()));
        assert_eq!(plans["registry-proxy"], Plan::Create);
        let stopped = vec![existing(&r[0], &r[0].hash, "exited", "props")];
        assert_eq!(
            decide(Engine::Podman, "props", &r, &stopped).unwrap()["postgres"],
            Plan::Restart("id-postgres".into())
        );
        let foreign = vec![existing(&r[0], &r[0].hash, "running", "someone-else")];
        let e = decide(Engine::Podman, "props", &r, &foreign)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("props-postgres exists and was not made by podstack"),
            "{e}"
        );
    }
}
