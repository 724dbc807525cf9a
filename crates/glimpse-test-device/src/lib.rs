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
//! Tests that make and read videos follow the same rule for ffmpeg, set by `GLIMPSE_TEST_FFMPEG`.

use std::fmt::Display;
use std::io::Write;
use std::sync::Once;

/// What a half of the tests needs: the variable that sets the rule for it, what is missing where
/// it is absent, and how to install it.
struct Need {
    variable: &'static str,
    missing: &'static str,
    install: &'static str,
}

const WGPU: Need =
    Need { variable: "GLIMPSE_TEST_WGPU", missing: "no Vulkan adapter", install: "install mesa-vulkan-drivers" };
const FFMPEG: Need = Need { variable: "GLIMPSE_TEST_FFMPEG", missing: "no ffmpeg", install: "apt install ffmpeg" };

/// The device `probe` finds, when this run covers wgpu.
pub fn wgpu<T, E: Display>(probe: impl FnOnce() -> Result<T, E>) -> Option<T> {
    match decide(&WGPU, std::env::var(WGPU.variable).ok().as_deref(), probe) {
        Ok(device) => Some(device),
        Err(why) => {
            say_skipped(&why);
            None
        }
    }
}

/// What `probe` finds, or why the tests that need it are skipped; panics where the setting
/// requires it and it is missing, or the setting is unknown.
fn decide<T, E: Display>(
    need: &Need,
    setting: Option<&str>,
    probe: impl FnOnce() -> Result<T, E>,
) -> Result<T, String> {
    let Need { variable, missing, install } = need;
    match setting {
        None | Some("") => probe().map_err(|e| format!("{missing} ({e})")),
        Some("skip") => Err(format!("{variable}=skip")),
        Some("require") => {
            Ok(probe().unwrap_or_else(|e| panic!("{variable}=require, but there is {missing} ({e}): {install}")))
        }
        Some(other) => panic!("{variable}={other}: use `require` or `skip`, or leave it unset"),
    }
}

/// Whether ffmpeg is installed for `test` (a test that makes and reads videos): where it is not,
/// says that `test` is skipped, or fails where `GLIMPSE_TEST_FFMPEG=require`.
pub fn ffmpeg(test: &str) -> bool {
    let probe = || {
        std::process::Command::new("ffmpeg")
            .arg("-version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
    };
    match decide(&FFMPEG, std::env::var(FFMPEG.variable).ok().as_deref(), probe) {
        Ok(_) => true,
        Err(why) => {
            // Past the harness's capture of a passing test's output, as `say_skipped`.
            let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why} ({})", FFMPEG.install);
            false
        }
    }
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
    use super::{WGPU, decide};

    fn present() -> Result<&'static str, String> {
        Ok("adapter")
    }

    fn absent() -> Result<&'static str, String> {
        Err("none found".into())
    }

    #[test]
    fn unset_runs_where_there_is_an_adapter_and_skips_elsewhere() {
        assert_eq!(decide(&WGPU, None, present), Ok("adapter"));
        assert_eq!(decide(&WGPU, Some(""), present), Ok("adapter"));
        assert_eq!(decide(&WGPU, None, absent), Err("no Vulkan adapter (none found)".to_string()));
    }

    #[test]
    fn skip_never_probes() {
        let probe = || -> Result<(), String> { panic!("probed") };
        assert!(decide(&WGPU, Some("skip"), probe).is_err());
    }

    #[test]
    fn require_runs_with_an_adapter() {
        assert_eq!(decide(&WGPU, Some("require"), present), Ok("adapter"));
    }

    #[test]
    #[should_panic(expected = "GLIMPSE_TEST_WGPU=require, but there is no Vulkan adapter")]
    fn require_fails_without_one() {
        let _ = decide(&WGPU, Some("require"), absent);
    }

    #[test]
    #[should_panic(expected = "use `require` or `skip`")]
    fn an_unknown_setting_fails() {
        let _ = decide(&WGPU, Some("yes"), present);
    }
}
