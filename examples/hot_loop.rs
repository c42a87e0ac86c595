//! The loop a tape is for: every step of an inference takes its activations from the tape,
//! computes, and the tape is cleared for the next step. Nothing is freed one by one, and
//! nothing is allocated from the system inside the loop.
//!
//! ```text
//! cargo run --release --example hot_loop
//! ```
//!
//! A small MLP (256 -> 256 ReLU -> 32 softmax) runs batches of 128 inputs on a pool of
//! persistent worker threads (the main thread is one of them), each taking its activations
//! straight from one shared tape with `Tape::take_fill` (every thread takes from a chunk of its
//! own, so they do not contend). The tape is under `Steps`: each worker enters the step with a
//! guard and takes through it, and the main thread clears the tape once every guard is gone,
//! with no `unsafe` anywhere. A step is: the workers split the batch, meet at a barrier, and
//! the tape is cleared. It runs with one worker, then with two, and prints whether the tapes
//! got pinned, steps per second for each and the speed-up. Every answer is checked against
//! the same network run on ordinary heap buffers; the program exits non-zero on any
//! difference.

use std::process::ExitCode;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};
use unimem::{Block, Steps, Tape};

const INPUT: usize = 256;
const HIDDEN: usize = 256;
const OUTPUT: usize = 32;
const BATCH: usize = 128;
/// Distinct inputs, cycled through, so that every answer has a precomputed reference.
const SAMPLES: usize = 16;
const STEPS: usize = 500;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hot_loop: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    // The weights live on a tape of their own, never cleared: one block a GPU could read too.
    let weights = Tape::start(1 << 20).map_err(|e| e.to_string())?;
    let mlp = Mlp::new(&weights);
    let expected: Vec<Answer> = (0..SAMPLES).map(|sample| mlp.reference(sample)).collect();

    let mut per_second = Vec::new();
    for workers in [1, 2] {
        let mut tape = Steps::new(Tape::start_warm(1 << 20).map_err(|e| e.to_string())?);
        if workers == 1 {
            print_pinning(weights.block(), tape.block());
        }
        let elapsed = run_steps(&tape, workers, &mlp, &expected)?;
        let steps = STEPS as f64 / elapsed.as_secs_f64();
        let tape = tape.get_mut();
        println!(
            "{workers} worker{} on one tape {steps:>9.0} steps/s ({:>7.0} inferences/s), \
             peak {} bytes of {}",
            if workers == 1 { ", " } else { "s," },
            steps * BATCH as f64,
            tape.peak(),
            tape.capacity()
        );
        per_second.push(steps);
    }
    println!(
        "two workers run {:.2}x the steps per second of one",
        per_second[1] / per_second[0]
    );
    Ok(())
}

/// Says whether the tapes' blocks got pinned, and what the memory-lock limit allows.
fn print_pinning(weights: &Block, scratch: &Block) {
    let limit = match Block::lock_limit() {
        Some(limit) => format!("{} KiB", limit >> 10),
        None => "unlimited or none".to_owned(),
    };
    let pinned = |block: &Block| {
        if block.is_pinned() {
            "pinned"
        } else {
            "not pinned"
        }
    };
    println!(
        "weights tape {}, scratch tape {} (memory-lock limit, `ulimit -l`: {limit})",
        pinned(weights),
        pinned(scratch)
    );
    // (With no limit known, as on platforms where unimem never pins, raising it does nothing.)
    if !(weights.is_pinned() && scratch.is_pinned()) && Block::lock_limit().is_some() {
        println!("(running unpinned is fine here; raise `ulimit -l` to have the tapes pinned)");
    }
}

/// Runs `STEPS` steps on `workers` persistent threads sharing `tape` (this thread is the
/// first of them), checking every answer; returns the time the steps took.
fn run_steps(
    tape: &Steps,
    workers: usize,
    mlp: &Mlp<'_>,
    expected: &[Answer],
) -> Result<Duration, String> {
    // The workers meet twice a step: once the tape is clear, and once every worker is done
    // with what it took.
    let barrier = Barrier::new(workers);
    let per_worker = BATCH / workers;
    let share = |w: usize, step: usize| {
        // The worker's part of the step: everything it takes borrows this guard.
        let guard = tape.enter();
        let mut taker: &Tape = &guard;
        batch(step, w * per_worker..(w + 1) * per_worker)
            .try_for_each(|sample| check(step, sample, mlp.infer(sample, &mut taker), expected))
    };
    thread::scope(|s| {
        let helpers: Vec<_> = (1..workers)
            .map(|w| {
                let (barrier, share) = (&barrier, &share);
                s.spawn(move || {
                    let mut outcome = Ok(());
                    for step in 0..STEPS {
                        barrier.wait();
                        outcome = outcome.and_then(|()| share(w, step));
                        barrier.wait();
                    }
                    outcome
                })
            })
            .collect();
        let started = Instant::now();
        let mut outcome = Ok(());
        for step in 0..STEPS {
            barrier.wait();
            outcome = outcome.and_then(|()| share(0, step));
            barrier.wait();
            // Every worker dropped its guard before the barrier, so this clears at once.
            tape.clear();
        }
        let elapsed = started.elapsed();
        outcome?;
        helpers
            .into_iter()
            .try_for_each(|h| h.join().expect("a worker panicked"))?;
        Ok(elapsed)
    })
}

/// The samples of one step's batch that fall in `slots`.
fn batch(step: usize, slots: std::ops::Range<usize>) -> impl Iterator<Item = usize> {
    slots.map(move |slot| (step * BATCH + slot) % SAMPLES)
}

fn check(step: usize, sample: usize, got: Answer, expected: &[Answer]) -> Result<(), String> {
    let sum_ok = (got.total - 1.0).abs() < 1e-4;
    if got.class == expected[sample].class
        && got.confidence == expected[sample].confidence
        && sum_ok
    {
        Ok(())
    } else {
        Err(format!(
            "step {step}, sample {sample}: got {got:?}, expected {:?}",
            expected[sample]
        ))
    }
}

/// What the network answers for one input.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Answer {
    class: usize,
    confidence: f32,
    /// The sum of all probabilities: 1 for a working softmax.
    total: f32,
}

/// Where a step's activations come from: here the tape itself, through `&Tape`.
trait Activations<'t> {
    fn zeros(&mut self, n: usize) -> &'t mut [f32];
}

impl<'t> Activations<'t> for &'t Tape {
    fn zeros(&mut self, n: usize) -> &'t mut [f32] {
        self.take_fill(n, 0.0).expect("the tape holds a whole step")
    }
}

struct Mlp<'w> {
    w1: &'w [f32],
    b1: &'w [f32],
    w2: &'w [f32],
    b2: &'w [f32],
}

impl<'w> Mlp<'w> {
    /// Fixed pseudo-random weights, scaled so that activations stay in a sane range.
    fn new(weights: &'w Tape) -> Mlp<'w> {
        let mut rng = Rng(0x5eed);
        let mut layer = |n: usize, scale: f32| -> &'w [f32] {
            let values = weights.take_fill(n, 0.0f32).expect("the weights fit");
            values.iter_mut().for_each(|v| *v = rng.uniform() * scale);
            values
        };
        Mlp {
            w1: layer(INPUT * HIDDEN, 2.0 / (INPUT as f32).sqrt()),
            b1: layer(HIDDEN, 0.1),
            w2: layer(HIDDEN * OUTPUT, 2.0 / (HIDDEN as f32).sqrt()),
            b2: layer(OUTPUT, 0.1),
        }
    }

    /// One inference with every activation taken from `memory`.
    fn infer<'t>(&self, sample: usize, memory: &mut impl Activations<'t>) -> Answer {
        let input = memory.zeros(INPUT);
        fill_input(sample, input);
        let hidden = memory.zeros(HIDDEN);
        let probabilities = memory.zeros(OUTPUT);
        self.forward(input, hidden, probabilities)
    }

    /// The same inference on ordinary heap buffers: what every tape answer must equal.
    fn reference(&self, sample: usize) -> Answer {
        let mut input = [0.0; INPUT];
        fill_input(sample, &mut input);
        self.forward(&input, &mut [0.0; HIDDEN], &mut [0.0; OUTPUT])
    }

    fn forward(&self, input: &[f32], hidden: &mut [f32], probabilities: &mut [f32]) -> Answer {
        affine(self.w1, self.b1, input, hidden);
        hidden.iter_mut().for_each(|h| *h = h.max(0.0));
        affine(self.w2, self.b2, hidden, probabilities);
        softmax(probabilities);
        let (class, &confidence) = probabilities
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .expect("at least one class");
        Answer {
            class,
            confidence,
            total: probabilities.iter().sum(),
        }
    }
}

/// `out = weights · input + bias`, with `weights` stored row by row.
fn affine(weights: &[f32], bias: &[f32], input: &[f32], out: &mut [f32]) {
    for ((o, row), b) in out
        .iter_mut()
        .zip(weights.chunks_exact(input.len()))
        .zip(bias)
    {
        *o = dot(row, input) + b;
    }
}

/// Eight running sums, so that the compiler can use vector instructions.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0.0f32; 8];
    for (a, b) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for ((sum, a), b) in sums.iter_mut().zip(a).zip(b) {
            *sum += a * b;
        }
    }
    let tail = a.len() / 8 * 8;
    let tail: f32 = a[tail..].iter().zip(&b[tail..]).map(|(a, b)| a * b).sum();
    sums.iter().sum::<f32>() + tail
}

fn softmax(values: &mut [f32]) {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    values.iter_mut().for_each(|v| *v = (*v - max).exp());
    let sum: f32 = values.iter().sum();
    values.iter_mut().for_each(|v| *v /= sum);
}

fn fill_input(sample: usize, input: &mut [f32]) {
    let mut rng = Rng(sample as u64 + 1);
    input.iter_mut().for_each(|x| *x = rng.uniform());
}

/// xorshift64*: deterministic numbers without a dependency.
struct Rng(u64);

impl Rng {
    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        bits as f32 / (1u64 << 23) as f32 - 1.0
    }
}
