//! Every committed fuzz input (`fuzz/corpus/<target>`: the seeds of `fuzz/seed.sh` and inputs the
//! fuzzer kept; `fuzz/regressions/<target>`: inputs that once crashed a target) runs through the
//! fuzz targets' own code, so `cargo test` guards them without cargo-fuzz or a nightly toolchain.

use std::panic::catch_unwind;
use std::path::Path;

use glimpse_tests::fuzz_targets;

fn replay(target: &str, run: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = 0;
    for folder in ["corpus", "regressions"] {
        // `regressions/<target>` exists only once the target has crashed.
        let Ok(entries) = std::fs::read_dir(fuzz.join(folder).join(target)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            if catch_unwind(|| run(&bytes)).is_err() {
                panic!("fuzz target `{target}` panicked on {}", path.display());
            }
            inputs += 1;
        }
    }
    assert!(inputs > 0, "no inputs for fuzz target `{target}`; fuzz/seed.sh writes its seeds");
}

#[test]
fn weights() {
    replay("weights", fuzz_targets::weights);
}

#[test]
fn tokenizer() {
    replay("tokenizer", fuzz_targets::tokenizer);
}

#[test]
fn image() {
    replay("image", fuzz_targets::image);
}

#[test]
fn preprocessor() {
    replay("preprocessor", fuzz_targets::preprocessor);
}

#[test]
fn inputs_split_at_their_length_prefix() {
    assert_eq!(fuzz_targets::split(&[3, 0, 1, 2, 3, 4]), (&[1, 2, 3][..], &[4][..]));
    assert_eq!(fuzz_targets::split(&[9, 0, 1]), (&[1][..], &[][..]));
    assert_eq!(fuzz_targets::split(&[7]), (&[][..], &[7][..]));
}
