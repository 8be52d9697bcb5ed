//! The Redis protocol parser as a connection drives it: `next_command` over a `BytesMut` that
//! bytes arrive into, the `Skipping` of a refused oversized command, then the command table
//! lookup, the arity check and what the command touches.
//!
//! Input: one control byte (the value limit, and how the rest arrives: in one read or in
//! reads of a few bytes), then the bytes a client sends. It is parsed on a thread with the
//! stack of a tokio worker (2 MiB), where a connection runs.

#![no_main]

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, OnceLock};

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use quorumkv::resp::cmd::unknown_command;
use quorumkv::resp::command::lookup;
use quorumkv::resp::parse::{FRAME_SLACK, Next, Skipping, next_command};

/// `max_value_bytes` of the cluster file: the default first, then small and large ones.
const MAX_VALUES: [usize; 8] = [1 << 20, 0, 16, 1000, 1500, 4096, 64 << 10, 512 << 20];
/// Bytes per read: everything at once, or in pieces.
const CHUNKS: [usize; 8] = [usize::MAX, 1, 2, 3, 7, 16, 64, 1000];

/// A tokio worker thread's stack.
const WORKER_STACK: usize = 2 << 20;

fuzz_target!(|data: &[u8]| on_worker(data));

/// Runs [`connection`] on a thread with a worker's stack (one for the whole run: a thread per
/// input would cost more than the parsing). A panic there aborts the process as one here does.
fn on_worker(data: &[u8]) {
    struct Worker {
        inputs: Sender<Vec<u8>>,
        done: Receiver<()>,
    }
    static WORKER: OnceLock<Mutex<Worker>> = OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (inputs, input) = channel::<Vec<u8>>();
        let (finished, done) = channel();
        std::thread::Builder::new()
            .name("resp-worker".into())
            .stack_size(WORKER_STACK)
            .spawn(move || {
                for data in input {
                    connection(&data);
                    let _ = finished.send(());
                }
            })
            .expect("a worker thread");
        Mutex::new(Worker { inputs, done })
    });
    let worker = worker.lock().expect("the worker");
    worker
        .inputs
        .send(data.to_vec())
        .expect("the worker is gone");
    worker.done.recv().expect("the worker is gone");
}

/// What a connection's loop does with `data`.
fn connection(data: &[u8]) {
    let Some((&ctl, wire)) = data.split_first() else {
        return;
    };
    let max_value = MAX_VALUES[usize::from(ctl & 7)];
    let max_frame = max_value + FRAME_SLACK;
    let chunk = CHUNKS[usize::from((ctl >> 3) & 7)];
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut skipping: Option<Skipping> = None;
    let mut fed = 0;
    while fed < wire.len() {
        let n = chunk.min(wire.len() - fed);
        input.extend_from_slice(&wire[fed..fed + n]);
        fed += n;
        // As the connection loop does: every complete command already here.
        loop {
            if let Some(skip) = &mut skipping {
                let before = input.len();
                match skip.advance(&mut input) {
                    Ok(true) => skipping = None,
                    Ok(false) => {
                        assert!(input.is_empty(), "Skipping stopped with input left");
                        break;
                    }
                    Err(_) => return, // the connection is answered and closed
                }
                assert!(input.len() <= before);
            }
            let before = input.len();
            match next_command(&mut input, max_frame, max_value) {
                Ok(Some(Next::Command(args))) => {
                    assert!(input.len() < before, "a command taken off no input");
                    assert!(args.iter().map(Bytes::len).sum::<usize>() <= before);
                    command(&args);
                }
                Ok(Some(Next::Oversized { len, max, skip })) => {
                    assert!(input.len() < before, "an oversized command took no input");
                    assert!(len > max, "refused {len} bytes under the limit {max}");
                    skipping = Some(skip);
                }
                Ok(None) => {
                    assert!(
                        input.len() <= max_frame,
                        "{} bytes held waiting for a command (limit {max_frame})",
                        input.len()
                    );
                    break;
                }
                Err(_) => return,
            }
        }
    }
}

/// What the connection does with a command before it runs it.
fn command(args: &[Bytes]) {
    let Some(name) = args.first() else {
        return; // "empty command"
    };
    match lookup(name) {
        Some(spec) => {
            let _ = spec.touches(args);
            let _ = spec.check_arity(args);
            let _ = spec.meta.access.role();
        }
        None => {
            let _ = unknown_command(args);
        }
    }
}
