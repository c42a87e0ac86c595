//! Open a block (pinned if the memory-lock limit allows), fill it, and show what hardware
//! would be handed.
//!
//! `cargo run --release --example block [MiB]`

use std::time::Instant;
use unimem::Block;

fn main() -> Result<(), unimem::Error> {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("the argument is a size in MiB"))
        .unwrap_or(16);
    let len = mib << 20;

    let start = Instant::now();
    let lazy = Block::open(len)?;
    let lazy_time = start.elapsed();

    let start = Instant::now();
    let warm = Block::options().warm(true).open(len)?;
    let warm_time = start.elapsed();

    println!("lazy block: {lazy:?}, opened in {lazy_time:?}");
    println!("warm block: {warm:?}, opened in {warm_time:?}");
    if !warm.is_pinned() {
        println!(
            "(not pinned: the memory-lock limit (`ulimit -l`) has no room for {mib} MiB; \
             raise it to pin)"
        );
    }

    // Fill the warm block with u64s and check them: the address never moves, so a device
    // given `handle()` and an offset would see exactly these bytes.
    let words = warm.len() / 8;
    let base = warm.as_ptr().cast::<u64>();
    let start = Instant::now();
    for i in 0..words {
        // SAFETY: i < words, and this loop is the block's only user.
        unsafe { base.add(i).write(i as u64 * 0x9e37_79b9) };
    }
    let fill_time = start.elapsed();
    for i in (0..words).step_by(4097) {
        // SAFETY: as above.
        let got = unsafe { base.add(i).read() };
        assert_eq!(got, i as u64 * 0x9e37_79b9, "word {i}");
    }
    println!(
        "wrote {mib} MiB in {fill_time:?} ({:.1} GB/s); offset of word 1000: {:?}",
        warm.len() as f64 / fill_time.as_secs_f64() / 1e9,
        warm.offset_of(base.wrapping_add(1000).cast()),
    );
    println!("hand to hardware: handle() = {:?}", warm.handle());
    Ok(())
}
