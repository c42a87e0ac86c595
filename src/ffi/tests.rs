//! Every hand-written constant and layout in `ffi` against the `libc` crate's.

use super::posix;
use core::mem::{align_of, offset_of, size_of};

#[test]
fn posix_constants_match_libc() {
    assert_eq!(posix::_SC_PAGESIZE, libc::_SC_PAGESIZE);
    assert_eq!(posix::RLIMIT_MEMLOCK as i64, libc::RLIMIT_MEMLOCK as i64);
    assert_eq!(posix::RLIM_INFINITY, libc::RLIM_INFINITY);
}

/// The integer types whose width differs between targets, checked at compile time so that
/// checking the tests for a target (`cargo check --all-targets --target i686-unknown-linux-gnu`)
/// checks that target's.
const _: () = {
    assert!(size_of::<posix::rlim_t>() == size_of::<libc::rlim_t>());
    #[cfg(target_os = "linux")]
    assert!(size_of::<super::linux::off_t>() == size_of::<libc::off_t>());
    assert!(posix::RLIMIT_MEMLOCK as i64 == libc::RLIMIT_MEMLOCK as i64);
    #[cfg(target_os = "linux")]
    assert!(super::linux::SOL_SOCKET == libc::SOL_SOCKET);
};

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
    // libc has declared it as both c_int and c_uint over time.
    assert_eq!(linux::MLOCK_ONFAULT as i64, libc::MLOCK_ONFAULT as i64);
    assert_eq!(linux::MADV_POPULATE_READ, libc::MADV_POPULATE_READ);
    assert_eq!(linux::MADV_POPULATE_WRITE, libc::MADV_POPULATE_WRITE);
    assert_eq!(linux::EPERM, libc::EPERM);
    assert_eq!(linux::EBADF, libc::EBADF);
    assert_eq!(linux::F_GETFL, libc::F_GETFL);
    assert_eq!(linux::O_RDONLY, libc::O_RDONLY);
    assert_eq!(linux::O_WRONLY, libc::O_WRONLY);
    assert_eq!(
        linux::O_ACCMODE,
        libc::O_RDONLY | libc::O_WRONLY | libc::O_RDWR
    );
    #[cfg(target_env = "gnu")]
    assert_eq!(linux::O_ACCMODE, libc::O_ACCMODE);
}

#[cfg(target_os = "linux")]
#[test]
fn linux_socket_constants_match_libc() {
    use super::linux;
    assert_eq!(linux::SOL_SOCKET, libc::SOL_SOCKET);
    assert_eq!(linux::SCM_RIGHTS, libc::SCM_RIGHTS);
    assert_eq!(linux::MSG_CMSG_CLOEXEC, libc::MSG_CMSG_CLOEXEC);
    assert_eq!(linux::MSG_CTRUNC, libc::MSG_CTRUNC);
    assert_eq!(linux::MSG_NOSIGNAL, libc::MSG_NOSIGNAL);
}

#[cfg(target_os = "linux")]
#[test]
fn cmsg_arithmetic_matches_libc() {
    use super::linux;
    for data in [0, 1, 4, 7, 8, 12, 16, 100, 4 * 253] {
        let libc_len = data as core::ffi::c_uint;
        // SAFETY: CMSG_LEN and CMSG_SPACE are pure arithmetic on their argument.
        let (len, space) = unsafe { (libc::CMSG_LEN(libc_len), libc::CMSG_SPACE(libc_len)) };
        assert_eq!(linux::cmsg_len(data), len as usize, "CMSG_LEN({data})");
        assert_eq!(
            linux::cmsg_space(data),
            space as usize,
            "CMSG_SPACE({data})"
        );
    }
}

/// The layouts, checked at compile time so that building the tests for another target
/// (`cargo check --lib --tests --target aarch64-unknown-linux-gnu`) checks that target's.
#[cfg(target_os = "linux")]
const _: () = {
    use super::linux;

    assert!(size_of::<linux::iovec>() == size_of::<libc::iovec>());
    assert!(align_of::<linux::iovec>() == align_of::<libc::iovec>());
    assert!(offset_of!(linux::iovec, iov_base) == offset_of!(libc::iovec, iov_base));
    assert!(offset_of!(linux::iovec, iov_len) == offset_of!(libc::iovec, iov_len));

    assert!(size_of::<linux::msghdr>() == size_of::<libc::msghdr>());
    assert!(align_of::<linux::msghdr>() == align_of::<libc::msghdr>());
    assert!(offset_of!(linux::msghdr, msg_name) == offset_of!(libc::msghdr, msg_name));
    assert!(offset_of!(linux::msghdr, msg_namelen) == offset_of!(libc::msghdr, msg_namelen));
    assert!(offset_of!(linux::msghdr, msg_iov) == offset_of!(libc::msghdr, msg_iov));
    assert!(offset_of!(linux::msghdr, msg_iovlen) == offset_of!(libc::msghdr, msg_iovlen));
    assert!(offset_of!(linux::msghdr, msg_control) == offset_of!(libc::msghdr, msg_control));
    assert!(offset_of!(linux::msghdr, msg_controllen) == offset_of!(libc::msghdr, msg_controllen));
    assert!(offset_of!(linux::msghdr, msg_flags) == offset_of!(libc::msghdr, msg_flags));

    assert!(size_of::<linux::cmsghdr>() == size_of::<libc::cmsghdr>());
    assert!(align_of::<linux::cmsghdr>() == align_of::<libc::cmsghdr>());
    assert!(offset_of!(linux::cmsghdr, cmsg_len) == offset_of!(libc::cmsghdr, cmsg_len));
    assert!(offset_of!(linux::cmsghdr, cmsg_level) == offset_of!(libc::cmsghdr, cmsg_level));
    assert!(offset_of!(linux::cmsghdr, cmsg_type) == offset_of!(libc::cmsghdr, cmsg_type));
};
