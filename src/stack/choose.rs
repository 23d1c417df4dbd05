//! Which engine runs the stack and how it is networked, on this host, with
//! the reason for each choice in a sentence (`podstack config` prints it).
//!
//! Engine `auto`: podman when it can run containers here (configure's
//! canary, proven once and recorded), else a Docker daemon that answers on
//! `DOCKER_HOST` or /var/run/docker.sock; when none answers, the `dockerd`
//! binary is there and podstack runs as root, podstack starts the daemon
//! (detached, its output in the state folder) and waits for `/_ping`.
//!
//! Network `auto`: `isolated` when the engine can make networks here, found
//! by a canary (a network, a container on it, a published port) whose
//! verdict is kept until the engine's configuration changes; `host` in
//! gVisor and for rootless podman without /dev/net/tun, where bridges
//! cannot work at all.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::time::Instant;

use crate::detect::{Facts, sockets};
use crate::engine::{Engine, NetworkMode};
use crate::env::Env;
use crate::stack::client::Client;
use crate::stack::file::{EngineChoice, NetworkChoice};
use crate::stack::net::Mode;

/// The default Docker socket.
pub const DOCKER_SOCK: &str = "/var/run/docker.sock";

/// An engine, chosen, with why.
#[derive(Clone, Debug)]
pub struct Chosen {
    /// The engine's client.
    pub client: Client,
    /// Why this engine.
    pub why: String,
}

/// A network mode, chosen, with why.
#[derive(Clone, Debug, Serialize)]
pub struct ChosenMode {
    /// The mode.
    pub mode: Mode,
    /// Why.
    pub why: String,
}

/// The Docker endpoint podstack uses: `DOCKER_HOST`, else the default socket.
pub fn docker_url(env: &Env) -> Result<String> {
    match env.get("DOCKER_HOST") {
        Some(v) if !v.is_empty() => {
            sockets::normalise(v, "DOCKER_HOST").map_err(anyhow::Error::msg)
        }
        _ => Ok(format!("unix://{DOCKER_SOCK}")),
    }
}

fn docker_client(facts: &Facts) -> Result<Client> {
    let path = facts.docker.as_ref().map(|b| b.path.clone()).context(
        "the docker client is not installed (Debian: apt-get install docker.io; it brings dockerd too)",
    )?;
    Ok(Client {
        engine: Engine::Docker,
        path,
        env: Vec::new(),
    })
}

/// Whether the Docker endpoint answers `GET /_ping` within `wait`.
fn docker_answers(url: &str, wait: Duration) -> bool {
    sockets::ping(url, std::time::Instant::now() + wait) == Some(true)
}

/// A Docker daemon that answers, starting `dockerd` when podstack may.
///
/// Plain `dockerd` serves the default socket with the system's data root,
/// so podstack starts it only for that socket; for another `DOCKER_HOST`
/// it runs the command `PODSTACK_DOCKERD` names (one whose data root, exec
/// root and pid file are its own), never a second daemon over the system's
/// data.
async fn docker(facts: &Facts, env: &Env, may_start: bool) -> Result<(Client, String)> {
    let url = docker_url(env)?;
    let client = docker_client(facts)?;
    if docker_answers(&url, Duration::from_millis(500)) {
        return Ok((client, format!("the Docker daemon answers on {url}")));
    }
    let default = url == format!("unix://{DOCKER_SOCK}");
    let dockerd = match env.get("PODSTACK_DOCKERD").filter(|v| !v.is_empty()) {
        Some(cmd) => Some(PathBuf::from(cmd)),
        None if default => {
            which::which_in("dockerd", Some(crate::detect::search_path(env)), "/").ok()
        }
        None => None,
    };
    let why_not = if !may_start {
        " (this command does not start it; `podstack up` does)"
    } else if facts.euid != 0 {
        " (podstack starts dockerd only as root)"
    } else if !default && dockerd.is_none() {
        " (podstack starts plain dockerd only for the default socket; set PODSTACK_DOCKERD to a command that serves this one)"
    } else if dockerd.is_none() {
        " and dockerd is not installed"
    } else if !url.starts_with("unix://") {
        " (podstack starts dockerd only for a unix socket)"
    } else {
        ""
    };
    let (Some(dockerd), Some(path), "") = (dockerd, url.strip_prefix("unix://"), why_not) else {
        bail!("no Docker daemon answers on {url}{why_not}");
    };
    let pid = start_dockerd(facts, &dockerd, path)?;
    let log = dockerd_log(facts)?;
    crate::log::say(&format!(
        "started dockerd (pid {pid}, its output in {}); waiting for it to answer on {url}",
        log.display()
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if docker_answers(&url, Duration::from_millis(500)) {
            return Ok((
                client,
                format!(
                    "no Docker daemon answered on {url}, so podstack started dockerd (pid {pid}; it keeps running after podstack down)"
                ),
            ));
        }
        if crate::stack::record::start_time(pid).is_none() {
            bail!(
                "dockerd (pid {pid}) exited before it answered; its last lines:\n{}",
                tail_of(&log, 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "dockerd (pid {pid}) did not answer on {url} within 60 s; its last lines:\n{}",
        tail_of(&log, 15)
    )
}

fn dockerd_log(facts: &Facts) -> Result<PathBuf> {
    let dir = &facts
        .layout
        .as_ref()
        .context("HOME is not set: cannot tell where podstack keeps its state")?
        .state_dir;
    fs_err::create_dir_all(dir)?;
    Ok(dir.join("dockerd.log"))
}

/// Starts dockerd detached: its own session, stdin /dev/null, output to the
/// log in the state folder, no descriptor of podstack's. The proxy
/// variables of podstack's environment reach it (pulls go through the proxy).
fn start_dockerd(facts: &Facts, dockerd: &std::path::Path, socket: &str) -> Result<u32> {
    let mut cmd = crate::proc::Cmd::new(dockerd);
    if socket != DOCKER_SOCK {
        cmd = cmd.arg("--host").arg(format!("unix://{socket}"));
    }
    for var in [
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "NO_PROXY",
        "https_proxy",
        "http_proxy",
        "no_proxy",
    ] {
        if let Ok(v) = std::env::var(var) {
            cmd = cmd.env(var, v);
        }
    }
    // One start per log: the lines quoted on failure are this start's.
    let log = dockerd_log(facts)?;
    let _ = fs_err::rename(&log, log.with_extension("log.1"));
    cmd.spawn_detached(&log)
}

fn tail_of(path: &std::path::Path, n: usize) -> String {
    let text = crate::fsx::read_bounded(path, 1 << 20)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The podman client, when podman is installed.
pub fn podman_client(facts: &Facts) -> Option<Client> {
    facts.podman.as_ref().map(|b| Client {
        engine: Engine::Podman,
        path: b.path.clone(),
        env: Vec::new(),
    })
}

/// Chooses the engine per `choice` (configuring podman when it is the
/// one); `may_start`: a Docker daemon may be started (`up` only); `prefer`:
/// the engine of the stack's last `up`, which `auto` keeps while it answers
/// (a stack does not move to podman because one of its containers stopped).
pub async fn engine(
    facts: &Facts,
    env: &Env,
    choice: EngineChoice,
    lock_timeout: Duration,
    may_start: bool,
    prefer: Option<Engine>,
) -> Result<Chosen> {
    match choice {
        EngineChoice::Podman => {
            crate::configure::ensure(facts, env, lock_timeout).await?;
            let client = podman_client(facts).context("podman is not installed")?;
            Ok(Chosen {
                client,
                why: "engine = \"podman\" was asked for".into(),
            })
        }
        EngineChoice::Docker => {
            // No daemon is a negative answer (exit 1), as for podman.
            let (client, why) = docker(facts, env, may_start)
                .await
                .map_err(|e| crate::exit::No(format!("{e:#}")))?;
            Ok(Chosen {
                client,
                why: format!("engine = \"docker\" was asked for; {why}"),
            })
        }
        EngineChoice::Auto => {
            // A stack on Docker stays there while the daemon answers (asked
            // once, nothing started for it).
            if prefer == Some(Engine::Docker)
                && let Ok((client, why)) = docker(facts, env, false).await
            {
                return Ok(Chosen {
                    client,
                    why: format!("the stack runs on Docker (its last up chose it); {why}"),
                });
            }
            let podman_err = match podman_client(facts) {
                None => "podman is not installed".to_string(),
                Some(client) => match crate::configure::ensure(facts, env, lock_timeout).await {
                    Ok(()) => {
                        return Ok(Chosen {
                            client,
                            why: "podman can run containers here (its canary passed)".into(),
                        });
                    }
                    Err(e) => format!("{e:#}"),
                },
            };
            match docker(facts, env, may_start).await {
                Ok((client, why)) => {
                    crate::log::say(&format!("using Docker: {podman_err}"));
                    Ok(Chosen {
                        client,
                        why: format!("{podman_err}; {why}"),
                    })
                }
                Err(e) => Err(crate::exit::No(format!(
                    "no engine can run this stack here: podman: {podman_err}; Docker: {e:#}; `podstack doctor` explains both"
                ))
                .into()),
            }
        }
    }
}

/// The engine recorded for a stack, or a guess that makes no change to the
/// host: for `down`, `logs` and `status` (they must not configure podman or
/// start a daemon).
pub fn engine_for_cleanup(facts: &Facts, env: &Env, choice: EngineChoice) -> Vec<Client> {
    let podman = podman_client(facts);
    let docker = docker_client(facts)
        .ok()
        .filter(|_| docker_url(env).is_ok_and(|u| docker_answers(&u, Duration::from_millis(500))));
    match choice {
        EngineChoice::Podman => podman.into_iter().collect(),
        EngineChoice::Docker => docker.into_iter().collect(),
        EngineChoice::Auto => podman.into_iter().chain(docker).collect(),
    }
}

/// Chooses the network mode for `client` per `choice`.
pub async fn mode(
    facts: &Facts,
    env: &Env,
    client: &Client,
    choice: NetworkChoice,
) -> Result<ChosenMode> {
    match choice {
        NetworkChoice::Host => Ok(ChosenMode {
            mode: Mode::Host,
            why: "network = \"host\" (written, or the default of a file without [networks])".into(),
        }),
        NetworkChoice::Isolated => Ok(ChosenMode {
            mode: Mode::Isolated,
            why: "network = \"isolated\" was asked for".into(),
        }),
        NetworkChoice::Auto => {
            if let Some(why) = host_only(facts, client.engine) {
                return Ok(ChosenMode {
                    mode: Mode::Host,
                    why,
                });
            }
            network_canary(facts, env, client).await
        }
    }
}

/// Why only host networking can work here, when that is known from the
/// facts alone (pure).
pub fn host_only(facts: &Facts, engine: Engine) -> Option<String> {
    if facts.gvisor {
        return Some("gVisor: containers get only the host's network here".into());
    }
    if engine == Engine::Podman && facts.rootless && !facts.dev_net_tun {
        return Some(
            "rootless podman without /dev/net/tun cannot make bridge networks or map ports (slirp4netns and pasta need it)".into(),
        );
    }
    None
}

/// Runs the network canary once per engine configuration and keeps its
/// verdict in the state folder.
async fn network_canary(facts: &Facts, env: &Env, client: &Client) -> Result<ChosenMode> {
    let layout = facts
        .layout
        .as_ref()
        .context("HOME is not set: cannot tell where podstack keeps its state")?;
    let key = match client.engine {
        Engine::Podman => crate::configure::proof_key(env, layout, &client.path),
        Engine::Docker => format!("docker {}", docker_url(env).unwrap_or_default()),
    };
    let file = layout
        .state_dir
        .join(format!("network-proof-{}.json", client.engine));
    #[derive(serde::Deserialize, Serialize)]
    struct Proof {
        key: String,
        isolated: bool,
        why: String,
    }
    if let Some(p) = fs_err::read_to_string(&file)
        .ok()
        .and_then(|t| serde_json::from_str::<Proof>(&t).ok())
        .filter(|p| p.key == key)
    {
        return Ok(ChosenMode {
            mode: if p.isolated {
                Mode::Isolated
            } else {
                Mode::Host
            },
            why: p.why,
        });
    }
    crate::log::say(&format!(
        "checking that {} can make networks and publish ports here (once)",
        client.engine
    ));
    let verdict = try_network(facts, env, client).await;
    let (isolated, why) = match verdict {
        Ok(ms) => (
            true,
            format!(
                "{} made an isolated network and published a port on it here (checked in {ms} ms)",
                client.engine
            ),
        ),
        Err(e) => (
            false,
            format!(
                "{} could not make a network with a published port here ({}), so services share the host's network",
                client.engine,
                crate::proc::cut(&format!("{e:#}"), 300)
            ),
        ),
    };
    // Only a success is kept: a failure may pass (a daemon restarting, a
    // full disk), and costs one canary per cold `up` while it lasts.
    fs_err::create_dir_all(&layout.state_dir)?;
    if !isolated {
        let _ = fs_err::remove_file(&file);
        return Ok(ChosenMode {
            mode: Mode::Host,
            why,
        });
    }
    crate::fsx::write_atomic(
        &file,
        serde_json::to_string(&Proof {
            key,
            isolated,
            why: why.clone(),
        })?
        .as_bytes(),
        0o600,
    )?;
    Ok(ChosenMode {
        mode: if isolated { Mode::Isolated } else { Mode::Host },
        why,
    })
}

/// Makes a labelled network, runs a container on it with a published port,
/// removes both. Returns the milliseconds it took.
async fn try_network(facts: &Facts, env: &Env, client: &Client) -> Result<u64> {
    let start = Instant::now();
    let name = format!("podstack-canary-{}", std::process::id());
    let labels: BTreeMap<String, String> = [("io.podstack.canary".to_string(), "1".to_string())]
        .into_iter()
        .collect();
    client.network_create(&name, &labels).await?;
    let ran = async {
        match client.engine {
            Engine::Podman => {
                let layout = facts.layout.as_ref().context("HOME is not set")?;
                let mountinfo = fs_err::read_to_string("/proc/self/mountinfo").unwrap_or_default();
                let scratch = crate::scratch::Base::pick(env, &mountinfo, &layout.state_dir)?;
                let out = crate::canary::run_with(
                    &client.path,
                    &crate::canary::Candidate::default(),
                    Duration::from_secs(60),
                    &scratch,
                    |spec| {
                        spec.network = NetworkMode::Networks(vec![name.clone()]);
                        spec.publish = vec!["127.0.0.1::9".into()];
                    },
                )
                .await?;
                if !crate::canary::passed(&out) {
                    bail!("{}", out.tail(2));
                }
                Ok(())
            }
            // The canary image is this binary, imported once.
            Engine::Docker => {
                let image = format!("localhost/podstack-canary:{}", env!("CARGO_PKG_VERSION"));
                if !client.image_exists(&image).await? {
                    crate::stack::demo::make_image_in(client, &image).await?;
                }
                let out = crate::proc::Cmd::new(&client.path)
                    .args([
                        "run",
                        "--rm",
                        "--network",
                        &name,
                        "--publish",
                        "127.0.0.1::9",
                    ])
                    .args([image.as_str(), "canary"])
                    .timeout(Duration::from_secs(60))
                    .finish_on_drop()
                    .run()
                    .await?;
                if !crate::canary::passed(&out) {
                    bail!("{}", out.tail(2));
                }
                Ok(())
            }
        }
    }
    .await;
    let removed = client.network_remove(std::slice::from_ref(&name)).await;
    ran?;
    removed?;
    Ok(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX))
}
