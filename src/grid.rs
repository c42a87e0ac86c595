//! [`Grid`]: `N` fixed cells of `CELL` bytes in one [`Block`], taken and given back lock-free.
//!
//! The model is taught on [`Grid`] itself (this module is private). The atomic part lives in
//! `bitmap`, the per-thread pocket in `stash`.

mod bitmap;
#[cfg(all(test, loom))]
mod loom_tests;
mod stash;

use crate::block::{Block, OpenOptions};
use crate::error::Error;
use bitmap::Bitmap;
use core::fmt;
use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};
use core::ptr;

pub use stash::Stash;

/// `N` cells of `CELL` bytes in one [`Block`], taken and given back lock-free.
///
/// # The model
///
/// A grid is a [`Block`] cut into `N` equal cells plus a bitmap with one bit per cell, set
/// while the cell is free. The bitmap is an array of 64-bit atomic words, one per cache line:
///
/// - [`Grid::take`] finds a set bit and clears it with one atomic compare-and-swap on its
///   word (not `fetch_and`, which x86 runs as a slow microcoded `lock btr`). Whoever cleared
///   the bit owns the cell, and gets a [`Cell`]: a handle that derefs to the cell's bytes.
/// - Giving the cell back ([`Grid::give`], or simply dropping the `Cell`) sets the bit again
///   with one atomic `fetch_or`.
///
/// So at every moment a cell is owned by exactly one of: the grid (bit set), one `Cell` value,
/// or one [`Stash`]. Because `Cell` is neither `Clone` nor `Copy` and returns its cell when
/// dropped, a cell can be neither given twice nor lost (short of [`core::mem::forget`]), and
/// a `Cell` cannot outlive its grid. Nothing is allocated after [`Grid::new`], and there is no
/// ABA hazard: a bitmap holds no pointers or versions that a stale read could confuse.
///
/// Claiming is an acquire and returning a release, so whatever a cell's previous owner wrote
/// into it is visible to the next owner, on whichever thread.
///
/// A cell given to a grid (or a stash) it did not come from is a programmer error: `give`
/// panics with a message that says so, and the cell, dropped as the panic unwinds, goes home to
/// its own grid. Neither grid is corrupted and no cell is lost.
///
/// Each thread starts its search at its own word (threads are spread over the words as they
/// first take), so threads working on one grid touch different cache lines as long as there
/// are words enough: a grid of at least `64 × threads` cells.
///
/// # Why a stash is faster
///
/// A take+give cycle through the grid is two locked read-modify-writes on a shared word,
/// several nanoseconds each, and each moves the word's cache line to the calling core; with
/// several threads on one word, that line ping-pongs between them.
/// A [`Stash`] is a single thread's pocket of free cells: it claims 32 cells at once (with a
/// single atomic operation when one word has them, as it usually does), hands them out and takes them back with plain loads and
/// stores, and returns them half a pocket at a time, one atomic operation per word. A cycle
/// through a stash costs a nanosecond or two. (`benches/grid.rs` measures both against
/// `malloc`, `Box`, a mutex-protected free list and `mmap`.)
///
/// ```
/// use unimem::Grid;
///
/// // 256 cells of 4 KiB: 1 MiB in one block.
/// let grid = Grid::<4096, 256>::new()?;
/// let mut cell = grid.take().expect("a fresh grid has free cells");
/// cell[..5].copy_from_slice(b"frame");
/// assert_eq!(cell.len(), 4096);
/// assert_eq!(grid.free(), 255);
/// // `cell.offset()` within `grid.block()` is what a device given the block's handle needs.
/// assert!(cell.offset() + 4096 <= grid.block().len());
/// grid.give(cell); // or drop it
/// assert_eq!(grid.free(), 256);
/// # Ok::<(), unimem::Error>(())
/// ```
///
/// # Parameters
///
/// `CELL` must be a non-zero multiple of 64 (so every cell starts on a cache line), `N` must
/// be non-zero, and `CELL × N` must fit in memory; a grid that breaks a rule does not compile:
///
/// ```compile_fail,E0080
/// // error: CELL must be a multiple of 64
/// let grid = unimem::Grid::<100, 8>::new();
/// ```
///
/// Cells are at least 64-byte aligned, lie inside [`block`](Grid::block) and hold whatever
/// their last owner left in them (zeroes, when fresh).
pub struct Grid<const CELL: usize, const N: usize> {
    block: Block,
    free: Bitmap,
}

impl<const CELL: usize, const N: usize> Grid<CELL, N> {
    /// The parameter rules, checked where `new` is instantiated.
    const CHECK: () = {
        assert!(
            CELL > 0,
            "Grid<CELL, N>: CELL is 0; a cell must hold at least 64 bytes"
        );
        assert!(
            CELL % 64 == 0,
            "Grid<CELL, N>: CELL must be a multiple of 64, so that every cell starts on its own \
             cache line; round it up"
        );
        assert!(
            N > 0,
            "Grid<CELL, N>: N is 0; a grid must have at least one cell"
        );
        assert!(
            match CELL.checked_mul(N) {
                Some(bytes) => bytes <= isize::MAX as usize,
                None => false,
            },
            "Grid<CELL, N>: CELL × N overflows: no block can hold more than isize::MAX bytes"
        );
    };

    /// Opens a grid in a new lazy [`Block`], pinned where the platform can pin (see
    /// [`Block::open`]).
    ///
    /// # Errors
    /// Those of [`Block::open`]: on Linux and macOS chiefly [`Error::PinRefused`] when
    /// `CELL × N` bytes exceed what the process may lock.
    pub fn new() -> Result<Self, Error> {
        Self::with_options(&OpenOptions::new())
    }

    /// Opens a grid whose pages are all resident before it returns, so that no take ever
    /// meets a page fault.
    ///
    /// # Errors
    /// As [`new`](Grid::new).
    pub fn new_warm() -> Result<Self, Error> {
        Self::with_options(OpenOptions::new().warm(true))
    }

    /// Opens a grid in a block opened with `options`: for example an unpinned one, or one
    /// pinned only if the system allows it.
    ///
    /// ```
    /// use unimem::{Block, Grid, Pinning};
    ///
    /// let grid = Grid::<64, 1000>::with_options(Block::options().pinning(Pinning::BestEffort))?;
    /// assert_eq!(grid.capacity(), 1000);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    ///
    /// # Errors
    /// Those of [`OpenOptions::open`].
    pub fn with_options(options: &OpenOptions) -> Result<Self, Error> {
        let () = Self::CHECK;
        let block = options.open(CELL * N)?;
        Ok(Grid {
            block,
            free: Bitmap::all_free(N),
        })
    }

    /// Takes a free cell, or `None` if every cell is out. Lock-free, and a single atomic
    /// operation when there is no contention.
    ///
    /// The cell holds what its last owner wrote (zeroes, when fresh). It goes back to the grid
    /// when dropped, or through [`give`](Grid::give).
    ///
    /// `None` means the search found every word empty; a cell given back behind the search
    /// while it ran may be missed.
    #[inline]
    pub fn take(&self) -> Option<Cell<'_, CELL, N>> {
        let index = self.free.claim_one(self.thread_start_word())?;
        Some(Cell { grid: self, index })
    }

    /// Gives `cell` back, for when that reads better than dropping it.
    ///
    /// # Panics
    /// If `cell` came from a different grid. Nothing is lost or corrupted: the cell goes home
    /// to its own grid as it is dropped during the unwinding.
    #[inline]
    #[track_caller]
    pub fn give(&self, cell: Cell<'_, CELL, N>) {
        self.check_home(&cell, "Grid");
        drop(cell);
    }

    /// A pocket of free cells for one thread: see [`Stash`].
    pub fn stash(&self) -> Stash<'_, CELL, N> {
        Stash::new(self)
    }

    /// How many cells are in the grid now: not taken, and not held by a [`Stash`]. Exact
    /// when no other thread takes or gives meanwhile. It reads every word of the bitmap, so
    /// keep it off hot paths.
    pub fn free(&self) -> usize {
        self.free.count()
    }

    /// How many cells the grid has: `N`.
    #[inline]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// The block the cells live in: for its [`handle`](Block::handle), which together with
    /// [`Cell::offset`] tells a device where a cell is.
    #[inline]
    pub fn block(&self) -> &Block {
        &self.block
    }

    /// The bitmap word this thread searches first.
    #[inline]
    fn thread_start_word(&self) -> usize {
        let words = N.div_ceil(bitmap::BITS);
        if words == 1 {
            0
        } else {
            thread_start::word(words)
        }
    }

    /// Panics unless `cell` came from this grid.
    #[inline]
    #[track_caller]
    fn check_home(&self, cell: &Cell<'_, CELL, N>, what: &str) {
        assert!(
            ptr::eq(self, cell.grid),
            "cell {} was taken from a different Grid (at {:p}) than the {what} it was given \
             to (whose grid is at {:p}); give a cell back to the grid it came from, or simply \
             drop it: a dropped cell returns to its own grid",
            cell.index,
            cell.grid,
            self,
        );
    }
}

impl<const CELL: usize, const N: usize> fmt::Debug for Grid<CELL, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grid")
            .field("cell", &CELL)
            .field("capacity", &N)
            .field("free", &self.free())
            .field("block", &self.block)
            .finish()
    }
}

/// Where each thread starts its search: threads are dealt out over the words as they first
/// take, so that two threads begin on different cache lines.
#[cfg(not(loom))]
mod thread_start {
    use core::cell::Cell;
    // Not the model-checked atomics: which word a thread starts at never matters for
    // correctness, only for speed.
    use core::sync::atomic::{AtomicU32, Ordering};

    std::thread_local! {
        /// This thread's place on a circle of 2³² points; 0 until its first take.
        static PLACE: Cell<u32> = const { Cell::new(0) };
    }

    /// Threads that have taken so far, plus one.
    static THREADS: AtomicU32 = AtomicU32::new(1);

    /// Thread `k` sits at `k × 2³²/φ`: consecutive threads land 0.38 or 0.62 of the way round
    /// from each other, so with three words or more they never share a first word.
    const GOLDEN: u32 = 0x9E37_79B9;

    /// This thread's first word among `words`.
    #[inline]
    pub(super) fn word(words: usize) -> usize {
        let place = PLACE.with(|place| match place.get() {
            0 => {
                let fresh = THREADS.fetch_add(1, Ordering::Relaxed).wrapping_mul(GOLDEN);
                place.set(fresh);
                fresh
            }
            known => known,
        });
        // `place / 2³²` of the way through the words, without a division.
        ((u128::from(place) * words as u128) >> 32) as usize
    }
}

/// Under loom every thread starts at the first word: loom replays each execution from the
/// start, and a hint kept outside the model would differ between replays.
#[cfg(loom)]
mod thread_start {
    #[inline]
    pub(super) fn word(_words: usize) -> usize {
        0
    }
}

/// One cell of a [`Grid`], yours until you drop it or give it back.
///
/// Derefs to exactly `CELL` bytes, at least 64-byte aligned. A `Cell` can be sent to another
/// thread (it is `Send`), and it borrows its grid, so it cannot outlive it:
///
/// ```compile_fail,E0597
/// let cell = {
///     let grid = unimem::Grid::<64, 4>::new().unwrap();
///     grid.take().unwrap()
/// }; // error: `grid` does not live long enough
/// ```
///
/// Dropping a cell returns it to its grid, whichever thread drops it.
pub struct Cell<'g, const CELL: usize, const N: usize> {
    grid: &'g Grid<CELL, N>,
    index: usize,
}

impl<'g, const CELL: usize, const N: usize> Cell<'g, CELL, N> {
    /// The cell's number in its grid, in `0..N`.
    #[inline]
    pub fn index(&self) -> usize {
        self.index
    }

    /// Where the cell starts in [`Grid::block`], in bytes: `index() × CELL`.
    #[inline]
    pub fn offset(&self) -> usize {
        self.index * CELL
    }

    /// The first byte; valid for `CELL` bytes while the cell is yours.
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.start()
    }

    /// The first byte, for writing; valid for `CELL` bytes while the cell is yours.
    #[inline]
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.start()
    }

    /// The grid the cell came from, and goes back to.
    #[inline]
    pub fn grid(&self) -> &'g Grid<CELL, N> {
        self.grid
    }

    #[inline]
    fn start(&self) -> *mut u8 {
        // SAFETY: `index < N` and the block holds at least `CELL × N` bytes, so the cell lies
        // inside the block's allocation.
        unsafe { self.grid.block.as_ptr().add(self.offset()) }
    }

    /// Gives up the handle without returning the cell: the caller now owns it.
    #[inline]
    fn into_index(self) -> usize {
        ManuallyDrop::new(self).index
    }
}

impl<const CELL: usize, const N: usize> Deref for Cell<'_, CELL, N> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: the cell's `CELL` bytes lie inside the block (see `start`) and are
        // initialised (the block is zeroed at creation). This `Cell` is their only owner: the
        // bitmap hands each cell to one claimant at a time, and a `Cell` cannot be copied.
        unsafe { core::slice::from_raw_parts(self.start(), CELL) }
    }
}

impl<const CELL: usize, const N: usize> DerefMut for Cell<'_, CELL, N> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only view of the bytes for as
        // long as the slice lives.
        unsafe { core::slice::from_raw_parts_mut(self.start(), CELL) }
    }
}

impl<const CELL: usize, const N: usize> AsRef<[u8]> for Cell<'_, CELL, N> {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl<const CELL: usize, const N: usize> AsMut<[u8]> for Cell<'_, CELL, N> {
    #[inline]
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl<const CELL: usize, const N: usize> Drop for Cell<'_, CELL, N> {
    #[inline]
    fn drop(&mut self) {
        self.grid.free.release(self.index);
    }
}

impl<const CELL: usize, const N: usize> fmt::Debug for Cell<'_, CELL, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cell")
            .field("index", &self.index)
            .field("offset", &self.offset())
            .field("len", &CELL)
            .field("ptr", &self.as_ptr())
            .finish()
    }
}
