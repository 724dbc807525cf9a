//! The CPU backend's side of the kernels: reading `FlexTensor` buffers, splitting work over
//! rayon's threads, and the product of a few rows split so that each thread reads its own part of
//! the weight.

use burn::backend::DispatchDevice;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;

/// Whether `tensor` lives on the CPU backend (tracked by autodiff or not).
pub(crate) fn on_flex<const D: usize>(tensor: &Tensor<D>) -> bool {
    is_cpu(&tensor.device())
}

/// Whether `device` is the CPU backend (under autodiff or not), where a pass costs its arithmetic
/// rather than its kernel launches.
pub fn is_cpu(device: &Device) -> bool {
    matches!(device.clone().inner().as_dispatch(), DispatchDevice::Flex(_))
}

/// Whether `tensor` is f32 on the CPU backend (tracked by autodiff or not): what the CPU kernels read.
pub(crate) fn flex_f32<const D: usize>(tensor: &Tensor<D>) -> bool {
    on_flex(tensor) && tensor.dtype() == burn::tensor::DType::F32
}

/// `[rows, columns]` of a 2-d tensor.
pub(crate) fn dims2(tensor: &FlexTensor) -> [usize; 2] {
    let shape = tensor.layout().shape();
    [shape[0], shape[1]]
}

/// The elements of a contiguous tensor, in order (its buffer may start before them).
pub(crate) fn elements<E: burn::tensor::Element + bytemuck::Pod>(tensor: &FlexTensor) -> &[E] {
    let (start, end) = tensor.layout().contiguous_offsets().expect("a contiguous tensor");
    &tensor.storage::<E>()[start..end]
}

/// Rows of a weight one CPU task reads at least, so that a task is worth its scheduling.
pub(crate) const ROWS_PER_TASK: usize = 16;

/// Fewest multiply-adds (or elements) a CPU pass shares out over threads. Natively any: a task
/// reaches another thread in microseconds. In the browser's threaded engine it wakes another Web
/// Worker, which takes tens of them (web/README.md), and the demo's small models ran slower on two
/// threads than on one.
#[cfg(threads)]
const PARALLEL_MIN_WORK: usize = if cfg!(target_family = "wasm") { 1 << 18 } else { 1 };

/// `fill(index, part)` for each `part_len`-long part of `out` (the last may be shorter), `work`
/// multiply-adds (or elements) in all: over rayon's threads, at least `min_parts` parts per task
/// (where the parts make one task, rayon runs it on the calling thread); in turn in the browser's
/// single-threaded engine, or for less work than [`PARALLEL_MIN_WORK`].
pub(crate) fn for_each_part(
    out: &mut [f32],
    part_len: usize,
    min_parts: usize,
    work: usize,
    fill: impl Fn((usize, &mut [f32])) + Send + Sync,
) {
    #[cfg(threads)]
    if work >= PARALLEL_MIN_WORK {
        use rayon::prelude::*;
        out.par_chunks_mut(part_len).enumerate().with_min_len(min_parts).for_each(fill);
        return;
    }
    let _ = (min_parts, work);
    out.chunks_mut(part_len).enumerate().for_each(fill);
}

/// Threads for a pass of `work` multiply-adds: rayon's, or one below [`PARALLEL_MIN_WORK`] (and in
/// the browser's single-threaded engine).
fn threads_for(work: usize) -> usize {
    #[cfg(threads)]
    if work >= PARALLEL_MIN_WORK {
        return rayon::current_num_threads();
    }
    let _ = work;
    1
}

/// A `[rows, columns]` matrix in a buffer, as gemm reads it: element `(r, c)` at `start + r *
/// row_stride + c * column_stride` of `values`.
pub(crate) struct Strided<'a> {
    values: &'a [f32],
    start: usize,
    rows: usize,
    columns: usize,
    row_stride: isize,
    column_stride: isize,
}

impl<'a> Strided<'a> {
    /// A tensor's buffer and 2-d layout.
    pub fn of(tensor: &'a FlexTensor) -> Self {
        let layout = tensor.layout();
        let ([rows, columns], strides) = (dims2(tensor), layout.strides());
        let (row_stride, column_stride) = (strides[0], strides[1]);
        Self { values: tensor.storage(), start: layout.start_offset(), rows, columns, row_stride, column_stride }
    }

    /// A row-major `[rows, columns]` matrix.
    pub fn row_major(values: &'a [f32], rows: usize, columns: usize) -> Self {
        assert_eq!(values.len(), rows * columns, "Strided::row_major: not [{rows}, {columns}]");
        Self { values, start: 0, rows, columns, row_stride: columns as isize, column_stride: 1 }
    }

    /// The matrix transposed (no copy).
    pub fn transposed(self) -> Self {
        Self {
            rows: self.columns,
            columns: self.rows,
            row_stride: self.column_stride,
            column_stride: self.row_stride,
            ..self
        }
    }
}

/// `[m, inner] x rhs [inner, n] -> [m, n]` for a few contiguous rows `x`, split over rayon's threads
/// so that each task reads its own contiguous stretch of `rhs`. Burn's CPU matmul runs such
/// products on one thread (it splits only those of at least 192^3 multiply-adds, and gemm's
/// matrix-vector path, one row against the LM head, ignores its thread count), and one core cannot
/// read a large weight matrix at the memory's speed.
///
/// Where `rhs`'s rows are contiguous (a weight stored `[inner, n]`), each task multiplies a block
/// of its rows (a slice of `inner`) and the partial products are summed; where its columns are (a
/// weight stored `[n, inner]` and read transposed), each task computes a block of output columns.
/// Splitting the columns of row-major storage instead would give each task short strided reads:
/// 1.5x slower on one thread than one whole product.
pub(crate) fn few_rows_product(x: &[f32], m: usize, rhs: &Strided) -> Vec<f32> {
    let (inner, n) = (rhs.rows, rhs.columns);
    // The reads below are unchecked: the shapes must agree here.
    assert_eq!(x.len(), m * inner, "few_rows_product: x is not [{m}, {inner}]");
    // Nothing to read (and the row split below counts parts by dividing by rows).
    if inner == 0 || n == 0 {
        return vec![0f32; m * n];
    }
    let work = m * inner * n;
    if rhs.column_stride == 1 && n > 1 {
        let rows = inner.div_ceil(threads_for(work).min(inner / ROWS_PER_TASK).max(1));
        // Counted from `rows`, so that every part starts inside `rhs` and holds at least one row.
        let parts = inner.div_ceil(rows);
        let mut partials = vec![0f32; parts * m * n];
        for_each_part(&mut partials, m * n, 1, work, |(part, out)| {
            let first = part * rows;
            // SAFETY: `first < inner`, so rows `first..first + count` of `rhs` and columns
            // `first..first + count` of `x` lie inside them; `out` is `[m, n]`.
            unsafe {
                let count = rows.min(inner - first);
                gemm_into(
                    out,
                    m,
                    n,
                    count,
                    x.as_ptr().add(first),
                    inner,
                    rhs,
                    first as isize * rhs.row_stride,
                    gemm::Parallelism::None,
                );
            }
        });
        let (out, rest) = partials.split_at_mut(m * n);
        for partial in rest.chunks_exact(m * n) {
            out.iter_mut().zip(partial).for_each(|(total, value)| *total += value);
        }
        partials.truncate(m * n);
        return partials;
    }
    // About four blocks per thread, for balance, of at least 16 columns; one block on one thread.
    let width = match threads_for(work) {
        1 => n,
        threads => n.div_ceil(4 * threads).max(16).min(n),
    };
    // Block-major while computing (block b holds `[m, its width]`), so each task writes one slice.
    let mut by_block = vec![0f32; m * n];
    for_each_part(&mut by_block, m * width, 1, work, |(block, out)| {
        let (first, columns) = (block * width, out.len() / m);
        // SAFETY: columns `first..first + columns` of `rhs` lie inside it; `out` is `[m, columns]`.
        unsafe {
            gemm_into(
                out,
                m,
                columns,
                inner,
                x.as_ptr(),
                inner,
                rhs,
                first as isize * rhs.column_stride,
                gemm::Parallelism::None,
            )
        };
    });
    if m == 1 {
        return by_block;
    }
    let mut out = vec![0f32; m * n];
    for (block, values) in by_block.chunks(m * width).enumerate() {
        let columns = values.len() / m;
        for (row, values) in values.chunks_exact(columns).enumerate() {
            out[row * n + block * width..][..columns].copy_from_slice(values);
        }
    }
    out
}

/// Most rows for which [`gemm_into`] has gemm write a product whose right-hand side is read
/// transposed column-major (and transposes it after). gemm packs its left-hand operand into
/// panels of rows and, for a row-major product, swaps the operands: a transposed weight (a
/// backward's `dL/dy W^T`, the LM head's `x E^T`) then is that operand, gathered element by element
/// on every call, which gemm's 64-row AVX-512 panels make costlier still. Written column-major, the
/// few rows of `x` are packed instead and the weight is read as it lies: ZeroTA 17.0 -> 8.2 s, the
/// prefix step 225 -> 200 ms with the AVX-512 kernels (`bench/RESULTS.md`, 2026-12-05 03:02 and
/// 03:23). From about 400 rows on the gather pays for itself and the row-major product is faster.
const COLUMN_MAJOR_MAX_ROWS: usize = 256;

/// `out [m, n] = lhs [m, inner] x rhs'`, where `lhs` has row stride `lhs_stride` and `rhs'` is
/// `rhs` from `offset` elements past its start, `[inner, n]` in its strides.
///
/// # Safety
/// `out` holds `m * n` values; `m` rows of `inner` values at `lhs` and the `[inner, n]` matrix at
/// `offset` lie inside their buffers.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into(
    out: &mut [f32],
    m: usize,
    n: usize,
    inner: usize,
    lhs: *const f32,
    lhs_stride: usize,
    rhs: &Strided,
    offset: isize,
    parallelism: gemm::Parallelism,
) {
    debug_assert_eq!(out.len(), m * n);
    let rhs_start = unsafe { rhs.values.as_ptr().add(rhs.start).offset(offset) };
    let lhs = (lhs, lhs_stride as isize, 1);
    let rhs_strides = (rhs_start, rhs.row_stride, rhs.column_stride);
    // The wasm build's own product packs the weight whatever its layout.
    if rhs.column_stride == 1 || !(2..=COLUMN_MAJOR_MAX_ROWS).contains(&m) || wasm_product_takes(m) {
        unsafe { gemm_strided([m, inner, n], (out.as_mut_ptr(), n as isize, 1), false, lhs, rhs_strides, parallelism) };
        return;
    }
    let mut by_column = vec![0f32; m * n];
    unsafe {
        gemm_strided([m, inner, n], (by_column.as_mut_ptr(), 1, m as isize), false, lhs, rhs_strides, parallelism)
    };
    // Sixteen output rows at a time: each column's read is one cache line, and the writes go to
    // sixteen rows rather than all of them.
    let rows_of = |(block, out): (usize, &mut [f32])| {
        let (first, rows) = (block * 16, out.len() / n);
        for (column, values) in by_column.chunks_exact(m).enumerate() {
            for (row, &value) in values[first..first + rows].iter().enumerate() {
                out[row * n + column] = value;
            }
        }
    };
    // As many threads as the product had: none counts no work to share out.
    let work = if matches!(parallelism, gemm::Parallelism::None) { 0 } else { m * n };
    for_each_part(out, 16 * n, 1, work, rows_of);
}

/// `[m, inner] x rhs [inner, n] -> [m, n]` for contiguous rows `x`, any `m`: one gemm call, over
/// rayon's threads where the work pays ([`gemm_threads`]), in the orientation [`gemm_into`] picks.
pub(crate) fn gemm_product(x: &[f32], m: usize, rhs: &Strided) -> Vec<f32> {
    let (inner, n) = (rhs.rows, rhs.columns);
    // The reads below are unchecked: the shapes must agree here.
    assert_eq!(x.len(), m * inner, "gemm_product: x is not [{m}, {inner}]");
    let mut out = vec![0f32; m * n];
    if m > 0 && inner > 0 && n > 0 {
        // SAFETY: `x` is `[m, inner]`, `rhs` is `[inner, n]` in its own strides, `out` is `[m, n]`.
        unsafe { gemm_into(&mut out, m, n, inner, x.as_ptr(), inner, rhs, 0, gemm_threads(m * inner * n)) };
    }
    out
}

/// `dst [m, n] = lhs [m, inner] x rhs [inner, n]`, or `dst +=` that product when `accumulate`,
/// each matrix given as (its first element, row stride, column stride), in elements: gemm's, or
/// the wasm build's own product where [`wasm_product_takes`] it.
///
/// # Safety
/// Every element the shapes and strides address lies inside its buffer; `dst` overlaps neither
/// input.
pub(crate) unsafe fn gemm_strided(
    shape: [usize; 3],
    dst: (*mut f32, isize, isize),
    accumulate: bool,
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
    parallelism: gemm::Parallelism,
) {
    #[cfg(all(target_family = "wasm", target_feature = "simd128"))]
    if wasm_product_takes(shape[0]) {
        // SAFETY: as this function's.
        unsafe { crate::wasm_product::product(shape, dst, accumulate, lhs, rhs, parallelism) };
        return;
    }
    // SAFETY: as this function's.
    unsafe { gemm_call(shape, dst, accumulate, lhs, rhs, parallelism) };
}

/// [`gemm_strided`]'s product through gemm.
///
/// # Safety
/// As [`gemm_strided`]'s.
pub(crate) unsafe fn gemm_call(
    [m, inner, n]: [usize; 3],
    (dst, dst_row_stride, dst_column_stride): (*mut f32, isize, isize),
    accumulate: bool,
    (lhs, lhs_row_stride, lhs_column_stride): (*const f32, isize, isize),
    (rhs, rhs_row_stride, rhs_column_stride): (*const f32, isize, isize),
    parallelism: gemm::Parallelism,
) {
    // gemm computes `dst = alpha dst + beta lhs rhs`, reading dst only when asked to.
    let alpha = if accumulate { 1.0 } else { 0.0 };
    unsafe {
        gemm::gemm(
            m,
            n,
            inner,
            dst,
            dst_column_stride,
            dst_row_stride,
            accumulate,
            lhs,
            lhs_column_stride,
            lhs_row_stride,
            rhs,
            rhs_column_stride,
            rhs_row_stride,
            alpha,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Fewest rows for which the wasm build's own product (`wasm_product.rs`) replaces gemm's: in V8
/// the two cross at about 12 rows (below, packing the weight costs more than the tiles save: ours
/// 37 GFLOP/s against gemm's 41 at 8 rows, 33 against 32 at 12, 37 against 34 at 16); 16 leaves a
/// margin.
pub(crate) const WASM_PRODUCT_MIN_ROWS: usize = 16;

/// Whether [`gemm_strided`] gives a product of `m` rows to the wasm build's own product rather
/// than to gemm.
fn wasm_product_takes(m: usize) -> bool {
    cfg!(all(target_family = "wasm", target_feature = "simd128")) && m >= WASM_PRODUCT_MIN_ROWS
}

/// Threads for one product of `work` multiply-adds: all of rayon's from Burn's CPU backend's
/// threshold on (192^3), else one; one in the browser's single-threaded engine.
pub(crate) fn gemm_threads(work: usize) -> gemm::Parallelism {
    #[cfg(threads)]
    if work >= 192 * 192 * 192 {
        return gemm::Parallelism::Rayon(0);
    }
    let _ = work;
    gemm::Parallelism::None
}
