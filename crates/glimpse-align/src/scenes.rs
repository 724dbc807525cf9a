//! How many scenes a video has, and where they are, from its frame embeddings alone: kernel
//! temporal segmentation (KTS, Potapov et al. 2014, "Category-specific video summarization",
//! <https://hal.inria.fr/hal-01022967>) with a linear kernel on the CLIP embeddings.
//!
//! For every count `m` up to a bound, dynamic programming finds the `m` consecutive segments of
//! least within-segment scatter `L_m` (the sum of squared distances of each frame to its segment's
//! mean). The count chosen minimises `L_m / noise + penalty * m * (ln(b / m) + 1)`, KTS's
//! criterion over the `b` bins segmented (the frames, up to [`MAX_BINS`]), where `noise` is the
//! scatter one frame adds on its own: half the median squared distance between neighbouring
//! frames (or, where repeated frames make that zero, between frames up to four apart), and never
//! less than [`NOISE_FLOOR`] of the embeddings' squared norm. Measured in that unit, a new segment
//! must explain more than the frame-to-frame jitter of the video at hand, whichever CLIP made the
//! embeddings.

/// Frames beyond this many are averaged in equal bins first, so time (`O(BINS² · (dim + max))`)
/// and memory (`O(BINS²)`) stay bounded for any video length; a bin of a one-hour video at 2 fps
/// is 3.5 s.
pub const MAX_BINS: usize = 1024;

/// The least noise unit, as a share of the embeddings' mean squared norm: the jitter of frames
/// whose cosine similarity is 0.999 (what still frames get, which have no jitter to measure).
pub const NOISE_FLOOR: f64 = 1e-3;

/// KTS's penalty weight; larger values give fewer scenes. Chosen on 30 world videos set aside for
/// this (`glimpse eval --seed 1000 --videos 30 --scene-penalty P`; the figures are in
/// models/README.md): on the plain world a wide range counts the scenes exactly, and on the hard
/// world, whose pans drift the embeddings across a shot, lower weights split panned shots.
pub const DEFAULT_PENALTY: f64 = 20.0;

/// The segmentation chosen for a video, in frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenes {
    /// `[start, end)` frame ranges in time order, covering every frame.
    pub spans: Vec<(usize, usize)>,
}

/// Segments `frames` (`n` row-major embeddings of `dim` values each) into between 1 and
/// `max_scenes` scenes of at least `min_frames` frames each where the video is long enough,
/// choosing the count by KTS's criterion with weight `penalty`.
pub fn segment(frames: &[f32], dim: usize, max_scenes: usize, min_frames: usize, penalty: f64) -> Scenes {
    assert!(dim > 0 && frames.len().is_multiple_of(dim), "segment: {} values are not rows of {dim}", frames.len());
    let n = frames.len() / dim;
    if n == 0 {
        return Scenes { spans: Vec::new() };
    }
    let bins = Bins::of(frames, dim, n);
    let b = bins.weight.len();
    let frames_per_bin = n as f64 / b as f64;
    let min_bins = ((min_frames as f64 / frames_per_bin).ceil() as usize).max(1);
    let most = max_scenes.clamp(1, (b / min_bins).max(1));
    let min_bins = if b / min_bins == 0 { 1 } else { min_bins };
    let scatter = Scatter::new(&bins, dim);

    // cost[m][j]: least scatter of bins 0..j in m + 1 segments; from[m][j]: where the last begins.
    let mut cost = vec![vec![f64::INFINITY; b + 1]; most];
    let mut from = vec![vec![0usize; b + 1]; most];
    for (j, cost) in cost[0].iter_mut().enumerate().skip(min_bins) {
        *cost = scatter.of(0, j);
    }
    for m in 1..most {
        for j in (m + 1) * min_bins..=b {
            let (mut best, mut at) = (f64::INFINITY, 0);
            for (i, before) in cost[m - 1].iter().enumerate().take(j - min_bins + 1).skip(m * min_bins) {
                let c = before + scatter.of(i, j);
                if c < best {
                    (best, at) = (c, i);
                }
            }
            cost[m][j] = best;
            from[m][j] = at;
        }
    }

    let noise = bins.noise(dim, frames_per_bin).max(scatter.squares[b] / n as f64 * NOISE_FLOOR).max(f64::MIN_POSITIVE);
    let criterion = |m: usize| {
        let segments = (m + 1) as f64;
        cost[m][b] / noise + penalty * segments * ((b as f64 / segments).ln() + 1.0)
    };
    let chosen = (0..most).filter(|&m| cost[m][b].is_finite()).min_by(|&x, &y| criterion(x).total_cmp(&criterion(y)));
    let chosen = chosen.unwrap_or(0);

    let mut cuts = vec![b];
    let mut j = b;
    for m in (1..=chosen).rev() {
        j = from[m][j];
        cuts.push(j);
    }
    cuts.push(0);
    cuts.reverse();
    let to_frame = |bin: usize| bins.start[bin];
    Scenes { spans: cuts.windows(2).map(|w| (to_frame(w[0]), to_frame(w[1]))).collect() }
}

/// Frames averaged in at most [`MAX_BINS`] runs of (nearly) equal length.
struct Bins {
    /// `[bins, dim]` means.
    mean: Vec<f64>,
    /// Frames per bin.
    weight: Vec<f64>,
    /// First frame of each bin, and `n` at the end.
    start: Vec<usize>,
}

impl Bins {
    fn of(frames: &[f32], dim: usize, n: usize) -> Self {
        let b = n.min(MAX_BINS);
        let start: Vec<usize> = (0..=b).map(|i| i * n / b).collect();
        let mut mean = vec![0.0; b * dim];
        let mut weight = vec![0.0; b];
        for i in 0..b {
            let (s, e) = (start[i], start[i + 1]);
            let row = &mut mean[i * dim..(i + 1) * dim];
            for frame in frames[s * dim..e * dim].chunks_exact(dim) {
                for (m, &x) in row.iter_mut().zip(frame) {
                    *m += f64::from(x);
                }
            }
            let count = (e - s) as f64;
            row.iter_mut().for_each(|m| *m /= count);
            weight[i] = count;
        }
        Self { mean, weight, start }
    }

    /// The scatter one frame adds: half the median squared distance between bins `lag` apart, for
    /// the smallest `lag` up to [`MAX_LAG`] whose median is not zero (frames repeated by a
    /// slideshow or a GIF slower than the sampling rate make neighbours equal without saying
    /// anything about jitter), scaled back from a bin's mean to one frame (a mean of `w` frames
    /// has `1 / w` of the noise); 0 for still frames.
    fn noise(&self, dim: usize, frames_per_bin: f64) -> f64 {
        let b = self.weight.len();
        let row = |i: usize| &self.mean[i * dim..(i + 1) * dim];
        for lag in 1..=MAX_LAG.min(b.saturating_sub(1)) {
            let mut steps: Vec<f64> = (0..b - lag)
                .map(|i| row(i).iter().zip(row(i + lag)).map(|(a, b)| (a - b) * (a - b)).sum::<f64>())
                .collect();
            steps.sort_by(f64::total_cmp);
            let median = steps[steps.len() / 2];
            if median > 1e-12 {
                return median / 2.0 * frames_per_bin;
            }
        }
        0.0
    }
}

/// The farthest apart [`Bins::noise`] compares frames: still scenes stay still within it (their
/// jitter is 0, and the cuts between them are not mistaken for it).
const MAX_LAG: usize = 4;

/// Within-segment scatter of any run of bins in O(1), from prefix sums of the weighted Gram
/// matrix: `sum_i w_i |x_i|² - |sum_i w_i x_i|² / sum_i w_i`.
struct Scatter {
    b: usize,
    /// `sum_{i < j} w_i |x_i|²`.
    squares: Vec<f64>,
    weights: Vec<f64>,
    /// `[(b + 1)²]` 2-D prefix sums of `w_i w_j <x_i, x_j>`.
    gram: Vec<f64>,
}

impl Scatter {
    fn new(bins: &Bins, dim: usize) -> Self {
        let b = bins.weight.len();
        let row = |i: usize| &bins.mean[i * dim..(i + 1) * dim];
        let mut squares = vec![0.0; b + 1];
        let mut weights = vec![0.0; b + 1];
        for i in 0..b {
            let w = bins.weight[i];
            squares[i + 1] = squares[i] + w * row(i).iter().map(|x| x * x).sum::<f64>();
            weights[i + 1] = weights[i] + w;
        }
        // Upper triangle of the weighted Gram matrix, mirrored, then summed into prefix sums in place.
        let stride = b + 1;
        let mut gram = vec![0.0; stride * stride];
        for i in 0..b {
            for j in i..b {
                let dot = bins.weight[i] * bins.weight[j] * row(i).iter().zip(row(j)).map(|(x, y)| x * y).sum::<f64>();
                gram[(i + 1) * stride + j + 1] = dot;
                gram[(j + 1) * stride + i + 1] = dot;
            }
        }
        for i in 1..=b {
            for j in 1..=b {
                gram[i * stride + j] +=
                    gram[(i - 1) * stride + j] + gram[i * stride + j - 1] - gram[(i - 1) * stride + j - 1];
            }
        }
        Self { b, squares, weights, gram }
    }

    /// Scatter of bins `i..j`.
    fn of(&self, i: usize, j: usize) -> f64 {
        debug_assert!(i < j && j <= self.b);
        let stride = self.b + 1;
        let at = |r: usize, c: usize| self.gram[r * stride + c];
        let sum_sq = at(j, j) - at(i, j) - at(j, i) + at(i, i);
        (self.squares[j] - self.squares[i] - sum_sq / (self.weights[j] - self.weights[i])).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use glimpse_media::rng::Rng;

    use super::*;

    /// Unit-norm rows: `lengths[s]` noisy copies of scene `s`'s direction.
    fn video(lengths: &[usize], dim: usize, noise: f64, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let directions: Vec<Vec<f64>> =
            lengths.iter().map(|_| (0..dim).map(|_| rng.uniform() - 0.5).collect()).collect();
        let mut out = Vec::new();
        for (direction, &len) in directions.iter().zip(lengths) {
            for _ in 0..len {
                let row: Vec<f64> = direction.iter().map(|x| x + noise * (rng.uniform() - 0.5)).collect();
                let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
                out.extend(row.iter().map(|x| (x / norm) as f32));
            }
        }
        out
    }

    fn boundaries(scenes: &Scenes) -> Vec<usize> {
        scenes.spans.iter().map(|s| s.0).collect()
    }

    #[test]
    fn scenes_are_counted_and_found() {
        for (seed, lengths) in [(1, vec![12, 7, 20]), (2, vec![30]), (3, vec![5, 9, 6, 14, 8]), (4, vec![40, 40])] {
            let frames = video(&lengths, 32, 0.3, seed);
            let scenes = segment(&frames, 32, 8, 2, DEFAULT_PENALTY);
            let mut expected = vec![0];
            expected.extend(lengths.iter().scan(0, |at, l| {
                *at += l;
                Some(*at)
            }));
            expected.pop();
            assert_eq!(boundaries(&scenes), expected, "scenes of lengths {lengths:?}");
            assert_eq!(scenes.spans.last().unwrap().1, lengths.iter().sum::<usize>());
        }
    }

    #[test]
    fn repeated_frames_do_not_make_every_change_a_scene() {
        // Every sampled frame three times over, as from a GIF slower than the sampling rate: most
        // neighbours are equal, and the jitter is measured on those that differ.
        let (dim, lengths) = (32, [12, 7, 20]);
        let frames: Vec<f32> = video(&lengths, dim, 0.3, 7).chunks_exact(dim).flat_map(|row| row.repeat(3)).collect();
        let scenes = segment(&frames, dim, 8, 2, DEFAULT_PENALTY);
        assert_eq!(boundaries(&scenes), [0, 36, 57], "{scenes:?}");
        // Still scenes (one frame each, held): no jitter at all, and the cuts are not taken for it.
        let held: Vec<f32> = video(&[1, 1, 1], dim, 0.0, 8).chunks_exact(dim).flat_map(|row| row.repeat(30)).collect();
        assert_eq!(boundaries(&segment(&held, dim, 8, 2, DEFAULT_PENALTY)), [0, 30, 60]);
    }

    #[test]
    fn the_bound_and_the_shortest_scene_are_kept() {
        let frames = video(&[4, 4, 4, 4, 4, 4], 16, 0.2, 5);
        assert_eq!(segment(&frames, 16, 3, 1, DEFAULT_PENALTY).spans.len(), 3);
        // Scenes of four frames cannot be found with six frames at least: fewer, longer ones.
        let coarse = segment(&frames, 16, 8, 6, DEFAULT_PENALTY);
        assert!(coarse.spans.iter().all(|(s, e)| e - s >= 6), "{coarse:?}");
        // A single frame, and identical frames (no noise to measure), are one scene.
        assert_eq!(segment(&frames[..16], 16, 8, 2, DEFAULT_PENALTY).spans, [(0, 1)]);
        let still: Vec<f32> = frames[..16].repeat(10);
        assert_eq!(segment(&still, 16, 8, 2, DEFAULT_PENALTY).spans, [(0, 10)]);
    }

    #[test]
    fn long_videos_are_binned_with_boundaries_kept_to_a_bin() {
        let lengths = [1500, 900, 2100];
        let frames = video(&lengths, 8, 0.3, 6);
        let scenes = segment(&frames, 8, 8, 2, DEFAULT_PENALTY);
        let found = boundaries(&scenes);
        let bin = 4500 / MAX_BINS + 1;
        assert_eq!(found.len(), 3, "{found:?}");
        for (f, truth) in found.iter().zip([0, 1500, 2400]) {
            assert!(f.abs_diff(truth) <= bin, "{found:?}");
        }
    }
}
