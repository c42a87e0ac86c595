//! POSIX calls that both the Linux and the Apple backend use: page size, locking, limits.

use core::ffi::{c_int, c_long, c_void};

/// `rlim_t`: 64 bits on 64-bit Linux and on Darwin.
pub type rlim_t = u64;

/// `struct rlimit`, identical on 64-bit Linux and Darwin.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rlimit {
    /// Soft limit.
    pub rlim_cur: rlim_t,
    /// Hard limit.
    pub rlim_max: rlim_t,
}

/// `RLIM_INFINITY`: all bits set on Linux.
#[cfg(target_os = "linux")]
pub const RLIM_INFINITY: rlim_t = !0;
/// `RLIM_INFINITY`: on Darwin the largest signed value, not all bits set
/// (xnu `bsd/sys/resource.h`: `((rlim_t)-1 >> 1)`).
#[cfg(target_vendor = "apple")]
pub const RLIM_INFINITY: rlim_t = 0x7fff_ffff_ffff_ffff;

/// `_SC_PAGESIZE` for `sysconf`.
#[cfg(target_os = "linux")]
pub const _SC_PAGESIZE: c_int = 30;
/// `_SC_PAGESIZE` for `sysconf`.
#[cfg(target_vendor = "apple")]
pub const _SC_PAGESIZE: c_int = 29;

/// `RLIMIT_MEMLOCK` for `getrlimit`.
#[cfg(target_os = "linux")]
pub const RLIMIT_MEMLOCK: c_int = 8;
/// `RLIMIT_MEMLOCK` for `getrlimit`.
#[cfg(target_vendor = "apple")]
pub const RLIMIT_MEMLOCK: c_int = 6;

unsafe extern "C" {
    pub fn mlock(addr: *const c_void, len: usize) -> c_int;
    pub fn munlock(addr: *const c_void, len: usize) -> c_int;
    pub fn sysconf(name: c_int) -> c_long;
    pub fn getrlimit(resource: c_int, rlim: *mut rlimit) -> c_int;
}
