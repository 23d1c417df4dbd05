//! podstack: make a sandboxed session ready for container-backed end-to-end tests.
//!
//! The flow, one module per stage: `detect` (host facts) -> `plan` (the
//! settings this host needs) -> `configure` (podman's files, proven by the
//! `canary`) -> `report`. `doctor` is detect + canary + a verdict.

mod canary;
mod cli;
mod conf;
mod configure;
mod detect;
mod doctor;
mod env;
mod fsx;
mod layout;
mod log;
mod plan;
mod proc;
mod report;

fn main() -> std::process::ExitCode {
    cli::main()
}
