//! The IOSurface backend on a real Mac: a block's port in another process, the surface's use
//! count and seed, the wiring budget of best-effort pinning, and the address-space limit.
//!
//! Tests that need a second process run this test binary again (`posix_spawn`, never a bare
//! `fork`: CoreFoundation is unusable in a forked child), one `#[ignore]`d child test at a
//! time. The Apple CI jobs (macos-14 on Apple silicon, macos-15-intel on Intel) run them all.
#![cfg(all(target_vendor = "apple", not(miri)))]

mod mach;

use core::ffi::c_void;
use mach::{
    KERN_SUCCESS, MACH_MSG_TYPE_COPY_SEND, MACH_MSG_TYPE_MAKE_SEND, MACH_MSG_TYPE_MOVE_SEND,
    MACH_MSG_TYPE_PORT_SEND, MACH_MSGH_BITS_COMPLEX, MACH_PORT_NULL, MACH_RCV_MSG,
    MACH_RCV_TIMEOUT, MACH_SEND_MSG, MACH_SEND_TIMEOUT, PortMessage, ReceiveBuffer, ValueMessage,
    kern_return_t, mach_msg_header_t, mach_msg_port_descriptor_t, mach_port_t,
};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use unimem::share::MachPort;
use unimem::{Block, Error, Pinning};

/// Set in a child's environment by its parent test: what the child may do.
const CHILD_ENV: &str = "UNIMEM_APPLE_TEST_CHILD";
/// How long either side waits for the other's message, in milliseconds.
const PATIENCE_MS: u32 = 60_000;

type IOSurfaceRef = *mut c_void;

#[link(name = "IOSurface", kind = "framework")]
unsafe extern "C" {
    fn IOSurfaceGetUseCount(buffer: IOSurfaceRef) -> i32;
    fn IOSurfaceIsInUse(buffer: IOSurfaceRef) -> u8;
    fn IOSurfaceGetSeed(buffer: IOSurfaceRef) -> u32;
    fn IOSurfaceLock(buffer: IOSurfaceRef, options: u32, seed: *mut u32) -> kern_return_t;
    fn IOSurfaceUnlock(buffer: IOSurfaceRef, options: u32, seed: *mut u32) -> kern_return_t;
    fn IOSurfaceGetBaseAddress(buffer: IOSurfaceRef) -> *mut c_void;
}

#[link(name = "CoreFoundation", kind = "framework")]
unsafe extern "C" {
    fn CFRetain(cf: *const c_void) -> *const c_void;
    fn CFRelease(cf: *const c_void);
}

/// `kIOSurfaceLockReadOnly` (IOSurfaceTypes.h).
const LOCK_READ_ONLY: u32 = 1;

fn page() -> usize {
    Block::open(1).unwrap().len()
}

/// The byte at offset `i` of a block filled with `seed`.
fn pattern(seed: u8, i: usize) -> u8 {
    (i as u8).wrapping_mul(31) ^ (i >> 9) as u8 ^ seed
}

fn fill(block: &Block, seed: u8) {
    // SAFETY: the callers use the block only through one view at a time, and the other side
    // of a shared block waits for a message before it looks.
    let bytes = unsafe { block.as_mut_slice() };
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = pattern(seed, i);
    }
}

/// Panics at the first byte of `block` that does not follow `seed`'s pattern.
fn check(block: &Block, seed: u8, whose: &str) {
    // SAFETY: as for `fill`: nothing writes the block while this view lives.
    let bytes = unsafe { block.as_slice() };
    if let Some(i) = (0..bytes.len()).find(|&i| bytes[i] != pattern(seed, i)) {
        panic!(
            "{whose}: byte {i} of {} is {:#04x}, expected {:#04x}",
            bytes.len(),
            bytes[i],
            pattern(seed, i)
        );
    }
}

fn task_self() -> mach_port_t {
    // SAFETY: set as the process starts and never written afterwards.
    unsafe { mach::mach_task_self_ }
}

/// Refuses to run a child's checks outside its parent test.
fn in_child() {
    assert!(
        std::env::var_os(CHILD_ENV).is_some(),
        "a child test, run only by its parent test"
    );
}

/// Runs the ignored test `name` of this binary in a new process, with `bootstrap` (a send
/// right of ours) as its bootstrap port when given; returns its pid.
fn spawn_child(name: &str, bootstrap: Option<mach_port_t>) -> libc::pid_t {
    let exe = std::env::current_exe().unwrap();
    let c = |text: &OsStr| CString::new(text.as_bytes()).unwrap();
    let args: Vec<CString> = [
        exe.as_os_str(),
        OsStr::new("--exact"),
        OsStr::new(name),
        OsStr::new("--ignored"),
        OsStr::new("--nocapture"),
        OsStr::new("--test-threads=1"),
    ]
    .into_iter()
    .map(c)
    .collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(key, _)| key != CHILD_ENV)
        .map(|(key, value)| {
            let mut pair = key.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            CString::new(pair).unwrap()
        })
        .collect();
    env.push(CString::new(format!("{CHILD_ENV}={name}")).unwrap());
    let mut argv: Vec<*mut libc::c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv.push(core::ptr::null_mut());
    let mut envp: Vec<*mut libc::c_char> = env.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp.push(core::ptr::null_mut());

    let mut attr: libc::posix_spawnattr_t = core::ptr::null_mut();
    // SAFETY: `attr` is a writable posix_spawnattr_t, destroyed below.
    assert_eq!(unsafe { libc::posix_spawnattr_init(&mut attr) }, 0);
    if let Some(port) = bootstrap {
        // SAFETY: `attr` was initialised above; `port` names a send right of this task, which
        // the spawn copies into the child (ours stays ours).
        let rc = unsafe {
            mach::posix_spawnattr_setspecialport_np(&mut attr, port, mach::TASK_BOOTSTRAP_PORT)
        };
        assert_eq!(rc, 0, "posix_spawnattr_setspecialport_np");
    }
    let mut pid = 0;
    // SAFETY: every pointer is live until the call returns; argv and envp end with NULL.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            args[0].as_ptr(),
            core::ptr::null(),
            &attr,
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    // SAFETY: initialised above and no longer used.
    unsafe { libc::posix_spawnattr_destroy(&mut attr) };
    assert_eq!(rc, 0, "posix_spawn of {}", exe.display());
    pid
}

/// Waits for the child and asserts that it passed.
fn wait_ok(pid: libc::pid_t, name: &str) {
    let mut status = 0;
    // SAFETY: `pid` is our child, and `status` is writable.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child {name} failed (wait status {status:#x}); its output is above"
    );
}

/// A receive right of this task with one send right made from it, both given up on drop.
struct Inbox(mach_port_t);

impl Inbox {
    fn new() -> Inbox {
        let mut name = MACH_PORT_NULL;
        // SAFETY: `name` is a writable port name.
        let kr = unsafe {
            mach::mach_port_allocate(task_self(), mach::MACH_PORT_RIGHT_RECEIVE, &mut name)
        };
        assert_eq!(kr, KERN_SUCCESS, "mach_port_allocate");
        // SAFETY: `name` is our receive right; this makes a send right to it.
        let kr = unsafe {
            mach::mach_port_insert_right(task_self(), name, name, MACH_MSG_TYPE_MAKE_SEND)
        };
        assert_eq!(kr, KERN_SUCCESS, "mach_port_insert_right");
        Inbox(name)
    }

    /// Waits for the next message, or fails with what `mach_msg` said.
    fn receive(&self) -> Result<ReceiveBuffer, kern_return_t> {
        let mut buffer = ReceiveBuffer {
            header: mach_msg_header_t::default(),
            rest: [0; 256],
        };
        // SAFETY: the buffer is writable for the size given (the pointer is the whole
        // buffer's); the call writes one message (and its trailer) into it, or nothing.
        let kr = unsafe {
            mach::mach_msg(
                core::ptr::from_mut(&mut buffer).cast(),
                MACH_RCV_MSG | MACH_RCV_TIMEOUT,
                0,
                size_of::<ReceiveBuffer>() as u32,
                self.0,
                PATIENCE_MS,
                MACH_PORT_NULL,
            )
        };
        if kr == KERN_SUCCESS {
            Ok(buffer)
        } else {
            Err(kr)
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // SAFETY: we hold one send right and the receive right of `self.0`, and give up both.
        unsafe {
            mach::mach_port_mod_refs(task_self(), self.0, mach::MACH_PORT_RIGHT_SEND, -1);
            mach::mach_port_mod_refs(task_self(), self.0, mach::MACH_PORT_RIGHT_RECEIVE, -1);
        }
    }
}

/// The port right a received complex message carries, checking it is one send right.
fn received_port(buffer: &ReceiveBuffer, id: i32) -> mach_port_t {
    // SAFETY: the buffer holds at least a header; the message is read as the larger
    // `PortMessage` only after its size says it is one.
    let message: PortMessage = unsafe { core::ptr::from_ref(buffer).cast::<PortMessage>().read() };
    let header = message.header;
    assert_eq!(header.msgh_id, id, "message id");
    assert!(
        header.msgh_bits & MACH_MSGH_BITS_COMPLEX != 0
            && header.msgh_size as usize == size_of::<PortMessage>(),
        "expected a complex message of one port descriptor, got {header:?}"
    );
    let (count, port) = (message.body.msgh_descriptor_count, message.port);
    assert_eq!(count, 1, "descriptors");
    assert_eq!(
        port.kind(),
        mach::MACH_MSG_PORT_DESCRIPTOR,
        "descriptor type"
    );
    assert_eq!(port.disposition(), MACH_MSG_TYPE_PORT_SEND, "a send right");
    port.name
}

/// The value a received simple message carries.
fn received_value(buffer: &ReceiveBuffer, id: i32) -> u64 {
    // SAFETY: as in `received_port`; `ValueMessage` is smaller than the buffer.
    let message: ValueMessage =
        unsafe { core::ptr::from_ref(buffer).cast::<ValueMessage>().read() };
    let header = message.header;
    assert_eq!(header.msgh_id, id, "message id");
    assert_eq!(
        header.msgh_size as usize,
        size_of::<ValueMessage>(),
        "{header:?}"
    );
    message.value
}

/// Sends `message` (its header filled in but for the size) without blocking for long.
///
/// # Safety
/// `T` is a `repr(C)` message that starts with its `mach_msg_header_t`, and this task holds
/// the rights that its header bits and descriptors name, with those dispositions.
unsafe fn send<T>(message: &mut T) {
    let size = size_of::<T>() as u32;
    // The pointer is the whole message's: the kernel reads all of it.
    let header = core::ptr::from_mut(message).cast::<mach_msg_header_t>();
    // SAFETY: the message starts with its header (the caller's promise), and is writable.
    unsafe { (*header).msgh_size = size };
    // SAFETY: `header` starts a message of `size` bytes whose rights this task holds, as the
    // caller promises.
    let kr = unsafe {
        mach::mach_msg(
            header,
            MACH_SEND_MSG | MACH_SEND_TIMEOUT,
            size,
            0,
            MACH_PORT_NULL,
            PATIENCE_MS,
            MACH_PORT_NULL,
        )
    };
    assert_eq!(kr, KERN_SUCCESS, "mach_msg send: {kr:#x}");
}

/// A complex message to `to` (with `to_disposition`) carrying `port` (with `disposition`).
fn port_message(
    to: mach_port_t,
    to_disposition: u32,
    port: mach_port_t,
    disposition: u32,
    id: i32,
) -> PortMessage {
    let mut message = PortMessage::default();
    message.header.msgh_bits = mach::msgh_bits(to_disposition, 0) | MACH_MSGH_BITS_COMPLEX;
    message.header.msgh_remote_port = to;
    message.header.msgh_id = id;
    message.body.msgh_descriptor_count = 1;
    message.port = mach_msg_port_descriptor_t::new(port, disposition);
    message
}

const REQUEST: i32 = 0x756e_0001;
const SURFACE: i32 = 0x756e_0002;
const DONE: i32 = 0x756e_0003;
const PARENT_SEED: u8 = 0x5a;
const CHILD_SEED: u8 = 0xc3;

/// The parent's side: the child asks for a surface, giving a reply port; the parent sends a
/// copy of its block's port; the child maps the block, checks the parent's bytes, writes its
/// own and reports its length; the parent checks the child's bytes.
#[test]
fn a_child_process_maps_a_block_through_a_mach_port() {
    const CHILD: &str = "child_maps_the_parents_block";
    let inbox = Inbox::new();
    // Not a whole number of pages: both sides must agree on the rounded length.
    let block = Block::options()
        .pinning(Pinning::Off)
        .open(3 * page() + 1)
        .unwrap();
    fill(&block, PARENT_SEED);
    let port = block.mach_port().unwrap();
    let pid = spawn_child(CHILD, Some(inbox.0));
    let waited = |what: &str, kr: kern_return_t| -> ! {
        // The child has failed or hangs: its status (or our timeout) says which.
        // SAFETY: `pid` is our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_ok(pid, CHILD);
        panic!("no {what} from the child: mach_msg returned {kr:#x}");
    };
    let request = inbox.receive().unwrap_or_else(|kr| waited("request", kr));
    let reply = received_port(&request, REQUEST);
    // Our `port` keeps its right: the message carries a copy. The reply right is moved.
    let mut answer = port_message(
        reply,
        MACH_MSG_TYPE_MOVE_SEND,
        port.as_raw(),
        MACH_MSG_TYPE_COPY_SEND,
        SURFACE,
    );
    // SAFETY: a message type that starts with its header; its rights are ours.
    unsafe { send(&mut answer) };
    let done = inbox.receive().unwrap_or_else(|kr| waited("report", kr));
    let child_len = received_value(&done, DONE);
    wait_ok(pid, CHILD);
    assert_eq!(child_len, block.len() as u64, "the child's len()");
    check(&block, CHILD_SEED, "the parent, after the child wrote");
    drop(port);
    check(&block, CHILD_SEED, "the parent, after its port is gone");
}

#[test]
#[ignore = "runs only as the child of a_child_process_maps_a_block_through_a_mach_port"]
fn child_maps_the_parents_block() {
    in_child();
    let mut parent = MACH_PORT_NULL;
    // SAFETY: `parent` is a writable port name.
    let kr =
        unsafe { mach::task_get_special_port(task_self(), mach::TASK_BOOTSTRAP_PORT, &mut parent) };
    assert_eq!(kr, KERN_SUCCESS, "task_get_special_port");
    assert_ne!(
        parent, MACH_PORT_NULL,
        "the parent's port in place of the bootstrap"
    );
    let inbox = Inbox::new();
    // A send right to our inbox goes with the request, made from our receive right.
    let mut request = port_message(
        parent,
        MACH_MSG_TYPE_COPY_SEND,
        inbox.0,
        MACH_MSG_TYPE_MAKE_SEND,
        REQUEST,
    );
    // SAFETY: a message type that starts with its header; its rights are ours.
    unsafe { send(&mut request) };
    let answer = inbox
        .receive()
        .unwrap_or_else(|kr| panic!("no surface from the parent: {kr:#x}"));
    // SAFETY: the message moved this send right to us, and nothing else owns it.
    let port = unsafe { MachPort::from_raw(received_port(&answer, SURFACE)) };
    // SAFETY: parent and child use the block one at a time, ordered by the messages.
    let block = unsafe { Block::options().pinning(Pinning::Off).open_mach_port(&port) }.unwrap();
    assert!(
        block.len() > 3 * page() && block.len() % page() == 0,
        "{block:?}"
    );
    check(&block, PARENT_SEED, "the child");
    fill(&block, CHILD_SEED);
    let mut done = ValueMessage::default();
    done.header.msgh_bits = mach::msgh_bits(MACH_MSG_TYPE_COPY_SEND, 0);
    done.header.msgh_remote_port = parent;
    done.header.msgh_id = DONE;
    done.value = block.len() as u64;
    // SAFETY: a message type that starts with its header; its rights are ours.
    unsafe { send(&mut done) };
    println!("child child_maps_the_parents_block: all checks passed");
}

/// A reference of our own to a block's surface, so that it can be looked at after the block
/// is gone, with the IOSurface calls the tests make on it.
struct Surface(IOSurfaceRef);

impl Surface {
    fn of(block: &Block) -> Surface {
        let surface = block.handle();
        // SAFETY: the handle is a live IOSurface while `block` lives; this reference is ours.
        unsafe { CFRetain(surface.cast_const()) };
        Surface(surface)
    }

    fn use_count(&self) -> i32 {
        // SAFETY: the surface is live while `self` holds its reference.
        unsafe { IOSurfaceGetUseCount(self.0) }
    }

    fn in_use(&self) -> bool {
        // SAFETY: as above.
        unsafe { IOSurfaceIsInUse(self.0) != 0 }
    }

    fn seed(&self) -> u32 {
        // SAFETY: as above.
        unsafe { IOSurfaceGetSeed(self.0) }
    }

    /// Locks with `options`, returning the seed reported and the base address.
    fn lock(&self, options: u32) -> (u32, *mut u8) {
        let mut seed = 0;
        // SAFETY: as above; `unlock` with the same options undoes it.
        let kr = unsafe { IOSurfaceLock(self.0, options, &mut seed) };
        assert_eq!(kr, KERN_SUCCESS, "IOSurfaceLock({options})");
        // SAFETY: as above, and locked.
        (seed, unsafe { IOSurfaceGetBaseAddress(self.0) }.cast())
    }

    /// Unlocks a lock taken with `options`, returning the seed reported.
    fn unlock(&self, options: u32) -> u32 {
        let mut seed = 0;
        // SAFETY: as above; the caller locked it with the same options.
        let kr = unsafe { IOSurfaceUnlock(self.0, options, &mut seed) };
        assert_eq!(kr, KERN_SUCCESS, "IOSurfaceUnlock({options})");
        seed
    }
}

impl Drop for Surface {
    fn drop(&mut self) {
        // SAFETY: we own this one reference.
        unsafe { CFRelease(self.0.cast_const()) };
    }
}

/// Every block holds a use count on its surface, so that surface pools (Core Video's) do not
/// recycle one under it: also a block adopted through a port whose sender is gone.
#[test]
fn a_surface_is_in_use_while_a_block_holds_it() {
    let unpinned = Block::options().pinning(Pinning::Off).clone();
    let block = unpinned.open(page()).unwrap();
    let port = block.mach_port().unwrap();
    // SAFETY: the blocks are never read or written.
    let adopted = unsafe { unpinned.open_mach_port(&port) }.unwrap();
    let surface = Surface::of(&adopted);
    assert_eq!(surface.use_count(), 2, "two blocks");
    drop(port);
    drop(block);
    assert_eq!(surface.use_count(), 1, "the adopted block");
    assert!(surface.in_use(), "in use by the adopted block");
    drop(adopted);
    assert_eq!(surface.use_count(), 0, "no block");
    assert!(!surface.in_use(), "no longer in use");
}

/// A block keeps its surface locked for writing while it lives. Other users of the surface
/// lock and unlock around it as they would otherwise: locks nest, the address stays, a
/// read-only lock leaves the seed alone, a write lock moves it as it unlocks, and so does the
/// block's own unlock when it drops.
#[test]
fn other_lockers_and_the_seed_work_while_a_block_lives() {
    let block = Block::options().pinning(Pinning::Off).open(page()).unwrap();
    let surface = Surface::of(&block);
    let before = surface.seed();
    let (seed, base) = surface.lock(LOCK_READ_ONLY);
    assert_eq!(seed, before, "the seed a reader's lock reports");
    assert_eq!(base, block.as_ptr(), "one mapping, one address");
    surface.unlock(LOCK_READ_ONLY);
    assert_eq!(surface.seed(), before, "after a reader");

    let (_, base) = surface.lock(0);
    assert_eq!(base, block.as_ptr(), "one mapping, one address");
    // SAFETY: the first byte is inside the surface, and nothing else touches it now.
    unsafe { base.write(0x77) };
    let unlocked = surface.unlock(0);
    let written = surface.seed();
    assert_ne!(written, before, "a writer's unlock moves the seed");
    assert_eq!(unlocked, written, "and reports the new one");
    // SAFETY: nothing writes the byte now.
    let first = unsafe { block.as_ptr().read() };
    assert_eq!(first, 0x77, "the block sees the writer's byte");

    drop(block);
    assert_ne!(
        surface.seed(),
        written,
        "a block's drop ends its write lock, and seed watchers see its writes"
    );
}

/// macOS's memory-lock limit is unlimited by default: best effort must not wire a block the
/// machine cannot spare (more than a quarter of RAM, with everything already wired), and
/// still wires a small one.
#[test]
fn best_effort_wires_within_a_quarter_of_ram() {
    // SAFETY: sysconf has no preconditions.
    let ram = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) } as usize * page();
    let small = Block::options()
        .pinning(Pinning::BestEffort)
        .open(1 << 20)
        .unwrap();
    assert!(small.is_pinned(), "a MiB is within any machine's budget");
    let over = ram / 4 + (16 << 20);
    let max = (4usize << 30) - (16 << 10);
    if over > max {
        println!(
            "{} GiB of RAM: a quarter is more than one surface holds",
            ram >> 30
        );
        return;
    }
    // Lazy and refused: opening costs nothing. Without the budget it would be wired whole.
    let big = Block::options()
        .pinning(Pinning::BestEffort)
        .open(over)
        .unwrap();
    assert!(
        !big.is_pinned(),
        "{} MiB of {} MiB RAM was wired",
        over >> 20,
        ram >> 20
    );
    // `Pinning::Required` still wires what the system allows (not tried: it would wire it).
    drop((big, small));
}

/// Runs in a child: an address-space limit 64 MiB above what this task maps; a 1 GiB block
/// is refused as `OutOfMemory` naming the limit, and a small one still opens.
#[test]
#[ignore = "runs only as the child of an_address_space_refusal_names_size_and_limit"]
fn address_space_child() {
    in_child();
    // SAFETY: a C struct of integers, for which all zeroes is a valid value.
    let mut info: libc::mach_task_basic_info = unsafe { core::mem::zeroed() };
    let mut count = libc::MACH_TASK_BASIC_INFO_COUNT;
    // SAFETY: `info` is writable for `count` words.
    let kr = unsafe {
        libc::task_info(
            task_self(),
            libc::MACH_TASK_BASIC_INFO,
            (&raw mut info).cast(),
            &mut count,
        )
    };
    assert_eq!(kr, KERN_SUCCESS, "task_info");
    let mut rlimit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rlimit` is writable.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut rlimit) }, 0);
    // XNU refuses a limit below what the task maps (EINVAL); task_info reports about that
    // (`vm_map_adjusted_size`), so the first limit above it that XNU takes, and 64 MiB more
    // for the small block, leaves room for less than the 1 GiB block.
    let set = |limit: u64| {
        let wanted = libc::rlimit {
            rlim_cur: limit,
            rlim_max: rlimit.rlim_max,
        };
        // SAFETY: a valid limit; this child process is the only one it affects.
        unsafe { libc::setrlimit(libc::RLIMIT_AS, &wanted) == 0 }
    };
    let mapped = (info.virtual_size >> 20) << 20;
    let taken = (1..=8)
        .map(|step| mapped + step * (64 << 20))
        .find(|&limit| set(limit))
        .expect("setrlimit(RLIMIT_AS) took no limit up to 512 MiB above the task's size");
    let limit = taken + (64 << 20);
    assert!(set(limit), "setrlimit(RLIMIT_AS, {limit})");
    let err = Block::options()
        .pinning(Pinning::Off)
        .open(1 << 30)
        .unwrap_err();
    match &err {
        Error::OutOfMemory {
            bytes,
            address_space_limit,
            ..
        } => {
            assert_eq!(*bytes, 1 << 30);
            assert_eq!(*address_space_limit, Some(limit));
        }
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    let text = err.to_string();
    for needle in ["1 GiB", "RLIMIT_AS", "ulimit -v"] {
        assert!(text.contains(needle), "{needle:?} missing from {text:?}");
    }
    Block::options()
        .pinning(Pinning::Off)
        .open(1 << 20)
        .unwrap();
    println!("child address_space_child: all checks passed");
}

#[test]
fn an_address_space_refusal_names_size_and_limit() {
    let pid = spawn_child("address_space_child", None);
    wait_ok(pid, "address_space_child");
}
