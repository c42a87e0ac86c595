//! [`Scope`]: scratch taken from a tape and given back when the scope ends, safely.

use super::{Tape, check_align, fit, per_thread, typed};
use crate::sync::Ordering::Relaxed;
use core::alloc::Layout;
use core::cell::Cell;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

/// Scratch from a [`Tape`] that comes back when the scope ends: made by [`Tape::scope`].
///
/// Takes from a scope borrow the scope, not the tape, so they cannot outlive it, while values
/// taken from the tape before (or during) the scope stay usable beside them and after it:
///
/// ```
/// let tape = unimem::Tape::start(1 << 20)?;
/// let x = tape.take_fill(256, 1.0f32).unwrap(); // lives across layers
/// for _layer in 0..1000 {
///     tape.scope(|s| {
///         let tmp = s.take_fill(1024, 0.0f32).unwrap();
///         tmp[0] = x[0] * 2.0;
///         x[1] += tmp[0];
///     });
/// }
/// assert_eq!(x[1], 2001.0);
/// assert_eq!(tape.used(), 1024); // every layer's scratch came back
/// # Ok::<(), unimem::Error>(())
/// ```
///
/// A scope's take cannot leave it:
///
/// ```compile_fail,E0521
/// let tape = unimem::Tape::start(4096)?;
/// let mut kept = None;
/// tape.scope(|s| kept = Some(s.take_fill(4, 0u32).unwrap())); // error: escapes the closure
/// # Ok::<(), unimem::Error>(())
/// ```
///
/// # What comes back
///
/// A scope hands out bytes as [`Tape::take`] does (from the calling thread's chunk of the
/// tape, or at the shared cursor), and remembers the stretch it took last with nothing of
/// anyone else's in it. When it ends it gives that stretch back: to the thread's chunk if
/// nothing was taken from the chunk after it, or to the tape's cursor if nothing was taken
/// from the tape after it. So a scope whose takes are not interleaved with other takes of
/// the same thread from the same tape gives back everything it took, and a loop of such
/// scopes keeps [`Tape::used`] flat. What it cannot give back stays used until the next
/// [`clear`](Tape::clear) or [`rewind`](Tape::rewind), and never goes to anyone else before:
///
/// - takes from the tape itself made on the same thread inside the scope (they may outlive
///   it), after which the scope starts a new stretch and the earlier one stays used;
/// - a stretch at the shared cursor when another thread took from the tape after it. Other
///   threads taking from the same tape at the same time is sound, and costs only this.
///
/// Nested scopes give back in the same way, the inner one first. A scope that outlives a
/// [`clear_shared`](Tape::clear_shared) (under its contract) gives nothing back.
///
/// A scope belongs to the thread that opened it: it is neither `Send` nor `Sync`.
///
/// ```compile_fail,E0277
/// fn shared_between_threads<T: Sync>() {}
/// shared_between_threads::<unimem::Scope<'static>>();
/// ```
#[derive(Debug)]
pub struct Scope<'t> {
    tape: &'t Tape,
    /// The stretch `floor..top` that only this scope took from, and where it lies.
    floor: Cell<usize>,
    top: Cell<usize>,
    stretch: Cell<Stretch>,
    /// The tape's generation when the stretch began: a stretch at the shared cursor is only
    /// extended or given back in it, so that a clear in between (through `clear_shared`,
    /// under its contract) never makes the scope give back bytes that are now someone else's.
    generation: Cell<u64>,
    /// The stretch is this thread's: no `Send`, no `Sync`.
    this_thread: PhantomData<*const ()>,
}

/// Where a scope's stretch lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stretch {
    /// Nothing to give back.
    Nowhere,
    /// In the calling thread's chunk, whose cursor stands at its top while nothing else was
    /// taken from the chunk.
    Chunk,
    /// At the shared cursor, which stands at its top while nothing else was taken.
    Shared,
}

impl<'t> Scope<'t> {
    pub(super) fn new(tape: &'t Tape) -> Scope<'t> {
        // Start the stretch where this thread's chunk stands, so that alignment padding of
        // the first take comes back too.
        let (stretch, at) = match per_thread::chunk_here(tape) {
            Some((_, cursor, _)) => (Stretch::Chunk, cursor),
            None => (Stretch::Nowhere, 0),
        };
        Scope {
            tape,
            floor: Cell::new(at),
            top: Cell::new(at),
            stretch: Cell::new(stretch),
            generation: Cell::new(tape.generation.load(Relaxed)),
            this_thread: PhantomData,
        }
    }

    /// The tape this scope takes from.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// tape.scope(|s| assert!(core::ptr::eq(s.tape(), &tape)));
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use]
    pub fn tape(&self) -> &'t Tape {
        self.tape
    }

    /// Takes `size` bytes aligned to `align`, like [`Tape::take`], until the scope ends.
    ///
    /// # Panics
    /// If `align` is not a power of two.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// tape.scope(|s| {
    ///     let p = s.take(100, 64).unwrap();
    ///     assert_eq!(p.as_ptr() as usize % 64, 0);
    /// });
    /// assert_eq!(tape.used(), 0);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "the bytes stay taken until the scope ends; use the pointer or don't take"]
    #[track_caller]
    pub fn take(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        check_align(align);
        if size == 0 {
            return self.tape.take(0, align);
        }
        let (floor, top) = (self.floor.get(), self.top.get());
        let extended = match self.stretch.get() {
            Stretch::Chunk => per_thread::bump_at(self.tape, floor, top, size, align),
            Stretch::Shared if self.same_generation() => {
                let (base, capacity) = (self.tape.base(), self.tape.capacity());
                self.tape.advance(|cursor| match cursor == top {
                    true => fit(base, cursor, size, align, capacity),
                    false => None,
                })
            }
            Stretch::Shared | Stretch::Nowhere => None,
        };
        let start = match extended {
            Some((start, end)) => {
                self.top.set(end);
                start
            }
            None => self.take_elsewhere(size, align)?,
        };
        Some(self.tape.at(start))
    }

    /// A take that does not extend the stretch: from the tape, starting a new stretch with it.
    #[cold]
    #[inline(never)]
    fn take_elsewhere(&self, size: usize, align: usize) -> Option<usize> {
        let (floor, top) = (self.floor.get(), self.top.get());
        // Whether this thread's chunk still stands at the stretch's top: then a chunk that
        // the take joins on to it (keeping its start) carries the stretch on.
        let at_top = self.stretch.get() == Stretch::Chunk
            && per_thread::chunk_here(self.tape).is_some_and(|(_, cursor, _)| cursor == top);
        let start = self.tape.offset_of(self.tape.take(size, align)?.as_ptr())?;
        let end = start + size;
        // From this thread's chunk (its cursor now ends the take), or else exactly at the
        // shared cursor: every take through `Tape::take` is one of the two.
        let (stretch, floor) = match per_thread::chunk_here(self.tape) {
            Some((chunk_start, cursor, _)) if chunk_start <= start && cursor == end => {
                // Joined on: the chunk reaches down to the stretch, the take lies above it,
                // and in between lie only bytes of the chunk that nobody took.
                let joined = at_top && chunk_start <= floor && start >= top;
                (Stretch::Chunk, if joined { floor } else { start })
            }
            _ => (Stretch::Shared, start),
        };
        self.stretch.set(stretch);
        self.floor.set(floor);
        self.top.set(end);
        self.generation.set(self.tape.generation.load(Relaxed));
        Some(start)
    }

    /// Whether the tape was not cleared or rewound since the stretch began.
    fn same_generation(&self) -> bool {
        self.tape.generation.load(Relaxed) == self.generation.get()
    }

    /// `Tape::resize_in_place`, keeping the stretch's top with the allocation that ends it.
    #[cfg(feature = "allocator-api2")]
    pub(super) fn resize_in_place(
        &self,
        ptr: NonNull<u8>,
        old_size: usize,
        new_size: usize,
    ) -> bool {
        if !self.tape.resize_in_place(ptr, old_size, new_size) {
            return false;
        }
        let top = self.top.get();
        let start = self
            .tape
            .offset_of(ptr.as_ptr())
            .expect("resized in place, so on the tape");
        if start + old_size == top {
            let new_top = start + new_size;
            self.top.set(new_top);
            self.floor.set(self.floor.get().min(new_top));
        }
        true
    }

    /// Takes room for `n` values of `T`, uninitialised, like [`Tape::take_slice`].
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// tape.scope(|s| {
    ///     let slots = s.take_slice::<u64>(3).unwrap();
    ///     assert_eq!(slots.len(), 3);
    /// });
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "the memory stays taken until the scope ends"]
    #[allow(clippy::mut_from_ref, reason = "every take is fresh memory")]
    pub fn take_slice<T>(&self, n: usize) -> Option<&mut [MaybeUninit<T>]> {
        typed::slice(&mut &*self, n)
    }

    /// Takes a copy of `items`, like [`Tape::take_copy`].
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// tape.scope(|s| assert_eq!(s.take_copy(&[1u8, 2]).unwrap(), &[1, 2]));
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "the memory stays taken until the scope ends"]
    #[allow(clippy::mut_from_ref, reason = "every take is fresh memory")]
    pub fn take_copy<T: Copy>(&self, items: &[T]) -> Option<&mut [T]> {
        typed::copy(&mut &*self, items)
    }

    /// Takes `n` clones of `value`, like [`Tape::take_fill`].
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// tape.scope(|s| assert_eq!(s.take_fill(3, 7u16).unwrap(), &[7, 7, 7]));
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "the memory stays taken until the scope ends"]
    #[allow(clippy::mut_from_ref, reason = "every take is fresh memory")]
    pub fn take_fill<T: Clone>(&self, n: usize, value: T) -> Option<&mut [T]> {
        typed::fill(&mut &*self, n, value)
    }

    /// Moves `value` into the scope, like [`Tape::take_value`].
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// tape.scope(|s| assert_eq!(*s.take_value(5u32).unwrap(), 5));
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "the memory stays taken until the scope ends"]
    #[allow(clippy::mut_from_ref, reason = "every take is fresh memory")]
    pub fn take_value<T>(&self, value: T) -> Option<&mut T> {
        typed::value(&mut &*self, value)
    }

    /// Takes `n` values made by `make(0)`, …, `make(n - 1)`, like [`Tape::take_fill_with`].
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// tape.scope(|s| assert_eq!(s.take_fill_with(3, |i| i).unwrap(), &[0, 1, 2]));
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "the memory stays taken until the scope ends"]
    #[allow(clippy::mut_from_ref, reason = "every take is fresh memory")]
    pub fn take_fill_with<T>(&self, n: usize, make: impl FnMut(usize) -> T) -> Option<&mut [T]> {
        typed::fill_with(&mut &*self, n, make)
    }

    /// Takes the items of an exact-size iterator, like [`Tape::take_iter`].
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// tape.scope(|s| assert_eq!(s.take_iter(1..4u8).unwrap(), &[1, 2, 3]));
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "the memory stays taken until the scope ends"]
    #[allow(clippy::mut_from_ref, reason = "every take is fresh memory")]
    pub fn take_iter<I>(&self, items: I) -> Option<&mut [I::Item]>
    where
        I: IntoIterator<IntoIter: ExactSizeIterator>,
    {
        typed::from_iter(&mut &*self, items)
    }

    /// Takes a copy of `text`, like [`Tape::take_str`].
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// tape.scope(|s| assert_eq!(s.take_str("kv").unwrap(), "kv"));
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "the memory stays taken until the scope ends"]
    #[allow(clippy::mut_from_ref, reason = "every take is fresh memory")]
    pub fn take_str(&self, text: &str) -> Option<&mut str> {
        typed::str(&mut &*self, text)
    }

    /// Takes room for `layout`, like [`Tape::take_layout`].
    ///
    /// ```
    /// use std::alloc::Layout;
    ///
    /// let tape = unimem::Tape::start(4096)?;
    /// tape.scope(|s| assert!(s.take_layout(Layout::new::<u64>()).is_some()));
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "the memory stays taken until the scope ends"]
    pub fn take_layout(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.take(layout.size(), layout.align())
    }
}

impl Drop for Scope<'_> {
    /// Gives the stretch back. Every borrow of the scope, and so every take from it, is gone
    /// by now; the stretch holds nothing else (it grows only while nothing else is taken
    /// after it), and giving back checks that nothing was taken after it since.
    fn drop(&mut self) {
        let (floor, top) = (self.floor.get(), self.top.get());
        if floor == top {
            return;
        }
        match self.stretch.get() {
            Stretch::Chunk => {
                per_thread::rewind_here(self.tape, top, floor);
            }
            Stretch::Shared if self.same_generation() => self.tape.give_back(top, floor),
            Stretch::Shared => {}
            Stretch::Nowhere => {}
        }
    }
}

// SAFETY: a scope's takes are fresh bytes of the tape (`Tape::take`'s guarantee, or its
// stretch extended with nothing of anyone else's in between), and they stay the caller's
// while the scope is borrowed: the scope gives them back only when dropped, after `'s`.
unsafe impl<'s> typed::Source<'s> for &'s Scope<'_> {
    #[inline(always)]
    fn take_bytes(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        self.take(size, align)
    }
}
