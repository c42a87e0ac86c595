//! `Steps`: persistent workers sharing a tape step after step while other threads clear it.
//! Every allocation is tagged with who took it, in which step, and verified before its guard
//! goes: a clear under a live guard, or two guards handed the same bytes, breaks a tag.
//! Every wait is bounded: a deadlock fails the test instead of hanging it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use unimem::{Block, Pinning, Step, Steps, Tape};

/// An unpinned tape, so that tests do not depend on the memory-lock limit.
fn steps(len: usize) -> Steps {
    Steps::new(Tape::on(
        Block::options().pinning(Pinning::Off).open(len).unwrap(),
    ))
}

/// Runs `f` on a thread of its own and fails if it takes longer than `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = mpsc::channel();
    let runner = thread::spawn(move || {
        let _ = done.send(f());
    });
    match finished.recv_timeout(limit) {
        Ok(value) => {
            runner.join().unwrap();
            value
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match runner.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the runner sends before it ends"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("no progress in {limit:?}: the step protocol deadlocked")
        }
    }
}

const LIMIT: Duration = Duration::from_secs(120);

/// What worker `worker` writes into word `i` of its `n`-th allocation of step `step`.
fn tag(step: usize, worker: usize, n: usize, i: usize) -> u64 {
    ((step as u64) << 40) ^ ((worker as u64) << 32) ^ ((n as u64) << 16) ^ i as u64
}

/// One worker's part of a step: many tagged allocations of varied sizes, each checked after
/// all are taken (so another worker's take or a clear in between would show). Returns how
/// many it took.
fn work(guard: &Step<'_>, step: usize, worker: usize, takes: usize) -> usize {
    let mut taken = Vec::with_capacity(takes);
    for n in 0..takes {
        let len = 1 + (n * 7 + worker) % 40;
        let Some(words) = guard.take_fill(len, 0u64) else {
            break; // the tape is full for this step: fine, the tags still get checked
        };
        for (i, word) in words.iter_mut().enumerate() {
            *word = tag(step, worker, n, i);
        }
        taken.push(words);
        thread::yield_now();
    }
    for (n, words) in taken.iter().enumerate() {
        for (i, &w) in words.iter().enumerate() {
            assert_eq!(
                w,
                tag(step, worker, n, i),
                "step {step}, worker {worker}, take {n}"
            );
        }
    }
    taken.len()
}

#[test]
fn workers_and_clearers_never_share_a_byte_across_many_steps() {
    let (workers, step_count, takes) = if cfg!(miri) { (2, 4, 8) } else { (4, 300, 64) };
    let counts = within(LIMIT, move || {
        let steps = steps(1 << 20);
        let stop = AtomicBool::new(false);
        let (cleared, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
        thread::scope(|s| {
            // Two clearers, one waiting and one trying, racing the workers and each other.
            let clearers = [true, false].map(|waits| {
                let (steps, stop, cleared, refused) = (&steps, &stop, &cleared, &refused);
                s.spawn(move || {
                    while !stop.load(Relaxed) {
                        if waits {
                            steps.clear();
                            cleared.fetch_add(1, Relaxed);
                        } else if steps.try_clear().is_ok() {
                            cleared.fetch_add(1, Relaxed);
                        } else {
                            refused.fetch_add(1, Relaxed);
                        }
                        thread::yield_now();
                    }
                })
            });
            let taken: usize = (0..workers)
                .map(|worker| {
                    let steps = &steps;
                    s.spawn(move || {
                        (0..step_count)
                            .map(|step| work(&steps.enter(), step, worker, takes))
                            .sum::<usize>()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|w| w.join().unwrap())
                .sum();
            stop.store(true, Relaxed);
            for clearer in clearers {
                clearer.join().unwrap();
            }
            (taken, cleared.load(Relaxed), refused.load(Relaxed))
        })
    });
    let (taken, cleared, _refused) = counts;
    assert!(cleared > 0, "no clear ever ran");
    assert!(taken > 0);
}

#[test]
fn a_clear_waits_for_the_last_guard_and_holds_off_new_ones() {
    within(LIMIT, || {
        let steps = steps(1 << 16);
        let entered_during_clear = AtomicBool::new(false);
        thread::scope(|s| {
            let guard = steps.enter();
            let xs = guard.take_fill(64, 7u8).unwrap();
            let clearer = s.spawn(|| steps.clear());
            // The clearer waits for `guard`; give it time to get there and block entries.
            while steps.try_enter().is_some() {
                thread::yield_now();
            }
            let late = s.spawn(|| {
                let guard = steps.enter(); // waits until the clear is done
                entered_during_clear.store(true, Relaxed);
                guard.used()
            });
            thread::sleep(Duration::from_millis(20));
            assert!(!clearer.is_finished(), "cleared under a live guard");
            assert!(
                !entered_during_clear.load(Relaxed),
                "entered during a clear"
            );
            assert!(xs.iter().all(|&x| x == 7));
            drop(guard);
            clearer.join().unwrap();
            assert_eq!(late.join().unwrap(), 0, "the late guard sees a clear tape");
        });
    });
}

#[test]
fn try_clear_says_how_many_guards_are_alive() {
    let steps = steps(1 << 16);
    let (a, b) = (steps.enter(), steps.enter());
    let busy = steps.try_clear().unwrap_err();
    assert_eq!(busy.guards(), 2);
    assert!(
        busy.to_string().contains("2 step guards are still alive"),
        "{busy}"
    );
    drop((a, b));
    steps.try_clear().unwrap();
}

#[test]
fn per_thread_chunks_start_afresh_after_a_clear() {
    let steps = steps(1 << 20);
    // A worker settles on the tape and holds a chunk; after a clear it must not hand out
    // the rest of that chunk again while a new step's takes start at 0.
    let first = {
        let guard = steps.enter();
        let a = guard.take_fill(2048, 1u8).unwrap().as_ptr();
        let b = guard.take_fill(16, 2u8).unwrap().as_ptr();
        (guard.offset_of(a).unwrap(), guard.offset_of(b).unwrap())
    };
    steps.clear();
    let guard = steps.enter();
    assert_eq!(guard.used(), 0);
    let c = guard.take_fill(16, 3u8).unwrap();
    assert_eq!(guard.offset_of(c.as_ptr()), Some(0));
    assert!(first.1 > 0);
}

#[test]
#[cfg_attr(miri, ignore = "leaks on purpose and leaves a thread blocked for ever")]
fn a_leaked_guard_keeps_its_takes_and_the_tape_uncleared() {
    let steps: &'static Steps = Box::leak(Box::new(steps(1 << 16)));
    let leaked: &'static Step<'static> = Box::leak(Box::new(steps.enter()));
    let kept = leaked.take_fill(64, 0xa5u8).unwrap();
    let busy = steps.try_clear().unwrap_err();
    assert_eq!(busy.guards(), 1, "{busy}");
    // A clear waits for the leaked guard for ever: it must not have cleared after a while,
    // and no guard gets in meanwhile.
    let clearer = thread::spawn(|| steps.clear());
    while steps.try_enter().is_some() {
        thread::yield_now(); // until the clearer holds new guards off
    }
    thread::sleep(Duration::from_millis(50));
    assert!(!clearer.is_finished(), "cleared under a leaked guard");
    assert!(kept.iter().all(|&b| b == 0xa5));
    assert_eq!(leaked.used(), 64, "nothing was cleared");
    // The clearer stays blocked on the leaked guard; the process ends with it.
}

#[test]
fn a_worker_that_panics_leaves_its_step() {
    let steps = steps(1 << 16);
    let outcome = thread::scope(|s| {
        s.spawn(|| {
            let guard = steps.enter();
            guard.take_fill(16, 1u8).unwrap();
            panic!("a worker fails mid-step");
        })
        .join()
    });
    assert!(outcome.is_err());
    steps.try_clear().expect("the unwound guard left the step");
    assert_eq!(steps.enter().used(), 0);
}
