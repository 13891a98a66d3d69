#![no_main]
//! Arbitrary bytes as a torch zip checkpoint (`.pt`): open (zip directory, pickle scan,
//! pytorch-reader), read every tensor, check completeness.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    landscaped_fuzz::exercise("input.pt", data);
});
