//! The wasm build's matrix product for [`MIN_ROWS`] rows and more, in place of gemm's. gemm's
//! SIMD128 kernel keeps 12 rows x 4 columns of sums: with its operands that is 16 vectors, one more
//! than V8 gives WebAssembly on x86-64, and V8 spills. This one keeps 4 rows x 8 columns (8 sums, 2
//! weight vectors and 1 broadcast input), over the weight packed 8 columns to a panel, whatever its
//! strides. In Node's V8 on the AMD EPYC of `bench/RESULTS.md` it ran 50-59 GFLOP/s where gemm's
//! ran 38-42 (products of 50-640 rows by 512-3072 inner by 768-4096 columns, weights in either
//! orientation); below 16 rows packing the weight costs more than it saves.
//!
//! Written against a four-lane vector ([`Lanes`]): SIMD128 in a wasm build, four floats elsewhere,
//! where only this module's tests run it, against gemm.

/// Fewest rows this product takes over; below, gemm's.
pub(crate) const MIN_ROWS: usize = 16;
/// Rows of one tile.
const TILE_ROWS: usize = 4;
/// Columns of a packed panel, two vectors.
const PANEL_COLUMNS: usize = 8;
/// Panels packed at once: 256 columns, so that the packed copy of an LM head's 50257 columns stays
/// a few MB.
const PANELS_PER_PACK: usize = 32;

/// `dst [m, n] = lhs [m, inner] x rhs [inner, n]`, or `dst +=` that product when `accumulate`,
/// each matrix given as (its first element, row stride, column stride), in elements. Each output
/// is its products summed in the order of `inner`, one multiplication and one addition each.
///
/// # Safety
/// Every element the shapes and strides address lies inside its buffer; `dst` overlaps neither
/// input.
pub(crate) unsafe fn product(
    [m, inner, n]: [usize; 3],
    (dst, dst_row_stride, dst_column_stride): (*mut f32, isize, isize),
    accumulate: bool,
    (lhs, lhs_row_stride, lhs_column_stride): (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
) {
    if inner == 0 {
        if !accumulate {
            for (row, column) in (0..m).flat_map(|row| (0..n).map(move |column| (row, column))) {
                // SAFETY: output (row, column) lies inside `dst`.
                unsafe { *dst.offset(row as isize * dst_row_stride + column as isize * dst_column_stride) = 0.0 };
            }
        }
        return;
    }
    let panels = n.div_ceil(PANEL_COLUMNS);
    let mut packed = vec![0f32; inner * PANEL_COLUMNS * PANELS_PER_PACK.min(panels)];
    for first_panel in (0..panels).step_by(PANELS_PER_PACK) {
        let count = PANELS_PER_PACK.min(panels - first_panel);
        for (index, panel) in packed.chunks_exact_mut(inner * PANEL_COLUMNS).take(count).enumerate() {
            // SAFETY: the panel's columns are inside `rhs`'s `n`.
            unsafe { pack(panel, inner, n, (first_panel + index) * PANEL_COLUMNS, rhs) };
        }
        for (index, panel) in packed.chunks_exact(inner * PANEL_COLUMNS).take(count).enumerate() {
            let first_column = (first_panel + index) * PANEL_COLUMNS;
            let columns = PANEL_COLUMNS.min(n - first_column);
            for first_row in (0..m).step_by(TILE_ROWS) {
                let rows = TILE_ROWS.min(m - first_row);
                // SAFETY: rows `first_row..first_row + rows` of `lhs` lie inside it.
                let lhs = unsafe { lhs.offset(first_row as isize * lhs_row_stride) };
                let strides = (lhs_row_stride, lhs_column_stride);
                // SAFETY: `rows` rows of `inner` values at `lhs` in `strides`; the panel is `[inner, 8]`.
                let sums = unsafe {
                    match rows {
                        4 => tile::<4>(lhs, strides, inner, panel),
                        3 => widen(tile::<3>(lhs, strides, inner, panel)),
                        2 => widen(tile::<2>(lhs, strides, inner, panel)),
                        _ => widen(tile::<1>(lhs, strides, inner, panel)),
                    }
                };
                for (row, [low, high]) in sums.into_iter().take(rows).enumerate() {
                    let offset =
                        (first_row + row) as isize * dst_row_stride + first_column as isize * dst_column_stride;
                    // SAFETY: outputs `columns` of that row lie inside `dst`.
                    unsafe {
                        let out = dst.offset(offset);
                        if dst_column_stride == 1 && columns == PANEL_COLUMNS {
                            let (low, high) = if accumulate {
                                (low.add(Lanes::load(out)), high.add(Lanes::load(out.add(4))))
                            } else {
                                (low, high)
                            };
                            low.store(out);
                            high.store(out.add(4));
                        } else {
                            let mut values = [0f32; PANEL_COLUMNS];
                            low.store(values.as_mut_ptr());
                            high.store(values.as_mut_ptr().add(4));
                            for (column, value) in values.into_iter().take(columns).enumerate() {
                                let out = out.offset(column as isize * dst_column_stride);
                                *out = if accumulate { *out + value } else { value };
                            }
                        }
                    }
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

/// A tile of fewer rows, padded to four.
#[inline(always)]
fn widen<const ROWS: usize>(sums: [[Lanes; 2]; ROWS]) -> [[Lanes; 2]; TILE_ROWS] {
    let mut wide = [[Lanes::zero(); 2]; TILE_ROWS];
    wide[..ROWS].copy_from_slice(&sums);
    wide
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
    use super::{MIN_ROWS, product};
    use crate::cpu::gemm_strided;

    /// A deterministic spread of values in [-1, 1).
    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7919 + seed * 104_729) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// This product against gemm's, for `[m, inner] x [inner, n]` with the right-hand side stored
    /// row-major or transposed, written row-major or column-major, set or accumulated.
    fn agrees_with_gemm(m: usize, inner: usize, n: usize) {
        let lhs = values(m * inner, 1);
        let rhs = values(inner * n, 2);
        let start = values(m * n, 3);
        for rhs_transposed in [false, true] {
            let rhs_strides = if rhs_transposed { (1, inner as isize) } else { (n as isize, 1) };
            for dst_column_major in [false, true] {
                let dst_strides = if dst_column_major { (1, m as isize) } else { (n as isize, 1) };
                for accumulate in [false, true] {
                    let (mut ours, mut theirs) = (start.clone(), start.clone());
                    // SAFETY: every matrix is its buffer's `[rows, columns]` in the strides given.
                    unsafe {
                        product(
                            [m, inner, n],
                            (ours.as_mut_ptr(), dst_strides.0, dst_strides.1),
                            accumulate,
                            (lhs.as_ptr(), inner as isize, 1),
                            (rhs.as_ptr(), rhs_strides.0, rhs_strides.1),
                        );
                        gemm_strided(
                            [m, inner, n],
                            (theirs.as_mut_ptr(), dst_strides.0, dst_strides.1),
                            accumulate,
                            (lhs.as_ptr(), inner as isize, 1),
                            (rhs.as_ptr(), rhs_strides.0, rhs_strides.1),
                            gemm::Parallelism::None,
                        );
                    }
                    let scale = theirs.iter().fold(1f32, |most, value| most.max(value.abs()));
                    let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    assert!(
                        worst <= 1e-5 * scale * (inner as f32).sqrt(),
                        "[{m}, {inner}] x [{inner}, {n}], rhs transposed {rhs_transposed}, dst column-major \
                         {dst_column_major}, accumulate {accumulate}: off by {worst} (largest output {scale})"
                    );
                    // Every output was written: a skipped one would still hold its starting value.
                    if !accumulate && inner > 0 {
                        let unchanged = ours.iter().zip(&start).filter(|(a, b)| a == b).count();
                        assert!(unchanged < m * n / 4 + 1, "{unchanged} outputs kept their starting value");
                    }
                }
            }
        }
    }

    #[test]
    fn whole_tiles_and_panels() {
        agrees_with_gemm(MIN_ROWS, 64, 32);
        agrees_with_gemm(64, 96, 256);
    }

    #[test]
    fn rows_and_columns_past_the_last_whole_tile_and_panel() {
        // 1, 2 and 3 rows past a tile; columns past a panel; an odd inner length.
        agrees_with_gemm(MIN_ROWS + 1, 33, 9);
        agrees_with_gemm(MIN_ROWS + 2, 7, 15);
        agrees_with_gemm(MIN_ROWS + 3, 5, 3);
    }

    #[test]
    fn more_columns_than_one_pack() {
        // 32 panels are packed at a time: 300 columns take two packs, the second partial.
        agrees_with_gemm(20, 24, 300);
    }

    #[test]
    fn an_empty_inner_dimension_gives_zeros_or_leaves_the_sum() {
        let start = vec![2f32; 16 * 3];
        for accumulate in [false, true] {
            let mut out = start.clone();
            // SAFETY: nothing is read from the inputs; `out` is `[16, 3]`.
            let nowhere = std::ptr::NonNull::<f32>::dangling().as_ptr();
            unsafe { product([16, 0, 3], (out.as_mut_ptr(), 3, 1), accumulate, (nowhere, 0, 1), (nowhere, 3, 1)) };
            assert!(out.iter().all(|&value| value == if accumulate { 2.0 } else { 0.0 }), "{out:?}");
        }
    }
}
