//! Every kernel's parity and dispatch tests, in one test binary: each binary links the whole of
//! Burn, CubeCL and wgpu (about 150 MB unoptimised), so one per kernel cost a link and its disk each.

mod support;

mod attention;
mod bias_activation;
mod decode_attention;
mod layer_norm;
mod linear;
mod masked_pool;
mod matmul_t;
mod q8;

/// WebGPU guarantees a shader stage eight storage buffers (`maxStorageBuffersPerShaderStage`), and
/// no more: a kernel binding a ninth would fail on adapters that offer only those (lavapipe offers
/// more, so no other test would notice).
#[test]
fn every_kernel_binds_at_most_eight_storage_buffers() {
    let shaders = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut checked = 0;
    for entry in std::fs::read_dir(&shaders).expect("the shaders folder") {
        let path = entry.expect("a shader").path();
        if path.extension().is_some_and(|extension| extension == "wgsl") {
            let text = std::fs::read_to_string(&path).expect("a readable shader");
            let storage = text
                .lines()
                .filter(|line| line.trim_start().starts_with("@group(0)") && line.contains("var<storage"))
                .count();
            assert!(storage <= 8, "{}: {storage} storage bindings", path.display());
            checked += usize::from(storage > 0);
        }
    }
    assert!(checked >= 10, "only {checked} shaders declare storage bindings");
}
