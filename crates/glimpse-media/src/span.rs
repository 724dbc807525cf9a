//! Time spans of a video and their overlap: the one definition of temporal IoU that ZeroTA's
//! de-duplication and the dense-captioning metrics share.

/// A `(start, end)` time span, in any unit as long as all segments compared share it.
pub type Segment = (f64, f64);

/// Temporal intersection over union of two segments, exactly as ActivityNet Captions'
/// `densevid_eval` computes it, `1e-8` added to the union included: scores must be the
/// benchmark's own, and with it an IoU of exactly 0.5 misses a 0.5 threshold there, so it does
/// here.
///
/// A segment that is not a finite interval of positive length has no extent to overlap with, so
/// its IoU with anything is 0 rather than NaN; disjoint or merely touching segments also give 0.
pub fn tiou(a: Segment, b: Segment) -> f64 {
    let proper = |(start, end): Segment| start.is_finite() && end.is_finite() && start < end;
    if !proper(a) || !proper(b) {
        return 0.0;
    }
    let intersection = (a.1.min(b.1) - a.0.max(b.0)).max(0.0);
    let union = (a.1 - a.0) + (b.1 - b.0) - intersection;
    intersection / (union + 1e-8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) {
        assert!((actual - expected).abs() <= tolerance, "got {actual}, expected {expected}");
    }

    #[test]
    fn tiou_of_known_intervals() {
        close(tiou((0.0, 10.0), (0.0, 10.0)), 1.0, 1e-8);
        // densevid_eval's epsilon: an IoU of exactly a half stays just below it.
        assert!(tiou((0.0, 10.0), (0.0, 5.0)) < 0.5);
        // Overlap [5, 10] of length 5 over union [0, 15] of length 15.
        close(tiou((0.0, 10.0), (5.0, 15.0)), 1.0 / 3.0, 1e-9);
        // Containment: 2 over 8.
        close(tiou((2.0, 4.0), (0.0, 8.0)), 0.25, 1e-9);
        assert_eq!(tiou((0.0, 1.0), (1.0, 2.0)), 0.0);
        assert_eq!(tiou((0.0, 1.0), (3.0, 4.0)), 0.0);
        assert_eq!(tiou((2.0, 2.0), (0.0, 4.0)), 0.0);
        assert_eq!(tiou((3.0, 1.0), (0.0, 4.0)), 0.0);
        assert_eq!(tiou((0.0, f64::NAN), (0.0, 4.0)), 0.0);
        assert_eq!(tiou((0.0, 10.0), (5.0, 15.0)), tiou((5.0, 15.0), (0.0, 10.0)));
    }
}
