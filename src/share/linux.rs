//! Mapping a memfd that another process sent, read-write or read-only.

use crate::block::{Block, Handle, OpenOptions};
use crate::error::Error;
use crate::sys::{Access, Region};
use std::io;
use std::os::fd::OwnedFd;

#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
impl Block {
    /// Maps a memfd that another process created and passed over (`SCM_RIGHTS` with
    /// [`recv_fd`](crate::share::recv_fd), inheritance, `pidfd_getfd`), with
    /// [`OpenOptions::new`]'s defaults. Both processes then see the same bytes.
    ///
    /// Nothing about the descriptor is trusted: it must be a memfd that nobody can truncate
    /// under the mapping, which this call makes sure of, sealing it itself where it may (see
    /// [sealing before sizing](crate::share#sealing-before-sizing-linux)).
    ///
    /// [`len`](Block::len) is the file's size, which is the sender's `len()` when the sender
    /// is a `Block`. A memfd from another source may have a size that is not a whole number of
    /// pages; `len` is then that size exactly (the rest of the last page is mapped but not
    /// part of the block). The sender chooses the size: check `len` before touching all of it
    /// if the sender is not trusted, and do not open such a block warm.
    ///
    /// A consumer that only reads is better served by a [`ReadOnlyBlock`], which is safe to
    /// make.
    ///
    /// # Safety
    /// The caller keeps the promise for
    /// [memory mapped from another process](crate::share#memory-mapped-from-another-process):
    /// while the block lives, no other mapping of the memfd writes bytes that safe code in this
    /// process reaches through the block, nor touches bytes that such code writes, and the
    /// memory never has two tapes or grids in this process.
    ///
    /// # Errors
    /// [`Error::NotShareable`] for a regular file, a pipe, a socket, a memfd that can be
    /// truncated and not sealed (made without `MFD_ALLOW_SEALING`), an empty memfd, a memfd
    /// sealed against writing (open it with
    /// [`open_fd_read_only`](OpenOptions::open_fd_read_only) instead) and a descriptor opened
    /// read-only; each message says what the sender should do. [`Error::PinRefused`] and
    /// [`Error::Os`] as for [`Block::open`].
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use unimem::{Block, share};
    ///
    /// let (here, there) = UnixStream::pair()?; // two ends, normally in two processes
    /// let block = Block::open(4096)?;
    /// // SAFETY: nothing else uses the block yet.
    /// unsafe { block.as_mut_slice()[..5].copy_from_slice(b"hello") };
    /// // SAFETY: the receiver below keeps the protocol: it reads only after the write above.
    /// unsafe { share::send_block(&here, &block)? };
    ///
    /// // SAFETY: both blocks are used only through their unsafe views, one side at a time.
    /// let mapped = unsafe { Block::from_fd(share::recv_fd(&there)?)? };
    /// assert_eq!(mapped.len(), block.len());
    /// // SAFETY: nobody writes to the block while this view lives.
    /// assert_eq!(unsafe { &mapped.as_slice()[..5] }, b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub unsafe fn from_fd(fd: OwnedFd) -> Result<Block, Error> {
        // SAFETY: the caller's promise, passed on.
        unsafe { OpenOptions::new().open_fd(fd) }
    }

    /// A new descriptor for the memfd behind this block, close-on-exec, to hand to another
    /// process, a driver, or a library, or to keep after the block is gone.
    ///
    /// The descriptor can write the block's memory, so handing it out is `unsafe`: see
    /// [handing out a block's descriptor](crate::share#handing-out-a-blocks-descriptor-linux).
    /// To send it over a Unix socket, [`send_block`](crate::share::send_block) needs no new
    /// descriptor. A process started with `exec` does not inherit this one unless its
    /// `FD_CLOEXEC` flag is cleared in the child; sending it over a socket is usually simpler.
    ///
    /// # Safety
    /// The caller keeps the promise for
    /// [handing out a block's descriptor](crate::share#handing-out-a-blocks-descriptor-linux):
    /// nothing writes through the descriptor, or anything made from it, to bytes that safe code
    /// in this process references through the block (a tape's takes, a grid's cells), nor
    /// reads bytes such code is writing; and every process it reaches keeps the protocol agreed
    /// for the memory.
    ///
    /// # Errors
    /// What `fcntl(F_DUPFD_CLOEXEC)` answers, typically `EMFILE` when the process is out of
    /// descriptors.
    ///
    /// ```
    /// use std::os::unix::fs::FileExt;
    /// use unimem::Block;
    ///
    /// let block = Block::open(4096)?;
    /// // SAFETY: nothing in this process references the block's bytes, and the file below is
    /// // the only other user of the descriptor.
    /// let file = std::fs::File::from(unsafe { block.export_fd()? });
    /// file.write_all_at(b"hi", 100)?;
    /// // SAFETY: the write above is done; nothing writes while the view lives.
    /// assert_eq!(unsafe { &block.as_slice()[100..102] }, b"hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub unsafe fn export_fd(&self) -> io::Result<OwnedFd> {
        self.region().fd().try_clone_to_owned()
    }
}

#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
impl OpenOptions {
    /// Maps a memfd that another process sent, with these options. See [`Block::from_fd`]
    /// for what is checked.
    ///
    /// Pinning and warming work as for [`open`](OpenOptions::open). Each process pins its own
    /// mapping, and the pages count against each one's memory-lock limit.
    ///
    /// # Safety
    /// As for [`Block::from_fd`]: the promise for
    /// [memory mapped from another process](crate::share#memory-mapped-from-another-process).
    ///
    /// # Errors
    /// As for [`Block::from_fd`].
    pub unsafe fn open_fd(&self, fd: OwnedFd) -> Result<Block, Error> {
        Block::adopt(Region::from_fd(fd, Access::ReadWrite)?, self)
    }

    /// Maps a memfd that another process sent without write access, with these options. See
    /// [`ReadOnlyBlock`] and [`Block::from_fd`].
    ///
    /// This is the only way to map a memfd sealed against writing (`F_SEAL_WRITE`,
    /// `F_SEAL_FUTURE_WRITE`), or a descriptor opened read-only. It is safe, unlike
    /// [`open_fd`](OpenOptions::open_fd), because a read-only block hands out no references:
    /// every read of it is `unsafe` and carries its own contract.
    ///
    /// # Errors
    /// As for [`Block::from_fd`], except that write seals and read-only descriptors are
    /// accepted. A read-only descriptor cannot add `F_SEAL_SHRINK` itself, so the sender must
    /// have sealed it.
    pub fn open_fd_read_only(&self, fd: OwnedFd) -> Result<ReadOnlyBlock, Error> {
        let block = Block::adopt(Region::from_fd(fd, Access::ReadOnly)?, self)?;
        Ok(ReadOnlyBlock { block })
    }
}

/// A [`Block`] mapped from another process's memfd without write access, for a consumer that
/// must not write.
///
/// The pages are mapped `PROT_READ` only: a write through [`as_ptr`](ReadOnlyBlock::as_ptr)
/// does not reach the memory, the CPU faults and the kernel kills the process with SIGSEGV.
/// Nothing here hands out a pointer that may be written through, so safe code cannot get
/// there.
///
/// Read-only is a property of this mapping, not of the memory: the process that sent the
/// descriptor, and anyone it is passed on to, may still write (unless the sender sealed it
/// with `F_SEAL_WRITE`). Reading therefore still needs care: see
/// [`as_slice`](ReadOnlyBlock::as_slice). The descriptor itself keeps the access mode it was
/// sent with, so [`export_fd`](ReadOnlyBlock::export_fd) may give a writable one, and is
/// `unsafe` for that reason (a read-only descriptor would be no safer: see
/// [handing out a block's descriptor](crate::share#handing-out-a-blocks-descriptor-linux)).
///
/// ```
/// use std::os::unix::net::UnixStream;
/// use unimem::{Block, share::{self, ReadOnlyBlock}};
///
/// let (here, there) = UnixStream::pair()?;
/// let block = Block::open(4096)?;
/// // SAFETY: nothing else uses the block yet.
/// unsafe { block.as_ptr().write(42) };
/// // SAFETY: the receiver only reads, after the write above.
/// unsafe { share::send_block(&here, &block)? };
///
/// let view = ReadOnlyBlock::from_fd(share::recv_fd(&there)?)?;
/// // SAFETY: `block`'s owner writes nothing while we read.
/// assert_eq!(unsafe { view.as_ptr().read() }, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ReadOnlyBlock {
    block: Block,
}

impl ReadOnlyBlock {
    /// Maps a memfd read-only with [`OpenOptions::new`]'s defaults. See
    /// [`OpenOptions::open_fd_read_only`] and [`Block::from_fd`].
    ///
    /// # Errors
    /// As for [`OpenOptions::open_fd_read_only`].
    pub fn from_fd(fd: OwnedFd) -> Result<ReadOnlyBlock, Error> {
        OpenOptions::new().open_fd_read_only(fd)
    }

    /// The first byte, valid for reads of [`len`](ReadOnlyBlock::len) bytes while this
    /// lives. Writing through it kills the process (SIGSEGV).
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.block.as_ptr()
    }

    /// Length in bytes: the size of the memfd. See [`Block::from_fd`].
    #[inline]
    #[allow(clippy::len_without_is_empty, reason = "a block is never empty")]
    pub fn len(&self) -> usize {
        self.block.len()
    }

    /// Whether the pages are locked in RAM. See [`Block::is_pinned`].
    #[inline]
    pub fn is_pinned(&self) -> bool {
        self.block.is_pinned()
    }

    /// The memfd's descriptor number. See [`Handle`].
    #[inline]
    pub fn handle(&self) -> Handle {
        self.block.handle()
    }

    /// Makes every page resident now. See [`Block::warm`].
    ///
    /// # Errors
    /// As for [`Block::warm`].
    pub fn warm(&self) -> Result<(), Error> {
        self.block.warm()
    }

    /// A new close-on-exec descriptor for the memfd, with the access mode it was sent with
    /// (which may be read-write). See [`Block::export_fd`].
    ///
    /// # Safety
    /// As for [`Block::export_fd`]: the promise for
    /// [handing out a block's descriptor](crate::share#handing-out-a-blocks-descriptor-linux).
    /// The memory may have a writable block, a tape or a grid elsewhere in this process, and
    /// whoever gets the descriptor can write it.
    ///
    /// # Errors
    /// As for [`Block::export_fd`].
    pub unsafe fn export_fd(&self) -> io::Result<OwnedFd> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.block.export_fd() }
    }

    /// Views the whole block as bytes.
    ///
    /// # Safety
    /// While the returned slice lives, nothing may write to the memory: not the process that
    /// sent the descriptor, nor any other process or device that maps it. This process cannot
    /// write through this mapping, but the others can, and a `&[u8]` promises the compiler
    /// that its bytes do not change. Without such an agreement with the writers, read through
    /// [`as_ptr`](ReadOnlyBlock::as_ptr) with volatile or atomic reads instead.
    #[inline]
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the caller promises what `Block::as_slice` requires: no writer meanwhile.
        unsafe { self.block.as_slice() }
    }
}

/// Safe code cannot get a descriptor that writes a block's memory, not even from a block inside
/// a tape or a grid. The two ways it once could no longer compile (`cargo +nightly test --doc`
/// also checks that each fails with the error code given):
///
/// ```compile_fail,E0599
/// use unimem::{Block, Pinning, Tape};
///
/// let tape = Tape::on(Block::options().pinning(Pinning::BestEffort).open(4096)?);
/// let file = std::fs::File::from(tape.block().try_clone_fd()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// ```compile_fail,E0599
/// use std::os::fd::AsFd;
///
/// let grid = unimem::Grid::<64, 64>::with_options(
///     unimem::Block::options().pinning(unimem::Pinning::BestEffort),
/// )?;
/// let fd = grid.block().as_fd().try_clone_to_owned()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// nor does the export that replaced them, outside `unsafe`:
///
/// ```compile_fail,E0133
/// use unimem::{Block, Pinning, Tape};
///
/// let tape = Tape::on(Block::options().pinning(Pinning::BestEffort).open(4096)?);
/// let file = std::fs::File::from(tape.block().export_fd()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// while the same code compiles, and runs, with the `unsafe` step:
///
/// ```
/// use unimem::{Block, Pinning, Tape};
///
/// let tape = Tape::on(Block::options().pinning(Pinning::BestEffort).open(4096)?);
/// // SAFETY: nothing writes through the descriptor; it is closed right away.
/// let file = std::fs::File::from(unsafe { tape.block().export_fd()? });
/// # drop(file);
/// let grid = unimem::Grid::<64, 64>::with_options(
///     unimem::Block::options().pinning(unimem::Pinning::BestEffort),
/// )?;
/// // SAFETY: as above.
/// drop(unsafe { grid.block().export_fd()? });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(doctest)]
struct SafeCodeGetsNoWritableDescriptor;
