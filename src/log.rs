//! Progress lines on stderr, shown with `--verbose` (stdout stays for results).

use std::sync::atomic::{AtomicBool, Ordering};

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Turns progress lines on or off.
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

/// Prints `podstack: MSG` on stderr when verbose.
pub fn info(msg: impl FnOnce() -> String) {
    if VERBOSE.load(Ordering::Relaxed) {
        eprintln!("podstack: {}", msg());
    }
}
