//! Command reports on standard output that survive a closed pipe.
//!
//! `println!` panics when stdout is a pipe whose reader has gone, as in
//! `attnflow run ... | head -1`. The commands print their reports after or between the steps
//! that write files, so a closed stdout must not stop those steps. After the first write that
//! fails with `BrokenPipe`, the rest of the output is dropped, and the command finishes and
//! returns its usual exit status. The Rust runtime ignores SIGPIPE, so the closed pipe shows
//! up as that error rather than as a signal.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write has found stdout closed.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line to stdout, or nothing once the reader has closed it.
///
/// Errors other than `BrokenPipe` (a full disk behind a redirect, say) are returned.
pub fn write_line(text: fmt::Arguments) -> io::Result<()> {
    if CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut stdout = io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(error) => Err(io::Error::new(
            error.kind(),
            format!("failed to write to stdout: {error}"),
        )),
        Ok(()) => Ok(()),
    }
}

/// `println!` for command reports: see [`write_line`]. Evaluates to `std::io::Result<()>`.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::stdout::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::stdout::write_line(format_args!($($arg)*))
    };
}
