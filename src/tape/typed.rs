//! The typed takes, written once for both [`Tape`] and [`Lane`].

use super::{Lane, Tape};
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

/// `n` values, the `i`th made by `make(i)`, in order.
#[inline]
pub(super) fn fill_with<'t, T>(
    source: &mut impl Source<'t>,
    n: usize,
    mut make: impl FnMut(usize) -> T,
) -> Option<&'t mut [T]> {
    let slots = slice::<T>(source, n)?;
    for (i, slot) in slots.iter_mut().enumerate() {
        slot.write(make(i));
    }
    // SAFETY: every slot was written above. Should `make` panic, the slice is never returned,
    // and the slots written so far are never read or dropped: tape memory is never dropped.
    Some(unsafe { assume_init(slots) })
}

/// The items of `items`, at most as many as its `len()` said, in order: fewer if it ends
/// sooner. A `len()` that lies costs room, never soundness.
#[inline]
pub(super) fn from_iter<'t, I>(source: &mut impl Source<'t>, items: I) -> Option<&'t mut [I::Item]>
where
    I: IntoIterator<IntoIter: ExactSizeIterator>,
{
    let mut items = items.into_iter();
    let slots = slice::<I::Item>(source, items.len())?;
    let mut written = 0;
    for slot in slots.iter_mut() {
        let Some(item) = items.next() else { break };
        slot.write(item);
        written += 1;
    }
    // SAFETY: the first `written` slots were written, one by one, just above. (A panic in
    // `next` returns nothing, as in `fill_with`.)
    Some(unsafe { assume_init(&mut slots[..written]) })
}

/// A copy of `text`.
#[inline]
pub(super) fn str<'t>(source: &mut impl Source<'t>, text: &str) -> Option<&'t mut str> {
    let bytes = copy(source, text.as_bytes())?;
    // SAFETY: a byte-for-byte copy of a `str` is as valid UTF-8 as the `str` was.
    Some(unsafe { core::str::from_utf8_unchecked_mut(bytes) })
}

/// The same on a lane: each result borrows the tape, not the lane, as the lane's other takes.
impl<'t> Lane<'t> {
    /// Takes `n` values made by `make(0)`, …, `make(n - 1)`, like [`Tape::take_fill_with`].
    ///
    /// ```
    /// let tape = unimem::Tape::start(1 << 20)?;
    /// let mut lane = tape.lane();
    /// let xs = lane.take_fill_with(4, |i| i as f32 * 0.5).unwrap();
    /// assert_eq!(xs, &[0.0, 0.5, 1.0, 1.5]);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "dropping the slice leaves its room taken until the tape is cleared"]
    #[doc(alias = "alloc_slice_fill_with")]
    pub fn take_fill_with<T>(
        &mut self,
        n: usize,
        make: impl FnMut(usize) -> T,
    ) -> Option<&'t mut [T]> {
        fill_with(self, n, make)
    }

    /// Takes the items of an exact-size iterator, like [`Tape::take_iter`], lying `len()`
    /// included.
    ///
    /// ```
    /// let tape = unimem::Tape::start(1 << 20)?;
    /// let mut lane = tape.lane();
    /// let ids = lane.take_iter((0..4u16).rev()).unwrap();
    /// assert_eq!(ids, &[3, 2, 1, 0]);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "dropping the slice leaves its room taken until the tape is cleared"]
    #[doc(
        alias = "alloc_slice_fill_iter",
        alias = "from_iter",
        alias = "collect"
    )]
    pub fn take_iter<I>(&mut self, items: I) -> Option<&'t mut [I::Item]>
    where
        I: IntoIterator<IntoIter: ExactSizeIterator>,
    {
        from_iter(self, items)
    }

    /// Takes a copy of `text`, like [`Tape::take_str`].
    ///
    /// ```
    /// let tape = unimem::Tape::start(1 << 20)?;
    /// let mut lane = tape.lane();
    /// let s = lane.take_str("héllo").unwrap();
    /// assert_eq!(s, "héllo");
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "dropping the string leaves its room taken until the tape is cleared"]
    #[doc(alias = "alloc_str")]
    pub fn take_str(&mut self, text: &str) -> Option<&'t mut str> {
        str(self, text)
    }

    /// Takes room for `layout`, like [`Tape::take_layout`].
    ///
    /// ```
    /// use std::alloc::Layout;
    ///
    /// let tape = unimem::Tape::start(1 << 20)?;
    /// let mut lane = tape.lane();
    /// let p = lane.take_layout(Layout::from_size_align(100, 64).unwrap()).unwrap();
    /// assert_eq!(p.as_ptr() as usize % 64, 0);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "dropping the pointer leaves its room taken until the tape is cleared"]
    #[doc(alias = "alloc", alias = "alloc_layout")]
    pub fn take_layout(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.take(layout.size(), layout.align())
    }
}
