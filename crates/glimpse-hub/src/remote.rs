//! Models by name from the Hugging Face hub: downloaded once into the standard cache
//! (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, shared with
//! transformers and candle), verified against the hash the hub reports, resumed after an
//! interruption, and read without any request when `HF_HUB_OFFLINE=1`.
//!
//! Cache layout (as `huggingface_hub` writes it): `models--{owner}--{name}/blobs/{etag}` holds
//! each file's bytes under its hub hash (sha256 for LFS files, the git blob sha1 otherwise),
//! `snapshots/{commit}/{file}` links to the blob, `refs/{revision}` names the commit. A blob is
//! checked against its name every time it is used, so a corrupt cache entry is never loaded.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::{HubError, ModelFiles};

/// A hub repository at a revision (a branch, a tag or a commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    pub repo: String,
    pub revision: String,
}

impl RepoId {
    /// `owner/name`, `name` (legacy repositories such as `gpt2`), each with an optional
    /// `@revision`; `None` if `text` cannot be a repository id.
    pub fn parse(text: &str) -> Option<Self> {
        let (repo, revision) = match text.split_once('@') {
            Some((repo, revision)) => (repo, revision),
            None => (text, "main"),
        };
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 96
                && !p.starts_with(['.', '-'])
                && !p.contains("..")
                && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let parts: Vec<&str> = repo.split('/').collect();
        let revision_ok = !revision.is_empty()
            && !revision.contains("..")
            && revision.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        (parts.len() <= 2 && parts.iter().all(|p| part_ok(p)) && revision_ok)
            .then(|| Self { repo: repo.to_string(), revision: revision.to_string() })
    }

    /// The repository's folder in the cache.
    fn folder(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.repo, self.revision)
    }
}

/// What a download reports, for progress bars.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress<'a> {
    /// A file is about to be transferred: its name, total size and bytes already present.
    Start { file: &'a str, size: u64, resumed_from: u64 },
    /// `done` of the file's bytes are on disk.
    Bytes { file: &'a str, done: u64 },
    /// The file is complete and verified (or was already in the cache).
    Done { file: &'a str, cached: bool },
}

/// Settings from the environment, as `huggingface_hub` reads them.
#[derive(Debug, Clone)]
pub struct Hub {
    pub endpoint: String,
    pub cache: PathBuf,
    pub token: Option<String>,
    pub offline: bool,
}

/// The files glimpse reads; the rest of a repository (PyTorch, TF, Flax, ONNX copies) is never
/// downloaded.
const REQUIRED: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];
const OPTIONAL: [&str; 1] = ["preprocessor_config.json"];

impl Hub {
    /// `HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME`, `HF_TOKEN` (or the token file `huggingface-cli
    /// login` writes) and `HF_HUB_OFFLINE`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let base = var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"));
            base.join("huggingface")
        });
        let token = var("HF_TOKEN").or_else(|| {
            fs::read_to_string(home.join("token")).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
        });
        let offline = var("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        Self {
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            cache: var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| home.join("hub")),
            token,
            offline,
        }
    }

    /// The checkpoint's files, from the cache or downloaded into it.
    pub fn model_files(&self, id: &RepoId, mut progress: impl FnMut(Progress)) -> Result<ModelFiles, HubError> {
        let snapshot = self.fetch(id, &mut progress)?;
        let mut files = ModelFiles::from_dir(&snapshot)?;
        files.source = format!("{id} (hub, cached in {})", snapshot.display());
        Ok(files)
    }

    /// Makes the snapshot folder of `id` complete and verified; returns its path. When the hub
    /// cannot be reached, a complete cached snapshot is used instead (as `huggingface_hub` does).
    pub fn fetch(&self, id: &RepoId, progress: &mut dyn FnMut(Progress)) -> Result<PathBuf, HubError> {
        let repo_dir = self.cache.join(id.folder());
        if self.offline {
            return self.offline_snapshot(id, &repo_dir, progress);
        }
        match self.fetch_online(id, &repo_dir, progress) {
            Err(HubError::Unreachable(message)) => {
                self.offline_snapshot(id, &repo_dir, progress).map_err(|_| HubError::Unreachable(message))
            }
            result => result,
        }
    }

    fn fetch_online(
        &self,
        id: &RepoId,
        repo_dir: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PathBuf, HubError> {
        let agent = agent(false);
        let mut snapshot = None;
        for (file, required) in REQUIRED.iter().map(|f| (*f, true)).chain(OPTIONAL.iter().map(|f| (*f, false))) {
            let Some(meta) = self.head(&agent, id, file)? else {
                if !required {
                    continue;
                }
                let hint = if file == "model.safetensors" && self.head(&agent, id, "pytorch_model.bin")?.is_some() {
                    ": the repository has only pytorch_model.bin, and glimpse reads safetensors only (pickle \
                     files can run code); pick a revision with model.safetensors or convert it with transformers \
                     (`save_pretrained(dir, safe_serialization=True)`) and pass the folder"
                } else {
                    " (or the repository does not exist: check the id and the revision)"
                };
                return Err(HubError::Remote(format!("{id} has no {file}{hint}")));
            };
            let dir = repo_dir.join("snapshots").join(&meta.commit);
            let blob = repo_dir.join("blobs").join(&meta.etag);
            let cached = verify(&blob, &meta.etag, meta.size)?;
            if !cached {
                progress(Progress::Start { file, size: meta.size, resumed_from: file_len(&partial_path(&blob)) });
                self.download(id, file, &meta, &blob, progress)?;
            }
            link(&blob, &dir.join(file))?;
            progress(Progress::Done { file, cached });
            snapshot = Some((dir, meta.commit));
        }
        let (dir, commit) = snapshot.expect("required files were fetched");
        if id.revision != commit {
            write_file(&repo_dir.join("refs").join(&id.revision), commit.as_bytes())?;
        }
        Ok(dir)
    }

    fn offline_snapshot(
        &self,
        id: &RepoId,
        repo_dir: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PathBuf, HubError> {
        let not_cached = |what: String| {
            HubError::Remote(format!(
                "{id} is not in the cache ({what}) and HF_HUB_OFFLINE is set; fetch it while online with \
                 `glimpse models fetch {}`",
                id.repo
            ))
        };
        let commit = match fs::read_to_string(repo_dir.join("refs").join(&id.revision)) {
            Ok(commit) => commit.trim().to_string(),
            Err(_) if is_commit(&id.revision) => id.revision.clone(),
            Err(_) => return Err(not_cached(format!("no {} under {}", id.revision, repo_dir.display()))),
        };
        let dir = repo_dir.join("snapshots").join(&commit);
        for file in REQUIRED.iter().chain(&OPTIONAL) {
            let path = dir.join(file);
            let Ok(target) = fs::canonicalize(&path) else {
                if REQUIRED.contains(file) {
                    return Err(not_cached(format!("no {file}")));
                }
                continue;
            };
            let etag = target.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let size = fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
            if !is_hash(&etag) || !verify(&target, &etag, size)? {
                return Err(HubError::Remote(format!(
                    "the cached {file} of {id} is corrupt; remove it with `glimpse models rm {}` and fetch it again \
                     while online",
                    id.repo
                )));
            }
            progress(Progress::Done { file, cached: true });
        }
        Ok(dir)
    }

    fn url(&self, id: &RepoId, file: &str) -> String {
        format!("{}/{}/resolve/{}/{file}", self.endpoint, id.repo, id.revision)
    }

    fn request(&self, agent: &ureq::Agent, method: &str, url: &str) -> ureq::Request {
        let request = agent.request(method, url).set("User-Agent", concat!("glimpse/", env!("CARGO_PKG_VERSION")));
        match &self.token {
            Some(token) => request.set("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    /// The file's commit, hash and size as the hub reports them; `None` if it does not exist.
    /// Relative redirects (a renamed repository, e.g. `gpt2` -> `openai-community/gpt2`) are
    /// followed; redirects to a CDN are not, because the hub's own response carries the metadata.
    fn head(&self, agent: &ureq::Agent, id: &RepoId, file: &str) -> Result<Option<FileMeta>, HubError> {
        let mut url = self.url(id, file);
        let mut hops = 0;
        let response = loop {
            let response = match self.request(agent, "HEAD", &url).call() {
                Ok(response) => response,
                Err(ureq::Error::Status(404, _)) => return Ok(None),
                Err(ureq::Error::Status(code @ (401 | 403), _)) => {
                    return Err(HubError::Remote(format!(
                        "{url}: HTTP {code}; the repository is private, gated or misspelt. Accept its terms on \
                         the hub and set HF_TOKEN (or run `huggingface-cli login`)"
                    )));
                }
                Err(e) => {
                    return Err(HubError::Unreachable(format!(
                        "{e}; check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache only"
                    )));
                }
            };
            match response.header("Location") {
                Some(location) if (300..400).contains(&response.status()) && location.starts_with('/') && hops < 5 => {
                    url = format!("{}{location}", self.endpoint);
                    hops += 1;
                }
                _ => break response,
            }
        };
        let header =
            |name: &str| response.header(name).map(|v| v.trim_start_matches("W/").trim_matches('"').to_string());
        let etag = header("X-Linked-Etag").or_else(|| header("ETag")).filter(|e| is_hash(e));
        let size = header("X-Linked-Size").or_else(|| header("Content-Length")).and_then(|s| s.parse().ok());
        match (header("X-Repo-Commit"), etag, size) {
            (Some(commit), Some(etag), Some(size)) if is_commit(&commit) => Ok(Some(FileMeta { commit, etag, size })),
            _ => Err(HubError::Remote(format!(
                "{url}: the server did not send the commit, hash and size of the file; is HF_ENDPOINT ({}) a \
                 Hugging Face hub?",
                self.endpoint
            ))),
        }
    }

    /// Downloads into `blob.incomplete` (resuming what is there), checks size and hash, then moves
    /// the file into place. A dropped connection is retried from where it stopped.
    fn download(
        &self,
        id: &RepoId,
        file: &str,
        meta: &FileMeta,
        blob: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), HubError> {
        let partial = partial_path(blob);
        fs::create_dir_all(blob.parent().expect("blobs have a folder")).map_err(|e| io_err(blob, e))?;
        const ATTEMPTS: usize = 3;
        let mut last_error = String::new();
        for _ in 0..ATTEMPTS {
            match self.transfer(id, file, meta, &partial, progress) {
                Ok(()) => {
                    if verify(&partial, &meta.etag, meta.size)? {
                        return fs::rename(&partial, blob).map_err(|e| io_err(blob, e));
                    }
                    let _ = fs::remove_file(&partial);
                    return Err(HubError::Remote(format!(
                        "{file} of {id} does not match the hash the hub reports ({}); the download was discarded. \
                         Run again; if it persists, the server or a proxy is altering the file",
                        meta.etag
                    )));
                }
                Err(e) => last_error = e,
            }
        }
        Err(HubError::Remote(format!(
            "{file} of {id}: {last_error} (after {ATTEMPTS} attempts; what arrived is kept in {} and the next run \
             resumes from it)",
            partial.display()
        )))
    }

    /// One GET from the partial file's length on; `Err` with a message if the transfer stops.
    fn transfer(
        &self,
        id: &RepoId,
        file: &str,
        meta: &FileMeta,
        partial: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), String> {
        let mut have = file_len(partial);
        if have > meta.size {
            have = 0;
        }
        // LFS files redirect to a CDN: this request follows redirects (the HEAD does not, to see
        // the hub's own headers).
        let follow = agent(true);
        let mut request = self.request(&follow, "GET", &self.url(id, file));
        if have > 0 {
            request = request.set("Range", &format!("bytes={have}-"));
        }
        let response = request.call().map_err(|e| e.to_string())?;
        let append = have > 0 && response.status() == 206;
        let mut out = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(partial)
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        let mut done = if append { have } else { 0 };
        let mut reader = response.into_reader();
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buffer).map_err(|e| format!("the connection dropped: {e}"))?;
            if n == 0 {
                break;
            }
            out.write_all(&buffer[..n]).map_err(|e| format!("{}: {e}", partial.display()))?;
            done += n as u64;
            progress(Progress::Bytes { file, done });
        }
        out.sync_all().map_err(|e| format!("{}: {e}", partial.display()))?;
        if done < meta.size {
            return Err(format!("the connection closed after {done} of {} bytes", meta.size));
        }
        Ok(())
    }
}

fn agent(follow_redirects: bool) -> ureq::Agent {
    let builder =
        ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(20)).timeout_read(Duration::from_secs(60));
    if follow_redirects { builder.build() } else { builder.redirects(0).build() }
}

#[derive(Debug, Clone)]
struct FileMeta {
    commit: String,
    etag: String,
    size: u64,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn is_commit(s: &str) -> bool {
    is_hex(s, 40)
}

/// A git blob sha1 (40 hex digits) or an LFS sha256 (64).
fn is_hash(s: &str) -> bool {
    is_hex(s, 40) || is_hex(s, 64)
}

/// Where a blob's download in progress is kept.
fn partial_path(blob: &Path) -> PathBuf {
    blob.with_extension("incomplete")
}

/// The length of `path`, 0 if it does not exist.
fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Whether `path` holds exactly the file the hub describes: `size` bytes whose sha256 (LFS) or
/// git blob sha1 is `etag`. A missing file is `false`; a wrong one is deleted and `false`.
fn verify(path: &Path, etag: &str, size: u64) -> Result<bool, HubError> {
    let Ok(meta) = fs::metadata(path) else { return Ok(false) };
    let ok = meta.len() == size && digest(path, etag.len() == 64, size).map_err(|e| io_err(path, e))? == etag;
    if !ok {
        let _ = fs::remove_file(path);
    }
    Ok(ok)
}

fn digest(path: &Path, lfs: bool, size: u64) -> io::Result<String> {
    let mut file = File::open(path)?;
    let bytes = if lfs {
        hash_reader(Sha256::new(), &mut file)?
    } else {
        let mut git = Sha1::new();
        git.update(format!("blob {size}\0").as_bytes());
        hash_reader(git, &mut file)?
    };
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Feeds everything `reader` holds into `hasher`; returns the digest.
fn hash_reader<D: Digest>(mut hasher: D, reader: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        match reader.read(&mut buffer)? {
            0 => return Ok(hasher.finalize().to_vec()),
            n => hasher.update(&buffer[..n]),
        }
    }
}

/// Points `link` at `blob` (a relative symlink, as the hub's cache does; a copy where symlinks
/// are unavailable).
fn link(blob: &Path, link: &Path) -> Result<(), HubError> {
    let dir = link.parent().expect("snapshot files have a folder");
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let _ = fs::remove_file(link);
    #[cfg(unix)]
    {
        let target = Path::new("../..").join("blobs").join(blob.file_name().expect("blobs are named"));
        std::os::unix::fs::symlink(target, link).map_err(|e| io_err(link, e))
    }
    #[cfg(not(unix))]
    {
        fs::copy(blob, link).map(|_| ()).map_err(|e| io_err(link, e))
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), HubError> {
    let dir = path.parent().expect("cache files have a folder");
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    glimpse_media::write_atomically(path, bytes).map_err(|e| io_err(path, e))
}

fn io_err(path: &Path, source: io::Error) -> HubError {
    HubError::Io { path: path.to_path_buf(), source }
}

/// One cached repository, for `glimpse models list`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CachedRepo {
    pub repo: String,
    /// `(revision, commit)` pairs from `refs/`.
    pub revisions: Vec<(String, String)>,
    /// Bytes of all its blobs.
    pub size: u64,
    pub path: PathBuf,
}

impl Hub {
    /// Every model repository in the cache (glimpse's or any other tool's), by name.
    pub fn list(&self) -> Result<Vec<CachedRepo>, HubError> {
        let entries = match fs::read_dir(&self.cache) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.cache, e)),
        };
        let mut repos = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(repo) = name.strip_prefix("models--") else { continue };
            let path = entry.path();
            let size = fs::read_dir(path.join("blobs"))
                .map(|blobs| blobs.flatten().filter_map(|b| b.metadata().ok()).map(|m| m.len()).sum())
                .unwrap_or(0);
            let mut revisions: Vec<(String, String)> = fs::read_dir(path.join("refs"))
                .map(|refs| {
                    refs.flatten()
                        .filter_map(|r| {
                            let commit = fs::read_to_string(r.path()).ok()?;
                            Some((r.file_name().to_string_lossy().to_string(), commit.trim().to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            revisions.sort();
            repos.push(CachedRepo { repo: repo.replacen("--", "/", 1), revisions, size, path });
        }
        repos.sort_by(|a, b| a.repo.cmp(&b.repo));
        Ok(repos)
    }

    /// Deletes a repository from the cache; returns the bytes freed.
    pub fn remove(&self, repo: &str) -> Result<u64, HubError> {
        let id = RepoId::parse(repo).ok_or_else(|| HubError::Remote(format!("{repo:?} is not a repository id")))?;
        let found = self.list()?.into_iter().find(|r| r.repo == id.repo);
        let Some(found) = found else {
            return Err(HubError::Remote(format!("{} is not in the cache ({})", id.repo, self.cache.display())));
        };
        fs::remove_dir_all(&found.path).map_err(|e| io_err(&found.path, e))?;
        Ok(found.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_ids() {
        let id = |s: &str| RepoId::parse(s).map(|r| (r.repo, r.revision));
        assert_eq!(id("gpt2"), Some(("gpt2".into(), "main".into())));
        assert_eq!(
            id("openai/clip-vit-base-patch32@v1.0"),
            Some(("openai/clip-vit-base-patch32".into(), "v1.0".into()))
        );
        for bad in ["", "a/b/c", "../x", "a/..", "a b", "a/b@", "a/b@x y", "/abs"] {
            assert_eq!(id(bad), None, "{bad}");
        }
    }

    #[test]
    fn git_and_lfs_hashes() {
        let dir = std::env::temp_dir().join(format!("glimpse-hash-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        fs::write(&path, b"hello\n").unwrap();
        // `git hash-object` of "hello\n", and its sha256.
        assert_eq!(digest(&path, false, 6).unwrap(), "ce013625030ba8dba906f756967f9e9ca394464a");
        assert_eq!(digest(&path, true, 6).unwrap(), "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03");
        assert!(verify(&path, "ce013625030ba8dba906f756967f9e9ca394464a", 6).unwrap());
        assert!(!verify(&path, "ce013625030ba8dba906f756967f9e9ca394464b", 6).unwrap());
        assert!(!path.exists(), "a file that fails verification is deleted");
    }
}
