//! Linux: a sealed memfd, mapped shared, locked with `mlock2`.
//!
//! The memfd is sealed against shrinking and growing, and the seals themselves are sealed, so
//! no process that holds the descriptor can truncate the file under our mapping: a truncated
//! shared mapping raises SIGBUS on the next touch. Writes are not sealed: sharing them is the
//! point.

use super::unix::{self, check};
use crate::error::Error;
use crate::ffi::linux as sys;
use core::ptr::NonNull;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The memfd's descriptor. See [`Handle`](crate::Handle).
pub type Handle = RawFd;

pub(crate) const CAN_PIN: bool = true;

/// Seals every block carries, and every adopted memfd must carry.
pub(crate) const SEALS: core::ffi::c_int = sys::F_SEAL_SHRINK | sys::F_SEAL_GROW | sys::F_SEAL_SEAL;

/// A memfd and our shared mapping of it.
pub(crate) struct Region {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

impl Region {
    /// A new sealed memfd of `len` bytes (a multiple of the page size), mapped read-write.
    pub(crate) fn create(len: usize) -> Result<Region, Error> {
        // SAFETY: the name is a valid C string; the flags are valid for memfd_create.
        let raw = unsafe {
            sys::memfd_create(
                c"unimem".as_ptr(),
                sys::MFD_CLOEXEC | sys::MFD_ALLOW_SEALING,
            )
        };
        if raw < 0 {
            return Err(os_error("memfd_create"));
        }
        // SAFETY: memfd_create returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size = i64::try_from(len).map_err(|_| Error::TooLarge {
            requested: len,
            max: i64::MAX as usize,
        })?;
        // SAFETY: `fd` is an open memfd; ftruncate has no memory-safety preconditions.
        if unsafe { sys::ftruncate(fd.as_raw_fd(), size) } != 0 {
            return Err(os_error("ftruncate"));
        }
        // SAFETY: F_ADD_SEALS takes one int argument, which we pass.
        if unsafe { sys::fcntl(fd.as_raw_fd(), sys::F_ADD_SEALS, SEALS) } != 0 {
            return Err(os_error("fcntl(F_ADD_SEALS)"));
        }
        Region::map(fd, len)
    }

    /// Maps `len` bytes of `fd` shared and read-write. The caller has checked that the file is
    /// at least `len` bytes long and cannot shrink.
    pub(crate) fn map(fd: OwnedFd, len: usize) -> Result<Region, Error> {
        // SAFETY: a fresh mapping chosen by the kernel (null hint) overlaps nothing we own; the
        // file is at least `len` bytes and sealed against shrinking, so every page stays backed.
        let addr = unsafe {
            sys::mmap(
                core::ptr::null_mut(),
                len,
                sys::PROT_READ | sys::PROT_WRITE,
                sys::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if addr == sys::MAP_FAILED {
            return Err(os_error("mmap"));
        }
        let ptr = NonNull::new(addr.cast()).ok_or(Error::Unsupported {
            what: "mmap placed the block at address 0, which Rust cannot use; report this",
        })?;
        Ok(Region { fd, ptr, len })
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
        self.fd.as_raw_fd()
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range in `map` and nothing can use it after drop.
        // The descriptor is closed afterwards by OwnedFd's own drop.
        unsafe { sys::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Locks the pages: as they fault in (lazy), or all of them now (warm, which populates too).
pub(crate) fn lock(ptr: NonNull<u8>, len: usize, now: bool) -> io::Result<()> {
    if now {
        return unix::mlock(ptr, len);
    }
    // SAFETY: mlock2 only changes page attributes of a region the caller owns.
    match check(unsafe { sys::mlock2(ptr.as_ptr().cast(), len, sys::MLOCK_ONFAULT) }) {
        // Kernels before 4.4 lack lock-on-fault: lock everything now instead.
        Err(err) if matches!(err.raw_os_error(), Some(sys::ENOSYS | sys::EINVAL)) => {
            unix::mlock(ptr, len)
        }
        other => other,
    }
}

/// Faults every page in without changing a byte, in one system call where the kernel can.
pub(crate) fn populate(ptr: NonNull<u8>, len: usize, pinned: bool) -> Result<(), Error> {
    // SAFETY: MADV_POPULATE_WRITE faults pages in as if written, but writes nothing, so it is
    // safe while other threads and processes use the memory.
    let rc = unsafe { sys::madvise(ptr.as_ptr().cast(), len, sys::MADV_POPULATE_WRITE) };
    match check(rc) {
        Ok(()) => Ok(()),
        // Before Linux 5.14: a full mlock populates too, and keeps a pinned block pinned.
        Err(err) if err.raw_os_error() == Some(sys::EINVAL) && pinned => unix::mlock(ptr, len)
            .map_err(|source| Error::Os {
                call: "mlock",
                source,
            }),
        Err(err) if err.raw_os_error() == Some(sys::EINVAL) => Err(Error::Unsupported {
            what: "this kernel cannot populate pages without writing them (MADV_POPULATE_WRITE \
                   needs Linux 5.14): open the block with `OpenOptions::warm(true)` instead",
        }),
        Err(source) => Err(Error::Os {
            call: "madvise(MADV_POPULATE_WRITE)",
            source,
        }),
    }
}

// The Linux face of `Block`: its descriptor, for `SCM_RIGHTS`, `dup` and driver import calls.

impl AsFd for crate::Block {
    /// The memfd behind the block, borrowed for as long as the block lives.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.region().fd()
    }
}

impl AsRawFd for crate::Block {
    fn as_raw_fd(&self) -> RawFd {
        self.handle()
    }
}

/// [`Error::Os`] from the calling thread's `errno`, read right after `call` failed.
fn os_error(call: &'static str) -> Error {
    Error::Os {
        call,
        source: io::Error::last_os_error(),
    }
}
