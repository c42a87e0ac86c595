//! macOS and iOS: an IOSurface, locked for CPU access for its whole life.
//!
//! The surface is a one-row, one-byte-per-element buffer, the layout Metal and the Neural
//! Engine accept for raw tensors, up to the longest row every device takes
//! (`IOSurfaceGetPropertyMaximum`); a longer block is a dimensionless surface (only an
//! allocation size), whose bytes Metal still takes as a buffer. Surfaces stop at 4 GiB less
//! 16 KiB (see `max_surface_len`). It is not global (`kIOSurfaceIsGlobal` is deprecated as
//! insecure); share it through a mach port instead.
//!
//! Apple documents `IOSurfaceLock` as bounding CPU access, not as wiring pages, so pinning is
//! done with `mlock` on the locked base address like on Linux. macOS has no lock-on-fault:
//! a pinned block is wired, and so populated, when it opens. Best-effort pinning wires within
//! a budget of its own (`best_effort_wiring_budget`), as macOS's lock limit is unlimited.

use super::{Backend, Region, unix};
use crate::error::Error;
use crate::ffi::apple;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::io;

/// The `IOSurfaceRef`. See [`Handle`](crate::Handle).
pub type Handle = apple::IOSurfaceRef;

/// A CoreFoundation object we own one reference to, released on drop.
pub(super) struct Owned(apple::CFTypeRef);

impl Owned {
    /// Takes ownership of `object` (from a Create or Copy call), or reports `call` as failed.
    fn new(object: apple::CFTypeRef, call: &'static str) -> Result<Owned, Error> {
        Owned::or(object, call, io::ErrorKind::Other)
    }

    /// As `new`, with a NULL reported as an error of `kind`.
    fn or(
        object: apple::CFTypeRef,
        call: &'static str,
        kind: io::ErrorKind,
    ) -> Result<Owned, Error> {
        if object.is_null() {
            Err(Error::Os {
                call,
                source: io::Error::new(kind, format!("{call} returned NULL")),
            })
        } else {
            Ok(Owned(object))
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: we own exactly one reference to this non-null object.
        unsafe { apple::CFRelease(self.0) };
    }
}

/// What an Apple region owns: the surface, locked for CPU access while the region lives.
pub(super) type Memory = Owned;

/// The IOSurface backend.
pub(super) enum Imp {}

/// Bytes that blocks of this process hold wired now (each pinned block counts its length
/// once, as it holds one wiring of its own).
static WIRED: AtomicUsize = AtomicUsize::new(0);

/// How much best-effort pinning (`Pinning::BestEffort`) wires in a process at most, all blocks
/// together: a quarter of RAM (`sysconf(_SC_PHYS_PAGES)` pages). Wired pages cannot be paged
/// out or compressed, so the rest of the system runs in what is left.
fn best_effort_wiring_budget() -> usize {
    // SAFETY: sysconf has no preconditions; _SC_PHYS_PAGES is a valid name on macOS.
    let pages = unsafe { crate::ffi::posix::sysconf(apple::_SC_PHYS_PAGES) };
    usize::try_from(pages)
        .unwrap_or(0)
        .saturating_mul(unix::page_size())
        / 4
}

impl Backend for Imp {
    type Handle = Handle;
    type Memory = Memory;
    const CAN_PIN: bool = true;
    /// macOS has no lock-on-fault: wiring the pages faults them all in.
    const LOCK_POPULATES: bool = true;

    /// A new IOSurface: one row of one-byte elements where every device can take such a row
    /// (the layout the Neural Engine and Metal accept for raw tensors), and a dimensionless
    /// buffer (only an allocation size) beyond that.
    fn create(len: usize) -> Result<Region, Error> {
        let max = max_surface_len();
        if len > max {
            return Err(Error::TooLarge {
                requested: len,
                max,
            });
        }
        // Cannot wrap: len <= max < i64::MAX.
        let size = len as i64;
        let number = |value: i64| {
            // SAFETY: `value` is a live i64 and kCFNumberSInt64Type says it is one.
            let n = unsafe {
                apple::CFNumberCreate(
                    core::ptr::null(),
                    apple::kCFNumberSInt64Type,
                    (&raw const value).cast(),
                )
            };
            Owned::new(n, "CFNumberCreate")
        };
        // SAFETY: the keys are constant CFStrings exported by IOSurface.framework.
        let (width, height, bytes_per_element, bytes_per_row, alloc_size, pixel_format) = unsafe {
            (
                apple::kIOSurfaceWidth,
                apple::kIOSurfaceHeight,
                apple::kIOSurfaceBytesPerElement,
                apple::kIOSurfaceBytesPerRow,
                apple::kIOSurfaceAllocSize,
                apple::kIOSurfacePixelFormat,
            )
        };
        let mut keys = vec![alloc_size];
        let mut values = vec![number(size)?];
        if len <= max_row_len() {
            keys.extend([width, height, bytes_per_element, bytes_per_row, pixel_format]);
            values.extend([number(size)?, number(1)?, number(1)?, number(size)?, number(0)?]);
        }
        let value_ptrs: Vec<apple::CFTypeRef> = values.iter().map(|v| v.0).collect();
        // SAFETY: both arrays hold `keys.len()` live CF objects; the CFType callbacks retain
        // keys and values, so our references can be released right after (by `values`' drop).
        let properties = Owned::new(
            unsafe {
                apple::CFDictionaryCreate(
                    core::ptr::null(),
                    keys.as_ptr(),
                    value_ptrs.as_ptr(),
                    keys.len() as apple::CFIndex,
                    &raw const apple::kCFTypeDictionaryKeyCallBacks,
                    &raw const apple::kCFTypeDictionaryValueCallBacks,
                )
            },
            "CFDictionaryCreate",
        )?;
        // SAFETY: `properties` is a live CFDictionary of IOSurface properties.
        let surface = unsafe { apple::IOSurfaceCreate(properties.0) }.cast_const();
        // The properties are valid and the size within IOSurface's limit, so a NULL means the
        // kernel found no room for the surface or for its mapping in this task (which
        // `RLIMIT_AS` bounds): `Error::OutOfMemory`, as `Block::open` documents.
        let surface = Owned::or(surface, "IOSurfaceCreate", io::ErrorKind::OutOfMemory)?;
        // IOSurface may round the allocation up (to its own alignment, which can exceed an
        // Intel Mac's 4 KiB page). The block is all of it, so that a process that maps the
        // surface through a port, and sees its allocation size, sees the same `len()`.
        // SAFETY: `surface` is a live IOSurface.
        let made = unsafe { apple::IOSurfaceGetAllocSize(surface.0.cast_mut()) };
        if made < len || made % unix::page_size() != 0 {
            return Err(Error::Os {
                call: "IOSurfaceCreate",
                source: io::Error::other(format!(
                    "asked for a surface of {len} bytes, got one of {made}"
                )),
            });
        }
        Region::lock_surface(surface, made)
    }

    fn handle(region: &Region) -> Handle {
        region.memory.0.cast_mut()
    }

    unsafe fn release(region: &mut Region) {
        // SAFETY: the surface is live, was locked by `lock_surface` and had its use count
        // raised there; `memory` releases our reference right after this.
        unsafe {
            apple::IOSurfaceUnlock(region.handle(), 0, core::ptr::null_mut());
            apple::IOSurfaceDecrementUseCount(region.handle());
        }
    }

    /// Wires the pages.
    fn lock(ptr: NonNull<u8>, len: usize) -> io::Result<()> {
        unix::mlock(ptr, len)?;
        WIRED.fetch_add(len, Relaxed);
        Ok(())
    }

    /// Wires the pages only while every block unimem has wired in this process, these
    /// included, stays within [`best_effort_wiring_budget`]: macOS's memory-lock limit is
    /// unlimited by default, so the limit that would stop a best effort elsewhere is absent
    /// here, and the kernel's own ceiling (`vm.user_wire_limit`, most of RAM) is far past
    /// what a machine can wire and still run.
    fn lock_best_effort(ptr: NonNull<u8>, len: usize) -> bool {
        let budget = best_effort_wiring_budget();
        // Reserve first, so that threads opening blocks at once cannot overrun it together.
        let reserved = WIRED.fetch_update(Relaxed, Relaxed, |wired| {
            wired.checked_add(len).filter(|&total| total <= budget)
        });
        if reserved.is_err() {
            return false;
        }
        let wired = unix::mlock(ptr, len).is_ok();
        if !wired {
            WIRED.fetch_sub(len, Relaxed);
        }
        wired
    }

    fn unlock(ptr: NonNull<u8>, len: usize) {
        unix::unlock(ptr, len);
        WIRED.fetch_sub(len, Relaxed);
    }

    /// Brings every page in without touching a byte and without changing anyone's wiring.
    ///
    /// A pinned block's pages were wired, and so brought in, when it opened, and stay in while
    /// wired: there is nothing to do (wiring again would take a second `munlock` to undo, as
    /// XNU counts wirings per mapping). An unpinned block asks the kernel to fault its pages
    /// in (`MADV_WILLNEED`, which XNU carries out for anonymous memory by pre-faulting), never
    /// `mlock` and `munlock`, which would count against the wire limits for a moment.
    fn populate(region: &Region, pinned: bool) -> Result<(), Error> {
        if pinned {
            return Ok(());
        }
        // SAFETY: advice only: it changes no byte and no mapping, and the range is the
        // region's own, mapped while `region` lives.
        let rc = unsafe {
            apple::madvise(
                region.ptr.as_ptr().cast(),
                region.len,
                apple::MADV_WILLNEED,
            )
        };
        unix::check(rc).map_err(|source| Error::Os {
            call: "madvise",
            source,
        })
    }
}

impl Region {
    /// Adopts a surface made elsewhere, taking a reference of our own to it.
    ///
    /// # Safety
    /// `surface` is a valid `IOSurfaceRef`.
    pub(crate) unsafe fn from_surface(surface: apple::IOSurfaceRef) -> Result<Region, Error> {
        // SAFETY: the caller promises a valid IOSurface; CFRetain gives us our own reference,
        // so the caller's stays theirs to release.
        let retained = unsafe { apple::CFRetain(surface.cast_const()) };
        Region::adopt_surface(Owned::new(retained, "CFRetain")?)
    }

    /// Looks up the surface a mach port (a send right made by `IOSurfaceCreateMachPort`)
    /// names. The port stays the caller's.
    pub(crate) fn from_mach_port(port: apple::mach_port_t) -> Result<Region, Error> {
        // SAFETY: any port name may be passed; one that names no IOSurface gives NULL. The
        // surface returned carries a reference that is ours (`Owned` releases it once).
        let surface = unsafe { apple::IOSurfaceLookupFromMachPort(port) };
        if surface.is_null() {
            return Err(Error::NotShareable {
                reason: "the mach port does not name an IOSurface (IOSurfaceLookupFromMachPort \
                         returned NULL): send the port that a block's `mach_port()` gives",
            });
        }
        Region::adopt_surface(Owned(surface.cast_const()))
    }

    /// A new send right to this surface, for another process to look it up with.
    pub(crate) fn mach_port(&self) -> Result<apple::mach_port_t, Error> {
        // SAFETY: the surface is live while `self` is.
        let port = unsafe { apple::IOSurfaceCreateMachPort(self.handle()) };
        if port == apple::MACH_PORT_NULL {
            return Err(Error::Os {
                call: "IOSurfaceCreateMachPort",
                source: io::Error::other("IOSurfaceCreateMachPort returned MACH_PORT_NULL"),
            });
        }
        Ok(port)
    }

    /// Locks an adopted surface and maps all of it: its whole allocation is the block.
    ///
    /// Only a surface whose bytes are one run from its base address to the end of its
    /// allocation can be that: one without planes, whose allocation size from its base
    /// address on lies in the one mapping that holds the base (a surface made with a
    /// `kIOSurfaceOffset` has its base address past the start of its allocation, so the
    /// allocation size can overrun its mapping, into whatever is mapped next).
    fn adopt_surface(surface: Owned) -> Result<Region, Error> {
        let raw = surface.0.cast_mut();
        // SAFETY: `raw` is a live IOSurface; neither call needs it locked.
        let (len, planes) =
            unsafe { (apple::IOSurfaceGetAllocSize(raw), apple::IOSurfaceGetPlaneCount(raw)) };
        if len == 0 {
            return Err(Error::NotShareable {
                reason: "the IOSurface has no bytes (its allocation size is 0)",
            });
        }
        if planes > 0 {
            return Err(Error::NotShareable {
                reason: "the IOSurface has planes (IOSurfaceGetPlaneCount is not 0): a block \
                         adopts only single-plane surfaces, whose bytes are one run",
            });
        }
        let region = Region::lock_surface(surface, len)?;
        if !one_mapping_holds(region.ptr, len) {
            return Err(Error::NotShareable {
                reason: "the IOSurface's mapping in this process does not by itself hold its \
                         allocation size from its base address on, readable and writable (the \
                         surface was made with a kIOSurfaceOffset or read-only, or its mapping \
                         was split or reprotected): send a writable surface made without an \
                         offset, such as one from a block's `mach_port()`",
            });
        }
        Ok(region)
    }

    /// Locks `surface` for CPU access, marks it in use and takes its base address; `len` is at
    /// most its allocation size.
    ///
    /// The use count (`IOSurfaceIncrementUseCount`) is what surface pools (Core Video's, and
    /// others built on `IOSurfaceIsInUse`) check before they recycle a surface: without it, a
    /// pool could hand an adopted surface to a new frame under a live block once the port or
    /// reference it came from is gone. Every region holds one count until it drops.
    fn lock_surface(surface: Owned, len: usize) -> Result<Region, Error> {
        let raw = surface.0.cast_mut();
        // SAFETY: `raw` is a live IOSurface; a null seed pointer is allowed.
        let kr = unsafe { apple::IOSurfaceLock(raw, 0, core::ptr::null_mut()) };
        if kr != apple::KERN_SUCCESS {
            return Err(Error::Os {
                call: "IOSurfaceLock",
                source: io::Error::new(
                    lock_error_kind(kr),
                    format!("kern_return_t {kr:#x}"),
                ),
            });
        }
        // SAFETY: `raw` is a live IOSurface; `release` gives the count back.
        unsafe { apple::IOSurfaceIncrementUseCount(raw) };
        // From here on, `region` unlocks, gives up the use count and releases the surface if
        // we give up on it.
        let mut region = Region {
            ptr: NonNull::dangling(),
            len,
            memory: surface,
        };
        // SAFETY: the surface is live and locked, so its base address is valid.
        let base = unsafe { apple::IOSurfaceGetBaseAddress(raw) };
        // A locked surface without an address is one that could not be mapped into this task.
        region.ptr = NonNull::new(base.cast::<u8>()).ok_or_else(|| Error::Os {
            call: "IOSurfaceGetBaseAddress",
            source: io::Error::new(
                io::ErrorKind::OutOfMemory,
                "the locked surface has no base address (NULL): it could not be mapped",
            ),
        })?;
        Ok(region)
    }

    /// The surface's global `IOSurfaceID`.
    pub(crate) fn surface_id(&self) -> apple::IOSurfaceID {
        // SAFETY: the surface is live while `self` is.
        unsafe { apple::IOSurfaceGetID(self.handle()) }
    }
}

/// Gives up one send right to a mach port, as `MachPort`'s drop does.
pub(crate) fn deallocate_port(port: apple::mach_port_t) {
    // SAFETY: the caller owns one send right to `port` and gives it up here. A failure leaves
    // at worst a right that nobody uses, which is not worth a panic in a destructor.
    unsafe { apple::mach_port_deallocate(task_self(), port) };
}

/// This task's name for itself, read as the SDK's `mach_task_self()` macro does: from the
/// `mach_task_self_` variable, not through the legacy function of that name (a trap that
/// leaves a user reference behind on every call).
fn task_self() -> apple::mach_port_t {
    // SAFETY: libsystem sets the variable as the process starts (and again in a forked child)
    // and nothing writes it afterwards; reading a u32 has no other requirement.
    unsafe { apple::mach_task_self_ }
}

/// What a failed `IOSurfaceLock` means, for `Error::OutOfMemory`: the kernel's and IOKit's
/// "no memory", "no room" and "mapping failed" codes (`mach/kern_return.h`,
/// `IOKit/IOReturn.h`; XNU refuses a mapping past `RLIMIT_AS` with `KERN_NO_SPACE`) are a lack
/// of memory or address space, anything else a plain failure.
fn lock_error_kind(kr: apple::kern_return_t) -> io::ErrorKind {
    const KERN_NO_SPACE: apple::kern_return_t = 3;
    const KERN_RESOURCE_SHORTAGE: apple::kern_return_t = 6;
    /// `iokit_common_err(code)`: IOKit's system (0x38) in the top six bits, then the code.
    const fn iokit(code: u32) -> apple::kern_return_t {
        (0xe000_0000 | code) as apple::kern_return_t
    }
    const IO_RETURN_NO_MEMORY: apple::kern_return_t = iokit(0x2bd);
    const IO_RETURN_NO_RESOURCES: apple::kern_return_t = iokit(0x2be);
    const IO_RETURN_VM_ERROR: apple::kern_return_t = iokit(0x2c8);
    const IO_RETURN_NO_SPACE: apple::kern_return_t = iokit(0x2db);
    match kr {
        KERN_NO_SPACE
        | KERN_RESOURCE_SHORTAGE
        | IO_RETURN_NO_MEMORY
        | IO_RETURN_NO_RESOURCES
        | IO_RETURN_VM_ERROR
        | IO_RETURN_NO_SPACE => io::ErrorKind::OutOfMemory,
        _ => io::ErrorKind::Other,
    }
}

/// How far IOSurface may round an allocation up: 16 KiB, Apple silicon's page, on every Mac
/// (so also above an Intel Mac's 4 KiB page).
const SURFACE_ROUNDING: usize = 16 << 10;

/// The largest surface unimem makes: IOSurface keeps a surface's allocation size in 32 bits,
/// so 4 GiB less the most it may round a length up by, 16 KiB, on Intel Macs too (there 4 GiB
/// less a 4 KiB page would round up to 4 GiB, which 32 bits do not hold). Larger blocks are
/// refused with `Error::TooLarge` naming this.
fn max_surface_len() -> usize {
    (1usize << 32) - SURFACE_ROUNDING.max(unix::page_size())
}

/// The longest one-row surface every device in this machine takes (a row of one-byte
/// elements, so both its width and its bytes per row are the length).
fn max_row_len() -> usize {
    let maximum = |property: apple::CFStringRef| {
        // SAFETY: `property` is a constant CFString exported by IOSurface.framework, and the
        // call only reads it.
        match unsafe { apple::IOSurfaceGetPropertyMaximum(property) } {
            // IOSurfaceRef.h: 0 means the property has no predefined limit.
            0 => usize::MAX,
            max => max,
        }
    };
    // SAFETY: reading the two constant CFStrings exported by IOSurface.framework.
    let (width, bytes_per_row) = unsafe { (apple::kIOSurfaceWidth, apple::kIOSurfaceBytesPerRow) };
    maximum(width).min(maximum(bytes_per_row))
}

/// Whether one mapping of this task (one XNU `vm_map_entry`, which maps one VM object) holds
/// every byte from `base` to `base + len`, readable and writable.
///
/// Adjacent mappings are not added up: XNU places unrelated mappings right next to each
/// other, so a run of regions says nothing about who owns the bytes past the first one. One
/// entry is one object mapped at consecutive offsets, so the surface's own mapping passes
/// only if it alone reaches `len` bytes past `base`. Entries are not joined even when they
/// look like one object either: the only object name `mach_vm_region` gives
/// (`VM_REGION_TOP_INFO`'s `obj_id`) is 32 bits, too few to tell kernel objects apart for
/// sure. So a mapping split in two (other code wired or reprotected part of it) is refused,
/// which is the safe side; so is a submap entry (a shared region, which holds many objects).
fn one_mapping_holds(base: NonNull<u8>, len: usize) -> bool {
    let start = base.as_ptr() as apple::mach_vm_address_t;
    let Some(end) = start.checked_add(len as apple::mach_vm_size_t) else {
        return false;
    };
    let mut address = start;
    let mut size: apple::mach_vm_size_t = 0;
    let mut info = apple::vm_region_basic_info_64::default();
    let mut count = apple::VM_REGION_BASIC_INFO_COUNT_64;
    let mut object = apple::MACH_PORT_NULL;
    // SAFETY: every out-pointer is a live local of the type the call writes, and `count`
    // says how many 32-bit words `info` holds.
    let kr = unsafe {
        apple::mach_vm_region(
            task_self(),
            &mut address,
            &mut size,
            apple::VM_REGION_BASIC_INFO_64,
            &mut info,
            &mut count,
            &mut object,
        )
    };
    // The call reports the first entry that ends above `start`, with its own start and size
    // (never several entries together). One starting above `start` means `base` is not mapped.
    // XNU reports a submap entry by a non-zero `reserved` (its `is_sub_map`). A block's bytes
    // are read and written through safe references, so the entry must allow both: a surface
    // mapped read-only (or reprotected so) would fault on the first write.
    let read_write = apple::VM_PROT_READ | apple::VM_PROT_WRITE;
    kr == apple::KERN_SUCCESS
        && info.reserved == 0
        && info.protection & read_write == read_write
        && address <= start
        && address
            .checked_add(size)
            .is_some_and(|mapped_end| mapped_end >= end)
}

#[cfg(test)]
mod tests {
    use super::{lock_error_kind, max_surface_len, one_mapping_holds, unix};
    use core::ptr::NonNull;
    use std::io::ErrorKind;

    /// 4 GiB less 16 KiB on Apple silicon and on Intel Macs alike: an Intel Mac's 4 KiB page
    /// would leave a length that IOSurface's 16 KiB rounding takes past 32 bits.
    #[test]
    fn surfaces_stop_16_kib_short_of_4_gib_on_every_mac() {
        assert_eq!(max_surface_len(), (4usize << 30) - (16 << 10));
        assert_eq!(max_surface_len() % unix::page_size(), 0);
    }

    #[test]
    fn lock_failures_for_want_of_memory_are_out_of_memory() {
        // KERN_NO_SPACE (a mapping past RLIMIT_AS), kIOReturnNoMemory, kIOReturnVMError.
        for kr in [3, 0xe000_02bd_u32 as i32, 0xe000_02c8_u32 as i32] {
            assert_eq!(lock_error_kind(kr), ErrorKind::OutOfMemory, "{kr:#x}");
        }
        // KERN_INVALID_ADDRESS, kIOReturnBadArgument, kIOReturnExclusiveAccess.
        for kr in [1, 0xe000_02c2_u32 as i32, 0xe000_02c5_u32 as i32] {
            assert_eq!(lock_error_kind(kr), ErrorKind::Other, "{kr:#x}");
        }
    }

    /// Maps `pages` fresh pages, readable and writable, for the test to unmap.
    fn map_pages(pages: usize) -> NonNull<u8> {
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let raw = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                pages * unix::page_size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANON,
                -1,
                0,
            )
        };
        assert_ne!(raw, libc::MAP_FAILED, "mmap of {pages} pages");
        NonNull::new(raw.cast::<u8>()).unwrap()
    }

    /// Two pages mapped together and then given different inheritance are two entries: the
    /// first holds itself, but not the run of both, though both are mapped without a gap.
    #[test]
    fn adjacent_mappings_are_not_added_up() {
        let page = unix::page_size();
        let base = map_pages(2);
        let raw = base.as_ptr().cast::<libc::c_void>();
        assert!(one_mapping_holds(base, 2 * page), "one entry before the split");
        // SAFETY: within the two-page mapping.
        let second = unsafe { base.add(page) };
        // SAFETY: the second page is ours; inheritance only matters to a fork, and XNU keeps
        // it per entry, so the mapping splits in two.
        let rc = unsafe { libc::minherit(second.as_ptr().cast(), page, libc::VM_INHERIT_NONE) };
        assert_eq!(rc, 0, "minherit of the second page");
        assert!(one_mapping_holds(base, page));
        assert!(!one_mapping_holds(base, page + 1));
        assert!(!one_mapping_holds(base, 2 * page));
        // The second page is an entry of its own, starting at its first byte.
        assert!(one_mapping_holds(second, page));
        // SAFETY: unmaps exactly what was mapped above, which nothing refers to any more.
        assert_eq!(unsafe { libc::munmap(raw, 2 * page) }, 0);
    }

    /// A read-only mapping is not one a block may adopt: safe code writes its bytes.
    #[test]
    fn a_read_only_mapping_does_not_hold_a_block() {
        let page = unix::page_size();
        let base = map_pages(1);
        let raw = base.as_ptr().cast::<libc::c_void>();
        assert!(one_mapping_holds(base, page), "readable and writable");
        // SAFETY: the page is ours, and nothing reads or writes it.
        assert_eq!(unsafe { libc::mprotect(raw, page, libc::PROT_READ) }, 0);
        assert!(!one_mapping_holds(base, page), "read-only");
        // SAFETY: unmaps exactly what was mapped above, which nothing refers to any more.
        assert_eq!(unsafe { libc::munmap(raw, page) }, 0);
    }
}
