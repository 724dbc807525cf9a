//! Hub downloads against a local hub-shaped server (`hub_server`): download, verification, cache
//! hits, resume after a dropped connection, offline mode, and every error a user can meet,
//! including a hostile server or cache: nothing may panic, hang or write outside the cache.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant, SystemTime};

use glimpse_hub::remote::{Hub, MinSpeed, Progress, RepoId, may_send_token};
use glimpse_models::{Gpt2Bundle, ModelFiles};
use glimpse_tests::hub_server::{COMMIT, ESCAPING_COMMIT, Fault, HubServer};
use glimpse_tests::{fixture, weight_bytes};
use sha2::{Digest, Sha256};

fn cache(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glimpse-hub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn hub(server: &HubServer, cache: &std::path::Path) -> Hub {
    Hub {
        endpoint: server.endpoint.clone(),
        cache: cache.to_path_buf(),
        token: None,
        offline: false,
        min_speed: MinSpeed::default(),
    }
}

fn id(repo: &str) -> RepoId {
    RepoId::parse(repo).unwrap()
}

fn error(hub: &Hub, repo: &str) -> String {
    hub.model_files(&id(repo), |_| {}).err().map(|e| e.to_string()).unwrap_or_else(|| panic!("{repo} loaded"))
}

#[test]
fn downloads_verifies_caches_and_works_offline() {
    let server = HubServer::start();
    server.add("test/gpt2", &fixture("gpt2-lmhead"), Fault::None);
    let cache = cache("main");
    let online = hub(&server, &cache);

    let mut events = Vec::new();
    let files = online.model_files(&id("test/gpt2"), |p| events.push(format!("{p:?}"))).unwrap();
    let local = ModelFiles::from_dir(fixture("gpt2-lmhead")).unwrap();
    assert_eq!(
        (files.config.clone(), glimpse_tests::weight_bytes(&files), files.tokenizer.clone()),
        (local.config.clone(), glimpse_tests::weight_bytes(&local), local.tokenizer)
    );
    let device = glimpse_models::device::cpu().device;
    Gpt2Bundle::load(&files, &device).unwrap();
    let gets = server.take_log().into_iter().filter(|l| l.starts_with("GET")).count();
    assert_eq!(gets, 3, "config, weights and tokenizer are fetched; nothing else");
    assert!(events.iter().any(|e| e.contains("Start") && e.contains("model.safetensors")), "{events:?}");

    // A renamed repository is followed to its new name.
    online.model_files(&id("renamed/gpt2"), |_| {}).unwrap();
    assert!(server.take_log().iter().any(|l| l.starts_with("HEAD /renamed/gpt2/")));

    // A second run finds everything in the cache: metadata requests only.
    let mut cached = Vec::new();
    online.model_files(&id("test/gpt2"), |p| cached.push(matches!(p, Progress::Done { cached: true, .. }))).unwrap();
    assert!(cached.iter().all(|&c| c) && cached.len() == 3, "{cached:?}");
    assert!(server.take_log().iter().all(|l| l.starts_with("HEAD")));

    // Offline: no request at all.
    let offline = Hub { offline: true, ..online.clone() };
    offline.model_files(&id("test/gpt2"), |_| {}).unwrap();
    assert!(server.take_log().is_empty());

    // With the hub unreachable, the complete cached snapshot is used.
    let unreachable = Hub { endpoint: "http://127.0.0.1:9".into(), ..online.clone() };
    unreachable.model_files(&id("test/gpt2"), |_| {}).unwrap();

    // A corrupted cache entry is detected offline, and re-fetched online.
    let weights =
        cache.join("models--test--gpt2/snapshots").join(glimpse_tests::hub_server::COMMIT).join("model.safetensors");
    let blob = std::fs::canonicalize(&weights).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    assert!(error(&offline, "test/gpt2").contains("is corrupt"));
    let files = online.model_files(&id("test/gpt2"), |_| {}).unwrap();
    assert_eq!(
        glimpse_tests::weight_bytes(&files),
        std::fs::read(fixture("gpt2-lmhead").join("model.safetensors")).unwrap()
    );
    assert!(server.take_log().iter().any(|l| l.starts_with("GET") && l.contains("model.safetensors")));

    // A cache copied without its links (`cp -rL`) is used offline where each file's hash names one
    // of the blobs, and refused where one does not.
    let copied = cache.with_extension("copied");
    copy_following_links(&cache, &copied);
    let offline_copy = Hub { cache: copied.clone(), ..offline.clone() };
    let files = offline_copy.model_files(&id("test/gpt2"), |_| {}).unwrap();
    assert_eq!(files.config, std::fs::read(fixture("gpt2-lmhead").join("config.json")).unwrap());
    let config = copied.join("models--test--gpt2/snapshots").join(COMMIT).join("config.json");
    std::fs::write(&config, [std::fs::read(&config).unwrap(), b" ".to_vec()].concat()).unwrap();
    let refused = error(&offline_copy, "test/gpt2");
    assert!(refused.contains("plain file") && refused.contains("cp -a"), "{refused}");
    std::fs::remove_dir_all(&copied).unwrap();

    // Listing and removal.
    online.remove("renamed/gpt2").unwrap();
    let listed = online.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].repo, "test/gpt2");
    assert_eq!(listed[0].revisions, vec![("main".to_string(), Some(COMMIT.to_string()))]);
    assert!(listed[0].size > 0);
    assert_eq!(online.remove("test/gpt2").unwrap(), listed[0].size);
    assert!(online.list().unwrap().is_empty());
    assert!(error(&offline, "test/gpt2").contains("glimpse models fetch test/gpt2"));
}

#[test]
fn a_dropped_connection_resumes_where_it_stopped() {
    let server = HubServer::start();
    server.add("test/flaky", &fixture("clip-a"), Fault::DropOnce);
    let hub = hub(&server, &cache("resume"));
    let files = hub.model_files(&id("test/flaky"), |_| {}).unwrap();
    assert_eq!(
        glimpse_tests::weight_bytes(&files),
        std::fs::read(fixture("clip-a").join("model.safetensors")).unwrap()
    );
    assert!(files.preprocessor.is_some(), "the optional preprocessor config comes along");
    let size = glimpse_tests::weight_bytes(&files).len();
    let gets: Vec<String> =
        server.take_log().into_iter().filter(|l| l.starts_with("GET") && l.contains("safetensors")).collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert!(gets[1].ends_with(&format!("bytes={}-", size / 2)), "the second request resumes: {gets:?}");
}

#[test]
fn a_download_slower_than_the_floor_is_cut_and_kept_for_the_next_run() {
    let server = HubServer::start();
    server.add("test/trickle", &fixture("gpt2-lmhead"), Fault::Trickle);
    let cache = cache("trickle");
    // 20 bytes a second against a floor of 4 KiB a second: each attempt is cut after a second.
    let hub = Hub { min_speed: MinSpeed { bytes: 4096, window: Duration::from_secs(1) }, ..hub(&server, &cache) };
    let message = within(60, move || error(&hub, "test/trickle"));
    assert!(message.contains("below the least kept going") && message.contains("after 3 attempts"), "{message}");
    assert!(message.contains("the next run resumes"), "{message}");
    let gets: Vec<String> =
        server.take_log().into_iter().filter(|l| l.starts_with("GET") && l.contains("safetensors")).collect();
    assert_eq!(gets.len(), 3, "{gets:?}");
    assert!(gets[1].contains("bytes=") && gets[2].contains("bytes="), "each attempt resumes: {gets:?}");
}

#[test]
fn bad_downloads_are_refused_and_never_loaded() {
    let server = HubServer::start();
    for (repo, fault) in [
        ("test/truncated", Fault::Truncated),
        ("test/badhash", Fault::WrongHash),
        ("test/binonly", Fault::BinOnly),
        ("test/private", Fault::Private),
        ("test/forbidden", Fault::Forbidden),
        ("test/cdn-forbidden", Fault::CdnForbidden),
    ] {
        server.add(repo, &fixture("gpt2-lmhead"), fault);
    }
    let cache = cache("bad");
    let hub = hub(&server, &cache);

    let truncated = error(&hub, "test/truncated");
    assert!(truncated.contains("connection dropped") && truncated.contains("after 3 attempts"), "{truncated}");
    let badhash = error(&hub, "test/badhash");
    assert!(badhash.contains("does not match the hash"), "{badhash}");
    assert!(error(&hub, "test/binonly").contains("safetensors only"));
    assert!(error(&hub, "test/missing").contains("has no config.json"));
    assert!(error(&hub, "test/private").contains("HF_TOKEN"));
    let with_token = Hub { token: Some("secret".into()), ..hub.clone() };
    with_token.model_files(&id("test/private"), |_| {}).unwrap();
    // The hub's own refusal would come again: asked for once. A CDN's may not (each attempt asks the
    // hub for a fresh address): asked for three times.
    for (repo, times) in [("forbidden", 1), ("cdn-forbidden", 3)] {
        server.take_log();
        let refused = error(&hub, &format!("test/{repo}"));
        let asked = weights_asked(&server, &format!("test/{repo}"));
        assert!(
            refused.contains("HTTP 403") && refused.contains("attempts") == (times > 1) && asked == times,
            "{repo}: {asked} requests: {refused}"
        );
    }

    // Nothing unverified reached a snapshot: the failed repositories have no weights to load.
    for repo in ["truncated", "badhash"] {
        let snapshot = cache.join(format!("models--test--{repo}/snapshots"));
        let weights =
            std::fs::read_dir(&snapshot).into_iter().flatten().flatten().map(|d| d.path().join("model.safetensors"));
        assert!(weights.into_iter().all(|w| !w.exists()), "{repo}");
    }
    let unreachable = Hub { endpoint: "http://127.0.0.1:9".into(), ..hub.clone() };
    assert!(error(&unreachable, "test/other").contains("HF_HUB_OFFLINE"));
}

#[test]
fn busy_answers_are_waited_for_as_the_hub_asks() {
    let server = HubServer::start();
    server.add("test/busy", &fixture("gpt2-lmhead"), Fault::BusyOnce);
    server.add("test/rate-limited", &fixture("gpt2-lmhead"), Fault::RateLimited);
    let cache = cache("busy");
    let hub = hub(&server, &cache);

    // A 503 without Retry-After waits 1 s, a 429 with `Retry-After: 1` the second it asks.
    let start = Instant::now();
    hub.model_files(&id("test/busy"), |_| {}).unwrap();
    let waited = start.elapsed();
    let log = server.take_log();
    let asked = |request: &str| log.iter().filter(|l| l.starts_with(request)).count();
    assert_eq!(asked("HEAD /test/busy/resolve/main/config.json"), 2, "{log:?}");
    assert_eq!(log.iter().filter(|l| l.starts_with("GET") && l.contains("model.safetensors")).count(), 2, "{log:?}");
    assert!(waited >= Duration::from_secs(2), "{waited:?}");

    // An hour is not waited for: one request, and the message says when to come back.
    let start = Instant::now();
    let limited = error(&hub, "test/rate-limited");
    assert!(limited.contains("HTTP 429") && limited.contains("3600 s"), "{limited}");
    assert!(limited.contains("more for a logged-in HF_TOKEN"), "{limited}");
    assert_eq!(weights_asked(&server, "test/rate-limited"), 1);
    // The same of the hub's first answer, the HEAD that names the commit.
    server.add("test/rate-limited-head", &fixture("gpt2-lmhead"), Fault::RateLimitedHead);
    let limited = error(&hub, "test/rate-limited-head");
    assert!(limited.contains("3600 s") && limited.contains("HF_HUB_OFFLINE"), "{limited}");
    let heads = server.take_log().iter().filter(|l| l.starts_with("HEAD /test/rate-limited-head/")).count();
    assert_eq!(heads, 1);
    assert!(start.elapsed() < Duration::from_secs(30));
}

/// Runs `f` on a thread of its own and fails if it has not returned after `seconds`: a hang
/// becomes a failure instead of a test run that never ends.
fn within<T: Send + 'static>(seconds: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = channel();
    std::thread::spawn(move || send.send(f()));
    match receive.recv_timeout(Duration::from_secs(seconds)) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => panic!("still running after {seconds} s"),
        Err(RecvTimeoutError::Disconnected) => panic!("the thread panicked"),
    }
}

/// The GETs of `repo`'s weights from the hub (not its CDN) since the server's log was last taken.
fn weights_asked(server: &HubServer, repo: &str) -> usize {
    let prefix = format!("GET /{repo}/");
    server.take_log().iter().filter(|l| l.starts_with(&prefix) && l.contains("model.safetensors")).count()
}

fn weights_of(fixture_name: &str) -> (Vec<u8>, String) {
    let bytes = std::fs::read(fixture(fixture_name).join("model.safetensors")).unwrap();
    let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    (bytes, sha)
}

/// Copies the folder `from` to `to` with every link replaced by a copy of what it names.
fn copy_following_links(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if std::fs::metadata(entry.path()).unwrap().is_dir() {
            copy_following_links(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Files of a repository's `blobs/` folder that are not finished blobs (partial downloads, locks).
fn leftovers(cache: &Path, repo: &str) -> Vec<String> {
    let blobs = cache.join(format!("models--{}/blobs", repo.replace('/', "--")));
    let names = std::fs::read_dir(blobs).into_iter().flatten().flatten();
    names.map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| n.contains('.')).collect()
}

#[test]
fn redirects_are_checked_hop_by_hop_and_the_token_stays_on_the_hub() {
    let server = HubServer::start();
    server.add("test/cdn", &fixture("gpt2-lmhead"), Fault::Cdn);
    server.add("test/to-file", &fixture("gpt2-lmhead"), Fault::RedirectToFile);
    let cache = cache("redirects");
    let hub = Hub { token: Some("secret".into()), ..hub(&server, &cache) };
    // The CDN refuses a request that carries the token: the weights arrive only if it was kept
    // for the hub's own origin.
    let files = hub.model_files(&id("test/cdn"), |_| {}).unwrap();
    assert_eq!(glimpse_tests::weight_bytes(&files), weights_of("gpt2-lmhead").0);
    let log = server.take_log();
    assert!(log.iter().any(|l| l.starts_with("GET /cdn/test/cdn/")), "{log:?}");

    let refused = within(30, move || error(&hub, "test/to-file"));
    assert!(refused.contains("file:///etc/passwd") && refused.contains("not an http(s) address"), "{refused}");
    // Asking again would meet the same redirect: the weights are asked for once.
    let asked = weights_asked(&server, "test/to-file");
    assert!(asked == 1 && !refused.contains("attempts"), "{asked} requests: {refused}");
    assert!(leftovers(&cache, "test/to-file").is_empty(), "{:?}", leftovers(&cache, "test/to-file"));
}

#[test]
fn headers_that_never_end_are_cut_at_the_floor() {
    let server = HubServer::start();
    server.add("test/endless-headers", &fixture("gpt2-lmhead"), Fault::EndlessHeaders);
    let cache = cache("endless-headers");
    let hub = Hub { min_speed: MinSpeed { bytes: 4096, window: Duration::from_secs(1) }, ..hub(&server, &cache) };
    let message = within(30, move || error(&hub, "test/endless-headers"));
    assert!(message.contains("config.json") && message.contains("after 3 attempts"), "{message}");
}

#[test]
fn a_body_longer_than_announced_is_refused() {
    let server = HubServer::start();
    for (repo, fault) in
        [("test/endless", Fault::Endless), ("test/overlong", Fault::Overlong), ("test/huge", Fault::HugeConfig)]
    {
        server.add(repo, &fixture("gpt2-lmhead"), fault);
    }
    let cache = cache("overlong");
    let hub = hub(&server, &cache);
    for (repo, says) in [("test/endless", "sent more than the"), ("test/overlong", "announces a body of")] {
        let online = hub.clone();
        let message = within(60, move || error(&online, repo));
        let url = format!("{}/{repo}/resolve/{COMMIT}/model.safetensors", server.endpoint);
        assert!(message.contains("model.safetensors") && message.contains(&url), "{message}");
        assert!(message.contains(says) && message.contains("discarded"), "{message}");
        assert_eq!(leftovers(&cache, repo), Vec::<String>::new(), "nothing of {repo} is kept");
    }
    server.take_log();

    // A JSON file announced larger than any configuration is refused before it is requested.
    let message = error(&hub, "test/huge");
    assert!(message.contains("config.json") && message.contains("announces 1099511627776 bytes"), "{message}");
    assert!(server.take_log().iter().all(|l| l.starts_with("HEAD")));
}

#[test]
fn revisions_and_commits_that_escape_the_cache_are_refused() {
    let server = HubServer::start();
    server.add("test/gpt2", &fixture("gpt2-lmhead"), Fault::None);
    server.add("test/escape", &fixture("gpt2-lmhead"), Fault::EscapingCommit);
    let cache = cache("escape");
    let online = hub(&server, &cache);
    for bad in
        ["test/gpt2@/tmp/x", "test/gpt2@../../x", "test/gpt2@a//b", "test/gpt2@a\\b", "test/gpt2@a\0b", "../x@main"]
    {
        assert_eq!(RepoId::parse(bad), None, "{bad:?}");
    }

    // Ids built without `parse` are checked too, online and offline, before any request.
    let outside = std::env::temp_dir().join(format!("glimpse-escaped-ref-{}", std::process::id()));
    let _ = std::fs::remove_file(&outside);
    let absolute = RepoId { repo: "test/gpt2".into(), revision: outside.to_str().unwrap().into() };
    let offline = Hub { offline: true, ..online.clone() };
    for hub in [&online, &offline] {
        let message = hub.fetch(&absolute, &mut |_| {}).unwrap_err().to_string();
        assert!(message.contains("is not a revision") && message.contains(outside.to_str().unwrap()), "{message}");
    }
    let climbing = RepoId { repo: "test/gpt2".into(), revision: "../../../glimpse-escaped".into() };
    assert!(online.fetch(&climbing, &mut |_| {}).unwrap_err().to_string().contains("is not a revision"));
    let repo = RepoId { repo: "../../etc".into(), revision: "main".into() };
    assert!(online.fetch(&repo, &mut |_| {}).unwrap_err().to_string().contains("is not a repository"));
    assert!(!outside.exists(), "{} was written", outside.display());
    assert!(server.take_log().is_empty());

    // A commit from the server that names a path is refused.
    let escaped = std::env::temp_dir().join("glimpse-escaped-commit");
    let _ = std::fs::remove_dir_all(&escaped);
    let message = error(&online, "test/escape");
    assert!(message.contains("did not send the commit"), "{message}");
    assert!(!escaped.exists(), "{ESCAPING_COMMIT} was created");
}

#[test]
fn a_complete_partial_file_left_by_a_crash_is_used() {
    let server = HubServer::start();
    let (weights, sha) = weights_of("gpt2-lmhead");
    let cache = cache("crash");
    let hub = hub(&server, &cache);
    let partial = |repo: &str, bytes: &[u8]| {
        let blobs = cache.join(format!("models--{}/blobs", repo.replace('/', "--")));
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(blobs.join(format!("{sha}.incomplete")), bytes).unwrap();
    };
    let weight_gets = |server: &HubServer| -> Vec<String> {
        server.take_log().into_iter().filter(|l| l.starts_with("GET") && l.contains("model.safetensors")).collect()
    };

    // Every byte arrived but the rename did not happen: the file is checked and used as it is.
    server.add("test/crashed", &fixture("gpt2-lmhead"), Fault::None);
    partial("test/crashed", &weights);
    let files = hub.model_files(&id("test/crashed"), |_| {}).unwrap();
    assert_eq!(weight_bytes(&files), weights);
    assert_eq!(weight_gets(&server), Vec::<String>::new());
    assert_eq!(leftovers(&cache, "test/crashed"), Vec::<String>::new());

    // A complete partial file with wrong bytes is downloaded again from the start.
    server.add("test/garbled", &fixture("gpt2-lmhead"), Fault::None);
    let mut garbled = weights.clone();
    garbled[10] ^= 1;
    partial("test/garbled", &garbled);
    let files = hub.model_files(&id("test/garbled"), |_| {}).unwrap();
    assert_eq!(weight_bytes(&files), weights);
    let gets = weight_gets(&server);
    assert!(gets.len() == 1 && !gets[0].contains("bytes="), "{gets:?}");

    // When the server refuses to resume (HTTP 416), the download starts again from the first byte.
    server.add("test/changed", &fixture("gpt2-lmhead"), Fault::RangeRefused);
    partial("test/changed", &weights[..1000]);
    let files = hub.model_files(&id("test/changed"), |_| {}).unwrap();
    assert_eq!(weight_bytes(&files), weights);
    let gets = weight_gets(&server);
    assert!(gets.len() == 2 && gets[0].ends_with("bytes=1000-") && !gets[1].contains("bytes="), "{gets:?}");
    assert_eq!(leftovers(&cache, "test/changed"), Vec::<String>::new());
}

#[test]
fn two_fetchers_of_one_file_download_it_once() {
    let server = HubServer::start();
    server.add("test/shared", &fixture("gpt2-lmhead"), Fault::Slow);
    let cache = cache("shared");
    let hub = hub(&server, &cache);
    let fetchers: Vec<_> = (0..2)
        .map(|_| {
            let hub = hub.clone();
            std::thread::spawn(move || hub.fetch(&id("test/shared"), &mut |_| {}).map_err(|e| e.to_string()))
        })
        .collect();
    let snapshots: Vec<PathBuf> =
        within(120, move || fetchers.into_iter().map(|f| f.join().unwrap().unwrap()).collect());
    assert_eq!(snapshots[0], snapshots[1]);
    let gets: Vec<String> = server.take_log().into_iter().filter(|l| l.starts_with("GET")).collect();
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert_eq!(gets.iter().filter(|l| l.ends_with(&format!("/{file}"))).count(), 1, "{file}: {gets:?}");
    }
    let files = ModelFiles::from_dir(&snapshots[0]).unwrap();
    assert_eq!(weight_bytes(&files), weights_of("gpt2-lmhead").0);
    assert_eq!(leftovers(&cache, "test/shared"), Vec::<String>::new());
}

#[test]
fn a_stale_lock_is_broken() {
    let server = HubServer::start();
    server.add("test/stale", &fixture("gpt2-lmhead"), Fault::None);
    let (weights, sha) = weights_of("gpt2-lmhead");
    let cache = cache("stale");
    let blobs = cache.join("models--test--stale/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    // Left by a process on another machine an hour ago: its pid cannot be checked, its age can.
    let lock = blobs.join(format!("{sha}.lock"));
    std::fs::write(&lock, "12345 pid:[1]@elsewhere 1\n").unwrap();
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&lock).unwrap().set_modified(an_hour_ago).unwrap();
    let online = hub(&server, &cache);
    let files = within(60, move || online.model_files(&id("test/stale"), |_| {}).map_err(|e| e.to_string()));
    assert_eq!(weight_bytes(&files.unwrap()), weights);
    assert!(!lock.exists());
}

#[test]
fn refs_that_are_not_commits_are_errors() {
    let server = HubServer::start();
    server.add("test/gpt2", &fixture("gpt2-lmhead"), Fault::None);
    let cache = cache("refs");
    let online = hub(&server, &cache);
    online.fetch(&id("test/gpt2"), &mut |_| {}).unwrap();
    let refs = cache.join("models--test--gpt2/refs");
    std::fs::write(refs.join("main"), "not a commit, ünïcödé\n").unwrap();
    std::fs::create_dir_all(refs.join("pr")).unwrap();
    std::fs::write(refs.join("pr/1"), COMMIT).unwrap();

    let offline = Hub { offline: true, ..online.clone() };
    let message = error(&offline, "test/gpt2");
    assert!(message.contains(refs.join("main").to_str().unwrap()) && message.contains("delete it"), "{message}");
    let listed = online.list().unwrap();
    let expected = [("main".to_string(), None), ("pr/1".to_string(), Some(COMMIT.to_string()))];
    assert_eq!(listed[0].revisions, expected);
    // Online, the ref is written again from the hub's answer.
    online.fetch(&id("test/gpt2"), &mut |_| {}).unwrap();
    offline.fetch(&id("test/gpt2"), &mut |_| {}).unwrap();
}

#[test]
fn the_token_goes_to_https_and_this_machine_only() {
    for url in [
        "https://huggingface.co/gpt2/resolve/main/config.json",
        "http://127.0.0.1:8080/x",
        "http://127.8.9.10/x",
        "http://localhost:1234/x",
        "http://LOCALHOST/x",
        "http://[::1]:80/x",
    ] {
        assert!(may_send_token(url), "{url}");
    }
    for url in [
        "http://huggingface.co/gpt2/resolve/main/config.json",
        "http://10.0.0.1/x",
        "http://127.0.0.1.example.com/x",
        "http://localhost.example.com/x",
        "http://127.0.0.1@example.com/x",
        "http://example.com\\@127.0.0.1/x",
        "http://[::ffff:8.8.8.8]/x",
        "ftp://127.0.0.1/x",
        "not a url",
        "",
    ] {
        assert!(!may_send_token(url), "{url}");
    }
}

#[test]
fn debug_never_shows_the_token() {
    let hub = Hub {
        endpoint: "https://huggingface.co".into(),
        cache: PathBuf::from("/tmp/cache"),
        token: Some("hf_TopSecret123".into()),
        offline: false,
        min_speed: MinSpeed::default(),
    };
    let text = format!("{hub:?} {hub:#?}");
    assert!(!text.contains("hf_TopSecret123") && text.contains("redacted"), "{text}");
    assert!(format!("{:?}", Hub { token: None, ..hub }).contains("token: None"));
}

/// A cache another program or user laid traps in: the partial download a link to a file outside
/// the cache, a ref or a snapshot's file a pipe or a device. Nothing outside the cache is written,
/// nothing blocks, and each refusal names the file; with the hub out of reach, a damaged cached
/// copy is said to be one, beside the network's failure.
#[cfg(unix)]
#[test]
fn a_hostile_cache_never_blocks_or_writes_outside() {
    use std::os::unix::fs::symlink;
    let server = HubServer::start();
    server.add("test/trap", &fixture("gpt2-lmhead"), Fault::None);
    let (weights, sha) = weights_of("gpt2-lmhead");
    let cache = cache("trap");
    let outside = cache.with_extension("outside");
    std::fs::write(&outside, b"a file of the user's, not of the cache").unwrap();
    let blobs = cache.join("models--test--trap/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    symlink(&outside, blobs.join(format!("{sha}.incomplete"))).unwrap();
    let online = hub(&server, &cache);
    let fetched = online.clone();
    let snapshot = within(60, move || fetched.fetch(&id("test/trap"), &mut |_| {}).map_err(|e| e.full())).unwrap();
    assert_eq!(std::fs::read(&outside).unwrap(), b"a file of the user's, not of the cache");
    assert_eq!(std::fs::read(snapshot.join("model.safetensors")).unwrap(), weights);
    assert!(!std::fs::symlink_metadata(blobs.join(&sha)).unwrap().is_symlink());
    // A hard link there is a regular file, but another's: not written into either.
    server.add("test/trap2", &fixture("gpt2-lmhead"), Fault::None);
    let blobs2 = cache.join("models--test--trap2/blobs");
    std::fs::create_dir_all(&blobs2).unwrap();
    std::fs::hard_link(&outside, blobs2.join(format!("{sha}.incomplete"))).unwrap();
    let fetched = online.clone();
    within(60, move || fetched.fetch(&id("test/trap2"), &mut |_| {}).map_err(|e| e.full())).unwrap();
    assert_eq!(std::fs::read(&outside).unwrap(), b"a file of the user's, not of the cache");

    let offline = Hub { offline: true, ..online.clone() };
    let load = |hub: &Hub| {
        let hub = hub.clone();
        within(30, move || hub.model_files(&id("test/trap"), |_| {}).err().map(|e| e.full()).expect("loaded"))
    };
    let mkfifo = |path: &Path| assert!(std::process::Command::new("mkfifo").arg(path).status().unwrap().success());
    // A snapshot's file that leads to a device or a pipe.
    let config = snapshot.join("config.json");
    let config_link = std::fs::read_link(&config).unwrap();
    std::fs::remove_file(&config).unwrap();
    symlink("/dev/zero", &config).unwrap();
    let message = load(&offline);
    assert!(message.contains("/dev/zero") && message.contains("not a regular file"), "{message}");
    std::fs::remove_file(&config).unwrap();
    let pipe = blobs.join("f".repeat(40));
    mkfifo(&pipe);
    symlink(&pipe, &config).unwrap();
    let message = load(&offline);
    assert!(message.contains(pipe.to_str().unwrap()) && message.contains("not a regular file"), "{message}");
    std::fs::remove_file(&config).unwrap();
    symlink(&config_link, &config).unwrap();
    // A blob gone from behind its link is said to be.
    let tokenizer = std::fs::canonicalize(snapshot.join("tokenizer.json")).unwrap();
    let kept = std::fs::read(&tokenizer).unwrap();
    std::fs::remove_file(&tokenizer).unwrap();
    let message = load(&offline);
    assert!(message.contains("tokenizer.json links to a blob that is missing"), "{message}");
    std::fs::write(&tokenizer, kept).unwrap();
    // A ref that is a pipe.
    let main = cache.join("models--test--trap/refs/main");
    std::fs::remove_file(&main).unwrap();
    mkfifo(&main);
    let message = load(&offline);
    assert!(message.contains(main.to_str().unwrap()) && message.contains("not a regular file"), "{message}");
    std::fs::remove_file(&main).unwrap();
    std::fs::write(&main, snapshot.file_name().unwrap().to_str().unwrap()).unwrap();
    offline.fetch(&id("test/trap"), &mut |_| {}).unwrap();

    // The hub out of reach and the cached weights damaged: both are said.
    let weights_blob = blobs.join(&sha);
    let mut damaged = weights.clone();
    damaged[100] ^= 1;
    std::fs::write(&weights_blob, damaged).unwrap();
    let unreachable = Hub { endpoint: "http://127.0.0.1:9".into(), ..online.clone() };
    let message = load(&unreachable);
    assert!(
        message.contains("127.0.0.1:9")
            && message.contains("nor can the cached copy be used")
            && message.contains("model.safetensors of test/trap@main is corrupt"),
        "{message}"
    );
    std::fs::remove_dir_all(&cache).unwrap();
    std::fs::remove_file(&outside).unwrap();
}
