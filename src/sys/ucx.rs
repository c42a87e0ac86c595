//! UCX's protocol layer (`libucp.so.0`), opened at run time with `dlopen`, and the calls that
//! make a context and a worker, connect endpoints, register memory and move bytes one-sidedly.
//!
//! Nothing links against UCX: a machine without it builds and runs everything else, and finds
//! out only when it asks for UCX. The library is opened once per process and never closed.
//!
//! Each handle type below owns one UCX object and releases it on drop. Which object must
//! outlive which (a worker its endpoints, an endpoint its remote keys) is kept by the public
//! module's lifetimes; the functions that rely on it are `unsafe` here and say so.

use crate::ffi::ucx as ucp;
use core::ffi::{CStr, c_char, c_void};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicI8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub(crate) use ucp::{
    UCS_ERR_CONNECTION_RESET, UCS_ERR_ENDPOINT_TIMEOUT, UCS_ERR_NO_MEMORY, UCS_ERR_NOT_CONNECTED,
    UCS_ERR_UNREACHABLE,
};

/// UCP's soname: the library opened by [`load`].
pub(crate) const LIBRARY: &str = "libucp.so.0";
/// The environment variable that [`load_from_env`] reads: another UCP library (a path, or a
/// soname).
pub(crate) const LIBRARY_VARIABLE: &str = "UNIMEM_UCX_LIBRARY";

/// How long a put or get whose endpoint was force-closed may take to complete before it is
/// released.
const ABANDON_GRACE: Duration = Duration::from_secs(2);

/// A UCX call that did not return `UCS_OK`, with UCX's own words for the status.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) call: &'static str,
    pub(crate) status: i8,
    /// `ucs_status_string`'s answer.
    pub(crate) description: String,
}

/// Why `libucp.so.0` could not be used.
#[derive(Debug, Clone)]
pub(crate) struct LoadFailure {
    pub(crate) library: String,
    pub(crate) reason: String,
}

/// The entry points unimem calls, looked up once.
struct Api {
    init_version: ucp::ucp_init_version,
    get_version: ucp::ucp_get_version,
    cleanup: ucp::ucp_cleanup,
    worker_create: ucp::ucp_worker_create,
    worker_destroy: ucp::ucp_worker_destroy,
    worker_get_address: ucp::ucp_worker_get_address,
    worker_release_address: ucp::ucp_worker_release_address,
    worker_progress: ucp::ucp_worker_progress,
    worker_flush_nbx: ucp::ucp_worker_flush_nbx,
    ep_create: ucp::ucp_ep_create,
    ep_close_nbx: ucp::ucp_ep_close_nbx,
    ep_flush_nbx: ucp::ucp_ep_flush_nbx,
    mem_map: ucp::ucp_mem_map,
    mem_unmap: ucp::ucp_mem_unmap,
    rkey_pack: ucp::ucp_rkey_pack,
    rkey_buffer_release: ucp::ucp_rkey_buffer_release,
    ep_rkey_unpack: ucp::ucp_ep_rkey_unpack,
    rkey_destroy: ucp::ucp_rkey_destroy,
    put_nbx: ucp::ucp_put_nbx,
    get_nbx: ucp::ucp_get_nbx,
    request_check_status: ucp::ucp_request_check_status,
    request_free: ucp::ucp_request_free,
    status_string: ucp::ucs_status_string,
}

/// The opened library. Lives for the rest of the process.
pub(crate) struct Library {
    api: Api,
    version: (u32, u32, u32),
}

// SAFETY: only function pointers into a library that stays loaded for the life of the process,
// and a version, never mutated after it is made; the entry points used through shared
// references (`ucp_init_version`, `ucs_status_string`, `ucp_get_version`) are thread-safe.
unsafe impl Send for Library {}
// SAFETY: as for Send.
unsafe impl Sync for Library {}

/// `libucp.so.0`, found by the dynamic loader's usual search, opened on the first call; later
/// calls give the same answer. Nothing from the environment chooses the file but what the
/// loader itself reads (`LD_LIBRARY_PATH`).
pub(crate) fn load() -> Result<&'static Library, LoadFailure> {
    static LOADED: OnceLock<Result<Library, LoadFailure>> = OnceLock::new();
    LOADED
        // SAFETY: the system's UCX library, found as every system library is; its entry points
        // have the signatures ffi/ucx.rs declares (checked against ucp.h in CI).
        .get_or_init(|| unsafe { Library::open(LIBRARY) })
        .as_ref()
        .map_err(Clone::clone)
}

/// The library [`LIBRARY_VARIABLE`] names (read now), opened on its first use; [`load`] when
/// the variable is unset or empty.
///
/// # Safety
/// Where the variable is set, it names UCX's protocol library (1.13 or newer), whose entry
/// points have the signatures ffi/ucx.rs declares: any other library's functions of those
/// names would be called as if they were UCX's.
pub(crate) unsafe fn load_from_env() -> Result<&'static Library, LoadFailure> {
    let name = match std::env::var(LIBRARY_VARIABLE) {
        Ok(name) if !name.is_empty() => name,
        _ => return load(),
    };
    // Every library named so far, opened once each: an opened library stays loaded for the
    // rest of the process, so each answer may be kept for good.
    type Opened = Vec<(String, &'static Result<Library, LoadFailure>)>;
    static NAMED: std::sync::Mutex<Opened> = std::sync::Mutex::new(Vec::new());
    let mut named = NAMED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let found = match named.iter().find(|(opened, _)| *opened == name) {
        Some(&(_, result)) => result,
        None => {
            // SAFETY: the caller's promise about the library the variable names.
            let result: &'static _ = Box::leak(Box::new(unsafe { Library::open(&name) }));
            named.push((name, result));
            result
        }
    };
    found.as_ref().map_err(Clone::clone)
}

/// The C string at `text`, copied, or `None` for null.
///
/// # Safety
/// `text` is null or points to a NUL-terminated string.
unsafe fn c_text(text: *const c_char) -> Option<String> {
    // SAFETY: the caller's promise.
    (!text.is_null()).then(|| unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned())
}

impl Library {
    /// # Safety
    /// `library` is UCX's protocol library, whose entry points have the
    /// signatures `ffi/ucx.rs` declares.
    unsafe fn open(library: &str) -> Result<Library, LoadFailure> {
        let Ok(name) = std::ffi::CString::new(library) else {
            return Err(LoadFailure {
                library: library.to_owned(),
                reason: "the name contains a NUL byte".to_owned(),
            });
        };
        // SAFETY: a valid C string; opening UCX runs its initialisers, which are sound.
        let handle = unsafe { ucp::dlopen(name.as_ptr(), ucp::RTLD_NOW | ucp::RTLD_LOCAL) };
        let Some(handle) = NonNull::new(handle) else {
            return Err(LoadFailure {
                library: library.to_owned(),
                // SAFETY: dlerror returns null or a C string valid until the next loader call
                // on this thread; it is copied at once.
                reason: unsafe { c_text(ucp::dlerror()) }
                    .unwrap_or_else(|| "dlopen failed without saying why".to_owned()),
            });
        };
        macro_rules! lookup {
            ($name:literal as $ty:ty) => {{
                let name: &'static CStr = $name;
                // SAFETY: `handle` is an open library and `name` a C string.
                let symbol = unsafe { ucp::dlsym(handle.as_ptr(), name.as_ptr()) };
                if symbol.is_null() {
                    return Err(LoadFailure {
                        library: library.to_owned(),
                        reason: format!(
                            "it has no {}, which UCX 1.13 and later export",
                            name.to_string_lossy()
                        ),
                    });
                }
                // SAFETY: UCX exports this symbol as a function with the signature its
                // headers give it, which `ffi/ucx.rs` declares as `$ty` (checked against the
                // headers for the structs it takes).
                unsafe { core::mem::transmute::<*mut c_void, $ty>(symbol) }
            }};
        }
        let api = Api {
            init_version: lookup!(c"ucp_init_version" as ucp::ucp_init_version),
            get_version: lookup!(c"ucp_get_version" as ucp::ucp_get_version),
            cleanup: lookup!(c"ucp_cleanup" as ucp::ucp_cleanup),
            worker_create: lookup!(c"ucp_worker_create" as ucp::ucp_worker_create),
            worker_destroy: lookup!(c"ucp_worker_destroy" as ucp::ucp_worker_destroy),
            worker_get_address: lookup!(c"ucp_worker_get_address" as ucp::ucp_worker_get_address),
            worker_release_address: lookup!(
                c"ucp_worker_release_address" as ucp::ucp_worker_release_address
            ),
            worker_progress: lookup!(c"ucp_worker_progress" as ucp::ucp_worker_progress),
            worker_flush_nbx: lookup!(c"ucp_worker_flush_nbx" as ucp::ucp_worker_flush_nbx),
            ep_create: lookup!(c"ucp_ep_create" as ucp::ucp_ep_create),
            ep_close_nbx: lookup!(c"ucp_ep_close_nbx" as ucp::ucp_ep_close_nbx),
            ep_flush_nbx: lookup!(c"ucp_ep_flush_nbx" as ucp::ucp_ep_flush_nbx),
            mem_map: lookup!(c"ucp_mem_map" as ucp::ucp_mem_map),
            mem_unmap: lookup!(c"ucp_mem_unmap" as ucp::ucp_mem_unmap),
            rkey_pack: lookup!(c"ucp_rkey_pack" as ucp::ucp_rkey_pack),
            rkey_buffer_release: lookup!(
                c"ucp_rkey_buffer_release" as ucp::ucp_rkey_buffer_release
            ),
            ep_rkey_unpack: lookup!(c"ucp_ep_rkey_unpack" as ucp::ucp_ep_rkey_unpack),
            rkey_destroy: lookup!(c"ucp_rkey_destroy" as ucp::ucp_rkey_destroy),
            put_nbx: lookup!(c"ucp_put_nbx" as ucp::ucp_put_nbx),
            get_nbx: lookup!(c"ucp_get_nbx" as ucp::ucp_get_nbx),
            request_check_status: lookup!(
                c"ucp_request_check_status" as ucp::ucp_request_check_status
            ),
            request_free: lookup!(c"ucp_request_free" as ucp::ucp_request_free),
            status_string: lookup!(c"ucs_status_string" as ucp::ucs_status_string),
        };
        let (mut major, mut minor, mut release) = (0, 0, 0);
        // SAFETY: three valid, writable unsigned ints.
        unsafe { (api.get_version)(&mut major, &mut minor, &mut release) };
        if (major, minor) < (ucp::UCP_API_MAJOR, ucp::UCP_API_MINOR) {
            return Err(LoadFailure {
                library: library.to_owned(),
                reason: format!(
                    "it is UCX {major}.{minor}.{release}; unimem needs {}.{} or newer",
                    ucp::UCP_API_MAJOR,
                    ucp::UCP_API_MINOR
                ),
            });
        }
        Ok(Library {
            api,
            version: (major, minor, release),
        })
    }

    /// UCX's version: major, minor, release.
    pub(crate) fn version(&self) -> (u32, u32, u32) {
        self.version
    }

    /// UCX's words for `status`.
    pub(crate) fn describe(&self, status: i8) -> String {
        // SAFETY: ucs_status_string takes any status and returns a static string ("Unknown
        // error" for codes it does not know).
        unsafe { c_text((self.api.status_string)(status)) }.unwrap_or_default()
    }

    fn check(&self, call: &'static str, status: ucp::ucs_status_t) -> Result<(), Failure> {
        if status == ucp::UCS_OK {
            Ok(())
        } else {
            Err(self.failure(call, status))
        }
    }

    fn failure(&self, call: &'static str, status: ucp::ucs_status_t) -> Failure {
        Failure {
            call,
            status,
            description: self.describe(status),
        }
    }

    /// A new context with the RMA feature, configured from the environment (`UCX_TLS`,
    /// `UCX_NET_DEVICES`, ...), and a worker on it that one thread at a time may use.
    pub(crate) fn worker(&'static self) -> Result<Worker, Failure> {
        let name = c"unimem";
        let params = ucp::ucp_params_t {
            field_mask: ucp::UCP_PARAM_FIELD_FEATURES
                | ucp::UCP_PARAM_FIELD_MT_WORKERS_SHARED
                | ucp::UCP_PARAM_FIELD_NAME,
            features: ucp::UCP_FEATURE_RMA,
            request_size: 0,
            request_init: None,
            request_cleanup: None,
            tag_sender_mask: 0,
            // Registrations are Send and Sync, so `ucp_mem_map`, `ucp_mem_unmap` and
            // `ucp_rkey_pack` may run on other threads than the worker's: this makes UCX guard
            // the context's state with a real lock (it is a no-op lock otherwise).
            mt_workers_shared: 1,
            estimated_num_eps: 0,
            estimated_num_ppn: 0,
            name: name.as_ptr(),
        };
        let mut context = ptr::null_mut();
        // SAFETY: `params` is a valid ucp_params_t whose mask names only initialised fields;
        // a null config makes UCX read its configuration from the environment; `context` is
        // writable.
        self.check("ucp_init", unsafe {
            (self.api.init_version)(
                ucp::UCP_API_MAJOR,
                ucp::UCP_API_MINOR,
                &params,
                ptr::null(),
                &mut context,
            )
        })?;
        let context = Arc::new(Context {
            library: self,
            handle: context,
        });
        // SAFETY: all-zero is a valid ucp_worker_params_t (integers and null pointers); only
        // the fields named in the mask are read.
        let mut params: ucp::ucp_worker_params_t = unsafe { core::mem::zeroed() };
        params.field_mask = ucp::UCP_WORKER_PARAM_FIELD_THREAD_MODE;
        params.thread_mode = ucp::UCS_THREAD_MODE_SERIALIZED;
        let mut worker = ptr::null_mut();
        // SAFETY: a live context, valid params, a writable handle.
        self.check("ucp_worker_create", unsafe {
            (self.api.worker_create)(context.handle, &params, &mut worker)
        })?;
        Ok(Worker {
            context,
            handle: worker,
        })
    }
}

/// A UCP context; `ucp_cleanup` when the last worker and registration made from it are gone.
pub(crate) struct Context {
    library: &'static Library,
    handle: ucp::ucp_context_h,
}

// SAFETY: the context is created with `mt_workers_shared = 1`, so UCX guards its state with
// its own lock (the context's `mt_lock`), and it is touched directly only by `ucp_mem_map`,
// `ucp_mem_unmap`, `ucp_rkey_pack` and `ucp_cleanup` (the last when nothing else holds it), so
// these may be called from any thread.
unsafe impl Send for Context {}
// SAFETY: as for Send.
unsafe impl Sync for Context {}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the last reference to the context: every worker and registration made from
        // it holds an `Arc` to it, so all are gone.
        unsafe { (self.library.api.cleanup)(self.handle) };
    }
}

/// A UCP worker (thread mode SERIALIZED): destroyed on drop.
pub(crate) struct Worker {
    context: Arc<Context>,
    handle: ucp::ucp_worker_h,
}

// SAFETY: the worker is created with UCS_THREAD_MODE_SERIALIZED: any thread may use it, one at
// a time. `Worker` is not Sync, so `&Worker` stays on one thread.
unsafe impl Send for Worker {}

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: every endpoint of this worker borrows it (public module), so all are closed.
        unsafe { (self.context.library.api.worker_destroy)(self.handle) };
    }
}

/// Where a request stands.
pub(crate) enum Progress {
    Done,
    Pending,
    Failed(Failure),
}

impl Worker {
    fn api(&self) -> &'static Api {
        &self.context.library.api
    }

    pub(crate) fn library(&self) -> &'static Library {
        self.context.library
    }

    /// The context's identity, to tell registrations of another context apart.
    pub(crate) fn context(&self) -> &Arc<Context> {
        &self.context
    }

    /// The worker's address, copied.
    pub(crate) fn address(&self) -> Result<Vec<u8>, Failure> {
        let (mut address, mut len) = (ptr::null_mut(), 0);
        // SAFETY: a live worker, two writable out-parameters.
        self.context.library.check("ucp_worker_get_address", unsafe {
            (self.api().worker_get_address)(self.handle, &mut address, &mut len)
        })?;
        // SAFETY: UCX gave `len` bytes at `address`, valid until released (below).
        let bytes = unsafe { core::slice::from_raw_parts(address.cast::<u8>(), len) }.to_vec();
        // SAFETY: the address this worker gave, released once.
        unsafe { (self.api().worker_release_address)(self.handle, address) };
        Ok(bytes)
    }

    /// Makes progress on every outstanding operation; whether anything happened.
    pub(crate) fn progress(&self) -> bool {
        // SAFETY: a live worker, used from one thread at a time (it is not Sync).
        unsafe { (self.api().worker_progress)(self.handle) != 0 }
    }

    /// Waits until every operation started on this worker is complete at its target.
    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), WaitFailure> {
        let param = request_param(None);
        // SAFETY: a live worker and valid params.
        let op = unsafe { (self.api().worker_flush_nbx)(self.handle, &param) };
        // SAFETY: `op` came from this worker's flush just now.
        let op = unsafe { self.op("ucp_worker_flush_nbx", op) }.map_err(WaitFailure::Failed)?;
        self.wait(op, timeout, None)
    }

    /// Connects to the worker whose address is `address`. The endpoint's error handler
    /// records a peer failure, which fails its outstanding and later operations.
    ///
    /// # Safety
    /// `address` is a worker address from `address` in some process (UCX parses it without
    /// checking it, and may crash on garbage). The endpoint is closed (dropped) before this
    /// worker.
    pub(crate) unsafe fn connect(&self, address: &[u8]) -> Result<Endpoint, Failure> {
        // SAFETY: the caller's promise.
        match unsafe { self.connect_with(address, ucp::UCP_ERR_HANDLING_MODE_PEER) } {
            // Some transports (shared memory in UCX 1.13) cannot detect a peer's failure, and
            // UCX then refuses peer error handling as "unreachable": connect without it.
            Err(failure) if failure.status == ucp::UCS_ERR_UNREACHABLE => {
                // SAFETY: the caller's promise.
                unsafe { self.connect_with(address, ucp::UCP_ERR_HANDLING_MODE_NONE) }
            }
            result => result,
        }
    }

    /// # Safety
    /// As for `connect`.
    unsafe fn connect_with(&self, address: &[u8], mode: ucp::c_enum) -> Result<Endpoint, Failure> {
        let failed = Box::new(AtomicI8::new(ucp::UCS_OK));
        // SAFETY: all-zero is a valid ucp_ep_params_t (integers, null pointers, a `None`
        // callback); only the fields in the mask are read.
        let mut params: ucp::ucp_ep_params_t = unsafe { core::mem::zeroed() };
        params.field_mask = ucp::UCP_EP_PARAM_FIELD_REMOTE_ADDRESS
            | ucp::UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
        params.address = address.as_ptr().cast();
        params.err_mode = mode;
        if mode == ucp::UCP_ERR_HANDLING_MODE_PEER {
            params.field_mask |= ucp::UCP_EP_PARAM_FIELD_ERR_HANDLER;
            params.err_handler = ucp::ucp_err_handler_t {
                cb: Some(on_endpoint_error),
                arg: ptr::from_ref::<AtomicI8>(&failed).cast_mut().cast(),
            };
        }
        let mut ep = ptr::null_mut();
        // SAFETY: a live worker; `params` is valid and its address is a worker address (the
        // caller's promise); the handler's argument is the boxed flag, which lives as long as
        // the endpoint (it is dropped after the endpoint is closed).
        self.context.library.check("ucp_ep_create", unsafe {
            (self.api().ep_create)(self.handle, &params, &mut ep)
        })?;
        Ok(Endpoint {
            handle: core::cell::Cell::new(ep),
            failed,
            detects_failure: mode == ucp::UCP_ERR_HANDLING_MODE_PEER,
        })
    }

    /// Turns what a `*_nbx` call returned into an operation to wait on.
    ///
    /// # Safety
    /// `op` is what a `*_nbx` call on this worker (or one of its endpoints) returned.
    unsafe fn op(&self, call: &'static str, op: ucp::ucs_status_ptr_t) -> Result<Op, Failure> {
        let raw = op as usize;
        if raw == 0 {
            Ok(Op { request: None, call })
        } else if raw >= ucp::UCS_ERR_LAST as isize as usize {
            Err(self.context.library.failure(call, raw as isize as i8))
        } else {
            Ok(Op {
                request: NonNull::new(op),
                call,
            })
        }
    }

    /// Progresses once and says where `op` stands; a finished request is freed.
    pub(crate) fn test(&self, op: &mut Op) -> Progress {
        let Some(request) = op.request else {
            return Progress::Done;
        };
        self.progress();
        // SAFETY: a request of this worker that has not been freed (it is freed only here,
        // once it is complete, and then forgotten).
        let status = unsafe { (self.api().request_check_status)(request.as_ptr()) };
        if status == ucp::UCS_INPROGRESS {
            return Progress::Pending;
        }
        // SAFETY: complete, so UCX is done with it; freed once.
        unsafe { (self.api().request_free)(request.as_ptr()) };
        op.request = None;
        if status == ucp::UCS_OK {
            Progress::Done
        } else {
            Progress::Failed(self.context.library.failure(op.call, status))
        }
    }

    /// Progresses until `op` completes or `timeout` passes. On a timeout, an operation with
    /// buffers (a put or a get: `endpoint` is given) is ended by force-closing its endpoint,
    /// which completes every outstanding operation on it with `UCS_ERR_CANCELED`, so UCX is
    /// done with the buffers when this returns; one without buffers (a flush) is released to
    /// finish on its own.
    pub(crate) fn wait(
        &self,
        mut op: Op,
        timeout: Duration,
        endpoint: Option<&Endpoint>,
    ) -> Result<(), WaitFailure> {
        let start = Instant::now();
        loop {
            match self.test(&mut op) {
                Progress::Done => return Ok(()),
                Progress::Failed(failure) => return Err(WaitFailure::Failed(failure)),
                Progress::Pending if start.elapsed() >= timeout => {
                    self.abandon(&mut op, endpoint);
                    return Err(WaitFailure::TimedOut);
                }
                Progress::Pending => core::hint::spin_loop(),
            }
        }
    }

    /// Ends `op` now: see `wait`.
    pub(crate) fn abandon(&self, op: &mut Op, endpoint: Option<&Endpoint>) {
        let Some(request) = op.request else {
            return;
        };
        match endpoint {
            Some(endpoint) => {
                self.force_close(endpoint);
                // UCX documents that a forced close completes every outstanding request of
                // the endpoint. UCX 1.13 leaves a put to a dead peer over shared memory
                // pending (its fragments waited in the endpoint's queue, which the close
                // discarded): give it a moment, then release it. Nothing moves its bytes any
                // more: the endpoint and its transport lanes are gone.
                let start = Instant::now();
                while let Progress::Pending = self.test(op) {
                    if start.elapsed() > ABANDON_GRACE {
                        // SAFETY: a live request of this worker, released once (and
                        // forgotten).
                        unsafe { (self.api().request_free)(request.as_ptr()) };
                        op.request = None;
                        break;
                    }
                    std::thread::yield_now();
                }
            }
            None => {
                // SAFETY: a live request of this worker, released once (and forgotten): UCX
                // finishes it internally; it holds no buffer of ours.
                unsafe { (self.api().request_free)(request.as_ptr()) };
                op.request = None;
            }
        }
    }

    /// Closes `endpoint` at once, without the peer: every outstanding operation on it
    /// completes with `UCS_ERR_CANCELED`, and every later one is refused.
    fn force_close(&self, endpoint: &Endpoint) {
        let handle = endpoint.handle.replace(ptr::null_mut());
        if handle.is_null() {
            return;
        }
        let mut param = request_param(None);
        param.op_attr_mask |= ucp::UCP_OP_ATTR_FIELD_FLAGS;
        param.flags = ucp::UCP_EP_CLOSE_FLAG_FORCE;
        // SAFETY: a live endpoint of this worker, closed once (its handle is cleared above).
        let op = unsafe { (self.api().ep_close_nbx)(handle, &param) };
        // SAFETY: `op` came from this worker's endpoint just now.
        if let Ok(mut op) = unsafe { self.op("ucp_ep_close_nbx", op) } {
            while let Progress::Pending = self.test(&mut op) {
                std::thread::yield_now();
            }
        }
    }

    /// Closes `endpoint`: flushed first unless its peer failed, for at most `timeout`, after
    /// which the close is forced.
    pub(crate) fn close(&self, endpoint: Endpoint, timeout: Duration) {
        let handle = endpoint.handle.get();
        let mut closed = true;
        if handle.is_null() {
            // Force-closed after a timeout already.
        } else if endpoint.failure().is_some() {
            self.force_close(&endpoint);
        } else {
            let param = request_param(None);
            // SAFETY: a live endpoint of this worker, closed once (it is consumed here).
            let op = unsafe { (self.api().ep_close_nbx)(handle, &param) };
            // SAFETY: `op` came from this worker's endpoint just now.
            if let Ok(op) = unsafe { self.op("ucp_ep_close_nbx", op) } {
                // A close that does not finish in time is released and goes on inside UCX,
                // which may still call the error handler: its flag must then stay alive.
                closed = !matches!(self.wait(op, timeout, None), Err(WaitFailure::TimedOut));
            }
        }
        if !closed {
            core::mem::forget(endpoint.failed);
        }
    }
}

/// How a wait ended without success.
pub(crate) enum WaitFailure {
    Failed(Failure),
    TimedOut,
}

/// The error handler of every endpoint: records the status (the first one).
unsafe extern "C" fn on_endpoint_error(arg: *mut c_void, _ep: ucp::ucp_ep_h, status: i8) {
    // SAFETY: `arg` is the endpoint's boxed flag, which outlives the endpoint (see `connect`).
    let failed = unsafe { &*arg.cast::<AtomicI8>() };
    let _ = failed.compare_exchange(ucp::UCS_OK, status, Ordering::AcqRel, Ordering::Acquire);
}

fn request_param(memh: Option<ucp::ucp_mem_h>) -> ucp::ucp_request_param_t {
    ucp::ucp_request_param_t {
        op_attr_mask: if memh.is_some() {
            ucp::UCP_OP_ATTR_FIELD_MEMH | ucp::UCP_OP_ATTR_FIELD_MEMORY_TYPE
        } else {
            0
        },
        flags: 0,
        request: ptr::null_mut(),
        cb: ptr::null_mut(),
        datatype: 0,
        user_data: ptr::null_mut(),
        reply_buffer: ptr::null_mut(),
        memory_type: ucp::UCS_MEMORY_TYPE_HOST,
        recv_info: ptr::null_mut(),
        memh: memh.unwrap_or(ptr::null_mut()),
    }
}

/// An operation started on a worker: a request to wait on, or none when it completed at once.
/// Dropping one that is still outstanding leaves it to UCX; callers wait for it (or
/// `abandon` it) first.
pub(crate) struct Op {
    request: Option<NonNull<c_void>>,
    call: &'static str,
}

impl Op {
    /// An operation that is complete: nothing to wait for.
    pub(crate) fn done() -> Op {
        Op {
            request: None,
            call: "",
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.request.is_none()
    }
}

/// An endpoint: closed by `Worker::close`.
pub(crate) struct Endpoint {
    /// Null once force-closed.
    handle: core::cell::Cell<ucp::ucp_ep_h>,
    /// `UCS_OK`, or the status the error handler reported. Boxed: UCX holds its address.
    failed: Box<AtomicI8>,
    /// Whether UCX reports the peer's failure (error handling mode PEER).
    detects_failure: bool,
}

impl Endpoint {
    /// An identity unique among live endpoints: the address of its boxed flag.
    fn id(&self) -> usize {
        ptr::from_ref::<AtomicI8>(&self.failed) as usize
    }

    /// The live handle, or the failure of `call` on an endpoint closed after a timeout.
    fn live(&self, worker: &Worker, call: &'static str) -> Result<ucp::ucp_ep_h, Failure> {
        let handle = self.handle.get();
        if handle.is_null() {
            Err(Failure {
                call,
                status: ucp::UCS_ERR_NOT_CONNECTED,
                description: format!(
                    "{} (an earlier operation timed out, and the endpoint was closed to end it)",
                    worker.context.library.describe(ucp::UCS_ERR_NOT_CONNECTED)
                ),
            })
        } else {
            Ok(handle)
        }
    }

    /// Whether UCX fails this endpoint's operations when the peer fails.
    pub(crate) fn detects_failure(&self) -> bool {
        self.detects_failure
    }

    /// The status the peer failed with, if it did.
    pub(crate) fn failure(&self) -> Option<i8> {
        let status = self.failed.load(Ordering::Acquire);
        (status != ucp::UCS_OK).then_some(status)
    }

    /// Waits until every operation started on this endpoint is complete at its target.
    pub(crate) fn flush(&self, worker: &Worker, timeout: Duration) -> Result<(), WaitFailure> {
        let param = request_param(None);
        let handle = self.live(worker, "ucp_ep_flush_nbx").map_err(WaitFailure::Failed)?;
        // SAFETY: a live endpoint of `worker` (the caller's, kept by the public module).
        let op = unsafe { (worker.api().ep_flush_nbx)(handle, &param) };
        // SAFETY: `op` came from this endpoint's flush just now.
        let op = unsafe { worker.op("ucp_ep_flush_nbx", op) }.map_err(WaitFailure::Failed)?;
        worker.wait(op, timeout, None)
    }

    /// Unpacks a remote key that a peer packed with `Registration::pack`.
    ///
    /// # Safety
    /// `key` is a packed remote key from `pack` in the process this endpoint connects to
    /// (UCX parses it without checking); the key is destroyed before this endpoint is closed.
    pub(crate) unsafe fn unpack(&self, worker: &Worker, key: &[u8]) -> Result<Rkey, Failure> {
        let mut rkey = ptr::null_mut();
        let handle = self.live(worker, "ucp_ep_rkey_unpack")?;
        // SAFETY: a live endpoint; the key bytes are a packed key (the caller's promise).
        worker.context.library.check("ucp_ep_rkey_unpack", unsafe {
            (worker.api().ep_rkey_unpack)(handle, key.as_ptr().cast(), &mut rkey)
        })?;
        Ok(Rkey {
            handle: rkey,
            library: worker.context.library,
            endpoint: self.id(),
        })
    }

    /// Starts a `transfer` of `len` bytes between `local` and `remote` in the peer's memory.
    ///
    /// # Safety
    /// `local..local + len` is inside `memory`; until the operation is complete (waited for,
    /// or abandoned) nothing writes those bytes, and for a get nothing reads them either;
    /// `rkey` is this endpoint's and covers `remote..remote + len` in the peer (the public
    /// module checks that against the length the peer declared).
    #[allow(clippy::too_many_arguments, reason = "the operation's own arguments, as ucp.h has them")]
    pub(crate) unsafe fn transfer(
        &self,
        transfer: Transfer,
        worker: &Worker,
        memory: &Registered,
        local: NonNull<u8>,
        len: usize,
        remote: u64,
        rkey: &Rkey,
    ) -> Result<Op, Failure> {
        let param = request_param(Some(memory.handle));
        let call = transfer.call();
        let handle = self.live(worker, call)?;
        let api = worker.api();
        // SAFETY: the caller's promise; a live endpoint, key and memory handle.
        let op = unsafe {
            match transfer {
                Transfer::Put => (api.put_nbx)(
                    handle,
                    local.as_ptr().cast(),
                    len,
                    remote,
                    rkey.handle,
                    &param,
                ),
                Transfer::Get => (api.get_nbx)(
                    handle,
                    local.as_ptr().cast(),
                    len,
                    remote,
                    rkey.handle,
                    &param,
                ),
            }
        };
        // SAFETY: `op` came from this endpoint just now.
        unsafe { worker.op(call, op) }
    }
}

/// Which way a one-sided operation moves bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transfer {
    /// From local memory into the peer's (`ucp_put_nbx`).
    Put,
    /// From the peer's memory into local memory (`ucp_get_nbx`).
    Get,
}

impl Transfer {
    /// The entry point, as `ucp.h` names it.
    fn call(self) -> &'static str {
        match self {
            Transfer::Put => "ucp_put_nbx",
            Transfer::Get => "ucp_get_nbx",
        }
    }

    /// The operation, as errors name it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transfer::Put => "put",
            Transfer::Get => "get",
        }
    }
}

/// An unpacked remote key; destroyed on drop.
pub(crate) struct Rkey {
    handle: ucp::ucp_rkey_h,
    library: &'static Library,
    /// The identity (`Endpoint::id`) of the endpoint it was unpacked on, the only one it may
    /// be used with.
    endpoint: usize,
}

impl Rkey {
    /// Whether this key was unpacked on `endpoint`.
    pub(crate) fn is_of(&self, endpoint: &Endpoint) -> bool {
        self.endpoint == endpoint.id()
    }
}

impl Drop for Rkey {
    fn drop(&mut self) {
        // SAFETY: a live key, destroyed once, before its endpoint is closed (the public module's
        // lifetimes).
        unsafe { (self.library.api.rkey_destroy)(self.handle) };
    }
}

/// Memory registered with a context (`ucp_mem_map`); unregistered on drop.
pub(crate) struct Registered {
    context: Arc<Context>,
    handle: ucp::ucp_mem_h,
}

// SAFETY: a handle that `ucp_mem_unmap` and `ucp_rkey_pack` take from any thread (the context
// locks its registration state); put and get read it only through a worker, one thread at a
// time.
unsafe impl Send for Registered {}
// SAFETY: as for Send.
unsafe impl Sync for Registered {}

impl Registered {
    /// Registers `len` bytes at `ptr` for local and remote reading and writing.
    ///
    /// # Safety
    /// `ptr..ptr + len` is mapped memory that stays mapped until this is dropped.
    pub(crate) unsafe fn map(
        context: &Arc<Context>,
        ptr: NonNull<u8>,
        len: usize,
    ) -> Result<Registered, Failure> {
        let params = ucp::ucp_mem_map_params_t {
            field_mask: ucp::UCP_MEM_MAP_PARAM_FIELD_ADDRESS
                | ucp::UCP_MEM_MAP_PARAM_FIELD_LENGTH
                | ucp::UCP_MEM_MAP_PARAM_FIELD_PROT
                | ucp::UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE,
            address: ptr.as_ptr().cast(),
            length: len,
            flags: 0,
            prot: ucp::UCP_MEM_MAP_PROT_LOCAL_READ
                | ucp::UCP_MEM_MAP_PROT_LOCAL_WRITE
                | ucp::UCP_MEM_MAP_PROT_REMOTE_READ
                | ucp::UCP_MEM_MAP_PROT_REMOTE_WRITE,
            memory_type: ucp::UCS_MEMORY_TYPE_HOST,
        };
        let mut memh = ptr::null_mut();
        // SAFETY: a live context; the range is mapped (the caller's promise); registering
        // changes none of its bytes.
        context.library.check("ucp_mem_map", unsafe {
            (context.library.api.mem_map)(context.handle, &params, &mut memh)
        })?;
        Ok(Registered {
            context: Arc::clone(context),
            handle: memh,
        })
    }

    /// Whether this memory is registered with `context`.
    pub(crate) fn is_of(&self, context: &Arc<Context>) -> bool {
        Arc::ptr_eq(&self.context, context)
    }

    /// The packed remote key, copied.
    pub(crate) fn pack(&self) -> Result<Vec<u8>, Failure> {
        let library = self.context.library;
        let (mut buffer, mut len) = (ptr::null_mut(), 0);
        // SAFETY: a live context and memory handle, writable out-parameters.
        library.check("ucp_rkey_pack", unsafe {
            (library.api.rkey_pack)(self.context.handle, self.handle, &mut buffer, &mut len)
        })?;
        // SAFETY: UCX gave `len` bytes at `buffer`, valid until released (below).
        let bytes = unsafe { core::slice::from_raw_parts(buffer.cast::<u8>(), len) }.to_vec();
        // SAFETY: the buffer rkey_pack gave, released once.
        unsafe { (library.api.rkey_buffer_release)(buffer) };
        Ok(bytes)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // SAFETY: a live handle of this context, unmapped once.
        unsafe { (self.context.library.api.mem_unmap)(self.context.handle, self.handle) };
    }
}
