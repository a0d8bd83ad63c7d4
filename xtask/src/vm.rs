//! `cargo xtask vm`: build pintrace and its guest tests, boot a kernel, run
//! the guest suite (or any command) inside, report.

use crate::console;
use crate::debian::{self, KernelSpec};
use crate::initramfs::{GuestFile, Payload};
use crate::pinzoo;
use crate::qemu::{self, BootOpts, BootRequest, Outcome};
use crate::util::{self, Workspace};
use anyhow::{anyhow, bail, Context as _, Result};
use std::io::BufReader;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// Where the guest finds the agent and the guest test binary.
pub const GUEST_PINTRACE: &str = "/bin/pintrace";
pub const GUEST_TESTS: &str = "/bin/pintrace-guest-tests";

/// Options shared by every command that boots guests.
#[derive(clap::Args, Debug, Clone)]
pub struct GuestOpts {
    /// 6.1 or 6.12 (Debian cloud kernels) or the path of a bzImage; repeat
    /// for several [default: `vm` 6.12, `test` 6.1 and 6.12].
    #[arg(long, value_name = "6.1|6.12|PATH")]
    pub kernel: Vec<String>,
    /// Modules for a custom kernel: a lib/modules/<release> tree or a folder
    /// of .ko files.
    #[arg(long, value_name = "DIR")]
    pub modules: Option<PathBuf>,
    /// Kill the guest after this many seconds (the guest suite takes about
    /// 4 minutes on 6.12 under TCG on an idle 2-core machine, and several
    /// times that on a slower or shared one).
    #[arg(long, default_value_t = 2400, value_name = "SECS")]
    pub timeout: u64,
    #[command(flatten)]
    pub machine: MachineOpts,
    /// Load this module too (with its dependencies); `loop` always is.
    #[arg(long = "module", value_name = "NAME")]
    pub module: Vec<String>,
    /// Put this host binary (a path, or a name on PATH) at /bin/<name>,
    /// with its shared libraries.
    #[arg(long = "bin", value_name = "PATH|NAME")]
    pub bin: Vec<String>,
    #[command(flatten)]
    pub boot: BootOpts,
    /// Build the pin-bug zoo module for the kernel and put it at
    /// /lib/pinzoo.ko (always done for the guest suite).
    #[arg(long)]
    pub pinzoo: bool,
    /// Keep debug info in the guest's binaries (file:line in backtraces;
    /// a ~10x larger initramfs that boots slower).
    #[arg(long)]
    pub no_strip: bool,
    /// Also run the Direct I/O path suites (guest/families.rs,
    /// guest/planted.rs, guest/paths.rs: `pintrace check` per family, the
    /// planted bio-release bugs, the engine's SG_IO and passthrough modes):
    /// slow, so apart from the default suite.
    #[arg(long)]
    pub paths: bool,
    /// Keep the console off stdout (it still goes to the log).
    #[arg(skip)]
    pub quiet: bool,
}

impl Default for GuestOpts {
    fn default() -> Self {
        Self {
            kernel: Vec::new(),
            modules: None,
            timeout: 2400,
            machine: MachineOpts::default(),
            module: Vec::new(),
            bin: Vec::new(),
            boot: BootOpts::default(),
            pinzoo: false,
            no_strip: false,
            paths: false,
            quiet: false,
        }
    }
}

/// The guest machine's size, for `vm`, `test` and `check-kernel`.
#[derive(clap::Args, Debug, Clone)]
pub struct MachineOpts {
    /// Guest memory.
    #[arg(long, default_value_t = 2048, value_name = "MiB")]
    pub memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub smp: u32,
}

impl Default for MachineOpts {
    fn default() -> Self {
        Self {
            memory: 2048,
            smp: 2,
        }
    }
}

impl MachineOpts {
    pub fn apply(&self, req: &mut BootRequest) {
        req.memory_mib = self.memory;
        req.smp = self.smp;
    }
}

#[derive(clap::Args, Debug)]
pub struct VmArgs {
    #[command(flatten)]
    pub guest: GuestOpts,
    /// Run this in the guest instead of the guest test suite
    /// (e.g. `-- pintrace doctor`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The host files that go into every guest.
pub struct Built {
    pub pintrace: PathBuf,
    pub guest_tests: Option<PathBuf>,
}

pub fn vm(ws: &Workspace, args: &VmArgs) -> Result<bool> {
    // A fresh machine: packages, rust-src, bpf-linker (quick when present).
    crate::setup::setup(&crate::setup::SetupArgs::default())?;
    let want_suite = args.command.is_empty();
    // `vm -- CMD` carries the guest tests too, to run one of them by hand.
    let built = build(ws, want_suite || ws.has_guest_tests)?;
    let payload = if want_suite {
        suite_payload(&args.guest)
    } else {
        Payload::new(args.command.clone())
    };
    let kernels = if args.guest.kernel.is_empty() {
        vec!["6.12".to_string()]
    } else {
        args.guest.kernel.clone()
    };
    let mut all_passed = true;
    for k in &kernels {
        let outcome = run_guest(ws, &args.guest, k, &built, payload.clone())?;
        report(&outcome);
        all_passed &= outcome.verdict.passed();
    }
    Ok(all_passed)
}

/// The test modules of the Direct I/O path suites (`--paths`).
pub const PATH_SUITES: &[&str] = &["families::", "planted::", "paths::"];

/// The guest suite: every ignored test of `pintrace/tests/guest.rs`, one
/// at a time; the path suites only with `--paths`.
pub fn suite_payload(opts: &GuestOpts) -> Payload {
    let mut argv = vec![
        GUEST_TESTS,
        "--ignored",
        "--test-threads=1",
        "--skip",
        SOAK_TEST,
    ];
    if !opts.paths {
        for m in PATH_SUITES {
            argv.extend(["--skip", m]);
        }
    }
    Payload::new(argv)
        .env("PINTRACE_BIN", GUEST_PINTRACE)
        .env("RUST_BACKTRACE", "1")
}

/// One test of the guest suite, by its exact name.
pub fn test_payload(name: &str) -> Payload {
    Payload::new([GUEST_TESTS, "--ignored", "--exact", name])
        .env("PINTRACE_BIN", GUEST_PINTRACE)
        .env("RUST_BACKTRACE", "1")
}

/// Loaded at boot for the guest suite on Debian's kernels: vfat (legacy
/// fs/direct-io.c Direct I/O) and the character sets its mount needs.
/// NVMe and virtio-scsi come with the scratch disks (`devices::MODULES`).
pub const LEGACY_DIO_MODULES: &[&str] = &["vfat", "nls_cp437", "nls_iso8859_1"];

/// Carried with their dependencies but loaded only by whoever needs them
/// (`modprobe NAME [PARAM=VALUE...]`, busybox's, reads the modules.dep the
/// harness writes): the other Direct I/O paths (docs/kernel.md, "Modules
/// in the guests"). Loading them all at boot costs every guest seconds
/// under TCG; scsi_debug makes its disk as it loads, with the size and
/// sector size given then. dm_mod holds the `error` target.
pub const ON_DEMAND_MODULES: &[&str] = &[
    "sg",
    "scsi_debug",
    "dm_mod",
    "dm_flakey",
    "udf",
    "nfsd",
    "nfsv4",
];

/// Host tools the guests get at /bin for those paths (docs/kernel.md has
/// the steps they take): mkfs.vfat, mkfs.ext4 (the NFS export), the NFS
/// server's daemons and exportfs
/// (NFSv4 needs no rpcbind), dmsetup, mkudffs, and sg_readcap to look at
/// a SCSI disk. Packages: `setup::PACKAGES`.
pub const DIO_TOOLS: &[&str] = &[
    "mkfs.vfat",
    "mkfs.ext4",
    "rpc.nfsd",
    "rpc.mountd",
    "exportfs",
    "dmsetup",
    "mkudffs",
    "sg_readcap",
];

/// The soak test of the guest suite (run apart, by `cargo xtask soak`).
pub const SOAK_TEST: &str = "robust::soak";

/// The soak alone, for `secs` seconds.
pub fn soak_payload(secs: u64) -> Payload {
    Payload::new([
        GUEST_TESTS,
        "--ignored",
        "--exact",
        SOAK_TEST,
        "--nocapture",
    ])
    .env("PINTRACE_BIN", GUEST_PINTRACE)
    .env("PINTRACE_SOAK_SECS", &secs.to_string())
    .env("RUST_BACKTRACE", "1")
}

/// Fetch (or find) the kernel and build the zoo module for it, so that
/// guests booted side by side later find both ready.
pub fn prepare(ws: &Workspace, opts: &GuestOpts, kernel: &str) -> Result<()> {
    let spec = KernelSpec::parse(kernel);
    let kernel = debian::resolve(ws, &spec, opts.modules.as_deref())?;
    if matches!(spec, KernelSpec::Debian(_)) {
        pinzoo::build(ws, &kernel)?;
    }
    Ok(())
}

/// Resolve the kernel and boot it with the built binaries and `payload`.
pub fn run_guest(
    ws: &Workspace,
    opts: &GuestOpts,
    kernel: &str,
    built: &Built,
    payload: Payload,
) -> Result<Outcome> {
    let spec = KernelSpec::parse(kernel);
    let kernel = debian::resolve(ws, &spec, opts.modules.as_deref())?;
    let mut payload = payload;
    let mut files = Vec::new();
    if opts.pinzoo || payload.argv.first().map(String::as_str) == Some(GUEST_TESTS) {
        match pinzoo::build(ws, &kernel) {
            Ok(ko) => {
                files.push(GuestFile {
                    path: pinzoo::GUEST_PATH.into(),
                    mode: 0o644,
                    data: std::fs::read(&ko)
                        .with_context(|| format!("reading {}", ko.display()))?,
                });
                payload = payload.env("PINZOO_KO", pinzoo::GUEST_PATH);
            }
            // A Debian kernel always has its headers; a custom one may not.
            Err(e) if matches!(spec, KernelSpec::Path(_)) => {
                println!("vm: note: no pin-bug zoo in this guest: {e:#}")
            }
            Err(e) => return Err(e),
        }
    }
    let mut req = BootRequest::new(kernel, payload);
    req.files.extend(files);
    req.modules.extend(opts.module.iter().cloned());
    req.timeout = Duration::from_secs(opts.timeout);
    opts.machine.apply(&mut req);
    opts.boot.apply(&mut req);
    req.strip = !opts.no_strip;
    req.echo = !opts.quiet;
    req.binaries
        .push(("pintrace".into(), built.pintrace.clone()));
    if let Some(t) = &built.guest_tests {
        req.binaries
            .push((GUEST_TESTS.trim_start_matches("/bin/").into(), t.clone()));
        // The robustness tests list what is loaded in the kernel with
        // bpftool.
        for tool in std::iter::once("bpftool").chain(DIO_TOOLS.iter().copied()) {
            match host_binary(tool) {
                Ok(b) => req.binaries.push(b),
                Err(_) => println!("vm: note: no {tool} on this machine (`cargo xtask setup`)"),
            }
        }
        if matches!(spec, KernelSpec::Debian(_)) {
            req.modules
                .extend(LEGACY_DIO_MODULES.iter().map(|m| m.to_string()));
            req.on_demand
                .extend(ON_DEMAND_MODULES.iter().map(|m| m.to_string()));
        }
    }
    for b in &opts.bin {
        req.binaries.push(host_binary(b)?);
    }
    qemu::boot(ws, &req)
}

/// `--bin` value → (name in the guest, host path).
fn host_binary(spec: &str) -> Result<(String, PathBuf)> {
    let path = if spec.contains('/') {
        PathBuf::from(spec)
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        dirs.extend(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from));
        let joined = std::env::join_paths(dirs)?;
        let cwd = std::env::current_dir()?;
        which::which_in(spec, Some(joined), cwd)
            .map_err(|_| anyhow!("--bin {spec}: not found on PATH"))?
    };
    if !path.is_file() {
        bail!("--bin {}: no such file", path.display());
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("--bin {}: no file name", path.display()))?;
    Ok((name, path))
}

/// A run's notes and verdict, after its console when that was kept off
/// stdout; in one piece, so guests that ran side by side do not interleave.
pub fn report(o: &Outcome) {
    let _whole = std::io::stdout().lock();
    if !o.echoed {
        print!("{}", o.console);
    }
    println!();
    for n in &o.notes {
        println!("vm: note: {n}");
    }
    for r in &o.retried {
        println!(
            "vm: note: an earlier boot died of {} (an emulator hazard, not a finding): {}",
            r.cause,
            r.log.display()
        );
    }
    if let Some(oops) = &o.oops {
        println!("vm: the kernel oopsed:\n{oops}");
    } else if let Some(p) = console::stale_patch(&o.console).filter(|_| !o.verdict.passed()) {
        println!(
            "vm: the guest died of {p} (an emulator hazard; no retries left, `--retries N` allows more)"
        );
    }
    for e in &o.exports {
        println!("vm: exported {}", e.display());
    }
    let boot = o
        .boot_time
        .map(|d| format!("booted in {:.1} s, ", d.as_secs_f64()))
        .unwrap_or_default();
    let accel = if o.accel == "tcg" {
        format!("tcg, {} threading", o.tcg_thread.name())
    } else {
        o.accel.to_string()
    };
    println!(
        "vm: {} — {} ({accel}), {boot}{:.1} s in all",
        o.verdict,
        o.release.as_deref().unwrap_or("kernel did not boot"),
        o.total_time.as_secs_f64()
    );
    println!("vm: log {}{}", o.log.display(), o.retried_note());
}

/// `cargo build --release -p pintrace` and, when wanted or present, the
/// guest test binary.
pub fn build(ws: &Workspace, need_suite: bool) -> Result<Built> {
    if need_suite && !ws.has_guest_tests {
        bail!(
            "pintrace has no `guest` test target (pintrace/tests/guest.rs) yet; \
             give a command to run after `--`, e.g. `cargo xtask vm -- uname -a`"
        );
    }
    let setup_hint = "run `cargo xtask setup` first if bpf-linker or rust-src is missing";
    if !need_suite {
        // The shipped binary, as `cargo build --release` makes it.
        let [pintrace] = artifacts(&["build", "--release", "-p", "pintrace"], ["pintrace"])
            .with_context(|| format!("building pintrace ({setup_hint})"))?;
        return Ok(Built {
            pintrace,
            guest_tests: None,
        });
    }
    // One build for the suite: the test build makes the binary its tests
    // run (with the `testing` feature, which only adds test support) beside
    // the test executable. A second, plain release build would compile
    // pintrace and its eBPF object once more for a different feature set.
    let [pintrace, guest] = artifacts(
        &[
            "test",
            "--release",
            "-p",
            "pintrace",
            "--test",
            "guest",
            "--no-run",
        ],
        ["pintrace", "guest"],
    )
    .with_context(|| format!("building pintrace and the guest tests ({setup_hint})"))?;
    Ok(Built {
        pintrace,
        guest_tests: Some(guest),
    })
}

/// Runs cargo with JSON messages; returns the executables of the named
/// targets, in order (a binary, or a test target; never a library's unit
/// tests or a binary's, which share their target's name).
fn artifacts<const N: usize>(args: &[&str], names: [&str; N]) -> Result<[PathBuf; N]> {
    let mut cmd = util::cargo();
    cmd.args(args)
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let shown = util::display(&cmd);
    let mut child = cmd.spawn().with_context(|| format!("starting {shown}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut found: [Option<PathBuf>; N] = std::array::from_fn(|_| None);
    for msg in cargo_metadata::Message::parse_stream(BufReader::new(stdout)) {
        let cargo_metadata::Message::CompilerArtifact(a) = msg? else {
            continue;
        };
        let Some(i) = names.iter().position(|n| *n == a.target.name) else {
            continue;
        };
        let unit_tests = a.profile.test && !a.target.is_test();
        if let (Some(e), false) = (a.executable, unit_tests) {
            found[i] = Some(e.into_std_path_buf());
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    let mut out = Vec::with_capacity(N);
    for (name, exe) in names.iter().zip(found) {
        out.push(exe.ok_or_else(|| anyhow!("`{shown}` produced no executable named {name}"))?);
    }
    Ok(out.try_into().expect("N paths"))
}
