//! Hub downloads against a local hub-shaped server (`hub_server`): download, verification, cache
//! hits, resume after a dropped connection, offline mode, and every error a user can meet.

use std::path::PathBuf;

use glimpse_hub::remote::{Hub, Progress, RepoId};
use glimpse_hub::{Gpt2Bundle, ModelFiles};
use glimpse_tests::fixture;
use glimpse_tests::hub_server::{Fault, HubServer};

fn cache(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glimpse-hub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn hub(server: &HubServer, cache: &std::path::Path) -> Hub {
    Hub { endpoint: server.endpoint.clone(), cache: cache.to_path_buf(), token: None, offline: false }
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
        (files.config.clone(), files.weights.clone(), files.tokenizer.clone()),
        (local.config, local.weights, local.tokenizer)
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
    assert_eq!(files.weights, std::fs::read(fixture("gpt2-lmhead").join("model.safetensors")).unwrap());
    assert!(server.take_log().iter().any(|l| l.starts_with("GET") && l.contains("model.safetensors")));

    // Listing and removal.
    online.remove("renamed/gpt2").unwrap();
    let listed = online.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].repo, "test/gpt2");
    assert_eq!(listed[0].revisions, vec![("main".to_string(), glimpse_tests::hub_server::COMMIT.to_string())]);
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
    assert_eq!(files.weights, std::fs::read(fixture("clip-a").join("model.safetensors")).unwrap());
    assert!(files.preprocessor.is_some(), "the optional preprocessor config comes along");
    let size = files.weights.len();
    let gets: Vec<String> =
        server.take_log().into_iter().filter(|l| l.starts_with("GET") && l.contains("safetensors")).collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert!(gets[1].ends_with(&format!("bytes={}-", size / 2)), "the second request resumes: {gets:?}");
}

#[test]
fn bad_downloads_are_refused_and_never_loaded() {
    let server = HubServer::start();
    for (repo, fault) in [
        ("test/truncated", Fault::Truncated),
        ("test/badhash", Fault::WrongHash),
        ("test/binonly", Fault::BinOnly),
        ("test/private", Fault::Private),
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
