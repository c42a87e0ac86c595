//! IOSurface and CoreFoundation, declared by hand: no `objc2`, no `core-foundation` crate.
//!
//! Names follow Apple's headers (`IOSurface/IOSurfaceRef.h`, `IOSurface/IOSurfaceTypes.h`,
//! `CoreFoundation/CFNumber.h`, `CoreFoundation/CFDictionary.h`).

use core::ffi::c_void;

/// An `IOSurface` object (toll-free bridged with `CFTypeRef`).
pub type IOSurfaceRef = *mut c_void;
/// Global identifier of an `IOSurface`.
pub type IOSurfaceID = u32;
/// Any CoreFoundation object.
pub type CFTypeRef = *const c_void;
/// A CoreFoundation string.
pub type CFStringRef = *const c_void;
/// A CoreFoundation number.
pub type CFNumberRef = *const c_void;
/// An immutable CoreFoundation dictionary.
pub type CFDictionaryRef = *const c_void;
/// A CoreFoundation allocator; null means the default one.
pub type CFAllocatorRef = *const c_void;
/// `CFIndex` is `signed long`: 64 bits on every Apple target we build for.
pub type CFIndex = isize;
/// `CFNumberType` is declared as a `CFIndex`, not as a 32-bit enum.
pub type CFNumberType = CFIndex;
/// Mach status code.
pub type kern_return_t = i32;
/// A Mach port name.
pub type mach_port_t = u32;
/// An address in a task's address space, 64 bits whatever the task's width.
pub type mach_vm_address_t = u64;
/// A size in a task's address space.
pub type mach_vm_size_t = u64;
/// Which `mach_vm_region` record to fill in.
pub type vm_region_flavor_t = i32;
/// A count of `natural_t` (32-bit) words.
pub type mach_msg_type_number_t = u32;
/// Page protections (`mach/vm_prot.h`).
pub type vm_prot_t = i32;

/// `kCFNumberSInt64Type`.
pub const kCFNumberSInt64Type: CFNumberType = 4;
/// `KERN_SUCCESS`.
pub const KERN_SUCCESS: kern_return_t = 0;
/// `MACH_PORT_NULL`.
pub const MACH_PORT_NULL: mach_port_t = 0;
/// `MADV_WILLNEED` for `madvise` (`sys/mman.h`).
pub const MADV_WILLNEED: core::ffi::c_int = 3;
/// `VM_PROT_READ` (`mach/vm_prot.h`).
pub const VM_PROT_READ: vm_prot_t = 0x01;
/// `VM_PROT_WRITE`.
pub const VM_PROT_WRITE: vm_prot_t = 0x02;
/// `RLIMIT_AS` (`sys/resource.h`): XNU enforces it since macOS 12.
pub const RLIMIT_AS: core::ffi::c_int = 5;
/// `_SC_PHYS_PAGES` for `sysconf` (`unistd.h`): how many pages of RAM the machine has.
pub const _SC_PHYS_PAGES: core::ffi::c_int = 200;
/// `VM_REGION_BASIC_INFO_64` (`mach/vm_region.h`): fill in a [`vm_region_basic_info_64`].
pub const VM_REGION_BASIC_INFO_64: vm_region_flavor_t = 9;
/// `VM_REGION_BASIC_INFO_COUNT_64`: its size in 32-bit words.
pub const VM_REGION_BASIC_INFO_COUNT_64: mach_msg_type_number_t =
    (core::mem::size_of::<vm_region_basic_info_64>() / 4) as mach_msg_type_number_t;

/// `struct vm_region_basic_info_64` (`mach/vm_region.h`, declared under `#pragma pack(4)`).
#[repr(C, packed(4))]
#[derive(Debug, Clone, Copy, Default)]
pub struct vm_region_basic_info_64 {
    pub protection: i32,
    pub max_protection: i32,
    pub inheritance: u32,
    pub shared: u32,
    pub reserved: u32,
    pub offset: u64,
    pub behavior: i32,
    pub user_wired_count: u16,
}

/// Opaque stand-in for `CFDictionaryKeyCallBacks`: only its address is ever used.
#[repr(C)]
pub struct CFDictionaryKeyCallBacks {
    _opaque: [u8; 0],
}

/// Opaque stand-in for `CFDictionaryValueCallBacks`: only its address is ever used.
#[repr(C)]
pub struct CFDictionaryValueCallBacks {
    _opaque: [u8; 0],
}

#[link(name = "IOSurface", kind = "framework")]
unsafe extern "C" {
    pub static kIOSurfaceWidth: CFStringRef;
    pub static kIOSurfaceHeight: CFStringRef;
    pub static kIOSurfaceBytesPerElement: CFStringRef;
    pub static kIOSurfaceBytesPerRow: CFStringRef;
    pub static kIOSurfaceAllocSize: CFStringRef;
    pub static kIOSurfacePixelFormat: CFStringRef;

    pub fn IOSurfaceCreate(properties: CFDictionaryRef) -> IOSurfaceRef;
    pub fn IOSurfaceLock(buffer: IOSurfaceRef, options: u32, seed: *mut u32) -> kern_return_t;
    pub fn IOSurfaceUnlock(buffer: IOSurfaceRef, options: u32, seed: *mut u32) -> kern_return_t;
    pub fn IOSurfaceGetBaseAddress(buffer: IOSurfaceRef) -> *mut c_void;
    pub fn IOSurfaceGetAllocSize(buffer: IOSurfaceRef) -> usize;
    pub fn IOSurfaceGetID(buffer: IOSurfaceRef) -> IOSurfaceID;
    pub fn IOSurfaceCreateMachPort(buffer: IOSurfaceRef) -> mach_port_t;
    pub fn IOSurfaceLookupFromMachPort(port: mach_port_t) -> IOSurfaceRef;
    pub fn IOSurfaceGetPlaneCount(buffer: IOSurfaceRef) -> usize;
    pub fn IOSurfaceGetPropertyMaximum(property: CFStringRef) -> usize;
    pub fn IOSurfaceIncrementUseCount(buffer: IOSurfaceRef);
    pub fn IOSurfaceDecrementUseCount(buffer: IOSurfaceRef);
}

#[link(name = "CoreFoundation", kind = "framework")]
unsafe extern "C" {
    pub static kCFTypeDictionaryKeyCallBacks: CFDictionaryKeyCallBacks;
    pub static kCFTypeDictionaryValueCallBacks: CFDictionaryValueCallBacks;

    pub fn CFDictionaryCreate(
        allocator: CFAllocatorRef,
        keys: *const *const c_void,
        values: *const *const c_void,
        num_values: CFIndex,
        key_call_backs: *const CFDictionaryKeyCallBacks,
        value_call_backs: *const CFDictionaryValueCallBacks,
    ) -> CFDictionaryRef;
    pub fn CFNumberCreate(
        allocator: CFAllocatorRef,
        the_type: CFNumberType,
        value_ptr: *const c_void,
    ) -> CFNumberRef;
    pub fn CFRetain(cf: CFTypeRef) -> CFTypeRef;
    pub fn CFRelease(cf: CFTypeRef);
}

unsafe extern "C" {
    /// This task's name for itself, set as the process starts: what the SDK's
    /// `mach_task_self()` macro reads (the function of that name is a legacy trap that adds
    /// a user reference on every call).
    pub static mach_task_self_: mach_port_t;
    pub fn mach_port_deallocate(task: mach_port_t, name: mach_port_t) -> kern_return_t;
    pub fn mach_vm_region(
        target_task: mach_port_t,
        address: *mut mach_vm_address_t,
        size: *mut mach_vm_size_t,
        flavor: vm_region_flavor_t,
        info: *mut vm_region_basic_info_64,
        info_count: *mut mach_msg_type_number_t,
        object_name: *mut mach_port_t,
    ) -> kern_return_t;
    pub fn madvise(addr: *mut c_void, len: usize, advice: core::ffi::c_int) -> core::ffi::c_int;
}
