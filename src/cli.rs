//! The command line: parses arguments, runs one command, returns its exit code.
//!
//! Exit codes, the same for every command:
//! - 0: done; the answer is yes (containers can run).
//! - 1: done, but the answer is no (containers cannot run here, even after
//!   every fix podstack knows); the output says why and what to do.
//! - 2: podstack could not do its job: bad input, a file it may not write,
//!   podman missing. The message names the file, line and fix.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::configure;
use crate::detect::{self, Probe};
use crate::doctor;
use crate::env::Env;
use crate::plan::DriverChoice;
use crate::{canary, report};

/// Make a sandboxed session ready for container-backed end-to-end tests.
///
/// podstack detects what kind of sandbox it runs in (gVisor, a Firecracker
/// VM, a container, rootless or not) and configures podman so that
/// containers run there.
#[derive(Debug, Parser)]
#[command(
    name = "podstack",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(after_help = "Exit codes: 0 yes/done, 1 containers cannot run here, 2 error.")]
pub struct Cli {
    /// Log each step (canary runs, podman commands) on stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
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
        /// Seconds the canary container may take.
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        timeout: u64,
    },
    /// The canary's payload: runs inside the canary container.
    #[command(hide = true)]
    Canary,
}

#[derive(Debug, Args)]
struct ConfigureArgs {
    /// Show what would change, write nothing (the canary still proves it, on temporary copies).
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
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    timeout: u64,
}

/// Runs podstack with the process's arguments and environment.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();
    crate::log::set_verbose(cli.verbose);
    let json = cli.command.json();
    match run(cli, &env) {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podstack: error: {e:#}");
            if json {
                // A machine reading stdout gets a document too.
                let _ = report::json(&serde_json::json!({ "error": format!("{e:#}") }));
            }
            ExitCode::from(2)
        }
    }
}

impl Command {
    /// Whether the command was asked for JSON.
    fn json(&self) -> bool {
        match self {
            Command::Detect { json, .. } | Command::Doctor { json, .. } => *json,
            Command::Configure(a) => a.json,
            Command::Canary => false,
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn facts(env: &Env, deep: bool, ping: bool) -> detect::Facts {
    detect::gather(&Probe {
        root: Path::new("/"),
        env,
        deep,
        ping,
    })
}

fn run(cli: Cli, env: &Env) -> Result<u8> {
    match cli.command {
        Command::Detect { json, deep } => {
            let f = facts(env, deep, true);
            if json {
                report::json(&f)?
            } else {
                report::text(&report::facts(&f))?
            }
            Ok(0)
        }
        Command::Configure(a) => {
            let f = facts(env, false, false);
            let opts = configure::Options {
                dry_run: a.dry_run,
                driver: a.storage_driver,
                reset_storage: a.reset_storage,
                canary: !a.no_canary,
                timeout: Duration::from_secs(a.timeout),
            };
            let r = configure::run(&f, env, &opts)?;
            if a.json {
                report::json(&r)?
            } else {
                report::text(&report::configured(&r))?
            }
            Ok(if r.canary.ran && !r.canary.passed {
                1
            } else {
                0
            })
        }
        Command::Doctor { json, timeout } => {
            let f = facts(env, false, false);
            let v = doctor::run(&f, env, Duration::from_secs(timeout))?;
            if json {
                report::json(&v)?
            } else {
                report::text(&report::verdict(&v))?
            }
            Ok(if v.can_run { 0 } else { 1 })
        }
        Command::Canary => {
            canary::payload();
            Ok(0)
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
