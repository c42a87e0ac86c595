//! [`Stash`]: one thread's pocket of free cells, the fast path of a [`Grid`].

use super::{Cell, Grid, bitmap};
use core::fmt;
use core::marker::PhantomData;

/// The most cells a stash holds.
const CAPACITY: usize = 64;

/// How many cells a stash claims when it runs dry and returns when it overflows: half its
/// capacity, so that a thread that takes and gives in turn never crosses either edge twice in
/// a row, and cells do not ping-pong between the stash and the grid.
const HALF: usize = CAPACITY / 2;

/// A pocket of free cells for one thread: takes and gives without atomic operations.
///
/// A stash claims 32 cells from its [`Grid`] when it runs dry (all there are, if the grid has
/// fewer), with one atomic operation per bitmap word it claims from: usually one. It keeps
/// cells given to it, and when it holds 64 returns the 32 it has held longest, one atomic
/// operation per bitmap word. Everything it holds goes back to the grid when it is dropped
/// or [`flush`](Stash::flush)ed. A take+give cycle through a stash is a few plain loads and
/// stores; see [why a stash is faster](Grid#why-a-stash-is-faster).
///
/// Cells taken from a stash are ordinary [`Cell`]s: dropping one returns it to the grid,
/// giving it to the stash keeps it in the pocket, and either works on any thread. The cells a
/// stash holds are not [`remaining`](Grid::remaining) in the grid, and other threads cannot
/// take them: give a grid 64 spare cells per stash.
///
/// A stash hands out borrowed [`Cell`]s only, never [`OwnedCell`](crate::OwnedCell)s: an owned
/// cell changes the `Arc`'s shared counter as it is made and dropped, the very atomic traffic a
/// stash exists to avoid. For `'static` cells at a stash's speed, stash from a grid in a
/// `static` (see [the patterns](Grid#sharing-a-grid-between-threads)).
///
/// A stash can move to another thread (it is `Send`) but is meant to be one thread's alone (it
/// is not `Sync`):
///
/// ```compile_fail,E0277
/// let grid = unimem::Grid::<64, 128>::new().unwrap();
/// let stash = grid.stash();
/// std::thread::scope(|s| {
///     s.spawn(|| stash.held()); // error: `Cell<()>` cannot be shared between threads
/// });
/// ```
///
/// ```
/// use unimem::Grid;
///
/// let grid = Grid::<256, 128>::new()?;
/// let mut stash = grid.stash();
/// let mut cell = stash.take().expect("the grid has free cells");
/// cell.fill(7);
/// stash.give(cell);
/// // The stash claimed a batch at once and keeps it, cell included.
/// assert_eq!(grid.remaining() + stash.held(), 128);
/// drop(stash);
/// assert_eq!(grid.remaining(), 128);
/// # Ok::<(), unimem::Error>(())
/// ```
pub struct Stash<'g, const CELL: usize, const N: usize> {
    grid: &'g Grid<CELL, N>,
    /// Indices of the cells held, the longest-held first.
    held: [usize; CAPACITY],
    len: usize,
    /// One thread's pocket: nothing in it is meant to be shared, so it is not `Sync`.
    not_sync: PhantomData<core::cell::Cell<()>>,
}

impl<'g, const CELL: usize, const N: usize> Stash<'g, CELL, N> {
    pub(super) fn new(grid: &'g Grid<CELL, N>) -> Self {
        Stash {
            grid,
            held: [0; CAPACITY],
            len: 0,
            not_sync: PhantomData,
        }
    }

    /// Takes a cell from the pocket, refilling it from the grid when empty. `None` when the
    /// pocket is empty and so is the grid.
    #[inline]
    #[must_use = "a cell that is not kept goes straight back to the grid"]
    pub fn take(&mut self) -> Option<Cell<'g, CELL, N>> {
        if self.len == 0 {
            self.refill()?;
        }
        self.len -= 1;
        Some(Cell {
            grid: self.grid,
            index: self.held[self.len],
        })
    }

    /// Keeps `cell` in the pocket, first returning the 32 longest-held cells to the grid if
    /// the pocket is full.
    ///
    /// # Panics
    /// If `cell` came from a different grid. Nothing is lost or corrupted: the cell goes home
    /// to its own grid as it is dropped during the unwinding.
    #[inline]
    #[track_caller]
    pub fn give(&mut self, cell: Cell<'_, CELL, N>) {
        self.grid.assert_cell_came_from_here(&cell, "Stash");
        let index = cell.into_index();
        if self.len == CAPACITY {
            self.return_oldest(HALF);
        }
        self.held[self.len] = index;
        self.len += 1;
    }

    /// Returns every cell the pocket holds to the grid, one atomic operation per bitmap word.
    pub fn flush(&mut self) {
        self.return_oldest(self.len);
    }

    /// How many cells the pocket holds.
    #[inline]
    #[must_use]
    pub fn held(&self) -> usize {
        self.len
    }

    /// The grid the stash takes from and returns to.
    #[inline]
    #[must_use]
    pub fn grid(&self) -> &'g Grid<CELL, N> {
        self.grid
    }

    /// Claims up to half a pocket from the grid into the empty pocket, one atomic operation per
    /// bitmap word it claims from (one, when this thread's first word has enough); `None` if
    /// the grid has no free cell.
    #[cold]
    fn refill(&mut self) -> Option<()> {
        debug_assert_eq!(self.len, 0);
        let (held, len) = (&mut self.held, &mut self.len);
        let start = self.grid.thread_start_word();
        self.grid
            .free
            .claim_many(start, HALF as u32, |word, mut bits| {
                while bits != 0 {
                    let bit = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    held[*len] = word * bitmap::BITS + bit;
                    *len += 1;
                }
            });
        if self.len == 0 {
            return None;
        }
        // `take` pops from the end: reversed, the first word's lowest cells go out first, as
        // they would from `Grid::take`.
        self.held[..self.len].reverse();
        Some(())
    }

    /// Returns the `count` longest-held cells to the grid.
    #[cold]
    fn return_oldest(&mut self, count: usize) {
        self.grid.free.release_many(&mut self.held[..count]);
        self.held.copy_within(count..self.len, 0);
        self.len -= count;
    }
}

impl<const CELL: usize, const N: usize> Drop for Stash<'_, CELL, N> {
    fn drop(&mut self) {
        self.flush();
    }
}

impl<const CELL: usize, const N: usize> fmt::Debug for Stash<'_, CELL, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stash")
            .field("grid", &(self.grid as *const Grid<CELL, N>))
            .field("held", &self.held())
            .finish()
    }
}
