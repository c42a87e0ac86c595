//! The CUDA driver calls that unimem does not make, for the `cuda` example and the GPU tests:
//! what a program's own CUDA bindings would provide. Looked up in unimem's loaded driver with
//! `Driver::symbol`, with the types `cuda.h` gives them.

#![allow(dead_code, reason = "the example and the tests each use some of these")]

use std::ffi::{CStr, c_int, c_uint, c_void};
use unimem::cuda::Driver;

pub type Context = *mut c_void;

pub struct Calls {
    /// The driver the calls were looked up in, which registrations go through too.
    pub driver: Driver,
    pub device_get: unsafe extern "C" fn(*mut c_int, c_int) -> c_int,
    pub device_get_name: unsafe extern "C" fn(*mut u8, c_int, c_int) -> c_int,
    pub primary_ctx_retain: unsafe extern "C" fn(*mut Context, c_int) -> c_int,
    pub primary_ctx_release: unsafe extern "C" fn(c_int) -> c_int,
    pub ctx_push_current: unsafe extern "C" fn(Context) -> c_int,
    pub ctx_pop_current: unsafe extern "C" fn(*mut Context) -> c_int,
    pub ctx_synchronize: unsafe extern "C" fn() -> c_int,
    pub mem_alloc: unsafe extern "C" fn(*mut u64, usize) -> c_int,
    pub mem_free: unsafe extern "C" fn(u64) -> c_int,
    pub mem_alloc_host: unsafe extern "C" fn(*mut *mut c_void, usize) -> c_int,
    pub mem_free_host: unsafe extern "C" fn(*mut c_void) -> c_int,
    pub memcpy_htod: unsafe extern "C" fn(u64, *const c_void, usize) -> c_int,
    pub memcpy_dtoh: unsafe extern "C" fn(*mut c_void, u64, usize) -> c_int,
    pub memcpy_dtod: unsafe extern "C" fn(u64, u64, usize) -> c_int,
    pub memset_d32: unsafe extern "C" fn(u64, c_uint, usize) -> c_int,
}

/// Looks `name` up and gives it the type `T`.
///
/// # Safety
/// `T` is the function-pointer type `cuda.h` declares for `name`.
unsafe fn lookup<T: Copy>(driver: Driver, name: &CStr) -> T {
    let symbol = driver
        .symbol(name)
        .unwrap_or_else(|| panic!("the driver at {} has no {name:?}", driver.path()));
    assert_eq!(size_of::<T>(), size_of::<*mut c_void>());
    // SAFETY: T is a function pointer of the symbol's type, by the caller's promise.
    unsafe { core::mem::transmute_copy(&symbol.as_ptr()) }
}

impl Calls {
    pub fn new(driver: Driver) -> Calls {
        // SAFETY: each type is the one cuda.h declares for the name (the `_v2` ones where
        // cuda.h maps the plain name to `_v2`).
        unsafe {
            Calls {
                driver,
                device_get: lookup(driver, c"cuDeviceGet"),
                device_get_name: lookup(driver, c"cuDeviceGetName"),
                primary_ctx_retain: lookup(driver, c"cuDevicePrimaryCtxRetain"),
                primary_ctx_release: lookup(driver, c"cuDevicePrimaryCtxRelease_v2"),
                ctx_push_current: lookup(driver, c"cuCtxPushCurrent_v2"),
                ctx_pop_current: lookup(driver, c"cuCtxPopCurrent_v2"),
                ctx_synchronize: lookup(driver, c"cuCtxSynchronize"),
                mem_alloc: lookup(driver, c"cuMemAlloc_v2"),
                mem_free: lookup(driver, c"cuMemFree_v2"),
                mem_alloc_host: lookup(driver, c"cuMemAllocHost_v2"),
                mem_free_host: lookup(driver, c"cuMemFreeHost"),
                memcpy_htod: lookup(driver, c"cuMemcpyHtoD_v2"),
                memcpy_dtoh: lookup(driver, c"cuMemcpyDtoH_v2"),
                memcpy_dtod: lookup(driver, c"cuMemcpyDtoD_v2"),
                memset_d32: lookup(driver, c"cuMemsetD32_v2"),
            }
        }
    }
}

/// Panics with the call's name unless it returned `CUDA_SUCCESS`.
#[track_caller]
pub fn check(call: &str, code: c_int) {
    assert_eq!(code, 0, "{call} failed with CUresult {code}");
}

/// Device 0's primary context, retained and made current on this thread until dropped: what
/// the CUDA runtime does for a program on its first call.
pub struct PrimaryContext<'c> {
    calls: &'c Calls,
    device: c_int,
    pub context: Context,
}

impl<'c> PrimaryContext<'c> {
    pub fn enter(calls: &'c Calls) -> PrimaryContext<'c> {
        let mut device = 0;
        let mut context = core::ptr::null_mut();
        // SAFETY: valid out-parameters; the context is pushed after a successful retain.
        unsafe {
            check("cuDeviceGet", (calls.device_get)(&mut device, 0));
            check(
                "cuDevicePrimaryCtxRetain",
                (calls.primary_ctx_retain)(&mut context, device),
            );
            check("cuCtxPushCurrent", (calls.ctx_push_current)(context));
        }
        PrimaryContext {
            calls,
            device,
            context,
        }
    }

    /// The device's name, as `nvidia-smi` shows it.
    pub fn device_name(&self) -> String {
        let mut name = [0u8; 256];
        // SAFETY: the buffer is writable for its length.
        check("cuDeviceGetName", unsafe {
            (self.calls.device_get_name)(name.as_mut_ptr(), name.len() as c_int, self.device)
        });
        CStr::from_bytes_until_nul(&name)
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

impl Drop for PrimaryContext<'_> {
    fn drop(&mut self) {
        let mut popped = core::ptr::null_mut();
        // SAFETY: pops the push of `enter`, on the same thread, and releases its retain.
        unsafe {
            (self.calls.ctx_pop_current)(&mut popped);
            (self.calls.primary_ctx_release)(self.device);
        }
    }
}
