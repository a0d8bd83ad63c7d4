//! The SG_IO interface: `struct sg_io_hdr`, the SCSI commands the engine
//! sends (READ(16), WRITE(16), READ CAPACITY(16)) and the decoding of what
//! comes back (host, driver and SCSI status, sense data) into one outcome.

use std::io;
use std::os::fd::RawFd;

/// `SG_IO` ioctl request number (scsi/sg.h).
pub const SG_IO: libc::c_ulong = 0x2285;
/// `SG_DXFER_TO_DEV`, `SG_DXFER_FROM_DEV`.
pub const SG_DXFER_TO_DEV: i32 = -2;
pub const SG_DXFER_FROM_DEV: i32 = -3;
/// Ask the sg driver to map user pages (it obeys only when its `allow_dio`
/// is set and the buffer is one aligned piece).
pub const SG_FLAG_DIRECT_IO: u32 = 1;
/// `info & SG_INFO_DIRECT_IO_MASK == SG_INFO_DIRECT_IO`: the sg driver did map.
pub const SG_INFO_DIRECT_IO_MASK: u32 = 0x6;
pub const SG_INFO_DIRECT_IO: u32 = 0x2;
/// Sense bytes asked for.
pub const SENSE_LEN: usize = 64;

/// `struct sg_io_hdr` of scsi/sg.h (88 bytes on 64-bit Linux).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SgIoHdr {
    pub interface_id: i32,
    pub dxfer_direction: i32,
    pub cmd_len: u8,
    pub mx_sb_len: u8,
    pub iovec_count: u16,
    pub dxfer_len: u32,
    pub dxferp: *mut libc::c_void,
    pub cmdp: *const u8,
    pub sbp: *mut u8,
    pub timeout: u32,
    pub flags: u32,
    pub pack_id: i32,
    pub usr_ptr: *mut libc::c_void,
    pub status: u8,
    pub masked_status: u8,
    pub msg_status: u8,
    pub sb_len_wr: u8,
    pub host_status: u16,
    pub driver_status: u16,
    pub resid: i32,
    pub duration: u32,
    pub info: u32,
}

impl SgIoHdr {
    /// A header for `cdb` moving `len` bytes at `dxferp` (a buffer, or an
    /// array of `iovec_count` `struct sg_iovec` when that is not 0).
    pub fn new(
        cdb: &[u8],
        write: bool,
        dxferp: *mut libc::c_void,
        len: u32,
        iovec_count: u16,
        sense: &mut [u8; SENSE_LEN],
        timeout_ms: u32,
    ) -> Self {
        SgIoHdr {
            interface_id: b'S' as i32,
            dxfer_direction: if write {
                SG_DXFER_TO_DEV
            } else {
                SG_DXFER_FROM_DEV
            },
            cmd_len: cdb.len() as u8,
            mx_sb_len: SENSE_LEN as u8,
            iovec_count,
            dxfer_len: len,
            dxferp,
            cmdp: cdb.as_ptr(),
            sbp: sense.as_mut_ptr(),
            timeout: timeout_ms,
            flags: 0,
            pack_id: 0,
            usr_ptr: std::ptr::null_mut(),
            status: 0,
            masked_status: 0,
            msg_status: 0,
            sb_len_wr: 0,
            host_status: 0,
            driver_status: 0,
            resid: 0,
            duration: 0,
            info: 0,
        }
    }
}

/// Issue SG_IO; `Err` is the ioctl's own errno (the command never ran or
/// its buffer could not be mapped), `Ok` says nothing of the command's status.
///
/// # Safety
/// Every pointer of `hdr` must be valid for the transfer it describes.
pub unsafe fn sg_io(fd: RawFd, hdr: &mut SgIoHdr) -> io::Result<()> {
    loop {
        // SAFETY: the caller vouches for the header's pointers.
        if unsafe { libc::ioctl(fd, SG_IO as _, hdr as *mut SgIoHdr) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// READ(16) or WRITE(16) of `blocks` logical blocks at `lba`.
pub fn rw16(write: bool, lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = if write { 0x8a } else { 0x88 };
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// READ CAPACITY(16) (SERVICE ACTION IN(16), service action 0x10) asking
/// for `alloc` bytes.
pub fn read_capacity16(alloc: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x9e;
    c[1] = 0x10;
    c[10..14].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// (blocks, logical block size) from READ CAPACITY(16) data.
pub fn parse_capacity16(d: &[u8]) -> Option<(u64, u32)> {
    if d.len() < 12 {
        return None;
    }
    let last = u64::from_be_bytes(d[0..8].try_into().ok()?);
    let lbs = u32::from_be_bytes(d[8..12].try_into().ok()?);
    (lbs > 0).then(|| (last + 1, lbs))
}

/// Sense key, additional sense code and qualifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

impl Sense {
    /// Decode fixed (0x70/0x71) or descriptor (0x72/0x73) format sense data.
    pub fn parse(b: &[u8]) -> Option<Sense> {
        let code = *b.first()? & 0x7f;
        match code {
            0x70 | 0x71 if b.len() >= 14 => Some(Sense {
                key: b[2] & 0xf,
                asc: b[12],
                ascq: b[13],
            }),
            0x70 | 0x71 if b.len() >= 3 => Some(Sense {
                key: b[2] & 0xf,
                asc: 0,
                ascq: 0,
            }),
            0x72 | 0x73 if b.len() >= 4 => Some(Sense {
                key: b[1] & 0xf,
                asc: b[2],
                ascq: b[3],
            }),
            _ => None,
        }
    }

    pub fn key_name(&self) -> &'static str {
        const KEYS: [&str; 16] = [
            "NO SENSE",
            "RECOVERED ERROR",
            "NOT READY",
            "MEDIUM ERROR",
            "HARDWARE ERROR",
            "ILLEGAL REQUEST",
            "UNIT ATTENTION",
            "DATA PROTECT",
            "BLANK CHECK",
            "VENDOR SPECIFIC",
            "COPY ABORTED",
            "ABORTED COMMAND",
            "RESERVED",
            "VOLUME OVERFLOW",
            "MISCOMPARE",
            "COMPLETED",
        ];
        KEYS[usize::from(self.key & 0xf)]
    }

    /// The meaning of the common ASC/ASCQ pairs (SPC-4 annex), if known.
    pub fn asc_name(&self) -> Option<&'static str> {
        Some(match (self.asc, self.ascq) {
            (0x04, _) => "logical unit not ready",
            (0x0c, _) => "write error",
            (0x11, _) => "unrecovered read error",
            (0x1a, 0) => "parameter list length error",
            (0x20, 0) => "invalid command operation code",
            (0x21, 0) => "logical block address out of range",
            (0x24, 0) => "invalid field in CDB",
            (0x25, 0) => "logical unit not supported",
            (0x27, _) => "write protected",
            (0x28, 0) => "not ready to ready change, medium may have changed",
            (0x29, _) => "power on, reset, or bus device reset occurred",
            (0x2a, _) => "parameters changed",
            (0x3a, _) => "medium not present",
            (0x44, 0) => "internal target failure",
            _ => return None,
        })
    }

    /// The short form counted in the report: `sense ILLEGAL REQUEST 21h/00h`.
    pub fn outcome(&self) -> String {
        format!(
            "sense {} {:02x}h/{:02x}h",
            self.key_name(),
            self.asc,
            self.ascq
        )
    }

    pub fn describe(&self) -> String {
        match self.asc_name() {
            Some(n) => format!("{} ({n})", self.outcome()),
            None => self.outcome(),
        }
    }
}

fn host_name(h: u16) -> &'static str {
    match h {
        0x01 => "DID_NO_CONNECT",
        0x02 => "DID_BUS_BUSY",
        0x03 => "DID_TIME_OUT",
        0x04 => "DID_BAD_TARGET",
        0x05 => "DID_ABORT",
        0x06 => "DID_PARITY",
        0x07 => "DID_ERROR",
        0x08 => "DID_RESET",
        0x09 => "DID_BAD_INTR",
        0x0b => "DID_SOFT_ERROR",
        0x0d => "DID_REQUEUE",
        0x0e => "DID_TRANSPORT_DISRUPTED",
        0x0f => "DID_TRANSPORT_FAILFAST",
        _ => "host error",
    }
}

fn status_name(s: u8) -> &'static str {
    match s {
        0x02 => "CHECK CONDITION",
        0x04 => "CONDITION MET",
        0x08 => "BUSY",
        0x18 => "RESERVATION CONFLICT",
        0x28 => "TASK SET FULL",
        0x30 => "ACA ACTIVE",
        0x40 => "TASK ABORTED",
        _ => "status",
    }
}

/// `driver_status` bit saying sense data is valid (`DRIVER_SENSE`).
const DRIVER_SENSE: u16 = 0x08;
/// `driver_status` of a command the driver timed out (`DRIVER_TIMEOUT`).
const DRIVER_TIMEOUT: u16 = 0x06;

/// A failed command: the outcome counted (`sense ...`, `DID_TIME_OUT`, ...)
/// and a sentence for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdFailure {
    pub outcome: String,
    pub message: String,
}

/// What a completed SG_IO says: the bytes moved (`dxfer_len - resid`), or
/// why the command failed.
pub fn outcome(hdr: &SgIoHdr, sense: &[u8]) -> Result<usize, CmdFailure> {
    let sense = &sense[..usize::from(hdr.sb_len_wr).min(sense.len())];
    let decoded = Sense::parse(sense);
    let fail = |outcome: String, what: String| {
        Err(CmdFailure {
            message: match decoded {
                Some(s) if !what.contains("sense") => format!("{what}; {}", s.describe()),
                _ => what,
            },
            outcome,
        })
    };
    if hdr.host_status != 0 {
        let n = host_name(hdr.host_status);
        return fail(
            n.to_string(),
            format!("host status {n} ({:#x})", hdr.host_status),
        );
    }
    let driver = hdr.driver_status & 0x0f;
    if driver == DRIVER_TIMEOUT {
        return fail(
            "DRIVER_TIMEOUT".into(),
            "the command timed out (driver status DRIVER_TIMEOUT)".into(),
        );
    }
    if hdr.status != 0 || (driver != 0 && driver != DRIVER_SENSE) {
        if let Some(s) = decoded {
            // RECOVERED ERROR and NO SENSE carry no failure.
            if hdr.status == 0x02 && (s.key == 0 || s.key == 1) {
                return Ok(transferred(hdr));
            }
            return fail(s.outcome(), format!("CHECK CONDITION, {}", s.describe()));
        }
        let n = status_name(hdr.status);
        return fail(
            format!("scsi {n}"),
            format!(
                "SCSI status {n} ({:#04x}), driver status {:#x}, no sense data",
                hdr.status, hdr.driver_status
            ),
        );
    }
    Ok(transferred(hdr))
}

fn transferred(hdr: &SgIoHdr) -> usize {
    (hdr.dxfer_len as usize).saturating_sub(hdr.resid.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr() -> SgIoHdr {
        let mut sense = [0u8; SENSE_LEN];
        let cdb = rw16(false, 0, 8);
        SgIoHdr::new(&cdb, false, std::ptr::null_mut(), 4096, 0, &mut sense, 1000)
    }

    #[test]
    fn header_layout_matches_scsi_sg_h() {
        assert_eq!(std::mem::size_of::<SgIoHdr>(), 88);
        assert_eq!(std::mem::offset_of!(SgIoHdr, dxferp), 16);
        assert_eq!(std::mem::offset_of!(SgIoHdr, timeout), 40);
        assert_eq!(std::mem::offset_of!(SgIoHdr, usr_ptr), 56);
        assert_eq!(std::mem::offset_of!(SgIoHdr, host_status), 68);
        assert_eq!(std::mem::offset_of!(SgIoHdr, info), 80);
        let h = hdr();
        assert_eq!(h.interface_id, 0x53);
        assert_eq!((h.cmd_len, h.dxfer_direction), (16, SG_DXFER_FROM_DEV));
    }

    #[test]
    fn cdbs() {
        assert_eq!(
            rw16(false, 0x0102_0304_0506_0708, 0x10),
            [0x88, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0x10, 0, 0]
        );
        assert_eq!(rw16(true, 1, 1)[0], 0x8a);
        assert_eq!(rw16(true, 1, 1)[9], 1);
        let c = read_capacity16(32);
        assert_eq!((c[0], c[1], c[13]), (0x9e, 0x10, 32));
        let mut d = [0u8; 32];
        d[7] = 0x3f; // last LBA 63
        d[10] = 2; // 512-byte blocks
        assert_eq!(parse_capacity16(&d), Some((64, 512)));
        assert_eq!(parse_capacity16(&[0; 4]), None);
    }

    #[test]
    fn sense_formats() {
        let mut fixed = [0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x05;
        fixed[12] = 0x21;
        let s = Sense::parse(&fixed).unwrap();
        assert_eq!(s.key_name(), "ILLEGAL REQUEST");
        assert_eq!(s.outcome(), "sense ILLEGAL REQUEST 21h/00h");
        assert!(s.describe().contains("logical block address out of range"));
        let desc = [0x72, 0x03, 0x11, 0x00, 0, 0, 0, 0];
        let s = Sense::parse(&desc).unwrap();
        assert_eq!((s.key, s.asc), (3, 0x11));
        assert!(s.describe().contains("MEDIUM ERROR"));
        assert_eq!(Sense::parse(&[0x00, 1, 2]), None);
        assert_eq!(Sense::parse(&[]), None);
    }

    #[test]
    fn outcomes() {
        let mut h = hdr();
        h.resid = 512;
        assert_eq!(outcome(&h, &[]), Ok(3584));
        let mut sense = [0u8; 18];
        sense[0] = 0x70;
        sense[2] = 0x05;
        sense[12] = 0x21;
        h.status = 0x02;
        h.masked_status = 0x01;
        h.driver_status = DRIVER_SENSE;
        h.sb_len_wr = 18;
        let e = outcome(&h, &sense).unwrap_err();
        assert_eq!(e.outcome, "sense ILLEGAL REQUEST 21h/00h");
        assert!(e.message.starts_with("CHECK CONDITION"), "{}", e.message);
        h.sb_len_wr = 0;
        let e = outcome(&h, &sense).unwrap_err();
        assert_eq!(e.outcome, "scsi CHECK CONDITION");
        assert!(e.message.contains("no sense data"), "{}", e.message);
        let mut h = hdr();
        h.host_status = 0x03;
        assert_eq!(outcome(&h, &[]).unwrap_err().outcome, "DID_TIME_OUT");
        let mut h = hdr();
        h.driver_status = DRIVER_TIMEOUT;
        assert_eq!(outcome(&h, &[]).unwrap_err().outcome, "DRIVER_TIMEOUT");
        // A recovered error moved the data.
        let mut h = hdr();
        h.status = 0x02;
        h.sb_len_wr = 18;
        let mut rec = [0u8; 18];
        rec[0] = 0x70;
        rec[2] = 0x01;
        assert_eq!(outcome(&h, &rec), Ok(4096));
    }
}
