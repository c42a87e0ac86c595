//! A stand-in for the CUDA driver library (`libcuda.so.1`) for unimem's `cuda` tests on
//! machines without a GPU.
//!
//! It exports the entry points unimem calls, under the same names and C signatures, and
//! behaves as the driver documents them: contexts form a per-thread stack, the primary context
//! is reference counted, registrations may not overlap, calls that need a context fail
//! without one. Every argument is checked, every call counted, and any entry point can be told
//! to fail with a given code.
//!
//! Tests drive it through three extra exports:
//! - `fake_cuda_set(key, value)`: `"version"` (what `cuDriverGetVersion` reports, 12040 by
//!   default), `"init_error"` (what `cuInit` returns, 0 by default), `"devices"` (how many
//!   exist, 1 by default), `"fail:<entry point>"` (the code that entry point returns from
//!   now on; 0 lets it work again);
//! - `fake_cuda_get(key)`: `"calls:<entry point>"`, `"registrations"` (live ones),
//!   `"primary_refs"`, `"last_flags"` (of the last registration), `"last_register_context"`,
//!   `"last_unregister_context"`, `"primary_context"`, `"user_context"` (a context a test may
//!   push itself), `"current"` and `"depth"` (the calling thread's context stack),
//!   `"device_offset"`; -1 for an unknown key;
//! - `fake_cuda_registered(ptr)`: the length registered at `ptr`, or -1.
//!
//! All state is per loaded copy of the library: a test that copies the file to a new path and
//! opens the copy gets a driver of its own, whatever other tests do at the same time.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::sync::{Mutex, MutexGuard};

type CUresult = c_int;
type CUcontext = *mut c_void;

const SUCCESS: CUresult = 0;
const INVALID_VALUE: CUresult = 1;
const NOT_INITIALIZED: CUresult = 3;
const INVALID_DEVICE: CUresult = 101;
const INVALID_CONTEXT: CUresult = 201;
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

/// Two distinct addresses serve as context handles.
static PRIMARY_CONTEXT: u8 = 0;
static USER_CONTEXT: u8 = 0;

fn primary_context() -> usize {
    &PRIMARY_CONTEXT as *const u8 as usize
}

fn user_context() -> usize {
    &USER_CONTEXT as *const u8 as usize
}

#[derive(Default)]
struct State {
    settings: HashMap<String, i64>,
    calls: HashMap<&'static str, i64>,
    /// Base address to (length, flags).
    registrations: BTreeMap<usize, (usize, c_uint)>,
    primary_refs: i64,
    initialized: bool,
    last: HashMap<&'static str, i64>,
}

impl State {
    fn setting(&self, key: &str, default: i64) -> i64 {
        self.settings.get(key).copied().unwrap_or(default)
    }

    fn device_exists(&self, device: c_int) -> bool {
        device >= 0 && i64::from(device) < self.setting("devices", 1)
    }

    /// The calling thread's current context, if it is one that may be used.
    fn current_context(&self) -> Option<usize> {
        let current = STACK.with(|stack| stack.borrow().last().copied())?;
        self.context_is_live(current).then_some(current)
    }

    fn context_is_live(&self, context: usize) -> bool {
        context == user_context() || (context == primary_context() && self.primary_refs > 0)
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
        unsafe { put(context, primary_context() as CUcontext) }?;
        state.primary_refs += 1;
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
        if state.primary_refs == 0 {
            return Err(INVALID_CONTEXT);
        }
        state.primary_refs -= 1;
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

#[unsafe(no_mangle)]
pub extern "C" fn cuCtxPushCurrent_v2(context: CUcontext) -> CUresult {
    result(|| {
        let mut entered = enter("cuCtxPushCurrent_v2", true)?;
        if !entered.state().context_is_live(context as usize) {
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
        let context = state.current_context().ok_or(INVALID_CONTEXT)?;
        if ptr.is_null() || len == 0 || flags & !KNOWN_REGISTER_FLAGS != 0 {
            return Err(INVALID_VALUE);
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
        let context = state.current_context().ok_or(INVALID_CONTEXT)?;
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
        state.current_context().ok_or(INVALID_CONTEXT)?;
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
    match name {
        "registrations" => state.registrations.len() as i64,
        "primary_refs" => state.primary_refs,
        "primary_context" => primary_context() as i64,
        "user_context" => user_context() as i64,
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
