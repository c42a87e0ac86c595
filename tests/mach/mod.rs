//! Mach messaging, declared by hand from the SDK headers (`mach/message.h`, `mach/port.h`,
//! `mach/mach_port.h`, `mach/task_special_ports.h`, `spawn.h`), for the macOS tests that pass
//! a block's port to another process (`tests/apple.rs`). unimem itself sends no messages.
//!
//! `src/ffi/tests.rs` includes this file too, and checks every layout and type here at compile
//! time (against `libc` where it declares them), for both Apple targets.
#![allow(
    dead_code,
    non_camel_case_types,
    reason = "each user takes what it needs; names follow the C headers"
)]

use core::ffi::{c_int, c_void};

/// A Mach port name.
pub type mach_port_t = u32;
/// Mach status code.
pub type kern_return_t = i32;
/// `mach_msg_bits_t`.
pub type mach_msg_bits_t = u32;
/// `mach_msg_size_t` (a `natural_t`).
pub type mach_msg_size_t = u32;
/// `mach_msg_id_t` (an `integer_t`).
pub type mach_msg_id_t = i32;
/// `mach_msg_type_name_t`: a port disposition.
pub type mach_msg_type_name_t = u32;
/// `mach_msg_option_t` (an `integer_t`).
pub type mach_msg_option_t = i32;
/// `mach_msg_timeout_t`, in milliseconds (a `natural_t`).
pub type mach_msg_timeout_t = u32;
/// `mach_port_right_t` (a `natural_t`).
pub type mach_port_right_t = u32;
/// `mach_port_delta_t` (an `integer_t`).
pub type mach_port_delta_t = i32;
/// `posix_spawnattr_t`: a pointer to libsystem's private attributes.
pub type posix_spawnattr_t = *mut c_void;

pub const KERN_SUCCESS: kern_return_t = 0;
pub const MACH_PORT_NULL: mach_port_t = 0;
pub const MACH_PORT_RIGHT_SEND: mach_port_right_t = 0;
pub const MACH_PORT_RIGHT_RECEIVE: mach_port_right_t = 1;
/// Dispositions of a right in a message (`mach/message.h`).
pub const MACH_MSG_TYPE_MOVE_SEND: mach_msg_type_name_t = 17;
pub const MACH_MSG_TYPE_COPY_SEND: mach_msg_type_name_t = 19;
pub const MACH_MSG_TYPE_MAKE_SEND: mach_msg_type_name_t = 20;
/// How a received send right is described: `MACH_MSG_TYPE_PORT_SEND`.
pub const MACH_MSG_TYPE_PORT_SEND: mach_msg_type_name_t = MACH_MSG_TYPE_MOVE_SEND;
/// The message carries descriptors.
pub const MACH_MSGH_BITS_COMPLEX: mach_msg_bits_t = 0x8000_0000;
/// `MACH_MSG_PORT_DESCRIPTOR`: a descriptor that carries one port right.
pub const MACH_MSG_PORT_DESCRIPTOR: u32 = 0;
pub const MACH_SEND_MSG: mach_msg_option_t = 0x1;
pub const MACH_RCV_MSG: mach_msg_option_t = 0x2;
pub const MACH_SEND_TIMEOUT: mach_msg_option_t = 0x10;
pub const MACH_RCV_TIMEOUT: mach_msg_option_t = 0x100;
pub const MACH_RCV_TIMED_OUT: kern_return_t = 0x1000_4003;
/// `TASK_BOOTSTRAP_PORT` (`mach/task_special_ports.h`).
pub const TASK_BOOTSTRAP_PORT: c_int = 4;

/// `MACH_MSGH_BITS(remote, local)`: the dispositions of the header's two ports.
pub const fn msgh_bits(remote: mach_msg_type_name_t, local: mach_msg_type_name_t) -> u32 {
    remote | (local << 8)
}

/// `mach_msg_header_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct mach_msg_header_t {
    pub msgh_bits: mach_msg_bits_t,
    pub msgh_size: mach_msg_size_t,
    pub msgh_remote_port: mach_port_t,
    pub msgh_local_port: mach_port_t,
    pub msgh_voucher_port: mach_port_t,
    pub msgh_id: mach_msg_id_t,
}

/// `mach_msg_body_t`: how many descriptors follow the header.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct mach_msg_body_t {
    pub msgh_descriptor_count: mach_msg_size_t,
}

/// `mach_msg_port_descriptor_t` as user space sees it: the name, a pad word, and a word of
/// bit fields (`pad2 : 16`, `disposition : 8`, `type : 8`, allocated from the low bits on both
/// Apple targets). 12 bytes; messages that hold it are declared under `#pragma pack(4)`.
#[repr(C, packed(4))]
#[derive(Debug, Clone, Copy, Default)]
pub struct mach_msg_port_descriptor_t {
    pub name: mach_port_t,
    pub pad1: mach_msg_size_t,
    pub bits: u32,
}

impl mach_msg_port_descriptor_t {
    /// A descriptor that moves `name` with `disposition`.
    pub const fn new(name: mach_port_t, disposition: mach_msg_type_name_t) -> Self {
        Self {
            name,
            pad1: 0,
            bits: (disposition << 16) | (MACH_MSG_PORT_DESCRIPTOR << 24),
        }
    }

    /// The `disposition` bit field.
    pub const fn disposition(&self) -> mach_msg_type_name_t {
        (self.bits >> 16) & 0xff
    }

    /// The `type` bit field.
    pub const fn kind(&self) -> u32 {
        self.bits >> 24
    }
}

/// A complex message that carries one port right.
#[repr(C, packed(4))]
#[derive(Debug, Clone, Copy, Default)]
pub struct PortMessage {
    pub header: mach_msg_header_t,
    pub body: mach_msg_body_t,
    pub port: mach_msg_port_descriptor_t,
}

/// A simple message that carries one 64-bit value.
#[repr(C, packed(4))]
#[derive(Debug, Clone, Copy, Default)]
pub struct ValueMessage {
    pub header: mach_msg_header_t,
    pub value: u64,
}

/// Room to receive either message, with the trailer the kernel appends.
#[repr(C, align(8))]
pub struct ReceiveBuffer {
    pub header: mach_msg_header_t,
    pub rest: [u8; 256],
}

unsafe extern "C" {
    /// This task's name for itself, as the SDK's `mach_task_self()` macro reads it.
    pub static mach_task_self_: mach_port_t;
    pub fn mach_port_allocate(
        task: mach_port_t,
        right: mach_port_right_t,
        name: *mut mach_port_t,
    ) -> kern_return_t;
    pub fn mach_port_insert_right(
        task: mach_port_t,
        name: mach_port_t,
        right: mach_port_t,
        disposition: mach_msg_type_name_t,
    ) -> kern_return_t;
    pub fn mach_port_mod_refs(
        task: mach_port_t,
        name: mach_port_t,
        right: mach_port_right_t,
        delta: mach_port_delta_t,
    ) -> kern_return_t;
    pub fn mach_port_deallocate(task: mach_port_t, name: mach_port_t) -> kern_return_t;
    pub fn mach_msg(
        msg: *mut mach_msg_header_t,
        option: mach_msg_option_t,
        send_size: mach_msg_size_t,
        rcv_size: mach_msg_size_t,
        rcv_name: mach_port_t,
        timeout: mach_msg_timeout_t,
        notify: mach_port_t,
    ) -> kern_return_t;
    pub fn task_get_special_port(
        task: mach_port_t,
        which: c_int,
        port: *mut mach_port_t,
    ) -> kern_return_t;
    /// Sets a special port (`TASK_BOOTSTRAP_PORT`, ...) of the task `posix_spawn` makes: the
    /// child starts with a send right to `port` there, in place of its parent's.
    pub fn posix_spawnattr_setspecialport_np(
        attr: *mut posix_spawnattr_t,
        port: mach_port_t,
        which: c_int,
    ) -> c_int;
}
