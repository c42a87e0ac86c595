//! `allocator_api2::alloc::Allocator` for `&Tape` and `&Scope` (feature `allocator-api2`):
//! collections on a tape, or in a scope.
//!
//! As for any arena, memory comes back all at once at the next clear (or when the scope ends),
//! which the collections' borrows hold off; before that, the most recent allocation of the
//! calling thread's chunk, or of the tape, is resized in place, and gives its tail back when it
//! shrinks or goes (the rules are on the `Allocator for &Tape` impl).

use super::{Scope, Tape, per_thread};
use crate::sync::Ordering::{AcqRel, Relaxed};
use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::ptr::{self, NonNull};

impl Tape {
    /// Resizes the allocation of `old_size > 0` bytes at `ptr` to `new_size` bytes (0: gives
    /// it all back) where it is, if it is the last thing the calling thread took from its
    /// chunk of the tape, or the last thing taken from the tape at all (the shared cursor
    /// ends where it ends). `false`, and nothing changed, otherwise or when there is no room.
    ///
    /// Sound whatever else takes from the tape (lanes, other threads): the bytes after the
    /// last allocation of a thread's chunk are that thread's and nobody's yet
    /// (`per_thread::resize_here`), and while the shared cursor stands at an allocation's end,
    /// no byte after it belongs to anyone. The compare-exchange moves the cursor from there
    /// to the new end at once, or fails because someone took first. Bytes given back were the
    /// caller's, and it gives them up.
    pub(super) fn resize_in_place(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new_size: usize,
    ) -> bool {
        let Some(start) = self.offset_of(ptr.as_ptr()) else {
            return false;
        };
        let old_end = start + old_size;
        let Some(new_end) = start
            .checked_add(new_size)
            .filter(|&end| end <= self.capacity())
        else {
            return false;
        };
        if per_thread::resize_here(self, start, old_end, new_end) {
            return true;
        }
        if new_end < old_end {
            // The peak counts what was reserved: it hears of `old_end` before the cursor
            // drops below it, as when a lane hands back its tail.
            self.counters.peak.fetch_max(old_end, Relaxed);
        }
        // Acquire to claim bytes another thread may have given back, Release to give back
        // bytes this thread wrote (see `Tape::advance`).
        (self.counters.cursor)
            .compare_exchange(old_end, new_end, AcqRel, Relaxed)
            .is_ok()
    }
}

/// A well-aligned dangling pointer: what a zero-sized allocation gets, taking nothing.
fn dangling(layout: Layout) -> NonNull<[u8]> {
    let ptr = NonNull::new(ptr::without_provenance_mut::<u8>(layout.align()))
        .expect("an alignment is never zero");
    NonNull::slice_from_raw_parts(ptr, 0)
}

/// What the `Allocator` methods need of `&Tape` and `&Scope`, so that they are written once.
trait Arena {
    /// Fresh bytes for `layout` (size > 0).
    fn take_for(&self, layout: Layout) -> Option<NonNull<u8>>;
    /// `Tape::resize_in_place`, and whatever the arena itself keeps track of.
    fn resize(&self, ptr: NonNull<u8>, old_size: usize, new_size: usize) -> bool;
}

impl Arena for &Tape {
    #[inline]
    fn take_for(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.take_layout(layout)
    }

    fn resize(&self, ptr: NonNull<u8>, old_size: usize, new_size: usize) -> bool {
        self.resize_in_place(ptr, old_size, new_size)
    }
}

impl Arena for &Scope<'_> {
    #[inline]
    fn take_for(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.take_layout(layout)
    }

    fn resize(&self, ptr: NonNull<u8>, old_size: usize, new_size: usize) -> bool {
        self.resize_in_place(ptr, old_size, new_size)
    }
}

#[inline]
fn allocate(arena: &impl Arena, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
    if layout.size() == 0 {
        return Ok(dangling(layout));
    }
    let ptr = arena.take_for(layout).ok_or(AllocError)?;
    Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
}

/// # Safety
/// `Allocator::deallocate`'s.
unsafe fn deallocate(arena: &impl Arena, ptr: NonNull<u8>, layout: Layout) {
    if layout.size() != 0 {
        // Gives the bytes back if they were the last taken; otherwise they wait for a clear.
        arena.resize(ptr, layout.size(), 0);
    }
}

/// # Safety
/// `Allocator::grow`'s.
unsafe fn grow(
    arena: &impl Arena,
    ptr: NonNull<u8>,
    old_layout: Layout,
    new_layout: Layout,
) -> Result<NonNull<[u8]>, AllocError> {
    let (old_size, new_size) = (old_layout.size(), new_layout.size());
    debug_assert!(new_size >= old_size, "Allocator::grow's contract");
    // A zero-sized allocation's pointer is dangling, with no memory to grow from.
    let in_place = old_size != 0 && ptr.addr().get() % new_layout.align() == 0;
    if in_place && arena.resize(ptr, old_size, new_size) {
        return Ok(NonNull::slice_from_raw_parts(ptr, new_size));
    }
    let new = allocate(arena, new_layout)?;
    // SAFETY: the caller promises `ptr` is an allocation of `old_layout` from this arena,
    // valid for `old_size` bytes; `new` is a fresh one of `new_size >= old_size` bytes, so
    // the two do not overlap.
    unsafe { ptr::copy_nonoverlapping(ptr.as_ptr(), new.cast().as_ptr(), old_size) };
    // The old bytes go back if nothing was taken after them but the new ones, which is
    // then never the case: they stay taken until the next clear.
    Ok(new)
}

/// # Safety
/// `Allocator::shrink`'s.
unsafe fn shrink(
    arena: &impl Arena,
    ptr: NonNull<u8>,
    old_layout: Layout,
    new_layout: Layout,
) -> Result<NonNull<[u8]>, AllocError> {
    let (old_size, new_size) = (old_layout.size(), new_layout.size());
    debug_assert!(new_size <= old_size, "Allocator::shrink's contract");
    if ptr.addr().get() % new_layout.align() == 0 {
        if old_size != 0 {
            // The tail goes back if the allocation was the last taken; otherwise it waits for
            // the next clear.
            arena.resize(ptr, old_size, new_size);
        }
        return Ok(NonNull::slice_from_raw_parts(ptr, new_size));
    }
    let new = allocate(arena, new_layout)?;
    // SAFETY: `ptr` is valid for `old_size >= new_size` bytes (the caller's promise), and
    // `new` is fresh memory, so they do not overlap.
    unsafe { ptr::copy_nonoverlapping(ptr.as_ptr(), new.cast().as_ptr(), new_size) };
    Ok(new)
}

#[cfg_attr(docsrs, doc(cfg(feature = "allocator-api2")))]
/// Collections on a tape, with the [`allocator-api2`](allocator_api2) crate (feature
/// `allocator-api2`, off by default): `allocator_api2::vec::Vec::new_in(&tape)`,
/// `hashbrown::HashMap::new_in(&tape)`.
///
/// The room comes back at the next [`clear`](Tape::clear), which waits until every
/// collection on the tape is gone, since each borrows the tape. Before that, an allocation
/// is resized where it is, as bumpalo does, exactly when it is the most recent one of the
/// calling thread's chunk of the tape or the most recent one taken from the tape at all:
///
/// - `grow` extends it into the rest of the thread's chunk, or past the chunk's end when
///   nothing was claimed from the tape after the chunk (one compare-and-swap), or past the
///   tape's cursor for an allocation that ends there; otherwise it moves, and the old bytes
///   stay taken until the clear;
/// - `shrink` and `deallocate` give the freed tail back to the chunk (or the tape's cursor);
///   of any other allocation they give nothing back.
///
/// So one collection growing on a thread (a `Vec` being pushed to) never moves and uses no
/// more of the tape than its final capacity; two growing in turn move.
///
/// ```
/// use unimem::allocator_api2::vec::Vec;
///
/// let mut tape = unimem::Tape::start(1 << 20)?;
/// for step in 0..3 {
///     let mut tokens = Vec::new_in(&tape);
///     tokens.extend(0..1000u32);
///     assert_eq!(tokens[999], 999);
///     assert!(tape.owns(tokens.as_ptr()));
///     drop(tokens);
///     tape.clear(); // needs every collection on the tape gone
/// }
/// # Ok::<(), unimem::Error>(())
/// ```
// SAFETY: every block handed out comes from `Tape::take`, which never hands a byte out twice
// until a clear or rewind; those need `&mut Tape`, which cannot exist while a `&Tape`, and so
// any collection using it, is alive (or, for `clear_shared`, its contract forbids using the
// memory afterwards). Blocks stay valid until then, wherever the `&Tape` is copied: the
// memory belongs to the tape, not to the reference. Resizing in place claims bytes that were
// nobody's, or gives back bytes that the caller gives up (`Tape::resize_in_place`).
unsafe impl Allocator for &Tape {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        allocate(self, layout)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's promise, passed on.
        unsafe { deallocate(self, ptr, layout) }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { grow(self, ptr, old_layout, new_layout) }
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { shrink(self, ptr, old_layout, new_layout) }
    }
}

/// Collections in a [`Scope`] (feature `allocator-api2`): they borrow the scope, so they are
/// gone when it ends and its bytes come back. Resized in place as on the tape itself.
///
/// ```
/// use unimem::allocator_api2::vec::Vec;
///
/// let tape = unimem::Tape::start(1 << 20)?;
/// for _layer in 0..100 {
///     tape.scope(|s| {
///         let mut v = Vec::new_in(s);
///         v.extend(0..1000u64);
///         assert_eq!(v.iter().sum::<u64>(), 499_500);
///     });
/// }
/// assert!(tape.used() < 16 << 10);
/// # Ok::<(), unimem::Error>(())
/// ```
// SAFETY: a scope's takes are the tape's takes (see above), and they stay valid while the
// scope is borrowed: it gives its bytes back only when it is dropped, after every borrow of
// it, and so every collection in it, is gone.
unsafe impl Allocator for &Scope<'_> {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        allocate(self, layout)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: the caller's promise, passed on.
        unsafe { deallocate(self, ptr, layout) }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { grow(self, ptr, old_layout, new_layout) }
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { shrink(self, ptr, old_layout, new_layout) }
    }
}
