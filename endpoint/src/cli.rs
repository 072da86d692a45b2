//! What the two command-line programs (`ves-agent`, `noc-device`) share: writing to
//! standard output without panicking when it is closed, and printing an error chain once.
//!
//! Rust ignores SIGPIPE, so a program whose reader went away (`noc-device inbox | head -1`)
//! gets `EPIPE` from `write`, and `println!` turns that into a panic with a backtrace.
//! Both programs write through [`print`] instead; a closed standard output becomes
//! [`OutputError::Closed`], which `main` turns into a quiet exit with
//! [`EXIT_STDOUT_CLOSED`] — what a shell reports for a C tool killed by SIGPIPE, so
//! `set -o pipefail` scripts see the same status as with `cat` or `seq`.

use std::io::Write;

use thiserror::Error;

/// Exit status when standard output was closed by its reader: 128 + SIGPIPE (13).
pub const EXIT_STDOUT_CLOSED: u8 = 141;

/// Why writing to standard output failed.
#[derive(Debug, Error)]
pub enum OutputError {
    /// The reader is gone (`EPIPE`): not worth a message, the reader asked for no more.
    #[error("standard output is closed")]
    Closed,
    /// Any other failure (a full disk behind a redirection, ...): a real error.
    #[error("writing to standard output: {0}")]
    Write(std::io::Error),
}

impl From<std::io::Error> for OutputError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe { OutputError::Closed } else { OutputError::Write(e) }
    }
}

/// Writes `bytes` to standard output and flushes, so that a closed pipe is noticed here
/// and not in an implicit flush at exit.
pub fn print(bytes: &[u8]) -> Result<(), OutputError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

/// [`print`] of a formatted line (what `println!` would write).
pub fn print_line(args: std::fmt::Arguments<'_>) -> Result<(), OutputError> {
    let mut line = args.to_string();
    line.push('\n');
    print(line.as_bytes())
}

/// Whether `err` or any error in its source chain is [`OutputError::Closed`].
pub fn is_stdout_closed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if matches!(e.downcast_ref::<OutputError>(), Some(OutputError::Closed)) {
            return true;
        }
        cur = e.source();
    }
    false
}

/// An error and its causes on one line, `outer: cause: root cause`, leaving out a cause
/// whose text the line already holds. Many errors of this workspace put their source into
/// their own message (`local store: <SQLite's message>`) *and* return it from `source()`,
/// so printing the whole chain would say everything twice.
pub fn report(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cur = e.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Error)]
    enum Outer {
        #[error("local store: {0}")]
        Repeats(#[source] std::io::Error),
        #[error("reading the state")]
        Hides(#[source] std::io::Error),
        #[error("stdout")]
        Out(#[from] OutputError),
    }

    #[test]
    fn report_names_each_cause_once() {
        let io = || std::io::Error::other("disk I/O error");
        assert_eq!(report(&Outer::Repeats(io())), "local store: disk I/O error");
        assert_eq!(report(&Outer::Hides(io())), "reading the state: disk I/O error");
    }

    #[test]
    fn only_a_broken_pipe_is_a_closed_stdout() {
        let broken = OutputError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(matches!(broken, OutputError::Closed));
        assert!(is_stdout_closed(&Outer::Out(broken)), "found through the source chain");
        let full = OutputError::from(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(matches!(full, OutputError::Write(_)));
        assert!(!is_stdout_closed(&Outer::Out(full)));
        assert!(!is_stdout_closed(&Outer::Hides(std::io::Error::from(std::io::ErrorKind::BrokenPipe))));
    }
}
