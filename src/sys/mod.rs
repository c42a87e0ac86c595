//! The backends: one file per kind of memory, each giving a `Region` and the same few calls.
//!
//! Every backend provides
//! - `Region`: zeroed, shareable memory of a page-rounded length, released on drop, with
//!   `create(len)`, `ptr()`, `len()` and `handle()`;
//! - `Handle`: the native object that `Region::handle` returns;
//! - `CAN_PIN`, `LOCK_POPULATES`, `lock`/`unlock` over a range of pages, and `populate` over a region;
//! - `page_size()`, `memlock_limit()`, and for error messages `locked_bytes()` and
//!   `address_space_limit()`.
//!
//! `block.rs` holds the policy (what to pin, when to populate) once, over these calls.

#[cfg(all(
    any(target_os = "linux", target_vendor = "apple"),
    not(any(miri, loom))
))]
mod unix;
#[cfg(all(
    any(target_os = "linux", target_vendor = "apple"),
    not(any(miri, loom))
))]
pub(crate) use unix::{address_space_limit, locked_bytes, memlock_limit, page_size, unlock};

#[cfg(all(target_os = "linux", not(any(miri, loom))))]
mod linux;
#[cfg(all(target_os = "linux", not(any(miri, loom))))]
pub(crate) use linux::{Access, CAN_PIN, Handle, LOCK_POPULATES, Region, lock, populate};

#[cfg(all(target_vendor = "apple", not(any(miri, loom))))]
mod apple;
#[cfg(all(target_vendor = "apple", not(any(miri, loom))))]
pub(crate) use apple::{CAN_PIN, Handle, LOCK_POPULATES, Region, deallocate_port, lock, populate};

#[cfg(any(miri, loom, not(any(target_os = "linux", target_vendor = "apple"))))]
mod heap;
#[cfg(any(miri, loom, not(any(target_os = "linux", target_vendor = "apple"))))]
pub(crate) use heap::{
    CAN_PIN, Handle, LOCK_POPULATES, Region, address_space_limit, lock, locked_bytes,
    memlock_limit, page_size, populate, unlock,
};
