#![no_main]
//! Arbitrary bytes through the pickle scanner (the allow-list check run on `data.pkl` before anything
//! else reads it): never a panic, and nothing outside the allow-list accepted.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    landscaped_fuzz::scan_pickle(data);
});
