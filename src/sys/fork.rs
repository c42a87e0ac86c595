//! What a child made by `fork` keeps of our block mappings: an inaccessible reservation in
//! place of each.
//!
//! `Region::map` (linux.rs) advises every block mapping `MADV_DONTFORK`, so that a forked
//! child never shares the parent's bytes beside its own copy of every tape cursor and grid
//! bitmap over them. That alone would leave a hole in the child at each block's address: the
//! child's next mapping (a large `malloc`, another block) could land there, and the child's
//! copy of a tape would then write into it, and dropping the child's copy of the block would
//! unmap it. So every live block mapping is listed here, and a `pthread_atfork` child handler
//! maps a `PROT_NONE` reservation over each hole before `fork` returns in the child: touching
//! an inherited block faults (SIGSEGV), and nothing else is placed at its address until the
//! child drops its copy of the block, whose `munmap` then removes exactly that reservation.
//! Should the reservation fail (something was mapped there first by an earlier child handler,
//! or the kernel refuses), the child aborts before running any code of its own. The cost is
//! one `mmap` per live block in each forked child, and a lock taken and released around each
//! `fork`.
//!
//! Only `fork` runs the handlers (and what calls it: Python's `os.fork`, std's `Command` where
//! it cannot use `posix_spawn`). `vfork` and `posix_spawn` share the parent's memory until
//! the child calls `exec`, and so have no holes. A child made by the raw `clone` system call
//! without `CLONE_VM` (not through the C library's `fork`) runs no handlers and is not
//! covered: its holes stay holes.

use crate::ffi::linux;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ptr::NonNull;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A live block mapping of this process.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Whether the range is a reservation that a fork child handler made in this process
    /// (which a later fork inherits like any mapping), not the block's own mapping (which it
    /// does not).
    reserved: bool,
}

/// Every live block mapping, behind a spin lock that a fork's `prepare` handler takes and the
/// `parent` and `child` handlers release, so that the child finds the list whole, and
/// unlocked for its own use afterwards. A spin lock because a `std` mutex cannot be held
/// from one handler to the next; it is taken only where a block is mapped or unmapped, and
/// around `fork`.
struct Registry {
    locked: AtomicBool,
    mappings: UnsafeCell<Vec<Mapping>>,
}

// SAFETY: `mappings` is read and written only while `locked` is held (`Locked`, or the fork
// handlers between `prepare` and `parent`/`child`); the pointers in it are addresses, never
// dereferenced here.
unsafe impl Sync for Registry {}

static REGISTRY: Registry = Registry {
    locked: AtomicBool::new(false),
    mappings: UnsafeCell::new(Vec::new()),
};

/// Whether this process has registered the fork handlers. It may register them more than
/// once (two threads mapping their first blocks at once, or a child forked while its parent
/// was registering them): the handlers count how many times they run per fork
/// (`HANDLER_DEPTH`), and only the first `prepare` and the last `parent` or `child` act.
static HANDLERS_REGISTERED: AtomicBool = AtomicBool::new(false);

/// How many `prepare` handlers of ours the fork in progress has run and not yet matched with
/// a `parent` or `child` one. The C library runs one fork's handlers at a time.
static HANDLER_DEPTH: AtomicUsize = AtomicUsize::new(0);

fn lock() {
    let mut spins = 0u32;
    while REGISTRY
        .locked
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        if spins < 100 {
            spins += 1;
            core::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

fn unlock() {
    REGISTRY.locked.store(false, Ordering::Release);
}

/// The registry, locked until dropped.
struct Locked;

impl Locked {
    fn new() -> Locked {
        lock();
        Locked
    }

    fn mappings(&mut self) -> &mut Vec<Mapping> {
        // SAFETY: the lock is held while `self` lives, and `&mut self` keeps this the only
        // reference it hands out.
        unsafe { &mut *REGISTRY.mappings.get() }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        unlock();
    }
}

/// Lists the block mapping of `len` bytes at `ptr`, registering the fork handlers first if
/// this process has not.
pub(super) fn register(ptr: NonNull<u8>, len: usize) -> io::Result<()> {
    if !HANDLERS_REGISTERED.load(Ordering::Acquire) {
        // SAFETY: the three handlers are `extern "C"` functions without arguments that live
        // as long as the process.
        let rc = unsafe { linux::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        HANDLERS_REGISTERED.store(true, Ordering::Release);
    }
    Locked::new().mappings().push(Mapping {
        ptr,
        len,
        reserved: false,
    });
    Ok(())
}

/// Takes the mapping at `ptr` off the list, before it is unmapped: a fork from then on leaves
/// the child a hole there, which nothing of the child refers to. In a forked child the range
/// is the reservation the child handler made, which the caller then unmaps.
pub(super) fn unregister(ptr: NonNull<u8>) {
    let mut locked = Locked::new();
    let mappings = locked.mappings();
    if let Some(at) = mappings.iter().position(|mapping| mapping.ptr == ptr) {
        mappings.swap_remove(at);
    }
}

/// Runs in the forking thread before `fork`: holds the registry still across it.
unsafe extern "C" fn prepare() {
    if HANDLER_DEPTH.fetch_add(1, Ordering::Relaxed) == 0 {
        lock();
    }
}

/// Runs in the parent after `fork`.
unsafe extern "C" fn parent() {
    if HANDLER_DEPTH.fetch_sub(1, Ordering::Relaxed) == 1 {
        unlock();
    }
}

/// Runs in the child after `fork`, before `fork` returns there, with the registry locked by
/// `prepare` in the thread that forked, the child's only thread. Async-signal-safe: it
/// allocates nothing and calls only `mmap`, `munmap`, `write` and `abort`.
unsafe extern "C" fn child() {
    // SAFETY: `prepare` took the lock before the fork, and only this thread exists now.
    let mappings = unsafe { &mut *REGISTRY.mappings.get() };
    for mapping in mappings.iter_mut().filter(|mapping| !mapping.reserved) {
        reserve(mapping.ptr, mapping.len);
        mapping.reserved = true;
    }
    if HANDLER_DEPTH.fetch_sub(1, Ordering::Relaxed) == 1 {
        unlock();
    }
}

/// Maps `len` inaccessible bytes exactly at `ptr`, where `MADV_DONTFORK` left a hole in this
/// child, or aborts the child.
fn reserve(ptr: NonNull<u8>, len: usize) {
    let want: *mut c_void = ptr.as_ptr().cast();
    // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping: it maps only where the range is
    // free (a kernel before 4.17 takes the address as a hint, and we check where it mapped).
    // The new pages are inaccessible and belong to no one else.
    let got = unsafe {
        linux::mmap(
            want,
            len,
            linux::PROT_NONE,
            linux::MAP_PRIVATE
                | linux::MAP_ANONYMOUS
                | linux::MAP_NORESERVE
                | linux::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if got == want {
        return;
    }
    if got != linux::MAP_FAILED {
        // SAFETY: the mapping just made elsewhere, which nothing uses.
        unsafe { linux::munmap(got, len) };
    }
    const WHY: &str = "unimem: this child of fork() could not reserve the address range of a \
                       block it inherited (something was mapped there first, or mmap failed); \
                       aborting it rather than let its copy of the block reach other memory\n";
    // SAFETY: writes WHY's bytes, which are valid for its length, to standard error.
    unsafe { linux::write(2, WHY.as_ptr().cast(), WHY.len()) };
    std::process::abort();
}
