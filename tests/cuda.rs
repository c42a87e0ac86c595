//! `unimem::cuda` against a fake driver, and against the real one where there is a GPU.
//!
//! The fake (`fake-cuda/`, a cdylib of this workspace) implements the entry points the binding
//! calls, checks their arguments and counts the calls. `cargo test` at the root builds it
//! (fake-cuda is a default member of the workspace) beside the test binaries, where the tests
//! find it; `UNIMEM_FAKE_CUDA` names another copy (as gpu/check.sh does); and where neither is
//! there (`cargo test -p unimem`), the tests build it with cargo on first use. Each test
//! opens its own copy of the library, so each has a driver of its own and counters nobody
//! else touches, under any `--test-threads`.
//!
//! The `gpu_` tests use the real driver (`libcuda.so.1`, or what `UNIMEM_CUDA_DRIVER` names,
//! through the unsafe `Driver::load_from_env`), and skip with the reason printed where there
//! is none, unless `UNIMEM_REQUIRE_GPU=1` (as gpu/check.sh sets it): then they fail.
#![cfg(all(target_os = "linux", not(miri)))]

#[path = "support/cuda_driver.rs"]
mod cuda_driver;

use cuda_driver::{Calls, PrimaryContext, check};
use std::ffi::{CStr, CString, OsStr, c_char, c_void};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use unimem::cuda::{Driver, Error, Registration};
use unimem::share::ReadOnlyBlock;
use unimem::{Block, Grid, Pinning, Tape};

/// The fake driver library: `$UNIMEM_FAKE_CUDA`; or the one `cargo test` built beside this
/// test binary; or else built now, with cargo, into a target directory of its own.
fn fake_library() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(path) = std::env::var_os("UNIMEM_FAKE_CUDA") {
            return PathBuf::from(path);
        }
        // This binary is `<target>/<profile>/deps/cuda-<hash>`; a workspace `cargo test`
        // builds the cdylib into the same `deps/` (and `cargo build` copies it up to
        // `<target>/<profile>/`). Found by path, not by cargo, so that the binary also finds
        // it when run directly (as an unprivileged user in .ci/run).
        let exe = std::env::current_exe().expect("the test binary's path");
        let deps = exe.parent().expect("<target>/<profile>/deps");
        let profile_dir = deps.parent().unwrap_or(deps);
        let beside = deps.join("libfake_cuda.so");
        for candidate in [&beside, &profile_dir.join("libfake_cuda.so")] {
            if candidate.is_file() {
                return candidate.clone();
            }
        }
        // Not built by this cargo run (`cargo test -p unimem`): build it now, into a target
        // directory of its own, since the running cargo may hold this one's lock.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = profile_dir
            .parent()
            .unwrap_or(profile_dir)
            .join("fake-cuda");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(&cargo)
            .args(["build", "--quiet", "-p", "fake-cuda", "--target-dir"])
            .arg(&target)
            .current_dir(root)
            .status();
        match status {
            Ok(status) if status.success() => target.join("debug").join("libfake_cuda.so"),
            other => panic!(
                "the fake CUDA driver is not at {} and could not be built with `{} build -p \
                 fake-cuda` ({other:?}): run `cargo test` at the workspace root, which builds \
                 it there, or build it yourself and set UNIMEM_FAKE_CUDA to the path of \
                 libfake_cuda.so",
                beside.display(),
                cargo.to_string_lossy()
            ),
        }
    })
}

/// A fake driver of this test's own: a fresh copy of the library, configured before the
/// binding opens (and initialises) it.
struct Fake {
    driver: Driver,
    set: unsafe extern "C" fn(*const c_char, i64),
    get: unsafe extern "C" fn(*const c_char) -> i64,
    registered: unsafe extern "C" fn(*const c_void) -> i64,
}

/// Copies the fake library to a new path, opens it, applies `settings`, and returns the path
/// and the handle.
fn fresh_copy(settings: &[(&str, i64)]) -> (PathBuf, *mut c_void) {
    static COPIES: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "unimem-fake-cuda-{}-{}.so",
        std::process::id(),
        COPIES.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::copy(fake_library(), &path).expect("copy the fake driver");
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; the library is ours and its initialisers do nothing unusual.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "dlopen {}", path.display());
    // SAFETY: fake_cuda_set has this signature (fake-cuda/src/lib.rs).
    let set: unsafe extern "C" fn(*const c_char, i64) =
        unsafe { fake_function(handle, c"fake_cuda_set") };
    for (key, value) in settings {
        let key = CString::new(*key).unwrap();
        // SAFETY: a valid C string.
        unsafe { set(key.as_ptr(), *value) };
    }
    (path, handle)
}

/// The fake's function `name`, as a `T`.
///
/// # Safety
/// `T` is the function-pointer type of `name` in fake-cuda/src/lib.rs.
unsafe fn fake_function<T: Copy>(handle: *mut c_void, name: &CStr) -> T {
    // SAFETY: `handle` came from dlopen; `name` is a valid C string.
    let symbol = unsafe { libc::dlsym(handle, name.as_ptr()) };
    assert!(!symbol.is_null(), "the fake driver has no {name:?}");
    assert_eq!(size_of::<T>(), size_of::<*mut c_void>());
    // SAFETY: T is a function pointer of the symbol's type, by the caller's promise.
    unsafe { std::mem::transmute_copy(&symbol) }
}

impl Fake {
    fn new() -> Fake {
        Fake::with(&[])
    }

    fn with(settings: &[(&str, i64)]) -> Fake {
        let (path, handle) = fresh_copy(settings);
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

    /// What opening a fake configured with `settings` gives.
    fn load(settings: &[(&str, i64)]) -> Result<Driver, Error> {
        let (path, _) = fresh_copy(settings);
        // SAFETY: as in `with`.
        let result = unsafe { Driver::load_from(&path) };
        std::fs::remove_file(&path).ok();
        result
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

    fn calls(&self, entry: &str) -> i64 {
        self.get(&format!("calls:{entry}"))
    }

    /// The length the fake has registered at `ptr`, or `None`.
    fn registered(&self, ptr: *const u8) -> Option<usize> {
        // SAFETY: any address may be asked about.
        let len = unsafe { (self.registered)(ptr.cast()) };
        usize::try_from(len).ok()
    }

    /// The fake's device address for host address `ptr`.
    fn device_address(&self, ptr: *const u8) -> u64 {
        ptr as u64 + self.get("device_offset") as u64
    }

    /// Makes the fake's "user" context of device 0 current on this thread, as a program's own
    /// CUDA code would, until the guard drops.
    fn enter_user_context(&self) -> UserContext<'_> {
        self.enter_user_context_on(0)
    }

    /// Makes the fake's "user" context of `device` current on this thread until the guard
    /// drops.
    fn enter_user_context_on(&self, device: i32) -> UserContext<'_> {
        let calls = UserContext::calls(self.driver);
        // SAFETY: the fake accepts its user contexts until they are destroyed.
        check("cuCtxPushCurrent", unsafe {
            (calls.0)(self.get(&format!("user_context:{device}")) as *mut c_void)
        });
        UserContext {
            _fake: self,
            calls,
            pushed: true,
        }
    }

    /// Destroys `context` with `cuCtxDestroy`, as a program's own CUDA code (a safe wrapper
    /// dropping its context) may do at any time; returns the driver's answer.
    fn destroy_context(&self, context: i64) -> i32 {
        let destroy = self.driver.symbol(c"cuCtxDestroy_v2").unwrap();
        // SAFETY: the fake exports it with cuda.h's signature, and checks the handle.
        unsafe {
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void) -> i32>(
                destroy.as_ptr(),
            )(context as *mut c_void)
        }
    }
}

type Push = unsafe extern "C" fn(*mut c_void) -> i32;
type Pop = unsafe extern "C" fn(*mut *mut c_void) -> i32;

struct UserContext<'f> {
    _fake: &'f Fake,
    calls: (Push, Pop),
    /// Whether the context is still on this thread's stack for the guard to pop
    /// (`cuCtxDestroy` on this thread pops it itself).
    pushed: bool,
}

impl UserContext<'_> {
    fn calls(driver: Driver) -> (Push, Pop) {
        let push = driver.symbol(c"cuCtxPushCurrent_v2").unwrap();
        let pop = driver.symbol(c"cuCtxPopCurrent_v2").unwrap();
        // SAFETY: the fake exports these with cuda.h's signatures.
        unsafe {
            (
                std::mem::transmute::<*mut c_void, Push>(push.as_ptr()),
                std::mem::transmute::<*mut c_void, Pop>(pop.as_ptr()),
            )
        }
    }
}

impl UserContext<'_> {
    /// The context was popped by the driver (destroyed on this thread): nothing to pop.
    fn forget_popped(mut self) {
        self.pushed = false;
    }
}

impl Drop for UserContext<'_> {
    fn drop(&mut self) {
        if !self.pushed {
            return;
        }
        let mut popped = std::ptr::null_mut();
        // SAFETY: pops the push of `enter_user_context`, on this thread.
        unsafe { (self.calls.1)(&mut popped) };
    }
}

/// A small block anyone may open: pinned if the memory-lock limit allows.
fn small_block(len: usize) -> Block {
    Block::options()
        .pinning(Pinning::BestEffort)
        .open(len)
        .unwrap()
}

#[test]
fn registration_is_portable_and_mapped_and_ends_on_drop() {
    let fake = Fake::new();
    let block = small_block(64 << 10);
    let registration = fake.driver.register(&block).unwrap();
    assert_eq!(fake.registered(block.as_ptr()), Some(block.len()));
    assert_eq!(fake.get("last_flags"), 0x1 | 0x2, "PORTABLE | DEVICEMAP");
    assert_eq!(
        registration.device_ptr(),
        fake.device_address(block.as_ptr()),
        "the device pointer is the driver's, not the host address"
    );
    assert!(std::ptr::eq(registration.block(), &block));
    assert_eq!(registration.driver().path(), fake.driver.path());
    assert_eq!(fake.calls("cuMemHostRegister_v2"), 1);
    assert_eq!(fake.calls("cuMemHostUnregister"), 0);

    drop(registration);
    assert_eq!(fake.registered(block.as_ptr()), None);
    assert_eq!(fake.calls("cuMemHostUnregister"), 1);
    assert_eq!(fake.get("registrations"), 0);
}

#[test]
fn offsets_from_a_tape_and_a_grid_become_device_addresses() {
    let fake = Fake::new();
    let tape = Tape::on(small_block(1 << 20));
    let _skip = tape.take_slice::<u8>(100).unwrap();
    let floats = tape.take_fill(1000, 1.5f32).unwrap();
    let floats_at = floats.as_ptr().cast::<u8>();
    let registration = fake.driver.register(tape.block()).unwrap();
    let offset = tape.offset_of(floats_at).unwrap();
    assert_eq!(
        registration.device_ptr_at(offset),
        fake.device_address(floats_at)
    );
    assert_eq!(registration.device_ptr_at(0), registration.device_ptr());
    let end = tape.block().len();
    assert_eq!(
        registration.device_ptr_at(end),
        registration.device_ptr() + end as u64,
        "the end of the block is a valid end of a range"
    );

    let grid = Grid::<256, 64>::new().unwrap();
    let _first = grid.take().unwrap();
    let cell = grid.take().unwrap();
    let registration = fake.driver.register(grid.block()).unwrap();
    assert_eq!(
        registration.device_ptr_at(cell.offset()),
        fake.device_address(cell.as_ptr())
    );
}

#[test]
#[should_panic(expected = "past the end of the registered block")]
fn an_offset_past_the_end_panics_saying_so() {
    let fake = Fake::new();
    let block = small_block(4096);
    let registration = fake.driver.register(&block).unwrap();
    registration.device_ptr_at(block.len() + 1);
}

#[test]
fn with_no_current_context_the_primary_context_is_held_until_drop() {
    let fake = Fake::new();
    let block = small_block(4096);
    assert_eq!(fake.get("current"), 0);
    let registration = fake.driver.register(&block).unwrap();
    let primary = fake.get("primary_context");
    assert_eq!(fake.get("last_register_context"), primary);
    assert_eq!(registration.context() as i64, primary);
    assert_eq!(fake.get("primary_refs"), 1, "held while registered");
    assert_eq!(
        fake.get("depth"),
        0,
        "the thread's context stack is as it was"
    );

    drop(registration);
    assert_eq!(fake.get("last_unregister_context"), primary);
    assert_eq!(fake.get("primary_refs"), 0, "released on drop");
    assert_eq!(fake.get("depth"), 0);
}

#[test]
fn a_current_context_selects_its_devices_primary_context_and_stays_current() {
    let fake = Fake::with(&[("devices", 2)]);
    let block = small_block(4096);
    let user = fake.get("user_context:1");
    let primary = fake.get("primary_context:1");
    let _entered = fake.enter_user_context_on(1);
    let registration = fake.driver.register(&block).unwrap();
    assert_eq!(fake.calls("cuCtxGetDevice"), 1, "asked for the device");
    assert_eq!(
        fake.get("last_register_context"),
        primary,
        "registered under device 1's primary context, not the caller's context"
    );
    assert_eq!(registration.context() as i64, primary);
    assert_eq!(fake.calls("cuDevicePrimaryCtxRetain"), 1);
    assert_eq!(
        (fake.get("primary_refs:1"), fake.get("primary_refs:0")),
        (1, 0),
        "device 1's primary context retained once, device 0's not at all"
    );
    assert_eq!((fake.get("current"), fake.get("depth")), (user, 1));

    drop(registration);
    assert_eq!(fake.get("last_unregister_context"), primary);
    assert_eq!(fake.calls("cuDevicePrimaryCtxRelease_v2"), 1);
    assert_eq!(fake.get("primary_refs:1"), 0, "released on drop");
    assert_eq!((fake.get("current"), fake.get("depth")), (user, 1));
    assert_eq!(fake.get("destroyed_context_uses"), 0);
}

#[test]
fn a_current_context_of_device_0_selects_device_0s_primary_context() {
    let fake = Fake::with(&[("devices", 2)]);
    let block = small_block(4096);
    let _entered = fake.enter_user_context();
    let registration = fake.driver.register(&block).unwrap();
    assert_eq!(registration.context() as i64, fake.get("primary_context:0"));
    assert_eq!(
        (fake.get("primary_refs:0"), fake.get("primary_refs:1")),
        (1, 0)
    );
    drop(registration);
    assert_eq!(fake.get("primary_refs"), 0);
    assert_eq!(fake.get("current"), fake.get("user_context"));
}

#[test]
fn destroying_the_callers_context_does_not_affect_the_registration() {
    let fake = Fake::with(&[("devices", 2)]);
    let block = small_block(4096);
    let user = fake.get("user_context:1");

    // Destroyed on this thread, which pops it (as the driver does).
    let entered = fake.enter_user_context_on(1);
    let registration = fake.driver.register(&block).unwrap();
    assert_eq!(fake.destroy_context(user), 0, "cuCtxDestroy");
    entered.forget_popped();
    assert_eq!(fake.get("depth"), 0);
    registration
        .unregister()
        .expect("unregistering needs no context of the caller's");
    assert_eq!(fake.get("registrations"), 0);
    assert_eq!(fake.get("primary_refs"), 0, "retained once, released once");
    assert_eq!(fake.get("destroyed_context_uses"), 0, "never handed over");
    assert_eq!(fake.get("depth"), 0);

    // The fake does flag a use of a destroyed context, so the zero above means something.
    assert_ne!(fake.destroy_context(user), 0, "a second cuCtxDestroy");
    assert_eq!(fake.get("destroyed_context_uses"), 1);
}

#[test]
fn a_context_destroyed_by_another_thread_while_current_here_is_not_used_by_drop() {
    let fake = Fake::with(&[("devices", 2)]);
    let block = small_block(4096);
    let user = fake.get("user_context:1");
    let entered = fake.enter_user_context_on(1);
    let registration = fake.driver.register(&block).unwrap();
    // Another thread destroys it: it stays on this thread's stack, dangling.
    std::thread::scope(|scope| {
        scope.spawn(|| assert_eq!(fake.destroy_context(user), 0, "cuCtxDestroy"));
    });
    assert_eq!((fake.get("current"), fake.get("depth")), (user, 1));

    drop(registration);
    assert_eq!(fake.get("registrations"), 0, "unregistered");
    assert_eq!(
        fake.get("last_unregister_context"),
        fake.get("primary_context:1")
    );
    assert_eq!(fake.get("primary_refs"), 0);
    assert_eq!(fake.get("destroyed_context_uses"), 0, "never handed over");
    assert_eq!(
        (fake.get("current"), fake.get("depth")),
        (user, 1),
        "the thread's stack is as it was"
    );

    // Registering now asks the destroyed current context for its device: the driver says
    // so (as documented for a context destroyed on another thread), and the error says what
    // to do.
    let err = fake.driver.register(&block).unwrap_err();
    assert!(
        matches!(&err, Error::Refused { call: "cuCtxGetDevice", name, .. } if name == "CUDA_ERROR_CONTEXT_IS_DESTROYED"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("make a live context current"),
        "{err}"
    );
    assert_eq!(fake.get("primary_refs"), 0);
    drop(entered);
    assert_eq!(fake.get("depth"), 0);
}

#[test]
fn a_registration_may_end_on_another_thread() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Registration<'static>>();
    send_and_sync::<Driver>();

    let fake = Fake::new();
    let block = small_block(4096);
    let registration = fake.driver.register(&block).unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let registration = registration;
            assert_eq!(fake.registered(block.as_ptr()), Some(block.len()));
            drop(registration);
            assert_eq!(
                fake.get("depth"),
                0,
                "the other thread's stack is as it was"
            );
        });
    });
    assert_eq!(fake.registered(block.as_ptr()), None);
    assert_eq!(fake.get("primary_refs"), 0);
}

#[test]
fn registering_a_block_twice_is_already_registered() {
    let fake = Fake::new();
    let block = small_block(8192);
    let first = fake.driver.register(&block).unwrap();
    let err = fake.driver.register(&block).unwrap_err();
    assert!(matches!(err, Error::AlreadyRegistered), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("already registered"), "{text}");
    assert!(text.contains("one Registration per block"), "{text}");
    assert_eq!(
        fake.get("primary_refs"),
        1,
        "the failed attempt released its reference"
    );
    assert_eq!(fake.get("depth"), 0);
    assert_eq!(
        std::io::Error::from(err).kind(),
        std::io::ErrorKind::AlreadyExists
    );

    drop(first);
    let again = fake.driver.register(&block).unwrap();
    assert_eq!(fake.registered(block.as_ptr()), Some(block.len()));
    drop(again);
}

#[test]
fn a_leaked_registration_keeps_its_addresses_registered_and_the_error_says_so() {
    let fake = Fake::new();
    let block = small_block(8192);
    std::mem::forget(fake.driver.register(&block).unwrap());
    let err = fake.driver.register(&block).unwrap_err();
    assert!(matches!(err, Error::AlreadyRegistered), "{err:?}");
    let text = err.to_string();
    for needle in [
        "leaked (mem::forget)",
        "a later block at the same addresses",
        "never leak",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from {text:?}");
    }
    // The block goes, its registration stays; a later block mapped at the same addresses
    // cannot be registered.
    let (at, len) = (block.as_ptr(), block.len());
    drop(block);
    assert_eq!(fake.registered(at), Some(len), "the driver still has it");
    // The kernel usually maps the next block of that size into the hole the last one left,
    // but other tests' threads map and unmap meanwhile and may take it first: blocks that land
    // elsewhere are kept (so each try takes a new place) until one lands there, or give up
    // saying so.
    let mut elsewhere = Vec::new();
    let Some(later) = (0..256).find_map(|_| {
        let later = small_block(8192);
        if later.as_ptr() == at {
            return Some(later);
        }
        elsewhere.push(later);
        None
    }) else {
        println!("skipped the second half: another thread mapped the freed addresses first");
        return;
    };
    let err = fake.driver.register(&later).unwrap_err();
    assert!(matches!(err, Error::AlreadyRegistered), "{err:?}");
}

#[test]
fn a_refused_registration_names_the_driver_error_and_leaves_nothing_behind() {
    for (code, name, hint) in [
        (801, "CUDA_ERROR_NOT_SUPPORTED", "cuMemAllocHost"),
        (800, "CUDA_ERROR_NOT_PERMITTED", "cuMemAllocHost"),
        (2, "CUDA_ERROR_OUT_OF_MEMORY", "free memory"),
        (1, "CUDA_ERROR_INVALID_VALUE", "bug in unimem"),
        (4242, "CUresult 4242", "driver's description"),
    ] {
        let fake = Fake::with(&[("fail:cuMemHostRegister_v2", code)]);
        let block = small_block(4096);
        let err = fake.driver.register(&block).unwrap_err();
        match &err {
            Error::Refused {
                call,
                code: got,
                name: got_name,
                ..
            } => {
                assert_eq!(*call, "cuMemHostRegister");
                assert_eq!(i64::from(*got), code);
                assert_eq!(got_name, name);
            }
            other => panic!("{code}: expected Refused, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&format!("cuMemHostRegister failed with {name}")),
            "{text}"
        );
        assert!(text.contains(hint), "{hint:?} missing from {text:?}");
        assert_eq!(fake.get("primary_refs"), 0, "{code}: retain undone");
        assert_eq!(fake.get("depth"), 0, "{code}: push undone");
        assert_eq!(fake.get("registrations"), 0);
    }
}

#[test]
fn a_failure_after_registering_unregisters_again() {
    let fake = Fake::with(&[("fail:cuMemHostGetDevicePointer_v2", 999)]);
    let block = small_block(4096);
    let err = fake.driver.register(&block).unwrap_err();
    assert!(
        matches!(&err, Error::Refused { call: "cuMemHostGetDevicePointer", name, .. } if name == "CUDA_ERROR_UNKNOWN"),
        "{err:?}"
    );
    assert_eq!(fake.calls("cuMemHostUnregister"), 1);
    assert_eq!(fake.registered(block.as_ptr()), None);
    assert_eq!((fake.get("primary_refs"), fake.get("depth")), (0, 0));
}

#[test]
fn an_unusable_context_is_refused_with_a_way_out() {
    let fake = Fake::with(&[("fail:cuCtxPushCurrent_v2", 201)]);
    let block = small_block(4096);
    let err = fake.driver.register(&block).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("CUDA_ERROR_INVALID_CONTEXT"), "{text}");
    assert!(text.contains("make a live context current"), "{text}");
    assert_eq!(fake.calls("cuMemHostRegister_v2"), 0);
    assert_eq!(fake.get("primary_refs"), 0);
}

#[test]
fn unregister_reports_what_the_driver_says() {
    let fake = Fake::new();
    let block = small_block(4096);
    let registration = fake.driver.register(&block).unwrap();
    fake.set("fail:cuMemHostUnregister", 999);
    let err = registration.unregister().unwrap_err();
    assert!(
        matches!(&err, Error::Refused { call: "cuMemHostUnregister", name, .. } if name == "CUDA_ERROR_UNKNOWN"),
        "{err:?}"
    );
    assert_eq!(fake.get("primary_refs"), 0, "released all the same");
    assert_eq!(fake.get("depth"), 0);

    fake.set("fail:cuMemHostUnregister", 0);
    let registration = Fake::new().driver.register(&block).unwrap();
    assert!(registration.unregister().is_ok());
}

#[test]
fn a_driver_without_devices_says_no_device() {
    let err = Fake::load(&[("init_error", 100)]).unwrap_err();
    assert!(matches!(err, Error::NoDevice { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("cuInit returned CUDA_ERROR_NO_DEVICE"),
        "{text}"
    );
    assert!(text.contains("nvidia-smi"), "{text}");

    let fake = Fake::with(&[("devices", 0)]);
    let block = small_block(4096);
    let err = fake.driver.register(&block).unwrap_err();
    assert!(matches!(err, Error::NoDevice { .. }), "{err:?}");
    assert!(err.to_string().contains("cuDeviceGet"), "{err}");
}

#[test]
fn an_old_driver_is_too_old_and_says_which_version_is_needed() {
    let err = Fake::load(&[("version", 10020)]).unwrap_err();
    assert!(
        matches!(err, Error::DriverTooOld { version: 10020, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("CUDA 10.2"), "{text}");
    assert!(text.contains("CUDA 11.0 or newer"), "{text}");
    assert!(Fake::load(&[("version", 11000)]).is_ok());
}

#[test]
fn a_missing_driver_names_the_library_and_the_variable() {
    let missing = "/nonexistent/unimem-test/libcuda.so.1";
    // SAFETY: there is no library at that path.
    let err = unsafe { Driver::load_from(missing) }.unwrap_err();
    match &err {
        Error::NoDriver { library, reason } => {
            assert_eq!(library, missing);
            assert!(reason.contains("No such file"), "{reason}");
        }
        other => panic!("expected NoDriver, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(missing), "{text}");
    assert!(text.contains("UNIMEM_CUDA_DRIVER"), "{text}");
    assert_eq!(
        std::io::Error::from(err).kind(),
        std::io::ErrorKind::Unsupported
    );

    // SAFETY: libc is loaded already, so opening it runs nothing, and it has no
    // cuDriverGetVersion, so nothing in it is called.
    let err = unsafe { Driver::load_from("libc.so.6") }.unwrap_err();
    assert!(
        err.to_string().contains("has no cuDriverGetVersion"),
        "{err}"
    );
}

/// Runs the tests that `filter` selects in a new process of this test binary, with the
/// environment variables `env` set (and the fake's path passed on), and returns whether it
/// succeeded and its output.
fn run_tests_in_child(filter: &str, exact: bool, env: &[(&str, &OsStr)]) -> (bool, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.arg(filter);
    if exact {
        command.args(["--exact", "--ignored"]);
    }
    command
        .args(["--nocapture", "--test-threads=1"])
        .env("UNIMEM_FAKE_CUDA", fake_library())
        .env_remove("UNIMEM_REQUIRE_GPU");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// Runs one of the `child_` tests below in a new process of this test binary, with
/// `UNIMEM_CUDA_DRIVER` set to `driver`, and returns its output.
fn run_child(test: &str, driver: &Path) -> String {
    let (success, text) =
        run_tests_in_child(test, true, &[("UNIMEM_CUDA_DRIVER", driver.as_os_str())]);
    assert!(success, "{test} failed:\n{text}");
    assert!(text.contains("1 passed"), "{test} did not run:\n{text}");
    text
}

#[test]
fn the_variable_selects_the_driver_only_through_the_unsafe_load_from_env() {
    let (path, _) = fresh_copy(&[]);
    run_child("child_safe_load_ignores_the_variable", &path);
    run_child(
        "child_registers_through_the_driver_the_variable_names",
        &path,
    );
    std::fs::remove_file(&path).ok();
    run_child(
        "child_reports_the_missing_driver_the_variable_names",
        Path::new("/nonexistent/unimem-test/libcuda.so.1"),
    );
}

#[test]
#[ignore = "run by the_variable_selects_the_driver_only_through_the_unsafe_load_from_env"]
fn child_safe_load_ignores_the_variable() {
    let variable = std::env::var("UNIMEM_CUDA_DRIVER").unwrap();
    assert!(variable.contains("unimem-fake-cuda"), "{variable}");
    let block = small_block(4096);
    // Whether this machine has a driver or not, the safe calls open libcuda.so.1 and never
    // the library the variable names (the fake, which would register anything).
    match Driver::load() {
        Ok(driver) => {
            assert_eq!(driver.path(), "libcuda.so.1");
            assert!(
                driver.symbol(c"fake_cuda_get").is_none(),
                "the fake was opened"
            );
        }
        Err(Error::NoDriver { library, .. }) => assert_eq!(library, "libcuda.so.1"),
        Err(other) => println!("a driver is installed here, without a GPU: {other}"),
    }
    match block.register_cuda() {
        Ok(registration) => {
            assert_eq!(registration.driver().path(), "libcuda.so.1");
            assert!(registration.driver().symbol(c"fake_cuda_get").is_none());
        }
        Err(Error::NoDriver { library, .. }) => assert_eq!(library, "libcuda.so.1"),
        Err(other) => println!("a driver is installed here, without a GPU: {other}"),
    }
    // The unsafe call does read it.
    // SAFETY: the variable names a copy of the fake driver (the parent test's).
    let driver = unsafe { Driver::load_from_env() }.unwrap();
    assert_eq!(driver.path(), variable);
}

#[test]
#[ignore = "run by the_variable_selects_the_driver_only_through_the_unsafe_load_from_env"]
fn child_registers_through_the_driver_the_variable_names() {
    let variable = std::env::var("UNIMEM_CUDA_DRIVER").unwrap();
    let block = small_block(4096);
    // SAFETY: the variable names a copy of the fake driver (the parent test's).
    let driver = unsafe { Driver::load_from_env() }.unwrap();
    let registration = driver.register(&block).unwrap();
    let driver = registration.driver();
    assert_eq!(driver.path(), variable);
    assert!(driver.symbol(c"fake_cuda_get").is_some(), "not the fake");
    assert_eq!(driver.version(), 12040);
}

#[test]
#[ignore = "run by the_variable_selects_the_driver_only_through_the_unsafe_load_from_env"]
fn child_reports_the_missing_driver_the_variable_names() {
    let variable = std::env::var("UNIMEM_CUDA_DRIVER").unwrap();
    // SAFETY: the variable names a path where there is no library.
    match unsafe { Driver::load_from_env() } {
        Err(Error::NoDriver { library, .. }) => assert_eq!(library, variable),
        other => panic!("expected NoDriver, got {other:?}"),
    }
}

#[test]
fn with_no_driver_the_device_tests_skip_aloud_or_fail_when_required() {
    let missing = OsStr::new("/nonexistent/unimem-test/libcuda.so.1");
    let (success, text) = run_tests_in_child("gpu_", false, &[("UNIMEM_CUDA_DRIVER", missing)]);
    assert!(
        success,
        "without UNIMEM_REQUIRE_GPU the gpu_ tests skip:\n{text}"
    );
    assert!(text.contains("skipped: no GPU here"), "{text}");
    assert!(
        text.contains("4 passed"),
        "the four gpu_ tests ran:\n{text}"
    );

    let (success, text) = run_tests_in_child(
        "gpu_",
        false,
        &[
            ("UNIMEM_CUDA_DRIVER", missing),
            ("UNIMEM_REQUIRE_GPU", OsStr::new("1")),
        ],
    );
    assert!(
        !success,
        "with UNIMEM_REQUIRE_GPU=1 a missing GPU fails:\n{text}"
    );
    assert!(text.contains("4 failed"), "every gpu_ test failed:\n{text}");
    assert!(text.contains("UNIMEM_REQUIRE_GPU"), "{text}");
    assert!(
        text.contains("/nonexistent/unimem-test/libcuda.so.1"),
        "{text}"
    );
}

#[test]
fn no_leaks_over_ten_thousand_registrations() {
    const CYCLES: i64 = 10_000;
    let fake = Fake::new();
    let block = small_block(16 << 10);
    for cycle in 0..CYCLES {
        // Half with a context of the caller's current, half with none.
        let _entered = (cycle % 2 == 0).then(|| fake.enter_user_context());
        let registration = fake.driver.register(&block).unwrap();
        assert_eq!(
            registration.device_ptr(),
            fake.device_address(block.as_ptr())
        );
    }
    assert_eq!(fake.calls("cuMemHostRegister_v2"), CYCLES);
    assert_eq!(fake.calls("cuMemHostUnregister"), CYCLES);
    assert_eq!(fake.calls("cuCtxGetDevice"), CYCLES / 2);
    assert_eq!(fake.calls("cuDevicePrimaryCtxRetain"), CYCLES);
    assert_eq!(fake.calls("cuDevicePrimaryCtxRelease_v2"), CYCLES);
    assert_eq!(
        (
            fake.calls("cuCtxPushCurrent_v2"),
            fake.calls("cuCtxPopCurrent_v2")
        ),
        (CYCLES / 2 + 2 * CYCLES, CYCLES / 2 + 2 * CYCLES),
        "the test's pushes, and the binding's two per registration, each popped"
    );
    assert_eq!(fake.get("registrations"), 0);
    assert_eq!(fake.get("primary_refs"), 0);
    assert_eq!(fake.get("depth"), 0);
}

/// The real driver (`libcuda.so.1`, or what `UNIMEM_CUDA_DRIVER` names), or `None` (with the
/// reason printed) where there is no GPU; a panic instead where `UNIMEM_REQUIRE_GPU=1`
/// (gpu/check.sh), so that a GPU check without a GPU cannot pass.
fn gpu() -> Option<(Driver, Calls)> {
    // SAFETY: UNIMEM_CUDA_DRIVER, where set, names a CUDA driver: whoever runs the tests sets
    // it (gpu/check.sh, .ci/run with the fake driver).
    match unsafe { Driver::load_from_env() } {
        Ok(driver) => Some((driver, Calls::new(driver))),
        Err(why) if std::env::var_os("UNIMEM_REQUIRE_GPU").is_some_and(|v| v == "1") => {
            panic!("UNIMEM_REQUIRE_GPU=1, but there is no usable GPU: {why}")
        }
        Err(why) => {
            // Straight to stderr, past the test harness's capture, so that the skip shows.
            let _ = writeln!(
                std::io::stderr(),
                "skipped: no GPU here (set UNIMEM_REQUIRE_GPU=1 to fail instead): {why}"
            );
            None
        }
    }
}

#[test]
fn gpu_writes_reach_the_block_and_a_second_mapping_of_it() {
    let Some((driver, calls)) = gpu() else { return };
    let tape = Tape::on(small_block(16 << 20));
    let words = tape.take_fill(1 << 20, 0u32).unwrap().as_mut_ptr();
    let count = 1 << 20;
    let offset = tape.offset_of(words).unwrap();
    // No context current: the registration retains device 0's primary context.
    let registration = driver.register(tape.block()).unwrap();
    let context = registration.context();
    // SAFETY: the words are ours, and no reference to them is used until the GPU is done
    // (synchronised below); the context is the registration's, alive while it is.
    unsafe {
        check("cuCtxPushCurrent", (calls.ctx_push_current)(context));
        check(
            "cuMemsetD32",
            (calls.memset_d32)(registration.device_ptr_at(offset), 0xC0DE_F00D, count),
        );
        check("cuCtxSynchronize", (calls.ctx_synchronize)());
        let mut popped = std::ptr::null_mut();
        check("cuCtxPopCurrent", (calls.ctx_pop_current)(&mut popped));
    }
    // SAFETY: the GPU is done with the words; nothing else writes them.
    let seen = unsafe { std::slice::from_raw_parts(words, count) };
    assert!(seen.iter().all(|&word| word == 0xC0DE_F00D));

    // SAFETY: the new descriptor is only mapped read-only, here, and dropped with the map.
    let fd = unsafe { tape.block().export_fd() }.unwrap();
    let mirror = ReadOnlyBlock::from_fd(fd).unwrap();
    // SAFETY: nothing writes the block while this view lives.
    let mirrored = unsafe { &mirror.as_slice()[offset..offset + count * 4] };
    assert!(
        mirrored
            .chunks_exact(4)
            .all(|word| word == 0xC0DE_F00Du32.to_ne_bytes())
    );
}

#[test]
fn gpu_reads_what_the_cpu_wrote() {
    let Some((driver, calls)) = gpu() else { return };
    let primary = PrimaryContext::enter(&calls);
    let block = small_block(4 << 20);
    // SAFETY: nothing else touches the block yet.
    let bytes = unsafe { block.as_mut_slice() };
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    let registration = driver.register(&block).unwrap();
    assert_eq!(
        registration.context(),
        primary.context,
        "device 0's primary context, retained again by the registration"
    );
    let mut back = vec![0u8; block.len()];
    let mut device = 0;
    // SAFETY: valid out-parameters and lengths; the GPU only reads the block.
    unsafe {
        check("cuMemAlloc", (calls.mem_alloc)(&mut device, block.len()));
        check(
            "cuMemcpyDtoD",
            (calls.memcpy_dtod)(device, registration.device_ptr(), block.len()),
        );
        check(
            "cuMemcpyDtoH",
            (calls.memcpy_dtoh)(back.as_mut_ptr().cast(), device, block.len()),
        );
        check("cuMemFree", (calls.mem_free)(device));
    }
    // SAFETY: the GPU is done; nothing writes the block.
    assert!(back == unsafe { block.as_slice() });
}

#[test]
fn gpu_registration_errors_and_cycles() {
    let Some((driver, calls)) = gpu() else { return };
    let _primary = PrimaryContext::enter(&calls);
    let block = small_block(1 << 20);
    let first = driver.register(&block).unwrap();
    let err = driver.register(&block).unwrap_err();
    assert!(matches!(err, Error::AlreadyRegistered), "{err:?}");
    first.unregister().unwrap();
    for _ in 0..1000 {
        let registration = driver.register(&block).unwrap();
        assert_ne!(registration.device_ptr(), 0);
    }
    driver.register(&block).unwrap().unregister().unwrap();
}

#[test]
fn gpu_the_callers_own_context_may_be_destroyed_while_registered() {
    let Some((driver, calls)) = gpu() else { return };
    type Create = unsafe extern "C" fn(*mut *mut c_void, u32, i32) -> i32;
    type Destroy = unsafe extern "C" fn(*mut c_void) -> i32;
    let create = driver.symbol(c"cuCtxCreate_v2").expect("cuCtxCreate_v2");
    let destroy = driver.symbol(c"cuCtxDestroy_v2").expect("cuCtxDestroy_v2");
    // SAFETY: cuda.h declares these two with these signatures.
    let (create, destroy) = unsafe {
        (
            std::mem::transmute::<*mut c_void, Create>(create.as_ptr()),
            std::mem::transmute::<*mut c_void, Destroy>(destroy.as_ptr()),
        )
    };
    let mut device = 0;
    let mut own = std::ptr::null_mut();
    // SAFETY: valid out-parameters; cuCtxCreate makes the new context current here.
    unsafe {
        check("cuDeviceGet", (calls.device_get)(&mut device, 0));
        check("cuCtxCreate", create(&mut own, 0, device));
    }
    let block = small_block(1 << 20);
    let registration = driver.register(&block).unwrap();
    assert_ne!(
        registration.context(),
        own,
        "registered under the device's primary context, not the caller's own"
    );
    // SAFETY: `own` is ours, current on this thread (so cuCtxDestroy pops it), and unused after.
    check("cuCtxDestroy", unsafe { destroy(own) });

    // The registration works on: the GPU writes the block through it, in its context.
    let count = block.len() / 4;
    // SAFETY: nothing reads or writes the block until the GPU is done (synchronised); the
    // context is the registration's, alive while it is.
    unsafe {
        check(
            "cuCtxPushCurrent",
            (calls.ctx_push_current)(registration.context()),
        );
        check(
            "cuMemsetD32",
            (calls.memset_d32)(registration.device_ptr(), 0x5EED_5EED, count),
        );
        check("cuCtxSynchronize", (calls.ctx_synchronize)());
        let mut popped = std::ptr::null_mut();
        check("cuCtxPopCurrent", (calls.ctx_pop_current)(&mut popped));
    }
    // SAFETY: the GPU is done; nothing writes the block.
    let words = unsafe { block.as_slice() };
    assert!(
        words
            .chunks_exact(4)
            .all(|word| word == 0x5EED_5EEDu32.to_ne_bytes())
    );
    registration
        .unregister()
        .expect("unregistering needs no context of the caller's");
}

/// Registration in chunks (`Block::register_cuda_chunks`, `Driver::register_chunks`): how
/// many registrations, where their boundaries fall, and the device addresses across them.
mod chunks {
    use super::Fake;
    use unimem::cuda::{Chunking, Error};
    use unimem::{Block, HugePages, Pinning};

    const PAGE: usize = 4096;

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
}
