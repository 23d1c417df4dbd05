//! Container API sockets: where podman and Docker listen, and whether they answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::env::Env;

/// One API endpoint found on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Socket {
    /// Always a URL: `unix:///run/podman/podman.sock`, `tcp://127.0.0.1:2375`.
    pub url: String,
    /// Where podstack learnt of it: an environment variable or a well-known path.
    pub source: String,
    /// `podman` or `docker`: which engine the location belongs to.
    pub engine: String,
    /// Whether `GET /_ping` answered 200; `null` when it could not be asked
    /// (a host name, which podstack never resolves).
    pub answers: Option<bool>,
}

/// The candidate endpoints, in the order podman and Docker clients consult them.
pub fn candidates(env: &Env, root: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut push = |url: String, source: &str, engine: &str| {
        if !out
            .iter()
            .any(|(u, _, _): &(String, String, String)| *u == url)
        {
            out.push((url, source.to_string(), engine.to_string()));
        }
    };
    if let Some(v) = env.get("CONTAINER_HOST") {
        push(normalise(v), "CONTAINER_HOST", "podman");
    }
    if let Some(dir) = env.abs_path("XDG_RUNTIME_DIR") {
        let p = dir.join("podman/podman.sock");
        if exists(root, &p) {
            push(unix_url(&p), "XDG_RUNTIME_DIR", "podman");
        }
    }
    for (p, engine) in [
        ("/run/podman/podman.sock", "podman"),
        ("/var/run/docker.sock", "docker"),
    ] {
        if exists(root, Path::new(p)) {
            push(unix_url(Path::new(p)), p, engine);
        }
    }
    if let Some(v) = env.get("DOCKER_HOST") {
        push(normalise(v), "DOCKER_HOST", "docker");
    }
    out
}

fn exists(root: &Path, p: &Path) -> bool {
    root.join(p.strip_prefix("/").unwrap_or(p)).exists()
}

/// `unix://` + path: a bare path would be taken for a TCP host by clients.
pub fn unix_url(p: &Path) -> String {
    format!("unix://{}", p.display())
}

/// A socket location as a URL (bare paths get `unix://`).
pub fn normalise(v: &str) -> String {
    if v.starts_with('/') {
        format!("unix://{v}")
    } else {
        v.to_string()
    }
}

/// Asks `GET /_ping` with a short deadline. `None` when the URL cannot be
/// asked without a name look-up or is of an unknown scheme.
pub fn ping(url: &str, timeout: Duration) -> Option<bool> {
    let request = b"GET /_ping HTTP/1.0\r\nHost: podstack\r\n\r\n";
    if let Some(path) = url.strip_prefix("unix://") {
        let s = UnixStream::connect(PathBuf::from(path)).ok();
        return Some(s.is_some_and(|mut s| {
            s.set_read_timeout(Some(timeout)).is_ok()
                && s.set_write_timeout(Some(timeout)).is_ok()
                && exchange(&mut s, request)
        }));
    }
    if let Some(rest) = url.strip_prefix("tcp://") {
        let addr: SocketAddr = rest.trim_end_matches('/').parse().ok()?;
        let s = TcpStream::connect_timeout(&addr, timeout).ok();
        return Some(s.is_some_and(|mut s| {
            s.set_read_timeout(Some(timeout)).is_ok()
                && s.set_write_timeout(Some(timeout)).is_ok()
                && exchange(&mut s, request)
        }));
    }
    None
}

fn exchange(s: &mut (impl Read + Write), request: &[u8]) -> bool {
    if s.write_all(request).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        if buf[..got].contains(&b'\n') {
            break;
        }
    }
    status_is_200(&buf[..got])
}

/// Whether an HTTP status line says 200.
pub fn status_is_200(head: &[u8]) -> bool {
    let line = head.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let mut words = line.split(|b| *b == b' ');
    words.next().is_some_and(|v| v.starts_with(b"HTTP/")) && words.next() == Some(b"200")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn bare_paths_become_unix_urls() {
        assert_eq!(normalise("/run/x.sock"), "unix:///run/x.sock");
        assert_eq!(normalise("tcp://127.0.0.1:2375"), "tcp://127.0.0.1:2375");
    }

    #[test]
    fn status_lines() {
        assert!(status_is_200(b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\n"));
        assert!(!status_is_200(b"HTTP/1.1 404 Not Found\r\n"));
        assert!(!status_is_200(b""));
    }

    #[test]
    fn candidates_come_from_env_and_well_known_paths() {
        let root = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(root.path().join("run/user/7/podman")).unwrap();
        fs_err::write(root.path().join("run/user/7/podman/podman.sock"), "").unwrap();
        let env = Env::from_pairs([
            ("XDG_RUNTIME_DIR", "/run/user/7"),
            ("DOCKER_HOST", "/var/run/other.sock"),
        ]);
        let found = candidates(&env, root.path());
        assert_eq!(found[0].0, "unix:///run/user/7/podman/podman.sock");
        assert_eq!(
            found[1],
            (
                "unix:///var/run/other.sock".into(),
                "DOCKER_HOST".into(),
                "docker".into()
            )
        );
    }

    #[test]
    fn ping_talks_http_over_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"GET /_ping "));
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
                .unwrap();
        });
        let url = unix_url(&path);
        assert_eq!(ping(&url, Duration::from_secs(2)), Some(true));
        server.join().unwrap();
        fs_err::remove_file(&path).unwrap();
        assert_eq!(ping(&url, Duration::from_millis(200)), Some(false));
        assert_eq!(ping("tcp://docker:2375", Duration::from_millis(200)), None);
    }
}
