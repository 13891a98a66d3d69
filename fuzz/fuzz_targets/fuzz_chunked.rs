#![no_main]
//! The streaming reader: a safetensors or torch zip checkpoint read in small chunks must give the
//! values of the whole read (see `landscaped_fuzz::exercise_chunked`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    landscaped_fuzz::exercise_chunked(data);
});
