//! GitHub Actions: when `GITHUB_ACTIONS=true`, `up` masks the stack's
//! secrets (`::add-mask::` on stderr, the runner's own way: the value is
//! written once so that the runner hides it everywhere after; that line is
//! the one place a secret leaves podstack), reports each failure as
//! an `::error::` annotation with its logs folded in a `::group::`, and
//! appends a table of the services to `$GITHUB_STEP_SUMMARY` (pure
//! renderers; the edge in `stack::cmd`).

use std::fmt::Write as _;

use crate::stack::up::Report;

/// Escapes workflow-command data (`%`, CR, LF), as the runner reads it.
fn escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// `::add-mask::` lines for `values` (empty values are not masks).
pub fn masks<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for v in values.filter(|v| !v.is_empty()) {
        // A mask covers one line: a multi-line value is masked line by line.
        for line in v.lines().filter(|l| !l.is_empty()) {
            let _ = writeln!(out, "::add-mask::{}", escape(line));
        }
    }
    out
}

/// `::error::` annotations, each failure's logs in a group.
pub fn annotations(r: &Report) -> String {
    let mut out = String::new();
    for f in &r.failures {
        let _ = writeln!(
            out,
            "::error title=podstack {}::{}: {}",
            escape(&r.project),
            escape(&f.service),
            escape(&f.reason)
        );
        if !f.logs.is_empty() {
            let _ = writeln!(out, "::group::{} logs", escape(&f.service));
            for l in &f.logs {
                let _ = writeln!(out, "{l}");
            }
            let _ = writeln!(out, "::endgroup::");
        }
    }
    out
}

/// The step summary: one Markdown table row per service.
pub fn summary(r: &Report) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut out = format!(
        "### podstack: {} on {} ({} network)\n\n| service | state | ports | ready after |\n| --- | --- | --- | ---: |\n",
        cell(&r.project),
        r.engine,
        r.mode
    );
    for s in &r.services {
        let ports: Vec<String> = s.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            cell(&s.name),
            if s.ready { "ready" } else { "**not ready**" },
            ports.join(", "),
            s.ready_ms
                .map_or_else(String::new, |ms| format!("{:.2} s", ms as f64 / 1000.0))
        );
    }
    for f in &r.failures {
        let _ = writeln!(out, "\n**{}**: {}", cell(&f.service), cell(&f.reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_commands_are_escaped_and_masks_cover_every_line() {
        assert_eq!(
            masks(["a%b", "", "x\ny"].into_iter()),
            "::add-mask::a%25b\n::add-mask::x\n::add-mask::y\n"
        );
        assert_eq!(escape("1\r\n2"), "1%0D%0A2");
    }
}
