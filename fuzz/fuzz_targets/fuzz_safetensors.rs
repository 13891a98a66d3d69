#![no_main]
//! Arbitrary bytes as a `.safetensors` file: open, read every tensor, check completeness.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    landscaped_fuzz::exercise("input.safetensors", data);
});
