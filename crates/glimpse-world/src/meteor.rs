//! METEOR 1.5 (Denkowski & Lavie 2014), the sentence metric `densevid_eval` and SODA report,
//! through the Java program itself: no Rust port could claim its numbers, which depend on its
//! stemmer, WordNet synonyms and paraphrase table. It runs as pycocoevalcap runs it
//! (`java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm`, in the jar's folder, where its
//! `data/paraphrase-en.gz` lies), so the jar pycocoevalcap installs (`pip install pycocoevalcap`)
//! gives pycocoevalcap's figures.
//!
//! The protocol on its standard streams: `SCORE ||| ref 1 ||| .. ||| ref n ||| hypothesis` answers
//! one line of statistics; `EVAL ||| stats 1 ||| .. ||| stats m` answers each segment's score,
//! one per line, then the score of all of them together.

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A running METEOR; stopped when dropped.
pub struct Meteor {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    jar: PathBuf,
}

impl Meteor {
    /// Starts `java` on `jar` (METEOR 1.5's `meteor-1.5.jar`).
    pub fn start(jar: &Path) -> io::Result<Self> {
        let name = jar.display();
        if !jar.is_file() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{name} is not a file")));
        }
        let folder = jar.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut child = Command::new("java")
            .args(["-jar", "-Xmx2G"])
            .arg(jar.file_name().expect("a file has a name"))
            .args(["-", "-", "-stdio", "-l", "en", "-norm"])
            .current_dir(folder)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run java for {name} ({e}); METEOR needs Java")))?;
        let input = child.stdin.take().expect("stdin is piped");
        let output = BufReader::new(child.stdout.take().expect("stdout is piped"));
        Ok(Self { child, input, output, jar: jar.to_path_buf() })
    }

    /// Each `(hypothesis, references)` pair's score, and the score of all the pairs together (what
    /// pycocoevalcap's `Meteor.compute_score` returns). Sentences are used as given: tokenise them
    /// first as the protocol in use does.
    pub fn score(&mut self, pairs: &[(String, Vec<String>)]) -> io::Result<(Vec<f64>, f64)> {
        if pairs.is_empty() {
            return Ok((Vec::new(), 0.0));
        }
        let mut eval = String::from("EVAL");
        for (hypothesis, references) in pairs {
            let hypothesis = clean(hypothesis);
            let references: Vec<String> = references.iter().map(|r| clean(r)).collect();
            let stats = self.ask(&format!("SCORE ||| {} ||| {hypothesis}", references.join(" ||| ")))?;
            eval.push_str(" ||| ");
            eval.push_str(&stats);
        }
        writeln!(self.input, "{eval}")?;
        self.input.flush()?;
        let scores = pairs.iter().map(|_| self.number()).collect::<io::Result<Vec<f64>>>()?;
        Ok((scores, self.number()?))
    }

    fn ask(&mut self, line: &str) -> io::Result<String> {
        writeln!(self.input, "{line}")?;
        self.input.flush()?;
        self.line()
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.output.read_line(&mut line)? == 0 {
            let why = format!("METEOR ({}) stopped answering; is it METEOR 1.5's jar?", self.jar.display());
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, why));
        }
        Ok(line.trim().to_string())
    }

    fn number(&mut self) -> io::Result<f64> {
        let line = self.line()?;
        line.parse().map_err(|_| {
            let why = format!("METEOR ({}) answered `{line}`, not a score", self.jar.display());
            io::Error::new(io::ErrorKind::InvalidData, why)
        })
    }
}

/// A sentence as one field of the protocol: no field separator, no line break.
fn clean(sentence: &str) -> String {
    sentence.replace("|||", "").replace(['\n', '\r'], " ").replace("  ", " ")
}

impl Drop for Meteor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
