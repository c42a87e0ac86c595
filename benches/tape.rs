//! What a take and a clear cost, against the allocators a hot loop would otherwise use.
//!
//! Groups and functions (names kept stable for the README table):
//! - `take_64B`, `take_4KiB`, `take_1MiB`: one allocation of that size, aligned to 8, with one
//!   byte written to it (volatile) so that none can be optimised away. Functions: `tape`
//!   (`Tape::take`, from this thread's chunk of the tape), `lane` (`Lane::take`), `malloc` (`libc::malloc` + `free`), `vec`
//!   (`Vec::with_capacity` + drop), `box` (`Box::new_uninit` + drop), `bumpalo`
//!   (`Bump::try_alloc_layout`), `mmap` (`mmap` + `munmap`, per allocation), and `cas_floor`: a bare compare-exchange loop on one atomic
//!   and the same byte written where it points, the least any shared cursor can cost. The
//!   arenas (tape, lane, bumpalo) hold `max(1 MiB, 8 allocations)` and are reset when full,
//!   inside the timing.
//! - `free_all`: freeing N = 1,000 allocations of 64 B at once: `tape` (`clear` after 1,000
//!   takes), `bumpalo` (`reset` after 1,000 allocations), `malloc` (1,000 `free`s), `vec` and
//!   `box` (dropping 1,000 of them), `munmap` (1,000 one-page mappings). Only the freeing is
//!   timed.
//! - `clear`: `Tape::clear` alone, `after_1_take` and `after_10000_takes` (of 64 B): the same
//!   cost, because a clear never looks at what was taken.
//! - `threads_2`: 2^24 takes of 8 B in all (enough that spawning the threads is noise), on
//!   one thread or split over two, through `Tape::take` on a shared tape (`tape_1_thread`,
//!   `tape_2_threads`) or through one lane per thread (`lane_1_thread`, `lane_2_threads`).
//!   Throughput in takes per second. `examples/scaling.rs` prints the same for every thread
//!   count the machine has.
//! - `take_clear_1`, `take_clear_8`: a step of 1 or 8 takes of 64 B, then a clear, over and
//!   over (a tiny request per step): `tape` (`take` + `clear`), `bumpalo` (`alloc` + `reset`).
//!   Time per step.
//! - `round_robin_64B`: one thread taking 64 B from each of 2, 3 or 4 tapes in turn, every take
//!   switching tape (weights beside scratch): `tapes_2`, `tapes_3`, `tapes_4`, against
//!   `one_tape` and `cas_floor` (as in `take_64B`). Time per take; the tapes are cleared when
//!   full, inside the timing.
//! - `vec_push_1000`: 1,000 pushes of a `u64` onto an empty `allocator_api2::vec::Vec`, then
//!   a clear or reset: `tape` (`Vec<u64, &Tape>`), `bumpalo` (`Vec<u64, &Bump>`).
//! - `scope_8_takes`: a layer's scratch, 8 takes of 64 B used and given back: `scope`
//!   (`Tape::scope`, beside a value taken before), `take_clear` (8 takes, then `clear`),
//!   `bumpalo` (8 allocations, then `reset`).

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

mod support;

use bumpalo::Bump;
use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
    measurement::WallTime,
};
use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};
use unimem::{Block, Pinning, Tape};

const ALIGN: usize = 8;

/// A tape of at least `len` bytes, every page resident, pinned if the lock limit allows.
fn warm_tape(len: usize) -> Tape {
    let block = Block::options()
        .warm(true)
        .pinning(Pinning::BestEffort)
        .open(len);
    Tape::on(block.expect("memory for the benchmark"))
}

/// One volatile byte, so that an allocation is used and cannot be elided.
fn touch(ptr: NonNull<u8>) {
    // SAFETY: every caller passes a fresh allocation of at least one byte.
    unsafe { ptr.as_ptr().write_volatile(1) };
}

/// A fresh private anonymous mapping of `len` bytes: what an allocation straight from the
/// kernel costs.
fn map(len: usize) -> NonNull<u8> {
    // SAFETY: a new mapping chosen by the kernel; checked before use.
    let ptr = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED);
    NonNull::new(ptr.cast()).unwrap()
}

fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: `ptr` maps `len` bytes (from `map`) that nothing uses any more.
    assert_eq!(unsafe { libc::munmap(ptr.as_ptr().cast(), len) }, 0);
}

fn takes(c: &mut Criterion) {
    take_group::<64>(c, "take_64B");
    take_group::<4096>(c, "take_4KiB");
    take_group::<{ 1 << 20 }>(c, "take_1MiB");
}

fn take_group<const SIZE: usize>(c: &mut Criterion, name: &str) {
    let arena = (8 * SIZE).max(1 << 20);
    let mut group = c.benchmark_group(name);

    let mut tape = warm_tape(arena);
    group.bench_function("tape", |b| {
        b.iter(|| {
            let ptr = match tape.take(SIZE, ALIGN) {
                Some(ptr) => ptr,
                None => {
                    tape.clear();
                    tape.take(SIZE, ALIGN).unwrap()
                }
            };
            touch(black_box(ptr));
        })
    });

    group.bench_function("lane", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut left = iters;
            while left > 0 {
                let mut lane = tape.lane();
                while left > 0 {
                    let Some(ptr) = lane.take(SIZE, ALIGN) else {
                        break;
                    };
                    touch(black_box(ptr));
                    left -= 1;
                }
                drop(lane);
                tape.clear();
            }
            start.elapsed()
        })
    });

    group.bench_function("malloc", |b| {
        b.iter(|| {
            // SAFETY: malloc accepts any size; the result is checked before use.
            let ptr = NonNull::new(unsafe { libc::malloc(SIZE) }.cast::<u8>()).unwrap();
            touch(black_box(ptr));
            // SAFETY: allocated just above, freed once.
            unsafe { libc::free(ptr.as_ptr().cast()) };
        })
    });

    group.bench_function("vec", |b| {
        b.iter(|| {
            let mut v = Vec::<u8>::with_capacity(SIZE);
            touch(black_box(NonNull::new(v.as_mut_ptr()).unwrap()));
            v
        })
    });

    group.bench_function("box", |b| {
        b.iter(|| {
            let mut boxed = Box::<[u8; SIZE]>::new_uninit();
            touch(black_box(NonNull::from(&mut *boxed).cast()));
            boxed
        })
    });

    group.bench_function("mmap", |b| {
        b.iter(|| {
            let ptr = map(SIZE);
            touch(black_box(ptr));
            unmap(ptr, SIZE);
        })
    });

    let mut bump = Bump::with_capacity(arena);
    // No new chunks: when this one is full, reset it, as the tape is cleared.
    bump.set_allocation_limit(Some(bump.allocated_bytes()));
    let layout = Layout::from_size_align(SIZE, ALIGN).unwrap();
    group.bench_function("bumpalo", |b| {
        b.iter(|| {
            let ptr = match bump.try_alloc_layout(layout) {
                Ok(ptr) => ptr,
                Err(_) => {
                    bump.reset();
                    bump.try_alloc_layout(layout).unwrap()
                }
            };
            touch(black_box(ptr));
        })
    });

    // The least a shared cursor can do: one compare-exchange, then the same byte written at
    // the offset it won, in memory as resident as the tape's.
    let cursor = AtomicUsize::new(0);
    let mut memory = vec![1u8; arena];
    let base = NonNull::new(memory.as_mut_ptr()).unwrap();
    group.bench_function("cas_floor", |b| {
        b.iter(|| {
            let mut current = cursor.load(Relaxed);
            let offset = loop {
                let next = current + SIZE;
                if next > arena {
                    cursor.store(0, Relaxed);
                    current = 0;
                    continue;
                }
                match cursor.compare_exchange_weak(current, next, Relaxed, Relaxed) {
                    Ok(_) => break current,
                    Err(now) => current = now,
                }
            };
            // SAFETY: `offset + SIZE <= arena`, the length of `memory`.
            touch(black_box(unsafe { base.add(offset) }));
        })
    });
    group.finish();
}

/// Times `free` alone: on each of `arenas`, `fill` runs untimed and then `free` timed, in
/// batches of `arenas.len()` so that reading the clock costs little against a nanosecond
/// operation. At least `iters` calls are timed; the time of `iters` of them is returned.
///
/// Between the two, `ready` looks at every arena (and the clock is read once), untimed: after
/// filling hundreds of arenas the first ones have left the cache, whereas in a real loop the
/// free follows its own fill. This measures the free, not the harness.
fn time_freeing<A>(
    arenas: &mut [A],
    iters: u64,
    mut fill: impl FnMut(&mut A),
    mut ready: impl FnMut(&A),
    mut free: impl FnMut(&mut A),
) -> Duration {
    let batches = iters.div_ceil(arenas.len() as u64);
    let mut timed = Duration::ZERO;
    for _ in 0..batches {
        arenas.iter_mut().for_each(&mut fill);
        arenas.iter().for_each(&mut ready);
        black_box(Instant::now());
        let start = Instant::now();
        for arena in arenas.iter_mut() {
            free(black_box(arena));
        }
        timed += start.elapsed();
    }
    timed.mul_f64(iters as f64 / (batches * arenas.len() as u64) as f64)
}

/// Enough tapes that a batch of clears takes far longer than reading the clock, each with
/// room for `len` bytes of takes plus what `Tape::take` documents a thread may leave behind:
/// the chunk a clear hands it (a 64th of the tape) when it moves on to more than four other
/// tapes before taking from this one again, as this loop over 512 tapes does.
fn batch_of_tapes(len: usize) -> Vec<Tape> {
    let len = len + len / 32;
    (0..512)
        .map(|_| Tape::on(Block::options().pinning(Pinning::Off).open(len).unwrap()))
        .collect()
}

fn fill_tape(tape: &mut Tape, takes: usize) {
    for _ in 0..takes {
        black_box(tape.take(64, ALIGN).unwrap());
    }
}

fn tape_ready(tape: &Tape) {
    black_box(tape.used());
}

fn free_all(c: &mut Criterion) {
    const N: usize = 1000;
    let mut group = c.benchmark_group("free_all");
    group.throughput(Throughput::Elements(N as u64));

    let mut tapes = batch_of_tapes(N * 64);
    group.bench_function("tape", |b| {
        b.iter_custom(|iters| {
            time_freeing(
                &mut tapes,
                iters,
                |t| fill_tape(t, N),
                tape_ready,
                Tape::clear,
            )
        })
    });
    drop(tapes);

    let mut bumps: Vec<Bump> = (0..512).map(|_| Bump::with_capacity(N * 64)).collect();
    let layout = Layout::from_size_align(64, ALIGN).unwrap();
    group.bench_function("bumpalo", |b| {
        b.iter_custom(|iters| {
            let fill = |bump: &mut Bump| {
                for _ in 0..N {
                    black_box(bump.alloc_layout(layout));
                }
            };
            let ready = |bump: &Bump| _ = black_box(bump.allocated_bytes());
            time_freeing(&mut bumps, iters, fill, ready, |bump| bump.reset())
        })
    });
    drop(bumps);

    let mut pointer_sets: Vec<Vec<*mut libc::c_void>> =
        (0..4).map(|_| Vec::with_capacity(N)).collect();
    group.bench_function("malloc", |b| {
        b.iter_custom(|iters| {
            let fill = |set: &mut Vec<*mut libc::c_void>| {
                // SAFETY: malloc accepts any size; every result is checked.
                set.extend((0..N).map(|_| unsafe { libc::malloc(64) }));
                assert!(set.iter().all(|p| !p.is_null()));
            };
            let free = |set: &mut Vec<*mut libc::c_void>| {
                for ptr in set.drain(..) {
                    // SAFETY: each pointer came from malloc in `fill` and is freed once.
                    unsafe { libc::free(ptr) };
                }
            };
            let ready = |set: &Vec<_>| _ = black_box(set.len());
            time_freeing(&mut pointer_sets, iters, fill, ready, free)
        })
    });

    let mut vec_sets: Vec<Vec<Vec<u8>>> = (0..4).map(|_| Vec::with_capacity(N)).collect();
    group.bench_function("vec", |b| {
        b.iter_custom(|iters| {
            let fill = |set: &mut Vec<Vec<u8>>| {
                set.extend((0..N).map(|_| black_box(Vec::with_capacity(64))));
            };
            let ready = |set: &Vec<_>| _ = black_box(set.len());
            time_freeing(&mut vec_sets, iters, fill, ready, Vec::clear)
        })
    });

    let mut box_sets: Vec<Vec<Box<[u8; 64]>>> = (0..4).map(|_| Vec::with_capacity(N)).collect();
    group.bench_function("box", |b| {
        b.iter_custom(|iters| {
            let fill = |set: &mut Vec<Box<[u8; 64]>>| {
                set.extend((0..N).map(|_| black_box(Box::new([0u8; 64]))));
            };
            let ready = |set: &Vec<_>| _ = black_box(set.len());
            time_freeing(&mut box_sets, iters, fill, ready, Vec::clear)
        })
    });

    // One page per mapping: the smallest the kernel hands out.
    let mut mapping_sets: Vec<Vec<NonNull<u8>>> = (0..4).map(|_| Vec::with_capacity(N)).collect();
    group.bench_function("munmap", |b| {
        b.iter_custom(|iters| {
            let fill = |set: &mut Vec<NonNull<u8>>| set.extend((0..N).map(|_| map(4096)));
            let free = |set: &mut Vec<NonNull<u8>>| {
                set.drain(..).for_each(|ptr| unmap(ptr, 4096));
            };
            let ready = |set: &Vec<_>| _ = black_box(set.len());
            time_freeing(&mut mapping_sets, iters, fill, ready, free)
        })
    });
    group.finish();
}

fn clear(c: &mut Criterion) {
    let mut group = c.benchmark_group("clear");
    let mut tapes = batch_of_tapes(10_000 * 64);
    for (name, takes) in [("after_1_take", 1), ("after_10000_takes", 10_000)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                time_freeing(
                    &mut tapes,
                    iters,
                    |t| fill_tape(t, takes),
                    tape_ready,
                    Tape::clear,
                )
            })
        });
    }
    group.finish();
}

fn threads_2(c: &mut Criterion) {
    const TAKES: usize = 1 << 24;
    let mut group = c.benchmark_group("threads_2");
    group.throughput(Throughput::Elements(TAKES as u64));
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    // Room for every take plus a chunk per lane.
    let mut tape = warm_tape(TAKES * 8 + (4 << 20));
    for threads in [1, 2] {
        let suffix = if threads == 1 {
            "1_thread"
        } else {
            "2_threads"
        };
        bench_round(
            &mut group,
            &mut tape,
            &format!("tape_{suffix}"),
            threads,
            |tape| {
                for _ in 0..TAKES / threads {
                    black_box(tape.take(8, 8).unwrap());
                }
            },
        );
        bench_round(
            &mut group,
            &mut tape,
            &format!("lane_{suffix}"),
            threads,
            |tape| {
                let mut lane = tape.lane();
                for _ in 0..TAKES / threads {
                    black_box(lane.take(8, 8).unwrap());
                }
            },
        );
    }
    group.finish();
}

/// One iteration: `threads` threads run `work` on the tape together, then it is cleared.
fn bench_round(
    group: &mut BenchmarkGroup<'_, WallTime>,
    tape: &mut Tape,
    name: &str,
    threads: usize,
    work: impl Fn(&Tape) + Sync,
) {
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let (shared, work) = (&*tape, &work);
                let start = Instant::now();
                thread::scope(|s| {
                    for _ in 0..threads {
                        s.spawn(move || work(shared));
                    }
                });
                elapsed += start.elapsed();
                tape.clear();
            }
            elapsed
        })
    });
}

/// A step of `TAKES` takes of 64 B, then a clear: against bumpalo's allocations and reset.
fn take_clear<const TAKES: usize>(c: &mut Criterion, name: &str) {
    let mut group = c.benchmark_group(name);
    let mut tape = warm_tape(1 << 20);
    group.bench_function("tape", |b| {
        b.iter(|| {
            for _ in 0..TAKES {
                touch(black_box(tape.take(64, ALIGN).unwrap()));
            }
            tape.clear();
        })
    });
    let mut bump = Bump::with_capacity(1 << 20);
    let layout = Layout::from_size_align(64, ALIGN).unwrap();
    group.bench_function("bumpalo", |b| {
        b.iter(|| {
            for _ in 0..TAKES {
                touch(black_box(bump.alloc_layout(layout)));
            }
            bump.reset();
        })
    });
    group.finish();
}

fn take_clears(c: &mut Criterion) {
    take_clear::<1>(c, "take_clear_1");
    take_clear::<8>(c, "take_clear_8");
}

/// Takes 64 B from each tape in turn, clearing them all when one is full.
#[inline(always)]
fn take_in_turn<const N: usize>(tapes: &mut [Tape; N]) {
    let mut full = false;
    for tape in tapes.iter() {
        match tape.take(64, ALIGN) {
            Some(ptr) => touch(black_box(ptr)),
            None => full = true,
        }
    }
    if full {
        tapes.iter_mut().for_each(Tape::clear);
    }
}

/// `N` tapes taken from in turn: an iteration is one round, `N` takes, and its time over `N`
/// is a take's.
fn bench_in_turn<const N: usize>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str) {
    let mut tapes: [Tape; N] = core::array::from_fn(|_| warm_tape(1 << 20));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                take_in_turn(&mut tapes);
            }
            start.elapsed() / N as u32
        })
    });
}

fn round_robin(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_robin_64B");
    bench_in_turn::<1>(&mut group, "one_tape");
    bench_in_turn::<2>(&mut group, "tapes_2");
    bench_in_turn::<3>(&mut group, "tapes_3");
    bench_in_turn::<4>(&mut group, "tapes_4");
    // The same bare compare-exchange loop as in `take_64B`, for the ratio in the same run.
    const ARENA: usize = 1 << 20;
    let cursor = AtomicUsize::new(0);
    let mut memory = vec![1u8; ARENA];
    let base = NonNull::new(memory.as_mut_ptr()).unwrap();
    group.bench_function("cas_floor", |b| {
        b.iter(|| {
            let mut current = cursor.load(Relaxed);
            let offset = loop {
                let next = current + 64;
                if next > ARENA {
                    cursor.store(0, Relaxed);
                    current = 0;
                    continue;
                }
                match cursor.compare_exchange_weak(current, next, Relaxed, Relaxed) {
                    Ok(_) => break current,
                    Err(now) => current = now,
                }
            };
            // SAFETY: `offset + 64 <= ARENA`, the length of `memory`.
            touch(black_box(unsafe { base.add(offset) }));
        })
    });
    group.finish();
}

fn vec_push(c: &mut Criterion) {
    let mut group = c.benchmark_group("vec_push_1000");
    let mut tape = warm_tape(1 << 20);
    group.bench_function("tape", |b| {
        b.iter(|| {
            let mut v = allocator_api2::vec::Vec::<u64, _>::new_in(&tape);
            for i in 0..1000 {
                v.push(black_box(i));
            }
            black_box(&v);
            drop(v);
            tape.clear();
        })
    });
    let mut bump = Bump::with_capacity(1 << 20);
    group.bench_function("bumpalo", |b| {
        b.iter(|| {
            let mut v = allocator_api2::vec::Vec::<u64, _>::new_in(&bump);
            for i in 0..1000 {
                v.push(black_box(i));
            }
            black_box(&v);
            drop(v);
            bump.reset();
        })
    });
    group.finish();
}

fn scoped(c: &mut Criterion) {
    let mut group = c.benchmark_group("scope_8_takes");
    let tape = warm_tape(1 << 20);
    let residual = tape.take_fill(64, 1u8).unwrap();
    group.bench_function("scope", |b| {
        b.iter(|| {
            tape.scope(|s| {
                for _ in 0..8 {
                    let tmp = s.take_slice::<u8>(64).unwrap();
                    tmp[0].write(residual[0]);
                    black_box(tmp);
                }
            })
        })
    });
    let mut tape = warm_tape(1 << 20);
    group.bench_function("take_clear", |b| {
        b.iter(|| {
            for _ in 0..8 {
                let tmp = tape.take_slice::<u8>(64).unwrap();
                tmp[0].write(1);
                black_box(tmp);
            }
            tape.clear();
        })
    });
    let mut bump = Bump::with_capacity(1 << 20);
    let layout = Layout::from_size_align(64, 1).unwrap();
    group.bench_function("bumpalo", |b| {
        b.iter(|| {
            for _ in 0..8 {
                touch(black_box(bump.alloc_layout(layout)));
            }
            bump.reset();
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = takes, free_all, clear, threads_2, take_clears, round_robin, vec_push, scoped
}
criterion_main!(benches);
