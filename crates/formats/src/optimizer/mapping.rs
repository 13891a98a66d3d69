//! Index → name: an optimizer state keyed by PyTorch's indices mapped to the model's parameter names.
//!
//! PyTorch numbers an optimizer's parameters consecutively over its param groups. Where the groups
//! were built from the model's own order (one group of `model.parameters()`, Lightning's default; HF
//! Trainer's decay / no-decay groups, each in `named_parameters()` order), every group is a
//! subsequence of the model's parameter order and together they are an interleaving of it (leaving
//! out parameters without gradient when the optimizer has fewer). The mapping is the interleaving
//! whose state shapes match the parameters' shapes; it is taken only when exactly one exists.
//! None: refused with the first mismatch. More than one: refused naming the first parameter that
//! could go either way. Never guessed.

use super::{OptimizerState, ParamRef};

/// A model parameter: its name and shape, in `named_parameters()` order (what a model worker reports
/// at bind time).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParamShape {
    pub name: String,
    pub shape: Vec<usize>,
}

impl From<(String, Vec<usize>)> for ParamShape {
    fn from((name, shape): (String, Vec<usize>)) -> ParamShape {
        ParamShape { name, shape }
    }
}

/// The most DP cells tried (groups' sizes product × parameters) before refusing as too large.
const MAX_CELLS: usize = 64 << 20;

impl OptimizerState {
    /// Maps index-keyed parameters to the names of `order` (the model's parameters in
    /// `named_parameters()` order), checked by shape; name-keyed ones are checked by shape only.
    /// An error is one line naming what is missing or the first mismatch; nothing is changed then.
    pub fn map_names(&mut self, order: &[ParamShape]) -> Result<(), String> {
        let seq: Vec<(usize, ParamRef)> = self
            .groups
            .iter()
            .enumerate()
            .flat_map(|(g, gr)| gr.params.iter().map(move |r| (g, r.clone())))
            .collect();
        let shape_of = |r: &ParamRef| -> Option<Vec<usize>> {
            let k = self.params.iter().position(|p| &p.param == r)?;
            self.shape_of(k).map(<[usize]>::to_vec)
        };
        if seq.iter().all(|(_, r)| matches!(r, ParamRef::Name(_))) {
            for (_, r) in &seq {
                let ParamRef::Name(n) = r else { continue };
                let Some(m) = order.iter().find(|p| &p.name == n) else {
                    return Err(format!(
                        "the optimizer state names parameter '{n}', which the model does not have"
                    ));
                };
                if let Some(s) = shape_of(r)
                    && s != m.shape
                {
                    return Err(format!(
                        "parameter '{n}': optimizer state of shape {s:?}, the model's parameter has shape {:?}",
                        m.shape
                    ));
                }
            }
            return Ok(());
        }
        if seq.iter().any(|(_, r)| matches!(r, ParamRef::Name(_))) {
            return Err("the optimizer state names some parameters and numbers others; cannot map it".into());
        }
        let sizes: Vec<usize> = self.groups.iter().map(|g| g.params.len()).collect();
        let shapes: Vec<Vec<Option<Vec<usize>>>> =
            self.groups.iter().map(|g| g.params.iter().map(&shape_of).collect()).collect();
        let model: Vec<&[usize]> = order.iter().map(|p| p.shape.as_slice()).collect();
        let assignment = interleave(&sizes, &shapes, &model, order)?;
        // assignment[g][k] = model index of group g's k-th parameter.
        let mut rename = std::collections::HashMap::new();
        for (g, idx) in assignment.iter().enumerate() {
            for (k, &j) in idx.iter().enumerate() {
                rename.insert(self.groups[g].params[k].clone(), ParamRef::Name(order[j].name.clone()));
            }
        }
        for g in &mut self.groups {
            for r in &mut g.params {
                *r = rename[r].clone();
            }
        }
        for p in &mut self.params {
            if let Some(n) = rename.get(&p.param) {
                p.param = n.clone();
            }
        }
        Ok(())
    }
}

fn fits(state: &Option<Vec<usize>>, model: &[usize]) -> bool {
    state.as_deref().is_none_or(|s| s == model)
}

/// The unique order-preserving interleaving of the groups into the model's order that matches the
/// shapes (`None` shapes match anything): per group, the model index of each of its parameters.
fn interleave(
    sizes: &[usize],
    shapes: &[Vec<Option<Vec<usize>>>],
    model: &[&[usize]],
    order: &[ParamShape],
) -> Result<Vec<Vec<usize>>, String> {
    let n: usize = sizes.iter().sum();
    let m = model.len();
    if n > m {
        return Err(format!("the optimizer has {n} parameters, the model only {m}"));
    }
    let skips = n < m;
    let tuples = sizes.iter().try_fold(1usize, |a, &s| a.checked_mul(s + 1));
    let cells = tuples.and_then(|t| t.checked_mul(m + 1)).filter(|&c| c <= MAX_CELLS);
    let Some(cells) = cells else {
        return Err(format!(
            "{} param groups of sizes {sizes:?} are too many to map by shape; the optimizer must name its parameters (param_names)",
            sizes.len()
        ));
    };
    let tuples = tuples.unwrap_or(1);
    // radix[g]: the stride of group g's counter in a tuple index.
    let mut radix = vec![1usize; sizes.len()];
    for g in 1..sizes.len() {
        radix[g] = radix[g - 1] * (sizes[g - 1] + 1);
    }
    let ks = |t: usize| -> Vec<usize> { sizes.iter().zip(&radix).map(|(s, r)| (t / r) % (s + 1)).collect() };
    // ways[t * (m+1) + j]: ways (capped at 2) to finish from counters t at model index j.
    let mut ways = vec![0u8; cells];
    for j in (0..=m).rev() {
        for t in 0..tuples {
            let k = ks(t);
            let used: usize = k.iter().sum();
            if used > j || (!skips && used != j) {
                continue;
            }
            let w = if j == m {
                u8::from(used == n)
            } else {
                let mut w = 0u8;
                for g in 0..sizes.len() {
                    if k[g] < sizes[g] && fits(&shapes[g][k[g]], model[j]) {
                        w = w.saturating_add(ways[(t + radix[g]) * (m + 1) + j + 1]);
                    }
                }
                if skips && m - j > n - used {
                    w = w.saturating_add(ways[t * (m + 1) + j + 1]);
                }
                w.min(2)
            };
            ways[t * (m + 1) + j] = w;
        }
    }
    match ways[0] {
        0 => return Err(first_mismatch(sizes, shapes, order)),
        1 => {}
        _ => {}
    }
    // Walk the unique path (or name the first fork).
    let mut out: Vec<Vec<usize>> = sizes.iter().map(|_| Vec::new()).collect();
    let mut t = 0usize;
    for j in 0..m {
        let k = ks(t);
        let mut options: Vec<Option<usize>> = Vec::new();
        for g in 0..sizes.len() {
            if k[g] < sizes[g]
                && fits(&shapes[g][k[g]], model[j])
                && ways[(t + radix[g]) * (m + 1) + j + 1] > 0
            {
                options.push(Some(g));
            }
        }
        let used: usize = k.iter().sum();
        if skips && m - j > n - used && ways[t * (m + 1) + j + 1] > 0 {
            options.push(None);
        }
        if options.len() > 1 {
            let what: Vec<String> = options
                .iter()
                .map(|o| match o {
                    Some(g) => format!("group {g}"),
                    None => "no group".to_string(),
                })
                .collect();
            return Err(format!(
                "ambiguous: model parameter '{}' of shape {:?} fits the optimizer's param groups (sizes {sizes:?}) as {} alike by shape; the optimizer must name its parameters (param_names) to map them",
                order[j].name,
                order[j].shape,
                what.join(" or ")
            ));
        }
        match options.first() {
            Some(Some(g)) => {
                out[*g].push(j);
                t += radix[*g];
            }
            Some(None) => {}
            None => return Err(first_mismatch(sizes, shapes, order)),
        }
    }
    Ok(out)
}

/// One line for "no interleaving fits": the first parameter where the groups taken in order (the
/// common case: one group, or groups laid end to end) disagree with the model.
fn first_mismatch(sizes: &[usize], shapes: &[Vec<Option<Vec<usize>>>], order: &[ParamShape]) -> String {
    let mut i = 0;
    for (g, gs) in shapes.iter().enumerate() {
        for (k, s) in gs.iter().enumerate() {
            let Some(p) = order.get(i) else {
                return format!("optimizer parameter #{i} (group {g}) has no model parameter");
            };
            if !fits(s, &p.shape) {
                return format!(
                    "no order of the model's parameters fits the optimizer's param groups (sizes {sizes:?}); first mismatch: optimizer parameter #{i} (group {g}, #{k} in it) has state of shape {:?}, model parameter #{i} '{}' has shape {:?}",
                    s.as_deref().unwrap_or(&[]),
                    p.name,
                    p.shape
                );
            }
            i += 1;
        }
    }
    format!("no order of the model's parameters fits the optimizer's param groups (sizes {sizes:?}) by shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(shapes: &[(&str, &[usize])]) -> Vec<ParamShape> {
        shapes.iter().map(|(n, s)| ParamShape { name: n.to_string(), shape: s.to_vec() }).collect()
    }

    #[test]
    fn decay_and_no_decay_groups_are_unique_when_shapes_say_so() {
        let o = order(&[("w1", &[4, 3]), ("b1", &[4]), ("w2", &[2, 4]), ("b2", &[2])]);
        let model: Vec<&[usize]> = o.iter().map(|p| p.shape.as_slice()).collect();
        let shapes = vec![vec![Some(vec![4, 3]), Some(vec![2, 4])], vec![Some(vec![4]), Some(vec![2])]];
        let a = interleave(&[2, 2], &shapes, &model, &o).unwrap();
        assert_eq!(a, vec![vec![0, 2], vec![1, 3]]);
    }

    #[test]
    fn equal_shapes_across_groups_are_refused_as_ambiguous() {
        let o = order(&[("a", &[4]), ("b", &[4])]);
        let model: Vec<&[usize]> = o.iter().map(|p| p.shape.as_slice()).collect();
        let shapes = vec![vec![Some(vec![4])], vec![Some(vec![4])]];
        let e = interleave(&[1, 1], &shapes, &model, &o).unwrap_err();
        assert!(e.contains("ambiguous") && e.contains("'a'"), "{e}");
    }

    #[test]
    fn a_wrong_shape_names_the_first_mismatch() {
        let o = order(&[("a", &[4]), ("b", &[3])]);
        let model: Vec<&[usize]> = o.iter().map(|p| p.shape.as_slice()).collect();
        let shapes = vec![vec![Some(vec![4]), Some(vec![5])]];
        let e = interleave(&[2], &shapes, &model, &o).unwrap_err();
        assert!(e.contains("first mismatch") && e.contains("'b'") && e.contains("[5]"), "{e}");
        let e = interleave(&[3], &[vec![None, None, None]], &model, &o).unwrap_err();
        assert!(e.contains("3 parameters, the model only 2"), "{e}");
    }

    #[test]
    fn frozen_parameters_are_skipped_when_unambiguous() {
        let o = order(&[("frozen", &[7]), ("w", &[4, 3])]);
        let model: Vec<&[usize]> = o.iter().map(|p| p.shape.as_slice()).collect();
        let a = interleave(&[1], &[vec![Some(vec![4, 3])]], &model, &o).unwrap();
        assert_eq!(a, vec![vec![1]]);
    }
}
