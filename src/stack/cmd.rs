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
use crate::stack::choose;
use crate::stack::client::Client;
use crate::stack::file::EngineChoice;
use crate::stack::net::Mode;
use crate::stack::probe::{self, Verdict};
use crate::stack::resolve::{LABEL_PROJECT, Scope};
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

/// The engines to look at for a command that changes nothing on the host
/// but the stack's own containers (`down`, `logs`): the one recorded by the
/// last `up`, else every engine the setting admits that is there.
fn engines_for(
    env: &Env,
    facts: &Facts,
    project: &Project,
    flag: Option<EngineChoice>,
) -> Result<Vec<Client>> {
    let choice = flag.unwrap_or(project.file.engine);
    let rec = record::load(&project.state_dir);
    let all = choose::engine_for_cleanup(facts, env, choice);
    let recorded: Vec<Client> = all
        .iter()
        .filter(|c| rec.engine == Some(c.engine))
        .cloned()
        .collect();
    let out = if recorded.is_empty() { all } else { recorded };
    if out.is_empty() {
        bail!(
            "no engine to ask ({choice:?} asked for): {}",
            match choice {
                EngineChoice::Podman => "podman is not installed".to_string(),
                _ => format!(
                    "no Docker daemon answers on {}{}",
                    choose::docker_url(env).unwrap_or_else(|e| e.to_string()),
                    if choice == EngineChoice::Auto {
                        " and podman is not installed"
                    } else {
                        ""
                    }
                ),
            }
        );
    }
    Ok(out)
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
    // In this folder podstack.toml now wins over a compose file.
    if let Some(c) = crate::compose::FILE_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
    {
        crate::log::say(&format!(
            "{} is here too and podstack.toml now wins over it: `podstack import --force` writes podstack.toml from it instead",
            c.display()
        ));
    }
    Ok(Outcome::Done)
}

/// `podstack import`: a compose file as podstack.toml text.
pub fn import(
    env: &Env,
    compose: Option<&Path>,
    output: Option<&Path>,
    force: bool,
    project: Option<&str>,
) -> Result<Outcome> {
    let path = match compose {
        Some(p) => env.absolute(p),
        None => {
            let cwd = env.cwd().context("cannot tell the current folder")?;
            stack::nearest(&cwd, crate::compose::FILE_NAMES).with_context(|| {
                    format!(
                        "no compose file ({}) in {} or any folder above: name one, `podstack import FILE`",
                        crate::compose::FILE_NAMES.join(", "),
                        cwd.display()
                    )
                })?
        }
    };
    let text = stack::read_stack_text(&path)?;
    let out = crate::compose::to_toml(env, &path, &text, &stack::folder_name(&path), project)?;
    let target = match output {
        Some(o) if o == Path::new("-") => None,
        Some(o) => Some(env.absolute(o)),
        None => Some(crate::compose::default_output(&path)),
    };
    // The text must be a stack file podstack accepts, checked as the file
    // it becomes.
    let check_path = target
        .clone()
        .unwrap_or_else(|| crate::compose::default_output(&path));
    crate::compose::check(&path, &check_path, &out)?;
    for n in &out.notes {
        crate::log::say(&format!("{}: {n}", path.display()));
    }
    match target {
        None => report::text(&out.toml)?,
        Some(t) => {
            crate::fsx::write_output(&t, out.toml.as_bytes(), false, force, Some(&path))?;
            report::text(&format!(
                "wrote {} from {}: podstack up runs it (the compose file still runs as it is with podstack up -f {})\n",
                t.display(),
                path.display(),
                path.display()
            ))?;
        }
    }
    Ok(Outcome::Done)
}

/// What `podstack kube` is asked to do.
pub struct KubeArgs<'a> {
    /// The shape.
    pub mode: stack::kube::KubeMode,
    /// Where to write the YAML.
    pub output: Option<&'a Path>,
    /// Write the Secret's values.
    pub inline_secrets: bool,
    /// Replace an existing output file.
    pub force: bool,
    /// Run the Pod with `podman kube play` and wait until it is ready.
    pub play: bool,
    /// Remove what `--play` made (`podman kube down`).
    pub down: bool,
    /// How long `--play` waits for the services.
    pub timeout: Duration,
    /// How long to wait for another podstack's configure.
    pub lock_timeout: Duration,
}

/// `podstack kube`.
pub async fn kube(
    env: &Env,
    facts: &Facts,
    project: &Project,
    a: &KubeArgs<'_>,
) -> Result<Outcome> {
    use stack::kube::{KubeMode, render};
    let keys = stack::keys(project)?;
    if !a.play && !a.down {
        let r = render(project, &keys.secrets, &keys.key, a.mode, a.inline_secrets)?;
        write_kube(env, project, a, &r)?;
        return Ok(Outcome::Done);
    }
    if a.mode != KubeMode::Pod {
        bail!("--play and --down run the pod shape with podman kube play: use --mode pod");
    }
    if facts.podman.is_none() {
        bail!("--play runs podman kube play, and podman is not installed");
    }
    // podman as `up` would run it here (runtime, ulimits, storage).
    let client = choose::engine(
        facts,
        env,
        EngineChoice::Podman,
        a.lock_timeout,
        false,
        None,
    )
    .await?
    .client;
    fs_err::create_dir_all(&project.state_dir)?;
    let played = project.state_dir.join("kube-pod.yaml");
    let r = render(project, &keys.secrets, &keys.key, KubeMode::Pod, false)?;
    let pod_here = client.succeeds(&["pod", "exists", &r.pod]).await;
    if a.down {
        if !played.is_file() && !pod_here {
            report::text(&format!("no pod {} to remove\n", r.pod))?;
            return Ok(Outcome::Done);
        }
        if played.is_file() {
            client
                .call(
                    &["kube".as_ref(), "down".as_ref(), played.as_os_str()],
                    Duration::from_secs(120),
                )
                .await?;
        } else {
            client
                .call(&["pod", "rm", "--force", &r.pod], Duration::from_secs(120))
                .await?;
        }
        let _ = client
            .call(&["secret", "rm", &r.secret_name], Duration::from_secs(30))
            .await;
        let _ = fs_err::remove_file(&played);
        report::text(&format!(
            "removed the pod {} (its volumes stay: {})\n",
            r.pod,
            if r.claims.is_empty() {
                "none".to_string()
            } else {
                r.claims.join(", ")
            }
        ))?;
        return Ok(Outcome::Done);
    }
    // Everything that can be known to fail is checked before anything
    // changes: the pod, the stack run by `up`, the host ports, -o FILE.
    if pod_here {
        bail!(
            "the pod {} runs already: `podstack kube --down` removes it first",
            r.pod
        );
    }
    let rec = record::load(&project.state_dir);
    if rec.services.values().any(record::alive) {
        bail!(
            "the stack {} runs through `podstack up`: `podstack down` first (its containers and the Pod's would hold the same names and ports)",
            project.name
        );
    }
    for s in &project.file.services {
        for p in &s.ports {
            if std::net::TcpListener::bind(("127.0.0.1", p.host)).is_err() {
                bail!(
                    "port {} of service {} is held on this host (`ss -ltnp 'sport = :{}'` names the holder): nothing was started",
                    p.host,
                    s.name,
                    p.host
                );
            }
        }
    }
    if a.output.is_some() {
        write_kube(env, project, a, &r)?;
    }
    let start = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + a.timeout;
    tokio::time::timeout_at(deadline, up::ensure_images(&client, project))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the images were not ready within --timeout ({} s)",
                a.timeout.as_secs()
            )
        })??;
    // podman 4.3 reads a secretKeyRef from a secret made by `podman secret
    // create` holding a flat JSON map (not from a Secret document).
    if !r.secret_data.is_empty() {
        let tmp = tempfile::Builder::new()
            .prefix(".kube-secret")
            .tempfile_in(&project.state_dir)?;
        // Its values are base64, as in a Secret's `data`.
        let encoded: std::collections::BTreeMap<&str, String> = r
            .secret_data
            .iter()
            .map(|(k, v)| (k.as_str(), stack::kube::base64(v.as_bytes())))
            .collect();
        fs_err::write(tmp.path(), serde_json::to_vec(&encoded)?)?;
        let _ = client
            .call(&["secret", "rm", &r.secret_name], Duration::from_secs(30))
            .await;
        client
            .call(
                &[
                    "secret".as_ref(),
                    "create".as_ref(),
                    r.secret_name.as_ref(),
                    tmp.path().as_os_str(),
                ],
                Duration::from_secs(30),
            )
            .await?;
    }
    // podman 4.3 refuses a claim whose volume exists: those are left out
    // (the volume is used as it is).
    let mut existing = Vec::new();
    for claim in &r.claims {
        if client.succeeds(&["volume", "exists", claim]).await {
            existing.push(claim.clone());
        }
    }
    crate::fsx::write_atomic(&played, r.yaml_without(&existing).as_bytes(), 0o600)?;
    let out = client
        .call(
            &["kube".as_ref(), "play".as_ref(), played.as_os_str()],
            Duration::from_secs(600),
        )
        .await
        .context("podman kube play failed (`podstack kube --down` removes what it made)")?;
    crate::log::info(|| out.stdout.trim().to_string());
    // podstack's own probes, from the host on the Pod's published ports,
    // and in the Pod's containers (podman names them POD-CONTAINER).
    let scope = Scope::new(
        &project.name,
        &project.file,
        Mode::Isolated,
        &keys.secrets,
        &keys.key,
    );
    let mut lines = Vec::new();
    let mut all = true;
    for s in crate::stack::file::start_order(&project.file.services) {
        if s.job {
            continue;
        }
        let resolved = stack::resolve::resolve(&scope, s)?;
        let Some(mut p) = resolved.ready else {
            lines.push(format!("  {:<16} running (no probe)", s.name));
            continue;
        };
        if let stack::resolve::Probe::Container { container, .. } = &mut p {
            *container = format!(
                "{}-{}",
                r.pod,
                stack::kube::dns_name(&s.name).unwrap_or_default()
            );
        }
        let mut pause = Duration::from_millis(20);
        let verdict = loop {
            let v = tokio::time::timeout_at(deadline, probe::check(&p, false, Some(&client)))
                .await
                .unwrap_or_else(|_| Verdict::NotYet("no answer before the deadline".into()));
            if v == Verdict::Ready
                || matches!(v, Verdict::Fatal(_))
                || tokio::time::Instant::now() >= deadline
            {
                break v;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(Duration::from_millis(250));
        };
        match verdict {
            Verdict::Ready => lines.push(format!(
                "  {:<16} ready after {} ms",
                s.name,
                start.elapsed().as_millis()
            )),
            Verdict::NotYet(e) | Verdict::Fatal(e) => {
                all = false;
                lines.push(format!("  {:<16} not ready: {e}", s.name));
            }
        }
    }
    report::text(&format!(
        "podman kube play {}: pod {} {}\n{}\n",
        played.display(),
        r.pod,
        if all { "ready" } else { "NOT ready" },
        lines.join("\n")
    ))?;
    Ok(if all { Outcome::Done } else { Outcome::No })
}

/// Prints the YAML, or writes it to `-o FILE`: never over the stack file,
/// an existing file only with `--force`, 0600 when it holds secrets.
fn write_kube(
    env: &Env,
    project: &Project,
    a: &KubeArgs<'_>,
    r: &stack::kube::Rendered,
) -> Result<()> {
    match a.output {
        None => report::text(&r.yaml()),
        Some(p) if p == Path::new("-") => report::text(&r.yaml()),
        Some(p) => crate::fsx::write_output(
            &env.absolute(p),
            r.yaml().as_bytes(),
            a.inline_secrets && !r.secret_data.is_empty(),
            a.force,
            Some(&project.file.path),
        ),
    }
}

/// `podstack up`.
pub async fn up(
    env: &Env,
    facts: &Facts,
    project: &Project,
    opts: &up::Options,
    json: bool,
) -> Result<Outcome> {
    let ctx = up::Ctx { facts, env };
    let actions = env.truthy("GITHUB_ACTIONS");
    if actions {
        // Before anything could show them (a later step's log, say). On
        // stderr, which the runner reads for commands too: stdout stays the
        // report (JSON with --json).
        let secrets = stack::secrets(project)?;
        stderr(&crate::github::masks(secrets.values().map(|s| s.expose())));
    }
    let r = match up::run(&ctx, project, opts).await {
        Ok(r) => r,
        Err(e) => {
            if actions {
                stderr(&format!(
                    "::error title=podstack {}::{}\n",
                    project.name,
                    format!("{e:#}")
                        .replace('%', "%25")
                        .replace('\r', "%0D")
                        .replace('\n', "%0A")
                ));
            }
            return Err(e);
        }
    };
    ensure_api(facts, project, r.engine).await?;
    if json {
        report::json(&r)?;
    } else {
        report::text(&report::up(&r))?;
    }
    if actions {
        stderr(&crate::github::annotations(&r));
        if let Some(path) = env.abs_path("GITHUB_STEP_SUMMARY") {
            use std::io::Write;
            let mut f = fs_err::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            f.write_all(crate::github::summary(&r).as_bytes())?;
        }
    }
    Ok(Outcome::answer(r.ready()))
}

/// Writes `text` to stderr (a closed stderr is not an error).
fn stderr(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// What `down` did.
#[derive(Serialize)]
struct Down {
    project: String,
    removed: Vec<String>,
    networks_removed: Vec<String>,
    volumes_removed: Vec<String>,
    /// Named volumes of the stack that podstack did not make (external, or
    /// made before podstack labelled its own): never removed.
    volumes_kept: Vec<String>,
}

/// `podstack down`: removes the stack's containers and networks (only those
/// carrying its project label), and its named volumes when asked.
pub async fn down(
    env: &Env,
    facts: &Facts,
    project: &Project,
    engine: Option<EngineChoice>,
    volumes: bool,
    lock_timeout: Duration,
    json: bool,
) -> Result<Outcome> {
    let clients = engines_for(env, facts, project, engine)?;
    fs_err::create_dir_all(&project.state_dir)?;
    let _lock = crate::fsx::Lock::acquire(
        &project.state_dir.join("up.lock"),
        lock_timeout,
        &format!("taking down {}", project.name),
    )
    .await?;
    let mut removed = Vec::new();
    let mut nets = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    let mut vols = Vec::new();
    let mut vols_removed: Vec<String> = Vec::new();
    let mut vols_kept: Vec<String> = Vec::new();
    if volumes {
        for v in project
            .file
            .services
            .iter()
            .flat_map(|s| stack::resolve::named_volumes(&s.volumes))
        {
            if !vols.contains(&v) {
                vols.push(v);
            }
        }
    }
    for client in &clients {
        let ours: Vec<_> = client
            .list()
            .await?
            .into_iter()
            .filter(|e| e.labels.get(LABEL_PROJECT) == Some(&project.name))
            .collect();
        let ids: Vec<String> = ours.iter().map(|e| e.id.clone()).collect();
        client.remove(&ids).await?;
        removed.extend(ours.into_iter().map(|e| e.name));
        let mine = client
            .networks_labelled(LABEL_PROJECT, &project.name)
            .await?;
        if client.engine == crate::engine::Engine::Podman && nix::unistd::geteuid().is_root() {
            crate::stack::firewall::remove(&project.name).await?;
        }
        // Each network on its own: one still used by someone else's
        // container is named with that container, the rest still go.
        for (id, name) in mine {
            match client.network_remove(std::slice::from_ref(&id)).await {
                Ok(()) => nets.push(name),
                Err(e) => {
                    let users = client.containers_on(&name).await;
                    kept.push(if users.is_empty() {
                        format!("network {name}: {e:#}")
                    } else {
                        format!(
                            "network {name} is still used by {} (not this stack's): remove or disconnect it ({} network disconnect {name} CONTAINER), then podstack down again",
                            users.join(", "),
                            client.engine
                        )
                    });
                }
            }
        }
        if volumes {
            // Only the volumes podstack made for this stack; one the user
            // made, or an external one, stays.
            let made = client
                .volumes_labelled(LABEL_PROJECT, &project.name)
                .await?;
            let (gone, stay): (Vec<String>, Vec<String>) =
                vols.iter().cloned().partition(|v| made.contains(v));
            let others: Vec<String> = made.into_iter().filter(|v| !vols.contains(v)).collect();
            client.remove_volumes(&gone).await?;
            client.remove_volumes(&others).await?;
            vols_removed.extend(gone);
            vols_removed.extend(others);
            vols_kept.extend(stay);
        }
    }
    if !kept.is_empty() {
        bail!(
            "removed {} container(s) and {} network(s), but: {}",
            removed.len(),
            nets.len(),
            kept.join("; ")
        );
    }
    stack::api::stop(&project.state_dir);
    // The record goes only with the containers of the engine it names.
    let rec = record::load(&project.state_dir);
    match rec.engine {
        Some(e) if !clients.iter().any(|c| c.engine == e) => {
            if !rec.services.is_empty() {
                bail!(
                    "this stack last ran on {e}, which was not asked here (--engine, or {e} does not answer): nothing of it was removed; `podstack down --engine {e}` removes it"
                );
            }
        }
        _ => record::clear(&project.state_dir),
    }
    let d = Down {
        project: project.name.clone(),
        removed,
        networks_removed: nets,
        volumes_removed: vols_removed,
        volumes_kept: vols_kept,
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
        if !d.networks_removed.is_empty() {
            s.push_str(&format!(
                "; networks removed: {}",
                d.networks_removed.join(", ")
            ));
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
            if !d.volumes_kept.is_empty() {
                s.push_str(&format!(
                    "; volumes kept, not made by podstack (external, or made before it labelled its own): {}",
                    d.volumes_kept.join(", ")
                ));
            }
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
    /// The engine of the last `up`.
    pub engine: Option<crate::engine::Engine>,
    /// Its network mode.
    pub mode: Option<Mode>,
    /// The stack file.
    pub file: PathBuf,
    /// Every service.
    pub services: Vec<ServiceStatus>,
}

/// `podstack status`: from the record and the probes (no engine call).
pub async fn status(project: &Project, json: bool) -> Result<Outcome> {
    let rec = record::load(&project.state_dir);
    let secrets = stack::secrets(project)?;
    let key = stack::hash_key(project)?;
    // A file whose network setting no longer admits the recorded mode makes
    // every running service outdated (the next `up` recreates it).
    let mode_still_allowed = rec.mode.is_none_or(|m| match project.file.network {
        crate::stack::file::NetworkChoice::Auto => true,
        crate::stack::file::NetworkChoice::Host => m == Mode::Host,
        crate::stack::file::NetworkChoice::Isolated => m == Mode::Isolated,
    });
    // Before any up, a file that may run isolated is shown so (its port
    // pairs hold there); only `host` is shown on the host's network.
    let mode = rec.mode.unwrap_or(match project.file.network {
        crate::stack::file::NetworkChoice::Host => Mode::Host,
        _ => Mode::Isolated,
    });
    let scope = Scope::new(&project.name, &project.file, mode, &secrets, &key);
    let mut services = Vec::new();
    for s in crate::stack::file::start_order(&project.file.services) {
        let r = match stack::resolve::resolve(&scope, s) {
            Ok(r) => r,
            // A port pair that cannot hold on the host network: before any
            // `up`, nothing ran; say so rather than fail.
            Err(e) if rec.mode.is_none() => {
                services.push(ServiceStatus {
                    name: s.name.clone(),
                    container: crate::stack::net::container_name(&project.name, s),
                    state: "not started".into(),
                    ports: s.ports.iter().map(|p| p.host).collect(),
                    age_s: None,
                    error: Some(format!("{e:#}")),
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let (state, age, error) = match rec.services.get(&s.name) {
            None => ("not started".to_string(), None, None),
            Some(st) if r.job && st.pid == 0 && st.ready_at != 0 => (
                if st.hash == r.hash {
                    "completed".to_string()
                } else {
                    "outdated".to_string()
                },
                Some(record::now().saturating_sub(st.ready_at)),
                None,
            ),
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
                    Some(p) => probe::check(p, false, None).await,
                    None => Verdict::Ready,
                };
                let age = (st.ready_at != 0).then(|| record::now().saturating_sub(st.ready_at));
                match verdict {
                    Verdict::Ready if st.hash != r.hash || !mode_still_allowed => (
                        "outdated".to_string(),
                        age,
                        Some(
                            "its definition changed since it started: podstack up recreates it"
                                .to_string(),
                        ),
                    ),
                    // A probe in the container is not run here (no engine
                    // call): the last `up`'s verdict stands.
                    Verdict::Ready if st.ready_at == 0 => (
                        "running".to_string(),
                        None,
                        Some(
                            "it did not get ready at the last up: `podstack up` checks it again"
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
            ports: r.ports.clone(),
            age_s: age,
            error,
        });
    }
    let st = Status {
        project: project.name.clone(),
        engine: rec.engine,
        mode: rec.mode,
        file: project.file.path.clone(),
        services,
    };
    if json {
        report::json(&st)?;
    } else {
        report::text(&report::status(&st))?;
    }
    Ok(Outcome::answer(
        st.services
            .iter()
            .all(|s| s.state == "ready" || s.state == "completed"),
    ))
}

/// `podstack logs SERVICE`: the engine's own `logs`, its output passed through.
pub async fn logs(
    env: &Env,
    facts: &Facts,
    project: &Project,
    engine: Option<EngineChoice>,
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
    let client = engines_for(env, facts, project, engine)?.remove(0);
    let container = format!("{}-{service}", project.name);
    let mut cmd = tokio::process::Command::new(&client.path);
    cmd.args(["logs", "--tail", &tail.to_string()]);
    if follow {
        cmd.arg("--follow");
    }
    cmd.arg(&container)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let status = cmd
        .status()
        .await
        .with_context(|| format!("cannot run {} logs", client.engine))?;
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

/// One service in `config`.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceConfig {
    /// Its name.
    pub name: String,
    /// Its container.
    pub container: String,
    /// The image.
    pub image: String,
    /// The networks it joins (engine names; `host` in host mode).
    pub networks: Vec<String>,
    /// Its other names on them.
    pub aliases: Vec<String>,
    /// `IP:HOST:CONTAINER` published (isolated), or the host ports (host).
    pub ports: Vec<String>,
    /// The entrypoint, expanded, when the file replaces the image's.
    pub entrypoint: Option<Vec<String>>,
    /// The command, expanded.
    pub command: Vec<String>,
    /// Volumes.
    pub volumes: Vec<String>,
    /// The environment, expanded, secret values as `***`.
    pub env: Vec<(String, String)>,
    /// What it waits for.
    pub depends_on: Vec<String>,
    /// Further engine flags (`--user`, `--restart`, `--add-host` ...).
    pub options: Vec<String>,
    /// Ready when its container exits 0.
    pub job: bool,
}

/// The stack as it resolves on this host.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// The project.
    pub project: String,
    /// The stack file.
    pub file: PathBuf,
    /// The engine.
    pub engine: crate::engine::Engine,
    /// Why that engine.
    pub engine_why: String,
    /// The network mode.
    pub mode: Mode,
    /// Why that mode.
    pub mode_why: String,
    /// The address variables, by name.
    pub vars: std::collections::BTreeMap<String, String>,
    /// Every service, in start order.
    pub services: Vec<ServiceConfig>,
}

/// `podstack config`: chooses the engine and mode as `up` would (podman is
/// configured, a Docker daemon started, a network canary run, when `up`
/// would do so), and prints the stack resolved for them.
pub async fn config(
    env: &Env,
    facts: &Facts,
    project: &Project,
    engine: Option<EngineChoice>,
    lock_timeout: Duration,
    json: bool,
) -> Result<Outcome> {
    let choice = engine.unwrap_or(project.file.engine);
    let rec = record::load(&project.state_dir);
    let chosen = choose::engine(facts, env, choice, lock_timeout, false, rec.engine).await?;
    let mode = choose::mode(facts, env, &chosen.client, project.file.network).await?;
    let secrets = stack::secrets(project)?;
    let key = stack::hash_key(project)?;
    let scope = Scope::new(&project.name, &project.file, mode.mode, &secrets, &key);
    let mut services = Vec::new();
    for s in crate::stack::file::start_order(&project.file.services) {
        let r = stack::resolve::resolve(&scope, s)?;
        services.push(ServiceConfig {
            name: r.service.clone(),
            container: r.container.clone(),
            image: r.image.clone(),
            networks: match &r.spec.network {
                crate::engine::NetworkMode::Networks(n) => n.clone(),
                _ => vec!["host".into()],
            },
            aliases: r.spec.aliases.clone(),
            ports: if r.spec.publish.is_empty() {
                r.ports.iter().map(u16::to_string).collect()
            } else {
                r.spec.publish.clone()
            },
            entrypoint: r.spec.entrypoint.clone(),
            command: r.spec.command.clone(),
            volumes: r.spec.volumes.clone(),
            env: r
                .spec
                .env
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        crate::engine::EnvValue::Plain(p) => p.clone(),
                        crate::engine::EnvValue::Secret(_) => "***".into(),
                    };
                    (k.clone(), v)
                })
                .collect(),
            depends_on: r.depends_on.clone(),
            options: r.spec.flags.clone(),
            job: r.job,
        });
    }
    let c = Config {
        project: project.name.clone(),
        file: project.file.path.clone(),
        engine: chosen.client.engine,
        engine_why: chosen.why,
        mode: mode.mode,
        mode_why: mode.why,
        vars: scope.vars.clone(),
        services,
    };
    if json {
        report::json(&c)?;
    } else {
        report::text(&report::config(&c))?;
    }
    Ok(Outcome::Done)
}

/// The variables to export for `project`: its `[env]`, expanded for the
/// engine and mode of its last `up`, else for the ones `up` would choose
/// (no daemon is started for that).
pub async fn exports(
    env: &Env,
    facts: &Facts,
    project: &Project,
    engine: Option<EngineChoice>,
    lock_timeout: Duration,
    may_start: bool,
    keys: &stack::Keys,
) -> Result<Vec<crate::export::Var>> {
    let rec = record::load(&project.state_dir);
    let api = project.file.api_socket;
    let addresses = project.file.exports.iter().any(|(_, v)| {
        stack::file::references(v)
            .iter()
            .flatten()
            .any(|r| r.starts_with("net.") || r.starts_with("services."))
    });
    let (engine, mode) = match up::recorded(project, &rec, engine) {
        Some((e, m)) => (Some(e), m),
        // Nothing to place: no engine need be asked.
        _ if !addresses && !api => (None, Mode::Host),
        _ => {
            let choice = engine.unwrap_or(project.file.engine);
            let chosen =
                choose::engine(facts, env, choice, lock_timeout, may_start, rec.engine).await?;
            let mode = choose::mode(facts, env, &chosen.client, project.file.network)
                .await?
                .mode;
            (Some(chosen.client.engine), mode)
        }
    };
    let scope = Scope::new(&project.name, &project.file, mode, &keys.secrets, &keys.key);
    let mut vars = crate::export::from_stack(&project.file.exports, &scope, env)?;
    if let (true, Some(e)) = (api, engine) {
        let url = stack::api::url(e, env, &project.state_dir)?;
        vars.extend(stack::api::vars(e, &url, &project.file.exports));
    }
    Ok(vars)
}

/// Makes the stack's API socket answer (`[stack] api_socket`): podman's
/// service started when it does not; Docker's daemon is its own.
pub async fn ensure_api(
    facts: &Facts,
    project: &Project,
    engine: crate::engine::Engine,
) -> Result<()> {
    if !project.file.api_socket || engine != crate::engine::Engine::Podman {
        return Ok(());
    }
    let podman = facts.podman.as_ref().context("podman is not installed")?;
    stack::api::ensure(&podman.path, &project.state_dir)
        .await
        .map(drop)
}

/// `podstack env`: renders the exports (secret values only into a file).
#[allow(clippy::too_many_arguments, reason = "one per command-line option")]
pub async fn env_cmd(
    env: &Env,
    facts: &Facts,
    which: &Which<'_>,
    engine: Option<EngineChoice>,
    format: crate::export::Format,
    write: Option<&Path>,
    lock_timeout: Duration,
) -> Result<Outcome> {
    use crate::export::Format;
    let (name, vars, state_dir) = match stack::try_find_file(env, which.file, None) {
        Some(_) => {
            let project = open(env, facts, which)?;
            let keys = stack::keys(&project)?;
            let vars = exports(env, facts, &project, engine, lock_timeout, false, &keys).await?;
            (project.name.clone(), vars, state_root(facts)?)
        }
        None => (
            "detected".to_string(),
            crate::export::from_sockets(facts),
            state_root(facts)?,
        ),
    };
    match write {
        None => report::text(&crate::export::render(&vars, format, false)?)?,
        Some(path) => {
            let path = env.absolute(path);
            let changed = match format {
                Format::Sh => {
                    crate::export::write_block(&path, &name, &vars, lock_timeout, &state_dir)
                        .await?
                }
                Format::Github => {
                    if env.truthy("GITHUB_ACTIONS") {
                        // Masked before any later step could print them.
                        stderr(&crate::github::masks(
                            vars.iter().filter(|v| v.secret).map(|v| v.value.as_str()),
                        ));
                    }
                    crate::export::append_github(&path, &vars)?;
                    true
                }
                Format::Dotenv | Format::Json => {
                    let text = crate::export::render(&vars, format, true)?;
                    let same = fs_err::read(&path).is_ok_and(|b| b == text.as_bytes());
                    if !same && vars.iter().any(|v| v.secret) {
                        crate::fsx::write_private(&path, text.as_bytes())?;
                    } else if !same {
                        crate::fsx::write_atomic(&path, text.as_bytes(), 0o644)?;
                    }
                    !same
                }
            };
            report::text(&format!(
                "podstack env: {} variable(s) {} {}\n",
                vars.len(),
                if changed { "written to" } else { "already in" },
                path.display()
            ))?;
        }
    }
    Ok(Outcome::Done)
}

/// `podstack up` started by a hook: the same `up`, its result left in
/// `file` (0600: a report carries no secret, the folder is podstack's) for
/// the hook waiting on it, the report printed to the log as well.
pub async fn up_for_hook(
    env: &Env,
    facts: &Facts,
    project: &Project,
    opts: &up::Options,
    file: &Path,
    token: &str,
) -> Result<Outcome> {
    let ctx = up::Ctx { facts, env };
    let mut r = up::run(&ctx, project, opts).await;
    if let Ok(rep) = &r
        && let Err(e) = ensure_api(facts, project, rep.engine).await
    {
        r = Err(e);
    }
    let result = crate::hook::Result_ {
        token: token.to_string(),
        error: r.as_ref().err().map(|e| format!("{e:#}")),
        report: r.as_ref().ok().cloned(),
    };
    crate::fsx::write_private(file, serde_json::to_string(&result)?.as_bytes())?;
    let r = r?;
    report::text(&report::up(&r))?;
    Ok(Outcome::answer(r.ready()))
}

/// `podstack wait`: waits until no `up` of the stack is under way (a hook's
/// background start, say), then reports as `status` does.
pub async fn wait(project: &Project, timeout: Duration, json: bool) -> Result<Outcome> {
    fs_err::create_dir_all(&project.state_dir)?;
    let path = project.state_dir.join("up.lock");
    let deadline = tokio::time::Instant::now() + timeout;
    // Polled quietly: `wait` is for waiting.
    loop {
        if crate::fsx::Lock::try_acquire(&path)?.is_some() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(crate::exit::No(format!(
                "{} is still starting after {} s (podstack wait --timeout SECS waits longer; podstack status shows each service)",
                project.name,
                timeout.as_secs()
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(note) = crate::hook::unfinished_start(&project.state_dir) {
        crate::log::say(&note);
    }
    status(project, json).await
}

/// `podstack prepare`.
pub async fn prepare(
    env: &Env,
    facts: &Facts,
    project: &Project,
    opts: &up::Options,
) -> Result<Outcome> {
    let ctx = up::Ctx { facts, env };
    let (engine, images) = up::prepare(&ctx, project, opts).await?;
    let mut s = format!(
        "podstack prepare: {} on {engine}: every image is here; `podstack up` will neither build nor pull\n",
        project.name
    );
    for (image, what) in images {
        s.push_str(&format!("  {image}  {what}\n"));
    }
    report::text(&s)?;
    Ok(Outcome::Done)
}
