//! Block, end to end, on the real backend of this machine (the heap backend under Miri).

#[cfg(all(target_os = "linux", not(miri)))]
mod support;

use unimem::{Block, Error, Pinning, Tape};

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
    assert_eq!(
        Pinning::default(),
        Pinning::BestEffort,
        "opening must work for every user by default"
    );
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
fn a_range_view_leaves_values_outside_it_valid() {
    // What `Block::range` is for: a tape keeps handing out values, one of them is held
    // (and used after), and the bytes of another allocation are viewed as raw bytes meanwhile.
    // Under Miri (Stacked and Tree Borrows) this checks that the views do not invalidate
    // `counter`, as a whole-block view would.
    let tape = Tape::on(Block::options().pinning(Pinning::Off).open(8192).unwrap());
    let counter: &mut u64 = tape.take_value(41).unwrap();
    let frame = tape.take(256, 64).unwrap();
    let after: &mut [u32] = tape.take_fill(16, 3u32).unwrap();
    let block = tape.block();
    let at = block.offset_of(frame.as_ptr()).unwrap();
    assert!(at >= 8, "the frame lies past the counter");

    // SAFETY: the frame's bytes are used through this view alone while it lives, and no
    // reference to them exists.
    let bytes = unsafe { block.range_mut(at..at + 256) };
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = i as u8;
    }
    *counter += 1;
    after[0] += 1;
    // SAFETY: nothing writes the frame while this view lives; `bytes` is not used again.
    let seen = unsafe { block.range(at..at + 256) };
    *counter += 1;
    after[15] += 1;
    assert!(seen.iter().enumerate().all(|(i, &b)| b == i as u8));
    assert_eq!(*counter, 43);
    assert_eq!((after[0], after[1], after[15]), (4, 3, 4));
    // Empty ranges are fine anywhere up to the end, and touch nothing.
    // SAFETY: an empty view reads no byte.
    assert!(unsafe { block.range(block.len()..block.len()) }.is_empty());
}

#[test]
fn views_over_bytes_a_tape_wrote_without_padding_are_clean() {
    // Issue 21 §1: a view's bytes must be initialised, and a tape value with padding leaves
    // some that are not, also after `clear`. Under Miri this checks that what the contract
    // allows (bytes written as floats, bytes, values without padding) reads clean beside a
    // padded value, before and after a clear that hands its bytes out again.
    let mut tape = Tape::on(Block::options().pinning(Pinning::Off).open(8192).unwrap());
    for round in 0..2u8 {
        let padded: &mut (u8, u64) = tape.take_value((round, 2)).unwrap();
        let floats: &mut [f32] = tape.take_copy(&[1.5f32; 8]).unwrap();
        let at = tape.offset_of(&*floats).unwrap();
        // SAFETY: the floats' bytes are initialised, nothing writes them while the view lives,
        // and `floats` is not used again (nor held by a running function).
        let seen = unsafe { tape.block().range(at..at + 32) };
        assert_eq!(seen[..4], 1.5f32.to_ne_bytes());
        assert_eq!(
            padded.0, round,
            "the padded value beside the view stays valid"
        );
        tape.clear();
        // The padded value's bytes again, now written as bytes: a view reads them clean.
        let bytes: &mut [u8] = tape.take_copy(&[7u8; 16]).unwrap();
        let at = tape.offset_of(&*bytes).unwrap();
        assert_eq!(at, 0, "the bytes the padded value had");
        // SAFETY: as above.
        assert_eq!(unsafe { tape.block().range(0..16) }, &[7; 16]);
        tape.clear();
    }
}

/// Hands bytes `at` of the tape's block to a device; here, reads the first float back. The
/// sound shape of a helper (issue 21 §2): it gets the range, and no reference to the bytes.
fn upload(tape: &Tape, at: std::ops::Range<usize>) -> f32 {
    // SAFETY: the caller wrote the bytes as floats, nothing writes them while the view lives,
    // and no reference to them is used again or held by a running function.
    let bytes = unsafe { tape.block().range(at) };
    f32::from_ne_bytes(bytes[..4].try_into().unwrap())
}

/// The other sound shape: the helper takes the reference and reads the bytes through it.
fn upload_through(x: &mut [f32]) -> f32 {
    // SAFETY: derived from `x`, so the bytes are `x`'s, initialised floats, for as long as
    // the slice lives.
    let bytes = unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), size_of_val(x)) };
    f32::from_ne_bytes(bytes[..4].try_into().unwrap())
}

#[test]
fn a_helper_views_a_range_it_is_given_not_a_reference() {
    // Under Miri (Stacked and Tree Borrows), the two shapes `Block::range` documents for a
    // helper are clean; the one it forbids is `a_view_under_a_protected_reference_is_ub`.
    let tape = Tape::on(Block::options().pinning(Pinning::Off).open(8192).unwrap());
    let kept: &mut u64 = tape.take_value(1).unwrap();
    let x: &mut [f32] = tape.take_fill(16, 1.0).unwrap();
    x[0] = 2.0;
    assert_eq!(upload_through(x), 2.0);
    x[0] = 3.0;
    let at = tape.offset_of(&*x).unwrap();
    let at = at..at + size_of_val(x); // the last use of `x`
    assert_eq!(upload(&tape, at), 3.0);
    *kept += 1;
    assert_eq!(*kept, 2);
}

/// The don't of `Block::range`'s contract, kept as a test that Miri must reject (it does not
/// run in CI, and not without Miri: it is undefined behaviour). Run it by hand to see why the
/// rule is there:
/// `cargo +nightly miri test -p unimem --test block -- --ignored under_a_protected`
/// reports that the view's read is not allowed while `x`'s protector is active (Stacked
/// Borrows; with `-Zmiri-tree-borrows`, a foreign read of a protected, written reference).
#[cfg(miri)]
#[test]
#[ignore = "undefined behaviour on purpose; run by hand under Miri, which must reject it"]
fn a_view_under_a_protected_reference_is_ub() {
    fn upload_wrong(x: &mut [f32], tape: &Tape) -> f32 {
        x[0] = 2.0;
        let at = tape.offset_of(&*x).unwrap();
        // Not sound: `x` is an argument of this running function, so it is protected, and
        // the view reads its bytes through another pointer, even though `x` is not used again.
        let bytes = unsafe { tape.block().range(at..at + 4) };
        f32::from_ne_bytes(bytes.try_into().unwrap())
    }
    let tape = Tape::on(Block::options().pinning(Pinning::Off).open(8192).unwrap());
    let x: &mut [f32] = tape.take_fill(16, 1.0).unwrap();
    let _ = upload_wrong(x, &tape);
}

/// The don't of the first rule: a view over a tape value's padding. Run by hand like
/// `a_view_under_a_protected_reference_is_ub`; Miri reports uninitialised memory.
#[cfg(miri)]
#[test]
#[ignore = "undefined behaviour on purpose; run by hand under Miri, which must reject it"]
fn a_view_over_padding_is_ub() {
    let tape = Tape::on(Block::options().pinning(Pinning::Off).open(8192).unwrap());
    let padded: &(u8, u64) = tape.take_value((1u8, 2u64)).unwrap();
    let at = tape.offset_of(padded).unwrap();
    // Not sound: the value's padding bytes are uninitialised.
    let bytes = unsafe { tape.block().range(at..at + 16) };
    let _sum: u32 = bytes.iter().map(|&b| u32::from(b)).sum();
}

#[test]
#[should_panic(expected = "is not a range of this block's")]
fn a_range_past_the_end_panics() {
    let block = Block::open(1).unwrap();
    let len = block.len();
    // SAFETY: nothing else uses the block; the call panics before making a view.
    let _ = unsafe { block.range(len - 8..len + 1) };
}

#[test]
#[should_panic(expected = "Block::range_mut: 9..8 is not a range")]
#[allow(clippy::reversed_empty_ranges, reason = "the mistake under test")]
fn a_decreasing_range_panics() {
    let block = Block::open(1).unwrap();
    // SAFETY: nothing else uses the block; the call panics before making a view.
    let _ = unsafe { block.range_mut(9..8) };
}

#[test]
fn block_is_send_and_sync_and_debug() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Block>();
    let block = Block::open(4096).unwrap();
    let text = format!("{block:?}");
    let len = format!("len: {}, pinned: {}", block.len(), block.is_pinned());
    assert!(text.starts_with("Block {") && text.contains(&len), "{text}");
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

    const CHILD_ENV: &str = "UNIMEM_BLOCK_TEST_CHILD";
    /// How long a child test may run: each takes well under a second.
    const CHILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

    /// Runs the ignored test `name` of this binary in a child process of its own, so that it
    /// can lower its limits and drop capabilities, and checks that it ran and passed.
    fn run_child(name: &str) {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                &format!("linux::{name}"),
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A child that hangs fails the test instead of hanging it.
        let deadline = std::time::Instant::now() + CHILD_TIMEOUT;
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "{name} did not finish in {CHILD_TIMEOUT:?}:\n{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name} failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!("child {name}: all checks passed")),
            "{name} did not run its checks:\n{stdout}"
        );
    }

    /// Refuses to run a child's checks outside `run_child`: they change process-wide limits.
    fn in_child() {
        assert!(
            std::env::var_os(CHILD_ENV).is_some(),
            "run by its parent test"
        );
    }

    /// The type `getrlimit` takes its resource as, which differs between C libraries.
    #[cfg(target_env = "gnu")]
    type Resource = libc::__rlimit_resource_t;
    #[cfg(not(target_env = "gnu"))]
    type Resource = libc::c_int;

    fn get_limit(resource: Resource) -> libc::rlimit {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid, writable rlimit.
        assert_eq!(unsafe { libc::getrlimit(resource, &mut limit) }, 0);
        limit
    }

    /// Lowers the soft limit of `resource` to `soft` (anyone may lower a limit).
    #[allow(clippy::useless_conversion, reason = "rlim_t is u64 on 64-bit targets")]
    fn set_soft_limit(resource: Resource, soft: u64) {
        let limit = libc::rlimit {
            // rlim_t is 32 bits wide on 32-bit glibc targets.
            rlim_cur: soft.try_into().expect("the limit fits rlim_t"),
            rlim_max: get_limit(resource).rlim_max,
        };
        // SAFETY: a valid rlimit.
        let rc = unsafe { libc::setrlimit(resource, &limit) };
        assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
    }

    /// Runs in a child process (see the test below): no CAP_IPC_LOCK, RLIMIT_MEMLOCK at 1 MiB.
    #[test]
    #[ignore = "runs only as the child of pinning_refused_is_a_clear_error_or_an_unpinned_block"]
    fn pinning_refused_child() {
        in_child();
        let limit = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: 1 << 20,
        };
        // SAFETY: a valid rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) }, 0);
        drop_cap_ipc_lock();

        for warm in [false, true] {
            let err = Block::options()
                .warm(warm)
                .pinning(Pinning::Required)
                .open(64 << 20)
                .unwrap_err();
            match &err {
                Error::PinRefused {
                    bytes,
                    limit,
                    locked,
                    ..
                } => {
                    assert_eq!(*bytes, 64 << 20);
                    assert_eq!(*limit, Some(1 << 20));
                    assert_eq!(*locked, Some(0), "nothing is locked yet");
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
        println!("child pinning_refused_child: all checks passed");
    }

    #[test]
    fn pinning_refused_is_a_clear_error_or_an_unpinned_block() {
        run_child("pinning_refused_child");
    }

    /// Runs in a child process: an ordinary user's limits (see the test below).
    #[test]
    #[ignore = "runs only as the child of the defaults_work_for_an_ordinary_user"]
    fn ordinary_user_child() {
        in_child();
        // The stock limit of current distributions. Lowering is allowed for anyone; a limit
        // already lower (old systems: 64 KiB) stays as it is.
        let stock = 8 << 20;
        #[allow(clippy::useless_conversion, reason = "rlim_t is u64 on 64-bit targets")]
        let limit = u64::from(get_limit(libc::RLIMIT_MEMLOCK).rlim_cur).min(stock);
        set_soft_limit(libc::RLIMIT_MEMLOCK, limit);
        drop_cap_ipc_lock();
        let small: usize = 64 << 10;
        assert!(
            limit >= small as u64,
            "RLIMIT_MEMLOCK is only {limit} bytes"
        );

        // The first calls of the docs work, unpinned because the limit does not allow more.
        let tape = Tape::start(256 << 20).unwrap();
        assert!(!tape.block().is_pinned());
        let value = tape.take_value(5u64).unwrap();
        *value += 1;
        assert_eq!(*value, 6);
        let grid = unimem::Grid::<4096, 4096>::new().unwrap();
        assert!(!grid.block().is_pinned());
        let cell = grid.take().unwrap();
        grid.give(cell);
        let block = Block::open(256 << 20).unwrap();
        assert!(!block.is_pinned());
        pattern_round_trip(&Block::open(1 << 20).unwrap());

        // What the limit allows is still pinned by default...
        let pinned = Block::open(small).unwrap();
        assert!(pinned.is_pinned());
        // ...and `Required` refuses the rest, saying what is locked already.
        let err = Block::options()
            .pinning(Pinning::Required)
            .open(256 << 20)
            .unwrap_err();
        match &err {
            Error::PinRefused {
                bytes,
                locked,
                limit: refused_at,
                ..
            } => {
                assert_eq!(*bytes, 256 << 20);
                assert_eq!(*locked, Some(small as u64));
                assert_eq!(*refused_at, Some(limit));
            }
            other => panic!("expected PinRefused, got {other:?}"),
        }
        let text = err.to_string();
        for needle in [
            "pinning 256 MiB",
            "64 KiB locked already",
            "RLIMIT_MEMLOCK is",
            "Tape::with_options",
            "Grid::with_options",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
        println!("child ordinary_user_child: all checks passed");
    }

    /// Issue 11's bar: as a user with the stock 8 MiB lock limit, `Tape::start(256 << 20)` and
    /// `Grid::<4096, 4096>::new()` succeed unpinned, and `Pinning::Required` explains itself.
    /// Runs whoever runs the tests: the child lowers the limit and drops CAP_IPC_LOCK.
    #[test]
    fn defaults_work_for_an_ordinary_user() {
        run_child("ordinary_user_child");
    }

    /// Runs in a child process: a descriptor limit just above what is open.
    #[test]
    #[ignore = "runs only as the child of running_out_of_descriptors_is_explained"]
    fn out_of_descriptors_child() {
        in_child();
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        set_soft_limit(libc::RLIMIT_NOFILE, open + 8);
        let mut blocks = Vec::new();
        let err = loop {
            match Block::open(4096) {
                Ok(block) => blocks.push(block),
                Err(err) => break err,
            }
            assert!(blocks.len() <= 16, "the descriptor limit did not stop it");
        };
        assert!(!blocks.is_empty(), "the limit left no room at all");
        match &err {
            Error::Os { call, source } => {
                assert_eq!(*call, "memfd_create");
                assert_eq!(source.raw_os_error(), Some(libc::EMFILE));
            }
            other => panic!("expected Os(memfd_create, EMFILE), got {other:?}"),
        }
        let text = err.to_string();
        for needle in [
            "out of file descriptors",
            "fewer, larger blocks",
            "ulimit -n",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(!text.contains(&source), "{text:?} repeats {source:?}");
        drop(blocks);
        Block::open(4096).unwrap();
        println!("child out_of_descriptors_child: all checks passed");
    }

    #[test]
    fn running_out_of_descriptors_is_explained() {
        run_child("out_of_descriptors_child");
    }

    /// Runs in a child process: an address-space limit 64 MiB above what is mapped.
    #[test]
    #[ignore = "runs only as the child of an_address_space_refusal_names_size_and_limit"]
    fn address_space_child() {
        in_child();
        let mapped = crate::support::status_bytes("VmSize:") as u64;
        let limit = ((mapped >> 20) + 64) << 20;
        set_soft_limit(libc::RLIMIT_AS, limit);
        let err = Block::open(1 << 30).unwrap_err();
        match &err {
            Error::OutOfMemory {
                bytes,
                address_space_limit,
                call,
                source,
            } => {
                assert_eq!(*bytes, 1 << 30);
                assert_eq!(*address_space_limit, Some(limit));
                assert_eq!(*call, "mmap");
                assert_eq!(source.raw_os_error(), Some(libc::ENOMEM));
            }
            other => panic!("expected OutOfMemory, got {other:?}"),
        }
        let text = err.to_string();
        let limit_text = format!("at most {} MiB", limit >> 20);
        for needle in ["1 GiB", &limit_text, "RLIMIT_AS", "ulimit -v"] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
        // What fits still opens.
        Block::open(1 << 20).unwrap();
        println!("child address_space_child: all checks passed");
    }

    #[test]
    fn an_address_space_refusal_names_size_and_limit() {
        run_child("address_space_child");
    }

    /// Runs in a child process, which it forks: the fork's child must not reach the memory of
    /// a block (`MADV_DONTFORK`), or it would hand out, and write, the bytes the parent's tape
    /// handed out too. Forking here rather than in the test runner keeps the fork away from
    /// the runner's other test threads.
    #[test]
    #[ignore = "runs only as the child of a_forked_child_cannot_touch_a_tapes_memory"]
    fn fork_child() {
        in_child();
        let tape = Tape::on(Block::options().pinning(Pinning::Off).open(4096).unwrap());
        let value: &mut u64 = tape.take_value(1).unwrap();
        let at: *mut u64 = &raw mut *value;
        // SAFETY: the fork's child only sets a limit, writes memory and exits: nothing that
        // another thread of the parent could have left half done.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: a valid rlimit; no core file for the fault expected next.
            unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
            // What this copy of the tape handed out: a write must fault, not reach the parent.
            // SAFETY: in this process nothing else uses the value; if the mapping were
            // inherited, this is the aliasing write the test catches.
            unsafe { at.write_volatile(2) };
            // SAFETY: _exit ends the fork's child at once, running nothing of the parent's.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child, writing its status into a valid int.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV,
            "the fork's child was not stopped by SIGSEGV when it wrote the block (wait status \
             {status:#x}): it inherited the mapping"
        );
        assert_eq!(*value, 1, "the fork's child wrote the parent's tape value");
        println!("child fork_child: all checks passed");
    }

    #[test]
    fn a_forked_child_cannot_touch_a_tapes_memory() {
        run_child("fork_child");
    }

    /// The size of the blocks the fork tests below leave to a child: large, so that the
    /// child's own mapping of that size would fit nowhere sooner than in the block's range,
    /// were it left free.
    const FORKED_BLOCK: usize = 64 << 20;

    /// Maps `len` bytes of anonymous read-write memory, asking for `hint` (not forcing it):
    /// the kernel places it there when the range is free. Returns where it was placed.
    fn map_anonymous_near(hint: *mut u8, len: usize) -> *mut u8 {
        // SAFETY: without MAP_FIXED the hint replaces nothing: the kernel maps new memory
        // where nothing is mapped.
        let got = unsafe {
            libc::mmap(
                hint.cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if got == libc::MAP_FAILED {
            // SAFETY: _exit ends the fork's child at once, running nothing of the parent's.
            unsafe { libc::_exit(4) };
        }
        got.cast()
    }

    /// Waits for the fork's child `pid` and returns its wait status.
    fn wait_for(pid: libc::pid_t) -> i32 {
        let mut status = 0;
        // SAFETY: waits for our own child, writing its status into a valid int.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    /// Runs in a child process, which it forks: the fork's child maps memory of the block's
    /// size, asking for the block's own address, before it writes the value its copy of the
    /// tape handed out. The block's range must stay reserved in the fork's child, so that the
    /// new memory lands elsewhere and the write faults instead of landing in it.
    #[test]
    #[ignore = "runs only as the child of a_forked_childs_new_memory_never_takes_a_blocks_place"]
    fn fork_map_child() {
        in_child();
        let tape = Tape::on(
            Block::options()
                .pinning(Pinning::Off)
                .open(FORKED_BLOCK)
                .unwrap(),
        );
        let value: &mut u64 = tape.take_value(1).unwrap();
        let at: *mut u64 = &raw mut *value;
        let (start, end) = (
            tape.block().as_ptr(),
            tape.block().as_ptr() as usize + FORKED_BLOCK,
        );
        // SAFETY: the fork's child only sets a limit, maps memory, writes it and exits:
        // nothing that another thread of the parent could have left half done.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: a valid rlimit; no core file for the fault expected next.
            unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
            let mine = map_anonymous_near(start, FORKED_BLOCK);
            if (mine as usize) < end && mine as usize + FORKED_BLOCK > start as usize {
                // SAFETY: _exit ends the fork's child at once, running nothing of the parent's.
                unsafe { libc::_exit(3) };
            }
            // SAFETY: in this process nothing else uses the value; if the range were free or
            // the child's, this is the write the test catches.
            unsafe { at.write_volatile(2) };
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        let status = wait_for(pid);
        assert!(
            !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3),
            "the fork's child's new memory was placed over the block it inherited"
        );
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV,
            "the fork's child was not stopped by SIGSEGV when it wrote the block after mapping \
             memory of its own (wait status {status:#x})"
        );
        assert_eq!(*value, 1, "the fork's child wrote the parent's tape value");
        println!("child fork_map_child: all checks passed");
    }

    #[test]
    fn a_forked_childs_new_memory_never_takes_a_blocks_place() {
        run_child("fork_map_child");
    }

    /// Runs in a child process, which it forks, and the fork's child forks again: the
    /// grandchild inherits the child's reservation of the block's range (an ordinary mapping)
    /// and must fault on the tape's value too, not stop at reserving the range again.
    #[test]
    #[ignore = "runs only as the child of a_grandchild_of_fork_cannot_touch_a_tapes_memory"]
    fn fork_twice_child() {
        in_child();
        let tape = Tape::on(Block::options().pinning(Pinning::Off).open(4096).unwrap());
        let value: &mut u64 = tape.take_value(1).unwrap();
        let at: *mut u64 = &raw mut *value;
        // SAFETY: the fork's child only forks, waits, writes memory and exits: nothing that
        // another thread of the parent could have left half done.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: as above; this process has one thread.
            let grandchild = unsafe { libc::fork() };
            if grandchild == 0 {
                let no_core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: a valid rlimit; no core file for the fault expected next.
                unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
                // SAFETY: if the range were reachable, this is the write the test catches.
                unsafe { at.write_volatile(2) };
                // SAFETY: _exit ends the process at once, running nothing of the parent's.
                unsafe { libc::_exit(0) };
            }
            let status = if grandchild > 0 {
                wait_for(grandchild)
            } else {
                0
            };
            let faulted = libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV;
            // SAFETY: as above. The exit status says what the grandchild ended with.
            unsafe { libc::_exit(if faulted { 0 } else { 6 }) };
        }
        let status = wait_for(pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the fork's own child was not stopped by SIGSEGV when it wrote the block (wait \
             status of the fork's child {status:#x}; exit 6: the grandchild ended otherwise)"
        );
        assert_eq!(*value, 1, "a grandchild wrote the parent's tape value");
        println!("child fork_twice_child: all checks passed");
    }

    #[test]
    fn a_grandchild_of_fork_cannot_touch_a_tapes_memory() {
        run_child("fork_twice_child");
    }

    /// Runs in a child process, which it forks: the fork's child maps memory of its own,
    /// asking for the block's address, fills it, drops the block it inherited, and checks
    /// that its memory is still there and unchanged.
    #[test]
    #[ignore = "runs only as the child of a_forked_child_dropping_a_block_unmaps_only_that_block"]
    fn fork_drop_child() {
        in_child();
        let block = Block::options()
            .pinning(Pinning::Off)
            .open(FORKED_BLOCK)
            .unwrap();
        let start = block.as_ptr();
        // SAFETY: the fork's child only maps and writes memory, drops the block (munmap and
        // close) and exits: nothing that another thread of the parent could have left half
        // done.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: a valid rlimit; no core file if the memory is gone.
            unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
            let mine = map_anonymous_near(start, FORKED_BLOCK);
            // SAFETY: `mine` is FORKED_BLOCK writable bytes of this process's own.
            let bytes = unsafe { core::slice::from_raw_parts_mut(mine, FORKED_BLOCK) };
            bytes.fill(0xa5);
            drop(block);
            // If dropping the block unmapped `mine`, this read faults.
            let intact = bytes.iter().all(|&byte| byte == 0xa5);
            // SAFETY: _exit ends the fork's child at once, running nothing of the parent's.
            unsafe { libc::_exit(if intact { 0 } else { 5 }) };
        }
        let status = wait_for(pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the fork's child lost memory of its own when it dropped the block it inherited \
             (wait status {status:#x}: a SIGSEGV or exit 5 means it was unmapped or changed)"
        );
        // The parent's block is untouched by the child's drop.
        // SAFETY: nothing else uses the block.
        unsafe { block.as_ptr().write(7) };
        // SAFETY: as above.
        assert_eq!(unsafe { block.as_ptr().read() }, 7);
        println!("child fork_drop_child: all checks passed");
    }

    #[test]
    fn a_forked_child_dropping_a_block_unmaps_only_that_block() {
        run_child("fork_drop_child");
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
        /// This task's name for itself, as the SDK's `mach_task_self()` macro reads it.
        safe static mach_task_self_: u32;
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
                mach_task_self_,
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

/// The options for large pools are accepted on every backend (macOS and the portable backend
/// ignore huge pages and NUMA, and warm on one thread), and the block they give is whole
/// pages of what it reports.
#[test]
fn pool_options_are_accepted_everywhere() {
    use unimem::{HugePages, Numa};
    let block = Block::options()
        .huge_pages(HugePages::BestEffort)
        .numa(Numa::Node(0))
        .warm_threads(3)
        .warm(true)
        .open(40_000)
        .unwrap();
    assert!(block.len() >= 40_000);
    assert_eq!(block.len() % block.page_size(), 0);
    assert!(block.page_size() >= 4096 && block.page_size().is_power_of_two());
    block.warm().ok();
    let tape = Tape::on(block);
    let values = tape.take_fill(1000, 7u32).unwrap();
    assert!(values.iter().all(|&v| v == 7));
    // Only Linux has huge pages to require; elsewhere that is an error that says so.
    let required = Block::options().huge_pages(HugePages::Required).open(4096);
    if cfg!(all(target_os = "linux", not(miri))) {
        if let Err(err) = required {
            assert!(matches!(err, Error::HugePagesUnavailable { .. }), "{err:?}");
        }
    } else {
        match required {
            Err(Error::Unsupported { what }) => assert!(what.contains("BestEffort"), "{what}"),
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }
}
