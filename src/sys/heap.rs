//! The portable backend: a zeroed, page-aligned heap region. Not pinned, not shareable.
//!
//! Used on platforms without a native backend, and under Miri and loom so that everything
//! built on a block can be checked there.

use super::{Backend, Region, System};
use crate::error::Error;
use core::ptr::NonNull;
use std::alloc::{self, Layout};
use std::io;

/// The base address: the portable backend has no native object to hand out.
pub type Handle = *mut u8;

/// The alignment and rounding unit of the portable backend.
const PAGE: usize = 4096;

/// The heap backend.
pub(super) enum Imp {}

impl Backend for Imp {
    type Handle = Handle;
    /// The layout the region was allocated with, to free it with.
    type Memory = Layout;
    const CAN_PIN: bool = false;
    /// Nothing is ever locked here.
    const LOCK_POPULATES: bool = false;

    fn create(len: usize) -> Result<Region, Error> {
        let layout = Layout::from_size_align(len, PAGE).map_err(|_| Error::TooLarge {
            requested: len,
            max: isize::MAX as usize - PAGE + 1,
        })?;
        // SAFETY: `len` is non-zero (Block rejects zero before any backend runs).
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| Error::Os {
            call: "alloc_zeroed",
            source: io::ErrorKind::OutOfMemory.into(),
        })?;
        Ok(Region {
            ptr,
            len,
            memory: layout,
        })
    }

    fn handle(region: &Region) -> Handle {
        region.ptr.as_ptr()
    }

    unsafe fn release(region: &mut Region) {
        // SAFETY: allocated in `create` with exactly this layout, and released once (the
        // caller's promise).
        unsafe { alloc::dealloc(region.ptr.as_ptr(), region.memory) };
    }

    /// Never called: `Block` checks `CAN_PIN` first.
    fn lock(_: NonNull<u8>, _: usize) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Never called: nothing is ever locked here.
    fn unlock(_: NonNull<u8>, _: usize) {}

    fn populate(_: &Region, _: bool) -> Result<(), Error> {
        Err(Error::Unsupported {
            what: "the portable backend cannot make pages resident without writing them, \
                   which could race with users of the block; it promises nothing about \
                   residency",
        })
    }
}

/// The portable backend's facts are fixed: it never locks, and knows no system limit.
impl System for Imp {
    fn page_size() -> usize {
        PAGE
    }

    /// There is no memory-lock limit to report.
    fn memlock_limit() -> Option<u64> {
        None
    }

    /// Nothing is ever locked here.
    fn locked_bytes() -> Option<u64> {
        None
    }

    /// The portable backend does not know the platform's address-space limit.
    fn address_space_limit() -> Option<u64> {
        None
    }
}
