//! What the kernel keeps about a loaded program (`BPF_OBJ_GET_INFO_BY_FD`)
//! beyond what aya reads: its recursion misses.

use aya_obj::generated::bpf_prog_info;
use std::os::fd::{AsRawFd as _, BorrowedFd};

/// `bpf_cmd::BPF_OBJ_GET_INFO_BY_FD`.
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The `info` member of `union bpf_attr`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `recursion_misses` of the program (5.12 on: runs skipped because the
/// program, or for kprobes any kprobe program, was already running on the
/// CPU); 0 when the kernel does not say.
pub fn recursion_misses(fd: BorrowedFd<'_>) -> u64 {
    // SAFETY: bpf_prog_info is plain old data; all zeroes is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: &mut info as *mut bpf_prog_info as u64,
    };
    // SAFETY: attr points at a valid info buffer of info_len bytes, which
    // the kernel fills (an older kernel fills its own, shorter, prefix).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if r != 0 {
        return 0;
    }
    info.recursion_misses
}
