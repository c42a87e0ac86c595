//! [`Grid`]: fixed cells in one [`Block`](crate::Block), lock-free take and give. (Being written.)
