//! The dynamic loader and the few UCP (UCX protocol layer) entry points unimem calls, as
//! function-pointer types, with the parameter structs they take: nothing here links against
//! UCX. `libucp.so.0` is opened at run time and each entry point looked up by name
//! (`sys/ucx.rs`).
//!
//! Names, types and values follow UCX 1.13's `ucp/api/ucp.h`, `ucp_def.h` and
//! `ucs/type/status.h`. Every struct layout and constant here is listed in [`LAYOUT`], which a
//! unit test compiles against the real headers with `cc` and compares, value by value (see
//! the test at the bottom), so a wrong layout fails CI rather than a transfer. Only the
//! parameter structs with field masks are used (UCX reads only the fields whose bit is set),
//! and of the API only the `_nbx` calls.
//!
//! `ucp_init` is a `static inline` in `ucp.h` that calls `ucp_init_version` with the API
//! version the caller was compiled against; that symbol is the one looked up, with
//! [`UCP_API_MAJOR`] and [`UCP_API_MINOR`].

use core::ffi::{c_char, c_int, c_uint, c_void};

/// `dlopen` flag: resolve every symbol of the library now.
pub const RTLD_NOW: c_int = 2;
/// `dlopen` flag: keep the library's symbols out of the global namespace (glibc's value).
pub const RTLD_LOCAL: c_int = 0;

// The same three loader functions `ffi/cuda.rs` declares (identical signatures), for builds
// without the `cuda` feature. In glibc 2.34 and later they live in libc itself; before that in
// libdl, which the Rust standard library already links on linux-gnu. Nothing UCX is linked.
unsafe extern "C" {
    pub fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    pub fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    pub fn dlerror() -> *mut c_char;
}

/// `ucs_status_t`: an enum declared `UCS_S_PACKED` (`__attribute__((packed))`), so one byte.
pub type ucs_status_t = i8;
/// `ucs_status_ptr_t`: null (`UCS_OK`), an error code cast to a pointer, or a request.
pub type ucs_status_ptr_t = *mut c_void;
/// `ucp_context_h`, `ucp_worker_h`, `ucp_ep_h`, `ucp_mem_h`, `ucp_rkey_h`: opaque pointers.
pub type ucp_context_h = *mut c_void;
/// See [`ucp_context_h`].
pub type ucp_worker_h = *mut c_void;
/// See [`ucp_context_h`].
pub type ucp_ep_h = *mut c_void;
/// See [`ucp_context_h`].
pub type ucp_mem_h = *mut c_void;
/// See [`ucp_context_h`].
pub type ucp_rkey_h = *mut c_void;
/// `ucs_thread_mode_t`, `ucp_err_handling_mode_t`, `ucs_memory_type_t`: plain C enums.
pub type c_enum = c_uint;

pub const UCS_OK: ucs_status_t = 0;
pub const UCS_INPROGRESS: ucs_status_t = 1;
pub const UCS_ERR_NO_MEMORY: ucs_status_t = -4;
pub const UCS_ERR_UNREACHABLE: ucs_status_t = -6;
pub const UCS_ERR_NOT_CONNECTED: ucs_status_t = -24;
pub const UCS_ERR_CONNECTION_RESET: ucs_status_t = -25;
pub const UCS_ERR_ENDPOINT_TIMEOUT: ucs_status_t = -80;
/// `UCS_ERR_LAST`: a status pointer at or above `(uintptr_t)UCS_ERR_LAST` is an error code
/// (`UCS_PTR_IS_ERR`).
pub const UCS_ERR_LAST: ucs_status_t = -100;

pub const UCP_API_MAJOR: c_uint = 1;
pub const UCP_API_MINOR: c_uint = 13;

pub const UCP_PARAM_FIELD_FEATURES: u64 = 1 << 0;
pub const UCP_PARAM_FIELD_MT_WORKERS_SHARED: u64 = 1 << 5;
pub const UCP_PARAM_FIELD_NAME: u64 = 1 << 8;
pub const UCP_FEATURE_RMA: u64 = 1 << 1;

pub const UCP_WORKER_PARAM_FIELD_THREAD_MODE: u64 = 1 << 0;
pub const UCS_THREAD_MODE_SERIALIZED: c_enum = 1;

pub const UCP_EP_PARAM_FIELD_REMOTE_ADDRESS: u64 = 1 << 0;
pub const UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE: u64 = 1 << 1;
pub const UCP_EP_PARAM_FIELD_ERR_HANDLER: u64 = 1 << 2;
pub const UCP_ERR_HANDLING_MODE_NONE: c_enum = 0;
pub const UCP_ERR_HANDLING_MODE_PEER: c_enum = 1;
pub const UCP_EP_CLOSE_FLAG_FORCE: u32 = 1 << 0;

pub const UCP_MEM_MAP_PARAM_FIELD_ADDRESS: u64 = 1 << 0;
pub const UCP_MEM_MAP_PARAM_FIELD_LENGTH: u64 = 1 << 1;
pub const UCP_MEM_MAP_PARAM_FIELD_PROT: u64 = 1 << 3;
pub const UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE: u64 = 1 << 4;
pub const UCP_MEM_MAP_PROT_LOCAL_READ: c_uint = 1 << 0;
pub const UCP_MEM_MAP_PROT_LOCAL_WRITE: c_uint = 1 << 1;
pub const UCP_MEM_MAP_PROT_REMOTE_READ: c_uint = 1 << 8;
pub const UCP_MEM_MAP_PROT_REMOTE_WRITE: c_uint = 1 << 9;
pub const UCS_MEMORY_TYPE_HOST: c_enum = 0;

pub const UCP_OP_ATTR_FIELD_FLAGS: u32 = 1 << 4;
pub const UCP_OP_ATTR_FIELD_MEMORY_TYPE: u32 = 1 << 6;
pub const UCP_OP_ATTR_FIELD_MEMH: u32 = 1 << 8;

/// `ucp_err_handler_cb_t`: `void (*)(void *arg, ucp_ep_h ep, ucs_status_t status)`.
pub type ucp_err_handler_cb_t =
    Option<unsafe extern "C" fn(arg: *mut c_void, ep: ucp_ep_h, status: ucs_status_t)>;

/// `ucp_params_t`.
#[repr(C)]
pub struct ucp_params_t {
    pub field_mask: u64,
    pub features: u64,
    pub request_size: usize,
    pub request_init: Option<unsafe extern "C" fn(request: *mut c_void)>,
    pub request_cleanup: Option<unsafe extern "C" fn(request: *mut c_void)>,
    pub tag_sender_mask: u64,
    pub mt_workers_shared: c_int,
    pub estimated_num_eps: usize,
    pub estimated_num_ppn: usize,
    pub name: *const c_char,
}

/// `ucs_cpu_set_t`: `UCS_CPU_SETSIZE` (1024) bits in `unsigned long`s.
#[repr(C)]
pub struct ucs_cpu_set_t {
    pub ucs_bits: [core::ffi::c_ulong; 1024 / core::ffi::c_ulong::BITS as usize],
}

/// `ucp_worker_params_t`.
#[repr(C)]
pub struct ucp_worker_params_t {
    pub field_mask: u64,
    pub thread_mode: c_enum,
    pub cpu_mask: ucs_cpu_set_t,
    pub events: c_uint,
    pub user_data: *mut c_void,
    pub event_fd: c_int,
    pub flags: u64,
    pub name: *const c_char,
    pub am_alignment: usize,
    pub client_id: u64,
}

/// `ucp_err_handler_t`.
#[repr(C)]
pub struct ucp_err_handler_t {
    pub cb: ucp_err_handler_cb_t,
    pub arg: *mut c_void,
}

/// `ucs_sock_addr_t`: `{ const struct sockaddr *addr; socklen_t addrlen; }`.
#[repr(C)]
pub struct ucs_sock_addr_t {
    pub addr: *const c_void,
    pub addrlen: u32,
}

/// `ucp_ep_params_t`.
#[repr(C)]
pub struct ucp_ep_params_t {
    pub field_mask: u64,
    pub address: *const c_void,
    pub err_mode: c_enum,
    pub err_handler: ucp_err_handler_t,
    pub user_data: *mut c_void,
    pub flags: c_uint,
    pub sockaddr: ucs_sock_addr_t,
    pub conn_request: *mut c_void,
    pub name: *const c_char,
    pub local_sockaddr: ucs_sock_addr_t,
}

/// `ucp_mem_map_params_t`.
#[repr(C)]
pub struct ucp_mem_map_params_t {
    pub field_mask: u64,
    pub address: *mut c_void,
    pub length: usize,
    pub flags: c_uint,
    pub prot: c_uint,
    pub memory_type: c_enum,
}

/// `ucp_request_param_t`. The two unions (`cb`, `recv_info`) are pointer-sized, and left
/// null: no operation here asks for a callback or receive information.
#[repr(C)]
pub struct ucp_request_param_t {
    pub op_attr_mask: u32,
    pub flags: u32,
    pub request: *mut c_void,
    pub cb: *mut c_void,
    pub datatype: u64,
    pub user_data: *mut c_void,
    pub reply_buffer: *mut c_void,
    pub memory_type: c_enum,
    pub recv_info: *mut c_void,
    pub memh: ucp_mem_h,
}

/// `ucp_init_version(api_major, api_minor, params, config, context_p)`; a null `config` reads
/// the configuration from the environment (`UCX_*`).
pub type ucp_init_version = unsafe extern "C" fn(
    api_major_version: c_uint,
    api_minor_version: c_uint,
    params: *const ucp_params_t,
    config: *const c_void,
    context_p: *mut ucp_context_h,
) -> ucs_status_t;
/// `ucp_get_version(&major, &minor, &release)`.
pub type ucp_get_version =
    unsafe extern "C" fn(major: *mut c_uint, minor: *mut c_uint, release: *mut c_uint);
pub type ucp_cleanup = unsafe extern "C" fn(context: ucp_context_h);
pub type ucp_worker_create = unsafe extern "C" fn(
    context: ucp_context_h,
    params: *const ucp_worker_params_t,
    worker_p: *mut ucp_worker_h,
) -> ucs_status_t;
pub type ucp_worker_destroy = unsafe extern "C" fn(worker: ucp_worker_h);
pub type ucp_worker_get_address = unsafe extern "C" fn(
    worker: ucp_worker_h,
    address_p: *mut *mut c_void,
    address_length_p: *mut usize,
) -> ucs_status_t;
pub type ucp_worker_release_address =
    unsafe extern "C" fn(worker: ucp_worker_h, address: *mut c_void);
pub type ucp_worker_progress = unsafe extern "C" fn(worker: ucp_worker_h) -> c_uint;
pub type ucp_worker_flush_nbx = unsafe extern "C" fn(
    worker: ucp_worker_h,
    param: *const ucp_request_param_t,
) -> ucs_status_ptr_t;
pub type ucp_ep_create = unsafe extern "C" fn(
    worker: ucp_worker_h,
    params: *const ucp_ep_params_t,
    ep_p: *mut ucp_ep_h,
) -> ucs_status_t;
pub type ucp_ep_close_nbx =
    unsafe extern "C" fn(ep: ucp_ep_h, param: *const ucp_request_param_t) -> ucs_status_ptr_t;
pub type ucp_ep_flush_nbx =
    unsafe extern "C" fn(ep: ucp_ep_h, param: *const ucp_request_param_t) -> ucs_status_ptr_t;
pub type ucp_mem_map = unsafe extern "C" fn(
    context: ucp_context_h,
    params: *const ucp_mem_map_params_t,
    memh_p: *mut ucp_mem_h,
) -> ucs_status_t;
pub type ucp_mem_unmap = unsafe extern "C" fn(context: ucp_context_h, memh: ucp_mem_h) -> ucs_status_t;
pub type ucp_rkey_pack = unsafe extern "C" fn(
    context: ucp_context_h,
    memh: ucp_mem_h,
    rkey_buffer_p: *mut *mut c_void,
    size_p: *mut usize,
) -> ucs_status_t;
pub type ucp_rkey_buffer_release = unsafe extern "C" fn(rkey_buffer: *mut c_void);
pub type ucp_ep_rkey_unpack = unsafe extern "C" fn(
    ep: ucp_ep_h,
    rkey_buffer: *const c_void,
    rkey_p: *mut ucp_rkey_h,
) -> ucs_status_t;
pub type ucp_rkey_destroy = unsafe extern "C" fn(rkey: ucp_rkey_h);
pub type ucp_put_nbx = unsafe extern "C" fn(
    ep: ucp_ep_h,
    buffer: *const c_void,
    count: usize,
    remote_addr: u64,
    rkey: ucp_rkey_h,
    param: *const ucp_request_param_t,
) -> ucs_status_ptr_t;
pub type ucp_get_nbx = unsafe extern "C" fn(
    ep: ucp_ep_h,
    buffer: *mut c_void,
    count: usize,
    remote_addr: u64,
    rkey: ucp_rkey_h,
    param: *const ucp_request_param_t,
) -> ucs_status_ptr_t;
pub type ucp_request_check_status = unsafe extern "C" fn(request: *mut c_void) -> ucs_status_t;
pub type ucp_request_free = unsafe extern "C" fn(request: *mut c_void);
/// `ucs_status_string` (in libucs, which libucp depends on, so `dlsym` on libucp's handle
/// finds it).
pub type ucs_status_string = unsafe extern "C" fn(status: ucs_status_t) -> *const c_char;

/// Every hand-written layout and constant above, as a C expression and the value the Rust
/// side gives it. The unit test below prints each expression from a C program compiled
/// against the installed headers and compares.
#[cfg(test)]
pub const LAYOUT: &[(&str, i64)] = {
    use core::mem::offset_of;
    macro_rules! size {
        ($ty:ident) => {
            (concat!("sizeof(", stringify!($ty), ")"), size_of::<$ty>() as i64)
        };
    }
    macro_rules! offset {
        ($ty:ident, $field:ident) => {
            (
                concat!("offsetof(", stringify!($ty), ", ", stringify!($field), ")"),
                offset_of!($ty, $field) as i64,
            )
        };
    }
    macro_rules! constants {
        ($($name:ident),* $(,)?) => { [$((stringify!($name), $name as i64)),*] };
    }
    const SIZES: [(&str, i64); 9] = [
        size!(ucs_status_t),
        size!(ucp_params_t),
        size!(ucs_cpu_set_t),
        size!(ucp_worker_params_t),
        size!(ucp_err_handler_t),
        size!(ucs_sock_addr_t),
        size!(ucp_ep_params_t),
        size!(ucp_mem_map_params_t),
        size!(ucp_request_param_t),
    ];
    const OFFSETS: [(&str, i64); 35] = [
        offset!(ucp_params_t, features),
        offset!(ucp_params_t, request_size),
        offset!(ucp_params_t, tag_sender_mask),
        offset!(ucp_params_t, mt_workers_shared),
        offset!(ucp_params_t, estimated_num_eps),
        offset!(ucp_params_t, name),
        offset!(ucp_worker_params_t, thread_mode),
        offset!(ucp_worker_params_t, cpu_mask),
        offset!(ucp_worker_params_t, events),
        offset!(ucp_worker_params_t, user_data),
        offset!(ucp_worker_params_t, event_fd),
        offset!(ucp_worker_params_t, flags),
        offset!(ucp_worker_params_t, name),
        offset!(ucp_worker_params_t, am_alignment),
        offset!(ucp_worker_params_t, client_id),
        offset!(ucp_ep_params_t, address),
        offset!(ucp_ep_params_t, err_mode),
        offset!(ucp_ep_params_t, err_handler),
        offset!(ucp_ep_params_t, user_data),
        offset!(ucp_ep_params_t, flags),
        offset!(ucp_ep_params_t, sockaddr),
        offset!(ucp_ep_params_t, conn_request),
        offset!(ucp_ep_params_t, name),
        offset!(ucp_ep_params_t, local_sockaddr),
        offset!(ucp_mem_map_params_t, address),
        offset!(ucp_mem_map_params_t, length),
        offset!(ucp_mem_map_params_t, prot),
        offset!(ucp_mem_map_params_t, memory_type),
        offset!(ucp_request_param_t, request),
        offset!(ucp_request_param_t, cb),
        offset!(ucp_request_param_t, datatype),
        offset!(ucp_request_param_t, user_data),
        offset!(ucp_request_param_t, memory_type),
        offset!(ucp_request_param_t, recv_info),
        offset!(ucp_request_param_t, memh),
    ];
    const CONSTANTS: [(&str, i64); 36] = constants![
        UCS_OK,
        UCS_INPROGRESS,
        UCS_ERR_NO_MEMORY,
        UCS_ERR_UNREACHABLE,
        UCS_ERR_NOT_CONNECTED,
        UCS_ERR_CONNECTION_RESET,
        UCS_ERR_ENDPOINT_TIMEOUT,
        UCS_ERR_LAST,
        UCP_API_MAJOR,
        UCP_API_MINOR,
        UCP_PARAM_FIELD_FEATURES,
        UCP_PARAM_FIELD_MT_WORKERS_SHARED,
        UCP_PARAM_FIELD_NAME,
        UCP_FEATURE_RMA,
        UCP_WORKER_PARAM_FIELD_THREAD_MODE,
        UCS_THREAD_MODE_SERIALIZED,
        UCP_EP_PARAM_FIELD_REMOTE_ADDRESS,
        UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE,
        UCP_EP_PARAM_FIELD_ERR_HANDLER,
        UCP_ERR_HANDLING_MODE_NONE,
        UCP_ERR_HANDLING_MODE_PEER,
        UCP_EP_CLOSE_FLAG_FORCE,
        UCP_MEM_MAP_PARAM_FIELD_ADDRESS,
        UCP_MEM_MAP_PARAM_FIELD_LENGTH,
        UCP_MEM_MAP_PARAM_FIELD_PROT,
        UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE,
        UCP_MEM_MAP_PROT_LOCAL_READ,
        UCP_MEM_MAP_PROT_LOCAL_WRITE,
        UCP_MEM_MAP_PROT_REMOTE_READ,
        UCP_MEM_MAP_PROT_REMOTE_WRITE,
        UCS_MEMORY_TYPE_HOST,
        UCP_OP_ATTR_FIELD_FLAGS,
        UCP_OP_ATTR_FIELD_MEMORY_TYPE,
        UCP_OP_ATTR_FIELD_MEMH,
        RTLD_NOW,
        RTLD_LOCAL,
    ];
    const ALL: [(&str, i64); 80] = {
        let mut all = [("", 0); 80];
        let mut i = 0;
        while i < SIZES.len() {
            all[i] = SIZES[i];
            i += 1;
        }
        let mut j = 0;
        while j < OFFSETS.len() {
            all[i + j] = OFFSETS[j];
            j += 1;
        }
        let mut k = 0;
        while k < CONSTANTS.len() {
            all[i + j + k] = CONSTANTS[k];
            k += 1;
        }
        all
    };
    &ALL
};

#[cfg(test)]
mod tests {
    use super::LAYOUT;
    use std::process::Command;

    /// Compiles a C program against the installed UCX headers that prints every expression
    /// of [`LAYOUT`], runs it, and compares each value with the Rust side's. Where `cc` or
    /// the headers are missing it says so and skips, unless `UNIMEM_UCX_REQUIRED` is set (as
    /// `.ci/run` sets it), which makes that a failure.
    #[test]
    fn layouts_and_constants_match_the_installed_headers() {
        let required = std::env::var_os("UNIMEM_UCX_REQUIRED").is_some();
        let header = std::path::Path::new("/usr/include/ucp/api/ucp.h");
        if !header.exists() {
            assert!(!required, "{} is missing: apt-get install libucx-dev", header.display());
            println!("SKIPPED: {} is missing (apt-get install libucx-dev)", header.display());
            return;
        }
        let dir = std::env::temp_dir().join(format!("unimem-ucx-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut program = String::from(
            "#include <ucp/api/ucp.h>\n#include <dlfcn.h>\n#include <stddef.h>\n\
             #include <stdio.h>\nint main(void) {\n",
        );
        for (expression, _) in LAYOUT {
            program.push_str(&format!(
                "    printf(\"%s=%lld\\n\", \"{expression}\", (long long)({expression}));\n"
            ));
        }
        program.push_str("    return 0;\n}\n");
        let source = dir.join("layout.c");
        let binary = dir.join("layout");
        std::fs::write(&source, program).unwrap();
        let compiled = match Command::new("cc").arg(&source).arg("-o").arg(&binary).output() {
            Ok(out) => out,
            Err(err) => {
                assert!(!required, "cc could not be run: {err}");
                println!("SKIPPED: no C compiler to check UCX layouts with ({err})");
                return;
            }
        };
        assert!(
            compiled.status.success(),
            "the layout program did not compile:\n{}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        let out = Command::new(&binary).output().unwrap();
        assert!(out.status.success());
        let printed = String::from_utf8(out.stdout).unwrap();
        let mut wrong = Vec::new();
        for ((expression, ours), line) in LAYOUT.iter().zip(printed.lines()) {
            let (name, theirs) = line.split_once('=').unwrap();
            assert_eq!(name, *expression);
            let theirs: i64 = theirs.parse().unwrap();
            if theirs != *ours {
                wrong.push(format!("{expression}: the headers say {theirs}, ffi/ucx.rs {ours}"));
            }
        }
        assert_eq!(printed.lines().count(), LAYOUT.len());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(wrong.is_empty(), "ffi/ucx.rs disagrees with ucp.h:\n{}", wrong.join("\n"));
        println!("{} UCX layouts and constants match the headers", LAYOUT.len());
    }
}
