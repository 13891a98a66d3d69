//! Key layout. Every key starts with the run name and a 0 byte (run names may not contain NUL), then
//! big-endian integers, so a prefix scan over a run yields its steps in ascending order.

/// `run \0`
pub fn run(run: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(run.len() + 1);
    k.extend_from_slice(run.as_bytes());
    k.push(0);
    k
}

/// `run \0 step(u64 BE)`
pub(crate) fn run_step(run_name: &str, step: u64) -> Vec<u8> {
    let mut k = run(run_name);
    k.extend_from_slice(&step.to_be_bytes());
    k
}

/// `run \0 step(u64 BE) name`
pub(crate) fn run_step_name(run_name: &str, step: u64, name: &str) -> Vec<u8> {
    let mut k = run_step(run_name, step);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The step encoded in a key made by [`run_step`] or [`run_step_name`] for `run_name`.
pub(crate) fn step_of(run_name: &str, key: &[u8]) -> Option<u64> {
    let at = run_name.len() + 1;
    let bytes: [u8; 8] = key.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The name suffix of a key made by [`run_step_name`].
pub fn name_of<'a>(run_name: &str, key: &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(key.get(run_name.len() + 9..)?).ok()
}

/// A run name that keys can hold: non-empty, no NUL, no control characters, no `/` (it names the run's
/// folder in the trajectory archive), not `.` or `..`, at most 200 bytes.
pub(crate) fn validate_run_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("run name is empty".into());
    }
    if name.len() > 200 {
        return Err(format!("run name {name:?} is longer than 200 bytes"));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(format!("run name {name:?} contains a control character"));
    }
    if name.contains('/') {
        return Err(format!("run name {name:?} contains `/`"));
    }
    if name == "." || name == ".." {
        return Err(format!("run name {name:?} is not a name"));
    }
    Ok(())
}
