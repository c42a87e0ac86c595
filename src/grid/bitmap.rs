//! The free map of a grid: one bit per cell, 1 = free, 64 cells to an atomic word and one word
//! to a cache line.
//!
//! Every claim and every return is a single read-modify-write on one word. There is nothing
//! else to keep consistent: no links, no counters, no versions, so no ABA hazard can exist (a
//! compare-and-swap that succeeds on a stale-looking word still clears only bits that were
//! set). A claim is an acquire (a compare-and-swap) and a return a release (`fetch_or`), which
//! makes whatever the previous owner wrote into a cell visible to the next owner: the RMWs on a
//! word in between (other claims and returns) continue the release sequence.

use crate::sync::{AtomicU64, CachePadded, Ordering};

/// Cells per word.
pub(crate) const BITS: usize = u64::BITS as usize;

/// The word that holds `index`'s bit, and that bit.
#[inline]
fn locate(index: usize) -> (usize, u64) {
    (index / BITS, 1 << (index % BITS))
}

/// A set of `len` bits, all set (free) at creation, claimed and returned by many threads.
pub(crate) struct Bitmap {
    words: Box<[CachePadded<AtomicU64>]>,
}

impl Bitmap {
    /// A bitmap of `len` free cells. Bits at `len` and beyond (in the last word) stay clear
    /// forever, so no claim can ever return an index past the end.
    pub(crate) fn all_free(len: usize) -> Bitmap {
        let words = (0..len.div_ceil(BITS))
            .map(|word| {
                let cells = (len - word * BITS).min(BITS);
                let bits = if cells == BITS {
                    u64::MAX
                } else {
                    (1 << cells) - 1
                };
                CachePadded(AtomicU64::new(bits))
            })
            .collect();
        Bitmap { words }
    }

    /// Claims one free cell, the lowest of the first word with any, looking at word `start`
    /// first and then at the others in turn. `None` if every word was seen empty.
    #[inline]
    pub(crate) fn claim_one(&self, start: usize) -> Option<usize> {
        let (word, bit) = self.claim_from(start, |free| free & free.wrapping_neg())?;
        Some(word * BITS + bit.trailing_zeros() as usize)
    }

    /// Claims up to `max` free cells (`1..=64`), looking at word `start` first and then at the
    /// others in turn until it has `max` or has seen every word once: one atomic operation per
    /// word it claims from, so one when word `start` has `max` free. Hands each word's index and
    /// the bits now owned by the caller (never zero) to `each`, in the order claimed, and
    /// returns how many cells it claimed in all (0 if every word was seen empty).
    ///
    /// Crossing words is what makes a claim's size independent of where it starts: a start in
    /// a sparse word (the last word of a grid whose `N` is not a multiple of 64, or a word
    /// other threads have emptied) would otherwise come back with only that word's few cells.
    pub(crate) fn claim_many(
        &self,
        start: usize,
        max: u32,
        mut each: impl FnMut(usize, u64),
    ) -> u32 {
        debug_assert!((1..=u64::BITS).contains(&max));
        let mut wanted = max;
        let mut word = start;
        loop {
            if let Some(bits) = claim(&self.words[word], |free| lowest_bits(free, wanted)) {
                each(word, bits);
                wanted -= bits.count_ones();
                if wanted == 0 {
                    break;
                }
            }
            word = self.after(word);
            if word == start {
                break;
            }
        }
        max - wanted
    }

    /// Claims the bits `pick` chooses in the first word, from `start` round to `start - 1`,
    /// that has any free; returns that word's index and the bits.
    #[inline]
    fn claim_from(&self, start: usize, pick: impl Fn(u64) -> u64) -> Option<(usize, u64)> {
        let mut word = start;
        loop {
            if let Some(bits) = claim(&self.words[word], &pick) {
                return Some((word, bits));
            }
            word = self.after(word);
            if word == start {
                return None;
            }
        }
    }

    /// The word searched after `word`: the next one, round to the first after the last.
    #[inline]
    fn after(&self, word: usize) -> usize {
        if word + 1 == self.words.len() {
            0
        } else {
            word + 1
        }
    }

    /// Returns one cell. The caller must own it (have claimed it and not returned it).
    #[inline]
    pub(crate) fn release(&self, index: usize) {
        let (word, mask) = locate(index);
        self.release_bits(word, mask);
    }

    /// Returns the cells at `indices`, which the caller owns, with one atomic operation per
    /// word they fall in. Scrambles `indices` on the way.
    pub(crate) fn release_many(&self, mut indices: &mut [usize]) {
        while let Some(&first) = indices.first() {
            let word = first / BITS;
            let mut bits = 0;
            let mut others = 0;
            for i in 0..indices.len() {
                let (its_word, mask) = locate(indices[i]);
                if its_word == word {
                    bits |= mask;
                } else {
                    indices[others] = indices[i];
                    others += 1;
                }
            }
            self.release_bits(word, bits);
            indices = &mut indices[..others];
        }
    }

    #[inline]
    fn release_bits(&self, word: usize, bits: u64) {
        let before = self.words[word].fetch_or(bits, Ordering::Release);
        debug_assert_eq!(
            before & bits,
            0,
            "a free cell of word {word} was returned again"
        );
    }

    /// How many bits are set: exact when no other thread claims or returns meanwhile.
    pub(crate) fn count(&self) -> usize {
        self.words
            .iter()
            .map(|word| word.load(Ordering::Relaxed).count_ones() as usize)
            .sum()
    }
}

/// Clears the bits that `pick` chooses among the set bits of `word`, and returns them; `None`
/// if the word has none set.
///
/// One compare-and-swap when no other thread changes the word in between; if one does, the
/// swap fails because that thread's claim or return succeeded, so the loop is lock-free (a
/// weak swap may also fail spuriously on load-linked/store-conditional machines). A swap
/// beats `fetch_and` here: on x86 a `fetch_and` whose old value is needed is itself a swap loop,
/// and the single-bit form (`lock btr` with a register operand) is microcoded, ~3 ns slower.
#[inline]
fn claim(word: &AtomicU64, pick: impl Fn(u64) -> u64) -> Option<u64> {
    let mut free = word.load(Ordering::Relaxed);
    while free != 0 {
        let wanted = pick(free);
        match word.compare_exchange_weak(free, free & !wanted, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => return Some(wanted),
            Err(now) => free = now,
        }
    }
    None
}

/// The lowest `max` set bits of `bits`.
fn lowest_bits(bits: u64, max: u32) -> u64 {
    if bits.count_ones() <= max {
        return bits;
    }
    let mut above = bits;
    for _ in 0..max {
        above &= above - 1;
    }
    bits ^ above
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn lowest_bits_takes_from_the_bottom() {
        assert_eq!(lowest_bits(0b1011_0110, 2), 0b0000_0110);
        assert_eq!(lowest_bits(0b1011_0110, 3), 0b0001_0110);
        assert_eq!(lowest_bits(0b1011_0110, 64), 0b1011_0110);
        assert_eq!(lowest_bits(u64::MAX, 32), u64::from(u32::MAX));
        assert_eq!(lowest_bits(u64::MAX, 64), u64::MAX);
    }

    #[test]
    fn bits_past_the_end_are_never_free() {
        let map = Bitmap::all_free(70);
        assert_eq!(map.words.len(), 2);
        assert_eq!(map.count(), 70);
        let mut claimed: Vec<usize> = (0..70).map(|_| map.claim_one(1).unwrap()).collect();
        assert_eq!(map.claim_one(0), None);
        claimed.sort_unstable();
        assert_eq!(claimed, (0..70).collect::<Vec<_>>());
    }

    /// Runs `claim_many` and returns its count and the words and bits it claimed, in order.
    fn claim_many(map: &Bitmap, start: usize, max: u32) -> (u32, Vec<(usize, u64)>) {
        let mut claimed = Vec::new();
        let count = map.claim_many(start, max, |word, bits| claimed.push((word, bits)));
        (count, claimed)
    }

    #[test]
    fn claim_many_takes_at_most_max_from_the_start_word_first() {
        let map = Bitmap::all_free(100);
        assert_eq!(
            claim_many(&map, 0, 32),
            (32, vec![(0, u64::from(u32::MAX))])
        );
        assert_eq!(
            claim_many(&map, 0, 64),
            (64, vec![(0, u64::MAX << 32), (1, u64::from(u32::MAX))])
        );
        // Word 0 is empty now, and word 1 holds the 4 cells 96..100.
        assert_eq!(claim_many(&map, 0, 64), (4, vec![(1, 0xF << 32)]));
        assert_eq!(claim_many(&map, 1, 1), (0, vec![]));
        assert_eq!(map.count(), 0);
    }

    #[test]
    fn claim_many_crosses_words_until_it_has_max() {
        // 200 cells: words of 64, 64, 64 and a last word of 8.
        let map = Bitmap::all_free(200);
        assert_eq!(
            claim_many(&map, 3, 32),
            (32, vec![(3, 0xFF), (0, 0xFF_FFFF)])
        );
        assert_eq!(map.count(), 200 - 32);
        // From word 2 round to word 1, leaving the one cell that is not wanted.
        let (count, claimed) = claim_many(&map, 2, 64);
        assert_eq!(count, 64);
        assert_eq!(claimed, vec![(2, u64::MAX)]);
        let (count, _) = claim_many(&map, 1, 64);
        assert_eq!(count, 64);
        let (count, claimed) = claim_many(&map, 1, 64);
        assert_eq!((count, claimed), (40, vec![(0, u64::MAX << 24)]));
        assert_eq!(map.count(), 0);
    }

    #[test]
    fn release_many_groups_by_word() {
        let map = Bitmap::all_free(200);
        let mut all: Vec<usize> = (0..200).map(|_| map.claim_one(2).unwrap()).collect();
        assert_eq!(map.count(), 0);
        all.swap(3, 150);
        let (first, rest) = all.split_at_mut(120);
        map.release_many(first);
        assert_eq!(map.count(), 120);
        map.release_many(rest);
        assert_eq!(map.count(), 200);
        // Every bit is back exactly once: all 200 can be claimed again, and no more.
        for _ in 0..200 {
            assert!(map.claim_one(0).is_some());
        }
        assert_eq!(map.claim_one(0), None);
    }
}
