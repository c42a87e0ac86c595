//! What the Linux and Apple backends share: page size, the memory-lock limit, `mlock`.

use crate::ffi::posix;
use super::System;
use core::ptr::NonNull;
use std::io;

/// The size of a page, which every block's length and address are multiples of.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions; _SC_PAGESIZE is a valid name on both platforms.
    let size = unsafe { posix::sysconf(posix::_SC_PAGESIZE) };
    assert!(
        size > 0 && (size as usize).is_power_of_two(),
        "sysconf(_SC_PAGESIZE) returned {size}, not a page size"
    );
    size as usize
}

/// The soft `RLIMIT_MEMLOCK` in bytes, or `None` when it is unlimited or cannot be read.
pub(crate) fn memlock_limit() -> Option<u64> {
    soft_limit(posix::RLIMIT_MEMLOCK)
}

/// The soft limit on `resource` in bytes, or `None` when it is unlimited or cannot be read.
fn soft_limit(resource: core::ffi::c_int) -> Option<u64> {
    let mut limit = posix::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `struct rlimit`.
    let rc = unsafe { posix::getrlimit(resource, &mut limit) };
    // `rlim_t` is 32 or 64 bits wide, and always fits a u64.
    #[allow(clippy::useless_conversion, reason = "u64 already where rlim_t is 64 bits")]
    (rc == 0 && limit.rlim_cur != posix::RLIM_INFINITY).then(|| u64::from(limit.rlim_cur))
}

/// How many bytes this process has locked in RAM now (`VmLck` in /proc/self/status on Linux),
/// or `None` where the system does not say.
pub(crate) fn locked_bytes() -> Option<u64> {
    proc_bytes("/proc/self/status", "VmLck:")
}

/// The soft `RLIMIT_AS` (`ulimit -v`) in bytes, or `None` when it is unlimited or cannot be
/// read. Read from /proc/self/limits on Linux, which spares a constant that differs between
/// architectures; with `getrlimit` on macOS, which enforces the limit since macOS 12 (XNU
/// refuses a mapping that would take the task past it).
pub(crate) fn address_space_limit() -> Option<u64> {
    #[cfg(target_vendor = "apple")]
    let limit = soft_limit(crate::ffi::apple::RLIMIT_AS);
    #[cfg(not(target_vendor = "apple"))]
    let limit = proc_line("/proc/self/limits", "Max address space")
        .and_then(|limit| limit.split_whitespace().next()?.parse().ok());
    limit
}

/// The rest of the line of `path` that starts with `prefix`, on Linux.
pub(crate) fn proc_line(path: &str, prefix: &str) -> Option<String> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|line| line.starts_with(prefix))?;
    Some(line[prefix.len()..].to_owned())
}

/// A `kB` field of a /proc file (`VmLck:     8192 kB`), in bytes.
fn proc_bytes(path: &str, field: &str) -> Option<u64> {
    let value = proc_line(path, field)?;
    let kib: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Locks `len` bytes at `ptr` in RAM, faulting every page in.
pub(crate) fn mlock(ptr: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: mlock only changes page attributes; any address range is allowed (an unmapped
    // one fails with ENOMEM), and callers pass a region they own.
    check(unsafe { posix::mlock(ptr.as_ptr().cast(), len) })
}

/// Releases a lock taken by `lock`. Errors are ignored: this runs on drop, where the pages are
/// about to be released anyway.
pub(crate) fn unlock(ptr: NonNull<u8>, len: usize) {
    // SAFETY: as for mlock: it only changes page attributes of a region the caller owns.
    unsafe { posix::munlock(ptr.as_ptr().cast(), len) };
}

/// Turns a `0 / -1 and errno` return into an `io::Result`.
pub(crate) fn check(rc: core::ffi::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The native backends' facts about memory, read from the system the same way on both.
pub(super) enum Unix {}

impl System for Unix {
    fn page_size() -> usize {
        page_size()
    }

    fn memlock_limit() -> Option<u64> {
        memlock_limit()
    }

    fn locked_bytes() -> Option<u64> {
        locked_bytes()
    }

    fn address_space_limit() -> Option<u64> {
        address_space_limit()
    }
}
