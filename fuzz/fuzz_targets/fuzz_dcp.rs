#![no_main]
//! DCP folders from arbitrary bytes (`.metadata` + one data file): checked, opened, and every float
//! tensor streamed by range against its whole read (see `landscaped_fuzz::exercise_dcp`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    landscaped_fuzz::exercise_dcp(data);
});
