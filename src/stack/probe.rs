//! Readiness probes, run from the host: nothing is needed in the image and
//! nothing depends on podman's healthchecks (they need systemd timers, which
//! these sandboxes do not run).
//!
//! Each probe is bounded by a short deadline and says one of: ready, not
//! yet (with the last error), or failed for good (a wrong password will not
//! fix itself by waiting).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proc::Cmd;
use crate::stack::client::Client;
use crate::stack::resolve::Probe;

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Ready.
    Ready,
    /// Not yet: the last error.
    NotYet(String),
    /// Failed in a way waiting cannot fix.
    Fatal(String),
}

/// One probe's deadline.
const STEP: Duration = Duration::from_secs(2);

/// Runs `probe` once. `warm` asks for the cheapest check that still tells a
/// stopped or replaced service (a PostgreSQL startup exchange instead of a
/// full login).
///
/// A command in a container runs through `engine`'s exec; with no engine
/// (or `warm`, where the container's process was just seen alive) it counts
/// as ready.
pub async fn check(probe: &Probe, warm: bool, engine: Option<&Client>) -> Verdict {
    // A check in the container is waited for to its own timeout: one
    // abandoned by the client would go on running in the container.
    let bound = match probe {
        Probe::Container { check_timeout, .. } => *check_timeout,
        _ => STEP * 2,
    };
    let r = tokio::time::timeout(bound, async {
        match probe {
            Probe::Tcp(addr) => tcp(*addr)
                .await
                .map(|_| Verdict::Ready)
                .unwrap_or_else(Verdict::NotYet),
            Probe::Http { addr, path, status } => http(*addr, path, status).await,
            Probe::Postgres {
                addr,
                user,
                database,
                ..
            } if warm => pg_startup(*addr, user, database.as_deref().unwrap_or(user)).await,
            Probe::Postgres {
                addr,
                user,
                password,
                database,
            } => {
                postgres(
                    *addr,
                    user,
                    password.as_ref().map(|p| p.expose()),
                    database.as_deref(),
                )
                .await
            }
            Probe::Exec(argv) => exec(argv, &[], Duration::from_secs(10)).await,
            Probe::Container {
                container,
                argv,
                check_timeout,
            } => match engine {
                Some(c) if !warm => {
                    let mut full = vec![c.path.to_string_lossy().into_owned(), "exec".into()];
                    full.push(container.clone());
                    full.extend(argv.iter().cloned());
                    exec(&full, &c.env, *check_timeout).await
                }
                _ => Verdict::Ready,
            },
        }
    })
    .await;
    r.unwrap_or_else(|_| match probe {
        Probe::Container {
            container, argv, ..
        } => Verdict::NotYet(format!(
            "`{}` in {container} gave no answer within {} s",
            argv.join(" "),
            bound.as_secs()
        )),
        _ => Verdict::NotYet(format!("no answer within {} s", bound.as_secs())),
    })
}

async fn tcp(addr: SocketAddr) -> Result<TcpStream, String> {
    match tokio::time::timeout(STEP, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("connect {addr}: {e}")),
        Err(_) => Err(format!("connect {addr}: no answer within 2 s")),
    }
}

async fn http(addr: SocketAddr, path: &str, status: &[u16]) -> Verdict {
    let mut s = match tcp(addr).await {
        Ok(s) => s,
        Err(e) => return Verdict::NotYet(e),
    };
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: podstack\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = s.write_all(req.as_bytes()).await {
        return Verdict::NotYet(format!("GET http://{addr}{path}: {e}"));
    }
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 1024 {
        match s.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Verdict::NotYet(format!("GET http://{addr}{path}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or("");
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(c) if status.contains(&c) || (status.is_empty() && (200..300).contains(&c)) => {
            Verdict::Ready
        }
        Some(c) => Verdict::NotYet(format!(
            "GET http://{addr}{path} answered {c}, expected {}",
            if status.is_empty() {
                "2xx".to_string()
            } else {
                status
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            }
        )),
        None => Verdict::NotYet(format!("GET http://{addr}{path}: not an HTTP answer")),
    }
}

/// A full login and `SELECT 1`, with libpq's ping semantics: a server that
/// is starting (57P03) or refusing connections is not ready yet; a wrong
/// password is final.
async fn postgres(
    addr: SocketAddr,
    user: &str,
    password: Option<&str>,
    database: Option<&str>,
) -> Verdict {
    match tcp(addr).await {
        Ok(s) => crate::stack::pg::ping(s, addr, user, password, database.unwrap_or(user)).await,
        Err(e) => Verdict::NotYet(e),
    }
}

/// The warm path's PostgreSQL probe (see [`crate::stack::pg::startup`]).
async fn pg_startup(addr: SocketAddr, user: &str, database: &str) -> Verdict {
    match tcp(addr).await {
        Ok(s) => crate::stack::pg::startup(s, addr, user, database).await,
        Err(e) => Verdict::NotYet(e),
    }
}

async fn exec(argv: &[String], env: &[(String, String)], timeout: Duration) -> Verdict {
    let Some((program, args)) = argv.split_first() else {
        return Verdict::Fatal("empty exec probe".into());
    };
    let mut cmd = Cmd::new(program).args(args);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    match cmd.timeout(timeout).run().await {
        Ok(out) if out.success() => Verdict::Ready,
        Ok(out) => Verdict::NotYet(format!(
            "`{}` {}: {}",
            out.display,
            out.ending(),
            out.tail(1)
        )),
        Err(e) => Verdict::Fatal(format!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn http_and_tcp_against_real_sockets() {
        rt().block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let (mut s, _) = l.accept().await.unwrap();
                    let mut b = [0u8; 512];
                    let _ = s.read(&mut b).await;
                    let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\n\r\n").await;
                }
            });
            assert_eq!(check(&Probe::Tcp(addr), false, None).await, Verdict::Ready);
            let http = |status: Vec<u16>| Probe::Http { addr, path: "/v2/".into(), status };
            assert_eq!(check(&http(vec![200, 401]), false, None).await, Verdict::Ready);
            assert!(matches!(check(&http(vec![]), false, None).await, Verdict::NotYet(e) if e.contains("answered 401, expected 2xx")));
            let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
            assert!(matches!(check(&Probe::Tcp(closed), false, None).await, Verdict::NotYet(e) if e.contains("connect")));
            assert_eq!(check(&Probe::Exec(vec!["true".into()]), false, None).await, Verdict::Ready);
            assert!(matches!(check(&Probe::Exec(vec!["false".into()]), false, None).await, Verdict::NotYet(_)));
        });
    }

    #[test]
    fn a_postgres_that_is_starting_up_is_not_ready_yet() {
        rt().block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let (mut s, _) = l.accept().await.unwrap();
                    let mut b = [0u8; 512];
                    let _ = s.read(&mut b).await;
                    let fields = b"SFATAL\0C57P03\0Mthe database system is starting up\0\0";
                    let mut msg = vec![b'E'];
                    msg.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
                    msg.extend_from_slice(fields);
                    let _ = s.write_all(&msg).await;
                }
            });
            let warm = Probe::Postgres { addr, user: "postgres".into(), password: None, database: None };
            assert!(matches!(check(&warm, true, None).await, Verdict::NotYet(e) if e.contains("starting up")), "warm");
            assert!(matches!(check(&warm, false, None).await, Verdict::NotYet(e) if e.contains("starting up")), "cold");
        });
    }
}
