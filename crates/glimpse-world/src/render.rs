//! Drawing scenes: a pale background and a vertical stack of anti-aliased shapes in one third of
//! the frame. A [`Scene`] fixes what is where; each [`Scene::render`] call adds fresh jitter and
//! pixel noise, so the frames of one video event wiggle like real footage while showing the same
//! thing. Only `f64` additions, multiplications and comparisons are used, which IEEE 754 defines
//! exactly, so a seed gives the same bytes on every platform.

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::scene::{Attributes, Shape, Size};
use glimpse_media::rng::Rng;

/// How scenes are turned into pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RenderConfig {
    /// Width and height of the square frame in pixels (the whole frame is held in memory).
    pub size: u32,
    /// Amplitude of the uniform per-channel pixel noise, in 0..255 units (clamped to that range).
    pub noise: f32,
    /// Largest displacement of each shape per frame, in pixels at size 96 (scaled with `size`).
    /// Clamped to the room a layout reserves ([`MAX_JITTER`]), so shapes never touch each other or
    /// leave their third of the frame.
    pub jitter: f32,
}

impl Default for RenderConfig {
    fn default() -> Self {
        Self { size: 96, noise: 6.0, jitter: 2.0 }
    }
}

/// Background colours: light, barely tinted, and far from every shape colour, so that "no shape"
/// is never mistaken for a colour.
pub const BACKGROUNDS: [[u8; 3]; 6] = [
    [246, 244, 238], // near-white
    [226, 226, 224], // light grey
    [238, 228, 206], // beige
    [216, 224, 234], // pale blue-grey
    [218, 230, 216], // pale green-grey
    [236, 224, 224], // pale rose-grey
];

/// Radii as fractions of the frame: a large shape (diameter 0.26) still fits its third (0.333) with
/// room for jitter; a small one is clearly smaller at a glance.
const SMALL_RADIUS: f64 = 0.06;
const LARGE_RADIUS: f64 = 0.13;
/// Room around every shape reserved for jitter, as a fraction of the frame.
const JITTER_ROOM: f64 = 0.025;
/// Largest jitter in pixels at size 96 that [`RenderConfig::jitter`] is clamped to.
pub const MAX_JITTER: f32 = (JITTER_ROOM * 96.0) as f32;
/// Smallest clear space between neighbouring shapes even at the largest jitter, so that they stay
/// separate blobs after anti-aliasing.
const VISIBLE_GAP: f64 = 0.025;
/// Clear space kept between shapes and the frame's and thirds' borders, beyond the jitter room.
const EDGE: f64 = 0.005;
/// Largest horizontal offset of a shape from the centre line of its third.
const MAX_OFFSET: f64 = 0.03;
/// Brightness difference between the top and the bottom of the background, in 0..255 units.
const GRADIENT: f64 = 12.0;
/// Sub-samples per pixel side for anti-aliasing (4x4 per pixel).
const SUBSAMPLES: usize = 4;

/// What a frame shows: the shapes (none for a gap between events), where each sits, and the
/// background colour.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// The shapes' attributes; `None` for a background-only frame.
    pub attributes: Option<Attributes>,
    /// The background colour (before the gradient and noise).
    pub background: [u8; 3],
    /// Centre of each shape as fractions of the frame's width and height.
    layout: Vec<[f64; 2]>,
}

fn radius(size: Size) -> f64 {
    match size {
        Size::Small => SMALL_RADIUS,
        Size::Large => LARGE_RADIUS,
    }
}

/// Whether the point `(dx, dy)` relative to a shape's centre lies inside it (`y` grows downward).
fn inside(shape: Shape, dx: f64, dy: f64, r: f64) -> bool {
    let (ax, ay) = (dx.abs(), dy.abs());
    match shape {
        Shape::Circle => dx * dx + dy * dy <= r * r,
        Shape::Square => ax <= 0.9 * r && ay <= 0.9 * r,
        // Apex at the top of the 2r box, base along its bottom.
        Shape::Triangle => ay <= r && 2.0 * ax <= dy + r,
        Shape::Diamond => ax + ay <= r,
        Shape::Cross => (ax <= 0.2 * r && ay <= r) || (ay <= 0.2 * r && ax <= r),
    }
}

/// `value` clamped into `0..=max`, with NaN read as zero (no jitter or noise rather than a panic).
fn clamp_or_zero(value: f32, max: f32) -> f64 {
    if value.is_nan() { 0.0 } else { f64::from(value.clamp(0.0, max)) }
}

impl Scene {
    /// A scene showing `attributes` (or nothing) on a random background from [`BACKGROUNDS`].
    pub fn sample(attributes: Option<Attributes>, rng: &mut Rng) -> Scene {
        let background = *rng.pick(&BACKGROUNDS);
        Self::sample_on(background, attributes, rng)
    }

    /// A scene with a given background, so that every scene of a video shares one.
    ///
    /// The `count` shapes stack vertically in the position's third with random gaps and small
    /// horizontal offsets; the layout reserves room for jitter, so shapes never overlap, touch,
    /// leave the frame or cross into another third.
    pub fn sample_on(background: [u8; 3], attributes: Option<Attributes>, rng: &mut Rng) -> Scene {
        let layout = attributes.map_or_else(Vec::new, |a| Self::sample_layout(&a, rng));
        Scene { attributes, background, layout }
    }

    fn sample_layout(a: &Attributes, rng: &mut Rng) -> Vec<[f64; 2]> {
        let n = usize::from(a.valid_count());
        let r = radius(a.size);
        let centre_x = (a.position.third() as f64 + 0.5) / 3.0;
        let max_offset = (1.0 / 6.0 - r - JITTER_ROOM - EDGE).clamp(0.0, MAX_OFFSET);
        let margin = JITTER_ROOM + EDGE;
        let pitch = 2.0 * r + 2.0 * JITTER_ROOM + VISIBLE_GAP;
        let slack = (1.0 - 2.0 * margin - 2.0 * r - (n - 1) as f64 * pitch).max(0.0);
        // Share the free height at random between the space above, between and below the shapes.
        let weights: Vec<f64> = (0..=n).map(|_| rng.uniform() + 1e-3).collect();
        let total: f64 = weights.iter().sum();
        let mut y = margin + r;
        (0..n)
            .map(|i| {
                y += slack * weights[i] / total;
                let centre = [centre_x + rng.range(-max_offset, max_offset), y];
                y += pitch;
                centre
            })
            .collect()
    }

    /// Draw one frame: the background with a faint vertical gradient, each shape displaced by
    /// fresh jitter and anti-aliased by 4x4 supersampling, then uniform noise on every channel.
    pub fn render(&self, config: &RenderConfig, rng: &mut Rng) -> RgbImage {
        let size = config.size;
        let scale = f64::from(size);
        let jitter = clamp_or_zero(config.jitter, MAX_JITTER) / 96.0 * scale;
        let noise = clamp_or_zero(config.noise, 255.0);
        let (shape, fill, r) = match self.attributes {
            Some(a) => (a.shape, a.colour.rgb().map(f64::from), radius(a.size) * scale),
            None => (Shape::Circle, [0.0; 3], 0.0),
        };
        // Pixel-space centres and the pixel boxes that can be touched.
        let shapes: Vec<([f64; 2], [u32; 4])> = self
            .layout
            .iter()
            .map(|&[x, y]| {
                let c = [x * scale + rng.range(-jitter, jitter), y * scale + rng.range(-jitter, jitter)];
                let lo = |v: f64| (v - r - 1.0).max(0.0).min(scale) as u32;
                let hi = |v: f64| (v + r + 1.0).max(0.0).min(scale) as u32;
                (c, [lo(c[0]), hi(c[0]), lo(c[1]), hi(c[1])])
            })
            .collect();
        let background = self.background.map(f64::from);
        let step = 1.0 / SUBSAMPLES as f64;
        let samples = (SUBSAMPLES * SUBSAMPLES) as f64;
        // Explicit row-major loops, not `from_fn`, so the order of noise draws is ours to fix.
        let mut img = RgbImage::new(size, size);
        for py in 0..size {
            let shade = GRADIENT * (0.5 - (f64::from(py) + 0.5) / scale);
            for px in 0..size {
                let mut colour = background.map(|c| c + shade);
                for &([cx, cy], [x0, x1, y0, y1]) in &shapes {
                    if px < x0 || px >= x1 || py < y0 || py >= y1 {
                        continue;
                    }
                    let mut hits = 0usize;
                    for sy in 0..SUBSAMPLES {
                        let dy = f64::from(py) + (sy as f64 + 0.5) * step - cy;
                        for sx in 0..SUBSAMPLES {
                            let dx = f64::from(px) + (sx as f64 + 0.5) * step - cx;
                            hits += usize::from(inside(shape, dx, dy, r));
                        }
                    }
                    let cover = hits as f64 / samples;
                    for (c, f) in colour.iter_mut().zip(fill) {
                        *c += (f - *c) * cover;
                    }
                }
                let pixel = colour.map(|c| {
                    let noisy = if noise > 0.0 { c + rng.range(-noise, noise) } else { c };
                    noisy.round().clamp(0.0, 255.0) as u8
                });
                img.put_pixel(px, py, Rgb(pixel));
            }
        }
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::{Colour, Position};
    use glimpse_media::image::is_blank;

    fn attrs(shape: Shape, colour: Colour, size: Size, position: Position, count: u8) -> Attributes {
        Attributes { shape, colour, size, position, count }
    }

    /// What `glimpse_media::image::is_blank` takes for "nothing to caption" is exactly the world's
    /// empty background: every scene of shapes, down to one small shape, is content.
    #[test]
    fn only_empty_scenes_are_blank() {
        let mut rng = Rng::new(11);
        let config = RenderConfig::default();
        for background in BACKGROUNDS {
            assert!(is_blank(&Scene::sample_on(background, None, &mut rng).render(&config, &mut rng)));
        }
        for attributes in Attributes::all() {
            let background = *rng.pick(&BACKGROUNDS);
            let frame = Scene::sample_on(background, Some(attributes), &mut rng).render(&config, &mut rng);
            assert!(!is_blank(&frame), "{attributes:?} on {background:?}");
        }
    }

    /// A pixel that is clearly a shape colour rather than a (pale, grey-ish) background.
    fn saturated(p: &Rgb<u8>) -> bool {
        let (max, min) = (p.0.iter().max().unwrap(), p.0.iter().min().unwrap());
        max - min > 60
    }

    fn saturated_pixels(img: &RgbImage) -> Vec<(u32, u32)> {
        img.enumerate_pixels().filter(|(_, _, p)| saturated(p)).map(|(x, y, _)| (x, y)).collect()
    }

    /// Number of 4-connected blobs of saturated pixels.
    fn blobs(img: &RgbImage) -> usize {
        let (w, h) = img.dimensions();
        let mut seen = vec![false; (w * h) as usize];
        let mut count = 0;
        for (x, y) in saturated_pixels(img) {
            if seen[(y * w + x) as usize] {
                continue;
            }
            count += 1;
            let mut stack = vec![(x, y)];
            seen[(y * w + x) as usize] = true;
            while let Some((x, y)) = stack.pop() {
                let neighbours = [(x.wrapping_sub(1), y), (x + 1, y), (x, y.wrapping_sub(1)), (x, y + 1)];
                for (nx, ny) in neighbours {
                    if nx < w && ny < h && !seen[(ny * w + nx) as usize] && saturated(img.get_pixel(nx, ny)) {
                        seen[(ny * w + nx) as usize] = true;
                        stack.push((nx, ny));
                    }
                }
            }
        }
        count
    }

    #[test]
    fn backgrounds_are_pale_and_grey() {
        for bg in BACKGROUNDS {
            let (max, min) = (*bg.iter().max().unwrap(), *bg.iter().min().unwrap());
            assert!(min >= 200 && max - min <= 40, "{bg:?}");
        }
    }

    #[test]
    fn every_layout_fits_with_room_for_jitter() {
        let mut rng = Rng::new(5);
        for a in Attributes::all() {
            for _ in 0..20 {
                let scene = Scene::sample(Some(a), &mut rng);
                let r = radius(a.size);
                let third = a.position.third() as f64 / 3.0;
                assert_eq!(scene.layout.len(), usize::from(a.count));
                for (i, &[x, y]) in scene.layout.iter().enumerate() {
                    let room = r + JITTER_ROOM;
                    assert!(x - room >= third && x + room <= third + 1.0 / 3.0, "{a:?} {x}");
                    assert!(y - room >= 0.0 && y + room <= 1.0, "{a:?} {y}");
                    if let Some(&[_, next]) = scene.layout.get(i + 1) {
                        assert!(next - y >= 2.0 * room + VISIBLE_GAP - 1e-12, "{a:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn shapes_have_their_colour_at_their_centres() {
        let config = RenderConfig::default();
        let mut rng = Rng::new(6);
        for shape in Shape::ALL {
            for colour in Colour::ALL {
                for size in Size::ALL {
                    let a = attrs(shape, colour, size, Position::Middle, 2);
                    let scene = Scene::sample(Some(a), &mut rng);
                    let img = scene.render(&RenderConfig { jitter: 0.0, ..config }, &mut rng);
                    for &[x, y] in &scene.layout {
                        let p = img.get_pixel((x * 96.0) as u32, (y * 96.0) as u32);
                        for (got, want) in p.0.iter().zip(colour.rgb()) {
                            assert!(got.abs_diff(want) <= 7, "{a:?}: {p:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn background_only_scenes_have_no_saturated_pixels() {
        let mut rng = Rng::new(7);
        for _ in 0..20 {
            let img =
                Scene::sample(None, &mut rng).render(&RenderConfig { noise: 10.0, ..Default::default() }, &mut rng);
            assert!(saturated_pixels(&img).is_empty());
            assert!(img.pixels().all(|p| p.0.iter().all(|&c| c >= 170)));
        }
    }

    #[test]
    fn large_shapes_cover_more_than_small_ones() {
        let mut rng = Rng::new(8);
        for shape in Shape::ALL {
            let area = |size, rng: &mut Rng| {
                let scene = Scene::sample(Some(attrs(shape, Colour::Blue, size, Position::Left, 1)), rng);
                saturated_pixels(&scene.render(&RenderConfig::default(), rng)).len()
            };
            let (small, large) = (area(Size::Small, &mut rng), area(Size::Large, &mut rng));
            assert!(large > 3 * small && small > 20, "{shape:?}: {small} vs {large}");
        }
    }

    #[test]
    fn groups_stay_in_their_third() {
        let mut rng = Rng::new(9);
        for a in Attributes::all() {
            let img = Scene::sample(Some(a), &mut rng).render(&RenderConfig::default(), &mut rng);
            let third = a.position.third() as u32;
            let pixels = saturated_pixels(&img);
            assert!(!pixels.is_empty());
            assert!(pixels.iter().all(|&(x, _)| x / 32 == third), "{a:?}");
        }
    }

    #[test]
    fn counts_give_that_many_blobs() {
        let mut rng = Rng::new(10);
        for a in Attributes::all() {
            let scene = Scene::sample(Some(a), &mut rng);
            let img = scene.render(&RenderConfig { jitter: MAX_JITTER * 2.0, ..Default::default() }, &mut rng);
            assert_eq!(blobs(&img), usize::from(a.count), "{a:?}");
        }
    }

    #[test]
    fn same_seed_same_image_and_jitter_moves_shapes() {
        let a = attrs(Shape::Triangle, Colour::Green, Size::Large, Position::Right, 1);
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            let scene = Scene::sample(Some(a), &mut rng);
            (scene.render(&RenderConfig::default(), &mut rng), scene.render(&RenderConfig::default(), &mut rng))
        };
        let (first, second) = draw(12);
        assert_eq!(draw(12), (first.clone(), second.clone()));
        assert_ne!(first, second);
        assert_ne!(draw(13).0, first);
    }

    #[test]
    fn odd_configs_do_not_panic() {
        let mut rng = Rng::new(14);
        let scene = Scene::sample(Some(attrs(Shape::Cross, Colour::Red, Size::Large, Position::Left, 3)), &mut rng);
        for config in [
            RenderConfig { size: 0, ..Default::default() },
            RenderConfig { size: 1, noise: f32::NAN, jitter: f32::NAN },
            RenderConfig { size: 7, noise: -3.0, jitter: -1.0 },
            RenderConfig { size: 300, noise: f32::INFINITY, jitter: f32::INFINITY },
        ] {
            let img = scene.render(&config, &mut rng);
            assert_eq!(img.dimensions(), (config.size, config.size));
        }
        let bad_count = Attributes { count: 9, ..scene.attributes.unwrap() };
        assert_eq!(Scene::sample(Some(bad_count), &mut rng).layout.len(), 3);
    }
}
