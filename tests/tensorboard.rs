//! landscaped's TensorBoard event files read by the real `tensorboard` package (tests/python/tb_read.py:
//! the loader its server uses, its CRC-checking record reader, Pillow for the PNGs) and served by the
//! real `tensorboard --logdir` beside a Hugging Face Trainer's own event files; every value compared
//! with what the store holds (`landscaped checkpoints`, `norms`, `hist` as JSON). Scalars travel as
//! float32 (every TensorBoard writer's `simple_value`), histogram edges as TensorBoard's float32
//! buckets: both to 1e-7 relative (docs/tolerances.md); counts exactly.

mod support;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

/// f32 rounding of an f64 is within 2^-24 ≈ 6e-8 relative.
const F32_REL: f64 = 1e-7;

fn close32(got: f64, want: f64) -> bool {
    (got - want).abs() <= F32_REL * want.abs()
}

/// tb_read.py on a file or run folder (`--raw`: the records and steps as read).
fn tb_read(path: &Path, raw: bool) -> Value {
    let mut args = vec![path.to_str().unwrap()];
    if raw {
        args.push("--raw");
    }
    serde_json::from_str(&run_script_args("tb_read.py", args)).unwrap()
}

/// The only landscaped event file in `dir`.
fn our_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(".landscaped"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    files[0].clone()
}

fn json_rows(data: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let (ok, out, err) = cli_query(data, None, &all);
    assert!(ok, "{args:?}: {err}");
    serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
}

/// A tag's (step, value) pairs as TensorBoard read them.
fn points(tb: &Value, kind: &str, tag: &str) -> Vec<(u64, Value)> {
    tb[kind][tag]
        .as_array()
        .unwrap_or_else(|| panic!("TensorBoard has no {kind} {tag}"))
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].clone()))
        .collect()
}

/// Every checkpoint scalar of the store against TensorBoard's.
fn check_checkpoint_scalars(data: &Path, tb: &Value) {
    let cks = json_rows(data, &["checkpoints", "--run", "r"]);
    for (tag, col) in [
        ("global_norm", "global_norm"),
        ("dist_from_first", "dist_first"),
        ("update_norm", "update_norm"),
        ("update_cosine", "update_cos"),
        ("nan_count", "nan"),
        ("inf_count", "inf"),
    ] {
        let want: Vec<(u64, f64)> = cks
            .iter()
            .filter(|c| !c[col].is_null())
            .map(|c| (c["step"].as_u64().unwrap(), c[col].as_f64().unwrap()))
            .collect();
        let got = points(tb, "scalars", &format!("landscaped/weights/{tag}"));
        assert_eq!(got.len(), want.len(), "{tag}: {got:?} vs {want:?}");
        for ((gs, gv), (ws, wv)) in got.iter().zip(&want) {
            assert_eq!(gs, ws, "{tag}");
            assert!(close32(gv.as_f64().unwrap(), *wv), "{tag} at {ws}: {gv} vs {wv}");
        }
    }
}

/// The store's histogram of `tensor` at `step` as TensorBoard shows one: [left, right, count] from the
/// first to the last non-empty bucket.
fn store_buckets(data: &Path, step: u64, tensor: &str) -> Vec<(f64, f64, f64)> {
    let rows = json_rows(data, &["hist", "--run", "r", "--step", &step.to_string(), "--tensor", tensor]);
    let b: Vec<(f64, f64, f64)> = rows
        .iter()
        .map(|r| (r["lo"].as_f64().unwrap(), r["hi"].as_f64().unwrap(), r["count"].as_f64().unwrap()))
        .collect();
    let start = b.iter().position(|x| x.2 > 0.0).unwrap();
    let end = b.iter().rposition(|x| x.2 > 0.0).unwrap();
    b[start..=end].to_vec()
}

fn check_buckets(got: &Value, want: &[(f64, f64, f64)], what: &str) {
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: bucket count");
    for (g, w) in got.iter().zip(want) {
        let g: Vec<f64> = g.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert!(close32(g[0], w.0) && close32(g[1], w.1), "{what}: edges {g:?} vs {w:?}");
        assert_eq!(g[2], w.2, "{what}: count");
    }
}

/// A value in (-1, 1) from a counter (deterministic, no dependency).
fn noise(i: u64) -> f32 {
    let x = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// Five checkpoints `step_{10..50}.safetensors`: a 64×32 matrix, a bias, a constant tensor (its
/// histogram has empty end buckets) and `extra` tiny tensors (for a file of thousands of records).
fn write_run(ck: &Path, extra: usize) {
    std::fs::create_dir_all(ck).unwrap();
    for (k, step) in [10u64, 20, 30, 40, 50].into_iter().enumerate() {
        let drift = k as f32 * 0.05;
        let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = vec![
            (
                "big.weight".into(),
                vec![64, 32],
                (0..2048).map(|i| noise(i) + drift * noise(i + 9000)).collect(),
            ),
            ("small.bias".into(), vec![16], (0..16).map(|i| noise(i + 5000) * (1.0 + drift)).collect()),
            ("const".into(), vec![10], vec![3.0; 10]),
        ];
        for j in 0..extra {
            t.push((
                format!("t{j:03}"),
                vec![4],
                (0..4).map(|i| noise(j as u64 * 4 + i + 7 * step)).collect(),
            ));
        }
        let refs: Vec<(&str, Vec<usize>, Vec<f32>)> =
            t.iter().map(|(n, s, v)| (n.as_str(), s.clone(), v.clone())).collect();
        write_safetensors(&ck.join(format!("step_{step}.safetensors")), &refs);
    }
}

#[test]
fn an_exported_run_reads_back_in_tensorboard_with_the_stores_values() {
    let dir = tempfile::tempdir().unwrap();
    let (ck, data, out) = (dir.path().join("ck"), dir.path().join("data"), dir.path().join("tb/run1"));
    // 300 tiny tensors chosen too: 5 × (6 + 2 × 303) ≈ 3000 records.
    write_run(&ck, 300);
    stdout_ok(&landscaped_cmd(&data).args(["ingest", "--run", "r"]).arg(&ck).output().unwrap());
    stdout_ok(&landscaped_cmd(&data).args(["pca", "--run", "r"]).output().unwrap());
    let export = |top_k: &str| {
        stdout_ok(
            &landscaped_cmd(&data)
                .args(["export", "tensorboard", "--run", "r", "--tensor", "const", "--top-k", top_k, "--out"])
                .arg(&out)
                .output()
                .unwrap(),
        )
    };
    let said = export("400");
    assert!(said.contains("images"), "{said}");
    let file = our_file(&out);

    // TensorBoard's own record reader checks both CRCs of every record.
    let raw = tb_read(&file, true);
    assert!(raw["records"].as_u64().unwrap() >= 3000, "{}", raw["records"]);
    let tb = tb_read(&file, false);
    check_checkpoint_scalars(&data, &tb);

    // Every tensor's norm at every step.
    let norms = json_rows(&data, &["norms", "--run", "r", "--tensor", "*"]);
    assert_eq!(norms.len(), 5 * 303);
    for n in &norms {
        let tag = format!("landscaped/tensor_norm/{}", n["tensor"].as_str().unwrap());
        let step = n["step"].as_u64().unwrap();
        let got = points(&tb, "scalars", &tag).into_iter().find(|p| p.0 == step).unwrap().1;
        assert!(
            close32(got.as_f64().unwrap(), n["l2"].as_f64().unwrap()),
            "{tag} at {step}: {got} vs {}",
            n["l2"]
        );
    }
    // Histograms: the store's buckets (edges and counts), the constant tensor's empty end buckets left out.
    for tensor in ["big.weight", "small.bias", "const", "t007"] {
        let got = points(&tb, "histograms", &format!("landscaped/histogram/{tensor}"));
        assert_eq!(got.iter().map(|p| p.0).collect::<Vec<_>>(), vec![10, 20, 30, 40, 50], "{tensor}");
        for (step, buckets) in &got {
            check_buckets(buckets, &store_buckets(&data, *step, tensor), &format!("{tensor} at {step}"));
        }
    }
    assert_eq!(store_buckets(&data, 10, "const").len(), 1, "the constant tensor fills one middle bucket");
    // The trajectory chart of the PCA: a PNG that decodes, of the size the event says.
    let img = &tb["images"]["landscaped/image/trajectory"][0];
    assert_eq!(img[0], 50, "{img}");
    assert!(img[1].as_u64().unwrap() > 100 && img[2].as_u64().unwrap() > 100, "{img}");
    assert_eq!((&img[1], &img[2]), (&img[3], &img[4]), "event size vs decoded PNG: {img}");
    let ratio = points(&tb, "scalars", "landscaped/pca/explained_variance_ratio/pc1");
    assert_eq!(ratio.len(), 1);
    // Text: the settings and the conventions.
    let settings = tb["texts"]["landscaped/settings"][0][1].as_str().unwrap();
    assert!(settings.contains("run `r`") && settings.contains("5 checkpoint(s)"), "{settings}");
    assert!(tb["texts"]["landscaped/conventions/weights"][0][1].as_str().unwrap().contains("‖θ − θ_first‖₂"));

    // Exported again: nothing new, no step twice.
    let said = export("400");
    assert!(said.contains("wrote 0 scalars, 0 histograms, 0 images, 0 texts"), "{said}");
    let again = tb_read(&file, true);
    assert_eq!(again["records"], raw["records"]);
}

fn steps_of(raw: &Value, tag: &str) -> Vec<u64> {
    raw["steps"][tag].as_array().map(|a| a.iter().map(|s| s.as_u64().unwrap()).collect()).unwrap_or_default()
}

/// Every tag's steps strictly increasing: no step written twice.
fn assert_no_step_twice(raw: &Value) {
    for (tag, steps) in raw["steps"].as_object().unwrap() {
        let s: Vec<u64> = steps.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert!(s.windows(2).all(|w| w[0] < w[1]), "{tag}: steps {s:?}");
    }
}

#[test]
fn the_daemon_writes_each_checkpoint_and_job_as_they_land_and_repairs_its_file_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (ck, tb_dir) = (dir.path().join("ck"), dir.path().join("logs/run1"));
    std::fs::create_dir_all(&ck).unwrap();
    // A trajectory PCA after every third checkpoint: a job whose records (and chart) follow it.
    let run = format!("tensorboard = {:?}\n[run.pca]\nevery = 3\n", tb_dir.to_str().unwrap());
    let config = write_config(dir.path(), &[&ck], "", &run);
    let d = restart(config.clone(), dir.path());
    let written = |tag: &'static str, want: &[u64]| {
        let want = want.to_vec();
        let tb_dir = tb_dir.clone();
        move || {
            tb_dir.is_dir()
                && std::fs::read_dir(&tb_dir).unwrap().count() == 1
                && steps_of(&tb_read(&our_file(&tb_dir), true), tag) == want
        }
    };
    const NORM: &str = "landscaped/weights/global_norm";
    const CHART: &str = "landscaped/image/trajectory";
    for (i, step) in [1u64, 2, 3].into_iter().enumerate() {
        drop_checkpoint(&ck, &format!("step_{step}.safetensors"), i as f32);
        wait_until(Duration::from_secs(30), "the checkpoint in TensorBoard", written(NORM, &[1, 2, 3][..=i]));
    }
    wait_until(Duration::from_secs(60), "the PCA's chart in TensorBoard", written(CHART, &[3]));
    d.kill9();
    // Killed mid-write: the last record (the chart) cut short. TensorBoard reads the whole ones and
    // skips it.
    let file = our_file(&tb_dir);
    let before = tb_read(&file, true);
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len - 7).unwrap();
    let cut = tb_read(&file, true);
    assert_eq!(cut["records"].as_u64().unwrap() + 1, before["records"].as_u64().unwrap());
    assert_eq!((steps_of(&cut, NORM), steps_of(&cut, CHART)), (vec![1, 2, 3], vec![]));

    // Restarted: the tail cut off and the chart written again, then step 4 as it lands; no step twice.
    let d = restart(config, dir.path());
    drop_checkpoint(&ck, "step_4.safetensors", 3.0);
    wait_until(Duration::from_secs(30), "step 4 in TensorBoard", written(NORM, &[1, 2, 3, 4]));
    assert!(d.log().contains("cut the last"), "the repair is logged");
    let m = d.metrics();
    assert!(
        metric(&m, "landscaped_tensorboard_events_total{kind=\"histogram\",run=\"r\"}").unwrap() >= 2.0,
        "{m}"
    );
    // Exported while the daemon holds the store: through its API (issue 25), to compare below with an
    // export from the store itself.
    let data = dir.path().join("data");
    let export = |out: &Path| {
        let (ok, said, err) =
            cli_query(&data, None, &["export", "tensorboard", "--run", "r", "--out", out.to_str().unwrap()]);
        assert!(ok, "export: {err}");
        said
    };
    let (via_daemon, from_store) = (dir.path().join("exported/daemon"), dir.path().join("exported/store"));
    let said = export(&via_daemon);
    assert!(said.starts_with("wrote ") && !said.contains("wrote 0 scalars"), "{said}");
    d.stop();
    let raw = tb_read(&our_file(&tb_dir), true);
    assert_no_step_twice(&raw);
    assert_eq!(steps_of(&raw, CHART), vec![3], "the chart cut off is written again, once");
    assert_eq!(steps_of(&raw, "landscaped/pca/explained_variance_ratio/pc1"), vec![3]);
    let hist_tags: Vec<&String> =
        raw["steps"].as_object().unwrap().keys().filter(|t| t.starts_with("landscaped/histogram/")).collect();
    assert_eq!(hist_tags.len(), 2, "weight and bias: {hist_tags:?}");
    for t in hist_tags {
        assert_eq!(steps_of(&raw, t), vec![1, 2, 3, 4], "{t}");
    }
    let tb = tb_read(&tb_dir, false);
    check_checkpoint_scalars(&dir.path().join("data"), &tb);
    let img = &tb["images"][CHART][0];
    assert_eq!((&img[1], &img[2]), (&img[3], &img[4]), "event size vs decoded PNG: {img}");

    // The export through the daemon holds what an export from the store holds: every scalar,
    // histogram and chart; only the settings text says where the records came from.
    export(&from_store);
    let (daemon_tb, store_tb) = (tb_read(&via_daemon, false), tb_read(&from_store, false));
    for kind in ["scalars", "histograms", "images"] {
        assert!(!store_tb[kind].as_object().unwrap().is_empty(), "{kind}");
        assert_eq!(daemon_tb[kind], store_tb[kind], "{kind}");
    }
    let settings = |tb: &Value| tb["texts"]["landscaped/settings"][0][1].as_str().unwrap().to_string();
    assert!(settings(&daemon_tb).contains("served by the daemon at http://"), "{}", settings(&daemon_tb));
    assert!(settings(&store_tb).contains("from the store in"), "{}", settings(&store_tb));
}

/// A port no one listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Stops the TensorBoard server at the end of the test, however it ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tensorboard_serves_the_landscape_beside_the_hugging_face_trainers_curves_as_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let (made, ck, logs, data) =
        (dir.path().join("made"), dir.path().join("ck"), dir.path().join("logs"), dir.path().join("data"));
    let run_dir = logs.join("gpt2");
    // The real HF Trainer, report_to="tensorboard", into the run folder TensorBoard will show.
    let ok = std::process::Command::new(venv_python())
        .arg(script("gpt2_make.py"))
        .arg(&made)
        .arg("--trainer-out")
        .arg(&ck)
        .args(["--steps", "6", "--power-iterations", "0", "--tensorboard"])
        .env("TENSORBOARD_LOGGING_DIR", &run_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "gpt2_make.py failed");
    stdout_ok(&landscaped_cmd(&data).args(["ingest", "--run", "r"]).arg(&ck).output().unwrap());
    stdout_ok(
        &landscaped_cmd(&data)
            .args(["export", "tensorboard", "--run", "r", "--top-k", "2", "--out"])
            .arg(&run_dir)
            .output()
            .unwrap(),
    );
    assert_eq!(std::fs::read_dir(&run_dir).unwrap().count(), 2, "the Trainer's file and ours");

    let port = free_port();
    let _server = Server(
        std::process::Command::new(root().join(".venv/bin/tensorboard"))
            .arg("--logdir")
            .arg(&logs)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--reload_interval", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("tensorboard.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let json = |path: &str| get(port, path).and_then(|b| serde_json::from_str::<Value>(&b).ok());
    // One run, both sources: the Trainer's loss and landscaped's tags.
    wait_until(Duration::from_secs(90), "TensorBoard serving both sources", || {
        json("/data/plugin/scalars/tags").is_some_and(|t| {
            let run = &t["gpt2"];
            run.get("train/loss").is_some() && run.get("landscaped/weights/global_norm").is_some()
        })
    });
    let runs = json("/data/runs").unwrap();
    assert_eq!(runs, serde_json::json!(["gpt2"]), "one run");
    let cks = json_rows(&data, &["checkpoints", "--run", "r"]);
    let served = json(&format!(
        "/data/plugin/scalars/scalars?run=gpt2&tag={}",
        encode("landscaped/weights/global_norm")
    ))
    .unwrap();
    let served = served.as_array().unwrap();
    assert_eq!(served.len(), cks.len());
    for (s, c) in served.iter().zip(&cks) {
        assert_eq!(s[1], c["step"]);
        assert!(close32(s[2].as_f64().unwrap(), c["global_norm"].as_f64().unwrap()), "{s} vs {c}");
    }
    // Histograms of the two largest tensors, with the store's buckets.
    let tags = json("/data/plugin/histograms/tags").unwrap();
    let ours: BTreeMap<&String, &Value> = tags["gpt2"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(t, _)| t.starts_with("landscaped/histogram/"))
        .collect();
    assert_eq!(ours.len(), 2, "{tags}");
    for tag in ours.keys() {
        let tensor = tag.trim_start_matches("landscaped/histogram/");
        let h = json(&format!("/data/plugin/histograms/histograms?run=gpt2&tag={}", encode(tag))).unwrap();
        let h = h.as_array().unwrap();
        assert_eq!(h.len(), cks.len(), "{tag}");
        for (e, c) in h.iter().zip(&cks) {
            let step = c["step"].as_u64().unwrap();
            assert_eq!(e[1], step);
            check_buckets(&e[2], &store_buckets(&data, step, tensor), &format!("{tag} at {step}"));
        }
    }
}
