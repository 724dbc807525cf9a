//! Manifests: which videos a batch covers and the id each one's results go under.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use glimpse_media::untrusted::{open_regular_file, quoted};

use crate::BatchError;

/// The largest manifest read: a million videos at 256 bytes a line. Its entries are all held.
const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// The longest manifest line: an id and a path of up to `PATH_MAX` (4096 bytes on Linux) fit.
const MAX_LINE_BYTES: usize = 8 << 10;

/// Extensions of files a folder of videos holds beside them that are no video: results and
/// annotations (`glimpse world video` writes `<name>.json` next to `<name>.gif`), subtitles,
/// notes, lists, checksums and still images (which `caption-video` refuses).
const NOT_VIDEOS: [&str; 28] = [
    "json", "jsonl", "txt", "srt", "vtt", "ass", "ssa", "md", "csv", "tsv", "yaml", "yml", "toml", "xml", "html",
    "htm", "log", "pdf", "nfo", "sha256", "md5", "png", "jpg", "jpeg", "bmp", "tif", "tiff", "svg",
];

/// One video of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Names its result files (`<id>.json`) and its key in the merged results.
    pub id: String,
    pub path: PathBuf,
}

/// The videos of a manifest, and the files of a folder passed over as no video.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    pub entries: Vec<Entry>,
    /// Files of a folder whose extension says they are no video ([`NOT_VIDEOS`]), in name order.
    pub skipped: Vec<PathBuf>,
}

/// The videos a manifest names: a text file of paths, one per line (`#` starts a comment, blank
/// lines are skipped, `id<TAB>path` names the id, otherwise it is the file name without its
/// extension; relative paths are relative to the manifest's folder), or a folder, whose files and
/// links to files are the videos, in name order: hidden files and files that are no video by
/// their extension (`.json`, `.srt`, images, ...) aside, each id the file name without its
/// extension, characters ids may not hold replaced by `_`. Paths come out absolute, so every
/// worker records the same ones. Ids must be unique and usable as file names.
pub fn read_manifest(path: &Path) -> Result<Manifest, BatchError> {
    if path.is_dir() { folder_entries(path) } else { file_entries(path) }
}

fn file_entries(path: &Path) -> Result<Manifest, BatchError> {
    let manifest = path.display();
    let file = open_regular_file(path)?;
    let io = |source| BatchError::Io { path: path.to_path_buf(), source };
    let too_large = || {
        BatchError::Manifest(format!(
            "{manifest} is larger than {} MiB, the most glimpse reads for a manifest; split the archive into \
             several manifests, one batch each",
            MAX_MANIFEST_BYTES >> 20
        ))
    };
    if file.metadata().map_err(io)?.len() > MAX_MANIFEST_BYTES {
        return Err(too_large());
    }
    // Absolute, so that every worker records the same path whatever its working directory.
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let base = std::path::absolute(folder).map_err(io)?;
    // Read a line at a time, each at most `MAX_LINE_BYTES`: a file that is no manifest (a video,
    // a dump without line breaks) costs one line's memory before it is refused.
    let mut reader = BufReader::new(file.take(MAX_MANIFEST_BYTES + 1));
    let (mut entries, mut lines) = (Vec::new(), Vec::new());
    let (mut line, mut number, mut total) = (Vec::new(), 0, 0);
    loop {
        line.clear();
        let read = reader.by_ref().take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut line).map_err(io)?;
        if read == 0 {
            break;
        }
        number += 1;
        total += read as u64;
        if total > MAX_MANIFEST_BYTES {
            return Err(too_large());
        }
        let at = |what: String| BatchError::Manifest(format!("{manifest} line {number}: {what}"));
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > MAX_LINE_BYTES {
            return Err(at(format!(
                "longer than {MAX_LINE_BYTES} bytes, the most a manifest line holds (an id and a path); a manifest \
                 lists one video per line"
            )));
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            return Err(at("not UTF-8 text; a manifest lists one video per line".into()));
        };
        // A byte-order mark (Windows editors write one) is not part of the first path.
        let text = if number == 1 { text.strip_prefix('\u{feff}').unwrap_or(text) } else { text };
        if text.contains('\0') {
            return Err(at("holds a NUL byte, which no path or id holds; a manifest lists one video per line".into()));
        }
        if text.trim().is_empty() || text.trim_start().starts_with('#') {
            continue;
        }
        let (id, video) = match text.split_once('\t') {
            Some((id, video)) => (Some(id.trim().to_string()), video.trim()),
            None => (None, text.trim()),
        };
        if video.is_empty() {
            return Err(at("no video path".into()));
        }
        if let Some((scheme, _)) =
            video.split_once("://").filter(|(scheme, _)| scheme.chars().all(|c| c.is_ascii_alphabetic()))
        {
            let advice = if scheme.eq_ignore_ascii_case("file") {
                "list the file's path, without file://"
            } else {
                "glimpse reads files: download the videos and list their paths"
            };
            return Err(at(format!("{} is a {scheme} address; {advice}", quoted(video))));
        }
        let video = base.join(video);
        let named = id.is_some();
        let id = id.unwrap_or_else(|| stem(&video));
        check_id(&id).map_err(|why| {
            let advice = if named { "" } else { "; give it one that does with `id<TAB>path`" };
            at(format!("the id of {} {why}{advice}", quoted(&video.display().to_string())))
        })?;
        entries.push(Entry { id, path: video });
        lines.push(number);
    }
    if entries.is_empty() {
        return Err(BatchError::Manifest(format!(
            "{manifest} lists no video ({number} lines, blank or comments); a manifest lists one video per line"
        )));
    }
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        if let Some(first) = seen.insert(&entry.id, index) {
            return Err(BatchError::Manifest(format!(
                "{manifest} lines {} and {}: {} and {} have the same id `{}`; give one of them its own \
                 (`id<TAB>path`)",
                lines[first],
                lines[index],
                quoted(&entries[first].path.display().to_string()),
                quoted(&entry.path.display().to_string()),
                quoted(&entry.id)
            )));
        }
    }
    Ok(Manifest { entries, skipped: Vec::new() })
}

fn folder_entries(dir: &Path) -> Result<Manifest, BatchError> {
    let io = |source| BatchError::Io { path: dir.to_path_buf(), source };
    let (mut paths, mut skipped) = (Vec::new(), Vec::new());
    for item in std::fs::read_dir(std::path::absolute(dir).map_err(io)?).map_err(io)? {
        let item = item.map_err(io)?;
        let hidden = item.file_name().to_string_lossy().starts_with('.');
        // Links count as what they name; one that names nothing (broken, a loop) is kept, so that
        // its failure is recorded rather than the video silently left out. Folders, pipes and
        // devices are not videos.
        let file = std::fs::metadata(item.path()).map_or(true, |meta| meta.is_file());
        if hidden || !file {
            continue;
        }
        match not_a_video(&item.path()) {
            true => skipped.push(item.path()),
            false => paths.push(item.path()),
        }
    }
    paths.sort();
    skipped.sort();
    let advice = "list the folder's videos in a manifest instead, one `id<TAB>path` a line, to give each an id";
    let mut entries: Vec<Entry> = Vec::with_capacity(paths.len());
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(paths.len());
    for path in paths {
        let id = id_of_name(&stem(&path));
        check_id(&id).map_err(|why| {
            BatchError::Manifest(format!(
                "{}: no id can be made of the name of {}: {why}; {advice}",
                dir.display(),
                quoted(&path.display().to_string())
            ))
        })?;
        if let Some(&first) = seen.get(&id) {
            return Err(BatchError::Manifest(format!(
                "{}: {} and {} both give the id `{}`; {advice}",
                dir.display(),
                quoted(&entries[first].path.display().to_string()),
                quoted(&path.display().to_string()),
                quoted(&id)
            )));
        }
        seen.insert(id.clone(), entries.len());
        entries.push(Entry { id, path });
    }
    if entries.is_empty() {
        return Err(BatchError::Manifest(format!(
            "{} holds no video ({} of its files passed over as no video by their extension; hidden files and \
             folders are not read); give the folder of the videos, or a manifest listing them",
            dir.display(),
            skipped.len()
        )));
    }
    Ok(Manifest { entries, skipped })
}

/// Whether a file of a folder of videos is no video by its extension ([`NOT_VIDEOS`]).
fn not_a_video(path: &Path) -> bool {
    let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    extension.is_some_and(|e| NOT_VIDEOS.contains(&e.as_str()))
}

/// Refuses an output folder that is the manifest, or a folder holding its videos: the next run
/// of a folder would read the results as videos, and a video's `<id>.json` there may be a file of
/// the user's (`glimpse world video` writes each video's truth beside it).
pub fn check_out_dir(manifest: &Path, entries: &[Entry], out_dir: &Path) -> Result<(), BatchError> {
    let Ok(out) = std::fs::canonicalize(out_dir) else { return Ok(()) };
    let refuse = |what: &str| {
        Err(BatchError::Manifest(format!("--out-dir {} is {what}; choose a folder of its own", out_dir.display())))
    };
    if std::fs::canonicalize(manifest).is_ok_and(|m| m == out) {
        return refuse(if manifest.is_dir() { "the folder of the videos" } else { "the manifest" });
    }
    let folders: HashSet<&Path> = entries.iter().filter_map(|e| e.path.parent()).collect();
    if folders.into_iter().any(|folder| std::fs::canonicalize(folder).is_ok_and(|f| f == out)) {
        return refuse("a folder of the manifest's videos, where results could take the place of files beside them");
    }
    Ok(())
}

/// The file name without its last extension.
fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// What an id may hold besides letters and digits.
const ID_PUNCTUATION: &str = "-_.+=@,";

fn usable(c: char) -> bool {
    c.is_alphanumeric() || ID_PUNCTUATION.contains(c)
}

/// A folder video's id from its file name: the same name always gives the same id, each
/// character an id may not hold (a space, a quote, a byte that is not UTF-8) becomes `_`, and so
/// does a leading dot and the dot of a trailing `.error`. Only the length can still be refused.
fn id_of_name(name: &str) -> String {
    let mut id: String = name.chars().map(|c| if usable(c) { c } else { '_' }).collect();
    if id.starts_with('.') {
        id.replace_range(..1, "_");
    }
    if let Some(base) = id.strip_suffix(".error") {
        id = format!("{base}_error");
    }
    id
}

/// Ids name files in the output folder: no separators, nothing hidden, nothing a shell or a
/// filesystem would treat specially.
fn check_id(id: &str) -> Result<(), String> {
    // `<id>.error.json` must fit a file name, which most file systems bound at 255 bytes.
    if id.is_empty() || id.len() > 200 {
        return Err(format!("`{}` must have 1 to 200 bytes (UTF-8; it has {})", quoted(id), id.len()));
    }
    if id.starts_with('.') || !id.chars().all(usable) {
        return Err(format!(
            "`{}` may use letters, digits and {} and must not start with a dot",
            quoted(id),
            ID_PUNCTUATION.chars().map(String::from).collect::<Vec<_>>().join(" ")
        ));
    }
    // `<id>.error.json` is the error record of the id without it.
    if id.ends_with(".error") {
        return Err(format!("`{}` must not end in `.error`", quoted(id)));
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
        let entries = read_manifest(&manifest).unwrap().entries;
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
            ("x/a.mp4\ny/a.gif\n", "lines 1 and 2: "),
            ("x/a.mp4\ny/a.gif\n", "same id `a`"),
            ("my clip.gif\n", "line 1: the id of "),
            ("my clip.gif\n", "give it one that does with `id<TAB>path`"),
            ("../up\t/v.mp4\n", "must not start with a dot"),
            ("a b\t/v.mp4\n", "may use letters"),
            ("id\t\n", "line 1: no video path"),
            ("clip.error.mp4\n", "must not end in `.error`"),
            ("https://example.com/v.mp4\n", "line 1: https://example.com/v.mp4 is a https address"),
            ("file:///videos/v.mp4\n", "is a file address; list the file's path, without file://"),
            ("a.mp4\nb\0c.mp4\n", "line 2: holds a NUL byte"),
            ("# nothing yet\n\n", "lists no video (2 lines, blank or comments)"),
        ] {
            std::fs::write(&manifest, text).unwrap();
            let err = read_manifest(&manifest).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        // Bounded in bytes (the file name's limit), and said so: 150 two-byte letters are 300.
        std::fs::write(&manifest, format!("{}\t/v.mp4\n", "é".repeat(150))).unwrap();
        let err = read_manifest(&manifest).unwrap_err().to_string();
        assert!(err.contains("must have 1 to 200 bytes (UTF-8; it has 300)"), "{err}");
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
        let ids: Vec<String> = read_manifest(&dir).unwrap().entries.into_iter().map(|e| e.id).collect();
        let expected: &[&str] = if cfg!(unix) { &["a", "b", "c", "d"] } else { &["a", "b"] };
        assert_eq!(ids, expected);
        // Results written among the videos would be read as videos by the next run.
        let entries = read_manifest(&dir).unwrap().entries;
        let err = check_out_dir(&dir, &entries, &dir.join("sub").join("..")).unwrap_err().to_string();
        assert!(err.contains("is the folder of the videos"), "{err}");
        assert!(check_out_dir(&dir, &entries, &dir.join("sub")).is_ok());
        // A manifest's videos' folder, where their truth files lie.
        let listed = dir.join("sub").join("list.txt");
        std::fs::write(&listed, "../a.mp4\n").unwrap();
        let entries = read_manifest(&listed).unwrap().entries;
        let err = check_out_dir(&listed, &entries, &dir).unwrap_err().to_string();
        assert!(err.contains("a folder of the manifest's videos"), "{err}");
        assert!(check_out_dir(&listed, &entries, &listed).unwrap_err().to_string().contains("is the manifest"));
        assert!(check_out_dir(&listed, &entries, &dir.join("sub")).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A folder `glimpse world video` wrote (each video's truth beside it) and names no manifest
    /// would take: the files that are no video are passed over and counted, the others get ids
    /// made of their names, and a clash names both files and says to write a manifest.
    #[test]
    fn a_folder_passes_over_files_that_are_no_video_and_makes_ids_of_any_name() {
        let dir = temp_dir("folder-names");
        for name in ["v1.gif", "v1.json", "notes.TXT", "my clip.gif", "clip.error.webm", "cover.jpg", "v2.mp4"] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let manifest = read_manifest(&dir).unwrap();
        let ids: Vec<&str> = manifest.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["clip_error", "my_clip", "v1", "v2"]);
        assert_eq!(manifest.entries[1].path, std::path::absolute(dir.join("my clip.gif")).unwrap());
        let skipped: Vec<&str> = manifest.skipped.iter().map(|p| p.file_name().unwrap().to_str().unwrap()).collect();
        assert_eq!(skipped, ["cover.jpg", "notes.TXT", "v1.json"]);

        std::fs::write(dir.join("my_clip.mp4"), b"").unwrap();
        let err = read_manifest(&dir).unwrap_err().to_string();
        for needle in ["my clip.gif and ", "my_clip.mp4 both give the id `my_clip`", "in a manifest", "id<TAB>path"] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        std::fs::remove_file(dir.join("my_clip.mp4")).unwrap();
        let long = format!("{}.gif", "x".repeat(240));
        std::fs::write(dir.join(&long), b"").unwrap();
        let err = read_manifest(&dir).unwrap_err().to_string();
        assert!(err.contains("no id can be made of the name of") && err.contains("in a manifest"), "{err}");
        assert!(err.len() < 600, "names are quoted short: {err}");
        // A folder of no video is no archive to caption.
        let none = temp_dir("folder-of-none");
        std::fs::write(none.join("notes.txt"), b"").unwrap();
        let err = read_manifest(&none).unwrap_err().to_string();
        assert!(err.contains("holds no video (1 of its files passed over"), "{err}");
        std::fs::remove_dir_all(&none).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A huge manifest, or one huge line, is refused after reading at most a line, with a short
    /// message naming the manifest and the line.
    #[test]
    fn huge_manifests_and_lines_are_refused_in_bounded_memory_with_short_messages() {
        let dir = temp_dir("huge");
        let manifest = dir.join("list.txt");
        // Sparse: no disk is written, but the size is what a 300 MB manifest's is.
        std::fs::File::create(&manifest).unwrap().set_len(300 << 20).unwrap();
        let err = read_manifest(&manifest).unwrap_err().to_string();
        assert!(err.contains("list.txt is larger than 256 MiB") && err.len() < 300, "{err}");

        std::fs::write(&manifest, format!("ok.gif\n{}\n", "y".repeat(1 << 20))).unwrap();
        let err = read_manifest(&manifest).unwrap_err().to_string();
        assert!(err.contains("list.txt line 2: longer than 8192 bytes") && err.len() < 300, "{err}");

        // Lines within the limit still quote at most 80 characters of what they hold.
        std::fs::write(&manifest, format!("{} clip\t/v.mp4\n", "z".repeat(5000))).unwrap();
        let err = read_manifest(&manifest).unwrap_err().to_string();
        assert!(err.contains("line 1: the id of /v.mp4 `zzz") && err.contains("…") && err.len() < 400, "{err}");
        let path = format!("/videos/{}/a.gif", "p".repeat(4000));
        std::fs::write(&manifest, format!("{path}\n{path}\n")).unwrap();
        let err = read_manifest(&manifest).unwrap_err().to_string();
        assert!(err.contains("same id `a`") && err.len() < 400, "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
