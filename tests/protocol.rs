//! The JavaScript side's one copy of the engine's facts (`web/package/src/protocol.js`) agrees
//! with the Rust side: the limits the facade checks before sending, the defaults it fills in, and
//! the error names the engine raises.

use std::path::Path;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The number in `export const NAME = 123;`.
fn js_number(js: &str, name: &str) -> f64 {
    let prefix = format!("export const {name} = ");
    let line = js.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("protocol.js has no {name}"));
    line.trim_end_matches(';').parse().unwrap_or_else(|e| panic!("{name} = {line}: {e}"))
}

#[test]
fn limits_match_the_engine() {
    let js = repo_file("web/package/src/protocol.js");
    assert_eq!(js_number(&js, "MAX_FRAMES"), glimpse_media::video::MAX_FRAMES as f64);
    assert_eq!(js_number(&js, "MIN_FPS"), glimpse_media::video::MIN_FPS);
    assert_eq!(js_number(&js, "MAX_FPS"), glimpse_media::video::MAX_FPS);
    assert_eq!(js_number(&js, "MAX_EVENTS"), glimpse_align::zerota::MAX_EVENTS as f64);
    assert_eq!(js_number(&js, "MAX_QUERIES"), glimpse_align::grounding::MAX_QUERIES as f64);
    assert_eq!(js_number(&js, "MAX_TOP"), glimpse_align::grounding::MAX_TOP as f64);
    // The engine's own crate builds for wasm only: its constant is read from its source.
    let session = repo_file("crates/glimpse-wasm/src/session.rs");
    let side = session.lines().find_map(|l| l.strip_prefix("const MAX_SIDE: u32 = ")).expect("session.rs's MAX_SIDE");
    assert_eq!(js_number(&js, "MAX_FRAME_SIDE"), side.trim_end_matches(';').parse::<f64>().unwrap());
}

#[test]
fn defaults_match_the_engine() {
    let js = repo_file("web/package/src/protocol.js");
    assert_eq!(js_number(&js, "DEFAULT_FPS"), glimpse_media::video::DEFAULT_FPS);
    let zerota = glimpse_align::zerota::ZeroTaConfig::default();
    assert_eq!(js_number(&js, "DEFAULT_MAX_EVENTS"), zerota.max_events as f64);
    // The facade's default is `events: 'auto'`: the engine's must count the events too.
    assert_eq!(zerota.events, None);
    let facade = repo_file("web/package/src/index.js");
    assert!(
        facade.contains("const { events = 'auto', maxEvents = DEFAULT_MAX_EVENTS,"),
        "index.js's denseCaption defaults"
    );
}

#[test]
fn every_engine_error_name_is_known_to_the_facade() {
    let js = repo_file("web/package/src/protocol.js");
    let rust = repo_file("crates/glimpse-wasm/src/errors.rs");
    // `pub const MODEL_LOAD: &str = "ModelLoadError";`
    let names: Vec<&str> = rust
        .lines()
        .filter_map(|l| l.strip_prefix("pub const ")?.split_once(": &str = \"")?.1.strip_suffix("\";"))
        .collect();
    assert!(names.len() >= 4, "error names found in errors.rs: {names:?}");
    for name in names {
        assert!(js.contains(&format!(": '{name}'")), "protocol.js's ErrorName lacks {name}");
    }
}
