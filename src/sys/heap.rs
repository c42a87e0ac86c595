//! The portable backend: a zeroed, page-aligned heap region. Not pinned, not shareable.
//!
//! Used on platforms without a native backend, and under Miri and loom so that everything
//! built on a block can be checked there.

use crate::error::Error;
use core::ptr::NonNull;
use std::alloc::{self, Layout};
use std::io;

/// The base address: the portable backend has no native object to hand out.
pub type Handle = *mut u8;

pub(crate) const CAN_PIN: bool = false;

/// The alignment and rounding unit of the portable backend.
pub(crate) fn page_size() -> usize {
    4096
}

/// There is no memory-lock limit to report.
pub(crate) fn memlock_limit() -> Option<u64> {
    None
}

/// Nothing is ever locked here.
pub(crate) fn locked_bytes() -> Option<u64> {
    None
}

/// The portable backend does not know the platform's address-space limit.
pub(crate) fn address_space_limit() -> Option<u64> {
    None
}

/// A heap allocation of whole pages.
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

impl Region {
    pub(crate) fn create(len: usize) -> Result<Region, Error> {
        let layout = Layout::from_size_align(len, page_size()).map_err(|_| Error::TooLarge {
            requested: len,
            max: isize::MAX as usize - page_size() + 1,
        })?;
        // SAFETY: `len` is non-zero (Block rejects zero before any backend runs).
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| Error::Os {
            call: "alloc_zeroed",
            source: io::ErrorKind::OutOfMemory.into(),
        })?;
        Ok(Region { ptr, len })
    }

    #[inline]
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn handle(&self) -> Handle {
        self.ptr.as_ptr()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `create` with exactly this layout, which was valid then.
        unsafe {
            alloc::dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.len, page_size()),
            )
        };
    }
}

/// Nothing is ever locked here.
pub(crate) const LOCK_POPULATES: bool = false;

/// Never called: `Block` checks `CAN_PIN` first.
pub(crate) fn lock(_: NonNull<u8>, _: usize) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Never called: nothing is ever locked here.
pub(crate) fn unlock(_: NonNull<u8>, _: usize) {}

pub(crate) fn populate(_: &Region, _: bool) -> Result<(), Error> {
    Err(Error::Unsupported {
        what: "the portable backend cannot make pages resident without writing them, which \
               could race with users of the block; it promises nothing about residency",
    })
}
