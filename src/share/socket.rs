//! Passing descriptors over a Unix stream socket (`SCM_RIGHTS`), one at a time.

use crate::block::Block;
use crate::sys;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// Sends `fd` to the process at the other end of `stream`, which receives it with
/// [`recv_fd`].
///
/// The receiver gets its own descriptor for the same open file (like `dup`); `fd` stays open
/// here. One byte of data goes with it, so the stream must be used in step: the receiver
/// calls `recv_fd` when that byte is next, not in the middle of other data.
///
/// A closed peer is reported as an `EPIPE` error, never as a SIGPIPE signal. An interrupted
/// call is retried.
///
/// # Errors
/// What `sendmsg` answers: `EPIPE` (the peer is gone), `WouldBlock` on a non-blocking stream
/// whose buffer is full, `ETOOMANYREFS` when descriptors in flight nest too deep.
///
/// A block's own descriptor is sent with [`send_block`], which is `unsafe`: a block hands out
/// no descriptor to safe code (see
/// [handing out a block's descriptor](crate::share#handing-out-a-blocks-descriptor-linux)).
///
/// ```
/// use std::os::unix::net::UnixStream;
/// use unimem::share;
///
/// let (here, there) = UnixStream::pair()?;
/// let log = std::fs::File::open("/dev/null")?;
/// share::send_fd(&here, &log)?;
/// let received = share::recv_fd(&there)?;
/// # drop(received);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn send_fd(stream: &UnixStream, fd: impl AsFd) -> io::Result<()> {
    sys::send_fd(stream, fd.as_fd())
}

/// Sends `block`'s memfd to the process at the other end of `stream`, which receives it with
/// [`recv_fd`] and maps it with [`Block::from_fd`] (or as a
/// [`ReadOnlyBlock`](crate::share::ReadOnlyBlock)). No new descriptor is made here; otherwise
/// as [`send_fd`].
///
/// # Safety
/// The descriptor can write the block's memory, and whoever receives it can use it: the
/// caller keeps the promise for
/// [handing out a block's descriptor](crate::share#handing-out-a-blocks-descriptor-linux),
/// as for [`Block::export_fd`].
///
/// # Errors
/// As for [`send_fd`].
///
/// ```
/// use std::os::unix::net::UnixStream;
/// use unimem::{Block, share};
///
/// let (here, there) = UnixStream::pair()?;
/// let block = Block::open(4096)?;
/// // SAFETY: the receiver below keeps the protocol: it does not use the block at all.
/// unsafe { share::send_block(&here, &block)? };
/// let received = share::recv_fd(&there)?;
/// // SAFETY: neither block is used at all.
/// assert_eq!(unsafe { Block::from_fd(received)? }.len(), block.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub unsafe fn send_block(stream: &UnixStream, block: &Block) -> io::Result<()> {
    sys::send_fd(stream, block.region().fd())
}

/// Receives one descriptor that the process at the other end of `stream` sent with
/// [`send_fd`]. It is close-on-exec, and yours to map with
/// [`Block::from_fd`](crate::Block::from_fd) or
/// [`ReadOnlyBlock::from_fd`](crate::share::ReadOnlyBlock::from_fd).
///
/// A message must carry exactly one descriptor. Anything else that arrives with it (more
/// descriptors, a pidfd from `SO_PASSPIDFD`) is closed before this returns, on success and
/// on error alike. An interrupted call is retried.
///
/// # Errors
/// `UnexpectedEof` when the peer closed the stream first; `InvalidData` when the message
/// carried no descriptor or more than one (the stream was not in step, or the sender is
/// misbehaving); `WouldBlock` on a non-blocking stream with nothing to read; otherwise what
/// `recvmsg` answers.
pub fn recv_fd(stream: &UnixStream) -> io::Result<OwnedFd> {
    sys::recv_fd(stream)
}
