//! Kernel launches and host readbacks per unit of work (a decoded token, a guided step, a text
//! batch): the count that carries over from lavapipe to a real GPU, where decoding is bounded by
//! how many kernels run and how often the host waits, not by arithmetic.
//!
//! Launches are counted through CubeCL's launch observer, so they exist on wgpu only (the CPU
//! backend launches no kernels); readbacks are glimpse's own reads ([`readbacks`]), on every
//! backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cubecl::logging::{LaunchObservation, LaunchObserver};
use glimpse_models::tensor::readbacks;
use serde_json::json;

/// Counts launches by kernel while alive; one at a time (CubeCL has one observer slot).
pub struct Counter {
    launches: Arc<Launches>,
    _observing: LaunchObservation,
}

#[derive(Default)]
struct Launches(Mutex<HashMap<&'static str, u64>>);

impl LaunchObserver for Launches {
    fn launched(&self, kernel: &'static str) {
        *self.0.lock().expect("no panic while counting").entry(kernel).or_default() += 1;
    }
}

/// Launches by kernel name and readbacks so far.
#[derive(Clone, Default)]
pub struct Count {
    launches: HashMap<&'static str, u64>,
    readbacks: u64,
}

impl Count {
    fn launches(&self) -> u64 {
        self.launches.values().sum()
    }
}

impl Counter {
    pub fn start() -> Self {
        let launches = Arc::new(Launches::default());
        Self { _observing: LaunchObservation::new(launches.clone()), launches }
    }

    pub fn now(&self) -> Count {
        Count { launches: self.launches.0.lock().expect("no panic while counting").clone(), readbacks: readbacks() }
    }
}

/// The counts of one unit of work (`per`) as the bench prints them: from marks taken at the
/// boundaries of equal units (one after each decoded token, say), the lower median unit by launches, so
/// a first step that also compiles or reads a prompt does not set the figure; with its kernels,
/// most launched first.
pub fn per_unit(per: &str, marks: &[Count]) -> serde_json::Value {
    let units: Vec<Count> = marks
        .windows(2)
        .map(|pair| Count {
            launches: pair[1]
                .launches
                .iter()
                .map(|(&kernel, &n)| (kernel, n - pair[0].launches.get(kernel).copied().unwrap_or(0)))
                .filter(|&(_, n)| n > 0)
                .collect(),
            readbacks: pair[1].readbacks - pair[0].readbacks,
        })
        .collect();
    if units.is_empty() {
        return serde_json::Value::Null;
    }
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by_key(|&i| units[i].launches());
    let median = &units[order[(units.len() - 1) / 2]];
    let mut kernels: Vec<(String, u64)> = median.launches.iter().map(|(&kernel, &n)| (short_name(kernel), n)).collect();
    kernels.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    json!({
        "per": per,
        "units": units.len(),
        "launches": median.launches(),
        "readbacks": median.readbacks,
        "kernels": kernels,
    })
}

/// A kernel's type name with every path shortened to its last segment, generic arguments kept
/// (they tell one binary operation from another): `KernelBinop<f32, AddOp>`. glimpse's own WGSL
/// kernels show as `SourceKernel<WgslKernel<LayerNormShader>>` and so on.
fn short_name(kernel: &str) -> String {
    let last_segment = |path: &str| path.rsplit("::").next().unwrap_or_default().to_string();
    let mut short = String::new();
    let mut path = String::new();
    for c in kernel.chars() {
        if "<>,()[]; &".contains(c) {
            short += &last_segment(&path);
            short.push(c);
            path.clear();
        } else {
            path.push(c);
        }
    }
    short += &last_segment(&path);
    // CubeCL's matmul names its whole tiling strategy: its first argument is enough to tell it.
    match short.split_once(", ") {
        Some((first, _)) if short.len() > MAX_NAME => format!("{first}, ..>"),
        _ => short,
    }
}

/// Longest kernel name printed whole.
const MAX_NAME: usize = 48;

#[cfg(test)]
mod tests {
    use super::*;

    fn count(launches: &[(&'static str, u64)], readbacks: u64) -> Count {
        Count { launches: launches.iter().copied().collect(), readbacks }
    }

    #[test]
    fn a_unit_is_the_median_difference_between_marks_with_its_kernels_most_first() {
        let marks = [
            count(&[], 0),
            // A first unit that compiles and reads more than the rest.
            count(&[("a::Matmul<f32>", 40), ("b::Add", 9)], 5),
            count(&[("a::Matmul<f32>", 44), ("b::Add", 12)], 6),
            count(&[("a::Matmul<f32>", 48), ("b::Add", 15), ("c::Gelu", 1)], 7),
            count(&[("a::Matmul<f32>", 52), ("b::Add", 18)], 8),
        ];
        let unit = per_unit("token", &marks);
        assert_eq!(unit["units"], 4);
        assert_eq!(unit["launches"], 7);
        assert_eq!(unit["readbacks"], 1);
        assert_eq!(unit["kernels"], json!([["Matmul<f32>", 4], ["Add", 3]]));
    }

    #[test]
    fn kernel_names_lose_their_module_paths_but_keep_their_arguments() {
        let name = "burn_cubecl::kernel::binary::KernelBinop<f32, burn_cubecl::ops::AddOp, cubecl_wgpu::WgpuRuntime>";
        assert_eq!(short_name(name), "KernelBinop<f32, AddOp, WgpuRuntime>");
        let matmul = format!("cubecl_matmul::MatmulEntry<cubecl::TensorArgs, {}>", ["a::Tiling"; 12].join(", "));
        assert_eq!(short_name(&matmul), "MatmulEntry<TensorArgs, ..>");
    }

    #[test]
    fn fewer_than_two_marks_count_nothing() {
        assert_eq!(per_unit("token", &[count(&[("k", 1)], 1)]), serde_json::Value::Null);
    }
}
