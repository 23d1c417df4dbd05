//! The stack engine: `up`, `down`, `status`, `logs` for the services of a
//! stack file.
//!
//! `file` parses and checks the stack file (pure); `resolve` turns each
//! service into a container spec and a definition hash (pure); `podman`
//! holds the engine calls; `probe` the readiness checks; `record` what was
//! started (the warm path); `up` runs the flow; `ports` finds who holds a
//! port; `demo` is the embedded two-service stack.

pub mod api;
pub mod choose;
pub mod client;
pub mod cmd;
pub mod demo;
pub mod file;
pub mod firewall;
pub mod kube;
pub mod net;
pub mod pg;
pub mod ports;
pub mod probe;
pub mod progress;
pub mod record;
pub mod resolve;
pub mod up;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::env::Env;
use file::StackFile;

/// The stack file name podstack looks for.
pub const FILE_NAME: &str = "podstack.toml";

/// A stack to act on: its file, its name, its state folder.
#[derive(Clone, Debug)]
pub struct Project {
    /// The checked stack file.
    pub file: StackFile,
    /// The project name (container names are `NAME-SERVICE`).
    pub name: String,
    /// `STATE/stacks/NAME`: secrets, the record, the lock.
    pub state_dir: PathBuf,
}

/// Where the stack file is: `-f`, then `PODSTACK_FILE`, then the nearest
/// folder walking up from the working folder (then from
/// `$CLAUDE_PROJECT_DIR`) that holds `podstack.toml` or a compose file
/// (`compose.yaml`, `compose.yml`, `docker-compose.yaml`,
/// `docker-compose.yml`), podstack.toml first.
pub fn find_file(env: &Env, flag: Option<&Path>) -> Result<PathBuf> {
    match try_find_file(env, flag, None) {
        Some(p) => Ok(p),
        None => bail!(
            "no {FILE_NAME} or compose.yaml here or in any folder above (nor under CLAUDE_PROJECT_DIR): write one with `podstack init`, or name one with -f FILE or PODSTACK_FILE"
        ),
    }
}

/// [`find_file`], `None` when no file is named and none is found; `also`:
/// one more folder to walk up from, last (a hook input's `cwd`).
pub fn try_find_file(env: &Env, flag: Option<&Path>, also: Option<&Path>) -> Option<PathBuf> {
    if let Some(f) = flag {
        return Some(env.absolute(f));
    }
    if let Some(f) = env.get("PODSTACK_FILE") {
        return Some(env.absolute(Path::new(f)));
    }
    let starts = env
        .cwd()
        .into_iter()
        .chain(env.abs_path("CLAUDE_PROJECT_DIR"))
        .chain(also.filter(|p| p.is_absolute()).map(Path::to_path_buf));
    // The nearest folder with a stack file wins; in one folder,
    // podstack.toml wins over a compose file.
    let names: Vec<&str> = std::iter::once(FILE_NAME)
        .chain(crate::compose::FILE_NAMES.iter().copied())
        .collect();
    starts.into_iter().find_map(|start| nearest(&start, &names))
}

/// The first of `names` in the nearest folder from `start` up that holds one.
pub fn nearest(start: &Path, names: &[&str]) -> Option<PathBuf> {
    start
        .ancestors()
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Reads and checks the stack file, and names the project: `-p`, then
/// `PODSTACK_PROJECT`, then `[stack] name`, then the file's folder name.
pub fn open(
    env: &Env,
    file: Option<&Path>,
    project: Option<&str>,
    state_root: &Path,
) -> Result<Project> {
    let path = find_file(env, file)?;
    let text = read_stack_text(&path)?;
    let file = if crate::compose::is_compose(&path) {
        let chosen = project.or_else(|| env.get("PODSTACK_PROJECT"));
        crate::compose::parse(env, &path, &text, &folder_name(&path), chosen)?
    } else {
        file::parse(&path, &text)?
    };
    if file.services.is_empty() {
        bail!(
            "{} declares no service ([services.NAME]): nothing to start; `podstack init` writes a starter",
            path.display()
        );
    }
    let name = match project
        .map(str::to_string)
        .or_else(|| env.get("PODSTACK_PROJECT").map(str::to_string))
    {
        Some(p) => {
            if !file::valid_name(&p) {
                bail!(
                    "the project name `{p}` must be lower-case letters, digits, `-` or `_`, starting with a letter or digit"
                );
            }
            p
        }
        None => match &file.name {
            Some(n) => n.clone(),
            None => folder_name(&path),
        },
    };
    let state_dir = state_root.join("stacks").join(&name);
    Ok(Project {
        file,
        name,
        state_dir,
    })
}

/// Reads a stack or compose file: bounded, UTF-8, BOM and CRLF dropped.
pub fn read_stack_text(path: &Path) -> Result<String> {
    use crate::fsx::ReadError;
    let bytes = match crate::fsx::read_bounded(path, crate::conf::MAX_BYTES) {
        Ok(b) => b,
        Err(ReadError::Missing) => bail!("the stack file {} does not exist", path.display()),
        Err(ReadError::NotAFile(what)) => bail!(
            "the stack file {} is {what}, not a regular file",
            path.display()
        ),
        Err(ReadError::TooBig(n)) => bail!(
            "the stack file {} is {n} bytes or more: too big for a stack file",
            path.display()
        ),
        Err(ReadError::Io(e)) => {
            return Err(anyhow::Error::new(e)
                .context(format!("cannot read the stack file {}", path.display())));
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (byte {}): a stack file (TOML or compose YAML) is UTF-8",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let text = text
        .strip_prefix('\u{feff}')
        .unwrap_or(&text)
        .replace("\r\n", "\n");
    Ok(text)
}

/// The folder holding `path`, as a project name.
pub fn folder_name(path: &Path) -> String {
    let raw = path
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name
        .trim_start_matches(['-', '_'])
        .chars()
        .take(40)
        .collect();
    if name.is_empty() {
        "stack".into()
    } else {
        name
    }
}

/// A stack's secrets and the key its definition hashes are made with: read
/// once per command and handed to everything that resolves services.
pub struct Keys {
    /// The secrets' values.
    pub secrets: BTreeMap<String, crate::engine::Secret>,
    /// The hash key ([`hash_key`]).
    pub key: String,
}

/// Reads (or makes) [`Keys`].
pub fn keys(project: &Project) -> Result<Keys> {
    Ok(Keys {
        secrets: secrets(project)?,
        key: hash_key(project)?,
    })
}

/// The stack's secrets: made once (random letters and digits), kept in
/// `STATE/secrets.json` (0600, folder 0700), never printed.
pub fn secrets(project: &Project) -> Result<BTreeMap<String, crate::engine::Secret>> {
    let path = project.state_dir.join("secrets.json");
    fs_err::create_dir_all(&project.state_dir)?;
    fs_err::set_permissions(&project.state_dir, std::fs::Permissions::from_mode(0o700))?;
    let mut kept: BTreeMap<String, String> = match fs_err::read_to_string(&path) {
        Ok(t) => serde_json::from_str(&t)
            .with_context(|| format!("{} is damaged: remove it to make new secrets (volumes made with the old ones keep them)", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e.into()),
    };
    let mut changed = false;
    for (name, spec) in &project.file.secrets {
        let file::SecretSpec::Generate(n) = spec;
        if kept.get(name).is_none_or(|v| v.len() != *n) {
            kept.insert(name.clone(), random_string(*n)?);
            changed = true;
        }
    }
    if changed {
        crate::fsx::write_atomic(
            &path,
            serde_json::to_string_pretty(&kept)?.as_bytes(),
            0o600,
        )?;
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(kept
        .into_iter()
        .filter(|(k, _)| project.file.secrets.contains_key(k))
        .map(|(k, v)| (k, crate::engine::Secret::new(v)))
        .collect())
}

/// The stack's hash key: random, made once, kept 0600 beside the secrets.
/// Definition hashes of services that carry a secret are keyed with it, so
/// a label (visible to every user on a command line) cannot be used to
/// guess a short secret offline.
pub fn hash_key(project: &Project) -> Result<String> {
    let path = project.state_dir.join("hash.key");
    match fs_err::read_to_string(&path) {
        Ok(k) if k.len() == 32 => Ok(k),
        _ => {
            let k = random_string(32)?;
            crate::fsx::write_atomic(&path, k.as_bytes(), 0o600)?;
            Ok(k)
        }
    }
}

/// `n` random letters and digits from /dev/urandom.
pub fn random_string(n: usize) -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut f = fs_err::File::open("/dev/urandom")?;
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        f.read_exact(&mut buf)?;
        // 248 = 4 * 62: rejecting the rest keeps every character equally likely.
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() < n {
                out.push(ALPHABET[usize::from(*b) % 62] as char);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_walks_up_and_names_the_project() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("My Project");
        fs_err::create_dir_all(root.join("a/b")).unwrap();
        fs_err::write(root.join(FILE_NAME), "[services.web]\nimage = \"x\"\n").unwrap();
        let env = Env::default().with_cwd(root.join("a/b"));
        let p = open(&env, None, None, Path::new("/state")).unwrap();
        assert_eq!(p.name, "my-project");
        assert_eq!(p.state_dir, Path::new("/state/stacks/my-project"));
        let p = open(&env, None, Some("wt2"), Path::new("/state")).unwrap();
        assert_eq!(p.name, "wt2");
        let env2 = Env::from_pairs([("PODSTACK_PROJECT", "Bad Name")]).with_cwd(root.clone());
        assert!(open(&env2, None, None, Path::new("/s")).is_err());
        let lost = Env::default().with_cwd(dir.path());
        let e = find_file(&lost, None).unwrap_err().to_string();
        assert!(e.contains("podstack init"), "{e}");
        let via_claude =
            Env::from_pairs([("CLAUDE_PROJECT_DIR", root.to_str().unwrap())]).with_cwd("/");
        assert_eq!(find_file(&via_claude, None).unwrap(), root.join(FILE_NAME));
    }

    #[test]
    fn secrets_are_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(
            dir.path().join(FILE_NAME),
            "[secrets]\npw = { generate = 40 }\n[services.a]\nimage = \"x\"\n",
        )
        .unwrap();
        let env = Env::default().with_cwd(dir.path());
        let p = open(&env, None, None, &dir.path().join("state")).unwrap();
        let first = secrets(&p).unwrap();
        let pw = first["pw"].expose().to_string();
        assert_eq!(pw.len(), 40);
        assert!(pw.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(secrets(&p).unwrap()["pw"].expose(), pw);
        let mode = |p: &Path| fs_err::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p.state_dir.join("secrets.json")), 0o600);
        assert_eq!(mode(&p.state_dir), 0o700);
    }
}
