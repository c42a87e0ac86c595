//! The typed takes that need no `unsafe`: values from a closure, from an exact-size iterator
//! (whose `len()` may lie), copies of strings, and the `Layout`-based raw take, on the tape
//! and on a lane. A panic while filling leaves the tape usable and hands nothing out.

use std::alloc::Layout;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use unimem::{Block, Pinning, Tape};

/// An unpinned tape, so that tests do not depend on the memory-lock limit.
fn tape(len: usize) -> Tape {
    Tape::on(Block::options().pinning(Pinning::Off).open(len).unwrap())
}

/// Whether two slices share any byte.
fn overlap<T, U>(a: &[T], b: &[U]) -> bool {
    let a = a.as_ptr_range();
    let b = b.as_ptr_range();
    (a.start as usize) < b.end as usize && (b.start as usize) < a.end as usize
}

/// Counts its drops, to show that a panic while filling drops nothing the tape holds.
struct Counted<'a>(&'a Cell<usize>);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// An iterator whose `len()` says `claims` while it yields `yields` items: 1, 2, 3, …
struct Lying {
    claims: usize,
    yields: usize,
    yielded: usize,
}

impl Lying {
    fn new(claims: usize, yields: usize) -> Lying {
        Lying {
            claims,
            yields,
            yielded: 0,
        }
    }
}

impl Iterator for Lying {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        (self.yielded < self.yields).then(|| {
            self.yielded += 1;
            self.yielded as u64
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.claims.saturating_sub(self.yielded);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Lying {}

#[test]
fn take_fill_with_calls_the_closure_once_per_index_in_order() {
    let tape = tape(64 << 10);
    let mut lane = tape.lane();
    let mut seen = Vec::new();
    let a = tape
        .take_fill_with(5, |i| {
            seen.push(i);
            i as u32 * 3
        })
        .unwrap();
    assert_eq!(seen, [0, 1, 2, 3, 4]);
    let b = lane.take_fill_with(3, |i| [i as u8; 3]).unwrap();
    assert_eq!(a, &[0, 3, 6, 9, 12]);
    assert_eq!(b, &[[0; 3], [1; 3], [2; 3]]);
    assert!(!overlap(a, b));
    assert!(tape.owns(a.as_ptr()) && tape.owns(b.as_ptr()));
}

#[test]
fn take_fill_with_calls_nothing_when_the_values_do_not_fit() {
    let tape = tape(4096);
    let mut lane = tape.lane_with_chunk(1024);
    let never = |_| -> u64 { panic!("called although nothing fits") };
    assert!(tape.take_fill_with(tape.capacity(), never).is_none());
    assert!(lane.take_fill_with(tape.capacity(), never).is_none());
    // Sizes that overflow `usize` are only too big, not a panic.
    assert!(tape.take_fill_with(usize::MAX, never).is_none());
    assert!(lane.take_fill_with(usize::MAX / 2, never).is_none());
}

#[test]
fn take_fill_with_of_nothing_takes_nothing() {
    let tape = tape(4096);
    assert_eq!(tape.take_fill_with(0, |_| 1u64).unwrap(), &[] as &[u64]);
    // Zero-sized values need no room, however many.
    let units = tape.take_fill_with(10_000, |_| ()).unwrap();
    assert_eq!(units.len(), 10_000);
    assert_eq!(
        tape.lane().take_fill_with(0, |_| 1u8).unwrap(),
        &[] as &[u8]
    );
    assert_eq!(tape.used(), 0);
}

#[test]
fn a_panic_while_filling_leaves_the_tape_usable_and_drops_nothing() {
    let mut tape = tape(64 << 10);
    let drops = Cell::new(0);
    let make = |i| {
        assert!(i < 5, "the closure gives up at index {i}");
        Counted(&drops)
    };
    let on_tape = panic::catch_unwind(AssertUnwindSafe(|| {
        let _ = tape.take_fill_with(8, make);
    }));
    assert!(on_tape.is_err());
    let on_lane = panic::catch_unwind(AssertUnwindSafe(|| {
        let _ = tape.lane().take_fill_with(8, make);
    }));
    assert!(on_lane.is_err());
    // The five values made each time are forgotten, as everything on a tape is.
    assert_eq!(drops.get(), 0);
    // The tape still hands out fresh, disjoint memory, and still clears.
    let a = tape.take_fill_with(100, |i| i as u16).unwrap();
    let b = tape.lane().take_fill_with(100, |i| !(i as u16)).unwrap();
    assert!(!overlap(a, b));
    assert!(a.iter().zip(b.iter()).all(|(&x, &y)| x == !y));
    assert!(tape.used() > 0);
    tape.clear();
    assert_eq!(tape.used(), 0);
}

#[test]
fn take_iter_moves_every_item_in_order() {
    let tape = tape(64 << 10);
    // Items with no heap memory of their own: nothing on a tape is ever dropped.
    let names = vec!["q", "k", "v"];
    let on_tape = tape.take_iter(names).unwrap();
    assert_eq!(on_tape, &["q", "k", "v"]);
    let mut lane = tape.lane();
    let squares = lane.take_iter((1..5u32).map(|x| x * x)).unwrap();
    assert_eq!(squares, &[1, 4, 9, 16]);
    assert_eq!(lane.take_iter([0u8; 0]).unwrap(), &[] as &[u8]);
    assert!(!overlap(on_tape, squares));
}

#[test]
fn take_iter_with_a_len_that_says_too_much_returns_what_came() {
    let tape = tape(64 << 10);
    let mut lane = tape.lane();
    let mut short = Lying::new(10, 3);
    assert_eq!(tape.take_iter(&mut short).unwrap(), &[1, 2, 3]);
    let mut short = Lying::new(10, 3);
    assert_eq!(lane.take_iter(&mut short).unwrap(), &[1, 2, 3]);
    let empty = tape.take_iter(Lying::new(1000, 0)).unwrap();
    assert!(empty.is_empty());
}

#[test]
fn take_iter_with_a_len_that_says_too_little_stops_there() {
    let tape = tape(64 << 10);
    let mut lane = tape.lane();
    let mut long = Lying::new(2, 10);
    assert_eq!(tape.take_iter(&mut long).unwrap(), &[1, 2]);
    // The rest stays in the iterator, untouched.
    assert_eq!(long.yielded, 2);
    assert_eq!(long.next(), Some(3));
    let mut long = Lying::new(2, 10);
    assert_eq!(lane.take_iter(&mut long).unwrap(), &[1, 2]);
    assert_eq!(long.yielded, 2);
}

#[test]
fn take_iter_takes_no_item_when_its_len_does_not_fit() {
    let tape = tape(4096);
    let mut lane = tape.lane_with_chunk(1024);
    let mut huge = Lying::new(usize::MAX, 3);
    assert!(tape.take_iter(&mut huge).is_none());
    assert!(lane.take_iter(&mut huge).is_none());
    let mut too_many = Lying::new(tape.capacity(), 3);
    assert!(tape.take_iter(&mut too_many).is_none());
    assert_eq!((huge.yielded, too_many.yielded), (0, 0));
}

#[test]
fn a_panic_in_the_iterator_leaves_the_tape_usable_and_drops_nothing() {
    let tape = tape(64 << 10);
    let drops = Cell::new(0);
    let items = || {
        (0..8).map(|i| {
            assert!(i < 3, "the iterator gives up at item {i}");
            Counted(&drops)
        })
    };
    assert!(
        panic::catch_unwind(AssertUnwindSafe(|| {
            let _ = tape.take_iter(items());
        }))
        .is_err()
    );
    assert!(
        panic::catch_unwind(AssertUnwindSafe(|| {
            let _ = tape.lane().take_iter(items());
        }))
        .is_err()
    );
    assert_eq!(drops.get(), 0);
    assert_eq!(tape.take_iter(0..3u8).unwrap(), &[0, 1, 2]);
}

#[test]
fn take_str_copies_the_text_and_lends_it_mutably() {
    let tape = tape(64 << 10);
    let mut lane = tape.lane();
    let a = tape.take_str("attention").unwrap();
    let b = lane.take_str("größe ✓").unwrap();
    a.make_ascii_uppercase();
    assert_eq!(a, "ATTENTION");
    assert_eq!(b, "größe ✓");
    assert_eq!(b.len(), "größe ✓".len());
    assert!(!overlap(a.as_bytes(), b.as_bytes()));
    assert_eq!(tape.take_str("").unwrap(), "");
}

#[test]
fn take_str_is_none_when_the_text_does_not_fit() {
    let tape = tape(4096);
    let text = "x".repeat(tape.capacity() + 1);
    assert!(tape.take_str(&text).is_none());
    assert!(tape.lane().take_str(&text).is_none());
}

#[test]
fn take_layout_honours_size_and_alignment() {
    let tape = tape(1 << 20);
    let mut lane = tape.lane_with_chunk(4096);
    for align in [1, 8, 64, 4096, 16384] {
        let layout = Layout::from_size_align(100, align).unwrap();
        for ptr in [tape.take_layout(layout), lane.take_layout(layout)] {
            let ptr = ptr.unwrap();
            assert_eq!(ptr.as_ptr() as usize % align, 0);
            let offset = tape.offset_of(ptr.as_ptr()).unwrap();
            assert!(offset + 100 <= tape.capacity());
        }
    }
    let words = Layout::array::<u64>(4).unwrap();
    let p = tape.take_layout(words).unwrap().cast::<u64>();
    // SAFETY: the take is 32 bytes aligned to 8, the tape's alone, and written before read.
    unsafe {
        p.write_bytes(0xAB, 4);
        assert_eq!(p.add(3).read(), 0xABAB_ABAB_ABAB_ABAB);
    }
}

#[test]
fn take_layout_is_none_when_the_layout_does_not_fit() {
    let tape = tape(4096);
    let too_big = Layout::from_size_align(tape.capacity() + 1, 1).unwrap();
    assert!(tape.take_layout(too_big).is_none());
    assert!(tape.lane().take_layout(too_big).is_none());
    let largest = Layout::from_size_align(isize::MAX as usize - 4095, 4096).unwrap();
    assert!(tape.take_layout(largest).is_none());
    // A zero-sized layout takes nothing.
    assert!(tape.take_layout(Layout::new::<()>()).is_some());
    assert_eq!(tape.used(), 0);
}

#[test]
fn lane_takes_outlive_the_lane() {
    let tape = tape(64 << 10);
    let (ids, name) = {
        let mut lane = tape.lane();
        (
            lane.take_iter(10..13u32).unwrap(),
            lane.take_str("lane").unwrap(),
        )
    };
    assert_eq!(ids, &[10, 11, 12]);
    assert_eq!(name, "lane");
}
