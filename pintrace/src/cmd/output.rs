//! Where a command's report goes. Every write returns its error instead of
//! panicking as `print!` does, so a reader that closes the pipe early
//! (`pintrace check --list | head -5`) ends the command through its normal
//! error path, cleanup included, and `main` ends it quietly
//! ([`is_broken_pipe`]), as ripgrep and fd do.

use anyhow::{Context as _, Result};
use pintrace_engine::schema::{versioned, ErrorObject};
use serde::Serialize;
use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
};

/// A report's destination.
pub struct Output {
    inner: Box<dyn Write + Send>,
}

impl Output {
    pub fn stdout() -> Output {
        Output {
            inner: Box::new(io::stdout()),
        }
    }

    /// Stdout, or a new file at `path` (given with `flag`, named in the
    /// error) when there is one.
    pub fn to(flag: &str, path: Option<&Path>) -> Result<Output> {
        let Some(path) = path else {
            return Ok(Output::stdout());
        };
        let file = File::create(path)
            .with_context(|| format!("{flag} {}: creating the file", path.display()))?;
        Ok(Output {
            inner: Box::new(BufWriter::new(file)),
        })
    }

    /// Writes `text` whole and flushes it, so that a reader sees each part
    /// of a report as soon as it is written (and a closed pipe is noticed
    /// at once).
    pub fn text(&mut self, text: &str) -> io::Result<()> {
        self.inner.write_all(text.as_bytes())?;
        self.inner.flush()
    }

    /// Writes `line` and a newline.
    pub fn line(&mut self, line: &str) -> io::Result<()> {
        self.inner.write_all(line.as_bytes())?;
        self.inner.write_all(b"\n")?;
        self.inner.flush()
    }

    /// Writes `value` as one line of JSON, with the schema version: every
    /// JSON line pintrace writes goes through here.
    pub fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        Ok(self.line(&serde_json::to_string(&versioned(value))?)?)
    }
}

/// Where a command's JSON goes: `None` for stdout, or the file it names.
pub type JsonDest<'a> = Option<&'a Path>;

/// Writes the error object of `command`, which cannot run, where its JSON
/// goes: stdout, or appended to the file (after what was written before
/// the error, or alone when the error came first). A failure to write it
/// is ignored: the message is on stderr already.
pub fn write_error(dest: JsonDest<'_>, command: &str, message: &str) {
    let line = ErrorObject::new(command, message).to_line() + "\n";
    let _ = match dest {
        None => {
            let mut out = io::stdout().lock();
            out.write_all(line.as_bytes()).and_then(|()| out.flush())
        }
        Some(path) => std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes())),
    };
}

/// Whether `err` comes from writing to a pipe whose reader is gone.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_found_under_context() {
        let err = Err::<(), _>(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("printing the summary")
            .unwrap_err();
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("broken pipe")));
    }
}
