//! Progress of `up` on stderr: on a terminal, one live line per service,
//! redrawn in place; otherwise plain lines stamped with the time since `up`
//! began (for logs and CI).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use tokio::time::Instant;

/// The services' current lines, when stderr is a terminal.
struct Board {
    start: Instant,
    names: Vec<String>,
    states: Vec<String>,
    drawn: bool,
}

static BOARD: Mutex<Option<Board>> = Mutex::new(None);

/// Starts a board for `names` when stderr is a terminal.
pub fn begin(start: Instant, names: &[String]) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    if let Ok(mut b) = BOARD.lock() {
        *b = Some(Board {
            start,
            names: names.to_vec(),
            states: vec!["waiting".into(); names.len()],
            drawn: false,
        });
    }
}

/// Ends the board (its last state stays on screen).
pub fn end() {
    if let Ok(mut b) = BOARD.lock() {
        *b = None;
    }
}

/// Reports `service`'s new state.
pub fn say(start: Instant, service: &str, state: &str) {
    if let Ok(mut guard) = BOARD.lock()
        && let Some(b) = guard.as_mut()
        && let Some(i) = b.names.iter().position(|n| n == service)
    {
        b.states[i] = format!("{state} ({:.2} s)", b.start.elapsed().as_secs_f64());
        let width = b.names.iter().map(|n| n.len()).max().unwrap_or(0);
        let mut out = String::new();
        if b.drawn {
            out.push_str(&format!("\x1b[{}A", b.names.len()));
        }
        for (n, s) in b.names.iter().zip(&b.states) {
            out.push_str(&format!("\r\x1b[K  {n:<width$}  {s}\n"));
        }
        b.drawn = true;
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
        return;
    }
    crate::log::say(&format!(
        "[{:>5.2}s] {service}: {state}",
        start.elapsed().as_secs_f64()
    ));
}
