//! What the safe step protocol (`Steps`: a guard per worker per step, a clear that checks the
//! guards) costs against the `unsafe` `Tape::clear_shared` loop it replaces, in the same run.
//!
//! The shape is `examples/hot_loop.rs`'s: persistent workers (the measuring thread is the
//! first) meet at a barrier, each takes its part of the step from the shared tape, they meet
//! again, and the tape is cleared. One iteration is one step. Two groups (names kept stable
//! for the README table):
//! - `steps`: a step of `hot_loop`'s kind. A batch of 16 inputs is split between the workers;
//!   each input takes its activations from the tape (256 and 256 `f32`s), goes through a
//!   256×256 layer and a ReLU, and is summed. This is what the 5% target is about.
//! - `steps_bare`: the same with the arithmetic taken out, so that the protocol is all that
//!   shows: each worker makes 32 takes of 256 B, every one written.
//!
//! Functions in each:
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

/// Takes per worker per bare step, and their size.
const TAKES: usize = 32;
const TAKE_BYTES: usize = 256;
/// The layer of a `hot_loop` step, and how many inputs a step has.
const WIDTH: usize = 256;
const BATCH: usize = 16;

/// A warm tape with room for a step of two workers and their chunks.
fn warm_tape() -> Tape {
    let block = Block::options()
        .warm(true)
        .pinning(Pinning::BestEffort)
        .open(1 << 20);
    Tape::on(block.expect("memory for the benchmark"))
}

/// One worker's part of a bare step.
fn take_part(tape: &Tape, step: u64) {
    for _ in 0..TAKES {
        let words = tape
            .take_fill(TAKE_BYTES / 8, step)
            .expect("the tape holds a step");
        black_box(words);
    }
}

/// One worker's part of a `hot_loop` step: inputs `mine` of the batch through the layer.
fn infer_part(tape: &Tape, weights: &[f32], mine: core::ops::Range<usize>, step: u64) {
    for sample in mine {
        let input = tape
            .take_fill(WIDTH, 0.0f32)
            .expect("the tape holds a step");
        for (i, x) in input.iter_mut().enumerate() {
            *x = ((i + sample) as u64 ^ step) as f32 * 1e-3;
        }
        let hidden = tape
            .take_fill(WIDTH, 0.0f32)
            .expect("the tape holds a step");
        for (h, row) in hidden.iter_mut().zip(weights.chunks_exact(WIDTH)) {
            *h = dot(row, input).max(0.0);
        }
        black_box(hidden.iter().sum::<f32>());
    }
}

/// Eight running sums, so that the compiler can use vector instructions (as `hot_loop`).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0.0f32; 8];
    for (a, b) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for ((sum, a), b) in sums.iter_mut().zip(a).zip(b) {
            *sum += a * b;
        }
    }
    sums.iter().sum()
}

/// Runs `steps` steps on `workers` persistent threads (this one first) and returns how long
/// they took: each step is a barrier, every worker's `part`, a barrier, then `clear`.
fn run(workers: usize, steps: u64, part: impl Fn(usize, u64) + Sync, clear: impl Fn()) -> Duration {
    let barrier = Barrier::new(workers);
    thread::scope(|s| {
        for w in 1..workers {
            let (barrier, part) = (&barrier, &part);
            s.spawn(move || {
                for step in 0..steps {
                    barrier.wait();
                    part(w, step);
                    barrier.wait();
                }
            });
        }
        let start = Instant::now();
        for step in 0..steps {
            barrier.wait();
            part(0, step);
            barrier.wait();
            clear();
        }
        start.elapsed()
    })
}

/// Which work a group's steps do: worker `w` of `workers` in step `step` on `tape`.
type Part<'a> = &'a (dyn Fn(&Tape, usize, usize, u64) + Sync);

fn bench_group(c: &mut Criterion, name: &str, part: Part<'_>) {
    let mut group = c.benchmark_group(name);
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
                    |w, step| part(&guarded.enter(), w, workers, step),
                    || guarded.clear(),
                )
            })
        });
        group.bench_function(format!("clear_shared_{suffix}"), |b| {
            b.iter_custom(|iters| {
                run(
                    workers,
                    iters,
                    |w, step| part(&shared, w, workers, step),
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

fn steps(c: &mut Criterion) {
    let weights: Vec<f32> = (0..WIDTH * WIDTH)
        .map(|i| (i % 17) as f32 / 17.0 - 0.5)
        .collect();
    let infer = |tape: &Tape, w: usize, workers: usize, step: u64| {
        let share = BATCH / workers;
        infer_part(tape, &weights, w * share..(w + 1) * share, step);
    };
    bench_group(c, "steps", &infer);
}

fn steps_bare(c: &mut Criterion) {
    bench_group(c, "steps_bare", &|tape, _, _, step| take_part(tape, step));
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = steps, steps_bare
}
criterion_main!(benches);
