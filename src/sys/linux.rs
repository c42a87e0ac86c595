//! Linux: a sealed memfd, mapped shared, locked with `mlock2`.
//!
//! The memfd is sealed against shrinking and growing, and the seals themselves are sealed;
//! writes are not sealed: sharing them is the point. A memfd that another process made is
//! checked before it is mapped (`Region::from_fd`). Why a shared mapping needs these seals,
//! and why the size is read only after them, is written once, in the `share` module's docs
//! ("Sealing before sizing").

use super::{Backend, Huge, Numa, Region, fork, unix};
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

/// What backs a region's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pages {
    /// Base pages (which the kernel may still back with transparent huge pages on its own,
    /// under `shmem_enabled=always`: `page_size_of` looks).
    Base,
    /// Transparent huge pages of this (PMD) size advised with `MADV_HUGEPAGE`: the kernel
    /// gives them where it finds free huge frames, and base pages elsewhere.
    Transparent(usize),
    /// hugetlbfs pages of this size, reserved from the pool (`vm.nr_hugepages`) when mapped.
    HugeTlb(usize),
}

/// What a Linux region owns: the memfd behind its shared mapping.
pub(super) struct Memory {
    fd: OwnedFd,
    access: Access,
    pages: Pages,
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

    /// A new sealed memfd of base pages, mapped read-write.
    fn create(len: usize) -> Result<Region, Error> {
        create_memfd(len, 0, Pages::Base)
    }

    fn handle(region: &Region) -> Handle {
        region.memory.fd.as_raw_fd()
    }

    unsafe fn release(region: &mut Region) {
        fork::unregister(region.ptr);
        // SAFETY: we mapped exactly this range in `map`, and nothing uses it after the
        // region's drop (the caller's promise). In a child made by `fork` that inherited the
        // region, the range is the child's own inaccessible reservation of it (`fork.rs`),
        // made before `fork` returned there; unmapping it unmaps nothing else. The descriptor
        // (the child's own copy, in a child) is closed afterwards, by OwnedFd's own drop.
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
        populate_range(region, 0, region.len, pinned)
    }
}

/// Faults the pages of bytes `start..start + len` of `region` in without changing a byte, in
/// one system call where the kernel can. Several threads may populate disjoint ranges of one
/// region at once (`sys::populate`).
pub(crate) fn populate_range(
    region: &Region,
    start: usize,
    len: usize,
    pinned: bool,
) -> Result<(), Error> {
    assert!(start <= region.len && len <= region.len - start);
    // A read-only mapping refuses MADV_POPULATE_WRITE; a writable one is better populated
    // for writing, so that its first writes take no fault either.
    let (advice, call) = match region.memory.access {
        Access::ReadWrite => (linux::MADV_POPULATE_WRITE, "madvise(MADV_POPULATE_WRITE)"),
        Access::ReadOnly => (linux::MADV_POPULATE_READ, "madvise(MADV_POPULATE_READ)"),
    };
    // SAFETY: `start + len <= region.len` (checked above), so this stays inside the mapping.
    let ptr = unsafe { region.ptr.add(start) };
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

/// A new memfd of `len` bytes (a multiple of the pages `pages` names), made with
/// `memfd_create`'s `extra` flags, sized, sealed and mapped read-write.
fn create_memfd(len: usize, extra: core::ffi::c_uint, pages: Pages) -> Result<Region, Error> {
    // SAFETY: the name is a valid C string; the flags are valid for memfd_create.
    let raw = unsafe {
        linux::memfd_create(
            c"unimem".as_ptr(),
            linux::MFD_CLOEXEC | linux::MFD_ALLOW_SEALING | extra,
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
    Region::map(fd, len, Access::ReadWrite, pages)
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
        let pages = pages_of(fd.as_fd());
        Region::map(fd, len, access, pages)
    }

    /// Maps `len` bytes of `fd` shared. The caller has checked that the file is at least
    /// `len` bytes long and cannot shrink.
    fn map(fd: OwnedFd, len: usize, access: Access, pages: Pages) -> Result<Region, Error> {
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
            memory: Memory { fd, access, pages },
        };
        // A child made by `fork` would get this shared mapping beside its own copy of every
        // tape cursor and grid bitmap over it, and both processes would hand out the same
        // bytes. Leave the mapping out of children, and have them reserve its range
        // inaccessible (`fork.rs`): what a child inherits faults when touched, and a child
        // that should share the block is sent its fd.
        // SAFETY: the range is the mapping just made; the advice changes no byte of it.
        let rc = unsafe { linux::madvise(ptr.as_ptr().cast(), len, linux::MADV_DONTFORK) };
        if rc != 0 {
            // `region` is dropped here, which unmaps it and closes the descriptor.
            return Err(os_error("madvise(MADV_DONTFORK)"));
        }
        fork::register(ptr, len).map_err(|source| Error::Os {
            call: "pthread_atfork",
            source,
        })?;
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

impl Region {
    /// New memory of at least `len` bytes (a nonzero multiple of the base page size), with the
    /// huge pages and the NUMA placement asked for, the policy set before any page exists.
    pub(super) fn create_with_linux(
        len: usize,
        huge: Huge,
        numa: &Numa<'_>,
    ) -> Result<Region, Error> {
        let region = match huge {
            Huge::Off => Imp::create(len)?,
            Huge::BestEffort | Huge::Required => create_huge(len, huge)?,
        };
        bind(&region, numa)?;
        Ok(region)
    }

    /// The size of the pages that back this region now: the hugetlbfs page size, or for other
    /// memory the PMD size when `/proc/self/smaps` shows every resident byte of the mapping
    /// PMD-mapped (and some resident), the base page size otherwise.
    pub(super) fn backing_page_size_linux(&self) -> usize {
        let base = unix::page_size();
        if let Pages::HugeTlb(size) = self.memory.pages {
            return size;
        }
        let Some(pmd) = transparent_huge_page_size() else {
            return base;
        };
        match smaps_of(self.ptr.addr().get()) {
            Some(smaps) if smaps.rss > 0 && smaps.pmd_mapped >= smaps.rss => pmd,
            _ => base,
        }
    }

    /// What backs the region, as chosen when it was made or adopted.
    pub(super) fn pages(&self) -> Pages {
        self.memory.pages
    }
}

/// Huge pages for a new region: hugetlbfs pages when the pool has room for all of it, else
/// transparent huge pages where `shmem_enabled` allows them, else base pages, or for
/// `Required` the error that names the knobs.
fn create_huge(len: usize, huge: Huge) -> Result<Region, Error> {
    let hugetlb = hugetlb_page_size();
    if let Some(rounded) = hugetlb.and_then(|size| round_up(len, size)) {
        let size = hugetlb.unwrap_or(0);
        // The pool is reserved when the memfd is mapped (ENOMEM when it has no room); any
        // failure here falls through to the next kind of page.
        if let Ok(region) = create_memfd(rounded, linux::MFD_HUGETLB, Pages::HugeTlb(size)) {
            return Ok(region);
        }
    }
    let transparent = transparent_huge_pages_allowed().then(transparent_huge_page_size);
    if let Some(pmd) = transparent.flatten() {
        if let Some(rounded) = round_up(len, pmd) {
            let region = create_memfd(rounded, 0, Pages::Transparent(pmd))?;
            // SAFETY: advice about the mapping we just made; it changes no byte.
            let rc = unsafe {
                linux::madvise(region.ptr.as_ptr().cast(), rounded, linux::MADV_HUGEPAGE)
            };
            check(rc).map_err(|source| Error::Os {
                call: "madvise(MADV_HUGEPAGE)",
                source,
            })?;
            return Ok(region);
        }
    }
    match huge {
        Huge::Required => Err(Error::HugePagesUnavailable {
            bytes: len,
            huge_page_size: hugetlb,
            free_huge_pages: hugetlb.and_then(free_huge_pages),
            shmem_enabled: std::fs::read_to_string(SHMEM_ENABLED)
                .ok()
                .and_then(|text| bracketed(&text).map(str::to_owned)),
        }),
        _ => Imp::create(len),
    }
}

/// `len` rounded up to a multiple of `unit` (a power of two), if one mapping can span it.
fn round_up(len: usize, unit: usize) -> Option<usize> {
    let rounded = len.checked_add(unit - 1)? & !(unit - 1);
    (rounded <= isize::MAX as usize).then_some(rounded)
}

/// The global switch for transparent huge pages in shared memory.
const SHMEM_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/// The default hugetlbfs page size (`Hugepagesize` in /proc/meminfo), which `MFD_HUGETLB`
/// uses, or `None` without hugetlbfs.
fn hugetlb_page_size() -> Option<usize> {
    let kib: usize = unix::proc_line("/proc/meminfo", "Hugepagesize:")?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024).filter(|size| size.is_power_of_two())
}

/// How many pages of `size` the hugetlb pool has free and unreserved, for error messages.
fn free_huge_pages(size: usize) -> Option<u64> {
    let read = |name: &str| -> Option<u64> {
        let path = format!("/sys/kernel/mm/hugepages/hugepages-{}kB/{name}", size / 1024);
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    };
    read("free_hugepages")?.checked_sub(read("resv_hugepages")?)
}

/// The PMD size (`hpage_pmd_size`): the size of a transparent huge page, or `None` where the
/// kernel has none.
fn transparent_huge_page_size() -> Option<usize> {
    let text =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size").ok()?;
    text.trim()
        .parse()
        .ok()
        .filter(|size: &usize| size.is_power_of_two())
}

/// Whether `MADV_HUGEPAGE` gets shared memory transparent huge pages: `shmem_enabled` is
/// `always`, `within_size`, `advise` or `force` (and, since Linux 6.11, the PMD size's own
/// switch, unless it says `inherit`, agrees).
fn transparent_huge_pages_allowed() -> bool {
    let Some(global) = std::fs::read_to_string(SHMEM_ENABLED).ok() else {
        return false;
    };
    let allows = |setting: &str| matches!(setting, "always" | "within_size" | "advise" | "force");
    match bracketed(&global) {
        Some("deny") | None => return false,
        Some("force") => return true,
        _ => {}
    }
    let per_size = transparent_huge_page_size().and_then(|pmd| {
        std::fs::read_to_string(format!(
            "/sys/kernel/mm/transparent_hugepage/hugepages-{}kB/shmem_enabled",
            pmd / 1024
        ))
        .ok()
    });
    match per_size.as_deref().and_then(bracketed) {
        Some(setting) if setting != "inherit" => allows(setting),
        _ => bracketed(&global).is_some_and(allows),
    }
}

/// The setting a sysfs switch has chosen: the word in brackets (`always [advise] never`).
fn bracketed(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(&text[start..end])
}

/// What /proc/self/smaps says about the mapping that starts at `addr`.
struct Smaps {
    rss: u64,
    /// `ShmemPmdMapped` plus `FilePmdMapped`: bytes mapped by PMD-sized huge pages.
    pmd_mapped: u64,
}

/// Reads the entry of the mapping starting at `addr` from /proc/self/smaps, stopping there:
/// the kernel walks the page tables of each mapping as its entry is read.
fn smaps_of(addr: usize) -> Option<Smaps> {
    use std::io::BufRead;
    let file = File::open("/proc/self/smaps").ok()?;
    // smaps writes addresses as `%08lx`: at least 8 digits.
    let header = format!("{addr:08x}-");
    let mut lines = io::BufReader::new(file).lines();
    lines.by_ref().map_while(Result::ok).find(|line| line.starts_with(&header))?;
    let mut smaps = Smaps {
        rss: 0,
        pmd_mapped: 0,
    };
    for line in lines.map_while(Result::ok) {
        let Some((key, value)) = line.split_once(':') else {
            break;
        };
        // The next mapping's header has a colon in its device field (`00:01`), after a
        // space: stop at the first line that is not a `Key: value` field.
        if key.contains(' ') {
            break;
        }
        let bytes = || -> u64 {
            value
                .trim()
                .strip_suffix("kB")
                .and_then(|kib| kib.trim().parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        match key {
            "Rss" => smaps.rss = bytes(),
            "ShmemPmdMapped" | "FilePmdMapped" => smaps.pmd_mapped += bytes(),
            "VmFlags" => break,
            _ => {}
        }
    }
    Some(smaps)
}

/// What backs the memfd `fd`: hugetlbfs pages (of the file system's block size) or base
/// pages.
fn pages_of(fd: BorrowedFd<'_>) -> Pages {
    let mut stats = core::mem::MaybeUninit::<linux::statfs>::zeroed();
    // SAFETY: `stats` is writable and larger than the C library's `struct statfs`.
    let rc = unsafe { linux::fstatfs(fd.as_raw_fd(), stats.as_mut_ptr()) };
    if rc != 0 {
        return Pages::Base;
    }
    // SAFETY: zeroed, then filled in by fstatfs; every bit pattern is valid for its fields.
    let stats = unsafe { stats.assume_init() };
    // `f_type` is a signed 32-bit long on 32-bit targets: compare the magic's 32 bits.
    #[allow(clippy::unnecessary_cast, reason = "fsword_t's width differs per target")]
    let magic = stats.f_type as i64 & 0xffff_ffff;
    #[allow(clippy::unnecessary_cast, reason = "fsword_t's width differs per target")]
    let size = stats.f_bsize as usize;
    if magic == linux::HUGETLBFS_MAGIC && size.is_power_of_two() {
        Pages::HugeTlb(size)
    } else {
        Pages::Base
    }
}

/// Sets `numa`'s policy on the whole region (`mbind`), before any page of it exists. The
/// policy of shmem belongs to the file, so every mapping of it follows it; that of a hugetlb
/// mapping to the mapping alone.
fn bind(region: &Region, numa: &Numa<'_>) -> Result<(), Error> {
    let (mode, nodes) = match *numa {
        Numa::Any => return Ok(()),
        Numa::Bind(nodes) => (linux::MPOL_BIND, nodes),
        Numa::Interleave(nodes) => (linux::MPOL_INTERLEAVE, nodes),
    };
    let online = std::fs::read_to_string("/sys/devices/system/node/online").ok();
    let online_nodes = online.as_deref().map(|text| parse_node_list(text.trim()));
    for &node in nodes {
        // A kernel without NUMA support has no node directory: only node 0 exists there.
        let exists = match &online_nodes {
            Some(list) => list.contains(&node),
            None => node == 0,
        };
        if !exists {
            return Err(Error::NoSuchNode {
                node,
                online: online.as_deref().unwrap_or("0").trim().to_owned(),
            });
        }
    }
    let Some((mbind, _)) = linux::SYS_MEMPOLICY else {
        return Err(Error::Unsupported {
            what: "unimem does not know the mbind system call's number on this architecture: \
                   leave the placement to the kernel (`Numa::Any`), or use numactl",
        });
    };
    let bits = core::ffi::c_ulong::BITS as usize;
    let highest = nodes.iter().copied().max().unwrap_or(0);
    let mut mask = vec![0 as core::ffi::c_ulong; highest / bits + 1];
    for &node in nodes {
        mask[node / bits] |= 1 << (node % bits);
    }
    // The kernel reads `maxnode - 1` bits (a quirk kept since the call was added).
    let maxnode = (mask.len() * bits + 1) as core::ffi::c_ulong;
    // SAFETY: mbind reads `mask` (valid for `maxnode - 1` bits) and sets the policy of our
    // own mapping; it moves or changes no byte.
    let rc = unsafe {
        linux::syscall(
            mbind,
            region.ptr.as_ptr(),
            region.len,
            mode as core::ffi::c_ulong,
            mask.as_ptr(),
            maxnode,
            core::ffi::c_ulong::from(linux::MPOL_MF_STRICT),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let source = io::Error::last_os_error();
    // A kernel built without NUMA: binding to node 0, the only one, changes nothing.
    if source.raw_os_error() == Some(linux::ENOSYS) && highest == 0 {
        return Ok(());
    }
    Err(Error::Os {
        call: "mbind",
        source,
    })
}

/// The nodes of a sysfs node list such as `0-3,5`.
fn parse_node_list(text: &str) -> Vec<usize> {
    let mut nodes = Vec::new();
    for part in text.split(',').filter(|part| !part.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(first), Ok(last)) = (first.parse::<usize>(), last.parse::<usize>()) {
            nodes.extend(first..=last);
        }
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_parse_as_sysfs_writes_them() {
        assert_eq!(parse_node_list("0"), [0]);
        assert_eq!(parse_node_list("0-3,5"), [0, 1, 2, 3, 5]);
        assert_eq!(parse_node_list(""), Vec::<usize>::new());
    }

    #[test]
    fn the_chosen_setting_is_the_bracketed_one() {
        assert_eq!(bracketed("always within_size advise [never] deny force"), Some("never"));
        assert_eq!(bracketed("[inherit] never"), Some("inherit"));
        assert_eq!(bracketed("nothing"), None);
    }

    #[test]
    fn rounding_to_huge_pages() {
        assert_eq!(round_up(1, 2 << 20), Some(2 << 20));
        assert_eq!(round_up(2 << 20, 2 << 20), Some(2 << 20));
        assert_eq!(round_up(usize::MAX - 5, 2 << 20), None);
    }
}
