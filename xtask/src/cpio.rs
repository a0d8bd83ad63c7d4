//! A minimal writer for the "newc" cpio format the kernel unpacks as an
//! initramfs (and a reader, for the tests).

use std::collections::BTreeSet;

pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFCHR: u32 = 0o020000;

/// An archive built in memory. Paths are absolute guest paths ("/bin/x");
/// missing parent folders are added on the way.
#[derive(Default)]
pub struct Archive {
    out: Vec<u8>,
    ino: u32,
    paths: BTreeSet<String>,
}

#[cfg(test)]
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub mode: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn dir(&mut self, path: &str) {
        let name = path.trim_matches('/');
        if name.is_empty() || self.paths.contains(name) {
            return;
        }
        self.parents(name);
        self.entry(name, S_IFDIR | 0o755, (0, 0), &[]);
    }

    /// A regular file; a second file at the same path replaces nothing (the
    /// first one wins), so callers put the important ones first.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        let name = path.trim_start_matches('/');
        if self.paths.contains(name) {
            return;
        }
        self.parents(name);
        self.entry(name, S_IFREG | (mode & 0o7777), (0, 0), data);
    }

    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        let name = path.trim_start_matches('/');
        if self.paths.contains(name) {
            return;
        }
        self.parents(name);
        self.entry(name, S_IFCHR | (mode & 0o7777), (major, minor), &[]);
    }

    /// Append the trailer and return the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.header("TRAILER!!!", 0, (0, 0), 0, 1);
        self.out
    }

    fn parents(&mut self, name: &str) {
        let mut acc = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            if !self.paths.contains(&acc) {
                let dir = acc.clone();
                self.entry(&dir, S_IFDIR | 0o755, (0, 0), &[]);
            }
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.paths.insert(name.to_string());
        self.ino += 1;
        let nlink = if mode & S_IFMT == S_IFDIR { 2 } else { 1 };
        self.header(name, mode, rdev, data.len(), nlink);
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn header(&mut self, name: &str, mode: u32, rdev: (u32, u32), size: usize, nlink: u32) {
        let ino = if name == "TRAILER!!!" { 0 } else { self.ino };
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: reproducible archives
            size as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
}

/// Parse a newc archive (up to the trailer).
#[cfg(test)]
pub fn read(mut buf: &[u8]) -> anyhow::Result<Vec<Entry>> {
    use anyhow::bail;
    let total = buf.len();
    let mut entries = Vec::new();
    loop {
        if buf.len() < 110 || &buf[..6] != b"070701" {
            bail!("bad newc header at offset {}", total - buf.len());
        }
        let field = |i: usize| -> anyhow::Result<u32> {
            let s = std::str::from_utf8(&buf[6 + i * 8..6 + (i + 1) * 8])?;
            Ok(u32::from_str_radix(s, 16)?)
        };
        let (mode, size, rmaj, rmin, namesize) =
            (field(1)?, field(6)?, field(9)?, field(10)?, field(11)?);
        let name_end = 110 + namesize as usize;
        let name = std::str::from_utf8(&buf[110..name_end - 1])?.to_string();
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start + size as usize;
        if data_end > buf.len() {
            bail!("truncated entry {name}");
        }
        if name == "TRAILER!!!" {
            return Ok(entries);
        }
        entries.push(Entry {
            name,
            mode,
            rdev: (rmaj, rmin),
            data: buf[data_start..data_end].to_vec(),
        });
        buf = &buf[data_end.next_multiple_of(4).min(buf.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut a = Archive::new();
        a.file("/init", 0o755, b"#!/bin/sh\n");
        a.file("/lib/modules/pintrace/loop.ko", 0o644, &[1, 2, 3, 4, 5]);
        a.file("/init", 0o644, b"ignored");
        a.file("/lib64/ld.so", 0o755, b"ld");
        a.char_device("/dev/console", 0o600, 5, 1);
        a.dir("/tmp");
        a.dir("/lib");
        let bytes = a.finish();
        assert_eq!(bytes.len() % 4, 0);
        let e = read(&bytes).unwrap();
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "init",
                "lib",
                "lib/modules",
                "lib/modules/pintrace",
                "lib/modules/pintrace/loop.ko",
                "lib64",
                "lib64/ld.so",
                "dev",
                "dev/console",
                "tmp"
            ]
        );
        assert_eq!(e[0].data, b"#!/bin/sh\n");
        assert_eq!(e[0].mode, S_IFREG | 0o755);
        assert_eq!(e[4].data, [1, 2, 3, 4, 5]);
        assert_eq!(e[5].mode, S_IFDIR | 0o755);
        assert_eq!(e[6].data, b"ld");
        assert_eq!(e[8].rdev, (5, 1));
        assert_eq!(e[8].mode, S_IFCHR | 0o600);
        assert_eq!(e[9].mode, S_IFDIR | 0o755);
    }

    #[test]
    fn system_cpio_agrees() {
        // When the cpio tool is around, it must list the same names.
        let Ok(_) = which::which("cpio") else { return };
        let mut a = Archive::new();
        a.file("/bin/x", 0o755, b"abc");
        a.char_device("/bin/y", 0o600, 1, 3);
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.cpio");
        std::fs::write(&file, a.finish()).unwrap();
        let out = std::process::Command::new("cpio")
            .args(["-it", "--quiet", "-F"])
            .arg(&file)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "bin\nbin/x\nbin/y\n");
    }
}
