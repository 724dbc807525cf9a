//! Whether the host has the memory a model's weights take, asked before they are loaded: past
//! it, an allocation fails midway and the process aborts with no word of which model or why.

use crate::ModelError;

/// What the process can still allocate, as far as the system says: the smallest of the memory
/// available (`MemAvailable` plus free swap), what its cgroup leaves (a container's limit less
/// its use: `/proc/meminfo` shows the host's), and its address-space limit (`ulimit -v`, whole:
/// the address space a process reserves runs far ahead of what it uses); `None` where none can be
/// read (not Linux).
pub fn available() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let kib = |text: &str, field: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(field))?;
        Some(line[field.len()..].trim().trim_end_matches("kB").trim().parse::<u64>().ok()? * 1024)
    };
    let number = |text: String| text.trim().parse::<u64>().ok();
    let system = read("/proc/meminfo")
        .and_then(|info| Some(kib(&info, "MemAvailable:")? + kib(&info, "SwapFree:").unwrap_or(0)));
    // cgroup v2, then v1 (whose "no limit" is a number near 2^63).
    let cgroup = [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ]
    .iter()
    .find_map(|(limit, usage)| Some(number(read(limit)?)?.saturating_sub(number(read(usage)?)?)));
    let address_space = read("/proc/self/limits").and_then(|limits| {
        let line = limits.lines().find(|l| l.starts_with("Max address space"))?;
        line.split_whitespace().nth(3)?.parse::<u64>().ok()
    });
    [system, cgroup, address_space].into_iter().flatten().min()
}

/// Refuses weights of `bytes` once loaded where `available` is less, saying how much each is and
/// what to do.
pub fn check_fits(bytes: u64, available: Option<u64>) -> Result<(), ModelError> {
    let Some(available) = available else { return Ok(()) };
    if bytes <= available {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    Err(ModelError::Layout(format!(
        "its weights take {:.1} GiB in memory once loaded, and this process can have {:.1} GiB (the memory \
         available, its container's limit, or `ulimit -v`); free memory, use a machine with more, or convert the \
         checkpoint to 8-bit weights (`glimpse models convert DIR --dtype q8 --out DIR2`: about a quarter)",
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
        assert!(err.contains("take 6.0 GiB") && err.contains("can have 1.5 GiB") && err.contains("q8"), "{err}");
        if cfg!(target_os = "linux") {
            assert!(available().is_some_and(|bytes| bytes > 0), "Linux says what is available");
        }
    }
}
