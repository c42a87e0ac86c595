//! [`Block`]: shareable memory, pinned where the system allows, the same on every platform from
//! the outside.
//!
//! This file holds everything that does not depend on the operating system: validating and
//! rounding lengths, the pinning policy, the unsafe views. The backends in `sys/` provide the
//! memory itself and the few calls that differ (lock, populate, release).

use crate::error::Error;
use crate::sys;
use core::fmt;
use core::ops::Range;
use core::ptr::NonNull;
use std::io;

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
/// releases it on drop. Retain (macOS) or `dup` (Linux) it to keep it longer. On Linux it is
/// only the descriptor's number, and using it takes `unsafe`: see
/// [handing out a block's descriptor](crate::share#handing-out-a-blocks-descriptor-linux).
pub type Handle = sys::Handle;

/// How hard [`Block::open`] tries to keep the pages in RAM.
///
/// "Pinned" here means what `mlock` gives: the pages stay resident, so no access ever waits
/// for a disk or a page fault that reads one in, and they are never swapped out while the
/// block lives. It does **not** mean a fixed physical address. On Linux the kernel may still
/// move locked pages to other frames (memory compaction does so by default, see
/// `/proc/sys/vm/compact_unevictable_allowed`), and macOS documents no such promise either.
/// What each system guarantees, and what to use when a device needs physical addresses that
/// never change, is in the [crate docs](crate#what-pinned-and-shared-mean-here).
///
/// Pinning counts against the memory-lock limit (`ulimit -l`: 8 MiB for an ordinary user on
/// most Linux systems). The default, [`BestEffort`](Pinning::BestEffort), pins when that
/// allows and carries on unpinned when it does not, so that opening works for every user;
/// [`Required`](Pinning::Required) is for code that would rather fail than run unpinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Pinning {
    /// Pin, or fail with [`Error::PinRefused`], which says how much the process has locked
    /// already, what the limit is, and the ways out.
    Required,
    /// Pin if the system allows it; otherwise open an unpinned block. The default.
    /// [`Block::is_pinned`] tells which happened. On macOS, whose lock limit is unlimited by
    /// default, only within a share of RAM: see the
    /// [crate docs](crate#what-pinned-and-shared-mean-here).
    #[default]
    BestEffort,
    /// Do not pin.
    Off,
}

/// Whether [`Block::open`] backs the block with huge pages (Linux), which cut the time to
/// populate, pin and register a large block, and the TLB misses of using it.
///
/// Linux has two kinds, tried in this order:
///
/// 1. **hugetlb pages** (`memfd_create` with `MFD_HUGETLB`, 2 MiB on x86-64 by default), from
///    the pool the administrator reserves (`sysctl vm.nr_hugepages=N`), when it has room for
///    the whole block. Such pages are never swapped, and the block's length is rounded up to
///    whole huge pages.
/// 2. **transparent huge pages** (`MADV_HUGEPAGE`) where the kernel allows them for shared
///    memory (`/sys/kernel/mm/transparent_hugepage/shmem_enabled` is `advise`, `always`,
///    `within_size` or `force`; many distributions ship `never`). The length is rounded up to
///    the PMD size (2 MiB on x86-64), and the kernel uses huge pages where it finds free huge
///    frames, base pages elsewhere.
///
/// [`Block::page_size`] tells what the block really got. On macOS `BestEffort` is accepted
/// and does nothing: IOSurfaces are not offered with superpages; the portable backend ignores
/// it too. `Required` is an [`Error::Unsupported`] there.
///
/// ```
/// use unimem::{Block, HugePages};
///
/// let block = Block::options().huge_pages(HugePages::BestEffort).open(4 << 20)?;
/// assert!(block.len() >= 4 << 20);
/// assert_eq!(block.len() % block.page_size(), 0);
/// # Ok::<(), unimem::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HugePages {
    /// Huge pages of either kind, or [`Error::HugePagesUnavailable`], which names the knobs
    /// to turn (`vm.nr_hugepages`, `shmem_enabled`). Transparent huge pages count: the kernel
    /// is asked for them, and [`Block::page_size`] says whether it found them. Off Linux,
    /// [`Error::Unsupported`].
    Required,
    /// Huge pages where the system offers them, base pages otherwise.
    BestEffort,
    /// Base pages: the default. (With `shmem_enabled=always` the kernel may still use
    /// transparent huge pages on its own; [`Block::page_size`] says so.)
    #[default]
    Off,
}

/// Which NUMA nodes a new block's pages come from (Linux): set with `mbind` before any page
/// exists, so that warming places them there. For base and transparent huge pages the
/// policy belongs to the memfd, so pages another process faults in follow it too; for
/// hugetlb pages it belongs to this process's mapping, so open such a block warm to place
/// every page.
///
/// Elsewhere it is accepted and does nothing (Apple Silicon has one memory).
///
/// ```
/// use unimem::{Block, Numa};
///
/// let block = Block::options().numa(Numa::Node(0)).warm(true).open(1 << 20)?;
/// assert!(block.len() >= 1 << 20);
/// # Ok::<(), unimem::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Numa {
    /// The process's own policy (by default, the node of the CPU that first touches a page).
    #[default]
    Any,
    /// Only on this node; a node the machine does not have is [`Error::NoSuchNode`].
    Node(usize),
    /// Spread page by page over these nodes, as `numactl --interleave` does.
    Interleave(Vec<usize>),
}

/// Options for opening a [`Block`], in the style of [`std::fs::OpenOptions`].
///
/// ```
/// use unimem::{Block, Pinning};
///
/// let block = Block::options()
///     .warm(true)                 // every page resident before `open` returns
///     .pinning(Pinning::Off)      // never lock these pages
///     .open(1 << 20)?;
/// assert!(block.len() >= 1 << 20);
/// assert!(!block.is_pinned());
/// # Ok::<(), unimem::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    warm: bool,
    pinning: Pinning,
    huge_pages: HugePages,
    numa: Numa,
    warm_threads: Option<usize>,
}

impl OpenOptions {
    /// The defaults: lazy (pages appear on first touch) and pinned where the system allows
    /// ([`Pinning::BestEffort`]).
    #[must_use]
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Make every page resident before `open` returns (`true`), or let pages appear on first
    /// touch (`false`, the default).
    ///
    /// A warm open costs time up front (the kernel zeroes every page: 1.4 ms for 16 MiB on an
    /// M1, about 14 ms on a 2-core x86 virtual machine) so that nothing in a hot loop ever
    /// takes a page fault. A lazy open is nearly free and suits large blocks of which only
    /// part will be used. On Linux a lazy block's pinned pages are locked as they are touched;
    /// on macOS pinning wires, and so faults in, every page as the block opens, so a pinned
    /// block costs what a warm one does there (open with [`Pinning::Off`] to keep a large
    /// block lazy).
    pub fn warm(&mut self, warm: bool) -> &mut OpenOptions {
        self.warm = warm;
        self
    }

    /// Choose how hard to try to pin the pages: [`Pinning::BestEffort`] unless set. See
    /// [`Pinning`].
    pub fn pinning(&mut self, pinning: Pinning) -> &mut OpenOptions {
        self.pinning = pinning;
        self
    }

    /// Choose whether to back the block with huge pages: [`HugePages::Off`] unless set. See
    /// [`HugePages`].
    pub fn huge_pages(&mut self, huge_pages: HugePages) -> &mut OpenOptions {
        self.huge_pages = huge_pages;
        self
    }

    /// Choose the NUMA nodes the pages come from: [`Numa::Any`] unless set. See [`Numa`].
    ///
    /// It places the blocks [`open`](OpenOptions::open) makes; a block mapped from another
    /// process's descriptor keeps the placement its memory already has.
    ///
    /// # Panics
    /// If `numa` is [`Numa::Interleave`] over no node at all.
    #[track_caller]
    pub fn numa(&mut self, numa: Numa) -> &mut OpenOptions {
        assert!(
            !matches!(&numa, Numa::Interleave(nodes) if nodes.is_empty()),
            "Numa::Interleave needs at least one node: name the nodes to spread over, or use \
             Numa::Any"
        );
        self.numa = numa;
        self
    }

    /// How many threads populate a warm block ([`warm`](OpenOptions::warm),
    /// [`Block::warm`]), each faulting in its own share of the pages (Linux; elsewhere one
    /// thread does it all).
    ///
    /// Unless set, a block of less than twice
    /// [`WARM_BYTES_PER_THREAD`](Block::WARM_BYTES_PER_THREAD) is warmed by the calling
    /// thread alone, and a larger one by one thread per that many bytes, up to
    /// [`std::thread::available_parallelism`]: starting a thread costs tens of microseconds,
    /// populating 64 MiB tens of milliseconds.
    ///
    /// # Panics
    /// If `threads` is 0.
    #[track_caller]
    pub fn warm_threads(&mut self, threads: usize) -> &mut OpenOptions {
        assert!(threads > 0, "warm_threads(0): ask for at least one thread");
        self.warm_threads = Some(threads);
        self
    }

    /// Opens a block of at least `len` bytes with these options. See [`Block::open`].
    ///
    /// # Errors
    /// Those of [`Block::open`].
    pub fn open(&self, len: usize) -> Result<Block, Error> {
        let rounded = page_round(len)?;
        // Errors name the caller's `len`, not the rounded one (`Error::TooLarge` promises so).
        let huge = match self.huge_pages {
            HugePages::Off => sys::Huge::Off,
            HugePages::BestEffort => sys::Huge::BestEffort,
            HugePages::Required if !sys::HUGE_PAGES => {
                return Err(Error::Unsupported {
                    what: "huge pages were required, and this platform offers none for a \
                           block (macOS gives IOSurfaces no superpages; only Linux has huge \
                           pages here): open with `HugePages::BestEffort`, which goes on with \
                           base pages",
                });
            }
            HugePages::Required => sys::Huge::Required,
        };
        let numa = match &self.numa {
            Numa::Any => sys::Numa::Any,
            Numa::Node(node) => sys::Numa::Bind(core::slice::from_ref(node)),
            Numa::Interleave(nodes) => sys::Numa::Interleave(nodes),
        };
        let region = sys::Region::create_with(rounded, huge, &numa)
            .map_err(|err| out_of_memory(err, len))?;
        Block::adopt(region, self)
    }
}

/// Shareable memory, pinned in RAM where the system allows it, with an address that never
/// changes until drop.
///
/// A `Block` is a run of whole pages, zeroed at creation, that the CPU and other hardware
/// (GPU, Neural Engine, DMA engines, other processes) can all see without copies: an
/// `IOSurface` on macOS, a sealed memfd on Linux, a heap region elsewhere and under Miri. What
/// "pinned" and "shared" mean on each system is in the
/// [crate docs](crate#what-pinned-and-shared-mean-here). The base address is aligned to at
/// least [`Block::ALIGN`].
///
/// `Block` never hands out a safe `&mut [u8]` from `&self`: two such slices to the same bytes
/// would be undefined behaviour. It gives raw pointers and `unsafe` views of byte ranges
/// ([`range`](Block::range), [`range_mut`](Block::range_mut)); the safe typed views come from
/// [`Tape`](crate::Tape) and [`Grid`](crate::Grid), which prove exclusive access.
///
/// ```
/// use unimem::Block;
///
/// let block = Block::open(4096)?;
/// // SAFETY: nothing else reads or writes these five bytes while the slice lives.
/// let hello = unsafe { block.range_mut(0..5) };
/// hello.copy_from_slice(b"hello");
/// assert_eq!(hello, b"hello");
/// # Ok::<(), unimem::Error>(())
/// ```
pub struct Block {
    region: sys::Region,
    pinned: bool,
    /// [`OpenOptions::warm_threads`], if set.
    warm_threads: Option<usize>,
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
    /// Opens a zeroed block of at least `len` bytes with [`OpenOptions::new`]'s defaults: lazy,
    /// and pinned if the memory-lock limit allows it ([`is_pinned`](Block::is_pinned) says).
    ///
    /// `len` is rounded up to whole pages; [`len`](Block::len) reports the rounded length,
    /// all of which is usable.
    ///
    /// # Errors
    /// [`Error::ZeroLength`] for `len == 0`, [`Error::TooLarge`] beyond what one mapping can
    /// span, [`Error::OutOfMemory`] when the system or the address-space limit (`ulimit -v`)
    /// leaves no room, [`Error::Os`] when the memory cannot be made at all (on Linux, for
    /// example, when the process has no file descriptor left: each block holds one), and
    /// with [`Pinning::Required`], [`Error::PinRefused`] when the system will not lock the
    /// pages.
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

    /// Options for a block that is warm, or never pinned, or must be pinned: see
    /// [`OpenOptions`].
    #[must_use]
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// The alignment every block's base address has at least, whatever the page size: what
    /// [`Tape`](crate::Tape) relies on for alignments up to this one without padding.
    pub const ALIGN: usize = 4096;

    /// Applies the pinning and warming options to memory a backend has just made or adopted.
    ///
    /// Checks the base address first: memory made elsewhere (an IOSurface, a memfd mapped by
    /// us) has been page-aligned on every system we know, but tapes rely on it, so a surprise
    /// is an error here rather than misaligned values later.
    pub(crate) fn adopt(region: sys::Region, options: &OpenOptions) -> Result<Block, Error> {
        let (ptr, len) = (region.ptr(), region.len());
        check_base_alignment(ptr.addr().get())?;
        let pinned = match options.pinning {
            Pinning::Off => false,
            Pinning::BestEffort if !sys::CAN_PIN => false,
            Pinning::Required if !sys::CAN_PIN => {
                return Err(Error::Unsupported {
                    what: "this platform cannot pin memory (only Linux and macOS can): \
                           open with `Pinning::BestEffort` (the default) or `Pinning::Off`",
                });
            }
            Pinning::Required => {
                sys::lock(ptr, len).map_err(|source| Error::PinRefused {
                    bytes: len,
                    locked: sys::locked_bytes(),
                    limit: sys::memlock_limit(),
                    source,
                })?;
                true
            }
            Pinning::BestEffort => sys::lock_best_effort(ptr, len),
        };
        let block = Block {
            region,
            pinned,
            warm_threads: options.warm_threads,
        };
        // macOS wires, and so populates, as it locks; Linux locks on fault and populates here.
        let populated = pinned && sys::LOCK_POPULATES;
        if options.warm && !populated && block.warm().is_err() {
            // The kernel cannot populate for us (old Linux, a wire limit on macOS, the portable
            // backend): fault the pages in by reading one byte of each. Nothing in this process
            // has the block yet, and reads change nothing a peer process may have written.
            let page = sys::page_size();
            for offset in (0..len).step_by(page) {
                // SAFETY: `offset < len`, so the byte lies inside the live region.
                unsafe { ptr.as_ptr().add(offset).read_volatile() };
            }
        }
        Ok(block)
    }

    /// Blocks below twice this many bytes are warmed by one thread unless
    /// [`OpenOptions::warm_threads`] says otherwise; larger ones by one thread per this many
    /// bytes, up to the number of CPUs.
    ///
    /// Measured on the 2-core x86-64 development VM (CPU time, as other work shared the
    /// cores): starting and joining a thread costs about 36 µs, populating 64 MiB of a memfd
    /// 55 ms (about 22 ms on a quiet run), so a thread's start is under 0.1 % of its share.
    /// Smaller blocks stay on the calling thread: a stream of small warm opens should not
    /// start threads, and how well populating scales is bounded by the kernel's locks on
    /// shared memory, not by the CPUs. The `warm_1GiB` benchmark shows the speed-up.
    pub const WARM_BYTES_PER_THREAD: usize = 64 << 20;

    /// How many threads warm this block.
    fn warm_thread_count(&self) -> usize {
        self.warm_threads
            .unwrap_or_else(|| match self.len() / Block::WARM_BYTES_PER_THREAD {
                // Asking for the CPUs reads cgroup files: only for blocks that may use them.
                0 | 1 => 1,
                wanted => wanted.min(std::thread::available_parallelism().map_or(1, |n| n.get())),
            })
    }

    /// The backend's memory, for the platform-specific parts of `Block`'s API.
    pub(crate) fn region(&self) -> &sys::Region {
        &self.region
    }

    /// The first byte. Valid for [`len`](Block::len) bytes until the block is dropped, and
    /// aligned to at least the page size and [`Block::ALIGN`].
    ///
    /// A block's bytes start initialised (zeroes, or what another process wrote), and safe
    /// code reads them as such: the cells of a [`Grid`](crate::Grid) put on the block
    /// ([`Grid::on`](crate::Grid::on)) and the views ([`range`](Block::range)). So a write
    /// through this pointer must leave only initialised bytes where those will read: write
    /// bytes, integers, floats, or values without padding, not a struct with padding bytes or
    /// a `MaybeUninit` that was never written (their padding and unwritten bytes become
    /// uninitialised, and reading them is undefined behaviour).
    #[inline]
    #[must_use]
    pub fn as_ptr(&self) -> *mut u8 {
        self.region.ptr().as_ptr()
    }

    /// The first byte, as a `NonNull`.
    #[inline]
    #[must_use]
    pub fn as_non_null(&self) -> NonNull<u8> {
        self.region.ptr()
    }

    /// Usable length in bytes: what was asked for, rounded up to whole pages, and to whole
    /// huge pages when the block got huge pages ([`OpenOptions::huge_pages`]: 2 MiB on
    /// x86-64, whether hugetlb or transparent).
    ///
    /// A block mapped from another process has the length of what was shared: the sender's
    /// `len()` when the sender is a `Block`, and otherwise the memfd's size (Linux, which may
    /// not be a whole number of pages: see `Block::from_fd`) or the IOSurface's allocation
    /// size (macOS). See [`share`](crate::share).
    #[inline]
    #[allow(clippy::len_without_is_empty, reason = "a Block is never empty")]
    #[must_use]
    pub fn len(&self) -> usize {
        self.region.len()
    }

    /// Whether the pages are locked in RAM (on Linux, locked as they fault in, for a lazy
    /// block; on macOS, all wired as the block opened).
    ///
    /// Always `false` on the portable backend and with [`Pinning::Off`]; with
    /// [`Pinning::BestEffort`], the default, it tells whether the memory-lock limit allowed it.
    ///
    /// ```
    /// let block = unimem::Block::open(64 << 20)?;
    /// if !block.is_pinned() {
    ///     eprintln!("running unpinned: raise `ulimit -l` to pin");
    /// }
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use]
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// The process's memory-lock limit in bytes (the soft `RLIMIT_MEMLOCK`, `ulimit -l`),
    /// which bounds what [`Pinning::BestEffort`] pins in all; `None` when it is unlimited or
    /// unknown, and always on the portable backend, which never pins.
    ///
    /// ```
    /// match unimem::Block::lock_limit() {
    ///     Some(limit) => println!("up to {limit} bytes can be pinned"),
    ///     None => println!("no memory-lock limit applies"),
    /// }
    /// ```
    #[must_use]
    pub fn lock_limit() -> Option<u64> {
        sys::memlock_limit()
    }

    /// The native object behind this block, for hardware and other processes. See [`Handle`].
    #[inline]
    #[must_use]
    pub fn handle(&self) -> Handle {
        self.region.handle()
    }

    /// Makes every page resident now, so that no later access takes a page fault.
    ///
    /// Safe to call while other threads use the block: the kernel brings pages in without
    /// changing a byte of them.
    ///
    /// Large blocks are populated by several threads at once, each its own range of pages:
    /// see [`OpenOptions::warm_threads`].
    ///
    /// # Errors
    /// [`Error::Os`] when the system is out of memory; [`Error::Unsupported`] on the portable
    /// backend, which can only warm a block as it opens it ([`OpenOptions::warm`]), and on
    /// Linux older than 5.14 for an unpinned block.
    pub fn warm(&self) -> Result<(), Error> {
        let threads = self.warm_thread_count();
        if threads <= 1 || !sys::POPULATES_RANGES {
            return sys::populate(self.region(), self.pinned);
        }
        // Disjoint shares of whole (huge) pages, one per thread; the calling thread takes
        // the first.
        let len = self.len();
        let granule = self.region.populate_granule();
        let units = len.div_ceil(granule);
        let threads = threads.min(units);
        let share = units.div_ceil(threads) * granule;
        let populate = |start: usize| {
            let end = len.min(start + share);
            sys::populate_range(self.region(), start, end - start, self.pinned)
        };
        std::thread::scope(|scope| {
            let others: Vec<_> = (1..threads)
                .map(|i| {
                    let start = i * share;
                    let spawned = std::thread::Builder::new()
                        .name("unimem-warm".into())
                        .spawn_scoped(scope, move || populate(start));
                    // No thread to be had: populate that share here.
                    spawned.map_err(|_| start)
                })
                .collect();
            let mut result = populate(0);
            for other in others {
                let share_result = match other {
                    Ok(handle) => handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                    Err(start) => populate(start),
                };
                result = result.and(share_result);
            }
            result
        })
    }

    /// The size of the pages that back this block now: the base page size (4 KiB on x86-64
    /// Linux, 16 KiB on Apple Silicon), or on Linux the huge page size when the block got
    /// huge pages ([`OpenOptions::huge_pages`]).
    ///
    /// For hugetlb pages this is fixed when the block opens. For transparent huge pages it is
    /// what the kernel did: the huge page size when `/proc/self/smaps` shows every resident
    /// byte of the block mapped by huge pages (`ShmemPmdMapped`), and the base page size
    /// when some are not or none is resident yet (a lazy block). Reading smaps costs about
    /// as much as a system call per mapping of the process: ask once, not in a hot loop.
    ///
    /// ```
    /// let block = unimem::Block::options().warm(true).open(1 << 20)?;
    /// assert!(block.page_size().is_power_of_two());
    /// assert_eq!(block.len() % block.page_size(), 0);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[must_use]
    pub fn page_size(&self) -> usize {
        self.region.backing_page_size()
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
    #[must_use]
    pub fn offset_of(&self, ptr: *const u8) -> Option<usize> {
        let offset = (ptr as usize).wrapping_sub(self.as_ptr() as usize);
        (offset < self.len()).then_some(offset)
    }

    /// Views bytes `range` of the block.
    ///
    /// Only the bytes in `range` are touched: references into the rest of the block, such as
    /// values a [`Tape`](crate::Tape) or a [`Cell`](crate::Cell) handed out, stay valid. This
    /// is the way to look at part of a block that a tape or a grid also uses, for example to
    /// copy out what a device wrote.
    ///
    /// # Safety
    /// - Every byte in `range` is initialised. A fresh block is zeroes, but a value taken from
    ///   a tape may leave bytes uninitialised (the padding of a struct or a tuple such as
    ///   `(u8, u64)`, a `MaybeUninit` never written; also after `clear`, where the tape hands
    ///   out those bytes again), and so may a write through [`as_ptr`](Block::as_ptr). View
    ///   only bytes that were written as bytes, integers, floats or values without padding.
    /// - Nothing writes to bytes in `range` while the slice lives: no thread of this process
    ///   (through [`as_ptr`](Block::as_ptr), another view, a tape or a grid), no device, no
    ///   other process that maps the block.
    /// - No `&mut` reference to bytes in `range` that exists when the view is made is ever
    ///   used again, even after the view is gone: making a shared view reads every byte of
    ///   the range, which ends the exclusive access such a reference claims. Values taken
    ///   from a tape or a grid overlapping the range must therefore be dead (a tape value
    ///   held only as a `&` reference, and read through it, is fine).
    /// - No `&mut` reference to bytes in `range` was passed to a function that is still
    ///   running: the function making the view, or any function below it on the stack. A
    ///   reference argument is protected until its function returns, so the view is undefined
    ///   behaviour there even if the reference is never used again. This rules out a helper
    ///   like `fn upload(x: &mut [f32], tape: &Tape)` that views `tape.offset_of(x)`: give the
    ///   helper the range (or a raw pointer) instead, and let the reference die before the
    ///   call; or, inside the helper, read the bytes through `x` itself. The example shows
    ///   both.
    ///
    /// # Panics
    /// If `range` is decreasing or reaches past [`len`](Block::len).
    ///
    /// ```
    /// use unimem::{Block, Tape};
    ///
    /// let tape = Tape::on(Block::open(8192)?);
    /// let counter = tape.take_value(0u64).unwrap();          // held for the whole example
    /// let frame = tape.take(64, 64).unwrap();                // bytes for a device to fill
    /// let at = tape.offset_of(frame.as_ptr()).unwrap();
    /// // SAFETY: nothing else uses the frame's bytes while these views live, and no
    /// // reference to them exists; `counter` lies outside them.
    /// unsafe { tape.block().range_mut(at..at + 64) }.fill(7);
    /// let seen = unsafe { tape.block().range(at..at + 64) };
    /// *counter += 1;                                         // still valid
    /// assert_eq!(seen, &[7; 64]);
    /// assert_eq!(*counter, 1);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    ///
    /// A helper that views a tape value's bytes is given their range, not the value (see the
    /// last rule above):
    ///
    /// ```
    /// use std::ops::Range;
    /// use unimem::{Block, Tape};
    ///
    /// /// Hands bytes `at` of the tape's block to a device; here, reads the first float back.
    /// fn upload(tape: &Tape, at: Range<usize>) -> f32 {
    ///     // SAFETY: the bytes were written as floats, nothing writes them while the view
    ///     // lives, and no reference to them is used again or held by a running function.
    ///     let bytes = unsafe { tape.block().range(at) };
    ///     f32::from_ne_bytes(bytes[..4].try_into().unwrap())
    /// }
    ///
    /// let tape = Tape::on(Block::open(8192)?);
    /// let x: &mut [f32] = tape.take_fill(16, 1.0).unwrap();
    /// x[0] = 2.0;
    /// let at = tape.offset_of(&*x).unwrap();
    /// let at = at..at + size_of_val(x); // the last use of `x`
    /// assert_eq!(upload(&tape, at), 2.0);
    /// # Ok::<(), unimem::Error>(())
    /// ```
    #[inline]
    #[must_use]
    #[track_caller]
    pub unsafe fn range(&self, range: Range<usize>) -> &[u8] {
        let start = self.checked_start(&range, "range");
        // SAFETY: `range` lies inside the region, which is valid and mapped for `len` bytes
        // while `self` lives; the caller promises that the bytes are initialised, that
        // nothing writes them meanwhile and that no live or protected `&mut` covers them.
        unsafe { core::slice::from_raw_parts(start, range.len()) }
    }

    /// Views bytes `range` of the block as mutable.
    ///
    /// Only the bytes in `range` are touched: references into the rest of the block stay
    /// valid. See [`range`](Block::range) for an example.
    ///
    /// # Safety
    /// - Every byte in `range` is initialised, as for [`range`](Block::range) (the slice
    ///   says `u8`, which has no uninitialised values). To fill bytes that may not be, write
    ///   through [`as_ptr`](Block::as_ptr).
    /// - Nothing else reads or writes bytes in `range` while the slice lives: no other view,
    ///   pointer, tape or grid value in this process, no device, no other process.
    /// - No reference to bytes in `range` (shared or mutable) that exists when the view is
    ///   made is ever used again, even after the view is gone: making it claims the bytes
    ///   for itself, which ends every earlier claim on them.
    /// - No reference to bytes in `range`, shared or mutable, was passed to a function that is
    ///   still running (the one making the view, or any below it on the stack): it is
    ///   protected until that function returns, so the view is undefined behaviour even if
    ///   the reference is never used again. Pass a helper the range instead; see
    ///   [`range`](Block::range).
    ///
    /// # Panics
    /// If `range` is decreasing or reaches past [`len`](Block::len).
    #[inline]
    #[must_use]
    #[track_caller]
    #[allow(clippy::mut_from_ref, reason = "exclusivity is the caller's contract")]
    pub unsafe fn range_mut(&self, range: Range<usize>) -> &mut [u8] {
        let start = self.checked_start(&range, "range_mut");
        // SAFETY: as in `range`; the caller promises exclusive access to these bytes while
        // the slice lives, and that no earlier reference to them is used again.
        unsafe { core::slice::from_raw_parts_mut(start, range.len()) }
    }

    /// Views the whole block as bytes: [`range`](Block::range) over `0..len()`.
    ///
    /// # Safety
    /// Those of [`range`](Block::range), for every byte of the block: every byte is
    /// initialised, nothing writes to the block while the slice lives, no `&mut` into the
    /// block that exists when the view is made is ever used again, and none was passed to a
    /// function that is still running. A value taken from a tape or grid on this block and
    /// still in use rules it out, and so does a tape value with padding, even a dead one:
    /// view the bytes you need with [`range`](Block::range) instead.
    #[inline]
    #[must_use]
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the caller keeps `range`'s contract for the whole block.
        unsafe { self.range(0..self.len()) }
    }

    /// Views the whole block as mutable bytes: [`range_mut`](Block::range_mut) over
    /// `0..len()`.
    ///
    /// # Safety
    /// Those of [`range_mut`](Block::range_mut), for every byte of the block: every byte is
    /// initialised, nothing else reads or writes the block while the slice lives, and no
    /// reference into the block that exists when the view is made (from a tape, a grid,
    /// another view) is ever used again, nor was passed to a function that is still running.
    #[inline]
    #[must_use]
    #[allow(clippy::mut_from_ref, reason = "exclusivity is the caller's contract")]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: the caller keeps `range_mut`'s contract for the whole block.
        unsafe { self.range_mut(0..self.len()) }
    }

    /// The first byte of `range`, after checking that it lies inside the block.
    #[inline]
    #[track_caller]
    fn checked_start(&self, range: &Range<usize>, method: &str) -> *mut u8 {
        assert!(
            range.start <= range.end && range.end <= self.len(),
            "Block::{method}: {range:?} is not a range of this block's {} bytes; ask for \
             start <= end <= len()",
            self.len(),
        );
        // SAFETY: `range.start <= len`, so the pointer stays inside the region or one past it.
        unsafe { self.as_ptr().add(range.start) }
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

/// The error for a base address that is not aligned to [`Block::ALIGN`].
fn check_base_alignment(addr: usize) -> Result<(), Error> {
    if addr % Block::ALIGN == 0 {
        Ok(())
    } else {
        Err(Error::NotShareable {
            reason: "its base address is not aligned to 4096 bytes, which tapes and grids rely \
                     on to align what they hand out: share memory allocated in whole pages \
                     (an IOSurface, a memfd, a Block's own), mapped from its start",
        })
    }
}

/// Turns a backend's refusal for lack of memory into [`Error::OutOfMemory`], which names the
/// size asked for and the address-space limit, and a backend's `TooLarge` (which saw the
/// length rounded to pages) into one that names the caller's `bytes`; other errors pass
/// through.
fn out_of_memory(err: Error, bytes: usize) -> Error {
    match err {
        Error::TooLarge { max, .. } => Error::TooLarge {
            requested: bytes,
            max,
        },
        Error::Os { call, source } if source.kind() == io::ErrorKind::OutOfMemory => {
            Error::OutOfMemory {
                bytes,
                address_space_limit: sys::address_space_limit(),
                call,
                source,
            }
        }
        other => other,
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
    fn adopted_memory_must_be_aligned_to_4096() {
        for addr in [4096, 8192, 1 << 20, 16384 * 3] {
            assert!(check_base_alignment(addr).is_ok(), "{addr:#x}");
        }
        for addr in [1, 2048, 4096 + 64, 16384 + 2048] {
            match check_base_alignment(addr) {
                Err(Error::NotShareable { reason }) => {
                    assert!(reason.contains("aligned to 4096"), "{reason}")
                }
                other => panic!("{addr:#x}: expected NotShareable, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_refusal_for_memory_names_the_size() {
        let err = out_of_memory(
            Error::Os {
                call: "mmap",
                source: io::ErrorKind::OutOfMemory.into(),
            },
            1 << 30,
        );
        match &err {
            Error::OutOfMemory { bytes, call, .. } => {
                assert_eq!((*bytes, *call), (1 << 30, "mmap"));
            }
            other => panic!("expected OutOfMemory, got {other:?}"),
        }
        assert!(err.to_string().contains("1 GiB"), "{err}");
        let other = out_of_memory(
            Error::Os {
                call: "ftruncate",
                source: io::ErrorKind::InvalidInput.into(),
            },
            4096,
        );
        assert!(matches!(
            other,
            Error::Os {
                call: "ftruncate",
                ..
            }
        ));
    }

    #[test]
    fn a_backends_size_limit_names_the_callers_length() {
        // The IOSurface backend checks the page-rounded length against its limit (4 GiB less
        // 16 KiB there; any limit a page short of a rounded length here).
        let page = sys::page_size();
        let limit = 256 * page;
        let asked = limit - page + 1;
        let err = Error::TooLarge {
            requested: page_round(asked).unwrap(),
            max: limit - page,
        };
        match out_of_memory(err, asked) {
            Error::TooLarge { requested, max } => {
                assert_eq!((requested, max), (asked, limit - page))
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
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
