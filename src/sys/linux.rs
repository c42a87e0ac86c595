//! Linux: a sealed memfd, mapped shared, locked with `mlock2`.
//!
//! The memfd is sealed against shrinking and growing, and the seals themselves are sealed, so
//! no process that holds the descriptor can truncate the file under our mapping: a truncated
//! shared mapping raises SIGBUS on the next touch. Writes are not sealed: sharing them is the
//! point.
//!
//! A memfd that another process made is checked before it is mapped (`Region::from_fd`): it
//! must be sealed against shrinking, or let us seal it now, and its size is read after that
//! seal is in place, so that the size we map can never shrink under us.

use super::unix::{self, check};
use crate::error::Error;
use crate::ffi::linux as sys;
use core::ffi::c_int;
use core::ptr::NonNull;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The memfd's descriptor. See [`Handle`](crate::Handle).
pub type Handle = RawFd;

pub(crate) const CAN_PIN: bool = true;

/// Seals every block we create carries. An adopted memfd needs only `F_SEAL_SHRINK`.
const SEALS: c_int = sys::F_SEAL_SHRINK | sys::F_SEAL_GROW | sys::F_SEAL_SEAL;

/// Whether a mapping may be written through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    ReadWrite,
    /// Mapped without `PROT_WRITE`: a write through it faults.
    ReadOnly,
}

/// A memfd and our shared mapping of it.
pub(crate) struct Region {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
    access: Access,
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
        add_seals(fd.as_fd(), SEALS).map_err(|source| Error::Os {
            call: "fcntl(F_ADD_SEALS)",
            source,
        })?;
        Region::map(fd, len, Access::ReadWrite)
    }

    /// Adopts a memfd made by someone we need not trust, after making sure that no process
    /// can ever shrink it under our mapping.
    ///
    /// The mapping spans the file's size as read here, which need not be a whole number of
    /// pages: the kernel maps the last page whole, and every byte of it stays backed.
    pub(crate) fn from_fd(fd: OwnedFd, access: Access) -> Result<Region, Error> {
        let seals = seals(fd.as_fd())?;
        let shrinkable = seals & sys::F_SEAL_SHRINK == 0;
        if shrinkable && seals & sys::F_SEAL_SEAL != 0 {
            return Err(Error::NotShareable {
                reason: "the file can be truncated under the mapping and can no longer be sealed \
                         against it (a memfd made without MFD_ALLOW_SEALING, a file on tmpfs, or \
                         seals already sealed): the sender must create it with MFD_ALLOW_SEALING \
                         and add F_SEAL_SHRINK (as unimem's own blocks are) before sending it",
            });
        }
        check_access_mode(fd.as_fd(), access)?;
        if shrinkable {
            seal_against_shrinking(fd.as_fd())?;
        }
        if access == Access::ReadWrite
            && seals & (sys::F_SEAL_WRITE | sys::F_SEAL_FUTURE_WRITE) != 0
        {
            return Err(Error::NotShareable {
                reason: "the memfd is sealed against writing, so it cannot be mapped writable: \
                         open it read-only (`OpenOptions::open_fd_read_only`)",
            });
        }
        // Read only now: the file cannot shrink any more, so this size stays mappable for as
        // long as we hold the mapping, whatever the sender does next. Growing is harmless.
        let len = file_size(fd.as_fd())?;
        if len == 0 {
            return Err(Error::NotShareable {
                reason: "the memfd is empty (0 bytes): the sender must size it (`ftruncate`) \
                         before sending it",
            });
        }
        Region::map(fd, len, access)
    }

    /// Maps `len` bytes of `fd` shared. The caller has checked that the file is at least
    /// `len` bytes long and cannot shrink.
    fn map(fd: OwnedFd, len: usize, access: Access) -> Result<Region, Error> {
        let prot = match access {
            Access::ReadWrite => sys::PROT_READ | sys::PROT_WRITE,
            Access::ReadOnly => sys::PROT_READ,
        };
        // SAFETY: a fresh mapping chosen by the kernel (null hint) overlaps nothing we own; the
        // file is at least `len` bytes and sealed against shrinking, so every page stays backed.
        let addr = unsafe {
            sys::mmap(
                core::ptr::null_mut(),
                len,
                prot,
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
        Ok(Region {
            fd,
            ptr,
            len,
            access,
        })
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

/// Whether `lock` also faults every page in. Not here: pages are locked as they fault in, and
/// a warm block is populated separately, with `MADV_POPULATE_WRITE`. Populating through
/// `mlock` instead is slower here, and leaves pages that read measurably slower (about 5 %
/// on the benchmark machine) than pages faulted in for writing.
pub(crate) const LOCK_POPULATES: bool = false;

/// Locks the pages in RAM as they fault in.
pub(crate) fn lock(ptr: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: mlock2 only changes page attributes of a region the caller owns.
    match check(unsafe { sys::mlock2(ptr.as_ptr().cast(), len, sys::MLOCK_ONFAULT) }) {
        // Kernels before 4.4 lack lock-on-fault: lock (and so populate) everything now.
        Err(err) if matches!(err.raw_os_error(), Some(sys::ENOSYS | sys::EINVAL)) => {
            unix::mlock(ptr, len)
        }
        other => other,
    }
}

/// Faults every page in without changing a byte, in one system call where the kernel can.
pub(crate) fn populate(region: &Region, pinned: bool) -> Result<(), Error> {
    // A read-only mapping refuses MADV_POPULATE_WRITE; a writable one is better populated
    // for writing, so that its first writes take no fault either.
    let (advice, call) = match region.access {
        Access::ReadWrite => (sys::MADV_POPULATE_WRITE, "madvise(MADV_POPULATE_WRITE)"),
        Access::ReadOnly => (sys::MADV_POPULATE_READ, "madvise(MADV_POPULATE_READ)"),
    };
    let (ptr, len) = (region.ptr, region.len);
    // SAFETY: populating faults pages in as if read or written, but changes no byte, so it is
    // safe while other threads and processes use the memory.
    let rc = unsafe { sys::madvise(ptr.as_ptr().cast(), len, advice) };
    match check(rc) {
        Ok(()) => Ok(()),
        // Before Linux 5.14: a full mlock populates too, and keeps a pinned block pinned.
        Err(err) if err.raw_os_error() == Some(sys::EINVAL) && pinned => unix::mlock(ptr, len)
            .map_err(|source| Error::Os {
                call: "mlock",
                source,
            }),
        Err(err) if err.raw_os_error() == Some(sys::EINVAL) => Err(Error::Unsupported {
            what: "this kernel cannot populate pages without touching them (MADV_POPULATE_READ \
                   and MADV_POPULATE_WRITE need Linux 5.14): open the block with \
                   `OpenOptions::warm(true)` instead",
        }),
        Err(source) => Err(Error::Os { call, source }),
    }
}

/// The seals on `fd`, or why it is not a memfd we could map.
fn seals(fd: BorrowedFd<'_>) -> Result<c_int, Error> {
    // SAFETY: F_GET_SEALS takes no argument.
    let seals = unsafe { sys::fcntl(fd.as_raw_fd(), sys::F_GET_SEALS) };
    if seals >= 0 {
        return Ok(seals);
    }
    let source = io::Error::last_os_error();
    match source.raw_os_error() {
        // Only memfds (and other files on tmpfs and hugetlbfs) have seals.
        Some(sys::EINVAL) => Err(Error::NotShareable {
            reason: "it is not a memfd (a regular file, a pipe, a socket, a device...), so \
                     nothing stops another process from truncating it under the mapping, or it \
                     cannot be mapped at all: send a memfd instead, such as a Block's \
                     (`Block::try_clone_fd`)",
        }),
        Some(sys::EBADF) => Err(Error::NotShareable {
            reason: "it was opened with O_PATH, which allows no I/O: send the memfd itself",
        }),
        _ => Err(Error::Os {
            call: "fcntl(F_GET_SEALS)",
            source,
        }),
    }
}

/// Refuses descriptors whose access mode cannot give the mapping asked for.
fn check_access_mode(fd: BorrowedFd<'_>, access: Access) -> Result<(), Error> {
    // SAFETY: F_GETFL takes no argument.
    let flags = unsafe { sys::fcntl(fd.as_raw_fd(), sys::F_GETFL) };
    if flags < 0 {
        return Err(os_error("fcntl(F_GETFL)"));
    }
    match (flags & sys::O_ACCMODE, access) {
        (sys::O_WRONLY, _) => Err(Error::NotShareable {
            reason: "the descriptor is open write-only, and a mapping needs read access: send \
                     one opened read-write (memfd_create's own)",
        }),
        (sys::O_RDONLY, Access::ReadWrite) => Err(Error::NotShareable {
            reason: "the descriptor is open read-only, so it cannot be mapped writable: open \
                     it read-only (`OpenOptions::open_fd_read_only`), or have the sender send \
                     a read-write descriptor",
        }),
        _ => Ok(()),
    }
}

/// Adds `F_SEAL_SHRINK` to a memfd that lacks it and whose seals are not sealed.
///
/// Only shrinking is sealed: it is what could leave our mapping without a file behind it
/// (SIGBUS on the next touch). Growing cannot hurt a mapping of the size we read after this
/// seal, and the sender may rely on growing the file or adding seals of its own later.
fn seal_against_shrinking(fd: BorrowedFd<'_>) -> Result<(), Error> {
    match add_seals(fd, sys::F_SEAL_SHRINK) {
        Ok(()) => Ok(()),
        // A read-only descriptor may not add seals; nor may anyone once F_SEAL_SEAL is set,
        // which the sender may have done since we read the seals.
        Err(err) if err.raw_os_error() == Some(sys::EPERM) => Err(Error::NotShareable {
            reason: "the memfd can be truncated under the mapping, and this descriptor may not \
                     seal it (it is read-only, or the seals were sealed meanwhile): the sender \
                     must add F_SEAL_SHRINK before sending it",
        }),
        Err(source) => Err(Error::Os {
            call: "fcntl(F_ADD_SEALS)",
            source,
        }),
    }
}

fn add_seals(fd: BorrowedFd<'_>, seals: c_int) -> io::Result<()> {
    // SAFETY: F_ADD_SEALS takes one int argument, which we pass.
    check(unsafe { sys::fcntl(fd.as_raw_fd(), sys::F_ADD_SEALS, seals) })
}

/// The file's size from `fstat`, which, unlike `lseek(SEEK_END)`, does not move the file
/// offset that we share with the sender (they hold the same open file description).
fn file_size(fd: BorrowedFd<'_>) -> Result<usize, Error> {
    let mut stat = sys::stat::zeroed();
    // SAFETY: `stat` is a writable buffer of the size and layout of the C `struct stat`
    // (checked against libc in ffi/tests.rs).
    check(unsafe { sys::fstat(fd.as_raw_fd(), &mut stat) }).map_err(|source| Error::Os {
        call: "fstat",
        source,
    })?;
    // A file size is never negative, and on the 64-bit targets we map on it fits a usize.
    usize::try_from(stat.st_size).map_err(|_| Error::Os {
        call: "fstat",
        source: io::Error::other(format!("the size is {} bytes", stat.st_size)),
    })
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
