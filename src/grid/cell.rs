//! The handles to a taken cell: [`Cell`], which borrows its grid, and [`OwnedCell`], which
//! keeps it alive; and [`Plain`], the element types a cell can be viewed as.

use super::Grid;
use core::fmt;
use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};
use std::sync::Arc;

/// One cell of a [`Grid`], yours until you drop it or give it back.
///
/// Derefs to exactly `CELL` bytes, at least 64-byte aligned, and can be viewed as a slice of
/// any [`Plain`] element type with [`as_slice_of`](Cell::as_slice_of). A `Cell` can be sent to
/// another thread (it is `Send`), and it borrows its grid, so it cannot outlive it:
///
/// ```compile_fail,E0597
/// let cell = {
///     let grid = unimem::Grid::<64, 4>::new().unwrap();
///     grid.take().unwrap()
/// }; // error: `grid` does not live long enough
/// ```
///
/// For a cell that must outlive the scope it was taken in (sent to a thread from
/// `std::thread::spawn`, kept in a `'static` structure), see [`OwnedCell`] and the
/// [patterns](Grid#sharing-a-grid-between-threads) on `Grid`.
///
/// Dropping a cell returns it to its grid, whichever thread drops it.
pub struct Cell<'g, const CELL: usize, const N: usize> {
    pub(super) grid: &'g Grid<CELL, N>,
    pub(super) index: usize,
}

/// One cell of a [`Grid`] in an [`Arc`], yours until you drop it; it keeps the grid alive.
///
/// What [`Grid::take_owned`] returns: a [`Cell`] that holds a clone of the grid's `Arc`
/// instead of borrowing the grid, so it is `'static` and can go wherever an `Arc` can (a
/// thread from `std::thread::spawn`, a channel to one, a long-lived structure). It derefs to
/// the cell's `CELL` bytes and has the same views as a `Cell`. Dropping it returns the cell to
/// its grid, and the grid is freed when its last `Arc` and its last `OwnedCell` are gone.
///
/// ```
/// use std::sync::Arc;
/// use unimem::Grid;
///
/// let grid = Arc::new(Grid::<4096, 64>::new()?);
/// let mut cell = grid.take_owned().expect("a fresh grid has free cells");
/// cell.as_mut_slice_of::<f32>().fill(0.5);
/// let sum = std::thread::spawn(move || cell.as_slice_of::<f32>().iter().sum::<f32>())
///     .join()
///     .unwrap();
/// assert_eq!(sum, 512.0);
/// assert_eq!(grid.remaining(), 64); // the thread dropped the cell
/// # Ok::<(), unimem::Error>(())
/// ```
///
/// Each `OwnedCell` costs what an `Arc` clone and drop cost on top of a take and a give: an
/// atomic increment and decrement of the one counter every owned cell of the grid shares.
/// That is why a [`Stash`](crate::Stash) does not hand out owned cells: its takes and gives
/// would no longer be free of atomic operations. For a stash's speed with cells that live
/// for `'static`, put the grid in a `static` ([the patterns](Grid#sharing-a-grid-between-threads)).
pub struct OwnedCell<const CELL: usize, const N: usize> {
    pub(super) grid: Arc<Grid<CELL, N>>,
    pub(super) index: usize,
}

/// The element types a cell can be viewed as: the primitive integers and floats.
///
/// Every bit pattern of their size is a valid value, they have no padding and no pointers, and
/// their alignment is at most 16, so any bytes a cell holds (whatever another owner, a device
/// or another process wrote) read as a valid slice of them. The trait is sealed: it cannot be
/// implemented outside this crate, because a type for which one of those facts is false (a
/// `bool`, a reference, a struct with padding) would make [`Cell::as_slice_of`] unsound.
///
/// ```
/// let grid = unimem::Grid::<64, 1>::new()?;
/// let mut cell = grid.take().unwrap();
/// cell.as_mut_slice_of::<u16>()[0] = 0x0102;
/// assert_eq!(cell[..2], 0x0102u16.to_ne_bytes());
/// # Ok::<(), unimem::Error>(())
/// ```
///
/// ```compile_fail,E0277
/// let grid = unimem::Grid::<64, 1>::new().unwrap();
/// let cell = grid.take().unwrap();
/// let flags: &[bool] = cell.as_slice_of::<bool>(); // error: `bool` is not `Plain`
/// ```
pub trait Plain: Copy + Send + Sync + 'static + sealed::Sealed {}

mod sealed {
    /// Keeps [`Plain`](super::Plain) to the types this file lists.
    pub trait Sealed {}
}

macro_rules! plain {
    ($($t:ty)*) => {$(
        impl sealed::Sealed for $t {}
        impl Plain for $t {}
    )*};
}
plain!(u8 u16 u32 u64 u128 usize i8 i16 i32 i64 i128 isize f32 f64);

/// How many `T` a cell of `CELL` bytes holds; evaluating it checks, where a view is
/// instantiated, that `T` tiles the cell exactly and is no more aligned than a cell.
struct Elements<T, const CELL: usize>(core::marker::PhantomData<T>);

impl<T: Plain, const CELL: usize> Elements<T, CELL> {
    const LEN: usize = {
        assert!(
            CELL % size_of::<T>() == 0,
            "a cell of CELL bytes is not a whole number of elements of this type"
        );
        assert!(
            align_of::<T>() <= 64,
            "cells are 64-byte aligned; this element type needs more"
        );
        CELL / size_of::<T>()
    };
}

/// The methods and traits `Cell` and `OwnedCell` share, written once: each reaches its grid
/// through its `grid` field, a reference or an `Arc`.
macro_rules! cell_access {
    ($name:literal, [$($generics:tt)*] $handle:ty) => {
        impl<$($generics)* const CELL: usize, const N: usize> $handle {
            /// The cell's number in its grid, in `0..N`.
            #[inline]
            #[must_use]
            pub fn index(&self) -> usize {
                self.index
            }

            /// Where the cell starts in [`Grid::block`], in bytes: `index() × CELL`.
            #[inline]
            #[must_use]
            pub fn offset(&self) -> usize {
                self.index * CELL
            }

            /// The first byte; valid for `CELL` bytes while the cell is yours.
            #[inline]
            #[must_use]
            pub fn as_ptr(&self) -> *const u8 {
                self.grid.cell_start(self.index)
            }

            /// The first byte, for writing; valid for `CELL` bytes while the cell is yours.
            ///
            /// Whatever is written must leave every byte of the cell initialised: the cell's
            /// safe views (its `Deref` to bytes, [`as_slice_of`](Self::as_slice_of)) read
            /// every byte, yours and every later owner's. Write bytes, integers, floats, or
            /// values without padding (a `#[repr(C)]` struct with its padding spelled out as
            /// fields); a struct with padding bytes or a `MaybeUninit` that was never written
            /// leaves uninitialised bytes behind, and a safe read of them is undefined
            /// behaviour.
            ///
            /// ```
            /// #[repr(C)]
            /// #[derive(Clone, Copy)]
            /// struct Message {
            ///     tag: u8,
            ///     pad: [u8; 7], // not `value: u64` right after `tag`: no padding bytes
            ///     value: u64,
            /// }
            /// let grid = unimem::Grid::<64, 1>::new()?;
            /// let mut cell = grid.take().unwrap();
            /// let message = Message { tag: 1, pad: [0; 7], value: 2 };
            /// // SAFETY: the cell is 64-byte aligned and holds 64 bytes; `Message` has none
            /// // uninitialised.
            /// unsafe { cell.as_mut_ptr().cast::<Message>().write(message) };
            /// drop(cell);
            /// let next = grid.take().unwrap(); // reads every byte, safely
            /// assert_eq!(next.iter().map(|&b| u32::from(b)).sum::<u32>(), 3);
            /// # Ok::<(), unimem::Error>(())
            /// ```
            #[inline]
            #[must_use]
            pub fn as_mut_ptr(&mut self) -> *mut u8 {
                self.grid.cell_start(self.index)
            }

            /// The whole cell as a slice of `T`: `CELL / size_of::<T>()` elements, read from
            /// the cell's bytes in native byte order.
            ///
            /// `T` is a primitive integer or float ([`Plain`]); that `T` tiles the cell
            /// exactly and needs no more than the cell's 64-byte alignment is checked when the
            /// program is built (like the grid's parameters: by `cargo build`, not
            /// `cargo check`), so the view itself costs nothing and cannot fail.
            ///
            /// ```
            /// let grid = unimem::Grid::<4096, 8>::new()?;
            /// let mut cell = grid.take().unwrap();
            /// cell.as_mut_slice_of::<f32>()[3] = 1.5;
            /// assert_eq!(cell.as_slice_of::<f32>().len(), 1024);
            /// assert_eq!(cell.as_slice_of::<f32>()[3], 1.5);
            /// # Ok::<(), unimem::Error>(())
            /// ```
            #[inline]
            #[must_use]
            #[doc(alias = "cast_slice")]
            #[doc(alias = "view")]
            pub fn as_slice_of<T: Plain>(&self) -> &[T] {
                let len = Elements::<T, CELL>::LEN;
                // SAFETY: the cell's `CELL` bytes lie inside the block, are initialised and are
                // this handle's alone (see `Deref`); they hold exactly `len` elements of `T`,
                // and the start is 64-byte aligned (`Grid::on`), enough for `T` (checked in
                // `LEN`). Every bit pattern is a valid `T` (`Plain`).
                unsafe { core::slice::from_raw_parts(self.as_ptr().cast::<T>(), len) }
            }

            /// The whole cell as a mutable slice of `T`; see
            #[doc = concat!("[`as_slice_of`](", $name, "::as_slice_of).")]
            #[inline]
            #[must_use]
            #[doc(alias = "cast_slice_mut")]
            pub fn as_mut_slice_of<T: Plain>(&mut self) -> &mut [T] {
                let len = Elements::<T, CELL>::LEN;
                // SAFETY: as in `as_slice_of`; `&mut self` makes this the only view of the
                // bytes while the slice lives, and any `T` written is valid bytes.
                unsafe { core::slice::from_raw_parts_mut(self.as_mut_ptr().cast::<T>(), len) }
            }
        }

        impl<$($generics)* const CELL: usize, const N: usize> Deref for $handle {
            type Target = [u8];

            #[inline]
            fn deref(&self) -> &[u8] {
                // SAFETY: the cell's `CELL` bytes lie inside the block and are initialised
                // (blocks are zeroed at creation, or hold what another process wrote; safe
                // views write only initialised bytes, and writes through `as_mut_ptr` and
                // `Block::as_ptr` must, by their contracts). This
                // handle is their only owner: the bitmap hands each cell to one claimant at a
                // time, and a handle cannot be copied.
                unsafe { core::slice::from_raw_parts(self.as_ptr(), CELL) }
            }
        }

        impl<$($generics)* const CELL: usize, const N: usize> DerefMut for $handle {
            #[inline]
            fn deref_mut(&mut self) -> &mut [u8] {
                // SAFETY: as in `deref`; `&mut self` makes this the only view of the bytes for
                // as long as the slice lives.
                unsafe { core::slice::from_raw_parts_mut(self.as_mut_ptr(), CELL) }
            }
        }

        impl<$($generics)* const CELL: usize, const N: usize> AsRef<[u8]> for $handle {
            #[inline]
            fn as_ref(&self) -> &[u8] {
                self
            }
        }

        impl<$($generics)* const CELL: usize, const N: usize> AsMut<[u8]> for $handle {
            #[inline]
            fn as_mut(&mut self) -> &mut [u8] {
                self
            }
        }

        impl<$($generics)* const CELL: usize, const N: usize> Drop for $handle {
            #[inline]
            fn drop(&mut self) {
                self.grid.free.release(self.index);
            }
        }

        impl<$($generics)* const CELL: usize, const N: usize> fmt::Debug for $handle {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct($name)
                    .field("index", &self.index)
                    .field("offset", &self.offset())
                    .field("len", &CELL)
                    .field("ptr", &self.as_ptr())
                    .finish()
            }
        }
    };
}

cell_access!("Cell", ['g,] Cell<'g, CELL, N>);
cell_access!("OwnedCell", [] OwnedCell<CELL, N>);

impl<'g, const CELL: usize, const N: usize> Cell<'g, CELL, N> {
    /// The grid the cell came from, and goes back to.
    #[inline]
    #[must_use]
    pub fn grid(&self) -> &'g Grid<CELL, N> {
        self.grid
    }

    /// Gives up the handle without returning the cell: the caller now owns it.
    #[inline]
    pub(super) fn into_index(self) -> usize {
        ManuallyDrop::new(self).index
    }
}

impl<const CELL: usize, const N: usize> OwnedCell<CELL, N> {
    /// The grid the cell came from, and goes back to.
    #[inline]
    #[must_use]
    pub fn grid(&self) -> &Arc<Grid<CELL, N>> {
        &self.grid
    }
}
