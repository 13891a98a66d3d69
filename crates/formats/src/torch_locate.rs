//! Where each tensor of a torch.save archive lies: its storage key, element offset, shape and strides,
//! read from `data.pkl` by a small pickle machine that builds values but never calls anything.
//!
//! `pytorch-reader` reads a tensor only whole; the chunked reader needs byte ranges. This machine runs
//! only after [`super::pickle_scan`] has accepted the pickle (allow-listed globals only), and only
//! understands what a state dict is made of: dicts (and `OrderedDict`), lists, tuples, strings, ints,
//! persistent ids and the `_rebuild_tensor*` / `_rebuild_parameter*` calls. Anything else becomes an
//! opaque value; a tensor it cannot place is simply not located, and is then read whole by
//! `pytorch-reader` (so this module can make reading faster, never wrong). Tensor names are the dotted
//! paths through dicts and lists, as `pytorch-reader` names them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Where one tensor's elements are: `storage[offset + Σ index_k · stride_k]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    /// The storage's key: the zip entry is `<root>data/<key>`.
    pub key: String,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

impl Loc {
    /// Row-major contiguous (size-1 dimensions may have any stride).
    pub fn contiguous(&self) -> bool {
        let mut expect = 1u64;
        for (&d, &s) in self.shape.iter().zip(&self.stride).rev() {
            if d != 1 && s != expect {
                return false;
            }
            expect = expect.saturating_mul(d);
        }
        true
    }
}

#[derive(Clone, Debug)]
enum V {
    Str(Rc<str>),
    Int(i64),
    Tuple(Rc<Vec<V>>),
    List(Rc<RefCell<Vec<V>>>),
    Dict(Rc<RefCell<Vec<(V, V)>>>),
    Global(Rc<str>, Rc<str>),
    Persid(Rc<V>),
    Tensor(Rc<Loc>),
    Other,
}

/// Ops before giving up (a pickle of a state dict needs a few per tensor).
const MAX_OPS: usize = 50_000_000;
/// Nodes visited while naming tensors (bounds a DAG of shared containers).
const MAX_WALK: usize = 10_000_000;

/// The tensors of the pickle with the places their elements lie, by full dotted name. Empty when the
/// pickle holds anything this machine does not follow at the top level.
pub(crate) fn locate(data: &[u8]) -> HashMap<String, Loc> {
    match run(data) {
        Some(root) => {
            let mut out = HashMap::new();
            let mut budget = MAX_WALK;
            walk(&root, &mut Vec::new(), &mut out, &mut budget);
            if budget == 0 { HashMap::new() } else { out }
        }
        None => HashMap::new(),
    }
}

fn walk(v: &V, path: &mut Vec<String>, out: &mut HashMap<String, Loc>, budget: &mut usize) {
    if *budget == 0 {
        return;
    }
    *budget -= 1;
    match v {
        V::Dict(d) => {
            for (k, val) in d.borrow().iter() {
                let key = match k {
                    V::Str(s) => s.to_string(),
                    V::Int(i) => i.to_string(),
                    _ => continue,
                };
                path.push(key);
                walk(val, path, out, budget);
                path.pop();
            }
        }
        V::List(items) => {
            for (i, item) in items.borrow().iter().enumerate() {
                path.push(i.to_string());
                walk(item, path, out, budget);
                path.pop();
            }
        }
        V::Tuple(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                walk(item, path, out, budget);
                path.pop();
            }
        }
        V::Tensor(loc) => {
            out.insert(path.join("."), (**loc).clone());
        }
        _ => {}
    }
}

fn ints(v: &V) -> Option<Vec<u64>> {
    match v {
        V::Tuple(t) => {
            t.iter().map(|x| if let V::Int(i) = x { u64::try_from(*i).ok() } else { None }).collect()
        }
        _ => None,
    }
}

/// `func(*args)` for the few callables a state dict uses.
fn call(func: &V, args: &V) -> V {
    let (V::Global(m, n), V::Tuple(a)) = (func, args) else { return V::Other };
    match (&**m, &**n) {
        ("collections", "OrderedDict") => V::Dict(Default::default()),
        ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3") => {
            let key = match a.first() {
                Some(V::Persid(p)) => match &**p {
                    V::Tuple(t) => match t.get(2) {
                        Some(V::Str(k)) if matches!(t.first(), Some(V::Str(s)) if &**s == "storage") => {
                            k.to_string()
                        }
                        _ => return V::Other,
                    },
                    _ => return V::Other,
                },
                _ => return V::Other,
            };
            let (Some(V::Int(off)), Some(shape), Some(stride)) =
                (a.get(1), a.get(2).and_then(ints), a.get(3).and_then(ints))
            else {
                return V::Other;
            };
            let Ok(offset) = u64::try_from(*off) else { return V::Other };
            if shape.len() != stride.len() {
                return V::Other;
            }
            V::Tensor(Rc::new(Loc { key, offset, shape, stride }))
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => match a.first() {
            Some(t @ V::Tensor(_)) => t.clone(),
            _ => V::Other,
        },
        _ => V::Other,
    }
}

/// Runs the pickle; the value STOP returns, or None on anything unexpected.
fn run(data: &[u8]) -> Option<V> {
    let mut pos = 0usize;
    let mut stack: Vec<V> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u64, V> = HashMap::new();
    let take = |pos: &mut usize, n: usize| -> Option<&[u8]> {
        let end = pos.checked_add(n).filter(|&e| e <= data.len())?;
        let s = &data[*pos..end];
        *pos = end;
        Some(s)
    };
    let le = |b: &[u8]| b.iter().rev().fold(0u64, |a, &x| (a << 8) | x as u64);
    let line = |pos: &mut usize| -> Option<&[u8]> {
        let rest = data.get(*pos..)?;
        let nl = rest.iter().position(|&b| b == b'\n')?;
        *pos += nl + 1;
        Some(&rest[..nl])
    };
    let text = |b: &[u8]| -> Rc<str> { String::from_utf8_lossy(b).into_owned().into() };
    for _ in 0..MAX_OPS {
        let op = *data.get(pos)?;
        pos += 1;
        match op {
            b'.' => return stack.pop(),
            0x80 => {
                take(&mut pos, 1)?;
            }
            0x95 => {
                take(&mut pos, 8)?;
            }
            b'(' => marks.push(stack.len()),
            b'0' => {
                stack.pop()?;
            }
            b'1' => {
                let m = marks.pop()?;
                stack.truncate(m);
            }
            b'2' => stack.push(stack.last()?.clone()),
            b'J' => {
                let b = take(&mut pos, 4)?;
                stack.push(V::Int(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64));
            }
            b'K' => stack.push(V::Int(take(&mut pos, 1)?[0] as i64)),
            b'M' => stack.push(V::Int(le(take(&mut pos, 2)?) as i64)),
            0x8a => {
                let n = take(&mut pos, 1)?[0] as usize;
                let b = take(&mut pos, n)?;
                // Non-negative values below 2^63 only (what sizes and offsets are).
                let v = if n <= 8 && b.last().is_none_or(|&x| x < 0x80) && le(b) <= i64::MAX as u64 {
                    V::Int(le(b) as i64)
                } else {
                    V::Other
                };
                stack.push(v);
            }
            b'I' | b'L' => {
                let l = line(&mut pos)?;
                let s = String::from_utf8_lossy(l);
                let s = s.trim().trim_end_matches('L');
                stack.push(match s {
                    "00" => V::Other, // False in protocol 0
                    "01" => V::Other,
                    _ => s.parse::<i64>().map(V::Int).unwrap_or(V::Other),
                });
            }
            b'F' | b'P' => {
                line(&mut pos)?;
                stack.push(V::Other);
            }
            0x8b => {
                let n = le(take(&mut pos, 4)?) as usize;
                take(&mut pos, n)?;
                stack.push(V::Other);
            }
            b'G' => {
                take(&mut pos, 8)?;
                stack.push(V::Other);
            }
            b'N' | 0x88 | 0x89 | 0x8f => stack.push(V::Other),
            b']' => stack.push(V::List(Default::default())),
            b'}' => stack.push(V::Dict(Default::default())),
            b')' => stack.push(V::Tuple(Rc::new(Vec::new()))),
            b'S' => {
                let l = line(&mut pos)?;
                let s = String::from_utf8_lossy(l);
                stack.push(V::Str(s.trim_matches(|c| c == '\'' || c == '"').into()));
            }
            b'V' => {
                let l = line(&mut pos)?;
                stack.push(V::Str(text(l)));
            }
            b'T' | b'X' => {
                let n = le(take(&mut pos, 4)?) as usize;
                let s = take(&mut pos, n)?;
                stack.push(V::Str(text(s)));
            }
            b'U' | 0x8c => {
                let n = take(&mut pos, 1)?[0] as usize;
                let s = take(&mut pos, n)?;
                stack.push(V::Str(text(s)));
            }
            0x8d => {
                let n = usize::try_from(le(take(&mut pos, 8)?)).ok()?;
                let s = take(&mut pos, n)?;
                stack.push(V::Str(text(s)));
            }
            b'B' => {
                let n = le(take(&mut pos, 4)?) as usize;
                take(&mut pos, n)?;
                stack.push(V::Other);
            }
            b'C' => {
                let n = take(&mut pos, 1)?[0] as usize;
                take(&mut pos, n)?;
                stack.push(V::Other);
            }
            0x8e | 0x96 => {
                let n = usize::try_from(le(take(&mut pos, 8)?)).ok()?;
                take(&mut pos, n)?;
                stack.push(V::Other);
            }
            b'a' => {
                let item = stack.pop()?;
                if let V::List(l) = stack.last()? {
                    l.borrow_mut().push(item);
                }
            }
            b'e' => {
                let m = marks.pop()?;
                if m > stack.len() {
                    return None;
                }
                let items: Vec<V> = stack.drain(m..).collect();
                if let V::List(l) = stack.last()? {
                    l.borrow_mut().extend(items);
                }
            }
            b's' => {
                let v = stack.pop()?;
                let k = stack.pop()?;
                if let V::Dict(d) = stack.last()? {
                    d.borrow_mut().push((k, v));
                }
            }
            b'u' => {
                let m = marks.pop()?;
                if m > stack.len() {
                    return None;
                }
                let items: Vec<V> = stack.drain(m..).collect();
                if let V::Dict(d) = stack.last()? {
                    let mut d = d.borrow_mut();
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        d.push((k, v));
                    }
                }
            }
            0x90 => {
                let m = marks.pop()?;
                if m > stack.len() {
                    return None;
                }
                stack.truncate(m);
                stack.last()?;
            }
            b'b' => {
                // BUILD: the state of an OrderedDict (`_metadata`) or a parameter; the target stays.
                stack.pop()?;
                stack.last()?;
            }
            b'l' => {
                let m = marks.pop()?;
                if m > stack.len() {
                    return None;
                }
                let items: Vec<V> = stack.drain(m..).collect();
                stack.push(V::List(Rc::new(RefCell::new(items))));
            }
            b't' => {
                let m = marks.pop()?;
                if m > stack.len() {
                    return None;
                }
                let items: Vec<V> = stack.drain(m..).collect();
                stack.push(V::Tuple(Rc::new(items)));
            }
            b'd' => {
                let m = marks.pop()?;
                if m > stack.len() {
                    return None;
                }
                let items: Vec<V> = stack.drain(m..).collect();
                let mut pairs = Vec::new();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                stack.push(V::Dict(Rc::new(RefCell::new(pairs))));
            }
            0x91 => {
                let m = marks.pop()?;
                if m > stack.len() {
                    return None;
                }
                stack.truncate(m);
                stack.push(V::Other);
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return None;
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(V::Tuple(Rc::new(items)));
            }
            b'c' => {
                let m = text(line(&mut pos)?);
                let n = text(line(&mut pos)?);
                stack.push(V::Global(m, n));
            }
            b'i' => {
                line(&mut pos)?;
                line(&mut pos)?;
                let m = marks.pop()?;
                if m > stack.len() {
                    return None;
                }
                stack.truncate(m);
                stack.push(V::Other);
            }
            0x93 => {
                let n = stack.pop()?;
                let m = stack.pop()?;
                stack.push(match (m, n) {
                    (V::Str(m), V::Str(n)) => V::Global(m, n),
                    _ => V::Other,
                });
            }
            b'R' => {
                let args = stack.pop()?;
                let func = stack.pop()?;
                stack.push(call(&func, &args));
            }
            0x81 | 0x92 => {
                if op == 0x92 {
                    stack.pop()?;
                }
                stack.pop()?;
                stack.pop()?;
                stack.push(V::Other);
            }
            b'o' => {
                let m = marks.pop()?;
                if m >= stack.len() {
                    return None;
                }
                stack.truncate(m);
                stack.push(V::Other);
            }
            b'Q' => {
                let pid = stack.pop()?;
                stack.push(V::Persid(Rc::new(pid)));
            }
            b'g' | b'h' | b'j' => {
                let idx = match op {
                    b'g' => String::from_utf8_lossy(line(&mut pos)?).trim().parse::<u64>().ok()?,
                    b'h' => take(&mut pos, 1)?[0] as u64,
                    _ => le(take(&mut pos, 4)?),
                };
                stack.push(memo.get(&idx)?.clone());
            }
            b'p' | b'q' | b'r' => {
                let idx = match op {
                    b'p' => String::from_utf8_lossy(line(&mut pos)?).trim().parse::<u64>().ok()?,
                    b'q' => take(&mut pos, 1)?[0] as u64,
                    _ => le(take(&mut pos, 4)?),
                };
                memo.insert(idx, stack.last()?.clone());
            }
            0x94 => {
                let idx = memo.len() as u64;
                memo.insert(idx, stack.last()?.clone());
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguity() {
        let l = |shape: Vec<u64>, stride: Vec<u64>| Loc { key: "0".into(), offset: 0, shape, stride };
        assert!(l(vec![2, 3], vec![3, 1]).contiguous());
        assert!(!l(vec![2, 3], vec![1, 2]).contiguous());
        assert!(l(vec![1, 3], vec![7, 1]).contiguous());
        assert!(l(vec![], vec![]).contiguous());
    }

    #[test]
    fn garbage_locates_nothing() {
        assert!(locate(b"").is_empty());
        assert!(locate(b"\x80\x02}q\x00(").is_empty());
        assert!(locate(&[0xff; 64]).is_empty());
    }
}
