//! What users hand glimpse is untrusted: files are read only when they are regular files of a
//! bounded size (a FIFO or `/dev/zero` would block or never end), and third-party decoders run
//! behind [`decoding`], which turns a panic on malformed data into an ordinary error.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use crate::MediaError;

thread_local! {
    static DECODING: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is inside [`decoding`], where a panic becomes an error: a process-wide
/// panic hook stays quiet then.
pub fn panic_becomes_error() -> bool {
    DECODING.get()
}

/// Runs a third-party decoder on untrusted data; a panic inside it (an assertion on input it did
/// not expect) is reported as malformed input of `what`.
pub fn decoding<T>(what: &str, decode: impl FnOnce() -> Result<T, MediaError>) -> Result<T, MediaError> {
    let outer = DECODING.replace(true);
    let result = catch_unwind(AssertUnwindSafe(decode));
    DECODING.set(outer);
    result.unwrap_or_else(|_| Err(MediaError::Malformed(format!("{what} failed on malformed data"))))
}

/// Opens `path` for reading if it is a regular file (following links), checked before opening:
/// opening a pipe waits for a writer, and a device may never end. Anything else is an error of
/// kind `InvalidInput` saying what it is.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        let what = if metadata.is_dir() { "a folder" } else { "not a regular file (a pipe, device or socket)" };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, what));
    }
    File::open(path)
}

/// [`open_regular`], its refusal naming the path and what to give.
pub fn open_regular_file(path: &Path) -> Result<File, MediaError> {
    let named = |message: String| MediaError::File(format!("{}: {message}", path.display()));
    open_regular(path).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidInput => named(format!("{e}; give the path of a file")),
        // Unix's name for standard input, where no file of that name is.
        _ if path.as_os_str() == "-" => named("files are not read from standard input; save it to a file first".into()),
        _ => named(e.to_string()),
    })
}

/// The whole of a regular file of at most `max_bytes`.
pub fn read_regular_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, MediaError> {
    let named = |message: String| MediaError::File(format!("{}: {message}", path.display()));
    let file = open_regular_file(path)?;
    let mut bytes = Vec::new();
    // One byte past the limit tells a file that is too long from one that is exactly the limit,
    // even if it grows while being read.
    file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(|e| named(e.to_string()))?;
    if bytes.len() as u64 > max_bytes {
        return Err(named(format!("larger than {} MiB, the most glimpse reads for such a file", max_bytes >> 20)));
    }
    Ok(bytes)
}

/// Refuses JSON that is not an object (a file of settings, a tokenizer) by what it holds, where
/// serde would say "expected struct" and the name of a type inside glimpse. `Err` is the message.
pub fn check_json_object(value: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    let holds = match value {
        Value::Object(_) => return Ok(()),
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
    };
    Err(format!("the file holds {holds}, not an object; it is damaged, or not this file of a model"))
}

/// A settings file (`config.json`, `preprocessor_config.json`) read into `T`. JSON that is not an
/// object is refused by what it holds, and a value of the wrong type is named by its field's path
/// (`text_config.hidden_size: invalid type: ...`), where serde alone gives a line and a column.
/// `Err` is the message.
pub fn settings_from_json<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, String> {
    settings_from_value(serde_json::from_slice(json).map_err(|e| format!("not valid JSON ({e})"))?)
}

/// [`settings_from_json`] of JSON already parsed.
pub fn settings_from_value<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    check_json_object(&value)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let message = plain_types(&e.inner().to_string());
        match e.path().to_string().as_str() {
            "." => message,
            path => format!("{path}: {message}"),
        }
    })
}

/// serde's message with the Rust types it expected named as a user knows them (`expected usize`:
/// `expected a whole number from 0 to 4294967295` on wasm32).
fn plain_types(message: &str) -> String {
    let whole = |min: i128, max: i128| format!("a whole number from {min} to {max}");
    let mut plain = message.to_string();
    for (rust, named) in [
        ("usize", whole(0, usize::MAX as i128)),
        ("u64", whole(0, u64::MAX.into())),
        ("u32", whole(0, u32::MAX.into())),
        ("u16", whole(0, u16::MAX.into())),
        ("u8", whole(0, u8::MAX.into())),
        ("i64", whole(i64::MIN.into(), i64::MAX.into())),
        ("i32", whole(i32::MIN.into(), i32::MAX.into())),
        ("f64", "a number".to_string()),
        ("f32", "a number".to_string()),
    ] {
        plain = plain.replace(&format!("expected {rust}"), &format!("expected {named}"));
    }
    plain
}

/// How much of a name, path or line of an untrusted input an error message quotes.
const QUOTED_CHARS: usize = 80;

/// At most [`QUOTED_CHARS`] of `text` (then `…`), [`printable`], for an error message: an
/// input's line or name may be as long as the file.
pub fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        Some((cut, _)) => format!("{}…", printable(&text[..cut])),
        None => printable(text),
    }
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`): a name or line from an input,
/// printed to a terminal, must not move the cursor or send it commands.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_text_is_short_and_sends_a_terminal_no_command() {
        assert_eq!(printable("evil\u{1b}]0;pwned\u{7}\nname"), "evil\\u{1b}]0;pwned\\u{7}\\nname");
        assert_eq!(printable("é clip\t1"), "é clip\\t1");
        let long = format!("{}\u{1b}", "x".repeat(QUOTED_CHARS));
        assert_eq!(quoted(&long), format!("{}…", "x".repeat(QUOTED_CHARS)));
        assert_eq!(quoted("a\u{1b}b"), "a\\u{1b}b");
    }

    #[test]
    fn settings_errors_name_the_field_and_a_type_a_user_knows() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Settings {
            max_tokens: usize,
            scale: f32,
        }
        let err = settings_from_json::<Settings>(br#"{"max_tokens": -1, "scale": 1}"#).unwrap_err();
        assert_eq!(
            err,
            format!("max_tokens: invalid value: integer `-1`, expected a whole number from 0 to {}", usize::MAX)
        );
        let err = settings_from_json::<Settings>(br#"{"max_tokens": 1, "scale": "big"}"#).unwrap_err();
        assert_eq!(err, r#"scale: invalid type: string "big", expected a number"#);
    }

    #[test]
    fn standard_input_is_no_file() {
        let err = open_regular_file(Path::new("-")).unwrap_err().to_string();
        assert_eq!(err, "-: files are not read from standard input; save it to a file first");
        let err = open_regular_file(Path::new("no-such-file")).unwrap_err().to_string();
        assert!(err.starts_with("no-such-file: No such file"), "{err}");
    }
}
