//! How a stack is networked, and the address variables that follow from it
//! (pure).
//!
//! One stack file, two modes (seed 000): `host`, where every service runs
//! on the host's network on its own ports, and `isolated`, where the engine
//! makes the file's `[networks]`, services reach each other by name and
//! their ports are published on 127.0.0.1 for the host side. The variables
//! `${net.*}` and `${services.NAME.host|port|host_port}` say where each
//! service is in the mode chosen, so the same file fills in the right
//! addresses in both.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::engine::Secret;
use crate::stack::file::{DEFAULT_NETWORK, Service, StackFile};

/// The networking of a stack on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The host's network; each service on its own ports.
    Host,
    /// The engine's networks; ports published on 127.0.0.1.
    Isolated,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Host => "host",
            Mode::Isolated => "isolated",
        })
    }
}

/// The networks a service joins, by key (`default` when it names none).
pub fn service_networks(s: &Service) -> Vec<String> {
    if s.networks.is_empty() {
        vec![DEFAULT_NETWORK.to_string()]
    } else {
        s.networks.clone()
    }
}

/// The engine name of every network the stack uses, by key, in file order
/// (`default` last, and only when a service joins it).
pub fn networks(project: &str, file: &StackFile) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = file
        .networks
        .iter()
        .map(|n| {
            (
                n.key.clone(),
                n.name
                    .clone()
                    .unwrap_or_else(|| format!("{project}-{}", n.key)),
            )
        })
        .collect();
    let uses_default = file
        .services
        .iter()
        .any(|s| service_networks(s).iter().any(|n| n == DEFAULT_NETWORK));
    if uses_default && !out.iter().any(|(k, _)| k == DEFAULT_NETWORK) {
        out.push((
            DEFAULT_NETWORK.into(),
            format!("{project}-{DEFAULT_NETWORK}"),
        ));
    }
    out
}

/// The name of `s`'s container: `container_name`, else `PROJECT-SERVICE`.
pub fn container_name(project: &str, s: &Service) -> String {
    s.run
        .container_name
        .clone()
        .unwrap_or_else(|| format!("{project}-{}", s.name))
}

/// Every name a service of `file` is known by (service and container
/// names, aliases), each once, in file order.
pub fn host_names(project: &str, file: &StackFile) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in &file.services {
        for n in std::iter::once(s.name.clone())
            .chain(std::iter::once(container_name(project, s)))
            .chain(s.aliases.iter().cloned())
        {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// The name of `s`'s container on its networks: its first alias, else its
/// container name.
pub fn host_name(project: &str, s: &Service) -> String {
    s.aliases
        .first()
        .cloned()
        .unwrap_or_else(|| container_name(project, s))
}

/// Every address variable of the stack in `mode`, by name (`net.mode`,
/// `services.postgres.host`, ...).
pub fn vars(project: &str, file: &StackFile, mode: Mode) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert("net.mode".into(), mode.to_string());
    v.insert(
        "net.bind".into(),
        match mode {
            Mode::Host => "127.0.0.1",
            Mode::Isolated => "0.0.0.0",
        }
        .into(),
    );
    for (key, name) in networks(project, file) {
        v.insert(
            format!("net.name.{key}"),
            match mode {
                Mode::Host => "host".into(),
                Mode::Isolated => name,
            },
        );
    }
    if mode == Mode::Host && !v.contains_key("net.name.default") {
        v.insert("net.name.default".into(), "host".into());
    }
    for s in &file.services {
        let host = match mode {
            Mode::Host => "127.0.0.1".to_string(),
            Mode::Isolated => host_name(project, s),
        };
        v.insert(format!("services.{}.host", s.name), host);
        if let Some(p) = s.ports.first() {
            let port = match mode {
                Mode::Host => p.host,
                Mode::Isolated => p.container,
            };
            v.insert(format!("services.{}.port", s.name), port.to_string());
            v.insert(format!("services.{}.host_port", s.name), p.host.to_string());
        }
    }
    v
}

/// Fills every `${...}` in `text` from `vars` and `secrets` (`$${` is a
/// literal `${`). Returns the text and whether a secret went into it.
pub fn expand(
    text: &str,
    vars: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, Secret>,
) -> Result<(String, bool)> {
    expand_with(text, vars, secrets, false)
}

/// [`expand`] for a command line: a reference outside podstack's names
/// (`${HOME}`) is kept as written, for the shell the command may run.
pub fn expand_command(
    text: &str,
    vars: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, Secret>,
) -> Result<String> {
    expand_with(text, vars, secrets, true).map(|(s, _)| s)
}

fn expand_with(
    text: &str,
    vars: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, Secret>,
    keep_foreign: bool,
) -> Result<(String, bool)> {
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
        if let Some(v) = name.strip_prefix("secrets.").and_then(|n| secrets.get(n)) {
            out.push_str(v.expose());
            secret = true;
        } else if let Some(v) = vars.get(name) {
            out.push_str(v);
        } else if keep_foreign && !crate::stack::file::is_podstack_reference(name) {
            out.push_str("${");
            out.push_str(name);
            out.push('}');
        } else {
            bail!("`${{{name}}}` is not known");
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok((out, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::file;
    use std::path::Path;

    const SEED: &str = r#"
[stack]
name = "props"

[networks.internal]
name = "props-internal"
[networks.agents]
name = "props-agents"

[services.postgres]
image = "pg"
networks = ["internal", "agents"]
aliases = ["props-postgres"]
ports = [5433]

[services.registry]
image = "reg"
networks = ["internal"]
ports = ["35050:5000"]

[services.cache]
image = "redis"
"#;

    #[test]
    fn one_file_gives_the_right_addresses_in_both_modes() {
        // A host-mode pair differs only in isolated files: parse as isolated.
        let f = file::parse(Path::new("p.toml"), SEED).unwrap();
        let iso = vars("props", &f, Mode::Isolated);
        assert_eq!(iso["net.mode"], "isolated");
        assert_eq!(iso["net.name.agents"], "props-agents");
        assert_eq!(iso["net.name.default"], "props-default");
        assert_eq!(iso["services.postgres.host"], "props-postgres");
        assert_eq!(iso["services.postgres.port"], "5433");
        assert_eq!(iso["services.registry.host"], "props-registry");
        assert_eq!(iso["services.registry.port"], "5000");
        assert_eq!(iso["services.registry.host_port"], "35050");
        assert!(!iso.contains_key("services.cache.port"));
        let host = vars("props", &f, Mode::Host);
        assert_eq!(host["net.mode"], "host");
        assert_eq!(host["net.name.agents"], "host");
        assert_eq!(host["services.postgres.host"], "127.0.0.1");
        assert_eq!(host["services.registry.port"], "35050");
        assert_eq!(host["net.bind"], "127.0.0.1");
        let nets: Vec<String> = networks("props", &f).into_iter().map(|n| n.1).collect();
        assert_eq!(nets, ["props-internal", "props-agents", "props-default"]);
    }

    #[test]
    fn expansion_fills_vars_and_secrets_and_keeps_literals() {
        let vars: BTreeMap<String, String> = [("net.mode".to_string(), "host".to_string())]
            .into_iter()
            .collect();
        let secrets: BTreeMap<String, Secret> = [("pw".to_string(), Secret::new("s3"))]
            .into_iter()
            .collect();
        assert_eq!(
            expand("${net.mode}:${secrets.pw}:$${x}", &vars, &secrets).unwrap(),
            ("host:s3:${x}".to_string(), true)
        );
        assert_eq!(
            expand("plain", &vars, &secrets).unwrap(),
            ("plain".to_string(), false)
        );
        assert!(expand("${nope}", &vars, &secrets).is_err());
        assert_eq!(
            expand_command("echo ${HOME} ${net.mode}", &vars, &secrets).unwrap(),
            "echo ${HOME} host"
        );
        assert!(expand_command("${net.nope}", &vars, &secrets).is_err());
        assert!(expand("${net.mode", &vars, &secrets).is_err());
    }
}
