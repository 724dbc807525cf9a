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
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::Mutex;

use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, TensorProblem};
use crate::nn::ShardedTable;
use crate::tensor::read;

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

/// A parsed safetensors file whose tensors are read one at a time: from bytes in memory (the
/// embedded default) or through [`ReadAt`] (a file on disk, the browser's buffer), so that loading
/// a model never holds the whole file beside the tensors built from it.
pub struct WeightFile<'a> {
    metadata: Metadata,
    data: Stored<'a>,
}

/// Random access to the bytes of a weight file that is not in memory as a whole: a file on disk,
/// or (in the browser) a buffer outside the module's memory.
pub trait ReadAt {
    /// Total length in bytes.
    fn len(&self) -> u64;
    /// Fills `buf` with the bytes starting at `offset`.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
}

/// A file on disk, read where asked.
struct FileAt(Mutex<std::fs::File>, u64);

impl ReadAt for FileAt {
    fn len(&self) -> u64 {
        self.1
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let mut file = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(buf)
    }
}

/// Where the tensors' bytes (everything after the header) are.
enum Stored<'a> {
    Bytes(&'a [u8]),
    /// A source, the offset of its data section, and its name for messages.
    At {
        source: Box<dyn ReadAt + 'a>,
        start: u64,
        what: String,
    },
}

/// The largest header accepted (safetensors' own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

impl<'a> WeightFile<'a> {
    /// Parses the header of safetensors bytes and checks that every tensor lies inside them.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ModelError> {
        let (header_len, metadata) =
            SafeTensors::read_metadata(bytes).map_err(|e| ModelError::CorruptWeights(e.to_string()))?;
        Ok(Self { metadata, data: Stored::Bytes(&bytes[8 + header_len..]) })
    }

    /// Opens a safetensors file, reading only its header now.
    pub fn open(path: &std::path::Path) -> Result<WeightFile<'static>, ModelError> {
        let corrupt = |why: String| ModelError::CorruptWeights(format!("{}: {why}", path.display()));
        // Checked before opening: opening a FIFO for reading would wait for a writer.
        let kind = std::fs::metadata(path).map_err(|e| corrupt(e.to_string()))?;
        if !kind.is_file() {
            return Err(corrupt("not a regular file; give the path of a safetensors file".into()));
        }
        let file = std::fs::File::open(path).map_err(|e| corrupt(e.to_string()))?;
        let length = file.metadata().map_err(|e| corrupt(e.to_string()))?.len();
        WeightFile::read_header(Box::new(FileAt(Mutex::new(file), length)), path.display().to_string())
    }

    /// Reads the header from `source` (named `what` in messages); the tensors are read from it
    /// when asked. The header must account for the source's exact length, as [`WeightFile::parse`]
    /// checks for bytes.
    pub fn read_header(source: Box<dyn ReadAt + 'a>, what: String) -> Result<Self, ModelError> {
        let corrupt = |why: String| ModelError::CorruptWeights(format!("{what}: {why}"));
        let length = source.len();
        let mut prefix = [0u8; 8];
        source.read_exact_at(0, &mut prefix).map_err(|_| corrupt("shorter than a safetensors header".into()))?;
        let header_len = u64::from_le_bytes(prefix);
        if header_len > MAX_HEADER_BYTES || header_len > length.saturating_sub(8) {
            return Err(corrupt(format!("its header claims {header_len} bytes of a {length}-byte file")));
        }
        let mut header = vec![0u8; header_len as usize];
        source.read_exact_at(8, &mut header).map_err(|e| corrupt(e.to_string()))?;
        let metadata: Metadata = serde_json::from_slice(&header).map_err(|e| corrupt(e.to_string()))?;
        let start = 8 + header_len;
        if metadata.data_len() as u64 != length - start {
            return Err(corrupt(format!(
                "its header accounts for {} bytes of tensors, the file holds {}",
                metadata.data_len(),
                length - start
            )));
        }
        Ok(Self { metadata, data: Stored::At { source, start, what } })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.metadata.info(name).is_some()
    }

    /// Every tensor's name, in file order.
    pub fn names(&self) -> Vec<String> {
        self.metadata.offset_keys()
    }

    /// The stored shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.metadata.info(name).map(|info| info.shape.as_slice())
    }

    /// Reads one tensor as f32 values in row-major order, with its stored shape.
    pub fn read_f32(&self, name: &str) -> Result<Option<HostTensor>, TensorProblem> {
        let Some(info) = self.metadata.info(name) else {
            return Ok(None);
        };
        let count = info.shape.iter().product();
        Ok(Some((info.shape.clone(), self.read_f32_range(name, 0..count)?)))
    }

    /// Reads elements `range` (row-major) of tensor `name` as f32; the range must lie inside it.
    pub fn read_f32_range(&self, name: &str, range: Range<usize>) -> Result<Vec<f32>, TensorProblem> {
        let mut values = Vec::with_capacity(range.len());
        self.read_each(name, range, |value| values.push(value))?;
        Ok(values)
    }

    /// Reads the `[rows, cols]` tensor `name` as its `[cols, rows]` transpose, placed as it is read
    /// (no second copy of the matrix).
    pub fn read_f32_transposed(&self, name: &str, rows: usize, cols: usize) -> Result<Vec<f32>, TensorProblem> {
        let mut out = vec![0.0; rows * cols];
        let (mut row, mut col) = (0, 0);
        self.read_each(name, 0..rows * cols, |value| {
            out[col * rows + row] = value;
            col += 1;
            if col == cols {
                (row, col) = (row + 1, 0);
            }
        })?;
        Ok(out)
    }

    /// Hands elements `range` (row-major) of tensor `name` to `put` as f32, in order.
    fn read_each(&self, name: &str, range: Range<usize>, mut put: impl FnMut(f32)) -> Result<(), TensorProblem> {
        let info = self.metadata.info(name).expect("a tensor the caller found");
        let convert: fn(&[u8]) -> f32 = match info.dtype {
            Dtype::F32 => |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Dtype::F16 => |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            Dtype::BF16 => |b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            Dtype::F64 => |b| f64::from_le_bytes(b.try_into().unwrap()) as f32,
            other => {
                return Err(TensorProblem::DType { name: name.into(), dtype: format!("{other:?}") });
            }
        };
        let width = info.dtype.bitsize() / 8;
        let (begin, end) = (info.data_offsets.0 + range.start * width, info.data_offsets.0 + range.end * width);
        assert!(end <= info.data_offsets.1, "elements {range:?} lie outside `{name}`");
        match &self.data {
            Stored::Bytes(bytes) => bytes[begin..end].chunks_exact(width).map(convert).for_each(put),
            Stored::At { source, start, what } => {
                // In slices of a few MiB, converted as they come: the stored bytes are never held
                // beside the f32 values.
                let unreadable =
                    |e: std::io::Error| TensorProblem::Unreadable { name: name.into(), why: format!("{what}: {e}") };
                let mut chunk = vec![0u8; ((4 << 20) / width * width).min(end - begin)];
                let mut offset = start + begin as u64;
                let mut left = end - begin;
                while left > 0 {
                    let n = left.min(chunk.len());
                    source.read_exact_at(offset, &mut chunk[..n]).map_err(unreadable)?;
                    chunk[..n].chunks_exact(width).map(convert).for_each(&mut put);
                    offset += n as u64;
                    left -= n;
                }
            }
        }
        Ok(())
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
        let want = stored_shape(expected, layout);
        let count = self.check(name, &want, layout)?;
        self.record(match layout {
            Layout::AsStored | Layout::Scalar => self.file.read_f32_range(name, 0..count),
            Layout::Transposed => self.file.read_f32_transposed(name, want[0], want[1]),
        })
    }

    /// Marks `name` as used and checks its stored shape against `want` before anything is read;
    /// returns its element count, or records why it cannot be used.
    fn check(&self, name: &str, want: &[usize], layout: Layout) -> Option<usize> {
        self.used.borrow_mut().insert(name.to_string());
        let Some(stored) = self.file.shape(name) else {
            self.problems.borrow_mut().push(TensorProblem::Missing { name: name.into(), expected: want.to_vec() });
            return None;
        };
        let fits = stored == want || (layout == Layout::Scalar && stored == [1]);
        if !fits {
            let found = stored.to_vec();
            self.problems.borrow_mut().push(TensorProblem::Shape { name: name.into(), expected: want.to_vec(), found });
            return None;
        }
        Some(stored.iter().product())
    }

    /// The values of a read, or `None` with the problem recorded.
    fn record(&self, read: Result<Vec<f32>, TensorProblem>) -> Option<Vec<f32>> {
        read.map_err(|problem| self.problems.borrow_mut().push(problem)).ok()
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
            .filter(|name| !used.contains(name) && !ignored(name))
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
        let dim = table.dim();
        if self.check(name, &[table.rows(), dim], Layout::AsStored).is_some() {
            // Block by block from the file: the whole table is never on the host at once. The
            // first block that cannot be read is the one problem recorded.
            let mut failed = false;
            let read_block = |start: usize, rows: usize| {
                let block =
                    (!failed).then(|| self.record(self.file.read_f32_range(name, start * dim..(start + rows) * dim)));
                failed = block.as_ref().is_some_and(Option::is_none);
                block.flatten()
            };
            table.fill(read_block, &self.device);
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
