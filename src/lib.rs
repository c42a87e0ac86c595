//! Memory that the CPU, GPU and accelerators share without copies, and the allocators an
//! inference engine needs on top of it.
//!
//! Inference engines keep their tensors in memory every engine of the machine can see: on Apple
//! Silicon the CPU, GPU, AMX and Neural Engine all read the same physical pages. They allocate
//! from it in hot loops, millions of times a second, and throw a whole forward pass away in one
//! step. unimem is that layer, in three types:
//!
//! - [`Block`]: shareable memory, pinned in RAM where the system allows it, with an address
//!   that never changes until drop.
//! - [`Tape`]: a lock-free bump allocator over a Block: `take` bumps a private cursor in the
//!   calling thread's chunk of the tape (one atomic step per chunk), `clear` rewinds
//!   everything at once, a [`Scope`] gives a layer's scratch back when it ends, and [`Steps`] lets
//!   persistent workers share a tape step after step, safely.
//! - [`Grid`]: `N` cells of `CELL` bytes in one Block, taken and given back lock-free; a
//!   [`Cell`] returns itself when dropped, and a per-thread [`Stash`] batches the traffic.
//!
//! **Pinned when the system allows it, and working when it does not.** Pinning counts against
//! the memory-lock limit, which is 8 MiB for an ordinary user on most Linux systems, far less
//! than the hundreds of MiB a tape of tensors needs. So by default a block is pinned when the
//! limit leaves room for all of it and opened unpinned when it does not
//! ([`Pinning::BestEffort`]), rather than failing on the first call; [`Block::is_pinned`]
//! (also through [`Tape::block`] and [`Grid::block`]) says which happened. Raise the limit
//! (`ulimit -l`) or grant `CAP_IPC_LOCK` to have everything pinned, and ask for
//! [`Pinning::Required`] where running unpinned is not acceptable: it gives an
//! [`Error::PinRefused`] that says what is locked already and what the limit is.
//!
//! ```
//! use unimem::Tape;
//!
//! let mut tape = Tape::start(1 << 20)?;
//! let weights = tape.take_copy(&[0.5f32, -1.0, 2.0]).unwrap();
//! let out = tape.take_fill(3, 0.0f32).unwrap();
//! for (o, w) in out.iter_mut().zip(weights.iter()) {
//!     *o = w * 2.0;
//! }
//! assert_eq!(out, &[1.0, -2.0, 4.0]);
//! tape.clear(); // O(1); `weights` and `out` can no longer be used, and the compiler knows it
//! # Ok::<(), unimem::Error>(())
//! ```
//!
//! # Features
//!
//! All off by default: the default build has no dependencies at all. None links a system
//! library: what one needs is opened at run time with `dlopen`, and a machine without it
//! builds and runs everything else. On docs.rs, items that need a feature carry a badge that
//! says which.
//!
//! | feature | what it enables | what it costs |
//! |---|---|---|
//! | `allocator-api2` | `allocator_api2::alloc::Allocator` for `&Tape`: `Vec`, `HashMap` and other collections on a tape (`Vec::new_in(&tape)`) | one dependency, the `allocator-api2` crate, 0.2 (no dependencies of its own) |
//! | `cuda` | the `cuda` module: register a [`Block`] with the NVIDIA driver, for the GPU to read and write it in place (Linux; elsewhere the feature does nothing) | no dependency; `libcuda.so.1` opened at run time, when first asked for |
//! | `ucx` | the `ucx` module: register blocks with UCX for one-sided put/get between processes and machines | no dependency; `libucp` opened at run time |
//!
//! ```toml
//! [dependencies]
//! unimem = { version = "0.1", features = ["allocator-api2"] }
//! ```
//!
//! # What "pinned" and "shared" mean here
//!
//! | | macOS | Linux | elsewhere, and under Miri |
//! |---|---|---|---|
//! | the memory | an `IOSurface`, locked for CPU access (`IOSurfaceLock`) for its whole life | a memfd sealed against shrinking and growing, mapped shared | a page-aligned heap region |
//! | pinned means | `mlock`: resident, every page wired as the block opens (so a pinned lazy block is warm); Apple's `mlock(2)` promises no non-resident page fault until unlocked. The IOSurface lock only bounds CPU access, in Apple's words; it is not what pins | `mlock2`: resident, locked as the pages fault in when the block is lazy | never pinned |
//! | [`Pinning::BestEffort`] (the default) pins | while every pinned block of the process, the new one included, fits in a quarter of RAM: the lock limit is unlimited by default, and the kernel's ceiling (`vm.user_wire_limit`) is most of RAM; wiring populates, so best effort also keeps larger lazy blocks lazy. [`Pinning::Required`] wires up to the kernel's limits | while the memory-lock limit (`ulimit -l`) leaves room | never |
//! | CPU access and other devices | the surface stays locked (`IOSurfaceLock`) while the block lives, so its address never changes; the IOSurface seed, which moves as a write lock is released, moves for the block's writes only when the block drops. Locks nest: other users of the surface lock and unlock around it as before, and their write unlocks move the seed. The CPU sees what a GPU or the Neural Engine wrote once that work has completed (wait for the command buffer); a Metal *texture* on a discrete GPU (Intel Macs) may be cached in video memory: synchronise it (`synchronizeResource`) before the CPU reads | plain shared memory: a device's writes are visible once its work has completed | plain memory |
//! | physical addresses | not visible to user code, and not documented as fixed: devices reach the memory through Apple's frameworks (Metal, Core ML), given the IOSurface | may change: the kernel migrates locked pages (memory compaction does by default, `/proc/sys/vm/compact_unevictable_allowed`) | may change |
//! | shared with | GPU, ANE, AMX through [`Block::handle`] (the `IOSurfaceRef`); other processes through a mach port | other processes and drivers through the fd; nobody can truncate it under us | nothing |
//! | after `fork()` | nothing is done: Apple's frameworks (IOSurface among them) are not fork-safe; share with a child through a mach port | left out of the child (`MADV_DONTFORK`), and its range reserved there, inaccessible, by a `pthread_atfork` handler before `fork` returns: a block, tape or grid the child inherited faults (SIGSEGV) when its memory is touched, nothing the child maps later is placed in its range, and dropping it in the child unmaps only that reservation; so the two processes never hand out the same bytes (a child whose range cannot be reserved is aborted before it runs). Only the C library's `fork` runs the handler: a child of the raw `clone` system call (without `CLONE_VM`) is left a bare hole, where its own later mappings may land, so it must not touch or drop what it inherited; `vfork` and `posix_spawn` children share the parent's memory until they `exec`. Share with a child through the fd, explicitly | the child's own copy of the memory, as for any heap memory |
//!
//! So "pinned" means resident: no access waits for a disk, and no page is swapped out. A
//! device that is told *physical* addresses needs more than that, and on Linux only its driver
//! can give it: a long-term pin taken when the memory is registered with the device (CUDA's
//! `cudaHostRegister`, RDMA memory registration, VFIO's DMA mapping) holds the pages in place
//! until the registration ends. Register the block's memory (its base address and length, or
//! its fd where the driver imports one) with the driver, and keep the block alive until it is
//! unregistered.
//!
//! Whether a block got pinned is [`Block::is_pinned`]; see [`Pinning`] for the choices and the
//! memory-lock limit.
//!
//! # Who may touch the memory, and when
//!
//! Rust's rule is that bytes are either shared read-only or written by exactly one owner. The
//! three types divide that responsibility differently:
//!
//! - A [`Block`] hands out raw pointers and `unsafe` slice views only. It cannot know who else
//!   is using the memory (another thread, the GPU, another process), so the caller keeps the
//!   rule, as each view's `# Safety` section spells out.
//! - A [`Tape`] hands out disjoint byte ranges, each exclusively yours (as `&mut [T]` from the
//!   typed helpers) for as long as the tape is borrowed. [`Tape::clear`] and [`Tape::rewind`]
//!   take `&mut self`, so they cannot run while any of those borrows, or any [`Lane`], is
//!   alive. Destructors never run on tape memory: a `String` written there leaks its heap
//!   buffer when the tape is cleared.
//! - A [`Grid`] hands out [`Cell`]s, each exclusively yours until you give it back or drop it.
//!   A cell may travel to another thread; its bytes are published to the next owner with
//!   release/acquire ordering, so the next taker sees everything the last owner wrote.
//!
//! Handing memory to hardware goes through [`Block::handle`] plus an offset
//! ([`Tape::offset_of`], [`Cell::offset`]); to a GPU, through the `cuda` module, and to other
//! processes and machines by UCX, through the `ucx` module (features of those names, Linux).
//! The device is outside the borrow checker: keep the allocation (and the tape or grid) alive
//! and untouched until the device is done with it.
//!
//! # Errors
//!
//! Running out of room is not an error: `take` returns `None`. Programmer errors (an alignment
//! that is not a power of two, a mark from another tape, a cell given to the wrong grid) panic
//! with a message that says what to fix. Everything the system can refuse comes back as an
//! [`Error`] whose message says what to do next.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(docsrs, doc(auto_cfg = false))]

/// The backend switch: the one place that says where unimem maps memory through the operating
/// system. That is Linux and Apple platforms, except under Miri and loom, which check everything
/// built on a block over the portable heap backend instead.
///
/// `backend! { native: { items } portable: { items } }` keeps each group of items only where it
/// applies (either group may be left out). Inside `native`, a plain `target_os = "linux"` or
/// `target_vendor = "apple"` tells the two operating systems apart.
macro_rules! backend {
    ($(native: { $($native:item)* })? $(portable: { $($portable:item)* })?) => {
        backend! {
            @when all(any(target_os = "linux", target_vendor = "apple"), not(any(miri, loom)));
            { $($($native)*)? } { $($($portable)*)? }
        }
    };
    (@when $when:meta; { $($native:item)* } { $($portable:item)* }) => {
        $( #[cfg($when)] $native )*
        $( #[cfg(not($when))] $portable )*
    };
}

mod block;
backend! {
    native: {
        #[cfg(all(feature = "cuda", target_os = "linux"))]
        #[cfg_attr(docsrs, doc(cfg(all(feature = "cuda", target_os = "linux"))))]
        pub mod cuda;
        #[cfg(all(feature = "ucx", target_os = "linux"))]
        #[cfg_attr(docsrs, doc(cfg(all(feature = "ucx", target_os = "linux"))))]
        pub mod ucx;
    }
}
mod error;
mod ffi;
mod grid;
pub mod share;
mod sync;
mod sys;
mod tape;

pub use block::{Block, Handle, HugePages, Numa, OpenOptions, Pinning};
pub use error::Error;
pub use grid::{Cell, Grid, OwnedCell, Plain, Stash};
#[cfg(feature = "allocator-api2")]
#[cfg_attr(docsrs, doc(cfg(feature = "allocator-api2")))]
pub use tape::{CollectIn, FromIteratorIn, TapeBox, TapeString, TapeVec};
pub use tape::{Lane, Mark, Scope, Tape};
pub use tape::{Step, Steps, StepsBusy};

/// The [allocator-api2](https://docs.rs/allocator-api2/0.2) crate (0.2) whose `Allocator`
/// trait `&Tape` implements (feature `allocator-api2`), re-exported so that the collections
/// you build on a tape come from the very version unimem implements:
/// `unimem::allocator_api2::vec::Vec::new_in(&tape)`. [`TapeVec`], [`TapeBox`],
/// [`TapeString`] and [`tape_vec!`] are the short ways.
///
/// # The version trap: E0277 with allocator-api2 0.4
///
/// `cargo add allocator-api2` adds the newest release (0.4), which is a different crate to
/// the compiler than the 0.2 that unimem implements. `Vec::new_in(&tape)` with its `Vec`
/// then fails with `error[E0277]: the trait bound `&Tape: Allocator` is not satisfied`, and
/// rustc notes that there are multiple different versions of crate `allocator_api2` in the
/// dependency graph: `&Tape` implements 0.2's `Allocator`, not 0.4's. Use this re-export
/// instead of a dependency of your own, or depend on `allocator-api2 = "0.2"` (as
/// `hashbrown` 0.15 does), so that cargo picks the same crate.
///
/// ```
/// use unimem::allocator_api2::vec::Vec;
///
/// let tape = unimem::Tape::start(4096)?;
/// let mut xs = Vec::new_in(&tape);
/// xs.push(1u8);
/// assert!(tape.owns(xs.as_ptr()));
/// # Ok::<(), unimem::Error>(())
/// ```
#[cfg(feature = "allocator-api2")]
#[cfg_attr(docsrs, doc(cfg(feature = "allocator-api2")))]
pub use allocator_api2;

/// The README's examples, compiled and run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
