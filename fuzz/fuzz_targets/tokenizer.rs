#![no_main]

use glimpse_tests::fuzz_targets;

libfuzzer_sys::fuzz_target!(
    init: fuzz_targets::let_contained_panics_unwind(),
    |data: &[u8]| fuzz_targets::tokenizer(data)
);
