//! Raw foreign declarations, written by hand: the only place in the crate that names a C symbol.
//!
//! Every constant and struct layout declared here is checked against the `libc` crate at compile
//! time, for the target being built, when the unit tests are built (`ffi/tests.rs`; libc is a
//! dev-dependency only). Nothing here is wrapped or made
//! safe; the `sys` backends do that, one call at a time, with the reasoning next to each call.
#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    reason = "names follow the C headers they mirror"
)]

backend! {
    native: {
        pub mod posix;
        #[cfg(target_os = "linux")]
        pub mod linux;
        #[cfg(all(feature = "cuda", target_os = "linux"))]
        pub mod cuda;
        #[cfg(all(feature = "ucx", target_os = "linux"))]
        pub mod ucx;
        #[cfg(target_vendor = "apple")]
        pub mod apple;
        #[cfg(test)]
        mod tests;
    }
}
