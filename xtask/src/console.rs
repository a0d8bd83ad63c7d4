//! Reading what the guest printed: the verdict from the `PINTRACE-VM:`
//! markers, kernel panics and warnings, and files exported between
//! `PINTRACE-VM: FILE <name> <size>` and `PINTRACE-VM: END <name>`.

use base64::Engine as _;
use std::fmt;

pub const MARK: &str = "PINTRACE-VM: ";

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    /// The payload exited with this code.
    Fail(i32),
    Panic(String),
    TimedOut(u64),
    /// QEMU ended without the EXIT marker (no BOOTED either: `booted` false).
    NoExit {
        booted: bool,
    },
}

impl Verdict {
    pub fn passed(&self) -> bool {
        *self == Verdict::Pass
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass => write!(f, "pass"),
            Verdict::Fail(code) => write!(f, "fail (payload exited with {code})"),
            Verdict::Panic(line) => write!(f, "kernel panic: {line}"),
            Verdict::TimedOut(s) => write!(f, "guest timed out after {s} s"),
            Verdict::NoExit { booted: true } => {
                write!(f, "fail (the guest stopped before the payload finished)")
            }
            Verdict::NoExit { booted: false } => {
                write!(f, "fail (the kernel never reached /init)")
            }
        }
    }
}

/// The text after `PINTRACE-VM: <what> ` on any line, in order.
pub fn markers<'a>(console: &'a str, what: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let tag = format!("{MARK}{what}");
    console.lines().filter_map(move |l| {
        let rest = &l[l.find(&tag)? + tag.len()..];
        if rest.is_empty() {
            Some("")
        } else {
            rest.strip_prefix(' ').map(|r| r.trim_end_matches('\r'))
        }
    })
}

/// The kernel release from the BOOTED marker.
pub fn booted(console: &str) -> Option<&str> {
    markers(console, "BOOTED").next()
}

/// Judge a finished run. `timed_out`: the harness killed QEMU after so many
/// seconds. The payload's exit code wins over everything, then a panic.
pub fn verdict(console: &str, timed_out: Option<u64>) -> Verdict {
    if let Some(code) = markers(console, "EXIT")
        .last()
        .and_then(|c| c.trim().parse::<i32>().ok())
    {
        return if code == 0 {
            Verdict::Pass
        } else {
            Verdict::Fail(code)
        };
    }
    if let Some(line) = console.lines().find(|l| l.contains("Kernel panic")) {
        let line = line.trim_end_matches('\r');
        let text = line[line.find("Kernel panic").unwrap_or(0)..].to_string();
        return Verdict::Panic(text);
    }
    if let Some(s) = timed_out {
        return Verdict::TimedOut(s);
    }
    Verdict::NoExit {
        booted: booted(console).is_some(),
    }
}

/// A guest that died of a breakpoint the kernel no longer had: an `int3`
/// oops at the call site of a function's entry (`+0x5` after `endbr64`,
/// `+0x1` without)
/// whose code already shows the finished `call` (`e8`) in front of the
/// trapping address. Attaching a trampoline patches that site with a
/// temporary `int3` while other CPUs run the function; under QEMU's TCG a
/// vCPU has been seen to trap on it after the patch completed, which the
/// kernel cannot handle. Returns the patched function and the offset.
pub fn stale_patch_breakpoint(console: &str) -> Option<String> {
    let mut lines = console.lines().skip_while(|l| !l.contains("Oops: int3"));
    lines.next()?;
    let rest: Vec<&str> = lines.take(12).collect();
    let rip = rest.iter().find_map(|l| l.split("RIP: 0010:").nth(1))?;
    let (func, off) = rip.trim().split_once('+')?;
    if !(off.starts_with("0x5/") || off.starts_with("0x1/")) {
        return None;
    }
    let code = rest.iter().find_map(|l| l.split("Code: ").nth(1))?;
    let off = off.split('/').next().unwrap_or(off);
    code.contains("e8 <").then(|| format!("{func}+{off}"))
}

/// Kernel warnings and oopses worth a note even when the payload passed.
pub fn kernel_trouble(console: &str) -> Vec<String> {
    const SIGNS: &[&str] = &[
        "WARNING:",
        "BUG:",
        "Oops:",
        "general protection fault",
        "Call Trace:",
    ];
    console
        .lines()
        .filter(|l| !l.contains(MARK) && SIGNS.iter().any(|s| l.contains(s)))
        .filter(|l| !l.contains("Call Trace:"))
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect()
}

#[derive(Debug, PartialEq)]
pub struct Export {
    pub name: String,
    pub data: Vec<u8>,
    /// Size announced by the guest differs from what decoded (damaged).
    pub damaged: bool,
}

/// Files exported by `pintrace-vm-export`. Lines inside a block that are
/// not base64 (kernel messages on a shared console) are skipped; an
/// unterminated block is reported as damaged.
pub fn exports(text: &str) -> Vec<Export> {
    let mut out = Vec::new();
    let mut current: Option<(String, usize, String)> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.find(MARK).map(|i| &line[i + MARK.len()..]) {
            if let Some(spec) = rest.strip_prefix("FILE ") {
                if let Some((name, size)) = spec.trim().rsplit_once(' ') {
                    if let Some((n, _, b64)) = current.take() {
                        out.push(finish(n, usize::MAX, &b64));
                    }
                    current = Some((
                        safe_name(name),
                        size.parse().unwrap_or(usize::MAX),
                        String::new(),
                    ));
                }
                continue;
            }
            if rest.starts_with("END ") {
                if let Some((n, size, b64)) = current.take() {
                    out.push(finish(n, size, &b64));
                }
                continue;
            }
        }
        if let Some((_, _, b64)) = current.as_mut() {
            let l = line.trim();
            if l.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=')
            {
                b64.push_str(l);
            }
        }
    }
    if let Some((n, _, b64)) = current.take() {
        out.push(finish(n, usize::MAX, &b64));
    }
    out
}

fn finish(name: String, size: usize, b64: &str) -> Export {
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(data) => Export {
            damaged: data.len() != size,
            name,
            data,
        },
        Err(_) => Export {
            name,
            data: Vec::new(),
            damaged: true,
        },
    }
}

/// A file name the host can use safely: no folders, no dot-dot.
pub fn safe_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.trim_start_matches('.') {
        "" => "export".into(),
        t => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: &str =
        "[    0.000000] Linux version 6.12\r\nPINTRACE-VM: BOOTED 6.12.117+deb12-cloud-amd64\r\n";

    #[test]
    fn pass_and_fail() {
        let c = format!("{BOOT}Linux pintrace 6.12\r\nPINTRACE-VM: EXIT 0\r\n");
        assert_eq!(verdict(&c, None), Verdict::Pass);
        assert_eq!(booted(&c), Some("6.12.117+deb12-cloud-amd64"));
        let c = format!("{BOOT}PINTRACE-VM: EXIT 1\r\n");
        assert_eq!(verdict(&c, None), Verdict::Fail(1));
        // the last EXIT counts; text glued before the marker is fine
        let c = format!("{BOOT}echo PINTRACE-VM: EXIT 0\nno newlinePINTRACE-VM: EXIT 101\n");
        assert_eq!(verdict(&c, None), Verdict::Fail(101));
    }

    #[test]
    fn a_stale_patch_breakpoint_is_told_apart() {
        let oops = "[  299.008053] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\r\n\
            [  299.008308] CPU: 1 UID: 0 PID: 27 Comm: ksoftirqd/1 Not tainted 6.12.117\r\n\
            [  299.008432] RIP: 0010:bio_endio+0x5/0x1e0\r\n\
            [  299.008630] Code: 90 90 f3 0f 1e fa e8 <77> 87 87 1c 41 54 55\r\n\
            [  299.009922] Kernel panic - not syncing: Fatal exception in interrupt\r\n";
        assert_eq!(
            stale_patch_breakpoint(oops).as_deref(),
            Some("bio_endio+0x5")
        );
        // Elsewhere in the function, or with the breakpoint still in the
        // code, it is a real one.
        let inside = oops.replace("+0x5/", "+0x2c/");
        assert_eq!(stale_patch_breakpoint(&inside), None);
        let live = oops.replace("e8 <77>", "cc <77>");
        assert_eq!(stale_patch_breakpoint(&live), None);
        assert_eq!(
            stale_patch_breakpoint("Kernel panic - not syncing: VFS"),
            None
        );
    }

    #[test]
    fn panic_timeout_and_silence() {
        let c = "[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n";
        assert_eq!(
            verdict(c, None),
            Verdict::Panic("Kernel panic - not syncing: VFS: Unable to mount root fs".into())
        );
        assert_eq!(verdict(c, Some(30)), verdict(c, None));
        assert_eq!(verdict(BOOT, Some(30)), Verdict::TimedOut(30));
        assert_eq!(
            verdict(BOOT, Some(30)).to_string(),
            "guest timed out after 30 s"
        );
        assert_eq!(verdict(BOOT, None), Verdict::NoExit { booted: true });
        assert_eq!(verdict("", None), Verdict::NoExit { booted: false });
    }

    #[test]
    fn kernel_warnings() {
        let c = format!(
            "{BOOT}[ 2.0] WARNING: CPU: 0 PID: 1 at mm/gup.c:123 foo\n[ 2.1] Call Trace:\nok\n"
        );
        assert_eq!(
            kernel_trouble(&c),
            ["[ 2.0] WARNING: CPU: 0 PID: 1 at mm/gup.c:123 foo"]
        );
    }

    #[test]
    fn decodes_exports() {
        let text = "junk\r\nPINTRACE-VM: FILE report.json 11\r\naGVsbG8g\r\n[ 3.2] random: kernel says hi\r\nd29ybGQ=\r\n\
                    PINTRACE-VM: END report.json\r\nPINTRACE-VM: FILE ../evil 3\nYWJj\nPINTRACE-VM: END ../evil\n\
                    PINTRACE-VM: FILE cut 10\nYWJj\n";
        let e = exports(text);
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[0],
            Export {
                name: "report.json".into(),
                data: b"hello world".to_vec(),
                damaged: false
            }
        );
        assert_eq!(e[1].name, "_evil");
        assert_eq!(e[1].data, b"abc");
        assert!(e[2].damaged);
        assert_eq!(safe_name(".."), "export");
    }
}
