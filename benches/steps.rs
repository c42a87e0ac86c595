//! What the safe step protocol (`Steps`: a guard per worker per step, a clear that checks the
//! guards) costs against the `unsafe` `Tape::clear_shared` loop it replaces, in the same run.
//!
//! The shape is `examples/hot_loop.rs`'s, with the arithmetic taken out so that the protocol
//! is what shows: persistent workers (the measuring thread is the first) meet at a barrier,
//! each takes its part of the step from the shared tape (32 takes of 256 B, every one
//! written), they meet again, and the tape is cleared. One iteration is one step.
//!
//! Group `steps`, functions (names kept stable for the README table):
//! - `guard_1_worker`, `guard_2_workers`: each worker takes through `Steps::enter`'s guard,
//!   and the tape is cleared with `Steps::clear`.
//! - `clear_shared_1_worker`, `clear_shared_2_workers`: each worker takes from `&Tape`, and
//!   the tape is cleared with `unsafe { tape.clear_shared() }`, as `hot_loop` did before.
//!
//! `cargo bench -p unimem-bench --bench steps`

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

mod support;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};
use unimem::{Block, Pinning, Steps, Tape};

/// Takes per worker per step, and their size.
const TAKES: usize = 32;
const TAKE_BYTES: usize = 256;

/// A warm tape with room for a step of two workers and their chunks.
fn warm_tape() -> Tape {
    let block = Block::options()
        .warm(true)
        .pinning(Pinning::BestEffort)
        .open(1 << 20);
    Tape::on(block.expect("memory for the benchmark"))
}

/// One worker's part of a step.
fn take_part(tape: &Tape, step: u64) {
    for _ in 0..TAKES {
        let words = tape
            .take_fill(TAKE_BYTES / 8, step)
            .expect("the tape holds a step");
        black_box(words);
    }
}

/// Runs `steps` steps on `workers` persistent threads (this one first) and returns how long
/// they took: each step is a barrier, every worker's `part`, a barrier, then `clear`.
fn run(workers: usize, steps: u64, part: impl Fn(u64) + Sync, clear: impl Fn()) -> Duration {
    let barrier = Barrier::new(workers);
    thread::scope(|s| {
        for _ in 1..workers {
            let (barrier, part) = (&barrier, &part);
            s.spawn(move || {
                for step in 0..steps {
                    barrier.wait();
                    part(step);
                    barrier.wait();
                }
            });
        }
        let start = Instant::now();
        for step in 0..steps {
            barrier.wait();
            part(step);
            barrier.wait();
            clear();
        }
        start.elapsed()
    })
}

fn steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("steps");
    group.throughput(Throughput::Elements(1));
    group.sampling_mode(SamplingMode::Flat).sample_size(20);
    let guarded = Steps::new(warm_tape());
    let shared = warm_tape();
    for workers in [1, 2] {
        let suffix = if workers == 1 {
            "1_worker"
        } else {
            "2_workers"
        };
        group.bench_function(format!("guard_{suffix}"), |b| {
            b.iter_custom(|iters| {
                run(
                    workers,
                    iters,
                    |step| take_part(&guarded.enter(), step),
                    || guarded.clear(),
                )
            })
        });
        group.bench_function(format!("clear_shared_{suffix}"), |b| {
            b.iter_custom(|iters| {
                run(
                    workers,
                    iters,
                    |step| take_part(&shared, step),
                    || {
                        // SAFETY: every worker is past the step's second barrier and keeps
                        // nothing it took; the barriers order the step's takes before this
                        // clear, and this clear before the next step's takes.
                        unsafe { shared.clear_shared() }
                    },
                )
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = steps
}
criterion_main!(benches);
