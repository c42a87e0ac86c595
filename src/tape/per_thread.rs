//! The chunks each thread takes from behind [`Tape::take`]: a lane without the lane.
//!
//! Every thread has [`SLOTS`] slots, in a thread-local with a constant initialiser and no
//! destructor (so no allocation, no lazy set-up, nothing to run at thread exit). A slot names
//! the tape its chunk belongs to by the tape's identity, which no other tape ever gets, and by
//! the tape's generation, which clears and rewinds move on (see [`rewind_and_prime`] for when
//! one keeps it). A take whose tape sits in a
//! slot of the current generation bumps that slot's private cursor: no atomic step, no shared
//! cache line. So a thread moving between up to [`SLOTS`] tapes (weights beside scratch, in
//! any order) stays on the fast path for each. Any other take goes to [`take_slow`], which
//! claims chunks from the tape's shared cursor with one atomic step each, as a
//! [`Lane`](super::Lane) does; a tape that finds no slot takes over the one claimed longest
//! ago (first in, first out), and a tape the thread clears moves to the slot every take looks
//! at first, counting as the newest.
//!
//! # What a chunk may waste
//!
//! A thread settles on a tape before it claims from it: until it has taken [`SETTLE`] bytes
//! from a tape while the tape kept its slot, its takes go exactly to the shared cursor. A
//! thread that moves between more than [`SLOTS`] tapes on every take, or takes little from
//! each, never claims a chunk at all. Chunks start at [`FIRST_CHUNK`] (no more than the thread
//! took while settling) and double with every claim up to [`MAX_CHUNK`], so a tape losing its
//! slot (to a tape the thread moves to) keeps behind at most 8/7 of what the thread took there
//! since the tape got the slot (and at most one `MAX_CHUNK`). No chunk takes more than an
//! eighth of what is free at the shared cursor, and none smaller than [`MIN_CHUNK`] is
//! claimed: near the end of a tape every take is exact, so one thread fills a tape to the
//! byte. A request that needs (with its alignment) more than a quarter of the next chunk goes
//! straight to the shared cursor, and grows the next chunk. A thread moves to a fresh chunk
//! only when at most an eighth of its current one is left, so moving wastes at most that plus
//! up to 127 bytes of alignment (a chunk starts on its own cache line unless it joins the
//! previous one). A clear or rewind takes every chunk back, and, with `&mut`, hands the calling
//! thread a fresh one at once (see [`rewind_and_prime`]) of at most a [`PRIMED_SHARE`]th of
//! what is free (and `MAX_CHUNK`): a thread that leaves the tape for more than [`SLOTS`] others
//! before it takes from it again leaves that much behind until the next clear, which is why it
//! is kept so small.
//!
//! So each thread holds at most one chunk of a given tape (of at most [`SLOTS`] tapes at
//! once), and with `N` threads a take that fails leaves free less than it asked for at the
//! shared cursor, plus at most one chunk (64 KiB) per thread; over a tape's life, bytes left
//! behind come to at most an eighth of what was used (plus 127 bytes a chunk), and what
//! threads left behind when the tape lost its slot or they ended.

use super::{Tape, fit};
use crate::sync::Ordering::Relaxed;
use crate::sync::thread_local_const;
use core::cell::Cell;

/// Bytes a thread takes from one tape, exactly, before it claims a chunk of it.
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

/// How many tapes a thread holds chunks of at once: a round robin over this many tapes stays
/// on the fast path for each.
pub(super) const SLOTS: usize = 4;

/// A clear or rewind hands the calling thread a chunk of at most this share of what is free
/// (1/64): small, since a thread that goes on to more than [`SLOTS`] other tapes before it
/// takes from this one again leaves it behind until the next clear. Claims may take an eighth.
#[cfg(not(loom))]
pub(super) const PRIMED_SHARE: usize = 64;
/// Under loom tapes are tiny, and a 64th of one is below `MIN_CHUNK`: an eighth, so that the
/// models reach primed chunks.
#[cfg(loom)]
pub(super) const PRIMED_SHARE: usize = 8;

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
    /// The tape's generation when the chunk was claimed or handed by a clear: any other means
    /// the tape was cleared since (a clear that keeps the generation hands this slot its next
    /// chunk itself). No other tape ever has this generation, so a slot whose generation is a
    /// tape's current one holds that tape's current chunk, whatever `tape` is compared. 0 for
    /// none.
    generation: Cell<u64>,
    /// Offset of the chunk's next free byte; `start <= cursor <= end`.
    cursor: Cell<usize>,
    /// Offset just past the chunk: the thread owns `cursor..end`.
    end: Cell<usize>,
    /// What the next claim asks for; 0 while the thread is not settled on the tape.
    next: Cell<usize>,
    /// The chunk a clear hands this thread (see [`rewind_and_prime`]): `next`, cut to an
    /// eighth of the tape, or 0 where that is below [`MIN_CHUNK`]. Worked out whenever `next`
    /// changes (a claim, on the slow path), so that a clear only loads it.
    primed: Cell<usize>,
    /// Bytes taken from this tape while not settled, up to `SETTLE`.
    taken: Cell<usize>,
    /// Offset of the chunk's first byte: the thread owns everything it handed out from
    /// `start..cursor`, so resizing in place never reaches below it. A chunk that grows in
    /// place (the next claim joins on) keeps its start. Last, away from `cursor`: a clear
    /// stores both, and stores to neighbours may be merged into one wide store, which the next
    /// take's load of `cursor` then waits on for longer than on a store of its own size.
    start: Cell<usize>,
}

impl Slot {
    /// No chunk, of no tape. (A `const fn`, not a constant: each use is a fresh slot.)
    const fn none() -> Slot {
        Slot {
            tape: Cell::new(0),
            generation: Cell::new(0),
            start: Cell::new(0),
            cursor: Cell::new(0),
            end: Cell::new(0),
            next: Cell::new(0),
            primed: Cell::new(0),
            taken: Cell::new(0),
        }
    }

    /// Sets what the next claim of `tape` asks for, and so what a clear hands the thread.
    fn set_next(&self, tape: &Tape, next: usize) {
        self.next.set(next);
        self.primed
            .set(primed_len(next, tape.capacity() / PRIMED_SHARE));
    }

    /// Trades everything with `other`.
    fn swap(&self, other: &Slot) {
        self.tape.swap(&other.tape);
        self.generation.swap(&other.generation);
        self.start.swap(&other.start);
        self.cursor.swap(&other.cursor);
        self.end.swap(&other.end);
        self.next.swap(&other.next);
        self.primed.swap(&other.primed);
        self.taken.swap(&other.taken);
    }

    /// An empty chunk at `offset` of `generation`: the next claim joins on only if the
    /// shared cursor is there too, which is then exactly right.
    fn forget_chunk(&self, generation: u64, offset: usize) {
        self.generation.set(generation);
        self.start.set(offset);
        self.cursor.set(offset);
        self.end.set(offset);
    }
}

/// A thread's slots, and which one a tape without a slot takes over next.
struct Slots {
    slots: [Slot; SLOTS],
    /// The slot claimed longest ago, which the next tape without a slot takes over.
    oldest: Cell<usize>,
}

thread_local_const! {
    static SLOTS_HERE: Slots = Slots {
        slots: [Slot::none(), Slot::none(), Slot::none(), Slot::none()],
        oldest: Cell::new(0),
    };
}

/// Runs `f` with this thread's slots. Through a pointer rather than inside
/// `LocalKey::with`'s closure, which the compiler stops inlining at about the size of a clear,
/// and a clear not inlined into the loop around it costs a call and the stores and loads of
/// its arguments every step.
#[inline(always)]
fn with_slots<R>(f: impl FnOnce(&Slots) -> R) -> R {
    let slots = SLOTS_HERE.with(core::ptr::from_ref);
    // SAFETY: a thread-local lives as long as its thread, and this runs on that thread. `f`
    // cannot keep the reference: `R` does not depend on its lifetime, and `&Slots` cannot
    // reach another thread (`Slots` is not `Sync`).
    f(unsafe { &*slots })
}

impl Slots {
    /// The slot holding `tape`, if any.
    #[inline(always)]
    fn of(&self, tape: u64) -> Option<&Slot> {
        self.slots.iter().find(|slot| slot.tape.get() == tape)
    }

    /// The slot holding the current chunk of a tape whose generation is `generation`, if any:
    /// generations are unique to their tape, so one comparison a slot finds it.
    #[inline(always)]
    fn of_generation(&self, generation: u64) -> Option<&Slot> {
        self.slots
            .iter()
            .find(|slot| slot.generation.get() == generation)
    }

    /// The slot holding a chunk of `tape` of its current generation, if any.
    #[inline(always)]
    fn current(&self, tape: &Tape) -> Option<&Slot> {
        self.of_generation(tape.generation.load(Relaxed))
    }

    /// The slot for `tape`, taking over the oldest one if it has none: the rest of that
    /// slot's chunk stays behind (its tape may be gone), and `tape` starts over, exactly, so
    /// that a thread moving between more tapes than it has slots claims no chunk it would
    /// leave behind.
    fn of_or_oldest(&self, tape: &Tape) -> &Slot {
        if let Some(slot) = self.of(tape.id) {
            return slot;
        }
        let oldest = self.oldest.get();
        self.oldest.set((oldest + 1) % SLOTS);
        let slot = &self.slots[oldest];
        slot.tape.set(tape.id);
        slot.set_next(tape, 0);
        slot.taken.set(0);
        slot.forget_chunk(tape.generation.load(Relaxed), 0);
        slot
    }
}

/// The fast path: the start offset of `size` bytes from this thread's chunk of `tape`, or
/// `None` when the thread has none, or it is of another generation, or the bytes do not fit.
#[inline(always)]
pub(super) fn bump(tape: &Tape, size: usize, align: usize) -> Option<usize> {
    // Relaxed: a clear or rewind happens before any take that follows it (`&mut`, or
    // `clear_shared`'s contract), and a load sees every store that happens before it.
    let generation = tape.generation.load(Relaxed);
    let base = tape.base();
    with_slots(|slots| {
        let slot = slots.of_generation(generation)?;
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
    with_slots(|slots| {
        let slot = slots.of_or_oldest(tape);
        if slot.generation.get() != generation {
            // Cleared or rewound: the chunk went with everything else. The thread keeps its
            // pace: it was settled on this tape, and will be again.
            slot.forget_chunk(generation, 0);
        }
        refill(tape, slot, size, align)
    })
}

fn refill(tape: &Tape, slot: &Slot, size: usize, align: usize) -> Option<usize> {
    if slot.next.get() == 0 {
        let taken = slot.taken.get().saturating_add(size);
        if taken < SETTLE {
            slot.taken.set(taken);
            let (start, end) = tape.take_exact(size, align)?;
            // An empty chunk just past the take: the first claim joins on if nobody took
            // in between, so a thread settling loses nothing to alignment.
            slot.forget_chunk(slot.generation.get(), end);
            return Some(start);
        }
        slot.set_next(tape, FIRST_CHUNK);
    }
    let chunk = slot.next.get();
    let grown = (chunk * 2).min(MAX_CHUNK);
    // What the request needs at worst, alignment padding included: a chunk at least this
    // long always fits it, so a claim is never made for a take that then fails.
    let need = size.saturating_add(align - 1);
    if need > chunk / 4 {
        // Too large to carve from a chunk without wasting much of it. The thread takes big
        // pieces, so its next chunk may be bigger.
        slot.set_next(tape, grown);
        return Some(tape.take_exact(size, align)?.0);
    }
    let (cursor, end) = (slot.cursor.get(), slot.end.get());
    // Moving to a chunk elsewhere abandons the rest of this one: only when at most an eighth
    // of it is left (`chunk` is the next one's size, up to twice this one's).
    let may_move = end - cursor <= chunk / 16;
    if let Some((start, new_end)) = tape.claim_thread_chunk(end, chunk, need, may_move) {
        if start != end {
            slot.start.set(start);
            slot.cursor.set(start);
        }
        slot.end.set(new_end);
        slot.set_next(tape, grown);
        let (start, end) = fit(tape.base(), slot.cursor.get(), size, align, new_end)
            .expect("a claimed chunk fits the request it was claimed for");
        slot.cursor.set(end);
        return Some(start);
    }
    // Too much of this chunk left to abandon, or the tape nearly full: exactly from the
    // shared cursor.
    Some(tape.take_exact(size, align)?.0)
}

/// A clear or rewind to `offset` through `&mut` (so nothing else takes, and the shared
/// cursor is plain data until it returns): records the peak, ends every thread's chunk, and
/// hands a thread that was settled on the tape a fresh chunk at `offset` at once, with plain
/// stores instead of an atomic step, so that its first take after the clear is a fast one. A
/// thread that never settled on the tape gets nothing. One look-up of this thread's slots for
/// all of it.
///
/// Chunks end when the generation moves on. It stays put, and only this thread's cursor goes
/// back, when this thread's chunk is the only one of the generation anywhere: the last clear
/// or rewind handed it, and no thread claimed a chunk since ([`Tape::only_chunk_is`]; every
/// other slot of the generation then holds an empty one, which hands out nothing without a
/// claim). That is a loop of takes and clears on one thread, and in it a clear stores only
/// what changes: the takes that follow load every value it stored, and a load of a value
/// stored just before waits on the store (on AMD Zen 4, an 8-take step ran 1.6 times as
/// long when the clear moved the generation on).
#[inline(always)]
pub(super) fn rewind_and_prime(tape: &Tape, offset: usize) {
    let room = (tape.capacity() - offset) / PRIMED_SHARE;
    rewind_and_prime_with(tape, offset, |slot| primed_len(slot.next.get(), room));
}

/// [`rewind_and_prime`] to 0: the chunk to hand is the one worked out at the last claim, a
/// load. A function of its own, so that what it inlines is only what a clear runs.
#[inline(always)]
pub(super) fn clear_and_prime(tape: &Tape) {
    rewind_and_prime_with(tape, 0, |slot| slot.primed.get());
}

/// [`rewind_and_prime`], `chunk` saying how long a chunk to hand the thread's slot.
#[inline(always)]
fn rewind_and_prime_with(tape: &Tape, offset: usize, chunk: impl FnOnce(&Slot) -> usize) {
    let (cursor, peak) = (&tape.counters.cursor, &tape.counters.peak);
    let generation = tape.generation.load(Relaxed);
    // Small enough to be inlined, as the take that follows is.
    let (unused, reserved) = with_slots(|slots| {
        // The usual case, a thread clearing the tape it takes from: its current chunk.
        match slots.of_generation(generation) {
            Some(slot) => {
                let unused = slot.end.get() - slot.cursor.get();
                let slot = match core::ptr::eq(slot, &slots.slots[0]) {
                    true if tape.only_chunk_is(address(slot)) => slot,
                    true => {
                        renew_generation_for(tape, slot);
                        slot
                    }
                    false => to_front(tape, slots, slot),
                };
                (unused, prime(slot, offset, chunk(slot)))
            }
            None => (0, prime_stale(tape, slots, offset)),
        }
    });
    // The chunk lies below the shared cursor, so its unused rest is never more.
    let used = cursor.load(Relaxed) - unused;
    // A store only for a new peak: in a steady loop of steps the peak stays put, and an
    // unconditional `max` and store would chain every clear to the one before it through
    // memory (store, reload, compare), which a predicted branch does not.
    if used > peak.load(Relaxed) {
        peak.store(used, Relaxed);
    }
    cursor.store(reserved, Relaxed);
}

/// Moves `tape`'s generation on, `slot` keeping its chunk's place as the one the clear
/// hands out. Out of line, so that the usual clear stays small enough to be inlined.
#[cold]
#[inline(never)]
fn renew_generation_for(tape: &Tape, slot: &Slot) {
    slot.generation.set(tape.renew_generation(address(slot)));
}

/// Moves the current chunk of `tape` from `slot` to the first slot, which every take looks at
/// first, and returns that: a tape being cleared is the one its thread takes from most. The
/// first slot's tape takes `slot`'s place, and the moved tape counts as the one claimed last,
/// so that the others lose their slots before it does. The chunk stays the only
/// one of its generation if it was (the tape hears where it went); otherwise the generation
/// moves on. (A tape moved out of the first slot whose chunk was the only one just looks as
/// if it were not, and moves its generation on at its next clear.) Out of line: once a tape
/// is in front it stays there while it is the only one cleared.
#[cold]
#[inline(never)]
fn to_front<'s>(tape: &Tape, slots: &'s Slots, slot: &Slot) -> &'s Slot {
    let front = &slots.slots[0];
    let only = tape.only_chunk_is(address(slot));
    slot.swap(front);
    // The tape counts as the newest: the next tape without a slot takes the second one.
    slots.oldest.set(1);
    match only {
        true => tape.only_chunk_moved_to(address(front)),
        false => renew_generation_for(tape, front),
    }
    front
}

/// Where a slot lives: what [`Tape::only_chunk_is`] compares. A thread's slots stay put for
/// its life, and whoever gets a slot's memory after the thread ends gets the slot, chunk and
/// all, so an address names one holder at a time.
#[inline(always)]
fn address(slot: &Slot) -> usize {
    core::ptr::from_ref(slot).addr()
}

/// Hands `slot` a fresh chunk of `len` bytes at `offset` (of the generation it already
/// names), and returns its end. Stores `end`, which every take loads, only where it changes
/// (see [`rewind_and_prime`]); no take loads `start`.
#[inline(always)]
fn prime(slot: &Slot, offset: usize, len: usize) -> usize {
    let end = offset + len;
    slot.start.set(offset);
    slot.cursor.set(offset);
    if slot.end.get() != end {
        slot.end.set(end);
    }
    end
}

/// [`prime`] for a thread whose chunk of `tape` is not current (it was cleared by another
/// thread, or the thread took nothing since), or which has no slot for it (then nothing is
/// handed, and the cursor goes to `offset`); the generation moves on either way. Out of
/// line, so that the usual clear stays small enough to be inlined.
#[cold]
#[inline(never)]
fn prime_stale(tape: &Tape, slots: &Slots, offset: usize) -> usize {
    match slots.of(tape.id) {
        Some(slot) => {
            renew_generation_for(tape, slot);
            let len = primed_len(slot.next.get(), (tape.capacity() - offset) / PRIMED_SHARE);
            prime(slot, offset, len)
        }
        None => {
            tape.renew_generation(0);
            offset
        }
    }
}

/// How long a chunk a clear or rewind hands a thread whose next claim asks for `next`, where
/// `room` is a [`PRIMED_SHARE`]th of what is then free (at most `room`, and
/// none below [`MIN_CHUNK`]; none for a thread not settled, whose `next` is 0).
#[inline(always)]
fn primed_len(next: usize, room: usize) -> usize {
    let len = next.min(room);
    match len >= MIN_CHUNK {
        true => len,
        false => 0,
    }
}

/// The unused rest of this thread's chunk of `tape`: what [`Tape::used`] leaves out.
pub(super) fn unused_here(tape: &Tape) -> usize {
    with_slots(|slots| {
        slots
            .current(tape)
            .map_or(0, |slot| slot.end.get() - slot.cursor.get())
    })
}

/// Where a mark made now on this thread lies, the shared cursor being at `shared`: this
/// thread's cursor in its chunk when the chunk is the last thing claimed (so a rewind to the
/// mark frees what this thread takes after it), and `shared` otherwise, after ending this
/// thread's chunk so that its later takes lie after the mark too.
pub(super) fn mark_here(tape: &Tape, shared: usize) -> usize {
    with_slots(|slots| match slots.current(tape) {
        Some(slot) if slot.end.get() == shared => slot.cursor.get(),
        Some(slot) => {
            slot.forget_chunk(slot.generation.get(), shared);
            shared
        }
        None => shared,
    })
}

/// Resizes, in place, the allocation `start..old_end` of this thread's current chunk of
/// `tape` to `start..new_end`, if it is the last thing handed out from the chunk: growing
/// within the chunk, or past its end when the chunk ends at the shared cursor (claiming the
/// bytes with one exchange); shrinking (down to `new_end == start`, a deallocation) gives the
/// tail back to the chunk. `false`, and nothing changed, otherwise.
///
/// Sound: the chunk's bytes from its cursor on are this thread's and nobody's yet; bytes from
/// `start` to the cursor were handed out by this thread, and the caller owns `start..old_end`,
/// the last of them. Past the chunk's end, the exchange claims bytes nobody holds, as a claim
/// does.
#[cfg(feature = "allocator-api2")]
pub(super) fn resize_here(tape: &Tape, start: usize, old_end: usize, new_end: usize) -> bool {
    with_slots(|slots| {
        let Some(slot) = slots.current(tape) else {
            return false;
        };
        if start < slot.start.get() || old_end != slot.cursor.get() {
            return false;
        }
        let end = slot.end.get();
        if new_end < old_end {
            note_peak(tape, slot);
        }
        if new_end > end {
            let shared = &tape.counters.cursor;
            if new_end > tape.capacity()
                || shared
                    .compare_exchange(end, new_end, crate::sync::Ordering::Acquire, Relaxed)
                    .is_err()
            {
                return false;
            }
            tape.note_claim();
            slot.end.set(new_end);
        }
        slot.cursor.set(new_end);
        true
    })
}

/// Before this thread's cursor in its chunk goes back: the peak hears of what is used now,
/// which it otherwise learns only at a clear. A load, and a store only for a new peak.
fn note_peak(tape: &Tape, slot: &Slot) {
    let shared = tape.counters.cursor.load(Relaxed);
    let used = shared.saturating_sub(slot.end.get() - slot.cursor.get());
    let peak = &tape.counters.peak;
    if used > peak.load(Relaxed) {
        peak.fetch_max(used, Relaxed);
    }
}

/// Whether the first slot, which every take looks at first, holds this thread's current chunk
/// of `tape`.
#[cfg(all(test, not(loom)))]
pub(super) fn in_front_here(tape: &Tape) -> bool {
    with_slots(|slots| {
        slots
            .current(tape)
            .is_some_and(|slot| core::ptr::eq(slot, &slots.slots[0]))
    })
}

/// Where this thread's chunk of `tape` stands: `(start, cursor, end)`, if it has a current one.
pub(super) fn chunk_here(tape: &Tape) -> Option<(usize, usize, usize)> {
    with_slots(|slots| {
        slots
            .current(tape)
            .map(|slot| (slot.start.get(), slot.cursor.get(), slot.end.get()))
    })
}

/// Moves this thread's cursor in its current chunk of `tape` back from `from` to `to`, if it
/// stands at `from` and `to` lies in the chunk: how a scope gives back what it took. `false`
/// otherwise.
pub(super) fn rewind_here(tape: &Tape, from: usize, to: usize) -> bool {
    with_slots(|slots| match slots.current(tape) {
        Some(slot) if slot.cursor.get() == from && slot.start.get() <= to && to <= from => {
            note_peak(tape, slot);
            slot.cursor.set(to);
            true
        }
        _ => false,
    })
}

/// `size` bytes from this thread's current chunk of `tape`, if its cursor stands at `top` and
/// the chunk reaches down to `floor`: how a scope extends its stretch `floor..top` with no
/// take of anyone else's in between. `(start, end)`, or `None`, nothing changed.
#[inline(always)]
pub(super) fn bump_at(
    tape: &Tape,
    floor: usize,
    top: usize,
    size: usize,
    align: usize,
) -> Option<(usize, usize)> {
    let base = tape.base();
    with_slots(|slots| {
        let slot = slots.current(tape)?;
        if slot.cursor.get() != top || slot.start.get() > floor {
            return None;
        }
        let (start, end) = fit(base, top, size, align, slot.end.get())?;
        slot.cursor.set(end);
        Some((start, end))
    })
}
