//! The tape's behaviour, one guarantee per test. Concurrency under load lives in
//! `tape_stress.rs`; interleavings are model-checked by the loom tests inside the crate.

use core::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use unimem::{Block, Lane, Mark, Pinning, Tape};

/// An unpinned tape, so that tests do not depend on the memory-lock limit.
fn tape(len: usize) -> Tape {
    Tape::on(Block::options().pinning(Pinning::Off).open(len).unwrap())
}

fn offset(tape: &Tape, ptr: core::ptr::NonNull<u8>) -> usize {
    tape.offset_of(ptr.as_ptr()).expect("inside the tape")
}

#[test]
fn start_opens_a_tape_of_at_least_the_length_asked() {
    for tape in [Tape::start(5000).unwrap(), Tape::start_warm(5000).unwrap()] {
        assert!(tape.capacity() >= 5000);
        assert_eq!(tape.capacity(), tape.block().len());
        assert_eq!(
            (tape.used(), tape.remaining(), tape.peak()),
            (0, tape.capacity(), 0)
        );
    }
}

#[test]
fn every_power_of_two_alignment_is_honoured_by_tape_and_lane() {
    let tape = tape(4 << 20);
    let mut lane = tape.lane_with_chunk(4096);
    // Up to 64 KiB: well beyond the page size the block itself is aligned to.
    for shift in 0..=16 {
        let align = 1usize << shift;
        for size in [1, 3, align] {
            // Knock the cursors off alignment first.
            tape.take(1, 1).unwrap();
            lane.take(1, 1).unwrap();
            for ptr in [tape.take(size, align), lane.take(size, align)] {
                let ptr = ptr.unwrap_or_else(|| panic!("size {size} align {align}"));
                assert_eq!(ptr.as_ptr() as usize % align, 0, "align {align}");
                assert!(offset(&tape, ptr) + size <= tape.capacity());
            }
        }
    }
}

#[test]
fn alignment_padding_is_counted_and_minimal() {
    let tape = tape(4096);
    assert_eq!(offset(&tape, tape.take(3, 1).unwrap()), 0);
    assert_eq!(offset(&tape, tape.take(8, 8).unwrap()), 8);
    assert_eq!(offset(&tape, tape.take(1, 64).unwrap()), 64);
    assert_eq!(tape.used(), 65);
}

#[test]
fn impossible_sizes_return_none_and_take_nothing() {
    let tape = tape(4096);
    tape.take(10, 1).unwrap();
    let cap = tape.capacity();
    let top_align = 1usize << (usize::BITS - 1);
    for (size, align) in [
        (usize::MAX, 1),
        (usize::MAX, 4096),
        (usize::MAX - 5, 8),
        (isize::MAX as usize, 1),
        (cap, 1),
        (cap - 9, 1),
        (1, top_align),
    ] {
        assert!(
            tape.take(size, align).is_none(),
            "size {size} align {align}"
        );
        assert!(tape.lane().take(size, align).is_none(), "lane: size {size}");
    }
    assert!(
        tape.take_slice::<u64>(usize::MAX / 4).is_none(),
        "n * size overflows"
    );
    assert!(tape.take_slice::<u8>(isize::MAX as usize).is_none());
    assert!(tape.take_fill(cap, 0u8).is_none());
    assert!(tape.lane().take_slice::<u32>(usize::MAX).is_none());
    assert_eq!(tape.used(), 10, "failed takes must not move the cursor");
}

#[test]
fn the_tape_fills_exactly_to_capacity() {
    let tape = tape(8192);
    let cap = tape.capacity();
    let first = tape.take(cap - 1, 1).unwrap();
    assert_eq!(first, tape.block().as_non_null());
    let last = tape.take(1, 1).unwrap();
    assert_eq!(offset(&tape, last), cap - 1);
    assert_eq!((tape.used(), tape.remaining()), (cap, 0));
    assert!(tape.take(1, 1).is_none());
    assert!(tape.take_value(0u8).is_none());
    // Size 0 still answers, one past the end, and takes nothing.
    let end = tape.take(0, 1).unwrap();
    assert_eq!(end.as_ptr(), tape.block().as_ptr().wrapping_add(cap));
    assert_eq!(tape.take(0, 4096), Some(end), "the end is page-aligned");
    assert!(
        tape.take(0, 1 << (usize::BITS - 1)).is_none(),
        "no address there is aligned"
    );
    assert_eq!(tape.used(), cap);
}

#[test]
fn size_zero_is_aligned_and_consumes_nothing() {
    let tape = tape(4096);
    tape.take(1, 1).unwrap();
    let empty = tape.take(0, 64).unwrap();
    assert_eq!(offset(&tape, empty), 64);
    assert_eq!(tape.used(), 1);
    // The next real take may start at the same address.
    assert_eq!(tape.take(8, 64).unwrap(), empty);
    // Zero-sized typed takes succeed without touching the tape, even when it is full.
    tape.take(tape.remaining(), 1).unwrap();
    assert_eq!(tape.take_slice::<u64>(0).unwrap().len(), 0);
    assert_eq!(tape.take_fill(1000, ()).unwrap().len(), 1000);
    assert_eq!(tape.take_slice::<()>(usize::MAX).unwrap().len(), usize::MAX);
    assert_eq!(tape.take_copy::<u32>(&[]).unwrap(), &[] as &[u32]);
    assert_eq!(tape.used(), tape.capacity());
}

#[test]
#[should_panic(expected = "align must be a power of two (1, 2, 4, 8, ...), got 3")]
fn an_alignment_of_three_panics() {
    let _ = tape(4096).take(8, 3);
}

#[test]
#[should_panic(expected = "align must be a power of two (1, 2, 4, 8, ...), got 0")]
fn an_alignment_of_zero_panics() {
    let _ = tape(4096).take(0, 0);
}

#[test]
#[should_panic(expected = "align must be a power of two (1, 2, 4, 8, ...), got 24")]
fn a_lane_rejects_bad_alignments_too() {
    let _ = tape(4096).lane().take(8, 24);
}

#[test]
#[should_panic(expected = "chunks of at least 1 byte")]
fn a_lane_of_empty_chunks_panics() {
    let _ = tape(4096).lane_with_chunk(0);
}

#[test]
fn typed_takes_hold_what_was_put_in() {
    let tape = tape(1 << 20);
    let slots = tape.take_slice::<u32>(5).unwrap();
    for (i, slot) in slots.iter_mut().enumerate() {
        slot.write(i as u32 * 3);
    }
    let copied = tape.take_copy(&[1.5f64, -2.0, 8.25]).unwrap();
    let filled = tape.take_fill(7, Label(42)).unwrap();
    let value = tape.take_value([9u16; 3]).unwrap();
    copied[1] += 1.0;
    value[2] = 0;
    // Everything taken is alive at once, and disjoint.
    // SAFETY: every slot was written above.
    let slots: Vec<u32> = slots.iter().map(|s| unsafe { s.assume_init() }).collect();
    assert_eq!(slots, [0, 3, 6, 9, 12]);
    assert_eq!(copied, &[1.5, -1.0, 8.25]);
    assert_eq!(filled, vec![Label(42); 7]);
    assert_eq!(*value, [9, 9, 0]);
    assert_eq!(tape.offset_of(copied.as_ptr()).unwrap() % 8, 0);
    assert_eq!(tape.used(), 20 + 4 + 24 + 7 * 4 + 6);
}

/// A `Clone` type that is not `Copy`, so `take_fill` has to clone it.
#[derive(Debug, Clone, PartialEq)]
struct Label(u32);

#[test]
fn typed_takes_honour_alignments_above_a_page() {
    #[repr(align(16384))]
    struct Page([u8; 16]);

    let tape = tape(1 << 20);
    tape.take(1, 1).unwrap();
    let page = tape.take_value(Page([7; 16])).unwrap();
    assert_eq!(core::ptr::from_mut(page) as usize % 16384, 0);
    assert_eq!(page.0, [7; 16]);
    let pages = tape.lane().take_slice::<Page>(2).unwrap();
    assert_eq!(pages.as_ptr() as usize % 16384, 0);
}

static DROPS: AtomicUsize = AtomicUsize::new(0);

struct Noisy;

impl Drop for Noisy {
    fn drop(&mut self) {
        DROPS.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn destructors_never_run_on_tape_memory() {
    let mut tape = tape(4096);
    tape.take_value(Noisy).unwrap();
    tape.lane().take_value(Noisy).unwrap();
    tape.clear();
    drop(tape);
    assert_eq!(DROPS.load(Ordering::Relaxed), 0);
}

#[test]
fn clear_frees_everything_and_records_the_peak() {
    // Less than 1 KiB in all, so that this thread's takes stay exact (it does not settle on
    // the tape and hold a chunk, which `used` and `peak` would count).
    let mut tape = tape(1 << 16);
    let first = tape.take(96, 8).unwrap();
    tape.take(304, 8).unwrap();
    assert_eq!(tape.peak(), 400);
    tape.clear();
    assert_eq!(
        (tape.used(), tape.remaining(), tape.peak()),
        (0, tape.capacity(), 400)
    );
    // The same bytes come back, from the start.
    assert_eq!(tape.take(10, 8).unwrap(), first);
    tape.clear();
    tape.take(500, 1).unwrap();
    assert_eq!(tape.peak(), 500, "the current use counts before any clear");
    tape.clear();
    tape.take(10, 1).unwrap();
    assert_eq!(tape.peak(), 500);
}

#[test]
fn clear_shared_frees_everything_too() {
    let tape = tape(4096);
    tape.take(100, 1).unwrap();
    // SAFETY: nothing taken is used again, and no other thread or lane exists.
    unsafe { tape.clear_shared() };
    assert_eq!((tape.used(), tape.peak()), (0, 100));
}

#[test]
fn rewind_goes_back_to_the_mark_and_no_further() {
    let mut tape = tape(4096);
    tape.take(100, 1).unwrap();
    let mark = tape.mark();
    assert_eq!(mark.used(), 100);
    let scratch = tape.take(50, 1).unwrap();
    let inner = tape.mark();
    tape.take(50, 1).unwrap();
    tape.rewind(inner);
    assert_eq!(tape.used(), 150);
    tape.rewind(mark);
    assert_eq!(tape.used(), 100);
    assert_eq!(
        tape.take(50, 1).unwrap(),
        scratch,
        "the scratch bytes are reused"
    );
    tape.rewind(mark); // a mark can be used again and again
    tape.rewind(mark);
    assert_eq!((tape.used(), tape.peak()), (100, 200));
}

#[test]
#[should_panic(expected = "this mark was made by another tape")]
fn a_mark_from_another_tape_panics() {
    let mut a = tape(4096);
    let b = tape(4096);
    b.take(1, 1).unwrap();
    a.take(10, 1).unwrap();
    let foreign: Mark = b.mark();
    a.rewind(foreign);
}

#[test]
fn a_mark_from_a_dropped_tape_panics_even_at_the_same_address() {
    // The system soon hands a freed region of the same size out again (unless another test
    // thread gets it first): drop a tape and open the next until that happens, so that the
    // mark names the new tape's address.
    let (mark, mut new) = (0..10_000)
        .find_map(|_| {
            let old = tape(4096);
            old.take(10, 1).unwrap();
            let (mark, address) = (old.mark(), old.block().as_ptr());
            drop(old);
            let new = tape(4096);
            (new.block().as_ptr() == address).then_some((mark, new))
        })
        .expect("a dropped block's address came back within 10,000 tries");
    new.take(100, 1).unwrap();
    // The mark is behind the cursor and names this address: only the tape's identity can
    // tell that it is stale.
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| new.rewind(mark)))
        .expect_err("a stale mark was accepted");
    let message = panic.downcast_ref::<String>().expect("a formatted message");
    assert!(
        message.contains("perhaps one since dropped whose memory this tape reuses"),
        "{message}"
    );
}

#[test]
fn the_peak_counts_what_lanes_reserved_and_never_goes_down() {
    let mut tape = tape(2 << 20);
    tape.take(1000, 1).unwrap();
    let mut lane = tape.lane_with_chunk(1 << 20);
    lane.take(1, 1).unwrap();
    // 1000 bytes, padded to 1024 so that the lane's chunk starts a cache line, then 1 MiB.
    assert_eq!(tape.peak(), 1024 + (1 << 20));
    drop(lane);
    assert_eq!(
        tape.used(),
        1025,
        "the lane gave back the rest of its chunk"
    );
    assert_eq!(
        tape.peak(),
        1024 + (1 << 20),
        "but the peak remembers it was reserved"
    );
    tape.clear();
    assert_eq!(tape.peak(), 1024 + (1 << 20));
}

#[test]
#[should_panic(expected = "is ahead of the cursor")]
fn a_mark_from_before_a_clear_panics() {
    let mut tape = tape(4096);
    tape.take(10, 1).unwrap();
    let mark = tape.mark();
    tape.clear();
    tape.rewind(mark);
}

#[test]
fn owns_and_offset_of_locate_every_byte() {
    let tape = tape(8192);
    let cap = tape.capacity();
    let xs = tape.take_fill(100, 0u8).unwrap();
    let ys = tape.take_fill(3, 0u64).unwrap();
    assert_eq!(tape.offset_of(xs.as_ptr()), Some(0));
    assert_eq!(tape.offset_of(&xs[99]), Some(99));
    assert_eq!(tape.offset_of(ys.as_ptr()), Some(104));
    assert!(tape.owns(ys.as_ptr()) && tape.owns(&ys[2]));
    // Untaken bytes are still the tape's; anything outside is not.
    let base = tape.block().as_ptr();
    assert_eq!(tape.offset_of(base.wrapping_add(cap - 1)), Some(cap - 1));
    assert_eq!(tape.offset_of(base.wrapping_add(cap)), None);
    assert!(!tape.owns(base.wrapping_sub(1)));
    assert!(!tape.owns(&cap));
    let other = self::tape(4096);
    assert!(!other.owns(xs.as_ptr()));
}

#[test]
fn a_lane_takes_from_one_chunk_until_it_runs_out() {
    let tape = tape(1 << 16);
    let mut lane = tape.lane_with_chunk(256);
    assert_eq!(tape.used(), 0, "a lane claims nothing until it takes");
    let a = lane.take(100, 1).unwrap();
    assert_eq!((offset(&tape, a), tape.used()), (0, 256));
    let b = lane.take(100, 1).unwrap();
    assert_eq!((offset(&tape, b), tape.used()), (100, 256));
    // Nobody took in between: the next chunk extends this one, and nothing is lost.
    let c = lane.take(100, 1).unwrap();
    assert_eq!((offset(&tape, c), tape.used()), (200, 512));
    drop(lane);
    assert_eq!(tape.used(), 300, "the unused tail is handed back");
}

#[test]
fn a_lane_moves_past_takes_made_by_others() {
    let tape = tape(1 << 16);
    let mut lane = tape.lane_with_chunk(256);
    lane.take(120, 1).unwrap();
    let other = tape.take(1, 1).unwrap();
    assert_eq!(offset(&tape, other), 256);
    lane.take(120, 1).unwrap();
    // 16 bytes are left, too few for the next request and few enough to leave behind: the
    // next chunk starts after the other take, on a fresh 128-byte line.
    let c = lane.take(120, 1).unwrap();
    assert_eq!((offset(&tape, c), tape.used()), (384, 640));
    drop(lane);
    assert_eq!(tape.used(), 504);
}

#[test]
fn a_lane_keeps_a_large_rest_for_smaller_requests() {
    let tape = tape(1 << 16);
    let mut lane = tape.lane_with_chunk(256);
    lane.take(100, 1).unwrap();
    tape.take(1, 1).unwrap();
    lane.take(100, 1).unwrap();
    // 56 bytes are left: more than an eighth of the chunk, so this request goes to the tape...
    let direct = lane.take(100, 1).unwrap();
    assert_eq!((offset(&tape, direct), tape.used()), (257, 357));
    // ...and the rest still serves smaller ones.
    let small = lane.take(50, 1).unwrap();
    assert_eq!((offset(&tape, small), tape.used()), (200, 357));
}

#[test]
fn a_request_larger_than_a_chunk_bypasses_it() {
    let tape = tape(1 << 16);
    let mut lane = tape.lane_with_chunk(256);
    let a = lane.take(10, 1).unwrap();
    let big = lane.take(1000, 1).unwrap();
    assert_eq!((offset(&tape, big), tape.used()), (256, 1256));
    let b = lane.take(10, 1).unwrap();
    assert_eq!(
        offset(&tape, b),
        offset(&tape, a) + 10,
        "the chunk was kept"
    );
    drop(lane);
    // The tail cannot be handed back past the big take: it stays counted, and bounded.
    assert_eq!(tape.used(), 1256);
}

#[test]
fn a_dropped_lane_keeps_what_others_claimed_after_it() {
    let tape = tape(1 << 20);
    let mut lane = tape.lane();
    lane.take(1, 1).unwrap();
    assert_eq!(tape.used(), Lane::DEFAULT_CHUNK);
    tape.take(1, 1).unwrap();
    drop(lane);
    assert_eq!(tape.used(), Lane::DEFAULT_CHUNK + 1);
}

#[test]
fn lanes_hold_back_at_most_one_chunk_each() {
    const LANES: usize = 4;
    const CHUNK: usize = 1024;
    const LARGEST: usize = 37;
    let tape = tape(1 << 20);
    let mut lanes: Vec<_> = (0..LANES).map(|_| tape.lane_with_chunk(CHUNK)).collect();
    let mut taken = 0;
    for round in 0..500 {
        // Interleaved, so that every refill has to move to a fresh chunk.
        for lane in &mut lanes {
            let size = 1 + round % LARGEST;
            lane.take(size, 1).unwrap();
            taken += size;
            // Held back: the rest of one chunk per lane. Left behind: less than the request
            // that did not fit, plus a cache line of alignment, per chunk.
            let chunks = tape.used() / CHUNK + LANES;
            let waste = tape.used() - taken;
            assert!(
                waste <= LANES * CHUNK + chunks * (LARGEST + 127),
                "waste {waste}"
            );
        }
    }
    drop(lanes);
    assert!(tape.used() >= taken);
    assert!(tape.used() - taken <= (tape.used() / CHUNK + LANES) * (LARGEST + 127));
}

#[test]
fn a_lane_uses_the_last_bytes_of_a_nearly_full_tape() {
    let tape = tape(4096);
    let cap = tape.capacity();
    // The default chunk is larger than the whole tape: every take goes to it directly.
    let mut lane = tape.lane();
    for _ in 0..cap / 64 {
        lane.take(64, 64).unwrap();
    }
    assert!(lane.take(1, 1).is_none());
    assert_eq!(tape.used(), cap);
}

#[test]
fn allocations_from_a_lane_outlive_it() {
    let mut tape = tape(1 << 16);
    let (xs, ys) = {
        let mut lane = tape.lane_with_chunk(128);
        let xs = lane.take_fill(40, 1u32).unwrap();
        let ys = lane.take_copy(&[2u8; 300]).unwrap();
        (xs, ys)
    };
    xs[0] = 5;
    assert_eq!(xs.iter().sum::<u32>(), 44);
    assert!(ys.iter().all(|&y| y == 2));
    tape.clear();
    assert_eq!(tape.used(), 0);
}

#[test]
fn lanes_on_threads_share_one_tape() {
    let mut tape = tape(1 << 20);
    let sums: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let mut lane = tape.lane_with_chunk(512);
                s.spawn(move || {
                    let mut total = 0;
                    for i in 0..100 {
                        let xs = lane.take_fill(10, t * 1000 + i).unwrap();
                        total += xs.iter().sum::<u64>();
                    }
                    total
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (t, sum) in sums.into_iter().enumerate() {
        assert_eq!(sum, 10 * (0..100).map(|i| t as u64 * 1000 + i).sum::<u64>());
    }
    assert!(tape.used() >= 4 * 100 * 80);
    tape.clear();
}

#[test]
fn tapes_and_lanes_cross_threads() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Tape>();
    sync::<Tape>();
    send::<Lane<'static>>();
    send::<Mark>();
    sync::<Mark>();
}

#[test]
fn debug_output_shows_the_figures() {
    let tape = tape(4096);
    tape.take(12, 1).unwrap();
    let text = format!("{tape:?}");
    assert!(text.contains("used: 12"), "{text}");
    assert!(
        text.contains(&format!("capacity: {}", tape.capacity())),
        "{text}"
    );
}

#[test]
fn a_take_slice_of_maybe_uninit_is_the_size_asked() {
    let tape = tape(4096);
    let xs: &mut [MaybeUninit<u16>] = tape.take_slice(9).unwrap();
    assert_eq!(xs.len(), 9);
    assert_eq!(tape.used(), 18);
}

/// Large enough for a thread to settle on each tape were it not for the other tapes; smaller
/// under Miri, where each take costs thousands of times more.
const ROUND_ROBIN_TAPE: usize = if cfg!(miri) { 4 << 10 } else { 64 << 10 };

/// Takes 1 byte from each tape in turn until none has room: how many bytes each gave.
fn take_round_robin(tapes: &[Tape]) -> [usize; 8] {
    let mut taken = [0usize; 8];
    let mut live = 8;
    while live > 0 {
        live = 0;
        for (tape, taken) in tapes.iter().zip(&mut taken) {
            if tape.take(1, 1).is_some() {
                *taken += 1;
                live += 1;
            }
        }
    }
    taken
}

/// Each tape handed out at least 90% of its capacity.
fn assert_nearly_all_used(tapes: &[Tape], taken: [usize; 8]) {
    for (tape, taken) in tapes.iter().zip(taken) {
        assert!(
            taken * 10 >= tape.capacity() * 9,
            "{taken} of {} bytes usable",
            tape.capacity()
        );
    }
}

#[test]
fn a_thread_moving_between_eight_tapes_can_use_nearly_all_of_each() {
    let tapes: Vec<Tape> = (0..8).map(|_| tape(ROUND_ROBIN_TAPE)).collect();
    assert_nearly_all_used(&tapes, take_round_robin(&tapes));
}

#[test]
fn two_threads_moving_between_eight_tapes_can_use_nearly_all_of_each() {
    let tapes: Vec<Tape> = (0..8).map(|_| tape(ROUND_ROBIN_TAPE)).collect();
    let [first, second] = std::thread::scope(|s| {
        let workers = [(); 2].map(|()| s.spawn(|| take_round_robin(&tapes)));
        workers.map(|w| w.join().unwrap())
    });
    assert_nearly_all_used(&tapes, core::array::from_fn(|i| first[i] + second[i]));
}

#[test]
fn one_thread_fills_a_tape_to_the_byte_through_its_chunks() {
    let tape = tape(if cfg!(miri) { 16 << 10 } else { 256 << 10 });
    let mut taken = 0;
    while tape.take(1, 1).is_some() {
        taken += 1;
    }
    assert_eq!(taken, tape.capacity());
    assert_eq!(tape.used(), tape.capacity());
}

#[test]
fn a_thread_takes_contiguously_and_used_counts_its_chunk() {
    let tape = tape(1 << 20);
    let mut end = 0;
    for _ in 0..if cfg!(miri) { 1000 } else { 10_000 } {
        let start = offset(&tape, tape.take(8, 8).unwrap());
        assert_eq!(start, end, "one thread's takes follow each other");
        end = start + 8;
    }
    // The thread holds the rest of its chunk, up to 64 KiB, as the docs say.
    assert!(
        tape.used() >= end && tape.used() - end <= 64 << 10,
        "{}",
        tape.used()
    );
    let mut lane = tape.lane();
    let laned = offset(&tape, lane.take(8, 8).unwrap());
    assert!(laned >= end, "a lane never gets bytes of a thread's chunk");
}

#[test]
fn clear_shared_takes_back_the_chunk_of_every_thread() {
    use std::sync::Barrier;
    let tape = tape(1 << 20);
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            // Enough takes to settle on the tape and hold a chunk.
            let before: Vec<usize> = (0..1000)
                .map(|_| offset(&tape, tape.take(64, 8).unwrap()))
                .collect();
            barrier.wait();
            barrier.wait();
            let after = offset(&tape, tape.take(64, 8).unwrap());
            (before, after)
        });
        barrier.wait();
        assert!(tape.used() >= 64_000);
        // SAFETY: the worker is parked at the barrier and uses nothing it took before; the
        // barriers order its takes before the clear and the clear before its next take.
        unsafe { tape.clear_shared() };
        barrier.wait();
        let (before, after) = worker.join().unwrap();
        assert_eq!(before.last(), Some(&(999 * 64)));
        assert_eq!(after, 0, "the take after the clear starts the tape afresh");
        assert_eq!(tape.peak(), tape.peak().max(64_000));
    });
}

#[test]
fn rewind_takes_back_every_threads_chunk_too() {
    let mut tape = tape(1 << 20);
    for _ in 0..1000 {
        let _ = tape.take(16, 8).unwrap();
    }
    let mark = tape.mark();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..1000 {
                let _ = tape.take(16, 8).unwrap();
            }
        });
    });
    tape.rewind(mark);
    // This thread's chunk (claimed before the mark) is gone with the rewind: its next take
    // comes from a chunk claimed at the cursor, at the mark (on the next cache line).
    let next = offset(&tape, tape.take(16, 8).unwrap());
    assert!(next >= mark.used() && next < mark.used() + 128, "{next}");
}

/// Takes `n` pieces of 64 bytes: enough, from 16 on, to settle on the tape and hold a chunk.
fn take_64s(tape: &Tape, n: usize) {
    for _ in 0..n {
        let _ = tape.take(64, 8).unwrap();
    }
}

/// What another thread sees as used: the shared cursor, with this thread's chunk in it.
fn used_elsewhere(tape: &Tape) -> usize {
    std::thread::scope(|s| s.spawn(|| tape.used()).join().unwrap())
}

#[test]
fn on_one_thread_used_and_peak_count_exactly_what_was_taken() {
    let mut tape = tape(1 << 20);
    take_64s(&tape, 100);
    assert_eq!(tape.used(), 6400);
    assert!(used_elsewhere(&tape) > 6400, "the thread holds a chunk");
    tape.clear();
    assert_eq!((tape.used(), tape.peak()), (0, 6400));
}

#[test]
fn a_clear_leaves_the_clearing_thread_a_chunk_that_nobody_else_gets() {
    let mut tape = tape(1 << 20);
    take_64s(&tape, 100);
    for _ in 0..3 {
        tape.clear();
        // The thread was settled on the tape: the clear handed it a chunk at 0 already.
        let reserved = used_elsewhere(&tape);
        assert!(reserved >= 1024, "{reserved}");
        assert_eq!(offset(&tape, tape.take(64, 8).unwrap()), 0);
        assert_eq!(offset(&tape, tape.take(64, 8).unwrap()), 64);
        assert_eq!(tape.used(), 128);
        // Another thread's takes land past the chunk.
        let theirs = std::thread::scope(|s| {
            s.spawn(|| offset(&tape, tape.take(1, 1).unwrap()))
                .join()
                .unwrap()
        });
        assert_eq!(theirs, reserved);
    }
}

#[test]
fn clears_past_a_run_of_generations_keep_chunks_right_on_both_tapes() {
    // A tape draws a fresh run of generations every 2^16 clears (2^4 under Miri): the clearing
    // thread keeps getting a chunk at 0, and its chunk of another tape is neither ended nor
    // mistaken for one of the cleared tape.
    // Each step takes past the 256-byte chunk the clear handed (a 64th of the tape), so the
    // thread claims another, and the next clear moves the generation on.
    let clears = if cfg!(miri) { 40 } else { (1 << 16) + 3 };
    let mut cleared = tape(16 << 10);
    let other = tape(1 << 20);
    take_64s(&cleared, 100);
    take_64s(&other, 100);
    let next_there = offset(&other, other.take(64, 8).unwrap()) + 64;
    for step in 0..clears {
        cleared.clear();
        let firsts: Vec<usize> = (0..5)
            .map(|_| offset(&cleared, cleared.take(64, 8).unwrap()))
            .collect();
        assert_eq!(firsts, [0, 64, 128, 192, 256], "step {step}");
    }
    assert_eq!((cleared.used(), cleared.peak()), (320, 6400));
    assert_eq!(offset(&other, other.take(64, 8).unwrap()), next_there);
    assert_eq!(other.used(), 6400 + 128);
}

#[test]
fn a_thread_that_never_took_gets_no_chunk_from_a_clear() {
    let mut tape = tape(1 << 20);
    std::thread::scope(|s| {
        s.spawn(|| take_64s(&tape, 100));
    });
    tape.clear();
    assert_eq!(used_elsewhere(&tape), 0);
}

#[test]
fn rewind_frees_what_the_calling_thread_took_after_the_mark() {
    let mut tape = tape(1 << 20);
    take_64s(&tape, 100);
    let mark = tape.mark();
    assert_eq!(mark.used(), 6400);
    for _ in 0..5 {
        take_64s(&tape, 10);
        tape.rewind(mark);
        assert_eq!(tape.used(), 6400);
        assert_eq!(offset(&tape, tape.take(64, 8).unwrap()), 6400);
        tape.rewind(mark);
    }
    assert_eq!(tape.peak(), 6400 + 640);
}

#[test]
fn a_mark_ends_a_chunk_that_others_claimed_after() {
    let mut tape = tape(1 << 20);
    take_64s(&tape, 100);
    std::thread::scope(|s| {
        s.spawn(|| take_64s(&tape, 100));
    });
    let mark = tape.mark();
    // This thread's chunk no longer ends at the cursor: the mark is the cursor, and this
    // thread's next takes lie after it, so the rewind frees them.
    let after = offset(&tape, tape.take(64, 8).unwrap());
    assert!(after >= mark.used(), "{after} {}", mark.used());
    tape.rewind(mark);
    assert_eq!(tape.used(), mark.used());
    assert_eq!(offset(&tape, tape.take(64, 8).unwrap()), mark.used());
}

#[test]
fn a_thread_keeps_a_chunk_with_more_than_an_eighth_left() {
    let tape = tape(1 << 20);
    // 127 exact takes settle the thread (1016 bytes); the 128th claims a first chunk of
    // 1 KiB, joined on: 1016..2040. The next chunk would be 2 KiB.
    for _ in 0..128 {
        let _ = tape.take(8, 1).unwrap();
    }
    let theirs = std::thread::scope(|s| {
        s.spawn(|| offset(&tape, tape.take(1, 1).unwrap()))
            .join()
            .unwrap()
    });
    assert_eq!(theirs, 2040, "another thread takes exactly at the cursor");
    // Leave 312 bytes of the chunk: more than an eighth of it.
    for _ in 0..11 {
        let _ = tape.take(64, 1).unwrap();
    }
    // 400 bytes do not fit in what is left, and the chunk cannot grow in place (the other
    // thread took after it): the request goes exactly to the cursor...
    assert_eq!(offset(&tape, tape.take(400, 1).unwrap()), 2041);
    // ...and the thread keeps its chunk for smaller ones.
    assert_eq!(offset(&tape, tape.take(8, 1).unwrap()), 1024 + 11 * 64);
}

#[test]
fn a_chunk_is_at_most_an_eighth_of_what_is_free() {
    let tape = tape(64 << 10);
    let big = tape.capacity() - 4096;
    // One large take settles the thread, exactly at the cursor.
    assert_eq!(offset(&tape, tape.take(big, 1).unwrap()), 0);
    // The next chunk would be 2 KiB, but only 4 KiB are free: it gets 512 bytes.
    assert_eq!(offset(&tape, tape.take(8, 1).unwrap()), big);
    let theirs = std::thread::scope(|s| {
        s.spawn(|| offset(&tape, tape.take(1, 1).unwrap()))
            .join()
            .unwrap()
    });
    assert_eq!(theirs, big + 512);
}

/// Takes 64 bytes from each tape in turn, `rounds` times; returns what was taken from each.
fn take_in_turn(tapes: &[Tape], rounds: usize) -> usize {
    let mut next = vec![None; tapes.len()];
    for _ in 0..rounds {
        for (tape, next) in tapes.iter().zip(&mut next) {
            let at = offset(tape, tape.take(64, 8).unwrap());
            // Nobody else takes: every tape's takes follow each other.
            assert!(next.is_none_or(|next| next == at));
            *next = Some(at + 64);
        }
    }
    rounds * 64
}

#[test]
fn a_thread_taking_from_up_to_four_tapes_in_turn_holds_a_chunk_of_each() {
    for n in 2..=4 {
        let tapes: Vec<Tape> = (0..n).map(|_| tape(1 << 20)).collect();
        let taken = take_in_turn(&tapes, if cfg!(miri) { 100 } else { 2000 });
        for tape in &tapes {
            let reserved = used_elsewhere(tape);
            // On the fast path: a chunk of each tape, and no more than one (64 KiB).
            assert!(reserved > taken, "{n} tapes: {reserved} for {taken}");
            assert!(
                reserved - taken <= 64 << 10,
                "{n} tapes: {reserved} for {taken}"
            );
            assert_eq!(tape.used(), taken);
        }
    }
}

#[test]
fn a_thread_taking_from_more_tapes_than_it_has_slots_takes_exactly() {
    let tapes: Vec<Tape> = (0..5).map(|_| tape(1 << 20)).collect();
    let taken = take_in_turn(&tapes, if cfg!(miri) { 100 } else { 2000 });
    for tape in &tapes {
        // Each take lost its slot before the tape came round again: it never settled.
        assert_eq!(used_elsewhere(tape), taken);
    }
}

#[test]
fn chunks_of_other_tapes_survive_a_clear_of_one() {
    let mut tapes: Vec<Tape> = (0..3).map(|_| tape(1 << 20)).collect();
    take_in_turn(&tapes, 100);
    tapes[0].clear();
    let reserved = used_elsewhere(&tapes[1]);
    for _ in 0..10 {
        assert_eq!(offset(&tapes[0], tapes[0].take(64, 8).unwrap()) % 64, 0);
        let _ = tapes[1].take(64, 8).unwrap();
    }
    assert_eq!(tapes[0].used(), 640);
    assert_eq!(tapes[1].used(), 6400 + 640);
    assert_eq!(used_elsewhere(&tapes[1]), reserved, "still the same chunk");
}

#[test]
fn a_scope_per_layer_keeps_used_flat_beside_values_taken_before() {
    let tape = tape(1 << 20);
    let x = tape.take_fill(256, 1.0f32).unwrap(); // lives across layers
    let mut after_first = None;
    for layer in 0..if cfg!(miri) { 20 } else { 1000 } {
        tape.scope(|s| {
            let tmp = s.take_fill(1024, 0.0f32).unwrap();
            tmp[layer % 1024] = x[0];
            x[1] += tmp.iter().sum::<f32>();
        });
        assert_eq!(
            *after_first.get_or_insert(tape.used()),
            tape.used(),
            "layer {layer}"
        );
    }
    assert_eq!(tape.used(), 1024);
    // The peak saw each layer's scratch, though no clear ever recorded it.
    assert_eq!(tape.peak(), 1024 + 4096);
    assert!(x[1] > 1.0);
}

#[test]
fn a_scope_gives_back_nothing_taken_from_the_tape_inside_it() {
    let tape = tape(1 << 20);
    take_64s(&tape, 100);
    let mut kept = std::vec::Vec::new();
    for round in 0..10u8 {
        tape.scope(|s| {
            let scratch = s.take_fill(100, 0xee_u8).unwrap();
            // Taken from the tape, inside the scope: it outlives the scope.
            kept.push(tape.take_fill(100, round).unwrap());
            let more = s.take_fill(100, 0xdd_u8).unwrap();
            assert!(scratch.iter().chain(more.iter()).all(|&b| b >= 0xdd));
        });
        // Later scopes reuse what the scope gave back; never what was kept.
        tape.scope(|s| {
            let _ = s.take_fill(1000, 0xff_u8).unwrap();
        });
    }
    for (round, kept) in kept.iter().enumerate() {
        assert!(
            kept.iter().all(|&b| usize::from(b) == round),
            "round {round}"
        );
    }
}

#[test]
fn nested_scopes_give_back_inner_first() {
    let tape = tape(1 << 20);
    take_64s(&tape, 100);
    let before = tape.used();
    tape.scope(|outer| {
        let a = outer.take_fill(10, 1u32).unwrap();
        let inner_used = tape.scope(|inner| {
            let b = inner.take_fill(10, 2u32).unwrap();
            assert_eq!(a[0] + b[0], 3);
            tape.used()
        });
        assert_eq!(inner_used, before + 80);
        assert_eq!(tape.used(), before + 40);
        let c = outer.take_fill(10, 3u32).unwrap();
        assert!(a.iter().all(|&x| x == 1) && c.iter().all(|&x| x == 3));
    });
    assert_eq!(tape.used(), before);
}

#[test]
fn a_scope_that_panics_still_gives_back() {
    let tape = tape(1 << 20);
    take_64s(&tape, 100);
    let before = tape.used();
    let result = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| {
        tape.scope(|s| {
            let _ = s.take_fill(100, 0u8).unwrap();
            panic!("in the scope");
        })
    }));
    assert!(result.is_err());
    assert_eq!(tape.used(), before);
}

#[test]
fn scopes_on_threads_sharing_a_tape_never_share_a_byte() {
    let tape = tape(if cfg!(miri) { 1 << 20 } else { 16 << 20 });
    let rounds = if cfg!(miri) { 20 } else { 2000 };
    std::thread::scope(|s| {
        for thread in 0..4u8 {
            let tape = &tape;
            s.spawn(move || {
                let kept = tape.take_fill(16, thread).unwrap();
                for round in 0..rounds {
                    tape.scope(|scope| {
                        let tag = thread.wrapping_mul(31).wrapping_add(round as u8);
                        // Some rounds take from the tape inside the scope (uses an exact
                        // take, then scope takes around it).
                        let a = scope.take_fill(1 + round % 300, tag).unwrap();
                        let b = (round % 7 == 0).then(|| tape.take_fill(5, tag).unwrap());
                        let c = scope.take_fill(1 + round % 50, tag).unwrap();
                        std::hint::black_box(&mut *a);
                        assert!(a.iter().chain(c.iter()).all(|&x| x == tag));
                        assert!(b.is_none_or(|b| b.iter().all(|&x| x == tag)));
                    });
                }
                assert!(kept.iter().all(|&x| x == thread));
            });
        }
    });
}

#[test]
fn a_tape_that_loses_its_slot_keeps_at_most_eight_sevenths_of_what_was_taken() {
    // Five tapes, visited in bursts: every visit the tape has lost its slot to the others, so
    // the thread settles again, claims chunks, and leaves the rest of the last one behind.
    let tapes: Vec<Tape> = (0..5).map(|_| tape(4 << 20)).collect();
    let mut taken = 0;
    for _ in 0..if cfg!(miri) { 2 } else { 20 } {
        for burst in [40, 100, 17] {
            for tape in &tapes {
                take_64s(tape, burst);
            }
            taken += burst * 64;
        }
    }
    for tape in &tapes {
        let left_behind = used_elsewhere(tape) - taken;
        assert!(left_behind > 0, "bursts this long claim chunks");
        assert!(
            left_behind * 7 <= taken * 8,
            "{left_behind} left for {taken} taken"
        );
    }
}

#[test]
fn a_scope_gives_nothing_back_across_a_clear() {
    let tape = tape(1 << 20);
    let theirs = tape.scope(|s| {
        // Large: exactly at the shared cursor, 0..16384.
        let mine = s.take(16 << 10, 8).unwrap();
        assert_eq!(offset(&tape, mine), 0);
        // SAFETY: nothing taken before is used after, no lane is alive, and the other thread
        // takes only after this call (it is spawned after it).
        unsafe { tape.clear_shared() };
        // Another thread takes the same bytes afresh, leaving the cursor where the scope's
        // scratch ended.
        std::thread::scope(|t| {
            t.spawn(|| offset(&tape, tape.take(16 << 10, 8).unwrap()))
                .join()
                .unwrap()
        })
    });
    assert_eq!(theirs, 0);
    // The scope ended after the clear: it gave back nothing of what is now the other
    // thread's.
    assert_eq!(used_elsewhere(&tape), 16 << 10);
    assert!(offset(&tape, tape.take(16 << 10, 8).unwrap()) >= 16 << 10);
}

/// A clear hands the clearing thread a chunk at once; a thread that then moves on to more
/// tapes than it has slots before taking from this one again leaves that chunk behind until
/// the next clear: at most a 64th of the tape.
#[test]
fn a_clear_leaves_at_most_a_64th_behind_when_the_thread_moves_on() {
    std::thread::spawn(|| {
        let len = if cfg!(miri) { 64 << 10 } else { 1 << 20 };
        let mut tape = Tape::start(len).unwrap();
        let capacity = tape.capacity();
        while tape.take(64, 64).is_some() {}
        tape.clear();
        // Five other tapes, each settled on: this tape loses its slot, primed chunk and all.
        let others: Vec<Tape> = (0..5).map(|_| Tape::start(len).unwrap()).collect();
        for other in &others {
            for _ in 0..64 {
                let _ = other.take(64, 64).unwrap();
            }
        }
        let mut taken = 0;
        while tape.take(64, 64).is_some() {
            taken += 64;
        }
        // The stranded chunk, and the chunks' own documented slack (a cache line of alignment).
        assert!(
            taken >= capacity - capacity / 64 - 128,
            "took {taken} of {capacity} after a clear and five other tapes"
        );
    })
    .join()
    .unwrap();
}

/// `n` takes of 64 bytes, as offset ranges.
fn spans_of_64(tape: &Tape, n: usize) -> Vec<core::ops::Range<usize>> {
    (0..n)
        .map(|_| {
            let start = offset(tape, tape.take(64, 8).unwrap());
            start..start + 64
        })
        .collect()
}

/// No two of `spans` share a byte.
fn assert_disjoint(mut spans: Vec<core::ops::Range<usize>>) {
    spans.sort_by_key(|span| span.start);
    for pair in spans.windows(2) {
        assert!(
            pair[0].end <= pair[1].start,
            "two takes share bytes: {pair:?}"
        );
    }
}

// A clear keeps the tape's generation, and with it the chunk it hands the clearing thread,
// only while that chunk is the only one of the generation. The next two tests break each
// half of that condition: a chunk another thread claimed since, and a clear on a thread other
// than the one the last clear handed its chunk.

#[test]
fn a_clear_ends_the_chunk_another_thread_claimed_after_the_last_clear() {
    clear_after_another_thread_claimed(false);
}

/// The same, with the tape out of the front slot at the clear (this thread cleared another
/// tape in between), so that the clear also moves its chunk to the front.
#[test]
fn a_clear_that_brings_a_tape_to_the_front_ends_chunks_others_claimed_too() {
    clear_after_another_thread_claimed(true);
}

fn clear_after_another_thread_claimed(other_tape_between: bool) {
    use std::sync::{Barrier, Mutex};
    let mut weights = tape(1 << 20);
    take_64s(&weights, 100);
    let tape = Mutex::new(tape(1 << 20));
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let theirs = s.spawn(|| {
            barrier.wait();
            // Settles on the tape and claims chunks, the last one not used up.
            take_64s(&tape.lock().unwrap(), 100);
            barrier.wait();
            barrier.wait();
            spans_of_64(&tape.lock().unwrap(), 100)
        });
        {
            let mut tape = tape.lock().unwrap();
            take_64s(&tape, 100);
            tape.clear(); // hands this thread a chunk
        }
        barrier.wait();
        barrier.wait();
        if other_tape_between {
            // Clearing the other tape brings it to the front slot, and this one out of it.
            weights.clear();
            take_64s(&weights, 1);
        }
        let mine = {
            let mut tape = tape.lock().unwrap();
            tape.clear();
            // Well past the other thread's chunk from before the clear.
            spans_of_64(&tape, 2000)
        };
        barrier.wait();
        let theirs = theirs.join().unwrap();
        assert_disjoint([mine, theirs].concat());
    });
}

#[test]
fn a_clear_ends_the_chunk_the_last_clear_handed_to_another_thread() {
    use std::sync::{Barrier, Mutex};
    let tape = Mutex::new(tape(1 << 20));
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let theirs = s.spawn(|| {
            barrier.wait();
            let mut tape = tape.lock().unwrap();
            // One take: exactly at the shared cursor, no chunk, no claim.
            let _ = tape.take(8, 8).unwrap();
            tape.clear();
            spans_of_64(&tape, 4)
        });
        {
            let mut tape = tape.lock().unwrap();
            take_64s(&tape, 100);
            tape.clear(); // hands this thread a chunk at 0
        }
        barrier.wait();
        let theirs = theirs.join().unwrap();
        assert_eq!(
            theirs[0].start, 0,
            "the other thread's clear left it the tape"
        );
        let mine = spans_of_64(&tape.lock().unwrap(), 4);
        assert_disjoint([mine, theirs].concat());
    });
}
