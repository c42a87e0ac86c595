//! A producer → worker → consumer pipeline over a Grid of 4 KiB frames, with nothing copied
//! between the stages: each stage owns a cell in turn and hands it on through a channel.
//!
//! - The producer takes cells (through its own stash) and fills each with an input frame:
//!   1024 `f32` samples of a deterministic signal that depends on the frame number, written
//!   straight into the cell through its `f32` view (`Cell::as_mut_slice_of`).
//! - The worker transforms each frame in place: a 5-tap binomial blur, then gain and bias.
//! - The consumer recomputes every frame from its number, compares the cell bit for bit, and
//!   drops the cell, which returns it to the grid for the producer to take again.
//!
//! With 256 cells in flight at most, the producer waits when the grid is empty: the grid is
//! the pipeline's back-pressure. Prints the throughput; exits with status 1 on any mismatch.
//!
//! ```text
//! cargo run --release --example pipeline             # 200,000 frames
//! cargo run --release --example pipeline -- 1000000  # or as many as you like
//! ```

use std::sync::mpsc;
use std::thread;
use std::time::Instant;
use unimem::{Block, Cell, Grid, Pinning};

const FRAME_BYTES: usize = 4096;
const SAMPLES: usize = FRAME_BYTES / size_of::<f32>();
const IN_FLIGHT: usize = 256;
const GAIN: f32 = 1.5;
const BIAS: f32 = 0.25;

type Frames = Grid<FRAME_BYTES, IN_FLIGHT>;
type Frame<'g> = Cell<'g, FRAME_BYTES, IN_FLIGHT>;
type Samples = [f32; SAMPLES];

/// Writes the input signal of `frame` into `samples`: a ramp, a square wave and a per-frame
/// offset, all exact in `f32`.
fn input(frame: u64, samples: &mut [f32]) {
    for (i, sample) in samples.iter_mut().enumerate() {
        let ramp = (i % 64) as f32 / 64.0;
        let square = if (i / 32 + frame as usize) % 2 == 0 {
            1.0
        } else {
            -1.0
        };
        *sample = ramp + square + (frame % 1000) as f32 / 8.0;
    }
}

/// The worker's transform, in place: a 5-tap binomial blur (edges clamped), then gain and
/// bias.
fn transform(samples: &mut [f32]) {
    let original: Samples = samples.try_into().expect("a frame of SAMPLES samples");
    let at = |i: usize, offset: isize| original[i.saturating_add_signed(offset).min(SAMPLES - 1)];
    for (i, sample) in samples.iter_mut().enumerate() {
        let blurred =
            (at(i, -2) + 4.0 * at(i, -1) + 6.0 * at(i, 0) + 4.0 * at(i, 1) + at(i, 2)) / 16.0;
        *sample = blurred * GAIN + BIAS;
    }
}

fn main() {
    let frames: u64 = match std::env::args().nth(1) {
        Some(count) => count.parse().expect("the frame count must be a number"),
        None => 200_000,
    };
    let grid = Frames::with_options(Block::options().warm(true).pinning(Pinning::BestEffort))
        .expect("a grid of 1 MiB");
    println!(
        "{IN_FLIGHT} cells of {FRAME_BYTES} bytes, {}",
        if grid.block().is_pinned() {
            "pinned"
        } else {
            "not pinned (the memory-lock limit is too low, or the platform cannot pin)"
        }
    );

    let grid = &grid;
    let (to_worker, worker_inbox) = mpsc::channel::<(Frame<'_>, u64)>();
    let (to_consumer, consumer_inbox) = mpsc::channel::<(Frame<'_>, u64)>();
    let start = Instant::now();
    let mismatches = thread::scope(|s| {
        // Each stage owns its channel ends, so that each channel closes when its sender ends.
        s.spawn(move || {
            let mut stash = grid.stash();
            for frame in 0..frames {
                let mut cell = loop {
                    match stash.take() {
                        Some(cell) => break cell,
                        // Every cell is in the pipeline: wait for the consumer to drop one.
                        None => thread::yield_now(),
                    }
                };
                input(frame, cell.as_mut_slice_of::<f32>());
                to_worker.send((cell, frame)).unwrap();
            }
        });
        s.spawn(move || {
            for (mut cell, frame) in worker_inbox {
                transform(cell.as_mut_slice_of::<f32>());
                to_consumer.send((cell, frame)).unwrap();
            }
        });
        let consumer = s.spawn(move || {
            let mut mismatches = 0u64;
            let mut expected_frame = 0;
            for (cell, frame) in consumer_inbox {
                let mut expected = [0.0; SAMPLES];
                input(frame, &mut expected);
                transform(&mut expected);
                if frame != expected_frame || cell.as_slice_of::<f32>() != expected {
                    mismatches += 1;
                    eprintln!("frame {frame} (expected frame {expected_frame}) is wrong");
                }
                expected_frame = frame + 1;
                drop(cell); // back to the grid
            }
            mismatches + frames - expected_frame
        });
        consumer.join().unwrap()
    });
    let seconds = start.elapsed().as_secs_f64();

    let bytes = frames as f64 * FRAME_BYTES as f64;
    println!(
        "{frames} frames in {seconds:.2} s: {:.0} frames/s, {:.0} MB/s through each stage",
        frames as f64 / seconds,
        bytes / seconds / 1e6,
    );
    assert_eq!(grid.remaining(), IN_FLIGHT, "every cell came back");
    if mismatches > 0 {
        eprintln!("{mismatches} frames were wrong or missing");
        std::process::exit(1);
    }
    println!("every frame verified");
}
