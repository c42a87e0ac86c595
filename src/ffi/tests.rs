//! Every hand-written constant and layout in `ffi` against the `libc` crate's.

use super::posix;
use core::mem::{align_of, offset_of, size_of};

#[test]
fn posix_constants_match_libc() {
    assert_eq!(posix::_SC_PAGESIZE, libc::_SC_PAGESIZE);
    assert_eq!(posix::RLIMIT_MEMLOCK as i64, libc::RLIMIT_MEMLOCK as i64);
    assert_eq!(posix::RLIM_INFINITY, libc::RLIM_INFINITY);
}

#[test]
fn posix_types_match_libc() {
    assert_eq!(size_of::<posix::rlim_t>(), size_of::<libc::rlim_t>());
    assert_eq!(size_of::<posix::rlimit>(), size_of::<libc::rlimit>());
    assert_eq!(align_of::<posix::rlimit>(), align_of::<libc::rlimit>());
    assert_eq!(
        offset_of!(posix::rlimit, rlim_cur),
        offset_of!(libc::rlimit, rlim_cur)
    );
    assert_eq!(
        offset_of!(posix::rlimit, rlim_max),
        offset_of!(libc::rlimit, rlim_max)
    );
}

#[cfg(target_os = "linux")]
#[test]
fn linux_constants_match_libc() {
    use super::linux;
    assert_eq!(linux::PROT_READ, libc::PROT_READ);
    assert_eq!(linux::PROT_WRITE, libc::PROT_WRITE);
    assert_eq!(linux::MAP_SHARED, libc::MAP_SHARED);
    assert_eq!(linux::MAP_FAILED, libc::MAP_FAILED);
    assert_eq!(linux::EINVAL, libc::EINVAL);
    assert_eq!(size_of::<linux::off_t>(), size_of::<libc::off_t>());
    assert_eq!(linux::MFD_CLOEXEC, libc::MFD_CLOEXEC);
    assert_eq!(linux::MFD_ALLOW_SEALING, libc::MFD_ALLOW_SEALING);
    assert_eq!(linux::F_ADD_SEALS, libc::F_ADD_SEALS);
    assert_eq!(linux::F_GET_SEALS, libc::F_GET_SEALS);
    assert_eq!(linux::F_SEAL_SEAL, libc::F_SEAL_SEAL);
    assert_eq!(linux::F_SEAL_SHRINK, libc::F_SEAL_SHRINK);
    assert_eq!(linux::F_SEAL_GROW, libc::F_SEAL_GROW);
    assert_eq!(linux::F_SEAL_WRITE, libc::F_SEAL_WRITE);
    assert_eq!(linux::F_SEAL_FUTURE_WRITE, libc::F_SEAL_FUTURE_WRITE);
    assert_eq!(linux::MLOCK_ONFAULT as i32, libc::MLOCK_ONFAULT);
    assert_eq!(linux::MADV_POPULATE_READ, libc::MADV_POPULATE_READ);
    assert_eq!(linux::MADV_POPULATE_WRITE, libc::MADV_POPULATE_WRITE);
    assert_eq!(linux::SEEK_END, libc::SEEK_END);
    assert_eq!(linux::ENOSYS, libc::ENOSYS);
}
