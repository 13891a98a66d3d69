//! Optimizer state read by landscaped against PyTorch's own reading of the same files
//! (tests/python/optimizer_make.py): HF Trainer + AdamW (decay / no-decay groups, tied embeddings),
//! Lightning (Adam with amsgrad + StepLR), a plain torch.save with `named_parameters()` groups (SGD,
//! Nesterov momentum), and DCP written by two FSDP2 ranks under torchrun from `get_state_dict`.
//! PyTorch's side maps its state with its own parameter objects; landscaped's maps indices with the
//! model's parameter order, checked by shape. Every tensor must read back bit-exactly; steps and
//! hyperparameters exactly; the telemetry (effective step size, update RMS, momentum norm) to 1e-6
//! relative of float64 NumPy. An unknown optimizer (Adafactor) is listed, never guessed; a model
//! whose shapes don't match is one line naming the first mismatch.

mod support;
use support::*;

use std::sync::OnceLock;

use landscaped_formats::{Checkpoint, OptimizerKind, OptimizerState, ParamRef, ParamShape};

struct Fixture {
    dir: tempfile::TempDir,
    reference: serde_json::Value,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (dir, reference) = python_made("optimizer_make.py", "reference.json");
        Fixture { dir, reference }
    })
}

fn order_of(case: &serde_json::Value) -> Vec<ParamShape> {
    case["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ParamShape {
            name: p["name"].as_str().unwrap().to_string(),
            shape: p["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect(),
        })
        .collect()
}

fn open_case(name: &str) -> (OptimizerState, &'static serde_json::Value) {
    let case = &fixture().reference[name];
    let ck = Checkpoint::open(std::path::Path::new(case["path"].as_str().unwrap())).unwrap();
    let mut st = OptimizerState::open(&ck).unwrap().unwrap_or_else(|| panic!("{name}: no optimizer state"));
    st.map_names(&order_of(case)).unwrap_or_else(|e| panic!("{name}: {e}"));
    (st, case)
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(f64::MIN_POSITIVE)
}

/// Groups, parameters, steps, keys, hyperparameters and every tensor equal PyTorch's.
fn assert_same_state(name: &str, kind: OptimizerKind) {
    let (st, case) = open_case(name);
    assert_eq!(st.kind, kind, "{name}: kind");
    let want = Checkpoint::open(&fixture().dir.path().join(format!("{name}.safetensors"))).unwrap();
    let groups = case["groups"].as_array().unwrap();
    assert_eq!(st.groups.len(), groups.len(), "{name}: groups");
    for (g, (ours, theirs)) in st.groups.iter().zip(groups).enumerate() {
        let names: Vec<ParamRef> = theirs["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| ParamRef::Name(n.as_str().unwrap().to_string()))
            .collect();
        assert_eq!(ours.params, names, "{name}: group {g}'s parameters");
        let h = &theirs["hyper"];
        assert_eq!(ours.hyper.lr, h["lr"].as_f64(), "{name}: group {g} lr");
        assert_eq!(ours.hyper.eps, h["eps"].as_f64(), "{name}: group {g} eps");
        assert_eq!(ours.hyper.weight_decay, h["weight_decay"].as_f64(), "{name}: group {g} weight_decay");
        assert_eq!(ours.hyper.momentum, h["momentum"].as_f64(), "{name}: group {g} momentum");
        assert_eq!(ours.hyper.nesterov, h["nesterov"].as_bool(), "{name}: group {g} nesterov");
        assert_eq!(ours.hyper.amsgrad, h["amsgrad"].as_bool(), "{name}: group {g} amsgrad");
        let betas = h["betas"].as_array().map(|b| (b[0].as_f64().unwrap(), b[1].as_f64().unwrap()));
        assert_eq!(ours.hyper.betas, betas, "{name}: group {g} betas");
        for (k, v) in h.as_object().unwrap() {
            assert!(ours.raw.contains_key(k), "{name}: group {g}: hyperparameter '{k}' ({v}) not read");
        }
    }
    let params = case["params"].as_object().unwrap();
    assert_eq!(st.params.len(), params.len(), "{name}: parameters with state");
    for (pname, p) in params {
        let ps = st.param(pname).unwrap_or_else(|| panic!("{name}: no state for '{pname}'"));
        assert_eq!(ps.group as u64, p["group"].as_u64().unwrap(), "{name}: '{pname}' group");
        assert_eq!(ps.step, p["step"].as_f64(), "{name}: '{pname}' step");
        let mut keys: Vec<String> = ps.tensors.keys().cloned().collect();
        if ps.step.is_some() {
            keys.push("step".into());
        }
        keys.sort();
        let want_keys: Vec<String> =
            p["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect();
        assert_eq!(keys, want_keys, "{name}: '{pname}' state keys");
        for (k, &i) in &ps.tensors {
            let j = want.index_of(&format!("{pname}/{k}")).unwrap();
            assert_eq!(st.tensors.tensors[i].shape, want.tensors[j].shape, "{name}: {pname}/{k} shape");
            assert_eq!(
                st.tensors.read_raw(i).unwrap(),
                want.read_raw(j).unwrap(),
                "{name}: {pname}/{k} values"
            );
        }
    }
}

#[test]
fn hf_trainer_adamw_decay_groups_and_tied_weights_read_as_pytorch_does() {
    assert_same_state("hf", OptimizerKind::AdamW);
    let (st, case) = open_case("hf");
    // Tied lm_head/wte: one parameter, one state, under the first name.
    assert!(st.param("transformer.wte.weight").is_some());
    assert!(st.param("lm_head.weight").is_none());
    let last: Vec<f64> =
        case["scheduler_last_lr"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(st.lr_sources.scheduler_last_lr.as_deref(), Some(last.as_slice()));
    assert_eq!(st.lr_sources.logged.map(|l| l.0), Some(3), "trainer_state.json's last learning_rate");
}

#[test]
fn lightning_adam_amsgrad_reads_as_pytorch_does() {
    assert_same_state("lightning", OptimizerKind::Adam);
    let (st, _) = open_case("lightning");
    assert!(st.lr_sources.scheduler_last_lr.is_some(), "lr_schedulers[0]._last_lr");
}

#[test]
fn plain_torch_save_with_named_groups_reads_as_pytorch_does() {
    assert_same_state("plain", OptimizerKind::Sgd);
}

#[test]
fn dcp_from_two_fsdp2_ranks_reads_as_pytorch_does() {
    assert_same_state("dcp", OptimizerKind::AdamW);
}

#[test]
fn an_unknown_optimizer_is_listed_never_guessed() {
    let case = &fixture().reference["adafactor"];
    let ck = Checkpoint::open(std::path::Path::new(case["path"].as_str().unwrap())).unwrap();
    let st = OptimizerState::open(&ck).unwrap().unwrap();
    let keys = |k: &str| -> Vec<String> {
        case[k].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
    };
    assert_eq!(
        st.kind,
        OptimizerKind::Unknown { group_keys: keys("group_keys"), state_keys: keys("state_keys") }
    );
    // Without optimizer state: None, no error.
    let bare = Checkpoint::open(&fixture().dir.path().join("plain/bare.pt")).unwrap();
    assert!(OptimizerState::open(&bare).unwrap().is_none());
}

#[test]
fn shapes_that_do_not_match_the_model_are_one_line() {
    let case = &fixture().reference["lightning"];
    let ck = Checkpoint::open(std::path::Path::new(case["path"].as_str().unwrap())).unwrap();
    let mut st = OptimizerState::open(&ck).unwrap().unwrap();
    let mut order = order_of(case);
    order[2].shape = vec![9, 9];
    let e = st.map_names(&order).unwrap_err();
    assert!(!e.contains('\n') && e.contains("first mismatch") && e.contains("b.weight"), "{e}");
    assert!(matches!(st.params[0].param, ParamRef::Index(0)), "nothing renamed on error");
    order.pop();
    order.pop();
    let e = st.map_names(&order).unwrap_err();
    assert!(e.contains("4 parameters, the model only 2"), "{e}");
}

/// `landscaped ingest` of the case's checkpoint, then `landscaped optimizer --tensors` as JSON rows.
fn ingested_tensor_rows(name: &str, data: &std::path::Path, step: Option<&str>) -> Vec<serde_json::Value> {
    let case = &fixture().reference[name];
    let path = case["path"].as_str().unwrap();
    let mut args = vec!["ingest", "--run", name, "--no-archive", path];
    if let Some(s) = step {
        args.extend(["--step", s]);
    }
    let (ok, _, err) = cli_query(data, None, &args);
    assert!(ok, "{name}: ingest failed: {err}");
    assert!(!err.contains("optimizer state not read"), "{name}: {err}");
    let (ok, out, err) =
        cli_query(data, None, &["--format", "json", "optimizer", "--run", name, "--tensors"]);
    assert!(ok, "{name}: {err}");
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
}

/// The telemetry recorded at ingest equals NumPy's float64 figures from the same state: harmonic mean
/// of the effective step size and the update RMS to 1e-6 relative, its quantiles within half a
/// histogram bin (5e-4 relative), SGD's momentum norm to 1e-6; per group the lr and step.
#[test]
fn telemetry_at_ingest_matches_numpy_on_the_same_state() {
    let data = tempfile::tempdir().unwrap();
    for (name, step) in [("hf", None), ("lightning", None), ("plain", Some("3")), ("dcp", None)] {
        let rows = ingested_tensor_rows(name, data.path(), step);
        let params = fixture().reference[name]["params"].as_object().unwrap();
        assert_eq!(rows.len(), params.len(), "{name}: one row per parameter with state");
        // PyTorch's index of each name (where ingest, which has no model, could not map the names,
        // the rows are `#i`).
        let by_index: Vec<String> = fixture().reference[name]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["params"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()))
            .collect();
        for (pname, p) in params {
            let index = format!("#{}", by_index.iter().position(|n| n == pname).unwrap());
            let row = rows
                .iter()
                .find(|r| r["tensor"] == pname.as_str() || r["tensor"] == index.as_str())
                .unwrap_or_else(|| panic!("{name}: no row for {pname}: {rows:?}"));
            if let Some(a) = p.get("adam") {
                let hm = row["step_size_hmean"].as_f64().unwrap();
                assert!(
                    close(hm, a["harmonic_mean"].as_f64().unwrap(), 1e-6),
                    "{name} {pname}: hmean {hm} vs {}",
                    a["harmonic_mean"]
                );
                let u = row["update_rms"].as_f64().unwrap();
                assert!(
                    close(u, a["update_rms"].as_f64().unwrap(), 1e-6),
                    "{name} {pname}: update rms {u} vs {}",
                    a["update_rms"]
                );
                for (i, h) in
                    ["step_size_q01", "step_size_q10", "step_size_q50", "step_size_q90", "step_size_q99"]
                        .iter()
                        .enumerate()
                {
                    let (ours, theirs) = (row[h].as_f64().unwrap(), a["quantiles"][i].as_f64().unwrap());
                    assert!(close(ours, theirs, 5e-4), "{name} {pname}: {h} {ours} vs {theirs}");
                }
            }
            if let Some(m) = p.get("momentum_norm") {
                let ours = row["momentum_norm"].as_f64().unwrap();
                assert!(
                    close(ours, m.as_f64().unwrap(), 1e-6),
                    "{name} {pname}: momentum norm {ours} vs {m}"
                );
            }
        }
        let (ok, out, err) = cli_query(data.path(), None, &["--format", "json", "optimizer", "--run", name]);
        assert!(ok, "{err}");
        let groups: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        for (g, theirs) in fixture().reference[name]["groups"].as_array().unwrap().iter().enumerate() {
            let row = groups.iter().find(|r| r["group"] == g.to_string().as_str()).unwrap();
            assert_eq!(row["lr"].as_f64(), theirs["hyper"]["lr"].as_f64(), "{name}: group {g} lr");
        }
    }
    // Without optimizer state: no rows, said once, no error.
    let bare = fixture().dir.path().join("plain/bare.pt");
    let (ok, _, err) = cli_query(
        data.path(),
        None,
        &["ingest", "--run", "bare", "--step", "1", "--no-archive", bare.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = cli_query(data.path(), None, &["--format", "json", "optimizer", "--run", "bare"]);
    assert!(ok && out.trim() == "[]" && err.matches("no optimizer state").count() == 1, "{out} {err}");
}

/// A committed DeepSpeed fixture (tests/python/deepspeed_make.py, written by DeepSpeed itself).
fn deepspeed(rel: &str) -> std::path::PathBuf {
    root().join("tests/fixtures/deepspeed").join(rel)
}

/// DeepSpeed runs: (name, the optimizer's kind). `groups_*`: AdamW over decay / no-decay groups with
/// their own learning rates under StepLR; `fused_zero2`, `cpuadam_zero2`: DeepSpeed's own FusedAdam and
/// DeepSpeedCPUAdam (optimizer offloaded) built from the config's "AdamW", whose state does not say
/// AdamW (the saved config does); `fused_nobc_zero2`: FusedAdam with `bias_correction` off; the others Adam over one group (tied embeddings, frozen parameters,
/// bf16 / fp16 training with fp32 partitions).
const DEEPSPEED_RUNS: [(&str, OptimizerKind); 12] = [
    ("zero2", OptimizerKind::Adam),
    ("zero3", OptimizerKind::Adam),
    ("zero2_bf16", OptimizerKind::Adam),
    ("zero2_fp16", OptimizerKind::Adam),
    ("zero3_bf16", OptimizerKind::Adam),
    ("tied_zero2", OptimizerKind::Adam),
    ("tied_zero3", OptimizerKind::Adam),
    ("groups_zero2", OptimizerKind::AdamW),
    ("groups_zero3", OptimizerKind::AdamW),
    ("fused_zero2", OptimizerKind::AdamW),
    ("cpuadam_zero2", OptimizerKind::AdamW),
    ("fused_nobc_zero2", OptimizerKind::AdamW),
];

/// DeepSpeed ZeRO-1/2 and ZeRO-3 folders through `OptimizerState::open`, as for every other layout:
/// param groups, hyperparameters, steps and the scheduler's `_last_lr` equal rank 0's base optimizer
/// state as torch.load reads it (every rank's groups checked equal there); the parameters of each group
/// are DeepSpeed's recorded names; every `exp_avg` / `exp_avg_sq` is bit-equal to what DeepSpeed's own
/// `safe_get_full_optimizer_state` gathered from the ranks in the training run (one and two ranks,
/// fp32 / bf16 / fp16 training).
#[test]
fn deepspeed_zero_states_read_as_deepspeed_gathers_them() {
    for (name, kind) in DEEPSPEED_RUNS {
        let r = read_json(&deepspeed(&format!("{name}_optim.json")));
        let ck = Checkpoint::open(&deepspeed(&format!("{name}/global_step3"))).unwrap();
        let mut st = OptimizerState::open(&ck)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: no optimizer state"));
        st.map_names(&order_of(&r)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(st.kind, kind, "{name}: kind");
        let want = Checkpoint::open(&deepspeed(&format!("{name}_optim.safetensors"))).unwrap();
        let groups = r["groups"].as_array().unwrap();
        assert_eq!(st.groups.len(), groups.len(), "{name}: groups");
        let mut with_state = 0;
        for (g, (ours, theirs)) in st.groups.iter().zip(groups).enumerate() {
            let names: Vec<ParamRef> = theirs["params"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| ParamRef::Name(n.as_str().unwrap().to_string()))
                .collect();
            assert_eq!(ours.params, names, "{name}: group {g}'s parameters");
            let h = &theirs["hyper"];
            assert_eq!(ours.hyper.lr, h["lr"].as_f64(), "{name}: group {g} lr");
            assert_eq!(ours.hyper.eps, h["eps"].as_f64(), "{name}: group {g} eps");
            assert_eq!(ours.hyper.weight_decay, h["weight_decay"].as_f64(), "{name}: group {g} wd");
            assert_eq!(ours.hyper.amsgrad, h["amsgrad"].as_bool(), "{name}: group {g} amsgrad");
            let betas = h["betas"].as_array().map(|b| (b[0].as_f64().unwrap(), b[1].as_f64().unwrap()));
            assert_eq!(ours.hyper.betas, betas, "{name}: group {g} betas");
            for (k, v) in h.as_object().unwrap() {
                assert!(ours.raw.contains_key(k), "{name}: group {g}: '{k}' ({v}) not read");
            }
            for n in theirs["params"].as_array().unwrap() {
                let pname = n.as_str().unwrap();
                let ps = st.param(pname).unwrap_or_else(|| panic!("{name}: no state for '{pname}'"));
                with_state += 1;
                assert_eq!(ps.group, g, "{name}: '{pname}' group");
                assert_eq!(ps.step, theirs["step"].as_f64(), "{name}: '{pname}' step");
                let keys: Vec<&str> = ps.tensors.keys().map(String::as_str).collect();
                assert_eq!(keys, ["exp_avg", "exp_avg_sq"], "{name}: '{pname}' state keys");
                for (k, &i) in &ps.tensors {
                    let j = want.index_of(&format!("{k}.{pname}")).unwrap();
                    assert_eq!(st.tensors.tensors[i].shape, want.tensors[j].shape, "{name}: {pname} {k}");
                    assert_eq!(
                        st.tensors.read_raw(i).unwrap(),
                        want.read_raw(j).unwrap(),
                        "{name}: {pname} {k} values"
                    );
                }
            }
        }
        assert_eq!(st.params.len(), with_state, "{name}: parameters with state");
        let last: Option<Vec<f64>> =
            r["scheduler_last_lr"].as_array().map(|a| a.iter().map(|x| x.as_f64().unwrap()).collect());
        assert_eq!(st.lr_sources.scheduler_last_lr, last, "{name}: the scheduler's _last_lr");
    }
}

/// `landscaped ingest` of DeepSpeed folders records the optimizer telemetry with no special case: per
/// parameter (DeepSpeed's names) the effective step size's harmonic mean and the update RMS to 1e-6
/// relative of float64 NumPy over DeepSpeed's own gathered state, the quantiles to 5e-4; per group the
/// learning rate the scheduler left.
#[test]
fn deepspeed_telemetry_at_ingest_matches_numpy_on_deepspeeds_own_gather() {
    let data = tempfile::tempdir().unwrap();
    for name in
        ["tied_zero2", "groups_zero2", "groups_zero3", "fused_zero2", "cpuadam_zero2", "fused_nobc_zero2"]
    {
        let r = read_json(&deepspeed(&format!("{name}_optim.json")));
        let path = deepspeed(&format!("{name}/global_step3"));
        let (ok, _, err) =
            cli_query(data.path(), None, &["ingest", "--run", name, "--no-archive", path.to_str().unwrap()]);
        assert!(ok, "{name}: ingest failed: {err}");
        assert!(!err.contains("optimizer state not read"), "{name}: {err}");
        let (ok, out, err) =
            cli_query(data.path(), None, &["--format", "json", "optimizer", "--run", name, "--tensors"]);
        assert!(ok, "{name}: {err}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        let telemetry = r["telemetry"].as_object().unwrap();
        assert_eq!(rows.len(), telemetry.len(), "{name}: one row per parameter with state: {rows:?}");
        for (pname, a) in telemetry {
            let row = rows
                .iter()
                .find(|row| row["tensor"] == pname.as_str())
                .unwrap_or_else(|| panic!("{name}: no row for {pname}: {rows:?}"));
            for (ours, theirs, tol) in [
                ("step_size_hmean", &a["harmonic_mean"], 1e-6),
                ("update_rms", &a["update_rms"], 1e-6),
                ("step_size_q01", &a["quantiles"][0], 5e-4),
                ("step_size_q10", &a["quantiles"][1], 5e-4),
                ("step_size_q50", &a["quantiles"][2], 5e-4),
                ("step_size_q90", &a["quantiles"][3], 5e-4),
                ("step_size_q99", &a["quantiles"][4], 5e-4),
            ] {
                let (x, y) = (row[ours].as_f64().unwrap(), theirs.as_f64().unwrap());
                assert!(close(x, y, tol), "{name} {pname}: {ours} {x} vs NumPy's {y}");
            }
        }
        let (ok, out, err) = cli_query(data.path(), None, &["--format", "json", "optimizer", "--run", name]);
        assert!(ok, "{err}");
        let groups: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        for (g, theirs) in r["groups"].as_array().unwrap().iter().enumerate() {
            let row = groups.iter().find(|row| row["group"] == g.to_string().as_str()).unwrap();
            assert_eq!(row["lr"].as_f64(), theirs["hyper"]["lr"].as_f64(), "{name}: group {g} lr");
        }
    }
}

/// The stability job on DeepSpeed's own Adam (FusedAdam; DeepSpeedCPUAdam with the optimizer offloaded;
/// FusedAdam with `bias_correction` off; all built from the config's "AdamW") with no optimizer setting
/// at all: AdamW (from the saved config: the state does not say), β, ε, t and η from the folder; its
/// λmax and preconditioned λ1 equal PyTorch's dense eigenvalues over DeepSpeed's own gathered state and
/// `zero_to_fp32` weights (tests/python/deepspeed_stability_reference.py) to 1e-6 and 5e-6, and the update it
/// forms equals the step DeepSpeed's own optimizer took next on the same gradient (the fixtures'
/// `<name>_delta.safetensors`) to 3e-5 (DeepSpeed steps in f32).
#[test]
fn stability_on_deepspeeds_own_adam_reads_adamw_from_the_folder() {
    let (_dir, r) = python_made("deepspeed_stability_reference.py", "reference.json");
    let data = tempfile::tempdir().unwrap();
    for name in ["fused_zero2", "cpuadam_zero2", "fused_nobc_zero2"] {
        let want = &r[name];
        let ck = deepspeed(&format!("{name}/global_step3"));
        let out = landscaped_cmd(data.path())
            .env("PYTHONPATH", tests_python())
            .args(["--format", "json", "stability", "--run", name, "--checkpoint", ck.to_str().unwrap()])
            .args(["--backend", "python", "--python"])
            .arg(venv_python())
            .args(["--factory", "deepspeed_net:build", "--batch-size", "64", "--threads", "1"])
            .args(["--tol", "1e-10", "--max-steps", "200"])
            .output()
            .unwrap();
        let (ok, out, err) = outcome(out);
        assert!(ok, "{name}: {err}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        let value = |q: &str| {
            let row =
                rows.iter().find(|row| row["quantity"] == q).unwrap_or_else(|| panic!("{name}: no {q}"));
            (
                row["value"].as_f64().unwrap(),
                row["threshold"].as_f64(),
                row["note"].as_str().unwrap().to_string(),
            )
        };
        let store = landscaped::store::Store::open(data.path()).unwrap();
        let rec = <landscaped::store::stability::StabilityRecord as landscaped::store::RunStepRecord>::get(
            &store, name, 3,
        )
        .unwrap()
        .unwrap_or_else(|| panic!("{name}: no record at step 3 (the folder's global_step3)"));
        drop(store);
        let uncorrected = name == "fused_nobc_zero2";
        let described = if uncorrected { "t=3, no bias correction), η=0.05" } else { "t=3), η=0.05" };
        assert!(rec.optimizer.starts_with("adamw(β1=0.9, β2=0.999"), "{name}: {}", rec.optimizer);
        assert!(rec.optimizer.ends_with(described), "{name}: {}", rec.optimizer);
        assert!(rec.source.contains("optimizer: optimizer state"), "{name}: {}", rec.source);
        assert!(rec.source.contains("exp_avg_sq: optimizer state"), "{name}: {}", rec.source);
        assert!(rec.notes.is_empty(), "{name}: {:?}", rec.notes);
        assert!(rec.direction.contains("adamw step"), "{name}: {}", rec.direction);
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
        let (lmax, _, _) = value("lambda_max");
        let (pre, thr, convention) = value("preconditioned_lambda_1");
        let (want_lmax, want_pre) =
            (want["lambda_max"].as_f64().unwrap(), want["preconditioned_lambda_1"].as_f64().unwrap());
        let e = update_error(
            &data.path().join("stability").join(name).join("update.safetensors"),
            &deepspeed(&format!("{name}_delta.safetensors")),
        );
        eprintln!(
            "{name}: λmax rel {:.1e}, λ1(P⁻¹H) rel {:.1e}, update vs DeepSpeed's step {e:.1e}",
            rel(lmax, want_lmax),
            rel(pre, want_pre)
        );
        assert!(rel(lmax, want_lmax) < 1e-6, "{name}: λmax {lmax} vs PyTorch {want_lmax}");
        // float32 HVPs through a LayerNorm, and D = P^{-1/2} stored as float32 over v spanning decades.
        assert!(rel(pre, want_pre) < 5e-6, "{name}: preconditioned λ1 {pre} vs PyTorch {want_pre}");
        // DeepSpeed steps in f32 (its AVX kernel); ours in f64.
        assert!(e < 3e-5, "{name}: the next update differs from DeepSpeed's own step by {e:.1e}");
        // (2 + 2β1)/((1 − β1)η) = 38/η, with or without the correction (it is folded into P).
        assert!(rel(thr.unwrap(), 38.0 / 0.05) < 1e-12, "{name}: threshold {thr:?}");
        assert_eq!(convention.contains("P = √v+ε"), uncorrected, "{name}: {convention}");
    }
}
