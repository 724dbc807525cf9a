//! The one rule every test crate follows for the wgpu half of its tests, set by
//! `GLIMPSE_TEST_WGPU`:
//!
//! - unset: run it where a Vulkan adapter exists, and otherwise print one line saying what was
//!   skipped and how to run it (so `cargo test --workspace` passes on a fresh machine);
//! - `require` (CI): a missing adapter fails the test, so CI can never skip silently;
//! - `skip`: leave it out, saying so.
//!
//! It knows no device type: each crate passes its own probe (Burn's `Device` for the kernels,
//! `glimpse_models::device::wgpu` for the workspace tests).
//!
//! Tests that make and read videos follow the same rule for ffmpeg, set by `GLIMPSE_TEST_FFMPEG`
//! (unset: run where it is installed and say what was skipped where not; `require`: fail).

use std::fmt::Display;
use std::io::Write;
use std::sync::Once;

/// The device `probe` finds, when this run covers wgpu.
pub fn wgpu<T, E: Display>(probe: impl FnOnce() -> Result<T, E>) -> Option<T> {
    match decide(std::env::var("GLIMPSE_TEST_WGPU").ok().as_deref(), probe) {
        Ok(device) => Some(device),
        Err(why) => {
            say_skipped(&why);
            None
        }
    }
}

/// The device, or why the wgpu half is skipped; panics where the setting requires an adapter and
/// there is none, or the setting is unknown.
fn decide<T, E: Display>(setting: Option<&str>, probe: impl FnOnce() -> Result<T, E>) -> Result<T, String> {
    match setting {
        None | Some("") => probe().map_err(|e| format!("no Vulkan adapter ({e})")),
        Some("skip") => Err("GLIMPSE_TEST_WGPU=skip".into()),
        Some("require") => Ok(probe().unwrap_or_else(|e| {
            panic!("GLIMPSE_TEST_WGPU=require, but there is no Vulkan adapter ({e}): install mesa-vulkan-drivers")
        })),
        Some(other) => panic!("GLIMPSE_TEST_WGPU={other}: use `require` or `skip`, or leave it unset"),
    }
}

/// Whether ffmpeg is installed for `test` (a test that makes and reads videos): where it is not,
/// says that `test` is skipped, or fails where `GLIMPSE_TEST_FFMPEG=require`.
pub fn ffmpeg(test: &str) -> bool {
    let found = std::process::Command::new("ffmpeg")
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert_ne!(
            std::env::var("GLIMPSE_TEST_FFMPEG").as_deref(),
            Ok("require"),
            "GLIMPSE_TEST_FFMPEG=require but ffmpeg is not installed"
        );
        // Past the harness's capture of a passing test's output, as `say_skipped`.
        let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: ffmpeg is not installed (apt install ffmpeg)");
    }
    found
}

/// One line per test binary, written to stderr directly: the harness captures `eprintln!` of a
/// passing test, and a skip nobody sees is a silent one.
fn say_skipped(why: &str) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Test binaries are named `<test>-<hash>`.
        let binary = std::env::current_exe().ok().and_then(|path| {
            let stem = path.file_stem()?.to_string_lossy().into_owned();
            Some(stem.rsplit_once('-').map_or(stem.clone(), |(name, _)| name.to_string()))
        });
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the wgpu half of {}: {why}. Install a Vulkan driver (Debian: mesa-vulkan-drivers) to run it; \
             GLIMPSE_TEST_WGPU=require makes a missing adapter a failure.",
            binary.as_deref().unwrap_or("these tests")
        );
    });
}

#[cfg(test)]
mod tests {
    use super::decide;

    fn present() -> Result<&'static str, String> {
        Ok("adapter")
    }

    fn absent() -> Result<&'static str, String> {
        Err("none found".into())
    }

    #[test]
    fn unset_runs_where_there_is_an_adapter_and_skips_elsewhere() {
        assert_eq!(decide(None, present), Ok("adapter"));
        assert_eq!(decide(Some(""), present), Ok("adapter"));
        assert_eq!(decide(None, absent), Err("no Vulkan adapter (none found)".to_string()));
    }

    #[test]
    fn skip_never_probes() {
        let probe = || -> Result<(), String> { panic!("probed") };
        assert!(decide(Some("skip"), probe).is_err());
    }

    #[test]
    fn require_runs_with_an_adapter() {
        assert_eq!(decide(Some("require"), present), Ok("adapter"));
    }

    #[test]
    #[should_panic(expected = "GLIMPSE_TEST_WGPU=require, but there is no Vulkan adapter")]
    fn require_fails_without_one() {
        let _ = decide(Some("require"), absent);
    }

    #[test]
    #[should_panic(expected = "use `require` or `skip`")]
    fn an_unknown_setting_fails() {
        let _ = decide(Some("yes"), present);
    }
}
