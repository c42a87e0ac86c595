//! Model checks of take, give and the stash under every interleaving loom can produce.
//!
//! Loom cannot watch the block's bytes, so each model keeps a shadow value per cell in a loom
//! `UnsafeCell` and has every owner write (and the next owner read) the shadow: loom then
//! reports any two owners of one cell at once, and any owner that is not ordered after the
//! previous one, as a data race.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`.

use super::{Cell, Grid};
use loom::cell::UnsafeCell;
use loom::thread;

/// A grid and the shadow of each of its cells.
struct Fixture<const N: usize> {
    grid: Grid<64, N>,
    shadow: [UnsafeCell<u64>; N],
}

impl<const N: usize> Fixture<N> {
    /// A fresh fixture for one execution. Loom threads must be `'static`, so it is leaked:
    /// a few KiB per execution.
    fn leaked() -> &'static Fixture<N> {
        Box::leak(Box::new(Fixture {
            grid: Grid::new().unwrap(),
            shadow: core::array::from_fn(|_| UnsafeCell::new(0)),
        }))
    }

    /// Writes `value` as the owner of `cell`.
    fn write(&self, cell: &Cell<'_, 64, N>, value: u64) {
        // SAFETY: only loom's shadow; loom itself checks that no other access overlaps.
        self.shadow[cell.index()].with_mut(|shadow| unsafe { *shadow = value });
    }

    /// Reads what the previous owner of `cell` wrote.
    fn read(&self, cell: &Cell<'_, 64, N>) -> u64 {
        // SAFETY: as in `write`.
        self.shadow[cell.index()].with(|shadow| unsafe { *shadow })
    }
}

#[test]
fn loom_two_takes_never_get_the_same_cell() {
    loom::model(|| {
        let fixture = Fixture::<2>::leaked();
        let taker = |value| {
            move || {
                let cell = fixture.grid.take().expect("two cells for two takers");
                fixture.write(&cell, value);
                cell
            }
        };
        let (a, b) = (thread::spawn(taker(1)), thread::spawn(taker(2)));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_ne!(a.index(), b.index());
        assert_eq!(fixture.grid.remaining(), 0);
        drop((a, b));
        assert_eq!(fixture.grid.remaining(), 2);
    });
}

#[test]
fn loom_one_cell_goes_to_one_of_two_takers() {
    loom::model(|| {
        let fixture = Fixture::<1>::leaked();
        let taker = move || fixture.grid.take();
        let (a, b) = (thread::spawn(taker), thread::spawn(taker));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert!(a.is_some() != b.is_some(), "exactly one take succeeds");
    });
}

#[test]
fn loom_a_taker_sees_what_the_giver_wrote() {
    loom::model(|| {
        let fixture = Fixture::<1>::leaked();
        let cell = fixture.grid.take().unwrap();
        let giver = thread::spawn(move || {
            fixture.write(&cell, 7);
            drop(cell);
        });
        if let Some(cell) = fixture.grid.take() {
            // The give happened before this take; so did the write before the give.
            assert_eq!(fixture.read(&cell), 7);
            fixture.write(&cell, 8);
        }
        giver.join().unwrap();
        assert_eq!(fixture.grid.remaining(), 1);
    });
}

#[test]
fn loom_a_stash_refill_races_a_take() {
    loom::model(|| {
        let fixture = Fixture::<3>::leaked();
        let stasher = thread::spawn(move || {
            let mut stash = fixture.grid.stash();
            let cell = stash.take().expect("nobody can take all three cells first");
            fixture.write(&cell, 1);
            cell // the stash returns what else it holds as it drops
        });
        let taken = fixture.grid.take();
        if let Some(cell) = &taken {
            fixture.write(cell, 2);
        }
        let stashed = stasher.join().unwrap();
        if let Some(cell) = &taken {
            assert_ne!(cell.index(), stashed.index());
        }
        drop((taken, stashed));
        assert_eq!(fixture.grid.remaining(), 3);
    });
}

#[test]
fn loom_a_stash_flush_races_takes() {
    loom::model(|| {
        let fixture = Fixture::<2>::leaked();
        let mut stash = fixture.grid.stash();
        let (a, b) = (stash.take().unwrap(), stash.take().unwrap());
        let stasher = thread::spawn(move || {
            fixture.write(&a, 1);
            fixture.write(&b, 2);
            stash.give(a);
            stash.give(b);
            // Dropping the stash returns both cells with one atomic operation.
        });
        let mut seen = Vec::new();
        while let Some(cell) = fixture.grid.take() {
            seen.push(fixture.read(&cell));
            fixture.write(&cell, 3);
            core::mem::forget(cell); // keep it out of the grid for the rest of the model
        }
        stasher.join().unwrap();
        // The flush returns both cells at once: the takes find neither or both, and see what
        // was written into them.
        assert!(seen.is_empty() || seen.len() == 2, "{seen:?}");
        assert!(
            seen.iter().all(|&value| value == 1 || value == 2),
            "{seen:?}"
        );
    });
}

#[test]
fn loom_a_refill_across_two_words_races_a_take() {
    loom::model(|| {
        // 66 cells: a word of 64 and a word of 2. Claiming 62 leaves 2 free in each word, so
        // the refill (which wants 32) takes from both words, one compare-and-swap each.
        let fixture = Fixture::<66>::leaked();
        let claimed = fixture
            .grid
            .free
            .claim_many(0, 62, |word, _| assert_eq!(word, 0));
        assert_eq!(claimed, 62);
        let stasher = thread::spawn(move || {
            let mut stash = fixture.grid.stash();
            let cell = stash
                .take()
                .expect("the taker can take one of four cells at most");
            fixture.write(&cell, 1);
            let more = stash.held();
            let mut held = vec![cell];
            held.extend((0..more).map(|_| stash.take().unwrap()));
            for cell in &held {
                fixture.write(cell, 1);
            }
            held // the stash is empty now; it drops with nothing to return
        });
        let taken = fixture.grid.take();
        if let Some(cell) = &taken {
            fixture.write(cell, 2);
        }
        let stashed = stasher.join().unwrap();
        // Every free cell went to exactly one of them: the refill took all it saw.
        assert_eq!(stashed.len() + usize::from(taken.is_some()), 4);
        let mut indices: Vec<_> = stashed.iter().chain(&taken).map(Cell::index).collect();
        indices.sort_unstable();
        assert_eq!(indices, [62, 63, 64, 65]);
        drop((taken, stashed));
        assert_eq!(fixture.grid.remaining(), 4);
    });
}

#[test]
fn loom_an_owned_cell_dropped_on_another_thread_is_seen_by_the_next_taker() {
    loom::model(|| {
        let grid = std::sync::Arc::new(Grid::<64, 1>::new().unwrap());
        let shadow: &'static UnsafeCell<u64> = Box::leak(Box::new(UnsafeCell::new(0)));
        let cell = grid.take_owned().unwrap();
        let giver = thread::spawn(move || {
            // SAFETY: only loom's shadow; loom itself checks that no other access overlaps.
            shadow.with_mut(|value| unsafe { *value = 7 });
            drop(cell);
        });
        if let Some(cell) = grid.take_owned() {
            // SAFETY: as above.
            assert_eq!(shadow.with(|value| unsafe { *value }), 7);
            // SAFETY: as above.
            shadow.with_mut(|value| unsafe { *value = 8 });
            drop(cell);
        }
        giver.join().unwrap();
        assert_eq!(grid.remaining(), 1);
        assert_eq!(std::sync::Arc::strong_count(&grid), 1);
    });
}
