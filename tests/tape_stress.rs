//! The tape under contention: several threads, a million takes each, of random sizes and
//! alignments, through the tape, through lanes, and both at once. Every allocation is filled
//! with a tag naming its thread and sequence number and checked byte by byte after the threads
//! join; sorting the allocations proves that none overlaps another or the end of the tape.

use core::ptr::NonNull;
use unimem::{Block, Pinning, Tape};

#[cfg(not(miri))]
const TAKES_PER_THREAD: usize = 1_000_000;
#[cfg(miri)]
const TAKES_PER_THREAD: usize = 200;

/// `wanted` threads, or 2 under Miri, where every step is thousands of times slower.
fn threads(wanted: usize) -> usize {
    if cfg!(miri) { 2 } else { wanted }
}

/// One in this many takes is large (up to 8 KiB, larger than the lanes' chunks here).
const LARGE_EVERY: usize = 1024;
const LARGEST_SMALL: usize = 32;
const LARGEST: usize = 8192;
const MOST_ALIGNED: usize = 4096;

/// How each thread takes.
#[derive(Clone, Copy)]
enum Via {
    Tape,
    Lanes {
        chunk: usize,
    },
    /// Even threads through lanes, odd threads straight from the tape.
    Mixed {
        chunk: usize,
    },
}

/// One allocation, as offsets into the tape (pointers cannot leave their thread).
#[derive(Debug, Clone, Copy)]
struct Taken {
    start: usize,
    size: usize,
    align: usize,
    tag: u64,
}

/// xorshift64*: deterministic, fast, and good enough to spread sizes and alignments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A size of at least 1 and a power-of-two alignment: mostly small, sometimes large.
    fn request(&mut self, seq: usize) -> (usize, usize) {
        let r = self.next();
        let (largest, align_shifts) = match seq % LARGE_EVERY {
            0 => (LARGEST, 13),      // up to 4096
            _ => (LARGEST_SMALL, 7), // up to 64
        };
        (1 + (r >> 16) as usize % largest, 1 << (r % align_shifts))
    }
}

/// Fills `bytes` with `tag`'s eight bytes, over and over.
fn fill(bytes: &mut [u8], tag: u64) {
    for piece in bytes.chunks_mut(8) {
        piece.copy_from_slice(&tag.to_le_bytes()[..piece.len()]);
    }
}

/// Whether `bytes` still hold what `fill` wrote.
fn holds(bytes: &[u8], tag: u64) -> bool {
    bytes
        .chunks(8)
        .all(|piece| piece == &tag.to_le_bytes()[..piece.len()])
}

fn tag(thread: usize, seq: usize) -> u64 {
    ((thread as u64) << 32) | seq as u64
}

/// Room for everything the threads will take, with a chunk per thread to spare.
fn tape_for(threads: usize, chunk: usize) -> Tape {
    let large = TAKES_PER_THREAD / LARGE_EVERY + 1;
    let per_thread = TAKES_PER_THREAD * (LARGEST_SMALL + 64) + large * (LARGEST + MOST_ALIGNED);
    let block = Block::options()
        .pinning(Pinning::Off)
        .open(threads * (per_thread + 2 * chunk));
    Tape::on(block.unwrap())
}

/// Runs `threads` threads taking and tagging, and returns every allocation, sorted by start.
fn hammer(tape: &Tape, threads: usize, via: Via) -> Vec<Taken> {
    let mut all: Vec<Taken> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| s.spawn(move || take_and_tag(tape, thread, via)))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    // One sorted run per thread: a stable sort merges them quickly.
    all.sort_by_key(|taken| taken.start);
    assert_eq!(all.len(), threads * TAKES_PER_THREAD);
    all
}

fn take_and_tag(tape: &Tape, thread: usize, via: Via) -> Vec<Taken> {
    let mut lane = match via {
        Via::Tape => None,
        Via::Lanes { chunk } => Some(tape.lane_with_chunk(chunk)),
        Via::Mixed { chunk } => (thread % 2 == 0).then(|| tape.lane_with_chunk(chunk)),
    };
    let mut rng = Rng(0x9e37_79b9 ^ (thread as u64 + 1) << 20);
    let mut taken = Vec::with_capacity(TAKES_PER_THREAD);
    for seq in 0..TAKES_PER_THREAD {
        let (size, align) = rng.request(seq);
        let ptr: NonNull<u8> = match &mut lane {
            Some(lane) => lane.take(size, align),
            None => tape.take(size, align),
        }
        .expect("the tape is sized for the whole run");
        assert_eq!(ptr.as_ptr() as usize % align, 0);
        let tag = tag(thread, seq);
        // SAFETY: the take gave this thread `size` bytes that nobody else touches until the
        // tape is cleared, which cannot happen while it is borrowed here.
        let bytes = unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr(), size) };
        fill(bytes, tag);
        let start = tape.offset_of(ptr.as_ptr()).expect("inside the tape");
        taken.push(Taken {
            start,
            size,
            align,
            tag,
        });
    }
    // Sorted here, in parallel, so that the final sort only merges one run per thread.
    taken.sort_by_key(|taken| taken.start);
    taken
}

/// Every byte still holds its allocation's tag, no two allocations share a byte, and none
/// reaches past what the tape counts as used.
fn verify(tape: &Tape, all: &[Taken]) {
    let base = tape.block().as_ptr();
    for taken in all {
        // SAFETY: the threads that wrote these bytes have joined, and nothing writes now.
        let bytes = unsafe { core::slice::from_raw_parts(base.add(taken.start), taken.size) };
        assert!(holds(bytes, taken.tag), "{taken:?} holds {bytes:?}");
    }
    for pair in all.windows(2) {
        assert!(
            pair[0].start + pair[0].size <= pair[1].start,
            "overlap: {pair:?}"
        );
    }
    let last = all.last().unwrap();
    assert!(last.start + last.size <= tape.used());
    assert!(tape.used() <= tape.capacity());
}

/// `offset` rounded up so that the address it names is a multiple of `align`.
fn align_up(tape: &Tape, offset: usize, align: usize) -> usize {
    let address = tape.block().as_ptr() as usize + offset;
    address.next_multiple_of(align) - tape.block().as_ptr() as usize
}

#[test]
fn threads_taking_from_one_tape_get_disjoint_bytes() {
    let threads = threads(8);
    let tape = tape_for(threads, THREAD_CHUNK);
    let all = hammer(&tape, threads, Via::Tape);
    verify(&tape, &all);
    assert_little_is_left_behind(&tape, &all, threads);
}

/// The largest chunk a thread holds behind `Tape::take`, as its docs state.
const THREAD_CHUNK: usize = 64 << 10;

/// Through per-thread chunks, the takes tile the tape but for alignment padding and what the
/// threads left behind: the rest of a chunk when they moved to a fresh one (at most an
/// eighth of it, plus a cache line of alignment) and the chunk each still holds. That is the
/// bound `Tape::take` states: an eighth of what was used, plus two chunks per thread.
fn assert_little_is_left_behind(tape: &Tape, all: &[Taken], threads: usize) {
    let mut end = 0;
    let mut left = 0;
    for taken in all {
        left += taken.start - align_up(tape, end, taken.align);
        end = taken.start + taken.size;
    }
    left += tape.used() - end;
    let bound = tape.used() / 8 + threads * 2 * THREAD_CHUNK;
    assert!(
        left <= bound,
        "{left} bytes left behind of {} used (bound {bound})",
        tape.used()
    );
    eprintln!(
        "left behind {left} of {} bytes used ({:.3}%)",
        tape.used(),
        100.0 * left as f64 / tape.used() as f64
    );
}

/// Once every lane is gone, nothing is held back: the tape is used up to the end of the last
/// allocation and no further.
fn assert_used_ends_at_the_last_take(tape: &Tape, all: &[Taken]) {
    let end = all
        .iter()
        .map(|taken| taken.start + taken.size)
        .max()
        .unwrap();
    assert_eq!(tape.used(), end);
}

#[test]
fn threads_taking_through_lanes_get_disjoint_bytes() {
    let threads = threads(8);
    let chunk = 4096;
    let tape = tape_for(threads, chunk);
    let all = hammer(&tape, threads, Via::Lanes { chunk });
    verify(&tape, &all);
    // Every lane is gone: what they held back was handed back or fenced in by later takes.
    assert_used_ends_at_the_last_take(&tape, &all);
}

#[test]
fn lanes_and_direct_takes_mixed_get_disjoint_bytes() {
    let threads = threads(4);
    // Small chunks: lanes refill constantly, racing the direct takes of the other threads.
    let chunk = 512;
    let tape = tape_for(threads, chunk);
    let all = hammer(&tape, threads, Via::Mixed { chunk });
    verify(&tape, &all);
    // The lanes are gone, but the threads that took through the tape still hold their chunks.
    assert_little_is_left_behind(&tape, &all, threads);
}

#[test]
fn a_cleared_tape_serves_a_second_round_just_as_well() {
    let threads = threads(2);
    let chunk = 1024;
    let mut tape = tape_for(threads, chunk);
    let first = hammer(&tape, threads, Via::Mixed { chunk });
    verify(&tape, &first);
    // This thread took nothing: `used` is everything the workers reserved.
    let reserved = tape.used();
    assert!(reserved >= first.last().unwrap().start + first.last().unwrap().size);
    // A lane gives the unused rest of its chunk back when dropped, which `used` then leaves
    // out but the peak keeps: the peak is at least what is reserved at the end.
    let peak = tape.peak();
    assert!(peak >= reserved, "peak {peak} < reserved {reserved}");
    tape.clear();
    // A clear ends the round: nothing used, the peak kept.
    assert_eq!((tape.used(), tape.peak()), (0, peak));
    let second = hammer(&tape, threads, Via::Lanes { chunk });
    verify(&tape, &second);
    // The second round starts the tape afresh: the first lane's chunk begins at byte 0.
    assert_eq!(second[0].start, 0);
}
