//! Raw foreign declarations, written by hand: the only place in the crate that names a C symbol.
//!
//! Every constant and struct layout declared here is checked against the `libc` crate by the
//! unit tests in `ffi/tests.rs` (libc is a dev-dependency only). Nothing here is wrapped or made
//! safe; the `sys` backends do that, one call at a time, with the reasoning next to each call.
#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    reason = "names follow the C headers they mirror"
)]

#[cfg(all(
    any(target_os = "linux", target_vendor = "apple"),
    not(any(miri, loom))
))]
pub mod posix;

#[cfg(all(target_os = "linux", not(any(miri, loom))))]
pub mod linux;

#[cfg(all(target_vendor = "apple", not(any(miri, loom))))]
pub mod apple;

#[cfg(all(feature = "cuda", target_os = "linux", not(any(miri, loom))))]
pub mod cuda;

#[cfg(all(
    test,
    any(target_os = "linux", target_vendor = "apple"),
    not(any(miri, loom))
))]
mod tests;
