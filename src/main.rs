//! podstack: make a sandboxed session ready for container-backed end-to-end tests.
//!
//! The flow, one module per stage: `detect` (host facts) -> `plan` (the
//! settings this host needs) -> `configure` (podman's files, proven by the
//! `canary`) -> `stack` (start, probe, record) -> `report`. `doctor` is
//! detect + canary + a verdict. Shared
//! edges: `conf` (podman's TOML), `fsx` (atomic writes, locks), `proc`
//! (child processes), `scratch` (temporary folders), `engine` (container
//! command lines), `exit` (the exit-code table).

mod canary;
mod cli;
mod conf;
mod configure;
mod detect;
mod doctor;
// The stack engine (`up`) builds on the rest of this seam; the canary uses it now.
#[allow(dead_code)]
mod engine;
mod env;
mod exit;
mod fsx;
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
