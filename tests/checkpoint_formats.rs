//! Checkpoint readers against PyTorch: tests/python/checkpoint_make.py has PyTorch write checkpoints
//! in every format and dtype and dump every tensor's values; the Rust readers must return exactly
//! the same names, dtypes, shapes and values (exact equality after widening to f64; NaN where NaN).
//! Also: hostile pickles, TorchScript and legacy files, truncation, corrupt headers, completeness,
//! `find_checkpoints` and the step rule on real files.

mod mutation;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use landscaped_formats::{Checkpoint, CheckpointError, Dtype, Layout, Values, find_checkpoints};

mod support;
use support::*;

struct Fixture {
    dir: tempfile::TempDir,
    manifest: serde_json::Value,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (dir, manifest) = python_made("checkpoint_make.py", "manifest.json");
        Fixture { dir, manifest }
    })
}

fn path(rel: &str) -> PathBuf {
    fixture().dir.path().join(rel)
}

fn dtype_of(torch: &str) -> Dtype {
    match torch {
        "float32" => Dtype::F32,
        "float16" => Dtype::F16,
        "bfloat16" => Dtype::BF16,
        "float64" => Dtype::F64,
        "int64" => Dtype::I64,
        "bool" => Dtype::Bool,
        other => panic!("unexpected dtype {other}"),
    }
}

fn reference(i: usize) -> Vec<u8> {
    std::fs::read(path(&format!("ref/{i}.raw"))).unwrap()
}

fn same_f64(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// Compare every tensor of `ck` with PyTorch's reference, names carrying `prefix`.
fn assert_matches_reference(ck: &Checkpoint, prefix: &str, ordered: bool) {
    let f = fixture();
    let expected = f.manifest["tensors"].as_array().unwrap();
    assert_eq!(ck.tensors.len(), expected.len(), "{}: tensor count", ck.path.display());
    let mut got_names: Vec<String> = ck.tensors.iter().map(|t| t.name.clone()).collect();
    let mut want_names: Vec<String> =
        expected.iter().map(|t| format!("{prefix}{}", t["name"].as_str().unwrap())).collect();
    if ordered {
        assert_eq!(got_names, want_names, "{}: names in state-dict order", ck.path.display());
    } else {
        got_names.sort();
        want_names.sort();
        assert_eq!(got_names, want_names, "{}: names", ck.path.display());
    }
    for (i, t) in expected.iter().enumerate() {
        let name = format!("{prefix}{}", t["name"].as_str().unwrap());
        let idx = ck.index_of(&name).unwrap_or_else(|| panic!("{name} missing"));
        let info = &ck.tensors[idx];
        let want_shape: Vec<usize> =
            t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(info.shape, want_shape, "{name}: shape");
        assert_eq!(info.dtype, dtype_of(t["dtype"].as_str().unwrap()), "{name}: dtype");
        let bytes = reference(i);
        if info.dtype.is_float() {
            let want: Vec<f64> =
                bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
            let got = ck.read_f64(idx).unwrap();
            assert_eq!(got.len(), want.len(), "{name}: numel");
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(same_f64(*g, *w), "{name}[{k}]: got {g}, PyTorch has {w}");
            }
            // f64 stays f64, everything else comes back as f32.
            match (ck.read(idx).unwrap(), info.dtype) {
                (Values::F64(_), Dtype::F64) => {}
                (Values::F32(_), Dtype::F32 | Dtype::F16 | Dtype::BF16) => {}
                (v, d) => panic!(
                    "{name}: {d:?} came back as {}",
                    if matches!(v, Values::F64(_)) { "f64" } else { "f32" }
                ),
            }
        } else {
            // Integer / bool tensors are listed, not read as floats; their raw bytes are still exact.
            assert!(
                matches!(ck.read(idx), Err(CheckpointError::Unsupported { .. })),
                "{name}: read as float"
            );
            let raw = ck.read_raw(idx).unwrap();
            let want: Vec<i64> =
                bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
            let got: Vec<i64> = match info.dtype {
                Dtype::I64 => {
                    raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
                }
                Dtype::Bool => raw.iter().map(|&b| b as i64).collect(),
                d => panic!("unexpected {d:?}"),
            };
            assert_eq!(got, want, "{name}: raw values");
        }
    }
    let floats: Vec<usize> = ck.float_tensors().map(|(i, _)| i).collect();
    assert_eq!(floats.len(), expected.len() - 2, "float_tensors leaves out int64 and bool");
}

#[test]
fn every_format_matches_pytorch() {
    let f = fixture();
    for c in f.manifest["checkpoints"].as_array().unwrap() {
        let rel = c["path"].as_str().unwrap();
        let ck = Checkpoint::open(&path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let want_layout = match c["layout"].as_str().unwrap() {
            "File" => Layout::File,
            "HfFolder" => Layout::HfFolder,
            "Lightning" => Layout::Lightning,
            l => panic!("{l}"),
        };
        assert_eq!(ck.layout, want_layout, "{rel}: layout");
        assert_eq!(ck.step, c["step"].as_u64(), "{rel}: step");
        // safetensors stores tensors in its own order (by dtype alignment, then name); torch keeps
        // the state dict's insertion order, which the reader must preserve (single-file torch only:
        // shards of an index are listed shard by shard).
        let ordered = rel.ends_with(".pt") || rel.ends_with(".pth") || rel.ends_with(".ckpt");
        assert_matches_reference(&ck, c["prefix"].as_str().unwrap(), ordered);
        // The files it consists of, for change detection, all exist with their current sizes.
        let files = ck.files();
        assert!(!files.is_empty());
        for (p, len, _) in &files {
            assert_eq!(*len, std::fs::metadata(p).unwrap().len(), "{}", p.display());
        }
        if path(rel).is_dir() && !path(rel).join("trainer_state.json").exists() {
            // An HF folder is complete only once trainer_state.json is written.
            let e = completeness(&path(rel)).unwrap_err();
            assert!(matches!(e, CheckpointError::Incomplete { .. }), "{rel}: {e}");
        } else {
            completeness(&path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        }
    }
}

/// The daemon's one pass (`Checkpoint::open_complete`) parses each header, index and state file of
/// every format once, and still looks at every file the check and the opening looked at; checked
/// then opened (the daemon before), a safetensors header was parsed twice.
#[test]
fn one_pass_parses_each_header_once() {
    for c in fixture().manifest["checkpoints"].as_array().unwrap() {
        let rel = c["path"].as_str().unwrap();
        let p = path(rel);
        if p.is_dir() && !p.join("trainer_state.json").exists() {
            continue; // incomplete by the rules: nothing to open
        }
        let (most_before, files) = assert_parsed_once(&p);
        if rel.ends_with(".safetensors") || rel.contains("hf_st") {
            assert_eq!(most_before, 2, "{rel}: checked then opened, the header was parsed twice");
        }
        eprintln!(
            "{rel}: {files} headers parsed once each in one pass; checked then opened, up to {most_before} times"
        );
    }
}

#[test]
fn hf_folder_files_include_state_index_and_shards() {
    let ck = Checkpoint::open(&path("hf_st/checkpoint-40")).unwrap();
    let mut names: Vec<String> =
        ck.files().iter().map(|f| f.0.file_name().unwrap().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "trainer_state.json"
        ]
    );
}

fn err_of(p: &Path) -> CheckpointError {
    match Checkpoint::open(p) {
        Ok(_) => panic!("{} opened", p.display()),
        Err(e) => e,
    }
}

#[test]
fn hostile_pickles_are_refused_by_name() {
    let e = err_of(&path("bad/evil_global.pt"));
    assert!(matches!(e, CheckpointError::Refused { .. }), "{e}");
    assert!(e.to_string().contains("refused: pickle references os.system"), "{e}");
    assert!(e.to_string().contains("evil_global.pt"), "{e}");

    let e = err_of(&path("bad/evil_stack_global.pt"));
    assert!(e.to_string().contains("pickle references builtins.eval"), "{e}");

    let e = err_of(&path("bad/custom_class.ckpt"));
    assert!(matches!(e, CheckpointError::Refused { .. }), "{e}");
    assert!(e.to_string().contains("__main__.Config"), "{e}");
}

#[test]
fn torchscript_and_legacy_are_unsupported() {
    let e = err_of(&path("bad/scripted.pt"));
    assert!(matches!(e, CheckpointError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("TorchScript"), "{e}");
    let e = err_of(&path("bad/legacy.pt"));
    assert!(matches!(e, CheckpointError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("legacy"), "{e}");
}

/// Cut a copy of `src` at several points: opening never panics and reports the file; the
/// completeness check says Incomplete.
fn truncations(src: &Path) {
    let data = std::fs::read(src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = src.file_name().unwrap();
    let cuts = [0, 1, 7, 8, 9, 30, 64, data.len() / 3, data.len() / 2, data.len() - 23, data.len() - 1];
    for cut in cuts {
        let p = dir.path().join(name);
        std::fs::write(&p, &data[..cut]).unwrap();
        let e = err_of(&p);
        assert!(e.to_string().contains(&*name.to_string_lossy()), "cut {cut}: {e}");
        let c = completeness(&p).expect_err("truncated file passed check_complete");
        assert!(matches!(c, CheckpointError::Incomplete { .. }), "cut {cut} of {}: {c}", src.display());
    }
}

#[test]
fn views_larger_than_the_file_are_refused() {
    let e = err_of(&path("bad/expanded.pt"));
    assert!(matches!(e, CheckpointError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains("more than the whole file"), "{e}");
}

#[test]
fn truncated_files_error_and_are_incomplete() {
    truncations(&path("step-300.safetensors"));
    truncations(&path("ckpt_000120.pt"));
    truncations(&path("epoch=2-step=300.ckpt"));
}

#[test]
fn half_written_hf_folder_is_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("checkpoint-40");
    std::fs::create_dir(&ck).unwrap();
    let src = path("hf_st/checkpoint-40");
    for f in ["model-00001-of-00002.safetensors", "model.safetensors.index.json"] {
        std::fs::copy(src.join(f), ck.join(f)).unwrap();
    }
    let e = completeness(&ck).unwrap_err();
    assert!(e.to_string().contains("trainer_state.json"), "{e}");
    std::fs::copy(src.join("trainer_state.json"), ck.join("trainer_state.json")).unwrap();
    let e = completeness(&ck).unwrap_err();
    assert!(
        matches!(e, CheckpointError::Incomplete { .. }) && e.to_string().contains("model-00002-of-00002"),
        "{e}"
    );
    // Second shard half written.
    let shard = std::fs::read(src.join("model-00002-of-00002.safetensors")).unwrap();
    std::fs::write(ck.join("model-00002-of-00002.safetensors"), &shard[..shard.len() - 5]).unwrap();
    let e = completeness(&ck).unwrap_err();
    assert!(matches!(e, CheckpointError::Incomplete { .. }), "{e}");
    std::fs::write(ck.join("model-00002-of-00002.safetensors"), &shard).unwrap();
    completeness(&ck).unwrap();
    // A hostile index naming a file outside the folder.
    std::fs::write(ck.join("model.safetensors.index.json"), r#"{"weight_map": {"a": "../../etc/passwd"}}"#)
        .unwrap();
    let e = err_of(&ck);
    assert!(matches!(e, CheckpointError::Malformed { .. }), "{e}");
}

/// A safetensors file from a header string and a data section.
fn st_file(dir: &Path, name: &str, header: &str, data_len: usize) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, safetensors_bytes(header, &vec![0u8; data_len])).unwrap();
    p
}

#[test]
fn corrupt_safetensors_headers_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: &[(&str, usize, &str)] = &[
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 8, ""), // valid control
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#, 8, "not valid JSON"),
        (r#"{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#, 8, "unknown safetensors dtype"),
        (r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8, "needs 12 bytes"),
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
            "overlap",
        ),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, 16, "gap"),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 4, "needs"),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 100, "accounts for"),
        (r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#, 8, "overflows"),
        (r#"{"a":{"dtype":"F32","shape":[1000000000000],"data_offsets":[0,4000000000000]}}"#, 8, "needs"),
        (r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}}"#, 8, "not a non-negative integer"),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, 8, "end before"),
        (r#"[1,2]"#, 0, "neither a zip archive"),
        (r#"{"__metadata__":{"x":1}}"#, 0, "__metadata__"),
    ];
    for (k, (header, data_len, want)) in cases.iter().enumerate() {
        let p = st_file(d, &format!("c{k}.safetensors"), header, *data_len);
        if want.is_empty() {
            let ck = Checkpoint::open(&p).unwrap();
            assert_eq!(ck.read_f64(0).unwrap(), vec![0.0, 0.0]);
            continue;
        }
        let e = err_of(&p);
        let msg = e.to_string();
        assert!(msg.contains(&format!("c{k}.safetensors")) && msg.contains(want), "case {k}: {msg}");
    }
    // A header length far beyond the file (and beyond any sane bound): no huge allocation.
    for len in [u64::MAX, 1 << 40, 50_000] {
        let p = d.join("huge.safetensors");
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(&p, bytes).unwrap();
        let e = err_of(&p);
        assert!(e.to_string().contains("huge.safetensors"), "{e}");
    }
    // Garbage that is neither format.
    let p = d.join("garbage.bin");
    std::fs::write(&p, b"hello world, this is not a checkpoint").unwrap();
    assert!(err_of(&p).to_string().contains("neither a zip archive"));
}

#[test]
fn nan_and_inf_are_data() {
    let ck = Checkpoint::open(&path("step-300.safetensors")).unwrap();
    let v = ck.read_f64(ck.index_of("special").unwrap()).unwrap();
    assert!(v[1].is_nan() && v[3] == f64::INFINITY && v[5] == f64::NEG_INFINITY);
}

#[test]
fn find_checkpoints_lists_files_and_folders_by_step() {
    let found = find_checkpoints(fixture().dir.path()).unwrap();
    let rel: Vec<String> = found
        .iter()
        .map(|p| p.strip_prefix(fixture().dir.path()).unwrap().to_string_lossy().into_owned())
        .collect();
    // Bad files sort among the rest by name step or last; here only the good ones are checked.
    let good: Vec<&str> = rel.iter().map(String::as_str).filter(|r| !r.starts_with("bad/")).collect();
    assert_eq!(
        good,
        [
            "hf_bin/checkpoint-7",
            "hf_single/checkpoint-8",
            "hf_binsh/checkpoint-9",
            "hf_st/checkpoint-40",
            "ckpt_000120.pt",
            "epoch=2-step=300.ckpt",
            "step-300.safetensors",
            "nested_model.pth",
        ]
    );
    // Temp files, non-checkpoint files and symlinks to listed files are skipped.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(path("ckpt_000120.pt"), dir.path().join("ckpt_000120.pt")).unwrap();
    std::fs::write(dir.path().join("ckpt_000130.pt.tmp"), b"x").unwrap();
    std::fs::write(dir.path().join(".ckpt_000140.pt"), b"x").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
    std::fs::write(dir.path().join("training_args.bin"), b"x").unwrap();
    // A checkpoint-N folder still being written (no weights yet): nothing in it is listed.
    std::fs::create_dir(dir.path().join("checkpoint-50")).unwrap();
    std::fs::copy(path("ckpt_000120.pt"), dir.path().join("checkpoint-50/optimizer_step_50.pt")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("ckpt_000120.pt"), dir.path().join("last.ckpt")).unwrap();
    let found = find_checkpoints(dir.path()).unwrap();
    assert_eq!(found, vec![dir.path().join("ckpt_000120.pt")]);
}

/// A deterministic mutation smoke test (runs in CI, where the cargo-fuzz targets don't; machinery in
/// tests/mutation): thousands of bit-flipped, overwritten, truncated and spliced variants of real files
/// go through the completeness check, open and every read; every outcome must be a value or an error
/// naming the file, never a panic. Here the single-file readers (safetensors, torch zip, Lightning
/// `.ckpt`) and HF `checkpoint-N/` folders (safetensors and `pytorch_model.bin`, one member mutated at a
/// time); tests/checkpoint_large_runs.rs does the same for DCP (and its safetensors variant), Megatron,
/// Lightning sharded and DeepSpeed folders.
#[test]
fn mutated_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = mutation::Rng(0x9e37_79b9_7f4a_7c15);
    let mut opened = 0;
    for (k, src) in ["step-300.safetensors", "ckpt_000120.pt", "epoch=2-step=300.ckpt"].iter().enumerate() {
        let data = std::fs::read(path(src)).unwrap();
        let target = dir.path().join(format!("m{k}_{src}"));
        for _ in 0..700 {
            std::fs::write(&target, mutation::mutate(&data, &mut rng)).unwrap();
            opened += mutation::exercise(&target) as usize;
        }
    }
    // Some mutants (flips inside tensor data) must still open: the test exercises reading too.
    assert!(opened > 50, "only {opened} mutants opened");
    for (k, folder) in ["hf_st/checkpoint-40", "hf_bin/checkpoint-7"].iter().enumerate() {
        let scratch = dir.path().join(format!("hf{k}"));
        let opened = mutation::mutate_folder(&path(folder), &scratch, 300, &mut rng);
        assert!(opened > 10, "{folder}: only {opened} mutants opened");
    }
}

/// The pickle scanner's nesting bound (256 levels) against files PyTorch writes: `torch.save` of a state
/// dict holding lists nested to exactly the bound opens and reads on a thread with a 512 KiB stack (a
/// quarter of the daemon's threads': every reader after the scan recurses at most that deep), and one
/// level more is refused in one line naming the file and the bound.
#[test]
fn nesting_at_the_bound_reads_on_a_small_stack_and_past_it_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // Depth: the top dict is one level, `deep` adds `n` lists.
    let py = r#"
import sys, torch
for n, name in ((255, "at.pt"), (256, "past.pt")):
    deep = []
    for _ in range(n - 1):
        deep = [deep]
    torch.save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "deep": deep}, sys.argv[1] + "/" + name)
"#;
    let ok = std::process::Command::new(venv_python())
        .args(["-c", py, tmp.path().to_str().unwrap()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "torch.save of nested lists");
    let at = tmp.path().join("at.pt");
    let past = tmp.path().join("past.pt");
    let read = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            let ck = Checkpoint::open(&at).unwrap();
            let i = ck.index_of("w").unwrap();
            match ck.read(i).unwrap() {
                Values::F32(v) => v,
                other => panic!("w read as {other:?}"),
            }
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(read, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let e = err_of(&past);
    let line = e.to_string();
    assert!(matches!(e, CheckpointError::Refused { .. }), "{line}");
    assert!(!line.contains('\n') && line.starts_with(&past.display().to_string()), "{line}");
    assert!(line.contains("deeper than 256 levels"), "{line}");
}
