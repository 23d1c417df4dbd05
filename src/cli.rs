//! The command line: parses arguments, runs one command on a tokio runtime,
//! and turns how it ended into an exit code (the table is in `exit`).
//!
//! Ctrl-C and SIGTERM stop the running command by dropping it: every child
//! process group is killed and every temporary folder removed by their
//! guards, then podstack exits 130 or 143.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};

use crate::configure;
use crate::detect::{self, Probe};
use crate::doctor;
use crate::env::Env;
use crate::exit::{self, Outcome};
use crate::plan::DriverChoice;
use crate::stack::file::EngineChoice;
use crate::stack::{self, cmd as stack_cmd, up};
use crate::{canary, log, report};

/// Make a sandboxed session ready for container-backed end-to-end tests.
///
/// podstack detects what kind of sandbox it runs in (gVisor, a Firecracker
/// VM, a container, rootless or not), configures podman so that containers
/// run there, and brings up the services of a stack file (podstack.toml),
/// each probed from the host until it is ready.
#[derive(Debug, Parser)]
#[command(
    name = "podstack",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(after_help = exit::help_text())]
pub struct Cli {
    /// Log each step (canary runs, podman commands) on stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Seconds to wait for another podstack writing the same files.
    #[arg(long, global = true, default_value_t = 120, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=86_400))]
    lock_timeout: u64,
    /// The stack file (else PODSTACK_FILE, else the nearest podstack.toml above the current folder or CLAUDE_PROJECT_DIR).
    #[arg(short = 'f', long = "file", global = true, value_name = "FILE")]
    file: Option<PathBuf>,
    /// The project name (else PODSTACK_PROJECT, else [stack] name, else the folder's name): two checkouts with different names run side by side.
    #[arg(short = 'p', long = "project-name", global = true, value_name = "NAME")]
    project: Option<String>,
    /// The container engine (else [stack] engine, else auto: podman when it can run containers here, else a Docker daemon).
    #[arg(long, global = true, value_enum, value_name = "ENGINE")]
    engine: Option<EngineArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the host's facts: sandbox, user, cgroups, limits, binaries, sockets, storage.
    Detect {
        /// Print JSON (the schema is in the README).
        #[arg(long)]
        json: bool,
        /// Also run podman, docker and the runtimes for their versions.
        #[arg(long)]
        deep: bool,
    },
    /// Configure podman's storage.conf and containers.conf so containers run here.
    ///
    /// Each fix is proven by a canary container before it is written; files
    /// are edited in place (comments and other keys kept), atomically, and
    /// only when something changes.
    Configure(ConfigureArgs),
    /// Say whether containers can run here, with which settings, and what is wrong if not.
    Doctor {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Seconds the whole check may take (podman's version and the canary).
        #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = secs())]
        timeout: u64,
    },
    /// Write a starter podstack.toml in the current folder (seed 000's stack).
    Init {
        /// Replace an existing podstack.toml.
        #[arg(long)]
        force: bool,
    },
    /// Convert a compose file into a commented podstack.toml to extend.
    ///
    /// `podstack up` also runs a compose file directly (-f compose.yaml, or
    /// found as compose.yaml, compose.yml, docker-compose.yaml,
    /// docker-compose.yml); both go through the same conversion. Keys
    /// podstack does not support are listed with FILE:LINE:COLUMN (exit 2).
    Import {
        /// The compose file (default: the nearest compose.yaml and the like).
        compose: Option<PathBuf>,
        /// Where to write (default: podstack.toml beside the compose file; `-` prints it).
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace an existing output file.
        #[arg(long)]
        force: bool,
    },
    /// Render the stack as Kubernetes YAML (one Pod, or Deployments and Services).
    ///
    /// Secrets are referenced from the Secret PROJECT-secrets, written only
    /// with --inline-secrets. --play runs the pod shape with `podman kube
    /// play` (making the secret podman reads) and waits with podstack's
    /// probes; --down removes it (volumes stay).
    Kube {
        /// Where to write the YAML (default: stdout).
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// pod: one Pod, shared network namespace; cluster: a Deployment and Service per service, NetworkPolicies.
        #[arg(long, value_enum, default_value = "pod")]
        mode: crate::stack::kube::KubeMode,
        /// Write the secrets' values into a Secret document (-o FILE is then 0600).
        #[arg(long)]
        inline_secrets: bool,
        /// Replace an existing -o FILE.
        #[arg(long)]
        force: bool,
        /// Run the Pod with podman kube play and wait until every service is ready.
        #[arg(long, conflicts_with = "down")]
        play: bool,
        /// Remove the Pod --play made (podman kube down) and its secret.
        #[arg(long)]
        down: bool,
        /// Seconds --play waits for the services.
        #[arg(long, default_value_t = 180, value_name = "SECS", value_parser = secs())]
        timeout: u64,
    },
    /// Start the stack's services (dependencies first) and wait until each is ready.
    ///
    /// A re-run keeps what is already right: when the record, /proc and the
    /// probes agree, it makes no engine call at all.
    Up(UpArgs),
    /// Stop and remove the stack's containers (named volumes stay unless --volumes).
    Down {
        /// Also remove the stack's named volumes (their data is lost).
        #[arg(long)]
        volumes: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the stack as it resolves on this host: engine and network mode (and why), networks, every service with its variables expanded (secrets masked).
    Config {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Claude Code's (and Codex's) SessionStart hook: exports first, then the stack within a budget; prints the hook's JSON.
    ///
    /// Reads the SessionStart JSON on stdin (leniently), writes the exports
    /// into CLAUDE_ENV_FILE and CODEX_ENV_FILE, then answers a warm stack
    /// at once or starts `podstack up` detached and waits for it until the
    /// budget is spent; what is not ready by then keeps starting in the
    /// background (`podstack wait`). Exits 0 whenever it can say what
    /// happened: the session must start.
    Hook {
        /// Seconds to wait for the stack (else [hook] budget, else 30).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=600))]
        budget: Option<u64>,
        /// Exit 2, the reason on stderr, when the stack is not ready.
        #[arg(long)]
        strict: bool,
    },
    /// Make everything `up` needs, once, for a setup script whose result is cached: podman configured (or dockerd started), every image built or pulled. Starts no container.
    Prepare,
    /// Wait until the stack's `up` (a hook's background start, say) is done, then report its status.
    Wait {
        /// Seconds to wait at most.
        #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = secs())]
        timeout: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the variables that tell the next shells where the stack is ([env] of the stack file; without one, the API socket that answers).
    ///
    /// On stdout secret values are left out; --write FILE puts everything
    /// into FILE (0600 when a secret is in it) as one block replaced in
    /// place, every other line kept.
    Env {
        /// sh (export lines), dotenv, json or github (GITHUB_ENV's format).
        #[arg(long, value_enum, default_value_t = FormatArg::Sh)]
        format: FormatArg,
        /// Write into FILE instead of printing.
        #[arg(long, value_name = "FILE")]
        write: Option<PathBuf>,
    },
    /// Show each service: ready or not, its ports and age (no engine call).
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a service's output.
    Logs {
        /// The service.
        service: String,
        /// Keep following the output.
        #[arg(long)]
        follow: bool,
        /// Lines from the end.
        #[arg(long, default_value_t = 100)]
        tail: usize,
    },
    /// Run the embedded demo stack (no registry needed): `up`, `status` or `down`.
    Demo {
        /// What to do.
        #[arg(value_enum, default_value_t = DemoStep::Up)]
        step: DemoStep,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The canary's payload: runs inside the canary container.
    #[command(hide = true)]
    Canary,
    /// The demo's services: run inside the demo's containers.
    #[command(hide = true, name = "__serve")]
    Serve {
        /// `http` or `tcp`.
        kind: String,
        /// IP:PORT.
        addr: String,
    },
    /// install.sh --claude-hook: merges the SessionStart entry into DIR/.claude/settings.json.
    #[command(hide = true, name = "__claude-settings")]
    ClaudeSettings {
        /// The project folder.
        dir: PathBuf,
        /// The podstack binary the hook runs.
        #[arg(long)]
        binary: PathBuf,
        /// Claude Code's timeout for it, in seconds.
        #[arg(long, default_value_t = 90)]
        timeout: u64,
    },
    /// The demo's build command: imports this binary as an image.
    #[command(hide = true, name = "__demo-image")]
    DemoImage {
        /// The image name.
        image: String,
    },
}

/// `env --format`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum FormatArg {
    /// `export NAME='value'` lines.
    Sh,
    /// `NAME=value` lines.
    Dotenv,
    /// A JSON object.
    Json,
    /// GITHUB_ENV's format (heredocs for multi-line values).
    Github,
}

impl From<FormatArg> for crate::export::Format {
    fn from(a: FormatArg) -> Self {
        match a {
            FormatArg::Sh => Self::Sh,
            FormatArg::Dotenv => Self::Dotenv,
            FormatArg::Json => Self::Json,
            FormatArg::Github => Self::Github,
        }
    }
}

/// `--engine`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum EngineArg {
    /// podman when it can run containers here, else a Docker daemon.
    Auto,
    /// podman.
    Podman,
    /// Docker.
    Docker,
}

impl From<EngineArg> for EngineChoice {
    fn from(a: EngineArg) -> Self {
        match a {
            EngineArg::Auto => EngineChoice::Auto,
            EngineArg::Podman => EngineChoice::Podman,
            EngineArg::Docker => EngineChoice::Docker,
        }
    }
}

/// A step of the demo.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum DemoStep {
    /// Start it.
    Up,
    /// Show it.
    Status,
    /// Remove it.
    Down,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Only these services (and what they depend on).
    services: Vec<String>,
    /// Seconds the whole `up` may take (each service also has its own timeout).
    #[arg(long, value_name = "SECS", value_parser = secs())]
    timeout: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Where to leave the result for the hook that started this `up`.
    #[arg(long, hide = true, value_name = "FILE", requires = "result_token")]
    result_file: Option<PathBuf>,
    /// The token of that hook.
    #[arg(long, hide = true, value_name = "TOKEN")]
    result_token: Option<String>,
}

#[derive(Debug, Args)]
struct ConfigureArgs {
    /// Show what would change and change nothing anywhere (the canary proves it on temporary copies and a throwaway store).
    #[arg(long)]
    dry_run: bool,
    /// Storage driver: auto picks vfs in gVisor, in containers or where overlay cannot work.
    #[arg(long, value_enum, default_value_t = DriverChoice::Auto, value_name = "DRIVER")]
    storage_driver: DriverChoice,
    /// Wipe podman's storage (containers, images, volumes) when it holds another driver's data.
    #[arg(long)]
    reset_storage: bool,
    /// Configure from the host's facts alone, without running the canary.
    #[arg(long)]
    no_canary: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Seconds one canary container may take.
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = secs())]
    timeout: u64,
}

/// Seconds: 1 to a day.
fn secs() -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(1..=86_400)
}

/// Runs podstack with the process's arguments and environment.
pub fn main() -> Outcome {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == crate::proc::DETACH_ARG) {
        let e = crate::proc::detach_and_exec(&args[2..]);
        log::error(&format!("{e:#}"));
        return Outcome::Error;
    }
    let json = args.iter().any(|a| a == "--json");
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e, json),
    };
    let env = Env::from_process();
    log::set_verbose(cli.verbose);
    let json = cli.command.json();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start"), json),
    };
    runtime.block_on(async {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return fail(&anyhow::anyhow!("cannot install signal handlers"), json);
        };
        tokio::select! {
            r = run(cli, &env) => match r {
                Ok(o) => o,
                Err(e) if is_broken_pipe(&e) => Outcome::Done,
                Err(e) => fail(&e, json),
            },
            _ = int.recv() => stopped(Outcome::Interrupted, "interrupted (SIGINT)"),
            _ = term.recv() => stopped(Outcome::Terminated, "terminated (SIGTERM)"),
        }
    })
}

/// A signal stopped the run; the dropped future's guards have cleaned up.
fn stopped(o: Outcome, why: &str) -> Outcome {
    log::say(&format!(
        "{why}: child processes stopped, temporary files removed"
    ));
    o
}

/// Reports an error (and, with `--json`, a JSON document on stdout).
fn fail(e: &anyhow::Error, json: bool) -> Outcome {
    log::error(&format!("{e:#}"));
    if json {
        // A machine reading stdout gets a document too.
        let _ = report::json(&serde_json::json!({ "error": format!("{e:#}") }));
    }
    crate::exit::of_error(e)
}

fn usage_error(e: &clap::Error, json: bool) -> Outcome {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = report::text(&e.to_string());
        return Outcome::Done;
    }
    let text = e.render().to_string();
    let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
    if json {
        let first = text.lines().next().unwrap_or("usage error");
        let msg = first.trim_start_matches("error: ").to_string();
        let _ = report::json(&serde_json::json!({ "error": msg, "usage": true }));
    }
    Outcome::Error
}

impl Command {
    /// Whether the command was asked for JSON.
    fn json(&self) -> bool {
        match self {
            Command::Detect { json, .. }
            | Command::Doctor { json, .. }
            | Command::Down { json, .. }
            | Command::Status { json }
            | Command::Config { json }
            | Command::Wait { json, .. }
            | Command::Demo { json, .. } => *json,
            Command::Configure(a) => a.json,
            Command::Up(a) => a.json,
            Command::Canary
            | Command::Init { .. }
            | Command::Import { .. }
            | Command::Kube { .. }
            | Command::Logs { .. }
            | Command::Env { .. }
            | Command::Hook { .. }
            | Command::ClaudeSettings { .. }
            | Command::Prepare
            | Command::Serve { .. }
            | Command::DemoImage { .. } => false,
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn facts(env: &Env, ping: bool) -> detect::Facts {
    detect::gather(&Probe {
        root: Path::new("/"),
        env,
        ping,
    })
}

async fn run(cli: Cli, env: &Env) -> Result<Outcome> {
    let lock_timeout = Duration::from_secs(cli.lock_timeout);
    let which = stack_cmd::Which {
        file: cli.file.as_deref(),
        project: cli.project.as_deref(),
    };
    let engine: Option<EngineChoice> = cli.engine.map(Into::into);
    match cli.command {
        Command::Detect { json, deep } => {
            let mut f = facts(env, true);
            if deep {
                detect::versions(&mut f, Duration::from_secs(10)).await;
            }
            if json {
                report::json(&f)?
            } else {
                report::text(&report::facts(&f))?
            }
            Ok(Outcome::Done)
        }
        Command::Configure(a) => {
            let f = facts(env, false);
            let opts = configure::Options {
                dry_run: a.dry_run,
                driver: a.storage_driver,
                reset_storage: a.reset_storage,
                canary: !a.no_canary,
                timeout: Duration::from_secs(a.timeout),
                lock_timeout,
            };
            let r = configure::run(&f, env, &opts).await?;
            if a.json {
                report::json(&r)?
            } else {
                report::text(&report::configured(&r))?
            }
            Ok(Outcome::answer(!r.canary.ran || r.canary.passed))
        }
        Command::Doctor { json, timeout } => {
            let f = facts(env, false);
            let v = doctor::run(&f, env, Duration::from_secs(timeout)).await?;
            if json {
                report::json(&v)?
            } else {
                report::text(&report::verdict(&v))?
            }
            Ok(Outcome::answer(v.can_run))
        }
        Command::Canary => {
            canary::payload();
            Ok(Outcome::Done)
        }
        Command::Init { force } => stack_cmd::init(env, force),
        Command::Import {
            compose,
            output,
            force,
        } => stack_cmd::import(
            env,
            compose.as_deref().or(which.file),
            output.as_deref(),
            force,
            which.project,
        ),
        Command::Kube {
            output,
            mode,
            inline_secrets,
            force,
            play,
            down,
            timeout,
        } => {
            let f = facts(env, false);
            let project = stack_cmd::open(env, &f, &which)?;
            let args = stack_cmd::KubeArgs {
                mode,
                output: output.as_deref(),
                inline_secrets,
                force,
                play,
                down,
                timeout: Duration::from_secs(timeout),
                lock_timeout,
            };
            stack_cmd::kube(env, &f, &project, &args).await
        }
        Command::Up(a) => {
            let f = facts(env, false);
            let project = stack_cmd::open(env, &f, &which)?;
            let opts = up::Options {
                services: a.services,
                timeout: a.timeout.map(Duration::from_secs),
                lock_timeout,
                engine,
            };
            match (&a.result_file, &a.result_token) {
                (Some(file), Some(token)) => {
                    stack_cmd::up_for_hook(env, &f, &project, &opts, file, token).await
                }
                _ => stack_cmd::up(env, &f, &project, &opts, a.json).await,
            }
        }
        Command::Down { volumes, json } => {
            let f = facts(env, false);
            let project = stack_cmd::open(env, &f, &which)?;
            stack_cmd::down(env, &f, &project, engine, volumes, lock_timeout, json).await
        }
        Command::Hook { budget, strict } => {
            let opts = crate::hook::Options {
                budget: budget.map(Duration::from_secs),
                strict,
                lock_timeout,
                engine,
            };
            crate::hook::run(env, which.file, which.project, &opts).await
        }
        Command::Prepare => {
            let f = facts(env, false);
            let project = stack_cmd::open(env, &f, &which)?;
            let opts = up::Options {
                services: Vec::new(),
                timeout: None,
                lock_timeout,
                engine,
            };
            stack_cmd::prepare(env, &f, &project, &opts).await
        }
        Command::Wait { timeout, json } => {
            let f = facts(env, false);
            let project = stack_cmd::open(env, &f, &which)?;
            stack_cmd::wait(&project, Duration::from_secs(timeout), json).await
        }
        Command::Env { format, write } => {
            let f = facts(env, true);
            stack_cmd::env_cmd(
                env,
                &f,
                &which,
                engine,
                format.into(),
                write.as_deref(),
                lock_timeout,
            )
            .await
        }
        Command::Config { json } => {
            let f = facts(env, false);
            let project = stack_cmd::open(env, &f, &which)?;
            stack_cmd::config(env, &f, &project, engine, lock_timeout, json).await
        }
        Command::Status { json } => {
            let f = facts(env, false);
            let project = stack_cmd::open(env, &f, &which)?;
            stack_cmd::status(&project, json).await
        }
        Command::Logs {
            service,
            follow,
            tail,
        } => {
            let f = facts(env, false);
            let project = stack_cmd::open(env, &f, &which)?;
            stack_cmd::logs(env, &f, &project, engine, &service, follow, tail).await
        }
        Command::Demo { step, json } => {
            let f = facts(env, false);
            let project = stack_cmd::demo_project(&f, env)?;
            match step {
                DemoStep::Up => {
                    let opts = up::Options {
                        services: Vec::new(),
                        timeout: None,
                        lock_timeout,
                        engine,
                    };
                    stack_cmd::up(env, &f, &project, &opts, json).await
                }
                DemoStep::Status => stack_cmd::status(&project, json).await,
                DemoStep::Down => {
                    stack_cmd::down(env, &f, &project, engine, false, lock_timeout, json).await
                }
            }
        }
        Command::Serve { kind, addr } => {
            stack::demo::serve(&kind, &addr).await?;
            Ok(Outcome::Done)
        }
        Command::ClaudeSettings {
            dir,
            binary,
            timeout,
        } => {
            let bin = env.absolute(&binary).display().to_string();
            // Quoted for `sh -c` when it must be (a prefix with a space).
            let plain = bin
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c));
            let command = if plain {
                format!("{bin} hook")
            } else {
                format!("{} hook", crate::export::quote_sh(&bin))
            };
            crate::hook::install_settings(&env.absolute(&dir), &command, timeout)
        }
        Command::DemoImage { image } => {
            stack::demo::make_image(&image).await?;
            Ok(Outcome::Done)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
