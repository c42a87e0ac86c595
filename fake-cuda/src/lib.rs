//! A stand-in for the CUDA driver library (`libcuda.so.1`) for unimem's `cuda` tests on
//! machines without a GPU.
//!
//! It exports the entry points unimem calls, under the same names and C signatures, and
//! behaves as the driver documents them: contexts form a per-thread stack, each device has a
//! primary context, reference counted, and a "user" context (one a program made itself) that
//! `cuCtxDestroy` destroys, registrations may not overlap, calls that need a context fail
//! without one. Every argument is checked, every call counted, and any entry point can be told
//! to fail with a given code. Handing the fake a destroyed context (pushing it, destroying it
//! again) fails with `CUDA_ERROR_INVALID_CONTEXT` and is counted, since with a real driver it
//! is undefined behaviour; calling with one current (destroyed by another thread) fails with
//! `CUDA_ERROR_CONTEXT_IS_DESTROYED`, as the driver documents, and is counted too: tests
//! assert that unimem does neither.
//!
//! It also has the few calls the `cuda` example and the GPU tests make (`cuMemAlloc`, the
//! `cuMemcpy`s, `cuMemsetD32`, `cuMemAllocHost`, ...), so that those run here too, with no GPU:
//! "device memory" is host memory at `host + (1 << 48)`, and a device range must lie in an
//! allocation or in a registration mapped with `DEVICEMAP`, so that a host address passed
//! where a device pointer belongs fails as it would on a GPU.
//!
//! Tests drive it through three extra exports:
//! - `fake_cuda_set(key, value)`: `"version"` (what `cuDriverGetVersion` reports, 12040 by
//!   default), `"init_error"` (what `cuInit` returns, 0 by default), `"devices"` (how many
//!   exist, 1 by default, at most 8), `"fail:<entry point>"` (the code that entry point
//!   returns from now on; 0 lets it work again), `"max_register_len"` (`cuMemHostRegister`
//!   refuses longer registrations with `CUDA_ERROR_OUT_OF_MEMORY`; 0, the default, for no
//!   limit);
//! - `fake_cuda_get(key)`: `"calls:<entry point>"`, `"registrations"` (live ones),
//!   `"primary_refs"` (over all devices) and `"primary_refs:<device>"`, `"last_flags"` (of the
//!   last registration), `"last_register_context"`, `"last_unregister_context"`,
//!   `"primary_context"` and `"primary_context:<device>"` (device 0's without a device),
//!   `"user_context"` and `"user_context:<device>"` (a context a test may push itself, destroy
//!   with `cuCtxDestroy_v2`, and get back, current, from `cuCtxCreate_v2`),
//!   `"destroyed_context_uses"`, `"current"` and `"depth"`
//!   (the calling thread's context stack), `"device_offset"`; -1 for an unknown key;
//! - `fake_cuda_registered(ptr)`: the length registered at `ptr`, or -1.
//!
//! All state is per loaded copy of the library: a test that copies the file to a new path and
//! opens the copy gets a driver of its own, whatever other tests do at the same time.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::sync::{Mutex, MutexGuard};

type CUresult = c_int;
type CUcontext = *mut c_void;

const SUCCESS: CUresult = 0;
const INVALID_VALUE: CUresult = 1;
const OUT_OF_MEMORY: CUresult = 2;
const NOT_INITIALIZED: CUresult = 3;
const INVALID_DEVICE: CUresult = 101;
const INVALID_CONTEXT: CUresult = 201;
const CONTEXT_IS_DESTROYED: CUresult = 709;
const ALREADY_REGISTERED: CUresult = 712;
const NOT_REGISTERED: CUresult = 713;

/// `CU_MEMHOSTREGISTER_*`: PORTABLE, DEVICEMAP, IOMEMORY, READ_ONLY.
const KNOWN_REGISTER_FLAGS: c_uint = 0x1 | 0x2 | 0x4 | 0x8;
const DEVICEMAP: c_uint = 0x2;

/// The fake device address of host byte `p` is `p + DEVICE_OFFSET`: never the host address,
/// so that a binding which hands out the host address instead is caught.
const DEVICE_OFFSET: u64 = 1 << 48;

/// The driver's error names and descriptions, for the codes this fake returns and a few more.
const ERRORS: &[(CUresult, &CStr, &CStr)] = &[
    (0, c"CUDA_SUCCESS", c"no error"),
    (1, c"CUDA_ERROR_INVALID_VALUE", c"invalid argument"),
    (2, c"CUDA_ERROR_OUT_OF_MEMORY", c"out of memory"),
    (3, c"CUDA_ERROR_NOT_INITIALIZED", c"initialization error"),
    (
        100,
        c"CUDA_ERROR_NO_DEVICE",
        c"no CUDA-capable device is detected",
    ),
    (101, c"CUDA_ERROR_INVALID_DEVICE", c"invalid device ordinal"),
    (
        201,
        c"CUDA_ERROR_INVALID_CONTEXT",
        c"invalid device context",
    ),
    (
        709,
        c"CUDA_ERROR_CONTEXT_IS_DESTROYED",
        c"context is destroyed",
    ),
    (
        712,
        c"CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED",
        c"part or all of the requested memory range is already mapped",
    ),
    (
        713,
        c"CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED",
        c"pointer does not correspond to a registered memory region",
    ),
    (800, c"CUDA_ERROR_NOT_PERMITTED", c"operation not permitted"),
    (801, c"CUDA_ERROR_NOT_SUPPORTED", c"operation not supported"),
    (999, c"CUDA_ERROR_UNKNOWN", c"unknown error"),
];

/// The most devices the fake can be told to have.
const MAX_DEVICES: usize = 8;

/// Distinct addresses serve as context handles: per device, its primary context and one
/// "user" context.
static PRIMARY_CONTEXTS: [u8; MAX_DEVICES] = [0; MAX_DEVICES];
static USER_CONTEXTS: [u8; MAX_DEVICES] = [0; MAX_DEVICES];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Primary,
    User,
}

/// The handle of `device`'s context of `kind`.
fn context_handle(kind: Kind, device: c_int) -> usize {
    let contexts = match kind {
        Kind::Primary => &PRIMARY_CONTEXTS,
        Kind::User => &USER_CONTEXTS,
    };
    &contexts[device as usize] as *const u8 as usize
}

/// What kind of context `handle` is, and of which device; `None` for anything else.
fn context_of(handle: usize) -> Option<(Kind, c_int)> {
    [Kind::Primary, Kind::User].into_iter().find_map(|kind| {
        (0..MAX_DEVICES as c_int)
            .find(|&device| context_handle(kind, device) == handle)
            .map(|device| (kind, device))
    })
}

#[derive(Default)]
struct State {
    settings: HashMap<String, i64>,
    calls: HashMap<&'static str, i64>,
    /// Base address to (length, flags).
    registrations: BTreeMap<usize, (usize, c_uint)>,
    /// "Device memory" (`cuMemAlloc`), which lives in host memory here: base to length.
    allocations: BTreeMap<usize, usize>,
    /// Host memory from `cuMemAllocHost`: base to length.
    host_allocations: BTreeMap<usize, usize>,
    /// References to each device's primary context.
    primary_refs: BTreeMap<c_int, i64>,
    /// User contexts destroyed with `cuCtxDestroy_v2`.
    destroyed: HashSet<usize>,
    /// Times a destroyed context was handed to the fake (a failure of the caller).
    destroyed_uses: i64,
    initialized: bool,
    last: HashMap<&'static str, i64>,
}

impl State {
    fn setting(&self, key: &str, default: i64) -> i64 {
        self.settings.get(key).copied().unwrap_or(default)
    }

    fn device_exists(&self, device: c_int) -> bool {
        device >= 0
            && i64::from(device) < self.setting("devices", 1)
            && (device as usize) < MAX_DEVICES
    }

    /// The calling thread's current context, if it is one that may be used. A context
    /// destroyed by another thread while current on this one fails with
    /// `CUDA_ERROR_CONTEXT_IS_DESTROYED`, as the driver documents, and counts as a use.
    fn current_context(&mut self) -> Result<usize, CUresult> {
        let current = STACK
            .with(|stack| stack.borrow().last().copied())
            .ok_or(INVALID_CONTEXT)?;
        if self.destroyed.contains(&current) {
            self.destroyed_uses += 1;
            return Err(CONTEXT_IS_DESTROYED);
        }
        if self.context_is_live(current) {
            Ok(current)
        } else {
            Err(INVALID_CONTEXT)
        }
    }

    /// Whether `context`, passed by handle, may be used now, counting a use of a destroyed
    /// one (undefined behaviour with a real driver).
    fn usable(&mut self, context: usize) -> bool {
        if self.destroyed.contains(&context) {
            self.destroyed_uses += 1;
            return false;
        }
        self.context_is_live(context)
    }

    /// The host address behind the device range `device..device + len`: inside one
    /// allocation, or one registration mapped with DEVICEMAP. `CUDA_ERROR_INVALID_VALUE`
    /// otherwise, as for a host address passed where a device pointer belongs.
    fn host_range(&self, device: u64, len: usize) -> Result<*mut u8, CUresult> {
        let host = device.checked_sub(DEVICE_OFFSET).ok_or(INVALID_VALUE)? as usize;
        let end = host.checked_add(len).ok_or(INVALID_VALUE)?;
        let within = |map: &BTreeMap<usize, usize>| {
            map.range(..=host)
                .next_back()
                .is_some_and(|(&base, &size)| end <= base + size)
        };
        let mapped = self
            .registrations
            .range(..=host)
            .next_back()
            .is_some_and(|(&base, &(size, flags))| end <= base + size && flags & DEVICEMAP != 0);
        if within(&self.allocations) || mapped {
            Ok(host as *mut u8)
        } else {
            Err(INVALID_VALUE)
        }
    }

    fn context_is_live(&self, context: usize) -> bool {
        match context_of(context) {
            Some((Kind::User, device)) => {
                self.device_exists(device) && !self.destroyed.contains(&context)
            }
            Some((Kind::Primary, device)) => {
                self.device_exists(device)
                    && self.primary_refs.get(&device).is_some_and(|&refs| refs > 0)
            }
            None => false,
        }
    }
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

thread_local! {
    /// The calling thread's context stack, innermost last.
    static STACK: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

struct Entered {
    state: MutexGuard<'static, Option<State>>,
}

impl Entered {
    fn state(&mut self) -> &mut State {
        self.state.get_or_insert_with(State::default)
    }
}

/// Counts a call of `name`, and fails it if the tests asked for that, or if it needs `cuInit`
/// and that has not succeeded.
fn enter(name: &'static str, needs_init: bool) -> Result<Entered, CUresult> {
    let mut entered = Entered {
        state: STATE.lock().unwrap_or_else(|poison| poison.into_inner()),
    };
    let state = entered.state();
    *state.calls.entry(name).or_default() += 1;
    let fail = state.setting(&format!("fail:{name}"), 0);
    if fail != 0 {
        return Err(fail as CUresult);
    }
    if needs_init && !state.initialized {
        return Err(NOT_INITIALIZED);
    }
    Ok(entered)
}

/// Runs an entry point's body, turning `Err(code)` into the code returned.
fn result(body: impl FnOnce() -> Result<(), CUresult>) -> CUresult {
    match body() {
        Ok(()) => SUCCESS,
        Err(code) => code,
    }
}

/// Writes `value` through an out-parameter, or fails with `CUDA_ERROR_INVALID_VALUE` for null.
///
/// # Safety
/// `out` is null or valid for a write of `T`.
unsafe fn put<T>(out: *mut T, value: T) -> Result<(), CUresult> {
    if out.is_null() {
        return Err(INVALID_VALUE);
    }
    // SAFETY: non-null, and the caller promises it is valid for a write.
    unsafe { out.write(value) };
    Ok(())
}

/// # Safety
/// `version` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDriverGetVersion(version: *mut c_int) -> CUresult {
    result(|| {
        let mut entered = enter("cuDriverGetVersion", false)?;
        let reported = entered.state().setting("version", 12040) as c_int;
        // SAFETY: the caller's promise.
        unsafe { put(version, reported) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuInit(flags: c_uint) -> CUresult {
    result(|| {
        let mut entered = enter("cuInit", false)?;
        let state = entered.state();
        if flags != 0 {
            return Err(INVALID_VALUE);
        }
        let error = state.setting("init_error", 0) as CUresult;
        if error != SUCCESS {
            return Err(error);
        }
        state.initialized = true;
        Ok(())
    })
}

/// # Safety
/// `device` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGet(device: *mut c_int, ordinal: c_int) -> CUresult {
    result(|| {
        let mut entered = enter("cuDeviceGet", true)?;
        if !entered.state().device_exists(ordinal) {
            return Err(INVALID_DEVICE);
        }
        // SAFETY: the caller's promise.
        unsafe { put(device, ordinal) }
    })
}

/// # Safety
/// `context` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(
    context: *mut CUcontext,
    device: c_int,
) -> CUresult {
    result(|| {
        let mut entered = enter("cuDevicePrimaryCtxRetain", true)?;
        let state = entered.state();
        if !state.device_exists(device) {
            return Err(INVALID_DEVICE);
        }
        // SAFETY: the caller's promise.
        unsafe { put(context, context_handle(Kind::Primary, device) as CUcontext) }?;
        *state.primary_refs.entry(device).or_default() += 1;
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuDevicePrimaryCtxRelease_v2(device: c_int) -> CUresult {
    result(|| {
        let mut entered = enter("cuDevicePrimaryCtxRelease_v2", true)?;
        let state = entered.state();
        if !state.device_exists(device) {
            return Err(INVALID_DEVICE);
        }
        let refs = state.primary_refs.entry(device).or_default();
        if *refs == 0 {
            return Err(INVALID_CONTEXT);
        }
        *refs -= 1;
        Ok(())
    })
}

/// # Safety
/// `context` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetCurrent(context: *mut CUcontext) -> CUresult {
    result(|| {
        enter("cuCtxGetCurrent", true)?;
        let current = STACK.with(|stack| stack.borrow().last().copied().unwrap_or(0));
        // SAFETY: the caller's promise.
        unsafe { put(context, current as CUcontext) }
    })
}

/// # Safety
/// `device` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetDevice(device: *mut c_int) -> CUresult {
    result(|| {
        let mut entered = enter("cuCtxGetDevice", true)?;
        let current = entered.state().current_context()?;
        let (_, of) = context_of(current).ok_or(INVALID_CONTEXT)?;
        // SAFETY: the caller's promise.
        unsafe { put(device, of) }
    })
}

/// "Creates" `device`'s user context (there is one per device; creating it again after
/// `cuCtxDestroy` brings it back) and makes it current, as the driver does.
///
/// # Safety
/// `context` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate_v2(
    context: *mut CUcontext,
    _flags: c_uint,
    device: c_int,
) -> CUresult {
    result(|| {
        let mut entered = enter("cuCtxCreate_v2", true)?;
        let state = entered.state();
        if !state.device_exists(device) {
            return Err(INVALID_DEVICE);
        }
        let created = context_handle(Kind::User, device);
        // SAFETY: the caller's promise.
        unsafe { put(context, created as CUcontext) }?;
        state.destroyed.remove(&created);
        STACK.with(|stack| stack.borrow_mut().push(created));
        Ok(())
    })
}

/// Destroys a user context; if it is current on the calling thread, pops it, as the driver
/// does. Destroying a primary context, or a context twice, fails.
#[unsafe(no_mangle)]
pub extern "C" fn cuCtxDestroy_v2(context: CUcontext) -> CUresult {
    result(|| {
        let mut entered = enter("cuCtxDestroy_v2", true)?;
        let state = entered.state();
        let context = context as usize;
        if !state.usable(context) || context_of(context).map(|(kind, _)| kind) != Some(Kind::User) {
            return Err(INVALID_CONTEXT);
        }
        state.destroyed.insert(context);
        STACK.with(|stack| {
            let mut stack = stack.borrow_mut();
            if stack.last() == Some(&context) {
                stack.pop();
            }
        });
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxPushCurrent_v2(context: CUcontext) -> CUresult {
    result(|| {
        let mut entered = enter("cuCtxPushCurrent_v2", true)?;
        if !entered.state().usable(context as usize) {
            return Err(INVALID_CONTEXT);
        }
        STACK.with(|stack| stack.borrow_mut().push(context as usize));
        Ok(())
    })
}

/// # Safety
/// `context` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(context: *mut CUcontext) -> CUresult {
    result(|| {
        enter("cuCtxPopCurrent_v2", true)?;
        let popped = STACK
            .with(|stack| stack.borrow_mut().pop())
            .ok_or(INVALID_CONTEXT)?;
        if !context.is_null() {
            // SAFETY: the caller's promise.
            unsafe { put(context, popped as CUcontext) }?;
        }
        Ok(())
    })
}

/// # Safety
/// `ptr..ptr + len` is mapped, readable memory, as the driver requires.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemHostRegister_v2(
    ptr: *mut c_void,
    len: usize,
    flags: c_uint,
) -> CUresult {
    result(|| {
        let mut entered = enter("cuMemHostRegister_v2", true)?;
        let state = entered.state();
        let context = state.current_context()?;
        if ptr.is_null() || len == 0 || flags & !KNOWN_REGISTER_FLAGS != 0 {
            return Err(INVALID_VALUE);
        }
        // A driver that refuses single registrations above some size, as real ones have
        // been seen to (out of memory, for hundreds of GiB).
        let max = state.setting("max_register_len", 0);
        if max > 0 && len as i64 > max {
            return Err(OUT_OF_MEMORY);
        }
        let (start, end) = (
            ptr as usize,
            (ptr as usize).checked_add(len).ok_or(INVALID_VALUE)?,
        );
        let overlaps = state
            .registrations
            .range(..end)
            .next_back()
            .is_some_and(|(&base, &(base_len, _))| base + base_len > start);
        if overlaps {
            return Err(ALREADY_REGISTERED);
        }
        // The real driver faults every page in to pin it; touch the first and last byte, so
        // that registering memory that is not mapped crashes here, not silently.
        // SAFETY: the caller's promise: the whole range is mapped and readable.
        unsafe {
            ptr.cast::<u8>().read_volatile();
            ptr.cast::<u8>().add(len - 1).read_volatile();
        }
        state.registrations.insert(start, (len, flags));
        state.last.insert("last_flags", i64::from(flags));
        state.last.insert("last_register_context", context as i64);
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemHostUnregister(ptr: *mut c_void) -> CUresult {
    result(|| {
        let mut entered = enter("cuMemHostUnregister", true)?;
        let state = entered.state();
        let context = state.current_context()?;
        state
            .registrations
            .remove(&(ptr as usize))
            .ok_or(NOT_REGISTERED)?;
        state.last.insert("last_unregister_context", context as i64);
        Ok(())
    })
}

/// # Safety
/// `device_ptr` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemHostGetDevicePointer_v2(
    device_ptr: *mut u64,
    ptr: *mut c_void,
    flags: c_uint,
) -> CUresult {
    result(|| {
        let mut entered = enter("cuMemHostGetDevicePointer_v2", true)?;
        let state = entered.state();
        state.current_context()?;
        if flags != 0 {
            return Err(INVALID_VALUE);
        }
        let address = ptr as usize;
        let mapped = state
            .registrations
            .range(..=address)
            .next_back()
            .is_some_and(|(&base, &(len, flags))| address < base + len && flags & DEVICEMAP != 0);
        if !mapped {
            return Err(INVALID_VALUE);
        }
        // SAFETY: the caller's promise.
        unsafe { put(device_ptr, address as u64 + DEVICE_OFFSET) }
    })
}

/// # Safety
/// `name` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorName(code: CUresult, name: *mut *const c_char) -> CUresult {
    result(|| {
        enter("cuGetErrorName", false)?;
        let found = ERRORS
            .iter()
            .find(|entry| entry.0 == code)
            .map(|entry| entry.1);
        // SAFETY: the caller's promise.
        unsafe { put(name, found.map_or(std::ptr::null(), CStr::as_ptr)) }?;
        found.map(|_| ()).ok_or(INVALID_VALUE)
    })
}

/// # Safety
/// `text` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorString(code: CUresult, text: *mut *const c_char) -> CUresult {
    result(|| {
        enter("cuGetErrorString", false)?;
        let found = ERRORS
            .iter()
            .find(|entry| entry.0 == code)
            .map(|entry| entry.2);
        // SAFETY: the caller's promise.
        unsafe { put(text, found.map_or(std::ptr::null(), CStr::as_ptr)) }?;
        found.map(|_| ()).ok_or(INVALID_VALUE)
    })
}

// What the `cuda` example and the GPU tests call beyond the binding, so that they run here
// too: "device memory" is host memory, and the copy engine is `copy_nonoverlapping`.

/// Runs `body` with a live context current, as the driver requires of memory calls.
fn with_context(
    name: &'static str,
    body: impl FnOnce(&mut State) -> Result<(), CUresult>,
) -> CUresult {
    result(|| {
        let mut entered = enter(name, true)?;
        let state = entered.state();
        state.current_context()?;
        body(state)
    })
}

/// Allocates `len` zeroed bytes, 4096-aligned, never freed but by `release`.
fn allocate(len: usize) -> Result<usize, CUresult> {
    let layout =
        std::alloc::Layout::from_size_align(len.max(1), 4096).map_err(|_| INVALID_VALUE)?;
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        Err(2)
    } else {
        Ok(ptr as usize)
    }
}

/// Frees what `allocate(len)` returned.
fn release(base: usize, len: usize) {
    let layout = std::alloc::Layout::from_size_align(len.max(1), 4096).unwrap();
    // SAFETY: `base` came from `allocate(len)`, with this layout, and is freed once.
    unsafe { std::alloc::dealloc(base as *mut u8, layout) };
}

/// # Safety
/// `device_ptr` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAlloc_v2(device_ptr: *mut u64, len: usize) -> CUresult {
    with_context("cuMemAlloc_v2", |state| {
        if len == 0 {
            return Err(INVALID_VALUE);
        }
        let base = allocate(len)?;
        state.allocations.insert(base, len);
        // SAFETY: the caller's promise.
        unsafe { put(device_ptr, base as u64 + DEVICE_OFFSET) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFree_v2(device_ptr: u64) -> CUresult {
    with_context("cuMemFree_v2", |state| {
        let base = device_ptr.checked_sub(DEVICE_OFFSET).ok_or(INVALID_VALUE)? as usize;
        let len = state.allocations.remove(&base).ok_or(INVALID_VALUE)?;
        release(base, len);
        Ok(())
    })
}

/// # Safety
/// `ptr` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocHost_v2(ptr: *mut *mut c_void, len: usize) -> CUresult {
    with_context("cuMemAllocHost_v2", |state| {
        if len == 0 {
            return Err(INVALID_VALUE);
        }
        let base = allocate(len)?;
        state.host_allocations.insert(base, len);
        // SAFETY: the caller's promise.
        unsafe { put(ptr, base as *mut c_void) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemFreeHost(ptr: *mut c_void) -> CUresult {
    with_context("cuMemFreeHost", |state| {
        let len = state
            .host_allocations
            .remove(&(ptr as usize))
            .ok_or(INVALID_VALUE)?;
        release(ptr as usize, len);
        Ok(())
    })
}

/// # Safety
/// `src` is valid for reads of `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(dst: u64, src: *const c_void, len: usize) -> CUresult {
    with_context("cuMemcpyHtoD_v2", |state| {
        let dst = state.host_range(dst, len)?;
        // SAFETY: `dst` is `len` bytes of live fake device memory; `src` by the caller's promise.
        unsafe { std::ptr::copy(src.cast::<u8>(), dst, len) };
        Ok(())
    })
}

/// # Safety
/// `dst` is valid for writes of `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: u64, len: usize) -> CUresult {
    with_context("cuMemcpyDtoH_v2", |state| {
        let src = state.host_range(src, len)?;
        // SAFETY: as for cuMemcpyHtoD_v2, the other way round.
        unsafe { std::ptr::copy(src, dst.cast::<u8>(), len) };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemcpyDtoD_v2(dst: u64, src: u64, len: usize) -> CUresult {
    with_context("cuMemcpyDtoD_v2", |state| {
        let (dst, src) = (state.host_range(dst, len)?, state.host_range(src, len)?);
        // SAFETY: both are `len` bytes of live fake device memory.
        unsafe { std::ptr::copy(src, dst, len) };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuMemsetD32_v2(dst: u64, value: c_uint, count: usize) -> CUresult {
    with_context("cuMemsetD32_v2", |state| {
        if dst % 4 != 0 {
            return Err(INVALID_VALUE);
        }
        let len = count.checked_mul(4).ok_or(INVALID_VALUE)?;
        let dst = state.host_range(dst, len)?.cast::<c_uint>();
        for i in 0..count {
            // SAFETY: `dst` is `count` aligned words of live fake device memory.
            unsafe { dst.add(i).write_volatile(value) };
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxSynchronize() -> CUresult {
    with_context("cuCtxSynchronize", |_| Ok(()))
}

/// # Safety
/// `name` is valid for writes of `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, device: c_int) -> CUresult {
    result(|| {
        let mut entered = enter("cuDeviceGetName", true)?;
        if !entered.state().device_exists(device) || name.is_null() || len < 1 {
            return Err(if name.is_null() {
                INVALID_VALUE
            } else {
                INVALID_DEVICE
            });
        }
        let text = c"fake-cuda (no GPU: unimem's stand-in driver)".to_bytes_with_nul();
        let n = text.len().min(len as usize);
        // SAFETY: `name` is writable for `len >= n` bytes, by the caller's promise.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), name, n);
            name.add(n - 1).write(0);
        }
        Ok(())
    })
}

/// Reads a key as a string, or `None` for null or non-UTF-8.
///
/// # Safety
/// `key` is null or a valid C string.
unsafe fn key<'k>(key: *const c_char) -> Option<&'k str> {
    // SAFETY: the caller's promise.
    (!key.is_null()).then(|| unsafe { CStr::from_ptr(key) }.to_str().ok())?
}

/// Sets a setting (see the crate docs).
///
/// # Safety
/// `name` is a valid C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fake_cuda_set(name: *const c_char, value: i64) {
    // SAFETY: the caller's promise.
    let name = unsafe { key(name) }.expect("fake_cuda_set: the key must be UTF-8");
    let mut state = STATE.lock().unwrap_or_else(|poison| poison.into_inner());
    state
        .get_or_insert_with(State::default)
        .settings
        .insert(name.to_owned(), value);
}

/// Reads a counter or a fact (see the crate docs); -1 for an unknown key.
///
/// # Safety
/// `name` is a valid C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fake_cuda_get(name: *const c_char) -> i64 {
    // SAFETY: the caller's promise.
    let Some(name) = (unsafe { key(name) }) else {
        return -1;
    };
    let mut guard = STATE.lock().unwrap_or_else(|poison| poison.into_inner());
    let state = guard.get_or_insert_with(State::default);
    if let Some(entry) = name.strip_prefix("calls:") {
        return state.calls.get(entry).copied().unwrap_or(0);
    }
    if let Some((what, device)) = name.split_once(':') {
        let Some(device) = device
            .parse::<c_int>()
            .ok()
            .filter(|&device| (0..MAX_DEVICES as c_int).contains(&device))
        else {
            return -1;
        };
        return match what {
            "primary_refs" => state.primary_refs.get(&device).copied().unwrap_or(0),
            "primary_context" => context_handle(Kind::Primary, device) as i64,
            "user_context" => context_handle(Kind::User, device) as i64,
            _ => -1,
        };
    }
    match name {
        "registrations" => state.registrations.len() as i64,
        "primary_refs" => state.primary_refs.values().sum(),
        "primary_context" => context_handle(Kind::Primary, 0) as i64,
        "user_context" => context_handle(Kind::User, 0) as i64,
        "destroyed_context_uses" => state.destroyed_uses,
        "device_offset" => DEVICE_OFFSET as i64,
        "current" => STACK.with(|stack| stack.borrow().last().copied().unwrap_or(0)) as i64,
        "depth" => STACK.with(|stack| stack.borrow().len()) as i64,
        other => state.last.get(other).copied().unwrap_or(-1),
    }
}

/// The length registered at exactly `ptr`, or -1.
#[unsafe(no_mangle)]
pub extern "C" fn fake_cuda_registered(ptr: *const c_void) -> i64 {
    let mut guard = STATE.lock().unwrap_or_else(|poison| poison.into_inner());
    let state = guard.get_or_insert_with(State::default);
    state
        .registrations
        .get(&(ptr as usize))
        .map_or(-1, |&(len, _)| len as i64)
}
