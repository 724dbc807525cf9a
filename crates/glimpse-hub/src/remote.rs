//! Models by name from the Hugging Face hub: downloaded once into the standard cache
//! (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, shared with
//! transformers and candle), verified against the hash the hub reports, resumed after an
//! interruption, and read without any request when `HF_HUB_OFFLINE=1`.
//!
//! Cache layout (as `huggingface_hub` writes it): `models--{owner}--{name}/blobs/{etag}` holds
//! each file's bytes under its hub hash (sha256 for LFS files, the git blob sha1 otherwise),
//! `snapshots/{commit}/{file}` links to the blob, `refs/{revision}` names the commit. A blob is
//! checked against its name every time it is used, so a corrupt cache entry is never loaded.
//!
//! Nothing the hub or the cache says is trusted to name a path or a size: revisions, commits and
//! hashes are checked before they become file names, downloads stop at the size the hub
//! announced, and one process at a time writes a blob (`blobs/{etag}.lock`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use glimpse_media::files::{pid_namespace, writer_is_gone};
use glimpse_media::untrusted;
use glimpse_models::{ModelFiles, max_json_bytes};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use url::Url;

use crate::HubError;

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
        let (repo, revision) = text.split_once('@').unwrap_or((text, "main"));
        let id = Self { repo: repo.to_string(), revision: revision.to_string() };
        id.check().is_ok().then_some(id)
    }

    /// Why this id cannot be used, if it cannot. The repository and the revision become folder and
    /// file names in the cache, so neither may name anything outside it.
    fn check(&self) -> Result<(), String> {
        let parts: Vec<&str> = self.repo.split('/').collect();
        if parts.len() > 2 || !parts.iter().all(|p| is_repo_part(p)) {
            return Err(format!(
                "{:?} is not a repository: owner/name (or name) of letters, digits, '-', '_' and '.', neither \
                 starting nor ending with '-' or '.', without '--' or '..'",
                self.repo
            ));
        }
        if !is_revision(&self.revision) {
            return Err(format!(
                "{:?} is not a revision: a branch, tag or commit of letters, digits, '-', '_', '.' and '/', whose \
                 '/'-separated parts are not empty and do not start with '.'",
                self.revision
            ));
        }
        Ok(())
    }

    /// The repository's folder in the cache.
    fn folder(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }
}

fn is_repo_part(part: &str) -> bool {
    (1..=96).contains(&part.len())
        && !part.starts_with(['.', '-'])
        && !part.ends_with(['.', '-'])
        && !part.contains("..")
        && !part.contains("--")
        && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A revision is a relative path under `refs/`: no absolute path, no `.` or `..` part, no empty
/// part, no backslash or NUL (only the characters git allows in ordinary ref names).
fn is_revision(revision: &str) -> bool {
    (1..=256).contains(&revision.len())
        && revision.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.repo, self.revision)
    }
}

/// What a download reports, for progress bars.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress<'a> {
    /// Another process (or thread) is downloading the file; this one waits for it to finish and
    /// then uses its blob. `lock` is the lock file it holds.
    Waiting { file: &'a str, lock: &'a Path },
    /// A file is about to be transferred: its name, total size and bytes already present.
    Start { file: &'a str, size: u64, resumed_from: u64 },
    /// `done` of the file's bytes are on disk.
    Bytes { file: &'a str, done: u64 },
    /// The file is complete and verified (or was already in the cache).
    Done { file: &'a str, cached: bool },
}

/// Settings from the environment, as `huggingface_hub` reads them. `Debug` never shows the token.
#[derive(Clone)]
pub struct Hub {
    pub endpoint: String,
    pub cache: PathBuf,
    pub token: Option<String>,
    pub offline: bool,
    /// The slowest download kept going.
    pub min_speed: MinSpeed,
}

/// A download that receives fewer than `bytes` in `window` is cut and resumed by a new request
/// (at most twice more, then it fails with what arrived kept for the next run): a server that
/// trickles a byte at a time within the read timeout would otherwise hold a download forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinSpeed {
    pub bytes: u64,
    pub window: Duration,
}

impl Default for MinSpeed {
    /// 512 KiB a minute (8.5 KiB/s): far below any connection that can fetch a model at all.
    fn default() -> Self {
        Self { bytes: 512 << 10, window: Duration::from_secs(60) }
    }
}

impl MinSpeed {
    /// `bytes_per_second` averaged over a minute; 0 keeps every download going.
    pub fn per_second(bytes_per_second: u64) -> Self {
        Self { bytes: bytes_per_second.saturating_mul(60), window: Duration::from_secs(60) }
    }

    /// How long a whole request for `bytes` may take, headers included: a window, and twice the
    /// time this speed needs. The windows count only what the body brings, so without it a server
    /// sending its headers a byte at a time within the read timeout would hold a download forever.
    /// `None` when every download is kept going.
    fn deadline(self, bytes: u64) -> Option<Duration> {
        if self.bytes == 0 || self.window.is_zero() {
            return None;
        }
        let at_floor = bytes as f64 * self.window.as_secs_f64() / self.bytes as f64;
        Duration::try_from_secs_f64(2.0 * at_floor).ok().and_then(|body| self.window.checked_add(body))
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("endpoint", &self.endpoint)
            .field("cache", &self.cache)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .field("min_speed", &self.min_speed)
            .finish()
    }
}

/// The files glimpse reads; the rest of a repository (PyTorch, TF, Flax, ONNX copies) is never
/// downloaded.
const REQUIRED: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];
const OPTIONAL: [&str; 2] = ["preprocessor_config.json", "processor_config.json"];

impl Hub {
    /// `HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME`, `HF_TOKEN` (or the token file `huggingface-cli
    /// login` writes) and `HF_HUB_OFFLINE`; glimpse's own `GLIMPSE_DOWNLOAD_MIN_SPEED` (bytes per
    /// second, 0 for none) sets [`Hub::min_speed`].
    pub fn from_env() -> Result<Self, HubError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let base = var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"));
            base.join("huggingface")
        });
        let token = var("HF_TOKEN").and_then(cleaned_token).or_else(|| read_token_file(&home.join("token")));
        let offline = var("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        let min_speed = match var("GLIMPSE_DOWNLOAD_MIN_SPEED") {
            None => MinSpeed::default(),
            Some(value) => MinSpeed::per_second(value.trim().parse().map_err(|_| {
                HubError::Remote(format!(
                    "GLIMPSE_DOWNLOAD_MIN_SPEED={} is not a whole number of bytes per second (0 for no floor)",
                    untrusted::quoted(&value)
                ))
            })?),
        };
        Ok(Self {
            endpoint: var("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            cache: var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| home.join("hub")),
            token,
            offline,
            min_speed,
        })
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
        // The fields are public, so an id may not have come through `parse`.
        id.check().map_err(|why| HubError::Remote(format!("{why}; pass owner/name or owner/name@revision")))?;
        let repo_dir = self.cache.join(id.folder());
        if self.offline {
            return self.offline_snapshot(id, &repo_dir, progress);
        }
        match self.fetch_online(id, &repo_dir, progress) {
            Err(HubError::Unreachable(message)) => self.offline_snapshot(id, &repo_dir, progress).map_err(|cached| {
                // A damaged copy in the cache is the user's to mend, not the network's.
                // Said only where the cache holds that revision at all.
                let cached_at_all =
                    [repo_dir.join("refs").join(&id.revision), repo_dir.join("snapshots").join(&id.revision)]
                        .iter()
                        .any(|path| fs::symlink_metadata(path).is_ok());
                match cached_at_all {
                    true => {
                        HubError::Unreachable(format!("{message}; nor can the cached copy be used: {}", cached.full()))
                    }
                    false => HubError::Unreachable(message),
                }
            }),
            result => result,
        }
    }

    fn fetch_online(
        &self,
        id: &RepoId,
        repo_dir: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PathBuf, HubError> {
        let agent = agent();
        // The first answer names the commit, and the other files are asked for at that commit: a
        // push between two requests cannot mix two snapshots.
        let mut snapshot: Option<(PathBuf, String)> = None;
        for (file, required) in REQUIRED.iter().map(|f| (*f, true)).chain(OPTIONAL.iter().map(|f| (*f, false))) {
            let revision = snapshot.as_ref().map_or(id.revision.as_str(), |(_, commit)| commit.as_str());
            let url = self.url(&id.repo, revision, file);
            let Some(meta) = self.head(&agent, &url)? else {
                if !required {
                    continue;
                }
                let bin = self.url(&id.repo, revision, "pytorch_model.bin");
                let hint = if file == "model.safetensors" && self.head(&agent, &bin)?.is_some() {
                    ": the repository has only pytorch_model.bin, and glimpse reads safetensors only (pickle \
                     files can run code); pick a revision with model.safetensors or convert it with transformers \
                     (`save_pretrained(dir, safe_serialization=True)`) and pass the folder"
                } else {
                    " (or the repository does not exist: check the id and the revision)"
                };
                return Err(HubError::Remote(format!("{id} has no {file}{hint}")));
            };
            if let Some((_, commit)) = &snapshot
                && *commit != meta.commit
            {
                return Err(HubError::Remote(format!(
                    "{url}: the hub answered with commit {} after {commit}; run again",
                    meta.commit
                )));
            }
            if file != "model.safetensors" && meta.size > max_json_bytes(file) {
                return Err(HubError::Remote(format!(
                    "{file} of {id}: {url} announces {} bytes, more than the {} a {file} may have; is \
                     HF_ENDPOINT ({}) a Hugging Face hub?",
                    meta.size,
                    max_json_bytes(file),
                    self.endpoint
                )));
            }
            let dir = repo_dir.join("snapshots").join(&meta.commit);
            let blob = repo_dir.join("blobs").join(&meta.etag);
            let cached = self.ensure_blob(id, file, &meta, &blob, progress)?;
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
        let offline = if self.offline { " and HF_HUB_OFFLINE is set" } else { "" };
        let not_cached = |what: String| {
            HubError::Remote(format!(
                "{id} is not in the cache ({what}){offline}; fetch it while online with `glimpse models fetch {}`",
                fetch_arg(id)
            ))
        };
        let ref_file = repo_dir.join("refs").join(&id.revision);
        let commit = match read_ref(&ref_file) {
            Ok(Some(commit)) => commit,
            Ok(None) => {
                return Err(HubError::Remote(format!(
                    "{} does not hold a commit hash (40 or 64 hex digits); delete it (or remove the repository \
                     with `glimpse models rm {}`) and fetch again while online",
                    ref_file.display(),
                    id.repo
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !is_hash(&id.revision) {
                    return Err(not_cached(format!("no {} under {}", id.revision, repo_dir.display())));
                }
                id.revision.clone()
            }
            Err(e) => return Err(io_err(&ref_file, e)),
        };
        let dir = repo_dir.join("snapshots").join(&commit);
        if !dir.is_dir() {
            return Err(not_cached(format!(
                "{} names commit {commit}, whose folder {} is missing",
                ref_file.display(),
                dir.display()
            )));
        }
        for file in REQUIRED.iter().chain(&OPTIONAL) {
            let path = dir.join(file);
            let Ok(target) = fs::canonicalize(&path) else {
                if !REQUIRED.contains(file) {
                    continue;
                }
                // A link whose blob is gone is not the same as no file.
                return Err(not_cached(match fs::symlink_metadata(&path) {
                    Ok(_) => format!("{} links to a blob that is missing", path.display()),
                    Err(_) => format!("no {file} in {}", dir.display()),
                }));
            };
            let etag = target.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let size = fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
            if is_hash(&etag) {
                if !verify(&target, &etag, size)? {
                    return Err(HubError::Remote(format!(
                        "the cached {file} of {id} is corrupt; remove it with `glimpse models rm {}` and fetch it \
                         again while online",
                        id.repo
                    )));
                }
            } else if !is_copy_of_a_blob(&target, size, &repo_dir.join("blobs"))? {
                return Err(HubError::Remote(format!(
                    "the cached {file} of {id} ({}) is a plain file where the cache keeps a link to a blob, and its \
                     hash names no blob of the repository, so it cannot be checked; copy caches with their links \
                     (`cp -a`, `rsync -a`), or fetch it again while online",
                    path.display()
                )));
            }
            progress(Progress::Done { file, cached: true });
        }
        Ok(dir)
    }

    /// The hub's address of `file`; the revision is one path segment (`refs/pr/1` as
    /// `refs%2Fpr%2F1`), as `huggingface_hub` sends it.
    fn url(&self, repo: &str, revision: &str, file: &str) -> String {
        format!("{}/{repo}/resolve/{}/{file}", self.endpoint, revision.replace('/', "%2F"))
    }

    fn request(&self, agent: &ureq::Agent, method: &str, url: &str) -> ureq::Request {
        let request = agent.request(method, url).set("User-Agent", concat!("glimpse/", env!("CARGO_PKG_VERSION")));
        match &self.token {
            Some(token) if may_send_token(url) && same_origin(url, &self.endpoint) && is_token(token) => {
                request.set("Authorization", &format!("Bearer {token}"))
            }
            _ => request,
        }
    }

    /// The file's commit, hash and size as the hub reports them; `None` if it does not exist.
    /// Relative redirects (a renamed repository, e.g. `gpt2` -> `openai-community/gpt2`) are
    /// followed; redirects to a CDN are not, because the hub's own response carries the metadata.
    fn head(&self, agent: &ureq::Agent, url: &str) -> Result<Option<FileMeta>, HubError> {
        const MAX_HOPS: usize = 5;
        let mut url = url.to_string();
        let mut hops = 0;
        let response = loop {
            // A whole-request bound: a server that trickles its headers cannot hold us forever.
            let request = || self.request(agent, "HEAD", &url).timeout(Duration::from_secs(60));
            let response = match call_patiently(request).map_err(|e| *e) {
                Ok(response) => response,
                Err(ureq::Error::Status(404, _)) => return Ok(None),
                Err(ureq::Error::Status(code, response)) if is_busy(code) => {
                    // `call_patiently` asked again unless the wait asked for was too long.
                    let advice = match retry_wait(retry_after(&response), 0) {
                        Ok(_) => format!(" (after {ATTEMPTS} attempts); run again later"),
                        Err(too_long) => format!("; {too_long}"),
                    };
                    return Err(HubError::Unreachable(format!(
                        "{}{advice}, or set HF_HUB_OFFLINE=1 to use the cache only",
                        busy_message(&url, code, response.status_text())
                    )));
                }
                Err(ureq::Error::Status(code @ (401 | 403), _)) => {
                    let withheld = match &self.token {
                        Some(token) if !is_token(token) => {
                            " (HF_TOKEN was not sent: it holds characters no token has, such as spaces \
                             or letters beyond ASCII; set it to the token alone)"
                        }
                        Some(_) if !may_send_token(&url) => {
                            " (HF_TOKEN was not sent: the address is plain http to another machine, where anyone on \
                             the way could read it; use https)"
                        }
                        _ => "",
                    };
                    return Err(HubError::Remote(format!(
                        "{url}: HTTP {code}{withheld}; the repository is private, gated or misspelt. Accept its \
                         terms on the hub and set HF_TOKEN (or run `huggingface-cli login`)"
                    )));
                }
                Err(e) => {
                    return Err(HubError::Unreachable(format!(
                        "{e}; check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache only"
                    )));
                }
            };
            match response.header("Location") {
                Some(location) if (300..400).contains(&response.status()) && location.starts_with('/') => {
                    if hops == MAX_HOPS {
                        return Err(HubError::Remote(format!(
                            "{url}: more than {MAX_HOPS} redirects; is HF_ENDPOINT ({}) a Hugging Face hub?",
                            self.endpoint
                        )));
                    }
                    // Appended to the endpoint, a relative location can only name a path on it.
                    url = format!("{}{location}", self.endpoint);
                    hops += 1;
                }
                _ => break response,
            }
        };
        let header = |name: &str| {
            response.header(name).map(|v| v.trim_start_matches("W/").trim_matches('"').to_ascii_lowercase())
        };
        let etag = header("X-Linked-Etag").or_else(|| header("ETag")).filter(|e| is_hash(e));
        let size = header("X-Linked-Size")
            .or_else(|| header("Content-Length"))
            .and_then(|s| s.parse().ok())
            .filter(|&size: &u64| size <= MAX_FILE_BYTES);
        match (header("X-Repo-Commit"), etag, size) {
            (Some(commit), Some(etag), Some(size)) if is_hash(&commit) => {
                Ok(Some(FileMeta { url, commit, etag, size }))
            }
            _ => Err(HubError::Remote(format!(
                "{url}: the server did not send the commit, hash and size of the file; is HF_ENDPOINT ({}) a \
                 Hugging Face hub?",
                self.endpoint
            ))),
        }
    }

    /// Makes `blob` hold the file the hub describes; `true` if no transfer was needed. One process
    /// at a time writes a blob: the others wait for it and use what it wrote.
    fn ensure_blob(
        &self,
        id: &RepoId,
        file: &str,
        meta: &FileMeta,
        blob: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<bool, HubError> {
        if verify(blob, &meta.etag, meta.size)? {
            return Ok(true);
        }
        let blobs = blob.parent().expect("blobs have a folder");
        fs::create_dir_all(blobs).map_err(|e| io_err(blobs, e))?;
        let mut lock = BlobLock::acquire(blob, file, progress)?;
        // The previous holder of the lock may have just finished this blob.
        if verify(blob, &meta.etag, meta.size)? {
            return Ok(true);
        }
        // A crash between the last byte and the rename leaves a complete partial file; asking for
        // the bytes after its end would only get HTTP 416.
        let partial = partial_path(blob);
        remove_unless_plain_file(&partial)?;
        if file_len(&partial) == meta.size {
            if verify(&partial, &meta.etag, meta.size)? {
                fs::rename(&partial, blob).map_err(|e| io_err(blob, e))?;
                return Ok(false);
            }
            remove_if_present(&partial)?;
        }
        progress(Progress::Start { file, size: meta.size, resumed_from: file_len(&partial) });
        self.download(id, file, meta, blob, &mut lock, progress)?;
        Ok(false)
    }

    /// Downloads into `blob.incomplete` (resuming what is there), checks size and hash, then moves
    /// the file into place. A dropped connection is retried from where it stopped.
    fn download(
        &self,
        id: &RepoId,
        file: &str,
        meta: &FileMeta,
        blob: &Path,
        lock: &mut BlobLock,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), HubError> {
        let partial = partial_path(blob);
        let (mut last_error, mut then) = (String::new(), "");
        for attempt in 0..ATTEMPTS {
            match self.transfer(file, meta, &partial, lock, progress) {
                Ok(()) => {}
                Err(Stop::Retry(message)) => {
                    (last_error, then) = (message, "");
                    continue;
                }
                Err(Stop::Busy(message, asked)) => {
                    let wait = match retry_wait(asked, attempt) {
                        Ok(wait) => wait,
                        Err(too_long) => {
                            let kept = kept_note(&partial, "for a run after that");
                            return Err(HubError::Remote(format!("{file} of {id}: {message}; {too_long}{kept}")));
                        }
                    };
                    (last_error, then) = (message, "; run again later");
                    if attempt + 1 < ATTEMPTS {
                        lock.touch();
                        std::thread::sleep(wait);
                    }
                    continue;
                }
                Err(Stop::GiveUp(message)) => {
                    let kept = kept_note(&partial, "for a run that can reach the file");
                    return Err(HubError::Remote(format!("{file} of {id}: {message}{kept}")));
                }
                Err(Stop::Refuse(message)) => {
                    remove_if_present(&partial)?;
                    return Err(HubError::Remote(format!(
                        "{file} of {id}: {message}; the download was discarded. Check HF_ENDPOINT ({}) and any \
                         proxy between here and the hub",
                        self.endpoint
                    )));
                }
            }
            if verify(&partial, &meta.etag, meta.size)? {
                return fs::rename(&partial, blob).map_err(|e| io_err(blob, e));
            }
            remove_if_present(&partial)?;
            return Err(HubError::Remote(format!(
                "{file} of {id} ({}) does not match the hash the hub reports ({}); the download was discarded. \
                 Run again; if it persists, the server or a proxy is altering the file",
                meta.url, meta.etag
            )));
        }
        let kept = kept_note(&partial, "and the next run resumes from them");
        Err(HubError::Remote(format!("{file} of {id}: {last_error} (after {ATTEMPTS} attempts){then}{kept}")))
    }

    /// A GET of `url` from byte `from` on, `remaining` bytes to come (they set how long the whole
    /// request may take: [`MinSpeed::deadline`]); the answer that is not a redirect, whatever its
    /// status, and whether a redirect led to it. LFS files redirect to a CDN. The redirects are followed here, not by the HTTP library, so
    /// that each is checked: to http(s) only (the library panics on a `file:` one, which has no host),
    /// never from https down to http, and the token goes to the hub's own address only.
    fn get(&self, url: &str, from: u64, remaining: u64) -> Result<(ureq::Response, bool), Stop> {
        const MAX_HOPS: usize = 5;
        let agent = agent();
        let deadline = self.min_speed.deadline(remaining);
        let mut url = url.to_string();
        for hop in 0..=MAX_HOPS {
            let mut request = self.request(&agent, "GET", &url);
            if from > 0 {
                request = request.set("Range", &format!("bytes={from}-"));
            }
            if let Some(deadline) = deadline {
                request = request.timeout(deadline);
            }
            let response = match request.call() {
                Ok(response) | Err(ureq::Error::Status(_, response)) => response,
                Err(e) => return Err(Stop::Retry(e.to_string())),
            };
            let Some(location) = response.header("Location").filter(|_| (300..400).contains(&response.status())) else {
                return Ok((response, hop > 0));
            };
            // Not a refusal of what arrived: a partial download an earlier run left is kept.
            url = redirect_target(&url, location).map_err(|why| {
                Stop::GiveUp(format!("{url} redirects to {}, which {why}", untrusted::quoted(location)))
            })?;
        }
        Err(Stop::GiveUp(format!("{url}: more than {MAX_HOPS} redirects")))
    }

    /// One GET from the partial file's length on, never reading more than the hub announced.
    fn transfer(
        &self,
        file: &str,
        meta: &FileMeta,
        partial: &Path,
        lock: &mut BlobLock,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), Stop> {
        lock.touch();
        let url = &meta.url;
        let mut have = file_len(partial);
        if have >= meta.size {
            have = 0;
        }
        let (response, redirected) = self.get(url, have, meta.size - have)?;
        match response.status() {
            200 | 206 => {}
            // What is kept does not fit the file any more (the server's copy changed, or the kept
            // bytes are wrong): start again from the first byte.
            416 => {
                remove_if_present(partial).map_err(|e| Stop::Retry(e.to_string()))?;
                return Err(Stop::Retry(format!("{url} refused to resume at byte {have} (HTTP 416)")));
            }
            // The hub's own answer, which asking again would get again. A CDN's may not be: each
            // attempt asks the hub, which redirects to a freshly signed address.
            code @ 400..500 if !redirected && !matches!(code, 408 | 425 | 429) => {
                return Err(Stop::GiveUp(format!("{url}: HTTP {code} {}", response.status_text())));
            }
            code if is_busy(code) => {
                let message = busy_message(url, code, response.status_text());
                return Err(Stop::Busy(message, retry_after(&response)));
            }
            code => return Err(Stop::Retry(format!("{url}: HTTP {code} {}", response.status_text()))),
        }
        let resumed = have > 0 && response.status() == 206;
        if resumed
            && let Some(range) = response.header("Content-Range")
            && !range.starts_with(&format!("bytes {have}-"))
        {
            return Err(Stop::Refuse(format!("{url} answered a request for bytes {have}- with {range}")));
        }
        let start = if resumed { have } else { 0 };
        let remaining = meta.size - start;
        if let Some(length) = response.header("Content-Length").and_then(|l| l.parse::<u64>().ok())
            && length > remaining
        {
            return Err(Stop::Refuse(format!(
                "{url} announces a body of {length} bytes where {remaining} of the {} the hub reported are missing",
                meta.size
            )));
        }
        let mut options = OpenOptions::new();
        options.create(true).write(true).append(resumed).truncate(!resumed);
        // Bytes go into the cache only: a link put where the partial file goes is not followed
        // (`ensure_blob` removed any it found; this closes the window after it).
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
        let mut out = options.open(partial).map_err(|e| Stop::Retry(format!("{}: {e}", partial.display())))?;
        let mut done = start;
        // One byte past the announced size is enough to know that the server sends too much.
        let mut reader = response.into_reader().take(remaining + 1);
        let mut buffer = vec![0u8; 1 << 16];
        // Bytes received since the window began; a read waits at most the read timeout.
        let (mut window_start, mut window_from) = (Instant::now(), done);
        loop {
            let n = reader.read(&mut buffer).map_err(|e| Stop::Retry(format!("the connection dropped: {e}")))?;
            if n == 0 {
                break;
            }
            if done + n as u64 > meta.size {
                return Err(Stop::Refuse(format!("{url} sent more than the {} bytes the hub announced", meta.size)));
            }
            out.write_all(&buffer[..n]).map_err(|e| Stop::Retry(format!("{}: {e}", partial.display())))?;
            done += n as u64;
            lock.touch();
            progress(Progress::Bytes { file, done });
            if window_start.elapsed() >= self.min_speed.window {
                let received = done - window_from;
                if received < self.min_speed.bytes {
                    return Err(Stop::Retry(format!(
                        "{url} sent {received} bytes in {:.0} s, below the least kept going ({} bytes in {} s; on a \
                         slow link set GLIMPSE_DOWNLOAD_MIN_SPEED, in bytes per second, 0 for none)",
                        window_start.elapsed().as_secs_f64(),
                        self.min_speed.bytes,
                        self.min_speed.window.as_secs()
                    )));
                }
                (window_start, window_from) = (Instant::now(), done);
            }
        }
        out.sync_all().map_err(|e| Stop::Retry(format!("{}: {e}", partial.display())))?;
        if done < meta.size {
            return Err(Stop::Retry(format!("the connection closed after {done} of {} bytes", meta.size)));
        }
        Ok(())
    }
}

/// What a failed download leaves behind, for its message: `; the N bytes that arrived are kept in
/// PATH <then>`, or nothing.
fn kept_note(partial: &Path, then: &str) -> String {
    match file_len(partial) {
        0 => String::new(),
        bytes => format!("; the {bytes} bytes that arrived are kept in {} {then}", partial.display()),
    }
}

/// Why a transfer stopped.
enum Stop {
    /// The network failed; what arrived is kept and the next attempt resumes from it.
    Retry(String),
    /// The server answered "not now" (see [`is_busy`]), asking to wait the seconds given, if any;
    /// the next attempt waits, then resumes.
    Busy(String, Option<u64>),
    /// The request cannot succeed as it is made (a redirect glimpse does not follow, the hub's own
    /// 403 or 404): not tried again; what arrived is kept for a run that can reach the file.
    GiveUp(String),
    /// The server misbehaved (more bytes than announced, a range not asked for); nothing it sent is
    /// kept.
    Refuse(String),
}

/// How many times a file, or a HEAD request answered "not now", is asked for.
const ATTEMPTS: usize = 3;

/// The longest a server may ask glimpse to wait before asking again (`Retry-After`); past it the
/// run stops and says when to run again.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Answers that say "not now" rather than "no": a timeout, too early, too many requests (the hub's
/// rate limit) or a server error. Asking again later may succeed.
fn is_busy(code: u16) -> bool {
    matches!(code, 408 | 425 | 429 | 500..=599)
}

/// The answer to `request()`, asked again while it is a "not now", at most [`ATTEMPTS`] times
/// with the waits [`retry_wait`] gives; the last answer stands if the server asks for a longer wait.
fn call_patiently(request: impl Fn() -> ureq::Request) -> Result<ureq::Response, Box<ureq::Error>> {
    let mut attempt = 0;
    loop {
        match request().call() {
            Err(ureq::Error::Status(code, response)) if is_busy(code) && attempt + 1 < ATTEMPTS => {
                let Ok(wait) = retry_wait(retry_after(&response), attempt) else {
                    return Err(Box::new(ureq::Error::Status(code, response)));
                };
                std::thread::sleep(wait);
                attempt += 1;
            }
            result => return result.map_err(Box::new),
        }
    }
}

/// What a "not now" answer says: its status, and for the hub's rate limit how to be allowed more.
fn busy_message(url: &str, code: u16, status: &str) -> String {
    let rate = if code == 429 { " (the hub limits requests; more for a logged-in HF_TOKEN)" } else { "" };
    format!("{url}: HTTP {code} {status}{rate}")
}

/// The seconds an answer's `Retry-After` asks for; an HTTP date there is not read.
fn retry_after(response: &ureq::Response) -> Option<u64> {
    response.header("Retry-After")?.trim().parse().ok()
}

/// How long to wait before attempt `attempt + 1` after a "not now": what the server asked, else
/// 1 s after the first attempt and 2 s after the second. Past [`MAX_RETRY_WAIT`], why not to wait.
fn retry_wait(asked: Option<u64>, attempt: usize) -> Result<Duration, String> {
    match asked {
        Some(seconds) if Duration::from_secs(seconds) > MAX_RETRY_WAIT => {
            Err(format!("the server asks to be asked again in {seconds} s: run again then"))
        }
        Some(seconds) => Ok(Duration::from_secs(seconds)),
        None => Ok(Duration::from_secs(1 << attempt)),
    }
}

/// The largest file the hub may announce: past any model's weights (a 4 TB checkpoint), and far
/// from the overflow an absurd size (up to u64::MAX) would cause in the reads' bounds.
const MAX_FILE_BYTES: u64 = 1 << 42;

/// The token `huggingface-cli login` saved, if `path` is a regular file of at most a few KiB
/// holding one: a pipe or `/dev/zero` there is not waited on or read whole.
fn read_token_file(path: &Path) -> Option<String> {
    const LIMIT: u64 = 4096;
    let bytes = untrusted::read_regular_file(path, LIMIT).ok()?;
    String::from_utf8(bytes).ok().and_then(cleaned_token)
}

/// A token as `HF_TOKEN` or the token file gives it, without line breaks and surrounding spaces (as
/// huggingface_hub reads it); `None` if nothing is left.
fn cleaned_token(token: String) -> Option<String> {
    Some(token.replace(['\r', '\n'], "").trim().to_string()).filter(|t| !t.is_empty())
}

/// Whether `token` can be a token at all: printable ASCII without spaces. Anything else would be
/// refused as a header by the HTTP library, whose error quotes the header, token and all.
fn is_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether a request to `url` may carry the token: over https, or over plain http to this machine
/// only. Anywhere else, a token sent in clear can be read on the way. The address is parsed as the
/// request will parse it, so that no spelling of it (user info, backslashes) can disagree.
pub fn may_send_token(url: &str) -> bool {
    let Ok(parsed) = ureq::get(url).request_url() else { return false };
    match parsed.scheme() {
        "https" => true,
        "http" => {
            let host = parsed.host();
            let ip = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
            host.eq_ignore_ascii_case("localhost") || ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

/// An agent that follows no redirect: [`Hub::head`] reads the hub's own headers, [`Hub::get`]
/// checks each hop.
fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(20))
        .timeout_read(Duration::from_secs(60))
        .redirects(0)
        .build()
}

/// Where a redirect from `from` to `location` leads, or why it is not followed (an http(s) address
/// always has a host: the parser refuses one without).
fn redirect_target(from: &str, location: &str) -> Result<String, &'static str> {
    let from = Url::parse(from).map_err(|_| "is not an address")?;
    let to = from.join(location).map_err(|_| "is not an address")?;
    match (from.scheme(), to.scheme()) {
        ("https", "http") => Err("would go from https to plain http"),
        (_, "http" | "https") => Ok(to.into()),
        _ => Err("is not an http(s) address"),
    }
}

/// Whether `url` is on `endpoint`'s scheme, host and port.
fn same_origin(url: &str, endpoint: &str) -> bool {
    matches!((Url::parse(url), Url::parse(endpoint)), (Ok(a), Ok(b)) if a.origin() == b.origin())
}

#[derive(Debug, Clone)]
struct FileMeta {
    /// Where the hub answered (after relative redirects).
    url: String,
    commit: String,
    etag: String,
    size: u64,
}

/// Lowercase hex of `len` digits, as the hub writes hashes (digests here are lowercase too).
fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A sha1 (40 hex digits) or a sha256 (64): git blob and commit ids (sha256 on hubs whose
/// repositories use it) and LFS hashes.
fn is_hash(s: &str) -> bool {
    is_hex(s, 40) || is_hex(s, 64)
}

/// The commit a `refs/` file names: `Ok(None)` if it holds anything but a commit hash.
fn read_ref(path: &Path) -> io::Result<Option<String>> {
    // A hash and a newline; reading a little more tells a longer file from it.
    const LIMIT: u64 = 80;
    let mut bytes = Vec::new();
    open_cache_file(path)?.take(LIMIT + 1).read_to_end(&mut bytes)?;
    let commit = std::str::from_utf8(&bytes).ok().map(str::trim).filter(|c| is_hash(c));
    Ok(commit.filter(|_| bytes.len() as u64 <= LIMIT).map(str::to_string))
}

/// A file of the cache opened for reading ([`untrusted::open_regular`]), the refusal of anything
/// else saying what to do.
fn open_cache_file(path: &Path) -> io::Result<File> {
    untrusted::open_regular(path).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidInput => io::Error::new(
            e.kind(),
            format!("{e} where the cache keeps a file; delete it, or the repository with `glimpse models rm`"),
        ),
        _ => e,
    })
}

/// The argument `glimpse models fetch` takes for `id`: its revision only where it is not `main`.
fn fetch_arg(id: &RepoId) -> String {
    match id.revision.as_str() {
        "main" => id.repo.clone(),
        _ => id.to_string(),
    }
}

/// Where a blob's download in progress is kept.
fn partial_path(blob: &Path) -> PathBuf {
    blob.with_extension("incomplete")
}

/// The length of `path`, 0 if it does not exist.
fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Removes whatever is at `path` unless it is a regular file of its own: a download in progress
/// is written there, and a link (symbolic or hard) would take its bytes out of the cache.
fn remove_unless_plain_file(path: &Path) -> Result<(), HubError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Err(io_err(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "a folder where a download in progress is kept; delete it"),
        )),
        Ok(meta) if !meta.is_file() || shared(&meta) => remove_if_present(path),
        _ => Ok(()),
    }
}

/// Whether a file has other names (a hard link to a file elsewhere, whose bytes a write there
/// would change).
fn shared(meta: &fs::Metadata) -> bool {
    #[cfg(unix)]
    return std::os::unix::fs::MetadataExt::nlink(meta) > 1;
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

fn remove_if_present(path: &Path) -> Result<(), HubError> {
    glimpse_media::files::remove_if_present(path).map_err(|e| io_err(path, e))
}

/// Whether `path`, a plain file where a snapshot keeps a link (a cache copied with `cp -rL`, or by a
/// tool that does not keep links), holds a file the hub sent: its sha256 (an LFS file) or git blob
/// sha1 names one of the repository's `blobs`.
fn is_copy_of_a_blob(path: &Path, size: u64, blobs: &Path) -> Result<bool, HubError> {
    for lfs in [true, false] {
        let hash = digest(path, lfs, size).map_err(|e| io_err(path, e))?;
        if blobs.join(hash).is_file() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `path` holds exactly the file the hub describes: `size` bytes whose sha256 (LFS) or
/// git blob sha1 is `etag`. A missing file is `false`. A wrong file is left for the caller, who
/// replaces it only while holding the blob's lock.
fn verify(path: &Path, etag: &str, size: u64) -> Result<bool, HubError> {
    let Ok(meta) = fs::metadata(path) else { return Ok(false) };
    Ok(meta.len() == size && digest(path, etag.len() == 64, size).map_err(|e| io_err(path, e))? == etag)
}

fn digest(path: &Path, lfs: bool, size: u64) -> io::Result<String> {
    let mut file = open_cache_file(path)?;
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

/// One writer per blob across processes: `blobs/{etag}.lock`, created exclusively, holds the
/// writer's pid and is touched while its download makes progress. Dropping it removes the file.
struct BlobLock {
    path: PathBuf,
    file: File,
    touched: Instant,
}

/// A lock untouched for this long is abandoned (its holder hangs, or died where its pid cannot be
/// checked). A live holder touches it at least once per read timeout of 60 s.
const LOCK_STALE: Duration = Duration::from_secs(300);
const LOCK_POLL: Duration = Duration::from_millis(100);
const LOCK_TOUCH: Duration = Duration::from_secs(5);

enum LockState {
    Held,
    Stale,
    Gone,
}

impl BlobLock {
    /// Takes the lock of `blob`, waiting while a live process holds it and breaking it when its
    /// holder is dead or silent.
    fn acquire(blob: &Path, file: &str, progress: &mut dyn FnMut(Progress)) -> Result<Self, HubError> {
        let path = blob.with_extension("lock");
        let mut waiting = false;
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut lock) => {
                    if let Err(e) = lock.write_all(lock_owner().as_bytes()) {
                        let _ = fs::remove_file(&path);
                        return Err(io_err(&path, e));
                    }
                    return Ok(Self { path, file: lock, touched: Instant::now() });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(&path, e)),
            }
            let owner = read_lock(&path);
            match lock_state(&path, &owner) {
                LockState::Gone => {}
                // Only the lock that was judged is removed: if another waiter broke it first and
                // took a fresh one, its content differs.
                LockState::Stale => {
                    if read_lock(&path) == owner {
                        remove_if_present(&path)?;
                    }
                }
                LockState::Held => {
                    if !waiting {
                        progress(Progress::Waiting { file, lock: &path });
                        waiting = true;
                    }
                    std::thread::sleep(LOCK_POLL);
                }
            }
        }
    }

    /// Tells waiters the holder is alive (at most every few seconds).
    fn touch(&mut self) {
        if self.touched.elapsed() >= LOCK_TOUCH {
            let _ = self.file.set_modified(SystemTime::now());
            self.touched = Instant::now();
        }
    }
}

impl Drop for BlobLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// What a lock file says about its holder: `{pid} {pid namespace} {nonce}`. The nonce tells two
/// locks of one process apart.
fn lock_owner() -> String {
    static NONCE: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{} {} {nanos}-{}\n", std::process::id(), pid_namespace(), NONCE.fetch_add(1, Ordering::Relaxed))
}

/// The start of a lock file; empty if it is gone (or just created and not yet written).
fn read_lock(path: &Path) -> String {
    let mut bytes = Vec::new();
    let _ = open_cache_file(path).and_then(|f| f.take(256).read_to_end(&mut bytes));
    String::from_utf8_lossy(&bytes).into_owned()
}

fn lock_state(path: &Path, owner: &str) -> LockState {
    let Ok(meta) = fs::metadata(path) else { return LockState::Gone };
    // A time in the future is as suspect as one long past.
    let age = meta.modified().map(|m| SystemTime::now().duration_since(m).unwrap_or_else(|e| e.duration()));
    if !age.is_ok_and(|age| age <= LOCK_STALE) {
        return LockState::Stale;
    }
    let mut fields = owner.split_whitespace();
    let pid = fields.next().and_then(|p| p.parse::<u32>().ok());
    match (pid, fields.next()) {
        (Some(pid), Some(namespace)) if namespace == pid_namespace() && writer_is_gone(pid) => LockState::Stale,
        _ => LockState::Held,
    }
}

/// Points `link` at `blob` (a relative symlink, as the hub's cache does; a copy where symlinks
/// are unavailable). The link is made under a temporary name and renamed over the old one, so a
/// reader sees the old link or the new one, never none.
fn link(blob: &Path, link: &Path) -> Result<(), HubError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = link.parent().expect("snapshot files have a folder");
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let name = link.file_name().expect("snapshot files are named").to_string_lossy();
    let temp = dir.join(format!(".{name}.{}.{}.link", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    #[cfg(unix)]
    let made = {
        let target = Path::new("../..").join("blobs").join(blob.file_name().expect("blobs are named"));
        std::os::unix::fs::symlink(target, &temp)
    };
    #[cfg(not(unix))]
    let made = fs::copy(blob, &temp).map(|_| ());
    let result = made.and_then(|()| fs::rename(&temp, link));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(|e| io_err(link, e))
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
    /// `(revision, commit)` pairs from `refs/`; the commit is `None` where the file holds anything
    /// but a commit hash.
    pub revisions: Vec<(String, Option<String>)>,
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
            let mut revisions = Vec::new();
            collect_refs(&path.join("refs"), "", &mut revisions);
            revisions.sort();
            repos.push(CachedRepo { repo: repo.replacen("--", "/", 1), revisions, size, path });
        }
        repos.sort_by(|a, b| a.repo.cmp(&b.repo));
        Ok(repos)
    }

    /// Deletes a repository from the cache, every revision of it; returns the bytes freed (none
    /// where its folder is a link to one elsewhere, which is removed and its target left).
    pub fn remove(&self, repo: &str) -> Result<u64, HubError> {
        // A revision named would read as "remove that revision", and every one would go.
        if let Some((name, revision)) = repo.split_once('@') {
            return Err(HubError::Remote(format!(
                "`models rm` removes a whole repository, every revision of it; give {name} without @{revision}"
            )));
        }
        // Any name `models list` shows is a folder of the cache, even one the hub would not allow
        // (another tool's); other names must be ids, so that none reaches outside the cache.
        let found = self.list()?.into_iter().find(|r| r.repo == repo);
        let Some(found) = found else {
            return Err(HubError::Remote(match RepoId::parse(repo) {
                Some(id) => format!("{} is not in the cache ({})", id.repo, self.cache.display()),
                None => format!("{repo:?} is not a repository id; pass owner/name as `glimpse models list` shows it"),
            }));
        };
        if fs::symlink_metadata(&found.path).is_ok_and(|m| m.is_symlink()) {
            remove_if_present(&found.path)?;
            return Ok(0);
        }
        // std's removal, which never follows a link it meets, even one swapped in meanwhile.
        fs::remove_dir_all(&found.path).map_err(|e| {
            HubError::Remote(format!(
                "{}: {e}; {} may be only partly removed: mend that (a file read-only or in use) and run `glimpse \
                 models rm` again",
                found.path.display(),
                found.repo
            ))
        })?;
        Ok(found.size)
    }
}

/// The refs under `dir` (nested ones such as `refs/pr/1` by their path), with their commits.
/// Links are not followed, so the walk stays inside the cache and ends.
fn collect_refs(dir: &Path, prefix: &str, out: &mut Vec<(String, Option<String>)>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_refs(&entry.path(), &format!("{name}/"), out);
        } else {
            out.push((name, read_ref(&entry.path()).ok().flatten()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("glimpse-remote-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_request_may_take_a_window_and_twice_the_time_at_the_floor() {
        let floor = MinSpeed { bytes: 1000, window: Duration::from_secs(10) };
        assert_eq!(floor.deadline(0), Some(Duration::from_secs(10)));
        assert_eq!(floor.deadline(500), Some(Duration::from_secs(20)));
        assert_eq!(MinSpeed::per_second(0).deadline(500), None);
        // Past what a Duration holds: no deadline rather than a panic.
        assert_eq!(MinSpeed { bytes: 1, window: Duration::from_secs(60) }.deadline(u64::MAX), None);
        assert_eq!(MinSpeed { bytes: u64::MAX, window: Duration::MAX }.deadline(u64::MAX), None);
        assert_eq!(MinSpeed { bytes: 1000, window: Duration::ZERO }.deadline(500), None);
    }

    #[test]
    fn tokens_lose_line_breaks_and_surrounding_spaces() {
        assert_eq!(cleaned_token(" hf_abc\r\n".into()).as_deref(), Some("hf_abc"));
        assert_eq!(cleaned_token("hf_a\nbc".into()).as_deref(), Some("hf_abc"));
        assert_eq!(cleaned_token("hf a".into()).as_deref(), Some("hf a"));
        assert_eq!(cleaned_token(" \n".into()), None);
    }

    #[test]
    fn a_token_file_is_read_only_if_small_and_regular() {
        let dir = temp_dir("token");
        let file = dir.join("token");
        fs::write(&file, "hf_abc\n").unwrap();
        assert_eq!(read_token_file(&file).as_deref(), Some("hf_abc"));
        fs::write(&file, "x".repeat(5000)).unwrap();
        assert_eq!(read_token_file(&file), None);
        // A device is never read whole, a pipe never waited on.
        fs::remove_file(&file).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
            assert_eq!(read_token_file(&file), None);
            fs::remove_file(&file).unwrap();
            assert!(std::process::Command::new("mkfifo").arg(&file).status().unwrap().success());
            assert_eq!(read_token_file(&file), None);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A token with a space, a line break or a letter beyond ASCII is never put in a header
    /// (whose refusal would print it); a real one is.
    #[test]
    fn only_printable_ascii_tokens_are_sent() {
        for bad in ["abc\ndef", "tök", "abc def", ""] {
            assert!(!is_token(bad), "{bad:?}");
        }
        assert!(is_token("hf_AbCdEf0123456789"));
    }

    #[test]
    fn redirects_lead_to_http_addresses_only() {
        let from = "https://huggingface.co/gpt2/resolve/main/model.safetensors";
        for (location, to) in [
            ("https://cdn-lfs.hf.co/repos/ab/cd?X-Amz=1", "https://cdn-lfs.hf.co/repos/ab/cd?X-Amz=1"),
            ("/api/resolve-cache/x", "https://huggingface.co/api/resolve-cache/x"),
            ("//cdn.example/x", "https://cdn.example/x"),
            ("../../other/file", "https://huggingface.co/gpt2/other/file"),
        ] {
            assert_eq!(redirect_target(from, location).as_deref(), Ok(to), "{location}");
        }
        for (location, why) in [
            ("file:///etc/passwd", "is not an http(s) address"),
            ("ftp://example.com/x", "is not an http(s) address"),
            ("http://cdn.example/x", "would go from https to plain http"),
            ("http://", "is not an address"),
        ] {
            assert_eq!(redirect_target(from, location), Err(why), "{location}");
        }
        assert!(redirect_target("http://127.0.0.1:8080/x", "http://localhost:8080/y").is_ok());
    }

    #[test]
    fn the_token_goes_to_the_endpoint_origin_only() {
        let endpoint = "https://huggingface.co";
        assert!(same_origin("https://huggingface.co/gpt2/resolve/main/config.json", endpoint));
        assert!(same_origin("https://huggingface.co:443/x", endpoint));
        for url in ["https://cdn-lfs.hf.co/x", "http://huggingface.co/x", "https://huggingface.co:8443/x", "x"] {
            assert!(!same_origin(url, endpoint), "{url}");
        }
    }

    /// `models rm owner/name@revision` would read as removing one revision; it is refused rather
    /// than removing them all.
    #[test]
    fn removing_names_a_repository_not_a_revision() {
        let cache = temp_dir("rm");
        let hub = Hub { endpoint: String::new(), cache, token: None, offline: true, min_speed: MinSpeed::default() };
        let err = hub.remove("a/b@nope").unwrap_err().to_string();
        assert!(err.contains("every revision of it; give a/b without @nope"), "{err}");
        // Another tool's folder that is no hub id goes by the name `models list` shows.
        let odd = hub.cache.join("models--a--b--c");
        fs::create_dir_all(odd.join("blobs")).unwrap();
        fs::write(odd.join("blobs/x"), b"1234").unwrap();
        assert_eq!(hub.list().unwrap()[0].repo, "a/b--c");
        assert_eq!(hub.remove("a/b--c").unwrap(), 4);
        assert!(!odd.exists());
        // A repository folder that links elsewhere: the link goes, what it names stays, nothing freed.
        #[cfg(unix)]
        {
            let elsewhere = hub.cache.with_extension("elsewhere");
            fs::create_dir_all(elsewhere.join("blobs")).unwrap();
            fs::write(elsewhere.join("blobs/x"), b"1234").unwrap();
            std::os::unix::fs::symlink(&elsewhere, hub.cache.join("models--a--link")).unwrap();
            assert_eq!(hub.remove("a/link").unwrap(), 0);
            assert!(elsewhere.join("blobs/x").is_file() && hub.list().unwrap().is_empty());
            fs::remove_dir_all(&elsewhere).unwrap();
        }
        fs::remove_dir_all(&hub.cache).unwrap();
    }

    #[test]
    fn repository_ids() {
        let id = |s: &str| RepoId::parse(s).map(|r| (r.repo, r.revision));
        assert_eq!(id("gpt2"), Some(("gpt2".into(), "main".into())));
        assert_eq!(
            id("openai/clip-vit-base-patch32@v1.0"),
            Some(("openai/clip-vit-base-patch32".into(), "v1.0".into()))
        );
        assert_eq!(id("a/b@refs/pr/1"), Some(("a/b".into(), "refs/pr/1".into())));
        for bad in [
            "",
            "a/b/c",
            "../x",
            "a/..",
            "a b",
            "a/b@",
            "a/b@x y",
            "/abs",
            "a--b/c",
            "a/b-",
            "a/b@/tmp/x",
            "a/b@../../x",
            "a/b@x/../../y",
            "a/b@x//y",
            "a/b@x/",
            "a/b@./x",
            "a/b@x\\y",
            "a/b@x\0y",
            "a/b@.hidden",
            "a/b@main@x",
            "é/b",
        ] {
            assert_eq!(id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn git_and_lfs_hashes() {
        let dir = temp_dir("hash");
        let path = dir.join("f");
        fs::write(&path, b"hello\n").unwrap();
        // `git hash-object` of "hello\n", and its sha256.
        assert_eq!(digest(&path, false, 6).unwrap(), "ce013625030ba8dba906f756967f9e9ca394464a");
        assert_eq!(digest(&path, true, 6).unwrap(), "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03");
        assert!(verify(&path, "ce013625030ba8dba906f756967f9e9ca394464a", 6).unwrap());
        assert!(!verify(&path, "ce013625030ba8dba906f756967f9e9ca394464b", 6).unwrap());
        assert!(!verify(&path, "ce013625030ba8dba906f756967f9e9ca394464a", 7).unwrap());
        assert!(path.exists(), "only the lock holder replaces a wrong file");
    }

    #[test]
    fn refs_hold_commits_only() {
        let dir = temp_dir("refs");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let long = format!("{commit}{}", &commit[..24]);
        for (content, expected) in [
            (format!("{commit}\n"), Some(commit)),
            (long.clone(), Some(long.as_str())),
            (commit.to_uppercase(), None),
            ("../../etc/passwd".to_string(), None),
            ("héllo wörld".to_string(), None),
            (format!("{commit}{}", " ".repeat(100)), None),
        ] {
            fs::write(dir.join("main"), &content).unwrap();
            assert_eq!(read_ref(&dir.join("main")).unwrap().as_deref(), expected, "{content:?}");
        }
        fs::write(dir.join("main"), [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(read_ref(&dir.join("main")).unwrap(), None);
    }

    #[test]
    fn a_lock_of_a_dead_process_is_stale() {
        let dir = temp_dir("lock");
        let path = dir.join("blob.lock");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        fs::write(&path, format!("{dead} {} 1\n", pid_namespace())).unwrap();
        assert!(matches!(lock_state(&path, &read_lock(&path)), LockState::Stale));
        // The same pid written from another namespace is judged by age only.
        fs::write(&path, format!("{dead} pid:[1]@elsewhere 1\n")).unwrap();
        assert!(matches!(lock_state(&path, &read_lock(&path)), LockState::Held));
        fs::write(&path, lock_owner()).unwrap();
        assert!(matches!(lock_state(&path, &read_lock(&path)), LockState::Held));
        let old = SystemTime::now() - LOCK_STALE - Duration::from_secs(1);
        File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
        assert!(matches!(lock_state(&path, &read_lock(&path)), LockState::Stale));
        fs::remove_file(&path).unwrap();
        assert!(matches!(lock_state(&path, ""), LockState::Gone));
    }

    #[test]
    fn links_are_replaced_in_place() {
        let dir = temp_dir("link");
        let blobs = dir.join("blobs");
        fs::create_dir_all(&blobs).unwrap();
        fs::write(blobs.join("a"), b"first").unwrap();
        fs::write(blobs.join("b"), b"second").unwrap();
        let file = dir.join("snapshots/c/config.json");
        link(&blobs.join("a"), &file).unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"first");
        link(&blobs.join("b"), &file).unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(file.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, ["config.json"], "no temporary link is left behind");
    }
}
