//! The synchronisation primitives the allocators are built on, in one place so that the same
//! code runs on real atomics and, under `--cfg loom`, on loom's model-checked ones.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Thread-local storage with a constant initialiser: std's, or under loom one slot per
/// modelled thread. With a type that has no `Drop`, std's needs no lazy initialisation,
/// registers no destructor and allocates nothing.
macro_rules! thread_local_const {
    ($vis:vis static $name:ident: $t:ty = $init:expr;) => {
        #[cfg(not(loom))]
        std::thread_local! { $vis static $name: $t = const { $init }; }
        #[cfg(loom)]
        loom::thread_local! { $vis static $name: $t = $init; }
    };
}
pub(crate) use thread_local_const;

/// Aligns its contents to 128 bytes so that two of them never share a cache line.
///
/// 128 rather than 64: Intel's adjacent-line prefetcher pulls lines in pairs, and Apple's
/// M-series cores have 128-byte lines. A hot atomic that shares a line with a neighbour's
/// hot atomic turns every update into a cross-core transfer.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> core::ops::Deref for CachePadded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}
