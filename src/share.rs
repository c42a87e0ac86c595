//! Sharing a [`Block`](crate::Block) with another process: the same physical pages, mapped in
//! both, never copied.
//!
//! (The items below exist only on the platform they serve; docs.rs shows each platform's.)
//!
//! # Linux
//!
//! A block is a memfd. Hand its descriptor to the other process — over a Unix socket with
//! `send_fd` and `recv_fd`, by inheritance, or with `pidfd_getfd` — and map it there with
//! `Block::from_fd` (or `OpenOptions::open_fd` to choose pinning and warming), or without
//! write access as a `ReadOnlyBlock`.
//!
//! The receiving side trusts nothing about what it was sent. A shared mapping of a file that
//! someone truncates raises SIGBUS on the next touch, so `from_fd` maps only a memfd that is
//! sealed against shrinking (sealing it now if nobody forbade that), reads the size after the
//! seal is in place, and refuses everything else with an
//! [`Error::NotShareable`](crate::Error::NotShareable) that says what the sender should send
//! instead. What it does not stop is the other process *writing*: that is what sharing is for,
//! and why every view of the bytes is `unsafe`.
//!
//! # macOS
//!
//! A block is an IOSurface. Apple's way to share one across processes is a mach port:
//! `Block::mach_port` makes a send right (a `MachPort`), which travels in a mach message or an
//! XPC message (`xpc_dictionary_set_mach_send`), and `Block::from_mach_port` maps the surface
//! it names. Global surface IDs are not used: Apple deprecated them as insecure, since any
//! process could look them up. `Block::from_surface` adopts a surface that another framework
//! made (a Neural Engine output, a video frame).

#[cfg(all(target_os = "linux", not(any(miri, loom))))]
mod linux;
#[cfg(all(target_os = "linux", not(any(miri, loom))))]
mod scm;

#[cfg(all(target_vendor = "apple", not(any(miri, loom))))]
mod apple;

#[cfg(all(target_os = "linux", not(any(miri, loom))))]
pub use linux::ReadOnlyBlock;
#[cfg(all(target_os = "linux", not(any(miri, loom))))]
pub use scm::{recv_fd, send_fd};

#[cfg(all(target_vendor = "apple", not(any(miri, loom))))]
pub use apple::MachPort;
