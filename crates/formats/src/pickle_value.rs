//! Building a value tree from a pickle that [`super::pickle_scan`] has already accepted.
//!
//! Used where the layout's own records are pickles (DCP `.metadata`, a `torch.save` item inside a
//! `.distcp` file, DeepSpeed's model and optimizer states). Nothing is called or imported: a class
//! instance is an [`Obj`] holding the class's name, its constructor arguments and its `BUILD`
//! state; `collections.OrderedDict()` becomes a plain [`Val::Dict`]. Containers are shared
//! (`Rc<RefCell<…>>`) so memo fetches see later mutation, exactly as in Python; nothing is copied, so
//! the tree is linear in the pickle's size.

use std::cell::RefCell;
use std::rc::Rc;

/// A pickled value.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit in i64.
    BigInt,
    Float(f64),
    Str(Rc<str>),
    Bytes(#[allow(dead_code)] Rc<[u8]>),
    Tuple(Rc<Vec<Val>>),
    List(Rc<RefCell<Vec<Val>>>),
    Dict(Rc<RefCell<Vec<(Val, Val)>>>),
    /// A global named by the pickle (`module`, `name`), e.g. a dtype such as `torch.float32`.
    Global(Rc<(String, String)>),
    /// A class instance or the result of calling a global.
    Obj(Rc<RefCell<Obj>>),
    /// A persistent id (`torch.save` storages).
    Persistent(Rc<Val>),
}

/// The result of `REDUCE` / `NEWOBJ` on a global: nothing is called.
#[derive(Debug)]
pub(crate) struct Obj {
    pub module: String,
    pub name: String,
    pub args: Vec<Val>,
    /// The `BUILD` state (a dataclass's `__dict__`), if any.
    pub state: Option<Val>,
}

impl Val {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_int(&self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(*i),
            Val::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// A number as f64 (floats, integers, bools).
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Float(x) => Some(*x),
            Val::Int(i) => Some(*i as f64),
            Val::Bool(b) => Some(*b as i64 as f64),
            _ => None,
        }
    }

    /// The items of a tuple or list.
    pub fn items(&self) -> Option<Vec<Val>> {
        match self {
            Val::Tuple(t) => Some(t.as_ref().clone()),
            Val::List(l) => Some(l.borrow().clone()),
            _ => None,
        }
    }

    /// A sequence of non-negative integers: a tuple, a list, or a `torch.Size(tuple)`.
    pub(crate) fn as_usizes(&self) -> Option<Vec<usize>> {
        let items = match self {
            Val::Obj(o) => {
                let o = o.borrow();
                if (o.module.as_str(), o.name.as_str()) != ("torch", "Size") {
                    return None;
                }
                o.args.first()?.items()?
            }
            other => other.items()?,
        };
        items.iter().map(|v| v.as_int().and_then(|i| usize::try_from(i).ok())).collect()
    }

    /// The value under string key `key` of a dict, or of an object's `BUILD` state dict.
    pub fn get(&self, key: &str) -> Option<Val> {
        match self {
            Val::Dict(d) => d.borrow().iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v.clone()),
            Val::Obj(o) => o.borrow().state.as_ref()?.get(key),
            // A slotted object's state: (dict or None, slots dict).
            Val::Tuple(t) => t.iter().find_map(|v| if matches!(v, Val::Dict(_)) { v.get(key) } else { None }),
            _ => None,
        }
    }

    /// The (module, name) of an object's class or of a global.
    pub fn class(&self) -> Option<(String, String)> {
        match self {
            Val::Obj(o) => {
                let o = o.borrow();
                Some((o.module.clone(), o.name.clone()))
            }
            Val::Global(g) => Some((g.0.clone(), g.1.clone())),
            _ => None,
        }
    }

    /// An object's constructor arguments.
    pub fn args(&self) -> Option<Vec<Val>> {
        match self {
            Val::Obj(o) => Some(o.borrow().args.clone()),
            _ => None,
        }
    }

    /// A dict's entries.
    pub fn entries(&self) -> Option<Vec<(Val, Val)>> {
        match self {
            Val::Dict(d) => Some(d.borrow().clone()),
            _ => None,
        }
    }
}

fn bad(why: impl Into<String>) -> String {
    why.into()
}

struct Cur<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| bad(format!("pickle ends inside an argument at byte {}", self.pos)))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn le(&mut self, n: usize) -> Result<u64, String> {
        let b = self.take(n)?;
        let mut a = [0u8; 8];
        a[..n].copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn line(&mut self) -> Result<&'a [u8], String> {
        let rest = &self.data[self.pos..];
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad(format!("pickle ends inside a text argument at byte {}", self.pos)))?;
        self.pos += nl + 1;
        Ok(&rest[..nl])
    }
    fn sized(&mut self, n: u64) -> Result<&'a [u8], String> {
        self.take(usize::try_from(n).map_err(|_| bad("pickle argument length overflows"))?)
    }
}

fn text(b: &[u8]) -> Rc<str> {
    String::from_utf8_lossy(b).into()
}

fn long_le(b: &[u8]) -> Val {
    if b.is_empty() {
        return Val::Int(0);
    }
    if b.len() > 8 {
        // Fits only if the extra bytes are sign extension.
        let neg = b[b.len() - 1] & 0x80 != 0;
        let fill = if neg { 0xff } else { 0 };
        if b[8..].iter().any(|&x| x != fill) || ((b[7] & 0x80 != 0) != neg) {
            return Val::BigInt;
        }
        return long_le(&b[..8]);
    }
    let neg = b[b.len() - 1] & 0x80 != 0;
    let mut a = if neg { [0xffu8; 8] } else { [0u8; 8] };
    a[..b.len()].copy_from_slice(b);
    Val::Int(i64::from_le_bytes(a))
}

/// Build the value of a whole pickle. Call only on a pickle [`super::pickle_scan::scan`] accepted
/// (globals are not checked again here).
pub(crate) fn build(data: &[u8]) -> Result<Val, String> {
    let mut c = Cur { data, pos: 0 };
    let mut stack: Vec<Val> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: std::collections::HashMap<u64, Val> = Default::default();
    macro_rules! pop {
        ($at:expr) => {
            stack.pop().ok_or_else(|| bad(format!("pickle stack underflow at byte {}", $at)))?
        };
    }
    macro_rules! pop_mark {
        ($at:expr) => {{
            let m =
                marks.pop().ok_or_else(|| bad(format!("pickle opcode without a MARK at byte {}", $at)))?;
            if m > stack.len() {
                return Err(bad(format!("pickle stack underflow at byte {}", $at)));
            }
            stack.drain(m..).collect::<Vec<Val>>()
        }};
    }
    fn call(callable: Val, args: Vec<Val>, at: usize) -> Result<Val, String> {
        let Val::Global(g) = callable else {
            return Err(format!("pickle calls a non-global at byte {at}"));
        };
        if (g.0.as_str(), g.1.as_str()) == ("collections", "OrderedDict") {
            return Ok(Val::Dict(Default::default()));
        }
        Ok(Val::Obj(Rc::new(RefCell::new(Obj { module: g.0.clone(), name: g.1.clone(), args, state: None }))))
    }
    fn set_items(target: &Val, kv: Vec<Val>, at: usize) -> Result<(), String> {
        let Val::Dict(d) = target else {
            return Err(format!("pickle sets items on a non-dict at byte {at}"));
        };
        let mut d = d.borrow_mut();
        let mut it = kv.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }
    loop {
        let at = c.pos;
        let op = *c.take(1)?.first().ok_or_else(|| bad("empty pickle"))?;
        match op {
            b'.' => return stack.pop().ok_or_else(|| bad("pickle stops with an empty stack")),
            0x80 => {
                c.take(1)?;
            }
            0x95 => {
                c.take(8)?;
            }
            b'(' => marks.push(stack.len()),
            b'0' => {
                pop!(at);
            }
            b'1' => {
                let _ = pop_mark!(at);
            }
            b'2' => {
                let top = stack.last().cloned().ok_or_else(|| bad("DUP on an empty stack"))?;
                stack.push(top);
            }
            b'I' | b'L' => {
                let l = String::from_utf8_lossy(c.line()?).trim().trim_end_matches('L').to_string();
                stack.push(match l.as_str() {
                    "00" => Val::Bool(false),
                    "01" => Val::Bool(true),
                    s => s.parse::<i64>().map(Val::Int).unwrap_or(Val::BigInt),
                });
            }
            b'F' => {
                let l = String::from_utf8_lossy(c.line()?).trim().to_string();
                stack.push(Val::Float(l.parse().unwrap_or(f64::NAN)));
            }
            b'J' => stack.push(Val::Int(c.le(4)? as u32 as i32 as i64)),
            b'K' => stack.push(Val::Int(c.le(1)? as i64)),
            b'M' => stack.push(Val::Int(c.le(2)? as i64)),
            0x8a => {
                let n = c.le(1)?;
                stack.push(long_le(c.sized(n)?));
            }
            0x8b => {
                let n = c.le(4)?;
                stack.push(long_le(c.sized(n)?));
            }
            b'G' => stack.push(Val::Float(f64::from_be_bytes(c.take(8)?.try_into().map_err(|_| bad("G"))?))),
            b'N' => stack.push(Val::None),
            0x88 => stack.push(Val::Bool(true)),
            0x89 => stack.push(Val::Bool(false)),
            b']' => stack.push(Val::List(Default::default())),
            b'}' => stack.push(Val::Dict(Default::default())),
            b')' => stack.push(Val::Tuple(Rc::new(Vec::new()))),
            0x8f => stack.push(Val::List(Default::default())), // EMPTY_SET: kept as a list
            b'S' => {
                let l = c.line()?;
                let s = String::from_utf8_lossy(l);
                stack.push(Val::Str(s.trim_matches(|ch| ch == '\'' || ch == '"').into()));
            }
            b'V' => stack.push(Val::Str(text(c.line()?))),
            b'T' | b'X' => {
                let n = c.le(4)?;
                stack.push(Val::Str(text(c.sized(n)?)));
            }
            b'U' | 0x8c => {
                let n = c.le(1)?;
                stack.push(Val::Str(text(c.sized(n)?)));
            }
            0x8d => {
                let n = c.le(8)?;
                stack.push(Val::Str(text(c.sized(n)?)));
            }
            b'B' => {
                let n = c.le(4)?;
                stack.push(Val::Bytes(c.sized(n)?.into()));
            }
            b'C' => {
                let n = c.le(1)?;
                stack.push(Val::Bytes(c.sized(n)?.into()));
            }
            0x8e | 0x96 => {
                let n = c.le(8)?;
                stack.push(Val::Bytes(c.sized(n)?.into()));
            }
            b'a' => {
                let v = pop!(at);
                match stack.last() {
                    Some(Val::List(l)) => l.borrow_mut().push(v),
                    _ => return Err(bad(format!("pickle APPEND to a non-list at byte {at}"))),
                }
            }
            b'e' | 0x90 => {
                let items = pop_mark!(at);
                match stack.last() {
                    Some(Val::List(l)) => l.borrow_mut().extend(items),
                    _ => return Err(bad(format!("pickle APPENDS to a non-list at byte {at}"))),
                }
            }
            b's' => {
                let v = pop!(at);
                let k = pop!(at);
                let target = stack.last().ok_or_else(|| bad(format!("SETITEM underflow at byte {at}")))?;
                set_items(target, vec![k, v], at)?;
            }
            b'u' => {
                let kv = pop_mark!(at);
                let target = stack.last().ok_or_else(|| bad(format!("SETITEMS underflow at byte {at}")))?;
                set_items(target, kv, at)?;
            }
            b'b' => {
                let state = pop!(at);
                match stack.last() {
                    Some(Val::Obj(o)) => o.borrow_mut().state = Some(state),
                    Some(Val::Dict(_)) => {} // an OrderedDict's (empty) state
                    _ => return Err(bad(format!("pickle BUILD on a non-object at byte {at}"))),
                }
            }
            b'l' | 0x91 => {
                let items = pop_mark!(at);
                stack.push(Val::List(Rc::new(RefCell::new(items))));
            }
            b't' => {
                let items = pop_mark!(at);
                stack.push(Val::Tuple(Rc::new(items)));
            }
            b'd' => {
                let kv = pop_mark!(at);
                let d = Val::Dict(Default::default());
                set_items(&d, kv, at)?;
                stack.push(d);
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(bad(format!("pickle stack underflow at byte {at}")));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Val::Tuple(Rc::new(items)));
            }
            b'c' => {
                let module = text(c.line()?).to_string();
                let name = text(c.line()?).to_string();
                stack.push(Val::Global(Rc::new((module, name))));
            }
            0x93 => {
                let name = pop!(at);
                let module = pop!(at);
                match (module, name) {
                    (Val::Str(m), Val::Str(n)) => {
                        stack.push(Val::Global(Rc::new((m.to_string(), n.to_string()))))
                    }
                    _ => return Err(bad(format!("pickle STACK_GLOBAL of non-strings at byte {at}"))),
                }
            }
            b'R' => {
                let args = pop!(at);
                let callable = pop!(at);
                let args = args.items().unwrap_or_default();
                stack.push(call(callable, args, at)?);
            }
            0x81 => {
                let args = pop!(at);
                let cls = pop!(at);
                stack.push(call(cls, args.items().unwrap_or_default(), at)?);
            }
            0x92 => {
                let _kwargs = pop!(at);
                let args = pop!(at);
                let cls = pop!(at);
                stack.push(call(cls, args.items().unwrap_or_default(), at)?);
            }
            b'Q' => {
                let pid = pop!(at);
                stack.push(Val::Persistent(Rc::new(pid)));
            }
            b'P' => {
                let pid = Val::Str(text(c.line()?));
                stack.push(Val::Persistent(Rc::new(pid)));
            }
            b'g' | b'h' | b'j' => {
                let idx = match op {
                    b'g' => String::from_utf8_lossy(c.line()?)
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| bad(format!("bad GET index at byte {at}")))?,
                    b'h' => c.le(1)?,
                    _ => c.le(4)?,
                };
                let v = memo
                    .get(&idx)
                    .cloned()
                    .ok_or_else(|| bad(format!("GET of unset memo {idx} at byte {at}")))?;
                stack.push(v);
            }
            b'p' | b'q' | b'r' => {
                let idx = match op {
                    b'p' => String::from_utf8_lossy(c.line()?)
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| bad(format!("bad PUT index at byte {at}")))?,
                    b'q' => c.le(1)?,
                    _ => c.le(4)?,
                };
                let top = stack.last().cloned().ok_or_else(|| bad("PUT on an empty stack"))?;
                memo.insert(idx, top);
            }
            0x94 => {
                let top = stack.last().cloned().ok_or_else(|| bad("MEMOIZE on an empty stack"))?;
                memo.insert(memo.len() as u64, top);
            }
            other => return Err(bad(format!("unsupported pickle opcode 0x{other:02x} at byte {at}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_ordered_dict_and_objects() {
        // OrderedDict([('a', torch.Size((2, 3)))]) written by hand (protocol 2).
        let p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00actorch\nSize\nq\x02K\x02K\x03\x86\x85Rq\x03s.";
        let v = build(p).unwrap();
        assert_eq!(v.get("a").unwrap().as_usizes(), Some(vec![2, 3]));
    }

    #[test]
    fn long_integers() {
        assert!(matches!(long_le(&[0xff]), Val::Int(-1)));
        assert!(matches!(long_le(&[0x00, 0x01]), Val::Int(256)));
        assert!(matches!(long_le(&[0; 9]), Val::Int(0)));
        assert!(matches!(long_le(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), Val::BigInt));
    }
}
