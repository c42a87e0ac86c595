//! The free map of a grid: one bit per cell, 1 = free, 64 cells to an atomic word and one word
//! to a cache line.
//!
//! Every claim and every return is a single read-modify-write on one word. There is nothing
//! else to keep consistent: no links, no counters, no versions, so no ABA hazard can exist.
//! A claim is an acquire (`fetch_and`) and a return a release (`fetch_or`), which makes
//! whatever the previous owner wrote into a cell visible to the next owner: the RMWs on a word
//! in between (other claims and returns) continue the release sequence.

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

    /// Claims one free cell, looking at word `start` first and then at the others in turn.
    /// `None` if every word was seen empty.
    #[inline]
    pub(crate) fn claim_one(&self, start: usize) -> Option<usize> {
        let (word, bit) = self.scan(start, |word| {
            loop {
                let seen = word.load(Ordering::Relaxed);
                if seen == 0 {
                    return None;
                }
                let bit = seen.trailing_zeros() as usize;
                let mask = 1 << bit;
                // Only `& mask` of the old value is used, so this compiles to a single
                // `lock btr` on x86 and `ldclra` on ARMv8.1: one atomic per successful claim.
                // On failure another thread claimed that bit first; look again.
                if word.fetch_and(!mask, Ordering::Acquire) & mask != 0 {
                    return Some(bit);
                }
            }
        })?;
        Some(word * BITS + bit)
    }

    /// Claims up to `max` free cells (`1..=64`) of one word with one atomic operation,
    /// looking at word `start` first. Returns the word's index and the bits now owned by the
    /// caller (never zero), or `None` if every word was seen empty.
    pub(crate) fn claim_many(&self, start: usize, max: u32) -> Option<(usize, u64)> {
        debug_assert!((1..=u64::BITS).contains(&max));
        self.scan(start, |word| {
            let mut seen = word.load(Ordering::Relaxed);
            while seen != 0 {
                let wanted = lowest_bits(seen, max);
                let before = word.fetch_and(!wanted, Ordering::Acquire);
                // The bits that were still set are ours. Any that another thread took
                // meanwhile were already clear, so our `and` did not touch them.
                let won = before & wanted;
                if won != 0 {
                    return Some(won);
                }
                seen = before;
            }
            None
        })
    }

    /// Runs `claim` on each word from `start` round to `start - 1` until it claims something;
    /// returns that word's index with what was claimed.
    #[inline]
    fn scan<T>(
        &self,
        start: usize,
        mut claim: impl FnMut(&AtomicU64) -> Option<T>,
    ) -> Option<(usize, T)> {
        let words = self.words.len();
        (start..words)
            .chain(0..start)
            .find_map(|word| Some((word, claim(&self.words[word])?)))
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

    #[test]
    fn claim_many_takes_one_word_at_most_max() {
        let map = Bitmap::all_free(100);
        assert_eq!(map.claim_many(0, 32), Some((0, u64::from(u32::MAX))));
        assert_eq!(map.claim_many(0, 64), Some((0, u64::MAX << 32)));
        // Word 0 is empty now: the claim moves on to word 1, which holds 36 cells.
        assert_eq!(map.claim_many(0, 64), Some((1, (1 << 36) - 1)));
        assert_eq!(map.claim_many(1, 1), None);
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
