//! A hub-shaped file server on 127.0.0.1 for download tests: `HEAD`/`GET
//! /{repo}/resolve/{revision}/{file}` with the headers the Hugging Face hub sends (`X-Repo-Commit`,
//! `ETag` = git blob sha1, `X-Linked-Etag` / `X-Linked-Size` = sha256 and size of LFS files),
//! `Range` requests (416 at or past the end, as the hub answers), and faults on demand.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// What goes wrong with a repository's `model.safetensors` (or, where said, its `config.json`).
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
    /// A GET sends the file and then zeros without end, with no `Content-Length`, until the client
    /// hangs up.
    Endless,
    /// A GET announces and sends twice the size the HEAD announced.
    Overlong,
    /// `X-Repo-Commit` is [`ESCAPING_COMMIT`], a path that climbs out of the cache.
    EscapingCommit,
    /// Every `Range` request is answered 416, as when the file changed since a partial download.
    RangeRefused,
    /// A GET trickles the body out over about a second, so that two fetchers overlap.
    Slow,
    /// A GET sends 1 KiB of the body, then a byte every 50 ms (a connection that never times out
    /// and never finishes).
    Trickle,
    /// The HEAD of `config.json` announces a terabyte.
    HugeConfig,
    /// A GET of the weights redirects, twice, to a CDN on another origin (`localhost` where the
    /// endpoint is `127.0.0.1`), which refuses requests that carry an `Authorization` header, as a
    /// presigned S3 address does.
    Cdn,
    /// A GET of the weights redirects to a `file:` address.
    RedirectToFile,
    /// A GET of the weights is answered 403 by the hub itself.
    Forbidden,
    /// A GET of the weights redirects to a CDN that answers 403, as one does an address whose
    /// signature expired.
    CdnForbidden,
    /// A GET of `config.json` sends its headers a byte every 50 ms, without end.
    EndlessHeaders,
    /// The first HEAD of `config.json` is answered 503 (no `Retry-After`), the first GET of the
    /// weights 429 with `Retry-After: 1`, as a hub limiting requests does; later ones are served.
    BusyOnce,
    /// Every GET of the weights is answered 429 with `Retry-After: 3600`.
    RateLimited,
    /// Every HEAD of `config.json` is answered 429 with `Retry-After: 3600`.
    RateLimitedHead,
}

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// The commit [`Fault::EscapingCommit`] announces: from a cache in the temporary folder, it names
/// `{temp}/glimpse-escaped-commit`.
pub const ESCAPING_COMMIT: &str = "../../../glimpse-escaped-commit";

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
    /// `METHOD path` of the requests [`Fault::BusyOnce`] has answered.
    answered_once: std::collections::HashSet<String>,
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

/// How the body of an answer goes out.
#[derive(PartialEq)]
enum Delivery {
    Whole,
    /// Half of it, then the connection closes.
    Half,
    /// After it, zeros until the client hangs up.
    Endless,
    /// In small pieces with pauses.
    Slow,
    /// 1 KiB, then a byte at a time with pauses, until the client hangs up.
    Trickle,
    /// No body: a header line that never ends, a byte at a time with pauses.
    EndlessHeaders,
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let port = stream.local_addr().map_or(0, |a| a.port());
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
    // The state is locked only to decide the answer: bodies go out concurrently.
    let (head, body, delivery) = {
        let mut state = state.lock().unwrap();
        state.log.push(format!("{method} {path}{}", range.map(|r| format!(" bytes={r}-")).unwrap_or_default()));
        answer(&mut state, &method, &path, range, auth.as_deref(), port)
    };
    if delivery != Delivery::EndlessHeaders {
        let _ = out.write_all(head.as_bytes());
    }
    if method != "GET" {
        return;
    }
    match delivery {
        Delivery::Whole => {
            let _ = out.write_all(&body);
        }
        Delivery::Half => {
            let _ = out.write_all(&body[..body.len() / 2]);
            let _ = out.shutdown(std::net::Shutdown::Both);
        }
        Delivery::Endless => {
            let _ = out.write_all(&body);
            let zeros = vec![0u8; 1 << 16];
            // A gigabyte is far beyond any fixture; a client still reading by then reads forever.
            for _ in 0..(1 << 14) {
                if out.write_all(&zeros).is_err() {
                    break;
                }
            }
        }
        Delivery::Slow => {
            for piece in body.chunks(body.len().div_ceil(20).max(1)) {
                std::thread::sleep(Duration::from_millis(50));
                if out.write_all(piece).is_err() {
                    break;
                }
            }
        }
        Delivery::EndlessHeaders => {
            let _ = out.write_all(b"HTTP/1.1 200 OK\r\nX-Padding: ");
            // Ten minutes at most: far past any test's patience.
            for _ in 0..12_000 {
                std::thread::sleep(Duration::from_millis(50));
                if out.write_all(b"a").and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        }
        Delivery::Trickle => {
            let (first, rest) = body.split_at(body.len().min(1024));
            let _ = out.write_all(first);
            for byte in rest.chunks(1) {
                std::thread::sleep(Duration::from_millis(50));
                if out.write_all(byte).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        }
    }
}

/// The status line and headers, the body and how to send it.
fn answer(
    state: &mut State,
    method: &str,
    path: &str,
    range: Option<usize>,
    auth: Option<&str>,
    port: u16,
) -> (String, Vec<u8>, Delivery) {
    let empty = |status: &str| {
        (format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), Vec::new(), Delivery::Whole)
    };
    // A renamed repository answers with a relative redirect, as the hub does for `gpt2`.
    if let Some(rest) = path.strip_prefix("/renamed/") {
        return empty(&format!("307 Temporary Redirect\r\nLocation: /test/{rest}"));
    }
    // The CDN's first address redirects once more, relative to itself.
    if let Some(rest) = path.strip_prefix("/cdn-hop/") {
        return empty(&format!("302 Found\r\nLocation: ../../../../../cdn/{rest}"));
    }
    let (cdn, path) = match path.strip_prefix("/cdn/") {
        Some(rest) => (true, format!("/{rest}")),
        None => (false, path.to_string()),
    };
    let path = path.as_str();
    // The file is the last segment whatever the revision looks like, so that a client sending a
    // revision it should have refused gets an answer.
    let found = path.strip_prefix('/').and_then(|p| p.split_once("/resolve/")).and_then(|(repo, rest)| {
        let (_, file) = rest.rsplit_once('/')?;
        let r = state.repos.get(repo)?;
        Some((r.fault, file.to_string(), r.files.get(file)?.clone()))
    });
    let Some((fault, file, bytes)) = found else { return empty("404 Not Found") };
    let lfs = file.ends_with(".safetensors") || file.ends_with(".bin");
    let first_time = |state: &mut State| state.answered_once.insert(format!("{method} {path}"));
    match fault {
        Fault::BusyOnce if method == "HEAD" && file == "config.json" && first_time(state) => {
            return empty("503 Service Unavailable");
        }
        Fault::BusyOnce if method == "GET" && lfs && first_time(state) => {
            return empty("429 Too Many Requests\r\nRetry-After: 1");
        }
        Fault::RateLimited if method == "GET" && lfs => return empty("429 Too Many Requests\r\nRetry-After: 3600"),
        Fault::RateLimitedHead if method == "HEAD" && file == "config.json" => {
            return empty("429 Too Many Requests\r\nRetry-After: 3600");
        }
        _ => {}
    }
    if method == "GET" && lfs && !cdn {
        let repo = path.trim_start_matches('/').split("/resolve/").next().unwrap_or("");
        match fault {
            Fault::Cdn => {
                return empty(&format!(
                    "302 Found\r\nLocation: http://localhost:{port}/cdn-hop/{repo}/resolve/x/{file}"
                ));
            }
            Fault::RedirectToFile => return empty("302 Found\r\nLocation: file:///etc/passwd"),
            Fault::Forbidden => return empty("403 Forbidden"),
            Fault::CdnForbidden => return empty(&format!("302 Found\r\nLocation: /cdn/{repo}/resolve/x/{file}")),
            _ => {}
        }
    }
    if cdn && auth.is_some() {
        return empty("400 Bad Request");
    }
    if cdn && fault == Fault::CdnForbidden {
        return empty("403 Forbidden");
    }
    if fault == Fault::Private && auth != Some("Bearer secret") {
        return empty("401 Unauthorized");
    }
    let size = if fault == Fault::HugeConfig && file == "config.json" { 1 << 40 } else { bytes.len() };
    let etag = if lfs {
        let sha = hex(&Sha256::digest(&bytes));
        format!("X-Linked-Etag: \"{sha}\"\r\nX-Linked-Size: {size}\r\nETag: \"{sha}\"\r\n")
    } else {
        let mut sha = Sha1::new();
        sha.update(format!("blob {}\0", bytes.len()).as_bytes());
        sha.update(&bytes);
        format!("ETag: \"{}\"\r\n", hex(&sha.finalize()))
    };
    let commit = if fault == Fault::EscapingCommit { ESCAPING_COMMIT } else { COMMIT };
    let commit = format!("X-Repo-Commit: {commit}\r\n");
    if method == "HEAD" {
        let head = format!("HTTP/1.1 200 OK\r\n{commit}{etag}Content-Length: {size}\r\nConnection: close\r\n\r\n");
        return (head, Vec::new(), Delivery::Whole);
    }
    let mut body = bytes;
    let len = body.len();
    match range {
        Some(start) if start >= len || (lfs && fault == Fault::RangeRefused) => {
            return empty(&format!("416 Range Not Satisfiable\r\nContent-Range: bytes */{len}"));
        }
        _ => {}
    }
    if lfs && fault == Fault::WrongHash {
        body[len - 1] ^= 0xff;
    }
    if lfs && fault == Fault::Overlong {
        body.extend_from_slice(&body.clone());
    }
    let start = range.unwrap_or(0);
    body.drain(..start);
    let delivery = match fault {
        Fault::EndlessHeaders if file == "config.json" => Delivery::EndlessHeaders,
        _ if !lfs => Delivery::Whole,
        Fault::Truncated => Delivery::Half,
        Fault::DropOnce if !state.dropped => {
            state.dropped = true;
            Delivery::Half
        }
        Fault::Endless => Delivery::Endless,
        Fault::Slow => Delivery::Slow,
        Fault::Trickle => Delivery::Trickle,
        _ => Delivery::Whole,
    };
    let status = match range {
        Some(start) => format!("206 Partial Content\r\nContent-Range: bytes {start}-{}/{len}", len - 1),
        None => "200 OK".to_string(),
    };
    let length =
        if delivery == Delivery::Endless { String::new() } else { format!("Content-Length: {}\r\n", body.len()) };
    let head = format!("HTTP/1.1 {status}\r\n{commit}{etag}{length}Connection: close\r\n\r\n");
    (head, body, delivery)
}
