//! macOS and iOS: an IOSurface, locked for CPU access for its whole life.
//!
//! The surface is a one-row, one-byte-per-element buffer, the layout Metal and the Neural
//! Engine accept for raw tensors, up to the longest row every device takes
//! (`IOSurfaceGetPropertyMaximum`); a longer block is a dimensionless surface (only an
//! allocation size), whose bytes Metal still takes as a buffer. Surfaces stop at 4 GiB less a
//! page. It is not global (`kIOSurfaceIsGlobal` is deprecated as insecure); share it through
//! a mach port instead.
//!
//! Apple documents `IOSurfaceLock` as bounding CPU access, not as wiring pages, so pinning is
//! done with `mlock` on the locked base address like on Linux. macOS has no lock-on-fault:
//! a pinned block is wired, and so populated, when it opens.

use super::{Backend, Region, unix};
use crate::error::Error;
use crate::ffi::apple;
use core::ptr::NonNull;
use std::io;

/// The `IOSurfaceRef`. See [`Handle`](crate::Handle).
pub type Handle = apple::IOSurfaceRef;

/// A CoreFoundation object we own one reference to, released on drop.
pub(super) struct Owned(apple::CFTypeRef);

impl Owned {
    /// Takes ownership of `object` (from a Create or Copy call), or reports `call` as failed.
    fn new(object: apple::CFTypeRef, call: &'static str) -> Result<Owned, Error> {
        if object.is_null() {
            Err(Error::Os {
                call,
                source: io::Error::other(format!("{call} returned NULL")),
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
        let surface = Owned::new(
            unsafe { apple::IOSurfaceCreate(properties.0) }.cast_const(),
            "IOSurfaceCreate",
        )?;
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
        // SAFETY: the surface is live and was locked by `lock_surface`; `memory` releases our
        // reference right after this.
        unsafe { apple::IOSurfaceUnlock(region.handle(), 0, core::ptr::null_mut()) };
    }

    /// Wires the pages.
    fn lock(ptr: NonNull<u8>, len: usize) -> io::Result<()> {
        unix::mlock(ptr, len)
    }

    fn unlock(ptr: NonNull<u8>, len: usize) {
        unix::unlock(ptr, len)
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
                         allocation size from its base address on (the surface was made with a \
                         kIOSurfaceOffset, or its mapping was split): send a surface made \
                         without an offset, such as one from a block's `mach_port()`",
            });
        }
        Ok(region)
    }

    /// Locks `surface` for CPU access and takes its base address; `len` is at most its
    /// allocation size.
    fn lock_surface(surface: Owned, len: usize) -> Result<Region, Error> {
        let raw = surface.0.cast_mut();
        // SAFETY: `raw` is a live IOSurface; a null seed pointer is allowed.
        let kr = unsafe { apple::IOSurfaceLock(raw, 0, core::ptr::null_mut()) };
        if kr != apple::KERN_SUCCESS {
            return Err(Error::Os {
                call: "IOSurfaceLock",
                source: io::Error::other(format!("kern_return_t {kr:#x}")),
            });
        }
        // From here on, `region` unlocks and releases the surface if we give up on it.
        let mut region = Region {
            ptr: NonNull::dangling(),
            len,
            memory: surface,
        };
        // SAFETY: the surface is live and locked, so its base address is valid.
        let base = unsafe { apple::IOSurfaceGetBaseAddress(raw) };
        region.ptr = NonNull::new(base.cast::<u8>()).ok_or_else(|| Error::Os {
            call: "IOSurfaceGetBaseAddress",
            source: io::Error::other("the locked surface has no base address (NULL)"),
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
    // SAFETY: mach_task_self has no preconditions and names this task (asked each time, not
    // read from the `mach_task_self_` variable); the caller owns one send right to `port` and
    // gives it up here. A failure leaves at worst a right that nobody uses, which is not
    // worth a panic in a destructor.
    unsafe { apple::mach_port_deallocate(apple::mach_task_self(), port) };
}

/// The largest surface unimem makes: IOSurface keeps a surface's allocation size in 32 bits,
/// so 4 GiB less a page. Larger blocks are refused with `Error::TooLarge` naming this.
fn max_surface_len() -> usize {
    (1usize << 32) - unix::page_size()
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
/// every byte from `base` to `base + len`.
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
            apple::mach_task_self(),
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
    // XNU reports a submap entry by a non-zero `reserved` (its `is_sub_map`).
    kr == apple::KERN_SUCCESS
        && info.reserved == 0
        && address <= start
        && address
            .checked_add(size)
            .is_some_and(|mapped_end| mapped_end >= end)
}

#[cfg(test)]
mod tests {
    use super::{one_mapping_holds, unix};
    use core::ptr::NonNull;

    /// Two pages mapped together and then given different protections are two entries: the
    /// first holds itself, but not the run of both, though both are mapped without a gap.
    #[test]
    fn adjacent_mappings_are_not_added_up() {
        let page = unix::page_size();
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let raw = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANON,
                -1,
                0,
            )
        };
        assert_ne!(raw, libc::MAP_FAILED, "mmap of two pages");
        let base = NonNull::new(raw.cast::<u8>()).unwrap();
        assert!(one_mapping_holds(base, 2 * page), "one entry before the split");
        // SAFETY: within the two-page mapping.
        let second = unsafe { base.add(page) };
        // SAFETY: the second page is ours, and nothing reads or writes it.
        let rc = unsafe { libc::mprotect(second.as_ptr().cast(), page, libc::PROT_READ) };
        assert_eq!(rc, 0, "mprotect of the second page");
        assert!(one_mapping_holds(base, page));
        assert!(!one_mapping_holds(base, page + 1));
        assert!(!one_mapping_holds(base, 2 * page));
        // The second page is an entry of its own, starting at its first byte.
        assert!(one_mapping_holds(second, page));
        // SAFETY: unmaps exactly what was mapped above, which nothing refers to any more.
        assert_eq!(unsafe { libc::munmap(raw, 2 * page) }, 0);
    }
}
