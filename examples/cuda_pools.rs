//! What registering a large pool with CUDA costs, per GiB: a warm block of 4 KiB pages against
//! one of huge pages (hugetlb, or transparent huge pages where the pool has no room), each
//! registered whole and in chunks of at most 256 MiB cut on 2 MiB.
//!
//! ```text
//! cargo run --release --features cuda --example cuda_pools            # 1 GiB
//! cargo run --release --features cuda --example cuda_pools -- 4096    # 4 GiB
//! ```
//!
//! Huge pages need the kernel's knobs (as root: `sysctl vm.nr_hugepages=N`, or `echo advise >
//! /sys/kernel/mm/transparent_hugepage/shmem_enabled`); the table says what each block got.
//! Prints a markdown table for the README. Without a GPU it says so and exits 0.

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("unimem's `cuda` feature is for Linux: nothing to show on this platform");
}

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    use std::process::ExitCode;
    use std::time::Instant;
    use unimem::cuda::{Chunking, Driver};
    use unimem::{Block, HugePages, Pinning};

    let mib: usize = match std::env::args().nth(1).map(|arg| arg.parse()) {
        None => 1024,
        Some(Ok(mib)) if mib > 0 => mib,
        Some(_) => {
            eprintln!("usage: cuda_pools [MiB, default 1024]");
            return ExitCode::FAILURE;
        }
    };
    let size = mib << 20;
    // SAFETY: UNIMEM_CUDA_DRIVER, where set, names a CUDA driver: it is the choice of whoever
    // runs this program, and nothing in it sets variables.
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
    let per_gib = |ms: f64| ms * 1024.0 / mib as f64;
    println!("| {mib} MiB, warm | pages | open | register whole | register in chunks |");
    println!("|---|---|---|---|---|");
    for (label, huge) in [
        ("4 KiB pages", HugePages::Off),
        ("huge pages", HugePages::BestEffort),
    ] {
        let start = Instant::now();
        let block = match Block::options()
            .huge_pages(huge)
            .pinning(Pinning::Off)
            .warm(true)
            .open(size)
        {
            Ok(block) => block,
            Err(why) => {
                eprintln!("{label}: {why}");
                return ExitCode::FAILURE;
            }
        };
        let open = start.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        match driver.register(&block) {
            Ok(registration) => drop(registration),
            Err(why) => {
                eprintln!("{label}: registering {mib} MiB whole: {why}");
                return ExitCode::FAILURE;
            }
        }
        let whole = start.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        let chunking = Chunking::new(2 << 20, 256 << 20);
        match driver.register_chunks(&block, 0..block.len(), chunking) {
            Ok(chunks) => drop(chunks),
            Err(why) => {
                eprintln!("{label}: registering {mib} MiB in chunks: {why}");
                return ExitCode::FAILURE;
            }
        }
        let chunked = start.elapsed().as_secs_f64() * 1e3;
        println!(
            "| {label} | {} KiB | {:.0} ms/GiB | {:.0} ms/GiB | {:.0} ms/GiB |",
            block.page_size() / 1024,
            per_gib(open),
            per_gib(whole),
            per_gib(chunked),
        );
    }
    ExitCode::SUCCESS
}
