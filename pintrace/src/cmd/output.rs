//! Where a command's report goes. Every write returns its error instead of
//! panicking as `print!` does, so a reader that closes the pipe early
//! (`pintrace check --list | head -5`) ends the command through its normal
//! error path, cleanup included, and `main` ends it quietly
//! ([`is_broken_pipe`]), as ripgrep and fd do.

use anyhow::Result;
use serde::Serialize;
use std::io::{self, Write};

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

    /// Writes `value` as one line of JSON.
    pub fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        Ok(self.line(&serde_json::to_string(value)?)?)
    }
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
    use anyhow::Context as _;

    #[test]
    fn a_broken_pipe_is_found_under_context() {
        let err = Err::<(), _>(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("printing the summary")
            .unwrap_err();
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("broken pipe")));
    }
}
