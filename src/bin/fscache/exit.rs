//! How the command ends: its exit statuses, and the one-line message that
//! says why it failed.

use std::error::Error;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::process::ExitCode;

use fscache::ErrorKind;

/// The exit statuses, as `--help` and the README list them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Done (also when the reader of our output went away).
    Ok = 0,
    /// Something failed.
    Error = 1,
    /// Bad arguments (clap's status for them).
    Usage = 2,
    /// Another process holds the whole cache past `--wait`, or an entry
    /// to evict is in use.
    Busy = 3,
    /// The directory is not a cache.
    NotACache = 4,
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> ExitCode {
        ExitCode::from(status as u8)
    }
}

/// Why a command stopped early.
#[derive(Debug)]
pub enum Failure {
    /// The library said no.
    Cache(fscache::Error),
    /// Writing our output failed (a full disk behind a redirect, say).
    Write(io::Error),
    /// Whoever read our output closed it (`fscache ls | head -1`): not a
    /// failure of ours, and nothing more to say.
    Closed,
    /// `fscache stress` failed.
    Other(Box<dyn Error>),
}

impl From<fscache::Error> for Failure {
    fn from(e: fscache::Error) -> Failure {
        Failure::Cache(e)
    }
}

impl Failure {
    /// A failed write to standard output.
    pub fn from_write(e: io::Error) -> Failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::Closed
        } else {
            Failure::Write(e)
        }
    }

    /// From the error of `fscache stress`, which may be any of the above.
    pub fn from_boxed(e: Box<dyn Error>) -> Failure {
        match e.downcast::<fscache::Error>() {
            Ok(e) => Failure::Cache(*e),
            Err(e) => match e.downcast::<io::Error>() {
                Ok(e) => Failure::from_write(*e),
                Err(e) => Failure::Other(e),
            },
        }
    }

    /// The exit status this failure ends the command with.
    pub fn status(&self) -> Status {
        match self {
            Failure::Cache(e) => match e.kind() {
                ErrorKind::Contended => Status::Busy,
                ErrorKind::NotACache => Status::NotACache,
                _ => Status::Error,
            },
            Failure::Closed => Status::Ok,
            Failure::Write(_) | Failure::Other(_) => Status::Error,
        }
    }

    /// The message, on one line: the error and each of its causes.
    pub fn message(&self) -> Option<String> {
        let (head, mut source): (String, Option<&dyn Error>) = match self {
            Failure::Cache(e) => (e.to_string(), e.source()),
            Failure::Write(e) => ("failed to write the output".into(), Some(e)),
            Failure::Other(e) => (e.to_string(), e.source()),
            Failure::Closed => return None,
        };
        let mut line = format!("fscache: {head}");
        while let Some(cause) = source {
            let _ = write!(line, ": {cause}");
            source = cause.source();
        }
        if self.status() == Status::NotACache {
            line.push_str(" (`fscache init DIR` creates one)");
        }
        Some(line)
    }

    /// Say why on stderr, and give the exit status.
    pub fn report(self) -> ExitCode {
        if let Some(line) = self.message() {
            warn_line(&line);
        }
        self.status().into()
    }
}

/// Write one line to stderr. A stderr nobody reads is no reason to fail
/// (or, as `eprintln!` would, to panic).
pub fn warn_line(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    #[test]
    fn each_kind_of_failure_has_its_status_and_a_closed_pipe_says_nothing() {
        let busy = Failure::from(fscache::Error::TimedOut {
            path: PathBuf::from("/c/cache.lock"),
            after: Duration::from_secs(5),
        });
        assert_eq!(busy.status(), Status::Busy);
        let not = Failure::from(fscache::Error::NotACache {
            path: PathBuf::from("/typo"),
            reason: "there is no such directory",
        });
        assert_eq!(not.status(), Status::NotACache);
        assert_eq!(
            not.message().as_deref(),
            Some("fscache: `/typo` is not a cache: there is no such directory (`fscache init DIR` creates one)")
        );
        let closed = Failure::from_write(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!((closed.status(), closed.message()), (Status::Ok, None));
        let full = Failure::from_write(io::Error::from_raw_os_error(28));
        assert_eq!(full.status(), Status::Error);
        let said = full.message().unwrap_or_default();
        assert!(said.contains("No space left"), "{said}");
        let io = Failure::from(fscache::Error::Io {
            op: fscache::Op::Open,
            path: PathBuf::from("/c/objects"),
            source: io::Error::from_raw_os_error(13),
        });
        assert_eq!(io.status(), Status::Error);
        let said = io.message().unwrap_or_default();
        assert!(
            said.starts_with("fscache: failed to open `/c/objects`: Permission denied"),
            "one line with the cause: {said}"
        );
    }
}
