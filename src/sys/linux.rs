//! Linux: a sealed memfd, mapped shared, locked with `mlock2`.
//!
//! The memfd is sealed against shrinking and growing, and the seals themselves are sealed;
//! writes are not sealed: sharing them is the point. A memfd that another process made is
//! checked before it is mapped (`Region::from_fd`). Why a shared mapping needs these seals,
//! and why the size is read only after them, is written once, in the `share` module's docs
//! ("Sealing before sizing").

use super::{Backend, Region, unix};
use crate::error::Error;
use crate::ffi::linux;
use core::ffi::c_int;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use unix::check;

/// The memfd's descriptor. See [`Handle`](crate::Handle).
pub type Handle = RawFd;

/// Seals every block we create carries. An adopted memfd needs only `F_SEAL_SHRINK`.
const SEALS: c_int = linux::F_SEAL_SHRINK | linux::F_SEAL_GROW | linux::F_SEAL_SEAL;

/// Whether a mapping may be written through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    ReadWrite,
    /// Mapped without `PROT_WRITE`: a write through it faults.
    ReadOnly,
}

/// What a Linux region owns: the memfd behind its shared mapping.
pub(super) struct Memory {
    fd: OwnedFd,
    access: Access,
}

/// The memfd backend.
pub(super) enum Imp {}

impl Backend for Imp {
    type Handle = Handle;
    type Memory = Memory;
    const CAN_PIN: bool = true;
    /// Not here: pages are locked as they fault in, and a warm block is populated separately,
    /// with `MADV_POPULATE_WRITE`. Populating through `mlock` instead is slower here, and
    /// leaves pages that read measurably slower (about 5 % on the benchmark machine) than
    /// pages faulted in for writing.
    const LOCK_POPULATES: bool = false;

    /// A new sealed memfd, mapped read-write.
    fn create(len: usize) -> Result<Region, Error> {
        // SAFETY: the name is a valid C string; the flags are valid for memfd_create.
        let raw = unsafe {
            linux::memfd_create(
                c"unimem".as_ptr(),
                linux::MFD_CLOEXEC | linux::MFD_ALLOW_SEALING,
            )
        };
        if raw < 0 {
            return Err(os_error("memfd_create"));
        }
        // SAFETY: memfd_create returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // A usize always fits a u64; std reports a size the kernel refuses.
        as_file(fd.as_fd())
            .set_len(len as u64)
            .map_err(|source| Error::Os {
                call: "ftruncate",
                source,
            })?;
        add_seals(fd.as_fd(), SEALS).map_err(|source| Error::Os {
            call: "fcntl(F_ADD_SEALS)",
            source,
        })?;
        Region::map(fd, len, Access::ReadWrite)
    }

    fn handle(region: &Region) -> Handle {
        region.memory.fd.as_raw_fd()
    }

    unsafe fn release(region: &mut Region) {
        // SAFETY: we mapped exactly this range in `map`, and nothing uses it after the
        // region's drop (the caller's promise). The descriptor is closed afterwards, by
        // OwnedFd's own drop.
        unsafe { linux::munmap(region.ptr.as_ptr().cast(), region.len) };
    }

    /// Locks the pages in RAM as they fault in.
    fn lock(ptr: NonNull<u8>, len: usize) -> io::Result<()> {
        // SAFETY: mlock2 only changes page attributes of a region the caller owns.
        match check(unsafe { linux::mlock2(ptr.as_ptr().cast(), len, linux::MLOCK_ONFAULT) }) {
            // Kernels before 4.4 lack lock-on-fault: lock (and so populate) everything now.
            Err(err)
                if err.kind() == io::ErrorKind::Unsupported
                    || err.raw_os_error() == Some(linux::EINVAL) =>
            {
                unix::mlock(ptr, len)
            }
            other => other,
        }
    }

    fn unlock(ptr: NonNull<u8>, len: usize) {
        unix::unlock(ptr, len)
    }

    /// Faults every page in without changing a byte, in one system call where the kernel can.
    fn populate(region: &Region, pinned: bool) -> Result<(), Error> {
        // A read-only mapping refuses MADV_POPULATE_WRITE; a writable one is better populated
        // for writing, so that its first writes take no fault either.
        let (advice, call) = match region.memory.access {
            Access::ReadWrite => (linux::MADV_POPULATE_WRITE, "madvise(MADV_POPULATE_WRITE)"),
            Access::ReadOnly => (linux::MADV_POPULATE_READ, "madvise(MADV_POPULATE_READ)"),
        };
        let (ptr, len) = (region.ptr, region.len);
        // SAFETY: populating faults pages in as if read or written, but changes no byte, so it
        // is safe while other threads and processes use the memory.
        let rc = unsafe { linux::madvise(ptr.as_ptr().cast(), len, advice) };
        match check(rc) {
            Ok(()) => Ok(()),
            // Before Linux 5.14: a full mlock populates too, and keeps a pinned block pinned.
            Err(err) if err.raw_os_error() == Some(linux::EINVAL) && pinned => {
                unix::mlock(ptr, len).map_err(|source| Error::Os {
                    call: "mlock",
                    source,
                })
            }
            Err(err) if err.raw_os_error() == Some(linux::EINVAL) => Err(Error::Unsupported {
                what: "this kernel cannot populate pages without touching them \
                       (MADV_POPULATE_READ and MADV_POPULATE_WRITE need Linux 5.14): open the \
                       block with `OpenOptions::warm(true)` instead",
            }),
            Err(source) => Err(Error::Os { call, source }),
        }
    }
}

impl Region {
    /// Adopts a memfd made by someone we need not trust, after making sure that no process
    /// can ever shrink it under our mapping.
    ///
    /// The mapping spans the file's size as read here, which need not be a whole number of
    /// pages: the kernel maps the last page whole, and every byte of it stays backed.
    pub(crate) fn from_fd(fd: OwnedFd, access: Access) -> Result<Region, Error> {
        let seals = seals(fd.as_fd())?;
        let shrinkable = seals & linux::F_SEAL_SHRINK == 0;
        if shrinkable && seals & linux::F_SEAL_SEAL != 0 {
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
            && seals & (linux::F_SEAL_WRITE | linux::F_SEAL_FUTURE_WRITE) != 0
        {
            return Err(Error::NotShareable {
                reason: "the memfd is sealed against writing, so it cannot be mapped writable: \
                         open it read-only (`OpenOptions::open_fd_read_only`)",
            });
        }
        // Only now that the file cannot shrink: see "Sealing before sizing" in share's docs.
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
            Access::ReadWrite => linux::PROT_READ | linux::PROT_WRITE,
            Access::ReadOnly => linux::PROT_READ,
        };
        // SAFETY: a fresh mapping chosen by the kernel (null hint) overlaps nothing we own; the
        // file is at least `len` bytes and sealed against shrinking, so every page stays backed.
        let addr = unsafe {
            linux::mmap(
                core::ptr::null_mut(),
                len,
                prot,
                linux::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if addr == linux::MAP_FAILED {
            return Err(os_error("mmap"));
        }
        let ptr = NonNull::new(addr.cast()).ok_or(Error::Unsupported {
            what: "mmap placed the block at address 0, which Rust cannot use; report this",
        })?;
        let region = Region {
            ptr,
            len,
            memory: Memory { fd, access },
        };
        // A child made by `fork` would get this shared mapping beside its own copy of every
        // tape cursor and grid bitmap over it, and both processes would hand out the same
        // bytes. Leave the mapping out of children: what a child inherits faults when touched,
        // and a child that should share the block is sent its fd.
        // SAFETY: the range is the mapping just made; the advice changes no byte of it.
        let rc = unsafe { linux::madvise(ptr.as_ptr().cast(), len, linux::MADV_DONTFORK) };
        if rc != 0 {
            // `region` is dropped here, which unmaps it and closes the descriptor.
            return Err(os_error("madvise(MADV_DONTFORK)"));
        }
        Ok(region)
    }

    /// The memfd, borrowed for as long as the region lives.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.memory.fd.as_fd()
    }
}

/// The seals on `fd`, or why it is not a memfd we could map.
fn seals(fd: BorrowedFd<'_>) -> Result<c_int, Error> {
    // SAFETY: F_GET_SEALS takes no argument.
    let seals = unsafe { linux::fcntl(fd.as_raw_fd(), linux::F_GET_SEALS) };
    if seals >= 0 {
        return Ok(seals);
    }
    let source = io::Error::last_os_error();
    match source.raw_os_error() {
        // Only memfds (and other files on tmpfs and hugetlbfs) have seals.
        Some(linux::EINVAL) => Err(Error::NotShareable {
            reason: "it is not a memfd (a regular file, a pipe, a socket, a device...), so \
                     nothing stops another process from truncating it under the mapping, or it \
                     cannot be mapped at all: send a memfd instead, such as a unimem block's \
                     (`share::send_block`)",
        }),
        Some(linux::EBADF) => Err(Error::NotShareable {
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
    let flags = unsafe { linux::fcntl(fd.as_raw_fd(), linux::F_GETFL) };
    if flags < 0 {
        return Err(os_error("fcntl(F_GETFL)"));
    }
    match (flags & linux::O_ACCMODE, access) {
        (linux::O_WRONLY, _) => Err(Error::NotShareable {
            reason: "the descriptor is open write-only, and a mapping needs read access: send \
                     one opened read-write (memfd_create's own)",
        }),
        (linux::O_RDONLY, Access::ReadWrite) => Err(Error::NotShareable {
            reason: "the descriptor is open read-only, so it cannot be mapped writable: open \
                     it read-only (`OpenOptions::open_fd_read_only`), or have the sender send \
                     a read-write descriptor",
        }),
        _ => Ok(()),
    }
}

/// Adds `F_SEAL_SHRINK` to a memfd that lacks it and whose seals are not sealed: only
/// shrinking, as `share`'s docs explain ("Sealing before sizing"); the sender may still grow
/// the file or add seals of its own.
fn seal_against_shrinking(fd: BorrowedFd<'_>) -> Result<(), Error> {
    match add_seals(fd, linux::F_SEAL_SHRINK) {
        Ok(()) => Ok(()),
        // A read-only descriptor may not add seals; nor may anyone once F_SEAL_SEAL is set,
        // which the sender may have done since we read the seals.
        Err(err) if err.raw_os_error() == Some(linux::EPERM) => Err(Error::NotShareable {
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
    check(unsafe { linux::fcntl(fd.as_raw_fd(), linux::F_ADD_SEALS, seals) })
}

/// The file's size. `fstat` (through std, which lays out `struct stat` right on every
/// architecture) does not move the file offset that we share with the sender, as
/// `lseek(SEEK_END)` would: they hold the same open file description.
fn file_size(fd: BorrowedFd<'_>) -> Result<usize, Error> {
    let size = as_file(fd)
        .metadata()
        .map_err(|source| Error::Os {
            call: "fstat",
            source,
        })?
        .len();
    // One mapping spans at most isize::MAX bytes, which a 32-bit process cannot reach.
    usize::try_from(size)
        .ok()
        .filter(|&len| len <= isize::MAX as usize)
        .ok_or_else(|| Error::Os {
            call: "fstat",
            source: io::Error::other(format!(
                "the memfd is {size} bytes, more than one mapping of this process can span"
            )),
        })
}

/// `fd` as a `File`, for the calls std makes portably (`ftruncate64`, `statx` or `fstat64`
/// as each target needs), without a new descriptor. Never drop it as a `File`: the
/// descriptor stays `fd`'s owner's.
fn as_file(fd: BorrowedFd<'_>) -> ManuallyDrop<File> {
    // SAFETY: `fd` is open while borrowed, and the caller uses the File only meanwhile;
    // ManuallyDrop keeps it from closing a descriptor it does not own.
    ManuallyDrop::new(unsafe { File::from_raw_fd(fd.as_raw_fd()) })
}

/// [`Error::Os`] from the calling thread's `errno`, read right after `call` failed.
fn os_error(call: &'static str) -> Error {
    Error::Os {
        call,
        source: io::Error::last_os_error(),
    }
}
