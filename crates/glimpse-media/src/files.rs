//! Writing files so that readers see either the old file or the complete new one: an
//! interrupted run never leaves a half-written output, checkpoint or cache entry behind; and a
//! stable hash for naming and assigning them.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary files of concurrent writes from one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

const TEMP_SUFFIX: &str = ".tmp";

/// The file a temporary of [`write_atomically`] is for, and the id of the process writing it:
/// `.<name>.<pid>.<n>.tmp` gives `(name, pid)`; `None` for any other file name.
pub fn temporary_of(file_name: &str) -> Option<(&str, u32)> {
    let inner = file_name.strip_prefix('.')?.strip_suffix(TEMP_SUFFIX)?;
    let (rest, counter) = inner.rsplit_once('.')?;
    let (name, pid) = rest.rsplit_once('.')?;
    counter.parse::<u64>().ok()?;
    Some((name, pid.parse().ok()?))
}

/// Removes `path`; a file that is not there is no error.
pub fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Write `bytes` to a hidden temporary file next to `path`, flush it to disk, and rename it over
/// `path`: readers see either the old file or the complete new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", path.display())))?;
    let mut temp_name = OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.{}{TEMP_SUFFIX}", std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    let temp = path.with_file_name(temp_name);
    let result = File::create(&temp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temp, path));
    if result.is_err() {
        // Best effort: the write already failed, and a leftover hidden file is harmless.
        let _ = fs::remove_file(&temp);
    }
    result
}

/// 64-bit FNV-1a of `bytes`: stable across platforms, versions and runs (unlike `std`'s hasher),
/// for checksums of checkpoints and for assigning videos to shards.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_name_their_file_and_writer() {
        let dir = std::env::temp_dir().join(format!("glimpse-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // A temporary seen mid-write is named as `write_atomically` names it.
        let name = format!(".v1.error.json.{}.7{TEMP_SUFFIX}", std::process::id());
        assert_eq!(temporary_of(&name), Some(("v1.error.json", std::process::id())));
        for other in ["v1.json", ".v1.json", ".v1.json.12.tmp", ".v1.json.x.0.tmp", "v1.json.1.0.tmp"] {
            assert_eq!(temporary_of(other), None, "{other}");
        }
        remove_if_present(&dir.join("absent")).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
