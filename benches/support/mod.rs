//! What every benchmark file shares.

use criterion::Criterion;
use std::time::Duration;

/// Short warm-up and measurement, so that the whole `cargo bench` (about 80 functions) stays
/// within 10 minutes on a 2-core machine. Groups that need more samples or time say so.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}
