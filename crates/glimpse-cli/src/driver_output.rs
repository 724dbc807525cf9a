//! GPU drivers write straight to the process's stderr while wgpu probes for an adapter (Mesa on a
//! headless Linux machine prints `error: XDG_RUNTIME_DIR is invalid or not set in the
//! environment.` several times, then works). Those lines say nothing to a glimpse user, so the
//! probe runs with stderr captured, and what the drivers said is shown only when it may explain
//! a failure.

/// Runs `probe` with file descriptor 2 redirected to a temporary file; returns its result and what
/// was written meanwhile. Called before any work starts, so no other thread is writing to stderr.
#[cfg(unix)]
pub fn captured<T>(probe: impl FnOnce() -> T) -> (T, String) {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;

    let path = std::env::temp_dir().join(format!("glimpse-driver-output-{}", std::process::id()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path);
    let _ = std::fs::remove_file(&path);
    let Ok(mut file) = file else { return (probe(), String::new()) };
    let _ = std::io::stderr().flush();
    // SAFETY: plain descriptor calls on descriptors this function owns or the process's stderr.
    let saved = unsafe { libc::dup(2) };
    if saved < 0 || unsafe { libc::dup2(file.as_raw_fd(), 2) } < 0 {
        return (probe(), String::new());
    }
    let result = probe();
    unsafe {
        libc::dup2(saved, 2);
        libc::close(saved);
    }
    let mut said = String::new();
    let _ = file.rewind().and_then(|()| file.take(16 << 10).read_to_string(&mut said));
    (result, said.trim().to_string())
}

#[cfg(not(unix))]
pub fn captured<T>(probe: impl FnOnce() -> T) -> (T, String) {
    (probe(), String::new())
}
