//! Block, end to end, on the real backend of this machine (the heap backend under Miri).

#[cfg(all(target_os = "linux", not(miri)))]
mod support;

use unimem::{Block, Error, Pinning};

/// Whether this process may lock any amount of memory: it holds CAP_IPC_LOCK, or its
/// RLIMIT_MEMLOCK is unlimited.
#[cfg(all(target_os = "linux", not(miri)))]
fn can_pin_unlimited() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap();
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid, writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    assert_eq!(rc, 0);
    effective & (1 << CAP_IPC_LOCK) != 0 || limit.rlim_cur == libc::RLIM_INFINITY
}

/// Writes a position-dependent pattern over every byte, then checks every byte.
fn pattern_round_trip(block: &Block) {
    let len = block.len();
    let base = block.as_ptr();
    for i in 0..len {
        // SAFETY: i < len, and this test is the block's only user.
        unsafe { base.add(i).write((i as u8) ^ (i >> 8) as u8 ^ 0x5a) };
    }
    // SAFETY: nothing writes to the block while this view lives.
    let bytes = unsafe { block.as_slice() };
    for (i, &b) in bytes.iter().enumerate() {
        assert_eq!(b, (i as u8) ^ (i >> 8) as u8 ^ 0x5a, "byte {i} of {len}");
    }
}

#[test]
fn one_byte_rounds_up_to_a_page_of_zeroes() {
    let block = Block::open(1).unwrap();
    assert!(block.len() >= 1);
    assert!(block.len().is_power_of_two(), "one page: {}", block.len());
    assert_eq!(block.as_ptr() as usize % block.len(), 0, "page-aligned");
    // SAFETY: nothing else uses the block.
    assert!(unsafe { block.as_slice() }.iter().all(|&b| b == 0));
    pattern_round_trip(&block);
}

#[test]
fn one_page_round_trips() {
    let page = Block::open(1).unwrap().len();
    let block = Block::open(page).unwrap();
    assert_eq!(block.len(), page);
    pattern_round_trip(&block);
}

#[test]
#[cfg_attr(miri, ignore = "64 MiB byte by byte is too slow under Miri")]
fn sixty_four_mib_round_trips() {
    let block = Block::options()
        .pinning(Pinning::BestEffort)
        .open(64 << 20)
        .unwrap();
    assert_eq!(block.len(), 64 << 20);
    #[cfg(all(target_os = "linux", not(miri)))]
    if can_pin_unlimited() {
        assert!(block.is_pinned());
    }
    pattern_round_trip(&block);
}

#[test]
fn zero_and_absurd_lengths_are_errors() {
    assert!(matches!(Block::open(0), Err(Error::ZeroLength)));
    for len in [usize::MAX, usize::MAX / 2 + 1] {
        match Block::open(len) {
            Err(Error::TooLarge { requested, .. }) => assert_eq!(requested, len),
            other => panic!("open({len}) gave {other:?}, expected TooLarge"),
        }
    }
    let text = Block::open(usize::MAX).unwrap_err().to_string();
    assert!(text.contains("ask for less"), "{text}");
}

#[test]
fn options_choose_pinning() {
    let off = Block::options().pinning(Pinning::Off).open(4096).unwrap();
    assert!(!off.is_pinned());
    let best = Block::options()
        .pinning(Pinning::BestEffort)
        .open(4096)
        .unwrap();
    if cfg!(any(
        miri,
        not(any(target_os = "linux", target_vendor = "apple"))
    )) {
        assert!(!best.is_pinned());
        assert!(matches!(
            Block::options().pinning(Pinning::Required).open(4096),
            Err(Error::Unsupported { .. })
        ));
    } else {
        // One page is within every default RLIMIT_MEMLOCK (Linux: 8 MiB, or 64 KiB on old
        // systems).
        assert!(best.is_pinned());
        assert!(Block::open(4096).unwrap().is_pinned());
    }
}

#[test]
fn block_is_send_and_sync_and_debug() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Block>();
    let block = Block::open(4096).unwrap();
    let text = format!("{block:?}");
    assert!(text.contains("len: 4096") || text.contains("len"), "{text}");
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: the only access to the block while this thread runs.
            unsafe { block.as_ptr().write(7) };
        });
    });
    // SAFETY: the writing thread has been joined.
    assert_eq!(unsafe { block.as_ptr().read() }, 7);
}

#[cfg(all(target_os = "linux", not(miri)))]
mod linux {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd};

    fn vm_status(field: &str) -> usize {
        crate::support::status_bytes(field)
    }

    /// How many of the block's pages are resident, according to the kernel.
    fn resident_pages(block: &Block) -> usize {
        let page = Block::open(1).unwrap().len();
        let mut vec = vec![0u8; block.len() / page];
        // SAFETY: the range is the block's own mapping; vec has one byte per page.
        let rc = unsafe { libc::mincore(block.as_ptr().cast(), block.len(), vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|&&v| v & 1 == 1).count()
    }

    #[test]
    fn a_lazy_gibibyte_costs_no_memory_until_touched() {
        let before = vm_status("VmRSS:");
        let block = Block::options()
            .pinning(Pinning::BestEffort)
            .open(1 << 30)
            .unwrap();
        assert_eq!(block.len(), 1 << 30);
        assert_eq!(resident_pages(&block), 0, "a lazy open touched pages");
        let page = 4096;
        for offset in [0, block.len() / 2, block.len() - page] {
            // SAFETY: offset + 8 <= len; this test is the only user.
            unsafe {
                block
                    .as_ptr()
                    .add(offset)
                    .cast::<u64>()
                    .write(offset as u64)
            };
        }
        for offset in [0, block.len() / 2, block.len() - page] {
            // SAFETY: as above.
            let v = unsafe { block.as_ptr().add(offset).cast::<u64>().read() };
            assert_eq!(v, offset as u64);
        }
        assert_eq!(resident_pages(&block), 3);
        // Other tests run beside this one: allow for them, not for a touched gibibyte.
        let grown = vm_status("VmRSS:").saturating_sub(before);
        assert!(grown < 256 << 20, "RSS grew by {grown} bytes");
    }

    #[test]
    fn warm_makes_every_page_resident() {
        let lazy = Block::open(1 << 20).unwrap();
        assert_eq!(resident_pages(&lazy), 0);
        lazy.warm().unwrap();
        assert_eq!(resident_pages(&lazy), lazy.len() / 4096);

        for pinning in [Pinning::Required, Pinning::Off] {
            let warm = Block::options()
                .warm(true)
                .pinning(pinning)
                .open(1 << 20)
                .unwrap();
            assert_eq!(resident_pages(&warm), warm.len() / 4096, "{pinning:?}");
            // Warm pages are still zero: populating writes nothing.
            // SAFETY: this test is the only user.
            assert!(unsafe { warm.as_slice() }.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn the_handle_is_a_sealed_memfd() {
        let block = Block::open(8192).unwrap();
        let fd = block.handle();
        assert_eq!(fd, block.as_raw_fd());
        assert_eq!(fd, block.as_fd().as_raw_fd());
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        assert!(
            target.to_string_lossy().starts_with("/memfd:unimem"),
            "{target:?}"
        );

        // SAFETY: F_GET_SEALS takes no argument and returns the seals.
        let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
        for seal in [libc::F_SEAL_SHRINK, libc::F_SEAL_GROW, libc::F_SEAL_SEAL] {
            assert_ne!(seals & seal, 0, "seal {seal:#x} missing from {seals:#x}");
        }
        assert_eq!(seals & libc::F_SEAL_WRITE, 0, "writes must stay shareable");

        for size in [0, 4096, 1 << 20] {
            // SAFETY: ftruncate on a descriptor we own; it must fail.
            let rc = unsafe { libc::ftruncate(fd, size) };
            assert_eq!(rc, -1, "ftruncate to {size} succeeded on a sealed block");
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EPERM)
            );
        }
        // SAFETY: F_ADD_SEALS with an int; the seals are sealed, so it must fail.
        let rc = unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_WRITE) };
        assert_eq!(rc, -1, "the seals themselves must be sealed");
        // The descriptor does not leak into programs we exec.
        // SAFETY: F_GETFD takes no argument.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn a_second_mapping_of_the_fd_sees_the_same_bytes() {
        let block = Block::open(8192).unwrap();
        // SAFETY: the only user of the block in this test.
        unsafe { block.as_mut_slice()[..5].copy_from_slice(b"hello") };
        // SAFETY: a fresh shared mapping of a file of block.len() bytes.
        let other = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                block.len(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                block.handle(),
                0,
            )
        };
        assert_ne!(other, libc::MAP_FAILED);
        let other = other.cast::<u8>();
        // SAFETY: `other` maps block.len() bytes; nothing else writes meanwhile.
        let seen = unsafe { std::slice::from_raw_parts(other, 5) };
        assert_eq!(seen, b"hello");
        // SAFETY: writing through the second mapping, reading through the first.
        unsafe { other.add(4096).write(42) };
        // SAFETY: as above.
        assert_eq!(unsafe { block.as_ptr().add(4096).read() }, 42);
        // SAFETY: we mapped exactly this.
        unsafe { libc::munmap(other.cast(), block.len()) };
    }

    /// Drops CAP_IPC_LOCK from this process's effective and permitted sets.
    fn drop_cap_ipc_lock() {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        const CAP_IPC_LOCK: u32 = 14;
        let mut header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: capget with a v3 header and two data words, as the ABI requires.
        let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
        assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
        data[0].effective &= !(1 << CAP_IPC_LOCK);
        data[0].permitted &= !(1 << CAP_IPC_LOCK);
        // SAFETY: capset with the same layout; dropping a capability is always allowed.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
        assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
    }

    const CHILD_ENV: &str = "UNIMEM_PIN_REFUSED_CHILD";

    /// Runs in a child process (see the test below): no CAP_IPC_LOCK, RLIMIT_MEMLOCK at 1 MiB.
    #[test]
    #[ignore = "runs only as the child of pinning_refused_is_a_clear_error_or_an_unpinned_block"]
    fn pinning_refused_child() {
        assert!(
            std::env::var_os(CHILD_ENV).is_some(),
            "run by its parent test"
        );
        let limit = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: 1 << 20,
        };
        // SAFETY: a valid rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) }, 0);
        drop_cap_ipc_lock();

        for warm in [false, true] {
            let err = Block::options().warm(warm).open(64 << 20).unwrap_err();
            match &err {
                Error::PinRefused { bytes, limit, .. } => {
                    assert_eq!(*bytes, 64 << 20);
                    assert_eq!(*limit, Some(1 << 20));
                }
                other => panic!("warm={warm}: expected PinRefused, got {other:?}"),
            }
            let text = err.to_string();
            for needle in [
                "64 MiB",
                "RLIMIT_MEMLOCK is 1 MiB",
                "ulimit -l",
                "BestEffort",
            ] {
                assert!(text.contains(needle), "{needle:?} missing from {text:?}");
            }

            let best = Block::options()
                .warm(warm)
                .pinning(Pinning::BestEffort)
                .open(64 << 20)
                .unwrap();
            assert!(!best.is_pinned());
            pattern_round_trip(&best);
        }
        // Within the limit, pinning still works without the capability.
        assert!(Block::open(256 << 10).unwrap().is_pinned());
        println!("child: all pinning checks passed");
    }

    #[test]
    fn pinning_refused_is_a_clear_error_or_an_unpinned_block() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "linux::pinning_refused_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("child: all pinning checks passed"),
            "the child did not run its checks:\n{stdout}"
        );
    }
}

#[cfg(all(target_vendor = "apple", not(miri)))]
mod apple {
    use unimem::{Block, Pinning};

    /// `struct vm_region_basic_info_64` (mach/vm_region.h, packed to 4), for its wire count.
    #[repr(C, packed(4))]
    #[derive(Default)]
    struct RegionInfo {
        protection: i32,
        max_protection: i32,
        inheritance: u32,
        shared: u32,
        reserved: u32,
        offset: u64,
        behavior: i32,
        user_wired_count: u16,
    }

    unsafe extern "C" {
        safe fn mach_task_self() -> u32;
        fn mach_vm_region(
            task: u32,
            address: *mut u64,
            size: *mut u64,
            flavor: i32,
            info: *mut RegionInfo,
            count: *mut u32,
            object_name: *mut u32,
        ) -> i32;
    }

    /// How many times this task has wired (`mlock`ed) the mapping that holds `block`.
    fn user_wirings(block: &Block) -> u16 {
        const VM_REGION_BASIC_INFO_64: i32 = 9;
        let mut address = block.as_ptr() as u64;
        let (mut size, mut object) = (0, 0);
        let mut info = RegionInfo::default();
        let mut count = (size_of::<RegionInfo>() / 4) as u32;
        // SAFETY: every out-pointer is a live local of the type the call writes.
        let kr = unsafe {
            mach_vm_region(
                mach_task_self(),
                &mut address,
                &mut size,
                VM_REGION_BASIC_INFO_64,
                &mut info,
                &mut count,
                &mut object,
            )
        };
        assert_eq!(kr, 0, "mach_vm_region");
        assert!(
            address <= block.as_ptr() as u64,
            "the region holds the block"
        );
        info.user_wired_count
    }

    /// Warming changes no one's wiring: a pinned block stays wired once (so its drop unwires
    /// it), and warming an unpinned block of the same surface, which in one process is the
    /// same mapping, neither wires nor unwires it.
    #[test]
    fn warming_leaves_wiring_alone() {
        let pinned = Block::options()
            .pinning(Pinning::Required)
            .open(1 << 20)
            .unwrap();
        assert_eq!(user_wirings(&pinned), 1);
        pinned.warm().unwrap();
        pinned.warm().unwrap();
        assert_eq!(
            user_wirings(&pinned),
            1,
            "after warming the pinned block twice"
        );
        let options = Block::options().pinning(Pinning::Off).clone();
        // SAFETY: the handle is live while `pinned` is; the blocks are not read or written.
        let unpinned = unsafe { options.open_surface(pinned.handle()) }.unwrap();
        assert_eq!(
            unpinned.as_ptr(),
            pinned.as_ptr(),
            "one mapping per surface and process"
        );
        unpinned.warm().unwrap();
        assert_eq!(
            user_wirings(&pinned),
            1,
            "after warming an unpinned view of it"
        );
        drop(pinned);
        assert_eq!(user_wirings(&unpinned), 0, "after the pinned block dropped");
    }

    /// Each pinned block of one surface holds its own wiring: XNU counts them per mapping.
    #[test]
    fn wirings_of_one_surface_are_counted() {
        let first = Block::options()
            .pinning(Pinning::Required)
            .open(1 << 20)
            .unwrap();
        // SAFETY: the handle is live while `first` is; the blocks are not read or written.
        let second = unsafe { Block::from_surface(first.handle()) }.unwrap();
        assert!(second.is_pinned());
        assert_eq!(user_wirings(&first), 2);
        drop(first);
        assert_eq!(user_wirings(&second), 1, "the second block is still pinned");
    }
}
