//! Container API sockets: where podman and Docker listen, and whether they answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::env::Env;

/// One API endpoint found on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Socket {
    /// Always a `unix://` or `tcp://` URL: `unix:///run/podman/podman.sock`,
    /// `tcp://127.0.0.1:2375`; `null` when the variable held something else
    /// (never echoed: it may carry credentials).
    pub url: Option<String>,
    /// Where podstack learnt of it: an environment variable or a well-known path.
    pub source: String,
    /// `podman` or `docker`: which engine the location belongs to.
    pub engine: String,
    /// Whether `GET /_ping` answered 200 within the time allowed; `null`
    /// when it could not be asked (a host name, which podstack never
    /// resolves, or an invalid URL).
    pub answers: Option<bool>,
    /// Why the location is unusable, when it is.
    pub error: Option<String>,
}

/// The candidate endpoints, in the order podman and Docker clients consult them.
pub fn candidates(env: &Env, root: &Path) -> Vec<Socket> {
    let mut out: Vec<Socket> = Vec::new();
    let mut push = |url: Result<String, String>, source: &str, engine: &str| {
        let (url, error) = match url {
            Ok(u) => (Some(u), None),
            Err(e) => (None, Some(e)),
        };
        if url.is_none() || !out.iter().any(|s| s.url == url) {
            out.push(Socket {
                url,
                source: source.to_string(),
                engine: engine.to_string(),
                answers: None,
                error,
            });
        }
    };
    if let Some(v) = env.get("CONTAINER_HOST") {
        push(normalise(v, "CONTAINER_HOST"), "CONTAINER_HOST", "podman");
    }
    if let Some(dir) = env.abs_path("XDG_RUNTIME_DIR") {
        let p = dir.join("podman/podman.sock");
        if exists(root, &p) {
            push(Ok(unix_url(&p)), "XDG_RUNTIME_DIR", "podman");
        }
    }
    for (p, engine) in [
        ("/run/podman/podman.sock", "podman"),
        ("/var/run/docker.sock", "docker"),
    ] {
        if exists(root, Path::new(p)) {
            push(Ok(unix_url(Path::new(p))), p, engine);
        }
    }
    if let Some(v) = env.get("DOCKER_HOST") {
        push(normalise(v, "DOCKER_HOST"), "DOCKER_HOST", "docker");
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

/// A socket location from variable `var` as a URL (bare paths get
/// `unix://`); anything but a `unix://` or `tcp://` URL is an error that
/// does not repeat the value.
pub fn normalise(v: &str, var: &str) -> Result<String, String> {
    let v = v.trim();
    if v.starts_with('/') {
        return Ok(format!("unix://{v}"));
    }
    let ok = match (v.strip_prefix("unix://"), v.strip_prefix("tcp://")) {
        (Some(path), _) => path.starts_with('/') && !path.contains(char::is_control),
        (_, Some(addr)) => {
            !addr.is_empty()
                && addr
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]/_".contains(c))
        }
        _ => false,
    };
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!(
            "{var} is not a unix:///PATH or tcp://HOST:PORT URL; clients will not reach an engine through it"
        ))
    }
}

/// Pings every URL at once; all answers come within `budget` in all (a
/// socket that has not answered by then counts as not answering).
pub fn ping_all<'a>(
    urls: impl Iterator<Item = Option<&'a str>>,
    budget: Duration,
) -> Vec<Option<bool>> {
    let deadline = Instant::now() + budget;
    let pending: Vec<Option<mpsc::Receiver<Option<bool>>>> = urls
        .map(|url| {
            let url = url?.to_string();
            let (tx, rx) = mpsc::channel();
            // A socket that never answers must not hold podstack: the thread is
            // left behind at the deadline and ends with the process.
            std::thread::spawn(move || {
                let _ = tx.send(ping(&url, deadline));
            });
            Some(rx)
        })
        .collect();
    pending
        .into_iter()
        .map(|rx| {
            let rx = rx?;
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(answer) => answer,
                Err(_) => Some(false),
            }
        })
        .collect()
}

/// Asks `GET /_ping`, done by `deadline` whatever the socket does (a peer
/// that trickles bytes cannot stretch it). `None` when the URL cannot be
/// asked without a name look-up or is of an unknown scheme.
pub fn ping(url: &str, deadline: Instant) -> Option<bool> {
    let request = b"GET /_ping HTTP/1.0\r\nHost: podstack\r\n\r\n";
    if let Some(path) = url.strip_prefix("unix://") {
        let s = UnixStream::connect(PathBuf::from(path)).ok();
        return Some(s.is_some_and(|mut s| {
            exchange(&mut s, request, deadline, |s, t| {
                s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t))
            })
        }));
    }
    if let Some(rest) = url.strip_prefix("tcp://") {
        let addr: SocketAddr = rest.trim_end_matches('/').parse().ok()?;
        let left = deadline.saturating_duration_since(Instant::now());
        let s = TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(1))).ok();
        return Some(s.is_some_and(|mut s| {
            exchange(&mut s, request, deadline, |s, t| {
                s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t))
            })
        }));
    }
    None
}

fn exchange<S: Read + Write>(
    s: &mut S,
    request: &[u8],
    deadline: Instant,
    set_timeout: impl Fn(&S, Option<Duration>) -> std::io::Result<()>,
) -> bool {
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        (!d.is_zero()).then_some(d)
    };
    let Some(t) = left() else { return false };
    if set_timeout(s, Some(t)).is_err() || s.write_all(request).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < buf.len() {
        let Some(t) = left() else { return false };
        if set_timeout(s, Some(t)).is_err() {
            return false;
        }
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
    fn bare_paths_become_unix_urls_and_other_schemes_are_invalid() {
        assert_eq!(
            normalise("/run/x.sock", "V"),
            Ok("unix:///run/x.sock".into())
        );
        assert_eq!(
            normalise("tcp://127.0.0.1:2375", "V"),
            Ok("tcp://127.0.0.1:2375".into())
        );
        for bad in [
            "ssh://user:secret@host",
            "npipe:////./pipe/x",
            "garbage",
            "unix://rel",
            "tcp://",
        ] {
            let e = normalise(bad, "DOCKER_HOST").unwrap_err();
            assert!(e.starts_with("DOCKER_HOST is not"), "{e}");
            assert!(!e.contains("secret") && !e.contains("garbage"), "{e}");
        }
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
            ("CONTAINER_HOST", "ssh://core@host/run/podman.sock"),
        ]);
        let found = candidates(&env, root.path());
        assert_eq!(found[0].url, None);
        assert_eq!(found[0].source, "CONTAINER_HOST");
        assert!(found[0].error.is_some());
        assert_eq!(
            found[1].url.as_deref(),
            Some("unix:///run/user/7/podman/podman.sock")
        );
        assert_eq!(found[2].url.as_deref(), Some("unix:///var/run/other.sock"));
        assert_eq!(found[2].engine, "docker");
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
        let soon = || Instant::now() + Duration::from_secs(2);
        assert_eq!(ping(&url, soon()), Some(true));
        server.join().unwrap();
        fs_err::remove_file(&path).unwrap();
        assert_eq!(ping(&url, soon()), Some(false));
        assert_eq!(ping("tcp://docker:2375", soon()), None);
    }

    #[test]
    fn a_trickling_socket_cannot_stretch_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slow.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            for b in b"HTTP/1.1 200 OK\r\n" {
                std::thread::sleep(Duration::from_millis(200));
                if s.write_all(&[*b]).is_err() {
                    return;
                }
            }
        });
        // A listener that accepts nothing at all, too.
        let silent = dir.path().join("silent.sock");
        let _held = UnixListener::bind(&silent).unwrap();
        let start = Instant::now();
        let urls = [unix_url(&path), unix_url(&silent)];
        let answers = ping_all(
            urls.iter().map(|u| Some(u.as_str())),
            Duration::from_millis(500),
        );
        let took = start.elapsed();
        assert_eq!(answers, vec![Some(false), Some(false)]);
        assert!(took < Duration::from_millis(900), "took {took:?}");
    }
}
