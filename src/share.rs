//! Sharing a [`Block`](crate::Block) with another process: the same physical pages, mapped in
//! both, never copied.
//!
//! The items below exist only on the platform they serve; the documentation shows each one's
//! platform next to it.
//!
//! # Linux
//!
//! A block is a memfd. Hand its descriptor to the other process — over a Unix socket with
//! `send_block` and `recv_fd`, or as an owned descriptor from `Block::export_fd` — and map it
//! there with `Block::from_fd` (or `OpenOptions::open_fd` to choose pinning and warming), or
//! without write access as a `ReadOnlyBlock`. Handing the descriptor out is `unsafe`:
//! see [handing out a block's descriptor](#handing-out-a-blocks-descriptor-linux).
//!
//! The receiving side trusts nothing about what it was sent: it maps only a memfd that nobody
//! can truncate under it ([sealing before sizing](#sealing-before-sizing-linux)), and refuses
//! everything else with an [`Error::NotShareable`](crate::Error::NotShareable) that says what
//! the sender should send instead. What it does not stop is the other process *writing*: that
//! is what sharing is for, and why every view of the bytes is `unsafe` (see
//! [memory mapped from another process](#memory-mapped-from-another-process)).
//!
//! # macOS
//!
//! A block is an IOSurface. Apple's way to share one across processes is a mach port:
//! `Block::mach_port` makes a send right (a `MachPort`), which travels in a mach message (as a
//! port descriptor), and `Block::from_mach_port` maps the surface it names. Over XPC, the
//! public route is IOSurface's own XPC object: `IOSurfaceCreateXPCObject` on
//! `Block::handle`, sent as a value of an XPC dictionary, and `IOSurfaceLookupFromXPCObject`
//! on the other side, whose surface `Block::from_surface` adopts (see `MachPort`). Global
//! surface IDs are not used: Apple deprecated them as insecure, since any process could look
//! them up. `Block::from_surface` also adopts a surface that another framework made (a Neural
//! Engine output, a video frame).
//!
//! # Memory mapped from another process
//!
//! A block made from what another process sent (`Block::from_fd` and `OpenOptions::open_fd`
//! on Linux; `Block::from_mach_port`, `Block::from_surface` and their `OpenOptions` forms on
//! macOS) is one more mapping of memory that others map too: the sender, and every other block
//! made from the same memfd or surface, in this process or another. On macOS, blocks of one
//! surface in one process are the very same mapping.
//!
//! `Block`'s own views are `unsafe` and say per call what must hold. But safe code built on a
//! block, such as [`Tape::on`](crate::Tape::on), hands out plain references into it, and Rust
//! assumes that nothing else changes the bytes behind a reference. So whoever makes such a
//! block promises that, while it lives:
//!
//! - no other mapping writes bytes that safe code in this process reaches through the block,
//!   nor touches bytes that such code writes;
//! - there are never two tapes (or a tape and a grid) over the same memory in one process:
//!   mapping a block of this process again gives a second, aliasing view of it.
//!
//! Using the block only through its `unsafe` views keeps this by their contracts. A tape on it
//! needs an agreement with every other holder of the memory about who touches which bytes
//! when. This is the promise that the `# Safety` section of each of these constructors asks
//! for.
//!
//! # Sealing before sizing (Linux)
//!
//! A shared mapping of a file that someone truncates raises SIGBUS on the next touch of a page
//! past the new end, in every process that maps it. So `Block::from_fd` maps only a memfd
//! sealed against shrinking (`F_SEAL_SHRINK`), adding that seal itself when the memfd allows
//! it (made with `MFD_ALLOW_SEALING`, seals not sealed), and reads the size only once the seal
//! is in place: a size read before could shrink between reading and mapping. Growing is not
//! sealed: it cannot hurt a mapping of the size read, and the sender may rely on it.
//!
//! unimem's own blocks are sealed against shrinking and growing from birth, and their seals
//! are sealed, so no holder of the descriptor can ever resize them.
//!
//! # Handing out a block's descriptor (Linux)
//!
//! A block's memfd descriptor can write its memory: with `write` and `pwrite`, through a new
//! writable mapping, and wherever it is passed on to. The references that safe code holds
//! into a block (a tape's takes, a grid's cells) rely on nothing else changing the bytes
//! behind them, and std's [I/O safety](std::io#io-safety) rules make a library that offers
//! safe references into a shared mapping answer for its descriptor. So no safe call hands it
//! out: `Block` implements neither `AsFd` nor `AsRawFd`, and `Block::export_fd`,
//! `ReadOnlyBlock::export_fd` and `send_block` are `unsafe`. Their caller promises that:
//!
//! - nothing writes through the descriptor, or through any descriptor or mapping made from
//!   it, in this process or another, to bytes that safe code in this process references
//!   through the block, nor reads bytes that such code is writing;
//! - every process the descriptor reaches keeps the protocol agreed for the memory (who
//!   touches which bytes when), and passes it on only to processes that do.
//!
//! Read-only export would be no safer, so there is none: whoever holds a read-only descriptor
//! of a memfd can reopen it read-write through `/proc/<pid>/fd/<n>`, and unimem's blocks
//! cannot be sealed against writing (their seals are sealed, and shared writes are the point).
//! A `ReadOnlyBlock` limits what this process does through its own mapping, not what its
//! descriptor allows.
//!
//! [`Block::handle`](crate::Block::handle) still gives the descriptor's number, a
//! [`RawFd`](std::os::fd::RawFd): a plain integer, which carries no access. Acting on it takes
//! `unsafe` ([`BorrowedFd::borrow_raw`](std::os::fd::BorrowedFd::borrow_raw),
//! [`OwnedFd::from_raw_fd`](std::os::fd::FromRawFd::from_raw_fd)), under the same promise.
//! Opening `/proc/self/fd/<n>`, which safe code can do for any number, counts with
//! `/proc/self/mem` among the things outside the program that std's I/O safety does not cover.

backend! {
    native: {
        #[cfg(target_os = "linux")]
        mod linux;
        #[cfg(target_os = "linux")]
        mod socket;
        #[cfg(target_vendor = "apple")]
        mod apple;

        #[cfg(target_os = "linux")]
        #[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
        pub use {linux::ReadOnlyBlock, socket::{recv_fd, send_block, send_fd}};
        #[cfg(target_vendor = "apple")]
        #[cfg_attr(docsrs, doc(cfg(target_vendor = "apple")))]
        pub use apple::MachPort;
    }
}
