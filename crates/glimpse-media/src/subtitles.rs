//! Timed captions as SubRip (`.srt`), WebVTT (`.vtt`) and YouTube chapters.

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

/// Shortest chapter YouTube accepts, in seconds.
const MIN_CHAPTER_SECONDS: u64 = 10;

/// Fewest chapters YouTube accepts.
const MIN_CHAPTERS: usize = 3;

/// Refuses a video too short for YouTube's chapters whatever its events (under 30 s), so that a
/// caller can say so before captioning it.
pub fn check_chapters_fit(duration: f64) -> Result<(), String> {
    let least = MIN_CHAPTERS as u64 * MIN_CHAPTER_SECONDS;
    if duration.is_finite() && duration >= least as f64 {
        return Ok(());
    }
    Err(format!(
        "YouTube chapters need at least {MIN_CHAPTERS} chapters of {MIN_CHAPTER_SECONDS} s or more, so a video of \
         {least} s or more; this one lasts {duration:.1} s"
    ))
}

/// YouTube chapters for a video of `duration` seconds: `MM:SS Title` lines (`H:MM:SS` from an
/// hour on), the first at `00:00`, at least three, each at least 10 s long, in order, so the
/// list can be pasted into a video's description. Chapters start at events' starts (whole
/// seconds; the first at 0): each event in turn starts one if it leaves 10 s since the last and
/// before the end, which makes as many chapters as the rules allow; a chapter is titled by its
/// longest event. Fails, saying why, where fewer than three chapters fit (a video under 30 s, or
/// events too close together).
pub fn to_chapters(cues: &[Cue], duration: f64) -> Result<String, String> {
    check_chapters_fit(duration)?;
    let end = duration.floor() as u64;
    let mut sorted: Vec<&Cue> = cues.iter().collect();
    sorted.sort_by(|a, b| a.start.total_cmp(&b.start));
    let start = |i: usize| if i == 0 { 0 } else { sorted[i].start.max(0.0).floor() as u64 };
    // Indices of the events that start a chapter.
    let mut firsts: Vec<usize> = Vec::new();
    for i in 0..sorted.len() {
        let after_last = firsts.last().is_none_or(|&last| start(i) >= start(last) + MIN_CHAPTER_SECONDS);
        if after_last && start(i) + MIN_CHAPTER_SECONDS <= end {
            firsts.push(i);
        }
    }
    if firsts.len() < MIN_CHAPTERS {
        return Err(format!(
            "YouTube chapters need at least {MIN_CHAPTERS} chapters of {MIN_CHAPTER_SECONDS} s or more; the {} events of \
             this {duration:.0} s video make {}",
            cues.len(),
            firsts.len()
        ));
    }
    let clock = |s: u64| match end >= 3600 {
        true => format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60),
        false => format!("{:02}:{:02}", s / 60, s % 60),
    };
    let lines = firsts.iter().enumerate().map(|(k, &first)| {
        let members = &sorted[first..firsts.get(k + 1).copied().unwrap_or(sorted.len())];
        let longest = members.iter().max_by(|a, b| (a.end - a.start).total_cmp(&(b.end - b.start))).expect("a member");
        format!("{} {}\n", clock(start(first)), title(&longest.text))
    });
    Ok(lines.collect())
}

/// A caption as a chapter title: one line, capitalised, without a final full stop.
fn title(text: &str) -> String {
    let line = cue_text(text);
    let line = line.trim_end_matches('.');
    let mut chars = line.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => "…".to_string(),
    }
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

    fn cue(start: f64, end: f64, text: &str) -> Cue {
        Cue { start, end, text: text.into() }
    }

    #[test]
    fn chapters_follow_youtubes_rules() {
        let events = [
            cue(2.4, 19.0, "a red circle on the left."),
            cue(19.5, 22.0, "a flash."),
            cue(22.0, 40.0, "two blue squares."),
            cue(41.0, 70.0, "three small triangles"),
        ];
        // The first chapter starts at 00:00; the flash and the squares 2.5 s after it share the
        // chapter from the flash's start, titled by the longer.
        assert_eq!(
            to_chapters(&events, 70.0).unwrap(),
            "00:00 A red circle on the left\n00:19 Two blue squares\n00:41 Three small triangles\n"
        );
        // Order does not matter, and an hour-long video gets hours.
        let mut long = events.to_vec();
        long.reverse();
        long[0] = cue(1800.0, 3700.0, "the end");
        assert_eq!(to_chapters(&long, 3700.0).unwrap().lines().last(), Some("0:30:00 The end"));
    }

    #[test]
    fn too_few_or_too_short_chapters_are_refused_with_the_reason() {
        let two = [cue(0.0, 20.0, "one"), cue(20.0, 40.0, "two")];
        assert!(to_chapters(&two, 40.0).unwrap_err().contains("at least 3 chapters"));
        let crowded = [cue(0.0, 8.0, "a"), cue(8.0, 16.0, "b"), cue(16.0, 24.0, "c")];
        assert!(to_chapters(&crowded, 24.0).is_err());
        assert!(to_chapters(&[], f64::NAN).is_err());
        // Too short whatever the events: said before any are made, with the length.
        assert!(check_chapters_fit(29.94).unwrap_err().contains("this one lasts 29.9 s"));
        assert!(check_chapters_fit(30.0).is_ok());
        let thirty = [cue(0.0, 10.0, "a"), cue(10.0, 20.0, "b"), cue(20.0, 30.0, "c")];
        assert_eq!(to_chapters(&thirty, 30.0).unwrap(), "00:00 A\n00:10 B\n00:20 C\n");
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
