//! Streaming ingest: memory bounded by a budget, not by what a header claims.
//! - a 4 KB sparse safetensors file whose header claims a 2^40-element tensor (apparent size to
//!   match) is refused with one line, in-process (no abort, nothing allocated for it);
//! - a tensor over the configured limit is refused with one line;
//! - statistics do not depend on how a tensor is chunked (1 element, odd sizes, the engine's chunks
//!   under a tiny budget, 1 or 2 threads): bit-identical to the in-memory statistics; a large bf16
//!   tensor's, which the engine derives from its bit-pattern counts, bit-identical however it is read
//!   and within float64 summation order of the in-memory ones.

mod capability;

use std::io::Write;

use landscaped::ingest::{IngestOptions, ingest_checkpoint};
use landscaped::store::Store;
use landscaped::store::checkpoints as records;
use landscaped_formats::{Checkpoint, ValuesChunk};
use landscaped_maths::stats;
use landscaped_maths::stats::TensorStats;

mod support;
use support::*;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed;
    (0..n)
        .map(|i| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1 + 3.0;
            // A few exact zeros, NaNs and Infs.
            match i % 9973 {
                5 => 0.0,
                17 => f32::NAN,
                29 => f32::NEG_INFINITY,
                _ => v,
            }
        })
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect()
}

/// Bit-identical statistics (NaN equal to NaN).
fn assert_same(a: &TensorStats, b: &TensorStats, what: &str) {
    let bits = |s: &TensorStats| {
        [s.l2, s.mean, s.std, s.min, s.max, s.max_abs, s.zero_frac, s.histogram.lo, s.histogram.hi]
            .map(f64::to_bits)
    };
    assert_eq!(bits(a), bits(b), "{what}: {a:?} vs {b:?}");
    assert_eq!((a.numel, a.nan_count, a.inf_count), (b.numel, b.nan_count, b.inf_count), "{what}");
    assert_eq!(a.histogram.counts, b.histogram.counts, "{what}: histogram");
}

/// The same statistics up to the order of float64 sums: moments within 1e-13, the rest bit-identical.
fn assert_close(a: &TensorStats, b: &TensorStats, what: &str) {
    for (x, y) in [(a.l2, b.l2), (a.mean, b.mean), (a.std, b.std)] {
        // Both sum the same f64 terms, in blocks and lanes or one term per bit pattern.
        assert!((x - y).abs() <= 1e-13 * y.abs(), "{what}: {x} vs {y}");
    }
    let bits = |s: &TensorStats| {
        [s.min, s.max, s.max_abs, s.zero_frac, s.histogram.lo, s.histogram.hi].map(f64::to_bits)
    };
    assert_eq!(bits(a), bits(b), "{what}: {a:?} vs {b:?}");
    assert_eq!((a.numel, a.nan_count, a.inf_count), (b.numel, b.nan_count, b.inf_count), "{what}");
    assert_eq!(a.histogram.counts, b.histogram.counts, "{what}: histogram");
}

#[test]
fn sparse_file_claiming_2_pow_40_elements_is_refused_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("step-1.safetensors");
    let n: u64 = 1 << 40;
    let header = serde_json::json!({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}});
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    {
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
        f.write_all(&h).unwrap();
        if let Err(e) = f.set_len(8 + h.len() as u64 + 4 * n) {
            capability::require(false, &format!("this filesystem can't hold a 4 TiB sparse file ({e})"));
            return;
        }
    }
    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(ck.tensors[0].numel() as u64, n);
    let store = Store::open(&d.path().join("data")).unwrap();
    // The default limit (64 GiB per tensor) refuses it.
    let e = ingest_checkpoint(&store, "r", &p, &IngestOptions::default(), &mut []).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind().label(), "refused", "{msg}");
    assert!(msg.contains("step-1.safetensors") && msg.contains("max_tensor_bytes"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    // With no tensor limit, the file's apparent size (4 TiB) exceeds its whole filesystem.
    let opts = IngestOptions { max_tensor_bytes: u64::MAX, ..Default::default() };
    let e = ingest_checkpoint(&store, "r", &p, &opts, &mut []).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind().label(), "refused", "{msg}");
    assert!(msg.contains("filesystem"), "{msg}");
    assert!(records::checkpoints(&store, "r").unwrap().is_empty(), "nothing recorded");
}

#[test]
fn tensor_over_the_limit_is_refused_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("step-3.safetensors");
    let v = values(1000, 1);
    write_safetensors_raw(
        &p,
        &[("small", "F32", vec![10], f32_bytes(&v[..10])), ("big", "F32", vec![1000], f32_bytes(&v))],
    );
    let store = Store::open(&d.path().join("data")).unwrap();
    let opts = IngestOptions { max_tensor_bytes: 1000, ..Default::default() };
    let e = ingest_checkpoint(&store, "r", &p, &opts, &mut []).unwrap_err().to_string();
    assert!(e.contains("step-3.safetensors") && e.contains("'big'") && e.contains("limit"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    let opts = IngestOptions { max_tensor_bytes: 4000, ..Default::default() };
    ingest_checkpoint(&store, "r", &p, &opts, &mut []).unwrap();
}

#[test]
fn chunk_boundaries_give_identical_statistics() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("step-5.safetensors");
    // Sizes that are not multiples of any chunk or block: 3 blocks + 17, and a big one.
    let a = values(3 * 4096 + 17, 7);
    let b = values(100_003, 11);
    // Over the engine's threshold for counting bf16 bit patterns (2^18 elements).
    let big = values(300_001, 13);
    write_safetensors_raw(
        &p,
        &[
            ("a", "F32", vec![a.len() as u64], f32_bytes(&a)),
            ("b", "BF16", vec![b.len() as u64], bf16_bytes(&b)),
            ("c", "F32", vec![b.len() as u64], f32_bytes(&b)),
            ("d", "BF16", vec![big.len() as u64], bf16_bytes(&big)),
        ],
    );
    let ck = Checkpoint::open(&p).unwrap();
    for (i, info) in ck.tensors.iter().enumerate() {
        let whole = stats::tensor_stats(&ck.read(i).unwrap(), 30);
        let es = info.dtype.size();
        for per in [1, 7, 4096, 5000, 1 << 20] {
            let got = stats::stats_streamed(info.numel() as u64, 30, |f| {
                let mut next = 0;
                ck.read_chunks(
                    i,
                    per * es,
                    |c: ValuesChunk<'_>| -> Result<(), landscaped_formats::CheckpointError> {
                        assert_eq!(c.start, next, "chunks in order");
                        assert!(c.values.len() <= per);
                        next += c.values.len();
                        f(c.values);
                        Ok(())
                    },
                )
            })
            .unwrap();
            assert_same(&got, &whole, &format!("{} in chunks of {per}", info.name));
        }
    }
    // The engine: a budget so small the chunks are its minimum (8192 f32), on 1 and 2 threads.
    let mut fingerprints = Vec::new();
    let mut by_patterns = Vec::new();
    for threads in [1, 2] {
        let store = Store::open(&d.path().join(format!("data{threads}"))).unwrap();
        let opts = IngestOptions { memory_budget: 1, threads, ..Default::default() };
        let out = ingest_checkpoint(&store, "r", &p, &opts, &mut []).unwrap();
        fingerprints.push(out.record.fingerprint);
        for t in &out.tensors {
            let i = ck.index_of(&t.name).unwrap();
            let whole = stats::tensor_stats(&ck.read(i).unwrap(), 30);
            let what = format!("engine, {threads} threads: {}", t.name);
            let got = t.stats.as_ref().unwrap();
            if t.name == "d" {
                assert_close(got, &whole, &what);
                by_patterns.push(got.clone());
            } else {
                assert_same(got, &whole, &what);
            }
        }
        let stored = records::tensors(&store, "r", 5).unwrap();
        assert_eq!(stored, out.tensors, "the outcome carries what the store holds");
    }
    assert_eq!(fingerprints[0], fingerprints[1]);
    // A default budget (one chunk per tensor) gives the same fingerprint.
    let store = Store::open(&d.path().join("data3")).unwrap();
    let out = ingest_checkpoint(&store, "r", &p, &IngestOptions::default(), &mut []).unwrap();
    assert_eq!(out.record.fingerprint, fingerprints[0]);
    // The bf16 tensor's counts, read in 19 chunks on 1 or 2 threads or whole: the same bits.
    by_patterns.extend(out.tensors.iter().filter(|t| t.name == "d").map(|t| t.stats.clone().unwrap()));
    assert_eq!(by_patterns.len(), 3);
    for s in &by_patterns[1..] {
        assert_same(s, &by_patterns[0], "d, by bit patterns");
    }
}

#[test]
fn distances_stream_against_files_and_the_archive() {
    use landscaped::trajectory::archive::{ArchiveConfig, ArchiveSink};
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let store = Store::open(&data).unwrap();
    let mut sink = ArchiveSink::new(&data, &ArchiveConfig::default()).unwrap();
    let n = 50_001;
    let steps: Vec<Vec<f32>> = (0..3).map(|s| values(n, 100 + s)).collect();
    let mut paths = Vec::new();
    for (s, v) in steps.iter().enumerate() {
        let p = d.path().join(format!("step-{s}.safetensors"));
        write_safetensors_raw(&p, &[("w", "F32", vec![n as u64], f32_bytes(v))]);
        let opts = IngestOptions { memory_budget: 1, ..Default::default() };
        ingest_checkpoint(&store, "r", &p, &opts, &mut [&mut sink]).unwrap();
        paths.push(p);
    }
    let exact = |a: &[f32], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    // NaN/Inf at the same places: distances over finite pairs... torch gives NaN; ours too.
    let recs = records::checkpoints(&store, "r").unwrap();
    assert!(
        recs[2].update_norm.is_some_and(|u| u.is_nan()),
        "NaN in, NaN distance: {:?}",
        recs[2].update_norm
    );
    // Without NaN/Inf: exact agreement, from files and (files gone) from the archive.
    let clean: Vec<Vec<f32>> =
        steps.iter().map(|v| v.iter().map(|x| if x.is_finite() { *x } else { 1.0 }).collect()).collect();
    let store2 = Store::open(&d.path().join("data2")).unwrap();
    let mut sink2 = ArchiveSink::new(&d.path().join("data2"), &ArchiveConfig::default()).unwrap();
    for (s, v) in clean.iter().enumerate() {
        write_safetensors_raw(&paths[s], &[("w", "F32", vec![n as u64], f32_bytes(v))]);
        if s == 2 {
            std::fs::remove_file(&paths[0]).unwrap();
            std::fs::remove_file(&paths[1]).unwrap();
        }
        let opts = IngestOptions { memory_budget: 1, ..Default::default() };
        ingest_checkpoint(&store2, "r", &paths[s], &opts, &mut [&mut sink2]).unwrap();
    }
    let recs = records::checkpoints(&store2, "r").unwrap();
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    assert!(rel(recs[1].update_norm.unwrap(), exact(&clean[1], &clean[0])) < 1e-12);
    assert!(rel(recs[2].update_norm.unwrap(), exact(&clean[2], &clean[1])) < 1e-12, "from the archive");
    assert!(rel(recs[2].dist_first.unwrap(), exact(&clean[2], &clean[0])) < 1e-12, "from the archive");
}
