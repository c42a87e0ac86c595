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

/// What the tape has reserved: its shared cursor, with every thread's chunk in it. (`used()`
/// leaves out the unused rest of the calling thread's chunk.)
fn reserved(tape: &Tape) -> usize {
    tape.counters.cursor.load(crate::sync::Ordering::Relaxed)
}

/// No two spans share a byte, and none ends past the capacity.
fn assert_disjoint(tape: &Tape, spans: &mut [Range<usize>]) {
    spans.sort_by_key(|span| span.start);
    for pair in spans.windows(2) {
        assert!(pair[0].end <= pair[1].start, "overlap: {pair:?}");
    }
    assert!(spans.iter().all(|span| span.end <= tape.capacity()));
}

// Under loom a thread settles on a tape at its first take and claims chunks of 32 bytes,
// then 64 (see `per_thread`), so these models reach chunks and refills in a few steps. The
// first chunk claimed on a tape starts at 0, the next on the following free cache line.

#[test]
fn takes_from_two_threads_chunks_never_overlap() {
    loom::model(|| {
        let tape = tape();
        let other = {
            let tape = tape.clone();
            thread::spawn(move || {
                [
                    span(&tape, tape.take(3, 1), 3),
                    span(&tape, tape.take(8, 1), 8),
                ]
            })
        };
        let mine = [
            span(&tape, tape.take(8, 1), 8),
            span(&tape, tape.take(8, 1), 8),
        ];
        let theirs = other.join().unwrap();
        // One thread's takes follow each other inside its chunk.
        assert_eq!(mine[1].start, mine[0].end);
        assert_eq!(theirs[1].start, theirs[0].end);
        let mut starts = [mine[0].start, theirs[0].start];
        starts.sort();
        assert_eq!(starts, [0, 128]);
        let mut spans = [mine, theirs].concat();
        assert_disjoint(&tape, &mut spans);
        assert_eq!(reserved(&tape), 128 + 32);
    });
}

#[test]
fn a_threads_chunk_refills_while_another_takes() {
    loom::model(|| {
        let tape = tape();
        let other = {
            let tape = tape.clone();
            thread::spawn(move || {
                // A chunk of 32 bytes, then one of 64: the fifth take needs the second, which
                // joins the first if nobody took in between and starts elsewhere otherwise.
                (0..5)
                    .map(|_| span(&tape, tape.take(8, 1), 8))
                    .collect::<Vec<_>>()
            })
        };
        // Large against a first chunk: exactly at the shared cursor.
        let mut spans = vec![span(&tape, tape.take(24, 1), 24)];
        let theirs = other.join().unwrap();
        for pair in theirs[..4].windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "within the first chunk");
        }
        spans.extend(theirs);
        assert_disjoint(&tape, &mut spans);
        assert!(reserved(&tape) >= spans.last().unwrap().end);
    });
}

#[test]
fn clear_shared_takes_back_a_chunk_another_thread_holds() {
    loom::model(|| {
        let tape = tape();
        // This thread settles and holds a chunk of 32 bytes with 24 left.
        assert_eq!(span(&tape, tape.take(8, 1), 8), 0..8);
        let clearer = {
            let tape = tape.clone();
            thread::spawn(move || {
                let theirs = span(&tape, tape.take(8, 1), 8);
                // SAFETY: the spawning thread uses nothing it took, and the join orders this
                // clear before its next take; this thread's own take is not used after.
                unsafe { tape.clear_shared() };
                theirs
            })
        };
        assert_eq!(
            clearer.join().unwrap(),
            128..136,
            "a chunk on the next cache line"
        );
        // The chunk from before the clear is gone: the next take starts the tape again (in a
        // chunk of 64 now), instead of handing out bytes 8..16.
        assert_eq!(span(&tape, tape.take(8, 1), 8), 0..8);
        assert_eq!((tape.used(), reserved(&tape)), (8, 64));
    });
}

#[test]
fn rewind_after_join_takes_back_every_threads_chunk() {
    loom::model(|| {
        let mut tape = tape();
        let other = {
            let tape = tape.clone();
            thread::spawn(move || span(&tape, tape.take(8, 1), 8))
        };
        let mark = tape.mark();
        let mine = span(&tape, tape.take(8, 1), 8);
        let theirs = other.join().unwrap();
        assert_disjoint(&tape, &mut [mine, theirs]);

        let tape = Arc::get_mut(&mut tape).expect("the other thread is gone");
        assert_eq!(reserved(tape), 128 + 32);
        // This thread's own chunk has 24 bytes left, which `used` leaves out.
        assert_eq!(tape.used(), 128 + 8);
        tape.rewind(mark);
        assert_eq!(tape.used(), mark.used());
        // This thread's chunk went with the rewind, which handed it a fresh one at the mark,
        // with no atomic step.
        let again = span(tape, tape.take(8, 1), 8);
        assert_eq!(again.start, mark.used());
        tape.clear();
        assert_eq!((tape.used(), tape.peak()), (0, 136));
        assert_eq!(span(tape, tape.take(8, 1), 8), 0..8);
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
        assert!(reserved(&tape) >= spans.last().unwrap().end);
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
        assert_eq!(spans, [0..8, 128..136]);
        // The lane's chunk (64) came first and this thread's chunk (32) on the next cache
        // line, the lane handing its tail back before or after (fenced in); or this thread's
        // came first, and the lane handed back the tail of its chunk at 128. The peak counts
        // what was reserved.
        match reserved(&tape) {
            // As this thread sees it, without the 24 bytes left in its own chunk.
            160 => assert_eq!(tape.peak(), 136),
            136 => assert_eq!(tape.peak(), 128 + 64),
            used => panic!("used {used}"),
        }
    });
}

/// The path Apple silicon takes first: compare-and-swap at the shared cursor until one
/// exchange fails, then per-thread chunks. Checked here on every platform.
#[test]
fn takes_until_contended_switch_to_chunks_when_an_exchange_fails() {
    loom::model(|| {
        let tape = tape();
        let other = {
            let tape = tape.clone();
            thread::spawn(move || span(&tape, tape.take_until_contended(8, 1), 8))
        };
        let mine = span(&tape, tape.take_until_contended(8, 1), 8);
        let theirs = other.join().unwrap();
        let mut spans = [mine, theirs];
        assert_disjoint(&tape, &mut spans);
        let contended = tape.counters.contended.load(crate::sync::Ordering::Relaxed);
        if contended {
            // The loser took from a chunk of its own, on the next cache line.
            assert_eq!(spans, [0..8, 128..136]);
            assert_eq!(reserved(&tape), 128 + 32);
        } else {
            // Both exchanges succeeded, one after the other, exactly.
            assert_eq!(spans, [0..8, 8..16]);
            assert_eq!(reserved(&tape), 16);
        }
    });
}

/// A thread holding chunks of two tapes (weights beside scratch) while another thread takes
/// from both, across a clear of one of them: no byte is handed out twice, and the chunk of
/// the tape that was not cleared lives on.
#[test]
fn a_thread_holding_chunks_of_two_tapes_across_a_clear() {
    loom::model(|| {
        let (weights, mut scratch) = (tape(), tape());
        let w0 = span(&weights, weights.take(8, 1), 8);
        let s0 = span(&scratch, scratch.take(8, 1), 8);
        let other = {
            let (weights, scratch) = (weights.clone(), scratch.clone());
            thread::spawn(move || {
                [
                    span(&scratch, scratch.take(8, 1), 8),
                    span(&weights, weights.take(8, 1), 8),
                ]
            })
        };
        let w1 = span(&weights, weights.take(8, 1), 8);
        let [theirs_s, theirs_w] = other.join().unwrap();
        assert_eq!(w1.start, w0.end, "the weights chunk serves on");
        assert_disjoint(&weights, &mut [w0.clone(), w1.clone(), theirs_w]);
        assert_disjoint(&scratch, &mut [s0, theirs_s.clone()]);

        Arc::get_mut(&mut scratch)
            .expect("the other thread is gone")
            .clear();
        // The clear handed this thread a fresh chunk of the scratch tape at 0, with no atomic
        // step; the weights chunk is untouched.
        let other = {
            let scratch = scratch.clone();
            thread::spawn(move || span(&scratch, scratch.take(8, 1), 8))
        };
        let mine = span(&scratch, scratch.take(8, 1), 8);
        assert_eq!(mine, 0..8);
        assert_eq!(span(&weights, weights.take(8, 1), 8).start, w1.end);
        let theirs = other.join().unwrap();
        assert_disjoint(&scratch, &mut [mine, theirs.clone()]);
        assert!(
            theirs.start >= 32,
            "past the chunk the clear reserved: {theirs:?}"
        );
    });
}

/// A scope giving its scratch back at the shared cursor while another thread takes: the
/// give-back happens only if nobody took after the scratch, and no byte goes out twice.
#[test]
fn a_scope_gives_back_only_what_nobody_took_after() {
    loom::model(|| {
        let tape = tape();
        let other = {
            let tape = tape.clone();
            thread::spawn(move || span(&tape, tape.take(8, 1), 8))
        };
        // Large against a first chunk: exactly at the shared cursor.
        let scratch = tape.scope(|s| span(&tape, s.take(24, 1), 24));
        let after = span(&tape, tape.take(24, 1), 24);
        let theirs = other.join().unwrap();
        assert_disjoint(&tape, &mut [after.clone(), theirs.clone()]);
        // Whichever came first, the scratch's give-back or the other thread's claim, the
        // other thread's bytes are nobody else's: the take after the scope (which reuses the
        // scratch when it came back) never overlaps them.
        assert!(scratch.end <= tape.capacity());
    });
}

/// A clear keeps the generation, and the chunk it hands the clearing thread with it, only
/// while no other thread claimed a chunk since the last clear: here another thread claims one
/// before the clear or after it, and takes on either side of it, under a lock that stands in
/// for `&mut`. Whatever the order, nothing taken after the clear shares a byte.
#[test]
fn a_clear_after_another_thread_claimed_ends_its_chunk() {
    loom::model(|| {
        let tape = Tape::start(4096).expect("the heap backend gives small blocks");
        let shared = Arc::new(loom::sync::Mutex::new((tape, false)));
        {
            let mut held = shared.lock().unwrap();
            let tape = &mut held.0;
            let _ = tape.take(8, 1).unwrap();
            tape.clear(); // this thread's chunk, of 64 bytes at 0
        }
        let other = {
            let shared = shared.clone();
            thread::spawn(move || {
                (0..2)
                    .map(|_| {
                        let held = shared.lock().unwrap();
                        (held.1, span(&held.0, held.0.take(8, 1), 8))
                    })
                    .collect::<Vec<_>>()
            })
        };
        let (mine, capacity) = {
            let mut held = shared.lock().unwrap();
            held.0.clear();
            held.1 = true;
            let tape = &held.0;
            // The first from the chunk at 0; the rest exactly at the shared cursor, which the
            // other thread's chunk lies past if it is from before the clear.
            let mine: Vec<_> = (0..3).map(|_| span(tape, tape.take(64, 1), 64)).collect();
            (mine, tape.capacity())
        };
        let theirs = other.join().unwrap();
        let mut spans: Vec<_> = theirs
            .into_iter()
            .filter(|&(after_the_clear, _)| after_the_clear)
            .map(|(_, span)| span)
            .chain(mine)
            .collect();
        spans.sort_by_key(|span| span.start);
        for pair in spans.windows(2) {
            assert!(pair[0].end <= pair[1].start, "overlap: {pair:?}");
        }
        assert!(spans.iter().all(|span| span.end <= capacity));
    });
}
