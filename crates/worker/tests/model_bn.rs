//! The model contract on a conv net with batch norm (tests/python/slice_reference.py builds it and
//! computes PyTorch's values): loading, binding parameters AND buffers from a checkpoint saved with
//! `module.` prefixes, mismatches reported by name, and evaluation equal to PyTorch's within 1e-5 relative.

use landscaped_formats::{Dtype, TensorInfo};
use landscaped_worker::model::{BindOptions, Model, ModelSpec, SlotKind, read_state};
use std::path::Path;

// The workspace's test support (tests/support): its paths (root, the venv's Python) and fixture makers;
// the rest of it needs the app's binaries and crates. `fixtures` finds `paths` as `super::paths`.
#[path = "../../../tests/support/fixtures.rs"]
mod fixtures;
#[path = "../../../tests/support/paths.rs"]
mod paths;
use fixtures::*;

fn fixture() -> &'static Path {
    &slice_fixture().0
}

fn reference() -> serde_json::Value {
    slice_fixture().1.clone()
}

fn spec() -> ModelSpec {
    let mut s = ModelSpec::new(&fixture().join("model/model.pt"), &fixture().join("model/eval.safetensors"));
    s.batch_size = 64;
    s
}

/// A safetensors checkpoint's listing and f32 reader (through the safetensors crate, independent of ours).
fn safetensors_ckpt(path: &Path) -> (Vec<TensorInfo>, Vec<Vec<f32>>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut infos = Vec::new();
    let mut values = Vec::new();
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => Dtype::F32,
            safetensors::Dtype::I64 => Dtype::I64,
            d => panic!("{d:?}"),
        };
        infos.push(TensorInfo { name: name.clone(), dtype, shape: view.shape().to_vec() });
        values.push(if dtype == Dtype::F32 {
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
        } else {
            Vec::new()
        });
    }
    (infos, values)
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-12)
}

#[test]
fn binds_parameters_and_batch_norm_buffers() {
    let model = Model::load(&spec()).unwrap();
    let names: Vec<(&str, SlotKind)> = model.slots().iter().map(|s| (s.name.as_str(), s.kind)).collect();
    assert_eq!(
        names,
        vec![
            ("conv.weight", SlotKind::Parameter),
            ("conv.bias", SlotKind::Parameter),
            ("bn.weight", SlotKind::Parameter),
            ("bn.bias", SlotKind::Parameter),
            ("fc.weight", SlotKind::Parameter),
            ("fc.bias", SlotKind::Parameter),
            ("bn.running_mean", SlotKind::Buffer),
            ("bn.running_var", SlotKind::Buffer),
        ]
    );
    assert_eq!(model.ignored_buffers(), &["bn.num_batches_tracked".to_string()]);
    assert_eq!(model.samples(), 200);
    assert_eq!(model.batch_count(), 4);
}

#[test]
fn checkpoint_loss_matches_pytorch_including_running_stats() {
    let r = reference();
    let mut model = Model::load(&spec()).unwrap();
    // The exported module holds checkpoint b's weights.
    let e = model.evaluate().unwrap();
    assert!(close(e.loss, r["loss_b"].as_f64().unwrap(), 1e-5), "{} vs {}", e.loss, r["loss_b"]);
    // Checkpoint a differs in parameters AND running statistics: both must be written for PyTorch's loss.
    let (infos, values) = safetensors_ckpt(&fixture().join("ckpt_a.safetensors"));
    let state =
        read_state(&model, &infos, &BindOptions::default(), "ckpt_a", |i| Ok(values[i].clone())).unwrap();
    let before_buffers = model.state().unwrap();
    model.set_state(&state).unwrap();
    let e = model.evaluate().unwrap();
    assert!(close(e.loss, r["loss_a"].as_f64().unwrap(), 1e-5), "{} vs {}", e.loss, r["loss_a"]);
    assert!(close(e.accuracy.unwrap(), r["acc_a"].as_f64().unwrap(), 1e-12));
    // Parameters of a with b's running statistics give a different loss: the buffers really matter.
    let mut mixed = state.clone();
    let nparams = model.slots().iter().filter(|s| s.kind == SlotKind::Parameter).count();
    mixed[nparams..].clone_from_slice(&before_buffers[nparams..]);
    model.set_state(&mixed).unwrap();
    let m = model.evaluate().unwrap();
    assert!(!close(m.loss, r["loss_a"].as_f64().unwrap(), 1e-3), "running stats had no effect: {}", m.loss);
    // And the module state read back equals what was written.
    model.set_state(&state).unwrap();
    assert_eq!(model.state().unwrap(), state);
}

#[test]
fn mismatches_are_named_before_computing() {
    let model = Model::load(&spec()).unwrap();
    let (mut infos, values) = safetensors_ckpt(&fixture().join("ckpt_a.safetensors"));
    let no_strip = BindOptions { strip_prefixes: vec![], ..BindOptions::default() };
    let e = read_state(&model, &infos, &no_strip, "ckpt_a", |_| panic!("read before binding")).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("missing from the checkpoint: conv.weight"), "{msg}");
    assert!(msg.contains("bn.running_var"), "{msg}");
    assert!(msg.contains("unexpected): module.bn.bias") || msg.contains("module.conv.weight"), "{msg}");
    // Wrong shape, by name.
    let i = infos.iter().position(|t| t.name == "module.fc.weight").unwrap();
    infos[i].shape = vec![144, 4];
    let e =
        read_state(&model, &infos, &BindOptions::default(), "ckpt_a", |i| Ok(values[i].clone())).unwrap_err();
    assert!(
        e.to_string()
            .contains("\"module.fc.weight\" has shape [144, 4] but the module's \"fc.weight\" has [4, 144]"),
        "{e}"
    );
}

#[test]
fn subsample_and_batch_size_change_only_what_they_should() {
    let full = Model::load(&spec()).unwrap().evaluate().unwrap();
    let mut s = spec();
    s.batch_size = 7; // uneven last batch: weighting by batch size keeps the mean exact
    let e = Model::load(&s).unwrap().evaluate().unwrap();
    assert!(close(e.loss, full.loss, 1e-5), "{} vs {}", e.loss, full.loss);
    s.subsample = Some(50);
    let e = Model::load(&s).unwrap().evaluate().unwrap();
    assert_eq!(e.samples, 50);
}

#[test]
fn bad_inputs_give_one_line_errors_naming_the_file() {
    let mut s = spec();
    s.model = fixture().join("model/eval.safetensors");
    let e = Model::load(&s).err().unwrap().to_string();
    assert!(e.contains("eval.safetensors") && e.contains("TorchScript"), "{e}");
    let mut s = spec();
    s.device = "cuda:7".into();
    let e = Model::load(&s).err().unwrap().to_string();
    assert!(e.contains("cuda:7"), "{e}");
    let mut s = spec();
    s.loss = landscaped_worker::model::Loss::Mse; // 4 logits against integer targets
    assert!(Model::load(&s).is_err());
}
