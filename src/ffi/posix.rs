//! POSIX calls that both the Linux and the Apple backend use: page size, locking, limits.

use core::ffi::{c_int, c_long, c_void};

/// `rlim_t` in the C library's default ABI: `unsigned long` in glibc's and uClibc's on
/// 32-bit targets (riscv32 excepted: its glibc has only the 64-bit ABI), 64 bits everywhere
/// else (64-bit targets, musl, Darwin). Checked against libc in `ffi/tests.rs`.
#[cfg(all(
    target_os = "linux",
    target_pointer_width = "32",
    any(target_env = "gnu", target_env = "uclibc"),
    not(target_arch = "riscv32")
))]
pub type rlim_t = core::ffi::c_ulong;
/// `rlim_t` in the C library's default ABI: 64 bits here.
#[cfg(not(all(
    target_os = "linux",
    target_pointer_width = "32",
    any(target_env = "gnu", target_env = "uclibc"),
    not(target_arch = "riscv32")
)))]
pub type rlim_t = u64;

/// `struct rlimit`.
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
#[cfg(all(
    target_os = "linux",
    not(any(
        target_arch = "mips",
        target_arch = "mips32r6",
        target_arch = "mips64",
        target_arch = "mips64r6"
    ))
))]
pub const RLIMIT_MEMLOCK: c_int = 8;
/// `RLIMIT_MEMLOCK` for `getrlimit`: MIPS numbers its limits its own way.
#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "mips",
        target_arch = "mips32r6",
        target_arch = "mips64",
        target_arch = "mips64r6"
    )
))]
pub const RLIMIT_MEMLOCK: c_int = 9;
/// `RLIMIT_MEMLOCK` for `getrlimit`.
#[cfg(target_vendor = "apple")]
pub const RLIMIT_MEMLOCK: c_int = 6;

unsafe extern "C" {
    pub fn mlock(addr: *const c_void, len: usize) -> c_int;
    pub fn munlock(addr: *const c_void, len: usize) -> c_int;
    pub fn sysconf(name: c_int) -> c_long;
    pub fn getrlimit(resource: c_int, rlim: *mut rlimit) -> c_int;
}
