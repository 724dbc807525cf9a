//! The workspace-level tests in one test binary: each binary links the whole of Burn and wgpu
//! (about 200 MB unoptimised), so one per file cost a link and its disk each.

mod bad_input;
mod densevid;
mod formats;
mod fuzz_replay;
mod hub;
mod parity;
mod protocol;
mod saving;
mod world;
