//! A take+give cycle of a 4 KiB buffer: through a Grid, through a Stash, and through the
//! allocators a program would otherwise use.
//!
//! Groups (read by `examples/bench_table.rs` for the README table):
//! - `grid_cycle_4KiB`: one thread; `grid`, `stash`, `malloc` (+`free`), `box`
//!   (`Box<[u8; 4096]>`), `vec` (`Vec::with_capacity(4096)`), `mutex_freelist` (a
//!   `Mutex<Vec<usize>>` of free cell indices over a Block) and `mmap` (+`munmap`).
//! - `grid_cycle_4KiB_2threads`: `grid`, `stash`, `malloc` and `mutex_freelist` on two threads
//!   at once, each running the measured number of cycles; the time is per cycle of one thread,
//!   so it compares directly with the one-thread figure.
//!
//! Every cycle writes one byte of its buffer (volatile), so that nothing can be optimised away
//! and every contender pays for reaching its memory.

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

mod support;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use std::ptr;
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use unimem::{Block, Grid, Pinning};

const CELL: usize = 4096;
/// Cells enough for every word of the bitmap to be a different thread's first word.
const CELLS: usize = 1024;

type CellGrid = Grid<CELL, CELLS>;

/// Writes one byte at `p`, which must point into a live buffer of this cycle.
#[inline(always)]
fn touch(p: *mut u8) {
    // SAFETY: every caller passes the start of a buffer it owns for the current cycle.
    unsafe { p.write_volatile(1) };
}

/// A lock-protected stack of free cell indices over a Block: the textbook fixed-size pool.
struct MutexFreeList {
    cells: Block,
    free: Mutex<Vec<usize>>,
}

impl MutexFreeList {
    fn new() -> MutexFreeList {
        MutexFreeList {
            cells: unpinned_block(CELL * CELLS),
            free: Mutex::new((0..CELLS).collect()),
        }
    }

    fn cycle(&self) {
        let index = self.free.lock().unwrap().pop().expect("a free cell");
        // In bounds: index < CELLS and the block holds CELL × CELLS bytes.
        touch(self.cells.as_ptr().wrapping_add(index * CELL));
        self.free.lock().unwrap().push(index);
    }
}

fn unpinned_block(len: usize) -> Block {
    Block::options()
        .pinning(Pinning::BestEffort)
        .open(len)
        .unwrap()
}

/// The contenders, each as a maker of its per-thread cycle.
fn grid_cycle(grid: &CellGrid) -> impl FnMut() + '_ {
    move || {
        let mut cell = grid.take().expect("a free cell");
        touch(cell.as_mut_ptr());
    }
}

fn stash_cycle(grid: &CellGrid) -> impl FnMut() + '_ {
    let mut stash = grid.stash();
    move || {
        let mut cell = stash.take().expect("a free cell");
        touch(cell.as_mut_ptr());
        stash.give(cell);
    }
}

fn malloc_cycle() {
    // SAFETY: a fresh allocation of CELL bytes, checked, written once and freed once.
    unsafe {
        let p = libc::malloc(CELL).cast::<u8>();
        assert!(!p.is_null());
        touch(p);
        libc::free(p.cast());
    }
}

fn box_cycle() {
    let mut buffer = Box::<[u8; CELL]>::new_uninit();
    touch(buffer.as_mut_ptr().cast());
}

fn vec_cycle() {
    let mut buffer = Vec::<u8>::with_capacity(CELL);
    touch(buffer.as_mut_ptr());
}

fn mmap_cycle() {
    // SAFETY: a fresh private mapping of one page, checked, written once and unmapped once.
    unsafe {
        let p = libc::mmap(
            ptr::null_mut(),
            CELL,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        touch(p.cast());
        assert_eq!(libc::munmap(p, CELL), 0);
    }
}

/// Measures the cycle `make` builds, on one thread or on two at once.
fn bench_cycle<C: FnMut()>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    threads: usize,
    make: impl Fn() -> C + Sync,
) {
    if threads == 1 {
        group.bench_function(name, |b| {
            let mut cycle = make();
            b.iter(&mut cycle);
        });
        return;
    }
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start_line = Barrier::new(threads);
            thread::scope(|s| {
                let runners: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            let mut cycle = make();
                            start_line.wait();
                            let start = Instant::now();
                            for _ in 0..iters {
                                cycle();
                            }
                            start.elapsed()
                        })
                    })
                    .collect();
                runners
                    .into_iter()
                    .map(|runner| runner.join().unwrap())
                    .max()
                    .unwrap_or(Duration::ZERO)
            })
        })
    });
}

fn cycles(c: &mut Criterion) {
    let grid = CellGrid::with_options(Block::options().pinning(Pinning::BestEffort)).unwrap();
    let freelist = MutexFreeList::new();

    let mut one = c.benchmark_group("grid_cycle_4KiB");
    bench_cycle(&mut one, "grid", 1, || grid_cycle(&grid));
    bench_cycle(&mut one, "stash", 1, || stash_cycle(&grid));
    bench_cycle(&mut one, "malloc", 1, || malloc_cycle);
    bench_cycle(&mut one, "box", 1, || box_cycle);
    bench_cycle(&mut one, "vec", 1, || vec_cycle);
    bench_cycle(&mut one, "mutex_freelist", 1, || || freelist.cycle());
    bench_cycle(&mut one, "mmap", 1, || mmap_cycle);
    one.finish();

    let mut two = c.benchmark_group("grid_cycle_4KiB_2threads");
    bench_cycle(&mut two, "grid", 2, || grid_cycle(&grid));
    bench_cycle(&mut two, "stash", 2, || stash_cycle(&grid));
    bench_cycle(&mut two, "malloc", 2, || malloc_cycle);
    bench_cycle(&mut two, "mutex_freelist", 2, || || freelist.cycle());
    two.finish();
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = cycles
}
criterion_main!(benches);
