//! Adopting an IOSurface, and sharing one through a mach port.

use crate::block::{Block, Handle, OpenOptions};
use crate::error::Error;
use crate::sys::{Region, deallocate_port};
use core::mem::ManuallyDrop;

/// A send right to a mach port that names a block's IOSurface: what another process needs to
/// map the same memory, on macOS and iOS.
///
/// Made by [`Block::mach_port`], turned back into a block by [`Block::from_mach_port`]. It
/// travels between processes in a mach message, as a port descriptor
/// (`mach_msg_port_descriptor_t`, disposition `MACH_MSG_TYPE_COPY_SEND` to keep this right, or
/// `MACH_MSG_TYPE_MOVE_SEND` after [`into_raw`](MachPort::into_raw)); wrap a received one with
/// [`from_raw`](MachPort::from_raw). The crate's macOS tests (`tests/apple.rs`) pass one to a
/// child process this way.
///
/// XPC has no public call for a raw send right (`xpc_dictionary_set_mach_send` is private);
/// its public route for a surface is IOSurface's XPC object: `IOSurfaceCreateXPCObject` on
/// the block's [`handle`](Block::handle), set as a value of the XPC message, and
/// `IOSurfaceLookupFromXPCObject` in the receiver, which returns a surface it owns a
/// reference to. Adopt that with [`Block::from_surface`] and release the reference (the block
/// holds its own).
///
/// It owns one user reference to the send right and gives it up (`mach_port_deallocate`)
/// when dropped. The surface stays alive while any process holds a port or a block for it.
#[derive(Debug)]
pub struct MachPort {
    name: u32,
}

impl MachPort {
    /// The port's name in this task (`mach_port_t`), still owned by `self`.
    #[inline]
    pub fn as_raw(&self) -> u32 {
        self.name
    }

    /// The port's name, whose send right the caller now owns (and must deallocate, or move
    /// into a message).
    #[inline]
    pub fn into_raw(self) -> u32 {
        ManuallyDrop::new(self).name
    }

    /// Takes ownership of a send right, such as one received in a mach or XPC message.
    ///
    /// # Safety
    /// `name` is a send right of this task that the caller owns one user reference to, and
    /// gives to the `MachPort`: it is deallocated when the `MachPort` drops, so nothing else
    /// may deallocate that reference.
    #[inline]
    pub unsafe fn from_raw(name: u32) -> MachPort {
        MachPort { name }
    }
}

impl Drop for MachPort {
    fn drop(&mut self) {
        deallocate_port(self.name);
    }
}

#[cfg_attr(docsrs, doc(cfg(target_vendor = "apple")))]
impl Block {
    /// Adopts an IOSurface made elsewhere (a Neural Engine output, a video frame, a Metal
    /// texture's backing), with [`OpenOptions::new`]'s defaults. See
    /// [`OpenOptions::open_surface`].
    ///
    /// The block retains the surface, so the caller may release its own reference at any time.
    ///
    /// # Safety
    /// As for [`OpenOptions::open_surface`]: `surface` is a valid `IOSurfaceRef`, and the
    /// caller keeps the promise for
    /// [memory mapped from another process](crate::share#memory-mapped-from-another-process).
    ///
    /// # Errors
    /// As for [`OpenOptions::open_surface`].
    pub unsafe fn from_surface(surface: Handle) -> Result<Block, Error> {
        // SAFETY: the caller's promise, passed on.
        unsafe { OpenOptions::new().open_surface(surface) }
    }

    /// A new send right to this block's surface, for another process to map it with
    /// [`Block::from_mach_port`]. See [`MachPort`].
    ///
    /// # Errors
    /// [`Error::Os`] when `IOSurfaceCreateMachPort` fails (the task is out of port names).
    ///
    /// ```
    /// let block = unimem::Block::open(4096)?;
    /// let port = block.mach_port()?; // send `port.into_raw()` in a mach or XPC message
    /// // SAFETY: both blocks are used only through their unsafe views (here: not at all).
    /// let same = unsafe { unimem::Block::from_mach_port(&port)? };
    /// assert_eq!(same.len(), block.len());
    /// # Ok::<(), unimem::Error>(())
    /// ```
    pub fn mach_port(&self) -> Result<MachPort, Error> {
        Ok(MachPort {
            name: self.region().mach_port()?,
        })
    }

    /// The IOSurface's global ID (`IOSurfaceGetID`), as IOSurface and Core Video APIs report
    /// it, for logs and for matching a surface they hand back.
    ///
    /// It is no way to share the block: `IOSurfaceLookup` finds only global surfaces, and
    /// unimem does not make them (Apple deprecated `kIOSurfaceIsGlobal` as insecure). Share a
    /// [`mach_port`](Block::mach_port) across processes, and the
    /// [`handle`](Block::handle) within one.
    pub fn surface_id(&self) -> u32 {
        self.region().surface_id()
    }

    /// Maps the IOSurface a mach port names (one made by [`Block::mach_port`], in this process
    /// or another), with [`OpenOptions::new`]'s defaults. The port stays the caller's.
    ///
    /// # Safety
    /// As for [`OpenOptions::open_mach_port`].
    ///
    /// # Errors
    /// As for [`OpenOptions::open_mach_port`].
    pub unsafe fn from_mach_port(port: &MachPort) -> Result<Block, Error> {
        // SAFETY: the caller's promise, passed on.
        unsafe { OpenOptions::new().open_mach_port(port) }
    }
}

#[cfg_attr(docsrs, doc(cfg(target_vendor = "apple")))]
impl OpenOptions {
    /// Adopts an IOSurface made elsewhere, with these options.
    ///
    /// The block takes a reference of its own to the surface and locks it for CPU access;
    /// dropping the block unlocks and releases it, leaving the caller's reference alone. The
    /// block spans the surface's allocation size (`IOSurfaceGetAllocSize`) from its base
    /// address on, which for an image includes any row padding. So only a single-plane surface
    /// is adopted, and only when one mapping in this process (one VM map entry, that is one VM
    /// object at consecutive offsets) holds every one of those bytes; mappings that merely lie
    /// next to each other are never counted together, as they can belong to other
    /// allocations. A surface made with a `kIOSurfaceOffset` whose allocation then runs past
    /// its mapping is refused, and so is a surface whose mapping other code in this process
    /// has split (by wiring or reprotecting part of it). A surface made by [`Block::open`]
    /// and sent with [`Block::mach_port`] has no offset.
    ///
    /// Blocks over the same surface in one process share one mapping. XNU counts wirings per
    /// mapping (unlike Linux, where locks on one page do not nest): each pinned block's `mlock`
    /// holds until that block drops, whatever the other blocks of the surface do, and
    /// [`Block::warm`] changes no one's wiring.
    ///
    /// # Safety
    /// `surface` is a valid `IOSurfaceRef`, and the caller keeps the promise for
    /// [memory mapped from another process](crate::share#memory-mapped-from-another-process):
    /// the surface is mapped by whoever made it too.
    ///
    /// # Errors
    /// [`Error::NotShareable`] for a surface of zero bytes, with planes, or whose allocation
    /// size from its base address on is not held by its one mapping (see above);
    /// [`Error::Os`] when the surface cannot be locked; [`Error::PinRefused`] as for
    /// [`Block::open`].
    pub unsafe fn open_surface(&self, surface: Handle) -> Result<Block, Error> {
        // SAFETY: the caller promises a valid IOSurfaceRef.
        let region = unsafe { Region::from_surface(surface) }?;
        Block::adopt(region, self)
    }

    /// Maps the IOSurface a mach port names, with these options. See
    /// [`open_surface`](OpenOptions::open_surface) for what the block holds.
    ///
    /// # Safety
    /// The caller keeps the promise for
    /// [memory mapped from another process](crate::share#memory-mapped-from-another-process):
    /// while the block lives, no other holder of the surface writes bytes that safe code in
    /// this process reaches through the block, nor touches bytes that such code writes, and the
    /// surface never has two tapes or grids in this process.
    ///
    /// # Errors
    /// [`Error::NotShareable`] when the port names no IOSurface; otherwise as for
    /// [`open_surface`](OpenOptions::open_surface).
    pub unsafe fn open_mach_port(&self, port: &MachPort) -> Result<Block, Error> {
        Block::adopt(Region::from_mach_port(port.name)?, self)
    }
}
