//! Writing files so that readers see either the old file or the complete new one: an
//! interrupted run never leaves a half-written output, checkpoint or cache entry behind; and a
//! stable hash for naming and assigning them.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary files of concurrent writes from one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

const TEMP_SUFFIX: &str = ".tmp";

/// The file a temporary of [`write_atomically`] is for, and the id of the process writing it:
/// `.<name>.<pid>.<n>.tmp` gives `(name, pid)`; `None` for any other file name.
fn temporary_of(file_name: &str) -> Option<(&str, u32)> {
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
/// `path`: readers see either the old file or the complete new one, which keeps the old one's
/// permissions. A link at `path` is replaced, not followed (see [`write_output`]).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let permissions = fs::symlink_metadata(path).ok().filter(fs::Metadata::is_file).map(|meta| meta.permissions());
    let temp = write_temporary(path, bytes, permissions)?;
    fs::rename(&temp, path).inspect_err(|_| {
        // Best effort: the write already failed, and a leftover hidden file is harmless.
        let _ = fs::remove_file(&temp);
    })
}

/// Writes `path` only where nothing is there yet: `Ok(false)`, and nothing written, where
/// something is. The complete file is linked into place, so of two writers racing one succeeds
/// and a reader never sees part of a file; where the file system has no links (FAT, some network
/// and FUSE mounts), the file is created exclusively and then written.
pub fn write_new(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let temp = write_temporary(path, bytes, None)?;
    let linked = fs::hard_link(&temp, path);
    let _ = fs::remove_file(&temp);
    let created = match linked {
        Ok(()) => return Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(_) => fs::OpenOptions::new().write(true).create_new(true).open(path),
    };
    match created {
        Ok(mut file) => file.write_all(bytes).and_then(|()| file.sync_all()).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether [`write_atomically`] could write `path`: a hidden temporary made beside it and removed
/// at once. For a check before long work, so that a folder that takes no new file is said first.
pub fn check_can_write_beside(path: &Path) -> io::Result<()> {
    fs::remove_file(write_temporary(path, b"", None)?)
}

/// Refuses to replace a file at `path` that is read-only, or that this user may not write, as a
/// shell's `>` would: [`write_atomically`] replaces a file by renaming another onto it, which the
/// folder's permissions alone allow (a read-only file, or another user's in a shared folder, would
/// be replaced). Nothing at `path`, or no regular file there, is no refusal.
pub fn check_can_replace(path: &Path) -> io::Result<()> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.permissions().readonly() => {
            Err(io::Error::new(io::ErrorKind::PermissionDenied, "the file is read-only"))
        }
        // Opened for writing, not truncated: whether the user may write it, nothing written.
        Ok(meta) if meta.is_file() => fs::OpenOptions::new().write(true).open(path).map(drop),
        _ => Ok(()),
    }
}

/// `bytes` in a hidden temporary file next to `path` (see [`temporary_of`]), flushed to disk.
fn write_temporary(path: &Path, bytes: &[u8], permissions: Option<fs::Permissions>) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", path.display())))?;
    let mut temp_name = OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.{}{TEMP_SUFFIX}", std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    let temp = path.with_file_name(temp_name);
    let written = File::create(&temp).and_then(|mut file| {
        if let Some(permissions) = permissions {
            file.set_permissions(permissions)?;
        }
        file.write_all(bytes)?;
        file.sync_all()
    });
    match written {
        Ok(()) => Ok(temp),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Writes a file the user named (a command's `--out`): atomically as [`write_atomically`], through
/// a link (the file it names is replaced and the link stays, even where that file does not exist
/// yet), and into a device or a pipe (`/dev/null`, a FIFO) as it is, never replacing it. A folder
/// is refused.
pub fn write_output(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let message = format!("{} is a folder; name a file in it", path.display());
            Err(io::Error::new(io::ErrorKind::IsADirectory, message))
        }
        Ok(meta) if !meta.is_file() => fs::OpenOptions::new().write(true).open(path)?.write_all(bytes),
        _ => write_atomically(&output_target(path)?, bytes),
    }
}

/// The file that writing `path` as an output replaces or makes: `path` itself, or the end of the
/// chain of links it starts (which need not exist yet).
pub fn output_target(path: &Path) -> io::Result<PathBuf> {
    let mut target = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&target) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let next = fs::read_link(&target)?;
                target = target.parent().unwrap_or(Path::new("")).join(next);
            }
            _ => return Ok(target),
        }
    }
    Err(io::Error::other(format!("{} starts a chain of more than {MAX_LINKS} links", path.display())))
}

/// Whether writing the output `out` would replace `input` or a file inside it (a frame of a folder
/// of frames, a model's file): `out`'s target (see [`output_target`]) is a file that exists and is
/// `input` (through links and, on Unix, hard links) or lies in the folder `input` names. A new file
/// in an input folder replaces nothing (a frame folder reads only images). False where either is
/// missing.
pub fn output_overwrites(out: &Path, input: &Path) -> bool {
    let Ok(target) = output_target(out) else { return false };
    let Ok(input_meta) = fs::metadata(input) else { return false };
    let Ok(target_meta) = fs::metadata(&target) else { return false };
    if input_meta.is_dir() {
        return match (target.canonicalize(), input.canonicalize()) {
            (Ok(target), Ok(input)) => target.starts_with(input),
            _ => false,
        };
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (target_meta.dev(), target_meta.ino()) == (input_meta.dev(), input_meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = target_meta;
        matches!((target.canonicalize(), input.canonicalize()), (Ok(a), Ok(b)) if a == b)
    }
}

/// Links followed before an output's path is refused as a loop (Linux's own limit).
const MAX_LINKS: usize = 40;

/// The files of a checkpoint folder in the Hugging Face layout that glimpse reads and writes.
const CHECKPOINT_FILES: [&str; 5] =
    ["config.json", "tokenizer.json", "preprocessor_config.json", "processor_config.json", "model.safetensors"];

/// Refuses a folder that already holds checkpoint files as the place of a new checkpoint: writing
/// over them would mix the two (a file the new one lacks stays behind) and, if stopped, lose the
/// old one. A file is refused too.
pub fn ensure_no_checkpoint(dir: &Path) -> io::Result<()> {
    if dir.exists() && !dir.is_dir() {
        let message = format!("{} is a file; name a folder for the checkpoint", dir.display());
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, message));
    }
    let held: Vec<&str> = CHECKPOINT_FILES.into_iter().filter(|name| dir.join(name).exists()).collect();
    if held.is_empty() {
        return Ok(());
    }
    let message = format!("{} already holds {}; remove them or choose another --out", dir.display(), held.join(", "));
    Err(io::Error::new(io::ErrorKind::AlreadyExists, message))
}

/// Writes a checkpoint's `files` into `dir` as one, the weights given last, through a hidden
/// folder: beside `dir` when `dir` is new, which then becomes `dir` (it appears whole or not at
/// all); inside `dir` when it is there already (empty of checkpoint files: a mount point, `.`),
/// whose files then move into `dir` in order, the weights last, so that a `dir` with weights is
/// complete. An interrupted write leaves the hidden folder, which the next write to `dir`
/// removes once its writer is gone. Refuses what [`ensure_no_checkpoint`] refuses.
pub fn write_checkpoint(dir: &Path, files: &[(&str, &[u8])]) -> io::Result<()> {
    ensure_no_checkpoint(dir)?;
    let (parent, prefix) = if dir.is_dir() {
        (dir.to_path_buf(), ".checkpoint.".to_string())
    } else {
        let dir = std::path::absolute(dir)?;
        let name = dir
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no folder", dir.display())))?;
        let parent = dir.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        (parent, format!(".{}.", name.to_string_lossy()))
    };
    fs::create_dir_all(&parent)?;
    remove_stale_partials(&parent, &prefix)?;
    let partial = parent.join(format!("{prefix}{}{PARTIAL_SUFFIX}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    let written = fs::create_dir(&partial).and_then(|()| {
        for (file, bytes) in files {
            let mut out = File::create(partial.join(file))?;
            out.write_all(bytes)?;
            out.sync_all()?;
        }
        if !dir.exists() && fs::rename(&partial, dir).is_ok() {
            return Ok(());
        }
        for (file, _) in files {
            fs::rename(partial.join(file), dir.join(file))?;
        }
        fs::remove_dir(&partial)
    });
    if written.is_err() {
        // Best effort: the write already failed, and what is left is hidden and removed later.
        let _ = fs::remove_dir_all(&partial);
    }
    written
}

/// The name's end of [`write_checkpoint`]'s hidden folders: `.<dir>.<pid>.partial` beside a new
/// folder, `.checkpoint.<pid>.partial` inside one that is there.
const PARTIAL_SUFFIX: &str = ".partial";

/// The file a temporary of [`write_atomically`] was for, where its writer is gone
/// ([`writer_is_gone`]): a temporary safe to remove, left by a process killed while writing.
pub fn stale_temporary_of(file_name: &str) -> Option<&str> {
    temporary_of(file_name).filter(|&(_, pid)| writer_is_gone(pid)).map(|(file, _)| file)
}

/// Whether process `pid`, the writer a temporary or a lock names, is known to be gone: `/proc`
/// shows processes and not this one. `false` where there is no `/proc` (nothing is known).
pub fn writer_is_gone(pid: u32) -> bool {
    Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Where a process id means the same process as here: the machine and the pid namespace. A pid
/// written on another machine sharing a folder, or in another container, names no process here.
pub fn pid_namespace() -> String {
    let namespace = fs::read_link("/proc/self/ns/pid").map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{namespace}@{}", host.trim()).split_whitespace().collect()
}

/// Removes the hidden folders of checkpoint writes into `parent` named from `prefix` whose
/// writers are gone ([`writer_is_gone`]).
fn remove_stale_partials(parent: &Path, prefix: &str) -> io::Result<()> {
    for entry in fs::read_dir(parent)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.strip_suffix(PARTIAL_SUFFIX))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if writer_is_gone(pid) {
            fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
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
        // A new file is written once: the second writer finds the first's, and leaves no temporary.
        let claimed = dir.join("claimed");
        assert!(write_new(&claimed, b"first").unwrap());
        assert!(!write_new(&claimed, b"second").unwrap());
        assert_eq!(fs::read(&claimed).unwrap(), b"first");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A checkpoint appears whole or not at all: written beside its folder and moved in; the
    /// hidden folder a killed writer left is removed by the next write, a live writer's kept.
    #[test]
    fn checkpoints_are_written_as_one() {
        let root = std::env::temp_dir().join(format!("glimpse-files-checkpoint-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let files: [(&str, &[u8]); 2] = [("config.json", b"{}"), ("model.safetensors", b"weights")];
        let (dead, live) = (root.join(".new.4194304.partial"), root.join(".new.1.partial"));
        for partial in [&dead, &live] {
            fs::create_dir(partial).unwrap();
            fs::write(partial.join("config.json"), b"{").unwrap();
        }
        let new = root.join("new");
        write_checkpoint(&new, &files).unwrap();
        assert_eq!(fs::read(new.join("model.safetensors")).unwrap(), b"weights");
        assert!(!dead.exists() && live.exists(), "only the dead writer's folder goes");
        let mut left: Vec<String> =
            fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, [".new.1.partial", "new"]);

        // An empty folder that is there already takes the files (written inside it, so a mount
        // point or `.` works); one holding a checkpoint, or a file, is refused.
        let empty = root.join("empty");
        fs::create_dir(&empty).unwrap();
        fs::create_dir(empty.join(".checkpoint.4194304.partial")).unwrap();
        write_checkpoint(&empty.join("."), &files).unwrap();
        assert_eq!(fs::read(empty.join("config.json")).unwrap(), b"{}");
        let mut inside: Vec<String> =
            fs::read_dir(&empty).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        inside.sort();
        assert_eq!(inside, ["config.json", "model.safetensors"], "nothing hidden left");
        assert!(write_checkpoint(&new, &files).unwrap_err().to_string().contains("already holds config.json"));
        let file = root.join("file");
        fs::write(&file, b"").unwrap();
        assert!(write_checkpoint(&file, &files).unwrap_err().to_string().contains("is a file"));
        fs::remove_dir_all(&root).unwrap();
    }

    /// An output named by a link replaces the file it names (made where the link points if it is
    /// not there yet) and keeps that file's mode; a device is written into, not replaced by a
    /// file; a folder is refused by name. `write_atomically` itself replaces a link.
    #[cfg(unix)]
    #[test]
    fn outputs_write_through_links_keep_modes_and_spare_devices() {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};
        let dir = std::env::temp_dir().join(format!("glimpse-files-out-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (target, link) = (dir.join("target.json"), dir.join("link.json"));
        fs::write(&target, "old").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        symlink("target.json", &link).unwrap();
        write_output(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);

        // A chain of links to a file still to be made: made at the chain's end, the links kept.
        let dangling = dir.join("dangling.json");
        symlink("second.json", &dangling).unwrap();
        symlink("made-later.json", dir.join("second.json")).unwrap();
        write_output(&dangling, b"made").unwrap();
        assert_eq!(fs::read_to_string(dir.join("made-later.json")).unwrap(), "made");
        assert!(fs::symlink_metadata(dir.join("second.json")).unwrap().file_type().is_symlink());
        // A loop of links is refused, and left as it was.
        symlink("loop-b", dir.join("loop-a")).unwrap();
        symlink("loop-a", dir.join("loop-b")).unwrap();
        let err = write_output(&dir.join("loop-a"), b"x").unwrap_err().to_string();
        assert!(err.contains("more than 40 links"), "{err}");
        assert!(fs::symlink_metadata(dir.join("loop-b")).unwrap().file_type().is_symlink());

        write_output(Path::new("/dev/null"), b"into the device").unwrap();
        assert!(fs::symlink_metadata("/dev/null").unwrap().file_type().is_char_device());

        let err = write_output(&dir, b"x").unwrap_err().to_string();
        assert!(err.contains("is a folder"), "{err}");

        write_atomically(&link, b"replaced").unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().is_file(), "write_atomically replaces a link");
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// An output naming an input (itself, through a link or a hard link) or a file inside an
    /// input folder overwrites it; a new file, beside the inputs or among them, does not.
    #[cfg(unix)]
    #[test]
    fn outputs_over_inputs_are_recognised() {
        use std::os::unix::fs::symlink;
        let dir = std::env::temp_dir().join(format!("glimpse-files-over-{}", std::process::id()));
        let frames = dir.join("frames");
        fs::create_dir_all(&frames).unwrap();
        let video = dir.join("video.gif");
        fs::write(&video, "GIF89a").unwrap();
        symlink("video.gif", dir.join("link.gif")).unwrap();
        fs::hard_link(&video, dir.join("hard.gif")).unwrap();
        for out in ["video.gif", "link.gif", "hard.gif", "./video.gif"] {
            assert!(output_overwrites(&dir.join(out), &video), "{out}");
        }
        fs::write(frames.join("0001.png"), "a frame").unwrap();
        assert!(output_overwrites(&frames.join("0001.png"), &frames));
        assert!(output_overwrites(&dir.join("frames/../frames/0001.png"), &frames));
        // New files replace nothing, beside the inputs or in an input folder.
        for out in ["captions.json", "frames.json", "frames/captions.json"] {
            assert!(!output_overwrites(&dir.join(out), &video) && !output_overwrites(&dir.join(out), &frames), "{out}");
        }
        assert!(!output_overwrites(&dir.join("x.json"), &dir.join("missing")));
        fs::remove_dir_all(&dir).unwrap();
    }
}
