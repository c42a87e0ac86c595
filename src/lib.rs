//! Memory that the CPU, GPU and accelerators share without copies, and the allocators an
//! inference engine needs on top of it.
//!
//! TODO: crate documentation (written once Tape and Grid are in).

mod block;
mod error;
mod ffi;
mod grid;
pub mod share;
mod sync;
mod sys;
mod tape;

pub use block::{Block, Handle, OpenOptions, Pinning};
pub use error::Error;
// pub use grid::{Cell, Grid, Stash};
pub use tape::{Lane, Mark, Tape};
