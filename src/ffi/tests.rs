//! Every hand-written constant and layout in `ffi` against the `libc` crate's, for the target
//! being built.
//!
//! The checks are compile-time assertions, so building the unit tests for a target checks that
//! target's values: `cargo clippy --all-targets --target aarch64-apple-darwin` (and
//! `x86_64-apple-darwin`), which `.ci/run` runs on Linux, fails on a wrong macOS constant
//! without a Mac. Only what cannot be computed in a const (a pointer constant, libc's
//! `CMSG_*` functions) is left to run-time tests.

use super::posix;
use core::mem::{align_of, offset_of, size_of, size_of_val};

/// A constant equals libc's, in value and in size (the value is compared widened, since
/// libc declares some flags signed and some unsigned).
macro_rules! same_constant {
    ($ours:path, $libc:path) => {
        assert!(
            $ours as i128 == $libc as i128,
            concat!(stringify!($ours), " differs from ", stringify!($libc))
        );
        assert!(
            size_of_val(&$ours) == size_of_val(&$libc),
            concat!(stringify!($ours), " has another size than ", stringify!($libc))
        );
    };
}

/// A struct has libc's size, alignment and field offsets.
macro_rules! same_layout {
    ($ours:ty, $libc:ty { $($field:ident),* $(,)? }) => {
        assert!(
            size_of::<$ours>() == size_of::<$libc>(),
            concat!("size of ", stringify!($ours))
        );
        assert!(
            align_of::<$ours>() == align_of::<$libc>(),
            concat!("alignment of ", stringify!($ours))
        );
        $(assert!(
            offset_of!($ours, $field) == offset_of!($libc, $field),
            concat!("offset of ", stringify!($ours), "::", stringify!($field))
        );)*
    };
}

/// A type alias has libc's size and signedness.
macro_rules! same_integer {
    ($ours:ty, $libc:ty) => {
        assert!(
            size_of::<$ours>() == size_of::<$libc>(),
            concat!("size of ", stringify!($ours))
        );
        assert!(
            (<$ours>::MIN == 0) == (<$libc>::MIN == 0),
            concat!("signedness of ", stringify!($ours))
        );
    };
}

const _: () = {
    same_constant!(posix::_SC_PAGESIZE, libc::_SC_PAGESIZE);
    same_constant!(posix::RLIMIT_MEMLOCK, libc::RLIMIT_MEMLOCK);
    same_constant!(posix::RLIM_INFINITY, libc::RLIM_INFINITY);
    same_integer!(posix::rlim_t, libc::rlim_t);
    same_layout!(posix::rlimit, libc::rlimit { rlim_cur, rlim_max });
};

#[cfg(target_vendor = "apple")]
const _: () = {
    use super::apple;
    same_constant!(apple::KERN_SUCCESS, libc::KERN_SUCCESS);
    same_constant!(apple::MACH_PORT_NULL, libc::MACH_PORT_NULL);
    same_integer!(apple::kern_return_t, libc::kern_return_t);
    same_integer!(apple::mach_port_t, libc::mach_port_t);
    same_integer!(apple::mach_vm_address_t, libc::mach_vm_address_t);
    same_integer!(apple::mach_vm_size_t, libc::mach_vm_size_t);
    same_integer!(apple::mach_msg_type_number_t, libc::mach_msg_type_number_t);
    same_constant!(apple::MADV_WILLNEED, libc::MADV_WILLNEED);
    // CoreFoundation's types are not in libc: `CFIndex` is `signed long`.
    same_integer!(apple::CFIndex, core::ffi::c_long);
    // Nor is `vm_region_basic_info_64`: its size under `#pragma pack(4)` (mach/vm_region.h:
    // 5 words, a 64-bit offset, a word, a short, padded to 4), and so its word count, 9.
    assert!(size_of::<apple::vm_region_basic_info_64>() == 36);
    assert!(apple::VM_REGION_BASIC_INFO_COUNT_64 == 9);
    same_integer!(apple::vm_prot_t, libc::vm_prot_t);
    same_constant!(apple::VM_PROT_READ, libc::VM_PROT_READ);
    same_constant!(apple::VM_PROT_WRITE, libc::VM_PROT_WRITE);
    same_constant!(apple::RLIMIT_AS, libc::RLIMIT_AS);
    same_constant!(apple::_SC_PHYS_PAGES, libc::_SC_PHYS_PAGES);
};

#[cfg(target_os = "linux")]
const _: () = {
    use super::linux;
    same_constant!(linux::PROT_READ, libc::PROT_READ);
    same_constant!(linux::PROT_WRITE, libc::PROT_WRITE);
    same_constant!(linux::MAP_SHARED, libc::MAP_SHARED);
    same_constant!(linux::PROT_NONE, libc::PROT_NONE);
    same_constant!(linux::MAP_PRIVATE, libc::MAP_PRIVATE);
    same_constant!(linux::MAP_ANONYMOUS, libc::MAP_ANONYMOUS);
    same_constant!(linux::MAP_NORESERVE, libc::MAP_NORESERVE);
    same_constant!(linux::MAP_FIXED_NOREPLACE, libc::MAP_FIXED_NOREPLACE);
    same_constant!(linux::EINVAL, libc::EINVAL);
    same_integer!(linux::off_t, libc::off_t);
    same_constant!(linux::MFD_CLOEXEC, libc::MFD_CLOEXEC);
    same_constant!(linux::MFD_ALLOW_SEALING, libc::MFD_ALLOW_SEALING);
    same_constant!(linux::F_ADD_SEALS, libc::F_ADD_SEALS);
    same_constant!(linux::F_GET_SEALS, libc::F_GET_SEALS);
    same_constant!(linux::F_SEAL_SEAL, libc::F_SEAL_SEAL);
    same_constant!(linux::F_SEAL_SHRINK, libc::F_SEAL_SHRINK);
    same_constant!(linux::F_SEAL_GROW, libc::F_SEAL_GROW);
    same_constant!(linux::F_SEAL_WRITE, libc::F_SEAL_WRITE);
    same_constant!(linux::F_SEAL_FUTURE_WRITE, libc::F_SEAL_FUTURE_WRITE);
    same_constant!(linux::MLOCK_ONFAULT, libc::MLOCK_ONFAULT);
    same_constant!(linux::MADV_POPULATE_READ, libc::MADV_POPULATE_READ);
    same_constant!(linux::MADV_POPULATE_WRITE, libc::MADV_POPULATE_WRITE);
    same_constant!(linux::MADV_DONTFORK, libc::MADV_DONTFORK);
    same_constant!(linux::EPERM, libc::EPERM);
    same_constant!(linux::EBADF, libc::EBADF);
    same_constant!(linux::F_GETFL, libc::F_GETFL);
    same_constant!(linux::O_RDONLY, libc::O_RDONLY);
    same_constant!(linux::O_WRONLY, libc::O_WRONLY);
    assert!(linux::O_ACCMODE == libc::O_RDONLY | libc::O_WRONLY | libc::O_RDWR);
    same_constant!(linux::SOL_SOCKET, libc::SOL_SOCKET);
    same_constant!(linux::SCM_RIGHTS, libc::SCM_RIGHTS);
    same_constant!(linux::MSG_CMSG_CLOEXEC, libc::MSG_CMSG_CLOEXEC);
    same_constant!(linux::MSG_CTRUNC, libc::MSG_CTRUNC);
    same_constant!(linux::MSG_NOSIGNAL, libc::MSG_NOSIGNAL);
    same_constant!(linux::MFD_HUGETLB, libc::MFD_HUGETLB);
    same_constant!(linux::ENOSYS, libc::ENOSYS);
    same_constant!(linux::MADV_HUGEPAGE, libc::MADV_HUGEPAGE);
    same_constant!(linux::MPOL_BIND, libc::MPOL_BIND);
    same_constant!(linux::MPOL_INTERLEAVE, libc::MPOL_INTERLEAVE);
    // libc declares neither MPOL_MF_STRICT nor HUGETLBFS_MAGIC: the values of
    // linux/mempolicy.h and linux/magic.h. tests/pools.rs checks them by behaviour.
    assert!(linux::MPOL_MF_STRICT == 1 << 0);
    assert!(linux::HUGETLBFS_MAGIC == 0x9584_58f6);
    // Our `statfs` reads the first two fields and has room for all of libc's.
    assert!(offset_of!(libc::statfs, f_type) == offset_of!(linux::statfs, f_type));
    assert!(offset_of!(libc::statfs, f_bsize) == offset_of!(linux::statfs, f_bsize));
    assert!(size_of::<linux::fsword_t>() == size_of::<libc::c_long>() || cfg!(target_arch = "s390x"));
    assert!(size_of::<linux::statfs>() >= size_of::<libc::statfs>());
    if let Some((mbind, get_mempolicy)) = linux::SYS_MEMPOLICY {
        assert!(mbind == libc::SYS_mbind as core::ffi::c_long);
        assert!(get_mempolicy == libc::SYS_get_mempolicy as core::ffi::c_long);
    }
};

#[cfg(all(target_os = "linux", target_env = "gnu"))]
const _: () = {
    same_constant!(super::linux::O_ACCMODE, libc::O_ACCMODE);
};

/// The signature of `write`, which the fork handling calls, against libc's: our declaration
/// coerces to a pointer of libc's function type only if every type matches. libc declares no
/// `pthread_atfork` for Linux: ours is POSIX's (`int pthread_atfork(void (*)(void),
/// void (*)(void), void (*)(void))`), and the fork tests in `tests/block.rs` fail unless its
/// handlers run.
#[cfg(target_os = "linux")]
const _: unsafe extern "C" fn(libc::c_int, *const libc::c_void, libc::size_t) -> libc::ssize_t =
    super::linux::write;

/// A pointer constant cannot be compared in a const.
#[cfg(target_os = "linux")]
#[test]
fn map_failed_matches_libc() {
    assert_eq!(super::linux::MAP_FAILED, libc::MAP_FAILED);
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

/// The Linux layouts.
#[cfg(target_os = "linux")]
const _: () = {
    use super::linux;
    same_layout!(linux::iovec, libc::iovec { iov_base, iov_len });
    same_layout!(linux::msghdr, libc::msghdr {
        msg_name, msg_namelen, msg_iov, msg_iovlen, msg_control, msg_controllen, msg_flags,
    });
    same_layout!(linux::cmsghdr, libc::cmsghdr { cmsg_len, cmsg_level, cmsg_type });
};

/// The Mach messaging that the macOS tests declare by hand (`tests/mach/mod.rs`, included here
/// so that its layouts are checked for both Apple targets whenever the unit tests build).
#[cfg(target_vendor = "apple")]
#[path = "../../tests/mach/mod.rs"]
mod mach;

#[cfg(target_vendor = "apple")]
const _: () = {
    same_constant!(mach::KERN_SUCCESS, libc::KERN_SUCCESS);
    same_constant!(mach::MACH_PORT_NULL, libc::MACH_PORT_NULL);
    same_integer!(mach::mach_port_t, libc::mach_port_t);
    same_integer!(mach::kern_return_t, libc::kern_return_t);
    same_integer!(mach::mach_msg_size_t, libc::natural_t);
    same_integer!(mach::mach_msg_timeout_t, libc::natural_t);
    same_integer!(mach::mach_port_right_t, libc::natural_t);
    same_integer!(mach::mach_msg_id_t, libc::integer_t);
    same_integer!(mach::mach_msg_option_t, libc::integer_t);
    same_integer!(mach::mach_port_delta_t, libc::integer_t);
    assert!(size_of::<mach::posix_spawnattr_t>() == size_of::<libc::posix_spawnattr_t>());
    // libc declares no message types: their sizes and offsets per mach/message.h.
    assert!(size_of::<mach::mach_msg_header_t>() == 24);
    assert!(offset_of!(mach::mach_msg_header_t, msgh_size) == 4);
    assert!(offset_of!(mach::mach_msg_header_t, msgh_remote_port) == 8);
    assert!(offset_of!(mach::mach_msg_header_t, msgh_local_port) == 12);
    assert!(offset_of!(mach::mach_msg_header_t, msgh_voucher_port) == 16);
    assert!(offset_of!(mach::mach_msg_header_t, msgh_id) == 20);
    assert!(size_of::<mach::mach_msg_body_t>() == 4);
    assert!(size_of::<mach::mach_msg_port_descriptor_t>() == 12);
    assert!(align_of::<mach::mach_msg_port_descriptor_t>() == 4);
    assert!(offset_of!(mach::mach_msg_port_descriptor_t, pad1) == 4);
    assert!(offset_of!(mach::mach_msg_port_descriptor_t, bits) == 8);
    // Header, body, descriptor, packed to 4: no padding anywhere.
    assert!(size_of::<mach::PortMessage>() == 40);
    assert!(offset_of!(mach::PortMessage, body) == 24);
    assert!(offset_of!(mach::PortMessage, port) == 28);
    assert!(size_of::<mach::ValueMessage>() == 32);
    assert!(offset_of!(mach::ValueMessage, value) == 24);
    // The bit fields: disposition in bits 16..24, type in 24..32.
    let port = mach::mach_msg_port_descriptor_t::new(7, mach::MACH_MSG_TYPE_COPY_SEND);
    assert!(port.disposition() == 19 && port.kind() == mach::MACH_MSG_PORT_DESCRIPTOR);
    assert!(mach::msgh_bits(mach::MACH_MSG_TYPE_COPY_SEND, 20) == 0x1413);
};
