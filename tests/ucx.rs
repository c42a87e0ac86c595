//! One-sided transfers through UCX between two real processes: this test binary runs itself
//! twice more, as a Tape side and a Grid side (`#[ignore]`d child tests), whose stdins are the
//! two ends of one Unix socket over which they exchange worker addresses and remote keys.
//! UCX moves the bytes over the transport named by `UCX_TLS` in the children's environment:
//! TCP on loopback, or shared memory.
//!
//! Where UCX (`libucp.so.0`) is not installed every test prints that it skips, unless
//! `UNIMEM_UCX_REQUIRED` is set (as `.ci/run` sets it), which makes that a failure.
#![cfg(all(target_os = "linux", not(miri)))]

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use unimem::ucx::{self, Endpoint, Registration, Remote, Worker};
use unimem::{Grid, Tape};

/// The sizes moved each way, every byte checked.
const SIZES: [usize; 3] = [1, 4 << 10, 64 << 20];
/// The Grid side's cells: one holds the largest transfer.
const CELL: usize = 64 << 20;
/// Every wait in these tests is bounded by this (generous: 64 MiB over TCP on a loaded
/// 2-core machine takes seconds).
const WAIT: Duration = Duration::from_secs(120);
/// How long a child process may run before the parent test kills it and fails.
const CHILD_LIMIT: Duration = Duration::from_secs(300);
/// Where the Grid side's transfers land in its cell: not at its start, so that an offset
/// ignored somewhere shows.
const IN_CELL: [usize; 3] = [4093, 8192, 0];

const TCP: &[(&str, &str)] = &[("UCX_TLS", "tcp")];
const SHARED_MEMORY: &[(&str, &str)] = &[("UCX_TLS", "posix,self")];

/// The byte at offset `i` of a pattern seeded with `seed`.
fn pattern(seed: u8, i: usize) -> u8 {
    (i as u8).wrapping_mul(31) ^ (i >> 9) as u8 ^ (i >> 17) as u8 ^ seed
}

fn fill(bytes: &mut [u8], seed: u8) {
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = pattern(seed, i);
    }
}

/// Panics at the first byte that does not follow `seed`'s pattern.
fn check(bytes: &[u8], seed: u8, whose: &str) {
    if let Some(i) = (0..bytes.len()).find(|&i| bytes[i] != pattern(seed, i)) {
        panic!(
            "{whose}: byte {i} of {} is {:#04x}, expected {:#04x}",
            bytes.len(),
            bytes[i],
            pattern(seed, i)
        );
    }
}

/// `Some(worker)`, or `None` after printing why this test skips (UCX missing), or a panic
/// when UCX is required.
fn worker_or_skip(test: &str) -> Option<Worker> {
    // SAFETY: UNIMEM_UCX_LIBRARY, where set, names UCX's libucp.so.0, or (as .ci/run sets it
    // to test the missing-library path) a file that does not exist.
    match unsafe { Worker::new_from_env() } {
        Ok(worker) => Some(worker),
        Err(err @ ucx::Error::NoLibrary { .. }) => {
            assert!(
                std::env::var_os("UNIMEM_UCX_REQUIRED").is_none(),
                "UCX is required here (UNIMEM_UCX_REQUIRED): {err}"
            );
            println!("SKIPPED {test}: {err}");
            None
        }
        Err(err) => panic!("{test}: {err}"),
    }
}

// ---- the side channel: length-prefixed messages over the children's stdin socket

fn channel() -> UnixStream {
    UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned().unwrap())
}

fn send(stream: &UnixStream, bytes: &[u8]) {
    let mut stream = stream;
    stream
        .write_all(&(bytes.len() as u64).to_ne_bytes())
        .unwrap();
    stream.write_all(bytes).unwrap();
}

/// Receives one message, driving `worker` meanwhile: over transports without hardware RMA
/// (TCP, shared memory), UCX carries the peer's puts and gets as messages that this side's
/// worker must handle, so a side that blocks without progressing stalls its peer.
fn recv(stream: &UnixStream, worker: &Worker) -> Vec<u8> {
    let start = Instant::now();
    loop {
        let mut byte = 0u8;
        // SAFETY: a live socket and one writable byte; MSG_PEEK leaves it in the socket.
        let peeked = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                (&raw mut byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match peeked {
            0 => panic!("the peer hung up"),
            1 => break,
            _ => {
                let err = std::io::Error::last_os_error();
                assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");
                assert!(
                    start.elapsed() < WAIT,
                    "no message from the peer in {WAIT:?}"
                );
                if !worker.progress() {
                    std::thread::yield_now();
                }
            }
        }
    }
    let mut stream = stream;
    let mut len = [0; 8];
    stream.read_exact(&mut len).expect("the peer hung up");
    let mut bytes = vec![0; u64::from_ne_bytes(len) as usize];
    stream.read_exact(&mut bytes).expect("the peer hung up");
    bytes
}

fn send_u64(stream: &UnixStream, value: u64) {
    send(stream, &value.to_ne_bytes());
}

fn recv_u64(stream: &UnixStream, worker: &Worker) -> u64 {
    u64::from_ne_bytes(recv(stream, worker).try_into().expect("a number"))
}

/// Exchanges worker addresses and connects.
fn connect<'w>(worker: &'w Worker, stream: &UnixStream) -> Endpoint<'w> {
    send(stream, &worker.address().unwrap());
    let peer = recv(stream, worker);
    // SAFETY: what the peer's Worker::address gave.
    unsafe { worker.connect(&peer) }.unwrap()
}

/// Sends this side's key, address and length; the peer may write the registered bytes from
/// now on, which both sides only touch through unsafe views, in turn, by the protocol.
fn offer(registration: &Registration<'_>, stream: &UnixStream) {
    // SAFETY: the protocol below: each side reads or writes the registered bytes only through
    // `Block::range`/`range_mut`, and only when the other side has said it is done with them.
    send(stream, &unsafe { registration.remote_key() }.unwrap());
    send_u64(stream, registration.address());
    send_u64(stream, registration.len() as u64);
}

fn accept<'e>(endpoint: &'e Endpoint<'_>, stream: &UnixStream) -> Remote<'e> {
    let worker = endpoint.worker();
    let key = recv(stream, worker);
    let base = recv_u64(stream, worker);
    let len = recv_u64(stream, worker) as usize;
    // SAFETY: the peer's packed key for its registration of `len` bytes at `base`.
    unsafe { endpoint.remote(&key, base, len) }.unwrap()
}

// ---- the parent tests

/// Runs the two child tests `tape` and `grid`, connected by a socket, with `env`; both must
/// pass and print `marker`.
fn run_pair(tape: &str, grid: &str, env: &[(&str, &str)], marker: &str) {
    let (a, b) = UnixStream::pair().unwrap();
    let spawn = |test: &str, end: UnixStream| -> Child {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                test,
                "--nocapture",
                "--test-threads=1",
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::from(OwnedFd::from(end)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children = [(tape, spawn(tape, a)), (grid, spawn(grid, b))];
    let outputs: Vec<(&str, Output)> = children
        .into_iter()
        .map(|(name, child)| (name, wait_bounded(child, CHILD_LIMIT)))
        .collect();
    let all = outputs
        .iter()
        .map(|(name, out)| {
            format!(
                "--- {name}: {}\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    for (_, out) in &outputs {
        assert!(out.status.success(), "a side failed:\n{all}");
    }
    if all.contains("SKIPPED") {
        println!("{all}");
        return;
    }
    assert!(all.contains(marker), "no side printed {marker:?}:\n{all}");
    println!("{all}");
}

/// Waits for `child`, killing it after `limit`.
fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn put_and_get_between_a_tape_and_a_grid_cell_over_tcp() {
    if worker_or_skip("tcp").is_some() {
        run_pair(
            "child_tape_side",
            "child_grid_side",
            TCP,
            "every byte arrived",
        );
    }
}

#[test]
fn put_and_get_between_a_tape_and_a_grid_cell_over_shared_memory() {
    if worker_or_skip("shared memory").is_some() {
        run_pair(
            "child_tape_side",
            "child_grid_side",
            SHARED_MEMORY,
            "every byte arrived",
        );
    }
}

#[test]
fn a_peer_that_exits_mid_transfer_fails_the_transfer_in_bounded_time() {
    if worker_or_skip("peer exit").is_some() {
        run_pair(
            "child_tape_side_whose_peer_dies",
            "child_grid_side_that_dies",
            TCP,
            "the transfer failed",
        );
    }
}

#[test]
fn a_peer_that_exits_mid_transfer_over_shared_memory_fails_it_in_bounded_time() {
    if worker_or_skip("peer exit").is_some() {
        run_pair(
            "child_tape_side_whose_peer_dies",
            "child_grid_side_that_dies",
            SHARED_MEMORY,
            "the transfer failed",
        );
    }
}

// ---- the children

/// The Tape side: puts from its tape into the Grid side's cell, and gets back into its tape.
#[test]
#[ignore = "a child of put_and_get_between_a_tape_and_a_grid_cell_*"]
fn child_tape_side() {
    let Some(worker) = worker_or_skip("tape side") else {
        return;
    };
    let stream = channel();
    let endpoint = connect(&worker, &stream);
    let tape = Tape::start(2 * CELL + (1 << 20)).unwrap();
    // Where each transfer comes from (put) and goes to (get) in the tape; the slices are
    // filled and let go of at once: from then on only unsafe views touch the bytes.
    let mut puts = Vec::new();
    let mut gets = Vec::new();
    for (i, &size) in SIZES.iter().enumerate() {
        let put = tape.take_fill(size, 0u8).unwrap();
        fill(put, i as u8);
        puts.push(tape.offset_of(put.as_ptr()).unwrap());
        let get = tape.take_fill(size, 0u8).unwrap();
        gets.push(tape.offset_of(get.as_ptr()).unwrap());
    }
    let registration = worker.register(tape.block()).unwrap();
    offer(&registration, &stream);
    let remote = accept(&endpoint, &stream);
    let cell = recv_u64(&stream, &worker) as usize;

    for (i, &size) in SIZES.iter().enumerate() {
        let at = cell + IN_CELL[i];
        // SAFETY: nothing writes the put bytes of the tape; the request is waited for.
        let put = unsafe { endpoint.put(&registration, puts[i], &remote, at, size) }.unwrap();
        put.wait(WAIT).unwrap();
        endpoint.flush(WAIT).unwrap();
        send_u64(&stream, i as u64); // "check what I put"
        assert_eq!(
            recv_u64(&stream, &worker),
            i as u64,
            "the grid side checked"
        );
        // The grid side has written its answer over the same bytes; fetch it.
        // SAFETY: nothing reads or writes the get bytes of the tape until the wait returns.
        let get = unsafe { endpoint.get(&registration, gets[i], &remote, at, size) }.unwrap();
        get.wait(WAIT).unwrap();
        // SAFETY: the get is complete; nothing else writes these bytes.
        let got = unsafe { tape.block().range(gets[i]..gets[i] + size) };
        check(got, 0x80 | i as u8, "what the tape side got");
        println!("{size} bytes put and got back, every byte checked");
    }

    // Polled rather than waited for, then flushed through the worker.
    // SAFETY: nothing writes the put bytes of the tape; the request is polled to the end.
    let mut put = unsafe { endpoint.put(&registration, puts[1], &remote, cell, SIZES[1]) }.unwrap();
    let start = Instant::now();
    let outcome = loop {
        if let Some(outcome) = put.poll() {
            break outcome;
        }
        assert!(start.elapsed() < WAIT, "a polled put never completed");
    };
    outcome.unwrap();
    assert!(put.is_complete());
    assert!(
        matches!(put.poll(), Some(Ok(()))),
        "a completed request stays complete"
    );
    drop(put);
    worker.flush(WAIT).unwrap();

    // Out of range: refused before UCX sees them (the grid side checks its last byte).
    let last = remote.len() - 1;
    // SAFETY: each is refused before anything is read or written.
    let refused = unsafe {
        [
            endpoint
                .put(&registration, puts[2], &remote, last, 2)
                .map(drop),
            endpoint
                .put(&registration, puts[2], &remote, remote.len(), 1)
                .map(drop),
            endpoint
                .put(&registration, puts[2], &remote, usize::MAX, 2)
                .map(drop),
            endpoint
                .put(&registration, puts[2], &remote, 0, 0)
                .map(drop),
            endpoint
                .put(&registration, tape.block().len(), &remote, 0, 1)
                .map(drop),
            endpoint
                .put(&registration, usize::MAX, &remote, 0, 1)
                .map(drop),
            endpoint
                .get(&registration, puts[2], &remote, last, 2)
                .map(drop),
        ]
    };
    for result in refused {
        let err = result.expect_err("an out-of-range transfer was accepted");
        assert!(matches!(err, ucx::Error::OutOfRange { .. }), "{err:?}");
        assert!(err.to_string().contains("does not lie inside"), "{err}");
    }
    // A registration of part of the tape refuses what lies outside that part.
    let part = worker
        .register_range(tape.block(), puts[2]..puts[2] + (1 << 20))
        .unwrap();
    // SAFETY: refused before anything is read.
    let err = unsafe { endpoint.put(&part, puts[1], &remote, 0, 4096) }.unwrap_err();
    assert!(
        matches!(err, ucx::Error::OutOfRange { side: "local", .. }),
        "{err:?}"
    );
    endpoint.flush(WAIT).unwrap();
    send_u64(&stream, u64::MAX); // "check nothing landed past your end"
    assert_eq!(recv_u64(&stream, &worker), u64::MAX);
    println!("every byte arrived; out-of-range transfers were refused");
}

/// The Grid side: offers a cell of its grid, checks what was put there, answers in place.
#[test]
#[ignore = "a child of put_and_get_between_a_tape_and_a_grid_cell_*"]
fn child_grid_side() {
    let Some(worker) = worker_or_skip("grid side") else {
        return;
    };
    let stream = channel();
    let endpoint = connect(&worker, &stream);
    let grid = Grid::<CELL, 2>::new().unwrap();
    let _first = grid.take().unwrap();
    let cell = grid.take().unwrap();
    let registration = worker.register(grid.block()).unwrap();
    offer(&registration, &stream);
    let _remote = accept(&endpoint, &stream);
    send_u64(&stream, cell.offset() as u64);
    let block = grid.block();
    // The block's last byte, as this side last wrote it (the second cell ends the block).
    let mut last = 0;
    loop {
        let i = recv_u64(&stream, &worker);
        if i == u64::MAX {
            // SAFETY: the tape side has stopped; nothing writes the block.
            let end = unsafe { block.range(block.len() - 1..block.len()) };
            assert_eq!(end, [last], "an out-of-range put reached the grid");
            send_u64(&stream, i);
            break;
        }
        let i = i as usize;
        let at = cell.offset() + IN_CELL[i];
        let size = SIZES[i];
        // SAFETY: the tape side has flushed its put and waits for our answer.
        let bytes = unsafe { block.range_mut(at..at + size) };
        check(bytes, i as u8, "what the grid side received");
        fill(bytes, 0x80 | i as u8);
        // SAFETY: as above; the tape side still waits.
        last = unsafe { block.range(block.len() - 1..block.len()) }[0];
        send_u64(&stream, i as u64);
    }
    println!("the grid side received every byte");
}

/// Puts 64 MiB again and again into a peer that exits after the first one started.
#[test]
#[ignore = "a child of a_peer_that_exits_mid_transfer_fails_the_transfer_in_bounded_time"]
fn child_tape_side_whose_peer_dies() {
    let Some(worker) = worker_or_skip("tape side") else {
        return;
    };
    let stream = channel();
    let endpoint = connect(&worker, &stream);
    let tape = Tape::start(CELL).unwrap();
    let bytes = tape.take_fill(CELL, 7u8).unwrap();
    let from = tape.offset_of(bytes.as_ptr()).unwrap();
    let registration = worker.register(tape.block()).unwrap();
    let remote = accept(&endpoint, &stream);
    // Over TCP, UCX notices the closed connection at once; over shared memory it cannot (no
    // peer failure detection in UCX 1.13), and the wait's own timeout ends it.
    let bound = if endpoint.detects_peer_failure() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(5)
    };
    let mut died_at = None;
    for round in 0.. {
        // SAFETY: nothing writes the tape; the request is waited for.
        let put = match unsafe { endpoint.put(&registration, from, &remote, 0, CELL) } {
            Ok(put) => put,
            Err(err) => {
                println!("the transfer failed to start after the peer exited: {err}");
                break;
            }
        };
        if round == 0 {
            send_u64(&stream, 0); // "exit now"
            died_at = Some(Instant::now());
        }
        match put.wait(bound) {
            Ok(()) => {}
            Err(err) => {
                assert!(
                    matches!(err, ucx::Error::Failed { .. } | ucx::Error::TimedOut { .. }),
                    "{err:?}"
                );
                println!("the transfer failed after the peer exited: {err}");
                break;
            }
        }
        let since = died_at.unwrap().elapsed();
        assert!(
            since < bound,
            "puts kept succeeding for {since:?} after the peer exited"
        );
    }
    let since = died_at.unwrap().elapsed();
    assert!(since < bound + Duration::from_secs(5), "took {since:?}");
    assert!(endpoint.flush(Duration::from_secs(10)).is_err());
    println!("the transfer failed {since:?} after the peer was told to exit");
}

/// Offers its grid and exits, without closing anything, as soon as a put has started.
#[test]
#[ignore = "a child of a_peer_that_exits_mid_transfer_fails_the_transfer_in_bounded_time"]
fn child_grid_side_that_dies() {
    let Some(worker) = worker_or_skip("grid side") else {
        return;
    };
    let stream = channel();
    let _endpoint = connect(&worker, &stream);
    let grid = Grid::<CELL, 1>::new().unwrap();
    let registration = worker.register(grid.block()).unwrap();
    offer(&registration, &stream);
    recv_u64(&stream, &worker);
    println!("the grid side exits mid-transfer");
    std::process::exit(0);
}

/// The library a child of [`only_new_from_env_reads_the_variable`] is pointed at.
const NO_LIBRARY: &str = "/nonexistent/unimem-test/libucp.so.0";

/// Safe code can set environment variables, so the safe `Worker::new` must not open what one
/// names: only the unsafe `Worker::new_from_env` does (in a child, whose environment is its own).
#[test]
fn only_new_from_env_reads_the_variable() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_reads_the_variable_only_unsafely",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("UNIMEM_UCX_LIBRARY", NO_LIBRARY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(out, CHILD_LIMIT);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the child failed:\n{text}");
    assert!(
        text.contains("the variable was read only unsafely"),
        "{text}"
    );
}

#[test]
#[ignore = "run by only_new_from_env_reads_the_variable, in a process of its own"]
fn child_reads_the_variable_only_unsafely() {
    assert_eq!(
        std::env::var("UNIMEM_UCX_LIBRARY").as_deref(),
        Ok(NO_LIBRARY)
    );
    match Worker::new() {
        // UCX is installed: the safe call opened it, not the missing file.
        Ok(_) => {}
        Err(ucx::Error::NoLibrary { library, .. }) => assert_eq!(library, "libucp.so.0"),
        Err(other) => panic!("Worker::new: {other}"),
    }
    // SAFETY: the variable names a file that does not exist, so nothing is opened.
    match unsafe { Worker::new_from_env() } {
        Err(ucx::Error::NoLibrary { library, .. }) => assert_eq!(library, NO_LIBRARY),
        Ok(_) => panic!("new_from_env opened {NO_LIBRARY}, which does not exist"),
        Err(other) => panic!("new_from_env: {other}"),
    }
    println!("the variable was read only unsafely");
}
