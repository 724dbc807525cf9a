//! The wasm build's matrix product, in place of gemm's from
//! [`WASM_PRODUCT_MIN_ROWS`](crate::cpu::WASM_PRODUCT_MIN_ROWS) rows on. gemm's SIMD128 kernel keeps
//! 12 rows x 4 columns of sums: with its operands that is 16 vectors, one more than V8 gives
//! WebAssembly on x86-64, and V8 spills. This one keeps 4 rows x 8 columns (8 sums, 2 weight
//! vectors and 1 broadcast input) over the weight packed 8 columns at a time, whatever its strides,
//! so a weight read transposed costs about as much as one read as stored. In Node's V8 on the AMD
//! EPYC of `bench/RESULTS.md` it ran 47-59 GFLOP/s where gemm's ran 34-42 (50-1536 rows by
//! 128-3072 inner by 128-4096 columns, weights in either orientation); 5 x 8 and 3 x 12 tiles
//! spilled (22-26 GFLOP/s).
//!
//! Written against a four-lane vector ([`Lanes`]): SIMD128 in a wasm build, four floats elsewhere,
//! where only this module's tests run it, against gemm. They check the tiling, packing and
//! strides; the SIMD128 lanes themselves run only in the browser tests.

/// Rows of one tile.
const TILE_ROWS: usize = 4;
/// Columns of a packed panel, two vectors.
const PANEL_COLUMNS: usize = 8;

/// `dst [m, n] = lhs [m, inner] x rhs [inner, n]`, or `dst +=` that product when `accumulate`,
/// each matrix given as (its first element, row stride, column stride), in elements. Each output
/// is its products summed in the order of `inner`, one multiplication and one addition each, so
/// the result is the same on any number of threads. Panels of 8 columns are shared out over all of
/// rayon's threads unless `parallelism` is `None`.
///
/// # Safety
/// Every element the shapes and strides address lies inside its buffer; `dst` overlaps neither
/// input, and its distinct positions are distinct elements (threads write its columns at once).
pub(crate) unsafe fn product(
    shape: [usize; 3],
    dst: (*mut f32, isize, isize),
    accumulate: bool,
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
    parallelism: gemm::Parallelism,
) {
    let [_, inner, n] = shape;
    let operands = Operands { shape, dst, accumulate, lhs, rhs };
    let panels = n.div_ceil(PANEL_COLUMNS);
    #[cfg(threads)]
    if !matches!(parallelism, gemm::Parallelism::None) {
        use rayon::prelude::*;
        (0..panels).into_par_iter().for_each_init(
            || vec![0f32; inner * PANEL_COLUMNS],
            // SAFETY: as this function's; each panel writes its own columns of `dst`.
            |panel, index| unsafe { operands.panel(panel, index * PANEL_COLUMNS) },
        );
        return;
    }
    let _ = parallelism;
    let mut panel = vec![0f32; inner * PANEL_COLUMNS];
    for index in 0..panels {
        // SAFETY: as this function's.
        unsafe { operands.panel(&mut panel, index * PANEL_COLUMNS) };
    }
}

/// [`product`]'s arguments.
struct Operands {
    shape: [usize; 3],
    dst: (*mut f32, isize, isize),
    accumulate: bool,
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
}

// SAFETY: the threads of one product read `lhs` and `rhs` and write disjoint columns of `dst`.
unsafe impl Sync for Operands {}

impl Operands {
    /// Columns `first_column..` (up to 8) of the product, with `panel` (`[inner, 8]`) to pack
    /// them into.
    ///
    /// # Safety
    /// As [`product`]'s; `first_column < n`.
    unsafe fn panel(&self, panel: &mut [f32], first_column: usize) {
        let [m, inner, n] = self.shape;
        let (dst, dst_row_stride, dst_column_stride) = self.dst;
        let (lhs, lhs_row_stride, lhs_column_stride) = self.lhs;
        let columns = PANEL_COLUMNS.min(n - first_column);
        // SAFETY: `first_column < n`.
        unsafe { pack(panel, inner, n, first_column, self.rhs) };
        // Writes (or adds) the first `columns` of each row's sums, from row `first_row` on.
        let store = |first_row: usize, sums: &[[Lanes; 2]]| {
            for (row, [low, high]) in sums.iter().enumerate() {
                let mut values = [0f32; PANEL_COLUMNS];
                // SAFETY: `values` holds 8 floats; outputs `columns` of that row lie inside `dst`.
                unsafe {
                    low.store(values.as_mut_ptr());
                    high.store(values.as_mut_ptr().add(4));
                    let out = dst.offset(
                        (first_row + row) as isize * dst_row_stride + first_column as isize * dst_column_stride,
                    );
                    for (column, value) in values.into_iter().take(columns).enumerate() {
                        let out = out.offset(column as isize * dst_column_stride);
                        *out = if self.accumulate { *out + value } else { value };
                    }
                }
            }
        };
        for first_row in (0..m).step_by(TILE_ROWS) {
            // SAFETY: rows `first_row..` of `lhs` (up to 4, within `m`) lie inside it, in `strides`;
            // the panel is `[inner, 8]`.
            unsafe {
                let lhs = lhs.offset(first_row as isize * lhs_row_stride);
                let strides = (lhs_row_stride, lhs_column_stride);
                match TILE_ROWS.min(m - first_row) {
                    4 => store(first_row, &tile::<4>(lhs, strides, inner, panel)),
                    3 => store(first_row, &tile::<3>(lhs, strides, inner, panel)),
                    2 => store(first_row, &tile::<2>(lhs, strides, inner, panel)),
                    _ => store(first_row, &tile::<1>(lhs, strides, inner, panel)),
                }
            }
        }
    }
}

/// Columns `first_column..` (up to 8; zeros past `n`) of `rhs` `[inner, n]` into `panel`,
/// `[inner, 8]` row-major.
///
/// # Safety
/// `first_column < n`, and `rhs` addresses `[inner, n]` inside its buffer.
unsafe fn pack(
    panel: &mut [f32],
    inner: usize,
    n: usize,
    first_column: usize,
    (rhs, row_stride, column_stride): (*const f32, isize, isize),
) {
    let columns = PANEL_COLUMNS.min(n - first_column);
    for (index, row) in panel.chunks_exact_mut(PANEL_COLUMNS).take(inner).enumerate() {
        // SAFETY: element (index, first_column) and the `columns` after it lie inside `rhs`.
        unsafe {
            let start = rhs.offset(index as isize * row_stride + first_column as isize * column_stride);
            if column_stride == 1 {
                row[..columns].copy_from_slice(std::slice::from_raw_parts(start, columns));
            } else {
                for (column, value) in row[..columns].iter_mut().enumerate() {
                    *value = *start.offset(column as isize * column_stride);
                }
            }
        }
        row[columns..].fill(0.0);
    }
}

/// The `[ROWS, 8]` products of `ROWS` rows of `lhs` with a packed panel, as two vectors a row.
///
/// # Safety
/// `ROWS` rows of `inner` values at `lhs` in `(row stride, column stride)` lie inside its buffer;
/// `panel` holds `inner * 8` values.
// Not inlined: V8 first runs a function as compiled in one quick pass, and moves a function to
// its optimised code only between calls. Called once per tile, the loop gets there within the
// first product; inlined into `product`, whole products ran the quick pass's code.
#[inline(never)]
unsafe fn tile<const ROWS: usize>(
    lhs: *const f32,
    (row_stride, column_stride): (isize, isize),
    inner: usize,
    panel: &[f32],
) -> [[Lanes; 2]; ROWS] {
    debug_assert!(panel.len() >= inner * PANEL_COLUMNS);
    let mut sums = [[Lanes::zero(); 2]; ROWS];
    // SAFETY (all reads below): inside the rows and the panel, as the caller promises.
    let rows: [*const f32; ROWS] = std::array::from_fn(|row| unsafe { lhs.offset(row as isize * row_stride) });
    for i in 0..inner {
        let (low, high) = unsafe {
            let weights = panel.as_ptr().add(i * PANEL_COLUMNS);
            (Lanes::load(weights), Lanes::load(weights.add(4)))
        };
        for (sums, row) in sums.iter_mut().zip(rows) {
            let x = Lanes::splat(unsafe { *row.offset(i as isize * column_stride) });
            sums[0] = sums[0].add(x.mul(low));
            sums[1] = sums[1].add(x.mul(high));
        }
    }
    sums
}

/// Four floats, added and multiplied lane by lane.
#[cfg(all(target_family = "wasm", target_feature = "simd128"))]
#[derive(Clone, Copy)]
struct Lanes(core::arch::wasm32::v128);

#[cfg(all(target_family = "wasm", target_feature = "simd128"))]
impl Lanes {
    fn zero() -> Self {
        Self(core::arch::wasm32::f32x4_splat(0.0))
    }
    fn splat(value: f32) -> Self {
        Self(core::arch::wasm32::f32x4_splat(value))
    }
    /// # Safety
    /// Four floats at `values` (no alignment needed).
    unsafe fn load(values: *const f32) -> Self {
        Self(unsafe { core::arch::wasm32::v128_load(values.cast()) })
    }
    /// # Safety
    /// Room for four floats at `out` (no alignment needed).
    unsafe fn store(self, out: *mut f32) {
        unsafe { core::arch::wasm32::v128_store(out.cast(), self.0) }
    }
    fn add(self, other: Self) -> Self {
        Self(core::arch::wasm32::f32x4_add(self.0, other.0))
    }
    fn mul(self, other: Self) -> Self {
        Self(core::arch::wasm32::f32x4_mul(self.0, other.0))
    }
}

#[cfg(not(all(target_family = "wasm", target_feature = "simd128")))]
#[derive(Clone, Copy)]
struct Lanes([f32; 4]);

#[cfg(not(all(target_family = "wasm", target_feature = "simd128")))]
impl Lanes {
    fn zero() -> Self {
        Self([0.0; 4])
    }
    fn splat(value: f32) -> Self {
        Self([value; 4])
    }
    unsafe fn load(values: *const f32) -> Self {
        Self(unsafe { values.cast::<[f32; 4]>().read_unaligned() })
    }
    unsafe fn store(self, out: *mut f32) {
        unsafe { out.cast::<[f32; 4]>().write_unaligned(self.0) }
    }
    fn add(self, other: Self) -> Self {
        Self(std::array::from_fn(|lane| self.0[lane] + other.0[lane]))
    }
    fn mul(self, other: Self) -> Self {
        Self(std::array::from_fn(|lane| self.0[lane] * other.0[lane]))
    }
}

#[cfg(test)]
mod tests {
    use super::product;
    use crate::cpu::{WASM_PRODUCT_MIN_ROWS, gemm_call};

    /// A deterministic spread of values in [-1, 1).
    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 + seed * 104_729) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// A `[rows, columns]` matrix in a buffer: row-major or transposed (column-major), and either the
    /// whole buffer or a view into a larger one (3 values in, 5 spare values after each line).
    struct Matrix {
        buffer: Vec<f32>,
        start: usize,
        row_stride: isize,
        column_stride: isize,
    }

    impl Matrix {
        fn new(rows: usize, columns: usize, transposed: bool, view: bool, seed: usize) -> Self {
            let (lines, line) = if transposed { (columns, rows) } else { (rows, columns) };
            let (start, pitch) = if view { (3, line + 5) } else { (0, line) };
            let (row_stride, column_stride) = if transposed { (1, pitch as isize) } else { (pitch as isize, 1) };
            // Around a view, NaN: a read outside the matrix spoils the product.
            let matrix = Self {
                buffer: vec![f32::NAN; start + lines * pitch + if view { 5 } else { 0 }],
                start,
                row_stride,
                column_stride,
            };
            let mut buffer = matrix.buffer.clone();
            let mut spread = values(rows * columns, seed).into_iter();
            for row in 0..rows {
                for column in 0..columns {
                    buffer[matrix.index(row, column)] = spread.next().expect("one value per element");
                }
            }
            Self { buffer, ..matrix }
        }

        fn index(&self, row: usize, column: usize) -> usize {
            (self.start as isize + row as isize * self.row_stride + column as isize * self.column_stride) as usize
        }

        fn read(&self) -> (*const f32, isize, isize) {
            (self.buffer[self.start..].as_ptr(), self.row_stride, self.column_stride)
        }

        fn write(&mut self) -> (*mut f32, isize, isize) {
            (self.buffer[self.start..].as_mut_ptr(), self.row_stride, self.column_stride)
        }
    }

    /// This product against gemm's for `[m, inner] x [inner, n]`, each operand and the output
    /// row-major or transposed, whole or a view into a larger buffer, set or accumulated: every
    /// output within float tolerance (a NaN, an output left unwritten when setting, fails), every
    /// value outside the output untouched; and the same bits over rayon's threads as on one.
    fn agrees_with_gemm(m: usize, inner: usize, n: usize) {
        for case in 0..32 {
            let [lhs_transposed, rhs_transposed, dst_transposed, view, accumulate] =
                [1, 2, 4, 8, 16].map(|bit| case & bit != 0);
            let lhs = Matrix::new(m, inner, lhs_transposed, view, 1);
            let rhs = Matrix::new(inner, n, rhs_transposed, view, 2);
            let mut ours = Matrix::new(m, n, dst_transposed, view, 3);
            if !accumulate {
                ours.buffer.fill(f32::NAN);
            }
            let before = ours.buffer.clone();
            let mut theirs = Matrix { buffer: before.clone(), ..ours };
            let mut threaded = Matrix { buffer: before.clone(), ..ours };
            let one = gemm::Parallelism::None;
            // SAFETY: each matrix lies inside its buffer in its strides; the outputs are their own buffers.
            unsafe {
                product([m, inner, n], ours.write(), accumulate, lhs.read(), rhs.read(), one);
                product(
                    [m, inner, n],
                    threaded.write(),
                    accumulate,
                    lhs.read(),
                    rhs.read(),
                    gemm::Parallelism::Rayon(0),
                );
                gemm_call([m, inner, n], theirs.write(), accumulate, lhs.read(), rhs.read(), one);
            }
            let label = format!(
                "[{m}, {inner}] x [{inner}, {n}], lhs/rhs/dst transposed {lhs_transposed}/{rhs_transposed}/{dst_transposed}, view {view}, accumulate {accumulate}"
            );
            let bits = |matrix: &Matrix| matrix.buffer.iter().map(|value| value.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&threaded), bits(&ours), "{label}: threads changed the product");
            let outputs: Vec<usize> =
                (0..m).flat_map(|row| (0..n).map(move |column| (row, column))).map(|(r, c)| ours.index(r, c)).collect();
            let scale = outputs.iter().fold(1f32, |most, &i| most.max(theirs.buffer[i].abs()));
            let tolerance = 1e-5 * scale * (inner as f32).sqrt();
            for &i in &outputs {
                let (a, b) = (ours.buffer[i], theirs.buffer[i]);
                assert!((a - b).abs() <= tolerance, "{label}: element {i} is {a}, gemm's {b}");
            }
            let mut is_output = vec![false; before.len()];
            outputs.iter().for_each(|&i| is_output[i] = true);
            for (i, (after, before)) in ours.buffer.iter().zip(&before).enumerate() {
                assert!(
                    is_output[i] || after.to_bits() == before.to_bits(),
                    "{label}: element {i} outside the output changed"
                );
            }
        }
    }

    #[test]
    fn whole_tiles_and_panels() {
        agrees_with_gemm(WASM_PRODUCT_MIN_ROWS, 64, 32);
        agrees_with_gemm(64, 96, 256);
    }

    #[test]
    fn rows_and_columns_past_the_last_whole_tile_and_panel() {
        // 1, 2 and 3 rows past a tile; columns past a panel; odd inner lengths.
        agrees_with_gemm(WASM_PRODUCT_MIN_ROWS + 1, 33, 9);
        agrees_with_gemm(WASM_PRODUCT_MIN_ROWS + 2, 7, 15);
        agrees_with_gemm(WASM_PRODUCT_MIN_ROWS + 3, 5, 3);
    }

    #[test]
    fn an_empty_inner_dimension_gives_zeros_or_leaves_the_sum() {
        let start = vec![2f32; 16 * 3];
        for accumulate in [false, true] {
            let mut out = start.clone();
            // SAFETY: nothing is read from the inputs; `out` is `[16, 3]`.
            let nowhere = std::ptr::NonNull::<f32>::dangling().as_ptr();
            unsafe {
                product(
                    [16, 0, 3],
                    (out.as_mut_ptr(), 3, 1),
                    accumulate,
                    (nowhere, 0, 1),
                    (nowhere, 3, 1),
                    gemm::Parallelism::None,
                )
            };
            assert!(out.iter().all(|&value| value == if accumulate { 2.0 } else { 0.0 }), "{out:?}");
        }
    }
}
