//! Completeness from both entry points of the formats crate: `check_complete` (the check alone) and
//! `Checkpoint::open_complete` (the daemon's one pass: checked and opened from one parse of each
//! header) must reach the same verdict; and how many times that pass parses each file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use landscaped_formats::{Checkpoint, CheckpointError, check_complete, parse_log};

/// `check_complete(path)`, after asserting that `Checkpoint::open_complete` agrees: the same error
/// (kind and line) where the check fails; where it passes, opened, or refused for a reason that is
/// not "still being written".
pub fn completeness(path: &Path) -> Result<(), CheckpointError> {
    let checked = check_complete(path);
    let opened = Checkpoint::open_complete(path);
    match (&checked, &opened) {
        (Err(c), Err(o)) => assert_eq!(
            (c.kind(), c.to_string()),
            (o.kind(), o.to_string()),
            "{}: open_complete's verdict differs from check_complete's",
            path.display()
        ),
        (Err(c), Ok(_)) => panic!("{}: check_complete says {c}, open_complete opened it", path.display()),
        (Ok(()), Err(o)) => assert!(
            !matches!(o, CheckpointError::Incomplete { .. }),
            "{}: complete by check_complete, incomplete by open_complete: {o}",
            path.display()
        ),
        (Ok(()), Ok(_)) => {}
    }
    checked
}

/// A header of a file: what was parsed (`"safetensors header"`, `"torch pickle"`, ...) and where.
pub type Header = (&'static str, PathBuf);

/// Header parses per file and kind: checked then opened (`check_complete` + `Checkpoint::open`, the daemon's
/// two passes before `open_complete`), and in one pass (`Checkpoint::open_complete`). Both must
/// succeed.
pub fn parses_per_file(path: &Path) -> (BTreeMap<Header, usize>, BTreeMap<Header, usize>) {
    let tally = |parses: Vec<parse_log::Parse>| {
        let mut m = BTreeMap::new();
        for parse in parses {
            *m.entry(parse).or_insert(0) += 1;
        }
        m
    };
    let (two, before) = parse_log::during(|| check_complete(path).and_then(|()| Checkpoint::open(path)));
    two.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (one, after) = parse_log::during(|| Checkpoint::open_complete(path));
    one.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (tally(before), tally(after))
}

/// Asserts that the one pass parses every header the check and the opening parsed, each exactly once;
/// returns (most parses of one header checked then opened, headers parsed), for the figures.
pub fn assert_parsed_once(path: &Path) -> (usize, usize) {
    let (before, after) = parses_per_file(path);
    for ((kind, file), n) in &after {
        assert_eq!(*n, 1, "{}: {kind} of {} parsed {n} times in one pass", path.display(), file.display());
    }
    for (kind, file) in before.keys() {
        assert!(
            after.contains_key(&(*kind, file.clone())),
            "{}: {kind} of {} no longer looked at",
            path.display(),
            file.display()
        );
    }
    (before.values().copied().max().unwrap_or(0), after.len())
}

/// The largest difference between the stability job's stored update (`ours`) and the step the training
/// library's own optimizer took (`theirs`, θ − θ_next by parameter name), over the latter's largest.
pub fn update_error(ours: &Path, theirs: &Path) -> f64 {
    let a = landscaped_formats::safetensors_file::load_float_tensors(ours).unwrap();
    let b = landscaped_formats::safetensors_file::load_float_tensors(theirs).unwrap();
    assert_eq!(a.len(), b.len(), "tensors: {a:?} vs {b:?}");
    let (mut diff, mut scale) = (0f64, 0f64);
    for (name, shape, want) in &b {
        let (_, s, got) =
            a.iter().find(|t| &t.0 == name).unwrap_or_else(|| panic!("no {name} in the update"));
        assert_eq!(s, shape, "{name}");
        for (x, y) in got.iter().zip(want) {
            diff = diff.max(f64::from(x - y).abs());
            scale = scale.max(f64::from(*y).abs());
        }
    }
    diff / scale
}
