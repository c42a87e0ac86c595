//! [`Tape`]: the lock-free bump allocator over a [`Block`](crate::Block). (Being written.)
