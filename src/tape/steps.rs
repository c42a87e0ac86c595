//! [`Steps`]: a tape that persistent worker threads share step after step, cleared without
//! `unsafe`.
//!
//! The protocol is one word of state: a count of live [`Step`] guards, a bit that a clear
//! holds while it waits and runs, and a bit that says someone sleeps on the condition
//! variable. Entering a step is one `fetch_add`, leaving one `fetch_sub`; neither touches the
//! mutex unless a clear is pending. A clear takes the clearing bit, waits for the count to
//! drain, clears the tape, and drops the bit. Guards release when they leave and acquire when
//! they enter, and a clear acquires the count at zero and releases the bit, so every use of a
//! step's memory happens before the clear, and the clear before every take of the next step:
//! exactly what [`Tape::clear_shared`] asks of its caller.

use super::Tape;
use crate::block::Block;
use crate::sync::CachePadded;
use crate::sync::{
    AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};
use core::fmt;
use core::ops::Deref;
#[cfg(loom)]
use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
use std::sync::{Condvar, Mutex, MutexGuard};

/// Set while a clear waits for the guards to leave, and while it runs: no guard enters.
const CLEARING: usize = 1 << (usize::BITS - 1);
/// Set while some thread may sleep on `Steps::wake`: whoever changes what it waits for
/// wakes it.
const SLEEPING: usize = 1 << (usize::BITS - 2);
/// The low bits: how many guards are alive (or entering).
const GUARDS: usize = SLEEPING - 1;
/// A count with this bit set can only come from leaking guards (`mem::forget`): refused well
/// before the count could reach the flag bits.
const TOO_MANY: usize = 1 << (usize::BITS - 3);

/// A [`Tape`] that persistent worker threads share step after step, and that any of them
/// clears between steps, all without `unsafe`.
///
/// Each worker [`enter`](Steps::enter)s the step and takes through the [`Step`] guard it
/// gets; everything it takes borrows the guard, so it is gone when the guard is.
/// [`clear`](Steps::clear) and [`try_clear`](Steps::try_clear) need only `&self`: they clear
/// the tape only while no guard is alive, and no guard enters while they run. So the borrow
/// checker and one counter together prove what [`Tape::clear_shared`] leaves to its caller.
///
/// What it costs: entering and leaving a step are one atomic step each, however many takes
/// the guard makes; the takes themselves are [`Tape::take`]'s, through per-thread chunks.
///
/// ```
/// use std::sync::Barrier;
/// use unimem::{Steps, Tape};
///
/// let steps = Steps::new(Tape::start(1 << 20)?);
/// let barrier = Barrier::new(2);
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         for step in 0..3u32 {
///             barrier.wait(); // the step begins
///             let guard = steps.enter();
///             let xs = guard.take_fill(256, step).unwrap();
///             assert!(xs.iter().all(|&x| x == step));
///             drop(guard); // `xs` goes with it
///             barrier.wait(); // the step is done
///         }
///     });
///     for _ in 0..3 {
///         barrier.wait();
///         barrier.wait();
///         steps.clear(); // waits for every guard (there is none left here), then clears
///     }
/// });
/// # Ok::<(), unimem::Error>(())
/// ```
///
/// Nothing taken through a guard outlives it:
///
/// ```compile_fail,E0505
/// let steps = unimem::Steps::new(unimem::Tape::start(4096)?);
/// let guard = steps.enter();
/// let xs = guard.take_fill(4, 0u32).unwrap();
/// drop(guard); // error[E0505]: cannot move out of `guard` because it is borrowed
/// xs[0] = 1;
/// # Ok::<(), unimem::Error>(())
/// ```
///
/// # Waiting, and how not to wait forever
///
/// [`clear`](Steps::clear) waits until every guard is gone, and [`enter`](Steps::enter)
/// waits while a clear is pending, so a thread that holds a guard must not call `clear` or
/// `enter` on the same `Steps` again while another thread may clear: it would wait for
/// itself, as with a `RwLock` taken twice. [`try_clear`](Steps::try_clear) and
/// [`try_enter`](Steps::try_enter) never wait. A guard leaked with `mem::forget` keeps the
/// tape from ever being cleared again (but is never unsound).
pub struct Steps {
    /// The guard count and the two flags, on a line of their own: every worker changes it
    /// twice a step.
    state: CachePadded<AtomicUsize>,
    tape: Tape,
    /// Where a clear waits for the guards to leave, and guards for a clear to end.
    sleep: Mutex<()>,
    wake: Condvar,
}

/// One worker's part of a step of [`Steps`]: while it lives the tape is not cleared, and
/// through it (it dereferences to the [`Tape`]) the worker takes.
///
/// Everything taken through it borrows it: slices, [`Lane`](crate::Lane)s, collections. The
/// pointers [`Tape::take`] returns borrow nothing: the bytes stay the caller's until the next
/// clear, which may come as soon as the last guard is gone, so dereference them only while a
/// guard is alive (or a clear is otherwise ruled out).
///
/// A guard gives only `&Tape`: the tape's `&mut` calls ([`Tape::clear`],
/// [`Tape::rewind`]) need [`Steps::get_mut`], which no guard can outlive.
///
/// ```compile_fail,E0596
/// let steps = unimem::Steps::new(unimem::Tape::start(4096)?);
/// let mut guard = steps.enter();
/// let xs = guard.take_fill(4, 0u32).unwrap();
/// guard.clear(); // error[E0596]: cannot borrow data in dereference of `Step<'_>` as mutable
/// xs[0] = 1;
/// # Ok::<(), unimem::Error>(())
/// ```
#[must_use = "the guard is what lets a worker take; dropping it at once lets the tape clear"]
pub struct Step<'s> {
    steps: &'s Steps,
}

/// Why [`Steps::try_clear`] did not clear: guards are alive, or another clear is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepsBusy {
    guards: usize,
    clearing: bool,
}

impl StepsBusy {
    /// How many guards were alive (or entering) when the clear was refused.
    #[must_use]
    pub fn guards(&self) -> usize {
        self.guards
    }
}

impl fmt::Display for StepsBusy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.clearing {
            f.write_str("the tape was not cleared: another clear is running")
        } else {
            write!(
                f,
                "the tape was not cleared: {} step guard{} still alive; drop every `Step` \
                 first, or call `Steps::clear`, which waits for them",
                self.guards,
                if self.guards == 1 { " is" } else { "s are" }
            )
        }
    }
}

impl std::error::Error for StepsBusy {}

impl Steps {
    /// Puts `tape` under the step protocol. [`into_tape`](Steps::into_tape) gives it back.
    ///
    /// ```
    /// let steps = unimem::Steps::new(unimem::Tape::start(4096)?);
    /// assert!(steps.block().len() >= 4096);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use]
    pub fn new(tape: Tape) -> Steps {
        Steps {
            state: CachePadded(AtomicUsize::new(0)),
            tape,
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Enters the step: the tape is not cleared until the guard is dropped. Waits while a
    /// clear is pending; see [`try_enter`](Steps::try_enter) for a call that does not.
    ///
    /// One atomic step, and one more when the guard is dropped.
    ///
    /// # Panics
    /// If more than `usize::MAX / 8` guards are alive at once, which only leaking them does.
    ///
    /// ```
    /// let steps = unimem::Steps::new(unimem::Tape::start(4096)?);
    /// let guard = steps.enter();
    /// let word = guard.take_value(7u64).unwrap();
    /// assert_eq!(*word, 7);
    /// assert!(steps.try_clear().is_err()); // the guard is alive
    /// drop(guard);
    /// assert!(steps.try_clear().is_ok());
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[track_caller]
    pub fn enter(&self) -> Step<'_> {
        loop {
            match self.try_enter() {
                Some(step) => return step,
                None => self.wait_until(|state| state & CLEARING == 0),
            }
        }
    }

    /// Enters the step, or `None` without waiting while a clear is pending.
    ///
    /// # Panics
    /// As [`enter`](Steps::enter).
    ///
    /// ```
    /// let steps = unimem::Steps::new(unimem::Tape::start(4096)?);
    /// let guard = steps.try_enter().expect("no clear is running");
    /// assert!(guard.take(8, 8).is_some());
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[track_caller]
    pub fn try_enter(&self) -> Option<Step<'_>> {
        // Acquire: a clear that ended before this releases its bit, and this reads the value
        // it left (or a later one of the same release sequence), so the clear happens before
        // every take through the guard.
        let before = self.state.fetch_add(1, Acquire);
        if before & (CLEARING | TOO_MANY) == 0 {
            return Some(Step { steps: self });
        }
        self.enter_refused(before)
    }

    #[cold]
    #[inline(never)]
    #[track_caller]
    fn enter_refused(&self, before: usize) -> Option<Step<'_>> {
        // Back out as a guard leaves, so that a clear waiting for the count hears of it.
        self.leave();
        assert!(
            before & TOO_MANY == 0,
            "Steps::enter: {} guards are alive at once; guards are being leaked \
             (`mem::forget`) instead of dropped",
            before & GUARDS
        );
        None
    }

    /// Clears the tape if no guard is alive, without waiting: `Err` says how many are.
    ///
    /// # Errors
    /// [`StepsBusy`] when a guard is alive or another clear is running; nothing changed.
    ///
    /// ```
    /// let steps = unimem::Steps::new(unimem::Tape::start(4096)?);
    /// drop(steps.enter().take_fill(100, 0u8).unwrap().len());
    /// steps.try_clear()?;
    /// assert_eq!(steps.enter().used(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_clear(&self) -> Result<(), StepsBusy> {
        self.try_clear_with(clear_tape)
    }

    fn try_clear_with(&self, clear: impl FnOnce(&Tape)) -> Result<(), StepsBusy> {
        let mut state = self.state.load(Relaxed);
        loop {
            if state & (CLEARING | GUARDS) != 0 {
                return Err(StepsBusy {
                    guards: state & GUARDS,
                    clearing: state & CLEARING != 0,
                });
            }
            // Acquire: the count read here is at zero at the end of the release sequence of
            // every guard that left, so all their uses of the memory happen before the clear.
            match (self.state).compare_exchange_weak(state, state | CLEARING, Acquire, Relaxed) {
                Ok(_) => break,
                Err(now) => state = now,
            }
        }
        self.exclusive(clear);
        Ok(())
    }

    /// Clears the tape as soon as no guard is alive: from now until it returns no guard
    /// enters, and it waits for the ones alive to be dropped. Briefly spins, then sleeps.
    ///
    /// Must not be called by a thread that holds a guard of these steps: it would wait for
    /// itself. Use [`try_clear`](Steps::try_clear) there.
    ///
    /// ```
    /// let steps = unimem::Steps::new(unimem::Tape::start(4096)?);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| drop(steps.enter().take_fill(100, 1u8).unwrap().len()));
    /// });
    /// steps.clear();
    /// assert_eq!(steps.enter().used(), 0);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    pub fn clear(&self) {
        self.clear_with(clear_tape);
    }

    fn clear_with(&self, clear: impl FnOnce(&Tape)) {
        // Take the clearing bit, after any other clear has dropped it.
        loop {
            let before = self.state.fetch_or(CLEARING, Acquire);
            if before & CLEARING == 0 {
                if before & GUARDS != 0 {
                    self.wait_until(|state| state & GUARDS == 0);
                }
                break;
            }
            self.wait_until(|state| state & CLEARING == 0);
        }
        self.exclusive(clear);
    }

    /// The tape, for a caller that holds the steps alone: no guard can be alive.
    ///
    /// ```
    /// let mut steps = unimem::Steps::new(unimem::Tape::start(4096)?);
    /// drop(steps.enter().take(100, 1));
    /// assert_eq!(steps.get_mut().peak(), 100);
    /// steps.get_mut().clear();
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use]
    pub fn get_mut(&mut self) -> &mut Tape {
        &mut self.tape
    }

    /// The tape back, to use on its own.
    ///
    /// ```
    /// let steps = unimem::Steps::new(unimem::Tape::start(4096)?);
    /// let tape = steps.into_tape();
    /// assert_eq!(tape.used(), 0);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use]
    pub fn into_tape(self) -> Tape {
        self.tape
    }

    /// The tape's block, for its [`handle`](Block::handle) and whether it is
    /// [pinned](Block::is_pinned). (The tape itself is reached only through a guard.)
    ///
    /// ```
    /// let steps = unimem::Steps::new(unimem::Tape::start(4096)?);
    /// println!("pinned: {}", steps.block().is_pinned());
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use]
    pub fn block(&self) -> &Block {
        self.tape.block()
    }

    /// Runs `f` on the tape while the clearing bit is held and no guard is alive, then drops
    /// the bit (releasing what `f` did to every guard after) and wakes whoever waits.
    #[inline]
    fn exclusive(&self, f: impl FnOnce(&Tape)) {
        f(&self.tape);
        let before = self.state.fetch_and(!CLEARING, Release);
        if before & SLEEPING != 0 {
            self.wake_all();
        }
    }

    /// A guard leaves: one atomic step, and a wake-up when a clear waits for the last one.
    #[inline]
    fn leave(&self) {
        // Release: everything the guard's holder did with the memory happens before a clear
        // that sees the count at zero.
        let before = self.state.fetch_sub(1, Release);
        if before & SLEEPING != 0 && before & GUARDS == 1 {
            self.wake_all();
        }
    }

    /// Waits until `ready` holds of the state, read with acquire ordering.
    #[cold]
    #[inline(never)]
    fn wait_until(&self, ready: impl Fn(usize) -> bool) {
        // Spin first: a worker's last guard of a step is usually gone within microseconds,
        // far less than a sleep and a wake-up cost. (Loom explores the sleeping path.)
        #[cfg(not(loom))]
        for _ in 0..256 {
            if ready(self.state.load(Acquire)) {
                return;
            }
            core::hint::spin_loop();
        }
        let mut lock = lock(&self.sleep);
        loop {
            // Announce the sleeper and read the state in one step, under the mutex: whoever
            // changes the state after this sees the flag and wakes this thread, which it can
            // only do (taking the mutex) once this thread waits on the condition variable.
            let state = self.state.fetch_or(SLEEPING, Acquire);
            if ready(state) {
                return;
            }
            lock = self
                .wake
                .wait(lock)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    #[cold]
    #[inline(never)]
    fn wake_all(&self) {
        let _lock = lock(&self.sleep);
        // Every sleeper wakes and sets the flag again if it must sleep on.
        self.state.fetch_and(!SLEEPING, Relaxed);
        self.wake.notify_all();
    }
}

/// What a clear does to the tape, with the clearing bit held and no guard alive.
fn clear_tape(tape: &Tape) {
    // SAFETY: `clear_shared`'s contract, point by point. (1) Nothing taken before is used
    // after: everything taken through a guard borrows the guard (the `&Tape` it derefs to is
    // tied to it), raw pointers aside, and no guard is alive. (2) No `Lane` is alive: a lane
    // borrows a guard too. (3) No other call on the tape runs concurrently, and the ordering
    // holds: the tape is reached only through a guard (or `&mut Steps`), every guard's
    // release at leaving is acquired by the read that saw the count at zero, and the release
    // of the clearing bit in `Steps::exclusive` is acquired by every guard entering after it.
    unsafe { tape.clear_shared() }
}

/// The mutex, whether or not a thread panicked while holding it: it guards no data.
fn lock(mutex: &Mutex<()>) -> MutexGuard<'_, ()> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl From<Tape> for Steps {
    fn from(tape: Tape) -> Steps {
        Steps::new(tape)
    }
}

impl fmt::Debug for Steps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.load(Relaxed);
        f.debug_struct("Steps")
            .field("guards", &(state & GUARDS))
            .field("clearing", &(state & CLEARING != 0))
            .field("block", self.block())
            .finish_non_exhaustive()
    }
}

impl Deref for Step<'_> {
    type Target = Tape;

    /// The tape, for as long as this borrow of the guard lasts.
    #[inline]
    fn deref(&self) -> &Tape {
        &self.steps.tape
    }
}

impl Drop for Step<'_> {
    #[inline]
    fn drop(&mut self) {
        self.steps.leave();
    }
}

impl fmt::Debug for Step<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Step").field(&**self).finish()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The guard/clear protocol under every interleaving loom finds. The tape's own memory
    //! is not visible to loom, so a `loom::cell::UnsafeCell` stands in for a step's memory:
    //! guards read it, a clear writes it, and loom reports any pair not ordered by the
    //! protocol as a data race.

    use super::{Steps, Tape};
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    struct Model {
        steps: Steps,
        memory: UnsafeCell<u32>,
    }

    // SAFETY: `memory` is only touched as the protocol allows, which is what loom checks.
    unsafe impl Sync for Model {}

    impl Model {
        fn new() -> Arc<Model> {
            Arc::new(Model {
                steps: Steps::new(Tape::start(4096).expect("the heap backend gives small blocks")),
                memory: UnsafeCell::new(0),
            })
        }

        /// A worker's step: reads the memory and takes, under a guard. Returns the
        /// generation of memory it saw.
        fn work(&self, guard: super::Step<'_>) -> u32 {
            let seen = self.memory.with(|memory| {
                // SAFETY: a guard is alive, so no clear writes `memory` now.
                unsafe { *memory }
            });
            let taken = guard.take(8, 8).expect("room");
            assert!(guard.owns(taken.as_ptr()));
            drop(guard);
            seen
        }

        /// A clear that also writes the stand-in memory inside its exclusive section.
        fn clear(&self, wait: bool) -> bool {
            let exclusive = |tape: &Tape| {
                self.memory.with_mut(|memory| {
                    // SAFETY: the clearing bit is held and no guard is alive.
                    unsafe { *memory += 1 }
                });
                super::clear_tape(tape);
                assert_eq!(tape.used(), 0);
            };
            let steps = &self.steps;
            if wait {
                steps.clear_with(exclusive);
                true
            } else {
                steps.try_clear_with(exclusive).is_ok()
            }
        }
    }

    #[test]
    fn loom_a_waiting_clear_is_ordered_after_every_guard_and_before_the_next() {
        loom::model(|| {
            let model = Model::new();
            let worker = {
                let model = model.clone();
                thread::spawn(move || {
                    let first = model.work(model.steps.enter());
                    let second = model.work(model.steps.enter());
                    assert!(first <= second);
                })
            };
            model.clear(true);
            worker.join().unwrap();
            let model = Arc::try_unwrap(model).ok().expect("the worker is gone");
            // SAFETY: the worker is joined.
            assert_eq!(model.memory.with(|m| unsafe { *m }), 1);
        });
    }

    #[test]
    fn loom_try_clear_never_clears_under_a_guard() {
        loom::model(|| {
            let model = Model::new();
            let worker = {
                let model = model.clone();
                thread::spawn(move || {
                    if let Some(guard) = model.steps.try_enter() {
                        model.work(guard);
                    }
                })
            };
            let cleared = model.clear(false);
            worker.join().unwrap();
            // SAFETY: the worker is joined.
            let before = model.memory.with(|m| unsafe { *m });
            assert_eq!(before, u32::from(cleared));
            // With every guard gone, a try always succeeds.
            assert!(model.clear(false));
        });
    }

    #[test]
    fn loom_two_waiting_clears_and_a_guard() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let model = Model::new();
            let clearer = {
                let model = model.clone();
                thread::spawn(move || model.clear(true))
            };
            let worker = {
                let model = model.clone();
                thread::spawn(move || model.work(model.steps.enter()))
            };
            model.clear(true);
            assert!(clearer.join().unwrap());
            assert!(worker.join().unwrap() <= 2);
            // SAFETY: both threads are joined.
            assert_eq!(model.memory.with(|m| unsafe { *m }), 2, "both clears ran");
        });
    }

    #[test]
    fn loom_two_guards_and_a_waiting_clear() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let model = Model::new();
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let model = model.clone();
                    thread::spawn(move || model.work(model.steps.enter()))
                })
                .collect();
            model.clear(true);
            for worker in workers {
                assert!(worker.join().unwrap() <= 1);
            }
        });
    }
}
