//! Large pools: huge pages, parallel warm-up and NUMA placement (Linux).
//!
//! Huge pages depend on two kernel knobs that only root may turn: the hugetlb pool
//! (`/proc/sys/vm/nr_hugepages`) and transparent huge pages for shared memory
//! (`/sys/kernel/mm/transparent_hugepage/shmem_enabled`). These tests never turn them (tests
//! run in parallel, and the knobs are global): they read what the machine offers and assert
//! what unimem must do with it. `.ci/run` turns the knobs on for the root pass, with
//! `UNIMEM_EXPECT_HUGE_PAGES=1`, and off for the unprivileged pass, with `=0`: a test that
//! finds the knobs other than expected fails instead of skipping. Without the variable, what
//! is not available is skipped with the reason printed.
#![cfg(all(target_os = "linux", not(miri)))]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use unimem::{Block, Error, Grid, HugePages, Numa, Pinning, Tape, share};

const HUGE: usize = 2 << 20;
const BASE: usize = 4096;

/// What `UNIMEM_EXPECT_HUGE_PAGES` says the machine offers: `Some(true)` both kinds,
/// `Some(false)` neither, `None` unknown (look, and skip what is missing).
fn expected() -> Option<bool> {
    match std::env::var("UNIMEM_EXPECT_HUGE_PAGES").as_deref() {
        Ok("1") => Some(true),
        Ok("0") => Some(false),
        _ => None,
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Free, unreserved 2 MiB hugetlb pages.
fn free_hugetlb_pages() -> u64 {
    let field = |name: &str| -> u64 {
        read(&format!("/sys/kernel/mm/hugepages/hugepages-2048kB/{name}"))
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    };
    field("free_hugepages").saturating_sub(field("resv_hugepages"))
}

fn default_huge_page_is_2_mib() -> bool {
    read("/proc/meminfo").is_some_and(|text| text.contains("Hugepagesize:       2048 kB"))
}

/// Whether `MADV_HUGEPAGE` gets shared memory transparent huge pages.
fn transparent_allowed() -> bool {
    let chosen = |text: String| {
        let start = text.find('[').map(|i| i + 1)?;
        let end = text[start..].find(']')? + start;
        Some(text[start..end].to_owned())
    };
    let global = read("/sys/kernel/mm/transparent_hugepage/shmem_enabled").and_then(chosen);
    let per_size =
        read("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled").and_then(chosen);
    let setting = match (global.as_deref(), per_size.as_deref()) {
        (Some("deny") | None, _) => return false,
        (Some("force"), _) => return true,
        (_, Some(size)) if size != "inherit" => size.to_owned(),
        (Some(global), _) => global.to_owned(),
    };
    matches!(
        setting.as_str(),
        "always" | "within_size" | "advise" | "force"
    )
}

/// Whether hugetlb pages are to be tested: the pool has room for `pages` more (with a margin
/// for the other tests of this binary, which hold a few each), or the reason not to.
fn hugetlb_available(pages: u64) -> Result<(), String> {
    let free = free_hugetlb_pages();
    let ok = default_huge_page_is_2_mib() && free >= pages + 16;
    match (ok, expected()) {
        (true, _) => Ok(()),
        (false, Some(true)) => panic!(
            "UNIMEM_EXPECT_HUGE_PAGES=1 but the hugetlb pool has {free} free pages: reserve \
             some (`sysctl vm.nr_hugepages=256`), as .ci/run does"
        ),
        (false, _) => Err(format!(
            "the hugetlb pool has {free} free 2 MiB pages, fewer than {} (as root: `sysctl \
             vm.nr_hugepages=256`)",
            pages + 16
        )),
    }
}

fn transparent_available() -> Result<(), String> {
    match (transparent_allowed(), expected()) {
        (true, _) => Ok(()),
        (false, Some(true)) => panic!(
            "UNIMEM_EXPECT_HUGE_PAGES=1 but shmem_enabled does not allow transparent huge \
             pages: `echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled`, as \
             .ci/run does"
        ),
        (false, _) => Err(
            "shmem_enabled does not allow transparent huge pages (as root: \
                           `echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled`)"
                .to_owned(),
        ),
    }
}

/// The smaps fields of the mapping at `addr`, in bytes (`KernelPageSize`, `Rss`,
/// `ShmemPmdMapped`, ...): read independently of unimem's own reading.
fn smaps(addr: *const u8) -> std::collections::HashMap<String, u64> {
    let text = read("/proc/self/smaps").unwrap();
    let header = format!("{:08x}-", addr as usize);
    let mut lines = text.lines().skip_while(|line| !line.starts_with(&header));
    assert!(lines.next().is_some(), "no mapping at {addr:p} in smaps");
    lines
        .take_while(|line| !line.starts_with("VmFlags"))
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            let kib: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some((key.to_owned(), kib * 1024))
        })
        .collect()
}

/// Writes a pattern through the block and reads it back through a second mapping of the
/// same memfd, sent over a socket as to another process; checks the seals on the way.
fn shares_and_seals(block: &Block, hugetlb: bool) {
    // SAFETY: nothing else uses the block yet.
    unsafe { block.range_mut(0..8) }.copy_from_slice(b"unimem!!");
    // SAFETY: the descriptor is the block's, valid while it lives; F_GET_SEALS takes nothing.
    let seals = unsafe { libc::fcntl(block.handle(), libc::F_GET_SEALS) };
    let want = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    assert_eq!(seals & want, want, "seals {seals:#x}");
    let (here, there) = UnixStream::pair().unwrap();
    // SAFETY: the receiver only reads, after the write above.
    unsafe { share::send_block(&here, block) }.unwrap();
    // SAFETY: both blocks are used through their unsafe views, one side at a time.
    let mapped = unsafe { Block::from_fd(share::recv_fd(&there).unwrap()) }.unwrap();
    assert_eq!(mapped.len(), block.len());
    if hugetlb {
        assert_eq!(
            mapped.page_size(),
            HUGE,
            "a hugetlb memfd maps as hugetlb pages"
        );
    }
    // SAFETY: nobody writes while the view lives.
    assert_eq!(unsafe { mapped.range(0..8) }, b"unimem!!");
}

/// A tape and a grid work on a block of these options.
fn tape_and_grid_work(options: &unimem::OpenOptions) {
    let tape = Tape::on(options.open(4 << 20).unwrap());
    let values: Vec<&mut u64> = (0..1000)
        .map(|i| tape.take_value(i as u64).unwrap())
        .collect();
    for (i, value) in values.iter().enumerate() {
        assert_eq!(**value, i as u64);
    }
    let grid = Grid::<4096, 512>::on(options.open(2 << 20).unwrap()).unwrap();
    let mut cells: Vec<_> = (0..512).map(|_| grid.take().unwrap()).collect();
    for (i, cell) in cells.iter_mut().enumerate() {
        cell.fill(i as u8);
    }
    assert!(grid.take().is_none());
    for (i, cell) in cells.iter().enumerate() {
        assert!(cell.iter().all(|&byte| byte == i as u8));
    }
}

#[test]
fn off_is_base_pages_with_lengths_rounded_to_base_pages() {
    let block = Block::options()
        .huge_pages(HugePages::Off)
        .open(5000)
        .unwrap();
    assert_eq!(block.len(), 8192);
    // Only `shmem_enabled=always` or `force` would give base-page blocks huge pages.
    assert_eq!(block.page_size(), BASE);
}

#[test]
fn best_effort_takes_hugetlb_pages_when_the_pool_has_room() {
    if let Err(why) = hugetlb_available(4) {
        return eprintln!("skipped: {why}");
    }
    let block = Block::options()
        .huge_pages(HugePages::BestEffort)
        .open(3 << 20)
        .unwrap();
    assert_eq!(block.len(), 4 << 20, "rounded to whole huge pages");
    assert_eq!(block.page_size(), HUGE);
    assert_eq!(block.as_ptr() as usize % HUGE, 0);
    assert_eq!(smaps(block.as_ptr())["KernelPageSize"], HUGE as u64);
    // Required gets them too.
    let required = Block::options()
        .huge_pages(HugePages::Required)
        .open(1)
        .unwrap();
    assert_eq!((required.len(), required.page_size()), (HUGE, HUGE));
}

#[test]
fn hugetlb_blocks_pin_warm_seal_share_and_carry_tapes_and_grids() {
    if let Err(why) = hugetlb_available(16) {
        return eprintln!("skipped: {why}");
    }
    let options = Block::options()
        .huge_pages(HugePages::Required)
        .pinning(Pinning::BestEffort)
        .warm(true)
        .clone();
    let block = options.open(4 << 20).unwrap();
    assert_eq!(block.page_size(), HUGE);
    let smaps = smaps(block.as_ptr());
    assert_eq!(smaps["KernelPageSize"], HUGE as u64);
    // Warm: every huge page is there (hugetlb pages show in smaps as Shared_Hugetlb).
    assert_eq!(
        smaps["Shared_Hugetlb"] + smaps["Private_Hugetlb"],
        4 << 20,
        "{smaps:?}"
    );
    block.warm().unwrap();
    shares_and_seals(&block, true);
    tape_and_grid_work(&options);
}

#[test]
fn a_hugetlb_memfd_made_elsewhere_maps_with_its_page_size() {
    if let Err(why) = hugetlb_available(4) {
        return eprintln!("skipped: {why}");
    }
    // SAFETY: a valid C string and flags.
    let raw = unsafe {
        libc::memfd_create(
            c"peer".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | libc::MFD_HUGETLB,
        )
    };
    assert!(
        raw >= 0,
        "memfd_create: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    assert_eq!(
        // SAFETY: sizing our own memfd.
        unsafe { libc::ftruncate(fd.as_raw_fd(), (2 * HUGE) as libc::off_t) },
        0
    );
    // SAFETY: nothing else maps this memfd.
    let block = unsafe { Block::from_fd(fd) }.unwrap();
    assert_eq!((block.len(), block.page_size()), (2 * HUGE, HUGE));
    block.warm().unwrap();
    // SAFETY: nothing else uses the block.
    unsafe { block.range_mut(HUGE..HUGE + 4) }.copy_from_slice(b"tlb!");
    // SAFETY: as above.
    assert_eq!(unsafe { block.range(HUGE..HUGE + 4) }, b"tlb!");
}

#[test]
fn best_effort_takes_transparent_huge_pages_when_the_pool_is_too_small() {
    if let Err(why) = transparent_available() {
        return eprintln!("skipped: {why}");
    }
    // More than the hugetlb pool can give (with a margin for other tests freeing theirs),
    // so that the block falls through to transparent huge pages.
    let pages = (free_hugetlb_pages() + 32).max(4);
    if pages > 512 {
        return eprintln!("skipped: the hugetlb pool has {pages} free pages: too many to get past");
    }
    let len = pages as usize * HUGE - 1000;
    let lazy = Block::options()
        .huge_pages(HugePages::Required)
        .open(len)
        .unwrap();
    assert_eq!(
        lazy.len(),
        pages as usize * HUGE,
        "rounded to whole huge pages"
    );
    assert_eq!(lazy.page_size(), BASE, "nothing is resident yet");
    drop(lazy);
    let block = Block::options()
        .huge_pages(HugePages::BestEffort)
        .warm(true)
        .open(len)
        .unwrap();
    let smaps = smaps(block.as_ptr());
    assert_eq!(
        smaps["KernelPageSize"], BASE as u64,
        "not hugetlb: {smaps:?}"
    );
    if smaps["ShmemPmdMapped"] == block.len() as u64 {
        assert_eq!(block.page_size(), HUGE);
    } else {
        // The kernel found too few free huge frames: say so, and the block says so too.
        assert_eq!(block.page_size(), BASE);
        assert_ne!(
            expected(),
            Some(true),
            "transparent huge pages advised, but the kernel gave only {} of {} bytes as \
             huge pages",
            smaps["ShmemPmdMapped"],
            block.len()
        );
    }
}

#[test]
fn transparent_huge_page_blocks_share_and_carry_tapes_and_grids() {
    if let Err(why) = transparent_available() {
        return eprintln!("skipped: {why}");
    }
    if free_hugetlb_pages() > 0 && expected().is_none() {
        // With a pool, small blocks get hugetlb pages; this is then the hugetlb test again.
        eprintln!("note: the hugetlb pool has room, so these blocks are hugetlb");
    }
    let options = Block::options()
        .huge_pages(HugePages::BestEffort)
        .warm(true)
        .clone();
    let block = options.open(4 << 20).unwrap();
    assert_eq!(block.len() % HUGE, 0);
    shares_and_seals(&block, false);
    tape_and_grid_work(&options);
}

#[test]
fn without_huge_pages_best_effort_is_base_pages_and_required_names_the_knobs() {
    let hugetlb = free_hugetlb_pages() > 0;
    let transparent = transparent_allowed();
    if hugetlb || transparent {
        assert_ne!(
            expected(),
            Some(false),
            "UNIMEM_EXPECT_HUGE_PAGES=0 but huge pages are available (pool: {hugetlb}, \
             transparent: {transparent})"
        );
        return eprintln!("skipped: this machine has huge pages; the fallback is not reachable");
    }
    let block = Block::options()
        .huge_pages(HugePages::BestEffort)
        .warm(true)
        .open(3 << 20)
        .unwrap();
    assert_eq!(block.len(), 3 << 20, "not rounded to huge pages");
    assert_eq!(block.page_size(), BASE, "says it has base pages");
    let err = Block::options()
        .huge_pages(HugePages::Required)
        .open(3 << 20)
        .unwrap_err();
    assert!(
        matches!(err, Error::HugePagesUnavailable { bytes, .. } if bytes == 3 << 20),
        "{err:?}"
    );
    let message = err.to_string();
    for knob in ["vm.nr_hugepages", "shmem_enabled", "HugePages::BestEffort"] {
        assert!(message.contains(knob), "{message}");
    }
}

/// The policy of the page at `addr`: (mode, node mask), from `get_mempolicy(MPOL_F_ADDR)`.
fn policy_at(addr: *const u8) -> (i32, libc::c_ulong) {
    let mut mode: libc::c_int = -1;
    let mut mask: [libc::c_ulong; 16] = [0; 16];
    const MPOL_F_ADDR: libc::c_ulong = 1 << 1;
    // SAFETY: `mode` and `mask` are writable, and `mask` holds the bits maxnode names.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &mut mode,
            mask.as_mut_ptr(),
            (mask.len() * 64) as libc::c_ulong,
            addr,
            MPOL_F_ADDR,
        )
    };
    assert_eq!(rc, 0, "get_mempolicy: {}", std::io::Error::last_os_error());
    (mode, mask[0])
}

#[test]
fn numa_binds_to_node_0_and_interleaves_over_it() {
    let any = Block::options().warm(true).open(1 << 20).unwrap();
    assert_eq!(policy_at(any.as_ptr()).0, libc::MPOL_DEFAULT);
    let bound = Block::options()
        .numa(Numa::Node(0))
        .warm(true)
        .open(1 << 20)
        .unwrap();
    let interleaved = Block::options()
        .numa(Numa::Interleave(vec![0]))
        .huge_pages(HugePages::BestEffort)
        .warm(true)
        .open(4 << 20)
        .unwrap();
    for (block, mode) in [
        (&bound, libc::MPOL_BIND),
        (&interleaved, libc::MPOL_INTERLEAVE),
    ] {
        for offset in [0, block.len() - 1] {
            let (got, mask) = policy_at(block.as_ptr().wrapping_add(offset));
            assert_eq!((got, mask), (mode, 1), "at {offset}");
        }
    }
}

#[test]
fn a_node_that_does_not_exist_is_a_clear_error() {
    let online = read("/sys/devices/system/node/online").unwrap_or_else(|| "0".into());
    let err = Block::options()
        .numa(Numa::Node(1000))
        .open(1 << 20)
        .unwrap_err();
    assert!(
        matches!(&err, Error::NoSuchNode { node: 1000, online: listed } if *listed == online.trim()),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("node 1000") && message.contains(online.trim()),
        "{message}"
    );
    let err = Block::options()
        .numa(Numa::Interleave(vec![0, 999]))
        .open(1 << 20)
        .unwrap_err();
    assert!(
        matches!(err, Error::NoSuchNode { node: 999, .. }),
        "{err:?}"
    );
}

#[test]
#[should_panic(expected = "Numa::Interleave needs at least one node")]
fn interleaving_over_no_node_panics() {
    let _ = Block::options().numa(Numa::Interleave(Vec::new()));
}

#[test]
#[should_panic(expected = "warm_threads(0)")]
fn zero_warm_threads_panics() {
    let _ = Block::options().warm_threads(0);
}

#[test]
fn warming_with_threads_makes_every_page_resident() {
    for (threads, len) in [
        (1, 8 << 20),
        (2, 8 << 20),
        (3, (8 << 20) + 4096),
        (16, 12288),
    ] {
        let block = Block::options()
            .warm_threads(threads)
            .warm(true)
            .pinning(Pinning::Off)
            .open(len)
            .unwrap();
        assert_eq!(
            smaps(block.as_ptr())["Rss"],
            block.len() as u64,
            "{threads} threads, {len} bytes"
        );
        // And later, through `warm`, on a block opened lazy.
        let lazy = Block::options().warm_threads(threads).open(len).unwrap();
        assert_eq!(smaps(lazy.as_ptr())["Rss"], 0);
        lazy.warm().unwrap();
        assert_eq!(smaps(lazy.as_ptr())["Rss"], lazy.len() as u64);
    }
}

#[test]
fn large_blocks_warm_with_several_threads_by_default() {
    // The default is observable only through timing; what must hold is that a block above
    // the threshold warms completely (each thread its own share, no gap, no overlap past
    // the end).
    let len = 2 * Block::WARM_BYTES_PER_THREAD + 3 * 4096;
    let block = Block::options()
        .warm(true)
        .pinning(Pinning::Off)
        .open(len)
        .unwrap();
    assert_eq!(smaps(block.as_ptr())["Rss"], block.len() as u64);
}
