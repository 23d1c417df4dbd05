//! How a run ends: the one table of exit codes, shared by every command,
//! `--help` and the README (a test checks that the README agrees).
//!
//! Commands return an [`Outcome`]; any error that reaches `main` is exit 2.
//! A signal that stops a run is 128 + its number, as shells report it.

use std::process::ExitCode;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done; the answer is yes.
    Done,
    /// Done, but the answer is no: containers cannot run here, even after
    /// every fix podstack knows. The output says why and what to do.
    No,
    /// podstack could not do its job: bad input (named with file, line and
    /// column), a file it may not write, a tool missing, a usage error.
    Error,
    /// Stopped by SIGINT (Ctrl-C): children killed, temporary files removed.
    Interrupted,
    /// Stopped by SIGTERM: children killed, temporary files removed.
    Terminated,
}

/// An error that is a negative answer ("containers cannot run here"), not a
/// failure to do the job: it ends the run with [`Outcome::No`].
#[derive(Debug)]
pub struct No(pub String);

impl std::fmt::Display for No {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for No {}

/// The outcome an error that reached `main` stands for.
pub fn of_error(e: &anyhow::Error) -> Outcome {
    if e.chain().any(|c| c.downcast_ref::<No>().is_some()) {
        Outcome::No
    } else {
        Outcome::Error
    }
}

/// The table: code and meaning, in the order shown to people.
pub const TABLE: [(u8, &str); 5] = [
    (0, "done; the answer is yes"),
    (
        1,
        "done, but the answer is no: containers cannot run here, even after every fix podstack knows (doctor also says so when podman is missing), or a service did not become ready, or status finds the stack not up; the output says why and what to do",
    ),
    (
        2,
        "error: podstack could not do its job: bad input (named with file:line:column), a file it may not write, a tool it needs is missing, a port held by another process, a name clash with a container podstack did not make, an image it cannot make, a usage error",
    ),
    (
        130,
        "stopped by SIGINT (Ctrl-C): children killed, temporary files removed",
    ),
    (
        143,
        "stopped by SIGTERM: children killed, temporary files removed",
    ),
];

impl Outcome {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Done => TABLE[0].0,
            Outcome::No => TABLE[1].0,
            Outcome::Error => TABLE[2].0,
            Outcome::Interrupted => TABLE[3].0,
            Outcome::Terminated => TABLE[4].0,
        }
    }

    /// `Done` when `yes`, else `No`.
    pub fn answer(yes: bool) -> Self {
        if yes { Outcome::Done } else { Outcome::No }
    }
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> ExitCode {
        ExitCode::from(o.code())
    }
}

/// The table as the text under `--help`.
pub fn help_text() -> String {
    let mut s = String::from("Exit codes:\n");
    for (code, meaning) in TABLE {
        s.push_str(&format!("  {code:<4} {meaning}\n"));
    }
    s
}

/// The table as the README's markdown.
#[cfg(test)]
pub fn markdown() -> String {
    let mut s = String::from("| code | meaning |\n| --- | --- |\n");
    for (code, meaning) in TABLE {
        s.push_str(&format!("| {code} | {meaning} |\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_table() {
        assert_eq!(Outcome::Done.code(), 0);
        assert_eq!(Outcome::No.code(), 1);
        assert_eq!(Outcome::Error.code(), 2);
        assert_eq!(Outcome::Interrupted.code(), 128 + 2);
        assert_eq!(Outcome::Terminated.code(), 128 + 15);
    }

    #[test]
    fn the_readme_shows_the_same_table() {
        let readme = include_str!("../README.md");
        let table = markdown();
        assert!(
            readme.contains(&table),
            "README.md must hold this exit-code table:\n{table}"
        );
    }
}
