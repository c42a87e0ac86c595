//! The chunk each thread takes from behind [`Tape::take`]: a lane without the lane.
//!
//! Every thread has one slot, in a thread-local with a constant initialiser and no destructor
//! (so no allocation, no lazy set-up, nothing to run at thread exit). The slot names the tape
//! its chunk belongs to by the tape's identity, which no other tape ever gets, and by the
//! tape's generation, which every clear and rewind moves on. A take whose tape and generation
//! match the slot bumps the slot's private cursor: no atomic step, no shared cache line. Any
//! other take goes to [`take_slow`], which claims chunks from the tape's shared cursor with
//! one atomic step each, exactly as a [`Lane`](super::Lane) does.
//!
//! # What a chunk may waste
//!
//! A thread settles on a tape before it claims from it: until it has taken [`SETTLE`] bytes
//! from a tape in a row (with no take from another tape in between), its takes go exactly to
//! the shared cursor. A thread that moves between tapes on every take, or takes little from
//! each, never claims a chunk at all. Chunks start at [`FIRST_CHUNK`] (no more than the
//! thread took while settling) and double with every claim up to [`MAX_CHUNK`], so a thread
//! leaving a tape it settled on leaves behind at most 8/7 of what it took there since it came
//! (and at most one `MAX_CHUNK`). No chunk takes more than an eighth of what is free at the
//! shared cursor, and none smaller than [`MIN_CHUNK`] is claimed: near the end of a tape
//! every take is exact, so one thread fills a tape to the byte. A request that needs (with
//! its alignment) more than a quarter of the next chunk goes straight to the shared cursor,
//! and grows the next chunk. A thread moves to a fresh chunk only when at most an eighth of
//! its current one is left, so moving wastes at most that plus up to 127 bytes of alignment
//! (a chunk starts on its own cache line unless it joins the previous one). A clear or rewind
//! wastes nothing: it takes every chunk back.
//!
//! So with `N` threads, a take that fails leaves free less than it asked for at the shared
//! cursor, plus at most one chunk (64 KiB) per thread; over a tape's life, bytes left behind
//! come to at most an eighth of what was used (plus 127 bytes a chunk), and what threads
//! left behind when they moved to another tape or ended.

use super::{Tape, fit};
use crate::sync::Ordering::Relaxed;
use crate::sync::thread_local_const;
use core::cell::Cell;

/// Bytes a thread takes from one tape, in a row and exactly, before it claims a chunk of it.
#[cfg(not(loom))]
pub(super) const SETTLE: usize = FIRST_CHUNK;
/// The first chunk a thread claims from a tape.
#[cfg(not(loom))]
pub(super) const FIRST_CHUNK: usize = 1 << 10;
/// The largest chunk: the same as a lane's default.
#[cfg(not(loom))]
pub(super) const MAX_CHUNK: usize = 64 << 10;
/// No chunk is claimed smaller than this: below it, takes are exact.
#[cfg(not(loom))]
pub(super) const MIN_CHUNK: usize = 256;

// Small enough under loom that a model reaches chunks, refills and the end of a tape in a
// few steps.
#[cfg(loom)]
pub(super) const SETTLE: usize = 1;
#[cfg(loom)]
pub(super) const FIRST_CHUNK: usize = 32;
#[cfg(loom)]
pub(super) const MAX_CHUNK: usize = 64;
#[cfg(loom)]
pub(super) const MIN_CHUNK: usize = 16;

/// On Apple silicon an uncontended compare-and-swap costs about as much as reaching a
/// thread-local (a call there), so a tape takes through its shared cursor until one exchange
/// fails, and through per-thread chunks from then on. Elsewhere a locked instruction costs
/// several times a thread-local access, so chunks win from the first take.
pub(super) const CAS_UNTIL_CONTENDED: bool =
    cfg!(all(target_vendor = "apple", target_arch = "aarch64"));

/// One thread's chunk of one tape.
struct Slot {
    /// The tape's identity ([`Tape::id`]); 0, which no tape has, for none.
    tape: Cell<u64>,
    /// The tape's generation when the chunk was claimed: any other means it was cleared.
    generation: Cell<u64>,
    /// Offset of the chunk's next free byte; `cursor <= end`.
    cursor: Cell<usize>,
    /// Offset just past the chunk: the thread owns `cursor..end`.
    end: Cell<usize>,
    /// What the next claim asks for; 0 while the thread is not settled on the tape.
    next: Cell<usize>,
    /// Bytes taken from this tape in a row while not settled, up to `SETTLE`.
    taken: Cell<usize>,
}

impl Slot {
    /// No chunk, of no tape. (A `const fn`, not a constant: each use is a fresh slot.)
    const fn none() -> Slot {
        Slot {
            tape: Cell::new(0),
            generation: Cell::new(0),
            cursor: Cell::new(0),
            end: Cell::new(0),
            next: Cell::new(0),
            taken: Cell::new(0),
        }
    }
}

thread_local_const! {
    static SLOT: Slot = Slot::none();
}

/// The fast path: `(start, end)` of `size` bytes from this thread's chunk of `tape`, or
/// `None` when the thread has none, or it is of another generation, or the bytes do not fit.
#[inline(always)]
pub(super) fn bump(tape: &Tape, size: usize, align: usize) -> Option<usize> {
    // Relaxed: a clear or rewind happens before any take that follows it (`&mut`, or
    // `clear_shared`'s contract), and a load sees every store that happens before it.
    let generation = tape.generation.load(Relaxed);
    let base = tape.base();
    SLOT.with(|slot| {
        if slot.tape.get() != tape.id || slot.generation.get() != generation {
            return None;
        }
        let (start, end) = fit(base, slot.cursor.get(), size, align, slot.end.get())?;
        slot.cursor.set(end);
        Some(start)
    })
}

/// Everything else: settle on the tape, claim a chunk, or take exactly from the shared
/// cursor. Returns the start offset of `size > 0` bytes aligned to `align`, or `None` when the
/// tape cannot fit them.
#[cold]
#[inline(never)]
pub(super) fn take_slow(tape: &Tape, size: usize, align: usize) -> Option<usize> {
    let generation = tape.generation.load(Relaxed);
    SLOT.with(|slot| {
        if slot.tape.get() != tape.id {
            // Another tape, or none yet: start over, exactly, so that a thread moving between
            // tapes claims no chunk it would leave behind. The old tape may be gone, so the
            // rest of its chunk stays where it is.
            slot.tape.set(tape.id);
            slot.next.set(0);
            slot.taken.set(0);
            forget_chunk(slot, generation);
        } else if slot.generation.get() != generation {
            // Cleared or rewound: the chunk went with everything else. The thread keeps its
            // pace: it was settled on this tape, and will be again.
            forget_chunk(slot, generation);
        }
        refill(tape, slot, size, align)
    })
}

/// An empty chunk at offset 0 of `generation`: the next claim joins on only if the shared
/// cursor is at 0 too, which is then exactly right.
fn forget_chunk(slot: &Slot, generation: u64) {
    slot.generation.set(generation);
    slot.cursor.set(0);
    slot.end.set(0);
}

fn refill(tape: &Tape, slot: &Slot, size: usize, align: usize) -> Option<usize> {
    if slot.next.get() == 0 {
        let taken = slot.taken.get().saturating_add(size);
        if taken < SETTLE {
            slot.taken.set(taken);
            let (start, end) = tape.take_exact(size, align)?;
            // An empty chunk just past the take: the first claim joins on if nobody took
            // in between, so a thread settling loses nothing to alignment.
            slot.cursor.set(end);
            slot.end.set(end);
            return Some(start);
        }
        slot.next.set(FIRST_CHUNK);
    }
    let chunk = slot.next.get();
    let grown = (chunk * 2).min(MAX_CHUNK);
    // What the request needs at worst, alignment padding included: a chunk at least this
    // long always fits it, so a claim is never made for a take that then fails.
    let need = size.saturating_add(align - 1);
    if need > chunk / 4 {
        // Too large to carve from a chunk without wasting much of it. The thread takes big
        // pieces, so its next chunk may be bigger.
        slot.next.set(grown);
        return Some(tape.take_exact(size, align)?.0);
    }
    let (cursor, end) = (slot.cursor.get(), slot.end.get());
    // Moving to a chunk elsewhere abandons the rest of this one: only when at most an eighth
    // of it is left (`chunk` is the next one's size, up to twice this one's).
    let may_move = end - cursor <= chunk / 16;
    if let Some((start, new_end)) = tape.claim_thread_chunk(end, chunk, need, may_move) {
        if start != end {
            slot.cursor.set(start);
        }
        slot.end.set(new_end);
        slot.next.set(grown);
        let (start, end) = fit(tape.base(), slot.cursor.get(), size, align, new_end)
            .expect("a claimed chunk fits the request it was claimed for");
        slot.cursor.set(end);
        return Some(start);
    }
    // Too much of this chunk left to abandon, or the tape nearly full: exactly from the
    // shared cursor.
    Some(tape.take_exact(size, align)?.0)
}
