//! Reading Hugging Face `model.safetensors` files into Burn modules.
//!
//! A model is first built from its config with lazily initialised parameters (nothing is
//! allocated), then each parameter is replaced by the tensor of the same HF name. The loader checks
//! every shape against the module, collects every problem instead of stopping at the first, and
//! at the end reports the tensors nobody asked for. A file that does not fit its config is refused
//! as a whole with a list of what is missing, mis-shaped or unexpected.
//!
//! Models name their tensors once, in a walk over a [`Tensors`] visitor: the [`Loader`] fills the
//! parameters, the [`Saver`] writes them back out under the same names (for models glimpse trains).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::prelude::*;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, TensorProblem};
use crate::generation::read;
use crate::nn::ShardedTable;

/// How a stored matrix maps onto Burn's `[d_input, d_output]` linear weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Stored as Burn wants it: GPT-2's `Conv1D` (`[in, out]`), embeddings, biases.
    AsStored,
    /// Stored as PyTorch `nn.Linear` (`[out, in]`): transposed on load.
    Transposed,
    /// A `[1]` parameter stored as a rank-0 tensor (CLIP's `logit_scale`); `[1]` is read too.
    Scalar,
}

/// A tensor on the host: its shape and row-major f32 values.
pub type HostTensor = (Vec<usize>, Vec<f32>);

/// A parsed safetensors file, borrowing the file's bytes (no copy of the whole file is made).
pub struct WeightFile<'a> {
    tensors: SafeTensors<'a>,
}

impl<'a> WeightFile<'a> {
    /// Parses the header and checks that every tensor lies inside the buffer.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ModelError> {
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| ModelError::CorruptWeights(e.to_string()))?;
        Ok(Self { tensors })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.tensor(name).is_ok()
    }

    pub fn names(&self) -> Vec<&str> {
        self.tensors.names()
    }

    /// Reads one tensor as f32 values in row-major order, with its stored shape.
    pub fn read_f32(&self, name: &str) -> Result<Option<HostTensor>, TensorProblem> {
        let Ok(view) = self.tensors.tensor(name) else {
            return Ok(None);
        };
        let bytes = view.data();
        let values = match view.dtype() {
            Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::F64 => bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
            other => {
                return Err(TensorProblem::DType { name: name.into(), dtype: format!("{other:?}") });
            }
        };
        Ok(Some((view.shape().to_vec(), values)))
    }
}

/// A walk over a model's parameters by their Hugging Face names.
pub trait Tensors {
    /// One parameter stored under `name` in `layout`.
    fn param<const D: usize>(&self, name: &str, param: &mut Param<Tensor<D>>, layout: Layout);

    /// A row-sharded `[rows, dim]` table stored as one tensor `name`.
    fn sharded(&self, name: &str, table: &mut ShardedTable);

    /// `{name}.weight` and, when the module has one, `{name}.bias`.
    fn linear(&self, name: &str, linear: &mut Linear, layout: Layout) {
        self.param(&format!("{name}.weight"), &mut linear.weight, layout);
        if let Some(bias) = linear.bias.as_mut() {
            self.param(&format!("{name}.bias"), bias, Layout::AsStored);
        }
    }

    /// PyTorch's `weight`/`bias` are Burn's `gamma`/`beta`.
    fn layer_norm(&self, name: &str, norm: &mut LayerNorm) {
        self.param(&format!("{name}.weight"), &mut norm.gamma, Layout::AsStored);
        if let Some(beta) = norm.beta.as_mut() {
            self.param(&format!("{name}.bias"), beta, Layout::AsStored);
        }
    }

    fn embedding(&self, name: &str, embedding: &mut Embedding) {
        self.param(&format!("{name}.weight"), &mut embedding.weight, Layout::AsStored);
    }
}

/// Fills a module's parameters from a [`WeightFile`], recording problems as it goes.
pub struct Loader<'f, 'a> {
    file: &'f WeightFile<'a>,
    device: Device,
    used: RefCell<BTreeSet<String>>,
    problems: RefCell<Vec<TensorProblem>>,
}

impl<'f, 'a> Loader<'f, 'a> {
    pub fn new(file: &'f WeightFile<'a>, device: &Device) -> Self {
        Self { file, device: device.clone(), used: RefCell::default(), problems: RefCell::default() }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.file.contains(name)
    }

    /// Reads `name` as host values of `expected` shape (Burn's shape, after `layout`), or records
    /// why not. See [`Layout`] for how stored shapes map to Burn shapes.
    pub fn read_values(&self, name: &str, expected: &[usize], layout: Layout) -> Option<Vec<f32>> {
        self.used.borrow_mut().insert(name.to_string());
        let want = stored_shape(expected, layout);
        let (stored, values) = match self.file.read_f32(name) {
            Ok(Some(found)) => found,
            Ok(None) => {
                self.problems.borrow_mut().push(TensorProblem::Missing { name: name.into(), expected: want });
                return None;
            }
            Err(problem) => {
                self.problems.borrow_mut().push(problem);
                return None;
            }
        };
        let fits = stored == want || (layout == Layout::Scalar && stored == [1]);
        if !fits {
            self.problems.borrow_mut().push(TensorProblem::Shape { name: name.into(), expected: want, found: stored });
            return None;
        }
        Some(match layout {
            Layout::AsStored | Layout::Scalar => values,
            Layout::Transposed => transpose(&values, want[0], want[1]),
        })
    }

    /// Ends loading: every recorded problem and every tensor that was neither read nor `ignored`
    /// (buffers such as GPT-2's `attn.bias`) make the whole load fail.
    pub fn finish(self, ignored: impl Fn(&str) -> bool) -> Result<(), ModelError> {
        let used = self.used.into_inner();
        let problems = self.problems.into_inner();
        let unexpected: Vec<String> = self
            .file
            .names()
            .into_iter()
            .filter(|name| !used.contains(*name) && !ignored(name))
            .map(str::to_string)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if problems.is_empty() && unexpected.is_empty() {
            Ok(())
        } else {
            Err(ModelError::WeightMismatch { problems, unexpected })
        }
    }
}

impl Tensors for Loader<'_, '_> {
    /// Replaces `param` with the stored tensor `name`; the parameter's own shape is the expectation.
    fn param<const D: usize>(&self, name: &str, param: &mut Param<Tensor<D>>, layout: Layout) {
        let expected: [usize; D] = param.lazy_shape().dims();
        if let Some(values) = self.read_values(name, &expected, layout) {
            *param = Param::from_tensor(Tensor::from_data(TensorData::new(values, expected), &self.device));
        }
    }

    /// Fills a row-sharded table from the `[rows, dim]` tensor `name`, split on the host so no
    /// device buffer ever holds the whole table.
    fn sharded(&self, name: &str, table: &mut ShardedTable) {
        let shape = [table.rows(), table.dim()];
        if let Some(values) = self.read_values(name, &shape, Layout::AsStored) {
            table.set_rows(&values, &self.device);
        }
    }
}

/// Collects a module's parameters under their names and writes them as one f32 safetensors file.
#[derive(Default)]
pub struct Saver {
    /// Name, stored shape and the values flattened in stored order.
    entries: RefCell<Vec<(String, Vec<usize>, Tensor<1>)>>,
}

impl Saver {
    /// The safetensors bytes of everything visited, with `metadata` in the header.
    pub async fn to_safetensors(self, metadata: HashMap<String, String>) -> Result<Vec<u8>, ModelError> {
        let mut tensors = Vec::new();
        for (name, shape, values) in self.entries.into_inner() {
            let values = read::<1, Float, f32>(values.detach()).await?;
            tensors.push((name, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()));
        }
        let views = tensors
            .iter()
            .map(|(name, shape, bytes)| {
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.clone(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ModelError::CorruptWeights(e.to_string()))?;
        safetensors::serialize(views, Some(metadata)).map_err(|e| ModelError::CorruptWeights(e.to_string()))
    }

    fn push<const D: usize>(&self, name: &str, tensor: Tensor<D>) {
        let shape = tensor.dims().to_vec();
        let flat = tensor.reshape([shape.iter().product::<usize>()]);
        self.entries.borrow_mut().push((name.to_string(), shape, flat));
    }
}

impl Tensors for Saver {
    fn param<const D: usize>(&self, name: &str, param: &mut Param<Tensor<D>>, layout: Layout) {
        match layout {
            Layout::AsStored => self.push(name, param.val()),
            Layout::Transposed => self.push(name, param.val().swap_dims(0, D - 1)),
            Layout::Scalar => {
                let value = param.val().reshape([1]);
                self.entries.borrow_mut().push((name.to_string(), Vec::new(), value));
            }
        }
    }

    fn sharded(&self, name: &str, table: &mut ShardedTable) {
        self.push(name, table.whole());
    }
}

/// The header metadata transformers writes (`{"format": "pt"}`), which it expects when loading.
pub fn pytorch_metadata() -> HashMap<String, String> {
    HashMap::from([("format".to_string(), "pt".to_string())])
}

fn stored_shape(burn_shape: &[usize], layout: Layout) -> Vec<usize> {
    match layout {
        Layout::AsStored => burn_shape.to_vec(),
        Layout::Transposed => burn_shape.iter().rev().copied().collect(),
        Layout::Scalar => Vec::new(),
    }
}

/// Transposes a row-major `[rows, cols]` matrix.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}
