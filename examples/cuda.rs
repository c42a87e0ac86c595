//! A unimem block is CUDA pinned memory: the GPU writes into a Tape's block and copies from
//! it in place, a second mapping of the block's memfd (what another process would map) sees
//! the GPU's writes, and copies between the GPU and the block run as fast as between the GPU
//! and CUDA's own pinned memory (`cuMemAllocHost`), which takes far longer to set up.
//!
//! ```text
//! cargo run --release --features cuda --example cuda            # 1 GiB
//! cargo run --release --features cuda --example cuda -- 256     # 256 MiB
//! ```
//!
//! Prints a markdown table for the README. Without a GPU it says so and exits 0, or 1 where
//! `UNIMEM_REQUIRE_GPU=1` (as gpu/check.sh sets it); it exits 1 if any word the GPU wrote or
//! copied is wrong. The driver is `libcuda.so.1`, or the library `UNIMEM_CUDA_DRIVER` names
//! (a driver outside the loader's search path; .ci/run points it at the fake driver).

#[cfg(target_os = "linux")]
#[path = "../tests/support/cuda_driver.rs"]
mod cuda_driver;

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("unimem's `cuda` feature is for Linux: nothing to show on this platform");
}

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    linux::main()
}

#[cfg(target_os = "linux")]
mod linux {
    use super::cuda_driver::{Calls, PrimaryContext, check};
    use std::ffi::c_void;
    use std::process::ExitCode;
    use std::time::{Duration, Instant};
    use unimem::cuda::Driver;
    use unimem::share::ReadOnlyBlock;
    use unimem::{Block, Pinning, Tape};

    /// Timed copies per direction; the median is reported.
    const ROUNDS: usize = 5;
    /// What the GPU writes into every word of the block.
    const PATTERN: u32 = 0xC0DE_F00D;

    pub fn main() -> ExitCode {
        let mib: usize = match std::env::args().nth(1).map(|arg| arg.parse()) {
            None => 1024,
            Some(Ok(mib)) if mib > 0 => mib,
            Some(_) => {
                eprintln!("usage: cuda [MiB, default 1024]");
                return ExitCode::FAILURE;
            }
        };
        let size = mib << 20;
        // SAFETY: UNIMEM_CUDA_DRIVER, where set, names a CUDA driver: it is the choice of
        // whoever runs this program, and nothing in it sets variables.
        let driver = match unsafe { Driver::load_from_env() } {
            Ok(driver) => driver,
            Err(why) if std::env::var_os("UNIMEM_REQUIRE_GPU").is_some_and(|v| v == "1") => {
                eprintln!("UNIMEM_REQUIRE_GPU=1, but there is no usable GPU: {why}");
                return ExitCode::FAILURE;
            }
            Err(why) => {
                println!("No GPU here, so nothing to show: {why}");
                return ExitCode::SUCCESS;
            }
        };
        let calls = Calls::new(driver);
        // One context for the whole program, current on this thread, as the CUDA runtime
        // makes it: registrations below use it rather than retaining their own.
        let context = PrimaryContext::enter(&calls);
        let gpu = context.device_name();
        let version = driver.version();
        println!(
            "{gpu}, CUDA driver API {}.{} ({}), {} CPUs; {} MiB per buffer\n",
            version / 1000,
            version % 1000 / 10,
            driver.path(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            mib
        );

        let mut device = 0;
        // SAFETY: a valid out-parameter; the buffer is freed at the end.
        check("cuMemAlloc", unsafe {
            (calls.mem_alloc)(&mut device, size)
        });
        let correct = zero_copy(&calls, device, size);
        let rows = bandwidth(&calls, device, size);
        // SAFETY: `device` came from cuMemAlloc and nothing uses it any more.
        check("cuMemFree", unsafe { (calls.mem_free)(device) });

        print_table(&gpu, mib, &rows);
        if correct {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    /// The GPU writes every word of a Tape's block through its device pointer and copies the
    /// block through it; the CPU and a second mapping check every byte. True if all match.
    fn zero_copy(calls: &Calls, device: u64, size: usize) -> bool {
        let block = Block::options()
            .warm(true)
            .pinning(Pinning::BestEffort)
            .open(size)
            .expect("open the block");
        let tape = Tape::on(block);
        let words = tape.take(size, 4096).expect("the whole tape").as_ptr();
        let count = size / 4;
        let offset = tape.offset_of(words).unwrap();
        let registration = calls
            .driver
            .register(tape.block())
            .expect("register the block");
        // SAFETY: the GPU writes the taken range, which no reference covers; the CPU reads it
        // only after the synchronisation.
        unsafe {
            check(
                "cuMemsetD32",
                (calls.memset_d32)(registration.device_ptr_at(offset), PATTERN, count),
            );
            check("cuCtxSynchronize", (calls.ctx_synchronize)());
        }
        // SAFETY: the GPU is done; nothing writes the words while this view lives.
        let seen = unsafe { std::slice::from_raw_parts(words.cast::<u32>(), count) };
        let wrong_here = seen.iter().filter(|&&word| word != PATTERN).count();
        let mirror = second_mapping(tape.block());
        // SAFETY: nothing writes the block while this view lives.
        let mirrored = unsafe { &mirror.as_slice()[offset..offset + size] };
        let wrong_there = mirrored
            .chunks_exact(4)
            .filter(|word| *word != PATTERN.to_ne_bytes())
            .count();
        println!(
            "The GPU wrote {count} words through the device pointer (cuMemsetD32): {} wrong as \
             the CPU reads them, {} wrong through a second mapping of the memfd.",
            wrong_here, wrong_there
        );

        // Now the CPU writes, and the GPU copies the block through its device pointer.
        // SAFETY: the GPU is idle; the CPU has the words to itself.
        let words = unsafe { std::slice::from_raw_parts_mut(words.cast::<u32>(), count) };
        for (i, word) in words.iter_mut().enumerate() {
            *word = (i as u32).wrapping_mul(2_654_435_761);
        }
        let mut back = vec![0u32; count];
        // SAFETY: the GPU reads the block (nothing writes it meanwhile) and writes `back`,
        // which is ours and `size` bytes long.
        unsafe {
            check(
                "cuMemcpyDtoD",
                (calls.memcpy_dtod)(device, registration.device_ptr_at(offset), size),
            );
            check(
                "cuMemcpyDtoH",
                (calls.memcpy_dtoh)(back.as_mut_ptr().cast(), device, size),
            );
        }
        let wrong_copied = back
            .iter()
            .zip(words.iter())
            .filter(|(a, b)| a != b)
            .count();
        println!(
            "The GPU copied the block through the device pointer (cuMemcpyDtoD): {wrong_copied} \
             of {count} words wrong.\n"
        );
        wrong_here == 0 && wrong_there == 0 && wrong_copied == 0
    }

    /// The block mapped a second time, read-only, from its memfd: what another process that
    /// was sent the descriptor sees.
    fn second_mapping(block: &Block) -> ReadOnlyBlock {
        // SAFETY: the new descriptor is only mapped read-only, here, and dropped with the map.
        let fd = unsafe { block.export_fd() }.expect("clone the memfd");
        ReadOnlyBlock::from_fd(fd).expect("map the memfd again")
    }

    struct Row {
        what: &'static str,
        to_gpu: f64,
        from_gpu: f64,
        setup: Option<String>,
    }

    fn bandwidth(calls: &Calls, device: u64, size: usize) -> Vec<Row> {
        let mut rows = Vec::new();

        let mut pageable = vec![1u8; size];
        let (to_gpu, from_gpu) = copies(calls, device, pageable.as_mut_ptr(), size);
        drop(pageable);
        rows.push(Row {
            what: "`Vec`, pageable",
            to_gpu,
            from_gpu,
            setup: None,
        });

        let start = Instant::now();
        let mut host = std::ptr::null_mut::<c_void>();
        // SAFETY: a valid out-parameter; freed below.
        check("cuMemAllocHost", unsafe {
            (calls.mem_alloc_host)(&mut host, size)
        });
        let setup = start.elapsed();
        let (to_gpu, from_gpu) = copies(calls, device, host.cast(), size);
        // SAFETY: `host` came from cuMemAllocHost; the copies are done.
        check("cuMemFreeHost", unsafe { (calls.mem_free_host)(host) });
        rows.push(Row {
            what: "`cuMemAllocHost` (CUDA's own pinned memory)",
            to_gpu,
            from_gpu,
            setup: Some(ms(setup)),
        });

        for (warm, what) in [
            (true, "unimem Block, warm + `cuMemHostRegister`"),
            (false, "unimem Block, lazy + `cuMemHostRegister`"),
        ] {
            let start = Instant::now();
            let block = Block::options()
                .warm(warm)
                .pinning(Pinning::BestEffort)
                .open(size)
                .expect("open the block");
            let opened = start.elapsed();
            let registration = calls.driver.register(&block).expect("register the block");
            let setup = start.elapsed();
            let (to_gpu, from_gpu) = copies(calls, device, block.as_ptr(), size);
            drop(registration);
            rows.push(Row {
                what,
                to_gpu,
                from_gpu,
                setup: Some(format!(
                    "{} (open {} + register {})",
                    ms(setup),
                    ms(opened),
                    ms(setup - opened)
                )),
            });
        }
        rows
    }

    /// Median GB/s of `ROUNDS` copies of `size` bytes host→GPU and GPU→host, after one
    /// untimed round each.
    fn copies(calls: &Calls, device: u64, host: *mut u8, size: usize) -> (f64, f64) {
        let time = |to_gpu: bool| {
            let start = Instant::now();
            // SAFETY: `host` and `device` are `size` bytes each, and nothing else uses
            // either during the copy (synchronous, and synchronised again).
            unsafe {
                if to_gpu {
                    check(
                        "cuMemcpyHtoD",
                        (calls.memcpy_htod)(device, host.cast(), size),
                    );
                } else {
                    check(
                        "cuMemcpyDtoH",
                        (calls.memcpy_dtoh)(host.cast(), device, size),
                    );
                }
                check("cuCtxSynchronize", (calls.ctx_synchronize)());
            }
            start.elapsed()
        };
        let rate = |to_gpu: bool| {
            time(to_gpu);
            let mut rounds: Vec<Duration> = (0..ROUNDS).map(|_| time(to_gpu)).collect();
            rounds.sort();
            size as f64 / rounds[ROUNDS / 2].as_secs_f64() / 1e9
        };
        (rate(true), rate(false))
    }

    fn ms(duration: Duration) -> String {
        let ms = duration.as_secs_f64() * 1e3;
        if ms < 10.0 {
            format!("{ms:.1} ms")
        } else {
            format!("{ms:.0} ms")
        }
    }

    fn print_table(gpu: &str, mib: usize, rows: &[Row]) {
        let size = if mib % 1024 == 0 {
            format!("{} GiB", mib / 1024)
        } else {
            format!("{mib} MiB")
        };
        println!("On {gpu}:\n");
        println!("| host memory, {size} | host→GPU GB/s | GPU→host GB/s | setup |");
        println!("|---|---|---|---|");
        for row in rows {
            println!(
                "| {} | {:.1} | {:.1} | {} |",
                row.what,
                row.to_gpu,
                row.from_gpu,
                row.setup.as_deref().unwrap_or("—")
            );
        }
        let reference = &rows[1];
        for row in &rows[2..] {
            let to = row.to_gpu / reference.to_gpu * 100.0;
            let from = row.from_gpu / reference.from_gpu * 100.0;
            let within = (to - 100.0).abs() <= 5.0 && (from - 100.0).abs() <= 5.0;
            println!(
                "\n{}: {to:.1}% (host→GPU) and {from:.1}% (GPU→host) of cuMemAllocHost's \
                 bandwidth: {}",
                row.what,
                if within { "within 5%" } else { "NOT within 5%" }
            );
        }
    }
}
