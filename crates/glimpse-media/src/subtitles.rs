//! Timed captions as SubRip (`.srt`) and WebVTT (`.vtt`).

/// One timed caption, times in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Cue {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// `HH:MM:SS<sep>mmm`, rounded to the millisecond.
fn timestamp(seconds: f64, separator: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{h:02}:{m:02}:{s:02}{separator}{ms:03}")
}

/// Cue text on one line: blank lines would end a cue early, and `-->` is reserved in WebVTT.
fn cue_text(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ").replace("-->", "->");
    if line.is_empty() { "…".to_string() } else { line }
}

pub fn to_srt(cues: &[Cue]) -> String {
    cues.iter()
        .enumerate()
        .map(|(i, c)| {
            format!("{}\n{} --> {}\n{}\n\n", i + 1, timestamp(c.start, ','), timestamp(c.end, ','), cue_text(&c.text))
        })
        .collect()
}

pub fn to_vtt(cues: &[Cue]) -> String {
    let body: String = cues
        .iter()
        .map(|c| format!("{} --> {}\n{}\n\n", timestamp(c.start, '.'), timestamp(c.end, '.'), cue_text(&c.text)))
        .collect();
    format!("WEBVTT\n\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cues() -> Vec<Cue> {
        vec![
            Cue { start: 0.0, end: 2.5, text: "A red circle on the left.".into() },
            Cue { start: 2.5, end: 3661.042, text: "two lines\n\nand an --> arrow".into() },
            Cue { start: 3661.042, end: 3662.0, text: "   ".into() },
        ]
    }

    #[test]
    fn srt_parses_with_a_standard_parser() {
        let parsed = srtlib::Subtitles::parse_from_str(to_srt(&cues())).expect("valid SRT");
        let subs = parsed.to_vec();
        assert_eq!(subs.len(), 3);
        assert_eq!(subs[0].text, "A red circle on the left.");
        assert_eq!(subs[1].text, "two lines and an -> arrow");
        assert_eq!(subs[1].end_time.to_string(), "01:01:01,042");
        assert_eq!(subs[2].text, "…");
    }

    #[test]
    fn vtt_parses_with_a_standard_parser() {
        let text = to_vtt(&cues());
        let parsed = webvtt_parser::Vtt::parse(&text).expect("valid WebVTT");
        assert_eq!(parsed.cues.len(), 3);
        assert_eq!(parsed.cues[1].text, "two lines and an -> arrow");
        assert_eq!(parsed.cues[1].end.as_milliseconds(), 3_661_042);
    }
}
