//! macOS and iOS: an IOSurface, locked for CPU access for its whole life.
//!
//! The surface is a one-row, one-byte-per-element buffer, the layout Metal and the Neural
//! Engine accept for raw tensors. It is not global (`kIOSurfaceIsGlobal` is deprecated as
//! insecure); share it through a mach port instead.
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

    /// A new IOSurface.
    fn create(len: usize) -> Result<Region, Error> {
        let size = i64::try_from(len).map_err(|_| Error::TooLarge {
            requested: len,
            max: i64::MAX as usize,
        })?;
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
        let keys = unsafe {
            [
                apple::kIOSurfaceWidth,
                apple::kIOSurfaceHeight,
                apple::kIOSurfaceBytesPerElement,
                apple::kIOSurfaceBytesPerRow,
                apple::kIOSurfaceAllocSize,
                apple::kIOSurfacePixelFormat,
            ]
        };
        let values = [
            number(size)?,
            number(1)?,
            number(1)?,
            number(size)?,
            number(size)?,
            number(0)?,
        ];
        let value_ptrs = values.each_ref().map(|v| v.0);
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
        Region::lock_surface(surface, len)
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

    /// Brings every page in through the kernel, without touching a byte: wiring populates,
    /// and an unpinned block is unwired again right after.
    fn populate(region: &Region, pinned: bool) -> Result<(), Error> {
        let (ptr, len) = (region.ptr, region.len);
        unix::mlock(ptr, len).map_err(|source| Error::Os {
            call: "mlock",
            source,
        })?;
        if !pinned {
            unix::unlock(ptr, len);
        }
        Ok(())
    }

    fn page_size() -> usize {
        unix::page_size()
    }

    fn memlock_limit() -> Option<u64> {
        unix::memlock_limit()
    }

    fn locked_bytes() -> Option<u64> {
        unix::locked_bytes()
    }

    fn address_space_limit() -> Option<u64> {
        unix::address_space_limit()
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
    fn adopt_surface(surface: Owned) -> Result<Region, Error> {
        // SAFETY: `surface` is a live IOSurface; its size is known without locking it.
        let len = unsafe { apple::IOSurfaceGetAllocSize(surface.0.cast_mut()) };
        if len == 0 {
            return Err(Error::NotShareable {
                reason: "the IOSurface has no bytes (its allocation size is 0)",
            });
        }
        Region::lock_surface(surface, len)
    }

    /// Locks `surface` for CPU access and checks it spans at least `len` bytes.
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
        // SAFETY: as above.
        let alloc = unsafe { apple::IOSurfaceGetAllocSize(raw) };
        match NonNull::new(base.cast::<u8>()) {
            Some(ptr) if alloc >= len => {
                region.ptr = ptr;
                Ok(region)
            }
            _ => Err(Error::Os {
                call: "IOSurfaceGetBaseAddress",
                source: io::Error::other(format!(
                    "the surface has base {base:p} and {alloc} bytes, not {len}"
                )),
            }),
        }
    }

    /// The surface's global `IOSurfaceID`.
    pub(crate) fn surface_id(&self) -> apple::IOSurfaceID {
        // SAFETY: the surface is live while `self` is.
        unsafe { apple::IOSurfaceGetID(self.handle()) }
    }
}

/// Gives up one send right to a mach port, as `MachPort`'s drop does.
pub(crate) fn deallocate_port(port: apple::mach_port_t) {
    // SAFETY: `mach_task_self_` is set up by the system before any Rust code runs; the caller
    // owns one send right to `port` and gives it up here. A failure leaves at worst a right
    // that nobody uses, which is not worth a panic in a destructor.
    unsafe { apple::mach_port_deallocate(apple::mach_task_self_, port) };
}
