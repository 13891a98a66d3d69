//! Which copy of the weights a checkpoint is read from, and each storage counted once.
//!
//! DeepSpeed ZeRO-2 folders trained in bf16 and fp16 by two ranks (written by DeepSpeed itself,
//! tests/fixtures/deepspeed from tests/python/deepspeed_make.py) are read from their fp32 master
//! partitions: every tensor bit-equal to what DeepSpeed's own `zero_to_fp32` rebuilds, not the module's
//! low-precision copy (which is read, and said so, only when the folder has no master copy); the
//! checkpoint record and `landscaped checkpoints` name the copy and dtype read. ‖θ‖ of a ZeRO-2 and a
//! ZeRO-3 bf16 run of the same model agree, and both equal PyTorch's over `model.parameters()`.
//!
//! Tied weights (an embedding tied to the LM head, one Parameter under two names) saved by torch.save,
//! safetensors' save_model, Hugging Face's save_pretrained, DeepSpeed ZeRO-2 and ZeRO-3: the shared
//! storage is listed once with the other name as its alias, and ‖θ‖ equals PyTorch's sum over
//! `model.parameters()` (tests/python/tied_make.py). DCP writes each name as its own copy with no
//! record of the sharing: both are counted, as documented.

mod support;
use support::*;

use std::path::{Path, PathBuf};

use landscaped_formats::{Alias, Checkpoint, CheckpointError, Dtype};
use serde_json::Value;

fn deepspeed(rel: &str) -> PathBuf {
    root().join("tests/fixtures/deepspeed").join(rel)
}

/// The aliases and PyTorch's ‖θ‖ over `model.parameters()` that deepspeed_make.py wrote for a run.
fn reference(name: &str) -> Value {
    read_json(&deepspeed(&format!("{name}.json")))
}

fn tied_alias() -> Vec<Alias> {
    vec![Alias { name: "head.weight".into(), owner: "emb.weight".into() }]
}

/// Every tensor of `ck` equals the reference file's tensor of the same name (after `rename`), bit for
/// bit, and the names are the same set.
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
fn zero2_bf16_and_fp16_are_read_from_the_fp32_master_weights() {
    for name in ["zero2_bf16", "zero2_fp16", "tied_zero2"] {
        let dir = deepspeed(&format!("{name}/global_step3"));
        completeness(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ck = Checkpoint::open(&dir).unwrap();
        assert_eq!(ck.step, Some(3), "{name}");
        assert_eq!(ck.source, "fp32 master weights (ZeRO-2 optimizer partitions, 2 ranks)", "{name}");
        assert_same_tensors(&ck, &deepspeed(&format!("{name}_fp32.safetensors")), |n| n.to_string());
        assert_eq!(ck.aliases, tied_alias(), "{name}: shared_params");
        assert_eq!(reference(name)["aliases"], serde_json::json!(["head.weight"]));
        // Trainable parameters are f32; the frozen one stays in the module's dtype, as zero_to_fp32
        // keeps it.
        let low =
            if name == "tied_zero2" { Dtype::F32 } else { ck.tensors[ck.index_of("frozen").unwrap()].dtype };
        assert_eq!(
            ck.dtypes(),
            if low == Dtype::F32 { "f32".to_string() } else { format!("f32+{}", low.name()) }
        );
        // The alias reads as its owner.
        assert_eq!(ck.index_of("head.weight"), ck.index_of("emb.weight"));
        if name != "tied_zero2" {
            // What was read is not the module's low-precision copy.
            let module = Checkpoint::open(&deepspeed(&format!("{name}_module.safetensors"))).unwrap();
            let j = module.index_of("module.fc.weight").unwrap();
            assert_ne!(module.tensors[j].dtype, Dtype::F32, "{name}: the module copy is low precision");
            let i = ck.index_of("fc.weight").unwrap();
            let (master, low) = (ck.read_f64(i).unwrap(), module.read_f64(j).unwrap());
            assert!(master.iter().zip(&low).any(|(a, b)| a != b), "{name}: master equals module copy");
        }
    }
    // fp32 training by one rank: master and module copies are the same numbers.
    let ck = Checkpoint::open(&deepspeed("zero2/global_step3")).unwrap();
    assert_eq!(ck.source, "fp32 master weights (ZeRO-2 optimizer partitions, 1 rank)");
    assert_same_tensors(&ck, &deepspeed("zero2_fp32.safetensors"), |n| n.to_string());
    assert_same_tensors(&ck, &deepspeed("zero2_module.safetensors"), |n| format!("module.{n}"));
}

/// A copy of a fixture folder, without the files `drop` names.
fn copy_without(from: &Path, to: &Path, drop: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if !drop.iter().any(|d| e.file_name() == *d) {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn without_the_master_copy_the_module_weights_are_read_and_said_so() {
    let tmp = tempfile::tempdir().unwrap();
    let src = deepspeed("zero2_bf16/global_step3");
    let optims =
        ["bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"];
    let none = tmp.path().join("none/global_step3");
    copy_without(&src, &none, &optims);
    let ck = Checkpoint::open(&none).unwrap();
    assert!(
        ck.source.starts_with("module weights (no fp32 master copy: no per-rank optimizer-state files"),
        "{}",
        ck.source
    );
    assert_eq!(ck.dtypes(), "bf16");
    assert_same_tensors(&ck, &deepspeed("zero2_bf16_module.safetensors"), |n| format!("module.{n}"));
    assert_eq!(ck.aliases, tied_alias(), "one storage under two names in the module");

    // Rank 1's partition missing: incomplete, naming the ranks (not a silent fallback).
    let half = tmp.path().join("half/global_step3");
    copy_without(&src, &half, &optims[1..]);
    let e = completeness(&half).unwrap_err();
    assert!(
        matches!(e, CheckpointError::Incomplete { .. }) && e.to_string().contains("of 1 of 2 ranks written"),
        "{e}"
    );
    let e = Checkpoint::open(&half).unwrap_err();
    assert!(
        matches!(e, CheckpointError::Incomplete { .. }) && e.to_string().contains("2 ranks expected"),
        "{e}"
    );
}

/// `landscaped checkpoints --run R --format json` of a fresh store after ingesting `paths` with steps
/// 1, 2, ... (one CLI call each).
fn ingested(paths: &[PathBuf]) -> Vec<Value> {
    let data = tempfile::tempdir().unwrap();
    for (i, p) in paths.iter().enumerate() {
        let step = (i + 1).to_string();
        let (ok, _, err) =
            cli_query(data.path(), None, &["ingest", p.to_str().unwrap(), "--run", "r", "--step", &step]);
        assert!(ok, "ingest {}: {err}", p.display());
    }
    let (ok, out, err) = cli_query(data.path(), None, &["checkpoints", "--run", "r", "--format", "json"]);
    assert!(ok, "{err}");
    serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
}

/// |got − want| ≤ tol·|want|; the relative error printed (docs/tolerances.md's "observed").
fn rel_close(got: f64, want: f64, tol: f64) -> bool {
    let rel = (got - want).abs() / want.abs();
    eprintln!("relative error {rel:.1e} (tolerance {tol:.0e})");
    rel <= tol
}

#[test]
fn the_record_names_the_copy_and_the_norm_agrees_across_zero_stages() {
    let rows = ingested(&[
        deepspeed("zero2_bf16/global_step3"),
        deepspeed("zero3_bf16/global_step3"),
        deepspeed("zero2_fp16/global_step3"),
    ]);
    assert_eq!(rows[0]["source"], "fp32 master weights (ZeRO-2 optimizer partitions, 2 ranks)");
    assert_eq!(rows[0]["dtype"], "f32+bf16");
    assert_eq!(rows[0]["aliases"], "head.weight=emb.weight");
    assert_eq!(rows[1]["source"], "fp32 master weights (ZeRO-3 optimizer partitions, 2 ranks)");
    assert_eq!(rows[2]["dtype"], "f32+f16");
    for (row, name) in rows.iter().zip(["zero2_bf16", "zero3_bf16", "zero2_fp16"]) {
        let got = row["global_norm"].as_f64().unwrap();
        let want = reference(name)["parameters_norm"].as_f64().unwrap();
        assert!(rel_close(got, want, 1e-12), "{name}: ‖θ‖ {got} vs PyTorch's {want}");
        assert_eq!(row["tensors"], 6, "{name}: each storage once");
    }
    // The same model and data under ZeRO-2 and ZeRO-3 in bf16: the master weights differ only by
    // the bf16 arithmetic of the two training paths (measured 3.4e-5 relative; the module's bf16
    // copy is 2.1e-4 off).
    let (z2, z3) = (rows[0]["global_norm"].as_f64().unwrap(), rows[1]["global_norm"].as_f64().unwrap());
    assert!(rel_close(z2, z3, 1e-4), "ZeRO-2 {z2} vs ZeRO-3 {z3}");
    // In fp32 the two stages train the same numbers up to the order of the gradient reductions
    // (measured 6e-11 relative).
    let rows = ingested(&[deepspeed("tied_zero2/global_step3"), deepspeed("tied_zero3/global_step3")]);
    let (z2, z3) = (rows[0]["global_norm"].as_f64().unwrap(), rows[1]["global_norm"].as_f64().unwrap());
    assert!(rel_close(z2, z3, 1e-9), "fp32: ZeRO-2 {z2} vs ZeRO-3 {z3}");
}

#[test]
fn tied_weights_count_once_in_every_format() {
    let (dir, r) = python_made_args(
        "tied_make.py",
        "reference.json",
        &[deepspeed("tied_zero2_fp32.safetensors").to_str().unwrap()],
    );
    let d = dir.path();
    let tied = r["tied"]["parameters_norm"].as_f64().unwrap();
    let every = r["tied"]["state_dict_norm"].as_f64().unwrap();
    assert!(every > tied * 1.01, "the fixture's tie matters");
    for (what, path) in
        [("torch.save", d.join("tied.pt")), ("save_model", d.join("tied_save_model.safetensors"))]
    {
        let ck = Checkpoint::open(&path).unwrap();
        assert_eq!(ck.aliases, tied_alias(), "{what}");
        assert_eq!(ck.source, "state dict", "{what}");
    }
    // torch.save, save_model, then DCP: the same storages, so the distance between them is 0.
    let rows = ingested(&[d.join("tied.pt"), d.join("tied_save_model.safetensors"), d.join("tied_dcp")]);
    for (row, what) in rows.iter().zip(["torch.save", "save_model", "dcp"]) {
        let got = row["global_norm"].as_f64().unwrap();
        let want = if what == "dcp" { every } else { tied };
        assert!(rel_close(got, want, 1e-12), "{what}: ‖θ‖ {got} vs {want}");
    }
    assert_eq!(rows[1]["aliases"], "head.weight=emb.weight");
    assert_eq!(rows[1]["update_norm"].as_f64(), Some(0.0), "save_model vs torch.save");
    assert_eq!(rows[2]["aliases"], "", "DCP keeps no record of the sharing");

    // DeepSpeed ZeRO-2 and ZeRO-3 of the tied model (fp32, two ranks).
    let rows = ingested(&[deepspeed("tied_zero2/global_step3"), deepspeed("tied_zero3/global_step3")]);
    for (row, name) in rows.iter().zip(["tied_zero2", "tied_zero3"]) {
        let want = reference(name)["parameters_norm"].as_f64().unwrap();
        let got = row["global_norm"].as_f64().unwrap();
        assert!(rel_close(got, want, 1e-12), "{name}: ‖θ‖ {got} vs PyTorch's {want}");
        assert_eq!(row["aliases"], "head.weight=emb.weight", "{name}");
    }

    // Hugging Face's save_pretrained drops lm_head.weight with no record: one tensor, the right norm;
    // torch.save of the same model lists the alias.
    let gpt2 = r["gpt2"]["parameters_norm"].as_f64().unwrap();
    let hf = Checkpoint::open(&d.join("gpt2_hf")).unwrap();
    assert!(hf.index_of("lm_head.weight").is_none() && hf.aliases.is_empty());
    let pt = Checkpoint::open(&d.join("gpt2.pt")).unwrap();
    assert_eq!(
        pt.aliases,
        vec![Alias { name: "lm_head.weight".into(), owner: "transformer.wte.weight".into() }]
    );
    let rows = ingested(&[d.join("gpt2_hf"), d.join("gpt2.pt")]);
    for (row, what) in rows.iter().zip(["save_pretrained", "torch.save"]) {
        let got = row["global_norm"].as_f64().unwrap();
        assert!(rel_close(got, gpt2, 1e-12), "{what}: ‖θ‖ {got} vs PyTorch's {gpt2}");
    }
}

/// Adam's `exp_avg` and `exp_avg_sq` of every trainable parameter, cut from the ranks' partitions like
/// the master weights: bit-equal to what DeepSpeed's own `safe_get_full_optimizer_state` gathered in
/// the training run, under ZeRO-2 and ZeRO-3, fp32 and bf16, one and two ranks.
#[test]
fn deepspeed_optimizer_states_are_cut_like_the_master_weights() {
    for name in ["zero2", "zero3", "zero2_bf16", "zero2_fp16", "zero3_bf16", "tied_zero2", "tied_zero3"] {
        let dir = deepspeed(&format!("{name}/global_step3"));
        let want = Checkpoint::open(&deepspeed(&format!("{name}_optim.safetensors"))).unwrap();
        for key in ["exp_avg", "exp_avg_sq"] {
            let ck = landscaped_formats::deepspeed::optimizer_state(&dir, key)
                .unwrap_or_else(|e| panic!("{name} {key}: {e}"));
            assert!(ck.source.starts_with(&format!("optimizer state '{key}' (ZeRO-")), "{}", ck.source);
            let prefix = format!("{key}.");
            let expected = want.tensors.iter().filter(|t| t.name.starts_with(&prefix)).count();
            assert_eq!(ck.tensors.len(), expected, "{name} {key}: every trainable parameter");
            for (i, t) in ck.tensors.iter().enumerate() {
                let j = want.index_of(&format!("{prefix}{}", t.name)).unwrap();
                assert_eq!((t.dtype, &t.shape), (Dtype::F32, &want.tensors[j].shape), "{name} {}", t.name);
                assert_eq!(ck.read_raw(i).unwrap(), want.read_raw(j).unwrap(), "{name} {key} {}", t.name);
            }
            if name.contains("tied") || name.contains("16") {
                assert_eq!(ck.aliases, tied_alias(), "{name}");
            }
        }
    }
    let e =
        landscaped_formats::deepspeed::optimizer_state(&deepspeed("zero2/global_step3"), "momentum_buffer")
            .unwrap_err();
    assert!(e.to_string().contains("has no 'momentum_buffer'"), "{e}");
}

/// The daemon records the same: a ZeRO-2 bf16 folder dropped into a watched folder is recorded from
/// its master weights, and the API's checkpoint records and the `checkpoints` query through the daemon
/// name the copy, the dtypes and the alias.
#[test]
fn the_daemon_api_names_the_copy_read() {
    let tmp = tempfile::tempdir().unwrap();
    let watched = tmp.path().join("ds");
    std::fs::create_dir(&watched).unwrap();
    std::fs::copy(deepspeed("zero2_bf16/latest"), watched.join("latest")).unwrap();
    let d = start(tmp.path(), &[&watched], "");
    copy_without(&deepspeed("zero2_bf16/global_step3"), &watched.join("global_step3"), &[]);
    wait_until(std::time::Duration::from_secs(30), "the checkpoint recorded", || recorded(d.port).len() == 1);
    let records: Value = serde_json::from_str(&get(d.port, "/api/v1/runs/r/checkpoints").unwrap()).unwrap();
    let r = &records[0];
    assert_eq!(r["source"], "fp32 master weights (ZeRO-2 optimizer partitions, 2 ranks)", "{r}");
    assert_eq!(r["dtypes"], "f32+bf16");
    assert_eq!(r["aliases"], serde_json::json!([{"name": "head.weight", "owner": "emb.weight"}]));
    let want = reference("zero2_bf16")["parameters_norm"].as_f64().unwrap();
    assert!(rel_close(r["global_norm"].as_f64().unwrap(), want, 1e-12));
    let (ok, out, err) = cli_query(
        &tmp.path().join("data"),
        Some(&d.config),
        &["--format", "json", "checkpoints", "--run", "r"],
    );
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["source"], r["source"]);
    assert_eq!(d.stop(), Some(0));
}
