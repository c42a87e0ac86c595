//! One process writes a forward pass's output from its tape straight into another process's
//! grid cell, with one UCX `put`; the other checks it.
//!
//! `cargo run --release --features ucx --example ucx`
//!
//! The parent starts this program again as its child, with a Unix socket as the child's
//! stdin, over which they swap UCX worker addresses and the child's remote key. UCX picks the
//! transport (shared memory here; TCP or RDMA between machines): set `UCX_TLS=tcp` to try TCP
//! on loopback. Where UCX is not installed it says so and exits 0.

#![cfg_attr(
    not(target_os = "linux"),
    allow(dead_code, reason = "UCX is wrapped on Linux only")
)]

use std::process::ExitCode;

/// A layer of `OUT` neurons over `IN` inputs.
const IN: usize = 512;
const OUT: usize = 4096;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The forward pass both sides can compute: `relu(W x + b)` with fixed weights, so the child
/// knows what must arrive.
fn forward(out: &mut [f32]) {
    let weight = |o: usize, i: usize| ((o * 31 + i * 17) % 97) as f32 / 97.0 - 0.5;
    let input = |i: usize| (i % 13) as f32 * 0.25 - 1.0;
    for (o, y) in out.iter_mut().enumerate() {
        let sum: f32 = (0..IN).map(|i| weight(o, i) * input(i)).sum();
        *y = (sum + 0.01 * o as f32).max(0.0);
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ucx: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn run() -> Result<()> {
    println!("ucx: unimem wraps UCX on Linux only; nothing to show here");
    Ok(())
}

#[cfg(target_os = "linux")]
fn run() -> Result<()> {
    // SAFETY: UNIMEM_UCX_LIBRARY, where set, names UCX's libucp.so.0 (or, as .ci/run sets it
    // to show the message for a machine without UCX, a file that does not exist).
    match unsafe { unimem::ucx::Worker::new_from_env() } {
        Err(err @ unimem::ucx::Error::NoLibrary { .. }) => {
            println!("ucx: UCX is not installed, so there is nothing to show: {err}");
            Ok(())
        }
        Err(err) => Err(err.into()),
        Ok(worker) => match std::env::args().nth(1).as_deref() {
            Some("child") => linux::child(worker),
            _ => linux::parent(worker),
        },
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{OUT, Result, forward};
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    use unimem::ucx::Worker;
    use unimem::{Grid, Tape};

    const WAIT: Duration = Duration::from_secs(30);

    fn send(stream: &UnixStream, bytes: &[u8]) -> Result<()> {
        let mut stream = stream;
        stream.write_all(&(bytes.len() as u64).to_ne_bytes())?;
        stream.write_all(bytes)?;
        Ok(())
    }

    /// One message, driving `worker` while none has come: over TCP and shared memory UCX
    /// carries the peer's puts as messages this side's worker must handle.
    fn recv(stream: &UnixStream, worker: &Worker) -> Result<Vec<u8>> {
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
                0 => return Err("the other side hung up".into()),
                1 => break,
                _ if start.elapsed() > WAIT => return Err("the other side is silent".into()),
                _ => {
                    worker.progress();
                }
            }
        }
        let mut stream = stream;
        let mut len = [0; 8];
        stream.read_exact(&mut len)?;
        let mut bytes = vec![0; u64::from_ne_bytes(len) as usize];
        stream.read_exact(&mut bytes)?;
        Ok(bytes)
    }

    fn recv_u64(stream: &UnixStream, worker: &Worker) -> Result<u64> {
        let bytes: [u8; 8] = recv(stream, worker)?
            .try_into()
            .map_err(|_| "expected a number")?;
        Ok(u64::from_ne_bytes(bytes))
    }

    /// The tape side: runs the forward pass on its tape and puts the output into the child's
    /// grid cell.
    pub(super) fn parent(worker: Worker) -> Result<()> {
        let (here, there) = UnixStream::pair()?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("child")
            .stdin(Stdio::from(OwnedFd::from(there)))
            .spawn()?;

        let tape = Tape::start(4 << 20)?;
        let output = tape.take_fill(OUT, 0.0f32).ok_or("the tape is full")?;
        forward(output);
        let offset = tape.offset_of(output.as_ptr()).ok_or("not on the tape")?;
        let bytes = size_of_val(output);
        let registration = worker.register(tape.block())?;

        send(&here, &worker.address()?)?;
        let peer = recv(&here, &worker)?;
        // SAFETY: what the child's Worker::address gave.
        let endpoint = unsafe { worker.connect(&peer)? };
        let key = recv(&here, &worker)?;
        let base = recv_u64(&here, &worker)?;
        let len = recv_u64(&here, &worker)? as usize;
        let cell = recv_u64(&here, &worker)? as usize;
        // SAFETY: the child's packed key for its registration of `len` bytes at `base`.
        let remote = unsafe { endpoint.remote(&key, base, len)? };

        let start = Instant::now();
        // SAFETY: nothing writes `output` until the put completes, and it is waited for.
        let put = unsafe { endpoint.put(&registration, offset, &remote, cell, bytes)? };
        put.wait(WAIT)?;
        endpoint.flush(WAIT)?; // the bytes are in the child's cell now
        let took = start.elapsed();
        println!(
            "parent {}: put the layer's {OUT} outputs ({bytes} bytes) from tape offset {offset} \
             into the child's cell at {cell}, one put, in {took:?}",
            std::process::id()
        );
        send(&here, &(bytes as u64).to_ne_bytes())?;
        let verdict = recv(&here, &worker)?;
        drop(remote);
        drop(endpoint);
        let status = child.wait()?;
        if verdict != b"ok" || !status.success() {
            return Err(format!("the child did not confirm the output ({status})").into());
        }
        println!("parent: the child checked every value");
        Ok(())
    }

    /// The grid side: offers a cell, waits for the output, checks it.
    pub(super) fn child(worker: Worker) -> Result<()> {
        let stream = UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned()?);
        let grid = Grid::<{ 64 << 10 }, 8>::new()?;
        let _taken_by_someone_else = grid.take().ok_or("the grid is full")?;
        let mut cell = grid.take().ok_or("the grid is full")?;
        let registration = worker.register(grid.block())?;

        send(&stream, &worker.address()?)?;
        let peer = recv(&stream, &worker)?;
        // SAFETY: what the parent's Worker::address gave.
        let _endpoint = unsafe { worker.connect(&peer)? };
        // SAFETY: the parent writes only the cell it is told of, and only before it says it is
        // done; this side reads the cell only after that.
        send(&stream, &unsafe { registration.remote_key()? })?;
        send(&stream, &registration.address().to_ne_bytes())?;
        send(&stream, &(registration.len() as u64).to_ne_bytes())?;
        send(&stream, &(cell.offset() as u64).to_ne_bytes())?;

        let bytes = recv_u64(&stream, &worker)? as usize;
        if bytes != OUT * size_of::<f32>() {
            return Err(format!("{bytes} bytes arrived, expected {}", OUT * 4).into());
        }
        let mut expected = vec![0.0f32; OUT];
        forward(&mut expected);
        let index = cell.index();
        let got = &cell.as_mut_slice_of::<f32>()[..OUT];
        let verdict: &[u8] = if got == expected.as_slice() {
            b"ok"
        } else {
            b"wrong"
        };
        send(&stream, verdict)?;
        if verdict != b"ok" {
            return Err("the output in the cell is not the forward pass's".into());
        }
        println!(
            "child {}: cell {} of the grid holds the parent's {OUT} outputs, every one as \
             computed here (last three {:?})",
            std::process::id(),
            index,
            &got[OUT - 3..]
        );
        Ok(())
    }
}
