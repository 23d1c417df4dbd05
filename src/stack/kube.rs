//! `podstack kube`: the resolved stack as Kubernetes YAML (pure), and
//! `--play`, which runs the Pod output with `podman kube play`.
//!
//! Two shapes:
//! - `pod`: one Pod, every service a container in one network namespace,
//!   like seed 000's host mode: services reach each other on 127.0.0.1 and
//!   their own ports (service names resolve to 127.0.0.1 too). Jobs become
//!   init containers.
//! - `cluster`: a Deployment and a Service per service (a Job for a job),
//!   so `${services.NAME.host}` is the Service's name; NetworkPolicies keep
//!   the file's networks apart (seed 000: agents reach postgres and the
//!   proxy, not the registry), and each Deployment waits for the Services
//!   it depends on in an init container.
//!
//! Secrets are referenced (`secretKeyRef`) from one Secret, `PROJECT-secrets`,
//! which is written out only with `--inline-secrets`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::{Result, bail};
use serde_json::{Map, Value, json};

use crate::engine::{EnvValue, Secret};
use crate::stack::Project;
use crate::stack::file::{Ready, Service};
use crate::stack::net::{self, Mode};
use crate::stack::resolve::{self, Probe, Resolved, Scope};

/// Which shape to render.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KubeMode {
    /// One Pod with every service (shared network namespace).
    Pod,
    /// A Deployment and a Service per service, with NetworkPolicies.
    Cluster,
}

/// The label every object carries.
const PART_OF: &str = "app.kubernetes.io/part-of";
/// The label naming a service's pods.
const NAME: &str = "app.kubernetes.io/name";
/// The label key of network `key`: its name part is at most 63 characters.
fn net_label(key: &str) -> String {
    format!("podstack.io/{}", fit(&format!("net-{key}")))
}

/// The image the cluster shape's wait-for init containers run.
pub const WAIT_IMAGE: &str = "docker.io/library/busybox:1.36";

/// A Kubernetes name (DNS-1123 label) for `s`: lower case, `_` and other
/// characters become `-`, at most 63 characters, starting and ending with
/// a letter or digit (pure).
pub fn dns_name(s: &str) -> Option<String> {
    let mapped: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches('-');
    let cut: String = trimmed.chars().take(63).collect();
    let cut = cut.trim_end_matches('-').to_string();
    (!cut.is_empty()).then_some(cut)
}

/// `name` cut to a label's 63 characters, a hash of the whole keeping cut
/// names apart (pure).
pub fn fit(name: &str) -> String {
    use sha2::Digest;
    if name.len() <= 63 {
        return name.to_string();
    }
    let h = resolve::hex(&sha2::Sha256::digest(name.as_bytes()));
    format!("{}-{}", name[..54].trim_end_matches('-'), &h[..8])
}

/// Doubles every `$`: Kubernetes expands `$(NAME)` in env values, command
/// and args, and reads `$$` as one `$`.
fn literal(s: &str) -> String {
    s.replace('$', "$$")
}

/// Maps names to Kubernetes names, refusing two that collide.
struct Names {
    by: BTreeMap<String, String>,
    what: &'static str,
}

impl Names {
    fn new<'a>(
        what: &'static str,
        names: impl IntoIterator<Item = &'a str>,
        letter_first: bool,
    ) -> Result<Names> {
        let mut by = BTreeMap::new();
        let mut back: BTreeMap<String, String> = BTreeMap::new();
        for n in names {
            let Some(mut k) = dns_name(n) else {
                bail!("the {what} `{n}` has no letter or digit: it cannot be a Kubernetes name");
            };
            // A Service's name starts with a letter (DNS-1035).
            if letter_first && k.starts_with(|c: char| c.is_ascii_digit()) {
                k = fit(&format!("s-{k}"));
            }
            if let Some(other) = back.get(&k)
                && other != n
            {
                bail!(
                    "the {what}s `{other}` and `{n}` both become `{k}` as Kubernetes names (lower case, `-` for `_`): rename one"
                );
            }
            back.insert(k.clone(), n.to_string());
            by.insert(n.to_string(), k);
        }
        Ok(Names { by, what })
    }

    fn get(&self, n: &str) -> String {
        self.by
            .get(n)
            .cloned()
            .unwrap_or_else(|| panic!("{} {n} was not mapped", self.what))
    }
}

/// What was rendered: the YAML, and the Secret's data (for `--play`).
pub struct Rendered {
    /// The comment heading the documents.
    header: String,
    /// The documents.
    docs: Vec<Value>,
    /// The Secret's name.
    pub secret_name: String,
    /// The Secret's keys and values.
    pub secret_data: BTreeMap<String, String>,
    /// The named volumes as Kubernetes claim names.
    pub claims: Vec<String>,
    /// The Pod's name (pod shape).
    pub pod: String,
}

/// Renders `project` as Kubernetes YAML (pure over the file, secrets and key).
pub fn render(
    project: &Project,
    secrets: &BTreeMap<String, Secret>,
    key: &str,
    mode: KubeMode,
    inline_secrets: bool,
) -> Result<Rendered> {
    let file = &project.file;
    let pname = dns_name(&project.name).unwrap_or_else(|| "stack".into());
    let services = Names::new(
        "service",
        file.services.iter().map(|s| s.name.as_str()),
        mode == KubeMode::Cluster,
    )?;
    let all_volumes: Vec<String> = file
        .services
        .iter()
        .flat_map(|s| resolve::named_volumes(&s.volumes))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let volumes = Names::new("volume", all_volumes.iter().map(String::as_str), false)?;
    let networks = Names::new(
        "network",
        net::networks(&project.name, file)
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        false,
    )?;
    // The address variables of the shape.
    // Container ports in both shapes (a Pod maps host ports onto them);
    // in a Pod every service is on 127.0.0.1.
    let mut scope = Scope::new(&project.name, file, Mode::Isolated, secrets, key);
    scope.hosts.clear();
    scope
        .vars
        .insert("net.mode".into(), format!("kube-{}", kube_mode_word(mode)));
    scope.vars.insert("net.bind".into(), "0.0.0.0".into());
    for (k, _) in net::networks(&project.name, file) {
        scope.vars.insert(
            format!("net.name.{k}"),
            format!("{pname}-{}", networks.get(&k)),
        );
    }
    for s in &file.services {
        let host = match mode {
            KubeMode::Pod => "127.0.0.1".to_string(),
            KubeMode::Cluster => services.get(&s.name),
        };
        scope.vars.insert(format!("services.{}.host", s.name), host);
    }
    if mode == KubeMode::Pod {
        // One network namespace: one listener per port.
        let mut seen: BTreeMap<u16, &str> = BTreeMap::new();
        for s in &file.services {
            for p in &s.ports {
                if let Some(other) = seen.insert(p.container, &s.name)
                    && other != s.name
                {
                    bail!(
                        "services {other} and {} both listen on port {} and would share one Pod's network: use --mode cluster, or give one another port",
                        s.name,
                        p.container
                    );
                }
            }
        }
    }
    let secret_name = format!("{pname}-secrets");
    let mut secret_data = BTreeMap::new();
    let mut containers = Vec::new();
    let mut init = Vec::new();
    let mut mounts: Vec<(&Service, Vec<String>)> = Vec::new();
    let mut docs: Vec<Value> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for s in crate::stack::file::start_order(&file.services) {
        let r = resolve::resolve(&scope, s)?;
        mounts.push((s, r.spec.volumes.clone()));
        let c = container(
            s,
            &r,
            &services,
            &volumes,
            mode,
            &secret_name,
            &mut secret_data,
            &mut notes,
        )?;
        if s.job {
            init.push((s, r, c));
        } else {
            containers.push((s, r, c));
        }
    }
    for v in &all_volumes {
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": { "name": volumes.get(v), "labels": { PART_OF: pname } },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": { "requests": { "storage": "1Gi" } }
            }
        }));
    }
    if !secret_data.is_empty() && inline_secrets {
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": secret_name, "labels": { PART_OF: pname } },
            "type": "Opaque",
            "stringData": secret_data,
        }));
    }
    let stop = file
        .services
        .iter()
        .filter_map(|s| s.run.stop_timeout)
        .max();
    match mode {
        KubeMode::Pod => {
            for (s, _, _) in &init {
                if let Some(d) = s
                    .depends_on
                    .iter()
                    .find(|d| file.services.iter().any(|o| &o.name == *d && !o.job))
                {
                    bail!(
                        "job {} depends on service {d}: in one Pod a job runs as an init container, before every service; use --mode cluster (a Job that waits for {d})",
                        s.name
                    );
                }
            }
            // Service names resolve to the Pod's loopback, as in host mode.
            let mut hosts: Vec<String> = Vec::new();
            for s in &file.services {
                for n in std::iter::once(s.name.clone()).chain(s.aliases.iter().cloned()) {
                    if !hosts.contains(&n) {
                        hosts.push(n);
                    }
                }
            }
            let mut spec = Map::new();
            // podman 4.3 restarts a finished init container under
            // `Always`, then fails: a Pod with jobs restarts on failure only.
            spec.insert(
                "restartPolicy".into(),
                json!(if init.is_empty() {
                    "Always"
                } else {
                    "OnFailure"
                }),
            );
            spec.insert(
                "hostAliases".into(),
                json!([{ "ip": "127.0.0.1", "hostnames": hosts }]),
            );
            if let Some(t) = stop {
                spec.insert("terminationGracePeriodSeconds".into(), json!(t));
            }
            let extra: Vec<Value> = extra_hosts(file.services.iter());
            if let Some(Value::Array(a)) = spec.get_mut("hostAliases") {
                a.extend(extra);
            }
            if !init.is_empty() {
                spec.insert(
                    "initContainers".into(),
                    Value::Array(init.into_iter().map(|(_, _, c)| c).collect()),
                );
            }
            spec.insert(
                "containers".into(),
                Value::Array(containers.into_iter().map(|(_, _, c)| c).collect()),
            );
            spec.insert(
                "volumes".into(),
                Value::Array(pod_volumes(&mounts, &volumes, &services)?),
            );
            docs.push(json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pname,
                    "labels": { PART_OF: pname, "app.kubernetes.io/managed-by": "podstack" }
                },
                "spec": Value::Object(spec),
            }));
        }
        KubeMode::Cluster => {
            for (s, r, c) in containers.into_iter().chain(init) {
                cluster_objects(
                    &mut docs, s, &r, c, &pname, &services, &volumes, &networks, &scope,
                )?;
            }
            network_policies(&mut docs, project, &pname, &services, &networks);
        }
    }
    let mut yaml = String::new();
    let _ = writeln!(
        yaml,
        "# Kubernetes objects for the stack {} ({}), made by `podstack kube --mode {}`.",
        project.name,
        project.file.path.display(),
        kube_mode_word(mode)
    );
    match mode {
        KubeMode::Pod => yaml.push_str("# One Pod: the services share its network namespace and reach each other on\n# 127.0.0.1 and their ports, as on the host's network.\n# Kubernetes starts the containers in this order (dependencies first) but does\n# not wait for one to be ready before the next; each waits on its own probes.\n"),
        KubeMode::Cluster => yaml.push_str("# A Deployment and a Service per service; NetworkPolicies keep the stack's\n# networks apart (a pod joins network KEY with the label podstack.io/net-KEY: \"true\").\n"),
    }
    if !secret_data.is_empty() && !inline_secrets {
        let _ = writeln!(
            yaml,
            "# The secrets are read from the Secret {secret_name} (keys: {}), not written here;\n# `podstack kube --inline-secrets` writes it, `podstack kube --play` makes it for podman.",
            secret_data.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    for n in &notes {
        let _ = writeln!(yaml, "# Note: {n}");
    }
    Ok(Rendered {
        header: yaml,
        docs,
        secret_name,
        secret_data,
        claims: all_volumes.iter().map(|v| volumes.get(v)).collect(),
        pod: pname,
    })
}

impl Rendered {
    /// The YAML: every document.
    pub fn yaml(&self) -> String {
        self.yaml_without(&[])
    }

    /// The YAML without the PersistentVolumeClaims named in `claims`
    /// (podman 4.3 refuses a claim whose volume exists).
    pub fn yaml_without(&self, claims: &[String]) -> String {
        let mut yaml = self.header.clone();
        for d in &self.docs {
            let claim = d["kind"] == "PersistentVolumeClaim"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| claims.iter().any(|c| c == n));
            if !claim {
                yaml.push_str("---\n");
                emit(&mut yaml, d, 0);
            }
        }
        yaml
    }
}

fn kube_mode_word(m: KubeMode) -> &'static str {
    match m {
        KubeMode::Pod => "pod",
        KubeMode::Cluster => "cluster",
    }
}

fn extra_hosts<'a>(services: impl Iterator<Item = &'a Service>) -> Vec<Value> {
    let mut by_ip: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in services {
        for h in &s.run.extra_hosts {
            if let Some((name, ip)) = h.split_once(':')
                && ip != "host-gateway"
            {
                let v = by_ip
                    .entry(ip.trim_matches(['[', ']']).to_string())
                    .or_default();
                if !v.contains(&name.to_string()) {
                    v.push(name.to_string());
                }
            }
        }
    }
    by_ip
        .into_iter()
        .map(|(ip, names)| json!({ "ip": ip, "hostnames": names }))
        .collect()
}

/// One container of a service.
#[allow(clippy::too_many_arguments)]
fn container(
    s: &Service,
    r: &Resolved,
    services: &Names,
    volumes: &Names,
    mode: KubeMode,
    secret_name: &str,
    secret_data: &mut BTreeMap<String, String>,
    notes: &mut Vec<String>,
) -> Result<Value> {
    let mut c = Map::new();
    c.insert("name".into(), json!(services.get(&s.name)));
    c.insert("image".into(), json!(r.image));
    c.insert("imagePullPolicy".into(), json!("IfNotPresent"));
    let lit = |v: &[String]| v.iter().map(|a| literal(a)).collect::<Vec<_>>();
    if let Some(ep) = &r.spec.entrypoint {
        c.insert("command".into(), json!(lit(ep)));
    }
    if !r.spec.command.is_empty() {
        c.insert("args".into(), json!(lit(&r.spec.command)));
    }
    if let Some(w) = &s.run.workdir {
        c.insert("workingDir".into(), json!(w));
    }
    let mut env = Vec::new();
    for (k, v) in &r.spec.env {
        match v {
            EnvValue::Plain(v) => env.push(json!({ "name": k, "value": literal(v) })),
            EnvValue::Secret(sec) => {
                let key = format!("{}.{k}", services.get(&s.name));
                secret_data.insert(key.clone(), sec.expose().to_string());
                env.push(json!({
                    "name": k,
                    "valueFrom": { "secretKeyRef": { "name": secret_name, "key": key } }
                }));
            }
        }
    }
    if !env.is_empty() {
        c.insert("env".into(), Value::Array(env));
    }
    if !s.ports.is_empty() {
        let ports: Vec<Value> = s
            .ports
            .iter()
            .map(|p| match mode {
                // The Pod's ports on the host's loopback, as podstack
                // publishes them.
                KubeMode::Pod => json!({ "containerPort": p.container, "hostPort": p.host, "hostIP": p.ip.map_or("127.0.0.1".to_string(), |ip| ip.to_string()) }),
                KubeMode::Cluster => json!({ "containerPort": p.container }),
            })
            .collect();
        c.insert("ports".into(), Value::Array(ports));
    }
    let mut mounts = Vec::new();
    for v in &r.spec.volumes {
        let (_, target, ro) = split_volume(v);
        let (name, _) = pod_volume(v, &services.get(&s.name), volumes);
        let mut m = json!({ "name": name, "mountPath": target });
        if ro {
            m["readOnly"] = json!(true);
        }
        mounts.push(m);
    }
    if s.run.shm_size.is_some() {
        mounts.push(
            json!({ "name": shm_volume_name(&services.get(&s.name)), "mountPath": "/dev/shm" }),
        );
    }
    if !mounts.is_empty() {
        c.insert("volumeMounts".into(), Value::Array(mounts));
    }
    if let Some(u) = &s.run.user {
        let (uid, gid) = u.split_once(':').unwrap_or((u, ""));
        match (uid.parse::<u32>(), gid.parse::<u32>()) {
            (Ok(uid), Ok(gid)) => {
                c.insert("securityContext".into(), json!({ "runAsUser": uid, "runAsGroup": gid }));
            }
            (Ok(uid), Err(_)) if gid.is_empty() => {
                c.insert("securityContext".into(), json!({ "runAsUser": uid }));
            }
            _ => notes.push(format!(
                "service {}: user `{u}` is a name; Kubernetes takes numeric ids (runAsUser), so the image's user applies",
                s.name
            )),
        }
    }
    if !s.run.ulimits.is_empty() {
        notes.push(format!(
            "service {}: ulimits ({}) have no Kubernetes field; the node's limits apply",
            s.name,
            s.run.ulimits.join(", ")
        ));
    }
    if !s.job
        && let Some(p) = &r.ready
    {
        let (check, deadline) = (probe(p, s), r.timeout.as_secs().max(2));
        let mut startup = check.clone();
        startup.insert("periodSeconds".into(), json!(1));
        startup.insert("timeoutSeconds".into(), json!(2));
        startup.insert("failureThreshold".into(), json!(deadline));
        let mut ready = check;
        ready.insert("periodSeconds".into(), json!(5));
        ready.insert("timeoutSeconds".into(), json!(2));
        ready.insert("failureThreshold".into(), json!(3));
        c.insert("startupProbe".into(), Value::Object(startup));
        c.insert("readinessProbe".into(), Value::Object(ready));
        if let Some(Ready::Exec(argv)) = &s.ready {
            notes.push(format!(
                "service {}: its host-side ready command ({}) runs inside the container",
                s.name,
                argv.join(" ")
            ));
        }
    }
    Ok(Value::Object(c))
}

/// `SOURCE:TARGET[:ro]`, `TARGET` (anonymous).
fn split_volume(v: &str) -> (Option<String>, String, bool) {
    let parts: Vec<&str> = v.split(':').collect();
    match parts.as_slice() {
        [t] => (None, (*t).to_string(), false),
        [s, t] => (Some((*s).to_string()), (*t).to_string(), false),
        [s, t, o, ..] => (
            Some((*s).to_string()),
            (*t).to_string(),
            o.split(',').any(|x| x == "ro"),
        ),
        [] => (None, String::new(), false),
    }
}

fn host_volume_name(path: &str) -> String {
    use sha2::Digest;
    let h = resolve::hex(&sha2::Sha256::digest(path.as_bytes()));
    format!("host-{}", &h[..10])
}

fn anon_volume_name(service: &str, target: &str) -> String {
    use sha2::Digest;
    let h = resolve::hex(&sha2::Sha256::digest(target.as_bytes()));
    fit(&format!("{service}-anon-{}", &h[..8]))
}

fn shm_volume_name(service: &str) -> String {
    fit(&format!("{service}-shm"))
}

/// A resolved volume's Pod volume: its name and definition.
fn pod_volume(v: &str, service: &str, volumes: &Names) -> (String, Value) {
    let (source, target, _) = split_volume(v);
    match &source {
        // Resolved volumes name a host path absolutely.
        Some(src) if !src.starts_with('/') => (
            volumes.get(src),
            json!({ "persistentVolumeClaim": { "claimName": volumes.get(src) } }),
        ),
        Some(src) => (
            host_volume_name(src),
            json!({ "hostPath": { "path": src, "type": "DirectoryOrCreate" } }),
        ),
        None => (
            anon_volume_name(service, &target),
            json!({ "emptyDir": {} }),
        ),
    }
}

/// The Pod's volumes for the services' resolved mounts; two different
/// volumes that would share a name are refused.
fn pod_volumes(
    mounts: &[(&Service, Vec<String>)],
    volumes: &Names,
    services: &Names,
) -> Result<Vec<Value>> {
    let mut out: Vec<Value> = Vec::new();
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    let mut add = |name: String, def: Value, out: &mut Vec<Value>| -> Result<()> {
        match seen.get(&name) {
            Some(d) if *d == def => return Ok(()),
            Some(_) => bail!(
                "two volumes of the Pod would both be named `{name}` (a named volume and a service's own): rename the volume"
            ),
            None => {}
        }
        seen.insert(name.clone(), def.clone());
        let mut o = Map::new();
        o.insert("name".into(), json!(name));
        if let Value::Object(m) = def {
            o.extend(m);
        }
        out.push(Value::Object(o));
        Ok(())
    };
    for (s, vols) in mounts {
        let service = services.get(&s.name);
        for v in vols {
            let (name, def) = pod_volume(v, &service, volumes);
            add(name, def, &mut out)?;
        }
        if let Some(size) = &s.run.shm_size {
            add(
                shm_volume_name(&service),
                json!({ "emptyDir": { "medium": "Memory", "sizeLimit": k8s_size(size) } }),
                &mut out,
            )?;
        }
    }
    Ok(out)
}

/// `64m` as `64Mi`.
fn k8s_size(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let lower = lower.trim_end_matches('b');
    for (suffix, unit) in [("k", "Ki"), ("m", "Mi"), ("g", "Gi")] {
        if let Some(n) = lower.strip_suffix(suffix) {
            return format!("{n}{unit}");
        }
    }
    lower.to_string()
}

/// A podstack probe as a Kubernetes probe handler.
fn probe(p: &Probe, s: &Service) -> Map<String, Value> {
    // Probes given as host addresses name the host port; inside the
    // cluster the container's port answers.
    let port = |host: u16| -> u16 {
        s.ports
            .iter()
            .find(|pm| pm.host == host)
            .map_or(host, |pm| pm.container)
    };
    let mut m = Map::new();
    match p {
        Probe::Tcp(a) => {
            m.insert("tcpSocket".into(), json!({ "port": port(a.port()) }));
        }
        Probe::Http { addr, path, .. } => {
            m.insert(
                "httpGet".into(),
                json!({ "path": path, "port": port(addr.port()) }),
            );
        }
        Probe::Postgres {
            addr,
            user,
            database,
            ..
        } => {
            let mut argv = vec![
                "pg_isready".to_string(),
                "-h".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port(addr.port()).to_string(),
                "-U".into(),
                user.clone(),
            ];
            if let Some(d) = database {
                argv.push("-d".into());
                argv.push(d.clone());
            }
            m.insert("exec".into(), json!({ "command": argv }));
        }
        Probe::Exec(argv) | Probe::Container { argv, .. } => {
            m.insert("exec".into(), json!({ "command": argv }));
        }
    }
    m
}

/// A service's Deployment (or Job) and Service.
#[allow(clippy::too_many_arguments)]
fn cluster_objects(
    docs: &mut Vec<Value>,
    s: &Service,
    r: &Resolved,
    c: Value,
    pname: &str,
    services: &Names,
    volumes: &Names,
    networks: &Names,
    scope: &Scope<'_>,
) -> Result<()> {
    let name = services.get(&s.name);
    let mut labels = Map::new();
    labels.insert(PART_OF.into(), json!(pname));
    labels.insert(NAME.into(), json!(name));
    for n in net::service_networks(s) {
        labels.insert(net_label(&networks.get(&n)), json!("true"));
    }
    let mut pod = Map::new();
    // Each dependency's Service answers before this one starts.
    let mut waits = Vec::new();
    for d in &s.depends_on {
        let host = scope
            .vars
            .get(&format!("services.{d}.host"))
            .cloned()
            .unwrap_or_else(|| services.get(d));
        if let Some(port) = scope.vars.get(&format!("services.{d}.port")) {
            waits.push(json!({
                "name": format!("wait-for-{}", services.get(d)),
                "image": WAIT_IMAGE,
                "command": ["sh", "-c", format!("until nc -z -w 1 {host} {port}; do sleep 1; done")],
            }));
        }
    }
    if !waits.is_empty() {
        pod.insert("initContainers".into(), Value::Array(waits));
    }
    pod.insert("containers".into(), json!([c]));
    let vols = pod_volumes(&[(s, r.spec.volumes.clone())], volumes, services)?;
    if !vols.is_empty() {
        pod.insert("volumes".into(), Value::Array(vols));
    }
    let hosts = extra_hosts(std::iter::once(s));
    if !hosts.is_empty() {
        pod.insert("hostAliases".into(), Value::Array(hosts));
    }
    if let Some(t) = s.run.stop_timeout {
        pod.insert("terminationGracePeriodSeconds".into(), json!(t));
    }
    if s.job {
        pod.insert("restartPolicy".into(), json!("OnFailure"));
        docs.push(json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": { "name": name, "labels": Value::Object(labels.clone()) },
            "spec": {
                "backoffLimit": r.retries,
                "template": { "metadata": { "labels": Value::Object(labels) }, "spec": Value::Object(pod) }
            }
        }));
        return Ok(());
    }
    let has_claims = !resolve::named_volumes(&s.volumes).is_empty();
    let mut spec = json!({
        "replicas": 1,
        "selector": { "matchLabels": { PART_OF: pname, NAME: name } },
        "template": { "metadata": { "labels": Value::Object(labels.clone()) }, "spec": Value::Object(pod) }
    });
    if has_claims {
        // A ReadWriteOnce claim cannot be held by the old and new pod at once.
        spec["strategy"] = json!({ "type": "Recreate" });
    }
    docs.push(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "labels": Value::Object(labels.clone()) },
        "spec": spec,
    }));
    if !s.ports.is_empty() {
        let ports: Vec<Value> = s
            .ports
            .iter()
            .map(|p| json!({ "name": format!("p{}", p.container), "port": p.container, "targetPort": p.container }))
            .collect();
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": name, "labels": { PART_OF: pname, NAME: name } },
            "spec": { "selector": { PART_OF: pname, NAME: name }, "ports": ports }
        }));
    }
    Ok(())
}

/// Per service: ingress only from pods that share one of its networks.
fn network_policies(
    docs: &mut Vec<Value>,
    project: &Project,
    pname: &str,
    services: &Names,
    networks: &Names,
) {
    for s in &project.file.services {
        let name = services.get(&s.name);
        let from: Vec<Value> = net::service_networks(s)
            .iter()
            .map(|n| json!({ "podSelector": { "matchLabels": { net_label(&networks.get(n)): "true" } } }))
            .collect();
        docs.push(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": { "name": format!("{name}-ingress"), "labels": { PART_OF: pname } },
            "spec": {
                "podSelector": { "matchLabels": { PART_OF: pname, NAME: name } },
                "policyTypes": ["Ingress"],
                "ingress": [{ "from": from }]
            }
        }));
    }
}

/// Writes `v` as block-style YAML at `indent`.
fn emit(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                pad(out, indent);
                out.push_str(&scalar_key(k));
                out.push(':');
                block_value(out, val, indent);
            }
        }
        Value::Array(a) => {
            for item in a {
                pad(out, indent);
                out.push('-');
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        // The first key on the dash's line.
                        let mut first = true;
                        for (k, val) in m {
                            if first {
                                out.push(' ');
                                first = false;
                            } else {
                                pad(out, indent + 2);
                            }
                            out.push_str(&scalar_key(k));
                            out.push(':');
                            block_value(out, val, indent + 2);
                        }
                    }
                    _ => block_value(out, item, indent),
                }
            }
        }
        other => {
            pad(out, indent);
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn block_value(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            emit(out, v, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            emit(out, v, indent + 2);
        }
        Value::Object(_) => out.push_str(" {}\n"),
        Value::Array(_) => out.push_str(" []\n"),
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn pad(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn scalar_key(k: &str) -> String {
    if k.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        && !k.is_empty()
    {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

/// A scalar: plain when YAML reads it back as the same string, else a
/// JSON-style double-quoted string (valid YAML).
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
                && !s.starts_with(['-', '.'])
                && s.parse::<f64>().is_err()
                && !matches!(
                    s.to_ascii_lowercase().as_str(),
                    "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
                );
            if plain { s.clone() } else { v.to_string() }
        }
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// Standard base64 with padding (a Secret's `data`; podman's secrets).
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn dns_names() {
        assert_eq!(
            dns_name("Registry_Proxy").as_deref(),
            Some("registry-proxy")
        );
        assert_eq!(dns_name("_x_").as_deref(), Some("x"));
        assert_eq!(dns_name("___"), None);
        assert_eq!(dns_name(&"a".repeat(80)).map(|s| s.len()), Some(63));
        assert!(Names::new("service", ["a_b", "a-b"], false).is_err());
        assert!(Names::new("service", ["a_b", "c"], false).is_ok());
        let n = Names::new("service", ["1db"], true).unwrap();
        assert_eq!(n.get("1db"), "s-1db");
        let long = "a".repeat(70);
        assert_eq!(fit(&long).len(), 63);
        assert_ne!(fit(&long), fit(&format!("{long}b")));
        assert_eq!(literal("$(A) $$ $x"), "$$(A) $$$$ $$x");
    }

    #[test]
    fn yaml_round_trips_through_the_compose_reader() {
        let v = json!({
            "a": { "b": [1, "two", { "c": "x: y", "d": [] }], "e": {} },
            "f": ["true", "-1", "", "5433", "a b", "registry-proxy"],
            "g": { "app.kubernetes.io/name": "x" }
        });
        let mut out = String::new();
        emit(&mut out, &v, 0);
        let back = crate::compose::yaml::load(&out).unwrap();
        let f: Vec<String> = back
            .get("f")
            .unwrap()
            .seq()
            .unwrap()
            .iter()
            .filter_map(|n| match &n.v {
                crate::compose::yaml::Value::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            f,
            ["true", "-1", "", "5433", "a b", "registry-proxy"],
            "{out}"
        );
        assert_eq!(
            back.get("a").unwrap().get("b").unwrap().seq().unwrap()[2]
                .get("c")
                .unwrap()
                .text()
                .as_deref(),
            Some("x: y")
        );
    }
}
