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

/// One oops on the console: its kind (`int3`, `general protection
/// fault`, `0000` for a page fault...) and its lines from the header on.
#[derive(Debug, Clone, PartialEq)]
pub struct Oops<'a> {
    pub kind: &'a str,
    pub lines: Vec<&'a str>,
}

/// How many lines of an oops are kept: the header, the registers, the code
/// bytes and the top of the call trace.
const OOPS_LINES: usize = 40;

/// The header `die()` prints, `<kind>: <4 hex digits> [#<n>]`, with
/// `Oops: ` in front from 6.9 on (`int3: 0000 [#1]` on 6.1, `Oops: int3:
/// 0000 [#1]` on 6.12). Returns the kind.
fn oops_header(line: &str) -> Option<&str> {
    let at = line.find(" [#")?;
    let head = &line[..at];
    let (kind, code) = head.rsplit_once(": ")?;
    if code.len() != 4 || !code.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // After the timestamp (`[   1.37] `), without the `Oops: ` prefix.
    let kind = kind.rsplit_once("] ").map_or(kind, |(_, k)| k).trim();
    Some(kind.strip_prefix("Oops: ").unwrap_or(kind))
}

/// Every oops on the console, in order.
pub fn oopses(console: &str) -> Vec<Oops<'_>> {
    let lines: Vec<&str> = console.lines().map(|l| l.trim_end_matches('\r')).collect();
    let starts: Vec<(usize, &str)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.contains(MARK))
        .filter_map(|(i, l)| Some((i, oops_header(l)?)))
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, &(i, kind))| {
            let end = starts
                .get(n + 1)
                .map_or(lines.len(), |&(j, _)| j)
                .min(i + OOPS_LINES);
            Oops {
                kind,
                lines: lines[i..end].to_vec(),
            }
        })
        .collect()
}

/// A guest killed by a breakpoint the kernel had already taken away: an
/// `int3` oops whose code bytes show, at the byte before the trap, a
/// patch site that is complete. The kernel patches live text (jump
/// labels, static calls, ftrace and BPF trampoline sites) by writing an
/// `int3` over the first byte, then the rest, then the first byte, with
/// every CPU serialised between the steps; its `int3` handler emulates
/// the new instruction only while a patch is in progress. Multi-threaded
/// TCG has been seen to let a vCPU execute the `int3` of a patch that had
/// already finished (the kernel's own thread on a stray int3 with no `cc`
/// in the dumped code, 6.15-next under QEMU, ends in the same
/// conclusion), which the kernel cannot handle. A trap over a byte that is
/// still `cc` is a breakpoint that is really there, never this.
#[derive(Debug, Clone, PartialEq)]
pub struct StalePatch {
    /// Where the CPU trapped, as the oops names it (`bio_endio+0x5`).
    pub rip: String,
    /// What the site holds now.
    pub insn: &'static str,
}

impl fmt::Display for StalePatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "int3 at {} over a finished patch (now a {})",
            self.rip, self.insn
        )
    }
}

/// The instruction forms x86 text patching writes: the site's bytes, from
/// its first, against each form (`None` matches any byte).
const PATCH_FORMS: &[(&str, &[Option<u8>])] = &[
    ("call", &[Some(0xe8), None, None, None, None]),
    ("jmp", &[Some(0xe9), None, None, None, None]),
    ("short jmp", &[Some(0xeb), None]),
    (
        "5-byte nop",
        &[Some(0x0f), Some(0x1f), Some(0x44), Some(0x00), Some(0x00)],
    ),
    ("2-byte nop", &[Some(0x66), Some(0x90)]),
];

/// The first oops decides: later ones are often its consequences.
pub fn stale_patch(console: &str) -> Option<StalePatch> {
    let first = oopses(console).into_iter().next()?;
    if first.kind != "int3" {
        return None;
    }
    let rip = first
        .lines
        .iter()
        .find_map(|l| l.split("RIP: 0010:").nth(1))?
        .trim();
    let rip = rip.split('/').next().unwrap_or(rip).to_string();
    let code = first.lines.iter().find_map(|l| l.split("Code: ").nth(1))?;
    let tokens: Vec<&str> = code.split_whitespace().collect();
    let trap = tokens.iter().position(|t| t.starts_with('<'))?;
    let site: Vec<u8> = tokens[trap.checked_sub(1)?..]
        .iter()
        .map_while(|t| u8::from_str_radix(t.trim_matches(|c| c == '<' || c == '>'), 16).ok())
        .collect();
    let insn = PATCH_FORMS.iter().find_map(|(name, form)| {
        (site.len() >= form.len()
            && form
                .iter()
                .zip(&site)
                .all(|(want, got)| want.is_none_or(|w| w == *got)))
        .then_some(*name)
    })?;
    Some(StalePatch { rip, insn })
}

/// The first oops, when it is not a stale patch: what a failed run reports
/// with its verdict.
pub fn oops_excerpt(console: &str) -> Option<String> {
    if stale_patch(console).is_some() {
        return None;
    }
    oopses(console)
        .into_iter()
        .next()
        .map(|o| o.lines.join("\n"))
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

    /// A trampoline attached to `bio_endio` while the other vCPU ran it
    /// (6.12 guest, this harness).
    const TRAMPOLINE: &str = "[  299.008053] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\r\n\
        [  299.008308] CPU: 1 UID: 0 PID: 27 Comm: ksoftirqd/1 Not tainted 6.12.117\r\n\
        [  299.008432] RIP: 0010:bio_endio+0x5/0x1e0\r\n\
        [  299.008630] Code: 90 90 f3 0f 1e fa e8 <77> 87 87 1c 41 54 55\r\n\
        [  299.009922] Kernel panic - not syncing: Fatal exception in interrupt\r\n";

    /// The bio fill's trampoline attached while the engine ran it, in
    /// process context (6.12 guest, `cargo xtask flake --tcg-thread multi`).
    const TRAMPOLINE_IN_TASK: &str = "[   51.095019] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\r\n\
        [   51.095522] CPU: 0 UID: 0 PID: 168 Comm: engine-0 Not tainted 6.12.117+deb12-cloud-amd64 #1  Debian 6.12.117-1~deb12u1\r\n\
        [   51.095638] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014\r\n\
        [   51.095778] RIP: 0010:bio_iov_iter_get_pages+0x5/0x5c0\r\n\
        [   51.096240] Code: f1 48 0f 47 ce eb 84 0f 0b e9 75 ff ff ff 0f 1f 80 00 00 00 00 90 90 90 90 90 90 90 90 90 90 90 90 90 90 90 90 f3 0f 1e fa e8 <b7> 01 d4 36 41 57 41 56 41 55 41 54 55 53 48 83 ec 38 65 48 8b 04\r\n\
        [   51.096344] RSP: 0018:ff3fae2cc04539c8 EFLAGS: 00000246\r\n";

    /// A tracepoint's static branch in the syscall entry switched on while
    /// the agent ran it (6.12 guest, `.ci/run`, retried on one thread).
    const SHORT_JMP: &str = "[  627.103603] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\r\n\
        [  627.104039] CPU: 1 UID: 0 PID: 311 Comm: pintrace Not tainted 6.12.117+deb12-cloud-amd64 #1  Debian 6.12.117-1~deb12u1\r\n\
        [  627.104295] RIP: 0010:syscall_trace_enter+0xd6/0x190\r\n\
        [  627.104710] Code: 83 cf 05 e8 3c 2c f4 ff 85 c0 75 4a 48 8b 45 00 a8 04 74 bd f6 85 39 0c 00 00 01 74 b4 48 c7 c5 ff ff ff ff e9 7b ff ff ff eb <49> e9 57 ff ff ff 4d 8b 4d 68 49 8b 4d 60 44 89 e7 f6 40 10 02 75\r\n\
        [  627.108548] Kernel panic - not syncing: Fatal exception in interrupt\r\n";

    /// The `block_rq_complete` tracepoint's static branch switched on
    /// during I/O (6.12 guest, `robust::a_start_during_direct_io...`).
    const JUMP_LABEL_ON: &str = "[  412.118201] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\r\n\
        [  412.118544] CPU: 0 UID: 0 PID: 17 Comm: ksoftirqd/0 Not tainted 6.12.117+deb12-cloud-amd64 #1  Debian 6.12.117-1~bpo12+1\r\n\
        [  412.118893] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014\r\n\
        [  412.119210] RIP: 0010:blk_update_request+0x3c/0x4a0\r\n\
        [  412.119577] Code: 41 55 41 54 55 53 48 83 ec 08 48 8b 47 10 89 74 24 04 48 89 04 24 0f b6 c2 89 44 24 04 e9 <27> 02 00 00 44 8b 6f 30 48 8b 6f 48\r\n\
        [  412.120011] RSP: 0018:ffffb4a8c008be10 EFLAGS: 00000246\r\n\
        [  412.121203] Call Trace:\r\n\
        [  412.121240]  <IRQ>\r\n\
        [  412.121401]  blk_mq_end_request+0x1a/0x40\r\n\
        [  412.121452]  blk_complete_reqs+0x40/0x50\r\n\
        [  412.121502]  handle_softirqs+0xd8/0x2c0\r\n\
        [  412.121555]  run_ksoftirqd+0x2f/0x50\r\n\
        [  412.121801] Kernel panic - not syncing: Fatal exception in interrupt\r\n";

    /// A jump label switched off at boot, before any probe (6.12 guest on
    /// a loaded host, `cargo xtask vm`).
    const JUMP_LABEL_AT_BOOT: &str = "[    1.370412] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\r\n\
        [    1.370650] CPU: 1 UID: 0 PID: 0 Comm: swapper/1 Not tainted 6.12.117+deb12-cloud-amd64 #1\r\n\
        [    1.370888] RIP: 0010:sched_clock_cpu+0x9/0x1a0\r\n\
        [    1.371002] Code: 90 90 90 90 90 90 90 90 90 90 90 90 f3 0f 1e fa 41 55 41 54 55 53 66 <90> e8 61 4e 05 00 48 8b 1d 5a 2c\r\n\
        [    1.371420] Kernel panic - not syncing: Attempted to kill the idle task!\r\n";

    /// A stray int3 over an ftrace site under QEMU 10 (6.15-next, as
    /// reported on linux-kernel, one line as the console prints it).
    const FTRACE_NOP: &str = "<4>[   58.997439] Oops: int3: 0000 [#1] SMP PTI\n\
        <4>[   58.998260] RIP: 0010:_raw_spin_lock+0x5/0x50\n\
        <4>[   58.998563] Code: 5d e9 ff 12 00 00 66 66 2e 0f 1f 84 00 00 00 00 00 0f 1f 40 00 90 90 90 90 90 90 90 90 90 90 90 90 90 90 90 90 f3 0f 1e fa 0f <1f> 44 00 00 55 48 89 e5 53 48 89 fb bf 01 00 00 00 e8 15 12 e4 fe\n";

    #[test]
    fn stale_patches_are_told_apart_in_every_form() {
        let found = |c: &str| stale_patch(c).map(|p| (p.rip, p.insn));
        assert_eq!(found(TRAMPOLINE), Some(("bio_endio+0x5".into(), "call")));
        assert_eq!(
            found(TRAMPOLINE_IN_TASK),
            Some(("bio_iov_iter_get_pages+0x5".into(), "call"))
        );
        assert_eq!(
            found(JUMP_LABEL_ON),
            Some(("blk_update_request+0x3c".into(), "jmp"))
        );
        assert_eq!(
            found(SHORT_JMP),
            Some(("syscall_trace_enter+0xd6".into(), "short jmp"))
        );
        assert_eq!(
            found(JUMP_LABEL_AT_BOOT),
            Some(("sched_clock_cpu+0x9".into(), "2-byte nop"))
        );
        assert_eq!(
            found(FTRACE_NOP),
            Some(("_raw_spin_lock+0x5".into(), "5-byte nop"))
        );
        assert_eq!(
            stale_patch(JUMP_LABEL_ON).unwrap().to_string(),
            "int3 at blk_update_request+0x3c over a finished patch (now a jmp)"
        );
        // 6.1 prints the header without `Oops: `.
        let old = TRAMPOLINE.replace("Oops: int3", "int3");
        assert_eq!(found(&old), Some(("bio_endio+0x5".into(), "call")));
        assert_eq!(oops_excerpt(TRAMPOLINE), None);
    }

    /// Real oopses that are no emulator hazard: a live breakpoint, jumps
    /// into BPF JIT padding, other kinds of fault.
    #[test]
    fn real_oopses_are_never_taken_for_stale_patches() {
        // The breakpoint is still in the code (`cc`): a real stray int3, on
        // real hardware (6.15-rc4-next, reported on linux-kernel).
        let live = "[   77.103476] Oops: int3: 0000 [#1] SMP PTI\n\
            [   77.103485] RIP: 0010:kmem_cache_alloc_noprof+0x10a/0x2c0\n\
            [   77.103490] Code: 4c 89 e7 e8 28 e4 cd 00 66 90 f7 c5 00 00 40 00 0f 85 89 01 00 00 f6 43 09 20 0f 85 7f 01 00 00 4c 8b 24 24 48 8b 74 24 38 cc <1f> 44 00 00 48 8b 44 24 08\n\
            [   77.103504] Call Trace:\n\
            [   77.103507]  vm_area_dup+0x1e/0xe0\n";
        // Executing the int3 padding of a freed BPF program (6.12-rc4).
        let jit = "[ 1185.755273] Oops: int3: 0000 [#1] SMP NOPTI\n\
            [ 1185.755281] RIP: 0010:0xffffffffc00ad8d5\n\
            [ 1185.755289] Code: cc cc cc cc cc cc cc cc cc cc cc <cc> cc cc cc cc cc cc cc\n\
            [ 1185.755378] Kernel panic - not syncing: Fatal exception in interrupt\n";
        // No code bytes could be read.
        let unreadable = "[   24.727144] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n\
            [   24.732854] RIP: 0010:__schedule+0x342/0x8f0\n\
            [   24.733886] Code: Unable to access opcode bytes at 0xffffffff81a0b318.\n";
        // A call site, but the fault is a general protection fault.
        let gpf = TRAMPOLINE.replace(
            "Oops: int3: 0000",
            "Oops: general protection fault, probably for non-canonical address 0xdead000000000122: 0000",
        );
        // A page fault on 6.1, then an int3 oops of the stale shape that
        // followed it: the first oops decides.
        let null = "[    5.1] BUG: kernel NULL pointer dereference, address: 0000000000000008\n\
            [    5.1] #PF: supervisor read access in kernel mode\n\
            [    5.1] Oops: 0000 [#1] PREEMPT SMP NOPTI\n\
            [    5.1] RIP: 0010:gup_put_folio+0x1c/0x90\n\
            [    5.1] Code: 0f 1f 44 00 00 48 8b 47 08 <48> 8b 40 08\n";
        let chained = format!("{null}{TRAMPOLINE}");
        for c in [live, jit, unreadable, &gpf, null, &chained] {
            assert_eq!(stale_patch(c), None, "{c}");
            assert!(oops_excerpt(c).is_some(), "{c}");
        }
        assert_eq!(oopses(live)[0].kind, "int3");
        assert_eq!(
            oopses(&gpf)[0].kind,
            "general protection fault, probably for non-canonical address 0xdead000000000122"
        );
        assert_eq!(oopses(null)[0].kind, "Oops");
        assert_eq!(oopses(&chained).len(), 2);
        assert!(oops_excerpt(null)
            .unwrap()
            .starts_with("[    5.1] Oops: 0000 [#1]"));
        assert_eq!(stale_patch("Kernel panic - not syncing: VFS"), None);
        assert_eq!(oops_excerpt("Kernel panic - not syncing: VFS"), None);
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
