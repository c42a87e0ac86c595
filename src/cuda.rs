//! NVIDIA GPUs on Linux: register a [`Block`] with the CUDA driver, so that the GPU reads and
//! writes the block's own pages, with no copy.
//!
//! Enabled by the `cuda` feature (off by default), on Linux only: elsewhere the feature does
//! nothing, so a crate may enable it unconditionally. Nothing links against CUDA: the driver,
//! `libcuda.so.1`, is opened with `dlopen` the first time it is asked for, and a machine
//! without it builds and runs everything else. The safe [`Driver::load`] (and so
//! [`Block::register_cuda`]) opens only `libcuda.so.1`, through the loader's search path; a
//! driver elsewhere (or a test double) is opened with the unsafe [`Driver::load_from`], or
//! [`Driver::load_from_env`] for a path in the environment variable `UNIMEM_CUDA_DRIVER`.
//!
//! [`Block::register_cuda`] page-locks the block for DMA (with physical addresses fixed while
//! it is registered, which `mlock` alone does not promise) and maps it into the GPU's address
//! space. Copies from and to it then run at pinned-memory speed, and kernels can read and
//! write it in place through [`Registration::device_ptr`]. A block is `memfd` memory that other
//! processes can map too (see [`share`](crate::share)): what the GPU writes, they see.
//!
//! ```no_run
//! use unimem::Tape;
//!
//! let tape = Tape::start_warm(64 << 20)?;
//! let input = tape.take_fill(1 << 20, 1.0f32).unwrap();
//! let registration = tape.block().register_cuda()?;
//! let offset = tape.offset_of(input.as_ptr()).unwrap();
//! let device_input: u64 = registration.device_ptr_at(offset);
//! // Hand `device_input` to a kernel or a cuMemcpy with your CUDA bindings, with
//! // `registration.context()` current; keep `input` untouched until the GPU is done.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Contexts
//!
//! A registration never depends on a context it does not own. It registers the block under a
//! device's *primary* context (the one the CUDA runtime uses), which it retains
//! (`cuDevicePrimaryCtxRetain`) for as long as it lives and releases when dropped: the
//! primary context of the device of the context current on the calling thread
//! (`cuCtxGetDevice`), or of device 0 when none is current. The block is registered
//! `PORTABLE`, so it counts as pinned in every context, the caller's own included; the caller's
//! context may even be destroyed while the registration lives. The registration makes its
//! primary context current only around its own driver calls (push, call, pop) and leaves the
//! thread's context stack as it found it.
//!
//! Resetting a device (`cudaDeviceReset`, `cuDevicePrimaryCtxReset`) tears down its primary
//! context's state whoever holds it; NVIDIA leaves it to the caller of a reset to make sure no
//! other module in the process still uses the device, and a live registration is such a use.
//!
//! # A registration borrows its block
//!
//! [`Registration`] holds a `&Block`, so nothing that needs the block's owner by `&mut` runs
//! while it lives. In particular [`Tape::clear`](crate::Tape::clear) takes `&mut self`: a
//! tape whose block is registered cannot be cleared with it, and a loop that registers once
//! and clears every step does not compile. Instead:
//!
//! - register once, and reset the tape with [`Tape::clear_shared`](crate::Tape::clear_shared),
//!   which takes `&self`, under its contract (nothing taken before the reset is used after it,
//!   and the GPU is done with it: synchronise first);
//! - or keep the GPU's memory in a [`Grid`](crate::Grid) and register the grid's block: a
//!   cell goes back when it is dropped (or [`Grid::give`](crate::Grid::give)n back), through
//!   `&self`, so nothing needs `&mut`;
//! - or register per step, dropping the registration before `clear`: correct, but each step
//!   then pays for pinning and mapping the whole block and for unmapping it again, time that
//!   grows with the block's size.
//!
//! ```no_run
//! use unimem::Tape;
//!
//! let tape = Tape::start_warm(64 << 20)?;
//! let registration = tape.block().register_cuda()?;
//! for _step in 0..100 {
//!     let offset = {
//!         let batch = tape.take_fill(1 << 16, 1.0f32).unwrap();
//!         tape.offset_of(batch.as_ptr()).unwrap()
//!     }; // `batch` ends here: from now on only the GPU touches those bytes
//!     let device_batch = registration.device_ptr_at(offset);
//!     // ... run the step's kernels on `device_batch`, then synchronise ...
//! #   let _ = device_batch;
//!     // SAFETY: nothing taken from the tape is used after this, the GPU is done with it
//!     // (synchronised above), and no other thread uses the tape.
//!     unsafe { tape.clear_shared() };
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The GPU is outside the borrow checker
//!
//! A device pointer is a `u64`. Nothing in unimem reads or writes through it: only the
//! caller's own (unsafe) driver calls and kernels do. Those calls carry the contract that
//! [`Block::handle`] carries: while the device may touch a range of the block, no reference
//! handed out by safe code (a [`Tape`](crate::Tape)'s slices, a [`Cell`](crate::Cell)) may
//! cover bytes the device writes, and none may be written to bytes the device reads. Take the
//! memory, hand its device address to the GPU, and read it again only after synchronising.

use crate::block::Block;
use crate::sys::cuda as sys;
use core::ffi::{CStr, c_void};
use core::fmt;
use core::ptr::NonNull;
use std::io;
use std::path::Path;

/// Why the CUDA driver could not be used, or refused a registration.
///
/// Each message says what happened and what to do about it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The driver library could not be opened: no NVIDIA driver is installed, or it is not
    /// where the loader looks.
    NoDriver {
        /// The library that was looked for: `libcuda.so.1`, or what [`Driver::load_from`] or
        /// `UNIMEM_CUDA_DRIVER` ([`Driver::load_from_env`]) named.
        library: String,
        /// What the loader said (`dlerror`), or which entry point was missing.
        reason: String,
    },
    /// The driver is older than CUDA 11.0, the oldest this binding uses.
    DriverTooOld {
        /// The library that was opened.
        library: String,
        /// What `cuDriverGetVersion` reported: 1000 × major + 10 × minor.
        version: i32,
    },
    /// The driver is there but sees no GPU.
    NoDevice {
        /// The driver call that found none, and the driver's words for it.
        reason: String,
    },
    /// Some of the block is already registered with CUDA: by another live [`Registration`]
    /// of the same block, by code outside unimem, or by a `Registration` that was leaked
    /// ([`core::mem::forget`]), whose addresses stay registered until the process exits,
    /// even after its block is gone and a new block is mapped at the same addresses (see
    /// [`Registration`]).
    AlreadyRegistered,
    /// A driver call failed: `cuMemHostRegister` refused to register the block, or a call
    /// around it failed.
    Refused {
        /// The entry point, as `cuda.h` names it (`cuMemHostRegister`).
        call: &'static str,
        /// The `CUresult` it returned.
        code: i32,
        /// The driver's name for the code (`cuGetErrorName`), such as
        /// `CUDA_ERROR_NOT_SUPPORTED`.
        name: String,
        /// The driver's description of it (`cuGetErrorString`).
        description: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoDriver { library, reason } => write!(
                f,
                "the CUDA driver could not be loaded from {library:?} ({reason}): install the \
                 NVIDIA driver; if it is installed outside the loader's search path, add its \
                 directory to LD_LIBRARY_PATH, or open its libcuda.so.1 with \
                 Driver::load_from (or Driver::load_from_env and {var})",
                var = sys::LIBRARY_VARIABLE,
            ),
            Error::DriverTooOld { library, version } => write!(
                f,
                "the CUDA driver {library:?} supports CUDA {}.{}; unimem needs CUDA {}.{} or \
                 newer (NVIDIA driver 450 or later): update the driver, or open a newer one \
                 with Driver::load_from (or Driver::load_from_env and {var})",
                version / 1000,
                version % 1000 / 10,
                sys::MIN_VERSION / 1000,
                sys::MIN_VERSION % 1000 / 10,
                var = sys::LIBRARY_VARIABLE,
            ),
            Error::NoDevice { reason } => write!(
                f,
                "the CUDA driver sees no GPU ({reason}): check that `nvidia-smi` lists one, and \
                 that CUDA_VISIBLE_DEVICES, if set, names it"
            ),
            Error::AlreadyRegistered => f.write_str(
                "the block is already registered with CUDA \
                 (CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED): by another Registration of this \
                 block that is still alive, by code outside unimem, or by a Registration that \
                 was leaked (mem::forget), which leaves its addresses registered until the \
                 process exits, also for a later block at the same addresses; keep one \
                 Registration per block and share it, drop the other registration first, and \
                 never leak one",
            ),
            Error::Refused {
                call,
                code,
                name,
                description,
            } => {
                write!(f, "{call} failed with {name}")?;
                if !description.is_empty() {
                    write!(f, " ({description})")?;
                }
                f.write_str(": ")?;
                f.write_str(match *code {
                    sys::CUDA_ERROR_OUT_OF_MEMORY => {
                        "the driver could not pin the pages; free memory, or register less"
                    }
                    sys::CUDA_ERROR_NOT_PERMITTED | sys::CUDA_ERROR_NOT_SUPPORTED => {
                        "this GPU or system does not let CUDA map host memory (some virtualised \
                         GPUs do not); copy through memory from cuMemAllocHost instead"
                    }
                    sys::CUDA_ERROR_INVALID_CONTEXT | sys::CUDA_ERROR_CONTEXT_IS_DESTROYED => {
                        "the context current on this thread is not usable; make a live context \
                         current, or none (device 0's primary context is then used)"
                    }
                    sys::CUDA_ERROR_INVALID_VALUE => {
                        "the driver rejected the arguments, which is a bug in unimem: please \
                         report it"
                    }
                    _ => "see the driver's description of the error",
                })
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match &err {
            Error::NoDriver { .. } | Error::DriverTooOld { .. } | Error::NoDevice { .. } => {
                io::ErrorKind::Unsupported
            }
            Error::AlreadyRegistered => io::ErrorKind::AlreadyExists,
            Error::Refused { .. } => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

impl From<sys::LoadFailure> for Error {
    fn from(failure: sys::LoadFailure) -> Error {
        match failure {
            sys::LoadFailure::Open { library, reason } => Error::NoDriver { library, reason },
            sys::LoadFailure::Missing { library, symbol } => Error::NoDriver {
                library,
                reason: format!("it has no {symbol}, which every CUDA driver exports"),
            },
            sys::LoadFailure::TooOld { library, version } => {
                Error::DriverTooOld { library, version }
            }
            sys::LoadFailure::Call(failure) => failure.into(),
        }
    }
}

impl From<sys::Failure> for Error {
    fn from(failure: sys::Failure) -> Error {
        match failure.code {
            sys::CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED => Error::AlreadyRegistered,
            sys::CUDA_ERROR_NO_DEVICE | sys::CUDA_ERROR_INVALID_DEVICE => Error::NoDevice {
                reason: format!("{} returned {}", failure.call, failure.name),
            },
            code => Error::Refused {
                call: failure.call,
                code,
                name: failure.name,
                description: failure.description,
            },
        }
    }
}

/// The CUDA driver library, opened once per process and kept open.
///
/// [`Block::register_cuda`] uses [`Driver::load`]; hold a `Driver` to open another library,
/// to ask the version, or to find an entry point unimem does not call.
#[derive(Clone, Copy)]
pub struct Driver {
    library: &'static sys::Library,
}

impl Driver {
    /// The system's CUDA driver, `libcuda.so.1`, found through the loader's search path
    /// (`LD_LIBRARY_PATH`, the `ldconfig` cache, the default directories), opened and
    /// initialised (`cuInit`) on the first call. Later calls return the same driver, or the
    /// same error.
    ///
    /// Nothing else is ever opened here: the environment variable `UNIMEM_CUDA_DRIVER` is
    /// read only by the unsafe [`load_from_env`](Driver::load_from_env), since safe code can
    /// set a variable in this process, and a library that is not a driver would be called as
    /// one.
    ///
    /// # Errors
    /// [`Error::NoDriver`] when the library cannot be opened or is not a CUDA driver,
    /// [`Error::DriverTooOld`] below CUDA 11.0, [`Error::NoDevice`] when `cuInit` finds no
    /// GPU, [`Error::Refused`] when `cuInit` fails otherwise.
    ///
    /// Opening a library runs its code: `libcuda.so.1` is the system's NVIDIA driver, found
    /// where the loader finds every other system library.
    ///
    /// ```
    /// match unimem::cuda::Driver::load() {
    ///     Ok(driver) => println!("CUDA {} at {}", driver.version(), driver.path()),
    ///     Err(why) => println!("no GPU here: {why}"),
    /// }
    /// ```
    pub fn load() -> Result<Driver, Error> {
        Ok(Driver {
            library: sys::load_default()?,
        })
    }

    /// The driver library at `path` (or a name for the loader to search), opened and
    /// initialised on the first call for that path; later calls return the same driver.
    ///
    /// Several libraries may be open at once. Registrations made through one are unregistered
    /// through the same one.
    ///
    /// # Safety
    /// `path` names a CUDA driver library, or nothing: opening a library runs its
    /// initialisers, and unimem calls the entry points it finds under CUDA's names with the
    /// signatures `cuda.h` gives them. A library that is not a driver but exports, say, a
    /// `cuInit` of another type is undefined behaviour. (A library without
    /// `cuDriverGetVersion` is refused before anything in it is called.)
    ///
    /// # Errors
    /// As for [`load`](Driver::load).
    pub unsafe fn load_from(path: impl AsRef<Path>) -> Result<Driver, Error> {
        Ok(Driver {
            // SAFETY: the caller's promise.
            library: unsafe { sys::load(path.as_ref().as_os_str()) }?,
        })
    }

    /// The driver library named by the environment variable `UNIMEM_CUDA_DRIVER` (a path, or
    /// a name for the loader to search), read at this call, or `libcuda.so.1` when it is unset
    /// or empty: for a driver outside the loader's search path, or a test double, chosen by
    /// whoever runs the program. Opened as [`load_from`](Driver::load_from) opens it.
    ///
    /// # Safety
    /// As for [`load_from`](Driver::load_from), for what the variable names when this is
    /// called: a CUDA driver library, or nothing. Any code in the process may have set the
    /// variable (`std::env::set_var` is safe in edition 2021), so call this only where the
    /// environment is the user's own choice, in a program's `main` or a test, never in a
    /// library on behalf of its callers.
    ///
    /// # Errors
    /// As for [`load`](Driver::load).
    ///
    /// ```
    /// // SAFETY: UNIMEM_CUDA_DRIVER, where set, names a CUDA driver: the user's own choice.
    /// match unsafe { unimem::cuda::Driver::load_from_env() } {
    ///     Ok(driver) => println!("CUDA {} at {}", driver.version(), driver.path()),
    ///     Err(why) => println!("no GPU here: {why}"),
    /// }
    /// ```
    pub unsafe fn load_from_env() -> Result<Driver, Error> {
        Ok(Driver {
            // SAFETY: the caller's promise.
            library: unsafe { sys::load_from_environment() }?,
        })
    }

    /// The path or name the library was opened with.
    pub fn path(&self) -> &'static str {
        self.library.path()
    }

    /// The CUDA version the driver supports, as `cuDriverGetVersion` reports it:
    /// 1000 × major + 10 × minor, so `12040` is CUDA 12.4.
    pub fn version(&self) -> i32 {
        self.library.version()
    }

    /// The address of an entry point of the driver library (`dlsym`), for calls unimem does
    /// not make: `cuMemcpyHtoD_v2`, `cuLaunchKernel`, ... `None` if it has no such symbol.
    ///
    /// Calling it means turning the address into a function pointer of the type `cuda.h`
    /// declares for that name (with `core::mem::transmute`), which is `unsafe`: the types
    /// must match exactly, versioned names (`_v2`) included.
    pub fn symbol(&self, name: &CStr) -> Option<NonNull<c_void>> {
        self.library.symbol(name)
    }

    /// Registers `block` with this driver. See [`Block::register_cuda`].
    ///
    /// # Errors
    /// As for [`Block::register_cuda`].
    pub fn register<'b>(&self, block: &'b Block) -> Result<Registration<'b>, Error> {
        // SAFETY: the block's memory is mapped for `len` bytes while it lives, and the
        // registration borrows it, so the block outlives the registration unless the
        // registration is leaked (see `register` for why that is still sound).
        let registered = unsafe { self.library.register(block.as_non_null(), block.len()) }?;
        Ok(Registration { block, registered })
    }
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("path", &self.path())
            .field("version", &self.version())
            .finish()
    }
}

impl Block {
    /// Registers this block with the system's CUDA driver ([`Driver::load`], which opens
    /// `libcuda.so.1` only; [`Driver::register`] registers with another): page-locked for
    /// DMA and mapped into the GPU's address space (`cuMemHostRegister` with `PORTABLE` and
    /// `DEVICEMAP`), until the returned [`Registration`] is dropped.
    ///
    /// Registration pins every page of the block, faulting in those a lazy block has not
    /// touched yet: it takes longer on a lazy block, and the pages stay resident whatever the
    /// block's [`Pinning`](crate::Pinning). It registers under the primary context of the
    /// device of the CUDA context current on this thread, or of device 0 when none is, and
    /// holds a reference to that primary context until dropped (see the
    /// [module docs](crate::cuda#contexts)).
    ///
    /// # Errors
    /// What [`Driver::load`] returns when there is no usable driver;
    /// [`Error::AlreadyRegistered`] when the block (or part of it) is registered already;
    /// [`Error::NoDevice`] when device 0 does not exist (with no context current);
    /// [`Error::Refused`], with the
    /// driver's name for the error, when the driver refuses the registration (not enough
    /// lockable memory, a system that cannot map host memory) or a call around it fails.
    ///
    /// ```no_run
    /// let block = unimem::Block::open(1 << 20)?;
    /// let registration = block.register_cuda()?;
    /// println!("the GPU sees the block at {:#x}", registration.device_ptr());
    /// drop(registration); // unregistered; the block lives on
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn register_cuda(&self) -> Result<Registration<'_>, Error> {
        Driver::load()?.register(self)
    }
}

/// A [`Block`] registered with the CUDA driver, for as long as this value lives: the GPU can
/// read and write the block's pages in place at the addresses it gives. Unregistered on drop.
///
/// It borrows the block, so the block outlives the registration (and nothing that needs the
/// block's owner by `&mut`, such as [`Tape::clear`](crate::Tape::clear), runs meanwhile: see
/// the [module docs](crate::cuda#a-registration-borrows-its-block)). It may be sent to and
/// dropped on another thread, and shared between threads: it only hands out numbers, and
/// the driver API may be called from any thread.
///
/// It owns the context it uses: a reference to a device's primary context, retained when the
/// block is registered and released (`cuDevicePrimaryCtxRelease`) when the registration is
/// dropped, after the block is unregistered. Whatever context the caller had current may be
/// destroyed while the registration lives; it was only asked which device it is on.
///
/// A registration that is leaked ([`core::mem::forget`], a reference cycle, `Box::leak`) is
/// never unregistered: safe, but the driver keeps those addresses registered, and their
/// pages pinned, until the process exits. Once the block is dropped, the system may map a
/// later block at the same addresses, and registering that block fails with
/// [`Error::AlreadyRegistered`]. Drop or [`unregister`](Registration::unregister) every
/// registration.
#[must_use = "dropping a registration unregisters the block at once"]
pub struct Registration<'b> {
    block: &'b Block,
    registered: sys::Registered,
}

impl<'b> Registration<'b> {
    /// The block's first byte, as the GPU addresses it (a `CUdeviceptr`).
    ///
    /// A number, not a pointer anything in Rust can use: see the
    /// [module docs](crate::cuda#the-gpu-is-outside-the-borrow-checker) for what using it in
    /// a driver call or a kernel requires.
    #[inline]
    pub fn device_ptr(&self) -> u64 {
        self.registered.device_ptr()
    }

    /// The device address of the byte at `offset` in the block, such as an offset from
    /// [`Tape::offset_of`](crate::Tape::offset_of) or [`Cell::offset`](crate::Cell::offset).
    /// `offset` may equal the block's length, for the end of a range.
    ///
    /// # Panics
    /// If `offset` is past the end of the block.
    #[inline]
    #[track_caller]
    pub fn device_ptr_at(&self, offset: usize) -> u64 {
        assert!(
            offset <= self.block.len(),
            "offset {offset} is past the end of the registered block ({} bytes): pass an \
             offset of memory in this block, as Tape::offset_of or Cell::offset give",
            self.block.len()
        );
        self.device_ptr() + offset as u64
    }

    /// The registered block.
    #[inline]
    pub fn block(&self) -> &'b Block {
        self.block
    }

    /// The CUDA context (`CUcontext`) the block was registered under: the primary context of
    /// the device that was current at registration (device 0 if none was), the one the CUDA
    /// runtime uses on that device. Make it current (with `cuCtxPushCurrent`) for driver
    /// calls on the device pointer from a thread that has no context of that device.
    ///
    /// The registration holds a reference to this context, so the handle stays valid while
    /// the registration lives, and releases it on drop: to use the context longer, retain it
    /// yourself (`cuDevicePrimaryCtxRetain` on its device).
    #[inline]
    pub fn context(&self) -> *mut c_void {
        self.registered.context()
    }

    /// The driver the block is registered with.
    pub fn driver(&self) -> Driver {
        Driver {
            library: self.registered.library(),
        }
    }

    /// Unregisters now, and says whether the driver agreed; dropping the registration does
    /// the same and ignores the answer.
    ///
    /// # Errors
    /// [`Error::Refused`] with what `cuMemHostUnregister` (or the release of the primary
    /// context) returned; the primary context is released either way. Memory the driver
    /// failed to unregister stays pinned until the process exits.
    pub fn unregister(self) -> Result<(), Error> {
        Ok(self.registered.unregister()?)
    }
}

impl fmt::Debug for Registration<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("host", &self.block.as_ptr())
            .field("len", &self.block.len())
            .field("device_ptr", &format_args!("{:#x}", self.device_ptr()))
            .field("context", &self.context())
            .finish()
    }
}
