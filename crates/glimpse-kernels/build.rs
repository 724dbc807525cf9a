//! Names what the build has, for the code: `wgpu` (the WGSL kernels: every build but the browser's
//! threaded engine, wasm with `atomics`, where cubecl-wgpu does not build) and `threads` (rayon's
//! pool: native builds and that engine). `Cargo.toml` picks the dependencies by the same rule.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(wgpu)");
    println!("cargo::rustc-check-cfg=cfg(threads)");
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let atomics = features.split(',').any(|feature| feature == "atomics");
    let wasm = std::env::var("CARGO_CFG_TARGET_FAMILY").is_ok_and(|family| family.split(',').any(|f| f == "wasm"));
    if !atomics {
        println!("cargo::rustc-cfg=wgpu");
    }
    if !wasm || atomics {
        println!("cargo::rustc-cfg=threads");
    }
}
