//! The deterministic mutation smoke test's machinery (runs in CI, where the cargo-fuzz targets don't):
//! bit flips, overwrites, truncations and splices clustered in a file's first and last KiB (where the
//! headers, zip directories and pickles are), and the readers run on every mutant: the completeness
//! check, open, and every tensor read whole and raw. Every outcome must be a value or an error that
//! names the checkpoint, never a panic. Single files and checkpoint folders (one member mutated at a
//! time, the others intact).
#![allow(dead_code)]

use landscaped_formats::{Checkpoint, check_complete};
use std::path::{Path, PathBuf};

/// xorshift64, fixed seeds: the same mutants every run.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One to four mutations of `data`.
pub fn mutate(data: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut m = data.to_vec();
    // Mutations cluster in the headers (the first and last KiB hold the safetensors header, the zip
    // local headers / pickle and the central directory).
    let pick = |r: u64, len: usize| -> usize {
        let r = r as usize;
        match r % 3 {
            0 => r / 3 % len.min(1024),
            1 => len - 1 - (r / 3 % len.min(1024)),
            _ => r / 3 % len,
        }
    };
    for _ in 0..1 + rng.next() % 4 {
        if m.is_empty() {
            m.push(rng.next() as u8);
        }
        let at = pick(rng.next(), m.len());
        match rng.next() % 5 {
            0 => m[at] ^= 1 << (rng.next() % 8),
            1 => m[at] = rng.next() as u8,
            2 => m[at] = [0u8, 0xff, 0x7f, 0x80][rng.next() as usize % 4],
            3 => m.truncate(at.max(1)),
            _ => {
                let b = (rng.next() % 8 + 1) as usize;
                let at = at.min(m.len());
                m.splice(at..at, std::iter::repeat_n(rng.next() as u8, b));
            }
        }
    }
    m
}

/// Runs every reader on `target`; true if it opened. An error must name `target` (or a file in it).
pub fn exercise(target: &Path) -> bool {
    let _ = check_complete(target);
    if let Err(e) = Checkpoint::open_complete(target) {
        assert!(e.to_string().contains(&*target.to_string_lossy()), "{e}");
    }
    match Checkpoint::open(target) {
        Ok(ck) => {
            for i in 0..ck.tensors.len() {
                if let Ok(v) = ck.read(i) {
                    assert_eq!(v.len(), ck.tensors[i].numel());
                }
                let _ = ck.read_raw(i);
            }
            true
        }
        Err(e) => {
            assert!(e.to_string().contains(&*target.to_string_lossy()), "{e}");
            false
        }
    }
}

/// Every regular file under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                dirs.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Copies the folder `src` (recursively) to `dest`.
pub fn copy_folder(src: &Path, dest: &Path) {
    for f in files_under(src) {
        let to = dest.join(f.strip_prefix(src).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&f, &to).unwrap();
    }
}

/// `rounds` mutants of the checkpoint folder `src`, copied under `scratch` with the same name: each
/// round mutates one member (chosen by the generator), runs the readers on the folder, and restores
/// the member. Returns how many mutants opened.
pub fn mutate_folder(src: &Path, scratch: &Path, rounds: usize, rng: &mut Rng) -> usize {
    let target = scratch.join(src.file_name().unwrap());
    copy_folder(src, &target);
    let members = files_under(&target);
    assert!(!members.is_empty(), "{}: no files", src.display());
    let mut opened = 0;
    for _ in 0..rounds {
        let f = &members[rng.next() as usize % members.len()];
        let original = std::fs::read(f).unwrap();
        std::fs::write(f, mutate(&original, rng)).unwrap();
        opened += exercise(&target) as usize;
        std::fs::write(f, &original).unwrap();
    }
    opened
}
