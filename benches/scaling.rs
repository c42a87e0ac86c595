//! How takes scale with threads: takes per second of 64-byte pieces for 1, 2, 4 … threads, up
//! to what the machine offers, through each of unimem's allocators and two references.
//!
//! ```text
//! cargo run --release -p unimem-bench --example scaling
//! ```
//!
//! - `Tape::take`: every thread takes from one shared tape, through its own chunk of it.
//! - `Lane::take`: every thread takes through a lane of its own on one shared tape.
//! - `Grid take/give`: every thread takes a 64-byte cell of one shared grid and gives it back.
//! - `Stash take/give`: the same through a stash of its own.
//! - `bumpalo`: one arena per thread (no sharing at all), reset when full.
//! - `malloc`: `malloc` and `free` of every piece, the system allocator's per-thread caches.
//!
//! Each row prints the total takes per second and what one take costs one thread. A
//! structure that scales keeps the cost per take flat as threads are added; on a machine with
//! fewer cores than threads, or busy with other work, no row can.

use bumpalo::Bump;
use core::alloc::Layout;
use core::ptr::NonNull;
use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};
use unimem::{Block, Grid, Pinning, Tape};

const SIZE: usize = 64;
const ALIGN: usize = 8;
/// Takes per thread per round.
const TAKES: usize = 1 << 20;
/// Rounds per row; the fastest counts, as the one least disturbed by anything else running.
const ROUNDS: usize = 3;
/// Each thread's share of a tape, or its bumpalo arena, before it is cleared or reset.
const ARENA: usize = 16 << 20;

type Cells = Grid<SIZE, 4096>;

fn main() {
    let most = thread::available_parallelism().map_or(1, |n| n.get());
    let mut counts: Vec<usize> = (0..).map(|p| 1 << p).take_while(|&n| n < most).collect();
    counts.push(most);
    println!(
        "takes of {SIZE} B, {TAKES} per thread per round; {most} threads available\n\
         {:<18} {:>7} {:>16} {:>14}",
        "", "threads", "takes/s", "ns/take/thread"
    );
    let grid = Cells::with_options(Block::options().pinning(Pinning::BestEffort))
        .expect("memory for the grid");
    for &threads in &counts {
        let mut tape = tape(threads);
        report("Tape::take", threads, || {
            let shared = &tape;
            let elapsed = run(threads, |_| {
                |_| _ = black_box(shared.take(SIZE, ALIGN).expect("room for every take"))
            });
            tape.clear();
            elapsed
        });
        report("Lane::take", threads, || {
            let elapsed = run_lanes(&tape, threads);
            tape.clear();
            elapsed
        });
        row("Grid take/give", threads, |_| {
            let cell = grid.take().expect("a cell per thread");
            black_box(cell.as_ptr());
            grid.give(cell);
        });
        report("Stash take/give", threads, || run_stashes(&grid, threads));
        report("bumpalo", threads, || run_bumpalo(threads));
        row("malloc", threads, |_| {
            // SAFETY: any size may be asked for; the result is checked before use.
            let ptr = NonNull::new(unsafe { libc::malloc(SIZE) }).expect("malloc");
            black_box(ptr);
            // SAFETY: allocated just above, freed once.
            unsafe { libc::free(ptr.as_ptr()) };
        });
        println!();
    }
}

/// A tape with room for one round of takes of `threads` threads, chunks included, resident.
fn tape(threads: usize) -> Tape {
    let block = Block::options()
        .warm(true)
        .pinning(Pinning::BestEffort)
        .open(threads * (TAKES * SIZE + (1 << 20)));
    Tape::on(block.expect("memory for the tape"))
}

/// Runs `take` `TAKES` times on each of `threads` threads and prints the rate.
fn row(name: &str, threads: usize, take: impl Fn(usize) + Sync) {
    report(name, threads, || run(threads, |_| &take));
}

/// Starts `threads` threads, each preparing its own taker with `make` (untimed), then runs
/// it `TAKES` times on each, all released at once. The time is from the first thread's start
/// to the last thread's end, as the threads themselves read the clock.
fn run<T: FnMut(usize)>(threads: usize, make: impl Fn(usize) -> T + Sync) -> Duration {
    let start = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (start, make) = (&start, &make);
                s.spawn(move || {
                    let mut take = make(t);
                    start.wait();
                    let began = Instant::now();
                    for i in 0..TAKES {
                        take(i);
                    }
                    (began, Instant::now())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a worker panicked"))
            .collect()
    });
    let first = spans.iter().map(|s| s.0).min().expect("a thread");
    let last = spans.iter().map(|s| s.1).max().expect("a thread");
    last - first
}

fn run_lanes(tape: &Tape, threads: usize) -> Duration {
    run(threads, |_| {
        let mut lane = tape.lane();
        move |_| _ = black_box(lane.take(SIZE, ALIGN).expect("room for every take"))
    })
}

fn run_stashes(grid: &Cells, threads: usize) -> Duration {
    run(threads, |_| {
        let mut stash = grid.stash();
        move |_| {
            let cell = stash.take().expect("a cell per thread");
            black_box(cell.as_ptr());
            stash.give(cell);
        }
    })
}

fn run_bumpalo(threads: usize) -> Duration {
    let layout = Layout::from_size_align(SIZE, ALIGN).expect("a valid layout");
    run(threads, |_| {
        let mut bump = Bump::with_capacity(ARENA);
        // No second chunk: when this one is full it is reset, as a tape is cleared.
        bump.set_allocation_limit(Some(bump.allocated_bytes()));
        move |_| {
            let ptr = match bump.try_alloc_layout(layout) {
                Ok(ptr) => ptr,
                Err(_) => {
                    bump.reset();
                    bump.try_alloc_layout(layout).expect("an empty arena")
                }
            };
            black_box(ptr);
        }
    })
}

/// Prints the rate of the fastest of `ROUNDS` runs of `round`.
fn report(name: &str, threads: usize, mut round: impl FnMut() -> Duration) {
    let elapsed = (0..ROUNDS)
        .map(|_| round())
        .min()
        .expect("at least one round");
    let takes = (threads * TAKES) as f64;
    let per_second = takes / elapsed.as_secs_f64();
    let ns = elapsed.as_secs_f64() * 1e9 / TAKES as f64;
    println!("{name:<18} {threads:>7} {per_second:>16.0} {ns:>14.2}");
}
