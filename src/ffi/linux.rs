//! Linux-only calls: memfd, file sealing, shared mapping, lock-on-fault, page population, and
//! passing descriptors over a Unix socket (`SCM_RIGHTS`).

use core::ffi::{c_char, c_int, c_long, c_uint, c_void};

/// `off_t` as the C library's default ABI declares it, which `mmap` takes: 32 bits in glibc's
/// and uClibc's on 32-bit targets (riscv32 excepted: its glibc has only the 64-bit ABI), 64
/// bits everywhere else. Checked against libc in `ffi/tests.rs`.
#[cfg(all(
    target_pointer_width = "32",
    any(target_env = "gnu", target_env = "uclibc"),
    not(target_arch = "riscv32")
))]
pub type off_t = i32;
/// `off_t` as the C library's default ABI declares it, which `mmap` takes: 64 bits here.
#[cfg(not(all(
    target_pointer_width = "32",
    any(target_env = "gnu", target_env = "uclibc"),
    not(target_arch = "riscv32")
)))]
pub type off_t = i64;

/// Pages may be read.
pub const PROT_READ: c_int = 1;
/// Pages may be written.
pub const PROT_WRITE: c_int = 2;
/// Share the mapping with every other mapping of the same object.
pub const MAP_SHARED: c_int = 1;
/// What `mmap` returns on failure.
pub const MAP_FAILED: *mut c_void = !0 as *mut c_void;
/// Pages may not be accessed at all.
pub const PROT_NONE: c_int = 0;
/// A copy-on-write mapping of this process's own.
pub const MAP_PRIVATE: c_int = 2;
/// Memory backed by no file.
#[cfg(not(any(
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6"
)))]
pub const MAP_ANONYMOUS: c_int = 0x20;
/// Memory backed by no file: MIPS numbers its mapping flags its own way.
#[cfg(any(
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6"
))]
pub const MAP_ANONYMOUS: c_int = 0x800;
/// Reserve no swap space for the mapping.
#[cfg(not(any(
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6",
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
pub const MAP_NORESERVE: c_int = 0x4000;
/// Reserve no swap space for the mapping (MIPS's value).
#[cfg(any(
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6"
))]
pub const MAP_NORESERVE: c_int = 0x400;
/// Reserve no swap space for the mapping (PowerPC's and SPARC's value).
#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
pub const MAP_NORESERVE: c_int = 0x40;
/// Map exactly at the address given, failing with `EEXIST` where something is mapped already
/// (Linux 4.17; older kernels ignore the flag and take the address as a hint).
pub const MAP_FIXED_NOREPLACE: c_int = 0x10_0000;

/// `EPERM`: not permitted (a seal forbids it, or the descriptor lacks write access).
pub const EPERM: c_int = 1;
/// `EBADF`: the descriptor does not allow this operation (an `O_PATH` descriptor).
pub const EBADF: c_int = 9;
/// `EINVAL`.
pub const EINVAL: c_int = 22;

/// `memfd_create`: close the descriptor on `exec`.
pub const MFD_CLOEXEC: c_uint = 0x0001;
/// `memfd_create`: allow `F_ADD_SEALS` on the descriptor.
pub const MFD_ALLOW_SEALING: c_uint = 0x0002;
/// `memfd_create`: back the file with hugetlbfs pages of the default huge page size, from the
/// reserved pool (`vm.nr_hugepages`); sealable since Linux 4.16.
pub const MFD_HUGETLB: c_uint = 0x0004;
/// `ENOSYS`: the kernel lacks the system call (`mbind` without NUMA support).
#[cfg(not(any(
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6"
)))]
pub const ENOSYS: c_int = 38;
/// `ENOSYS`: MIPS numbers its errors its own way.
#[cfg(any(
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6"
))]
pub const ENOSYS: c_int = 89;
/// `hugetlbfs`'s `f_type` in `struct statfs`.
pub const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
/// `madvise`: back the range with transparent huge pages where the kernel can
/// (`shmem_enabled=advise` for shared memory).
pub const MADV_HUGEPAGE: c_int = 14;

/// `fcntl` command: read the file status flags, among them the access mode.
pub const F_GETFL: c_int = 3;
/// The access-mode bits of the file status flags (the kernel's value; musl's `O_ACCMODE`
/// also covers `O_PATH`).
pub const O_ACCMODE: c_int = 0o3;
/// Access mode: read only.
pub const O_RDONLY: c_int = 0o0;
/// Access mode: write only.
pub const O_WRONLY: c_int = 0o1;

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
/// `madvise`: leave the range out of a child made by `fork` (Linux 2.6.16).
pub const MADV_DONTFORK: c_int = 10;

/// `mbind` and `get_mempolicy` mode: allocate only on the nodes given.
pub const MPOL_BIND: c_int = 2;
/// `mbind` and `get_mempolicy` mode: spread pages round-robin over the nodes given.
pub const MPOL_INTERLEAVE: c_int = 3;
/// `mbind` flag: fail if pages already there break the policy.
pub const MPOL_MF_STRICT: c_uint = 1;

/// `__fsword_t`: the type of `struct statfs`'s first fields; `unsigned int` on s390x.
#[cfg(not(target_arch = "s390x"))]
pub type fsword_t = core::ffi::c_long;
/// `__fsword_t`: `unsigned int` on s390x.
#[cfg(target_arch = "s390x")]
pub type fsword_t = c_uint;

/// The head of `struct statfs` (the file system's type and block size, which is the huge
/// page size on hugetlbfs), followed by room for the rest on every target (checked against
/// libc's size in `ffi/tests.rs`).
#[repr(C)]
pub struct statfs {
    /// The file system's magic number, such as `HUGETLBFS_MAGIC`.
    pub f_type: fsword_t,
    /// Its block size: the page size for hugetlbfs.
    pub f_bsize: fsword_t,
    /// The fields unimem does not read.
    pub rest: [u64; 32],
}

/// The system call numbers of `mbind` and `get_mempolicy`, which the C library does not wrap
/// (libnuma does): per architecture, checked against libc in `ffi/tests.rs`. Architectures
/// not listed here get an `Unsupported` error for NUMA placement.
#[cfg(target_arch = "x86_64")]
pub const SYS_MEMPOLICY: Option<(c_long, c_long)> = Some((237, 239));
/// As above, for 32-bit x86.
#[cfg(target_arch = "x86")]
pub const SYS_MEMPOLICY: Option<(c_long, c_long)> = Some((274, 275));
/// As above, for the architectures with the generic system call table.
#[cfg(any(
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "riscv32",
    target_arch = "loongarch64"
))]
pub const SYS_MEMPOLICY: Option<(c_long, c_long)> = Some((235, 236));
/// As above, for 32-bit Arm.
#[cfg(target_arch = "arm")]
pub const SYS_MEMPOLICY: Option<(c_long, c_long)> = Some((319, 320));
/// As above, for PowerPC.
#[cfg(any(target_arch = "powerpc", target_arch = "powerpc64"))]
pub const SYS_MEMPOLICY: Option<(c_long, c_long)> = Some((259, 260));
/// Not known here: NUMA placement is refused.
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "riscv32",
    target_arch = "loongarch64",
    target_arch = "arm",
    target_arch = "powerpc",
    target_arch = "powerpc64"
)))]
pub const SYS_MEMPOLICY: Option<(c_long, c_long)> = None;

/// Socket option level for the socket layer itself (`SOL_SOCKET`).
#[cfg(not(any(
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
pub const SOL_SOCKET: c_int = 1;
/// Socket option level for the socket layer itself (`SOL_SOCKET`): MIPS and SPARC kept
/// the value of the Unix systems they first ran.
#[cfg(any(
    target_arch = "mips",
    target_arch = "mips32r6",
    target_arch = "mips64",
    target_arch = "mips64r6",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
pub const SOL_SOCKET: c_int = 0xffff;
/// Control message type: descriptors being passed.
pub const SCM_RIGHTS: c_int = 1;
/// Control message type: a pidfd of the sender, attached by the kernel when the receiving
/// socket has `SO_PASSPIDFD` (Linux 6.5). From `include/linux/socket.h`; `libc` lacks it, so
/// `tests/share.rs` checks it by behaviour (no pidfd leaks from such a socket).
pub const SCM_PIDFD: c_int = 4;
/// `recvmsg` flag: received descriptors are close-on-exec.
pub const MSG_CMSG_CLOEXEC: c_int = 0x4000_0000;
/// `recvmsg` result flag: the control buffer was too small, some control data was dropped.
pub const MSG_CTRUNC: c_int = 0x8;
/// `sendmsg` flag: report a closed peer as `EPIPE` instead of raising `SIGPIPE`.
pub const MSG_NOSIGNAL: c_int = 0x4000;

/// `struct iovec`.
#[repr(C)]
pub struct iovec {
    /// Start of the buffer.
    pub iov_base: *mut c_void,
    /// Its length.
    pub iov_len: usize,
}

/// `struct msghdr` as the kernel reads it (`size_t` lengths; musl's `int` plus padding has the
/// same layout on little-endian targets).
#[repr(C)]
pub struct msghdr {
    /// Peer address: unused on a connected stream.
    pub msg_name: *mut c_void,
    /// Its length.
    pub msg_namelen: u32,
    /// Data buffers.
    pub msg_iov: *mut iovec,
    /// How many.
    pub msg_iovlen: usize,
    /// Control (ancillary) data buffer.
    pub msg_control: *mut c_void,
    /// Its length; `recvmsg` sets it to the length used.
    pub msg_controllen: usize,
    /// Flags `recvmsg` reports, such as `MSG_CTRUNC`.
    pub msg_flags: c_int,
}

/// `struct cmsghdr`: the header of each control message; its data follows, aligned.
#[repr(C)]
pub struct cmsghdr {
    /// Header plus data, without trailing padding (`CMSG_LEN`).
    pub cmsg_len: usize,
    /// Originating protocol, `SOL_SOCKET` here.
    pub cmsg_level: c_int,
    /// Type within the protocol, such as `SCM_RIGHTS`.
    pub cmsg_type: c_int,
}

/// `CMSG_ALIGN`: control messages are aligned to `size_t`.
pub const fn cmsg_align(len: usize) -> usize {
    (len + size_of::<usize>() - 1) & !(size_of::<usize>() - 1)
}

/// `CMSG_LEN`: the `cmsg_len` of a message with `data` bytes, and the offset at which the
/// data begins is `cmsg_len(0)` (`CMSG_DATA`).
pub const fn cmsg_len(data: usize) -> usize {
    cmsg_align(size_of::<cmsghdr>()) + data
}

/// `CMSG_SPACE`: the room a message with `data` bytes takes in a control buffer.
pub const fn cmsg_space(data: usize) -> usize {
    cmsg_align(size_of::<cmsghdr>()) + cmsg_align(data)
}

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
    pub fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    pub fn mlock2(addr: *const c_void, len: usize, flags: c_uint) -> c_int;
    pub fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
    pub fn sendmsg(socket: c_int, message: *const msghdr, flags: c_int) -> isize;
    pub fn recvmsg(socket: c_int, message: *mut msghdr, flags: c_int) -> isize;
    pub fn fstatfs(fd: c_int, buf: *mut statfs) -> c_int;
    pub fn syscall(number: c_long, ...) -> c_long;
    pub fn pthread_atfork(
        prepare: Option<unsafe extern "C" fn()>,
        parent: Option<unsafe extern "C" fn()>,
        child: Option<unsafe extern "C" fn()>,
    ) -> c_int;
    pub fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
}
