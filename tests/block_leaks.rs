//! Opening and dropping blocks returns every resource: descriptors and locked memory.
//!
//! Alone in its own test binary, so no other test opens blocks while it counts.
#![cfg(all(target_os = "linux", not(miri)))]

mod support;

use unimem::{Block, Pinning};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn locked_bytes() -> usize {
    support::status_bytes("VmLck:")
}

#[test]
fn ten_thousand_open_drop_cycles_leak_nothing() {
    // Warm up anything lazily opened by the runtime before counting.
    drop(Block::open(4096).unwrap());
    let (fds, locked) = (open_fds(), locked_bytes());
    for i in 0..10_000 {
        let block = Block::options()
            .warm(i % 2 == 0)
            .pinning(if i % 3 == 0 {
                Pinning::BestEffort
            } else {
                Pinning::Required
            })
            .open(64 << 10)
            .unwrap();
        // SAFETY: this loop is the block's only user.
        unsafe { block.as_ptr().add(i % block.len()).write(1) };
        if i == 5_000 {
            assert!(open_fds() > fds, "a live block holds a descriptor");
            assert!(
                locked_bytes() >= locked + block.len(),
                "a live block is locked"
            );
        }
    }
    assert_eq!(open_fds(), fds, "descriptors leaked");
    assert_eq!(locked_bytes(), locked, "locked memory leaked");
}
