//! Linux-only calls: memfd, file sealing, shared mapping, lock-on-fault, page population.

use core::ffi::{c_char, c_int, c_uint, c_void};

/// `off_t`: 64 bits on every target this crate maps memory on (64-bit Linux and Darwin).
pub type off_t = i64;

/// Pages may be read.
pub const PROT_READ: c_int = 1;
/// Pages may be written.
pub const PROT_WRITE: c_int = 2;
/// Share the mapping with every other mapping of the same object.
pub const MAP_SHARED: c_int = 1;
/// What `mmap` returns on failure.
pub const MAP_FAILED: *mut c_void = !0 as *mut c_void;

/// `EINVAL`.
pub const EINVAL: c_int = 22;

/// `memfd_create`: close the descriptor on `exec`.
pub const MFD_CLOEXEC: c_uint = 0x0001;
/// `memfd_create`: allow `F_ADD_SEALS` on the descriptor.
pub const MFD_ALLOW_SEALING: c_uint = 0x0002;

/// `fcntl` command: add seals.
pub const F_ADD_SEALS: c_int = 1033;
/// `fcntl` command: read the seals.
pub const F_GET_SEALS: c_int = 1034;
/// Seal: no more seals may be added.
pub const F_SEAL_SEAL: c_int = 0x0001;
/// Seal: the file may not shrink.
pub const F_SEAL_SHRINK: c_int = 0x0002;
/// Seal: the file may not grow.
pub const F_SEAL_GROW: c_int = 0x0004;
/// Seal: the contents may not be written.
pub const F_SEAL_WRITE: c_int = 0x0008;
/// Seal: no new writable mappings (existing ones keep working).
pub const F_SEAL_FUTURE_WRITE: c_int = 0x0010;

/// `mlock2` flag: lock pages as they fault in, not all at once.
pub const MLOCK_ONFAULT: c_uint = 0x01;
/// `madvise`: fault every page in, readable (Linux 5.14).
pub const MADV_POPULATE_READ: c_int = 22;
/// `madvise`: fault every page in, writable, without changing it (Linux 5.14).
pub const MADV_POPULATE_WRITE: c_int = 23;

/// `lseek` whence: relative to the end of the file.
pub const SEEK_END: c_int = 2;

/// `ENOSYS`: the kernel lacks the call.
pub const ENOSYS: c_int = 38;

unsafe extern "C" {
    pub fn mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        offset: off_t,
    ) -> *mut c_void;
    pub fn munmap(addr: *mut c_void, len: usize) -> c_int;
    pub fn memfd_create(name: *const c_char, flags: c_uint) -> c_int;
    pub fn ftruncate(fd: c_int, len: off_t) -> c_int;
    pub fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    pub fn lseek(fd: c_int, offset: off_t, whence: c_int) -> off_t;
    pub fn mlock2(addr: *const c_void, len: usize, flags: c_uint) -> c_int;
    pub fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
}
