//! [`Grid`]: `N` fixed cells of `CELL` bytes in one [`Block`], taken and given back lock-free.
//!
//! The model is taught on [`Grid`] itself (this module is private). The atomic part lives in
//! `bitmap`, the per-thread pocket in `stash`, the handles to a taken cell in `cell`.

mod bitmap;
mod cell;
#[cfg(all(test, loom))]
mod loom_tests;
mod stash;

use crate::block::{Block, OpenOptions};
use crate::error::Error;
use bitmap::Bitmap;
use core::fmt;
use core::ptr;
use std::sync::Arc;

pub use cell::{Cell, OwnedCell, Plain};
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
/// So at every moment a cell is owned by exactly one of: the grid (bit set), one `Cell` (or
/// [`OwnedCell`]) value, or one [`Stash`]. Because a cell handle is neither `Clone` nor `Copy`
/// and returns its cell when dropped, a cell can be neither given twice nor lost (short of
/// [`core::mem::forget`]), and a cell cannot outlive its grid. Nothing is allocated after the
/// grid is made, and there is no ABA hazard: a bitmap holds no pointers or versions that a
/// stale read could confuse.
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
/// single atomic operation when one word has them, as it usually does), hands them out and
/// takes them back with plain loads and stores, and returns them half a pocket at a time, one
/// atomic operation per word. A cycle through a stash costs a nanosecond or two.
/// (`benches/grid.rs` measures both against `malloc`, `Box`, a mutex-protected free list and
/// `mmap`.)
///
/// ```
/// use unimem::Grid;
///
/// // 256 cells of 4 KiB: 1 MiB in one block.
/// let grid = Grid::<4096, 256>::new()?;
/// let mut cell = grid.take().expect("a fresh grid has free cells");
/// cell[..5].copy_from_slice(b"frame");
/// assert_eq!(cell.len(), 4096);
/// assert_eq!((grid.remaining(), grid.used()), (255, 1));
/// // `cell.offset()` within `grid.block()` is what a device given the block's handle needs.
/// assert!(cell.offset() + 4096 <= grid.block().len());
/// grid.give(cell); // or drop it
/// assert_eq!(grid.remaining(), 256);
/// # Ok::<(), unimem::Error>(())
/// ```
///
/// # Typed cells
///
/// A cell is bytes, and a slice of any primitive integer or float ([`Plain`]) over the same
/// bytes, with no copy and no `unsafe`:
///
/// ```
/// let grid = unimem::Grid::<4096, 16>::new()?;
/// let mut cell = grid.take().unwrap();
/// let samples: &mut [f32] = cell.as_mut_slice_of::<f32>(); // 1024 samples
/// samples.iter_mut().enumerate().for_each(|(i, x)| *x = i as f32);
/// assert_eq!(cell.as_slice_of::<f32>()[1023], 1023.0);
/// assert_eq!(cell.as_slice_of::<u16>().len(), 2048); // the same bytes, seen as u16
/// # Ok::<(), unimem::Error>(())
/// ```
///
/// # Sharing a grid between threads
///
/// A [`Cell`] borrows its grid, so a grid shared with `std::thread::spawn` (whose closures
/// must be `'static`) needs one of three patterns:
///
/// **Scoped threads** borrow the grid from the stack; cells and stashes go to the threads as
/// they are, and the scope ends before the grid is dropped:
///
/// ```
/// use unimem::Grid;
///
/// let grid = Grid::<1024, 64>::new()?;
/// std::thread::scope(|s| {
///     for worker in 0..4u8 {
///         let grid = &grid;
///         s.spawn(move || {
///             let mut stash = grid.stash();
///             let mut cell = stash.take().expect("16 cells a worker");
///             cell.fill(worker);
///             stash.give(cell);
///         });
///     }
/// });
/// assert_eq!(grid.remaining(), 64);
/// # Ok::<(), unimem::Error>(())
/// ```
///
/// **A `static` grid** lives as long as the program, so its cells and stashes are `'static`
/// and go anywhere, at a stash's full speed. Make it in a [`LazyLock`](std::sync::LazyLock)
/// (or a [`OnceLock`](std::sync::OnceLock) to handle the error), or leak one with
/// [`Box::leak`]:
///
/// ```
/// use std::sync::LazyLock;
/// use unimem::{Cell, Grid};
///
/// static FRAMES: LazyLock<Grid<4096, 64>> =
///     LazyLock::new(|| Grid::new().expect("a grid of 256 KiB"));
///
/// let (send, receive) = std::sync::mpsc::channel::<Cell<'static, 4096, 64>>();
/// let consumer = std::thread::spawn(move || {
///     receive.iter().map(|cell| cell.as_slice_of::<u32>()[0]).sum::<u32>()
/// });
/// let mut stash = FRAMES.stash();
/// for n in 1..=10 {
///     let mut cell = stash.take().expect("free cells");
///     cell.as_mut_slice_of::<u32>()[0] = n;
///     send.send(cell).unwrap();
/// }
/// drop(send);
/// assert_eq!(consumer.join().unwrap(), 55);
/// ```
///
/// **An `Arc<Grid>`** is dropped when its last user is done: [`Grid::take_owned`] gives an
/// [`OwnedCell`] that holds a clone of the `Arc`, so it is `'static` and keeps the grid alive.
/// It costs one atomic increment and decrement of the `Arc`'s counter per cell, which is why
/// stashes do not hand out owned cells (see [`OwnedCell`]).
///
/// ```
/// use std::sync::Arc;
/// use unimem::Grid;
///
/// let grid = Arc::new(Grid::<4096, 64>::new()?);
/// let workers: Vec<_> = (0..4u8)
///     .map(|worker| {
///         let mut cell = grid.take_owned().expect("free cells");
///         std::thread::spawn(move || {
///             cell.fill(worker);
///             cell // sent back to the spawning thread, still owned
///         })
///     })
///     .collect();
/// for (worker, handle) in workers.into_iter().enumerate() {
///     assert!(handle.join().unwrap().iter().all(|&byte| byte == worker as u8));
/// }
/// assert_eq!(grid.remaining(), 64);
/// # Ok::<(), unimem::Error>(())
/// ```
///
/// # Parameters
///
/// `CELL` must be a non-zero multiple of 64 (so every cell starts on a cache line), `N` must
/// be non-zero, and `CELL × N` must fit in memory. A grid that breaks a rule does not build:
///
/// ```compile_fail,E0080
/// // error: CELL must be a multiple of 64
/// let grid = unimem::Grid::<100, 8>::new();
/// ```
///
/// The rules are checked when the compiler generates the grid's code, which `cargo check`
/// (and so an editor's live diagnostics) never does: a bad grid passes `cargo check` without
/// a word, and is reported by `cargo build`, `cargo test` or `cargo run` as error E0080, with
/// the rule it breaks and a note naming the instance (`Grid::<100, 8>::with_options`). Stable
/// Rust cannot check a const parameter any earlier. The same holds for the element type of a
/// [typed view](Cell::as_slice_of).
///
/// Cells are at least 64-byte aligned, lie inside [`block`](Grid::block) and hold whatever
/// their last owner left in them: zeroes when the block is fresh, what the block held when
/// it came from elsewhere ([`Grid::on`]).
pub struct Grid<const CELL: usize, const N: usize> {
    block: Block,
    free: Bitmap,
}

impl<const CELL: usize, const N: usize> Grid<CELL, N> {
    /// The bytes `N` cells take, `CELL × N`; evaluating it checks the parameter rules where
    /// the grid's code is generated.
    const BYTES: usize = {
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
        match CELL.checked_mul(N) {
            Some(bytes) if bytes <= isize::MAX as usize => bytes,
            _ => panic!(
                "Grid<CELL, N>: CELL × N overflows: no block can hold more than isize::MAX bytes"
            ),
        }
    };

    /// Opens a grid in a new lazy [`Block`] with the default options: pinned when the system
    /// allows it, unpinned otherwise (see [`Block::open`]).
    ///
    /// ```
    /// let grid = unimem::Grid::<256, 100>::new()?;
    /// assert_eq!((grid.capacity(), grid.remaining()), (100, 100));
    /// # Ok::<(), unimem::Error>(())
    /// ```
    ///
    /// # Errors
    /// Those of [`Block::open`]. The default pinning is best effort, so a grid larger than the
    /// process may lock opens unpinned ([`Block::is_pinned`] on [`block`](Grid::block) says
    /// which); open with [`Pinning::Required`](crate::Pinning::Required) through
    /// [`with_options`](Grid::with_options) to get [`Error::PinRefused`] instead.
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

    /// Opens a grid in a block opened with `options`: for example a warm one, an unpinned one,
    /// or one that must be pinned ([`Pinning::Required`](crate::Pinning::Required)).
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
        Self::on(options.open(Self::BYTES)?)
    }

    /// Puts a grid on a block the caller opened: unpinned, warm, or received from another
    /// process. The cells are the block's first `CELL × N` bytes, all free, and hold what the
    /// block holds; bytes beyond them are not used.
    ///
    /// Cells are read safely, every byte, so those bytes must be initialised. A block is
    /// (zeroes when opened, what was written when received), and stays so unless an `unsafe`
    /// write through [`Block::as_ptr`] left uninitialised bytes, which its contract forbids.
    ///
    /// A cell hands out `&mut` access to its bytes, so the grid must be the only thing touching
    /// them. A block opened here guarantees that; a block received from another process
    /// (`Block::from_fd`, `Block::from_mach_port`) does only under the agreement its `unsafe`
    /// constructor's `# Safety` section describes.
    ///
    /// ```
    /// use unimem::{Block, Error, Grid, Pinning};
    ///
    /// let block = Block::options().pinning(Pinning::BestEffort).open(64 * 4096)?;
    /// let grid = Grid::<4096, 64>::on(block)?;
    /// assert_eq!(grid.remaining(), 64);
    ///
    /// let small = Block::options().pinning(Pinning::BestEffort).open(4096)?;
    /// let err = Grid::<4096, 64>::on(small).unwrap_err();
    /// assert!(matches!(err, Error::TooSmall { needed: 262144, .. }));
    /// # Ok::<(), unimem::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::TooSmall`] if the block has fewer than `CELL × N` bytes; the block is dropped.
    pub fn on(block: Block) -> Result<Self, Error> {
        let needed = Self::BYTES;
        if block.len() < needed {
            return Err(Error::TooSmall {
                needed,
                len: block.len(),
            });
        }
        // Every cell's 64-byte alignment (and so every typed view's) rests on this.
        assert_eq!(
            block.as_ptr().addr() % 64,
            0,
            "Block broke its promise of a page-aligned base address"
        );
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
    #[must_use = "a cell that is not kept goes straight back to the grid"]
    pub fn take(&self) -> Option<Cell<'_, CELL, N>> {
        let index = self.free.claim_one(self.thread_start_word())?;
        Some(Cell { grid: self, index })
    }

    /// Takes a free cell that keeps the grid alive, or `None` if every cell is out: an
    /// [`OwnedCell`], `'static`, for threads from `std::thread::spawn` and other places a
    /// borrowed [`Cell`] cannot go. As [`take`](Grid::take), plus an `Arc` clone.
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let grid = Arc::new(unimem::Grid::<64, 2>::new()?);
    /// let cell = grid.take_owned().unwrap();
    /// drop(grid); // the cell keeps the grid alive
    /// assert_eq!(cell.grid().remaining(), 1);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use = "a cell that is not kept goes straight back to the grid"]
    pub fn take_owned(self: &Arc<Self>) -> Option<OwnedCell<CELL, N>> {
        let index = self.free.claim_one(self.thread_start_word())?;
        Some(OwnedCell {
            grid: Arc::clone(self),
            index,
        })
    }

    /// Gives `cell` back, for when that reads better than dropping it.
    ///
    /// # Panics
    /// If `cell` came from a different grid. Nothing is lost or corrupted: the cell goes home
    /// to its own grid as it is dropped during the unwinding.
    #[inline]
    #[track_caller]
    pub fn give(&self, cell: Cell<'_, CELL, N>) {
        self.assert_cell_came_from_here(&cell, "Grid");
        drop(cell);
    }

    /// A pocket of free cells for one thread: see [`Stash`].
    #[must_use = "a stash does nothing until cells are taken from it"]
    pub fn stash(&self) -> Stash<'_, CELL, N> {
        Stash::new(self)
    }

    /// How many cells are free in the grid now: not taken, and not held by a [`Stash`]. Exact
    /// when no other thread takes or gives meanwhile. It reads every word of the bitmap, so
    /// keep it off hot paths.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.free.count()
    }

    /// How many cells are out now: taken, or held by a [`Stash`]; `capacity() - remaining()`,
    /// with the same caveats as [`remaining`](Grid::remaining).
    #[must_use]
    pub fn used(&self) -> usize {
        N - self.remaining()
    }

    /// How many cells the grid has: `N`.
    #[inline]
    #[must_use]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// The block the cells live in: for its [`handle`](Block::handle), which together with
    /// [`Cell::offset`] tells a device where a cell is.
    #[inline]
    #[must_use]
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

    /// The first byte of cell `index`.
    #[inline]
    fn cell_start(&self, index: usize) -> *mut u8 {
        debug_assert!(index < N);
        // SAFETY: `index < N` (every index comes from the bitmap, which holds `N` bits) and the
        // block holds at least `CELL × N` bytes (`on`), so the cell lies inside the block.
        unsafe { self.block.as_ptr().add(index * CELL) }
    }

    /// Panics unless `cell` came from this grid; `to` names what it was given to.
    #[inline]
    #[track_caller]
    fn assert_cell_came_from_here(&self, cell: &Cell<'_, CELL, N>, to: &str) {
        assert!(
            ptr::eq(self, cell.grid),
            "cell {} was taken from a different Grid (at {:p}) than the {to} it was given \
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
            .field("remaining", &self.remaining())
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

/// A take whose result is dropped does nothing (the cell goes straight back), so each warns:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// let grid = unimem::Grid::<64, 1>::new().unwrap();
/// grid.take(); // error: unused `Option` that must be used
/// ```
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// let grid = std::sync::Arc::new(unimem::Grid::<64, 1>::new().unwrap());
/// grid.take_owned(); // error: unused `Option` that must be used
/// ```
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// let grid = unimem::Grid::<64, 1>::new().unwrap();
/// grid.stash(); // error: unused `Stash` that must be used
/// ```
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// let grid = unimem::Grid::<64, 1>::new().unwrap();
/// let mut stash = grid.stash();
/// stash.take(); // error: unused `Option` that must be used
/// ```
///
/// ```
/// #![deny(unused_must_use)]
/// let grid = unimem::Grid::<64, 1>::new().unwrap();
/// let mut stash = grid.stash();
/// let _cell = stash.take(); // the same lines, with every result kept, compile
/// let _owned = std::sync::Arc::new(unimem::Grid::<64, 1>::new().unwrap()).take_owned();
/// ```
#[cfg(doctest)]
struct DroppedTakesWarn;
