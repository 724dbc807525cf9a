//! Captioning an archive: a manifest of videos, a stable share of it per worker, each video's
//! result written once, and the results merged into the file benchmark scorers read.
//!
//! Nothing here knows about models: [`run`] drives a captioning function over the videos of one
//! shard and keeps the books in the output folder itself, so the folder is the only state. A
//! video is done when `DIR/<id>.json` exists (written atomically) and reads as a result, with
//! every other file the run asks for beside it; failed when `DIR/<id>.error.json` does and no
//! result; a worker killed at any moment loses at most the video in flight, and the same
//! command run again finishes the shard. Shards are a stable function of the video
//! id ([`Shard::owns`]), so no video is ever captioned into two shards' results, whatever the
//! number of shards of each run.

mod manifest;
mod merge;
mod result;
mod run;
mod shard;

pub use manifest::{Entry, Manifest, check_out_dir, read_manifest};
pub use merge::{Merged, merge};
pub use run::{Captioned, Event, Options, Summary, claim_out_dir, first_few, run};
pub use shard::Shard;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The manifest cannot be read or names videos wrongly; says which line.
    #[error("{0}")]
    Manifest(String),
    /// A shard given on the command line or by the environment that makes no sense.
    #[error("{0}")]
    Shard(String),
    /// A file in the output folder that is not a glimpse result.
    #[error("{0}")]
    Result(String),
    /// An output folder that holds another batch's results, or is no folder.
    #[error("{0}")]
    OutDir(String),
    /// The output folder cannot be written or read (the cause follows as the error's source).
    #[error("{}", .path.display())]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Media(#[from] glimpse_media::MediaError),
}

/// An empty folder of its own for a unit test.
#[cfg(test)]
fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("glimpse-batch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
