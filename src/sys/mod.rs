//! The backends: one file per kind of memory, one of them chosen per target (`backend!`, the
//! crate's one switch), each keeping the contract that the `Backend` trait states.
//!
//! `block.rs` holds the policy (what to pin, when to populate) once, over what is exported
//! here. `share/` uses the platform extras exported below. Nothing here names a public type:
//! the backends hand out memory, descriptors and surfaces, never a `Block`.

use crate::error::Error;
use core::ptr::NonNull;
use std::io;

backend! {
    native: {
        mod unix;
        #[cfg_attr(target_os = "linux", path = "linux.rs")]
        #[cfg_attr(target_vendor = "apple", path = "apple.rs")]
        mod imp;
        #[cfg(target_os = "linux")]
        mod scm;
        #[cfg(target_os = "linux")]
        mod fork;

        #[cfg(target_os = "linux")]
        pub(crate) use {imp::Access, scm::{recv_fd, send_fd}};
        #[cfg(target_vendor = "apple")]
        pub(crate) use imp::deallocate_port;
        // Not a backend: the CUDA driver, which registers a backend's memory for a GPU.
        #[cfg(all(feature = "cuda", target_os = "linux"))]
        pub(crate) mod cuda;
        // Not a backend either: UCX, which registers a backend's memory for one-sided transfers.
        #[cfg(all(feature = "ucx", target_os = "linux"))]
        pub(crate) mod ucx;
    }
    portable: {
        #[path = "heap.rs"]
        mod imp;
    }
}

pub(crate) use imp::Handle;
use imp::Imp;

/// What every backend provides. rustc checks the chosen backend against it on every target,
/// and `Region` and the functions below are written once over it.
trait Backend {
    /// The native object behind a region: see [`Handle`](crate::Handle).
    type Handle: Copy + core::fmt::Debug;
    /// What a region owns besides the address and length of its pages: a descriptor, a
    /// surface, or nothing.
    type Memory;
    /// Whether `lock` can ever succeed.
    const CAN_PIN: bool;
    /// Whether `lock` also faults every page in.
    const LOCK_POPULATES: bool;

    /// New zeroed, shareable memory of `len` bytes, a nonzero multiple of `page_size()`.
    fn create(len: usize) -> Result<Region, Error>;
    /// The native object behind `region`, borrowed for as long as the region lives.
    fn handle(region: &Region) -> Self::Handle;
    /// Undoes what making or adopting `region` set up (a mapping, a lock, an allocation);
    /// `Memory`'s own drop runs afterwards.
    ///
    /// # Safety
    /// Called once, from `region`'s drop: nothing uses the region afterwards.
    unsafe fn release(region: &mut Region);
    /// Locks `len` bytes at `ptr`, part of a live region, in RAM.
    fn lock(ptr: NonNull<u8>, len: usize) -> io::Result<()>;
    /// Locks as `lock` does for `Pinning::BestEffort`, which a backend may decline by its
    /// platform's policy (see the crate docs' platform table); whether it locked.
    fn lock_best_effort(ptr: NonNull<u8>, len: usize) -> bool {
        Self::lock(ptr, len).is_ok()
    }
    /// Undoes `lock`. Errors are ignored: this runs on drop.
    fn unlock(ptr: NonNull<u8>, len: usize);
    /// Faults every page of `region` in without changing a byte, keeping it locked if
    /// `pinned`.
    fn populate(region: &Region, pinned: bool) -> Result<(), Error>;
}

/// What the system says about memory, for the policy in `block.rs` and its error messages:
/// the same for both native backends (`unix::Unix`), fixed for the portable one.
trait System {
    /// The size of a page, which every region's address and made length are multiples of.
    fn page_size() -> usize;
    /// The soft `RLIMIT_MEMLOCK` in bytes, or `None` when it is unlimited or unknown.
    fn memlock_limit() -> Option<u64>;
    /// How many bytes this process has locked in RAM now, or `None` where the system does
    /// not say. For error messages.
    fn locked_bytes() -> Option<u64>;
    /// The soft `RLIMIT_AS` (`ulimit -v`) in bytes, or `None` when it is unlimited, unknown or
    /// not enforced. For error messages.
    fn address_space_limit() -> Option<u64>;
}

backend! {
    native: {
        use unix::Unix as Sys;
    }
    portable: {
        use imp::Imp as Sys;
    }
}

/// Memory that a backend made or adopted: `len` bytes at `ptr`, released on drop.
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
    memory: <Imp as Backend>::Memory,
}

/// Whether [`Region::create_with`] can back memory with huge pages (Linux).
pub(crate) const HUGE_PAGES: bool = cfg!(all(target_os = "linux", not(any(miri, loom))));

/// Huge pages asked for (`block.rs`'s `HugePages`, which `sys/` may not name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Huge {
    Off,
    BestEffort,
    Required,
}

/// Where the pages of new memory are placed (`block.rs`'s `Numa`).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(
    not(all(target_os = "linux", not(any(miri, loom)))),
    allow(dead_code, reason = "only Linux places pages")
)]
pub(crate) enum Numa<'a> {
    /// The process's policy.
    Any,
    /// Only on these nodes.
    Bind(&'a [usize]),
    /// Round-robin over these nodes.
    Interleave(&'a [usize]),
}

impl Region {
    /// New zeroed memory of at least `len` bytes (a nonzero multiple of [`page_size`]), with
    /// huge pages and a NUMA placement where the backend offers them: Linux does (and rounds
    /// `len` up to the huge page size it uses); the others ignore both.
    pub(crate) fn create_with(len: usize, huge: Huge, numa: &Numa<'_>) -> Result<Region, Error> {
        #[cfg(all(target_os = "linux", not(any(miri, loom))))]
        return Region::create_with_linux(len, huge, numa);
        #[cfg(not(all(target_os = "linux", not(any(miri, loom)))))]
        {
            let _ = (huge, numa);
            Imp::create(len)
        }
    }

    /// The size of the pages that back the region now (Linux: hugetlbfs pages, or transparent
    /// huge pages where the kernel gave them to every resident page); the base page size
    /// elsewhere.
    pub(crate) fn backing_page_size(&self) -> usize {
        #[cfg(all(target_os = "linux", not(any(miri, loom))))]
        return self.backing_page_size_linux();
        #[cfg(not(all(target_os = "linux", not(any(miri, loom)))))]
        page_size()
    }

    /// The unit in which threads split populating the region: its huge page size where it
    /// has huge pages (so that no two threads fault in one huge page), the base page size
    /// otherwise.
    pub(crate) fn populate_granule(&self) -> usize {
        #[cfg(all(target_os = "linux", not(any(miri, loom))))]
        if let imp::Pages::HugeTlb(size) | imp::Pages::Transparent(size) = self.pages() {
            return size;
        }
        page_size()
    }

    #[inline]
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn handle(&self) -> Handle {
        Imp::handle(self)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: this is the region's drop, which runs once; nothing uses it afterwards.
        unsafe { Imp::release(self) }
    }
}

/// Whether [`lock`] can ever succeed on this platform.
pub(crate) const CAN_PIN: bool = Imp::CAN_PIN;

/// Whether [`lock`] also faults every page in (so a pinned block needs no populating).
pub(crate) const LOCK_POPULATES: bool = Imp::LOCK_POPULATES;

/// Locks `len` bytes at `ptr`, part of a live region, in RAM.
pub(crate) fn lock(ptr: NonNull<u8>, len: usize) -> io::Result<()> {
    Imp::lock(ptr, len)
}

/// Locks as [`lock`] does where the platform's best-effort policy allows it; whether it did.
/// Undone by [`unlock`].
pub(crate) fn lock_best_effort(ptr: NonNull<u8>, len: usize) -> bool {
    Imp::lock_best_effort(ptr, len)
}

/// Undoes [`lock`]; errors are ignored, as this runs on drop.
pub(crate) fn unlock(ptr: NonNull<u8>, len: usize) {
    Imp::unlock(ptr, len)
}

/// Faults every page of `region` in without changing a byte.
pub(crate) fn populate(region: &Region, pinned: bool) -> Result<(), Error> {
    Imp::populate(region, pinned)
}

/// Whether [`populate_range`] populates part of a region (Linux); elsewhere only a whole
/// region can be populated, with [`populate`].
pub(crate) const POPULATES_RANGES: bool = cfg!(all(target_os = "linux", not(any(miri, loom))));

/// Faults the pages of bytes `start..start + len` of `region` in without changing a byte;
/// several threads may populate disjoint ranges at once. Only where [`POPULATES_RANGES`].
#[allow(unused_variables, reason = "only Linux populates ranges")]
pub(crate) fn populate_range(
    region: &Region,
    start: usize,
    len: usize,
    pinned: bool,
) -> Result<(), Error> {
    #[cfg(all(target_os = "linux", not(any(miri, loom))))]
    return imp::populate_range(region, start, len, pinned);
    #[cfg(not(all(target_os = "linux", not(any(miri, loom)))))]
    unreachable!("populate_range is only called where POPULATES_RANGES")
}

/// The size of a page, which every block's address and length are multiples of.
pub(crate) fn page_size() -> usize {
    Sys::page_size()
}

/// The soft `RLIMIT_MEMLOCK` in bytes, or `None` when it is unlimited or unknown.
pub(crate) fn memlock_limit() -> Option<u64> {
    Sys::memlock_limit()
}

/// How many bytes this process has locked in RAM now, or `None` where the system does not say.
pub(crate) fn locked_bytes() -> Option<u64> {
    Sys::locked_bytes()
}

/// The soft `RLIMIT_AS` in bytes, or `None` when it is unlimited, unknown or not enforced.
pub(crate) fn address_space_limit() -> Option<u64> {
    Sys::address_space_limit()
}
