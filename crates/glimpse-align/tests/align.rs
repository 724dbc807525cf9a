//! glimpse-align's tests in one test binary (each binary links the whole of Burn and wgpu).

mod captioning;
mod moments;
mod projector;
