//! Manifests: which videos a batch covers and the id each one's results go under.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use glimpse_media::untrusted::read_regular_file;

use crate::BatchError;

/// The largest manifest read (a million videos of long paths).
const MAX_MANIFEST_BYTES: u64 = 1 << 30;

/// One video of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Names its result files (`<id>.json`) and its key in the merged results.
    pub id: String,
    pub path: PathBuf,
}

/// The videos a manifest names: a text file of paths, one per line (`#` starts a comment, blank
/// lines are skipped, `id<TAB>path` names the id, otherwise it is the file name without its
/// extension; relative paths are relative to the manifest's folder), or a folder, whose files and
/// links to files (hidden ones aside) are the videos, in name order. Paths come out absolute, so every
/// worker records the same ones. Ids must be unique and usable as file names.
pub fn read_manifest(path: &Path) -> Result<Vec<Entry>, BatchError> {
    let entries = if path.is_dir() { folder_entries(path)? } else { file_entries(path)? };
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for entry in &entries {
        check_id(&entry.id).map_err(|why| {
            BatchError::Manifest(format!("{}: the id of {} {why}", path.display(), entry.path.display()))
        })?;
        if let Some(first) = seen.insert(&entry.id, &entry.path) {
            return Err(BatchError::Manifest(format!(
                "{}: {} and {} have the same id `{}`; give one of them its own (`id<TAB>path`)",
                path.display(),
                first.display(),
                entry.path.display(),
                entry.id
            )));
        }
    }
    Ok(entries)
}

fn file_entries(path: &Path) -> Result<Vec<Entry>, BatchError> {
    let bytes = read_regular_file(path, MAX_MANIFEST_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        BatchError::Manifest(format!("{} is not UTF-8 text; a manifest lists one video per line", path.display()))
    })?;
    // Absolute, so that every worker records the same path whatever its working directory.
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let base = std::path::absolute(folder).map_err(|source| BatchError::Io { path: path.to_path_buf(), source })?;
    let mut entries = Vec::new();
    // A byte-order mark (Windows editors write one) is not part of the first path.
    for (number, line) in text.strip_prefix('\u{feff}').unwrap_or(&text).lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (id, video) = match line.split_once('\t') {
            Some((id, video)) => (Some(id.trim().to_string()), video.trim()),
            None => (None, line.trim()),
        };
        if video.is_empty() {
            return Err(BatchError::Manifest(format!("{} line {}: no video path", path.display(), number + 1)));
        }
        let video = base.join(video);
        let id = id.unwrap_or_else(|| stem(&video));
        entries.push(Entry { id, path: video });
    }
    Ok(entries)
}

fn folder_entries(dir: &Path) -> Result<Vec<Entry>, BatchError> {
    let io = |source| BatchError::Io { path: dir.to_path_buf(), source };
    let mut paths = Vec::new();
    for item in std::fs::read_dir(std::path::absolute(dir).map_err(io)?).map_err(io)? {
        let item = item.map_err(io)?;
        let hidden = item.file_name().to_string_lossy().starts_with('.');
        // Links count as what they name; one that names nothing (broken, a loop) is kept, so that
        // its failure is recorded rather than the video silently left out. Folders, pipes and
        // devices are not videos.
        let video = std::fs::metadata(item.path()).map_or(true, |meta| meta.is_file());
        if !hidden && video {
            paths.push(item.path());
        }
    }
    paths.sort();
    Ok(paths.into_iter().map(|path| Entry { id: stem(&path), path }).collect())
}

/// Refuses an output folder that is the folder of videos itself: the next run would read the
/// results written there as videos.
pub fn check_out_dir(manifest: &Path, out_dir: &Path) -> Result<(), BatchError> {
    let same = matches!((std::fs::canonicalize(manifest), std::fs::canonicalize(out_dir)), (Ok(a), Ok(b)) if a == b);
    if same {
        return Err(BatchError::Manifest(format!(
            "--out-dir {} is the folder of the videos: the next run would read its results as videos; choose \
             another folder",
            out_dir.display()
        )));
    }
    Ok(())
}

/// The file name without its last extension.
fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Ids name files in the output folder: no separators, nothing hidden, nothing a shell or a
/// filesystem would treat specially.
fn check_id(id: &str) -> Result<(), String> {
    let usable = |c: char| c.is_alphanumeric() || "-_.+=@,".contains(c);
    if id.is_empty() || id.len() > 200 {
        return Err(format!("`{id}` must have 1 to 200 characters"));
    }
    if id.starts_with('.') || !id.chars().all(usable) {
        return Err(format!("`{id}` may use letters, digits and - _ . + = @ , and must not start with a dot"));
    }
    // `<id>.error.json` is the error record of the id without it.
    if id.ends_with(".error") {
        return Err(format!("`{id}` must not end in `.error`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_dir;

    #[test]
    fn lines_give_ids_and_paths_relative_to_the_manifest() {
        let dir = temp_dir("manifest");
        let manifest = dir.join("list.txt");
        // With a byte-order mark before the first line, as Windows editors save text.
        let text = "\u{feff}# archive\nclips/a.mp4\n\n  # indented comment\nv_X1\t/data/b.gif\r\nc.webm\n";
        std::fs::write(&manifest, text).unwrap();
        let entries = read_manifest(&manifest).unwrap();
        let expected =
            [("a", dir.join("clips/a.mp4")), ("v_X1", PathBuf::from("/data/b.gif")), ("c", dir.join("c.webm"))];
        assert_eq!(entries.len(), 3);
        for (entry, (id, path)) in entries.iter().zip(expected) {
            assert_eq!((entry.id.as_str(), &entry.path), (id, &path));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn duplicate_and_unusable_ids_are_refused_with_the_videos_named() {
        let dir = temp_dir("bad-ids");
        let manifest = dir.join("list.txt");
        for (text, needle) in [
            ("x/a.mp4\ny/a.gif\n", "same id `a`"),
            ("../up\t/v.mp4\n", "must not start with a dot"),
            ("a b\t/v.mp4\n", "may use letters"),
            ("id\t\n", "line 1: no video path"),
            ("clip.error.mp4\n", "must not end in `.error`"),
        ] {
            std::fs::write(&manifest, text).unwrap();
            let err = read_manifest(&manifest).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        std::fs::write(&manifest, [0xff, 0xfe]).unwrap();
        assert!(read_manifest(&manifest).unwrap_err().to_string().contains("not UTF-8"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_lists_its_visible_files_in_name_order() {
        let dir = temp_dir("folder");
        for name in ["b.gif", "a.mp4", ".hidden.mp4"] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        std::fs::create_dir(dir.join("sub")).unwrap();
        // A link counts as the video it names; one that names nothing stays, to be recorded as
        // failed; a link to a folder is passed over like the folder.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.join("a.mp4"), dir.join("c.mp4")).unwrap();
            std::os::unix::fs::symlink(dir.join("nowhere.mp4"), dir.join("d.mp4")).unwrap();
            std::os::unix::fs::symlink(dir.join("sub"), dir.join("e")).unwrap();
            // Neither a pipe nor a device is a video (reading one would wait for ever).
            std::os::unix::fs::symlink("/dev/null", dir.join("f")).unwrap();
            assert!(std::process::Command::new("mkfifo").arg(dir.join("g")).status().unwrap().success());
        }
        let ids: Vec<String> = read_manifest(&dir).unwrap().into_iter().map(|e| e.id).collect();
        let expected: &[&str] = if cfg!(unix) { &["a", "b", "c", "d"] } else { &["a", "b"] };
        assert_eq!(ids, expected);
        // Results written among the videos would be read as videos by the next run.
        let err = check_out_dir(&dir, &dir.join("sub").join("..")).unwrap_err().to_string();
        assert!(err.contains("is the folder of the videos"), "{err}");
        assert!(check_out_dir(&dir, &dir.join("sub")).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
