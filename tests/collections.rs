//! Collections on a tape through `allocator_api2::alloc::Allocator for &Tape` (feature
//! `allocator-api2`): they grow past their first capacity, stay inside the tape, and the tape
//! clears once they are gone.

use allocator_api2::alloc::{Allocator, Layout};
use allocator_api2::vec::Vec;
use hashbrown::HashMap;
use unimem::{Block, Pinning, Tape};

/// An unpinned tape, so that tests do not depend on the memory-lock limit.
fn tape(len: usize) -> Tape {
    Tape::on(Block::options().pinning(Pinning::Off).open(len).unwrap())
}

#[test]
fn a_vec_grows_on_the_tape_past_its_first_capacity_then_the_tape_clears() {
    let mut tape = tape(1 << 20);
    for round in 0..2u32 {
        let mut xs = Vec::with_capacity_in(4, &tape);
        let first = xs.capacity();
        for i in 0..10_000u32 {
            xs.push(i ^ round);
        }
        assert!(xs.capacity() > first);
        assert!(tape.owns(xs.as_ptr()));
        assert!(xs.iter().enumerate().all(|(i, &x)| x == i as u32 ^ round));
        drop(xs);
        tape.clear();
        assert_eq!(tape.used(), 0);
    }
}

#[test]
fn the_last_allocation_grows_in_place() {
    let tape = tape(4 << 20);
    // Larger than any lane's chunk, so that it comes straight from the tape's cursor.
    let mut xs: Vec<u64, _> = Vec::with_capacity_in(32 << 10, &tape);
    xs.extend(0..16);
    let end = tape.offset_of(xs.as_ptr()).unwrap() + xs.capacity() * 8;
    assert_eq!(
        end,
        tape.used(),
        "precondition: the vec is the last thing taken"
    );
    let before = xs.as_ptr();
    xs.reserve_exact(100 << 10);
    assert_eq!(
        xs.as_ptr(),
        before,
        "nothing was taken after it: it grows where it is"
    );
    assert!(xs.iter().copied().eq(0..16));
    let end = tape.offset_of(xs.as_ptr()).unwrap() + xs.capacity() * 8;
    assert_eq!(end, tape.used(), "no copy was left behind");
}

#[test]
fn an_allocation_that_is_not_the_last_moves_and_keeps_its_contents() {
    let tape = tape(1 << 20);
    let mut xs: Vec<u32, _> = Vec::with_capacity_in(8, &tape);
    xs.extend(0..8);
    let fence = tape.take_str("taken after xs").unwrap();
    let before = xs.as_ptr();
    xs.extend(8..1000);
    assert_ne!(xs.as_ptr(), before);
    assert!(xs.iter().copied().eq(0..1000));
    assert_eq!(fence, "taken after xs");
}

#[test]
fn two_vecs_grow_side_by_side_without_touching_each_other() {
    let tape = tape(1 << 20);
    let mut a = Vec::new_in(&tape);
    let mut b = Vec::new_in(&tape);
    for i in 0..5000u32 {
        a.push(i);
        b.push(!i);
    }
    assert!(a.iter().zip(&b).all(|(&x, &y)| x == !y));
    let (ra, rb) = (a.as_ptr_range(), b.as_ptr_range());
    assert!(ra.end <= rb.start || rb.end <= ra.start);
}

#[test]
fn a_hash_map_grows_on_the_tape_then_the_tape_clears() {
    let mut tape = tape(1 << 20);
    let mut index = HashMap::new_in(&tape);
    let first = index.capacity();
    for token in 0..2000u32 {
        index.insert(token, token * 2);
    }
    assert!(index.capacity() > first);
    assert_eq!(index.len(), 2000);
    assert!((0..2000).all(|t| index[&t] == t * 2));
    assert!(tape.used() > 2000 * 8);
    index.clear();
    assert!(index.is_empty());
    drop(index);
    tape.clear();
    assert_eq!(tape.used(), 0);
}

#[test]
fn allocation_fails_cleanly_when_the_tape_is_full() {
    let tape = tape(4096);
    let mut xs: Vec<u8, _> = Vec::new_in(&tape);
    assert!(xs.try_reserve(tape.capacity() + 1).is_err());
    assert!(xs.try_reserve(100).is_ok());
    let alloc = &tape;
    assert!(alloc.allocate(Layout::new::<[u8; 8192]>()).is_err());
}

#[test]
fn zero_sized_allocations_take_nothing_and_are_aligned() {
    let tape = tape(4096);
    let alloc = &tape;
    for align in [1, 8, 4096, 1 << 20] {
        let layout = Layout::from_size_align(0, align).unwrap();
        let block = alloc.allocate(layout).unwrap();
        assert_eq!(block.len(), 0);
        assert_eq!(block.cast::<u8>().as_ptr() as usize % align, 0);
        // SAFETY: allocated just above with this layout.
        unsafe { alloc.deallocate(block.cast(), layout) };
    }
    let mut units = Vec::new_in(&tape);
    units.extend(core::iter::repeat_n((), 1000));
    assert_eq!(units.len(), 1000);
    assert_eq!(tape.used(), 0);
}

#[test]
fn shrinking_keeps_the_contents() {
    let tape = tape(1 << 20);
    let mut xs = Vec::with_capacity_in(1000, &tape);
    xs.extend(0..10u16);
    xs.shrink_to_fit();
    assert!(xs.capacity() >= 10 && xs.capacity() < 1000);
    assert!(xs.iter().copied().eq(0..10));
    xs.extend(10..2000);
    assert!(xs.iter().copied().eq(0..2000));
}

#[test]
fn vecs_on_one_tape_grow_from_several_threads() {
    let tape = tape(8 << 20);
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let tape = &tape;
            s.spawn(move || {
                let mut xs = Vec::new_in(tape);
                for i in 0..2000 {
                    xs.push(t << 16 | i);
                    let _ = tape.take(8, 8).unwrap(); // others take in between
                }
                assert!(xs.iter().enumerate().all(|(i, &x)| x == t << 16 | i as u32));
            });
        }
    });
}

#[test]
fn grow_and_shrink_honour_a_stricter_new_alignment() {
    let tape = tape(1 << 20);
    let alloc = &tape;
    let small = Layout::from_size_align(8, 8).unwrap();
    tape.take(1, 1).unwrap(); // so that the next take is not page-aligned
    let old = alloc.allocate(small).unwrap().cast::<u8>();
    assert_ne!(old.as_ptr() as usize % 4096, 0);
    // SAFETY: `old` is valid for the 8 bytes of `small`, and every block below is used
    // within the layout it was made with, then given back with it.
    unsafe {
        old.write_bytes(7, 8);
        let big = Layout::from_size_align(64, 4096).unwrap();
        let grown = alloc.grow(old, small, big).unwrap().cast::<u8>();
        assert_eq!(grown.as_ptr() as usize % 4096, 0);
        assert_eq!(core::slice::from_raw_parts(grown.as_ptr(), 8), &[7; 8]);
        let strict_small = Layout::from_size_align(4, 8192).unwrap();
        let shrunk = alloc.shrink(grown, big, strict_small).unwrap().cast::<u8>();
        assert_eq!(shrunk.as_ptr() as usize % 8192, 0);
        assert_eq!(core::slice::from_raw_parts(shrunk.as_ptr(), 4), &[7; 4]);
        alloc.deallocate(shrunk, strict_small);
    }
}

/// The short names (`TapeVec`, `TapeString`, `TapeBox`), collecting onto a tape, `tape_vec!`,
/// the re-exported allocator-api2, and collections through a `Steps` guard.
mod short_names {
    use super::tape;
    use core::fmt::Write;
    use hashbrown::{DefaultHashBuilder, HashMap};
    use unimem::allocator_api2;
    use unimem::{CollectIn, Steps, Tape, TapeBox, TapeString, TapeVec, tape_vec};

    #[test]
    fn collect_vec_and_collect_in_build_on_the_tape() {
        let tape = tape(1 << 20);
        let xs = tape.collect_vec((0..5000u32).map(|x| x * 3));
        assert!(tape.owns(xs.as_ptr()));
        assert!(xs.iter().copied().eq((0..5000).map(|x| x * 3)));
        let ys: TapeVec<'_, u64> = (0..100u64).filter(|x| x % 7 == 0).collect_in(&tape);
        assert_eq!(ys.len(), 15);
        assert!(tape.owns(ys.as_ptr()));
        let words: TapeString<'_> = ["per", "-", "layer"].into_iter().collect_in(&tape);
        assert_eq!(words, "per-layer");
        let letters: TapeString<'_> = "abc".chars().rev().collect_in(&tape);
        assert_eq!(letters, "cba");
        assert!(tape.owns(letters.as_ptr()));
    }

    #[test]
    fn collecting_grows_in_place_and_leaves_no_copies() {
        let tape = tape(1 << 20);
        // From an iterator with no size hint, so the vec grows many times.
        let n = if cfg!(miri) { 4000 } else { 40_000u32 };
        let xs = tape.collect_vec((0..n).filter(|x| x % 2 == 0));
        assert_eq!(xs.len() as u32, n / 2);
        let bytes = xs.capacity() * 4;
        // Each copy left behind would be half the final size or more.
        assert!(
            tape.used() < bytes + bytes / 4,
            "{} bytes used for a vec of {bytes}: copies were left behind",
            tape.used()
        );
    }

    #[test]
    fn tape_vec_takes_all_three_forms_and_any_element_type() {
        let tape = tape(1 << 16);
        let xs = tape_vec![in &tape; 1u32, 2, 3,];
        assert_eq!(xs, [1, 2, 3]);
        let names =
            tape_vec![in &tape; TapeString::from_str_in("a", &tape), TapeString::new_in(&tape)];
        assert_eq!(names[0], "a");
        let zeros = tape_vec![in &tape; [0u8; 3]; 100];
        assert_eq!(zeros.len(), 100);
        assert!(zeros.iter().all(|z| *z == [0; 3]));
        let mut empty: TapeVec<'_, u16> = tape_vec![in &tape];
        empty.push(9);
        for v in [
            xs.as_ptr().cast::<u8>(),
            zeros.as_ptr().cast(),
            empty.as_ptr().cast(),
        ] {
            assert!(tape.owns(v));
        }
    }

    #[test]
    fn a_tape_string_writes_formats_and_keys_a_map_by_str() {
        let tape = tape(1 << 16);
        let mut map: HashMap<TapeString<'_>, usize, DefaultHashBuilder, &Tape> =
            HashMap::new_in(&tape);
        for layer in 0..20 {
            let mut key = TapeString::new_in(&tape);
            write!(key, "layer.{layer}.weight").unwrap();
            map.insert(key, layer);
        }
        assert_eq!(map.get("layer.7.weight"), Some(&7));
        assert_eq!(map.len(), 20);
        let mut s = TapeString::with_capacity_in(4, &tape);
        s.push('é');
        s.push_str("t€");
        assert_eq!((s.len(), s.chars().count()), (2 + 1 + 3, 3));
        assert_eq!(format!("{s}|{s:?}"), "ét€|\"ét€\"");
        let kept: &str = s.into_str();
        assert!(tape.owns(kept.as_ptr()));
        assert_eq!(kept, "ét€");
    }

    #[test]
    fn the_reexported_allocator_api2_is_the_one_tape_implements() {
        let tape = tape(1 << 16);
        let mut xs = allocator_api2::vec::Vec::new_in(&tape);
        xs.extend_from_slice(&[1u8, 2, 3]);
        let short: &TapeVec<'_, u8> = &xs; // the alias names the same type
        assert_eq!(short.len(), 3);
        let boxed: TapeBox<'_, [u32; 4]> = allocator_api2::boxed::Box::new_in([5; 4], &tape);
        assert!(tape.owns(&*boxed));
    }

    #[test]
    fn workers_build_collections_through_their_step_guards() {
        let steps = Steps::new(tape(1 << 20));
        let (step_count, len) = if cfg!(miri) { (3, 50) } else { (20, 1000) };
        for step in 0..step_count {
            std::thread::scope(|s| {
                for worker in 0..2u32 {
                    let steps = &steps;
                    s.spawn(move || {
                        let guard = steps.enter();
                        let xs = guard.collect_vec((0..len).map(|i| step << 20 | worker << 16 | i));
                        let mut name = TapeString::new_in(&guard);
                        write!(name, "{step}/{worker}").unwrap();
                        assert!(
                            xs.iter()
                                .enumerate()
                                .all(|(i, &x)| x == step << 20 | worker << 16 | i as u32)
                        );
                        assert_eq!(name, format!("{step}/{worker}").as_str());
                    });
                }
            });
            steps
                .try_clear()
                .expect("every guard is gone after the scope");
        }
    }
}

/// Running out of tape in a collection: the `try_` forms answer instead of aborting.
mod out_of_tape {
    use super::tape;
    use unimem::TapeString;

    #[test]
    fn try_collect_vec_says_when_the_tape_is_full_and_a_clear_makes_room_again() {
        let mut tape = tape(4096);
        let capacity = tape.capacity();
        // No size hint, so it grows step by step until the tape runs out.
        let too_many = (0..capacity as u64).filter(|_| true);
        assert!(tape.try_collect_vec(too_many).is_err());
        // What the failed collection took stays taken until the tape is cleared.
        tape.clear();
        // With an exact size hint, the first reservation already fails, taking nothing.
        assert!(tape.try_collect_vec(0..capacity as u64).is_err());
        assert_eq!(tape.used(), 0);
        let fits = tape.try_collect_vec(0..8u8).expect("8 bytes fit");
        assert_eq!(fits, [0, 1, 2, 3, 4, 5, 6, 7]);
        let mut s = TapeString::new_in(&tape);
        assert!(s.try_reserve(capacity).is_err());
        assert!(s.try_reserve(16).is_ok());
        s.push_str("still usable");
        assert_eq!(s, "still usable");
    }
}

/// Pushes `n` values onto an empty vec on `tape`, checking after each push that it never
/// moved if `stays`; returns the tape bytes from the first push to the end of the final
/// buffer, and the final capacity in bytes.
fn push_and_measure(tape: &Tape, n: u64, stays: bool) -> (usize, usize) {
    let mut xs: Vec<u64, _> = Vec::new_in(tape);
    xs.push(0);
    let first = tape.offset_of(xs.as_ptr()).unwrap();
    for i in 1..n {
        xs.push(i);
        if stays {
            assert_eq!(
                tape.offset_of(xs.as_ptr()),
                Some(first),
                "moved at push {i}"
            );
        }
    }
    assert!(xs.iter().copied().eq(0..n));
    let end = tape.offset_of(xs.as_ptr()).unwrap() + xs.capacity() * 8;
    (end - first, xs.capacity() * 8)
}

#[test]
fn a_vec_pushed_to_grows_in_place_on_a_fresh_and_on_a_settled_thread() {
    let mut tape = tape(1 << 20);
    for round in 0..3 {
        // Round 0 starts exactly at the cursor; later rounds in the chunk a clear leaves.
        let (consumed, capacity) = push_and_measure(&tape, 1000, true);
        assert_eq!(consumed, capacity, "round {round}");
        tape.clear();
    }
    // Past a chunk's end, too: 100,000 values, 800 KB, grow past any chunk.
    let (consumed, capacity) =
        push_and_measure(&tape, if cfg!(miri) { 5000 } else { 100_000 }, true);
    assert_eq!(consumed, capacity);
}

#[test]
fn vecs_pushed_to_on_two_threads_keep_their_contents() {
    let tape = tape(1 << 20);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..3 {
                    // Another thread may claim after this one's chunk, or take exactly while
                    // this one settles: then it moves, keeping its contents.
                    let (_, capacity) = push_and_measure(&tape, 1000, false);
                    assert_eq!(capacity, 8 << 10);
                }
            });
        }
    });
}

#[test]
fn shrink_and_deallocate_give_the_last_allocation_back() {
    let tape = tape(1 << 20);
    for _ in 0..100 {
        let _ = tape.take(64, 8).unwrap(); // settled, in a chunk
    }
    let before = tape.used();
    let mut xs: Vec<u64, _> = Vec::with_capacity_in(256, &tape);
    xs.extend(0..10);
    assert_eq!(tape.used(), before + 256 * 8);
    xs.shrink_to_fit();
    assert_eq!(tape.used(), before + 10 * 8);
    drop(xs);
    assert_eq!(tape.used(), before);
    // At the shared cursor too: larger than a quarter of any chunk.
    let xs: Vec<u8, _> = Vec::with_capacity_in(1 << 18, &tape);
    assert!(tape.used() >= before + (1 << 18));
    drop(xs);
    assert_eq!(tape.used(), before);
}

/// std's `overaligned_allocations` test (library/alloc/tests/vec.rs), on a tape.
#[test]
fn std_overaligned_allocations_loop_reuses_one_buffer() {
    #[repr(align(256))]
    struct Foo(usize);
    let tape = tape(4 << 20);
    let mut v = Vec::new_in(&tape);
    v.push(Foo(273));
    let rounds = if cfg!(miri) { 64 } else { 0x1000 };
    for i in 0..rounds {
        v.reserve_exact(i);
        assert!(v[0].0 == 273);
        assert!(v.as_ptr() as usize & 0xff == 0);
        v.shrink_to_fit();
        assert!(v[0].0 == 273);
        assert!(v.as_ptr() as usize & 0xff == 0);
    }
    // One buffer, grown and shrunk in place: what the largest round needed, and no more.
    assert!(tape.peak() <= rounds * 256 + 4096, "{}", tape.peak());
}

#[test]
fn a_vec_in_a_scope_grows_in_place_and_comes_back() {
    let tape = tape(1 << 20);
    let kept = tape.take_fill(100, 1u8).unwrap();
    let mut settled = None;
    for layer in 0..if cfg!(miri) { 10 } else { 1000 } {
        tape.scope(|s| {
            let mut xs = Vec::new_in(s);
            xs.extend(0..1000u64);
            let tmp = s.take_fill(10, 2u8).unwrap();
            assert_eq!(xs.iter().sum::<u64>() + u64::from(tmp[0]), 499_502);
        });
        // Flat once the thread's chunks grew to a layer's size (they double, from 1 KiB, at
        // each exact take of 8 KB here), which leaves up to a cache line of padding once.
        if layer >= 8 {
            assert_eq!(
                *settled.get_or_insert(tape.used()),
                tape.used(),
                "layer {layer}"
            );
        }
    }
    assert!(tape.used() <= 128, "{}", tape.used());
    assert_eq!(kept[99], 1);
    assert!(tape.peak() <= 100 + 128 + 8000 + 10, "{}", tape.peak());
}
