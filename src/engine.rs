//! The engine seam: a container is described once ([`ContainerSpec`]) and
//! turned into an engine's command line by a pure function ([`run_argv`]),
//! so podman and Docker differ in one table-like place and every flag is
//! unit-tested without starting anything.
//!
//! Secret values never go on a command line (any user can read
//! `/proc/PID/cmdline`): an environment variable holding a [`Secret`] is
//! passed as `--env NAME` and its value through the engine process's own
//! environment ([`Argv::env`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::Serialize;

/// A container engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// podman.
    Podman,
    /// Docker.
    Docker,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Podman => "podman",
            Engine::Docker => "docker",
        })
    }
}

/// Which network a container joins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The engine's configured default (no flag).
    Default,
    /// The host's network namespace.
    Host,
    /// These user networks (engine names), the first one first.
    Networks(Vec<String>),
}

/// A value that must not be shown: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that must hand it on.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An environment value for a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvValue {
    /// Shown on the command line.
    Plain(String),
    /// Passed through the engine's environment, never shown.
    Secret(Secret),
}

/// What a container runs from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Image {
    /// An image by name.
    Name(String),
    /// A folder used as the whole root file system (podman `--rootfs`).
    Rootfs(PathBuf),
}

/// One container, described independently of the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSpec {
    /// `--name`, when the container has one.
    pub name: Option<String>,
    /// What it runs from.
    pub image: Image,
    /// Replaces the image's ENTRYPOINT.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's CMD (after the image).
    pub command: Vec<String>,
    /// Environment variables, in order.
    pub env: Vec<(String, EnvValue)>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `SOURCE:TARGET[:OPTIONS]` volumes.
    pub volumes: Vec<String>,
    /// The network.
    pub network: NetworkMode,
    /// Other names of the container on its networks.
    pub aliases: Vec<String>,
    /// Published ports, `IP:HOST:CONTAINER`.
    pub publish: Vec<String>,
    /// Further flags, passed as they are (`--user`, `--ulimit` ...).
    pub flags: Vec<String>,
    /// Remove the container when it exits (`--rm`).
    pub remove: bool,
    /// Return once it started (`--detach`).
    pub detach: bool,
}

impl ContainerSpec {
    /// A spec with defaults: no name, no env, default network, kept, attached.
    pub fn new(image: Image) -> Self {
        Self {
            name: None,
            image,
            entrypoint: None,
            command: Vec::new(),
            env: Vec::new(),
            labels: BTreeMap::new(),
            volumes: Vec::new(),
            network: NetworkMode::Default,
            aliases: Vec::new(),
            publish: Vec::new(),
            flags: Vec::new(),
            remove: false,
            detach: false,
        }
    }
}

/// An engine command line and the environment the engine process needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Argv {
    /// Arguments after the engine binary.
    pub args: Vec<OsString>,
    /// Variables for the engine process (secret values).
    pub env: Vec<(String, Secret)>,
    /// Networks to connect the container to after it is created, before it
    /// starts (`ENGINE network connect`): Docker's API before 1.44 takes one
    /// network at create.
    pub connect: Vec<String>,
}

/// Where podman and Docker differ, in one table (see [`Engine::dialect`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialect {
    /// `create`/`run` take several `--network` flags.
    pub many_networks_at_create: bool,
    /// Options that make a new bridge network unreachable from other
    /// networks (Docker isolates user networks by default; podman's netavark
    /// only when both ends carry `isolate=true`).
    pub isolate_opts: &'static [&'static str],
    /// Arguments of a forced, prompt removal.
    pub rm_force: &'static [&'static str],
    /// Runs a folder as the root file system (podman `--rootfs`).
    pub rootfs: bool,
    /// What the engine prints for a missing object.
    pub no_such: &'static [&'static str],
    /// `--entrypoint` takes a JSON array (podman); Docker takes one program,
    /// so its arguments go before the command.
    pub entrypoint_json: bool,
}

impl Engine {
    /// The differences of this engine.
    pub const fn dialect(self) -> Dialect {
        match self {
            Engine::Podman => Dialect {
                many_networks_at_create: true,
                isolate_opts: &["--opt", "isolate=true"],
                rm_force: &["rm", "--force", "--time", "3"],
                rootfs: true,
                no_such: &["no such", "not found", "does not exist"],
                entrypoint_json: true,
            },
            Engine::Docker => Dialect {
                many_networks_at_create: false,
                isolate_opts: &[],
                rm_force: &["rm", "--force"],
                rootfs: false,
                no_such: &["no such", "not found"],
                entrypoint_json: false,
            },
        }
    }
}

/// `ENGINE run ...` for `spec` (pure).
pub fn run_argv(engine: Engine, spec: &ContainerSpec) -> Result<Argv> {
    let mut args: Vec<OsString> = vec!["run".into()];
    let mut env = Vec::new();
    if spec.remove {
        args.push("--rm".into());
    }
    if spec.detach {
        args.push("--detach".into());
    }
    if let Some(name) = &spec.name {
        args.push("--name".into());
        args.push(name.into());
    }
    let mut connect = Vec::new();
    match &spec.network {
        NetworkMode::Default => {}
        NetworkMode::Host => args.push("--network=host".into()),
        NetworkMode::Networks(nets) => {
            let at_create = if engine.dialect().many_networks_at_create {
                nets.len()
            } else {
                1
            };
            for n in &nets[..at_create.min(nets.len())] {
                args.push("--network".into());
                args.push(n.into());
            }
            connect = nets[at_create.min(nets.len())..].to_vec();
            for a in &spec.aliases {
                args.push("--network-alias".into());
                args.push(a.into());
            }
        }
    }
    for p in &spec.publish {
        args.push("--publish".into());
        args.push(p.into());
    }
    for (k, v) in &spec.labels {
        args.push("--label".into());
        args.push(format!("{k}={v}").into());
    }
    for (k, v) in &spec.env {
        args.push("--env".into());
        match v {
            EnvValue::Plain(v) => args.push(format!("{k}={v}").into()),
            EnvValue::Secret(s) => {
                args.push(k.into());
                env.push((k.clone(), s.clone()));
            }
        }
    }
    for v in &spec.volumes {
        args.push("--volume".into());
        args.push(v.into());
    }
    args.extend(spec.flags.iter().map(OsString::from));
    let mut entry_args: &[String] = &[];
    if let Some(ep) = &spec.entrypoint {
        args.push("--entrypoint".into());
        if engine.dialect().entrypoint_json {
            // A JSON array keeps arguments with spaces intact.
            args.push(serde_json::to_string(ep)?.into());
        } else {
            // Docker runs `--entrypoint` as one program name ("" clears
            // the image's); the rest of the array leads the command.
            args.push(ep.first().map_or("", String::as_str).into());
            entry_args = ep.get(1..).unwrap_or_default();
        }
    }
    match &spec.image {
        Image::Name(n) => args.push(n.into()),
        Image::Rootfs(dir) => {
            if !engine.dialect().rootfs {
                bail!(
                    "{engine} cannot run a folder as a root file system (podman's --rootfs); import it as an image first"
                );
            }
            args.push("--rootfs".into());
            args.push(dir.into());
        }
    }
    args.extend(entry_args.iter().map(OsString::from));
    args.extend(spec.command.iter().map(OsString::from));
    Ok(Argv { args, env, connect })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &Argv) -> Vec<String> {
        a.args
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn entrypoints_follow_each_engines_rules() {
        let mut spec = ContainerSpec::new(Image::Name("img".into()));
        spec.entrypoint = Some(vec!["sh".into(), "-c".into(), "echo a b".into()]);
        spec.command = vec!["x".into()];
        let p = strings(&run_argv(Engine::Podman, &spec).unwrap());
        assert!(
            p.ends_with(&[
                "--entrypoint".into(),
                r#"["sh","-c","echo a b"]"#.into(),
                "img".into(),
                "x".into()
            ]),
            "{p:?}"
        );
        let d = strings(&run_argv(Engine::Docker, &spec).unwrap());
        assert!(
            d.ends_with(&[
                "--entrypoint".into(),
                "sh".into(),
                "img".into(),
                "-c".into(),
                "echo a b".into(),
                "x".into()
            ]),
            "{d:?}"
        );
        spec.entrypoint = Some(Vec::new());
        let d = strings(&run_argv(Engine::Docker, &spec).unwrap());
        assert!(
            d.ends_with(&[
                "--entrypoint".into(),
                String::new(),
                "img".into(),
                "x".into()
            ]),
            "{d:?}"
        );
    }

    #[test]
    fn the_canary_shape() {
        let mut spec = ContainerSpec::new(Image::Rootfs("/tmp/r".into()));
        spec.remove = true;
        spec.command = vec!["/podstack".into(), "canary".into()];
        let a = run_argv(Engine::Podman, &spec).unwrap();
        assert_eq!(
            strings(&a),
            ["run", "--rm", "--rootfs", "/tmp/r", "/podstack", "canary"]
        );
        assert!(run_argv(Engine::Docker, &spec).is_err());
    }

    #[test]
    fn a_service_shape_keeps_secrets_off_the_command_line() {
        let mut spec = ContainerSpec::new(Image::Name("localhost/pg:15".into()));
        spec.name = Some("props-postgres".into());
        spec.detach = true;
        spec.network = NetworkMode::Host;
        spec.labels
            .insert("io.podstack.project".into(), "props".into());
        spec.env = vec![
            ("POSTGRES_DB".into(), EnvValue::Plain("eval results".into())),
            (
                "POSTGRES_PASSWORD".into(),
                EnvValue::Secret(Secret::new("hunter2")),
            ),
        ];
        spec.volumes = vec!["props_data:/var/lib/postgresql/data".into()];
        spec.entrypoint = Some(vec!["/bin/sh".into(), "-c".into()]);
        spec.command = vec!["-c".into(), "max_connections=200".into()];
        let a = run_argv(Engine::Podman, &spec).unwrap();
        assert_eq!(
            strings(&a),
            [
                "run",
                "--detach",
                "--name",
                "props-postgres",
                "--network=host",
                "--label",
                "io.podstack.project=props",
                "--env",
                "POSTGRES_DB=eval results",
                "--env",
                "POSTGRES_PASSWORD",
                "--volume",
                "props_data:/var/lib/postgresql/data",
                "--entrypoint",
                "[\"/bin/sh\",\"-c\"]",
                "localhost/pg:15",
                "-c",
                "max_connections=200"
            ]
        );
        assert_eq!(a.env.len(), 1);
        assert_eq!(a.env[0].1.expose(), "hunter2");
        assert!(!format!("{a:?}").contains("hunter2"));
        assert_eq!(format!("{}", a.env[0].1), "***");
    }

    #[test]
    fn networks_and_ports_follow_each_engines_rules() {
        let mut spec = ContainerSpec::new(Image::Name("img".into()));
        spec.network = NetworkMode::Networks(vec!["p-internal".into(), "p-agents".into()]);
        spec.aliases = vec!["db".into()];
        spec.publish = vec!["127.0.0.1:35433:5432".into()];
        let p = run_argv(Engine::Podman, &spec).unwrap();
        assert_eq!(
            strings(&p),
            [
                "run",
                "--network",
                "p-internal",
                "--network",
                "p-agents",
                "--network-alias",
                "db",
                "--publish",
                "127.0.0.1:35433:5432",
                "img"
            ]
        );
        assert!(p.connect.is_empty());
        let d = run_argv(Engine::Docker, &spec).unwrap();
        assert_eq!(
            strings(&d),
            [
                "run",
                "--network",
                "p-internal",
                "--network-alias",
                "db",
                "--publish",
                "127.0.0.1:35433:5432",
                "img"
            ]
        );
        assert_eq!(d.connect, ["p-agents"]);
    }
}
