//! Report files: checked before any work starts, and written whole or not
//! at all (a temporary file in the same directory, synced, then renamed over
//! the destination), so a crash or a full disk never leaves half a report
//! where a CI system will read it. Errors name the flag and the file.

use anyhow::{anyhow, Context as _, Result};
use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

/// The directory a report file goes to (`.` for a bare file name).
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks, before any work starts, that a report can later be written to
/// `path` (given with `flag`): it names a file, not a directory, in an
/// existing directory where a new file can be created.
pub fn check_writable(flag: &str, path: &Path) -> Result<()> {
    let shown = path.display();
    if path.as_os_str().is_empty() {
        return Err(anyhow!("{flag}: the file name is empty"));
    }
    if path.is_dir() || path.file_name().is_none() {
        return Err(anyhow!("{flag} {shown}: is a directory, not a file"));
    }
    let dir = dir_of(path);
    if !dir.is_dir() {
        return Err(anyhow!(
            "{flag} {shown}: the directory {} does not exist",
            dir.display()
        ));
    }
    tempfile::Builder::new()
        .prefix(".pintrace-probe-")
        .tempfile_in(&dir)
        .map(drop)
        .map_err(|e| {
            anyhow!(
                "{flag} {shown}: cannot create a file in {}: {e}",
                dir.display()
            )
        })
}

/// Makes `dir` (given with `flag`) when it does not exist yet, and checks
/// that report files can be created in it.
pub fn check_dir_writable(flag: &str, dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(anyhow!("{flag} {}: not a directory", dir.display()));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow!("{flag} {}: cannot create it: {e}", dir.display()))?;
    tempfile::Builder::new()
        .prefix(".pintrace-probe-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| anyhow!("{flag} {}: cannot create a file there: {e}", dir.display()))
}

/// Writes `bytes` to `path` (given with `flag`) atomically: a reader sees
/// the old file or the whole new one, never a part.
pub fn write_atomic(flag: &str, path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = dir_of(path);
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{flag} {}: not a file name", path.display()))?;
    let res = (|| -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            .tempfile_in(&dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        // A report is for others to read: not the 0600 of a temporary file.
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    })();
    // The temporary file is removed when `tmp` drops on any error.
    res.with_context(|| format!("{flag} {}: writing the report", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_file_whole_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, "old").unwrap();
        write_atomic("--out", &path, b"{\"new\":1}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"new\":1}");
        assert_eq!(entries(dir.path()), ["r.json"]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_names_flag_and_file() {
        let dir = tempfile::tempdir().unwrap();
        // The destination is a non-empty directory: the rename fails after
        // the temporary file was written.
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), "x").unwrap();
        let err = write_atomic("--junit", &path, b"new").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("--junit") && msg.contains("taken"), "{msg}");
        assert_eq!(entries(dir.path()), ["taken"], "no temporary file left");
        assert_eq!(entries(&path), ["keep"]);
        let err = write_atomic("--junit", &dir.path().join("missing/x.xml"), b"x").unwrap_err();
        assert!(format!("{err:#}").contains("--junit"), "{err:#}");
    }

    #[test]
    fn unwritable_destinations_are_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("a.xml");
        check_writable("--junit", &ok).unwrap();
        assert!(!ok.exists(), "the check leaves no file");
        assert_eq!(entries(dir.path()), Vec::<String>::new());
        for (path, needle) in [
            (dir.path().to_path_buf(), "is a directory"),
            (dir.path().join("no/such/x.xml"), "does not exist"),
            (PathBuf::from(""), "empty"),
        ] {
            let e = check_writable("--record", &path).unwrap_err().to_string();
            assert!(e.starts_with("--record") && e.contains(needle), "{e}");
        }
        check_dir_writable("--out", dir.path()).unwrap();
        check_dir_writable("--out", &dir.path().join("new/sub")).unwrap();
        assert!(dir.path().join("new/sub").is_dir(), "made when missing");
        std::fs::write(dir.path().join("plain"), "x").unwrap();
        let e = check_dir_writable("--out", &dir.path().join("plain"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--out") && e.contains("not a directory"), "{e}");
        // A directory that takes no new file (not testable as root, who
        // writes anywhere; /proc takes no regular file even from root).
        let e = check_writable("--junit", Path::new("/proc/pintrace.xml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot create a file in /proc"), "{e}");
    }
}
