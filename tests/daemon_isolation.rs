//! The trainer always wins, read from the kernel rather than from the daemon's own words: every thread of
//! the daemon runs at the configured nice and in the idle I/O class (`/proc/<pid>/task/<tid>/stat`'s nice
//! field, the `ioprio_get` syscall), its model workers at 10 more and idle I/O too, under the
//! `worker_memory_limit` address-space limit (`/proc/<pid>/limits`), and they die with the daemon: after
//! `kill -9` of the daemon its worker is gone (PR_SET_PDEATHSIG), with nobody left to stop it.
//! (A worker over that limit at run time, and one that cannot load torch within it: tests/daemon_jobs.rs.)

mod support;
use std::time::Duration;
use support::*;

/// The fields of `/proc/.../stat` after the command name (field 3, the state, is index 0).
fn stat_fields(stat_path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(stat_path).unwrap_or_else(|e| panic!("{stat_path}: {e}"));
    let after = &text[text.rfind(')').unwrap() + 2..];
    after.split_whitespace().map(String::from).collect()
}

/// The thread ids of process `pid`.
fn tasks(pid: i32) -> Vec<i32> {
    let mut ids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    ids.sort();
    ids
}

/// Nice (stat field 19) of thread `tid` of `pid`.
fn nice(pid: i32, tid: i32) -> i64 {
    stat_fields(&format!("/proc/{pid}/task/{tid}/stat"))[16].parse().unwrap()
}

/// The I/O scheduling class of thread `tid` (ioprio_get(IOPRIO_WHO_PROCESS, tid) >> IOPRIO_CLASS_SHIFT).
fn io_class(tid: i32) -> i64 {
    // SAFETY: ioprio_get(which, who) takes two integers and only reads.
    let v = unsafe { libc::syscall(libc::SYS_ioprio_get, 1 as libc::c_long, tid as libc::c_long) };
    assert!(v >= 0, "ioprio_get({tid}): {}", std::io::Error::last_os_error());
    v >> 13
}

const IOPRIO_CLASS_IDLE: i64 = 3;

/// Whether `pid` has ended: no /proc entry, or a zombie waiting for a reaper (it runs no more).
fn ended(pid: i32) -> bool {
    gone(pid)
        || std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|_| matches!(stat_fields(&format!("/proc/{pid}/stat"))[0].as_str(), "Z" | "X"))
            .unwrap_or(true)
}

/// The daemon at `nice = 5` runs a slice job whose worker hangs (alive, so it can be read): every daemon
/// thread at nice 5 and idle I/O, every worker thread at nice 15 (5 + 10) and idle I/O, the worker's
/// address space capped at the configured 6 GiB, its parent the daemon. Then `kill -9` of the daemon: the
/// worker ends too.
#[test]
fn daemon_and_workers_yield_to_the_trainer_and_workers_die_with_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let job = "[run.slice]\nevery = 1\nx = \"-0.5:0.5:3\"";
    let (d, ck, pids) = start_daemon_with(
        dir.path(),
        "nice = 5",
        job,
        "bad_factories:hangs_at_step_10",
        "worker_memory_limit = \"6G\"",
    );
    drop_checkpoint(&ck, "step-10.safetensors", 0.0);
    let worker = noted_pid(&d, &pids, "hang");
    let daemon = d.pid();

    let threads = tasks(daemon);
    assert!(threads.len() > 2, "the daemon's threads: {threads:?}");
    for tid in threads {
        assert_eq!(nice(daemon, tid), 5, "daemon thread {tid}");
        assert_eq!(io_class(tid), IOPRIO_CLASS_IDLE, "daemon thread {tid}");
    }
    assert_eq!(stat_fields(&format!("/proc/{worker}/stat"))[1], daemon.to_string(), "the worker's parent");
    for tid in tasks(worker) {
        assert_eq!(nice(worker, tid), 15, "worker thread {tid}");
        assert_eq!(io_class(tid), IOPRIO_CLASS_IDLE, "worker thread {tid}");
    }
    let limits = std::fs::read_to_string(format!("/proc/{worker}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max address space")).unwrap();
    let want = (6u64 << 30).to_string();
    assert_eq!(line.split_whitespace().skip(3).take(2).collect::<Vec<_>>(), [&want, &want], "{line}");

    d.kill9();
    wait_until(Duration::from_secs(10), "the worker ended with its daemon", || ended(worker));
}
