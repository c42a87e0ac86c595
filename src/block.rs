//! [`Block`]: pinned, shareable memory, the same on every platform from the outside.
//!
//! This file holds everything that does not depend on the operating system: validating and
//! rounding lengths, the pinning policy, the unsafe views. The backends in `sys/` provide the
//! memory itself and the few calls that differ (lock, populate, release).

use crate::error::Error;
use crate::sys;
use core::fmt;
use core::ptr::NonNull;

/// The native object behind a [`Block`], for code that hands the memory to hardware or to
/// another process.
///
/// | platform | `Handle` is | what takes it |
/// |---|---|---|
/// | macOS, iOS | the `IOSurfaceRef` (`*mut c_void`) | Metal (`newBufferWithBytesNoCopy` on the base address), Core ML, the Neural Engine (a one-row surface up to `IOSurfaceGetPropertyMaximum`'s row length; longer blocks are dimensionless surfaces, which back buffers, not textures) |
/// | Linux | the memfd's `RawFd` | another process (`SCM_RIGHTS`), a GPU driver's import call, `dma-buf`-style importers |
/// | portable backend | the base address (`*mut u8`) | nothing outside this process |
///
/// The handle is borrowed: it stays valid while the `Block` lives, and the `Block` still
/// releases it on drop. Retain (macOS) or `dup` (Linux) it to keep it longer.
pub type Handle = sys::Handle;

/// How hard [`Block::open`] tries to keep the pages in RAM.
///
/// "Pinned" here means locked in physical memory: the kernel will not swap the pages out or
/// reclaim them while the block lives, so a device that was told their physical addresses
/// never sees them move, and no access ever waits for a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pinning {
    /// Pin, or fail with [`Error::PinRefused`] saying which limit stood in the way.
    /// The default on Linux and macOS.
    Required,
    /// Pin if the system allows it; otherwise open an unpinned block.
    /// [`Block::is_pinned`] tells which happened.
    BestEffort,
    /// Do not pin. The default on the portable backend, which cannot pin at all.
    Off,
}

impl Default for Pinning {
    fn default() -> Pinning {
        if sys::CAN_PIN {
            Pinning::Required
        } else {
            Pinning::Off
        }
    }
}

/// Options for opening a [`Block`], in the style of [`std::fs::OpenOptions`].
///
/// ```
/// use unimem::{Block, Pinning};
///
/// let block = Block::options()
///     .warm(true)                      // every page resident before `open` returns
///     .pinning(Pinning::BestEffort)    // pin if allowed, carry on if not
///     .open(1 << 20)?;
/// assert!(block.len() >= 1 << 20);
/// # Ok::<(), unimem::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    warm: bool,
    pinning: Pinning,
}

impl OpenOptions {
    /// The defaults: lazy (pages appear on first touch) and [`Pinning::default`].
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Make every page resident before `open` returns (`true`), or let pages appear on first
    /// touch (`false`, the default).
    ///
    /// A warm open costs time up front (the kernel zeroes every page: 1.4 ms for 16 MiB on an
    /// M1, about 14 ms on the 2-core VM the benchmarks run on) so that nothing in a
    /// hot loop ever takes a page fault. A lazy open is nearly free and suits large blocks of
    /// which only part will be used; its pinned pages are locked as they are touched.
    pub fn warm(&mut self, warm: bool) -> &mut OpenOptions {
        self.warm = warm;
        self
    }

    /// Choose how hard to try to pin the pages. See [`Pinning`].
    pub fn pinning(&mut self, pinning: Pinning) -> &mut OpenOptions {
        self.pinning = pinning;
        self
    }

    /// Opens a block of at least `len` bytes with these options. See [`Block::open`].
    pub fn open(&self, len: usize) -> Result<Block, Error> {
        let region = sys::Region::create(page_round(len)?)?;
        Block::adopt(region, self)
    }
}

/// Pinned, shareable memory with an address that never changes until drop.
///
/// A `Block` is a run of whole pages, zeroed at creation, that the CPU and other hardware
/// (GPU, Neural Engine, DMA engines, other processes) can all see without copies:
///
/// | | macOS | Linux | elsewhere, and under Miri |
/// |---|---|---|---|
/// | memory | an `IOSurface`, locked for CPU access at creation | a sealed memfd, mapped shared | a page-aligned heap region |
/// | pinned | `mlock`ed (the IOSurface lock alone does not wire pages) | `mlock2`ed, locked on fault when lazy | never |
/// | shared with | GPU, ANE, other processes (via a mach port) | other processes, drivers (via the fd) | nothing |
///
/// `Block` never hands out a safe `&mut [u8]` from `&self`: two such slices to the same bytes
/// would be undefined behaviour. It gives raw pointers and `unsafe` views; the safe typed views
/// come from [`Tape`](crate::Tape) and [`Grid`](crate::Grid), which prove exclusive access.
///
/// ```
/// use unimem::Block;
///
/// let block = Block::open(4096)?;
/// // SAFETY: nothing else touches this block while the slice lives.
/// let bytes = unsafe { block.as_mut_slice() };
/// bytes[..5].copy_from_slice(b"hello");
/// assert_eq!(&bytes[..5], b"hello");
/// # Ok::<(), unimem::Error>(())
/// ```
pub struct Block {
    region: sys::Region,
    pinned: bool,
}

// SAFETY: a Block is a pointer to memory it owns exclusively plus an OS handle that the kernel
// lets any thread use and release; nothing in it is tied to the thread that created it.
unsafe impl Send for Block {}
// SAFETY: every method taking `&self` either reads fields fixed at creation or makes a system
// call that is safe to make from several threads at once (populate, query the handle). Access
// to the bytes themselves is through raw pointers and unsafe views whose contracts put
// synchronisation on the caller.
unsafe impl Sync for Block {}

impl Block {
    /// Opens a zeroed block of at least `len` bytes, lazy and pinned (where the platform can
    /// pin), with [`OpenOptions::new`]'s defaults.
    ///
    /// `len` is rounded up to whole pages; [`len`](Block::len) reports the rounded length,
    /// all of which is usable.
    ///
    /// # Errors
    /// [`Error::ZeroLength`] for `len == 0`, [`Error::TooLarge`] beyond what one mapping can
    /// span, [`Error::PinRefused`] when the system will not lock the pages (see its message for
    /// the limit and the ways out), [`Error::Os`] when the memory cannot be made at all.
    ///
    /// ```
    /// let block = unimem::Block::open(1000)?;
    /// assert!(block.len() >= 1000);
    /// assert_eq!(block.len() % 4096, 0);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    pub fn open(len: usize) -> Result<Block, Error> {
        OpenOptions::new().open(len)
    }

    /// Options for a block that is warm, or unpinned, or pinned only if allowed.
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// Applies the pinning and warming options to memory a backend has just made or adopted.
    pub(crate) fn adopt(region: sys::Region, options: &OpenOptions) -> Result<Block, Error> {
        let (ptr, len) = (region.ptr(), region.len());
        let pinned = match options.pinning {
            Pinning::Off => false,
            Pinning::BestEffort if !sys::CAN_PIN => false,
            Pinning::Required if !sys::CAN_PIN => {
                return Err(Error::Unsupported {
                    what: "this platform cannot pin memory (only Linux and macOS can): \
                           open with `Pinning::BestEffort` or `Pinning::Off`",
                });
            }
            Pinning::Required => {
                sys::lock(ptr, len).map_err(|source| Error::PinRefused {
                    bytes: len,
                    limit: sys::memlock_limit(),
                    source,
                })?;
                true
            }
            Pinning::BestEffort => sys::lock(ptr, len).is_ok(),
        };
        // macOS wires, and so populates, as it locks; Linux locks on fault and populates here.
        let populated = pinned && sys::LOCK_POPULATES;
        if options.warm && !populated && sys::populate(&region, pinned).is_err() {
            // The kernel cannot populate for us (old Linux, a wire limit on macOS, the portable
            // backend): fault the pages in by reading one byte of each. Nothing in this process
            // has the block yet, and reads change nothing a peer process may have written.
            let page = sys::page_size();
            for offset in (0..len).step_by(page) {
                // SAFETY: `offset < len`, so the byte lies inside the live region.
                unsafe { ptr.as_ptr().add(offset).read_volatile() };
            }
        }
        Ok(Block { region, pinned })
    }

    /// The backend's memory, for the platform-specific parts of `Block`'s API.
    pub(crate) fn region(&self) -> &sys::Region {
        &self.region
    }

    /// The first byte. Valid for [`len`](Block::len) bytes until the block is dropped, and
    /// aligned to at least the page size.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.region.ptr().as_ptr()
    }

    /// The first byte, as a `NonNull`.
    #[inline]
    pub fn as_non_null(&self) -> NonNull<u8> {
        self.region.ptr()
    }

    /// Usable length in bytes: what was asked for, rounded up to whole pages.
    ///
    /// A block mapped from another process has the length of what was shared: the sender's
    /// `len()` when the sender is a `Block`, and otherwise the memfd's size (Linux, which may
    /// not be a whole number of pages: see `Block::from_fd`) or the IOSurface's allocation
    /// size (macOS). See [`share`](crate::share).
    #[inline]
    #[allow(clippy::len_without_is_empty, reason = "a Block is never empty")]
    pub fn len(&self) -> usize {
        self.region.len()
    }

    /// Whether the pages are locked in RAM (locked as they fault in, for a lazy block).
    ///
    /// Always `false` on the portable backend and with [`Pinning::Off`]; with
    /// [`Pinning::BestEffort`] it tells whether the system allowed it.
    #[inline]
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// The native object behind this block, for hardware and other processes. See [`Handle`].
    #[inline]
    pub fn handle(&self) -> Handle {
        self.region.handle()
    }

    /// Makes every page resident now, so that no later access takes a page fault.
    ///
    /// Safe to call while other threads use the block: the kernel brings pages in without
    /// changing a byte of them.
    ///
    /// # Errors
    /// [`Error::Os`] when the system is out of memory; [`Error::Unsupported`] on the portable
    /// backend, which can only warm a block as it opens it ([`OpenOptions::warm`]), and on
    /// Linux older than 5.14 for an unpinned block.
    pub fn warm(&self) -> Result<(), Error> {
        sys::populate(self.region(), self.pinned)
    }

    /// Where `ptr` lies in this block, as an offset from [`as_ptr`](Block::as_ptr): what a
    /// device that was given the [`handle`](Block::handle) needs. `None` if it lies outside.
    ///
    /// ```
    /// let block = unimem::Block::open(8192)?;
    /// let p = block.as_ptr().wrapping_add(100);
    /// assert_eq!(block.offset_of(p), Some(100));
    /// assert_eq!(block.offset_of(block.as_ptr().wrapping_add(block.len())), None);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    pub fn offset_of(&self, ptr: *const u8) -> Option<usize> {
        let offset = (ptr as usize).wrapping_sub(self.as_ptr() as usize);
        (offset < self.len()).then_some(offset)
    }

    /// Views the whole block as bytes.
    ///
    /// # Safety
    /// While the returned slice lives, nothing may write to the block: no thread of this
    /// process (through [`as_ptr`](Block::as_ptr), [`as_mut_slice`](Block::as_mut_slice), a
    /// tape or a grid), no device, and no other process that maps it.
    #[inline]
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the region is valid, initialised (zeroed at creation) and page-aligned for
        // `len` bytes while `self` lives; the caller promises nothing writes meanwhile.
        unsafe { core::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }

    /// Views the whole block as mutable bytes.
    ///
    /// # Safety
    /// While the returned slice lives, nothing else may read or write the block: no other
    /// view, pointer, tape or grid in this process, no device, no other process.
    #[inline]
    #[allow(clippy::mut_from_ref, reason = "exclusivity is the caller's contract")]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; the caller promises exclusive access while the slice lives.
        unsafe { core::slice::from_raw_parts_mut(self.as_ptr(), self.len()) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if self.pinned {
            // Others may still hold the memory (a retained IOSurface, a peer's mapping of the
            // memfd): release our lock on it explicitly rather than rely on the unmap.
            sys::unlock(self.region.ptr(), self.len());
        }
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("ptr", &self.as_ptr())
            .field("len", &self.len())
            .field("pinned", &self.pinned)
            .field("handle", &self.handle())
            .finish()
    }
}

/// `len` rounded up to whole pages, or the error that says why it cannot be.
fn page_round(len: usize) -> Result<usize, Error> {
    let page = sys::page_size();
    let max = isize::MAX as usize & !(page - 1);
    match len {
        0 => Err(Error::ZeroLength),
        len if len > max => Err(Error::TooLarge {
            requested: len,
            max,
        }),
        // Cannot overflow: len <= max, which leaves at least page - 1 below usize::MAX.
        len => Ok((len + page - 1) & !(page - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_up_to_whole_pages() {
        let page = sys::page_size();
        assert_eq!(page_round(1).unwrap(), page);
        assert_eq!(page_round(page).unwrap(), page);
        assert_eq!(page_round(page + 1).unwrap(), 2 * page);
    }

    #[test]
    fn absurd_lengths_are_errors_not_overflow() {
        assert!(matches!(page_round(0), Err(Error::ZeroLength)));
        for len in [usize::MAX, usize::MAX - 1, isize::MAX as usize] {
            match page_round(len) {
                Err(Error::TooLarge { requested, max }) => {
                    assert_eq!(requested, len);
                    assert!(max < len);
                }
                other => panic!("{len}: expected TooLarge, got {other:?}"),
            }
        }
    }
}
