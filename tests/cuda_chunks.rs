//! Registering a block with CUDA in chunks, against the fake driver (`fake-cuda/`): how many
//! registrations, where their boundaries fall, and the device addresses across them.
//!
//! The fake's path comes from `UNIMEM_FAKE_CUDA` (as `.ci/run` sets it); without it, it is
//! built with cargo on first use. Each test opens its own copy of the library, so its
//! counters are its own under any `--test-threads`.
#![cfg(target_os = "linux")]

use std::ffi::{CStr, CString, c_char, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use unimem::cuda::{Chunking, Driver, Error};
use unimem::{Block, HugePages, Pinning};

const PAGE: usize = 4096;

fn fake_library() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(path) = std::env::var_os("UNIMEM_FAKE_CUDA") {
            return PathBuf::from(path);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = root.join("target").join("fake-cuda");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(&cargo)
            .args(["build", "--quiet", "-p", "fake-cuda", "--target-dir"])
            .arg(&target)
            .current_dir(root)
            .status();
        assert!(
            status.is_ok_and(|status| status.success()),
            "could not build the fake CUDA driver: build it with `cargo build -p fake-cuda` \
             and set UNIMEM_FAKE_CUDA to the path of libfake_cuda.so"
        );
        target.join("debug").join("libfake_cuda.so")
    })
}

/// A fake driver of this test's own.
struct Fake {
    driver: Driver,
    set: unsafe extern "C" fn(*const c_char, i64),
    get: unsafe extern "C" fn(*const c_char) -> i64,
    registered: unsafe extern "C" fn(*const c_void) -> i64,
}

/// # Safety
/// `T` is the function-pointer type of `name` in fake-cuda/src/lib.rs.
unsafe fn fake_function<T: Copy>(handle: *mut c_void, name: &CStr) -> T {
    // SAFETY: `handle` came from dlopen; `name` is a valid C string.
    let symbol = unsafe { libc::dlsym(handle, name.as_ptr()) };
    assert!(!symbol.is_null(), "the fake driver has no {name:?}");
    // SAFETY: T is a function pointer of the symbol's type, by the caller's promise.
    unsafe { std::mem::transmute_copy(&symbol) }
}

impl Fake {
    fn new() -> Fake {
        static COPIES: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "unimem-fake-cuda-chunks-{}-{}.so",
            std::process::id(),
            COPIES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::copy(fake_library(), &path).expect("copy the fake driver");
        let c_path = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string; the library is ours.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null(), "dlopen {}", path.display());
        // SAFETY: the fake implements the driver's entry points with cuda.h's signatures.
        let driver = unsafe { Driver::load_from(&path) }.expect("the fake driver loads");
        std::fs::remove_file(&path).ok();
        // SAFETY: the three functions have these signatures (fake-cuda/src/lib.rs).
        unsafe {
            Fake {
                driver,
                set: fake_function(handle, c"fake_cuda_set"),
                get: fake_function(handle, c"fake_cuda_get"),
                registered: fake_function(handle, c"fake_cuda_registered"),
            }
        }
    }

    fn get(&self, key: &str) -> i64 {
        let key = CString::new(key).unwrap();
        // SAFETY: a valid C string.
        unsafe { (self.get)(key.as_ptr()) }
    }

    fn set(&self, key: &str, value: i64) {
        let key = CString::new(key).unwrap();
        // SAFETY: a valid C string.
        unsafe { (self.set)(key.as_ptr(), value) }
    }

    /// The length the fake has registered at `ptr`, or `None`.
    fn registered(&self, ptr: *const u8) -> Option<usize> {
        // SAFETY: any address may be asked about.
        usize::try_from(unsafe { (self.registered)(ptr.cast()) }).ok()
    }

    fn device_address(&self, ptr: *const u8) -> u64 {
        ptr as u64 + self.get("device_offset") as u64
    }
}

fn block(len: usize) -> Block {
    Block::options().pinning(Pinning::Off).open(len).unwrap()
}

#[test]
fn a_block_registers_in_chunks_on_the_granule_with_device_addresses_across_them() {
    let fake = Fake::new();
    let block = block(64 * PAGE);
    let granule = 3 * PAGE;
    let chunks = fake
        .driver
        .register_chunks(&block, 0..block.len(), Chunking::new(granule, 16 * PAGE))
        .unwrap();
    // 15 pages (5 granules) per registration, the last one shorter: 15, 15, 15, 15, 4.
    assert_eq!(fake.get("registrations"), 5);
    assert_eq!(fake.get("calls:cuMemHostRegister_v2"), 5);
    let base = block.as_ptr();
    let listed: Vec<_> = chunks.chunks().collect();
    for (i, (range, device)) in listed.iter().enumerate() {
        assert_eq!(range.start, i * 15 * PAGE);
        assert_eq!(range.start % granule, 0, "boundaries on the granule");
        assert!(range.len() <= 16 * PAGE);
        let host = base.wrapping_add(range.start);
        assert_eq!(fake.registered(host), Some(range.len()), "chunk {i}");
        assert_eq!(*device, fake.device_address(host));
    }
    assert_eq!(listed.last().unwrap().0.end, block.len());
    // Every offset maps to its own chunk's device address, boundaries included.
    for offset in [0, 1, 15 * PAGE - 1, 15 * PAGE, 40 * PAGE + 7, block.len()] {
        assert_eq!(
            chunks.device_ptr_at(offset),
            fake.device_address(base.wrapping_add(offset)),
            "offset {offset}"
        );
    }
    // No granule spans two; a range across a boundary is refused.
    for k in 0..(block.len() / granule) {
        let range = k * granule..(k + 1) * granule;
        assert_eq!(
            chunks.device_range(range.clone()),
            Some(fake.device_address(base.wrapping_add(range.start))),
            "granule {k}"
        );
    }
    assert_eq!(chunks.device_range(15 * PAGE - 1..15 * PAGE + 1), None);
    assert_eq!(chunks.device_range(0..block.len()), None);
    chunks.unregister().unwrap();
    assert_eq!(fake.get("registrations"), 0);
    assert_eq!(fake.get("primary_refs"), 0);
}

#[test]
fn a_sub_range_registers_only_its_pages() {
    let fake = Fake::new();
    let block = block(32 * PAGE);
    let chunks = fake
        .driver
        .register_chunks(
            &block,
            5 * PAGE + 10..9 * PAGE - 10,
            Chunking::new(PAGE, 64 * PAGE),
        )
        .unwrap();
    assert_eq!(chunks.range(), 5 * PAGE..9 * PAGE);
    assert_eq!(fake.get("registrations"), 1);
    assert_eq!(
        fake.registered(block.as_ptr().wrapping_add(5 * PAGE)),
        Some(4 * PAGE)
    );
    // The rest of the block stays free to register.
    let rest = fake
        .driver
        .register_chunks(&block, 0..5 * PAGE, Chunking::new(PAGE, PAGE))
        .unwrap();
    assert_eq!(fake.get("registrations"), 6);
    drop((chunks, rest));
    assert_eq!(fake.get("registrations"), 0);
}

#[test]
#[should_panic(expected = "lies outside the registered range")]
fn an_offset_outside_the_registered_range_panics() {
    let fake = Fake::new();
    let block = block(8 * PAGE);
    let chunks = fake
        .driver
        .register_chunks(&block, 2 * PAGE..4 * PAGE, Chunking::new(PAGE, PAGE))
        .unwrap();
    let _ = chunks.device_ptr_at(PAGE);
}

#[test]
fn chunks_get_past_a_driver_that_refuses_one_large_registration() {
    let fake = Fake::new();
    fake.set("max_register_len", (8 * PAGE) as i64);
    let block = block(64 * PAGE);
    match fake.driver.register(&block) {
        Err(Error::Refused { code: 2, .. }) => {}
        other => panic!("expected the fake's refusal, got {other:?}"),
    }
    let chunks = fake
        .driver
        .register_chunks(&block, 0..block.len(), Chunking::new(PAGE, 8 * PAGE))
        .unwrap();
    assert_eq!(chunks.chunks().len(), 8);
    assert_eq!(fake.get("registrations"), 8);
}

#[test]
fn a_failure_part_way_unregisters_what_was_registered() {
    let fake = Fake::new();
    let block = block(16 * PAGE);
    // Something else holds pages 8..12: the third chunk is refused.
    let other = fake
        .driver
        .register_chunks(&block, 8 * PAGE..12 * PAGE, Chunking::new(PAGE, 4 * PAGE))
        .unwrap();
    let calls = fake.get("calls:cuMemHostRegister_v2");
    let err = fake
        .driver
        .register_chunks(&block, 0..block.len(), Chunking::new(PAGE, 4 * PAGE))
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyRegistered), "{err:?}");
    assert_eq!(fake.get("calls:cuMemHostRegister_v2") - calls, 3);
    assert_eq!(
        fake.get("registrations"),
        1,
        "only the other registration is left"
    );
    drop(other);
    assert_eq!(fake.get("registrations"), 0);
    assert_eq!(fake.get("primary_refs"), 0);
}

#[test]
fn huge_page_blocks_are_cut_on_whole_huge_pages() {
    let fake = Fake::new();
    let block = Block::options()
        .huge_pages(HugePages::BestEffort)
        .pinning(Pinning::Off)
        .warm(true)
        .open(8 << 20)
        .unwrap();
    let page = block.page_size();
    let chunks = fake
        .driver
        .register_chunks(&block, 0..block.len(), Chunking::new(PAGE, 3 << 20))
        .unwrap();
    for (range, _) in chunks.chunks() {
        assert_eq!(range.start % page, 0, "page size {page}");
        assert!(range.end % page == 0 || range.end == block.len());
    }
    if page == 2 << 20 {
        // 3 MiB rounds down to one huge page per registration.
        assert_eq!(chunks.chunks().len(), block.len() / page);
    } else {
        eprintln!("note: this block has {page}-byte pages (no huge pages on this machine)");
    }
}
