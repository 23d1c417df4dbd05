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
use crate::stack::file::{Ready, Service, StackFile};
use crate::stack::net::{self, Mode};

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
    /// Those of `depends_on` waited for only to start.
    pub start_only: Vec<String>,
    /// Ready when its container exits 0.
    pub job: bool,
    /// Start + ready deadline.
    pub timeout: Duration,
    /// Restarts allowed before ready.
    pub retries: u32,
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
    /// A command in the service's container (`ENGINE exec CONTAINER ...`).
    Container {
        /// The container.
        container: String,
        /// The command.
        argv: Vec<String>,
        /// How long one check may take.
        check_timeout: std::time::Duration,
    },
}

/// Bytes as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The named volumes (not host paths) among `volumes` (pure).
pub fn named_volumes(volumes: &[String]) -> Vec<String> {
    volumes
        .iter()
        .filter_map(|v| v.split(':').next())
        .filter(|src| !src.starts_with('/') && !src.starts_with('.') && !src.is_empty())
        .map(str::to_string)
        .collect()
}

/// What every service of one `up` is resolved against.
#[derive(Clone, Debug)]
pub struct Scope<'a> {
    /// The project name.
    pub project: &'a str,
    /// The networking chosen for this host.
    pub mode: Mode,
    /// The address variables of that mode ([`net::vars`]).
    pub vars: BTreeMap<String, String>,
    /// The engine names of the stack's networks, by key.
    pub networks: BTreeMap<String, String>,
    /// The secrets' values.
    pub secrets: &'a BTreeMap<String, Secret>,
    /// The key that hashes secret values.
    pub key: &'a str,
    /// The stack file's folder: relative host paths start there.
    pub base: std::path::PathBuf,
    /// The stack's host names (service and container names, aliases),
    /// mapped to 127.0.0.1 in host mode.
    pub hosts: Vec<String>,
}

impl<'a> Scope<'a> {
    /// The scope of `file` in `mode`.
    pub fn new(
        project: &'a str,
        file: &StackFile,
        mode: Mode,
        secrets: &'a BTreeMap<String, Secret>,
        key: &'a str,
    ) -> Self {
        Scope {
            project,
            mode,
            vars: net::vars(project, file, mode),
            networks: net::networks(project, file).into_iter().collect(),
            secrets,
            key,
            hosts: net::host_names(project, file),
            base: file
                .path
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default(),
        }
    }

    /// Fills the `${...}` of `text` (see [`net::expand`]).
    pub fn expand(&self, text: &str) -> Result<(String, bool)> {
        net::expand(text, &self.vars, self.secrets)
    }
}

/// Resolves service `s` in `scope`.
pub fn resolve(scope: &Scope<'_>, s: &Service) -> Result<Resolved> {
    let project = scope.project;
    let container = net::container_name(project, s);
    let mut spec = ContainerSpec::new(Image::Name(s.image.clone()));
    spec.name = Some(container.clone());
    spec.detach = false;
    let plain = |args: &Option<Vec<String>>| -> Result<Option<Vec<String>>> {
        args.as_ref()
            .map(|a| {
                a.iter()
                    .map(|x| net::expand_command(x, &scope.vars, scope.secrets))
                    .collect()
            })
            .transpose()
    };
    spec.entrypoint = plain(&s.entrypoint)?;
    spec.command = plain(&s.command)?.unwrap_or_default();
    spec.volumes = s
        .volumes
        .iter()
        .map(|v| {
            // `./data:/x` and `../data:/x` are relative to the stack file.
            let (src, rest) = v.split_once(':').unwrap_or((v, ""));
            if src == "." || src == ".." || src.starts_with("./") || src.starts_with("../") {
                // Lexically: `.` parts dropped, `..` taken off the path.
                let mut path = scope.base.clone();
                for part in std::path::Path::new(src).components() {
                    match part {
                        std::path::Component::ParentDir => {
                            path.pop();
                        }
                        std::path::Component::Normal(p) => path.push(p),
                        _ => {}
                    }
                }
                format!("{}:{rest}", path.display())
            } else {
                v.clone()
            }
        })
        .collect();
    spec.flags = s.run.flags();
    let mut hasher = Sha256::new();
    let mut feed = |part: &str| {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    };
    feed("podstack definition 2");
    feed(&s.image);
    feed(&format!("{:?}", spec.entrypoint));
    feed(&format!("{:?}", spec.command));
    feed(&format!("{:?}", spec.flags));
    if s.job {
        feed("job");
    }
    match scope.mode {
        Mode::Host => {
            for p in &s.ports {
                if p.host != p.container {
                    bail!(
                        "{}: service {} maps port {} to {}, which cannot hold on the host network (network mode host); make it listen on {} (pass ${{services.{}.port}} in its command) and write ports = [{}]",
                        scope.project,
                        s.name,
                        p.host,
                        p.container,
                        p.host,
                        s.name,
                        p.host
                    );
                }
            }
            spec.network = NetworkMode::Host;
            feed("host");
            // Service names resolve to the host's loopback, where every
            // service listens on the host's network.
            for h in &scope.hosts {
                spec.flags.push("--add-host".into());
                spec.flags.push(format!("{h}:127.0.0.1"));
                feed(h);
            }
        }
        Mode::Isolated => {
            let nets: Vec<String> = net::service_networks(s)
                .iter()
                .map(|k| {
                    scope
                        .networks
                        .get(k)
                        .cloned()
                        .unwrap_or_else(|| format!("{project}-{k}"))
                })
                .collect();
            feed("isolated");
            for n in &nets {
                feed(n);
            }
            spec.network = NetworkMode::Networks(nets);
            spec.aliases = s.aliases.clone();
            for a in &s.aliases {
                feed(a);
            }
            spec.publish = s
                .ports
                .iter()
                .map(|p| {
                    let ip = p.ip.map_or("127.0.0.1".to_string(), |ip| match ip {
                        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                        v4 => v4.to_string(),
                    });
                    format!("{ip}:{}:{}", p.host, p.container)
                })
                .collect();
            for p in &spec.publish {
                feed(p);
            }
        }
    }
    for v in &spec.volumes {
        feed(v);
    }
    for p in &s.ports {
        feed(&format!("{}:{}", p.host, p.container));
    }
    let mut keyed = false;
    for (k, raw) in &s.env {
        let (value, secret) = scope.expand(raw)?;
        feed(k);
        feed(&value);
        if secret && !keyed {
            feed(scope.key);
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
                .map(|p| scope.expand(p).map(|(v, _)| Secret::new(v)))
                .transpose()?,
            database: database.clone(),
        }),
        Some(Ready::Exec(argv)) => Some(Probe::Exec(
            argv.iter()
                .map(|a| net::expand_command(a, &scope.vars, scope.secrets))
                .collect::<Result<_>>()?,
        )),
        Some(Ready::Container {
            argv,
            check_timeout,
        }) => Some(Probe::Container {
            check_timeout: *check_timeout,
            container: container.clone(),
            argv: argv
                .iter()
                .map(|a| net::expand_command(a, &scope.vars, scope.secrets))
                .collect::<Result<_>>()?,
        }),
    };
    Ok(Resolved {
        service: s.name.clone(),
        container,
        image: s.image.clone(),
        build: s.build.clone(),
        spec,
        hash,
        ready,
        ports: s.ports.iter().map(|p| p.host).collect(),
        depends_on: s.depends_on.clone(),
        start_only: s.start_only.clone(),
        job: s.job,
        timeout: s.timeout,
        retries: s.retries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::file;
    use std::path::Path;

    fn res(
        f: &StackFile,
        i: usize,
        secrets: &BTreeMap<String, Secret>,
        key: &str,
    ) -> Result<Resolved> {
        resolve(
            &Scope::new("props", f, Mode::Host, secrets, key),
            &f.services[i],
        )
    }

    #[test]
    fn isolated_mode_attaches_networks_publishes_ports_and_changes_the_hash() {
        let text = "[networks.internal]\n[networks.agents]\n[services.db]\nimage = \"pg\"\nnetworks = [\"internal\", \"agents\"]\naliases = [\"props-db\"]\nports = [\"35433:5432\"]\nenv = { ME = \"${services.db.host}:${services.db.port}\" }\n";
        let f = file::parse(Path::new("p.toml"), text).unwrap();
        let s = secrets();
        let iso = resolve(
            &Scope::new("props", &f, Mode::Isolated, &s, "k"),
            &f.services[0],
        )
        .unwrap();
        assert_eq!(
            iso.spec.network,
            NetworkMode::Networks(vec!["props-internal".into(), "props-agents".into()])
        );
        assert_eq!(iso.spec.publish, ["127.0.0.1:35433:5432"]);
        assert_eq!(iso.ports, [35433]);
        assert_eq!(iso.spec.env[0].1, EnvValue::Plain("props-db:5432".into()));
        // The same file in host mode refuses the pair, naming the service.
        let e = resolve(
            &Scope::new("props", &f, Mode::Host, &s, "k"),
            &f.services[0],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("service db maps port 35433 to 5432"), "{e}");
    }

    fn secrets() -> BTreeMap<String, Secret> {
        [("pg_password".to_string(), Secret::new("s3cret"))]
            .into_iter()
            .collect()
    }

    #[test]
    fn secrets_are_filled_and_kept_off_the_spec_debug() {
        let f = file::parse(Path::new("p.toml"), file::STARTER).unwrap();
        let r = res(&f, 0, &secrets(), "k").unwrap();
        assert_eq!(r.container, "props-postgres");
        assert_eq!(
            named_volumes(&f.services[0].volumes),
            ["props_eval_results_data"]
        );
        assert!(!format!("{r:?}").contains("s3cret"));
        assert!(
            matches!(&r.ready, Some(Probe::Postgres { password: Some(p), .. }) if p.expose() == "s3cret")
        );
        assert_eq!(r.spec.labels[LABEL_HASH], r.hash);
    }

    #[test]
    fn the_hash_changes_with_the_definition_and_the_secret_only() {
        let f = file::parse(Path::new("p.toml"), file::STARTER).unwrap();
        let a = res(&f, 0, &secrets(), "k").unwrap().hash;
        assert_eq!(a, res(&f, 0, &secrets(), "k").unwrap().hash);
        let mut changed = f.services[0].clone();
        changed.env.push(("X".into(), "1".into()));
        assert_ne!(
            a,
            resolve(
                &Scope::new("props", &f, Mode::Host, &secrets(), "k"),
                &changed
            )
            .unwrap()
            .hash
        );
        let other: BTreeMap<String, Secret> = [("pg_password".to_string(), Secret::new("other"))]
            .into_iter()
            .collect();
        let mine: BTreeMap<String, Secret> = [("pg_password".to_string(), Secret::new("mine"))]
            .into_iter()
            .collect();
        assert_ne!(
            res(&f, 0, &other, "k").unwrap().hash,
            res(&f, 0, &mine, "k").unwrap().hash
        );
        // The key enters only hashes that hold a secret.
        assert_ne!(
            res(&f, 0, &mine, "k").unwrap().hash,
            res(&f, 0, &mine, "other key").unwrap().hash
        );
        assert_eq!(
            res(&f, 1, &mine, "k").unwrap().hash,
            res(&f, 1, &mine, "other key").unwrap().hash
        );
        // Other services' hashes do not move.
        assert_eq!(
            res(&f, 1, &other, "k").unwrap().hash,
            res(&f, 1, &mine, "k").unwrap().hash
        );
    }
}
