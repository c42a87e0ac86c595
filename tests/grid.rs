//! Grid and Stash: what a user can observe, alone and under contention.

use std::collections::{HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use unimem::{Block, Cell, Error, Grid, OwnedCell, Pinning, Stash};

/// A grid pinned if the system allows it, so that the tests do not depend on the memory-lock
/// limit of the machine (tests of `Grid::new` itself use small grids).
fn grid<const CELL: usize, const N: usize>() -> Grid<CELL, N> {
    Grid::with_options(Block::options().pinning(Pinning::BestEffort)).unwrap()
}

/// Takes every cell there is, asserting that exactly `N` takes succeed.
fn take_all<const CELL: usize, const N: usize>(grid: &Grid<CELL, N>) -> Vec<Cell<'_, CELL, N>> {
    let cells: Vec<_> = (0..N).map_while(|_| grid.take()).collect();
    assert_eq!(cells.len(), N, "a grid of {N} cells ran out early");
    assert!(grid.take().is_none(), "a grid of {N} cells gave out more");
    cells
}

/// Runs `check` on `threads` fresh threads, one after another.
///
/// Each thread starts its searches of a grid at its own bitmap word, chosen when it first
/// takes, and the test runner's threads are reused by other tests: a check that holds on many
/// fresh threads holds whichever thread runs it, under any `--test-threads`. Enough threads
/// to start at every word of a grid of four words, whatever other tests do meanwhile.
fn on_fresh_threads(check: impl Fn() + Sync) {
    let threads = if cfg!(miri) { 6 } else { 32 };
    for _ in 0..threads {
        thread::scope(|s| {
            s.spawn(&check);
        });
    }
}

/// How long any wait in these tests may last: a cell that never comes back (a lost cell) must
/// fail a test, not hang it. Waits here last microseconds; under Miri the clock is virtual
/// (about 5 µs a basic block), hence more room.
const PATIENCE: Duration = Duration::from_secs(if cfg!(miri) { 600 } else { 120 });

/// The end of a wait that must not last longer than [`PATIENCE`].
struct Deadline(Instant);

impl Deadline {
    fn start() -> Deadline {
        Deadline(Instant::now() + PATIENCE)
    }

    /// Panics, naming `what` was awaited, once the deadline has passed.
    #[track_caller]
    fn check(&self, what: &str) {
        assert!(
            Instant::now() < self.0,
            "waited {PATIENCE:?} for {what}: a cell was lost, or a thread hangs"
        );
    }
}

/// The next message, or a panic once [`PATIENCE`] has passed; `None` when every sender is gone.
#[track_caller]
fn receive<T>(from: &mpsc::Receiver<T>) -> Option<T> {
    match from.recv_timeout(PATIENCE) {
        Ok(message) => Some(message),
        Err(mpsc::RecvTimeoutError::Disconnected) => None,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("waited {PATIENCE:?} for a cell from a producer: a producer hangs")
        }
    }
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload.downcast_ref::<&str>().unwrap().to_string(),
    }
}

#[test]
fn new_and_new_warm_open_grids_of_the_asked_shape() {
    let lazy = Grid::<64, 16>::new().unwrap();
    let warm = Grid::<128, 8>::new_warm().unwrap();
    assert_eq!((lazy.capacity(), lazy.remaining()), (16, 16));
    assert_eq!((warm.capacity(), warm.remaining()), (8, 8));
    assert!(lazy.block().len() >= 64 * 16);
    assert!(warm.block().len() >= 128 * 8);
}

#[test]
fn exactly_n_takes_succeed_then_none() {
    let grid = grid::<64, 100>();
    let mut cells = take_all(&grid);
    assert_eq!(grid.remaining(), 0);
    let index = cells.pop().unwrap().index();
    assert_eq!(grid.remaining(), 1);
    assert_eq!(grid.take().unwrap().index(), index, "the one free cell");
}

#[test]
fn cells_are_distinct_aligned_and_inside_the_block() {
    // A cell size that is not a power of two, and a count that is not a multiple of 64.
    let grid = grid::<192, 70>();
    let mut cells = take_all(&grid);
    let base = grid.block().as_ptr();
    let mut indices = HashSet::new();
    for cell in &mut cells {
        assert!(indices.insert(cell.index()));
        assert!(cell.index() < 70);
        assert_eq!(cell.offset(), cell.index() * 192);
        assert_eq!(cell.len(), 192);
        assert_eq!(cell.as_ptr(), base.wrapping_add(cell.offset()).cast_const());
        assert_eq!(cell.as_mut_ptr().cast_const(), cell.as_ptr());
        assert_eq!(cell.as_ptr().addr() % 64, 0);
        assert_eq!(grid.block().offset_of(cell.as_ptr()), Some(cell.offset()));
        assert!(cell.offset() + cell.len() <= grid.block().len());
        let stamp = cell.index() as u8;
        cell.fill(stamp);
    }
    // Every cell kept its own bytes: no two overlap.
    for cell in &cells {
        let stamp = cell.index() as u8;
        assert!(
            cell.iter().all(|&byte| byte == stamp),
            "cell {}",
            cell.index()
        );
    }
}

#[test]
fn a_given_back_cell_keeps_its_bytes_for_the_next_owner() {
    let grid = grid::<256, 4>();
    let mut cell = grid.take().unwrap();
    assert!(cell.iter().all(|&byte| byte == 0), "fresh cells are zeroed");
    let index = cell.index();
    cell.as_mut()[..4].copy_from_slice(b"kept");
    grid.give(cell);
    let again = grid.take().unwrap();
    assert_eq!(again.index(), index);
    assert_eq!(&again.as_ref()[..4], b"kept");
}

#[test]
fn dropping_or_giving_a_cell_returns_it() {
    let grid = grid::<64, 3>();
    let (a, b) = (grid.take().unwrap(), grid.take().unwrap());
    assert_eq!(grid.remaining(), 1);
    drop(a);
    assert_eq!(grid.remaining(), 2);
    grid.give(b);
    assert_eq!(grid.remaining(), 3);
    drop(take_all(&grid));
    assert_eq!(grid.remaining(), 3);
}

#[test]
fn a_cell_given_to_another_grid_panics_and_goes_home() {
    let home = grid::<64, 8>();
    let other = grid::<64, 8>();
    let held = other.take().unwrap();
    let cell = home.take().unwrap();
    let index = cell.index();
    let message = panic_message(|| other.give(cell));
    assert!(message.contains(&format!("cell {index} was taken from a different Grid")));
    assert!(message.contains("drop it"), "{message}");
    // The cell went back to `home`, and `other` was not touched.
    assert_eq!(home.remaining(), 8);
    assert_eq!(other.remaining(), 7);
    drop(held);
    assert_eq!(take_all(&home).len(), 8);
    assert_eq!(take_all(&other).len(), 8);
}

#[test]
fn a_cell_given_to_another_grids_stash_panics_and_goes_home() {
    let home = grid::<64, 8>();
    let other = grid::<64, 8>();
    let mut stash = other.stash();
    let kept = stash.take().unwrap();
    let cell = home.take().unwrap();
    let message = panic_message(|| stash.give(cell));
    assert!(message.contains("different Grid"), "{message}");
    assert!(message.contains("Stash"), "{message}");
    assert_eq!(home.remaining(), 8);
    assert_eq!(stash.held(), 7);
    stash.give(kept);
    drop(stash);
    assert_eq!(other.remaining(), 8);
}

#[test]
fn a_cell_can_be_dropped_on_another_thread() {
    let grid = grid::<64, 4>();
    let mut cell = grid.take().unwrap();
    cell[0] = 42;
    thread::scope(|s| {
        s.spawn(move || assert_eq!(cell[0], 42));
    });
    assert_eq!(grid.remaining(), 4);
}

#[test]
fn grids_cells_and_stashes_cross_threads_as_documented() {
    fn send_and_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_and_sync::<Grid<64, 4>>();
    send_and_sync::<Cell<'static, 64, 4>>();
    send_and_sync::<OwnedCell<64, 4>>();
    send::<Stash<'static, 64, 4>>();
}

#[test]
fn debug_output_names_the_parts() {
    let grid = grid::<64, 4>();
    let cell = grid.take().unwrap();
    let text = format!("{cell:?}");
    assert!(
        text.contains("index: 0") && text.contains("offset: 0"),
        "{text}"
    );
    let text = format!("{grid:?}");
    assert!(
        text.contains("capacity: 4") && text.contains("remaining: 3"),
        "{text}"
    );
    let stash = grid.stash();
    assert!(format!("{stash:?}").contains("held: 0"));
}

#[test]
fn a_stash_refills_in_batches_and_returns_everything_when_dropped() {
    // 200 cells: three words of 64 and a last word of 8, where some threads start.
    let grid = grid::<64, 200>();
    on_fresh_threads(|| {
        let mut stash = grid.stash();
        let first = stash.take().unwrap();
        assert_eq!(stash.held(), 31, "a refill claims 32 cells");
        assert_eq!(grid.remaining(), 200 - 32);
        let mut cells = vec![first];
        cells.extend((1..100).map(|_| stash.take().unwrap()));
        let distinct: HashSet<_> = cells.iter().map(|cell| cell.index()).collect();
        assert_eq!(distinct.len(), 100);
        let mut out = cells.len();
        for cell in cells {
            stash.give(cell);
            out -= 1;
            assert!(stash.held() <= 64);
            assert_eq!(grid.remaining() + stash.held(), 200 - out);
        }
        drop(stash);
        assert_eq!(grid.remaining(), 200);
    });
}

#[test]
fn a_refill_takes_every_free_cell_when_the_grid_has_fewer_than_a_batch() {
    let grid = grid::<64, 200>();
    on_fresh_threads(|| {
        let mut out = take_all(&grid);
        let back = out.split_off(190);
        let back: HashSet<_> = back.into_iter().map(|cell| cell.index()).collect();
        let mut stash = grid.stash();
        let mut cells = vec![stash.take().unwrap()];
        assert_eq!(stash.held(), 9, "one refill claims all 10 free cells");
        assert_eq!(grid.remaining(), 0);
        cells.extend((0..9).map(|_| stash.take().unwrap()));
        assert!(stash.take().is_none());
        let taken: HashSet<_> = cells.iter().map(|cell| cell.index()).collect();
        assert_eq!(taken, back);
        cells.append(&mut out);
        drop(cells);
        drop(stash);
        assert_eq!(grid.remaining(), 200);
    });
}

#[test]
fn a_full_stash_returns_its_oldest_half() {
    let grid = grid::<64, 128>();
    let mut cells = take_all(&grid);
    let _kept_out = cells.split_off(65);
    let mut stash = grid.stash();
    let mut indices = Vec::new();
    for cell in cells {
        indices.push(cell.index());
        stash.give(cell);
    }
    // The 65th give found 64 held, returned the 32 given first and kept the rest.
    assert_eq!(stash.held(), 33);
    assert_eq!(grid.remaining(), 32);
    let back: HashSet<_> = take_all_free(&grid);
    assert_eq!(back, indices[..32].iter().copied().collect());
}

/// Takes every free cell and gives them back; returns their indices.
fn take_all_free<const CELL: usize, const N: usize>(grid: &Grid<CELL, N>) -> HashSet<usize> {
    let cells: Vec<_> = (0..N).map_while(|_| grid.take()).collect();
    cells.iter().map(|cell| cell.index()).collect()
}

#[test]
fn a_stash_flush_returns_what_it_holds() {
    let grid = grid::<64, 100>();
    let mut stash = grid.stash();
    let cell = stash.take().unwrap();
    assert!(stash.held() > 0);
    stash.flush();
    assert_eq!(stash.held(), 0);
    assert_eq!(grid.remaining(), 99);
    drop(cell);
    assert_eq!(grid.remaining(), 100);
}

#[test]
fn a_cell_from_a_stash_dropped_goes_to_the_grid() {
    let grid = grid::<64, 100>();
    let mut stash = grid.stash();
    let cell = stash.take().unwrap();
    let held = stash.held();
    let free = grid.remaining();
    drop(cell);
    assert_eq!((stash.held(), grid.remaining()), (held, free + 1));
}

#[test]
fn a_stash_hands_out_every_cell_of_a_small_grid_once() {
    fn check<const N: usize>() {
        let grid = grid::<64, N>();
        let mut stash = grid.stash();
        let cells: Vec<_> = (0..N).map_while(|_| stash.take()).collect();
        assert_eq!(cells.len(), N);
        assert!(stash.take().is_none());
        assert!(grid.take().is_none());
        let distinct: HashSet<_> = cells.iter().map(|cell| cell.index()).collect();
        assert_eq!(distinct, (0..N).collect());
        for cell in cells {
            stash.give(cell);
        }
        drop(stash);
        assert_eq!(grid.remaining(), N);
    }
    check::<1>();
    check::<5>();
    check::<63>();
    check::<64>();
    check::<65>();
    check::<100>();
    check::<300>();
}

#[test]
fn two_stashes_share_a_grid_without_overlap() {
    let grid = grid::<64, 100>();
    let (mut left, mut right) = (grid.stash(), grid.stash());
    let mut cells = Vec::new();
    loop {
        match (left.take(), right.take()) {
            (None, None) => break,
            (a, b) => cells.extend(a.into_iter().chain(b)),
        }
    }
    assert_eq!(cells.len(), 100);
    let distinct: HashSet<_> = cells.iter().map(|cell| cell.index()).collect();
    assert_eq!(distinct.len(), 100);
    drop(cells);
    drop((left, right));
    assert_eq!(grid.remaining(), 100);
}

#[test]
fn remaining_and_used_add_up_to_the_capacity() {
    let grid = grid::<64, 100>();
    assert_eq!(
        (grid.capacity(), grid.remaining(), grid.used()),
        (100, 100, 0)
    );
    let cells: Vec<_> = (0..30).map(|_| grid.take().unwrap()).collect();
    let mut stash = grid.stash();
    let kept = stash.take().unwrap();
    assert_eq!(
        grid.used(),
        30 + 1 + stash.held(),
        "cells in a stash are used"
    );
    assert_eq!(grid.remaining() + grid.used(), 100);
    drop((cells, kept, stash));
    assert_eq!((grid.remaining(), grid.used()), (100, 0));
}

/// A message with its padding spelled out as a field, as `Cell::as_mut_ptr` asks: no byte of
/// it is uninitialised.
#[repr(C)]
#[derive(Clone, Copy)]
struct Message {
    tag: u8,
    pad: [u8; 7],
    value: u64,
}

#[test]
fn a_value_without_padding_written_through_as_mut_ptr_reads_safely_for_the_next_owner() {
    // Issue 21 §1: the next owner's safe `Deref` reads every byte of the cell, so what is
    // written through `as_mut_ptr` must leave none uninitialised. Under Miri this checks that
    // the documented way (a value without padding) does not.
    let grid = grid::<64, 1>();
    {
        let mut cell = grid.take().unwrap();
        let message = Message {
            tag: 1,
            pad: [0; 7],
            value: 2,
        };
        // SAFETY: the cell is ours, 64 bytes and 64-byte aligned; `Message` has no padding.
        unsafe { cell.as_mut_ptr().cast::<Message>().write(message) };
    }
    let next = grid.take().unwrap();
    assert_eq!(next.iter().map(|&b| u32::from(b)).sum::<u32>(), 3);
    assert_eq!(next.as_slice_of::<u64>()[1], 2);
}

#[test]
fn bytes_written_through_the_block_before_on_are_read_safely_by_the_cells() {
    // The other way into a cell: writes through `Block::as_ptr`, before the grid exists. Its
    // contract asks for initialised bytes; under Miri this checks that integers are.
    let block = open_block(4096);
    for i in 0..16 {
        // SAFETY: the block is ours alone and 4096 bytes long; u64s have no padding.
        unsafe { block.as_ptr().cast::<u64>().add(i).write(i as u64) };
    }
    let grid = Grid::<64, 2>::on(block).unwrap();
    let cells = take_all(&grid);
    let sums: Vec<u32> = cells
        .iter()
        .map(|cell| cell.iter().map(|&b| u32::from(b)).sum())
        .collect();
    let mut sums_by_index = [0; 2];
    for (cell, sum) in cells.iter().zip(sums) {
        sums_by_index[cell.index()] = sum;
    }
    assert_eq!(sums_by_index, [(0..8).sum::<u32>(), (8..16).sum::<u32>()]);
}

/// What `Cell::as_mut_ptr`'s contract rules out: a padded struct written through it leaves
/// uninitialised bytes that the next owner's safe `Deref` reads. Undefined behaviour, so it
/// runs only by hand, under Miri, which must report uninitialised memory:
/// `cargo +nightly miri test -p unimem --test grid -- --ignored padded_value`
#[cfg(miri)]
#[test]
#[ignore = "undefined behaviour on purpose; run by hand under Miri, which must reject it"]
fn a_padded_value_written_through_as_mut_ptr_is_outside_the_contract() {
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Padded {
        tag: u8,
        value: u64, // 7 padding bytes before it
    }
    let grid = grid::<64, 1>();
    {
        let mut cell = grid.take().unwrap();
        // Not sound: breaks `as_mut_ptr`'s contract (padding bytes).
        unsafe {
            cell.as_mut_ptr()
                .cast::<Padded>()
                .write(Padded { tag: 1, value: 2 })
        };
    }
    let next = grid.take().unwrap();
    let _sum: u32 = next.iter().map(|&b| u32::from(b)).sum();
}

fn open_block(len: usize) -> Block {
    Block::options()
        .pinning(Pinning::BestEffort)
        .open(len)
        .unwrap()
}

#[test]
fn on_puts_a_grid_on_the_first_cell_times_n_bytes_of_a_block() {
    // Exactly the size the grid needs.
    let grid = Grid::<4096, 4>::on(open_block(4 * 4096)).unwrap();
    let cells = take_all(&grid);
    assert!(
        cells
            .iter()
            .all(|cell| cell.offset() + 4096 <= grid.block().len())
    );
    drop(cells);
    // More than it needs: the cells are the first bytes.
    let grid = Grid::<64, 3>::on(open_block(8192)).unwrap();
    assert!(grid.block().len() >= 8192);
    let cells = take_all(&grid);
    let offsets: HashSet<_> = cells.iter().map(|cell| cell.offset()).collect();
    assert_eq!(offsets, HashSet::from([0, 64, 128]));
}

#[test]
fn on_refuses_a_block_smaller_than_cell_times_n_and_says_what_to_open() {
    // One page, whatever the page size (4 KiB to 64 KiB): less than the 128 KiB it needs.
    let block = open_block(1);
    let len = block.len();
    assert!(len < 131072);
    let err = Grid::<4096, 32>::on(block).unwrap_err();
    assert!(
        matches!(err, Error::TooSmall { needed: 131072, len: l } if l == len),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("fewer than the 128 KiB needed"), "{text}");
    assert!(text.contains("at least 131072 bytes"), "{text}");
    assert_eq!(
        std::io::Error::from(err).kind(),
        std::io::ErrorKind::InvalidInput
    );
}

#[test]
fn typed_views_cover_the_whole_cell_in_native_byte_order() {
    let grid = grid::<256, 2>();
    let mut cell = grid.take().unwrap();
    assert_eq!(cell.as_slice_of::<u8>().len(), 256);
    assert_eq!(cell.as_slice_of::<i8>().len(), 256);
    assert_eq!(cell.as_slice_of::<u16>().len(), 128);
    assert_eq!(cell.as_slice_of::<f32>().len(), 64);
    assert_eq!(cell.as_slice_of::<f64>().len(), 32);
    assert_eq!(cell.as_slice_of::<i128>().len(), 16);
    assert_eq!(
        cell.as_mut_slice_of::<usize>().len(),
        256 / size_of::<usize>()
    );
    // Every view starts at the cell's first byte.
    assert_eq!(cell.as_slice_of::<u128>().as_ptr().cast(), cell.as_ptr());
    assert_eq!(
        cell.as_mut_slice_of::<f64>().as_mut_ptr().cast(),
        cell.as_mut_ptr()
    );

    for (i, x) in cell.as_mut_slice_of::<f32>().iter_mut().enumerate() {
        *x = i as f32 * 0.5 - 3.0;
    }
    for (i, bytes) in cell.chunks_exact(4).enumerate() {
        let x = f32::from_ne_bytes(bytes.try_into().unwrap());
        assert_eq!(x, i as f32 * 0.5 - 3.0);
    }
    cell.as_mut_slice_of::<i8>()[255] = -1;
    assert_eq!(cell[255], 0xFF);
    cell.as_mut_slice_of::<u64>()[1] = 0x0102_0304_0506_0708;
    assert_eq!(cell[8..16], 0x0102_0304_0506_0708_u64.to_ne_bytes());

    // The next owner reads the same values, through any view.
    let index = cell.index();
    drop(cell);
    let cells = take_all(&grid);
    let again = cells.iter().find(|cell| cell.index() == index).unwrap();
    assert_eq!(again.as_slice_of::<f32>()[0], -3.0);
    assert_eq!(again.as_slice_of::<u64>()[1], 0x0102_0304_0506_0708);
    assert_eq!(again.as_slice_of::<i8>()[255], -1);
}

#[test]
fn an_owned_cell_keeps_its_grid_alive_until_it_is_dropped() {
    let grid = Arc::new(grid::<64, 4>());
    let weak = Arc::downgrade(&grid);
    let mut cell = grid.take_owned().unwrap();
    cell[..4].copy_from_slice(b"mine");
    cell.as_mut_slice_of::<u32>()[1] = 7;
    assert_eq!((grid.remaining(), grid.used()), (3, 1));
    drop(grid);
    assert!(weak.upgrade().is_some(), "the cell keeps the grid");
    assert_eq!(&cell[..4], b"mine");
    assert_eq!(cell.as_slice_of::<u32>()[1], 7);
    assert_eq!(cell.grid().remaining(), 3);
    assert_eq!(cell.offset(), cell.index() * 64);
    assert!(format!("{cell:?}").starts_with("OwnedCell { index: "));
    drop(cell);
    assert!(weak.upgrade().is_none(), "the last cell let the grid go");
}

#[test]
fn owned_cells_go_to_spawned_threads_and_back_to_the_grid() {
    let grid = Arc::new(grid::<64, 8>());
    let cells: Vec<_> = (0..8).map(|_| grid.take_owned().unwrap()).collect();
    assert!(grid.take_owned().is_none());
    assert!(
        grid.take().is_none(),
        "owned and borrowed cells share the bitmap"
    );
    let distinct: HashSet<_> = cells.iter().map(|cell| cell.index()).collect();
    assert_eq!(distinct.len(), 8);
    let workers: Vec<_> = cells
        .into_iter()
        .map(|mut cell| {
            thread::spawn(move || {
                let stamp = cell.index() as u8 + 1;
                cell.fill(stamp);
                // Dropped here: back to the grid from this thread.
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    assert_eq!(grid.remaining(), 8);
    assert_eq!(Arc::strong_count(&grid), 1);
    for cell in take_all(&grid) {
        let stamp = cell.index() as u8 + 1;
        assert!(
            cell.iter().all(|&byte| byte == stamp),
            "cell {}",
            cell.index()
        );
    }
}

// ---- Under contention -------------------------------------------------------------------

/// Take+give cycles per thread.
const CYCLES: u64 = if cfg!(miri) { 300 } else { 1_000_000 };
/// A stamp's bytes: owner thread (1-based) and sequence number.
const STAMP: usize = 16;

/// Who holds each cell, as the threads themselves see it: a cell handed out twice shows up as
/// a second holder, or as a stamp overwritten while its owner held the cell.
struct Ledger {
    holders: Vec<AtomicU32>,
}

impl Ledger {
    fn new(cells: usize) -> Ledger {
        Ledger {
            holders: (0..cells).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Records that `owner` now holds `cell`, and stamps the cell with `(owner, seq)`.
    fn claim(&self, cell: &mut impl Held, owner: u64, seq: u64) {
        let index = cell.index();
        let before = self.holders[index].fetch_add(1, Ordering::Relaxed);
        assert_eq!(before, 0, "cell {index} handed out while held");
        let bytes = cell.bytes_mut();
        bytes[..8].copy_from_slice(&owner.to_le_bytes());
        bytes[8..STAMP].copy_from_slice(&seq.to_le_bytes());
        bytes[STAMP..].fill(owner as u8);
    }

    /// Checks that `cell` still carries `(owner, seq)`, and records that it is being let go.
    fn release(&self, cell: &impl Held, owner: u64, seq: u64) {
        let (index, bytes) = (cell.index(), cell.bytes());
        assert_eq!(
            bytes[..8],
            owner.to_le_bytes(),
            "cell {index} changed owner"
        );
        assert_eq!(
            bytes[8..STAMP],
            seq.to_le_bytes(),
            "cell {index} was reused"
        );
        assert!(bytes[STAMP..].iter().all(|&byte| byte == owner as u8));
        let before = self.holders[index].fetch_sub(1, Ordering::Relaxed);
        assert_eq!(before, 1, "cell {index} had another holder");
    }
}

/// A handle to a taken cell, borrowed or owned, as the ledger sees it.
trait Held {
    fn index(&self) -> usize;
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
}

impl<const CELL: usize, const N: usize> Held for Cell<'_, CELL, N> {
    fn index(&self) -> usize {
        Cell::index(self)
    }
    fn bytes(&self) -> &[u8] {
        self
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl<const CELL: usize, const N: usize> Held for OwnedCell<CELL, N> {
    fn index(&self) -> usize {
        OwnedCell::index(self)
    }
    fn bytes(&self) -> &[u8] {
        self
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

/// Where a stress thread takes cells from and gives them back to.
trait Source<'g, const N: usize> {
    fn take(&mut self) -> Option<Cell<'g, 64, N>>;
    fn give(&mut self, cell: Cell<'g, 64, N>);
    /// Returns whatever the source keeps back from the grid.
    fn flush(&mut self);
}

impl<'g, const N: usize> Source<'g, N> for &'g Grid<64, N> {
    fn take(&mut self) -> Option<Cell<'g, 64, N>> {
        Grid::take(*self)
    }
    fn give(&mut self, cell: Cell<'g, 64, N>) {
        Grid::give(*self, cell)
    }
    fn flush(&mut self) {}
}

impl<'g, const N: usize> Source<'g, N> for Stash<'g, 64, N> {
    fn take(&mut self) -> Option<Cell<'g, 64, N>> {
        Stash::take(self)
    }
    fn give(&mut self, cell: Cell<'g, 64, N>) {
        Stash::give(self, cell)
    }
    fn flush(&mut self) {
        Stash::flush(self)
    }
}

/// `threads` threads each run `CYCLES` take+give cycles through the source `make` gives them.
/// Each holds a changing number of stamped cells, up to `deepest`, so that ownerships overlap
/// in time and stashes run dry and overflow. Afterwards every cell is back.
fn stress<'g, const N: usize, S: Source<'g, N>>(
    grid: &'g Grid<64, N>,
    threads: u64,
    deepest: u64,
    make: impl Fn() -> S + Sync,
) {
    let ledger = Ledger::new(N);
    thread::scope(|s| {
        for owner in 1..=threads {
            let (ledger, make) = (&ledger, &make);
            s.spawn(move || {
                let mut source = make();
                let mut held = VecDeque::new();
                for seq in 0..CYCLES {
                    let deadline = Deadline::start();
                    let mut cell = loop {
                        if let Some(cell) = source.take() {
                            break cell;
                        }
                        deadline.check("a free cell");
                        // The free cells may all sit in other threads' hands and stashes: let
                        // go of ours, so that the threads can never all wait on each other.
                        for (cell, seq) in held.drain(..) {
                            ledger.release(&cell, owner, seq);
                            source.give(cell);
                        }
                        source.flush();
                        thread::yield_now();
                    };
                    ledger.claim(&mut cell, owner, seq);
                    held.push_back((cell, seq));
                    // Hold 1, 2, .. `deepest` cells in turn, changing every 100 cycles, and
                    // give back in bursts when the depth drops.
                    let depth = 1 + (seq / 100 + owner) % deepest;
                    while held.len() as u64 > depth {
                        let (cell, seq) = held.pop_front().unwrap();
                        ledger.release(&cell, owner, seq);
                        source.give(cell);
                    }
                }
                for (cell, seq) in held {
                    ledger.release(&cell, owner, seq);
                    source.give(cell);
                }
            });
        }
    });
    assert_eq!(grid.remaining(), N, "every cell is back");
    assert_eq!(take_all(grid).len(), N);
}

// Two words of cells: every thread takes from the same two cache lines.
#[test]
fn stress_grid_2_threads() {
    let grid = grid::<64, 128>();
    stress(&grid, 2, 8, || &grid);
}

#[test]
fn stress_grid_8_threads() {
    let grid = grid::<64, 128>();
    stress(&grid, 8, 8, || &grid);
}

// Holding up to 40 cells makes each stash run dry and overflow again and again, and the
// stashes and hands hold more cells between them than the grid has.
#[test]
fn stress_stash_2_threads() {
    let grid = grid::<64, 64>();
    stress(&grid, 2, 40, || grid.stash());
}

#[test]
fn stress_stash_8_threads() {
    let grid = grid::<64, 256>();
    stress(&grid, 8, 40, || grid.stash());
}

#[test]
fn stress_cells_sent_through_a_channel() {
    const PER_PRODUCER: u64 = if cfg!(miri) { 200 } else { 250_000 };
    let grid = grid::<64, 256>();
    let ledger = Ledger::new(256);
    let (send, receiver) = mpsc::channel();
    thread::scope(|s| {
        for owner in 1..=2 {
            let (send, ledger, grid) = (send.clone(), &ledger, &grid);
            s.spawn(move || {
                let mut stash = grid.stash();
                for seq in 0..PER_PRODUCER {
                    // The consumer gives every cell back, so waiting for one always ends,
                    // unless a cell is lost: then the deadline fails the test.
                    let deadline = Deadline::start();
                    let mut cell = loop {
                        match stash.take() {
                            Some(cell) => break cell,
                            None => {
                                deadline.check("a free cell");
                                thread::yield_now();
                            }
                        }
                    };
                    ledger.claim(&mut cell, owner, seq);
                    send.send((cell, owner, seq)).unwrap();
                }
            });
        }
        drop(send);
        // The consumer gives half the cells to its own stash and drops the other half, so
        // cells cross between stashes, the grid and threads every way there is.
        let (ledger, grid) = (&ledger, &grid);
        s.spawn(move || {
            let mut stash = grid.stash();
            let mut received = 0;
            while let Some((cell, owner, seq)) = receive(&receiver) {
                ledger.release(&cell, owner, seq);
                if seq % 2 == 0 {
                    stash.give(cell);
                } else {
                    drop(cell);
                }
                received += 1;
            }
            assert_eq!(received, 2 * PER_PRODUCER);
        });
    });
    assert_eq!(grid.remaining(), 256);
}

/// Owned cells from `std::thread::spawn`ed threads (nothing scoped): each producer keeps some
/// and sends every third to a consumer, which checks and drops it; every cell is stamped and
/// checked by whoever lets it go.
#[test]
fn stress_owned_cells_across_spawned_threads() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = if cfg!(miri) { 100 } else { 200_000 };
    type Frames = Grid<64, 128>;
    let grid = Arc::new(grid::<64, 128>());
    let ledger = Arc::new(Ledger::new(128));
    let (send, receiver) = mpsc::channel::<(OwnedCell<64, 128>, u64, u64)>();
    let producers: Vec<_> = (1..=THREADS)
        .map(|owner| {
            let (grid, ledger, send): (Arc<Frames>, _, _) =
                (Arc::clone(&grid), Arc::clone(&ledger), send.clone());
            thread::spawn(move || {
                let mut held = VecDeque::new();
                for seq in 0..PER_THREAD {
                    let deadline = Deadline::start();
                    let mut cell = loop {
                        if let Some(cell) = grid.take_owned() {
                            break cell;
                        }
                        deadline.check("a free cell");
                        // The consumer drops what it receives; let go of ours too, so that
                        // the producers never all wait on each other.
                        for (cell, seq) in held.drain(..) {
                            ledger.release(&cell, owner, seq);
                        }
                        thread::yield_now();
                    };
                    ledger.claim(&mut cell, owner, seq);
                    if seq % 3 == 0 {
                        send.send((cell, owner, seq)).unwrap();
                        continue;
                    }
                    held.push_back((cell, seq));
                    let depth = 1 + (seq / 100 + owner) % 8;
                    while held.len() as u64 > depth {
                        let (cell, seq) = held.pop_front().unwrap();
                        ledger.release(&cell, owner, seq);
                    }
                }
                for (cell, seq) in held {
                    ledger.release(&cell, owner, seq);
                }
            })
        })
        .collect();
    drop(send);
    let consumer = {
        let ledger = Arc::clone(&ledger);
        thread::spawn(move || {
            let mut received = 0;
            while let Some((cell, owner, seq)) = receive(&receiver) {
                ledger.release(&cell, owner, seq);
                received += 1;
            }
            received
        })
    };
    for producer in producers {
        producer.join().unwrap();
    }
    assert_eq!(consumer.join().unwrap(), THREADS * PER_THREAD.div_ceil(3));
    assert_eq!(
        Arc::strong_count(&grid),
        1,
        "every owned cell let go of the grid"
    );
    assert_eq!(grid.remaining(), 128);
    assert_eq!(take_all(&grid).len(), 128);
}
