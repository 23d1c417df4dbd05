//! Compose files in: `podstack up -f compose.yaml` and `podstack import`.
//!
//! `yaml` reads the file into a tree that keeps lines and columns,
//! `interp` fills compose's variables, `convert` writes the equivalent
//! podstack.toml text; the stack file's own parser then checks it, so a
//! compose file and the stack file imported from it run alike.

pub mod convert;
pub mod interp;
pub mod yaml;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::env::Env;
use crate::stack::file::{self, StackFile};

/// The compose file names podstack looks for, in compose's order.
pub const FILE_NAMES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// Whether `path` names a compose file (a `.yaml` / `.yml` file).
pub fn is_compose(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// Converts the compose file at `path` (text already read) into stack file
/// text; every problem is an error naming `FILE:LINE:COLUMN`.
pub fn to_toml(
    env: &Env,
    path: &Path,
    text: &str,
    folder_name: &str,
    project: Option<&str>,
) -> Result<convert::Converted> {
    let doc = match yaml::load(text) {
        Ok(d) => d,
        Err(e) => bail!(
            "{}:{}:{}: not valid YAML: {}",
            path.display(),
            e.line,
            e.col,
            e.message
        ),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    // `.env` beside the file; the caller's environment wins over it.
    let dotenv_path = dir.join(".env");
    let mut dotenv: Vec<(String, String)> = Vec::new();
    if dotenv_path.is_file() {
        let text = read_small(&dotenv_path)?;
        let mut unset = Vec::new();
        match interp::dotenv(&text, &|n| env.get(n).map(str::to_string), &mut unset) {
            Ok(entries) => dotenv = entries.into_iter().map(|(_, k, v)| (k, v)).collect(),
            Err((line, e)) => bail!("{}:{line}: {e}", dotenv_path.display()),
        }
    }
    let lookup = |n: &str| -> Option<String> {
        env.get(n).map(str::to_string).or_else(|| {
            dotenv
                .iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        })
    };
    let profiles: Vec<String> = lookup("COMPOSE_PROFILES")
        .map(|p| {
            p.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let read = |p: &Path| read_small(p).map_err(|e| format!("{e:#}"));
    let inputs = convert::Inputs {
        path,
        lookup: &lookup,
        read: &read,
        profiles: &profiles,
        folder_name,
        project,
    };
    let out = convert::convert(&doc, &inputs);
    if !out.problems.is_empty() {
        let mut msg = format!(
            "{}: {} problem{} podstack will not run past (nothing was started):",
            path.display(),
            out.problems.len(),
            if out.problems.len() == 1 { "" } else { "s" }
        );
        for p in &out.problems {
            msg.push_str(&format!(
                "\n  {}:{}:{}: {}",
                path.display(),
                p.line,
                p.col,
                p.message
            ));
        }
        bail!(ComposeError(msg));
    }
    Ok(out)
}

/// A compose file podstack refuses: unsupported keys or malformed values
/// (exit 2, like a bad stack file).
#[derive(Debug)]
pub struct ComposeError(pub String);

impl std::fmt::Display for ComposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ComposeError {}

/// Parses a compose file into a checked stack file; problems the stack
/// file's checks find are named at the compose file's lines.
pub fn parse(
    env: &Env,
    path: &Path,
    text: &str,
    folder_name: &str,
    project: Option<&str>,
) -> Result<StackFile> {
    let out = to_toml(env, path, text, folder_name, project)?;
    for n in &out.notes {
        crate::log::say(&format!("{}: {n}", path.display()));
    }
    Ok(check(path, path, &out)?)
}

/// Parses the converted text as the stack file `as_file` (its folder
/// anchors relative paths); a problem is named at the line of the compose
/// file `path` it came from.
pub fn check(
    path: &Path,
    as_file: &Path,
    out: &convert::Converted,
) -> Result<StackFile, file::FileError> {
    file::parse(as_file, &out.toml).map_err(|mut e| {
        e.path = path.to_path_buf();
        for p in &mut e.problems {
            p.line = out
                .lines
                .get(p.line.saturating_sub(1))
                .copied()
                .unwrap_or(1);
            p.column = 1;
        }
        e
    })
}

fn read_small(path: &Path) -> Result<String> {
    use crate::fsx::ReadError;
    let bytes = match crate::fsx::read_bounded(path, crate::conf::MAX_BYTES) {
        Ok(b) => b,
        Err(ReadError::Missing) => bail!("{} does not exist", path.display()),
        Err(ReadError::NotAFile(what)) => bail!("{} is {what}, not a regular file", path.display()),
        Err(ReadError::TooBig(n)) => bail!("{} is {n} bytes or more: too big", path.display()),
        Err(ReadError::Io(e)) => bail!("cannot read {}: {e}", path.display()),
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))?;
    Ok(text)
}

/// Where an imported stack file goes by default: podstack.toml beside the
/// compose file.
pub fn default_output(path: &Path) -> PathBuf {
    path.with_file_name(crate::stack::FILE_NAME)
}
