//! Short names for collections on a tape, collecting into them, and [`tape_vec!`]: what
//! bumpalo's users are used to, over [`allocator_api2`] (feature `allocator-api2`).

use super::Tape;
use allocator_api2::boxed::Box;
use allocator_api2::collections::TryReserveError;
use allocator_api2::vec::Vec;
use core::borrow::{Borrow, BorrowMut};
use core::fmt;
use core::hash::{Hash, Hasher};
use core::ops::{Deref, DerefMut};

/// A growable array whose elements live on a tape: allocator-api2's `Vec` with `&'t Tape` as
/// its allocator. It borrows the tape, so the tape cannot be cleared while it lives; dropping
/// it runs its elements' destructors but gives no memory back (the next clear does).
///
/// A tape collection that outgrows its tape does what `std`'s collections do when memory runs
/// out: allocator-api2 calls `handle_alloc_error`, which aborts the process. Where the tape
/// may be too small, grow with `try_reserve` first (or collect with
/// [`Tape::try_collect_vec`]), which answer with an error instead.
///
/// ```
/// use unimem::{Tape, TapeVec};
///
/// let tape = Tape::start(1 << 16)?;
/// let mut xs: TapeVec<'_, u32> = TapeVec::new_in(&tape);
/// xs.extend([3, 1, 2]);
/// xs.sort();
/// assert_eq!(xs, [1, 2, 3]);
/// assert!(tape.owns(xs.as_ptr()));
/// # Ok::<(), unimem::Error>(())
/// ```
pub type TapeVec<'t, T> = Vec<T, &'t Tape>;

/// A value on a tape behind an owning pointer: allocator-api2's `Box` with `&'t Tape` as its
/// allocator.
///
/// ```
/// use unimem::{Tape, TapeBox};
///
/// let tape = Tape::start(4096)?;
/// let boxed: TapeBox<'_, [u8; 64]> = TapeBox::new_in([7; 64], &tape);
/// assert_eq!(boxed[63], 7);
/// assert!(tape.owns(&*boxed));
/// # Ok::<(), unimem::Error>(())
/// ```
pub type TapeBox<'t, T> = Box<T, &'t Tape>;

/// A growable UTF-8 string on a tape: `std`'s `String`, with its bytes in a [`TapeVec`].
///
/// It dereferences to `str`, writes with `write!` ([`fmt::Write`]), and borrows as `str`, so
/// it works as a `hashbrown` map key looked up by `&str`.
///
/// ```
/// use core::fmt::Write;
/// use unimem::{Tape, TapeString};
///
/// let tape = Tape::start(4096)?;
/// let mut name = TapeString::from_str_in("layer", &tape);
/// write!(name, ".{}", 3).unwrap();
/// name.push('!');
/// assert_eq!(name, "layer.3!");
/// assert!(name.starts_with("layer"));
/// # Ok::<(), unimem::Error>(())
/// ```
#[derive(Clone)]
pub struct TapeString<'t> {
    /// Always valid UTF-8.
    bytes: TapeVec<'t, u8>,
}

impl<'t> TapeString<'t> {
    /// An empty string that takes nothing until it grows.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let s = unimem::TapeString::new_in(&tape);
    /// assert!(s.is_empty());
    /// assert_eq!(tape.used(), 0);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use]
    pub fn new_in(tape: &'t Tape) -> TapeString<'t> {
        TapeString {
            bytes: Vec::new_in(tape),
        }
    }

    /// An empty string with room for `capacity` bytes. If the tape cannot fit them, the
    /// process aborts, as with every allocation of a tape collection (see [`TapeVec`]):
    /// [`try_reserve`](TapeString::try_reserve) answers with an error instead.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let s = unimem::TapeString::with_capacity_in(100, &tape);
    /// assert!(s.capacity() >= 100);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use]
    pub fn with_capacity_in(capacity: usize, tape: &'t Tape) -> TapeString<'t> {
        TapeString {
            bytes: Vec::with_capacity_in(capacity, tape),
        }
    }

    /// A copy of `text` on the tape.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let s = unimem::TapeString::from_str_in("weights", &tape);
    /// assert_eq!(s.as_str(), "weights");
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use]
    pub fn from_str_in(text: &str, tape: &'t Tape) -> TapeString<'t> {
        let mut s = TapeString::with_capacity_in(text.len(), tape);
        s.push_str(text);
        s
    }

    /// Makes room for at least `additional` more bytes, or says why it cannot: the tape is
    /// full (or the size overflows). Nothing changes on an error.
    ///
    /// # Errors
    /// When the tape cannot fit the string's new size.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let mut s = unimem::TapeString::new_in(&tape);
    /// assert!(s.try_reserve(100).is_ok());
    /// assert!(s.try_reserve(1 << 20).is_err()); // larger than the tape
    /// # Ok::<(), unimem::Error>(())
    /// ```
    pub fn try_reserve(&mut self, additional: usize) -> Result<(), TryReserveError> {
        self.bytes.try_reserve(additional)
    }

    /// Appends `text`.
    #[inline]
    pub fn push_str(&mut self, text: &str) {
        self.bytes.extend_from_slice(text.as_bytes());
    }

    /// Appends `c`.
    #[inline]
    pub fn push(&mut self, c: char) {
        self.push_str(c.encode_utf8(&mut [0; 4]));
    }

    /// The string as a `str`.
    #[inline]
    #[must_use]
    pub fn as_str(&self) -> &str {
        // SAFETY: `bytes` only ever receives whole UTF-8 strings (`push_str`, `push`), and is
        // only shortened by `clear`; no method hands out its bytes for writing.
        unsafe { core::str::from_utf8_unchecked(&self.bytes) }
    }

    /// The string as a `&mut str`, which can only be changed into another valid string.
    #[inline]
    #[must_use]
    pub fn as_mut_str(&mut self) -> &mut str {
        // SAFETY: as in `as_str`; a `&mut str` keeps its contents valid UTF-8.
        unsafe { core::str::from_utf8_unchecked_mut(&mut self.bytes) }
    }

    /// Bytes the string holds without growing.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Empties the string, keeping its room.
    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    /// The bytes, as a [`TapeVec`].
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let bytes = unimem::TapeString::from_str_in("ab", &tape).into_bytes();
    /// assert_eq!(bytes, b"ab");
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use]
    pub fn into_bytes(self) -> TapeVec<'t, u8> {
        self.bytes
    }

    /// The string as a `&mut str` that lives as long as the tape's borrow, like
    /// [`Tape::take_str`]: its bytes stay where they are until the tape is cleared.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let mut s = unimem::TapeString::new_in(&tape);
    /// s.push_str("kept");
    /// let kept: &str = s.into_str();
    /// assert_eq!(kept, "kept");
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use]
    pub fn into_str(self) -> &'t mut str {
        let bytes: &'t mut [u8] = self.bytes.leak();
        // SAFETY: as in `as_str`.
        unsafe { core::str::from_utf8_unchecked_mut(bytes) }
    }
}

impl Deref for TapeString<'_> {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl DerefMut for TapeString<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut str {
        self.as_mut_str()
    }
}

impl AsRef<str> for TapeString<'_> {
    fn as_ref(&self) -> &str {
        self
    }
}

impl Borrow<str> for TapeString<'_> {
    fn borrow(&self) -> &str {
        self
    }
}

impl BorrowMut<str> for TapeString<'_> {
    fn borrow_mut(&mut self) -> &mut str {
        self
    }
}

impl fmt::Write for TapeString<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.push_str(text);
        Ok(())
    }
}

impl fmt::Display for TapeString<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for TapeString<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for TapeString<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for TapeString<'_> {}

impl PartialEq<str> for TapeString<'_> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for TapeString<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialOrd for TapeString<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TapeString<'_> {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for TapeString<'_> {
    /// As `str` hashes, so that `Borrow<str>` look-ups find it.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Extend<char> for TapeString<'_> {
    fn extend<I: IntoIterator<Item = char>>(&mut self, iter: I) {
        iter.into_iter().for_each(|c| self.push(c));
    }
}

impl<'a> Extend<&'a str> for TapeString<'_> {
    fn extend<I: IntoIterator<Item = &'a str>>(&mut self, iter: I) {
        iter.into_iter().for_each(|text| self.push_str(text));
    }
}

/// A collection on a tape that can be built from an iterator: [`FromIterator`] with the tape
/// to build on. [`CollectIn::collect_in`] is how it is called.
pub trait FromIteratorIn<'t, T>: Sized {
    /// Builds the collection on `tape` from `iter`.
    fn from_iter_in<I: IntoIterator<Item = T>>(iter: I, tape: &'t Tape) -> Self;
}

impl<'t, T> FromIteratorIn<'t, T> for TapeVec<'t, T> {
    fn from_iter_in<I: IntoIterator<Item = T>>(iter: I, tape: &'t Tape) -> Self {
        let mut xs = Vec::new_in(tape);
        xs.extend(iter);
        xs
    }
}

impl<'t> FromIteratorIn<'t, char> for TapeString<'t> {
    fn from_iter_in<I: IntoIterator<Item = char>>(iter: I, tape: &'t Tape) -> Self {
        let mut s = TapeString::new_in(tape);
        s.extend(iter);
        s
    }
}

impl<'t, 'a> FromIteratorIn<'t, &'a str> for TapeString<'t> {
    fn from_iter_in<I: IntoIterator<Item = &'a str>>(iter: I, tape: &'t Tape) -> Self {
        let mut s = TapeString::new_in(tape);
        s.extend(iter);
        s
    }
}

/// `collect`, onto a tape: `iter.collect_in::<TapeVec<_>>(&tape)`.
///
/// ```
/// use unimem::{CollectIn, Tape, TapeString, TapeVec};
///
/// let tape = Tape::start(4096)?;
/// let squares: TapeVec<'_, u64> = (1..=4).map(|x| x * x).collect_in(&tape);
/// assert_eq!(squares, [1, 4, 9, 16]);
/// let word: TapeString<'_> = ['t', 'a', 'p', 'e'].into_iter().collect_in(&tape);
/// assert_eq!(word, "tape");
/// # Ok::<(), unimem::Error>(())
/// ```
pub trait CollectIn: Iterator + Sized {
    /// Collects the iterator into `C`, built on `tape`.
    fn collect_in<'t, C: FromIteratorIn<'t, Self::Item>>(self, tape: &'t Tape) -> C {
        C::from_iter_in(self, tape)
    }
}

impl<I: Iterator> CollectIn for I {}

impl Tape {
    /// Collects `iter` into a [`TapeVec`] on this tape: `collect`, with the tape as the place.
    /// Room for the iterator's lower size bound is taken first; past it the vector grows as
    /// any tape collection does: in place where the tape allows it (see the
    /// [`Allocator`](allocator_api2::alloc::Allocator) impl for `&Tape`), otherwise by
    /// moving, which leaves the old copy taken until the tape is cleared. If the tape cannot
    /// fit the elements the process aborts, as with every allocation of a tape collection
    /// (see [`TapeVec`]); [`try_collect_vec`](Tape::try_collect_vec) answers with an error
    /// instead.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// let evens = tape.collect_vec((0..10u32).filter(|x| x % 2 == 0));
    /// assert_eq!(evens, [0, 2, 4, 6, 8]);
    /// assert!(tape.owns(evens.as_ptr()));
    /// # Ok::<(), unimem::Error>(())
    /// ```
    pub fn collect_vec<I: IntoIterator>(&self, iter: I) -> TapeVec<'_, I::Item> {
        TapeVec::from_iter_in(iter, self)
    }

    /// [`collect_vec`](Tape::collect_vec), or an error when the tape cannot fit the elements.
    /// The elements collected so far are dropped; what they took stays taken until the tape
    /// is cleared.
    ///
    /// # Errors
    /// When the tape cannot fit the vector's next size.
    ///
    /// ```
    /// let tape = unimem::Tape::start(4096)?;
    /// assert!(tape.try_collect_vec(0..100u32).is_ok());
    /// assert!(tape.try_collect_vec(0..1_000_000u32).is_err()); // 4 MB on a 4 KiB tape
    /// # Ok::<(), unimem::Error>(())
    /// ```
    pub fn try_collect_vec<I: IntoIterator>(
        &self,
        iter: I,
    ) -> Result<TapeVec<'_, I::Item>, TryReserveError> {
        let iter = iter.into_iter();
        let mut xs = Vec::new_in(self);
        xs.try_reserve(iter.size_hint().0)?;
        for x in iter {
            if xs.len() == xs.capacity() {
                xs.try_reserve(1)?;
            }
            xs.push(x);
        }
        Ok(xs)
    }
}

/// `vec!` for a tape (or any allocator-api2 allocator): `tape_vec![in &tape; 1, 2, 3]`,
/// `tape_vec![in &tape; 0.0f32; 256]`, `tape_vec![in &tape]`.
///
/// allocator-api2's own `vec![in &tape; 1, 2, 3]` does not compile (0.2.21): its list form
/// names `Box::<[_]>::into_vec`, which fills in the box's allocator parameter with its
/// default, `Global`, so any other allocator is a mismatched type (E0308). Its
/// `vec![in &tape; value; n]` form works; this macro offers both, with the same syntax.
///
/// ```
/// use unimem::{Tape, tape_vec};
///
/// let tape = Tape::start(4096)?;
/// let xs = tape_vec![in &tape; 1u32, 2, 3];
/// let zeros = tape_vec![in &tape; 0.0f32; 8];
/// let mut empty = tape_vec![in &tape];
/// empty.push("grows on the tape");
/// assert_eq!((xs.len(), zeros.len(), empty.len()), (3, 8, 1));
/// assert!(tape.owns(xs.as_ptr()));
/// # Ok::<(), unimem::Error>(())
/// ```
#[macro_export]
#[cfg_attr(docsrs, doc(cfg(feature = "allocator-api2")))]
macro_rules! tape_vec {
    (in $alloc:expr $(;)?) => {
        $crate::allocator_api2::vec::Vec::new_in($alloc)
    };
    (in $alloc:expr; $elem:expr; $n:expr) => {{
        let n: usize = $n;
        let mut xs = $crate::allocator_api2::vec::Vec::with_capacity_in(n, $alloc);
        xs.resize(n, $elem);
        xs
    }};
    (in $alloc:expr; $($x:expr),+ $(,)?) => {{
        let items = [$($x),+];
        let mut xs = $crate::allocator_api2::vec::Vec::with_capacity_in(items.len(), $alloc);
        xs.extend(items);
        xs
    }};
}
