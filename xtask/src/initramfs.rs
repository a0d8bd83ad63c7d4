//! The guest's initramfs: busybox, the binaries to run with their shared
//! libraries, the kernel modules in load order, and an `/init` that mounts
//! the usual file systems, loads the modules, runs the payload and powers
//! off, printing `PINTRACE-VM:` marker lines the host harness reads.

use crate::cpio::Archive;
use crate::modules::read_module;
use crate::util::shell_quote;
use anyhow::{bail, Context as _, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the guest finds its modules.
pub const MODULE_DIR: &str = "/lib/modules/pintrace";
/// Files a payload writes here are exported to the host when it ends.
pub const GUEST_OUT_DIR: &str = "/tmp/pintrace-out";
/// The serial port the export helper writes to (the harness's second -serial).
pub const EXPORT_TTY: &str = "/dev/ttyS1";

/// What the guest runs after boot, from /tmp, with stdin from /dev/null.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Payload {
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The payload as one shell command line.
    pub fn shell_line(&self) -> String {
        let env = self
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", shell_quote(v)));
        let argv = self.argv.iter().map(|a| shell_quote(a));
        env.chain(argv).collect::<Vec<_>>().join(" ")
    }
}

/// Extra file for the guest, at an absolute path.
#[derive(Debug, Clone)]
pub struct GuestFile {
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

pub struct Spec<'a> {
    /// The host's busybox (static, from busybox-static, ideally).
    pub busybox: &'a Path,
    /// `/bin/<name>` ← host file, each with its shared libraries.
    pub binaries: &'a [(String, PathBuf)],
    pub files: &'a [GuestFile],
    /// Modules to carry: (name, host file, possibly compressed).
    pub modules: &'a [(String, PathBuf)],
    /// The names of `modules` to insmod at boot, in this order.
    pub load: &'a [String],
    /// `modules.dep` for busybox's modprobe (`LoadPlan::modules_dep`).
    pub modules_dep: &'a str,
    pub payload: &'a Payload,
    /// If the payload still runs after this many seconds, print the
    /// processes' kernel stacks and the blocked tasks (before the host's
    /// timeout kills the guest).
    pub watchdog_secs: Option<u64>,
    /// Shell run after the modules are loaded and before the BOOTED
    /// marker (the scratch disks' discovery, `devices.rs`).
    pub before_payload: String,
}

/// Build the archive bytes.
pub fn build(spec: &Spec) -> Result<Vec<u8>> {
    let mut a = Archive::new();
    for d in [
        "/dev",
        "/proc",
        "/sys",
        "/tmp",
        "/root",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/etc",
        "/lib/modules",
        "/mnt",
        "/srv",
        // What rpc.nfsd, rpc.mountd and exportfs need (docs/kernel.md,
        // "NFSv4.2 over loopback"); v4recovery makes nfsd track clients
        // in a folder instead of asking nfsdcld, which the guest lacks.
        "/var",
        "/var/lib",
        "/var/lib/nfs",
        "/var/lib/nfs/v4recovery",
    ] {
        a.dir(d);
    }
    a.char_device("/dev/console", 0o600, 5, 1);
    a.char_device("/dev/null", 0o666, 1, 3);
    a.file(
        "/init",
        0o755,
        init_script(spec.payload, spec.watchdog_secs, &spec.before_payload).as_bytes(),
    );
    a.file("/bin/pintrace-vm-export", 0o755, EXPORT_SCRIPT.as_bytes());
    a.file("/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    a.file("/etc/group", 0o644, b"root:x:0:\n");

    let mut libs = BTreeSet::new();
    let busybox = [("busybox".to_string(), spec.busybox.to_path_buf())];
    for (name, host) in busybox.iter().chain(spec.binaries) {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        a.file(&format!("/bin/{name}"), 0o755, &data);
        libs.extend(shared_libraries(host)?);
    }
    for lib in libs {
        let data = std::fs::read(&lib).with_context(|| format!("reading {lib}"))?;
        a.file(&lib, 0o755, &data);
    }
    for f in spec.files {
        a.file(&f.path, f.mode, &f.data);
    }
    // Empty unless a file above gave them (the first file at a path wins).
    for f in ["/var/lib/nfs/etab", "/var/lib/nfs/rmtab", "/etc/exports"] {
        a.file(f, 0o644, b"");
    }
    for (name, file) in spec.modules {
        let data = read_module(file)?;
        a.file(&format!("{MODULE_DIR}/{name}.ko"), 0o644, &data);
    }
    let order: String = spec.load.iter().map(|n| format!("{n}\n")).collect();
    a.file(&format!("{MODULE_DIR}/load-order"), 0o644, order.as_bytes());
    a.file(
        &format!("{MODULE_DIR}/modules.dep"),
        0o644,
        spec.modules_dep.as_bytes(),
    );
    Ok(a.finish())
}

/// The host paths of the shared libraries (and loader) `binary` needs.
pub fn shared_libraries(binary: &Path) -> Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new()); // static
        }
        bail!("`ldd {}` failed: {}", binary.display(), stderr.trim());
    }
    let entries = parse_ldd(&stdout);
    let missing: Vec<_> = entries
        .iter()
        .filter(|e| e.missing)
        .map(|e| e.name.as_str())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} needs libraries the host lacks: {}",
            binary.display(),
            missing.join(", ")
        );
    }
    Ok(entries.into_iter().filter_map(|e| e.path).collect())
}

#[derive(Debug, PartialEq)]
pub struct LddEntry {
    pub name: String,
    /// Absolute host path; None for the vDSO, static markers and misses.
    pub path: Option<String>,
    pub missing: bool,
}

/// Parse `ldd` output lines:
/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`, `linux-vdso.so.1 (0x...)`,
/// `libfoo.so => not found`, `statically linked`.
pub fn parse_ldd(text: &str) -> Vec<LddEntry> {
    let strip_addr = |s: &str| -> String {
        match s.rfind(" (0x") {
            Some(i) => s[..i].trim().to_string(),
            None => s.trim().to_string(),
        }
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "statically linked")
        .map(|l| match l.split_once("=>") {
            Some((name, rest)) => {
                let rest = strip_addr(rest);
                let missing = rest == "not found";
                LddEntry {
                    name: name.trim().to_string(),
                    path: (rest.starts_with('/') && !missing).then_some(rest),
                    missing,
                }
            }
            None => {
                let name = strip_addr(l);
                LddEntry {
                    path: name.starts_with('/').then(|| name.clone()),
                    name,
                    missing: false,
                }
            }
        })
        .collect()
}

/// `/init`: a busybox shell script.
pub fn init_script(payload: &Payload, watchdog_secs: Option<u64>, before: &str) -> String {
    let watchdog = watchdog_secs
        .map(|s| WATCHDOG_TEMPLATE.replace("@SECS@", &s.to_string()))
        .unwrap_or_default();
    INIT_TEMPLATE
        .replace("@WATCHDOG@\n", &watchdog)
        .replace("@BEFORE@\n", before)
        .replace("@MODULE_DIR@", MODULE_DIR)
        .replace("@OUT_DIR@", GUEST_OUT_DIR)
        .replace("@EXPORT_TTY@", EXPORT_TTY)
        .replace("@PAYLOAD@", &payload.shell_line())
}

const INIT_TEMPLATE: &str = r#"#!/bin/busybox sh
# pintrace VM init, generated by `cargo xtask`.
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
warn() { echo "PINTRACE-VM: WARN $*"; }
mnt() { mkdir -p "$3" 2>/dev/null; mount -t "$1" "$2" "$3" || warn "mount -t $1 $3 failed"; }
mnt proc proc /proc
mnt sysfs sysfs /sys
mnt devtmpfs devtmpfs /dev
mnt tracefs tracefs /sys/kernel/tracing
mnt debugfs debugfs /sys/kernel/debug
mnt bpf bpf /sys/fs/bpf
mnt tmpfs tmpfs /tmp
# busybox's modprobe looks in /lib/modules/<release>.
ln -s @MODULE_DIR@ "/lib/modules/$(uname -r)"
while read -r m; do
    [ -n "$m" ] || continue
    insmod "@MODULE_DIR@/$m.ko" || warn "insmod $m failed"
done < "@MODULE_DIR@/load-order"
# NFS over loopback (and anything else on 127.0.0.1) needs lo up; the
# kernel gives it 127.0.0.1 when it comes up.
ip link set lo up || warn "ip link set lo up failed"
export PINTRACE_VM=1 PINTRACE_VM_OUT=@OUT_DIR@ PINTRACE_VM_EXPORT_TTY=@EXPORT_TTY@
export PINTRACE_MODULE_DIR=@MODULE_DIR@
@BEFORE@
[ -c "$PINTRACE_VM_EXPORT_TTY" ] && stty -F "$PINTRACE_VM_EXPORT_TTY" raw -echo 2>/dev/null
mkdir -p "$PINTRACE_VM_OUT"
echo "PINTRACE-VM: BOOTED $(uname -r)"
cd /tmp
wd=
@WATCHDOG@
@PAYLOAD@ </dev/null
code=$?
[ -n "$wd" ] && kill "$wd" 2>/dev/null
for f in "$PINTRACE_VM_OUT"/*; do
    [ -f "$f" ] && pintrace-vm-export "$f"
done
echo "PINTRACE-VM: EXIT $code"
poweroff -f
"#;

/// Runs in the background while the payload runs; `wd` is its pid.
const WATCHDOG_TEMPLATE: &str = r#"(
    sleep @SECS@
    warn "payload still running after @SECS@ s; kernel stacks follow"
    for t in /proc/[0-9]*/task/[0-9]*; do
        c=$(tr '\0' ' ' < "$t/cmdline" 2>/dev/null)
        [ -n "$c" ] || continue
        echo "--- task ${t##*/}: $c[$(sed -n 's/^State:[[:space:]]*//p' "$t/status")]"
        cat "$t/stack" 2>/dev/null
    done
    echo w > /proc/sysrq-trigger
    dmesg | sed -n '/sysrq: Show Blocked State/,$p'
) &
wd=$!
"#;

/// `/bin/pintrace-vm-export FILE [NAME]`: print FILE base64-encoded between
/// marker lines on the export port (the console when there is none); the
/// host decodes it into `target/pintrace-vm/out/<run>/NAME`.
const EXPORT_SCRIPT: &str = r#"#!/bin/busybox sh
f="$1"; name="${2:-${1##*/}}"
if [ ! -f "$f" ]; then echo "pintrace-vm-export: $f: no such file" >&2; exit 1; fi
out="${PINTRACE_VM_EXPORT_TTY:-/dev/console}"
[ -c "$out" ] || out=/dev/console
size=$(wc -c < "$f")
{ echo "PINTRACE-VM: FILE $name $size"; base64 "$f"; echo "PINTRACE-VM: END $name"; } > "$out"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd7b5f2000)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0e1c2a0000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e1c0bf000)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1c2f0000)\n\
            \tlibfoo.so.1 => not found\n";
        let e = parse_ldd(text);
        assert_eq!(e.len(), 5);
        assert_eq!(e[0].path, None);
        assert_eq!(
            e[1].path.as_deref(),
            Some("/lib/x86_64-linux-gnu/libgcc_s.so.1")
        );
        assert_eq!(e[2].name, "libc.so.6");
        assert_eq!(e[3].path.as_deref(), Some("/lib64/ld-linux-x86-64.so.2"));
        assert!(e[4].missing && e[4].path.is_none());
        assert!(parse_ldd("\tstatically linked\n").is_empty());
    }

    #[test]
    fn payload_line_is_quoted() {
        let p = Payload::new(["/bin/t", "--ignored", "it's"]).env("PINTRACE_BIN", "/bin/pintrace");
        assert_eq!(
            p.shell_line(),
            r#"PINTRACE_BIN='/bin/pintrace' '/bin/t' '--ignored' 'it'\''s'"#
        );
        let init = init_script(&p, Some(5), "");
        assert!(init.contains("sleep 5"));
        assert!(init.contains(&p.shell_line()));
        assert!(!init.contains('@'), "unreplaced placeholder");
    }

    #[test]
    fn busybox_sh_parses_the_scripts() {
        let Ok(bb) = which::which("busybox") else {
            return;
        };
        for script in [
            init_script(&Payload::new(["true"]), Some(9), ""),
            init_script(&Payload::new(["true"]), None, "echo x\n"),
            EXPORT_SCRIPT.to_string(),
        ] {
            let ok = Command::new(&bb)
                .args(["sh", "-n", "-c", &script])
                .status()
                .unwrap()
                .success();
            assert!(ok, "syntax error in:\n{script}");
        }
    }
}
