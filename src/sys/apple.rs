//! macOS and iOS: an IOSurface, locked for CPU access for its whole life.
//!
//! The surface is a one-row, one-byte-per-element buffer, the layout Metal and the Neural
//! Engine accept for raw tensors. It is not global (`kIOSurfaceIsGlobal` is deprecated as
//! insecure); share it through a mach port instead.
//!
//! Apple documents `IOSurfaceLock` as bounding CPU access, not as wiring pages, so pinning is
//! done with `mlock` on the locked base address like on Linux. macOS has no lock-on-fault:
//! a pinned block is wired, and so populated, when it opens.

use super::unix;
use crate::error::Error;
use crate::ffi::apple as ffi;
use core::ptr::NonNull;
use std::io;

/// The `IOSurfaceRef`. See [`Handle`](crate::Handle).
pub type Handle = ffi::IOSurfaceRef;

pub(crate) const CAN_PIN: bool = true;

/// A CoreFoundation object we own one reference to, released on drop.
struct Owned(ffi::CFTypeRef);

impl Owned {
    /// Takes ownership of `object` (from a Create or Copy call), or reports `call` as failed.
    fn new(object: ffi::CFTypeRef, call: &'static str) -> Result<Owned, Error> {
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
        unsafe { ffi::CFRelease(self.0) };
    }
}

/// An IOSurface, locked, with its base address.
pub(crate) struct Region {
    surface: Owned,
    ptr: NonNull<u8>,
    len: usize,
}

impl Region {
    /// A new IOSurface of `len` bytes (a multiple of the page size).
    pub(crate) fn create(len: usize) -> Result<Region, Error> {
        let size = i64::try_from(len).map_err(|_| Error::TooLarge {
            requested: len,
            max: i64::MAX as usize,
        })?;
        let number = |value: i64| {
            // SAFETY: `value` is a live i64 and kCFNumberSInt64Type says it is one.
            let n = unsafe {
                ffi::CFNumberCreate(
                    core::ptr::null(),
                    ffi::kCFNumberSInt64Type,
                    (&raw const value).cast(),
                )
            };
            Owned::new(n, "CFNumberCreate")
        };
        // SAFETY: the keys are constant CFStrings exported by IOSurface.framework.
        let keys = unsafe {
            [
                ffi::kIOSurfaceWidth,
                ffi::kIOSurfaceHeight,
                ffi::kIOSurfaceBytesPerElement,
                ffi::kIOSurfaceBytesPerRow,
                ffi::kIOSurfaceAllocSize,
                ffi::kIOSurfacePixelFormat,
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
                ffi::CFDictionaryCreate(
                    core::ptr::null(),
                    keys.as_ptr(),
                    value_ptrs.as_ptr(),
                    keys.len() as ffi::CFIndex,
                    &raw const ffi::kCFTypeDictionaryKeyCallBacks,
                    &raw const ffi::kCFTypeDictionaryValueCallBacks,
                )
            },
            "CFDictionaryCreate",
        )?;
        // SAFETY: `properties` is a live CFDictionary of IOSurface properties.
        let surface = Owned::new(
            unsafe { ffi::IOSurfaceCreate(properties.0) }.cast_const(),
            "IOSurfaceCreate",
        )?;
        Region::lock_surface(surface, len)
    }

    /// Adopts a surface made elsewhere, taking a reference of our own to it.
    ///
    /// # Safety
    /// `surface` is a valid `IOSurfaceRef`.
    pub(crate) unsafe fn from_surface(surface: ffi::IOSurfaceRef) -> Result<Region, Error> {
        // SAFETY: the caller promises a valid IOSurface; CFRetain gives us our own reference,
        // so the caller's stays theirs to release.
        let retained = unsafe { ffi::CFRetain(surface.cast_const()) };
        Region::adopt_surface(Owned::new(retained, "CFRetain")?)
    }

    /// Looks up the surface a mach port (a send right made by `IOSurfaceCreateMachPort`)
    /// names. The port stays the caller's.
    pub(crate) fn from_mach_port(port: ffi::mach_port_t) -> Result<Region, Error> {
        // SAFETY: any port name may be passed; one that names no IOSurface gives NULL. The
        // surface returned carries a reference that is ours (`Owned` releases it once).
        let surface = unsafe { ffi::IOSurfaceLookupFromMachPort(port) };
        if surface.is_null() {
            return Err(Error::NotShareable {
                reason: "the mach port does not name an IOSurface (IOSurfaceLookupFromMachPort \
                         returned NULL): send the port that `Block::mach_port` gives",
            });
        }
        Region::adopt_surface(Owned(surface.cast_const()))
    }

    /// A new send right to this surface, for another process to look it up with.
    pub(crate) fn mach_port(&self) -> Result<ffi::mach_port_t, Error> {
        // SAFETY: the surface is live while `self` is.
        let port = unsafe { ffi::IOSurfaceCreateMachPort(self.handle()) };
        if port == ffi::MACH_PORT_NULL {
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
        let len = unsafe { ffi::IOSurfaceGetAllocSize(surface.0.cast_mut()) };
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
        let kr = unsafe { ffi::IOSurfaceLock(raw, 0, core::ptr::null_mut()) };
        if kr != ffi::KERN_SUCCESS {
            return Err(Error::Os {
                call: "IOSurfaceLock",
                source: io::Error::other(format!("kern_return_t {kr:#x}")),
            });
        }
        // From here on, `region` unlocks and releases the surface if we give up on it.
        let mut region = Region {
            surface,
            ptr: NonNull::dangling(),
            len,
        };
        // SAFETY: the surface is live and locked, so its base address is valid.
        let base = unsafe { ffi::IOSurfaceGetBaseAddress(raw) };
        // SAFETY: as above.
        let alloc = unsafe { ffi::IOSurfaceGetAllocSize(raw) };
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
        self.surface.0.cast_mut()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the surface is live and was locked by `lock_surface`; `surface` releases our
        // reference right after this.
        unsafe { ffi::IOSurfaceUnlock(self.handle(), 0, core::ptr::null_mut()) };
    }
}

/// macOS has no lock-on-fault: wiring the pages faults them all in.
pub(crate) const LOCK_POPULATES: bool = true;

/// Wires the pages.
pub(crate) fn lock(ptr: NonNull<u8>, len: usize) -> io::Result<()> {
    unix::mlock(ptr, len)
}

/// Brings every page in through the kernel, without touching a byte: wiring populates, and
/// an unpinned block is unwired again right after.
pub(crate) fn populate(region: &Region, pinned: bool) -> Result<(), Error> {
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

/// Gives up one send right to a mach port, as `MachPort`'s drop does.
pub(crate) fn deallocate_port(port: ffi::mach_port_t) {
    // SAFETY: `mach_task_self_` is set up by the system before any Rust code runs; the caller
    // owns one send right to `port` and gives it up here. A failure leaves at worst a right
    // that nobody uses, which is not worth a panic in a destructor.
    unsafe { ffi::mach_port_deallocate(ffi::mach_task_self_, port) };
}

// The Apple face of `Block`.

impl crate::Block {
    /// The global `IOSurfaceID` of the surface behind this block.
    ///
    /// Prefer [`handle`](crate::Block::handle) within a process and a
    /// [`mach_port`](crate::Block::mach_port) across processes: looking a surface up by ID
    /// works only for global surfaces, and unimem does not make them (Apple deprecated
    /// `kIOSurfaceIsGlobal` as insecure).
    pub fn id(&self) -> u32 {
        // SAFETY: the surface is live while the block is.
        unsafe { ffi::IOSurfaceGetID(self.handle()) }
    }
}
