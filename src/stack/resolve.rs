//! From a checked service and the stack's secrets to what the engine runs:
//! a container spec, its labels and its definition hash (pure).
//!
//! The hash covers everything that shapes the container (image, entrypoint,
//! command, environment with secret values, volumes, ports, network), so a
//! re-run recreates exactly the services whose definition changed. Secret
//! values enter the hash only through SHA-256; they are never stored.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use sha2::{Digest, Sha256};

use crate::engine::{ContainerSpec, EnvValue, Image, NetworkMode, Secret};
use crate::stack::file::{Ready, Service};

/// Label: the project a container belongs to.
pub const LABEL_PROJECT: &str = "io.podstack.project";
/// Label: the service it runs.
pub const LABEL_SERVICE: &str = "io.podstack.service";
/// Label: the hash of its resolved definition.
pub const LABEL_HASH: &str = "io.podstack.hash";

/// A service ready to run.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The service name.
    pub service: String,
    /// The container name, `PROJECT-SERVICE`.
    pub container: String,
    /// The image.
    pub image: String,
    /// Its build command, if any.
    pub build: Option<String>,
    /// What the engine runs.
    pub spec: ContainerSpec,
    /// The definition hash (hex).
    pub hash: String,
    /// The probe, secrets filled in.
    pub ready: Option<Probe>,
    /// Host ports held.
    pub ports: Vec<u16>,
    /// Services to wait for.
    pub depends_on: Vec<String>,
    /// Start + ready deadline.
    pub timeout: Duration,
    /// Restarts allowed before ready.
    pub retries: u32,
    /// Named volumes (not host paths).
    pub named_volumes: Vec<String>,
}

/// A readiness probe with its secrets filled in.
#[derive(Clone, Debug)]
pub enum Probe {
    /// TCP connect.
    Tcp(std::net::SocketAddr),
    /// HTTP GET.
    Http {
        /// Where.
        addr: std::net::SocketAddr,
        /// Path.
        path: String,
        /// Accepted codes (empty: 2xx).
        status: Vec<u16>,
    },
    /// PostgreSQL login.
    Postgres {
        /// Where.
        addr: std::net::SocketAddr,
        /// User.
        user: String,
        /// Password.
        password: Option<Secret>,
        /// Database.
        database: Option<String>,
    },
    /// A host command.
    Exec(Vec<String>),
}

/// Bytes as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fills `${secrets.NAME}` (and `$${` for a literal `${`) in `text`.
/// Returns the text and whether a secret went into it.
pub fn substitute(text: &str, secrets: &BTreeMap<String, Secret>) -> Result<(String, bool)> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut secret = false;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find('}') else {
            bail!("an unclosed `${{` in a value");
        };
        let name = &after[..j];
        match name.strip_prefix("secrets.").and_then(|n| secrets.get(n)) {
            Some(v) => {
                out.push_str(v.expose());
                secret = true;
            }
            None => bail!("`${{{name}}}` is not a known secret"),
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok((out, secret))
}

/// Resolves one service of project `project`.
pub fn resolve(
    project: &str,
    s: &Service,
    secrets: &BTreeMap<String, Secret>,
    key: &str,
) -> Result<Resolved> {
    let container = format!("{project}-{}", s.name);
    let mut spec = ContainerSpec::new(Image::Name(s.image.clone()));
    spec.name = Some(container.clone());
    spec.detach = false;
    spec.network = NetworkMode::Host;
    spec.entrypoint = s.entrypoint.clone();
    spec.command = s.command.clone().unwrap_or_default();
    spec.volumes = s.volumes.clone();
    let mut hasher = Sha256::new();
    let mut feed = |part: &str| {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    };
    feed("podstack definition 1");
    feed(&s.image);
    feed(&format!("{:?}", s.entrypoint));
    feed(&format!("{:?}", s.command));
    feed("host");
    for v in &s.volumes {
        feed(v);
    }
    for p in &s.ports {
        feed(&p.to_string());
    }
    let mut keyed = false;
    for (k, raw) in &s.env {
        let (value, secret) = substitute(raw, secrets)?;
        feed(k);
        feed(&value);
        if secret && !keyed {
            feed(key);
            keyed = true;
        }
        spec.env.push((
            k.clone(),
            if secret {
                EnvValue::Secret(Secret::new(value))
            } else {
                EnvValue::Plain(value)
            },
        ));
    }
    let hash = hex(&hasher.finalize())[..16].to_string();
    spec.labels.insert(LABEL_PROJECT.into(), project.into());
    spec.labels.insert(LABEL_SERVICE.into(), s.name.clone());
    spec.labels.insert(LABEL_HASH.into(), hash.clone());
    let ready = match &s.ready {
        None => None,
        Some(Ready::Tcp(a)) => Some(Probe::Tcp(*a)),
        Some(Ready::Http {
            addr, path, status, ..
        }) => Some(Probe::Http {
            addr: *addr,
            path: path.clone(),
            status: status.clone(),
        }),
        Some(Ready::Postgres {
            addr,
            user,
            password,
            database,
        }) => Some(Probe::Postgres {
            addr: *addr,
            user: user.clone(),
            password: password
                .as_deref()
                .map(|p| substitute(p, secrets).map(|(v, _)| Secret::new(v)))
                .transpose()?,
            database: database.clone(),
        }),
        Some(Ready::Exec(argv)) => Some(Probe::Exec(argv.clone())),
    };
    let named_volumes = s
        .volumes
        .iter()
        .filter_map(|v| v.split(':').next())
        .filter(|src| !src.starts_with('/') && !src.starts_with('.') && !src.is_empty())
        .map(str::to_string)
        .collect();
    Ok(Resolved {
        service: s.name.clone(),
        container,
        image: s.image.clone(),
        build: s.build.clone(),
        spec,
        hash,
        ready,
        ports: s.ports.clone(),
        depends_on: s.depends_on.clone(),
        timeout: s.timeout,
        retries: s.retries,
        named_volumes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::file;
    use std::path::Path;

    fn secrets() -> BTreeMap<String, Secret> {
        [("pg_password".to_string(), Secret::new("s3cret"))]
            .into_iter()
            .collect()
    }

    #[test]
    fn secrets_are_filled_and_kept_off_the_spec_debug() {
        assert_eq!(
            substitute("a${secrets.pg_password}b", &secrets()).unwrap(),
            ("as3cretb".into(), true)
        );
        assert_eq!(
            substitute("$${x}", &secrets()).unwrap(),
            ("${x}".into(), false)
        );
        assert!(substitute("${secrets.nope}", &secrets()).is_err());
        let f = file::parse(Path::new("p.toml"), file::STARTER).unwrap();
        let r = resolve("props", &f.services[0], &secrets(), "k").unwrap();
        assert_eq!(r.container, "props-postgres");
        assert_eq!(r.named_volumes, ["props_eval_results_data"]);
        assert!(!format!("{r:?}").contains("s3cret"));
        assert!(
            matches!(&r.ready, Some(Probe::Postgres { password: Some(p), .. }) if p.expose() == "s3cret")
        );
        assert_eq!(r.spec.labels[LABEL_HASH], r.hash);
    }

    #[test]
    fn the_hash_changes_with_the_definition_and_the_secret_only() {
        let f = file::parse(Path::new("p.toml"), file::STARTER).unwrap();
        let a = resolve("props", &f.services[0], &secrets(), "k")
            .unwrap()
            .hash;
        assert_eq!(
            a,
            resolve("props", &f.services[0], &secrets(), "k")
                .unwrap()
                .hash
        );
        let mut changed = f.services[0].clone();
        changed.env.push(("X".into(), "1".into()));
        assert_ne!(a, resolve("props", &changed, &secrets(), "k").unwrap().hash);
        let other: BTreeMap<String, Secret> = [("pg_password".to_string(), Secret::new("other"))]
            .into_iter()
            .collect();
        let mine: BTreeMap<String, Secret> = [("pg_password".to_string(), Secret::new("mine"))]
            .into_iter()
            .collect();
        assert_ne!(
            resolve("props", &f.services[0], &other, "k").unwrap().hash,
            resolve("props", &f.services[0], &mine, "k").unwrap().hash
        );
        // The key enters only hashes that hold a secret.
        assert_ne!(
            resolve("props", &f.services[0], &mine, "k").unwrap().hash,
            resolve("props", &f.services[0], &mine, "other key")
                .unwrap()
                .hash
        );
        assert_eq!(
            resolve("props", &f.services[1], &mine, "k").unwrap().hash,
            resolve("props", &f.services[1], &mine, "other key")
                .unwrap()
                .hash
        );
        // Other services' hashes do not move.
        assert_eq!(
            resolve("props", &f.services[1], &other, "k").unwrap().hash,
            resolve("props", &f.services[1], &mine, "k").unwrap().hash
        );
    }
}
