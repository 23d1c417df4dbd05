//! `[stack] api_socket = true`: a Docker-compatible API socket for clients
//! that create containers themselves (seed 000's agents use aiodocker).
//!
//! With Docker it is the daemon's own endpoint. With podman, podstack starts
//! `podman system service --time=0 unix://STATE/podman.sock` detached (its
//! own session, stdin /dev/null, output to a log, no descriptor of
//! podstack's), once, and waits for `GET /_ping`; `down` stops it. Either
//! way `DOCKER_HOST` and `CONTAINER_HOST` are exported.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};

use crate::engine::Engine;
use crate::export::Var;

/// The socket podstack serves podman's API on, for the state folder `root`.
pub fn podman_socket(root: &Path) -> PathBuf {
    root.join("podman.sock")
}

fn pid_file(root: &Path) -> PathBuf {
    root.join("podman-service.pid")
}

/// The URL clients use for `engine` (pure but for the environment's
/// `DOCKER_HOST`).
pub fn url(engine: Engine, env: &crate::env::Env, root: &Path) -> Result<String> {
    match engine {
        Engine::Docker => crate::stack::choose::docker_url(env),
        Engine::Podman => Ok(crate::detect::sockets::unix_url(&podman_socket(root))),
    }
}

/// `DOCKER_HOST` (and, for podman's socket, `CONTAINER_HOST`: podman's
/// clients speak podman's API there, which Docker does not serve) for
/// `url`, unless `[env]` sets them.
pub fn vars(engine: Engine, url: &str, exports: &[(String, String)]) -> Vec<Var> {
    let names: &[&str] = match engine {
        Engine::Podman => &["DOCKER_HOST", "CONTAINER_HOST"],
        Engine::Docker => &["DOCKER_HOST"],
    };
    names
        .iter()
        .copied()
        .filter(|n| !exports.iter().any(|(k, _)| k == n))
        .map(|n| Var {
            name: n.into(),
            value: url.into(),
            secret: false,
        })
        .collect()
}

fn answers(url: &str) -> bool {
    crate::detect::sockets::ping(url, std::time::Instant::now() + Duration::from_millis(300))
        == Some(true)
}

/// Makes the podman API answer on its socket: nothing when it does (one
/// ping), else `podman system service` started and waited for.
pub async fn ensure(podman: &Path, root: &Path) -> Result<String> {
    let sock = podman_socket(root);
    let url = crate::detect::sockets::unix_url(&sock);
    // sun_path holds 107 bytes and a NUL: a longer path cannot be bound.
    if sock.as_os_str().len() > 107 {
        bail!(
            "the API socket {} is {} bytes long, over the 107 a unix socket path may have; give podstack a shorter state folder (XDG_STATE_HOME) or a shorter project name (-p)",
            sock.display(),
            sock.as_os_str().len()
        );
    }
    if answers(&url) {
        return Ok(url);
    }
    fs_err::create_dir_all(root)?;
    // A socket file left by a service that died would make podman refuse.
    let _ = fs_err::remove_file(&sock);
    let log = root.join("podman-service.log");
    let _ = fs_err::rename(&log, log.with_extension("log.1"));
    let pid = crate::proc::Cmd::new(podman)
        .args(["system", "service", "--time=0"])
        .arg(&url)
        .spawn_detached(&log)?;
    crate::fsx::write_atomic(&pid_file(root), format!("{pid}\n").as_bytes(), 0o600)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        if answers(&url) {
            crate::log::say(&format!(
                "started podman's API service (pid {pid}) on {url}"
            ));
            return Ok(url);
        }
        if crate::stack::record::start_time(pid).is_none() {
            bail!(
                "podman system service (pid {pid}) exited before it answered on {url}; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!(
        "podman system service (pid {pid}) did not answer on {url} within 20 s; see {}",
        log.display()
    )
}

/// Stops the podman API service podstack started (its pid file says which;
/// a pid now running something else is left alone).
pub fn stop(root: &Path) {
    let Ok(text) = fs_err::read_to_string(pid_file(root)) else {
        return;
    };
    if let Ok(pid) = text.trim().parse::<i32>()
        && crate::proc::cmdline_of(&pid.to_string()).contains("system service")
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = fs_err::remove_file(pid_file(root));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_name_the_socket_unless_env_does() {
        let v = vars(Engine::Podman, "unix:///s/podman.sock", &[]);
        assert_eq!(vars(Engine::Docker, "unix:///d", &[]).len(), 1);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "DOCKER_HOST");
        assert_eq!(v[1].value, "unix:///s/podman.sock");
        let own = vars(
            Engine::Podman,
            "unix:///x",
            &[("DOCKER_HOST".into(), "tcp://h:1".into())],
        );
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].name, "CONTAINER_HOST");
    }
}
