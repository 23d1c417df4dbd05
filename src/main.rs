//! podstack: make a sandboxed session ready for container-backed end-to-end tests.
//!
//! The flow, one module per stage: `detect` (host facts) -> `plan` (the
//! settings this host needs) -> `configure` (podman's files, proven by the
//! `canary`) -> `stack` (start, probe, record) -> `export` (the variables
//! for the shells that run next) -> `report`. `doctor` is
//! detect + canary + a verdict. Shared
//! edges: `conf` (podman's TOML), `fsx` (atomic writes, locks), `proc`
//! (child processes), `scratch` (temporary folders), `engine` (container
//! command lines), `exit` (the exit-code table).

mod canary;
mod cli;
mod compose;
mod conf;
mod configure;
mod detect;
mod doctor;
mod engine;
mod env;
mod exit;
mod export;
mod fsx;
mod github;
mod hook;
mod layout;
mod log;
mod plan;
mod proc;
mod report;
mod scratch;
mod stack;

fn main() -> std::process::ExitCode {
    cli::main().into()
}
