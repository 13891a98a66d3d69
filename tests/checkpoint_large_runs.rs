//! Checkpoints of large runs, written by the real libraries: torch.distributed.checkpoint with world
//! size 1 and 2 (torchrun, gloo, DTensor shards), its safetensors variant and an imitation of
//! Megatron-LM's `torch_dist` layout built with DCP (tests/python/large_runs_make.py; Megatron-LM
//! itself does not run here), Lightning's sharded layout written by Lightning itself (a Trainer with
//! FSDPStrategy(state_dict_type="sharded") on 2 CPU processes, tests/python/lightning_sharded_make.py,
//! checked against the module's state dict as FSDP gathers it), and DeepSpeed ZeRO-2 / ZeRO-3 folders
//! written by DeepSpeed itself (tests/fixtures/deepspeed, from tests/python/deepspeed_make.py, with
//! zero_to_fp32's result beside them).
//!
//! Every tensor must read back bit-exactly as PyTorch (or zero_to_fp32) has it; ingest statistics
//! must match PyTorch's on the reassembled state dict (1e-6, identical torch.histc counts); the bad
//! inputs must be one error naming the file and the cause; the daemon watching the layouts records
//! each checkpoint once with its step.

mod mutation;
mod support;
use support::*;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use landscaped::ingest::{IngestOptions, IngestStatus, ingest_checkpoint};
use landscaped::store::{Store, checkpoints as records};
use landscaped_formats::{Checkpoint, CheckpointError, Layout, find_checkpoints};

struct Fixture {
    dir: tempfile::TempDir,
    reference: serde_json::Value,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (dir, reference) = python_made("large_runs_make.py", "reference.json");
        Fixture { dir, reference }
    })
}

fn deepspeed(rel: &str) -> PathBuf {
    root().join("tests/fixtures/deepspeed").join(rel)
}

const LAYOUTS: [&str; 5] = ["dcp1", "dcp_st", "dcp2", "megatron", "lightning"];

/// Every tensor of `ck` equals the reference file's tensor of the same name (after `rename`), bit
/// for bit, and the names are the same set.
fn assert_same_tensors(ck: &Checkpoint, reference: &Path, rename: impl Fn(&str) -> String) {
    let want = Checkpoint::open(reference).unwrap();
    let mut got: Vec<String> = ck.tensors.iter().map(|t| rename(&t.name)).collect();
    let mut names: Vec<String> = want.tensors.iter().map(|t| t.name.clone()).collect();
    got.sort();
    names.sort();
    assert_eq!(got, names, "{}: tensor names", ck.path.display());
    for (i, t) in ck.tensors.iter().enumerate() {
        let j = want.index_of(&rename(&t.name)).unwrap();
        assert_eq!((t.dtype, &t.shape), (want.tensors[j].dtype, &want.tensors[j].shape), "{}", t.name);
        assert_eq!(ck.read_raw(i).unwrap(), want.read_raw(j).unwrap(), "{}: values", t.name);
    }
}

#[test]
fn dcp_layouts_read_back_exactly() {
    let f = fixture();
    for name in LAYOUTS {
        let r = &f.reference[name];
        let path = Path::new(r["path"].as_str().unwrap());
        completeness(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ck = Checkpoint::open(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let layout = if name == "megatron" { Layout::Megatron } else { Layout::Dcp };
        assert_eq!(ck.layout, layout, "{name}");
        assert_eq!(ck.step, r["step"].as_u64(), "{name}: step rule");
        // Keys as written; only the model part (optim. / optimizer_0. / optimizer. skipped).
        assert_same_tensors(&ck, &f.dir.path().join(format!("{name}.safetensors")), |n| n.to_string());
        assert!(ck.files().iter().any(|(p, _, _)| p.ends_with(".metadata")), "{name}: members");
    }
}

/// The daemon's one pass (`Checkpoint::open_complete`) parses `.metadata` and every DeepSpeed state
/// file once (checked then opened: `.metadata` and rank 0's ZeRO-1/2 optimizer state twice).
#[test]
fn one_pass_parses_each_metadata_once() {
    let f = fixture();
    let mut cases: Vec<(String, PathBuf)> = LAYOUTS
        .iter()
        .map(|n| (n.to_string(), PathBuf::from(f.reference[n]["path"].as_str().unwrap())))
        .collect();
    for rel in ["zero2/global_step3", "zero3/global_step3", "zero2_bf16/global_step3"] {
        cases.push((rel.to_string(), deepspeed(rel)));
    }
    for (name, path) in cases {
        let (most_before, files) = assert_parsed_once(&path);
        if !name.starts_with("zero3") {
            assert_eq!(most_before, 2, "{name}: checked then opened, parsed twice");
        }
        eprintln!(
            "{name}: {files} headers parsed once each in one pass; checked then opened, up to {most_before} times"
        );
    }
}

/// Every tensor of `ck` can be read by range (it streams chunk by chunk like a single file), and
/// every range of it, at every element offset and several lengths, is the same bytes as the slice
/// of the tensor read whole.
fn assert_ranges_read_back(ck: &Checkpoint, what: &str) {
    for (i, t) in ck.tensors.iter().enumerate() {
        assert!(ck.streamable(i), "{what} {}: not readable by range", t.name);
        let whole = ck.read_raw(i).unwrap();
        let es = t.dtype.size();
        let n = whole.len() / es;
        // Every start in small tensors; about 300 spread over a large one, and its last elements.
        let starts = (0..n).step_by((n / 300).max(1)).chain(n.saturating_sub(20)..n);
        for start in starts {
            for len in [1, 2, 3, 5, 7, 13, 701, 8192, n] {
                let len = len.min(n - start);
                if len == 0 {
                    continue;
                }
                let mut buf = vec![0u8; len * es];
                ck.read_at(i, (start * es) as u64, &mut buf)
                    .unwrap_or_else(|e| panic!("{what} {} [{start}; {len}]: {e}", t.name));
                assert_eq!(buf, whole[start * es..(start + len) * es], "{what} {} [{start}; {len}]", t.name);
            }
        }
        let mut past = vec![0u8; es];
        assert!(
            ck.read_at(i, (n * es) as u64, &mut past).is_err(),
            "{what} {}: a range past the end",
            t.name
        );
    }
}

#[test]
fn sharded_tensors_are_read_by_range_straight_from_their_chunks() {
    let f = fixture();
    for name in LAYOUTS {
        let path = PathBuf::from(f.reference[name]["path"].as_str().unwrap());
        assert_ranges_read_back(&Checkpoint::open(&path).unwrap(), name);
    }
    for rel in
        ["zero2/global_step3", "zero3/global_step3", "zero2_bf16/global_step3", "zero3_bf16/global_step3"]
    {
        assert_ranges_read_back(&Checkpoint::open(&deepspeed(rel)).unwrap(), rel);
    }
}

#[test]
fn ingest_statistics_match_pytorch_on_the_reassembled_state_dict() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let worst = std::cell::Cell::new(0.0f64);
    let close = |what: &str, got: f64, want: f64| {
        worst.set(worst.get().max((got - want).abs() / want.abs().max(1e-12)));
        // float64 on both sides, different summation orders: measured ≤ 1.3e-14 (was allowed 1e-6).
        assert!((got - want).abs() <= 1e-12 * want.abs().max(1e-12), "{what}: got {got:e}, PyTorch {want:e}");
    };
    // The same ingest streamed in the smallest chunks (8192 f32 elements: `blocks.0.weight`, sharded
    // by columns in dcp2, is read in 9 ranges, each gathered from both ranks' chunks).
    let small = Store::open(&tmp.path().join("small")).unwrap();
    let streamed = IngestOptions { memory_budget: 1, ..IngestOptions::default() };
    for name in LAYOUTS {
        let r = &f.reference[name];
        let path = Path::new(r["path"].as_str().unwrap());
        let out = ingest_checkpoint(&store, name, path, &IngestOptions::default(), &mut [])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let out_small = ingest_checkpoint(&small, name, path, &streamed, &mut [])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            out_small.record.global_norm.to_bits(),
            out.record.global_norm.to_bits(),
            "{name}: the same bits however the tensors are chunked"
        );
        assert_eq!(out.status, IngestStatus::Added, "{name}");
        let step = r["step"].as_u64().unwrap();
        assert_eq!(out.record.step, step, "{name}");
        close(&format!("{name} global_norm"), out.record.global_norm, r["global_norm"].as_f64().unwrap());
        let tensors = records::tensors(&store, name, step).unwrap();
        let tensors_small = records::tensors(&small, name, step).unwrap();
        for (a, b) in tensors.iter().zip(&tensors_small) {
            let (sa, sb) = (a.stats.as_ref(), b.stats.as_ref());
            assert_eq!(
                sa.map(|s| (s.l2.to_bits(), s.mean.to_bits(), s.std.to_bits(), &s.histogram.counts)),
                sb.map(|s| (s.l2.to_bits(), s.mean.to_bits(), s.std.to_bits(), &s.histogram.counts)),
                "{name} {}: streamed in small chunks",
                a.name
            );
        }
        assert_eq!(tensors.len(), tensors_small.len());
        let want = r["tensors"].as_object().unwrap();
        assert_eq!(tensors.len(), r["tensors_listed"].as_u64().unwrap() as usize, "{name}: tensor count");
        for t in &tensors {
            let Some(w) = want.get(&t.name) else {
                assert!(t.stats.is_none(), "{name}: {} is an integer tensor", t.name);
                continue;
            };
            let s = t.stats.as_ref().unwrap();
            let ctx = format!("{name} {}", t.name);
            close(&format!("{ctx} l2"), s.l2, w["l2"].as_f64().unwrap());
            for (field, v) in [("mean", s.mean), ("min", s.min), ("max", s.max)] {
                let wv = w[field].as_f64().unwrap();
                if wv == 0.0 {
                    assert!(v.abs() < 1e-300, "{ctx} {field}");
                } else {
                    close(&format!("{ctx} {field}"), v, wv);
                }
            }
            if let Some(sd) = w["std"].as_f64().filter(|s| *s > 0.0) {
                close(&format!("{ctx} std"), s.std, sd);
            }
            let hist: Vec<u64> = w["hist"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
            assert_eq!(s.histogram.counts, hist, "{ctx}: torch.histc counts");
        }
    }
    eprintln!("largest relative difference from PyTorch: {:.1e}", worst.get());
}

#[test]
fn folders_are_found_once_and_markers_never() {
    let f = fixture();
    let found = find_checkpoints(f.dir.path()).unwrap();
    for name in LAYOUTS {
        let p = PathBuf::from(f.reference[name]["path"].as_str().unwrap());
        assert_eq!(found.iter().filter(|x| **x == p).count(), 1, "{name} listed once: {found:?}");
    }
    assert!(found.iter().all(|p| !p.ends_with("latest_checkpointed_iteration.txt")));
    // Nothing inside a checkpoint folder is listed on its own (meta.pt, common.pt, .distcp).
    assert!(found.iter().all(|p| p.parent().is_none_or(|d| !d.join(".metadata").exists())), "{found:?}");
    let megatron = f.dir.path().join("megatron");
    assert_eq!(find_checkpoints(&megatron).unwrap(), vec![megatron.join("iter_0000100")]);
    let ds = deepspeed("zero3");
    assert_eq!(find_checkpoints(&ds).unwrap(), vec![ds.join("global_step3")], "`latest` is a marker");
    // A DCP folder still being written (data files, no .metadata yet) is neither listed nor searched.
    let tmp = tempfile::tempdir().unwrap();
    let writing = tmp.path().join("step-9");
    std::fs::create_dir(&writing).unwrap();
    std::fs::copy(f.dir.path().join("dcp1/step-5/__0_0.distcp"), writing.join("__0_0.distcp")).unwrap();
    assert!(find_checkpoints(tmp.path()).unwrap().is_empty());
    assert!(matches!(completeness(&writing), Err(CheckpointError::Incomplete { .. })));
}

#[test]
fn deepspeed_zero2_is_read_from_the_fp32_master_partitions() {
    let dir = deepspeed("zero2/global_step3");
    completeness(&dir).unwrap();
    let ck = Checkpoint::open(&dir).unwrap();
    assert_eq!((ck.layout, ck.step), (Layout::DeepSpeed, Some(3)));
    assert_same_tensors(&ck, &deepspeed("zero2_module.safetensors"), |n| format!("module.{n}"));
    // fp32 training: the master weights read are the module's weights too (bf16/fp16 runs:
    // tests/checkpoint_copies.rs).
    let fp32 = Checkpoint::open(&deepspeed("zero2_fp32.safetensors")).unwrap();
    for (i, t) in fp32.tensors.iter().enumerate() {
        let j = ck.index_of(&t.name).unwrap();
        assert_eq!(ck.read_raw(j).unwrap(), fp32.read_raw(i).unwrap(), "{}", t.name);
    }
}

#[test]
fn deepspeed_zero3_is_rebuilt_as_zero_to_fp32_does() {
    let dir = deepspeed("zero3/global_step3");
    completeness(&dir).unwrap();
    let ck = Checkpoint::open(&dir).unwrap();
    assert_eq!((ck.layout, ck.step), (Layout::DeepSpeed, Some(3)));
    assert_same_tensors(&ck, &deepspeed("zero3_fp32.safetensors"), |n| n.to_string());
    assert_eq!(ck.files().len(), 4, "every rank's model and optimizer states");

    // One optimizer file missing: incomplete, naming the folder and the count.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("global_step3");
    std::fs::create_dir(&copy).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
    }
    std::fs::remove_file(copy.join("zero_pp_rank_1_mp_rank_00_optim_states.pt")).unwrap();
    let e = completeness(&copy).unwrap_err();
    assert!(
        matches!(e, CheckpointError::Incomplete { .. })
            && e.to_string().contains("2 ZeRO-3 model-state files but 1"),
        "{e}"
    );
}

/// A copy of a fixture folder to damage.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn bad_dcp_folders_are_one_line_naming_file_and_cause() {
    let f = fixture();
    let bad = f.dir.path().join("bad");
    let cases: [(&str, &str, &str); 6] = [
        ("overlap", ".metadata", "chunks at [0, 0] and [5, 0] overlap"),
        ("huge", ".metadata", "size [1099511627776, 1099511627776] is too large to be a tensor"),
        ("missing_chunk", ".metadata", "missing chunks"),
        ("unknown_class", ".metadata", "refused: pickle references collections.Counter"),
        ("transform", ".metadata", "transforms [\"zstd\"] (compressed DCP)"),
        ("past_eof", "__0_0.distcp", "reaches past the end of the file"),
    ];
    for (case, file, cause) in cases {
        let dir = bad.join(case);
        let e = completeness(&dir).unwrap_err();
        let line = e.to_string();
        assert!(!line.contains('\n'), "{case}: one line: {line}");
        assert!(line.starts_with(&format!("{}", dir.join(file).display())), "{case}: names the file: {line}");
        assert!(line.contains(cause), "{case}: cause: {line}");
        let e2 = Checkpoint::open(&dir).unwrap_err();
        assert_eq!(e2.to_string(), line, "{case}: open says the same");
    }
    // A missing data file of the world-size-2 checkpoint.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("step-7");
    copy_dir(&f.dir.path().join("dcp2/step-7"), &d);
    std::fs::remove_file(d.join("__1_0.distcp")).unwrap();
    let e = completeness(&d).unwrap_err();
    assert!(matches!(e, CheckpointError::Incomplete { .. }), "{e}");
    assert!(
        e.to_string().starts_with(&d.join("__1_0.distcp").display().to_string())
            && e.to_string().contains("missing"),
        "{e}"
    );
    // A byte range cut short (a truncated data file).
    copy_dir(&f.dir.path().join("dcp2/step-7"), &d);
    let p = d.join("__1_0.distcp");
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len - 10).unwrap();
    let e = completeness(&d).unwrap_err();
    assert!(e.to_string().contains("__1_0.distcp") && e.to_string().contains("past the end"), "{e}");
}

#[test]
fn daemon_records_each_layout_once_with_its_step() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let ds = tmp.path().join("ds");
    std::fs::create_dir(&ck).unwrap();
    std::fs::create_dir(&ds).unwrap();
    let extra =
        format!("rescan_interval_secs = 1\n[[run]]\nname = \"ds\"\nwatch = [{:?}]\n", ds.to_str().unwrap());
    let d = start(tmp.path(), &[&ck], &extra);
    // Written the way the libraries write: data files first, DCP's .metadata last.
    let put = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(from).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort_by_key(|n| n == ".metadata");
        for n in names {
            std::fs::copy(from.join(&n), to.join(&n)).unwrap();
        }
    };
    let mut want = Vec::new();
    for name in LAYOUTS {
        let r = &f.reference[name];
        let src = Path::new(r["path"].as_str().unwrap());
        let rel = src.strip_prefix(f.dir.path()).unwrap();
        put(src, &ck.join(rel));
        want.push(r["step"].as_u64().unwrap());
    }
    std::fs::write(ck.join("megatron/latest_checkpointed_iteration.txt"), "100").unwrap();
    std::fs::write(ck.join("model.gguf"), b"GGUF....").unwrap(); // an unknown layout: reported once
    put(&deepspeed("zero3/global_step3"), &ds.join("global_step3"));
    std::fs::write(ds.join("latest"), "global_step3").unwrap();
    want.sort();
    let steps = |run: &str| -> Vec<u64> {
        let text = get(d.port, &format!("/api/v1/runs/{run}/checkpoints")).unwrap_or_else(|| "[]".into());
        let v: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
        v.iter().map(|c| c["step"].as_u64().unwrap()).collect()
    };
    let t = std::time::Instant::now();
    while !(steps("r").len() >= want.len() && steps("ds").len() == 1) {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "every layout recorded: got {:?} and {:?}\n{}",
            steps("r"),
            steps("ds"),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let unsupported = "landscaped_errors_total{kind=\"unsupported\",run=\"r\"}";
    wait_until(Duration::from_secs(30), "the .gguf reported", || d.metric(unsupported) == Some(1.0));
    d.settle(); // rescans and events must not record anything twice
    assert_eq!(steps("r"), want, "{}", d.log());
    assert_eq!(steps("ds"), vec![3]);
    assert_eq!(
        d.metric("landscaped_checkpoints_processed_total{run=\"r\"}"),
        Some(want.len() as f64),
        "{}",
        d.log()
    );
    assert_eq!(d.metric(unsupported), Some(1.0), "{}", d.log());
    assert!(d.log().contains("model.gguf") && d.log().contains("GGUF"), "{}", d.log());
    assert_eq!(d.stop(), Some(0));
}

/// A pickle of `depth` nested lists (EMPTY_LIST × depth, APPEND × depth − 1): 40 KB at 20,000 levels.
fn nested_lists_pickle(depth: usize) -> Vec<u8> {
    let mut p = b"\x80\x02".to_vec();
    p.extend(std::iter::repeat_n(b']', depth));
    p.extend(std::iter::repeat_n(b'a', depth - 1));
    p.push(b'.');
    p
}

/// Issue 20, hole 1: a 40 KB `data.pkl` of lists nested 20,000 deep, or a DCP `.metadata` nested 100,000
/// deep, overflowed the daemon's stack on every start (recursive walks and drops of the value tree). Now
/// the pickle scanner refuses nesting past its limit before any tree is built: one line naming the file
/// and the bound, one `refused` count each, the good checkpoint beside them recorded, a clean restart.
#[test]
fn deeply_nested_pickles_are_refused_in_one_line_and_the_daemon_lives() {
    use std::io::Write;
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    let d = start(tmp.path(), &[&ck], "");

    let pt = ck.join("step-1.pt");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&pt).unwrap());
        let opt = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        z.start_file("archive/data.pkl", opt).unwrap();
        z.write_all(&nested_lists_pickle(20_000)).unwrap();
        z.start_file("archive/version", opt).unwrap();
        z.write_all(b"3\n").unwrap();
        z.finish().unwrap();
    }
    assert!(std::fs::metadata(&pt).unwrap().len() < 45_000);
    // A real DCP folder (dcp1, step 5) whose .metadata, written last, nests 100,000 deep.
    let src = Path::new(f.reference["dcp1"]["path"].as_str().unwrap());
    let dcp = ck.join("step-5");
    std::fs::create_dir(&dcp).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let n = e.unwrap().file_name();
        if n != ".metadata" {
            std::fs::copy(src.join(&n), dcp.join(&n)).unwrap();
        }
    }
    std::fs::write(dcp.join(".metadata"), nested_lists_pickle(100_000)).unwrap();
    let written = writer(&ck, &["--steps", "9"]);

    let refused = r#"landscaped_errors_total{kind="refused",run="r"}"#;
    wait_until(Duration::from_secs(60), "both deep pickles refused and the good step recorded", || {
        d.metric(refused) == Some(2.0) && recorded(d.port).len() == 1
    });
    assert_eq!(recorded(d.port)[0].0, written[0].0);
    let log = d.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("deeper than 256 levels")).collect();
    assert_eq!(lines.len(), 2, "one line per file:\n{log}");
    assert!(lines.iter().any(|l| l.contains(&pt.display().to_string())), "{log}");
    assert!(lines.iter().any(|l| l.contains(&dcp.join(".metadata").display().to_string())), "{log}");
    assert_eq!(d.stop(), Some(0), "the daemon lived through both");

    // The files are still there: a restart scans them again and stays up.
    let config = tmp.path().join("landscaped.toml");
    let d = restart(config, tmp.path());
    wait_until(Duration::from_secs(30), "the good step still served after the restart", || {
        recorded(d.port).len() == 1
    });
    assert!(get(d.port, "/healthz").unwrap().contains("ok"));
    assert_eq!(d.stop(), Some(0));
}

/// The mutation smoke test (tests/mutation; tests/checkpoint_formats.rs has the single files and HF
/// folders) on every folder reader: DCP (world size 1 and 2), DCP's safetensors variant, Megatron,
/// Lightning sharded, DeepSpeed ZeRO-2 and ZeRO-3. One member at a time is bit-flipped, overwritten,
/// truncated or spliced; the completeness check, open and every read must give a value or an error
/// naming the folder, never a panic.
#[test]
fn mutated_folders_never_panic() {
    let f = fixture();
    let scratch = tempfile::tempdir().unwrap();
    let mut rng = mutation::Rng(0x2545_f491_4f6c_dd1d);
    let mut folders: Vec<(String, PathBuf)> = LAYOUTS
        .iter()
        .map(|name| (name.to_string(), PathBuf::from(f.reference[name]["path"].as_str().unwrap())))
        .collect();
    folders.push(("zero2".into(), deepspeed("zero2/global_step3")));
    folders.push(("zero3".into(), deepspeed("zero3/global_step3")));
    folders.push(("zero2_bf16".into(), deepspeed("zero2_bf16/global_step3")));
    for (name, src) in folders {
        let opened = mutation::mutate_folder(&src, &scratch.path().join(&name), 300, &mut rng);
        eprintln!("{name}: {opened} of 300 mutants opened");
        // Flips inside tensor data leave a readable checkpoint: reading is exercised too.
        assert!(opened > 0, "{name}: no mutant opened");
    }
}
