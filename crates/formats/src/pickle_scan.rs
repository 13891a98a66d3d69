//! A pickle opcode scanner run over `data.pkl` before anything else looks at it.
//!
//! It simulates the pickle machine's stack just far enough to know every global a pickle names
//! (`GLOBAL`, `INST` and `STACK_GLOBAL`, including strings fetched back from the memo) and refuses
//! any outside the allow-list of what a state dict needs: the spirit of
//! `torch.load(weights_only=True)`. Nothing is ever called or built. It also records the order in
//! which string literals first appear, which is the order of the state dict's keys.
//!
//! It also bounds the *shape* of the value the pickle would build, so that every reader after it
//! (the value tree of [`super::pickle_value`], the tensor locator, `pytorch-reader`), all of which
//! walk and drop their trees recursively, can trust it: the nesting depth is tracked exactly and a
//! pickle nesting deeper than [`MAX_DEPTH`] levels is refused, as is a value that contains itself.
//! Exactness comes from one rule Python's pickler always keeps for acyclic data: a container is
//! filled while it is on the stack and never changed after it was placed inside another, so a
//! container's height is final once it has a parent. A pickle that changes a container after
//! nesting it (only a cycle or a hand-made pickle does) is refused.

use std::cell::Cell;
use std::rc::Rc;

use std::collections::HashMap;

/// Why a pickle was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanError {
    /// A global (or pickle feature) outside the allow-list; the text names it.
    Refused(String),
    /// Not a well-formed pickle.
    Malformed(String),
}

/// What the scan learned.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Each string literal, with the position of its first appearance.
    pub string_order: HashMap<String, usize>,
    /// Every global the pickle names, as `module.name`, in order (duplicates removed).
    pub globals: Vec<String>,
}

/// The deepest nesting of containers (lists, dicts, tuples, sets, objects, persistent ids) a pickle
/// may build. Python's own pickler stops near 1,000 (its recursion limit); a state dict, a Lightning
/// or DeepSpeed checkpoint or a DCP `.metadata` needs fewer than 20. The readers after the scan walk
/// and drop their trees recursively, so this bounds their stack use too.
pub(crate) const MAX_DEPTH: u32 = 256;

/// A stack value: a string (shared, so memo fetches and DUP never copy its bytes), a container (its
/// height and whether it has been placed inside another), or any other scalar.
#[derive(Clone, Debug)]
enum V {
    Str(Rc<str>),
    Node(Rc<Node>),
    Other,
}

/// A container's shape: its height (1 for an empty one) and whether it has a parent yet.
#[derive(Debug)]
struct Node {
    height: Cell<u32>,
    nested: Cell<bool>,
}

fn too_deep(at: usize) -> ScanError {
    ScanError::Refused(format!(
        "pickle nests values deeper than {MAX_DEPTH} levels (at byte {at}); landscaped's limit, far above what a checkpoint needs"
    ))
}

/// A new container holding `children` (each now has a parent).
fn node_of<'a>(children: impl IntoIterator<Item = &'a V>, at: usize) -> Result<V, ScanError> {
    let mut height = 1;
    for c in children {
        if let V::Node(n) = c {
            n.nested.set(true);
            height = height.max(n.height.get() + 1);
        }
    }
    if height > MAX_DEPTH {
        return Err(too_deep(at));
    }
    Ok(V::Node(Rc::new(Node { height: Cell::new(height), nested: Cell::new(false) })))
}

/// `children` placed into the container `target` (APPEND(S), SETITEM(S), ADDITEMS, BUILD). A target that
/// is not a container we track (an opaque scalar) is left alone: its readers see no children.
fn place<'a>(
    target: &V,
    children: impl IntoIterator<Item = &'a V>,
    op: u8,
    at: usize,
) -> Result<(), ScanError> {
    let V::Node(t) = target else { return Ok(()) };
    let mut height = t.height.get();
    let mut any = false;
    for c in children {
        any = true;
        if let V::Node(n) = c {
            if Rc::ptr_eq(n, t) {
                return Err(ScanError::Refused(format!(
                    "pickle puts a value inside itself (opcode 0x{op:02x}, byte {at}); a checkpoint never does"
                )));
            }
            n.nested.set(true);
            height = height.max(n.height.get() + 1);
        }
    }
    if any && t.nested.get() {
        return Err(ScanError::Refused(format!(
            "pickle changes a value after placing it inside another (opcode 0x{op:02x}, byte {at}): a cycle or a hand-made pickle, which landscaped does not follow"
        )));
    }
    if height > MAX_DEPTH {
        return Err(too_deep(at));
    }
    t.height.set(height);
    Ok(())
}

/// Whether `module.name` is something a state dict (or a Lightning / HF checkpoint dict around
/// one) needs. Everything else is refused by name.
pub(crate) fn allowed(module: &str, name: &str) -> bool {
    match module {
        "collections" => matches!(name, "OrderedDict"),
        "torch._utils" => matches!(
            name,
            "_rebuild_tensor"
                | "_rebuild_tensor_v2"
                | "_rebuild_tensor_v3"
                | "_rebuild_parameter"
                | "_rebuild_parameter_with_state"
        ),
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "torch.nn.parameter" => name == "Parameter",
        "torch.storage" => matches!(name, "UntypedStorage" | "TypedStorage"),
        "torch.serialization" => name == "_get_layout",
        "torch" => {
            matches!(
                name,
                "FloatStorage"
                    | "DoubleStorage"
                    | "HalfStorage"
                    | "BFloat16Storage"
                    | "LongStorage"
                    | "IntStorage"
                    | "ShortStorage"
                    | "CharStorage"
                    | "ByteStorage"
                    | "BoolStorage"
                    | "UntypedStorage"
                    | "Tensor"
                    | "Size"
                    | "device"
                    | "strided"
                    | "float32"
                    | "float"
                    | "float64"
                    | "double"
                    | "float16"
                    | "half"
                    | "bfloat16"
                    | "int64"
                    | "long"
                    | "int32"
                    | "int"
                    | "int16"
                    | "short"
                    | "int8"
                    | "uint8"
                    | "bool"
            )
        }
        "builtins" | "__builtin__" => {
            matches!(
                name,
                "set"
                    | "frozenset"
                    | "bytearray"
                    | "slice"
                    | "complex"
                    | "list"
                    | "dict"
                    | "tuple"
                    | "int"
                    | "float"
                    | "str"
                    | "bool"
            )
        }
        "_codecs" => name == "encode",
        "numpy.core.multiarray" | "numpy._core.multiarray" => name == "scalar",
        "numpy" => name == "dtype",
        // Lightning stores hyper-parameters in this dict subclass.
        "lightning.fabric.utilities.data"
        | "lightning_fabric.utilities.data"
        | "pytorch_lightning.utilities.parsing" => name == "AttributeDict",
        _ => false,
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ScanError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| {
            ScanError::Malformed(format!("pickle ends inside an argument at byte {}", self.pos))
        })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ScanError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u64, ScanError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as u64)
    }
    fn u32(&mut self) -> Result<u64, ScanError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64)
    }
    fn u64(&mut self) -> Result<u64, ScanError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn sized(&mut self, n: u64) -> Result<&'a [u8], ScanError> {
        let n = usize::try_from(n)
            .map_err(|_| ScanError::Malformed("pickle argument length overflows".into()))?;
        self.take(n)
    }
    fn line(&mut self) -> Result<&'a [u8], ScanError> {
        let rest = &self.data[self.pos..];
        let nl = rest.iter().position(|&b| b == b'\n').ok_or_else(|| {
            ScanError::Malformed(format!("pickle ends inside a text argument at byte {}", self.pos))
        })?;
        self.pos += nl + 1;
        Ok(&rest[..nl])
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Scan a whole pickle (up to its STOP opcode) against the state-dict allow-list ([`allowed`]).
pub(crate) fn scan(data: &[u8]) -> Result<Scan, ScanError> {
    scan_with(data, allowed)
}

/// The classes a DCP `.metadata` pickle names (PyTorch 2.x), on top of [`allowed`]: the metadata
/// dataclasses, the storage record of the file-system writer, and the checkpoint id's path class
/// (`pathlib._local` is its module from Python 3.13 on).
pub(crate) fn allowed_dcp(module: &str, name: &str) -> bool {
    match module {
        "torch.distributed.checkpoint.metadata" => matches!(
            name,
            "Metadata"
                | "MetadataIndex"
                | "StorageMeta"
                | "TensorProperties"
                | "TensorStorageMetadata"
                | "ChunkStorageMetadata"
                | "BytesStorageMetadata"
                | "_MEM_FORMAT_ENCODING"
        ),
        "torch.distributed.checkpoint.filesystem" => name == "_StorageInfo",
        "pathlib" | "pathlib._local" => matches!(name, "PosixPath" | "WindowsPath" | "PurePosixPath"),
        _ => allowed(module, name),
    }
}

/// The DeepSpeed classes its ZeRO optimizer-state files name, on top of [`allowed`] (the loss
/// scaler, the ZeRO stage enum, and ZeRO-1/2's fragment addresses).
pub(crate) fn allowed_deepspeed(module: &str, name: &str) -> bool {
    match module {
        "deepspeed.runtime.fp16.loss_scaler" => matches!(name, "LossScaler" | "DynamicLossScaler"),
        "deepspeed.runtime.zero.config" => name == "ZeroStageEnum",
        "deepspeed.utils.tensor_fragment" => name == "fragment_address",
        _ => allowed(module, name),
    }
}

/// Scan a whole pickle (up to its STOP opcode), refusing every global `allow` rejects.
pub(crate) fn scan_with(data: &[u8], allow: fn(&str, &str) -> bool) -> Result<Scan, ScanError> {
    let mut c = Cursor { data, pos: 0 };
    let mut stack: Vec<V> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u64, V> = HashMap::new();
    let mut out = Scan::default();
    let mut seen_globals: std::collections::HashSet<String> = Default::default();
    let underflow = |op: u8, at: usize| {
        ScanError::Malformed(format!("pickle stack underflow at opcode 0x{op:02x} (byte {at})"))
    };

    macro_rules! pop {
        ($op:expr, $at:expr) => {
            stack.pop().ok_or_else(|| underflow($op, $at))?
        };
    }
    macro_rules! pop_mark {
        ($op:expr, $at:expr) => {{
            let m = marks.pop().ok_or_else(|| {
                ScanError::Malformed(format!("pickle opcode 0x{:02x} without a MARK (byte {})", $op, $at))
            })?;
            if m > stack.len() {
                return Err(underflow($op, $at));
            }
            stack.drain(m..).collect::<Vec<V>>()
        }};
    }

    let push_str = |stack: &mut Vec<V>, out: &mut Scan, s: String| {
        let n = out.string_order.len();
        if !out.string_order.contains_key(&s) {
            out.string_order.insert(s.clone(), n);
        }
        stack.push(V::Str(s.into()));
    };
    let mut check_global = |out: &mut Scan, module: &str, name: &str| -> Result<(), ScanError> {
        let full = format!("{module}.{name}");
        if !allow(module, name) {
            return Err(ScanError::Refused(format!("pickle references {full}")));
        }
        if seen_globals.insert(full.clone()) {
            out.globals.push(full);
        }
        Ok(())
    };

    loop {
        let at = c.pos;
        if at >= data.len() {
            return Err(ScanError::Malformed("pickle ends without a STOP opcode".into()));
        }
        let op = c.u8()?;
        match op {
            b'.' => return Ok(out), // STOP
            0x80 => {
                c.u8()?; // PROTO
            }
            0x95 => {
                c.u64()?; // FRAME
            }
            b'(' => marks.push(stack.len()),
            b'0' => {
                pop!(op, at);
            }
            b'1' => {
                let _ = pop_mark!(op, at);
            }
            b'2' => {
                let top = stack.last().cloned().ok_or_else(|| underflow(op, at))?;
                stack.push(top);
            }
            b'F' | b'I' | b'L' => {
                c.line()?;
                stack.push(V::Other);
            }
            b'J' => {
                c.u32()?;
                stack.push(V::Other);
            }
            b'K' => {
                c.u8()?;
                stack.push(V::Other);
            }
            b'M' => {
                c.u16()?;
                stack.push(V::Other);
            }
            0x8a => {
                let n = c.u8()? as u64;
                c.sized(n)?;
                stack.push(V::Other);
            }
            0x8b => {
                let n = c.u32()?;
                c.sized(n)?;
                stack.push(V::Other);
            }
            b'G' => {
                c.u64()?;
                stack.push(V::Other);
            }
            b'N' | 0x88 | 0x89 => stack.push(V::Other),
            b']' | b'}' | b')' | 0x8f => stack.push(node_of([], at)?),
            b'S' => {
                let l = c.line()?;
                let s = text(l).trim_matches(|ch| ch == '\'' || ch == '"').to_string();
                push_str(&mut stack, &mut out, s);
            }
            b'V' => {
                let l = c.line()?;
                push_str(&mut stack, &mut out, text(l));
            }
            b'T' | b'X' => {
                let n = c.u32()?;
                let s = text(c.sized(n)?);
                push_str(&mut stack, &mut out, s);
            }
            b'U' | 0x8c => {
                let n = c.u8()? as u64;
                let s = text(c.sized(n)?);
                push_str(&mut stack, &mut out, s);
            }
            0x8d => {
                let n = c.u64()?;
                let s = text(c.sized(n)?);
                push_str(&mut stack, &mut out, s);
            }
            b'B' => {
                let n = c.u32()?;
                c.sized(n)?;
                stack.push(V::Other);
            }
            b'C' => {
                let n = c.u8()? as u64;
                c.sized(n)?;
                stack.push(V::Other);
            }
            0x8e | 0x96 => {
                let n = c.u64()?;
                c.sized(n)?;
                stack.push(V::Other);
            }
            b'a' | b'b' => {
                // APPEND pops the item; BUILD pops the state. Both leave the target.
                let item = pop!(op, at);
                let target = stack.last().ok_or_else(|| underflow(op, at))?;
                place(target, [&item], op, at)?;
            }
            b'e' | b'u' | 0x90 => {
                // APPENDS / SETITEMS / ADDITEMS: items since the mark go into the object below it.
                let items = pop_mark!(op, at);
                let target = stack.last().ok_or_else(|| underflow(op, at))?;
                place(target, &items, op, at)?;
            }
            b's' => {
                let v = pop!(op, at);
                let k = pop!(op, at);
                let target = stack.last().ok_or_else(|| underflow(op, at))?;
                place(target, [&k, &v], op, at)?;
            }
            b'l' | b't' | b'd' | 0x91 => {
                let items = pop_mark!(op, at);
                stack.push(node_of(&items, at)?);
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(underflow(op, at));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(node_of(&items, at)?);
            }
            b'c' => {
                let module = text(c.line()?);
                let name = text(c.line()?);
                check_global(&mut out, &module, &name)?;
                stack.push(V::Other);
            }
            b'i' => {
                let module = text(c.line()?);
                let name = text(c.line()?);
                check_global(&mut out, &module, &name)?;
                let args = pop_mark!(op, at);
                stack.push(node_of(&args, at)?);
            }
            0x93 => {
                let name = pop!(op, at);
                let module = pop!(op, at);
                match (module, name) {
                    (V::Str(m), V::Str(n)) => check_global(&mut out, &m, &n)?,
                    _ => {
                        return Err(ScanError::Refused(format!(
                            "pickle STACK_GLOBAL at byte {at} names a global through non-string values"
                        )));
                    }
                }
                stack.push(V::Other);
            }
            b'R' | 0x81 => {
                // REDUCE / NEWOBJ: an object holding its arguments (the callable is a global).
                let args = pop!(op, at);
                let callable = pop!(op, at);
                stack.push(node_of([&callable, &args], at)?);
            }
            0x92 => {
                let kwargs = pop!(op, at);
                let args = pop!(op, at);
                let cls = pop!(op, at);
                stack.push(node_of([&cls, &args, &kwargs], at)?);
            }
            b'o' => {
                let items = pop_mark!(op, at);
                if items.is_empty() {
                    return Err(underflow(op, at));
                }
                stack.push(node_of(&items, at)?);
            }
            b'P' => {
                c.line()?;
                stack.push(V::Other);
            }
            b'Q' => {
                let pid = pop!(op, at);
                stack.push(node_of([&pid], at)?);
            }
            0x82..=0x84 => {
                return Err(ScanError::Refused(
                    "pickle uses the copyreg extension registry (EXT opcodes)".into(),
                ));
            }
            0x97 | 0x98 => {
                return Err(ScanError::Refused("pickle uses out-of-band buffers (protocol 5)".into()));
            }
            b'g' | b'h' | b'j' => {
                let idx = match op {
                    b'g' => {
                        let l = c.line()?;
                        text(l)
                            .trim()
                            .parse::<u64>()
                            .map_err(|_| ScanError::Malformed(format!("bad GET index at byte {at}")))?
                    }
                    b'h' => c.u8()? as u64,
                    _ => c.u32()?,
                };
                let v = memo.get(&idx).cloned().ok_or_else(|| {
                    ScanError::Malformed(format!("pickle GET of unset memo slot {idx} at byte {at}"))
                })?;
                stack.push(v);
            }
            b'p' | b'q' | b'r' => {
                let idx = match op {
                    b'p' => {
                        let l = c.line()?;
                        text(l)
                            .trim()
                            .parse::<u64>()
                            .map_err(|_| ScanError::Malformed(format!("bad PUT index at byte {at}")))?
                    }
                    b'q' => c.u8()? as u64,
                    _ => c.u32()?,
                };
                let top = stack.last().cloned().ok_or_else(|| underflow(op, at))?;
                memo.insert(idx, top);
            }
            0x94 => {
                let top = stack.last().cloned().ok_or_else(|| underflow(op, at))?;
                let idx = memo.len() as u64;
                memo.insert(idx, top);
            }
            other => {
                return Err(ScanError::Malformed(format!(
                    "unknown pickle opcode 0x{other:02x} at byte {at}"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_os_system_by_global() {
        let p = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.";
        assert_eq!(scan(p).unwrap_err(), ScanError::Refused("pickle references os.system".into()));
    }

    #[test]
    fn refuses_stack_global_through_memo() {
        // "os" memoized, fetched back, then STACK_GLOBAL.
        let p = b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94h\x00h\x01\x93.";
        assert_eq!(scan(p).unwrap_err(), ScanError::Refused("pickle references os.system".into()));
    }

    #[test]
    fn accepts_ordered_dict_and_records_order() {
        let p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00bK\x01X\x01\x00\x00\x00aK\x02u.";
        let s = scan(p).unwrap();
        assert!(s.string_order["b"] < s.string_order["a"]);
        assert_eq!(s.globals, vec!["collections.OrderedDict".to_string()]);
    }

    #[test]
    fn truncated_is_malformed() {
        let p = b"\x80\x02X\x05\x00\x00\x00ab";
        assert!(matches!(scan(p), Err(ScanError::Malformed(_))));
        assert!(matches!(scan(b"\x80\x02"), Err(ScanError::Malformed(_))));
        assert!(matches!(scan(b"t."), Err(ScanError::Malformed(_))));
    }

    /// `depth` lists nested by EMPTY_LIST + APPEND (the shape of the 40 KB crash file), protocol 2.
    fn nested_lists(depth: usize) -> Vec<u8> {
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b']', depth));
        p.extend(std::iter::repeat_n(b'a', depth - 1));
        p.push(b'.');
        p
    }

    #[test]
    fn depth_is_bounded_exactly() {
        assert!(scan(&nested_lists(MAX_DEPTH as usize)).is_ok());
        let err = scan(&nested_lists(MAX_DEPTH as usize + 1)).unwrap_err();
        assert!(matches!(&err, ScanError::Refused(w) if w.contains("deeper than 256 levels")), "{err:?}");
        // The crash file of issue 20: 20,000 levels in ~40 KB.
        assert!(matches!(scan(&nested_lists(20_000)), Err(ScanError::Refused(_))));
    }

    #[test]
    fn every_nesting_opcode_counts() {
        let deep = MAX_DEPTH as usize + 1;
        // TUPLE1 around TUPLE1 ...: one byte a level, no memo.
        let mut tuples = b"\x80\x02N".to_vec();
        tuples.extend(std::iter::repeat_n(0x85, deep));
        tuples.push(b'.');
        // BINPERSID around BINPERSID ...
        let mut pids = b"\x80\x02N".to_vec();
        pids.extend(std::iter::repeat_n(b'Q', deep));
        pids.push(b'.');
        // MARK ... LIST
        let mut marks = b"(".repeat(deep);
        marks.extend(std::iter::repeat_n(b'l', deep));
        marks.push(b'.');
        // Dicts nested through SETITEM: {'k': {'k': ...}}
        let mut dicts = b"\x80\x02".to_vec();
        for _ in 0..deep {
            dicts.extend(b"}X\x01\x00\x00\x00k");
        }
        dicts.push(b'}');
        dicts.extend(std::iter::repeat_n(b's', deep));
        dicts.push(b'.');
        for (what, p) in [("tuples", tuples), ("persistent ids", pids), ("marks", marks), ("dicts", dicts)] {
            let err = scan(&p).unwrap_err();
            assert!(matches!(&err, ScanError::Refused(w) if w.contains("deeper than")), "{what}: {err:?}");
        }
    }

    #[test]
    fn nesting_through_the_memo_is_refused_not_missed() {
        // Top-down: a list memoized, placed into a parent, then filled through the memo. Its height can no
        // longer be known from its parents, so changing it after nesting is refused.
        let p = b"\x80\x02]q\x00]h\x00a0h\x00]a.";
        let err = scan(p).unwrap_err();
        assert!(matches!(&err, ScanError::Refused(w) if w.contains("after placing it")), "{err:?}");
        // A list appended to itself (a cycle).
        let err = scan(b"\x80\x02]q\x00h\x00a.").unwrap_err();
        assert!(matches!(&err, ScanError::Refused(w) if w.contains("inside itself")), "{err:?}");
        // Shared children (a memoized, complete list placed twice) are fine: a DAG, as tied weights are.
        assert!(scan(b"\x80\x02]q\x00K\x01a]h\x00ah\x00a.").is_ok());
    }
}
