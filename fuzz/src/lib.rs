//! The functions the fuzz targets call, over landscaped's checkpoint readers (the `landscaped-formats`
//! crate: no libtorch).

use landscaped_formats as checkpoint;

/// The pickle scanner on its own (it is private to `checkpoint`; the file needs nothing else).
#[path = "../../crates/formats/src/pickle_scan.rs"]
#[allow(dead_code)]
mod pickle_scan;

/// Scan arbitrary bytes as a pickle (`data.pkl`): refused or malformed is fine; a panic, a hang or
/// unbounded memory is a bug. What it accepts must name only allowed globals.
pub fn scan_pickle(data: &[u8]) {
    if let Ok(scan) = pickle_scan::scan(data) {
        for g in &scan.globals {
            let (module, name) = g.rsplit_once('.').unwrap_or(("", g));
            assert!(pickle_scan::allowed(module, name), "accepted a pickle naming {g}");
        }
    }
}

use std::io::Write;
use std::path::PathBuf;

/// Write `data` to a per-process temp file named `name`, then open it as a checkpoint, read every
/// tensor (floats and raw), and run the completeness check. Errors are fine; panics are bugs.
pub fn exercise(name: &str, data: &[u8]) {
    let dir = std::env::temp_dir().join(format!("landscaped-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path: PathBuf = dir.join(name);
    {
        let Ok(mut f) = std::fs::File::create(&path) else { return };
        if f.write_all(data).is_err() {
            return;
        }
    }
    let _ = checkpoint::check_complete(&path);
    let _ = checkpoint::Checkpoint::open_complete(&path);
    if let Ok(ck) = checkpoint::Checkpoint::open(&path) {
        for i in 0..ck.tensors.len() {
            let _ = ck.read_raw(i);
            if let Ok(v) = ck.read(i) {
                assert_eq!(v.len(), ck.tensors[i].numel());
            }
        }
        let _ = ck.files();
    }
}

/// The streaming path: arbitrary bytes as a `.safetensors` (first byte even) or torch zip (odd)
/// checkpoint; every float tensor read in small chunks (`read_chunks`, as ingest does) must give
/// exactly the values of the whole read, in order, with no gap or overlap. Errors are fine (the same
/// for both paths is not required: the chunked path may refuse earlier); a disagreement is a bug.
pub fn exercise_chunked(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let name = if sel % 2 == 0 { "chunked.safetensors" } else { "chunked.pt" };
    let chunk_bytes = 4 + (sel as usize % 61) * 4; // odd sizes: chunks that split elements' runs
    let dir = std::env::temp_dir().join(format!("landscaped-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path: PathBuf = dir.join(name);
    {
        let Ok(mut f) = std::fs::File::create(&path) else { return };
        if f.write_all(rest).is_err() {
            return;
        }
    }
    let Ok(ck) = checkpoint::Checkpoint::open(&path) else { return };
    assert_streams_like_whole(&ck, chunk_bytes);
}

/// Every float tensor of `ck` read in chunks of `chunk_bytes` (`read_chunks`, as ingest does) gives
/// exactly the values of the whole read, in order, with no gap or overlap. A read that fails is fine
/// (the chunked path may refuse earlier than the whole one); a disagreement is a bug.
fn assert_streams_like_whole(ck: &checkpoint::Checkpoint, chunk_bytes: usize) {
    let floats: Vec<usize> = ck.float_tensors().map(|(i, _)| i).collect();
    for i in floats {
        let mut got: Vec<f64> = Vec::new();
        let streamed = ck.read_chunks::<checkpoint::CheckpointError>(i, chunk_bytes, |c| {
            assert_eq!(c.index, i, "a chunk of another tensor");
            assert_eq!(c.start, got.len(), "chunks out of order or overlapping");
            got.extend((0..c.values.len()).map(|k| c.values.get(k).unwrap_or(f64::NAN)));
            Ok(())
        });
        if streamed.is_err() {
            continue;
        }
        assert_eq!(got.len(), ck.tensors[i].numel(), "chunks don't cover the tensor");
        if let Ok(whole) = ck.read(i) {
            let whole: Vec<f64> = match &whole {
                checkpoint::Values::F32(v) => v.iter().map(|x| f64::from(*x)).collect(),
                checkpoint::Values::F64(v) => v.clone(),
            };
            for (k, (a, b)) in got.iter().zip(&whole).enumerate() {
                assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "element {k}: {a} vs {b}");
            }
        }
    }
}

/// A DCP folder from arbitrary bytes: byte 0 picks the chunk size, bytes 1..5 (LE u32) the length m
/// of `.metadata`, the next m bytes are `.metadata` and the rest `__0_0.distcp`. The folder is checked,
/// opened, and every float tensor streamed in small chunks (ranges gathered from the chunks that hold
/// them) must give exactly the values of the whole read. Errors are fine; panics and disagreements
/// are bugs.
pub fn exercise_dcp(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let sel = data[0];
    let m = u32::from_le_bytes([data[1], data[2], data[3], data[4]]) as usize;
    let rest = &data[5..];
    let (meta, distcp) = rest.split_at(m.min(rest.len()));
    let dir = std::env::temp_dir().join(format!("landscaped-fuzz-{}", std::process::id())).join("dcp");
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    for (name, bytes) in [(".metadata", meta), ("__0_0.distcp", distcp)] {
        let Ok(mut f) = std::fs::File::create(dir.join(name)) else { return };
        if f.write_all(bytes).is_err() {
            return;
        }
    }
    let _ = checkpoint::check_complete(&dir);
    let _ = checkpoint::Checkpoint::open_complete(&dir);
    let Ok(ck) = checkpoint::Checkpoint::open(&dir) else { return };
    assert_streams_like_whole(&ck, 4 + (sel as usize % 29) * 4);
}

/// A pickle generated from fuzzer bytes, built to nest: each pair (fragment, count) repeats one of the
/// opcodes that open, fill or wrap containers up to 64 × 255 times, so a few bytes reach depths in the
/// thousands (lists, dicts, tuples, marks, persistent ids, objects, memo shares and cycles). It ends in
/// a dict, as a state dict does, then STOP.
pub fn nesting_pickle(data: &[u8]) -> Vec<u8> {
    const FRAGMENTS: [&[u8]; 22] = [
        b"]",
        b"}",
        b")",
        b"(",
        b"l",
        b"t",
        b"d",
        b"a",
        b"s",
        b"e",
        b"u",
        b"\x85",
        b"\x86",
        b"\x87",
        b"Q",
        b"N",
        b"X\x01\x00\x00\x00k",
        b"q\x00",
        b"h\x00",
        b"ccollections\nOrderedDict\n)R",
        b"b",
        b"2",
    ];
    let mut p = b"\x80\x02".to_vec();
    for pair in data.chunks(2) {
        let frag = FRAGMENTS[pair[0] as usize % FRAGMENTS.len()];
        let n = 1 + pair.get(1).map_or(0, |&c| c as usize) * 64;
        for _ in 0..n {
            p.extend_from_slice(frag);
        }
    }
    p.extend_from_slice(b"}.");
    p
}

/// [`nesting_pickle`] as the `data.pkl` of a torch.save zip and as a DCP `.metadata`, each opened as a
/// checkpoint (scan, value tree, tensor locator, `pytorch-reader`) on a thread with a 256 KiB stack, an
/// eighth of the 2 MiB the daemon's threads have: a reader whose recursion follows the input's depth
/// overflows it and aborts, which libFuzzer reports as a crash. Errors (refusals) are fine.
pub fn exercise_nesting(data: &[u8]) {
    let pickle = nesting_pickle(data);
    let run = move || {
        let dir = std::env::temp_dir().join(format!("landscaped-fuzz-{}", std::process::id())).join("nest");
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::create_dir_all(dir.join("dcp")).is_err() {
            return;
        }
        let pt = dir.join("nest.pt");
        let zipped = (|| -> zip::result::ZipResult<()> {
            let mut z = zip::ZipWriter::new(std::fs::File::create(&pt)?);
            let opt =
                zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
            z.start_file("archive/data.pkl", opt)?;
            z.write_all(&pickle)?;
            z.start_file("archive/version", opt)?;
            z.write_all(b"3\n")?;
            z.finish()?;
            Ok(())
        })();
        if zipped.is_ok() {
            let _ = checkpoint::check_complete(&pt);
            let _ = checkpoint::Checkpoint::open(&pt);
        }
        if std::fs::write(dir.join("dcp/.metadata"), &pickle).is_ok()
            && std::fs::write(dir.join("dcp/__0_0.distcp"), b"").is_ok()
        {
            let _ = checkpoint::check_complete(&dir.join("dcp"));
            let _ = checkpoint::Checkpoint::open_complete(&dir.join("dcp"));
            let _ = checkpoint::Checkpoint::open(&dir.join("dcp"));
        }
    };
    let t = std::thread::Builder::new().stack_size(256 * 1024).spawn(run).expect("spawn a reader thread");
    if let Err(panic) = t.join() {
        std::panic::resume_unwind(panic);
    }
}
