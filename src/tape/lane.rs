//! [`Lane`]: one thread's non-atomic fast path into a shared [`Tape`].

use super::{Tape, check_align, fit, typed};
use core::cell::Cell;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

/// One thread's private window onto a [`Tape`]: takes are plain arithmetic on a private
/// cursor, with one atomic step on the tape per chunk.
///
/// Made by [`Tape::lane`] or [`Tape::lane_with_chunk`]. A lane claims a chunk of the tape and
/// hands it out piece by piece. When a request does not fit in what is left:
///
/// - if no other thread took since, the chunk grows in place by another chunk, losing nothing;
/// - otherwise, if at most an eighth of the chunk is left, the lane moves to a fresh chunk
///   and leaves that little behind;
/// - otherwise, and for any request larger than a chunk, the request goes straight to the
///   tape and the lane keeps its chunk for smaller ones.
///
/// When the lane is dropped it hands the unused end of its chunk back, unless another thread
/// claimed after it. So a live lane holds back at most one chunk, it never wastes more than an
/// eighth of a chunk (plus a cache line of alignment) per chunk it used, and once the lanes
/// are gone [`Tape::used`] ends where the last allocation ends.
///
/// Allocations from a lane borrow the *tape*, not the lane: many can be held at once, and they
/// outlive the lane. They still end before the tape can be cleared:
///
/// ```compile_fail,E0502
/// let mut tape = unimem::Tape::start(4096)?;
/// let mut lane = tape.lane();
/// let xs = lane.take_fill(4, 0u32).unwrap();
/// drop(lane);
/// tape.clear(); // error: `xs` still borrows the tape
/// xs[0] = 1;
/// # Ok::<(), unimem::Error>(())
/// ```
///
/// A lane is `Send`, so it can be made on one thread and used on another, but not `Sync`:
/// it belongs to one thread at a time.
///
/// ```compile_fail,E0277
/// fn shared_between_threads<T: Sync>() {}
/// shared_between_threads::<unimem::Lane<'static>>();
/// ```
#[derive(Debug)]
pub struct Lane<'t> {
    tape: &'t Tape,
    /// The tape's first byte, kept here so that a take does not have to reach into the tape.
    base: NonNull<u8>,
    /// Offset of the lane's next free byte; `cursor <= end`.
    cursor: usize,
    /// Offset just past the lane's chunk. The lane owns `cursor..end`.
    end: usize,
    /// Bytes claimed per refill.
    chunk: usize,
    /// One thread at a time: see the `Send` impl.
    not_sync: PhantomData<Cell<()>>,
}

// SAFETY: a lane is a shared reference to a `Tape` (which is `Sync`), the tape's base address
// and offsets into it that only this lane hands out. Nothing in it is tied to the thread that
// made it; moving it moves the right to hand out `cursor..end` along with it.
unsafe impl Send for Lane<'_> {}

impl<'t> Lane<'t> {
    /// The chunk size of [`Tape::lane`]: 64 KiB, one atomic step per 64 KiB taken, and little
    /// held back per lane.
    pub const DEFAULT_CHUNK: usize = 64 << 10;

    pub(super) fn new(tape: &'t Tape, chunk: usize) -> Lane<'t> {
        Lane {
            tape,
            base: tape.block.as_non_null(),
            cursor: 0,
            end: 0,
            chunk,
            not_sync: PhantomData,
        }
    }

    /// The tape this lane takes from: for its [`offset_of`](Tape::offset_of) or figures.
    ///
    /// ```
    /// let tape = unimem::Tape::start(1 << 20)?;
    /// let mut lane = tape.lane();
    /// let xs = lane.take_fill(4, 1u8).unwrap();
    /// assert!(lane.tape().owns(xs.as_ptr()));
    /// # Ok::<(), unimem::Error>(())
    /// ```
    pub fn tape(&self) -> &'t Tape {
        self.tape
    }

    /// Takes `size` bytes aligned to `align`, like [`Tape::take`] and with the same guarantees,
    /// but without an atomic step unless the chunk has run out. `None` only when the tape
    /// itself cannot fit the request. As there, a pointer from a size-0 take may coincide with
    /// a later take's and must not be read or written through.
    ///
    /// # Panics
    /// If `align` is not a power of two.
    ///
    /// ```
    /// let tape = unimem::Tape::start(1 << 20)?;
    /// let mut lane = tape.lane();
    /// let p = lane.take(24, 8).unwrap();
    /// assert_eq!(p.as_ptr() as usize % 8, 0);
    /// assert!(lane.take(usize::MAX, 1).is_none());
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "the bytes stay taken until the tape is cleared; use the pointer or don't take"]
    #[track_caller]
    pub fn take(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        check_align(align);
        match self.bump(size, align) {
            Some(ptr) => Some(ptr),
            None => self.refill(size, align),
        }
    }

    /// Takes room for `n` values of `T`, uninitialised, like [`Tape::take_slice`]; the slice
    /// borrows the tape, not the lane.
    ///
    /// ```
    /// let tape = unimem::Tape::start(1 << 20)?;
    /// let mut lane = tape.lane();
    /// let slots = lane.take_slice::<f32>(8).unwrap();
    /// slots[0].write(1.5);
    /// // SAFETY: written just above.
    /// assert_eq!(unsafe { slots[0].assume_init() }, 1.5);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "the memory stays taken until the tape is cleared"]
    pub fn take_slice<T>(&mut self, n: usize) -> Option<&'t mut [MaybeUninit<T>]> {
        typed::slice(self, n)
    }

    /// Takes a copy of `items`, like [`Tape::take_copy`].
    ///
    /// ```
    /// let tape = unimem::Tape::start(1 << 20)?;
    /// let mut lane = tape.lane();
    /// let xs = lane.take_copy(&[1u16, 2, 3]).unwrap();
    /// assert_eq!(xs, &[1, 2, 3]);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "the memory stays taken until the tape is cleared"]
    pub fn take_copy<T: Copy>(&mut self, items: &[T]) -> Option<&'t mut [T]> {
        typed::copy(self, items)
    }

    /// Takes `n` clones of `value`, like [`Tape::take_fill`].
    ///
    /// ```
    /// let tape = unimem::Tape::start(1 << 20)?;
    /// let mut lane = tape.lane();
    /// let xs = lane.take_fill(3, 0.5f64).unwrap();
    /// assert_eq!(xs, &[0.5; 3]);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "the memory stays taken until the tape is cleared"]
    pub fn take_fill<T: Clone>(&mut self, n: usize, value: T) -> Option<&'t mut [T]> {
        typed::fill(self, n, value)
    }

    /// Moves `value` onto the tape, like [`Tape::take_value`].
    ///
    /// ```
    /// let tape = unimem::Tape::start(1 << 20)?;
    /// let mut lane = tape.lane();
    /// let x = lane.take_value(41u64).unwrap();
    /// *x += 1;
    /// assert_eq!(*x, 42);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "the memory stays taken until the tape is cleared"]
    pub fn take_value<T>(&mut self, value: T) -> Option<&'t mut T> {
        typed::value(self, value)
    }

    /// The fast path: the request fits in what is left of the chunk.
    #[inline(always)]
    fn bump(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        let (start, end) = fit(self.base.addr().get(), self.cursor, size, align, self.end)?;
        self.cursor = end;
        // SAFETY: `start <= end <= self.end <= capacity`: inside the block or one past it.
        Some(unsafe { self.base.add(start) })
    }

    /// The slow path: claim another chunk, or go to the tape directly.
    #[cold]
    #[inline(never)]
    fn refill(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        if size <= self.chunk {
            // Moving to a chunk elsewhere abandons the rest of this one: only when little is
            // left. Extending the chunk in place abandons nothing and is always welcome.
            let may_move = self.end - self.cursor <= self.chunk / 8;
            if let Some((start, end)) = self.tape.claim_chunk(self.end, self.chunk, may_move) {
                if start != self.end {
                    self.cursor = start;
                }
                self.end = end;
                if let Some(ptr) = self.bump(size, align) {
                    return Some(ptr);
                }
            }
        }
        // Too big for a chunk, too much of this chunk left to abandon, too strictly aligned
        // to fit a chunk, or the tape is nearly full.
        let (start, _) = self.tape.take_exact(size, align)?;
        // SAFETY: `take_exact` keeps `start` within the block.
        Some(unsafe { self.base.add(start) })
    }
}

impl Drop for Lane<'_> {
    fn drop(&mut self) {
        if self.cursor < self.end {
            self.tape.give_back(self.end, self.cursor);
        }
    }
}

// SAFETY: `Lane::take` hands out bytes of the chunk this lane claimed from the tape (or takes
// directly from the tape), each piece once; they stay untouched by anyone else until the tape
// is cleared or rewound, which needs `&mut Tape` and so ends `'t` first.
unsafe impl<'t> typed::Source<'t> for Lane<'t> {
    #[inline(always)]
    fn take_bytes(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        self.take(size, align)
    }
}
