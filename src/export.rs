//! The export stage: the variables that tell the shells that run next where
//! the stack is, rendered for a shell (`CLAUDE_ENV_FILE`, `CODEX_ENV_FILE`),
//! a dotenv file, JSON or `GITHUB_ENV`, and written into a file as one
//! managed block (pure at the core; [`write_block`] is the edge).
//!
//! A written file keeps every line outside podstack's block byte for byte;
//! the block is replaced in place, so a second run with the same values
//! changes no byte. The block never ends on a `#` comment (Claude Code
//! printed nothing from a Bash call whose env file did, up to 2.1.108): its
//! last line is the no-op command `: podstack-end`. Secret values reach the
//! file (0600) and nowhere else: rendered for stdout they are left out.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::env::Env;

/// One exported variable.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Var {
    /// Its name.
    pub name: String,
    /// Its value (never serialized: JSON reports carry names only).
    #[serde(skip)]
    pub value: String,
    /// Whether a secret went into the value.
    pub secret: bool,
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = if self.secret { "***" } else { &self.value };
        write!(f, "{}={value:?}", self.name)
    }
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `export NAME='value'` lines for bash, zsh and sh.
    Sh,
    /// `NAME=value` lines, as Docker's `--env-file` reads them.
    Dotenv,
    /// One JSON object.
    Json,
    /// `GITHUB_ENV`'s format: `NAME=value`, or a heredoc with a random
    /// delimiter for a value with a newline.
    Github,
}

/// Whether `name` can be a shell variable's name.
pub fn valid_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Quotes `s` for a POSIX shell: one single-quoted word, `'` as `'\''`.
/// Every byte but NUL stands for itself inside single quotes, in bash, zsh
/// and sh alike (newlines, `$`, backticks, `\` included).
pub fn quote_sh(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

fn check(vars: &[Var]) -> Result<()> {
    for v in vars {
        if !valid_name(&v.name) {
            bail!(
                "`{}` is not a valid variable name (letters, digits, `_`, not starting with a digit)",
                v.name
            );
        }
        if v.value.contains('\0') {
            bail!(
                "the value of {} holds a NUL byte, which no environment can carry",
                v.name
            );
        }
    }
    Ok(())
}

/// Renders `vars` in `format`; `with_secrets` false leaves secret values
/// out (stdout), true puts them in (a file of the user's, 0600).
pub fn render(vars: &[Var], format: Format, with_secrets: bool) -> Result<String> {
    check(vars)?;
    let mut out = String::new();
    match format {
        Format::Sh => {
            for v in vars {
                if v.secret && !with_secrets {
                    out.push_str(&format!(
                        ": {} is a secret, written only into files: podstack env --write FILE\n",
                        v.name
                    ));
                } else {
                    out.push_str(&format!("export {}={}\n", v.name, quote_sh(&v.value)));
                }
            }
        }
        Format::Dotenv => {
            for v in vars {
                if v.value.contains('\n') || v.value.contains('\r') {
                    bail!(
                        "the value of {} spans lines, which a dotenv file cannot hold; use --format sh or github",
                        v.name
                    );
                }
                if v.secret && !with_secrets {
                    continue;
                }
                out.push_str(&format!("{}={}\n", v.name, v.value));
            }
        }
        Format::Json => {
            let map: BTreeMap<&str, &str> = vars
                .iter()
                .filter(|v| with_secrets || !v.secret)
                .map(|v| (v.name.as_str(), v.value.as_str()))
                .collect();
            out = serde_json::to_string_pretty(&map)?;
            out.push('\n');
        }
        Format::Github => {
            for v in vars {
                if v.secret && !with_secrets {
                    continue;
                }
                if v.value.contains('\n') || v.value.contains('\r') {
                    let delim = loop {
                        let d = format!("ghadelimiter_{}", crate::stack::random_string(24)?);
                        if !v.value.contains(&d) {
                            break d;
                        }
                    };
                    out.push_str(&format!("{}<<{delim}\n{}\n{delim}\n", v.name, v.value));
                } else {
                    out.push_str(&format!("{}={}\n", v.name, v.value));
                }
            }
        }
    }
    Ok(out)
}

/// The first line of podstack's block for `project`.
pub fn begin_marker(project: &str) -> String {
    format!("# >>> podstack {project} (managed by podstack; edits inside are replaced) >>>")
}

/// The last line of podstack's block for `project`: a no-op command, so the
/// file never ends on a comment.
pub fn end_marker(project: &str) -> String {
    format!(": podstack-end {}", quote_sh(project))
}

/// The block for `project` (sh format, secrets in). A value holding one of
/// the block's marker lines is refused: the next write would take it for
/// the block's edge.
pub fn block(project: &str, vars: &[Var]) -> Result<String> {
    let (begin, end) = (begin_marker(project), end_marker(project));
    for v in vars {
        if v.value.lines().any(|l| l == begin || l == end) {
            bail!(
                "the value of {} holds a line of podstack's own block markers",
                v.name
            );
        }
    }
    Ok(format!(
        "{}\n{}{}\n",
        begin_marker(project),
        render(vars, Format::Sh, true)?,
        end_marker(project)
    ))
}

/// `existing` with the block of `project` replaced in place, or appended
/// (after a newline when the file lacks its last one). Lines outside the
/// block are kept byte for byte (pure).
pub fn merge(existing: &str, project: &str, block: &str) -> String {
    let begin = begin_marker(project);
    let end = end_marker(project);
    let lines: Vec<&str> = existing.split_inclusive('\n').collect();
    let is = |l: &str, m: &str| l.trim_end_matches(['\n', '\r']) == m;
    // The block is the first end marker with a begin marker before it, and
    // the last such begin: a begin whose end was lost (edited, a write cut
    // short) never swallows the lines after it, a stray end is passed over.
    let pair = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| is(l, &end))
        .find_map(|(e, _)| {
            lines[..e]
                .iter()
                .rposition(|l| is(l, &begin))
                .map(|b| (b, e))
        });
    let (start, stop) = (pair.map(|p| p.0), pair.map(|p| p.1));
    match (start, stop) {
        (Some(s), Some(e)) => {
            let mut out: String = lines[..s].concat();
            out.push_str(block);
            // The file's own ending after the block stays as it was; a block
            // that ended the file without a newline gets ours.
            out.push_str(&lines[e + 1..].concat());
            out
        }
        _ => {
            let mut out = existing.to_string();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(block);
            out
        }
    }
}

/// Writes `vars` as `project`'s block into `path`, under a lock, atomically,
/// 0600 when a secret is in it (else the file's mode, or 0644). Returns
/// whether a byte changed.
pub async fn write_block(
    path: &Path,
    project: &str,
    vars: &[Var],
    lock_timeout: Duration,
    state_dir: &Path,
) -> Result<bool> {
    let block = block(project, vars)?;
    // The lock lives in podstack's state folder: nothing may be added
    // beside an env file (Claude Code runs every file of its session-env
    // folder as shell code).
    let _lock = crate::fsx::Lock::in_dir(
        path,
        &state_dir.join("locks"),
        lock_timeout,
        &format!("writing {}", path.display()),
    )
    .await?;
    let secret = vars.iter().any(|v| v.secret);
    // Temp files a killed podstack left beside the file go first (the
    // folder may be one whose every file is run as shell code).
    if path.parent().is_some_and(Path::is_dir) {
        crate::fsx::recover(path)?;
    }
    // Other hooks append to the same file without a lock (`>>`): podstack's
    // first block is appended the same way (O_APPEND: nothing of theirs is
    // lost), and a block that changes replaces the file only if nothing was
    // added since it was read (else it reads and merges again).
    for _ in 0..20 {
        let existing = read_env_file(path)?;
        let new = merge(&existing, project, &block);
        if new == existing {
            return Ok(false);
        }
        if new.starts_with(&existing) {
            append(path, &new.as_bytes()[existing.len()..], secret)?;
            return Ok(true);
        }
        if crate::fsx::replace_if_unchanged(path, existing.as_bytes(), new.as_bytes(), secret)? {
            return Ok(true);
        }
    }
    bail!(
        "{} kept changing while podstack wrote its block (20 tries); nothing of it was lost",
        path.display()
    )
}

fn read_env_file(path: &Path) -> Result<String> {
    use crate::fsx::ReadError;
    Ok(match crate::fsx::read_bounded(path, 16 << 20) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| {
            anyhow::anyhow!(
                "{} is not UTF-8 text; podstack leaves it alone: point the variable at a shell file",
                path.display()
            )
        })?,
        Err(ReadError::Missing) => String::new(),
        Err(ReadError::NotAFile(what)) => bail!(
            "{} is {what}, not a file; podstack writes its exports only into a regular file",
            path.display()
        ),
        Err(ReadError::TooBig(n)) => bail!(
            "{} holds {n} bytes, more than an env file should (every Bash call pastes it); podstack leaves it alone",
            path.display()
        ),
        Err(ReadError::Io(e)) => {
            return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display())));
        }
    })
}

/// Appends `bytes` in one O_APPEND write (a new file is made 0600 when it
/// holds a secret, 0644 otherwise; an existing one loses group and other
/// bits when a secret goes in). A write cut short (a full disk) is undone:
/// the file gets its old length and mode back, so no half line is left for
/// the next `>>` to be glued to.
fn append(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let before = f.metadata()?;
    let mode = before.permissions().mode() & 0o7777;
    if secret && mode & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7700))?;
    }
    if let Err(e) = f.write_all(bytes).and_then(|()| f.sync_data()) {
        let _ = f.set_len(before.len());
        let _ = f.set_permissions(std::fs::Permissions::from_mode(mode));
        return Err(anyhow::Error::new(e).context(format!(
            "cannot add podstack's block to {} (it is as it was)",
            path.display()
        )));
    }
    Ok(())
}

/// Appends `vars` to a `GITHUB_ENV`-style file (each step's file is new, so
/// there is no block to replace).
pub fn append_github(path: &Path, vars: &[Var]) -> Result<()> {
    use std::io::Write;
    let text = render(vars, Format::Github, true)?;
    let mut f = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// What detection knows without a stack file: the API socket that answers,
/// as `DOCKER_HOST` and `CONTAINER_HOST` (Docker's first, then podman's).
pub fn from_sockets(facts: &crate::detect::Facts) -> Vec<Var> {
    let answering = |engine: &str| {
        facts
            .sockets
            .iter()
            .find(|s| s.engine == engine && s.answers == Some(true))
            .and_then(|s| s.url.clone())
    };
    let mut out = Vec::new();
    if let Some(u) = answering("docker").or_else(|| answering("podman")) {
        out.push(Var {
            name: "DOCKER_HOST".into(),
            value: u,
            secret: false,
        });
    }
    // podman's clients read CONTAINER_HOST and speak podman's own API, which
    // a Docker daemon does not serve: only a podman socket goes there.
    if let Some(u) = answering("podman") {
        out.push(Var {
            name: "CONTAINER_HOST".into(),
            value: u,
            secret: false,
        });
    }
    out
}

/// The stack file's `[env]`, expanded in `scope` (and `${env.NAME}` from
/// podstack's environment).
pub fn from_stack(
    exports: &[(String, String)],
    scope: &crate::stack::resolve::Scope<'_>,
    env: &Env,
) -> Result<Vec<Var>> {
    let mut vars = scope.vars.clone();
    for (_, raw) in exports {
        for r in crate::stack::file::references(raw).into_iter().flatten() {
            if let Some(name) = r.strip_prefix("env.") {
                vars.insert(r.clone(), env.get(name).unwrap_or_default().to_string());
            }
        }
    }
    exports
        .iter()
        .map(|(name, raw)| {
            let (value, secret) = crate::stack::net::expand(raw, &vars, scope.secrets)?;
            Ok(Var {
                name: name.clone(),
                value,
                secret,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str, value: &str, secret: bool) -> Var {
        Var {
            name: name.into(),
            value: value.into(),
            secret,
        }
    }

    #[test]
    fn quoting_is_one_single_quoted_word() {
        assert_eq!(quote_sh("plain"), "'plain'");
        assert_eq!(quote_sh("it's"), "'it'\\''s'");
        assert_eq!(quote_sh(""), "''");
        assert_eq!(quote_sh("$x `y` \\ \n"), "'$x `y` \\ \n'");
    }

    #[test]
    fn secrets_stay_out_of_stdout_renderings() {
        let vars = [
            v("PGHOST", "127.0.0.1", false),
            v("PGPASSWORD", "s3cr3t", true),
        ];
        for f in [Format::Sh, Format::Dotenv, Format::Json, Format::Github] {
            let out = render(&vars, f, false).unwrap();
            assert!(!out.contains("s3cr3t"), "{f:?}: {out}");
            assert!(out.contains("127.0.0.1"), "{f:?}: {out}");
        }
        assert!(
            render(&vars, Format::Sh, true)
                .unwrap()
                .contains("'s3cr3t'")
        );
        assert!(render(&[v("1X", "a", false)], Format::Sh, true).is_err());
        assert!(render(&[v("X", "a\nb", false)], Format::Dotenv, true).is_err());
        assert_eq!(format!("{:?}", vars[1]), "PGPASSWORD=\"***\"");
    }

    #[test]
    fn the_block_replaces_itself_and_keeps_every_other_line() {
        let vars = [v("A", "1", false)];
        let b = block("p", &vars).unwrap();
        assert!(b.ends_with(": podstack-end 'p'\n"));
        let other = "export OTHER=1 # another hook\n# their comment";
        let once = merge(other, "p", &b);
        assert_eq!(once, format!("{other}\n{b}"));
        assert_eq!(merge(&once, "p", &b), once);
        let b2 = block("p", &[v("A", "2", false)]).unwrap();
        let twice = merge(&format!("{once}export AFTER=1\n"), "p", &b2);
        assert_eq!(twice, format!("{other}\n{b2}export AFTER=1\n"));
        // Two projects, two blocks.
        let q = block("q", &vars).unwrap();
        let both = merge(&once, "q", &q);
        assert_eq!(merge(&both, "p", &b), both);
        assert!(both.ends_with(&q));
        assert_eq!(merge("", "p", &b), b);
        // A begin without its end (edited away) swallows nothing.
        let orphan = format!("{}\nexport MINE=1\n", begin_marker("p"));
        let fixed = merge(&orphan, "p", &b);
        assert_eq!(fixed, format!("{orphan}{b}"));
        assert_eq!(merge(&fixed, "p", &b), fixed);
        let b3 = block("p", &[v("A", "3", false)]).unwrap();
        assert_eq!(merge(&fixed, "p", &b3), format!("{orphan}{b3}"));
        let stray = format!("{}\n", end_marker("p"));
        let once = merge(&stray, "p", &b);
        assert_eq!(merge(&once, "p", &b), once);
    }

    #[test]
    fn github_heredocs_use_a_delimiter_not_in_the_value() {
        let out = render(
            &[v("M", "a\nb", false), v("S", "x", false)],
            Format::Github,
            true,
        )
        .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("M<<ghadelimiter_"));
        let delim = &lines[0][3..];
        assert_eq!(lines[1..4], ["a", "b", delim]);
        assert_eq!(lines[4], "S=x");
    }
}
