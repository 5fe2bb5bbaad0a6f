//! Writing to stdout from the client commands. A reader that goes away (`plover ls | head`)
//! ends the command quietly, as Unix tools do, instead of a panic in `println!`.

use std::io::Write;

/// Write one line to stdout; exit quietly if stdout is closed.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

/// `println!` for the client commands, through [`line`].
macro_rules! say {
    ($($arg:tt)*) => { $crate::cli::output::line(&format!($($arg)*)) };
}
pub(crate) use say;
