//! Model checks of the tape's atomics: every interleaving loom can find, not just the ones a
//! stress test happens to hit.

use super::Tape;
use core::ops::Range;
use core::ptr::NonNull;
use loom::sync::Arc;
use loom::thread;

fn tape() -> Arc<Tape> {
    Arc::new(Tape::start(4096).expect("the heap backend gives small blocks"))
}

/// Where a take landed, as offsets into the tape (pointers cannot cross threads).
fn span(tape: &Tape, ptr: Option<NonNull<u8>>, size: usize) -> Range<usize> {
    let start = tape
        .offset_of(ptr.expect("the tape has room").as_ptr())
        .expect("inside the tape");
    start..start + size
}

/// No two spans share a byte, and none ends past the capacity.
fn assert_disjoint(tape: &Tape, spans: &mut [Range<usize>]) {
    spans.sort_by_key(|span| span.start);
    for pair in spans.windows(2) {
        assert!(pair[0].end <= pair[1].start, "overlap: {pair:?}");
    }
    assert!(spans.iter().all(|span| span.end <= tape.capacity()));
}

#[test]
fn concurrent_takes_never_overlap() {
    loom::model(|| {
        let tape = tape();
        let other = {
            let tape = tape.clone();
            thread::spawn(move || span(&tape, tape.take(3, 1), 3))
        };
        let mine = span(&tape, tape.take(8, 8), 8);
        let theirs = other.join().unwrap();
        // Either order is possible; in both, the cursor ends exactly past the later take.
        let used = if theirs.start < mine.start {
            assert_eq!((theirs.clone(), mine.clone()), (0..3, 8..16));
            16
        } else {
            assert_eq!((mine.clone(), theirs.clone()), (0..8, 8..11));
            11
        };
        assert_eq!(tape.used(), used);
        assert_disjoint(&tape, &mut [mine, theirs]);
    });
}

#[test]
fn takes_race_a_lane_refilling() {
    loom::model(|| {
        let tape = tape();
        let lane_thread = {
            let tape = tape.clone();
            thread::spawn(move || {
                // Chunks of 16 bytes: the third take needs a second chunk.
                let mut lane = tape.lane_with_chunk(16);
                let spans: Vec<_> = (0..3).map(|_| span(&tape, lane.take(8, 8), 8)).collect();
                drop(lane);
                spans
            })
        };
        let mut spans = vec![
            span(&tape, tape.take(8, 8), 8),
            span(&tape, tape.take(8, 8), 8),
        ];
        spans.extend(lane_thread.join().unwrap());
        assert_disjoint(&tape, &mut spans);
        assert!(tape.used() >= spans.last().unwrap().end);
    });
}

#[test]
fn a_lane_gives_back_its_tail_only_if_nobody_took_after_it() {
    loom::model(|| {
        let tape = tape();
        let lane_thread = {
            let tape = tape.clone();
            thread::spawn(move || {
                let mut lane = tape.lane_with_chunk(64);
                span(&tape, lane.take(8, 1), 8)
            })
        };
        let taken = span(&tape, tape.take(8, 1), 8);
        let laned = lane_thread.join().unwrap();
        let mut spans = [taken, laned];
        assert_disjoint(&tape, &mut spans);
        // The lane's chunk came first and was handed back, or came first and was fenced in by
        // the take, or came second (aligned to 128) and was handed back. In every case the
        // tape counts exactly up to the last byte handed out.
        let placements = [[0..8, 8..16], [0..8, 64..72], [0..8, 128..136]];
        assert!(
            placements.contains(&spans),
            "unexpected placement {spans:?}"
        );
        assert_eq!(tape.used(), spans[1].end);
    });
}

#[test]
fn rewind_and_clear_after_join_see_every_take() {
    loom::model(|| {
        let mut tape = tape();
        let other = {
            let tape = tape.clone();
            thread::spawn(move || span(&tape, tape.take(100, 1), 100))
        };
        let mark = tape.mark();
        let mine = span(&tape, tape.take(50, 1), 50);
        let theirs = other.join().unwrap();
        assert_disjoint(&tape, &mut [mine.clone(), theirs.clone()]);

        let tape = Arc::get_mut(&mut tape).expect("the other thread is gone");
        assert_eq!(tape.used(), 150);
        tape.rewind(mark);
        assert_eq!(tape.used(), mark.used());
        tape.clear();
        assert_eq!((tape.used(), tape.peak()), (0, 150));
        // Everything is free again, from the start.
        assert_eq!(span(tape, tape.take(150, 1), 150), 0..150);
    });
}
