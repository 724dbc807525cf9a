//! Tensor helpers every crate uses: readback to the host, token-id tensors, row normalisation,
//! the masked language-modelling loss, and top-k / argmax over host values.

use std::sync::atomic::{AtomicU64, Ordering};

use burn::prelude::*;
use burn::tensor::Element;
use burn::tensor::activation::log_softmax;
use burn::tensor::kind::Basic;

use crate::error::ModelError;

static READBACKS: AtomicU64 = AtomicU64::new(0);

/// How many reads [`read`] has started in this process. Every value glimpse brings back from a
/// device goes through [`read`], so this counts its host-device syncs (`glimpse bench` prints them
/// per step).
pub fn readbacks() -> u64 {
    READBACKS.load(Ordering::Relaxed)
}

/// Reads a tensor back to the host as `E`, awaiting the device (required in the browser).
pub async fn read<const D: usize, K: Basic, E: Element>(tensor: Tensor<D, K>) -> Result<Vec<E>, ModelError> {
    READBACKS.fetch_add(1, Ordering::Relaxed);
    let data = tensor.into_data_async().await.map_err(|e| ModelError::Readback(e.to_string()))?;
    data.try_into_vec_as::<E>().map_err(|e| ModelError::Readback(format!("{e:?}")))
}

/// `[1, n]` token tensor.
pub fn ids_tensor(ids: &[u32], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = ids.iter().map(|&id| i64::from(id)).collect();
    Tensor::from_data(TensorData::new(data, [1, ids.len()]), device)
}

/// Rows scaled to unit L2 norm: `[n, d]` -> `[n, d]`; an all-zero row stays zero.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    // Clamped before the root: at a zero row the gradient is then finite (as the pooling kernel's
    // is), where sqrt's infinite slope times the clamp's zero would be NaN.
    let norm = x.clone().square().sum_dim(1).clamp_min(1e-24).sqrt();
    x / norm
}

/// Indices of the `k` largest values, best first, ties to the lower index. A partial selection:
/// only the `k` winners are sorted, not the whole vocabulary.
pub fn top_k_indices(values: &[f32], k: usize) -> Vec<usize> {
    let order = |&a: &usize, &b: &usize| values[b].total_cmp(&values[a]).then(a.cmp(&b));
    let mut ids: Vec<usize> = (0..values.len()).collect();
    let k = k.min(ids.len());
    if k == 0 {
        return Vec::new();
    }
    ids.select_nth_unstable_by(k - 1, order);
    ids.truncate(k);
    ids.sort_by(order);
    ids
}

/// Index of the first maximum (ties go to the lower index, as `torch.argmax`).
pub fn argmax_first(values: &[f32]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}

/// Mean negative log-likelihood of `targets` (`[batch, len]`) under `logits`
/// (`[batch, len, vocab]`), over the positions where `mask` (`[batch, len]`) is 1: the loss of
/// every language model glimpse trains, padding masked out.
pub fn masked_nll(logits: Tensor<3>, targets: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<1> {
    let [batch, len, _] = logits.dims();
    let nll = log_softmax(logits, 2).gather(2, targets.unsqueeze_dim(2)).reshape([batch, len]).neg();
    (nll * mask.clone()).sum() / mask.sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_indices_are_best_first_with_ties_to_the_lower_index() {
        let values = [0.5, 2.0, -1.0, 2.0, 0.5, f32::NEG_INFINITY];
        assert_eq!(top_k_indices(&values, 3), [1, 3, 0]);
        assert_eq!(top_k_indices(&values, 10), [1, 3, 0, 4, 2, 5]);
        assert!(top_k_indices(&values, 0).is_empty());
    }
}
