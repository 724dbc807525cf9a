//! Whether the host has the memory a model's weights take, asked before they are loaded: past
//! it, an allocation fails midway and the process aborts with no word of which model or why.

use crate::ModelError;

/// What the process can still allocate, as far as the system says: the memory available to it
/// (`MemAvailable` plus free swap) and what its address-space limit (`ulimit -v`) leaves, the
/// smaller; `None` where neither can be read (not Linux).
pub fn available() -> Option<u64> {
    let kib = |text: &str, field: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(field))?;
        Some(line[field.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().ok()? * 1024)
    };
    let system = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| Some(kib(&info, "MemAvailable:")? + kib(&info, "SwapFree:").unwrap_or(0)));
    let address_space = std::fs::read_to_string("/proc/self/limits").ok().and_then(|limits| {
        let line = limits.lines().find(|l| l.starts_with("Max address space"))?;
        let limit = line.split_whitespace().nth(3)?.parse::<u64>().ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        Some(limit.saturating_sub(kib(&status, "VmSize:")?))
    });
    match (system, address_space) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Refuses weights of `bytes` once loaded where `available` is less (with a margin for the work
/// around them), saying how much each is and what to do.
pub fn check_fits(bytes: u64, available: Option<u64>) -> Result<(), ModelError> {
    let Some(available) = available else { return Ok(()) };
    if bytes <= available {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    Err(ModelError::Layout(format!(
        "its weights take {:.1} GiB in memory once loaded, and this process can have {:.1} GiB more (the memory \
         available, or what `ulimit -v` leaves); free memory, use a machine with more, or convert the checkpoint to \
         8-bit weights (`glimpse models convert DIR --dtype q8 --out DIR2`: about a quarter)",
        gib(bytes),
        gib(available)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_beyond_what_is_available_are_refused_with_both_sizes() {
        assert!(check_fits(1 << 30, None).is_ok(), "nothing known, nothing refused");
        assert!(check_fits(1 << 30, Some(2 << 30)).is_ok());
        let err = check_fits(6 << 30, Some(3 << 29)).unwrap_err().to_string();
        assert!(err.contains("take 6.0 GiB") && err.contains("can have 1.5 GiB more") && err.contains("q8"), "{err}");
        if cfg!(target_os = "linux") {
            assert!(available().is_some_and(|bytes| bytes > 0), "Linux says what is available");
        }
    }
}
