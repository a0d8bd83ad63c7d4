//! QEMU's output while it runs: copied to the run's log (and stdout) until
//! QEMU exits, the timeout passes, or it lingers after the EXIT marker.

use crate::console;
use crate::util::display;
use anyhow::{Context as _, Result};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// After EXIT, how long QEMU gets to power off before it is killed.
const POWEROFF_GRACE: Duration = Duration::from_secs(30);

pub struct Streamed {
    pub console: Vec<u8>,
    pub timed_out: bool,
    pub booted_at: Option<Duration>,
    pub elapsed: Duration,
}

enum Chunk {
    Out(Vec<u8>),
    Err(Vec<u8>),
    OutDone,
}

fn pump(mut from: impl Read + Send + 'static, tx: mpsc::Sender<Chunk>, out: bool) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let c = buf[..n].to_vec();
                    let _ = tx.send(if out { Chunk::Out(c) } else { Chunk::Err(c) });
                }
            }
        }
        if out {
            let _ = tx.send(Chunk::OutDone);
        }
    });
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> bool {
    let from = from.saturating_sub(needle.len());
    hay.get(from..)
        .is_some_and(|h| h.windows(needle.len()).any(|w| w == needle))
}

/// Run QEMU, copying its output to the log (and stdout), until it exits, the
/// timeout passes, or it lingers after the EXIT marker.
pub fn stream(
    cmd: &mut Command,
    timeout: Duration,
    echo: bool,
    log: &mut std::fs::File,
) -> Result<Streamed> {
    let start = Instant::now();
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", display(cmd)))?;
    let (tx, rx) = mpsc::channel();
    pump(child.stdout.take().expect("piped"), tx.clone(), true);
    pump(child.stderr.take().expect("piped"), tx, false);
    let booted_mark = format!("{}BOOTED", console::MARK).into_bytes();
    let exit_mark = format!("{}EXIT", console::MARK).into_bytes();
    let mut console = Vec::new();
    let (mut booted_at, mut exited_at, mut timed_out) = (None, None::<Instant>, false);
    loop {
        let deadline = match exited_at {
            Some(t) => (t + POWEROFF_GRACE).min(start + timeout),
            None => start + timeout,
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Chunk::Out(c)) => {
                let from = console.len();
                console.extend_from_slice(&c);
                log.write_all(&c)?;
                if echo {
                    let mut so = std::io::stdout().lock();
                    let _ = so.write_all(&c);
                    let _ = so.flush();
                }
                if booted_at.is_none() && find(&console, &booted_mark, from) {
                    booted_at = Some(start.elapsed());
                }
                if exited_at.is_none() && find(&console, &exit_mark, from) {
                    exited_at = Some(Instant::now());
                }
            }
            Ok(Chunk::Err(c)) => {
                log.write_all(&c)?;
                if echo {
                    let _ = std::io::stderr().write_all(&c);
                }
            }
            Ok(Chunk::OutDone) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = exited_at.is_none();
                let _ = child.kill();
                break;
            }
        }
    }
    let _ = child.wait();
    // Whatever was still in flight when QEMU ended.
    while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(200)) {
        match chunk {
            Chunk::Out(c) => {
                console.extend_from_slice(&c);
                log.write_all(&c)?;
            }
            Chunk::Err(c) => log.write_all(&c)?,
            Chunk::OutDone => {}
        }
    }
    Ok(Streamed {
        console,
        timed_out,
        booted_at,
        elapsed: start.elapsed(),
    })
}
