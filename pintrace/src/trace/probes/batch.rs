//! `BPF_MAP_LOOKUP_BATCH` (5.6 on), which aya does not wrap: a snapshot of
//! a hash map in a few system calls instead of two per entry, for the
//! kernel books, which can hold a million folios.

use std::os::fd::{AsRawFd, BorrowedFd};

/// `enum bpf_cmd`'s `BPF_MAP_LOOKUP_BATCH` (UAPI).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// `union bpf_attr`'s `batch` member (UAPI).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries asked for per call.
const CHUNK: usize = 4096;

/// Every (key, value) of the hash map at `fd`, whose keys and values are
/// `K` and `V` (the map's own sizes: the kernel copies exactly those).
/// Entries that come and go meanwhile may or may not be in it.
pub fn lookup_all<K: aya::Pod + Default, V: aya::Pod + Default>(
    fd: BorrowedFd<'_>,
) -> std::io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut chunk = CHUNK;
    let mut keys: Vec<K> = Vec::new();
    let mut values: Vec<V> = Vec::new();
    // The position is the kernel's (a bucket index for a hash map).
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        keys.resize(chunk, K::default());
        values.resize(chunk, V::default());
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &token_in as *const u64 as u64
            },
            out_batch: &mut token_out as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid bpf_attr prefix for this command; the
        // key and value buffers hold `count` entries each.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(std::io::Error::last_os_error);
        match err.as_ref().and_then(|e| e.raw_os_error()) {
            // A bucket holds more entries than asked for: ask for more.
            Some(libc::ENOSPC) if attr.count == 0 => {
                chunk *= 2;
                continue;
            }
            None | Some(libc::ENOENT) => {}
            Some(_) => return Err(err.expect("an error")),
        }
        let n = attr.count as usize;
        out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
        if err.is_some() {
            // ENOENT: the walk is over.
            return Ok(out);
        }
        token_in = token_out;
        first = false;
    }
}
