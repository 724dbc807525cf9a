//! The `glimpse` binary run as users run it, in one test binary (each binary links the whole of
//! Burn and wgpu).

mod batch;
mod catalogue;
mod cli;
mod long_video;
