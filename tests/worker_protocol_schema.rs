//! The worker protocol defined once: the Rust types of `landscaped_protocol::messages` are the source, and
//! the Python worker's `landscaped_worker/protocol.py` is generated from them.
//!
//! - Enumerations (operations, replies, state sources, start vectors, error kinds, join messages, losses)
//!   are listed by serde itself: the derived `Deserialize` names every variant when it meets an unknown
//!   one, and a struct's derived `Deserialize` hands its field names to `deserialize_struct`; the tracer
//!   below catches both. The fields of each operation and reply come from serializing one example of
//!   each (the wire form itself, in wire order), and the examples are checked to cover serde's list.
//! - `python/landscaped_worker/protocol.py` must equal what this file renders (rewrite it with
//!   `LANDSCAPED_REGENERATE=1 cargo test --test worker_protocol_schema`).
//! - tests/python/worker_protocol_test.py then checks the Python package against it: the version, the
//!   error kinds, the operation handlers, every field a handler reads and every field of every reply it
//!   sends (a real session on a tiny model).
//! - docs/worker-protocol.md names every operation, reply, field and error kind, and the version.

use landscaped_protocol::loss::Loss;
use landscaped_protocol::messages as protocol;
use landscaped_protocol::messages::{
    BindRules, ErrorKind, GridPoint, Join, JoinMessage, LayoutSlot, MAX_FRAME_BYTES, ModelInfo, Op,
    PROTOCOL_VERSION, Reply, SlotInfo, StateSource, VectorInit, WireContract, capability,
};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

mod support;
use support::*;

// ---- what serde's derived Deserialize says about a type -------------------------------------------------

/// The error a traced deserialization ends with: the names serde's derive handed over.
#[derive(Debug)]
enum Traced {
    Variants(&'static [&'static str]),
    Fields(&'static [&'static str]),
    Other(String),
}

impl fmt::Display for Traced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Traced {}

impl de::Error for Traced {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Traced::Other(msg.to_string())
    }
    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        Traced::Variants(expected)
    }
}

/// A tag no variant has.
const NO_SUCH: &str = "\u{0}no such variant";

fn traced<T: DeserializeOwned>(r: Result<T, Traced>, what: &str) -> Traced {
    match r {
        Ok(_) => panic!("{what}: deserialized a value from nothing"),
        Err(Traced::Other(m)) => panic!("{what}: serde said {m:?}, not its names"),
        Err(t) => t,
    }
}

/// Every variant of an internally tagged enum (`#[serde(tag = ...)]`), in declaration order.
fn tagged_variants<T: DeserializeOwned>(tag: &'static str) -> Vec<&'static str> {
    let map = de::value::MapDeserializer::<_, Traced>::new(std::iter::once((tag, NO_SUCH)));
    match traced(T::deserialize(map), tag) {
        Traced::Variants(v) => v.to_vec(),
        t => panic!("{tag}: {t:?}"),
    }
}

/// Every variant of an externally tagged enum (unit variants are plain strings on the wire).
fn external_variants<T: DeserializeOwned>() -> Vec<&'static str> {
    let d: de::value::StrDeserializer<'_, Traced> = NO_SUCH.into_deserializer();
    match traced(T::deserialize(d), std::any::type_name::<T>()) {
        Traced::Variants(v) => v.to_vec(),
        t => panic!("{}: {t:?}", std::any::type_name::<T>()),
    }
}

/// A deserializer that only records the field list a struct's derived `Deserialize` asks for.
struct FieldsOf;

impl<'de> de::Deserializer<'de> for FieldsOf {
    type Error = Traced;
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Traced> {
        Err(Traced::Other("not a struct".into()))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Traced> {
        Err(Traced::Fields(fields))
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// A struct's fields, in declaration order.
fn struct_fields<T: DeserializeOwned>() -> Vec<&'static str> {
    match traced(T::deserialize(FieldsOf), std::any::type_name::<T>()) {
        Traced::Fields(f) => f.to_vec(),
        t => panic!("{}: {t:?}", std::any::type_name::<T>()),
    }
}

// ---- one example of every message, every optional field present -----------------------------------------

fn contract() -> WireContract {
    WireContract {
        model: Some("/m.pt".into()),
        eval_data: Some("/e.safetensors".into()),
        factory: Some("f:g".into()),
        loss: Some("mse".into()),
        batch_size: 8,
        subsample: Some(16),
        device: "cpu".into(),
        threads: Some(2),
        checkpoint: Some("/c.pt".into()),
        precision: Some("bf16".into()),
    }
}

fn op_examples() -> Vec<Op> {
    let path = PathBuf::from("/x.safetensors");
    vec![
        Op::Hello { protocol: PROTOCOL_VERSION, client: "t".into() },
        Op::LoadModel { contract: contract() },
        Op::LoadState { source: StateSource::Safetensors { path: path.clone() }, bind: BindRules::default() },
        Op::LoadState { source: StateSource::Checkpoint { path }, bind: BindRules::default() },
        Op::ReadState { state: 1 },
        Op::SetState { state: 1 },
        Op::Evaluate,
        Op::RandomDirections {
            about: 1,
            seed: 2,
            norm: "filter".into(),
            ignore: "biasbn".into(),
            count: 2,
            orthogonalize: true,
        },
        Op::Difference { from: 1, to: 2 },
        Op::SetPlane { centre: 1, dx: 2, dy: Some(3) },
        Op::SetPoint { a: 0.5, b: -1.0 },
        Op::EvaluatePoints { points: vec![GridPoint { index: 0, a: 0.0, b: 1.0 }] },
        Op::HessianOpen { subset: "all".into() },
        Op::HessianClose,
        Op::NewVector { init: VectorInit::Zeros },
        Op::NewVector { init: VectorInit::Gaussian { seed: 1 } },
        Op::NewVector { init: VectorInit::Rademacher { seed: 1 } },
        Op::NewVector { init: VectorInit::Copy { of: 1 } },
        Op::NewVector { init: VectorInit::Values { data: protocol::f64_bytes(&[1.0]) } },
        Op::NewVector {
            init: VectorInit::Tensors { path: "/v.safetensors".into(), bind: BindRules::default() },
        },
        Op::ReadVector { v: 1 },
        Op::Dots { x: 1, ys: vec![2] },
        Op::Combine { y: 1, scale: 1.0, terms: vec![(2.0, 3)] },
        Op::Multiply { y: 1, x: 2 },
        Op::Free { handles: vec![1] },
        Op::Hvp { v: 1, out: 2 },
        Op::Loss { at: Some(1) },
        Op::Gradient { at: Some(1), out: 2 },
        Op::Shutdown,
    ]
}

fn reply_examples() -> Vec<Reply> {
    vec![
        Reply::Hello {
            protocol: PROTOCOL_VERSION,
            backend: "python".into(),
            backend_version: "v".into(),
            devices: vec!["cpu".into()],
            capabilities: vec![capability::HVP.into()],
            pid: 1,
        },
        Reply::Model {
            info: ModelInfo {
                slots: vec![SlotInfo { name: "w".into(), shape: vec![2], parameter: true }],
                ignored_buffers: vec!["n".into()],
                samples: 4,
                batches: 1,
                loss: "mse".into(),
                has_accuracy: false,
                device: "cpu".into(),
                source: "s".into(),
            },
        },
        Reply::Ok,
        Reply::Handle { handle: 1 },
        Reply::Evaluation { loss: 1.0, accuracy: Some(0.5), samples: 4 },
        Reply::Directions { handles: vec![1, 2], cosine: Some(0.0) },
        Reply::Point { index: 0, loss: 1.0, accuracy: Some(0.5) },
        Reply::Done,
        Reply::Hessian {
            dim: 2,
            layout: vec![LayoutSlot { name: "w".into(), shape: vec![2], offset: 0 }],
            centre: 1,
        },
        Reply::Number { value: 1.0 },
        Reply::Numbers { values: vec![1.0] },
        Reply::Values { data: protocol::f64_bytes(&[1.0]) },
        Reply::Error { kind: ErrorKind::Internal, message: "m".into() },
    ]
}

fn join_examples() -> Vec<JoinMessage> {
    vec![
        JoinMessage::Join(Join {
            protocol: PROTOCOL_VERSION,
            token: "t".into(),
            host: "h".into(),
            pid: 1,
            rank: Some(0),
            local_rank: Some(0),
            world_size: Some(1),
            contract: Some("c".into()),
        }),
        JoinMessage::Joined { worker: 0 },
        JoinMessage::Refused { reason: "r".into(), retry_after_ms: Some(1) },
    ]
}

// ---- the description ----------------------------------------------------------------------------------------

/// A record's fields in wire order, each with the structure it holds (a struct or tagged enum's name), if any.
type Fields = Vec<(String, Option<String>)>;

/// The protocol as the types above say it is.
struct Description {
    /// Structs by name: their fields.
    structs: BTreeMap<&'static str, Vec<&'static str>>,
    /// Tagged enums: name, tag, variants.
    tagged: Vec<(&'static str, &'static str, Vec<&'static str>)>,
    /// Variant fields seen in the examples, per (enum name, variant).
    records: BTreeMap<(String, String), Fields>,
    /// Struct fields with their nested structures, from the examples.
    struct_records: BTreeMap<String, Fields>,
}

fn wire(v: &impl Serialize) -> rmpv::Value {
    let b = protocol::encode(v).unwrap();
    rmpv::decode::read_value(&mut &b[..]).unwrap()
}

fn map_entries(v: &rmpv::Value) -> Vec<(String, rmpv::Value)> {
    v.as_map()
        .unwrap_or_else(|| panic!("not a map: {v}"))
        .iter()
        .map(|(k, v)| (k.as_str().expect("string keys").to_string(), v.clone()))
        .collect()
}

impl Description {
    fn new() -> Description {
        let mut structs = BTreeMap::new();
        structs.insert("WireContract", struct_fields::<WireContract>());
        structs.insert("BindRules", struct_fields::<BindRules>());
        structs.insert("GridPoint", struct_fields::<GridPoint>());
        structs.insert("ModelInfo", struct_fields::<ModelInfo>());
        structs.insert("SlotInfo", struct_fields::<SlotInfo>());
        structs.insert("LayoutSlot", struct_fields::<LayoutSlot>());
        structs.insert("Join", struct_fields::<Join>());
        let tagged = vec![
            ("Op", "op", tagged_variants::<Op>("op")),
            ("Reply", "reply", tagged_variants::<Reply>("reply")),
            ("StateSource", "kind", tagged_variants::<StateSource>("kind")),
            ("VectorInit", "kind", tagged_variants::<VectorInit>("kind")),
        ];
        let mut d =
            Description { structs, tagged, records: BTreeMap::new(), struct_records: BTreeMap::new() };
        for op in op_examples() {
            d.record("Op", &wire(&op));
        }
        for r in reply_examples() {
            d.record("Reply", &wire(&r));
        }
        for j in join_examples() {
            let v = wire(&j);
            let (name, body) = map_entries(&v).into_iter().next().unwrap();
            if name == "join" {
                d.nested(&body);
            }
            let fields = d.fields(&body);
            d.records.insert(("JoinMessage".into(), name), fields);
        }
        d
    }

    /// Records one tagged message (and, through `fields`, everything nested in it).
    fn record(&mut self, enum_name: &str, v: &rmpv::Value) {
        let tag = self.tagged.iter().find(|t| t.0 == enum_name).unwrap().1;
        let mut entries = map_entries(v);
        let at = entries.iter().position(|(k, _)| k == tag).unwrap_or_else(|| panic!("{v}: no {tag}"));
        let (_, name) = entries.remove(at);
        let name = name.as_str().unwrap().to_string();
        let obj = rmpv::Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect());
        let fields = self.fields(&obj);
        self.records.insert((enum_name.to_string(), name), fields);
    }

    /// A map's fields, each with the structure it (or its list's first item) holds.
    fn fields(&mut self, v: &rmpv::Value) -> Fields {
        map_entries(v).into_iter().map(|(k, x)| (k, self.nested(&x))).collect()
    }

    fn nested(&mut self, x: &rmpv::Value) -> Option<String> {
        let x = match x {
            rmpv::Value::Array(items) => items.first()?,
            x => x,
        };
        let entries = map_entries_opt(x)?;
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        // A tagged enum: the variant named by its tag.
        for (name, tag, variants) in self.tagged.clone() {
            let t = entries.iter().find(|(k, _)| k == tag).and_then(|(_, v)| v.as_str());
            if t.is_some_and(|t| variants.contains(&t)) {
                self.record(name, x);
                return Some(name.to_string());
            }
        }
        let (name, _) =
            self.structs.iter().find(|(_, f)| **f == keys).unwrap_or_else(|| {
                panic!("a structure with fields {keys:?} is not traced: add it to `structs`")
            });
        let name = name.to_string();
        let fields = self.fields(x);
        self.struct_records.insert(name.clone(), fields);
        Some(name)
    }

    fn variants(&self, enum_name: &str) -> &[&'static str] {
        &self.tagged.iter().find(|t| t.0 == enum_name).unwrap().2
    }

    fn record_of(&self, enum_name: &str, variant: &str) -> &Fields {
        self.records
            .get(&(enum_name.to_string(), variant.to_string()))
            .unwrap_or_else(|| panic!("{enum_name}::{variant} has no example"))
    }
}

fn map_entries_opt(v: &rmpv::Value) -> Option<Vec<(String, rmpv::Value)>> {
    v.as_map()?;
    Some(map_entries(v))
}

// ---- the Python module --------------------------------------------------------------------------------------

/// ruff format's line length (ruff.toml).
const LINE: usize = 120;

fn py_str(s: &str) -> String {
    format!("{s:?}")
}

/// `{"a": None, "b": "WireContract"}`, on one line when it fits after `indent` + `prefix`, else one field a line.
fn py_fields(fields: &Fields, indent: usize, prefix: &str) -> String {
    let item = |(k, t): &(String, Option<String>)| {
        format!("{}: {}", py_str(k), t.as_deref().map(py_str).unwrap_or_else(|| "None".into()))
    };
    let one = format!("{{{}}}", fields.iter().map(item).collect::<Vec<_>>().join(", "));
    if indent + prefix.len() + one.len() + ",".len() <= LINE {
        return one;
    }
    let pad = " ".repeat(indent + 4);
    let mut s = "{\n".to_string();
    for f in fields {
        s += &format!("{pad}{},\n", item(f));
    }
    s + &" ".repeat(indent) + "}"
}

/// A tuple, one item a line (the trailing comma keeps ruff format from joining them).
fn py_tuple(items: &[String]) -> String {
    format!("(\n{})", items.iter().map(|i| format!("    {i},\n")).collect::<String>())
}

fn py_table(out: &mut String, var: &str, comment: &str, rows: Vec<(String, String)>) {
    *out += &format!("\n# {comment}\n{var} = {{\n");
    for (k, v) in rows {
        *out += &format!("    {}: {v},\n", py_str(&k));
    }
    *out += "}\n";
}

fn render_python(d: &Description) -> String {
    let mut out = String::from(
        "\"\"\"The worker protocol as landscaped's Rust types define it (crates/protocol/src/messages.rs, crates/protocol/src/loss.rs).\n\
         \n\
         GENERATED from those types by tests/worker_protocol_schema.rs, which fails when this file differs from\n\
         them: do not edit it; rewrite it with `LANDSCAPED_REGENERATE=1 cargo test --test worker_protocol_schema`.\n\
         Each message's fields are listed in wire order, with the structure a field holds (a name in STRUCTS or\n\
         TAGGED) or None.\n\
         \"\"\"\n\n",
    );
    out += &format!("PROTOCOL_VERSION = {PROTOCOL_VERSION}\nMAX_FRAME_BYTES = {MAX_FRAME_BYTES}\n");
    let tagged_rows = |enum_name: &str| -> Vec<(String, String)> {
        d.variants(enum_name)
            .iter()
            .map(|v| (v.to_string(), py_fields(d.record_of(enum_name, v), 4, &format!("{}: ", py_str(v)))))
            .collect()
    };
    py_table(
        &mut out,
        "OPS",
        "Requests: {\"id\": n, \"body\": {\"op\": name, ...fields}}.",
        tagged_rows("Op"),
    );
    py_table(
        &mut out,
        "REPLIES",
        "Replies: {\"id\": n, \"body\": {\"reply\": name, ...fields}}.",
        tagged_rows("Reply"),
    );
    py_table(
        &mut out,
        "STATE_SOURCES",
        "load_state's source: {\"kind\": name, ...fields}.",
        tagged_rows("StateSource"),
    );
    py_table(
        &mut out,
        "VECTOR_INITS",
        "new_vector's init: {\"kind\": name, ...fields}.",
        tagged_rows("VectorInit"),
    );
    let tags = d.tagged[2..].iter().map(|(n, t, _)| (n.to_string(), py_str(t))).collect();
    py_table(&mut out, "TAGGED", "Tagged structures inside messages: their tag field.", tags);
    let structs = d
        .structs
        .keys()
        .map(|k| {
            let f = d.struct_records.get(*k).unwrap_or_else(|| panic!("{k} appears in no example"));
            (k.to_string(), py_fields(f, 4, &format!("{}: ", py_str(k))))
        })
        .collect();
    py_table(&mut out, "STRUCTS", "Structures inside messages, by their Rust name.", structs);
    let joins = external_variants::<JoinMessage>()
        .iter()
        .map(|v| {
            let f = d.records.get(&("JoinMessage".to_string(), v.to_string())).expect("join example");
            (v.to_string(), py_fields(f, 4, &format!("{}: ", py_str(v))))
        })
        .collect();
    py_table(&mut out, "JOIN_MESSAGES", "The join exchange over TCP: {name: {...fields}}.", joins);
    let kinds: Vec<&str> = external_variants::<ErrorKind>();
    out += "\n# Error kinds (an error reply's `kind`).\n";
    out += &format!("ERROR_KINDS = {}\n", py_tuple(&kinds.iter().map(|k| py_str(k)).collect::<Vec<_>>()));
    for k in &kinds {
        out += &format!("{} = {}\n", k.to_ascii_uppercase(), py_str(k));
    }
    let caps = [capability::READ_CHECKPOINTS, capability::HVP, capability::TORCH_RNG, capability::CUDA];
    out += "\n# Capabilities a worker may announce in its hello reply.\n";
    out += &format!("CAPABILITIES = {}\n", py_tuple(&caps.iter().map(|k| py_str(k)).collect::<Vec<_>>()));
    for c in caps {
        out += &format!("CAP_{} = {}\n", c.to_ascii_uppercase(), py_str(c));
    }
    let losses = external_variants::<Loss>()
        .iter()
        .map(|n| {
            let l: Loss = serde_json::from_value(serde_json::Value::String(n.to_string())).unwrap();
            assert_eq!(l.name(), *n, "Loss::name disagrees with serde");
            (n.to_string(), if l.has_accuracy() { "True" } else { "False" }.to_string())
        })
        .collect();
    py_table(
        &mut out,
        "LOSSES",
        "The TorchScript contract's losses (crates/protocol/src/loss.rs): whether each reports an accuracy.",
        losses,
    );
    out
}

const GENERATED: &str = "python/landscaped_worker/protocol.py";

#[test]
fn the_examples_cover_every_variant_serde_knows() {
    let d = Description::new();
    let ops: Vec<&str> = op_examples().iter().map(Op::name).collect();
    let mut seen = ops.clone();
    seen.dedup();
    assert_eq!(seen, d.variants("Op"), "op_examples must hold every Op, in declaration order");
    let replies: Vec<String> =
        reply_examples().iter().map(|r| wire(r)["reply"].as_str().unwrap().to_string()).collect();
    assert_eq!(replies, d.variants("Reply"), "reply_examples must hold every Reply, in declaration order");
    for e in ["StateSource", "VectorInit"] {
        for v in d.variants(e) {
            d.record_of(e, v);
        }
    }
    let joins: Vec<String> = join_examples().iter().map(|j| map_entries(&wire(j))[0].0.clone()).collect();
    assert_eq!(joins, external_variants::<JoinMessage>());
    // Every struct field present in its example (no optional field left out by skip_serializing_if).
    for (name, fields) in &d.structs {
        let seen: Vec<&str> = d.struct_records[*name].iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(&seen, fields, "{name}'s example lacks fields");
    }
    // Op::name and ErrorKind::as_str agree with serde (they are what the caller prints).
    let kinds = external_variants::<ErrorKind>();
    for k in &kinds {
        let e: ErrorKind = serde_json::from_value(serde_json::Value::String(k.to_string())).unwrap();
        assert_eq!(e.as_str(), *k);
    }
    // The tracer itself: it sees a field and a variant that are there.
    assert!(struct_fields::<WireContract>().contains(&"precision"));
    assert!(d.variants("Op").contains(&"hvp"));
    assert!(kinds.contains(&"bad_request"));
}

#[test]
fn the_python_module_is_generated_from_the_rust_types() {
    let text = render_python(&Description::new());
    let path = root().join(GENERATED);
    if std::env::var_os("LANDSCAPED_REGENERATE").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != text {
        let line = committed.lines().zip(text.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "{GENERATED} differs from the Rust protocol types (first at line {}: {:?} vs {:?}); rewrite it with \
             `LANDSCAPED_REGENERATE=1 cargo test --test worker_protocol_schema` and adapt the Python worker",
            line + 1,
            committed.lines().nth(line),
            text.lines().nth(line)
        );
    }
}

#[test]
fn the_python_package_speaks_the_generated_protocol() {
    // Versions, error kinds, one handler per operation, every field a handler reads and every field of
    // every reply it sends, on a real session (tests/python/worker_protocol_test.py).
    let out = std::process::Command::new(venv_python())
        .args(["-m", "unittest", "-q"])
        .arg(script("worker_protocol_test.py"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_protocol_document_names_everything_the_types_define() {
    let d = Description::new();
    let doc = std::fs::read_to_string(root().join("docs/worker-protocol.md")).unwrap();
    assert!(
        doc.starts_with(&format!("# The worker protocol, version {PROTOCOL_VERSION}\n")),
        "docs/worker-protocol.md's title names another version"
    );
    let words: std::collections::HashSet<&str> =
        doc.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).collect();
    let mut missing = Vec::new();
    for op in d.variants("Op") {
        if !doc.contains(&format!("\n| `{op}` |")) {
            missing.push(format!("the operations table has no row for `{op}`"));
        }
    }
    for ((e, v), fields) in &d.records {
        for name in std::iter::once(v).chain(fields.iter().map(|(k, _)| k)) {
            if !words.contains(name.as_str()) {
                missing.push(format!("{e}::{v}: `{name}`"));
            }
        }
    }
    for (s, fields) in &d.structs {
        for f in fields {
            if !words.contains(f) {
                missing.push(format!("{s}.{f}"));
            }
        }
    }
    for k in external_variants::<ErrorKind>() {
        if !doc.contains(&format!("`{k}`")) {
            missing.push(format!("error kind `{k}`"));
        }
    }
    assert!(missing.is_empty(), "docs/worker-protocol.md lacks: {}", missing.join("; "));
}

/// The derived names are what the wire carries (a decode of the description's own example round-trips).
#[test]
fn traced_names_are_the_wire_names() {
    let b = protocol::encode(&protocol::Request { id: 1, body: Op::Dots { x: 1, ys: vec![2] } }).unwrap();
    let v: rmpv::Value = rmpv::decode::read_value(&mut &b[..]).unwrap();
    assert_eq!(v["body"]["op"].as_str(), Some("dots"));
    assert!(Description::new().record_of("Op", "dots").iter().map(|(k, _)| k.as_str()).eq(["x", "ys"]));
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Renamed {
        #[serde(rename = "wire_name")]
        rust_name: u8,
    }
    assert_eq!(struct_fields::<Renamed>(), ["wire_name"]);
}
