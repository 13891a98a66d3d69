//! `landscaped-worker`: the TorchScript model worker. It speaks the worker protocol
//! (docs/worker-protocol.md) on stdin/stdout, or over TCP after dialling a coordinator
//! (`--connect HOST:PORT`, for workers placed by srun, mpirun or torchrun) — one request at a time,
//! answered in order — and does the
//! model work the `landscaped` binary never does itself: loading the contract, binding checkpoints,
//! evaluating grid points, Hessian-vector products and gradients on vectors it keeps.
//!
//! Frames go to a private copy of the stdout descriptor; fd 1 itself is pointed at stderr first, so
//! nothing libtorch or a model prints can corrupt the frame stream. A panic inside an operation becomes
//! an `internal` error reply; the worker keeps serving.

use landscaped_worker::session;

use landscaped_protocol::messages::{self as protocol, ErrorKind, Op, Reply, Request, Response};
use landscaped_protocol::transport::{StreamTransport, Transport};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::os::fd::FromRawFd;
use std::process::ExitCode;

/// Takes fd 1 for frames and points fd 1 at stderr.
fn private_stdout() -> std::io::Result<File> {
    // SAFETY: plain descriptor calls; the duplicate is owned by the returned File.
    unsafe {
        let fd = libc::dup(1);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(File::from_raw_fd(fd))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!(
            "landscaped-worker {} (worker protocol {})",
            env!("CARGO_PKG_VERSION"),
            protocol::PROTOCOL_VERSION
        );
        return ExitCode::SUCCESS;
    }
    if args.first().is_some_and(|a| a == "bench") {
        return match landscaped_worker::bench::run(&args[1..]) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("landscaped-worker bench: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    if args.iter().any(|a| a == "--connect") {
        return connected(&args);
    }
    if let Some(a) = args.first() {
        eprintln!(
            "landscaped-worker: unexpected argument {a:?}; this program is started by landscaped and speaks \
             the worker protocol on stdin/stdout (see docs/worker-protocol.md), or dials a coordinator: \
             landscaped-worker --connect HOST:PORT [--token-file PATH] [--contract ID] [--connect-timeout SECS]"
        );
        return ExitCode::from(2);
    }
    let out = match private_stdout() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("landscaped-worker: cannot set up stdout: {e}");
            return ExitCode::from(1);
        }
    };
    let mut t = StreamTransport::new(BufReader::new(std::io::stdin()), BufWriter::new(out));
    match serve(&mut t) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("landscaped-worker: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--connect HOST:PORT [--token-file PATH] [--contract ID] [--connect-timeout SECS]`: dial, join,
/// serve one session over the connection.
fn connected(args: &[String]) -> ExitCode {
    use landscaped_protocol::connect::{ConnectOptions, connect};
    let mut opts = ConnectOptions {
        addr: String::new(),
        token_file: None,
        contract: None,
        timeout: std::time::Duration::from_secs(300),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            eprintln!("landscaped-worker: {flag} needs a value");
            return ExitCode::from(2);
        };
        match flag.as_str() {
            "--connect" => opts.addr = value.clone(),
            "--token-file" => opts.token_file = Some(value.into()),
            "--contract" => opts.contract = Some(value.clone()),
            "--connect-timeout" => match value.parse::<u64>() {
                Ok(s) => opts.timeout = std::time::Duration::from_secs(s),
                Err(_) => {
                    eprintln!("landscaped-worker: --connect-timeout {value:?} is not a number of seconds");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("landscaped-worker: unexpected argument {other:?} after --connect");
                return ExitCode::from(2);
            }
        }
    }
    let stream = match connect(&opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("landscaped-worker: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    // Nothing but the connection carries frames; what the model prints goes to stdout as usual.
    let reader = match stream.try_clone() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("landscaped-worker: {e}");
            return ExitCode::from(1);
        }
    };
    let mut t = StreamTransport::new(BufReader::new(reader), BufWriter::new(stream));
    match serve(&mut t) {
        Ok(()) => ExitCode::SUCCESS,
        // The coordinator hung up: it has finished (perhaps without this worker's last points, which it
        // had from another) or stopped. Either way this worker's session is over, not failed.
        Err(e) if is_hang_up(&e) => {
            eprintln!("landscaped-worker: the coordinator at {} closed the connection; ending", opts.addr);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("landscaped-worker: the connection to {} broke: {e}", opts.addr);
            ExitCode::from(1)
        }
    }
}

fn is_hang_up(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof | NotConnected)
}

fn send(t: &mut impl Transport, id: u64, body: Reply) -> std::io::Result<()> {
    let frame = protocol::encode(&Response { id, body })
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    t.send(&frame)
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_string()
    }
}

/// The request loop: until stdin closes or `shutdown`.
fn serve(t: &mut impl Transport) -> std::io::Result<()> {
    let mut s = session::Session::default();
    while let Some(frame) = t.recv()? {
        let req: Request = match protocol::decode(&frame) {
            Ok(r) => r,
            Err(e) => {
                // The id is unknown: answer 0, which the caller treats as a protocol error.
                send(
                    t,
                    0,
                    Reply::Error {
                        kind: ErrorKind::BadRequest,
                        message: format!("undecodable request: {e}"),
                    },
                )?;
                continue;
            }
        };
        let id = req.id;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> std::io::Result<Reply> {
            match req.body {
                Op::EvaluatePoints { points } => match s.evaluate_points(&points, |r| send(t, id, r)) {
                    Ok(Ok(())) => Ok(Reply::Done),
                    Ok(Err(io)) => Err(io),
                    Err(f) => Ok(Reply::Error { kind: f.kind, message: f.message }),
                },
                op => Ok(match s.handle_op(op) {
                    Ok(r) => r,
                    Err(f) => Reply::Error { kind: f.kind, message: f.message },
                }),
            }
        }));
        let reply = match result {
            Ok(Ok(r)) => r,
            Ok(Err(io)) => return Err(io),
            Err(p) => Reply::Error {
                kind: ErrorKind::Internal,
                message: format!("the worker panicked: {}", panic_message(&*p)),
            },
        };
        send(t, id, reply)?;
        if s.done {
            break;
        }
    }
    Ok(())
}
