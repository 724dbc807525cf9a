//! Reading Hugging Face `model.safetensors` files into Burn modules.
//!
//! A model is first built from its config with lazily initialised parameters (nothing is
//! allocated), then each parameter is replaced by the tensor of the same HF name. The loader checks
//! every shape against the module, collects every problem instead of stopping at the first, and
//! at the end reports the tensors nobody asked for. A file that does not fit its config is refused
//! as a whole with a list of what is missing, mis-shaped or unexpected.
//!
//! Models name their tensors once, in a walk over a [`Tensors`] visitor: the [`Loader`] fills the
//! parameters, the [`Saver`] writes them back out under the same names (for models glimpse trains,
//! and for `glimpse models convert`).
//!
//! # Storage formats ([`WeightFormat`])
//!
//! A checkpoint is f32, f16 or q8; the loader reads all three, and every tensor keeps its Hugging
//! Face name. f16 is a standard F16 file (transformers' names and layout); its values are
//! widened to f32 as they are read. q8 (`"glimpse.quantization": "q8-block32"` in the header's
//! `__metadata__`) stores every dense layer's weight and the token embeddings (the tied LM head)
//! as I8 under their usual names and shapes, each with `<name>_scale`: F16 scales, one per 32
//! consecutive inputs, shaped as the weight with its input dimension divided by 32 rounded up
//! (`[out, in/32]` for `nn.Linear`, `[in/32, out]` for GPT-2's `Conv1D`, `[vocab, dim/32]` for an
//! embedding). Weight `w = scale * byte`, bytes in `-127..=127` as written. The loader reads scales
//! of any float type but takes only values in f16's range (`0..=65504`). Everything else (LayerNorms,
//! biases, position embeddings, CLIP's patch convolution) stays f32. Those matrices stay 8-bit in
//! memory too (`nn::Q8Matrix`). A header naming any other scheme is refused.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::prelude::*;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::Mutex;

use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, TensorProblem};
use crate::nn::{Dense, DenseWeight, LayerNorm, Q8Matrix, ShardedTable, TableShard};
use crate::tensor::read;
use glimpse_kernels::Q8_BLOCK;

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
    /// The header names the q8 scheme.
    quantized: bool,
}

/// Random access to the bytes of a weight file that is not in memory as a whole: a file on disk,
/// or (in the browser) a buffer outside the module's memory.
pub trait ReadAt {
    /// Total size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` with the bytes starting at `offset`.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
}

/// A file on disk, read where asked.
struct FileAt(Mutex<std::fs::File>, u64);

impl ReadAt for FileAt {
    fn size(&self) -> u64 {
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

/// The most bytes read from a source outside memory at once.
const STORED_SLICE: usize = 4 << 20;

/// The largest header accepted (safetensors' own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

impl<'a> WeightFile<'a> {
    /// Parses the header of safetensors bytes and checks that every tensor lies inside them.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ModelError> {
        let (header_len, metadata) =
            SafeTensors::read_metadata(bytes).map_err(|e| ModelError::CorruptWeights(e.to_string()))?;
        let quantized = quantization(&metadata).map_err(ModelError::CorruptWeights)?;
        Ok(Self { metadata, data: Stored::Bytes(&bytes[8 + header_len..]), quantized })
    }

    /// Opens a safetensors file, reading only its header now.
    pub fn open(path: &std::path::Path) -> Result<WeightFile<'static>, ModelError> {
        let corrupt = |why: String| ModelError::CorruptWeights(format!("{}: {why}", path.display()));
        let file = glimpse_media::untrusted::open_regular(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => corrupt(format!("{e}; give the path of a safetensors file")),
            _ => corrupt(e.to_string()),
        })?;
        let length = file.metadata().map_err(|e| corrupt(e.to_string()))?.len();
        WeightFile::read_header(Box::new(FileAt(Mutex::new(file), length)), path.display().to_string())
    }

    /// Reads the header from `source` (named `what` in messages); the tensors are read from it
    /// when asked. The header must account for the source's exact length, as [`WeightFile::parse`]
    /// checks for bytes.
    pub fn read_header(source: Box<dyn ReadAt + 'a>, what: String) -> Result<Self, ModelError> {
        let corrupt = |why: String| ModelError::CorruptWeights(format!("{what}: {why}"));
        let length = source.size();
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
        let quantized = quantization(&metadata).map_err(corrupt)?;
        Ok(Self { metadata, data: Stored::At { source, start, what }, quantized })
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

    /// About the memory the tensors take once loaded: 8-bit weights as stored, every other
    /// tensor as f32 (f16 and bf16 are widened).
    pub fn loaded_bytes(&self) -> u64 {
        let names = self.metadata.offset_keys();
        let tensors = names.iter().filter_map(|name| self.metadata.info(name));
        let bytes = |dtype: Dtype, shape: &[usize]| {
            let elements = shape.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64));
            if dtype == Dtype::I8 { elements } else { elements.saturating_mul(4) }
        };
        tensors.map(|info| bytes(info.dtype, &info.shape)).fold(0, u64::saturating_add)
    }

    /// Whether tensor `name` holds 8-bit weights (I8) rather than floats.
    pub fn is_quantized(&self, name: &str) -> bool {
        self.metadata.info(name).is_some_and(|info| info.dtype == Dtype::I8)
    }

    /// Reads elements `range` (row-major) of tensor `name` as f32; the range must lie inside it.
    pub fn read_f32_range(&self, name: &str, range: Range<usize>) -> Result<Vec<f32>, TensorProblem> {
        if self.metadata.info(name).is_some_and(|info| info.dtype == Dtype::F32) {
            let mut values = vec![0f32; range.len()];
            self.read_stored(name, range, bytemuck::cast_slice_mut(&mut values))?;
            if cfg!(target_endian = "big") {
                values.iter_mut().for_each(|value| *value = f32::from_bits(u32::from_le(value.to_bits())));
            }
            return Ok(values);
        }
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

    /// Elements `range` of the I8 tensor `name`.
    fn read_i8_range(&self, name: &str, range: Range<usize>) -> Result<Vec<i8>, TensorProblem> {
        let dtype = self.metadata.info(name).expect("a tensor the caller found").dtype;
        if dtype != Dtype::I8 {
            return Err(TensorProblem::DType { name: name.into(), dtype: format!("{dtype:?}") });
        }
        let mut values = vec![0i8; range.len()];
        self.read_stored(name, range, bytemuck::cast_slice_mut(&mut values))?;
        Ok(values)
    }

    /// Copies the stored bytes of elements `range` (row-major) of tensor `name` into `out`, which
    /// has their size: the caller reads a type exactly as stored, with no conversion.
    fn read_stored(&self, name: &str, range: Range<usize>, out: &mut [u8]) -> Result<(), TensorProblem> {
        let (bytes, _) = self.stored_span(name, range);
        assert_eq!(out.len(), bytes.len(), "`{name}`: the buffer does not fit the elements");
        match &self.data {
            Stored::Bytes(stored) => out.copy_from_slice(&stored[bytes]),
            Stored::At { source, start, what } => {
                // In slices of a few MiB, as `read_each` reads: a source outside memory (the browser's
                // Blob) hands each slice over in a buffer of its own.
                for (i, slice) in out.chunks_mut(STORED_SLICE).enumerate() {
                    let offset = start + (bytes.start + i * STORED_SLICE) as u64;
                    source.read_exact_at(offset, slice).map_err(|e| unreadable(name, what, e))?;
                }
            }
        }
        Ok(())
    }

    /// The bytes of elements `range` (row-major) of tensor `name` within the data section, and
    /// the width of one element; the range must lie inside the tensor.
    fn stored_span(&self, name: &str, range: Range<usize>) -> (Range<usize>, usize) {
        let info = self.metadata.info(name).expect("a tensor the caller found");
        let width = info.dtype.bitsize() / 8;
        let (begin, end) = (info.data_offsets.0 + range.start * width, info.data_offsets.0 + range.end * width);
        assert!(end <= info.data_offsets.1, "elements {range:?} lie outside `{name}`");
        (begin..end, width)
    }

    /// Hands elements `range` (row-major) of the float tensor `name` to `put` as f32, in order.
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
        let (bytes, width) = self.stored_span(name, range);
        match &self.data {
            Stored::Bytes(stored) => stored[bytes].chunks_exact(width).map(convert).for_each(put),
            Stored::At { source, start, what } => {
                // In slices of a few MiB, converted as they come: the stored bytes are never held
                // beside the f32 values.
                let mut chunk = vec![0u8; (STORED_SLICE / width * width).min(bytes.len())];
                let mut offset = start + bytes.start as u64;
                let mut left = bytes.len();
                while left > 0 {
                    let n = left.min(chunk.len());
                    source.read_exact_at(offset, &mut chunk[..n]).map_err(|e| unreadable(name, what, e))?;
                    chunk[..n].chunks_exact(width).map(convert).for_each(&mut put);
                    offset += n as u64;
                    left -= n;
                }
            }
        }
        Ok(())
    }
}

/// A failed read of tensor `name` from the source named `what`.
fn unreadable(name: &str, what: &str, error: std::io::Error) -> TensorProblem {
    TensorProblem::Unreadable { name: name.into(), why: format!("{what}: {error}") }
}

/// The largest weight, in magnitude, glimpse loads. Trained weights lie within a few hundred; a
/// value beyond this is damage (bytes read as another type, a bit flipped), which NaN checks miss
/// and which can overflow f32 on the way to the output, making it NaN.
pub const MAX_WEIGHT: f32 = 1e8;

/// The header's `__metadata__` key naming how a file is quantised, and the one scheme glimpse knows.
pub const QUANTIZATION_KEY: &str = "glimpse.quantization";
pub const Q8_SCHEME: &str = "q8-block32";

/// Whether the header names the q8 scheme; an error for any other scheme.
fn quantization(metadata: &Metadata) -> Result<bool, String> {
    match metadata.metadata().as_ref().and_then(|entries| entries.get(QUANTIZATION_KEY)) {
        None => Ok(false),
        Some(scheme) if scheme == Q8_SCHEME => Ok(true),
        Some(other) => Err(format!(
            "its header names the quantisation scheme `{other}`, and glimpse reads only `{Q8_SCHEME}`; \
             convert the f32 checkpoint again with `glimpse models convert --dtype q8`"
        )),
    }
}

/// How a checkpoint stores its tensors (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    #[default]
    F32,
    F16,
    Q8,
}

impl WeightFormat {
    /// `f32`, `f16` or `q8`, as the command line and the reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8 => "q8",
        }
    }
}

/// A walk over a model's parameters by their Hugging Face names.
pub trait Tensors {
    /// One parameter stored under `name` in `layout`.
    fn param<const D: usize>(&self, name: &str, param: &mut Param<Tensor<D>>, layout: Layout);

    /// A row-sharded `[rows, dim]` table stored as one tensor `name`.
    fn sharded(&self, name: &str, table: &mut ShardedTable);

    /// A dense layer's weight stored under `name` in `layout` (f32 or 8-bit).
    fn matrix(&self, name: &str, weight: &mut DenseWeight, layout: Layout);

    /// `{name}.weight` and, when the layer has one, `{name}.bias`.
    fn dense(&self, name: &str, dense: &mut Dense, layout: Layout) {
        self.matrix(&format!("{name}.weight"), &mut dense.weight, layout);
        if let Some(bias) = dense.bias.as_mut() {
            self.param(&format!("{name}.bias"), bias, Layout::AsStored);
        }
    }

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
        self.param(&format!("{name}.bias"), &mut norm.beta, Layout::AsStored);
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

    /// Reads `name` as host values of `expected` shape (Burn's shape, after `layout`), or records
    /// why not. See [`Layout`] for how stored shapes map to Burn shapes.
    pub fn read_values(&self, name: &str, expected: &[usize], layout: Layout) -> Option<Vec<f32>> {
        let want = stored_shape(expected, layout);
        let count = self.check(name, &want, layout)?;
        let values = self.record(match layout {
            Layout::AsStored | Layout::Scalar => self.file.read_f32_range(name, 0..count),
            Layout::Transposed => self.file.read_f32_transposed(name, want[0], want[1]),
        })?;
        // Where a value read transposed sits in the file.
        let stored = |at: usize| match layout {
            Layout::Transposed => (at % want[0]) * want[1] + at / want[0],
            Layout::AsStored | Layout::Scalar => at,
        };
        self.finite(name, values, stored)
    }

    /// `values` of tensor `name`, or `None` with the problem recorded where one is NaN, infinite or
    /// beyond [`MAX_WEIGHT`] (a broken export, which would make every output NaN); `stored` gives a
    /// value's element index in the file.
    fn finite(&self, name: &str, values: Vec<f32>, stored: impl Fn(usize) -> usize) -> Option<Vec<f32>> {
        match values.iter().position(|v| v.is_nan() || v.abs() > MAX_WEIGHT) {
            None => Some(values),
            Some(at) => {
                let value = match values[at] {
                    v if v.is_finite() => format!("{v:e}, beyond the ±{MAX_WEIGHT:e} any trained weight lies within,"),
                    v => v.to_string(),
                };
                let index = stored(at);
                self.problems.borrow_mut().push(TensorProblem::OutOfRange { name: name.into(), index, value });
                None
            }
        }
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
    fn record<T>(&self, read: Result<T, TensorProblem>) -> Option<T> {
        read.map_err(|problem| self.problems.borrow_mut().push(problem)).ok()
    }

    /// The 8-bit `[n, k]` matrix `name` (stored `[n, k]`, or `[k, n]` for [`Layout::AsStored`])
    /// with its scales, or `None` with every problem recorded.
    fn q8_matrix(&self, name: &str, n: usize, k: usize, layout: Layout) -> Option<Q8Matrix> {
        let blocks = k.div_ceil(Q8_BLOCK);
        let scale_name = format!("{name}_scale");
        let stored_nk = layout == Layout::Transposed;
        let (want, want_scales) = if stored_nk { ([n, k], [n, blocks]) } else { ([k, n], [blocks, n]) };
        if !self.q8_fits(name, &want, &want_scales) {
            return None;
        }
        let (bytes, scales) = if stored_nk {
            let bytes = self.record(self.file.read_i8_range(name, 0..n * k))?;
            (bytes, self.record(self.file.read_f32_range(&scale_name, 0..n * blocks))?)
        } else {
            let stored = self.record(self.file.read_i8_range(name, 0..k * n))?;
            let mut bytes = vec![0i8; n * k];
            for (row, values) in stored.chunks_exact(n).enumerate() {
                for (col, &value) in values.iter().enumerate() {
                    bytes[col * k + row] = value;
                }
            }
            (bytes, self.record(self.file.read_f32_transposed(&scale_name, blocks, n))?)
        };
        self.scales_valid(&scale_name, &scales).then(|| Q8Matrix::new(&bytes, scales, n, k, &self.device))
    }

    /// Whether the 8-bit tensor `name` and its `{name}_scale` are stored in the shapes wanted and
    /// the header names the scheme; every problem is recorded, and both tensors count as used.
    fn q8_fits(&self, name: &str, want: &[usize], want_scales: &[usize]) -> bool {
        let named = self.quantization_named(name);
        let weight = self.check(name, want, Layout::AsStored).is_some();
        let scale = self.check(&format!("{name}_scale"), want_scales, Layout::AsStored).is_some();
        named && weight && scale
    }

    /// Whether the header names the scheme an 8-bit tensor needs; records the problem if not.
    fn quantization_named(&self, name: &str) -> bool {
        if !self.file.quantized {
            self.problems.borrow_mut().push(TensorProblem::Quantization {
                name: name.into(),
                why: format!("it is 8-bit, but the header names no quantisation scheme (`{QUANTIZATION_KEY}`)"),
            });
        }
        self.file.quantized
    }

    /// Scales must lie in `0..=65504` (what the F16 they are written as holds; a larger one would
    /// make weights beyond f32's range); records the problem if not.
    fn scales_valid(&self, name: &str, scales: &[f32]) -> bool {
        let valid = scales.iter().all(|scale| (0.0..=half::f16::MAX.to_f32()).contains(scale));
        if !valid {
            let why = format!("a scale is negative, NaN or above {} (f16's largest)", half::f16::MAX);
            self.problems.borrow_mut().push(TensorProblem::Quantization { name: name.into(), why });
        }
        valid
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

    /// Fills a row-sharded table from the `[rows, dim]` tensor `name` (f32, or 8-bit with
    /// `{name}_scale`), split on the host so no device buffer ever holds the whole table.
    fn sharded(&self, name: &str, table: &mut ShardedTable) {
        let (rows, dim) = (table.rows(), table.dim());
        let blocks = dim.div_ceil(Q8_BLOCK);
        let scale_name = format!("{name}_scale");
        let quantized = self.file.is_quantized(name);
        let fits = match quantized {
            true => self.q8_fits(name, &[rows, dim], &[rows, blocks]),
            false => self.check(name, &[rows, dim], Layout::AsStored).is_some(),
        };
        if !fits {
            return;
        }
        // Block by block from the file: the whole table is never on the host at once. The first
        // block that cannot be read is the one problem recorded.
        let mut failed = false;
        let read_shard = |start: usize, n: usize| -> Option<TableShard> {
            if failed {
                return None;
            }
            let shard = if quantized {
                self.record(self.file.read_i8_range(name, start * dim..(start + n) * dim)).and_then(|bytes| {
                    let scales =
                        self.record(self.file.read_f32_range(&scale_name, start * blocks..(start + n) * blocks))?;
                    self.scales_valid(&scale_name, &scales)
                        .then(|| TableShard::Q8(Q8Matrix::new(&bytes, scales, n, dim, &self.device)))
                })
            } else {
                let block = self.record(self.file.read_f32_range(name, start * dim..(start + n) * dim));
                block.and_then(|block| self.finite(name, block, |at| start * dim + at)).map(|block| {
                    TableShard::F32(Param::from_tensor(Tensor::from_data(
                        TensorData::new(block, [n, dim]),
                        &self.device,
                    )))
                })
            };
            failed = shard.is_none();
            shard
        };
        table.fill(read_shard);
    }

    /// A dense weight in f32 (any float type stored) or, when stored as I8, kept 8-bit.
    fn matrix(&self, name: &str, weight: &mut DenseWeight, layout: Layout) {
        let [inputs, outputs] = weight.dims();
        if self.file.is_quantized(name) {
            if let Some(matrix) = self.q8_matrix(name, outputs, inputs, layout) {
                *weight = DenseWeight::Q8(matrix);
            }
        } else if let Some(values) = self.read_values(name, &[inputs, outputs], layout) {
            let data = TensorData::new(values, [inputs, outputs]);
            *weight = DenseWeight::F32(Param::from_tensor(Tensor::from_data(data, &self.device)));
        }
    }
}

/// Collects a module's parameters under their names and writes them as one safetensors file in
/// a [`WeightFormat`].
#[derive(Default)]
pub struct Saver {
    format: WeightFormat,
    entries: RefCell<Vec<Entry>>,
}

/// A tensor to write, still on the device.
enum Entry {
    /// Name, stored shape and the values flattened in stored order.
    Float(String, Vec<usize>, Tensor<1>),
    /// Name, an `[n, k]` matrix to store as 8-bit, and whether it is stored `[n, k]` (else `[k, n]`).
    Q8(String, Tensor<2>, bool),
}

impl Saver {
    pub fn new(format: WeightFormat) -> Self {
        Self { format, entries: RefCell::default() }
    }

    /// The safetensors bytes of everything visited, with `metadata` in the header (and the
    /// quantisation scheme, for q8).
    pub async fn to_safetensors(self, mut metadata: HashMap<String, String>) -> Result<Vec<u8>, ModelError> {
        let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for entry in self.entries.into_inner() {
            match entry {
                Entry::Float(name, shape, values) => {
                    let values = read::<1, Float, f32>(values.detach()).await?;
                    let (dtype, bytes) = encode(&name, &values, self.format)?;
                    tensors.push((name, dtype, shape, bytes));
                }
                Entry::Q8(name, matrix, stored_nk) => {
                    let [n, k] = matrix.dims();
                    let values = read::<2, Float, f32>(matrix.detach()).await?;
                    if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
                        return Err(ModelError::Input(format!(
                            "`{name}` holds {} and cannot be quantised",
                            values[bad]
                        )));
                    }
                    let (bytes, scales) = Q8Matrix::quantize(&values, k);
                    if let Some(peak) = scales.iter().find(|s| !s.is_finite()) {
                        return Err(ModelError::Input(format!(
                            "`{name}` holds values too large for q8's f16 scales (scale {peak}, at most {}); keep \
                             this checkpoint in f32",
                            half::f16::MAX
                        )));
                    }
                    let blocks = k.div_ceil(Q8_BLOCK);
                    let (bytes, scales, shape, scale_shape) = if stored_nk {
                        (bytes, scales, vec![n, k], vec![n, blocks])
                    } else {
                        (transpose(&bytes, n, k), transpose(&scales, n, blocks), vec![k, n], vec![blocks, n])
                    };
                    let scales = scales.iter().flat_map(|s| half::f16::from_f32(*s).to_le_bytes()).collect();
                    tensors.push((name.clone(), Dtype::I8, shape, bytes.iter().map(|b| *b as u8).collect()));
                    tensors.push((format!("{name}_scale"), Dtype::F16, scale_shape, scales));
                }
            }
        }
        if self.format == WeightFormat::Q8 {
            metadata.insert(QUANTIZATION_KEY.into(), Q8_SCHEME.into());
        }
        let views = tensors
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.clone(), v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ModelError::CorruptWeights(e.to_string()))?;
        safetensors::serialize(views, Some(metadata)).map_err(|e| ModelError::CorruptWeights(e.to_string()))
    }

    fn push<const D: usize>(&self, name: &str, tensor: Tensor<D>) {
        let shape = tensor.dims().to_vec();
        let flat = tensor.reshape([shape.iter().product::<usize>()]);
        self.entries.borrow_mut().push(Entry::Float(name.to_string(), shape, flat));
    }
}

/// Float values as stored in `format`: F16 for f16, F32 otherwise (q8 keeps its small tensors f32).
fn encode(name: &str, values: &[f32], format: WeightFormat) -> Result<(Dtype, Vec<u8>), ModelError> {
    if format != WeightFormat::F16 {
        return Ok((Dtype::F32, values.iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    let halves: Vec<half::f16> = values.iter().map(|v| half::f16::from_f32(*v)).collect();
    if let Some(bad) = values.iter().zip(&halves).position(|(v, h)| v.is_finite() != h.is_finite()) {
        return Err(ModelError::Input(format!(
            "`{name}` holds {}, beyond what f16 holds (65504); keep this checkpoint in f32 or convert it to q8",
            values[bad]
        )));
    }
    Ok((Dtype::F16, halves.iter().flat_map(|h| h.to_le_bytes()).collect()))
}

/// The `[k, n]` transpose of row-major `[n, k]` values.
fn transpose<T: Copy>(values: &[T], n: usize, k: usize) -> Vec<T> {
    (0..k * n).map(|i| values[i % n * k + i / n]).collect()
}

impl Tensors for Saver {
    fn param<const D: usize>(&self, name: &str, param: &mut Param<Tensor<D>>, layout: Layout) {
        match layout {
            Layout::AsStored => self.push(name, param.val()),
            Layout::Transposed => self.push(name, param.val().swap_dims(0, D - 1)),
            Layout::Scalar => {
                let value = param.val().reshape([1]);
                self.entries.borrow_mut().push(Entry::Float(name.to_string(), Vec::new(), value));
            }
        }
    }

    fn sharded(&self, name: &str, table: &mut ShardedTable) {
        match self.format {
            WeightFormat::Q8 => self.entries.borrow_mut().push(Entry::Q8(name.to_string(), table.whole(), true)),
            _ => self.push(name, table.whole()),
        }
    }

    fn matrix(&self, name: &str, weight: &mut DenseWeight, layout: Layout) {
        let stored_nk = layout == Layout::Transposed;
        match self.format {
            WeightFormat::Q8 => {
                let matrix = match weight {
                    DenseWeight::F32(weight) => weight.val().transpose(),
                    DenseWeight::Q8(matrix) => matrix.dequantize(),
                };
                self.entries.borrow_mut().push(Entry::Q8(name.to_string(), matrix, stored_nk));
            }
            _ => {
                let weight = weight.to_f32();
                self.push(name, if stored_nk { weight.transpose() } else { weight });
            }
        }
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
