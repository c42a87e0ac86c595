//! `allocator_api2::alloc::Allocator` for `&Tape` (feature `allocator-api2`): collections on a
//! tape.
//!
//! As for any arena: deallocating is free and gives nothing back; the last allocation grows in
//! place while nothing was taken after it; everything goes at the next clear, which the
//! collections' borrows of the tape hold off.

use super::Tape;
use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering::Relaxed;

impl Tape {
    /// Extends the allocation of `old_size` bytes at `ptr` to `new_size >= old_size` bytes,
    /// in place, if it is still the last thing taken from the tape: the tape's cursor ends
    /// exactly where it ends. `false`, and nothing changed, otherwise or when there is no
    /// room.
    ///
    /// Sound whatever else takes from the tape (lanes, other threads): between clears the
    /// cursor only moves forward past what it hands out, or back over a lane's own unused
    /// tail, so while it stands at the allocation's end, no byte after it belongs to anyone.
    /// The compare-exchange claims them all at once, or fails because someone took first.
    fn try_grow_last(&self, ptr: NonNull<u8>, old_size: usize, new_size: usize) -> bool {
        let Some(start) = self.offset_of(ptr.as_ptr()) else {
            return false;
        };
        let end = start + old_size;
        match start.checked_add(new_size) {
            Some(new_end) if new_end <= self.capacity() => (self.counters.cursor)
                .compare_exchange(end, new_end, Relaxed, Relaxed)
                .is_ok(),
            _ => false,
        }
    }
}

/// A well-aligned dangling pointer: what a zero-sized allocation gets, taking nothing.
fn dangling(layout: Layout) -> NonNull<[u8]> {
    let ptr = NonNull::new(ptr::without_provenance_mut::<u8>(layout.align()))
        .expect("an alignment is never zero");
    NonNull::slice_from_raw_parts(ptr, 0)
}

#[cfg_attr(docsrs, doc(cfg(feature = "allocator-api2")))]
/// Collections on a tape, with the [`allocator-api2`](allocator_api2) crate (feature
/// `allocator-api2`, off by default): `allocator_api2::vec::Vec::new_in(&tape)`,
/// `hashbrown::HashMap::new_in(&tape)`.
///
/// Deallocation is free and hands nothing back: the room comes back at the next
/// [`clear`](Tape::clear), which waits until every collection on the tape is gone, since each
/// borrows the tape. So that a growing collection does not leave a trail of copies, the last
/// allocation on the tape grows in place while nothing was taken after it; shrinking keeps
/// the allocation where it is.
///
/// ```
/// use allocator_api2::vec::Vec;
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
// memory belongs to the tape, not to the reference. Growing in place claims the bytes after
// the block from the tape's cursor atomically, so they too were nobody's.
unsafe impl Allocator for &Tape {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        let ptr = self.take_layout(layout).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(ptr, layout.size()))
    }

    #[inline]
    unsafe fn deallocate(&self, _ptr: NonNull<u8>, _layout: Layout) {
        // Free: the tape takes everything back at once when it is cleared.
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let (old_size, new_size) = (old_layout.size(), new_layout.size());
        debug_assert!(new_size >= old_size, "Allocator::grow's contract");
        // A zero-sized allocation's pointer is dangling, with no memory to grow from.
        let in_place = old_size != 0 && ptr.addr().get() % new_layout.align() == 0;
        if in_place && self.try_grow_last(ptr, old_size, new_size) {
            return Ok(NonNull::slice_from_raw_parts(ptr, new_size));
        }
        let new = self.allocate(new_layout)?;
        // SAFETY: the caller promises `ptr` is an allocation of `old_layout` from this tape,
        // valid for `old_size` bytes; `new` is a fresh one of `new_size >= old_size` bytes,
        // so the two do not overlap.
        unsafe { ptr::copy_nonoverlapping(ptr.as_ptr(), new.cast().as_ptr(), old_size) };
        Ok(new)
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        let new_size = new_layout.size();
        debug_assert!(
            new_size <= old_layout.size(),
            "Allocator::shrink's contract"
        );
        if ptr.addr().get() % new_layout.align() == 0 {
            // The allocation stays where it is; its tail is wasted until the next clear.
            return Ok(NonNull::slice_from_raw_parts(ptr, new_size));
        }
        let new = self.allocate(new_layout)?;
        // SAFETY: `ptr` is valid for `old_size >= new_size` bytes (the caller's promise), and
        // `new` is fresh memory, so they do not overlap.
        unsafe { ptr::copy_nonoverlapping(ptr.as_ptr(), new.cast().as_ptr(), new_size) };
        Ok(new)
    }
}
