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
//! - put the tape in a [`Steps`](crate::Steps) and register `steps.block()`: workers take
//!   through [`Steps::enter`](crate::Steps::enter)'s guards, and
//!   [`Steps::clear`](crate::Steps::clear) needs only `&self`, so the registration and the
//!   clears live side by side, safely (synchronise with the GPU before the clear: the borrow
//!   checker knows the CPU's borrows, not the GPU's);
//! - or register once, and reset the tape with [`Tape::clear_shared`](crate::Tape::clear_shared),
//!   which takes `&self`, under its contract (nothing taken before the reset is used after it,
//!   and the GPU is done with it);
//! - or keep the GPU's memory in a [`Grid`](crate::Grid) and register the grid's block: a
//!   cell goes back when it is dropped (or [`Grid::give`](crate::Grid::give)n back), through
//!   `&self`, so nothing needs `&mut`;
//! - or register per step, dropping the registration before `clear`: correct, but each step
//!   then pays for pinning and mapping the whole block and for unmapping it again, time that
//!   grows with the block's size.
//!
//! ```no_run
//! use unimem::{Steps, Tape};
//!
//! let steps = Steps::new(Tape::start_warm(64 << 20)?);
//! let registration = steps.block().register_cuda()?;
//! for _step in 0..100 {
//!     let offset = {
//!         let step = steps.enter();
//!         let batch = step.take_fill(1 << 16, 1.0f32).unwrap();
//!         step.offset_of(batch.as_ptr()).unwrap()
//!     }; // `batch` and its guard end here: from now on only the GPU touches those bytes
//!     let device_batch = registration.device_ptr_at(offset);
//!     // ... run the step's kernels on `device_batch`, then synchronise ...
//! #   let _ = device_batch;
//!     steps.clear(); // waits for every guard, so no CPU borrow of the step survives it
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Large blocks: registration in chunks
//!
//! One registration of a very large block can fail where several smaller ones succeed
//! (drivers have refused single registrations of some hundreds of GiB), and a copy must not
//! span two registrations. [`Block::register_cuda_chunks`] registers a range of a block as
//! several registrations, each at most [`Chunking::max_len`] bytes, whose boundaries fall on
//! multiples of [`Chunking::granule`] (the size of what is copied at once, such as a KV-cache
//! block): no granule then spans two. [`Chunks::device_range`] gives a range's device address
//! only when one registration holds all of it.
//!
//! ```no_run
//! use unimem::Block;
//! use unimem::cuda::Chunking;
//!
//! let block = Block::options().warm(true).open(1 << 30)?;
//! let kv_block = 3 << 20; // 3 MiB per KV-cache block
//! let chunks = block.register_cuda_chunks(0..block.len(), Chunking::new(kv_block, 256 << 20))?;
//! let device = chunks.device_range(5 * kv_block..6 * kv_block).unwrap();
//! # let _ = device;
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
use core::ops::Range;
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

    /// Registers bytes `range` of `block` with this driver as several registrations cut as
    /// `chunking` says. See [`Block::register_cuda_chunks`].
    ///
    /// # Errors
    /// As for [`Block::register_cuda`]; what registered before a failure is unregistered.
    ///
    /// # Panics
    /// As for [`Block::register_cuda_chunks`].
    #[track_caller]
    pub fn register_chunks<'b>(
        &self,
        block: &'b Block,
        range: Range<usize>,
        chunking: Chunking,
    ) -> Result<Chunks<'b>, Error> {
        let cuts = chunking.cut(range, block.len(), block.page_size());
        let mut chunks = Vec::with_capacity(cuts.len());
        for cut in cuts {
            // SAFETY: `cut` lies inside the block (`Chunking::cut` checks it).
            let at = unsafe { block.as_non_null().add(cut.start) };
            // SAFETY: `at..at + cut.len()` is mapped while the block lives, and the chunks
            // borrow it, as in `register`. On failure `chunks` drops on return, unregistering
            // what was registered.
            let registered = unsafe { self.library.register(at, cut.len()) }?;
            chunks.push(Chunk {
                range: cut,
                registered,
            });
        }
        Ok(Chunks { block, chunks })
    }
}

/// How [`Block::register_cuda_chunks`] cuts a range into registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Chunking {
    /// Boundaries between registrations fall on multiples of this many bytes from the
    /// block's start, so that nothing aligned to it and no larger than it spans two (the
    /// size of a KV-cache block, of a copy). They also fall on whole pages of the block
    /// ([`Block::page_size`]), which the driver pins: the unit of the cut is the least common
    /// multiple of the two.
    pub granule: usize,
    /// No registration is longer than this many bytes (rounded down to a multiple of the
    /// unit of the cut).
    pub max_len: usize,
}

impl Chunking {
    /// Registrations of at most `max_len` bytes, cut on multiples of `granule`.
    #[must_use]
    pub const fn new(granule: usize, max_len: usize) -> Chunking {
        Chunking { granule, max_len }
    }

    /// The block offsets of each registration for `range` of a block of `len` bytes with
    /// pages of `page` bytes.
    #[track_caller]
    fn cut(self, range: Range<usize>, len: usize, page: usize) -> Vec<Range<usize>> {
        assert!(
            range.start < range.end && range.end <= len,
            "register_cuda_chunks: {range:?} is not a nonempty range of this block's {len} \
             bytes; ask for start < end <= len()"
        );
        assert!(self.granule > 0, "Chunking: a granule of 0 bytes; give the size of what is copied at once");
        let unit = lcm(self.granule, page).unwrap_or_else(|| {
            panic!(
                "Chunking: a granule of {} bytes and pages of {page} bytes have no common \
                 multiple this machine can address; use a granule that divides, or is a \
                 multiple of, the page size",
                self.granule
            )
        });
        let max = self.max_len / unit * unit;
        assert!(
            max > 0,
            "Chunking: max_len {} is smaller than one unit of the cut ({unit} bytes: the least \
             common multiple of the granule, {}, and the page size, {page}); raise max_len or \
             use a smaller granule",
            self.max_len,
            self.granule
        );
        // Whole pages: round the range out to page boundaries, within the block.
        let start = range.start / page * page;
        let end = range.end.div_ceil(page).saturating_mul(page).min(len);
        let mut cuts = Vec::new();
        let mut at = start;
        while at < end {
            // The last multiple of the unit within `max` bytes of `at`: past `at`, since
            // `max` is at least one unit.
            let next = (at.saturating_add(max) / unit * unit).min(end);
            cuts.push(at..next);
            at = next;
        }
        cuts
    }
}

/// The least common multiple, if it fits.
fn lcm(a: usize, b: usize) -> Option<usize> {
    let gcd = {
        let (mut x, mut y) = (a, b);
        while y != 0 {
            (x, y) = (y, x % y);
        }
        x
    };
    (a / gcd).checked_mul(b)
}

/// A range of a [`Block`] registered with the CUDA driver as several registrations, for as
/// long as this value lives: see [`Block::register_cuda_chunks`]. Each registration is
/// unregistered on drop.
///
/// It borrows the block as [`Registration`] does, and the same rules hold for the device
/// addresses it gives.
#[must_use = "dropping the chunks unregisters them at once"]
pub struct Chunks<'b> {
    block: &'b Block,
    chunks: Vec<Chunk>,
}

struct Chunk {
    /// Offsets in the block.
    range: Range<usize>,
    registered: sys::Registered,
}

impl<'b> Chunks<'b> {
    /// The registered block.
    #[inline]
    pub fn block(&self) -> &'b Block {
        self.block
    }

    /// The offsets of the block that are registered: the range asked for, rounded out to
    /// whole pages.
    pub fn range(&self) -> Range<usize> {
        self.chunks[0].range.start..self.chunks[self.chunks.len() - 1].range.end
    }

    /// Each registration: the offsets of the block it covers and the device address of its
    /// first byte.
    pub fn chunks(&self) -> impl ExactSizeIterator<Item = (Range<usize>, u64)> + '_ {
        self.chunks
            .iter()
            .map(|chunk| (chunk.range.clone(), chunk.registered.device_ptr()))
    }

    /// The device address of the byte at `offset` in the block, in whichever registration
    /// holds it. `offset` may equal the end of [`range`](Chunks::range), for the end of a
    /// range.
    ///
    /// Addresses from two registrations need not be contiguous: for a range, ask
    /// [`device_range`](Chunks::device_range), which says whether one registration holds it.
    ///
    /// # Panics
    /// If `offset` lies outside [`range`](Chunks::range).
    #[track_caller]
    pub fn device_ptr_at(&self, offset: usize) -> u64 {
        let registered = self.range();
        assert!(
            registered.contains(&offset) || offset == registered.end,
            "offset {offset} lies outside the registered range {registered:?} of the block: \
             pass an offset inside it"
        );
        let chunk = self.chunk_of(offset);
        chunk.registered.device_ptr() + (offset - chunk.range.start) as u64
    }

    /// The device address of `range` of the block, when one registration holds all of it,
    /// and `None` when it spans two (a copy of it would fail: copy each part separately, or
    /// register with a granule that divides such ranges).
    ///
    /// # Panics
    /// If `range` is decreasing or lies outside [`range`](Chunks::range).
    #[track_caller]
    pub fn device_range(&self, range: Range<usize>) -> Option<u64> {
        let registered = self.range();
        assert!(
            range.start <= range.end
                && registered.start <= range.start
                && range.end <= registered.end,
            "{range:?} is not a range of the registered {registered:?} of the block"
        );
        let chunk = self.chunk_of(range.start);
        (range.end <= chunk.range.end)
            .then(|| chunk.registered.device_ptr() + (range.start - chunk.range.start) as u64)
    }

    /// The registration that holds `offset`, or the last one for its end.
    fn chunk_of(&self, offset: usize) -> &Chunk {
        let index = self
            .chunks
            .partition_point(|chunk| chunk.range.end <= offset)
            .min(self.chunks.len() - 1);
        &self.chunks[index]
    }

    /// Unregisters every registration now, and says whether the driver agreed to all of
    /// them; dropping does the same and ignores the answers.
    ///
    /// # Errors
    /// The first [`Error::Refused`] among them; every registration is unregistered (or
    /// tried) either way.
    pub fn unregister(self) -> Result<(), Error> {
        let mut result = Ok(());
        for chunk in self.chunks {
            let unregistered = chunk.registered.unregister();
            if result.is_ok() {
                result = unregistered.map_err(Error::from);
            }
        }
        result
    }
}

impl fmt::Debug for Chunks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunks")
            .field("host", &self.block.as_ptr())
            .field("range", &self.range())
            .field("chunks", &self.chunks.len())
            .finish()
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

    /// Registers bytes `range` of this block with the CUDA driver ([`Driver::load`]) as
    /// several registrations, each at most `chunking.max_len` bytes, with the boundaries
    /// between them on multiples of `chunking.granule` (and of the page size) from the
    /// block's start: see the [module docs](crate::cuda#large-blocks-registration-in-chunks).
    /// The range is rounded out to whole pages. Each registration is what
    /// [`register_cuda`](Block::register_cuda) makes, under the same primary context.
    ///
    /// # Errors
    /// As for [`register_cuda`](Block::register_cuda); what registered before a failure is
    /// unregistered again.
    ///
    /// # Panics
    /// If `range` is empty or reaches past [`len`](Block::len), the granule is 0, or
    /// `max_len` is less than one unit of the cut (the least common multiple of the granule
    /// and the page size).
    ///
    /// ```no_run
    /// use unimem::cuda::Chunking;
    ///
    /// let block = unimem::Block::open(64 << 20)?;
    /// let chunks = block.register_cuda_chunks(0..block.len(), Chunking::new(1 << 20, 16 << 20))?;
    /// assert_eq!(chunks.chunks().len(), 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[track_caller]
    pub fn register_cuda_chunks(
        &self,
        range: Range<usize>,
        chunking: Chunking,
    ) -> Result<Chunks<'_>, Error> {
        Driver::load()?.register_chunks(self, range, chunking)
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

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    #[test]
    fn cuts_fall_on_the_granule_and_never_exceed_the_maximum() {
        let cut = Chunking::new(3 * PAGE, 10 * PAGE).cut(0..30 * PAGE, 30 * PAGE, PAGE);
        // The unit is 3 pages; the maximum, 10 pages, rounds down to 9.
        let pages: Vec<_> = cut.iter().map(|r| (r.start / PAGE, r.end / PAGE)).collect();
        assert_eq!(pages, [(0, 9), (9, 18), (18, 27), (27, 30)]);
    }

    #[test]
    fn a_sub_range_rounds_out_to_pages_and_cuts_on_block_offsets() {
        let cut = Chunking::new(4 * PAGE, 8 * PAGE).cut(PAGE + 5..17 * PAGE - 3, 64 * PAGE, PAGE);
        let pages: Vec<_> = cut.iter().map(|r| (r.start / PAGE, r.end / PAGE)).collect();
        // From page 1, the first boundary is the last multiple of 4 pages within 8 pages.
        assert_eq!(pages, [(1, 8), (8, 16), (16, 17)]);
    }

    #[test]
    fn a_granule_that_divides_the_page_cuts_on_pages() {
        let cut = Chunking::new(512, 2 * PAGE).cut(0..5 * PAGE, 5 * PAGE, PAGE);
        let pages: Vec<_> = cut.iter().map(|r| (r.start / PAGE, r.end / PAGE)).collect();
        assert_eq!(pages, [(0, 2), (2, 4), (4, 5)]);
    }

    #[test]
    #[should_panic(expected = "max_len 8192 is smaller than one unit")]
    fn a_maximum_below_one_unit_panics() {
        let _ = Chunking::new(1000, 2 * PAGE).cut(0..5 * PAGE, 5 * PAGE, PAGE);
    }

    #[test]
    #[should_panic(expected = "not a nonempty range")]
    fn a_range_past_the_end_panics() {
        let _ = Chunking::new(PAGE, PAGE).cut(0..2 * PAGE, PAGE, PAGE);
    }

    #[test]
    fn a_block_whose_end_is_not_a_page_boundary_ends_the_last_cut_there() {
        let cut = Chunking::new(PAGE, 2 * PAGE).cut(0..3 * PAGE + 100, 3 * PAGE + 100, PAGE);
        assert_eq!(cut.last(), Some(&(2 * PAGE..3 * PAGE + 100)));
    }

    #[test]
    fn least_common_multiples() {
        assert_eq!(lcm(4096, 3 << 20), Some(3 << 20));
        assert_eq!(lcm(1000, 4096), Some(512_000));
        assert_eq!(lcm(usize::MAX, usize::MAX - 1), None);
    }
}
