//! Matching checkpoint keys to the module's parameters and buffers (the "slots").
//!
//! Prefixes `module.` (DataParallel/DDP), `model.` (Lightning) and `_orig_mod.` (torch.compile) are
//! stripped, repeatedly and in any order; an explicit mapping (checkpoint name → module name) is applied
//! first. Every mismatch — a slot the checkpoint lacks, a checkpoint tensor no slot takes, a wrong shape —
//! is collected and reported by name in one error before any computation. Non-float buffers
//! (`num_batches_tracked`) are not slots: eval mode never reads them and directions never move them.

use landscaped_formats::TensorInfo;
use std::collections::HashMap;

/// Whether a slot is a trainable parameter or a (float) buffer such as a batch-norm running statistic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SlotKind {
    Parameter,
    Buffer,
}

/// One tensor of the module that a checkpoint supplies: parameters first (module order), then float buffers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Slot {
    pub name: String,
    pub kind: SlotKind,
    pub shape: Vec<usize>,
}

impl Slot {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// How checkpoint names become module names.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BindOptions {
    /// Stripped from the front of checkpoint names, repeatedly.
    pub strip_prefixes: Vec<String>,
    /// Exact renames, checkpoint name → module name, applied before stripping.
    pub mapping: Vec<(String, String)>,
    /// Checkpoint tensors no slot takes are an error unless this is set.
    pub allow_unexpected: bool,
}

impl Default for BindOptions {
    fn default() -> Self {
        BindOptions {
            strip_prefixes: vec!["module.".into(), "model.".into(), "_orig_mod.".into()],
            mapping: Vec::new(),
            allow_unexpected: false,
        }
    }
}

impl BindOptions {
    /// Parses `from=to` pairs (command line / config).
    pub fn with_mapping(mut self, pairs: &[String]) -> Result<Self, String> {
        for p in pairs {
            let Some((a, b)) = p.split_once('=') else {
                return Err(format!("mapping {p:?} is not of the form checkpoint_name=module_name"));
            };
            self.mapping.push((a.trim().to_string(), b.trim().to_string()));
        }
        Ok(self)
    }

    /// The module name a checkpoint key is matched against.
    pub fn module_name(&self, key: &str) -> String {
        if let Some((_, to)) = self.mapping.iter().find(|(from, _)| from == key) {
            return to.clone();
        }
        let mut k = key;
        loop {
            match self.strip_prefixes.iter().find(|p| !p.is_empty() && k.starts_with(p.as_str())) {
                Some(p) => k = &k[p.len()..],
                None => return k.to_string(),
            }
        }
    }
}

/// For every slot, the index of the checkpoint tensor that supplies it.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub sources: Vec<usize>,
}

/// Matches `tensors` (a checkpoint's listing) to `slots`. `ignored_buffers` are module buffers that are
/// not slots (non-float): checkpoint tensors matching them are accepted and skipped.
pub fn bind(
    slots: &[Slot],
    ignored_buffers: &[String],
    tensors: &[TensorInfo],
    opts: &BindOptions,
) -> Result<Binding, String> {
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut problems: Vec<String> = Vec::new();
    let mut unexpected: Vec<String> = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        let name = opts.module_name(&t.name);
        if slots.iter().any(|s| s.name == name) {
            if let Some(prev) = by_name.insert(name.clone(), i) {
                problems.push(format!("both {:?} and {:?} map to {name:?}", tensors[prev].name, t.name));
            }
        } else if !ignored_buffers.contains(&name) {
            unexpected.push(t.name.clone());
        }
    }
    let mut missing = Vec::new();
    let mut sources = Vec::with_capacity(slots.len());
    for s in slots {
        match by_name.get(&s.name) {
            None => missing.push(s.name.clone()),
            Some(&i) => {
                let t = &tensors[i];
                if t.shape != s.shape {
                    problems.push(format!(
                        "{:?} has shape {:?} but the module's {:?} has {:?}",
                        t.name, t.shape, s.name, s.shape
                    ));
                } else if !t.dtype.is_float() {
                    problems.push(format!(
                        "{:?} is {} but {:?} is a float tensor",
                        t.name,
                        t.dtype.name(),
                        s.name
                    ));
                }
                sources.push(i);
            }
        }
    }
    if !missing.is_empty() {
        problems.push(format!("missing from the checkpoint: {}", list(&missing)));
    }
    if !unexpected.is_empty() && !opts.allow_unexpected {
        problems.push(format!("not in the module (unexpected): {}", list(&unexpected)));
    }
    if problems.is_empty() { Ok(Binding { sources }) } else { Err(problems.join("; ")) }
}

fn list(names: &[String]) -> String {
    const SHOW: usize = 12;
    let mut s = names.iter().take(SHOW).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOW {
        s.push_str(&format!(" and {} more", names.len() - SHOW));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use landscaped_formats::Dtype;

    fn slot(name: &str, shape: &[usize], kind: SlotKind) -> Slot {
        Slot { name: name.into(), kind, shape: shape.to_vec() }
    }
    fn info(name: &str, shape: &[usize]) -> TensorInfo {
        TensorInfo { name: name.into(), dtype: Dtype::F32, shape: shape.to_vec() }
    }

    #[test]
    fn strips_prefixes_and_maps() {
        let o = BindOptions::default();
        assert_eq!(o.module_name("module._orig_mod.fc.weight"), "fc.weight");
        assert_eq!(o.module_name("model.bn.running_mean"), "bn.running_mean");
        let o = BindOptions::default().with_mapping(&["head.w=fc.weight".into()]).unwrap();
        assert_eq!(o.module_name("head.w"), "fc.weight");
    }

    #[test]
    fn binds_and_reports_every_mismatch_by_name() {
        let slots = vec![
            slot("fc.weight", &[2, 3], SlotKind::Parameter),
            slot("fc.bias", &[2], SlotKind::Parameter),
            slot("bn.running_mean", &[2], SlotKind::Buffer),
        ];
        let ignored = vec!["bn.num_batches_tracked".to_string()];
        let good = vec![
            info("module.fc.bias", &[2]),
            info("module.fc.weight", &[2, 3]),
            info("module.bn.running_mean", &[2]),
            TensorInfo { name: "module.bn.num_batches_tracked".into(), dtype: Dtype::I64, shape: vec![] },
        ];
        let b = bind(&slots, &ignored, &good, &BindOptions::default()).unwrap();
        assert_eq!(b.sources, vec![1, 0, 2]);

        let bad = vec![info("fc.weight", &[3, 2]), info("extra.weight", &[1])];
        let e = bind(&slots, &ignored, &bad, &BindOptions::default()).unwrap_err();
        assert!(e.contains("\"fc.weight\" has shape [3, 2]"), "{e}");
        assert!(e.contains("missing from the checkpoint: fc.bias, bn.running_mean"), "{e}");
        assert!(e.contains("unexpected): extra.weight"), "{e}");
    }
}
