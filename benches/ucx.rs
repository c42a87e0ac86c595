//! Put bandwidth through UCX, 64 MiB at a time, from a registered Block into another process's
//! registered Block, beside `ucx_perftest -t ucp_put_bw` with the same size and transport in
//! the same run: over TCP on loopback and over shared memory.
//!
//! `cargo bench -p unimem-bench --bench ucx`
//!
//! The benchmark starts itself again as the target process (which only drives its worker, as
//! `ucx_perftest`'s server does), and `ucx_perftest` as server and client once per measurement.
//! Both report the time of one 64 MiB put; UCX completes a put when its buffer may be reused,
//! and each measurement ends with a flush, so every byte has landed. Where UCX or
//! `ucx_perftest` is missing, it says so and measures nothing.
#![allow(missing_docs, reason = "a benchmark binary")]

#[cfg(target_os = "linux")]
mod support;

#[cfg(target_os = "linux")]
mod linux {
    use criterion::Criterion;
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};
    use unimem::Block;
    use unimem::ucx::Worker;

    const SIZE: usize = 64 << 20;
    const WAIT: Duration = Duration::from_secs(120);
    /// Set in the target process: run as the target.
    const TARGET_ENV: &str = "UNIMEM_UCX_BENCH_TARGET";
    /// Shared memory is `posix` plus `cma`: UCX's posix and sysv domains only share memory that
    /// UCX allocated itself (`ucx_info -d`: "allocate", no "register"), so a put into memory
    /// registered by address (a Block) is zero-copy only through CMA (`process_vm_writev`);
    /// over posix alone it travels as messages, at a fraction of the speed.
    const TRANSPORTS: [(&str, &str); 2] = [("tcp", "tcp"), ("shm", "posix,cma,self")];

    fn send(stream: &UnixStream, bytes: &[u8]) {
        let mut stream = stream;
        stream
            .write_all(&(bytes.len() as u64).to_ne_bytes())
            .unwrap();
        stream.write_all(bytes).unwrap();
    }

    /// Whether a message is waiting; `None` when the peer hung up.
    fn ready(stream: &UnixStream) -> Option<bool> {
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
            0 => None,
            1 => Some(true),
            _ => Some(false),
        }
    }

    fn recv(stream: &UnixStream, worker: &Worker) -> Vec<u8> {
        let start = Instant::now();
        while ready(stream) != Some(true) {
            assert!(ready(stream).is_some(), "the peer hung up");
            assert!(start.elapsed() < WAIT, "the peer is silent");
            worker.progress();
        }
        let mut stream = stream;
        let mut len = [0; 8];
        stream.read_exact(&mut len).unwrap();
        let mut bytes = vec![0; u64::from_ne_bytes(len) as usize];
        stream.read_exact(&mut bytes).unwrap();
        bytes
    }

    /// The target process: registers a block, hands out its key, and drives its worker until
    /// the initiator hangs up.
    pub fn target() {
        let worker = Worker::new().unwrap();
        let stream = UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned().unwrap());
        let block = Block::options().warm(true).open(SIZE).unwrap();
        let registration = worker.register(&block).unwrap();
        send(&stream, &worker.address().unwrap());
        let peer = recv(&stream, &worker);
        // SAFETY: the initiator's Worker::address.
        let _endpoint = unsafe { worker.connect(&peer) }.unwrap();
        // SAFETY: nothing in this process touches the block's bytes.
        send(&stream, &unsafe { registration.remote_key() }.unwrap());
        send(&stream, &registration.address().to_ne_bytes());
        while ready(&stream).is_some() {
            for _ in 0..64 {
                worker.progress();
            }
        }
    }

    /// `ucx_perftest`'s time for `iters` puts of `SIZE` over `tls`, from its own report.
    fn perftest(tls: &str, iters: u64) -> Duration {
        let port = 20000 + (std::process::id() % 20000) as u16;
        let mut server = Command::new("ucx_perftest")
            .args(["-p", &port.to_string()])
            .env("UCX_TLS", tls)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let report = loop {
            std::thread::sleep(Duration::from_millis(200));
            let out = Command::new("ucx_perftest")
                .args(["-t", "ucp_put_bw", "-s", &SIZE.to_string()])
                .args(["-n", &iters.max(2).to_string(), "-p", &port.to_string()])
                .arg("127.0.0.1")
                .env("UCX_TLS", tls)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && text.contains("Final:") {
                break text;
            }
            assert!(start.elapsed() < WAIT, "ucx_perftest failed: {text}");
        };
        let _ = server.wait();
        // "Final: iterations p50 average overall bw-average bw-overall ...", in µs and MB/s.
        let fields: Vec<&str> = report
            .lines()
            .find(|line| line.starts_with("Final:"))
            .unwrap()
            .split_whitespace()
            .collect();
        let overall_us: f64 = fields[4].parse().unwrap();
        Duration::from_secs_f64(overall_us * 1e-6 * iters as f64)
    }

    pub fn benches(c: &mut Criterion) {
        if let Err(err) = Worker::new() {
            println!("SKIPPED ucx benchmarks: {err}");
            return;
        }
        if Command::new("ucx_perftest").arg("-h").output().is_err() {
            println!("SKIPPED ucx benchmarks: no ucx_perftest (apt-get install ucx-utils)");
            return;
        }
        for (name, tls) in TRANSPORTS {
            let (here, there) = UnixStream::pair().unwrap();
            let mut child: Child = Command::new(std::env::current_exe().unwrap())
                .env(TARGET_ENV, "1")
                .env("UCX_TLS", tls)
                .stdin(Stdio::from(OwnedFd::from(there)))
                .spawn()
                .unwrap();
            // SAFETY: the benchmark runs on this one thread; nothing reads the environment
            // concurrently. UCX reads UCX_TLS when the worker's context is made, just below.
            unsafe { std::env::set_var("UCX_TLS", tls) };
            let worker = Worker::new().unwrap();
            let block = Block::options().warm(true).open(SIZE).unwrap();
            let registration = worker.register(&block).unwrap();
            let peer = recv(&here, &worker);
            send(&here, &worker.address().unwrap());
            // SAFETY: the target's Worker::address.
            let endpoint = unsafe { worker.connect(&peer) }.unwrap();
            let key = recv(&here, &worker);
            let base = u64::from_ne_bytes(recv(&here, &worker).try_into().unwrap());
            // SAFETY: the target's packed key for its registration of SIZE bytes at `base`.
            let remote = unsafe { endpoint.remote(&key, base, SIZE) }.unwrap();

            let mut group = c.benchmark_group(format!("ucx_put_64MiB_{name}"));
            group.sample_size(10);
            group.throughput(criterion::Throughput::Bytes(SIZE as u64));
            group.bench_function("unimem", |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        // SAFETY: nothing writes the block; the request is waited for.
                        let put = unsafe { endpoint.put(&registration, 0, &remote, 0, SIZE) };
                        put.unwrap().wait(WAIT).unwrap();
                    }
                    endpoint.flush(WAIT).unwrap();
                    start.elapsed()
                })
            });
            group.bench_function("ucx_perftest", |b| {
                b.iter_custom(|iters| perftest(tls, iters))
            });
            group.finish();
            drop(remote);
            drop(endpoint);
            drop(here);
            let _ = child.wait();
        }
    }
}

#[cfg(target_os = "linux")]
fn main() {
    if std::env::var_os("UNIMEM_UCX_BENCH_TARGET").is_some() {
        linux::target();
        return;
    }
    let mut c = support::config().configure_from_args();
    linux::benches(&mut c);
    c.final_summary();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("unimem wraps UCX on Linux only: nothing to measure");
}
