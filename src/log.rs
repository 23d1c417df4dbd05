//! Messages on stderr (stdout stays for results). A closed or full stderr
//! never aborts podstack: write errors are ignored here, in the one place
//! that writes to stderr.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Turns progress lines on or off.
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

/// Prints `podstack: MSG` on stderr when verbose.
pub fn info(msg: impl FnOnce() -> String) {
    if VERBOSE.load(Ordering::Relaxed) {
        say(&msg());
    }
}

/// Prints `podstack: MSG` on stderr.
pub fn say(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "podstack: {msg}");
}

/// Prints `podstack: error: MSG` on stderr.
pub fn error(msg: &str) {
    say(&format!("error: {msg}"));
}
