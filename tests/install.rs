//! The installed layout works without the checkout: `make install-files` (what `make install` runs after
//! the release build) puts `landscaped`, `landscaped-worker` and the Python worker package under a
//! temporary prefix; then, in a private mount namespace where the checkout is hidden behind an empty
//! tmpfs (as if it had been moved away), the installed `landscaped` finds its worker beside itself, the
//! worker finds libtorch, and slices run on both backends (TorchScript worker; Python worker from
//! `<prefix>/share/landscaped/python`). The installed worker's RUNPATH must not point into the checkout.

mod capability;

use landscaped::store::{Store, slices};
use std::path::Path;
use std::process::Command;

mod support;
use support::*;

/// Runs `cmd` with the checkout hidden, when this machine allows a private mount namespace (root or user
/// namespaces); otherwise, outside CI only, as it is (the RUNPATH check below still guards the layout).
fn hidden_checkout(program: &Path, args: &[&str], cwd: &Path) -> std::process::Output {
    let can_hide = Command::new("unshare").args(["-m", "true"]).status().is_ok_and(|s| s.success());
    let hidden = capability::require(
        can_hide,
        "no private mount namespace here (unshare -m): the checkout can't be hidden, only the RUNPATH is checked",
    );
    let mut c = if hidden {
        let mut c = Command::new("unshare");
        c.args(["-m", "sh", "-c", "mount -t tmpfs none \"$0\" && exec \"$@\""]).arg(root()).arg(program);
        c
    } else {
        Command::new(program)
    };
    c.args(args)
        .current_dir(cwd)
        .env_remove("LANDSCAPED_WORKER")
        .env_remove("LANDSCAPED_PYTHONPATH")
        .env_remove("PYTHONPATH")
        .env("LANDSCAPED_LOG", "warn");
    c.output().unwrap()
}

fn slice_losses(data: &Path, id: u64) -> Vec<f64> {
    let store = Store::open(data).unwrap();
    let rec = slices::get(&store, id).unwrap().unwrap_or_else(|| panic!("no slice {id}"));
    assert_eq!(rec.values.done_count(), rec.values.xs.len());
    (0..rec.values.xs.len()).map(|ix| rec.values.loss_at(0, ix)).collect()
}

#[test]
fn an_installed_landscaped_runs_slices_on_both_backends_without_the_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    let build = Path::new(BIN).parent().unwrap();
    let st = Command::new("make")
        .args(["-s", "-C"])
        .arg(root())
        .arg("install-files")
        .arg(format!("BUILD={}", build.display()))
        .arg(format!("PREFIX={}", prefix.display()))
        .status()
        .unwrap();
    assert!(st.success(), "make install-files failed");
    for f in
        ["bin/landscaped", "bin/landscaped-worker", "share/landscaped/python/landscaped_worker/__main__.py"]
    {
        assert!(prefix.join(f).is_file(), "{f} not installed");
    }

    // The worker's RUNPATH names libtorch outside the checkout.
    let out = Command::new("readelf").arg("-d").arg(prefix.join("bin/landscaped-worker")).output().unwrap();
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let runpath: Vec<&str> =
        dynamic.lines().filter(|l| l.contains("RUNPATH") || l.contains("RPATH")).collect();
    assert!(!runpath.is_empty(), "no RUNPATH in the worker");
    let checkout = std::fs::canonicalize(root()).unwrap();
    for l in &runpath {
        assert!(
            !l.contains(checkout.to_str().unwrap()),
            "the worker's RUNPATH points into the checkout: {l}"
        );
    }

    // The fixture (model, eval set, checkpoints, a factory) lives outside the checkout.
    let fx = tmp.path().join("fx");
    // The venv itself (a link into the cache outside the checkout), not its python (a link to the base one).
    let python = std::fs::canonicalize(root().join(".venv")).unwrap().join("bin/python");
    let ok = Command::new(&python).arg(script("slice_reference.py")).arg(&fx).status().unwrap().success();
    assert!(ok);
    for f in
        ["tests/python/slice_reference.py", "tests/python/digits_factory.py", "examples/landscaped_export.py"]
    {
        let p = root().join(f);
        std::fs::copy(&p, fx.join(p.file_name().unwrap())).unwrap();
    }
    let data = tmp.path().join("data");
    let ck = fx.join("ckpt_b.safetensors");
    let (ck, data_s, model) =
        (ck.to_str().unwrap(), data.to_str().unwrap(), fx.join("model").to_str().unwrap().to_string());
    let landscaped = prefix.join("bin/landscaped");
    let common =
        ["--data-dir", data_s, "slice", "--checkpoint", ck, "--x", "-1:1:3", "--seed", "4", "--threads", "1"];

    let mut args = common.to_vec();
    args.extend(["--model-dir", model.as_str()]);
    let out = hidden_checkout(&landscaped, &args, tmp.path());
    assert!(
        out.status.success(),
        "TorchScript slice from the install: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let py = python.to_str().unwrap();
    let mut args = common.to_vec();
    args.extend(["--backend", "python", "--python", py, "--factory", "digits_factory:build"]);
    let out = hidden_checkout(&landscaped, &args, &fx);
    assert!(out.status.success(), "Python slice from the install: {}", String::from_utf8_lossy(&out.stderr));

    // Both backends computed the same three points.
    let (ts, pyl) = (slice_losses(&data, 1), slice_losses(&data, 2));
    for (a, b) in ts.iter().zip(&pyl) {
        assert!(a.is_finite() && ((a - b) / a).abs() < 1e-6, "TorchScript {ts:?} vs Python {pyl:?}");
    }
}
