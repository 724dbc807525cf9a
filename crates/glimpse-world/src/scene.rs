//! What a scene shows and how it is said: the five attributes, caption templates that state each
//! attribute with exactly one word or phrase, and a tolerant parser that reads the attributes back
//! out of any caption (a model's included), so that captions can be scored attribute by attribute.

use serde::{Deserialize, Serialize};

use glimpse_media::rng::Rng;

/// The kind of shape in a scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
    Cross,
}

impl Shape {
    /// Every shape, in a fixed order (sampling and enumeration depend on it).
    pub const ALL: [Shape; 5] = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Diamond, Shape::Cross];

    /// The singular noun.
    pub fn word(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Diamond => "diamond",
            Shape::Cross => "cross",
        }
    }

    /// The plural noun (not always `word` + "s": "crosses").
    pub fn plural(self) -> &'static str {
        match self {
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
            Shape::Diamond => "diamonds",
            Shape::Cross => "crosses",
        }
    }

    /// The noun that agrees with `count`.
    fn noun(self, count: u8) -> &'static str {
        if count == 1 { self.word() } else { self.plural() }
    }
}

/// The fill colour of the shapes in a scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
}

impl Colour {
    /// Every colour, in a fixed order.
    pub const ALL: [Colour; 6] =
        [Colour::Red, Colour::Green, Colour::Blue, Colour::Yellow, Colour::Purple, Colour::Orange];

    /// The adjective.
    pub fn word(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
        }
    }

    /// The fill colour: saturated and far from every other colour and from the pale backgrounds,
    /// so that a tiny model can tell them apart after noise and GIF quantisation.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 40, 40],
            Colour::Green => [40, 170, 60],
            Colour::Blue => [40, 80, 220],
            Colour::Yellow => [235, 205, 30],
            Colour::Purple => [140, 50, 190],
            Colour::Orange => [245, 130, 20],
        }
    }
}

/// The size of the shapes in a scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    Small,
    Large,
}

impl Size {
    /// Every size, in a fixed order.
    pub const ALL: [Size; 2] = [Size::Small, Size::Large];

    /// The adjective.
    pub fn word(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }
}

/// Which third of the frame the group of shapes sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    Left,
    Middle,
    Right,
}

impl Position {
    /// Every position, from left to right.
    pub const ALL: [Position; 3] = [Position::Left, Position::Middle, Position::Right];

    /// The one word that names the position (what the parser looks for).
    pub fn word(self) -> &'static str {
        match self {
            Position::Left => "left",
            Position::Middle => "middle",
            Position::Right => "right",
        }
    }

    /// The phrase captions use: "on the left", "in the middle", "on the right".
    pub fn phrase(self) -> &'static str {
        match self {
            Position::Left => "on the left",
            Position::Middle => "in the middle",
            Position::Right => "on the right",
        }
    }

    /// 0, 1 or 2: the index of the third, from the left.
    pub fn third(self) -> usize {
        match self {
            Position::Left => 0,
            Position::Middle => 1,
            Position::Right => 2,
        }
    }
}

/// The largest number of shapes in a scene.
pub const MAX_COUNT: u8 = 3;

/// Everything a caption states about a scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Attributes {
    pub shape: Shape,
    pub colour: Colour,
    pub size: Size,
    pub position: Position,
    /// How many shapes, 1..=[`MAX_COUNT`]. Captions and renderers treat a value outside that range
    /// as the nearest count inside it (the field is public, so it cannot be guaranteed).
    pub count: u8,
}

impl Attributes {
    /// Uniform over all 540 combinations.
    pub fn sample(rng: &mut Rng) -> Self {
        Self {
            shape: *rng.pick(&Shape::ALL),
            colour: *rng.pick(&Colour::ALL),
            size: *rng.pick(&Size::ALL),
            position: *rng.pick(&Position::ALL),
            count: 1 + rng.below(usize::from(MAX_COUNT)) as u8,
        }
    }

    /// Every combination, in a fixed order (for exhaustive tests and evaluation sets).
    pub fn all() -> Vec<Self> {
        let mut all = Vec::with_capacity(540);
        for shape in Shape::ALL {
            for colour in Colour::ALL {
                for size in Size::ALL {
                    for position in Position::ALL {
                        for count in 1..=MAX_COUNT {
                            all.push(Self { shape, colour, size, position, count });
                        }
                    }
                }
            }
        }
        all
    }

    /// The count clamped into 1..=[`MAX_COUNT`]: what is drawn and said.
    pub fn valid_count(&self) -> u8 {
        self.count.clamp(1, MAX_COUNT)
    }

    /// How many of the five attributes differ (consecutive video events differ in at least two,
    /// so that an event boundary is visible and a caption can tell the events apart).
    pub fn differs_in(&self, other: &Attributes) -> usize {
        usize::from(self.shape != other.shape)
            + usize::from(self.colour != other.colour)
            + usize::from(self.size != other.size)
            + usize::from(self.position != other.position)
            + usize::from(self.valid_count() != other.valid_count())
    }
}

/// The names of the attributes, in the order of [`ParsedAttributes::correct`].
pub const ATTRIBUTE_NAMES: [&str; 5] = ["shape", "colour", "size", "position", "count"];

/// The number of caption templates [`caption`] knows.
pub const TEMPLATE_COUNT: usize = 7;

/// The reference caption of a scene, e.g. "two small red circles on the left" (template 0).
pub fn canonical_caption(a: &Attributes) -> String {
    caption(a, 0)
}

/// "one", "two" or "three".
fn number_word(count: u8) -> &'static str {
    match count {
        1 => "one",
        2 => "two",
        _ => "three",
    }
}

/// The indefinite article that reads naturally before `next`.
fn article(next: &str) -> &'static str {
    if next.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

/// The count as templates other than the canonical one say it: an article for one, a number word
/// otherwise.
fn count_phrase(count: u8, next: &str) -> &'static str {
    if count == 1 { article(next) } else { number_word(count) }
}

/// Caption `a` with template `template` (taken modulo [`TEMPLATE_COUNT`], so any index is valid).
///
/// Every template is lowercase, has no trailing punctuation, and states each attribute with
/// exactly one word or phrase, so [`parse_caption`] reads every template back exactly; the
/// templates differ in word order and glue words so that a captioner learns the attributes rather
/// than one sentence. Besides letters and spaces, captions contain only commas.
pub fn caption(a: &Attributes, template: usize) -> String {
    let count = a.valid_count();
    let (size, colour, noun, pos) = (a.size.word(), a.colour.word(), a.shape.noun(count), a.position.phrase());
    let be = if count == 1 { "is" } else { "are" };
    match template % TEMPLATE_COUNT {
        0 => format!("{} {size} {colour} {noun} {pos}", number_word(count)),
        1 => format!("there {be} {} {size} {colour} {noun} {pos}", count_phrase(count, size)),
        2 => format!("{pos}, {} {size} {colour} {noun}", count_phrase(count, size)),
        3 => format!("a picture of {} {size} {colour} {noun} {pos}", count_phrase(count, size)),
        4 => format!("{pos} there {be} {} {size} {colour} {noun}", count_phrase(count, size)),
        5 => format!("{} {noun} {pos}, {size} and {colour}", count_phrase(count, noun)),
        _ => format!("{} {size} {noun} in {colour} {pos}", count_phrase(count, size)),
    }
}

/// Words the templates use besides the attribute words.
const GLUE_WORDS: [&str; 10] = ["a", "and", "are", "in", "is", "of", "on", "picture", "the", "there"];

/// Every word any template can produce, sorted and deduplicated: the word list for building a
/// tokenizer of the world's language. Captions separate words by spaces and also contain commas.
pub fn vocabulary() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = GLUE_WORDS.to_vec();
    words.extend((1..=MAX_COUNT).map(number_word));
    words.extend(Shape::ALL.iter().flat_map(|s| [s.word(), s.plural()]));
    words.extend(Colour::ALL.map(Colour::word));
    words.extend(Size::ALL.map(Size::word));
    words.extend(Position::ALL.map(Position::word));
    words.sort_unstable();
    words.dedup();
    words
}

/// The attributes a caption states; `None` where it states none (or nothing recognisable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedAttributes {
    pub shape: Option<Shape>,
    pub colour: Option<Colour>,
    pub size: Option<Size>,
    pub position: Option<Position>,
    pub count: Option<u8>,
}

impl ParsedAttributes {
    /// Which attributes match `truth`, in the order of [`ATTRIBUTE_NAMES`]; an unstated attribute
    /// is wrong.
    pub fn correct(&self, truth: &Attributes) -> [bool; 5] {
        [
            self.shape == Some(truth.shape),
            self.colour == Some(truth.colour),
            self.size == Some(truth.size),
            self.position == Some(truth.position),
            self.count == Some(truth.valid_count()),
        ]
    }
}

/// What one word of a caption says.
enum Word {
    Shape(Shape, bool),
    Colour(Colour),
    Size(Size),
    Position(Position),
    /// A number word ("one", "pair", ...): it states the count outright.
    Number(u8),
    /// "a" / "an": a count of one only when nothing else states the count, since "a picture of
    /// two ..." says two.
    Article,
}

fn classify(word: &str) -> Option<Word> {
    if let Some(&s) = Shape::ALL.iter().find(|s| s.word() == word) {
        return Some(Word::Shape(s, false));
    }
    if let Some(&s) = Shape::ALL.iter().find(|s| s.plural() == word) {
        return Some(Word::Shape(s, true));
    }
    if let Some(&c) = Colour::ALL.iter().find(|c| c.word() == word) {
        return Some(Word::Colour(c));
    }
    Some(match word {
        "small" | "little" | "tiny" => Word::Size(Size::Small),
        "large" | "big" => Word::Size(Size::Large),
        "left" => Word::Position(Position::Left),
        "middle" | "center" | "centre" | "central" => Word::Position(Position::Middle),
        "right" => Word::Position(Position::Right),
        "one" | "single" => Word::Number(1),
        "two" | "pair" => Word::Number(2),
        "three" => Word::Number(3),
        "a" | "an" => Word::Article,
        _ => return None,
    })
}

/// Read the attributes out of free text: lowercase it, split it on non-letters, and take the first
/// word of each kind. The count comes from a number word if there is one, else from the shape noun
/// (singular means one; plural says nothing about how many), else from an article.
pub fn parse_caption(text: &str) -> ParsedAttributes {
    let lower = text.to_lowercase();
    let mut parsed = ParsedAttributes::default();
    let (mut number, mut plural, mut article) = (None, None, false);
    for word in lower.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty()) {
        match classify(word) {
            Some(Word::Shape(s, p)) if parsed.shape.is_none() => (parsed.shape, plural) = (Some(s), Some(p)),
            Some(Word::Colour(c)) => _ = parsed.colour.get_or_insert(c),
            Some(Word::Size(s)) => _ = parsed.size.get_or_insert(s),
            Some(Word::Position(p)) => _ = parsed.position.get_or_insert(p),
            Some(Word::Number(n)) => _ = number.get_or_insert(n),
            Some(Word::Article) => article = true,
            Some(Word::Shape(..)) | None => {}
        }
    }
    parsed.count = match (number, plural) {
        (Some(n), _) => Some(n),
        (None, Some(false)) => Some(1),
        (None, Some(true)) => None,
        (None, None) => article.then_some(1),
    };
    parsed
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn attrs(shape: Shape, colour: Colour, size: Size, position: Position, count: u8) -> Attributes {
        Attributes { shape, colour, size, position, count }
    }

    #[test]
    fn canonical_captions_read_naturally() {
        let a = attrs(Shape::Circle, Colour::Red, Size::Small, Position::Left, 2);
        assert_eq!(canonical_caption(&a), "two small red circles on the left");
        let b = attrs(Shape::Square, Colour::Blue, Size::Large, Position::Middle, 1);
        assert_eq!(canonical_caption(&b), "one large blue square in the middle");
        let c = attrs(Shape::Cross, Colour::Orange, Size::Large, Position::Right, 1);
        assert_eq!(caption(&c, 1), "there is a large orange cross on the right");
        assert_eq!(caption(&c, 3), "a picture of a large orange cross on the right");
        assert_eq!(caption(&a, 2), "on the left, two small red circles");
        assert_eq!(caption(&a, 5), "two circles on the left, small and red");
        assert_eq!(caption(&a, 6), "two small circles in red on the left");
        assert_eq!(caption(&c, 4), "on the right there is a large orange cross");
    }

    #[test]
    fn articles_follow_the_next_sound() {
        assert_eq!(article("orange"), "an");
        assert_eq!(article("large"), "a");
    }

    #[test]
    fn every_caption_parses_back_exactly() {
        let all = Attributes::all();
        assert_eq!(all.len(), 540);
        assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 540);
        for a in &all {
            for t in 0..TEMPLATE_COUNT {
                let text = caption(a, t);
                assert_eq!(parse_caption(&text).correct(a), [true; 5], "{text:?}");
                assert_eq!(text, text.to_lowercase());
                assert!(!text.ends_with(|c: char| !c.is_ascii_alphabetic()), "{text:?}");
            }
        }
    }

    #[test]
    fn templates_differ() {
        let a = attrs(Shape::Diamond, Colour::Green, Size::Small, Position::Right, 3);
        let texts: BTreeSet<String> = (0..TEMPLATE_COUNT).map(|t| caption(&a, t)).collect();
        assert_eq!(texts.len(), TEMPLATE_COUNT);
        assert_eq!(caption(&a, TEMPLATE_COUNT), caption(&a, 0));
    }

    #[test]
    fn vocabulary_is_exactly_the_words_of_all_captions() {
        let mut produced = BTreeSet::new();
        for a in Attributes::all() {
            for t in 0..TEMPLATE_COUNT {
                for word in caption(&a, t).split([' ', ',']).filter(|w| !w.is_empty()) {
                    produced.insert(word.to_string());
                }
            }
        }
        let vocab = vocabulary();
        assert!(vocab.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(vocab.iter().map(|w| w.to_string()).collect::<BTreeSet<_>>(), produced);
    }

    #[test]
    fn parser_is_tolerant() {
        let p = parse_caption("A Pair of BIG yellow Triangles, near the centre!");
        assert_eq!(p.shape, Some(Shape::Triangle));
        assert_eq!(p.colour, Some(Colour::Yellow));
        assert_eq!(p.size, Some(Size::Large));
        assert_eq!(p.position, Some(Position::Middle));
        assert_eq!(p.count, Some(2));

        let plural = parse_caption("purple crosses to the right");
        assert_eq!((plural.shape, plural.count, plural.size), (Some(Shape::Cross), None, None));
        assert_eq!(parse_caption("a diamond").count, Some(1));
        assert_eq!(parse_caption("an orange thing").count, Some(1));
        assert_eq!(parse_caption("").count, None);
        assert_eq!(
            parse_caption("red blue circle square"),
            ParsedAttributes {
                shape: Some(Shape::Circle),
                colour: Some(Colour::Red),
                count: Some(1),
                ..Default::default()
            }
        );
        assert_eq!(parse_caption("ünïcode — 🙂 left").position, Some(Position::Left));
    }

    #[test]
    fn correct_marks_each_attribute() {
        let truth = attrs(Shape::Circle, Colour::Red, Size::Small, Position::Left, 2);
        let p = parse_caption("two large red squares");
        assert_eq!(p.correct(&truth), [false, true, false, false, true]);
        assert_eq!(ATTRIBUTE_NAMES.len(), p.correct(&truth).len());
    }

    #[test]
    fn sampling_covers_combinations_and_differs_in_counts() {
        let mut rng = Rng::new(11);
        let seen: BTreeSet<Attributes> = (0..20_000).map(|_| Attributes::sample(&mut rng)).collect();
        assert_eq!(seen.len(), 540);
        let a = attrs(Shape::Circle, Colour::Red, Size::Small, Position::Left, 2);
        assert_eq!(a.differs_in(&a), 0);
        let b = attrs(Shape::Square, Colour::Red, Size::Large, Position::Left, 3);
        assert_eq!(a.differs_in(&b), 3);
    }

    #[test]
    fn out_of_range_counts_are_clamped() {
        let a = attrs(Shape::Circle, Colour::Red, Size::Small, Position::Left, 0);
        assert_eq!(canonical_caption(&a), "one small red circle on the left");
        let b = Attributes { count: 200, ..a };
        assert_eq!(canonical_caption(&b), "three small red circles on the left");
    }

    #[test]
    fn serde_uses_lowercase_names() {
        let a = attrs(Shape::Cross, Colour::Purple, Size::Large, Position::Middle, 3);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"shape":"cross","colour":"purple","size":"large","position":"middle","count":3}"#);
        assert_eq!(serde_json::from_str::<Attributes>(&json).unwrap(), a);
    }
}
