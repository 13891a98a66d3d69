//! The Python worker over TCP (`python -m landscaped_worker --connect HOST:PORT`), without the Rust
//! coordinator: tests/python/tcp_join_check.py plays the coordinator's side of the join exchange
//! (docs/worker-protocol.md, "Over TCP") on a local socket. Each case runs the worker as a subprocess:
//! the join frame's fields (token, protocol, the launcher's rank variables), `joined` then `hello` and
//! `shutdown` (exit 0); a listener that opens late and closes after `joined` (exit 0); a wrong token answered `refused` (exit 3, the reason on stderr); a busy coordinator
//! (`refused` with `retry_after_ms`, or closed before answering) dialled again until joined; no token at all
//! (exit 2, one line naming where it looked); nothing listening within `--connect-timeout` (exit 1,
//! one line).

use std::process::Command;

mod support;
use support::*;

/// Runs one case of the check script and asserts it passed (its own asserts print what differed).
fn case(name: &str) {
    let out = Command::new(venv_python())
        .arg(script("tcp_join_check.py"))
        .arg(name)
        .env("PYTHONPATH", root().join("python"))
        .output()
        .expect("could not run .venv/bin/python (run `make setup` first)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(&format!("ok {name}")),
        "tcp_join_check.py {name} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

#[test]
fn joins_with_the_launchers_ranks_then_serves_hello_and_shutdown() {
    case("join");
}

#[test]
fn retries_until_the_listener_opens_and_ends_cleanly_when_the_coordinator_closes() {
    case("closed");
}

#[test]
fn a_refused_worker_prints_the_reason_and_exits_3() {
    case("refused");
}

#[test]
fn a_busy_coordinator_is_dialled_again_not_taken_for_a_refusal() {
    case("busy");
}

#[test]
fn a_worker_without_a_token_names_where_it_looked_and_exits_2() {
    case("no_token");
}

#[test]
fn a_worker_that_finds_nobody_listening_gives_up_after_its_timeout_with_exit_1() {
    case("timeout");
}
