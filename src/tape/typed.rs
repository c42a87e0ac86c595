//! The typed takes, written once for both [`Tape`] and [`Lane`](super::Lane).

use super::Tape;
use core::alloc::Layout;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};

/// Something that hands out fresh bytes that stay valid, and nobody else's, for `'t`.
///
/// # Safety
/// `take_bytes` returns `None` or a pointer valid for reads and writes of `size` bytes,
/// aligned to `align`, that nothing else reads or writes while `'t` lasts.
pub(super) unsafe trait Source<'t> {
    /// Takes `size > 0` bytes aligned to `align`, a power of two.
    fn take_bytes(&mut self, size: usize, align: usize) -> Option<NonNull<u8>>;
}

// SAFETY: `Tape::take` never hands out a byte twice until a clear or rewind, which needs
// `&mut Tape` and so cannot happen while the `&'t Tape` lives.
unsafe impl<'t> Source<'t> for &'t Tape {
    #[inline(always)]
    fn take_bytes(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        self.take(size, align)
    }
}

/// Room for `n` values of `T`. `None` when it does not fit or its size overflows; zero bytes
/// always succeed without touching the source.
#[inline]
pub(super) fn slice<'t, T>(
    source: &mut impl Source<'t>,
    n: usize,
) -> Option<&'t mut [MaybeUninit<T>]> {
    let layout = Layout::array::<T>(n).ok()?;
    let ptr = match layout.size() {
        0 => NonNull::<T>::dangling().cast(),
        size => source.take_bytes(size, layout.align())?,
    };
    // SAFETY: `ptr` is non-null and aligned for `T`; for a non-zero size it is valid for
    // `n * size_of::<T>()` bytes that are ours alone for `'t` (the `Source` contract), which
    // `Layout::array` kept within `isize::MAX`. `MaybeUninit` needs no initialisation.
    Some(unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr().cast(), n) })
}

/// A copy of `items`.
#[inline]
pub(super) fn copy<'t, T: Copy>(source: &mut impl Source<'t>, items: &[T]) -> Option<&'t mut [T]> {
    let slots = slice::<T>(source, items.len())?;
    // SAFETY: `slots` is fresh memory of exactly `items.len()` elements, so it cannot overlap
    // `items`; `T: Copy`, so a bitwise copy is a valid value.
    unsafe {
        ptr::copy_nonoverlapping(items.as_ptr(), slots.as_mut_ptr().cast(), items.len());
        Some(assume_init(slots))
    }
}

/// `n` clones of `value`.
#[inline]
pub(super) fn fill<'t, T: Clone>(
    source: &mut impl Source<'t>,
    n: usize,
    value: T,
) -> Option<&'t mut [T]> {
    let slots = slice::<T>(source, n)?;
    if let Some((last, rest)) = slots.split_last_mut() {
        for slot in rest {
            slot.write(value.clone());
        }
        last.write(value);
    }
    // SAFETY: every slot was written above. (Should a `clone` panic, the slots written so far
    // are simply never read: tape memory is never dropped.)
    Some(unsafe { assume_init(slots) })
}

/// `value`, moved onto the tape.
#[inline]
pub(super) fn value<'t, T>(source: &mut impl Source<'t>, value: T) -> Option<&'t mut T> {
    let slot = &mut slice::<T>(source, 1)?[0];
    Some(slot.write(value))
}

/// # Safety
/// Every element of `slots` is initialised.
#[inline(always)]
unsafe fn assume_init<T>(slots: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: `MaybeUninit<T>` has the layout of `T`, and the caller promises every element is
    // initialised.
    unsafe { &mut *(ptr::from_mut(slots) as *mut [T]) }
}
