//! The NVIDIA CUDA driver (`libcuda.so.1`), opened at run time with `dlopen`, and the calls
//! that register host memory with it.
//!
//! Nothing links against CUDA: a machine without the driver builds and runs everything else,
//! and finds out only when it asks for the driver. Each library is opened once per process and
//! never closed (the driver keeps per-process state that must outlive every registration).
//!
//! Context discipline: a registration uses only a context it owns, a reference to a device's
//! primary context retained for as long as it lives, never the caller's context (which other
//! code may destroy at any time): it only asks that context which device it is on. Every call
//! that needs a context is made with the primary context pushed on the calling thread's stack
//! and popped right after, so the caller's own current context (or the lack of one) is the
//! same after each call as before it.

use crate::ffi::cuda as cu;
use core::ffi::{CStr, c_char, c_int, c_void};
use core::ptr::{self, NonNull};
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;

pub(crate) use cu::{
    CUDA_ERROR_CONTEXT_IS_DESTROYED, CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED,
    CUDA_ERROR_INVALID_CONTEXT,
    CUDA_ERROR_INVALID_DEVICE, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_NO_DEVICE,
    CUDA_ERROR_NOT_PERMITTED, CUDA_ERROR_NOT_SUPPORTED, CUDA_ERROR_OUT_OF_MEMORY,
};

/// The driver's soname: the only library the safe `Driver::load` opens, through the loader's
/// search path.
pub(crate) const DEFAULT_LIBRARY: &str = "libcuda.so.1";
/// The environment variable that names another driver library (a path, or a soname), read
/// only by the unsafe `Driver::load_from_env`.
pub(crate) const LIBRARY_VARIABLE: &str = "UNIMEM_CUDA_DRIVER";
/// The oldest driver API accepted, as `cuDriverGetVersion` reports it: CUDA 11.0, the first
/// with every `_v2` entry point looked up below (`cuDevicePrimaryCtxRelease_v2` is the newest).
pub(crate) const MIN_VERSION: c_int = 11000;

/// A driver call that returned something other than `CUDA_SUCCESS`, with the driver's own
/// words for it.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The entry point, without its `_v2` suffix, as `cuda.h` users know it.
    pub(crate) call: &'static str,
    pub(crate) code: c_int,
    /// `cuGetErrorName`'s answer, or `CUresult <code>` when the driver does not know the code.
    pub(crate) name: String,
    /// `cuGetErrorString`'s answer, or empty.
    pub(crate) description: String,
}

/// Why a driver library could not be used.
#[derive(Debug, Clone)]
pub(crate) enum LoadFailure {
    /// `dlopen` failed; `reason` is `dlerror`'s text.
    Open { library: String, reason: String },
    /// The library lacks an entry point every CUDA 11 driver has: it is not a CUDA driver.
    Missing {
        library: String,
        symbol: &'static str,
    },
    /// `cuDriverGetVersion` reported a version older than [`MIN_VERSION`].
    TooOld { library: String, version: c_int },
    /// `cuDriverGetVersion` or `cuInit` failed.
    Call(Failure),
}

/// The entry points unimem calls, looked up once.
struct Api {
    init: cu::cuInit,
    device_get: cu::cuDeviceGet,
    primary_ctx_retain: cu::cuDevicePrimaryCtxRetain,
    primary_ctx_release: cu::cuDevicePrimaryCtxRelease_v2,
    ctx_get_current: cu::cuCtxGetCurrent,
    ctx_get_device: cu::cuCtxGetDevice,
    ctx_push_current: cu::cuCtxPushCurrent_v2,
    ctx_pop_current: cu::cuCtxPopCurrent_v2,
    mem_host_register: cu::cuMemHostRegister_v2,
    mem_host_unregister: cu::cuMemHostUnregister,
    mem_host_get_device_pointer: cu::cuMemHostGetDevicePointer_v2,
    get_error_name: cu::cuGetErrorName,
    get_error_string: cu::cuGetErrorString,
}

/// An opened, initialised driver library. Lives for the rest of the process.
pub(crate) struct Library {
    path: String,
    handle: NonNull<c_void>,
    version: c_int,
    api: Api,
}

// SAFETY: the handle and the function pointers are plain addresses into a library that stays
// loaded for the life of the process; `dlsym` may be called from any thread, and the CUDA
// driver API is thread-safe (every entry point may be called from any thread).
unsafe impl Send for Library {}
// SAFETY: as for Send; a `Library` is never mutated after it is made.
unsafe impl Sync for Library {}

/// Every library opened so far, by the name it was opened with, and how that went.
type Loaded = Vec<(OsString, Result<&'static Library, LoadFailure>)>;
static LOADED: Mutex<Loaded> = Mutex::new(Vec::new());

/// The system's driver, [`DEFAULT_LIBRARY`], opened once. The environment is not read: a
/// library named there is opened only by [`load_from_environment`], which is unsafe.
pub(crate) fn load_default() -> Result<&'static Library, LoadFailure> {
    // SAFETY: the NVIDIA driver's soname, found on the loader's search path: the system's
    // driver, or nothing.
    unsafe { load(OsStr::new(DEFAULT_LIBRARY)) }
}

/// The library [`LIBRARY_VARIABLE`] names (read now), or [`DEFAULT_LIBRARY`] when it is unset
/// or empty.
///
/// # Safety
/// What the variable names is a CUDA driver library, or nothing (as for `load`).
pub(crate) unsafe fn load_from_environment() -> Result<&'static Library, LoadFailure> {
    let name = match std::env::var_os(LIBRARY_VARIABLE) {
        Some(path) if !path.is_empty() => path,
        _ => OsString::from(DEFAULT_LIBRARY),
    };
    // SAFETY: the caller's promise.
    unsafe { load(&name) }
}

/// The driver library at `name` (a path, or a soname the loader searches for), opened and
/// initialised on the first call for that name; later calls give the same answer.
///
/// # Safety
/// `name` names a CUDA driver library, or nothing (see `Driver::load_from`).
pub(crate) unsafe fn load(name: &OsStr) -> Result<&'static Library, LoadFailure> {
    let mut loaded = LOADED.lock().unwrap_or_else(|poison| poison.into_inner());
    if let Some((_, result)) = loaded.iter().find(|(known, _)| known == name) {
        return result.clone();
    }
    // SAFETY: the caller's promise.
    let result = unsafe { Library::open(name) }.map(|library| &*Box::leak(Box::new(library)));
    loaded.push((name.to_owned(), result.clone()));
    result
}

impl Library {
    /// # Safety
    /// As for `load`.
    unsafe fn open(name: &OsStr) -> Result<Library, LoadFailure> {
        let path = name.to_string_lossy().into_owned();
        let Ok(c_name) = CString::new(name.as_bytes()) else {
            return Err(LoadFailure::Open {
                library: path,
                reason: "the name contains a NUL byte".to_owned(),
            });
        };
        // SAFETY: `c_name` is a valid C string, and names a driver library (the caller's
        // promise), whose initialisers are sound to run.
        let handle = unsafe { cu::dlopen(c_name.as_ptr(), cu::RTLD_NOW | cu::RTLD_LOCAL) };
        let Some(handle) = NonNull::new(handle) else {
            return Err(LoadFailure::Open {
                library: path,
                // SAFETY: dlerror returns null or a C string valid until the next loader call
                // on this thread; it is copied at once.
                reason: unsafe { c_text(cu::dlerror()) }
                    .unwrap_or_else(|| "dlopen failed without saying why".to_owned()),
            });
        };
        let missing = |symbol| LoadFailure::Missing {
            library: name.to_string_lossy().into_owned(),
            symbol,
        };
        macro_rules! lookup {
            ($name:literal as $ty:ty) => {{
                let name: &'static CStr = $name;
                let symbol =
                    symbol(handle, name).ok_or_else(|| missing(name.to_str().unwrap_or("?")))?;
                // SAFETY: a driver library (the caller's promise) exports this symbol as a
                // function with the signature `cuda.h` gives it, which `ffi/cuda.rs` declares
                // as `$ty`.
                unsafe { core::mem::transmute::<*mut c_void, $ty>(symbol.as_ptr()) }
            }};
        }
        let driver_get_version = lookup!(c"cuDriverGetVersion" as cu::cuDriverGetVersion);
        let get_error_name = lookup!(c"cuGetErrorName" as cu::cuGetErrorName);
        let get_error_string = lookup!(c"cuGetErrorString" as cu::cuGetErrorString);
        let mut version = 0;
        // SAFETY: `version` is a valid, writable int; cuDriverGetVersion needs no cuInit.
        let code = unsafe { driver_get_version(&mut version) };
        if code != cu::CUDA_SUCCESS {
            return Err(LoadFailure::Call(failure(
                get_error_name,
                get_error_string,
                "cuDriverGetVersion",
                code,
            )));
        }
        if version < MIN_VERSION {
            return Err(LoadFailure::TooOld {
                library: path,
                version,
            });
        }
        let api = Api {
            init: lookup!(c"cuInit" as cu::cuInit),
            device_get: lookup!(c"cuDeviceGet" as cu::cuDeviceGet),
            primary_ctx_retain: lookup!(
                c"cuDevicePrimaryCtxRetain" as cu::cuDevicePrimaryCtxRetain
            ),
            primary_ctx_release: lookup!(
                c"cuDevicePrimaryCtxRelease_v2" as cu::cuDevicePrimaryCtxRelease_v2
            ),
            ctx_get_current: lookup!(c"cuCtxGetCurrent" as cu::cuCtxGetCurrent),
            ctx_get_device: lookup!(c"cuCtxGetDevice" as cu::cuCtxGetDevice),
            ctx_push_current: lookup!(c"cuCtxPushCurrent_v2" as cu::cuCtxPushCurrent_v2),
            ctx_pop_current: lookup!(c"cuCtxPopCurrent_v2" as cu::cuCtxPopCurrent_v2),
            mem_host_register: lookup!(c"cuMemHostRegister_v2" as cu::cuMemHostRegister_v2),
            mem_host_unregister: lookup!(c"cuMemHostUnregister" as cu::cuMemHostUnregister),
            mem_host_get_device_pointer: lookup!(
                c"cuMemHostGetDevicePointer_v2" as cu::cuMemHostGetDevicePointer_v2
            ),
            get_error_name,
            get_error_string,
        };
        let library = Library {
            path,
            handle,
            version,
            api,
        };
        // SAFETY: cuInit takes flags, which must be 0; it may be called any number of times.
        let code = unsafe { (library.api.init)(0) };
        library.check("cuInit", code).map_err(LoadFailure::Call)?;
        Ok(library)
    }

    /// The name the library was opened with.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// What `cuDriverGetVersion` reported: 1000 × major + 10 × minor.
    pub(crate) fn version(&self) -> c_int {
        self.version
    }

    /// The address of the library's symbol `name`, if it has one.
    pub(crate) fn symbol(&self, name: &CStr) -> Option<NonNull<c_void>> {
        symbol(self.handle, name)
    }

    /// `Ok` for `CUDA_SUCCESS`, otherwise the failure in the driver's words.
    fn check(&self, call: &'static str, code: cu::CUresult) -> Result<(), Failure> {
        if code == cu::CUDA_SUCCESS {
            Ok(())
        } else {
            Err(failure(
                self.api.get_error_name,
                self.api.get_error_string,
                call,
                code,
            ))
        }
    }

    /// Registers `len` bytes at `ptr` with the driver, portable and mapped into the device's
    /// address space, under the primary context of the device of the calling thread's current
    /// context, or of device 0 when none is current. The registration holds a reference to
    /// that primary context until it is dropped, so it never depends on a context it does not
    /// own: the caller's context may be destroyed while it lives.
    ///
    /// # Safety
    /// `ptr..ptr + len` is mapped memory, and should stay mapped until the registration is
    /// dropped. (A registration that outlives the mapping, as a leaked one can, is not
    /// undefined behaviour in this process: the driver holds its own references to the pages
    /// it pinned, so they are not reused while it does.)
    pub(crate) unsafe fn register(
        &'static self,
        ptr: NonNull<u8>,
        len: usize,
    ) -> Result<Registered, Failure> {
        let primary = Primary::retain(self, self.device()?)?;
        let host = ptr.as_ptr().cast::<c_void>();
        let device_ptr = {
            // Declared after `primary`, so dropped (popped) before it on every early return.
            let _current = self.make_current(&primary)?;
            let flags = cu::CU_MEMHOSTREGISTER_PORTABLE | cu::CU_MEMHOSTREGISTER_DEVICEMAP;
            // SAFETY: `host..host + len` is mapped (the caller's promise); registering pins it
            // and changes none of its bytes.
            self.check("cuMemHostRegister", unsafe {
                (self.api.mem_host_register)(host, len, flags)
            })?;
            let mut device_ptr = 0;
            // SAFETY: `device_ptr` is a valid, writable CUdeviceptr; `host` was just
            // registered with DEVICEMAP; the flags must be 0.
            let code = unsafe { (self.api.mem_host_get_device_pointer)(&mut device_ptr, host, 0) };
            if let Err(failure) = self.check("cuMemHostGetDevicePointer", code) {
                // SAFETY: `host` is registered (above) under the current context; nothing
                // has been handed out for it.
                unsafe { (self.api.mem_host_unregister)(host) };
                return Err(failure);
            }
            device_ptr
        };
        Ok(Registered {
            host,
            device_ptr,
            primary: Some(primary),
        })
    }

    /// The device to register with: that of the calling thread's current context, or device
    /// 0 when none is current. Only the device is taken from the caller's context, never the
    /// context itself, which the caller may destroy at any time.
    fn device(&self) -> Result<cu::CUdevice, Failure> {
        let mut current = ptr::null_mut();
        // SAFETY: `current` is a valid, writable CUcontext.
        self.check("cuCtxGetCurrent", unsafe {
            (self.api.ctx_get_current)(&mut current)
        })?;
        let mut device = 0;
        if current.is_null() {
            // SAFETY: `device` is a valid, writable CUdevice; ordinal 0 is checked by the driver.
            self.check("cuDeviceGet", unsafe {
                (self.api.device_get)(&mut device, 0)
            })?;
        } else {
            // SAFETY: `device` is a valid, writable CUdevice. The current context is the
            // driver's per-thread state, not a handle passed in: if other code destroyed it
            // on another thread, the driver documents that using it from this one fails with
            // CUDA_ERROR_CONTEXT_IS_DESTROYED (and on this thread, cuCtxDestroy pops it).
            self.check("cuCtxGetDevice", unsafe {
                (self.api.ctx_get_device)(&mut device)
            })?;
        }
        Ok(device)
    }

    /// Pushes `primary`'s context on the calling thread; the guard pops it.
    fn make_current<'p>(&self, primary: &'p Primary) -> Result<Current<'p>, Failure> {
        // SAFETY: the context is live: `primary` holds a reference to it.
        self.check("cuCtxPushCurrent", unsafe {
            (self.api.ctx_push_current)(primary.context)
        })?;
        Ok(Current { primary })
    }
}

/// A primary context pushed on the calling thread by `make_current`, popped on drop. It
/// borrows the reference that keeps the context alive, so it cannot outlive it.
struct Current<'p> {
    primary: &'p Primary,
}

impl Drop for Current<'_> {
    fn drop(&mut self) {
        let mut popped = ptr::null_mut();
        // SAFETY: `popped` is a valid, writable CUcontext; this pops the push that made the
        // guard, on the same thread (the guard lives in one stack frame).
        unsafe { (self.primary.library.api.ctx_pop_current)(&mut popped) };
    }
}

/// A reference to a device's primary context (`cuDevicePrimaryCtxRetain`), released on drop or
/// by `release`.
struct Primary {
    library: &'static Library,
    device: cu::CUdevice,
    context: cu::CUcontext,
}

impl Primary {
    /// Retains `device`'s primary context, creating it if no one holds it yet.
    fn retain(library: &'static Library, device: cu::CUdevice) -> Result<Primary, Failure> {
        let mut context = ptr::null_mut();
        // SAFETY: `context` is a valid, writable CUcontext; the driver checks `device`.
        library.check("cuDevicePrimaryCtxRetain", unsafe {
            (library.api.primary_ctx_retain)(&mut context, device)
        })?;
        Ok(Primary {
            library,
            device,
            context,
        })
    }

    /// Releases the reference, reporting what the driver says.
    fn release(self) -> Result<(), Failure> {
        let (library, device) = (self.library, self.device);
        core::mem::forget(self);
        // SAFETY: releases the one reference `retain` took; `self` is gone, so it is released
        // once.
        library.check("cuDevicePrimaryCtxRelease", unsafe {
            (library.api.primary_ctx_release)(device)
        })
    }
}

impl Drop for Primary {
    fn drop(&mut self) {
        // SAFETY: releases the one reference `retain` took (`release` forgets the guard, so
        // this runs only when it was not called).
        unsafe { (self.library.api.primary_ctx_release)(self.device) };
    }
}

/// Host memory registered with the driver under a primary context it holds a reference to;
/// unregistered, and the reference released, on drop.
pub(crate) struct Registered {
    host: *mut c_void,
    device_ptr: u64,
    /// `None` once unregistered.
    primary: Option<Primary>,
}

// SAFETY: the fields are addresses and handles that any thread may use: the driver API is
// thread-safe, a context may be made current on any thread (every use pushes it on the
// calling thread first), and a primary-context reference may be released from any thread.
unsafe impl Send for Registered {}
// SAFETY: `&Registered` only reads fields fixed at creation.
unsafe impl Sync for Registered {}

impl Registered {
    /// The registered memory's address in the device's address space.
    pub(crate) fn device_ptr(&self) -> u64 {
        self.device_ptr
    }

    /// The primary context the memory was registered under, which this holds a reference to.
    pub(crate) fn context(&self) -> *mut c_void {
        self.live().context
    }

    /// The library the memory is registered with.
    pub(crate) fn library(&self) -> &'static Library {
        self.live().library
    }

    /// The primary context reference, there from `register` until `release`, which only
    /// `unregister` (by value) and `drop` call.
    fn live(&self) -> &Primary {
        self.primary
            .as_ref()
            .expect("a Registered is only used before it is released")
    }

    /// Unregisters now, reporting what the driver says.
    pub(crate) fn unregister(mut self) -> Result<(), Failure> {
        self.release()
    }

    fn release(&mut self) -> Result<(), Failure> {
        let Some(primary) = self.primary.take() else {
            return Ok(());
        };
        let library = primary.library;
        let unregistered = library.make_current(&primary).and_then(|_current| {
            // SAFETY: `host` is the address registered in `register`, under this context.
            library.check("cuMemHostUnregister", unsafe {
                (library.api.mem_host_unregister)(self.host)
            })
            // `_current` pops here, before the primary context is released.
        });
        unregistered.and(primary.release())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // Nothing can be reported from a destructor; `unregister` reports. A failure leaves
        // the pages pinned by the driver until the process exits, which wastes memory but
        // cannot corrupt it: the driver holds its own references to them.
        let _ = self.release();
    }
}

fn symbol(handle: NonNull<c_void>, name: &CStr) -> Option<NonNull<c_void>> {
    // SAFETY: `handle` came from dlopen and is never closed; `name` is a valid C string.
    NonNull::new(unsafe { cu::dlsym(handle.as_ptr(), name.as_ptr()) })
}

/// A failure of `call` with `code`, named by the driver's own tables.
fn failure(
    get_error_name: cu::cuGetErrorName,
    get_error_string: cu::cuGetErrorString,
    call: &'static str,
    code: cu::CUresult,
) -> Failure {
    let mut name = ptr::null();
    let mut description = ptr::null();
    // SAFETY: both out-parameters are valid, writable pointers; the driver sets them to
    // static strings, or leaves them null (they were null before) for a code it does not know.
    let name = unsafe {
        (get_error_name)(code, &mut name);
        c_text(name)
    };
    // SAFETY: as above.
    let description = unsafe {
        (get_error_string)(code, &mut description);
        c_text(description)
    };
    Failure {
        call,
        code,
        name: name.unwrap_or_else(|| format!("CUresult {code}")),
        description: description.unwrap_or_default(),
    }
}

/// Copies a C string, or `None` for null.
///
/// # Safety
/// `text` is null or points to a NUL-terminated string that stays valid during the call.
unsafe fn c_text(text: *const c_char) -> Option<String> {
    if text.is_null() {
        return None;
    }
    // SAFETY: non-null, and the caller promises a valid C string.
    let text = unsafe { CStr::from_ptr(text) };
    Some(text.to_string_lossy().into_owned())
}
