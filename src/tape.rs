//! [`Tape`]: the lock-free bump allocator over a [`Block`], and its per-thread [`Lane`]s.
//!
//! The model is documented on [`Tape`] itself, where users see it.

#[cfg(feature = "allocator-api2")]
mod allocator;
#[cfg(feature = "allocator-api2")]
mod collections;
mod lane;
#[cfg(all(test, loom))]
mod loom_tests;
mod per_thread;
mod scope;
mod steps;
mod typed;

#[cfg(feature = "allocator-api2")]
pub use collections::{CollectIn, FromIteratorIn, TapeBox, TapeString, TapeVec};
pub use lane::Lane;
pub use scope::Scope;
pub use steps::{Step, Steps, StepsBusy};

use crate::block::{Block, OpenOptions};
use crate::error::Error;
use crate::sync::{
    AtomicBool, AtomicU64, AtomicUsize, CachePadded,
    Ordering::{Acquire, Relaxed, Release},
};
use core::alloc::Layout;
use core::fmt;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

/// A lock-free bump allocator over a [`Block`]: many threads take, one clear frees all.
///
/// ```
/// use unimem::Tape;
///
/// let mut tape = Tape::start(64 << 10)?;
/// for _step in 0..3 {
///     let input = tape.take_fill(16, 1.0f32).unwrap();
///     let hidden = tape.take_copy(&[0.5f32; 32]).unwrap();
///     let sum: f32 = input.iter().chain(hidden.iter()).sum();
///     assert_eq!(sum, 32.0);
///     tape.clear(); // `input` and `hidden` are gone; the borrow checker makes sure of it
/// }
/// assert_eq!(tape.peak(), 16 * 4 + 32 * 4);
/// # Ok::<(), unimem::Error>(())
/// ```
///
/// # The model
///
/// A tape is a [`Block`] with a cursor. [`take`](Tape::take) moves the cursor forward past the
/// bytes it hands out; [`clear`](Tape::clear) moves it back to the start, throwing everything
/// away at once. Nothing is ever freed on its own, and no destructor ever runs on tape memory:
/// a value whose `Drop` matters must not live on a tape (its destructor is simply skipped,
/// which leaks whatever it owned, but is never undefined behaviour).
///
/// That is the shape of an inference step: take the activations of every layer, use them,
/// clear, repeat. A layer's scratch can come back sooner, while what was taken before stays
/// in use, through a [`scope`](Tape::scope). [`peak`](Tape::peak) says how much a step
/// needed, which is how to size the tape.
///
/// # Who may touch which bytes, and when
///
/// - Bytes returned by a take belong to whoever took them, and to nobody else, until the tape
///   is cleared, rewound past them, or dropped. Two takes never return overlapping bytes, from
///   any number of threads: `take` needs only `&self`, so a `Tape` is shared by reference.
/// - [`clear`](Tape::clear) and [`rewind`](Tape::rewind) need `&mut self`. The typed
///   allocations ([`take_slice`](Tape::take_slice), [`take_copy`](Tape::take_copy),
///   [`take_fill`](Tape::take_fill), [`take_value`](Tape::take_value)) borrow the tape, so
///   the borrow checker proves that none of them is alive when the memory is handed out again.
///   Raw pointers from [`take`](Tape::take) carry no borrow: using one after a clear is the
///   caller's bug, and dereferencing it is already `unsafe`.
/// - A tape shared by threads for its whole life (an `Arc<Tape>`, a `static`) can still be
///   cleared through [`clear_shared`](Tape::clear_shared), whose contract puts on the caller
///   what `&mut` would otherwise prove.
///
/// # How takes stay fast on many threads
///
/// A locked read-modify-write on a shared cursor costs several nanoseconds on current x86
/// cores even when no other core wants the line, and several times that when cores take
/// turns owning it. So [`take`](Tape::take) does not touch the shared cursor on every call:
/// each thread that keeps taking from a tape claims a *chunk* of it (with one atomic step)
/// and hands out pieces of it with plain arithmetic, about a nanosecond a take, with no
/// traffic between cores. A thread's first kilobyte from a tape, requests large against its
/// chunk and the last bytes of a nearly full tape go exactly to the shared cursor, so chunks
/// cost little memory: see [`take`](Tape::take) for the bound. Where an uncontended
/// compare-and-swap is cheap (Apple silicon), a tape takes at the shared cursor until two
/// threads first collide on it, and through chunks from then on.
///
/// # Why lanes
///
/// A [`Lane`] is the same idea under the caller's control: a chunk of a size the caller
/// chooses, held by a value rather than by the thread, and handed back when it is dropped.
/// Its takes skip even the thread-local look-up. Each thread takes its own lane:
///
/// ```
/// use unimem::Tape;
///
/// let mut tape = Tape::start(1 << 20)?;
/// std::thread::scope(|s| {
///     for t in 0..2u32 {
///         let mut lane = tape.lane();
///         s.spawn(move || {
///             let xs = lane.take_fill(256, t).expect("the tape is large enough");
///             assert!(xs.iter().all(|&x| x == t));
///         });
///     }
/// });
/// // Every lane is gone (the scope joined the threads), so the tape can be cleared.
/// tape.clear();
/// assert_eq!(tape.used(), 0);
/// # Ok::<(), unimem::Error>(())
/// ```
///
/// # Memory for hardware
///
/// Everything a tape hands out lies in its [`block`](Tape::block): a GPU or DMA engine that
/// was given the block's [`handle`](Block::handle) finds an allocation at
/// [`offset_of`](Tape::offset_of).
//
// `Tape` is `Send` and `Sync` because `Block` is and everything else is atomic. `Sync` is also
// sound in the stronger sense that `&Tape` shared by threads cannot hand one byte to two of
// them: see `advance` for why the cursor's order alone guarantees that.
pub struct Tape {
    /// On a cache line of their own: every take changes `cursor`, so nothing else that threads
    /// read should share its line. `peak` may: only `clear`, `rewind` and a lane handing back
    /// its chunk write it.
    counters: CachePadded<Counters>,
    /// This tape among all tapes the process ever made: never reused, so that neither a
    /// [`Mark`] nor a thread's chunk of a dropped tape is mistaken for one of a new tape that
    /// got the same address.
    id: u64,
    /// Moves on at a clear or rewind, so that every thread's chunk (see `per_thread`) taken
    /// before is known to be gone; it stays only when no thread but the clearing one can hold
    /// a chunk of it (see `per_thread::rewind_and_prime`). Unique among the generations of all
    /// tapes, ever (see [`next_generation`]), so that it alone says whose chunk a thread's
    /// slot holds and whether it is current: one comparison per take. Read by every take,
    /// written only when nothing else runs: on the line after `counters`, with the block's
    /// address and length.
    generation: AtomicU64,
    block: Block,
}

/// Hands out tape identities. Real atomics even under loom: no model races on it, and a
/// loom atomic cannot be a `static`.
static NEXT_ID: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);

/// A fresh tape identity. 2^64 tapes cannot be made in a process's life (one per nanosecond
/// is 584 years), so a counter never wraps.
fn fresh_id() -> u64 {
    NEXT_ID.fetch_add(1, core::sync::atomic::Ordering::Relaxed)
}

/// How many generations a tape takes in one go: a run of them is the tape's alone. (Short
/// under Miri, so that its tests cross from one run to the next in a few clears.)
#[cfg(not(miri))]
const GENERATION_RUN: u64 = 1 << 16;
#[cfg(miri)]
const GENERATION_RUN: u64 = 1 << 4;

/// Hands out runs of generations, as `NEXT_ID` hands out identities (real atomics for the
/// same reason).
static NEXT_RUN: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);

/// The first generation of a fresh run, never 0 (which marks a thread's empty slot) and never
/// one that any tape had before. A run is drawn only when a tape is made and once every
/// `GENERATION_RUN` clears, so the 2^48 runs last 584 years at one draw every 65 µs; should
/// they ever run out, this panics rather than hand out a generation twice.
#[cold]
#[inline(never)]
fn fresh_generation_run() -> u64 {
    let run = NEXT_RUN.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    assert!(
        run < u64::MAX / GENERATION_RUN,
        "unimem: this process has used up every tape generation (2^48 runs of 2^16)"
    );
    run * GENERATION_RUN
}

/// The generation after `generation`, of the same tape: the next one in its run, or the first
/// of a fresh run. Unique like every generation, so a thread's chunk of another tape, or of an
/// earlier generation of this one, never passes for current.
#[inline(always)]
fn next_generation(generation: u64) -> u64 {
    let next = generation + 1;
    if next % GENERATION_RUN == 0 {
        return fresh_generation_run();
    }
    next
}

struct Counters {
    /// Offset of the first free byte, `<= capacity`. It only grows between rewinds, apart from
    /// lanes handing back chunk tails nobody claimed after.
    cursor: AtomicUsize,
    /// The largest cursor seen at a clear, a rewind or a lane handing back its tail (the only
    /// times the cursor goes down), so that `take` never has to update it.
    peak: AtomicUsize,
    /// Whether an exchange on `cursor` ever failed: where compare-and-swap is cheap, takes
    /// use per-thread chunks only from then on (`per_thread::CAS_UNTIL_CONTENDED`). Written
    /// once, read by every take along with `cursor`, whose line it shares on purpose.
    contended: AtomicBool,
    /// The address of the thread slot (see `per_thread`) holding the only chunk of this
    /// generation that any thread may hold, or 0: a clear or rewind sets it to the slot it
    /// hands a chunk, and a thread that claims a chunk (or grows one past its end) from
    /// `cursor` sets it to 0, right after that exchange, on the line the exchange just wrote,
    /// and only if it is not 0 yet. While it names the clearing thread's slot, a clear may keep
    /// the generation (see `per_thread::rewind_and_prime`). No slot lies at address 0.
    only_chunk: AtomicUsize,
}

/// A checkpoint in a [`Tape`], from [`Tape::mark`], to [`rewind`](Tape::rewind) to later.
///
/// It remembers the tape it came from and how much was used. Rewinding another tape to it
/// panics, as does rewinding to it when it lies ahead of the cursor (the tape was cleared or
/// rewound below it since); see [`Tape::rewind`] for the stale mark it cannot detect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The tape's identity, never shared with any other tape, live or dropped.
    tape: u64,
    offset: usize,
}

impl Mark {
    /// How many bytes the tape had used when the mark was made: what a rewind goes back to.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// tape.take(100, 1).unwrap();
    /// assert_eq!(tape.mark().used(), 100);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use]
    pub fn used(&self) -> usize {
        self.offset
    }
}

impl Tape {
    /// Opens a lazy [`Block`] of at least `len` bytes with the default options and puts a tape
    /// on it. See [`Block::open`] for how `len` is rounded and what can fail.
    ///
    /// The default pinning is best effort: the pages are pinned when the process's lock limit
    /// (`ulimit -l`, often only 8 MiB for an ordinary Linux user) has room for them, and the
    /// tape opens unpinned otherwise; `tape.block().is_pinned()` says which. To get pinning
    /// or an error instead, open with [`Pinning::Required`](crate::Pinning::Required) through
    /// [`with_options`](Tape::with_options).
    ///
    /// # Errors
    /// Those of [`Block::open`]: no memory, or no descriptor left to make it with.
    ///
    /// ```
    /// let tape = unimem::Tape::start(1 << 20)?;
    /// assert!(tape.capacity() >= 1 << 20);
    /// assert_eq!(tape.used(), 0);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    pub fn start(len: usize) -> Result<Tape, Error> {
        Block::open(len).map(Tape::on)
    }

    /// Takes `size` bytes aligned to `align` and returns a pointer to the first, or `None` if
    /// the tape cannot fit them. Lock-free, and without an atomic step on most calls: the
    /// bytes come from this thread's chunk of the tape, claimed from the shared cursor with
    /// one compare-and-swap per chunk. No allocation, no lock, and nothing to drop at thread
    /// exit. Like `malloc`, it is not async-signal-safe: a signal handler must not take from
    /// a tape that the thread it interrupted may be taking from.
    ///
    /// What chunks cost: a thread's first kilobyte from a tape goes exactly to the shared
    /// cursor; then it claims chunks of 1 KiB doubling to 64 KiB, each at most an eighth of
    /// what is free, and moves to a new one only when at most an eighth of the old is left.
    /// Large requests (over a quarter of the next chunk) and every take near the end of the
    /// tape go exactly to the cursor, so one thread fills a tape to the byte. A thread holds
    /// chunks of up to four tapes at once, at most one per tape, so taking from two to four
    /// tapes in turn stays this fast; with `N` threads a take fails only when, besides what it
    /// asked for not being free at the cursor or in its own chunk, at most `N - 1` chunks of
    /// 64 KiB are held elsewhere. A chunk a thread leaves (for a fifth tape, or when it ends)
    /// keeps at most 64 KiB, and at most 8/7 of what the thread took from it, until the next
    /// [`clear`](Tape::clear); a [`Lane`] gives its chunk back when dropped. A clear hands the
    /// clearing thread a chunk of at most 1/64 of the tape at once, so that its first take
    /// after it is a fast one; a thread that goes on to more than four other tapes before it
    /// takes from this one again leaves that much behind until the next clear.
    ///
    /// The bytes are the caller's until the tape is [cleared](Tape::clear), rewound past them
    /// or dropped. Their contents are whatever was there before: zeroes on a fresh tape, but
    /// after a `clear` or `rewind` possibly *uninitialised* bytes (the padding of a value
    /// taken earlier, a `MaybeUninit` never written), so treat them as `MaybeUninit<u8>`:
    /// write before you read. The typed takes ([`take_fill`](Tape::take_fill),
    /// [`take_copy`](Tape::take_copy), ...) do that for you.
    /// `None` is final for this size: the tape never wraps around, and no `size`, however
    /// large, overflows the arithmetic. Alignment is of the address itself, so any power of
    /// two works, including ones above the page size.
    ///
    /// Size 0 consumes nothing: it returns where the next take aligned to `align` could start
    /// (possibly one past the last byte of the tape), which a later take may hand out too.
    /// Such a pointer is only for comparing or passing to APIs that read zero bytes.
    ///
    /// # Panics
    /// If `align` is not a power of two.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let p = tape.take(100, 64).unwrap();
    /// assert_eq!(p.as_ptr() as usize % 64, 0);
    /// assert!(tape.take(usize::MAX, 1).is_none()); // never overflows
    /// # Ok::<(), unimem::Error>(())
    /// ```
    ///
    /// Ignoring the result warns: the bytes would stay taken with nobody to use them.
    ///
    /// ```compile_fail
    /// #![deny(unused_must_use)]
    /// let tape = unimem::Tape::start(4096).unwrap();
    /// tape.take(8, 8); // error: unused return value of `Tape::take` that must be used
    /// ```
    #[inline]
    #[must_use = "the bytes stay taken until the tape is cleared; use the pointer or don't take"]
    #[track_caller]
    pub fn take(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        check_align(align);
        if size == 0 {
            let cursor = self.counters.cursor.load(Relaxed);
            let (start, _) = fit(self.base(), cursor, 0, align, self.capacity())?;
            return Some(self.at(start));
        }
        if per_thread::CAS_UNTIL_CONTENDED && !self.counters.contended.load(Relaxed) {
            return self.take_until_contended(size, align);
        }
        let start = match per_thread::bump(self, size, align) {
            Some(start) => start,
            None => per_thread::take_slow(self, size, align)?,
        };
        Some(self.at(start))
    }

    /// Throws away everything taken: the whole capacity is free again. O(1), whatever was
    /// taken, and never touches the memory itself.
    ///
    /// A thread that was taking from the tape gets a fresh chunk of it from the clear, so its
    /// next take is a fast one. In a loop of takes and clears on one thread, where no other
    /// thread claimed a chunk since the last clear, a clear stores little more than the
    /// cursors: a step of one take and a clear costs about what bumpalo's allocation and reset
    /// cost (the README's benchmarks). Every other clear also ends the chunks other threads
    /// hold, with a few more stores.
    ///
    /// It needs `&mut self`, so nothing borrowed from the tape can still be alive:
    ///
    /// ```compile_fail,E0502
    /// let mut tape = unimem::Tape::start(4096)?;
    /// let xs = tape.take_fill(4, 0u32).unwrap();
    /// tape.clear(); // error: `tape` is still borrowed by `xs`
    /// xs[0] = 1;
    /// # Ok::<(), unimem::Error>(())
    /// ```
    ///
    /// ```
    /// let mut tape = unimem::Tape::start(4096)?;
    /// tape.take_fill(4, 0u32).unwrap();
    /// tape.clear();
    /// assert_eq!(tape.used(), 0);
    /// assert_eq!(tape.peak(), 16);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[doc(alias = "reset")]
    #[inline]
    pub fn clear(&mut self) {
        per_thread::clear_and_prime(self);
    }

    /// Like [`start`](Tape::start), but every page is resident before it returns, so that no
    /// take in a hot loop ever meets a page fault. Costs what zeroing the pages costs: see
    /// [`OpenOptions::warm`](crate::OpenOptions::warm).
    ///
    /// # Errors
    /// Those of [`Block::open`].
    ///
    /// ```
    /// let tape = unimem::Tape::start_warm(1 << 20)?;
    /// assert!(tape.remaining() >= 1 << 20);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    pub fn start_warm(len: usize) -> Result<Tape, Error> {
        Block::options().warm(true).open(len).map(Tape::on)
    }

    /// Opens a [`Block`] of at least `len` bytes as `options` say (pinning, warmth) and puts a
    /// tape on it: [`start`](Tape::start) and [`start_warm`](Tape::start_warm) with every
    /// choice open.
    ///
    /// # Errors
    /// Those of [`OpenOptions::open`].
    ///
    /// ```
    /// use unimem::{Block, Pinning, Tape};
    ///
    /// let tape = Tape::with_options(32 << 20, Block::options().pinning(Pinning::BestEffort))?;
    /// assert!(tape.capacity() >= 32 << 20);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    pub fn with_options(len: usize, options: &OpenOptions) -> Result<Tape, Error> {
        options.open(len).map(Tape::on)
    }

    /// Puts a tape on a block the caller opened: unpinned, warm, or received from another
    /// process. The whole block is the tape's capacity.
    ///
    /// The tape hands out `&mut` references into the block, so it must be the only thing
    /// touching those bytes. A block opened here guarantees that; a block received from
    /// another process (`Block::from_fd`, `Block::from_mach_port`) does only under the
    /// agreement its `unsafe` constructor's `# Safety` section describes.
    ///
    /// ```
    /// use unimem::{Block, Pinning, Tape};
    ///
    /// let block = Block::options().pinning(Pinning::BestEffort).open(32 << 20)?;
    /// let tape = Tape::on(block);
    /// assert!(tape.capacity() >= 32 << 20);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    ///
    /// # Panics
    /// If the block's base address is not aligned to 4096 bytes. Every block this crate opens
    /// or adopts is (`Block` checks adopted memory), so this only catches a broken backend: the
    /// tape's alignment arithmetic relies on it.
    #[track_caller]
    pub fn on(block: Block) -> Tape {
        let base = block.as_ptr().addr();
        assert!(
            base % BASE_ALIGN == 0,
            "Tape::on: the block's base address {base:#x} is not aligned to {BASE_ALIGN} bytes, \
             which takes of alignments up to a page rely on; blocks from `Block::open` always \
             are, so this block came from a backend or an adopted mapping that broke that promise"
        );
        Tape {
            counters: CachePadded(Counters {
                cursor: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                contended: AtomicBool::new(false),
                only_chunk: AtomicUsize::new(0),
            }),
            id: fresh_id(),
            generation: AtomicU64::new(fresh_generation_run()),
            block,
        }
    }

    /// Takes room for `n` values of `T`, uninitialised, borrowing the tape until the slice is
    /// gone. `None` if the tape cannot fit them or `n * size_of::<T>()` overflows; zero-sized
    /// requests (`n == 0`, or a zero-sized `T`) always succeed and take nothing.
    ///
    /// No destructor ever runs on tape memory, so nothing needs dropping.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let slots = tape.take_slice::<u64>(3).unwrap();
    /// for (i, slot) in slots.iter_mut().enumerate() {
    ///     slot.write(i as u64 * 10);
    /// }
    /// // SAFETY: every slot was written just above.
    /// assert_eq!(unsafe { slots[2].assume_init() }, 20);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "the memory stays taken until the tape is cleared"]
    #[allow(clippy::mut_from_ref, reason = "every take is fresh memory")]
    pub fn take_slice<T>(&self, n: usize) -> Option<&mut [MaybeUninit<T>]> {
        typed::slice(&mut &*self, n)
    }

    /// Takes a copy of `items`, borrowing the tape until it is gone. `None` if it does not fit.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let weights = tape.take_copy(&[1.0f32, 2.0, 3.0]).unwrap();
    /// weights[0] = 4.0;
    /// assert_eq!(weights, &[4.0, 2.0, 3.0]);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[doc(alias = "alloc_slice_copy")]
    #[inline]
    #[must_use = "the memory stays taken until the tape is cleared"]
    #[allow(clippy::mut_from_ref, reason = "every take is fresh memory")]
    pub fn take_copy<T: Copy>(&self, items: &[T]) -> Option<&mut [T]> {
        typed::copy(&mut &*self, items)
    }

    /// Takes `n` clones of `value`, borrowing the tape until they are gone. `None` if they do
    /// not fit. Their destructors never run.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let zeros = tape.take_fill(1000, 0.0f32).unwrap();
    /// assert_eq!(zeros.len(), 1000);
    /// assert!(zeros.iter().all(|&x| x == 0.0));
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "the memory stays taken until the tape is cleared"]
    #[allow(clippy::mut_from_ref, reason = "every take is fresh memory")]
    pub fn take_fill<T: Clone>(&self, n: usize, value: T) -> Option<&mut [T]> {
        typed::fill(&mut &*self, n, value)
    }

    /// Moves `value` onto the tape, borrowing the tape until it is gone. `None` (and `value`
    /// dropped) if it does not fit. Its destructor never runs.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let header = tape.take_value([7u32; 4]).unwrap();
    /// header[1] = 8;
    /// assert_eq!(*header, [7, 8, 7, 7]);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[doc(alias = "alloc")]
    #[inline]
    #[must_use = "the memory stays taken until the tape is cleared"]
    #[allow(clippy::mut_from_ref, reason = "every take is fresh memory")]
    pub fn take_value<T>(&self, value: T) -> Option<&mut T> {
        typed::value(&mut &*self, value)
    }

    /// Takes `n` values made by `make(0)`, `make(1)`, …, `make(n - 1)`, in that order,
    /// borrowing the tape until they are gone. `None` (and `make` never called) if they do not
    /// fit. Their destructors never run.
    ///
    /// Should `make` panic, the panic goes on to the caller, the values made so far are
    /// forgotten, and the room taken for all `n` stays taken until the tape is cleared: the
    /// tape stays consistent and nothing uninitialised is ever handed out.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let squares = tape.take_fill_with(5, |i| (i * i) as u32).unwrap();
    /// assert_eq!(squares, &[0, 1, 4, 9, 16]);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "dropping the slice leaves its room taken until the tape is cleared"]
    #[doc(alias = "alloc_slice_fill_with")]
    #[allow(clippy::mut_from_ref, reason = "every take is fresh memory")]
    pub fn take_fill_with<T>(&self, n: usize, make: impl FnMut(usize) -> T) -> Option<&mut [T]> {
        typed::fill_with(&mut &*self, n, make)
    }

    /// Takes room for as many items as `items.len()` says and moves the items in, in order,
    /// borrowing the tape until they are gone. `None` (and no item taken from the iterator) if
    /// they do not fit. Their destructors never run.
    ///
    /// An iterator whose `len()` lies costs room, never soundness: the result holds the items
    /// it yielded, never more than `len()` of them, so it is shorter when the iterator ends
    /// early, and items beyond `len()` stay in the iterator. A panic in the iterator behaves
    /// as one in [`take_fill_with`](Tape::take_fill_with)'s closure.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let words = ["lock", "free", "tape"];
    /// let lengths = tape.take_iter(words.iter().map(|w| w.len() as u8)).unwrap();
    /// assert_eq!(lengths, &[4, 4, 4]);
    /// let tokens = tape.take_iter(vec![101u32, 2023, 102]).unwrap();
    /// assert_eq!(tokens.len(), 3);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "dropping the slice leaves its room taken until the tape is cleared"]
    #[doc(
        alias = "alloc_slice_fill_iter",
        alias = "from_iter",
        alias = "collect"
    )]
    #[allow(clippy::mut_from_ref, reason = "every take is fresh memory")]
    pub fn take_iter<I>(&self, items: I) -> Option<&mut [I::Item]>
    where
        I: IntoIterator<IntoIter: ExactSizeIterator>,
    {
        typed::from_iter(&mut &*self, items)
    }

    /// Takes a copy of `text`, borrowing the tape until it is gone. `None` if it does not fit.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let name = tape.take_str("layer_norm").unwrap();
    /// name.make_ascii_uppercase();
    /// assert_eq!(name, "LAYER_NORM");
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "dropping the string leaves its room taken until the tape is cleared"]
    #[doc(alias = "alloc_str")]
    #[allow(clippy::mut_from_ref, reason = "every take is fresh memory")]
    pub fn take_str(&self, text: &str) -> Option<&mut str> {
        typed::str(&mut &*self, text)
    }

    /// Takes room for `layout`: [`take`](Tape::take) with the layout's size and alignment,
    /// which never panics, since a `Layout`'s alignment is always a power of two. `None` if it
    /// does not fit. For types and code that speak `Layout`, as allocators do.
    ///
    /// ```
    /// use std::alloc::Layout;
    ///
    /// let tape = unimem::Tape::start(4096)?;
    /// let layout = Layout::new::<[u64; 4]>();
    /// let p = tape.take_layout(layout).unwrap();
    /// assert_eq!(p.as_ptr() as usize % layout.align(), 0);
    /// assert!(tape.owns(p.as_ptr()));
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "dropping the pointer leaves its room taken until the tape is cleared"]
    #[doc(alias = "alloc", alias = "alloc_layout")]
    pub fn take_layout(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.take(layout.size(), layout.align())
    }

    /// [`clear`](Tape::clear) through a shared reference, for a tape that threads share for its
    /// whole life (an `Arc<Tape>`, a `static`), where no `&mut` can be had.
    ///
    /// # Safety
    /// - Nothing taken from this tape before the call is used after it: no slice from the
    ///   typed takes is alive, and no pointer from [`take`](Tape::take) is dereferenced again.
    /// - No [`Lane`] of this tape is alive during the call. (The chunks threads hold behind
    ///   [`take`](Tape::take) need nothing: the clear takes them all back.)
    /// - No other call on this tape runs concurrently with it, and every use of memory taken
    ///   before it *happens before* it, while it *happens before* every take after it: the
    ///   threads synchronise around it (a join, a barrier, a mutex, a channel). Otherwise a
    ///   thread could write bytes that another is still reading.
    ///
    /// ```
    /// use std::sync::{Arc, Barrier};
    /// use unimem::Tape;
    ///
    /// let tape = Arc::new(Tape::start(64 << 10)?);
    /// let barrier = Arc::new(Barrier::new(2));
    /// let worker = {
    ///     let (tape, barrier) = (tape.clone(), barrier.clone());
    ///     std::thread::spawn(move || {
    ///         for step in 0..3u8 {
    ///             tape.take_fill(100, step).unwrap();
    ///             barrier.wait(); // step done
    ///             barrier.wait(); // tape cleared
    ///         }
    ///     })
    /// };
    /// for _ in 0..3 {
    ///     barrier.wait();
    ///     // SAFETY: the worker is parked at the barrier and keeps nothing from the step;
    ///     // the barrier orders its takes before this clear and this clear before its next.
    ///     unsafe { tape.clear_shared() };
    ///     barrier.wait();
    /// }
    /// worker.join().unwrap();
    /// assert_eq!(tape.peak(), 100);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    pub unsafe fn clear_shared(&self) {
        self.rewind_to(0);
    }

    /// A checkpoint: [`rewind`](Tape::rewind) to it throws away what was taken after it.
    ///
    /// A rewind to the mark frees everything the calling thread takes after it (the mark
    /// lies where this thread's chunk stands, or, if other threads claimed after the chunk,
    /// at the shared cursor, and the chunk ends there), and everything any thread takes from
    /// chunks claimed after it. What another thread takes after the mark from a chunk it
    /// claimed before lies below the mark: it stays used until a [`clear`](Tape::clear), as
    /// does the unused rest of such chunks. For scratch that several threads take and give
    /// back, use a [`Scope`] per thread.
    ///
    /// A mark made while a lane holds a chunk counts the whole chunk; if the lane then hands
    /// its unused tail back, the mark is ahead of the cursor and rewinding to it panics.
    /// Make marks while no lane is alive.
    ///
    /// ```
    /// let mut tape = unimem::Tape::start(4096)?;
    /// let weights = tape.take(256, 8).unwrap();
    /// let mark = tape.mark();
    /// for _ in 0..5 {
    ///     tape.take_fill(100, 0u8).unwrap(); // scratch
    ///     tape.rewind(mark);
    /// }
    /// assert_eq!(tape.used(), 256);
    /// assert_eq!(tape.peak(), 356);
    /// # let _ = weights;
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use]
    pub fn mark(&self) -> Mark {
        Mark {
            tape: self.id,
            offset: per_thread::mark_here(self, self.counters.cursor.load(Relaxed)),
        }
    }

    /// Throws away what was taken after `mark` (exactly what, [`mark`](Tape::mark) says: all
    /// of it, but for what other threads took from chunks claimed before the mark). Like
    /// [`clear`](Tape::clear), it needs `&mut self`, so nothing taken at all can still be
    /// borrowed: to drop a layer's scratch while earlier takes stay in use, use a
    /// [`scope`](Tape::scope). Like a clear, it hands the calling thread a fresh chunk at the
    /// mark if it was taking from the tape.
    ///
    /// # Panics
    /// If `mark` came from another tape (even one since dropped, whose memory this tape now
    /// uses: every tape has an identity of its own), or lies ahead of the cursor (it was made
    /// before a clear or a rewind to an earlier mark). A stale mark of this tape that is not
    /// ahead of the cursor is not detected: it rewinds to where it says, which is safe but
    /// probably not intended.
    ///
    /// ```should_panic
    /// let mut a = unimem::Tape::start(4096)?;
    /// let b = unimem::Tape::start(4096)?;
    /// a.rewind(b.mark()); // panics: the mark belongs to `b`
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[track_caller]
    pub fn rewind(&mut self, mark: Mark) {
        assert!(
            mark.tape == self.id,
            "Tape::rewind: this mark was made by another tape (tape #{}, this is tape #{}), \
             perhaps one since dropped whose memory this tape reuses; rewind a tape only to \
             its own marks",
            mark.tape,
            self.id
        );
        let used = self.counters.cursor.load(Relaxed);
        assert!(
            mark.offset <= used,
            "Tape::rewind: the mark (at {} bytes) is ahead of the cursor ({used} bytes): the \
             tape was cleared or rewound past it since, or a lane gave back the chunk it was \
             made in; make a fresh mark after clearing",
            mark.offset
        );
        per_thread::rewind_and_prime(self, mark.offset);
    }

    /// Runs `f` with a [`Scope`] of this tape: scratch taken from it comes back when `f`
    /// returns (or unwinds), so that a loop of scopes keeps the tape's memory flat. The
    /// scope's takes borrow the scope and cannot leave `f`; what was taken from the tape
    /// before stays usable throughout. See [`Scope`] for exactly what comes back.
    ///
    /// ```
    /// let tape = unimem::Tape::start(1 << 20)?;
    /// let residual = tape.take_fill(64, 1.0f32).unwrap();
    /// for _layer in 0..4 {
    ///     let norm = tape.scope(|s| {
    ///         let tmp = s.take_copy(&*residual).unwrap();
    ///         tmp.iter().map(|x| x * x).sum::<f32>().sqrt()
    ///     });
    ///     residual[0] += norm;
    /// }
    /// assert_eq!(tape.used(), 256);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    pub fn scope<'t, R>(&'t self, f: impl FnOnce(&Scope<'t>) -> R) -> R {
        let scope = Scope::new(self);
        f(&scope)
    }

    /// Bytes in use, as the calling thread sees them: every take and its alignment padding,
    /// and the chunks that other threads and live lanes hold, but not the unused rest of this
    /// thread's own chunk. On one thread that is exactly what was taken; with several, it is
    /// at most a chunk (64 KiB) per other thread and lane more. It costs `take` nothing: it
    /// is the shared cursor less this thread's unused rest.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// tape.take(3, 1).unwrap();
    /// tape.take(8, 8).unwrap(); // 5 bytes of padding first
    /// assert_eq!(tape.used(), 16);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    pub fn used(&self) -> usize {
        let shared = self.counters.cursor.load(Relaxed);
        shared.saturating_sub(per_thread::unused_here(self))
    }

    /// Bytes still free at the shared cursor: `capacity() - used()`. Threads' chunks hold
    /// more, which only their threads can take.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// tape.take(96, 1).unwrap();
    /// assert_eq!(tape.remaining(), tape.capacity() - 96);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.capacity() - self.used()
    }

    /// Total bytes: the block's length (a whole number of pages, unless the block was mapped
    /// from a memfd of another size: see [`Block::len`]).
    ///
    /// ```
    /// let tape = unimem::Tape::start(5000)?;
    /// assert_eq!(tape.capacity(), tape.block().len());
    /// assert!(tape.capacity() >= 5000);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.block.len()
    }

    /// The most bytes the tape had in use at once, over all clears: the number to size a
    /// tape by. It is [`used`](Tape::used) at its highest, as recorded at every clear and
    /// rewind (by the thread that clears), whenever a thread gives bytes back to its chunk
    /// or the shared cursor (a [`Scope`] ending, a collection shrinking, a lane dropped),
    /// and now. So on one thread it is exactly the most that was taken at once, scopes and
    /// collections included; threads taking at the same time add up to a chunk (64 KiB) each,
    /// and lanes their whole chunk. Chunk sizes depend on what is free and on how threads
    /// interleave, so leave some room.
    ///
    /// ```
    /// let mut tape = unimem::Tape::start(4096)?;
    /// tape.take(1000, 1).unwrap();
    /// tape.clear();
    /// tape.take(10, 1).unwrap();
    /// assert_eq!(tape.peak(), 1000);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use]
    pub fn peak(&self) -> usize {
        // Exact without any work in `take`: the cursor only grows, except at a rewind or when
        // a lane hands back its tail, and both record the cursor before lowering it. So the
        // recorded values and the cursor now hold every maximum.
        self.counters.peak.load(Relaxed).max(self.used())
    }

    /// The block underneath, for its [`handle`](Block::handle) and base address.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let p = tape.take(8, 8).unwrap();
    /// assert!(p.as_ptr() >= tape.block().as_ptr());
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use]
    pub fn block(&self) -> &Block {
        &self.block
    }

    /// Whether `ptr` points into this tape's memory (taken or not).
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let xs = tape.take_fill(4, 1u16).unwrap();
    /// assert!(tape.owns(xs.as_ptr()));
    /// assert!(!tape.owns(&0u16));
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use]
    pub fn owns<T: ?Sized>(&self, ptr: *const T) -> bool {
        self.offset_of(ptr).is_some()
    }

    /// Where `ptr` lies from the start of the tape's block, or `None` if outside it: with the
    /// block's [`handle`](Block::handle), what a GPU or DMA engine needs to find the data.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// tape.take(10, 1).unwrap();
    /// let xs = tape.take_fill(4, 0u32).unwrap();
    /// assert_eq!(tape.offset_of(xs.as_ptr()), Some(12)); // 10, aligned up to 4
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use]
    pub fn offset_of<T: ?Sized>(&self, ptr: *const T) -> Option<usize> {
        self.block.offset_of(ptr.cast())
    }

    /// A [`Lane`] with the default chunk size, [`Lane::DEFAULT_CHUNK`]: the fast way for one
    /// thread to take many small pieces.
    ///
    /// ```
    /// let tape = unimem::Tape::start(1 << 20)?;
    /// let mut lane = tape.lane();
    /// let a = lane.take_fill(10, 1u8).unwrap();
    /// let b = lane.take_fill(10, 2u8).unwrap(); // `a` is still usable
    /// assert_eq!(a[0] + b[0], 3);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use = "a lane only claims memory when it takes; an unused lane does nothing"]
    pub fn lane(&self) -> Lane<'_> {
        self.lane_with_chunk(Lane::DEFAULT_CHUNK)
    }

    /// A [`Lane`] that claims `chunk` bytes at a time. Larger chunks mean fewer atomic steps;
    /// smaller ones mean less memory held back (at most one chunk per live lane).
    ///
    /// # Panics
    /// If `chunk` is 0.
    ///
    /// ```
    /// let tape = unimem::Tape::start(1 << 20)?;
    /// let mut lane = tape.lane_with_chunk(4096);
    /// lane.take(1, 1).unwrap();
    /// assert_eq!(tape.used(), 4096); // the lane holds a whole chunk...
    /// drop(lane);
    /// assert_eq!(tape.used(), 1); // ...and gives back the unused tail when it goes
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use = "a lane only claims memory when it takes; an unused lane does nothing"]
    #[track_caller]
    pub fn lane_with_chunk(&self, chunk: usize) -> Lane<'_> {
        assert!(
            chunk > 0,
            "Tape::lane_with_chunk: a lane needs chunks of at least 1 byte \
             (Lane::DEFAULT_CHUNK is a good start)"
        );
        Lane::new(self, chunk)
    }

    /// The block's first byte, as an address.
    #[inline(always)]
    fn base(&self) -> usize {
        self.block.as_non_null().addr().get()
    }

    /// `size` bytes straight from the shared cursor, exactly where it is: `(start, end)`.
    #[inline]
    fn take_exact(&self, size: usize, align: usize) -> Option<(usize, usize)> {
        let (base, capacity) = (self.base(), self.capacity());
        self.advance(|cursor| fit(base, cursor, size, align, capacity))
    }

    /// A take through the shared cursor that notices contention: the first exchange that
    /// fails marks the tape contended, and this take and every later one go through
    /// per-thread chunks.
    #[inline]
    fn take_until_contended(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        let shared = &self.counters.cursor;
        let cursor = shared.load(Relaxed);
        let (start, end) = fit(self.base(), cursor, size, align, self.capacity())?;
        // Strong, not weak: a failure must mean that another thread took.
        if shared
            .compare_exchange(cursor, end, Acquire, Relaxed)
            .is_ok()
        {
            return Some(self.at(start));
        }
        self.counters.contended.store(true, Relaxed);
        per_thread::take_slow(self, size, align).map(|start| self.at(start))
    }

    /// Claims a chunk of up to `len` bytes for a thread whose chunk ends at `after` (see
    /// `per_thread`): right there if nobody took since, so the chunks join up; otherwise, if
    /// the thread `may_move`, on a cache line of its own wherever the cursor is. Never more
    /// than an eighth of what is free, and nothing when that is below `MIN_CHUNK` or `need`.
    /// Returns `(start, end)` offsets.
    fn claim_thread_chunk(
        &self,
        after: usize,
        len: usize,
        need: usize,
        may_move: bool,
    ) -> Option<(usize, usize)> {
        let (base, capacity) = (self.base(), self.capacity());
        let claimed = self.advance(|cursor| {
            let align = match cursor == after {
                true => 1,
                false if may_move => CHUNK_ALIGN,
                false => return None,
            };
            let len = len.min((capacity - cursor) / 8);
            if len < per_thread::MIN_CHUNK.max(need) {
                return None;
            }
            fit(base, cursor, len, align, capacity)
        });
        if claimed.is_some() {
            self.note_claim();
        }
        claimed
    }

    /// After a thread claimed a chunk, or grew one past its end, at the shared cursor: the
    /// next clear or rewind must move the generation on. (Relaxed: a clear happens after every
    /// take, through `&mut` or `clear_shared`'s contract, and so sees it.)
    #[inline]
    fn note_claim(&self) {
        let only_chunk = &self.counters.only_chunk;
        if only_chunk.load(Relaxed) != 0 {
            only_chunk.store(0, Relaxed);
        }
    }

    /// Whether the chunk of the current generation held by the thread slot at address `slot`
    /// is the only one any thread may hold: the last clear or rewind handed it, and no thread
    /// claimed one since. Then a clear or rewind may keep the generation, handing that slot
    /// its next chunk. Only when nothing else runs (`&mut`).
    #[inline(always)]
    fn only_chunk_is(&self, slot: usize) -> bool {
        self.counters.only_chunk.load(Relaxed) == slot
    }

    /// The only chunk of the generation moved, with its thread, to the slot at address `slot`.
    #[inline]
    fn only_chunk_moved_to(&self, slot: usize) {
        self.counters.only_chunk.store(slot, Relaxed);
    }

    /// Moves the generation on, ending every thread's chunk, and records that the thread slot
    /// at address `slot` (0 for none) gets the only chunk of the new one. Returns the new
    /// generation. Only when nothing else runs (`&mut`, or `clear_shared`'s contract).
    #[inline]
    fn renew_generation(&self, slot: usize) -> u64 {
        let generation = next_generation(self.generation.load(Relaxed));
        self.generation.store(generation, Relaxed);
        self.counters.only_chunk.store(slot, Relaxed);
        generation
    }

    /// Claims `len` bytes for a lane whose current chunk ends at `after`: right there if
    /// nobody took since, so the chunks join up; otherwise, if the lane `may_move`, wherever
    /// the cursor is, aligned so that two lanes never share a cache line. Returns `(start,
    /// end)` offsets.
    fn claim_chunk(&self, after: usize, len: usize, may_move: bool) -> Option<(usize, usize)> {
        let (base, capacity) = (self.base(), self.capacity());
        self.advance(|cursor| match cursor == after {
            true => fit(base, cursor, len, 1, capacity),
            false if may_move => fit(base, cursor, len, CHUNK_ALIGN, capacity),
            false => None,
        })
    }

    /// Undoes the last claim if it ended at `end` and nobody claimed after it, keeping
    /// `[.., kept)` taken: how a lane hands back the tail of its chunk, and a scope the
    /// scratch it took at the shared cursor.
    fn give_back(&self, end: usize, kept: usize) {
        // The peak counts what was reserved, so it must hear of `end` before the cursor drops
        // below it; otherwise `peak()` could go down with no clear in between.
        self.counters.peak.fetch_max(end, Relaxed);
        // Release: the bytes may have been written (a scope's scratch), and whoever claims
        // them next (with an Acquire exchange, see `advance`) must see those writes done.
        let _ = (self.counters.cursor).compare_exchange(end, kept, Release, Relaxed);
    }

    /// Moves the cursor from where it is to where `place` says, atomically, and returns the
    /// `(start, end)` that `place` chose, or `None` when `place` finds no room.
    #[inline(always)]
    fn advance(&self, place: impl Fn(usize) -> Option<(usize, usize)>) -> Option<(usize, usize)> {
        // Disjointness needs no ordering: every successful exchange moves the cursor from
        // the exact value its `place` started from, and all exchanges on one atomic form a
        // single modification order. So the claims tile the tape in that order, each starting
        // at or after the end of the one before it. Acquire on success: bytes handed back to
        // the cursor after use (a scope ending, a collection shrinking, both with a Release
        // exchange) pass to whoever claims them next, whose writes must come after the
        // previous owner's. (Free on x86, where every exchange is a full barrier.) When memory
        // is reused after a clear or rewind, `&mut self` (or `clear_shared`'s contract)
        // provides the happens-before edge.
        let shared = &self.counters.cursor;
        let mut cursor = shared.load(Relaxed);
        loop {
            let (start, end) = place(cursor)?;
            match shared.compare_exchange_weak(cursor, end, Acquire, Relaxed) {
                Ok(_) => return Some((start, end)),
                Err(now) => cursor = now,
            }
        }
    }

    /// Moves the cursor back to `offset`, after recording where it got to.
    #[inline]
    fn rewind_to(&self, offset: usize) {
        // Plain loads and stores, not read-modify-writes: nothing runs concurrently (`&mut`,
        // or `clear_shared`'s contract), and this keeps a clear to a couple of instructions.
        let used = self.used();
        let Counters { cursor, peak, .. } = &*self.counters;
        peak.store(peak.load(Relaxed).max(used), Relaxed);
        cursor.store(offset, Relaxed);
        // Every thread's chunk is of the old generation now, so none hands out a byte again.
        self.renew_generation(0);
    }

    /// The byte `offset` bytes into the block.
    #[inline(always)]
    fn at(&self, offset: usize) -> NonNull<u8> {
        debug_assert!(offset <= self.block.len());
        // SAFETY: every offset handed here came from `fit` with the capacity as limit, so it
        // lies inside the block or one past its end, within the same allocation.
        unsafe { self.block.as_non_null().add(offset) }
    }
}

impl fmt::Debug for Tape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tape")
            .field("used", &self.used())
            .field("capacity", &self.capacity())
            .field("peak", &self.peak())
            .field("block", &self.block)
            .finish()
    }
}

/// Where a chunk starts unless it joins the one before: as `CachePadded`, the unit in which
/// cores trade cache lines, so that two threads' chunks never share one.
const CHUNK_ALIGN: usize = 128;

/// Every block's base is aligned at least this much (a page is never smaller).
const BASE_ALIGN: usize = 4096;

/// Where `size` bytes aligned to `align` land when the free space starts `cursor` bytes into
/// memory at address `base`: `(start, end)` offsets, or `None` if they would end past `limit`.
///
/// Shared by the tape's atomic path and a lane's private one. Needs `base` aligned to
/// `BASE_ALIGN`, `cursor <= limit <= isize::MAX` and `align` a power of two.
#[inline(always)]
fn fit(
    base: usize,
    cursor: usize,
    size: usize,
    align: usize,
    limit: usize,
) -> Option<(usize, usize)> {
    // `align` is nearly always a constant, so only one arm survives compilation. The first is
    // the short one that every take waits on; the second handles alignments above the base's.
    // Neither overflows: `cursor <= isize::MAX` and the padding is below `align <= 2^(BITS-1)`.
    let start = if align <= BASE_ALIGN {
        (cursor + (align - 1)) & !(align - 1)
    } else {
        cursor + (base.wrapping_add(cursor).wrapping_neg() & (align - 1))
    };
    let end = start.checked_add(size)?;
    (end <= limit).then_some((start, end))
}

/// Panics, saying what to fix, unless `align` is a power of two.
#[inline(always)]
#[track_caller]
fn check_align(align: usize) {
    if !align.is_power_of_two() {
        bad_align(align);
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn bad_align(align: usize) -> ! {
    panic!(
        "align must be a power of two (1, 2, 4, 8, ...), got {align}; \
         pass `align_of::<T>()` or a `Layout`'s `align()`"
    )
}

#[cfg(test)]
mod tests {
    use super::{GENERATION_RUN, fit, fresh_generation_run, next_generation};

    #[test]
    fn a_tape_that_uses_up_its_run_of_generations_draws_a_fresh_one() {
        let first = fresh_generation_run();
        assert_ne!(first, 0, "0 marks a thread's empty slot");
        assert_eq!(next_generation(first), first + 1);
        let last = first + GENERATION_RUN - 1;
        let next = next_generation(last);
        assert_eq!(next % GENERATION_RUN, 0, "the first of a run");
        assert!(
            next > last,
            "runs are drawn in order, so no earlier generation comes back"
        );
        assert_ne!(next_generation(last), next, "every run is drawn once");
    }

    #[test]
    fn fit_aligns_offsets_within_the_base_alignment() {
        assert_eq!(fit(0x1000, 0, 4, 16, 100), Some((0, 4)));
        assert_eq!(fit(0x1000, 1, 4, 16, 100), Some((16, 20)));
        assert_eq!(fit(0x1000, 16, 4, 16, 100), Some((16, 20)));
        assert_eq!(fit(0x1000, 1, 0, 4096, 1 << 20), Some((4096, 4096)));
    }

    #[test]
    fn fit_aligns_the_address_beyond_the_base_alignment() {
        // A base one page past a 16 KiB boundary: offset 12 KiB is the first aligned address.
        let base = 0x10_0000 + 0x1000;
        assert_eq!(fit(base, 0, 1, 0x4000, 1 << 20), Some((0x3000, 0x3001)));
        assert_eq!(
            fit(base, 0x3000, 1, 0x4000, 1 << 20),
            Some((0x3000, 0x3001))
        );
        assert_eq!(
            fit(base, 0x3001, 1, 0x4000, 1 << 20),
            Some((0x7000, 0x7001))
        );
    }

    #[test]
    fn fit_is_exact_at_the_limit_and_never_overflows() {
        assert_eq!(fit(0x1000, 90, 10, 1, 100), Some((90, 100)));
        assert_eq!(fit(0x1000, 90, 11, 1, 100), None);
        assert_eq!(fit(0x1000, 100, 0, 1, 100), Some((100, 100)));
        let top = isize::MAX as usize;
        assert_eq!(fit(0x1000, top, usize::MAX, 1, top), None);
        assert_eq!(fit(0x1000, top, 1, 1 << (usize::BITS - 1), top), None);
    }

    /// The generation stays through a loop of takes and clears on one thread, whose chunk is
    /// the only one of it, and moves on once another thread claims a chunk. (That it must move
    /// on then, and when another thread clears, the integration tests show by the bytes.)
    #[test]
    #[cfg(not(loom))]
    fn a_clear_keeps_the_generation_while_its_chunk_is_the_only_one() {
        use crate::sync::Ordering::Relaxed;
        let take_64s = |tape: &super::Tape, n: usize| {
            for _ in 0..n {
                let _ = tape.take(64, 8).unwrap();
            }
        };
        // A tape this thread took from first, so that the cleared one starts in a later slot
        // and the first clear moves it to the front, where it stays.
        let weights = super::Tape::start(1 << 20).unwrap();
        take_64s(&weights, 100);
        let mut tape = super::Tape::start(1 << 20).unwrap();
        take_64s(&tape, 100);
        let next_weight = weights
            .offset_of(weights.take(64, 8).unwrap().as_ptr())
            .unwrap()
            + 64;
        assert!(!super::per_thread::in_front_here(&tape));
        tape.clear();
        assert!(super::per_thread::in_front_here(&tape));
        let kept = tape.generation.load(Relaxed);
        for _ in 0..10 {
            take_64s(&tape, 8);
            tape.clear();
        }
        assert_eq!(tape.generation.load(Relaxed), kept);
        let weight = weights.take(64, 8).unwrap().as_ptr();
        assert_eq!(
            weights.offset_of(weight),
            Some(next_weight),
            "the other tape's chunk, moved out of the front slot, serves on"
        );
        std::thread::scope(|s| {
            s.spawn(|| take_64s(&tape, 100));
        });
        tape.clear();
        assert_ne!(tape.generation.load(Relaxed), kept);
    }
}
