//! The dynamic loader (`dlopen`, `dlsym`, `dlerror`) and the few CUDA driver API entry points
//! unimem calls, as function-pointer types: nothing here links against CUDA. The driver library
//! is opened at run time and each entry point looked up by name (`sys/cuda.rs`).
//!
//! The CUDA names, types and values follow NVIDIA's `cuda.h` (driver API). Where `cuda.h`
//! maps a name to a versioned symbol (`#define cuMemHostRegister cuMemHostRegister_v2`), the
//! versioned symbol is the one to look up, and the type here is the versioned one's.

use core::ffi::{c_char, c_int, c_uint, c_void};

/// `dlopen` flag: resolve every symbol of the library now, so that a broken driver fails here
/// rather than at some later call.
pub const RTLD_NOW: c_int = 2;
/// `dlopen` flag: keep the library's symbols out of the global namespace (glibc's value).
pub const RTLD_LOCAL: c_int = 0;

// In glibc 2.34 and later these live in libc itself; before that in libdl, which the Rust
// standard library already links on linux-gnu. Nothing CUDA is linked.
unsafe extern "C" {
    pub fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    pub fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    pub fn dlerror() -> *mut c_char;
}

/// `CUresult`: every driver call's status; `CUDA_SUCCESS` is zero.
pub type CUresult = c_int;
/// `CUdevice`: a device ordinal as the driver knows it.
pub type CUdevice = c_int;
/// `CUcontext`: an opaque pointer to a driver context (`struct CUctx_st *`).
pub type CUcontext = *mut c_void;
/// `CUdeviceptr`: an address in the device's (unified) address space, 64 bits wide on every
/// 64-bit host (`unsigned long long` since CUDA 3.2's `_v2` API).
pub type CUdeviceptr = u64;

/// The call succeeded.
pub const CUDA_SUCCESS: CUresult = 0;
/// A parameter was out of range.
pub const CUDA_ERROR_INVALID_VALUE: CUresult = 1;
/// The driver could not allocate (or, registering, pin) what was asked.
pub const CUDA_ERROR_OUT_OF_MEMORY: CUresult = 2;
/// No CUDA-capable device is visible to the process.
pub const CUDA_ERROR_NO_DEVICE: CUresult = 100;
/// The device ordinal does not name a device.
pub const CUDA_ERROR_INVALID_DEVICE: CUresult = 101;
/// No context is current, or the context given is not valid.
pub const CUDA_ERROR_INVALID_CONTEXT: CUresult = 201;
/// The calling thread's current context was destroyed (by another thread, with
/// `cuCtxDestroy`), or is a primary context not initialised yet.
pub const CUDA_ERROR_CONTEXT_IS_DESTROYED: CUresult = 709;
/// Some of the range is already registered (`cuMemHostRegister`).
pub const CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED: CUresult = 712;
/// The operation is not permitted (e.g. host registration under some virtualised GPUs).
pub const CUDA_ERROR_NOT_PERMITTED: CUresult = 800;
/// The operation is not supported on this device or system.
pub const CUDA_ERROR_NOT_SUPPORTED: CUresult = 801;

/// `cuMemHostRegister` flag: the memory counts as pinned for every context, not just the one
/// that registered it.
pub const CU_MEMHOSTREGISTER_PORTABLE: c_uint = 0x01;
/// `cuMemHostRegister` flag: map the memory into the device's address space, so that
/// `cuMemHostGetDevicePointer` gives an address the device can use.
pub const CU_MEMHOSTREGISTER_DEVICEMAP: c_uint = 0x02;

/// `cuInit(unsigned int Flags)`; `Flags` must be 0.
pub type cuInit = unsafe extern "C" fn(flags: c_uint) -> CUresult;
/// `cuDriverGetVersion(int *driverVersion)`: 1000 × major + 10 × minor.
pub type cuDriverGetVersion = unsafe extern "C" fn(version: *mut c_int) -> CUresult;
/// `cuDeviceGet(CUdevice *device, int ordinal)`.
pub type cuDeviceGet = unsafe extern "C" fn(device: *mut CUdevice, ordinal: c_int) -> CUresult;
/// `cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)`: the device's primary context
/// (the one the CUDA runtime uses), created on the first retain, reference counted.
pub type cuDevicePrimaryCtxRetain =
    unsafe extern "C" fn(context: *mut CUcontext, device: CUdevice) -> CUresult;
/// `cuDevicePrimaryCtxRelease_v2(CUdevice dev)`: drops one reference taken by a retain.
pub type cuDevicePrimaryCtxRelease_v2 = unsafe extern "C" fn(device: CUdevice) -> CUresult;
/// `cuCtxGetCurrent(CUcontext *pctx)`: the calling thread's current context, or null.
pub type cuCtxGetCurrent = unsafe extern "C" fn(context: *mut CUcontext) -> CUresult;
/// `cuCtxGetDevice(CUdevice *device)`: the device of the calling thread's current context.
pub type cuCtxGetDevice = unsafe extern "C" fn(device: *mut CUdevice) -> CUresult;
/// `cuCtxPushCurrent_v2(CUcontext ctx)`: makes `ctx` current on the calling thread.
pub type cuCtxPushCurrent_v2 = unsafe extern "C" fn(context: CUcontext) -> CUresult;
/// `cuCtxPopCurrent_v2(CUcontext *pctx)`: undoes the last push on the calling thread.
pub type cuCtxPopCurrent_v2 = unsafe extern "C" fn(context: *mut CUcontext) -> CUresult;
/// `cuMemHostRegister_v2(void *p, size_t bytesize, unsigned int Flags)`.
pub type cuMemHostRegister_v2 =
    unsafe extern "C" fn(ptr: *mut c_void, len: usize, flags: c_uint) -> CUresult;
/// `cuMemHostUnregister(void *p)`: `p` is the address that was registered.
pub type cuMemHostUnregister = unsafe extern "C" fn(ptr: *mut c_void) -> CUresult;
/// `cuMemHostGetDevicePointer_v2(CUdeviceptr *pdptr, void *p, unsigned int Flags)`; `Flags`
/// must be 0.
pub type cuMemHostGetDevicePointer_v2 =
    unsafe extern "C" fn(device_ptr: *mut CUdeviceptr, ptr: *mut c_void, flags: c_uint) -> CUresult;
/// `cuGetErrorName(CUresult error, const char **pStr)`: the enum name, a static string; fails
/// with `CUDA_ERROR_INVALID_VALUE` (and sets `*pStr` to null) for a code it does not know.
pub type cuGetErrorName =
    unsafe extern "C" fn(error: CUresult, name: *mut *const c_char) -> CUresult;
/// `cuGetErrorString(CUresult error, const char **pStr)`: a sentence, likewise.
pub type cuGetErrorString =
    unsafe extern "C" fn(error: CUresult, text: *mut *const c_char) -> CUresult;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_constants_match_libc() {
        assert_eq!(RTLD_NOW, libc::RTLD_NOW);
        assert_eq!(RTLD_LOCAL, libc::RTLD_LOCAL);
    }

    /// The one layout that matters: a device pointer is what the driver writes through
    /// `CUdeviceptr *`, 8 bytes.
    const _: () = assert!(size_of::<CUdeviceptr>() == 8);
}
