#![no_main]
//! Pickles generated to nest deeply (issue 20: 20,000 nested lists in 40 KB aborted the daemon), read as a
//! torch.save `data.pkl` and as a DCP `.metadata` on a small stack: refused or read, never a stack
//! overflow.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    landscaped_fuzz::exercise_nesting(data);
});
