//! Boot a kernel in QEMU with a generated initramfs, stream its console,
//! and judge the run. `boot` is the API the xtask commands share.

use crate::console::{self, Verdict};
use crate::debian::Kernel;
use crate::devices::{self, Devices, ScratchImages};
use crate::initramfs::{self, GuestFile, Payload};
use crate::modules::LoadPlan;
use crate::stream;
use crate::util::{self, display, Workspace};
use anyhow::{anyhow, Context as _, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The kernel's command line. `no_timer_check`: on a loaded host an emulated
/// guest's timer interrupt can come late during boot, and the kernel then
/// panics ("IO-APIC + timer doesn't work!", seen under `cargo xtask flake
/// --load`) over what is only the emulator's pace.
pub const APPEND: &str = "console=ttyS0 panic=-1 quiet loglevel=4 no_timer_check rdinit=/init";
/// How long the KVM probe waits for the BOOTED marker.
const KVM_PROBE: Duration = Duration::from_secs(20);
/// Boots after the first for a guest that died of a stale patch.
pub const DEFAULT_RETRIES: u32 = 2;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// KVM when /dev/kvm works and a cached probe says it boots guests here.
    #[default]
    Auto,
    /// Hardware virtualization (-cpu host).
    Kvm,
    /// Software emulation (-cpu max); slower, works everywhere.
    Tcg,
}

/// How TCG runs the guest's vCPUs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcgThread {
    /// A thread per vCPU, and a boot that died of a stale patch is booted
    /// again on one thread. It cannot recover a guest that lives on: a 6.1
    /// guest with a thread per vCPU has locked up instead (a soft lockup of
    /// minutes in the engine while probes attached), which no retry sees.
    Auto,
    /// All vCPUs on one host thread, in turns (the default). A vCPU then
    /// never runs kernel text that another vCPU has just patched without
    /// seeing the patch (multi-threaded TCG has let guests execute the
    /// `int3` of a finished patch: `console::stale_patch`). Slower per
    /// guest, but it leaves the host's other cores to other guests.
    #[default]
    Single,
    /// A host thread per vCPU (QEMU's default): the vCPUs run in parallel.
    Multi,
}

impl TcgThread {
    /// The threading of the first boot.
    pub fn first(self) -> TcgThread {
        match self {
            TcgThread::Auto => TcgThread::Multi,
            t => t,
        }
    }

    /// The threading of a boot after a death of a stale patch.
    fn after_stale_patch(self) -> TcgThread {
        match self {
            TcgThread::Auto => TcgThread::Single,
            t => t,
        }
    }

    fn accel_arg(self) -> &'static str {
        match self {
            TcgThread::Single => "tcg,thread=single",
            TcgThread::Multi | TcgThread::Auto => "tcg,thread=multi",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TcgThread::Auto => "auto",
            TcgThread::Single => "single",
            TcgThread::Multi => "multi",
        }
    }
}

/// How every command that boots guests runs QEMU.
#[derive(clap::Args, Debug, Clone)]
pub struct BootOpts {
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
    /// Under TCG: all vCPUs on one thread (immune to stale patches of
    /// kernel text), a thread per vCPU (parallel, but a guest can die or
    /// lock up on a patch another vCPU finished), or auto: multi, and
    /// single for a boot after such a death [default: single; multi for
    /// `bench`].
    #[arg(long, value_enum, value_name = "single|multi")]
    pub tcg_thread: Option<TcgThread>,
    /// Boots again after a death of a stale patch of kernel text (an
    /// emulator hazard, named in the verdict); any other oops fails at once.
    #[arg(long, default_value_t = DEFAULT_RETRIES, value_name = "N")]
    pub retries: u32,
    /// Boot without the harness's scratch disks (an NVMe namespace and a
    /// SCSI disk on virtio-scsi, 256 MiB sparse images made for the run).
    #[arg(long)]
    pub no_scratch_disks: bool,
    /// Put an emulated Intel IOMMU in front of the PCI devices (q35
    /// machine, `intel_iommu=on`; its boot cost under TCG: docs/ci.md).
    #[arg(long)]
    pub iommu: bool,
}

impl Default for BootOpts {
    fn default() -> Self {
        Self {
            accel: Accel::Auto,
            tcg_thread: None,
            retries: DEFAULT_RETRIES,
            no_scratch_disks: false,
            iommu: false,
        }
    }
}

impl BootOpts {
    pub fn apply(&self, req: &mut BootRequest) {
        req.accel = self.accel;
        if let Some(t) = self.tcg_thread {
            req.tcg_thread = t;
        }
        req.retries = self.retries;
        req.devices = Devices {
            scratch: !self.no_scratch_disks,
            iommu: self.iommu,
        };
    }
}

/// A boot that died of a stale patch and was run again.
#[derive(Debug, Clone)]
pub struct Retry {
    pub cause: console::StalePatch,
    pub log: PathBuf,
}

/// Everything one guest run needs.
#[derive(Debug, Clone)]
pub struct BootRequest {
    pub kernel: Kernel,
    /// Module names to load (with their dependencies) when the kernel has a
    /// module tree.
    pub modules: Vec<String>,
    /// Modules carried (with their dependencies) but not loaded: the guest
    /// loads them with `modprobe NAME [PARAM=VALUE...]` (e.g. scsi_debug,
    /// which makes a disk as it loads).
    pub on_demand: Vec<String>,
    pub payload: Payload,
    /// `/bin/<name>` ← host binary; shared libraries come along.
    pub binaries: Vec<(String, PathBuf)>,
    pub files: Vec<GuestFile>,
    pub timeout: Duration,
    pub memory_mib: u32,
    pub smp: u32,
    pub accel: Accel,
    pub tcg_thread: TcgThread,
    /// How many more boots a guest that died of a stale patch gets.
    pub retries: u32,
    /// Copy the console to stdout while it runs.
    pub echo: bool,
    /// The harness's scratch disks and the IOMMU (`devices.rs`).
    pub devices: Devices,
    /// Appended to the QEMU command line (disks, devices).
    pub qemu_args: Vec<String>,
    /// Kernel parameters after the harness's own.
    pub append: Vec<String>,
    /// Strip debug info from the binaries (keeps symbols, so backtraces
    /// still name functions); makes the initramfs ~10x smaller.
    pub strip: bool,
}

impl BootRequest {
    pub fn new(kernel: Kernel, payload: Payload) -> Self {
        Self {
            kernel,
            modules: vec!["loop".into()],
            on_demand: Vec::new(),
            payload,
            binaries: Vec::new(),
            files: Vec::new(),
            timeout: Duration::from_secs(900),
            memory_mib: 2048,
            smp: 2,
            accel: Accel::Auto,
            tcg_thread: TcgThread::default(),
            retries: DEFAULT_RETRIES,
            echo: true,
            devices: Devices::default(),
            qemu_args: Vec::new(),
            append: Vec::new(),
            strip: true,
        }
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    pub log: PathBuf,
    /// The whole console, for commands that read more than the verdict.
    #[allow(dead_code)]
    pub console: String,
    /// Files the guest exported, decoded on the host.
    pub exports: Vec<PathBuf>,
    /// Kernel release from the BOOTED marker.
    pub release: Option<String>,
    /// From QEMU's start to the BOOTED marker.
    pub boot_time: Option<Duration>,
    pub total_time: Duration,
    pub accel: &'static str,
    /// How TCG ran this boot's vCPUs.
    pub tcg_thread: TcgThread,
    /// Harness notes: damaged exports, modules that failed, kernel warnings.
    pub notes: Vec<String>,
    /// Earlier boots of this run that died of a stale patch.
    pub retried: Vec<Retry>,
    /// The first oops of a run that failed, when it was no stale patch.
    pub oops: Option<String>,
    /// Whether the console went to stdout as it ran (if not, the report
    /// prints it).
    pub echoed: bool,
}

impl Outcome {
    /// The stale patches this run was booted again for, for a verdict line:
    /// empty when there were none.
    pub fn retried_note(&self) -> String {
        if self.retried.is_empty() {
            return String::new();
        }
        let each: Vec<String> = self
            .retried
            .iter()
            .map(|r| format!("{} [{}]", r.cause, r.log.display()))
            .collect();
        format!(
            " (boot {}: the earlier died of an emulator hazard, not a finding: {})",
            self.retried.len() + 1,
            each.join("; ")
        )
    }
}

/// Build the initramfs, boot, stream, judge. A guest that failed because
/// it died of a stale patch (`console::stale_patch`) is booted again, up to
/// `req.retries` times, and the outcome says so; any other oops is never
/// retried away.
pub fn boot(ws: &Workspace, req: &BootRequest) -> Result<Outcome> {
    let qemu = qemu_binary()?;
    let accel = choose_accel(ws, req, &qemu)?;
    let mut retried = Vec::new();
    let mut thread = req.tcg_thread.first();
    loop {
        let mut o = launch(ws, req, &qemu, accel, thread)?;
        let stale = (!o.verdict.passed())
            .then(|| console::stale_patch(&o.console))
            .flatten();
        match stale {
            Some(cause) if (retried.len() as u32) < req.retries => {
                thread = req.tcg_thread.after_stale_patch();
                println!(
                    "\nvm: the guest died of {cause}: an emulator hazard of patching live \
                     kernel text under TCG, not a finding; booting again with {} TCG \
                     threading ({} of {} retries, log {})",
                    thread.name(),
                    retried.len() + 1,
                    req.retries,
                    o.log.display()
                );
                retried.push(Retry { cause, log: o.log });
            }
            _ => {
                o.retried = retried;
                return Ok(o);
            }
        }
    }
}

fn qemu_binary() -> Result<PathBuf> {
    which::which("qemu-system-x86_64")
        .map_err(|_| anyhow!("qemu-system-x86_64 is not installed: run `cargo xtask setup`"))
}

fn busybox() -> Result<PathBuf> {
    which::which("busybox")
        .map_err(|_| anyhow!("busybox is not installed: run `cargo xtask setup` (busybox-static)"))
}

/// A fresh run name, `<kernel>-<unix time>[-n]`, and its new log file
/// (created exclusively, so concurrent runs never share one).
fn new_run(ws: &Workspace, label: &str) -> Result<(String, PathBuf, std::fs::File)> {
    let base = format!("{}-{}", console::safe_name(label), util::unix_time());
    let logs = ws.vm_dir().join("logs");
    util::create_dir(&logs)?;
    for i in 0.. {
        let id = if i == 0 {
            base.clone()
        } else {
            format!("{base}-{i}")
        };
        let path = logs.join(format!("{id}.log"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((id, path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    unreachable!("some run name is free")
}

fn launch(
    ws: &Workspace,
    req: &BootRequest,
    qemu: &Path,
    accel: &'static str,
    thread: TcgThread,
) -> Result<Outcome> {
    let mut notes = Vec::new();
    let (carried, load) = plan_modules(req, &mut notes)?;
    let (id, log_path, mut log) = new_run(ws, &req.kernel.label)?;
    let vm = ws.vm_dir();
    let run_dir = vm.join("runs").join(&id);
    util::create_dir(&run_dir)?;
    let _cleanup = RemoveOnDrop(run_dir.clone());

    let busybox = busybox()?;
    let binaries = if req.strip {
        strip_debug(&req.binaries, &run_dir)?
    } else {
        req.binaries.clone()
    };
    let cpio = initramfs::build(&initramfs::Spec {
        busybox: &busybox,
        binaries: &binaries,
        files: &req.files,
        modules: &carried.order,
        load: &load,
        modules_dep: &carried.modules_dep(),
        payload: &req.payload,
        watchdog_secs: watchdog(req.timeout),
        before_payload: if req.devices.scratch {
            devices::guest_script()
        } else {
            String::new()
        },
    })?;
    let initrd = run_dir.join("initramfs.cpio");
    std::fs::write(&initrd, &cpio).with_context(|| format!("writing {}", initrd.display()))?;
    let export_file = run_dir.join("export.txt");
    let scratch = if req.devices.scratch {
        Some(ScratchImages::create(&run_dir)?)
    } else {
        None
    };
    let mut append = APPEND.to_string();
    if req.devices.iommu {
        append = format!("{append} {}", devices::IOMMU_APPEND);
    }
    for a in &req.append {
        append = format!("{append} {a}");
    }

    let mut cmd = Command::new(qemu);
    cmd.arg("-kernel")
        .arg(&req.kernel.image)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(&append)
        .args([
            "-m",
            &req.memory_mib.to_string(),
            "-smp",
            &req.smp.to_string(),
        ])
        .args(["-display", "none", "-no-reboot", "-nodefaults"])
        .args(["-serial", "stdio", "-serial"])
        .arg(format!(
            "file:{}",
            export_file.display().to_string().replace(',', ",,")
        ))
        .args([
            "-accel",
            if accel == "kvm" {
                "kvm"
            } else {
                thread.accel_arg()
            },
            "-cpu",
            if accel == "kvm" { "host" } else { "max" },
        ])
        .args(devices::qemu_args(req.devices, scratch.as_ref()))
        .args(&req.qemu_args);
    let module_names: Vec<&str> = load.iter().map(String::as_str).collect();
    if req.echo {
        let threads = match (accel, thread) {
            ("kvm", _) => "",
            (_, TcgThread::Single) => " (one thread)",
            _ => " (a thread per vCPU)",
        };
        println!(
            "vm: booting {} ({}) with {accel}{threads}, modules [{}], initramfs {} MiB, timeout {} s",
            req.kernel.label,
            req.kernel.origin,
            module_names.join(" "),
            cpio.len() >> 20,
            req.timeout.as_secs()
        );
    }
    writeln!(log, "# {}", display(&cmd))?;

    let run = stream::stream(&mut cmd, req.timeout, req.echo, &mut log)?;
    let console_text = String::from_utf8_lossy(&run.console).into_owned();
    let verdict = console::verdict(
        &console_text,
        run.timed_out.then_some(req.timeout.as_secs()),
    );

    for l in console::markers(&console_text, "WARN") {
        notes.push(format!("guest: {l}"));
    }
    notes.extend(
        console::kernel_trouble(&console_text)
            .into_iter()
            .map(|l| format!("kernel: {l}")),
    );
    let export_text = std::fs::read_to_string(&export_file).unwrap_or_default();
    let out_dir = vm.join("out").join(&id);
    let mut exports = Vec::new();
    for e in console::exports(&console_text)
        .into_iter()
        .chain(console::exports(&export_text))
    {
        util::create_dir(&out_dir)?;
        let path = out_dir.join(&e.name);
        std::fs::write(&path, &e.data).with_context(|| format!("writing {}", path.display()))?;
        if e.damaged {
            notes.push(format!("export {} arrived damaged", e.name));
        }
        exports.push(path);
    }
    let oops = (!verdict.passed())
        .then(|| console::oops_excerpt(&console_text))
        .flatten();
    writeln!(
        log,
        "\n# verdict: {verdict} ({accel}, {:.1} s)",
        run.elapsed.as_secs_f64()
    )?;
    Ok(Outcome {
        release: console::booted(&console_text).map(str::to_string),
        verdict,
        log: log_path,
        console: console_text,
        exports,
        boot_time: run.booted_at,
        total_time: run.elapsed,
        accel,
        tcg_thread: thread,
        notes,
        retried: Vec::new(),
        oops,
        echoed: req.echo,
    })
}

/// The modules the guest carries (the ones to load, those on demand, and
/// their dependencies) and the names to load at boot, in order.
fn plan_modules(req: &BootRequest, notes: &mut Vec<String>) -> Result<(LoadPlan, Vec<String>)> {
    let Some(index) = req.kernel.module_index()? else {
        if !req.modules.is_empty() || !req.on_demand.is_empty() {
            notes.push(format!(
                "no module tree for {} (give --modules DIR): loading no modules",
                req.kernel.origin
            ));
        }
        return Ok((LoadPlan::default(), Vec::new()));
    };
    let mut wanted = Vec::new();
    // The scratch disks' drivers first: the SCSI scan runs asynchronously
    // while the other modules load.
    if req.devices.scratch {
        // A custom kernel may lack them: its disks are then not found.
        let (have, lack): (Vec<&str>, Vec<&str>) =
            devices::MODULES.iter().partition(|m| index.has(m));
        wanted.extend(have.iter().map(|m| m.to_string()));
        if !lack.is_empty() {
            notes.push(format!(
                "no module {} for the scratch disks in {}",
                lack.join(", "),
                index.dir.display()
            ));
        }
    }
    wanted.extend(req.modules.iter().cloned());
    let boot = index.plan(&wanted)?;
    if !boot.builtin.is_empty() {
        notes.push(format!(
            "built into the kernel: {}",
            boot.builtin.join(", ")
        ));
    }
    let load = boot.order.iter().map(|(n, _)| n.clone()).collect();
    let mut all = wanted;
    all.extend(req.on_demand.iter().cloned());
    Ok((index.plan(&all)?, load))
}

/// The run's scratch folder (initramfs, export channel) goes when the run ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// When the guest dumps its stacks: well before the host kills it, leaving
/// time for the boot (not counted by the guest) and for the dump itself.
fn watchdog(timeout: Duration) -> Option<u64> {
    let t = timeout.as_secs();
    let at = t.saturating_sub((t / 10).max(10) + 10);
    (at >= 5).then_some(at)
}

/// Copies without debug info in `dir` (the original when objcopy fails).
fn strip_debug(binaries: &[(String, PathBuf)], dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let stripped = dir.join("bin");
    util::create_dir(&stripped)?;
    Ok(binaries
        .iter()
        .map(|(name, host)| {
            let out = stripped.join(name);
            let ok = Command::new("objcopy")
                .arg("--strip-debug")
                .arg(host)
                .arg(&out)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            (name.clone(), if ok { out } else { host.clone() })
        })
        .collect())
}

// ---------------------------------------------------------------- KVM

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

fn choose_accel(ws: &Workspace, req: &BootRequest, qemu: &Path) -> Result<&'static str> {
    match req.accel {
        Accel::Tcg => return Ok("tcg"),
        Accel::Kvm => return Ok("kvm"),
        Accel::Auto => {}
    }
    if !kvm_usable() {
        return Ok("tcg");
    }
    // Guests booted side by side probe once: the others wait for the verdict.
    static PROBING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = PROBING.lock().unwrap_or_else(|e| e.into_inner());
    // The verdict holds for this host kernel and this QEMU.
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let qemu_version = util::try_output(Command::new(qemu).arg("--version")).unwrap_or_default();
    let key = format!(
        "host={} qemu={}",
        host.trim(),
        qemu_version.lines().next().unwrap_or("").trim()
    );
    let cache = ws.vm_dir().join("kvm-verdict");
    if let Ok(text) = std::fs::read_to_string(&cache) {
        let mut lines = text.lines();
        if let (Some(verdict), Some(k)) = (lines.next(), lines.next()) {
            if k == key {
                return Ok(if verdict.starts_with("kvm=yes") {
                    "kvm"
                } else {
                    "tcg"
                });
            }
        }
    }
    println!(
        "vm: /dev/kvm is present; probing whether KVM boots guests here (up to {} s)",
        KVM_PROBE.as_secs()
    );
    let mut probe = BootRequest::new(req.kernel.clone(), Payload::new(["true"]));
    probe.modules.clear();
    probe.timeout = KVM_PROBE;
    probe.echo = false;
    probe.memory_mib = 512;
    probe.smp = 1;
    probe.retries = 0;
    probe.devices = Devices {
        scratch: false,
        iommu: false,
    };
    let (works, why) = match launch(ws, &probe, qemu, "kvm", TcgThread::Multi) {
        Ok(o) if o.release.is_some() => (
            true,
            format!("booted in {:.1} s", o.total_time.as_secs_f64()),
        ),
        Ok(o) => (false, format!("{} (log {})", o.verdict, o.log.display())),
        Err(e) => (false, format!("{e:#}")),
    };
    println!(
        "vm: KVM {}: {why}",
        if works {
            "works"
        } else {
            "does not boot guests"
        }
    );
    util::create_dir(&ws.vm_dir())?;
    let line = if works { "kvm=yes" } else { "kvm=no" };
    std::fs::write(&cache, format!("{line} {why}\n{key}\n"))
        .with_context(|| format!("writing {}", cache.display()))?;
    Ok(if works { "kvm" } else { "tcg" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_threading_goes_single_after_a_stale_patch() {
        assert_eq!(TcgThread::Auto.first().accel_arg(), "tcg,thread=multi");
        assert_eq!(
            TcgThread::Auto.after_stale_patch().accel_arg(),
            "tcg,thread=single"
        );
        for t in [TcgThread::Single, TcgThread::Multi] {
            assert_eq!(t.first(), t);
            assert_eq!(t.after_stale_patch(), t);
        }
        assert_eq!(BootOpts::default().retries, DEFAULT_RETRIES);
    }
}
