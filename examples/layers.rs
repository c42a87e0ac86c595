//! An inference-shaped loop on two tapes: a weights tape that also holds the KV cache, which
//! grows step after step, beside a scratch tape cleared after every step, with a scope per
//! layer so that a layer's scratch comes back as soon as the layer is done.
//!
//! ```text
//! cargo run --release --example layers
//! ```
//!
//! Every step runs a residual stream through `LAYERS` layers (a matrix-vector product and a
//! `tanh`). The residual stream is taken from the scratch tape at the start of the step and
//! stays in use across the layers; each layer's hidden vector is taken from a scope and given
//! back when the layer ends; each layer appends its hidden vector to the KV cache on the
//! weights tape, which is never cleared. The one thread moves between the two tapes on every
//! take, and stays on the fast path of each. It prints what the scratch tape needed (one
//! layer's scratch at a time, not `LAYERS`), what the weights tape holds, and steps per
//! second; the answer is checked against the same network on ordinary heap buffers, and the
//! program exits non-zero on any difference.

use std::process::ExitCode;
use std::time::Instant;
use unimem::Tape;

const LAYERS: usize = 8;
const DIM: usize = 256;
const STEPS: usize = 100;

/// `out = w * x`, with `w` a `DIM x DIM` matrix in rows.
fn matvec(w: &[f32], x: &[f32], out: &mut [f32]) {
    for (row, out) in w.chunks_exact(DIM).zip(out) {
        *out = row.iter().zip(x).map(|(a, b)| a * b).sum();
    }
}

/// One layer: `x += tanh(w * x) / 4`, with `hidden` as scratch.
fn layer(w: &[f32], x: &mut [f32], hidden: &mut [f32]) {
    matvec(w, x, hidden);
    for (x, h) in x.iter_mut().zip(hidden.iter()) {
        *x += h.tanh() * 0.25;
    }
}

fn weight(layer: usize, i: usize) -> f32 {
    ((i * 7 + layer * 13) % 17) as f32 / 17.0 - 0.5
}

fn main() -> Result<ExitCode, unimem::Error> {
    let kv_bytes = STEPS * LAYERS * DIM * 4;
    let weights = Tape::start(LAYERS * DIM * DIM * 4 + kv_bytes + (1 << 20))?;
    let mut scratch = Tape::start(1 << 20)?;
    let matrices: Vec<&[f32]> = (0..LAYERS)
        .map(|l| &*weights.take_fill_with(DIM * DIM, |i| weight(l, i)).unwrap())
        .collect();
    let weights_alone = weights.used();

    // The reference: the same network on heap buffers.
    let mut expected = vec![1.0f32; DIM];
    let mut hidden = vec![0.0f32; DIM];
    for w in &matrices {
        layer(w, &mut expected, &mut hidden);
    }

    let started = Instant::now();
    let mut kv_rows = 0;
    let mut wrong = 0;
    let mut scratch_peak_in_step = 0;
    for _step in 0..STEPS {
        // The residual stream: taken once a step, used by every layer.
        let x = scratch.take_fill(DIM, 1.0f32).unwrap();
        for w in &matrices {
            scratch.scope(|s| {
                let hidden = s.take_fill(DIM, 0.0f32).unwrap();
                layer(w, x, hidden);
                // The KV cache grows on the weights tape, and outlives the step.
                let _kv = weights.take_copy(hidden).unwrap();
                kv_rows += 1;
            });
        }
        if x != expected.as_slice() {
            wrong += 1;
        }
        scratch_peak_in_step = scratch_peak_in_step.max(scratch.used());
        scratch.clear();
    }
    let elapsed = started.elapsed();

    let layer_scratch = DIM * 4;
    println!(
        "{STEPS} steps of {LAYERS} layers ({DIM} wide): {:.0} steps/s",
        STEPS as f64 / elapsed.as_secs_f64()
    );
    println!(
        "scratch tape: peak {} bytes = the residual stream ({layer_scratch}) + one layer's \
         scratch ({layer_scratch}); without a scope per layer it would need {}",
        scratch.peak(),
        layer_scratch + LAYERS * layer_scratch
    );
    println!(
        "weights tape: {} bytes = weights ({weights_alone}) + KV cache ({kv_rows} rows, {} \
         bytes), never cleared",
        weights.used(),
        weights.used() - weights_alone
    );
    println!(
        "pinned: weights {}, scratch {}",
        weights.block().is_pinned(),
        scratch.block().is_pinned()
    );
    if wrong != 0 || scratch.peak() != 2 * layer_scratch {
        eprintln!(
            "{wrong} steps differ from the reference, scratch peak {}",
            scratch.peak()
        );
        return Ok(ExitCode::FAILURE);
    }
    println!("every step matches the reference");
    Ok(ExitCode::SUCCESS)
}
