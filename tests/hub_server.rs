//! A hub-shaped file server on 127.0.0.1 for download tests: `HEAD`/`GET
//! /{repo}/resolve/{revision}/{file}` with the headers the Hugging Face hub sends (`X-Repo-Commit`,
//! `ETag` = git blob sha1, `X-Linked-Etag` / `X-Linked-Size` = sha256 and size of LFS files),
//! `Range` requests, and faults on demand.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// What goes wrong with a repository's `model.safetensors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Every GET stops halfway through the body.
    Truncated,
    /// The bytes served differ from the hash advertised.
    WrongHash,
    /// The first GET stops halfway; later ones (with `Range`) complete.
    DropOnce,
    /// Only `pytorch_model.bin` exists.
    BinOnly,
    /// Every request needs `Authorization: Bearer secret`.
    Private,
}

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

struct Repo {
    files: BTreeMap<String, Vec<u8>>,
    fault: Fault,
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, Repo>,
    /// `METHOD path range` of every request, in order.
    log: Vec<String>,
    dropped: bool,
}

pub struct HubServer {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
}

impl HubServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        Self { endpoint, state }
    }

    /// Serves the files of `dir` (an HF-layout folder) as repository `repo`.
    pub fn add(&self, repo: &str, dir: &std::path::Path, fault: Fault) {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".json") || name.ends_with(".safetensors") {
                files.insert(name, std::fs::read(entry.path()).unwrap());
            }
        }
        if fault == Fault::BinOnly {
            let weights = files.remove("model.safetensors").unwrap();
            files.insert("pytorch_model.bin".into(), weights);
        }
        self.state.lock().unwrap().repos.insert(repo.to_string(), Repo { files, fault });
    }

    /// Requests so far (`"GET /repo/resolve/main/file bytes=10-"`), and forgets them.
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().log)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let (mut range, mut auth) = (None, None);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or(("", ""));
        match name.to_ascii_lowercase().as_str() {
            "range" => {
                range = value.trim().strip_prefix("bytes=").and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
            }
            "authorization" => auth = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut out = stream;
    let mut state = state.lock().unwrap();
    state.log.push(format!("{method} {path}{}", range.map(|r| format!(" bytes={r}-")).unwrap_or_default()));
    // A renamed repository answers with a relative redirect, as the hub does for `gpt2`.
    if let Some(rest) = path.strip_prefix("/renamed/") {
        let head = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: /test/{rest}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let _ = out.write_all(head.as_bytes());
        return;
    }
    let found = path.strip_prefix('/').and_then(|p| p.split_once("/resolve/")).and_then(|(repo, rest)| {
        let (_, file) = rest.split_once('/')?;
        let r = state.repos.get(repo)?;
        Some((r.fault, file.to_string(), r.files.get(file)?.clone()))
    });
    let Some((fault, file, bytes)) = found else {
        let _ = out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    if fault == Fault::Private && auth.as_deref() != Some("Bearer secret") {
        let _ = out.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    let lfs = file.ends_with(".safetensors") || file.ends_with(".bin");
    let etag = if lfs {
        format!(
            "X-Linked-Etag: \"{}\"\r\nX-Linked-Size: {}\r\nETag: \"{}\"\r\n",
            hex(&Sha256::digest(&bytes)),
            bytes.len(),
            hex(&Sha256::digest(&bytes))
        )
    } else {
        let mut sha = Sha1::new();
        sha.update(format!("blob {}\0", bytes.len()).as_bytes());
        sha.update(&bytes);
        format!("ETag: \"{}\"\r\n", hex(&sha.finalize()))
    };
    let mut body = bytes.clone();
    let faulty = lfs && matches!(fault, Fault::Truncated | Fault::WrongHash | Fault::DropOnce);
    if faulty && fault == Fault::WrongHash {
        let last = body.len() - 1;
        body[last] ^= 0xff;
    }
    let start = range.filter(|&r| r < body.len()).unwrap_or(0);
    let status = if start > 0 { "206 Partial Content" } else { "200 OK" };
    let head = format!(
        "HTTP/1.1 {status}\r\nX-Repo-Commit: {COMMIT}\r\n{etag}Content-Length: {}\r\nConnection: close\r\n\r\n",
        if method == "HEAD" { bytes.len() } else { body.len() - start }
    );
    let _ = out.write_all(head.as_bytes());
    if method != "GET" {
        return;
    }
    let body = &body[start..];
    let cut = faulty && (fault == Fault::Truncated || (fault == Fault::DropOnce && !state.dropped));
    if cut {
        state.dropped = true;
        let _ = out.write_all(&body[..body.len() / 2]);
        let _ = out.shutdown(std::net::Shutdown::Both);
        return;
    }
    let _ = out.write_all(body);
}
