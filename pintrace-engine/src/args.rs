//! Command-line arguments of `pintrace engine`, and their conversion into a
//! checked [`EngineConfig`].
//!
//! Sizes and durations stay strings here so that [`EngineConfig`]'s
//! `TryFrom<&EngineArgs>` can check them and name the flag in its error.
//! The arguments know the configuration, not the other way round: the
//! configuration is the library's interface and needs no command line.

use super::config::{err, BufferKind, ConfigError, EngineConfig, FaultKind, Mode, RwKind};
use super::size::{parse_duration, parse_size};
use super::stats::{parse_percentiles, FIO_PERCENTILES};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `pintrace engine`: a fio-like O_DIRECT workload.
#[derive(Args, Debug, Clone)]
#[command(after_help = "\
Exit status: 0 ok; 1 I/O errors or verify failures; 2 bad usage, or the run could not start.
Safety: writes go only to files this run creates, unless --allow-overwrite; block devices that \
are mounted (or have a mounted partition), used as swap or held by another driver are always \
refused; O_DIRECT on tmpfs (also under an overlay) is refused. Created files are removed \
unless --keep.

Examples:
  pintrace engine -f /var/tmp/t.dat --size 1g --rw randread --create --mode io_uring --iodepth 32 --runtime 10
  pintrace engine -f /dev/loop0 --rw randwrite --bs 16k --verify --allow-overwrite --buffer thp")]
pub struct EngineArgs {
    /// File or block device to run I/O on.
    #[arg(long, short = 'f', value_name = "PATH")]
    pub filename: PathBuf,

    /// I/O engine (fio's --ioengine names work too: libaio, pvsync2).
    #[arg(long, visible_alias = "ioengine", value_enum, default_value_t = Mode::Psync, value_name = "MODE")]
    pub mode: Mode,

    /// I/O pattern.
    #[arg(long, value_enum, default_value_t = RwKind::Read, value_name = "PATTERN")]
    pub rw: RwKind,

    /// Percentage of reads in a mixed workload (rw, randrw).
    #[arg(
        long,
        default_value_t = 50,
        value_name = "PCT",
        allow_hyphen_values = true
    )]
    pub rwmixread: u32,

    /// Block size of each I/O (4k, 128K, 1m ...).
    #[arg(
        long,
        default_value = "4k",
        value_name = "SIZE",
        allow_hyphen_values = true
    )]
    pub bs: String,

    /// Bytes of the target to use (split between jobs); default: the whole
    /// target; required when the engine creates the file.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub size: Option<String>,

    /// Run for this long (seconds, or 500ms, 2m), looping over the region;
    /// without it, one pass over the region.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub runtime: Option<String>,

    /// Number of jobs (threads); each gets its own slice of the region.
    #[arg(
        long,
        default_value_t = 1,
        value_name = "N",
        allow_hyphen_values = true
    )]
    pub numjobs: u32,

    /// I/Os in flight per job (io_uring and aio; the sync modes run at 1).
    #[arg(
        long,
        default_value_t = 1,
        value_name = "N",
        allow_hyphen_values = true
    )]
    pub iodepth: u32,

    /// I/Os gathered before each submission (io_uring, aio); 1 submits each
    /// I/O as soon as it is ready, like fio's default.
    #[arg(
        long,
        default_value_t = 1,
        value_name = "N",
        allow_hyphen_values = true
    )]
    pub iodepth_batch: u32,

    /// O_DIRECT (the default); fio's --direct=0 is --buffered.
    #[arg(
        long,
        conflicts_with = "buffered",
        value_name = "0|1",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "1",
        value_parser = clap::value_parser!(u8).range(0..=1)
    )]
    pub direct: Option<u8>,

    /// Use buffered I/O instead of O_DIRECT.
    #[arg(long)]
    pub buffered: bool,

    /// Memory behind the I/O buffers.
    #[arg(long, value_enum, default_value_t = BufferKind::Anon, value_name = "KIND")]
    pub buffer: BufferKind,

    /// io_uring: register the buffers (long-term pins) and use READ/WRITE_FIXED.
    #[arg(long)]
    pub fixed_buffers: bool,

    /// pvsync: number of iovecs each I/O is split into (mixed sizes and alignments).
    #[arg(
        long,
        default_value_t = 4,
        value_name = "N",
        allow_hyphen_values = true
    )]
    pub iovecs: u32,

    /// pvsync: iovec lengths only aligned to the DMA alignment, not the
    /// logical block size (newer kernels accept this).
    #[arg(long)]
    pub unaligned_iovecs: bool,

    /// Write blocks with a verification header (offset, seed, generation,
    /// checksum), check every block read, and read back what was written at
    /// the end; a block not written with --verify fails the check.
    #[arg(long)]
    pub verify: bool,

    /// Seed of the random offsets, the data and the verify headers.
    #[arg(
        long,
        default_value_t = 0x5eed,
        value_name = "N",
        allow_hyphen_values = true
    )]
    pub seed: u64,

    /// Print one JSON object instead of the text report (the same as
    /// --output-format=json).
    #[arg(long)]
    pub json: bool,

    /// fio's spelling: json (one JSON object, whose read and write figures
    /// carry fio 3.x's names: io_bytes, bw, iops, clat_ns with percentiles)
    /// or normal (the text report).
    #[arg(long, value_enum, value_name = "FORMAT", conflicts_with = "json")]
    pub output_format: Option<OutputFormat>,

    /// The latency percentiles to report, colon-separated, as fio's
    /// --percentile-list (default: fio's, 1 to 99.99).
    #[arg(long, value_name = "P:P:...")]
    pub percentile_list: Option<String>,

    /// Create and lay out the file (of --size bytes) if it does not exist,
    /// also for read-only workloads.
    #[arg(long)]
    pub create: bool,

    /// Allow writing to a file or block device the engine did not create.
    #[arg(long)]
    pub allow_overwrite: bool,

    /// Keep the files the engine created.
    #[arg(long)]
    pub keep: bool,

    /// All jobs use the whole region instead of a slice each.
    #[arg(long)]
    pub shared_region: bool,

    /// Directory of the scratch file behind `--buffer file-shared`
    /// (default: next to the target, or /var/tmp for block devices).
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,

    /// fork-shared: interval between forks during I/O (e.g. 50ms).
    #[arg(
        long,
        default_value = "50ms",
        value_name = "TIME",
        allow_hyphen_values = true
    )]
    pub fork_interval: String,

    /// pvsync, sg: split each I/O into --iovecs adjacent segments of bs/N
    /// bytes, each within a single page (bs/N a multiple of 512 dividing the
    /// page size): the segments share pages, which the kernel pins once per
    /// segment and merges.
    #[arg(long)]
    pub subpage_iovecs: bool,

    /// Start each I/O buffer this many bytes past a page boundary (below the
    /// page size). With --mode sg an offset the queue's DMA alignment does
    /// not divide makes the kernel copy through a bounce buffer.
    #[arg(
        long,
        default_value = "0",
        value_name = "BYTES",
        allow_hyphen_values = true
    )]
    pub buffer_offset: String,

    /// Provoke a failure and report the errno the kernel answered: hole (a
    /// PROT_NONE page inside every buffer), register-last (the last
    /// registered buffer is PROT_NONE; --fixed-buffers), past-end (I/O past
    /// the end of the target). Exit 0 when the failure happened as expected.
    #[arg(long, value_enum, value_name = "KIND")]
    pub fault: Option<FaultKind>,

    /// Count I/O errors by errno and go on (targets that fail I/O on their
    /// own, such as dm-error or dm-flakey), instead of ending the job.
    #[arg(long)]
    pub allow_errors: bool,

    /// sg, uring-cmd: timeout of each SCSI / NVMe command.
    #[arg(
        long,
        default_value = "30s",
        value_name = "TIME",
        allow_hyphen_values = true
    )]
    pub cmd_timeout: String,
}

/// `--output-format`, as fio spells it.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Normal,
    Json,
}

impl EngineArgs {
    /// Whether the report is JSON (`--json` or `--output-format=json`).
    pub fn wants_json(&self) -> bool {
        self.json || self.output_format == Some(OutputFormat::Json)
    }
}

impl TryFrom<&EngineArgs> for EngineConfig {
    type Error = ConfigError;

    fn try_from(a: &EngineArgs) -> Result<Self, ConfigError> {
        let bs = parse_size(&a.bs).map_err(|m| err("--bs", m))?;
        let size = a
            .size
            .as_deref()
            .map(|s| parse_size(s).map_err(|m| err("--size", m)))
            .transpose()?;
        let runtime = a
            .runtime
            .as_deref()
            .map(|s| parse_duration(s).map_err(|m| err("--runtime", m)))
            .transpose()?;
        let fork_interval =
            parse_duration(&a.fork_interval).map_err(|m| err("--fork-interval", m))?;
        let buffer_offset = parse_size(&a.buffer_offset).map_err(|m| err("--buffer-offset", m))?;
        let buffer_offset = u32::try_from(buffer_offset)
            .map_err(|_| err("--buffer-offset", "must be below the page size"))?;
        let cmd_timeout = parse_duration(&a.cmd_timeout).map_err(|m| err("--cmd-timeout", m))?;
        if a.rwmixread > 100 {
            return Err(err(
                "--rwmixread",
                format!("{} is above 100 (percent)", a.rwmixread),
            ));
        }
        let percentiles = match &a.percentile_list {
            Some(l) => parse_percentiles(l).map_err(|m| err("--percentile-list", m))?,
            None => FIO_PERCENTILES.to_vec(),
        };
        let cfg = EngineConfig {
            filename: a.filename.clone(),
            mode: a.mode,
            rw: a.rw,
            rwmixread: a.rwmixread as u8,
            bs,
            size,
            runtime,
            numjobs: a.numjobs,
            iodepth: a.iodepth,
            iodepth_batch: a.iodepth_batch,
            direct: !a.buffered && a.direct != Some(0),
            buffer: a.buffer,
            fixed_buffers: a.fixed_buffers,
            iovecs: a.iovecs,
            unaligned_iovecs: a.unaligned_iovecs,
            verify: a.verify,
            seed: a.seed,
            create: a.create,
            allow_overwrite: a.allow_overwrite,
            keep: a.keep,
            shared_region: a.shared_region,
            scratch_dir: a.scratch_dir.clone(),
            fork_interval,
            subpage_iovecs: a.subpage_iovecs,
            buffer_offset,
            fault: a.fault,
            allow_errors: a.allow_errors,
            cmd_timeout,
            percentiles,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: EngineArgs,
    }

    fn parse(extra: &[&str]) -> Result<EngineConfig, ConfigError> {
        let mut argv = vec!["engine", "--filename", "/x"];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).expect("clap accepts the arguments");
        EngineConfig::try_from(&cli.args)
    }

    fn flag_of(extra: &[&str]) -> &'static str {
        parse(extra).expect_err("should be refused").flag
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.bs, 4096);
        assert!(c.direct);
        assert_eq!(c.mode, Mode::Psync);
        assert_eq!(c.rw, RwKind::Read);
        assert_eq!(c.slots(), 1);
        assert_eq!(c.seed, EngineConfig::new("/x").seed);
    }

    #[test]
    fn parses_full_line() {
        let c = parse(&[
            "--mode",
            "io_uring",
            "--rw",
            "randrw",
            "--rwmixread",
            "70",
            "--bs",
            "128K",
            "--size",
            "1g",
            "--runtime",
            "10",
            "--numjobs",
            "2",
            "--iodepth",
            "32",
            "--buffer",
            "file-shared",
            "--fixed-buffers",
            "--verify",
        ])
        .unwrap();
        assert_eq!(c.mode, Mode::IoUring);
        assert_eq!(c.rw.read_percent(c.rwmixread), 70);
        assert_eq!(c.bs, 128 << 10);
        assert_eq!(c.size, Some(1 << 30));
        assert_eq!(c.runtime, Some(Duration::from_secs(10)));
        assert_eq!(c.slots(), 32);
        assert_eq!(c.buffer, BufferKind::FileShared);
    }

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(flag_of(&["--bs", "0"]), "--bs");
        assert_eq!(flag_of(&["--bs", "1000"]), "--bs");
        assert_eq!(flag_of(&["--bs", "4x"]), "--bs");
        assert_eq!(flag_of(&["--size", "6k"]), "--size");
        assert_eq!(flag_of(&["--size", "0"]), "--size");
        assert_eq!(flag_of(&["--iodepth", "0"]), "--iodepth");
        assert_eq!(flag_of(&["--iodepth-batch", "0"]), "--iodepth-batch");
        assert_eq!(flag_of(&["--rwmixread", "101"]), "--rwmixread");
        assert_eq!(flag_of(&["--numjobs", "0"]), "--numjobs");
        assert_eq!(flag_of(&["--numjobs", "3", "--size", "8k"]), "--numjobs");
        assert_eq!(flag_of(&["--runtime", "abc"]), "--runtime");
        assert_eq!(flag_of(&["--runtime", "0"]), "--runtime");
        assert_eq!(flag_of(&["--fixed-buffers"]), "--fixed-buffers");
        assert_eq!(flag_of(&["--unaligned-iovecs"]), "--unaligned-iovecs");
        assert_eq!(flag_of(&["--buffered", "--bs", "32", "--verify"]), "--bs");
        assert_eq!(
            flag_of(&[
                "--shared-region",
                "--verify",
                "--rw",
                "write",
                "--numjobs",
                "2"
            ]),
            "--shared-region"
        );
        let e = parse(&["--bs", "1000"]).unwrap_err();
        assert!(e.to_string().starts_with("--bs: "), "{e}");
        assert!(e.to_string().contains("512"), "{e}");
    }

    #[test]
    fn buffered_allows_odd_sizes() {
        let c = parse(&["--buffered", "--bs", "1000", "--size", "3000"]).unwrap();
        assert!(!c.direct);
        assert_eq!(c.bs, 1000);
    }

    #[test]
    fn fio_spellings_map_onto_the_engines_flags() {
        let c = parse(&[
            "--ioengine=libaio",
            "--direct=1",
            "--rw=randwrite",
            "--bs=16k",
            "--iodepth=8",
            "--numjobs=2",
            "--runtime=3",
            "--size=1m",
            "--percentile-list=99:99.9",
        ])
        .unwrap();
        assert_eq!(
            (c.mode, c.rw, c.bs, c.iodepth, c.numjobs),
            (Mode::Aio, RwKind::RandWrite, 16 << 10, 8, 2)
        );
        assert_eq!(
            (c.size, c.runtime),
            (Some(1 << 20), Some(Duration::from_secs(3)))
        );
        assert!(c.direct);
        assert_eq!(c.percentiles, [99.0, 99.9]);
        for (engine, mode) in [
            ("io_uring", Mode::IoUring),
            ("psync", Mode::Psync),
            ("pvsync", Mode::Pvsync),
            ("pvsync2", Mode::Pvsync),
        ] {
            assert_eq!(
                parse(&[&format!("--ioengine={engine}")]).unwrap().mode,
                mode
            );
        }
        assert!(parse(&["--direct"]).unwrap().direct);
        // fio's --direct=0 is buffered I/O, which the engine does with --buffered.
        assert!(!parse(&["--direct=0"]).unwrap().direct);
        assert_eq!(parse(&[]).unwrap().percentiles, FIO_PERCENTILES);
        assert_eq!(flag_of(&["--percentile-list=99:200"]), "--percentile-list");
        let cli = |a: &[&str]| Cli::try_parse_from([&["engine", "-f", "/x"], a].concat());
        for bad in [
            &["--direct=2"][..],
            &["--ioengine=mmap"],
            &["--output-format=terse"],
        ] {
            let e = cli(bad).err().expect("refused");
            // --ioengine is --mode's alias: clap names the flag by its own name.
            let flag = bad[0]
                .split('=')
                .next()
                .unwrap()
                .replace("--ioengine", "--mode");
            assert!(e.to_string().contains(&flag), "{bad:?}: {e}");
        }
        assert!(cli(&["--output-format=json"]).unwrap().args.wants_json());
        assert!(!cli(&["--output-format=normal"]).unwrap().args.wants_json());
        assert!(cli(&["--json"]).unwrap().args.wants_json());
    }

    #[test]
    fn unknown_mode_is_a_clap_error() {
        let e = Cli::try_parse_from(["engine", "--filename", "/x", "--mode", "mmap"])
            .err()
            .expect("unknown mode refused");
        assert!(e.to_string().contains("--mode"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
}
