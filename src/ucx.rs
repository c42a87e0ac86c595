//! Off one machine: a [`Block`] registered with UCX, and one-sided `put`/`get` between its
//! bytes and another process's registered memory.
//!
//! Enabled by the `ucx` feature (off by default), on Linux only: elsewhere the feature does
//! nothing, so a crate may enable it unconditionally. Nothing links against UCX: its protocol
//! library, `libucp.so.0` (UCX 1.13 or newer, found by the loader's search; or, through the unsafe
//! [`Worker::new_from_env`], the path in `UNIMEM_UCX_LIBRARY`), is opened
//! with `dlopen` the first time a [`Worker`] is made, and a machine without it builds and runs everything else
//! ([`Error::NoLibrary`] says what to install). UCX picks the transport (shared memory, TCP,
//! RDMA verbs) from what the two sides have in common and from its environment variables
//! (`UCX_TLS`, `UCX_NET_DEVICES`); nothing here depends on which.
//!
//! # Where this fits
//!
//! Transfer engines that move tensors between machines (NIXL, which vLLM, SGLang, Dynamo and
//! Ray use; UCX itself; libfabric) register host memory *by address and length* once, and then
//! move bytes one-sidedly into a peer's registered memory. A block is such memory: a stable
//! address for its whole life, pinned where the system allows it ([`Block::is_pinned`]), and
//! offsets into it from [`Tape::offset_of`](crate::Tape::offset_of) and
//! [`Cell::offset`](crate::Cell::offset). To hand a block to NIXL, register
//! `(block.as_ptr() as u64, block.len())` as a `DRAM` descriptor with the NIXL agent and keep
//! the block alive (and its registration) while transfers may touch it: that is the same
//! contract as [`Registration`] here, which registers `(address, length)` with UCX
//! (`ucp_mem_map`).
//!
//! The steps, on each side:
//!
//! 1. [`Worker::new`]: a UCX context and worker. Send [`Worker::address`] to the peer out of
//!    band (a socket, a key-value store); connect to the peer's with [`Worker::connect`].
//! 2. [`Worker::register`] a block (or [`Worker::register_range`] a part of it): send the
//!    packed [`Registration::remote_key`], its [`address`](Registration::address) and
//!    [`len`](Registration::len) to the peer.
//! 3. The peer makes a [`Remote`] of them ([`Endpoint::remote`]) and moves bytes with
//!    [`Endpoint::put`] and [`Endpoint::get`], each a [`Request`] to [`wait`](Request::wait)
//!    on or [`poll`](Request::poll).
//!
//! ```no_run
//! use std::time::Duration;
//! use unimem::{Tape, ucx::Worker};
//!
//! # fn exchange(_: &[u8]) -> Vec<u8> { unimplemented!() }
//! let worker = Worker::new()?;
//! let peer_address = exchange(&worker.address()?);
//! // SAFETY: `peer_address` is what the peer's `Worker::address` gave.
//! let endpoint = unsafe { worker.connect(&peer_address)? };
//!
//! let tape = Tape::start(64 << 20)?;
//! let registration = worker.register(tape.block())?;
//! let output = tape.take_fill(1 << 20, 1.0f32).unwrap();
//! let offset = tape.offset_of(output.as_ptr()).unwrap();
//! let peer_key = exchange(&[]); // the peer's packed key, base address and length
//! # let (peer_base, peer_len) = (0u64, 4usize << 20);
//! // SAFETY: the peer's packed key for memory of `peer_len` bytes at `peer_base`.
//! let remote = unsafe { endpoint.remote(&peer_key, peer_base, peer_len)? };
//! // SAFETY: nothing writes `output` until the put is complete, and the request is waited
//! // for (not leaked).
//! let put = unsafe { endpoint.put(&registration, offset, &remote, 0, 4 << 20)? };
//! put.wait(Duration::from_secs(10))?;
//! endpoint.flush(Duration::from_secs(10))?; // now the bytes are in the peer's memory
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Completion and ordering
//!
//! What UCX promises, and so what this module promises:
//!
//! - A put's [`Request`] completes when the *local* buffer may be reused; the bytes may not yet
//!   be in the peer's memory. [`Endpoint::flush`] (`ucp_ep_flush_nbx`) or [`Worker::flush`]
//!   (`ucp_worker_flush_nbx`) returns once every put and get started before it, on that
//!   endpoint or worker, is complete *at the target*: only then may the peer be told (over
//!   the side channel) to read what was put.
//! - A get's request completes when the bytes are in the local buffer.
//! - UCX does not order puts and gets against each other, even on one endpoint: two puts to
//!   overlapping bytes land in either order unless a flush separates them. A peer that polls
//!   its memory for a flag put after the data may see the flag first.
//! - The peer's CPU takes no part: it learns nothing of a put unless told.
//! - Endpoints are created with UCX's peer error handling (`UCP_ERR_HANDLING_MODE_PEER`)
//!   where the transports allow it: when the peer dies, outstanding and later operations fail
//!   (with `UCS_ERR_CONNECTION_RESET` or `UCS_ERR_ENDPOINT_TIMEOUT` on TCP), rather than hang.
//!   UCX 1.13's shared-memory transports cannot detect a peer's failure; there the endpoint
//!   is made without it (UCX logs "no peer failure handler" once as it refuses the first
//!   try), and [`Endpoint::detects_peer_failure`] says so. Every wait here is bounded by a
//!   timeout besides.
//!
//! # Safety at the boundary
//!
//! - Bytes from the network are unchecked input. UCX parses a worker address and a packed key
//!   without validating them and may crash on garbage, so [`Worker::connect`] and
//!   [`Endpoint::remote`] are `unsafe`: pass only what the peer's [`Worker::address`] and
//!   [`Registration::remote_key`] gave.
//! - Everything unimem can check is checked before UCX sees it, and refused with
//!   [`Error::OutOfRange`]: a local range outside the registration, a remote range outside the
//!   length the peer declared.
//! - A put reads, and a get writes, the local block's bytes while the request is outstanding,
//!   outside the borrow checker (as a GPU's copies are). So [`Endpoint::put`]
//!   and [`Endpoint::get`] are `unsafe`: no reference handed out by safe code may cover bytes
//!   a get writes, and none may be written to bytes a put reads, until the request completes;
//!   and the request must not be leaked (`mem::forget`): dropping it waits for UCX to finish.
//! - Handing out a packed key lets the peer read and write the registered bytes at any time
//!   until the registration is dropped, so [`Registration::remote_key`] is `unsafe` too, with
//!   the contract of [handing out a block's descriptor](crate::share).
//!
//! # Shared memory on one machine
//!
//! UCX's `posix` and `sysv` transports share only memory that UCX allocated itself, not memory
//! registered by address, so between two processes on one machine a put into a registered
//! Block is zero-copy only through the `cma` transport (`process_vm_writev`; the processes must
//! be allowed to ptrace each other). Keep `cma` in `UCX_TLS` (as UCX's default does):
//! without it, puts over shared memory travel as messages the target's worker copies, several
//! times slower.
//!
//! # Not covered
//!
//! RDMA hardware (InfiniBand, RoCE verbs) is untested: the tests run over TCP on loopback and
//! over shared memory. The code does not depend on the transport, and registers every block
//! for local and remote reading and writing, which verbs requires. A block is registered
//! from its mapping; a block mapped from another process ([`Block::from_fd`]) is registered
//! the same way. GPU memory, atomics, active messages and tagged messaging are not wrapped.

use crate::block::Block;
use crate::sys::ucx::{self as sys, Transfer};
use core::fmt;
use core::marker::PhantomData;
use core::ops::Range;
use core::ptr::NonNull;
use std::io;
use std::time::Duration;

/// How long dropping an endpoint waits for its close to finish before leaving it to UCX.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long dropping a request that is still in flight waits for it before closing its
/// endpoint to end it.
const DROP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why UCX could not be used, or refused an operation.
///
/// Each message says what happened and what to do about it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// `libucp.so.0` could not be opened, or is not UCX 1.13 or newer.
    NoLibrary {
        /// The library looked for: `libucp.so.0`, or what `UNIMEM_UCX_LIBRARY` named
        /// ([`Worker::new_from_env`]).
        library: String,
        /// What the loader said (`dlerror`), or what is wrong with the library.
        reason: String,
    },
    /// A UCX call failed.
    Failed {
        /// The entry point, as `ucp.h` names it (`ucp_put_nbx`).
        call: &'static str,
        /// The `ucs_status_t` it returned.
        status: i8,
        /// UCX's description of it (`ucs_status_string`).
        description: String,
    },
    /// A range was refused before UCX saw it: it does not lie inside the registration or
    /// the remote region.
    OutOfRange {
        /// Which range: `"local"` or `"remote"`.
        side: &'static str,
        /// The range's first byte, as given.
        offset: usize,
        /// Its length.
        len: usize,
        /// What it had to lie inside.
        within: Range<usize>,
    },
    /// An operation did not complete in the time given. A put or get that times out is ended
    /// by closing its endpoint (every operation on it fails from then on: connect again);
    /// either way UCX is done with the buffers when this error is returned.
    TimedOut {
        /// What was waited for: `"put"`, `"get"`, `"flush"`.
        operation: &'static str,
        /// How long.
        timeout: Duration,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoLibrary { library, reason } => write!(
                f,
                "UCX could not be loaded from {library:?} ({reason}): install UCX 1.13 or \
                 newer (Debian and Ubuntu: `apt-get install libucx0`; Fedora: `dnf install \
                 ucx`); if it is installed outside the loader's search path, add its directory to \
                 LD_LIBRARY_PATH, or name its libucp.so.0 in {var} and open it with \
                 Worker::new_from_env",
                var = sys::LIBRARY_VARIABLE,
            ),
            Error::Failed {
                call,
                status,
                description,
            } => {
                write!(f, "{call} failed: {description} (ucs_status_t {status})")?;
                f.write_str(match *status {
                    sys::UCS_ERR_CONNECTION_RESET
                    | sys::UCS_ERR_ENDPOINT_TIMEOUT
                    | sys::UCS_ERR_NOT_CONNECTED => {
                        ": the peer is gone or unreachable; reconnect to a live peer (and check \
                         that it is still running)"
                    }
                    sys::UCS_ERR_UNREACHABLE => {
                        ": UCX found no transport that reaches the peer; check UCX_TLS and \
                         UCX_NET_DEVICES on both sides (`ucx_info -d` lists what UCX sees)"
                    }
                    sys::UCS_ERR_NO_MEMORY => ": UCX ran out of memory; register less, or raise `ulimit -l`",
                    _ => "",
                })
            }
            Error::OutOfRange {
                side,
                offset,
                len,
                within,
            } => write!(
                f,
                "the {side} range of {len} bytes at {offset} does not lie inside {within:?}; \
                 {}",
                if *side == "local" {
                    "pass an offset in the block (Tape::offset_of, Cell::offset) that the \
                     registration covers"
                } else {
                    "the remote region is only as long as the peer declared; pass an offset \
                     from its start and a length that fits"
                }
            ),
            Error::TimedOut { operation, timeout } => write!(
                f,
                "the {operation} did not complete within {timeout:?} and was abandoned (a put or \
                 get by closing its endpoint: connect again): the peer may be dead, stuck, or \
                 not driving its worker (over TCP and shared memory the target's worker must \
                 progress); wait longer, or check that it is alive"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match &err {
            Error::NoLibrary { .. } => io::ErrorKind::Unsupported,
            Error::OutOfRange { .. } => io::ErrorKind::InvalidInput,
            Error::TimedOut { .. } => io::ErrorKind::TimedOut,
            Error::Failed {
                status: sys::UCS_ERR_CONNECTION_RESET,
                ..
            } => io::ErrorKind::ConnectionReset,
            Error::Failed { .. } => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

impl From<sys::LoadFailure> for Error {
    fn from(failure: sys::LoadFailure) -> Error {
        Error::NoLibrary {
            library: failure.library,
            reason: failure.reason,
        }
    }
}

impl From<sys::Failure> for Error {
    fn from(failure: sys::Failure) -> Error {
        Error::Failed {
            call: failure.call,
            status: failure.status,
            description: failure.description,
        }
    }
}

fn waited(operation: &'static str, timeout: Duration, failure: sys::WaitFailure) -> Error {
    match failure {
        sys::WaitFailure::Failed(failure) => failure.into(),
        sys::WaitFailure::TimedOut => Error::TimedOut { operation, timeout },
    }
}

/// A UCX context and one worker on it: the progress engine every endpoint, registration and
/// transfer of this module goes through.
///
/// A worker may move to another thread (it is `Send`), but is used by one thread at a time
/// (it is not `Sync`; UCX's `UCS_THREAD_MODE_SERIALIZED`). Make one per thread that moves
/// bytes. Nothing progresses unless the worker is driven: waiting on a request, polling it,
/// flushing, or [`progress`](Worker::progress).
pub struct Worker {
    inner: sys::Worker,
}

impl Worker {
    /// A new UCX context (with remote memory access) and a worker on it, configured from the
    /// environment (`UCX_TLS`, `UCX_NET_DEVICES`, ...). Opens `libucp.so.0` on the first call.
    ///
    /// # Errors
    /// [`Error::NoLibrary`] when UCX is not installed (the message says what to install);
    /// [`Error::Failed`] when UCX cannot make the context or worker (no usable transport,
    /// a bad `UCX_*` variable).
    ///
    /// ```
    /// match unimem::ucx::Worker::new() {
    ///     Ok(worker) => println!("UCX {:?}", worker.version()),
    ///     Err(why) => println!("no UCX here: {why}"),
    /// }
    /// ```
    pub fn new() -> Result<Worker, Error> {
        Ok(Worker {
            inner: sys::load()?.worker()?,
        })
    }

    /// As [`new`](Worker::new), from the UCX library that the environment variable
    /// `UNIMEM_UCX_LIBRARY` names (a path, or a soname), or from `libucp.so.0` when it is unset
    /// or empty. For a UCX installed outside the loader's search path, and for tests.
    ///
    /// # Safety
    /// Where `UNIMEM_UCX_LIBRARY` is set, it names UCX's protocol library, 1.13 or newer: the
    /// functions of UCX's names in any other library would be called with UCX's signatures.
    /// Safe code can set variables (and a library may), which is why only this call reads it.
    ///
    /// # Errors
    /// As for [`new`](Worker::new).
    ///
    /// ```
    /// // SAFETY: UNIMEM_UCX_LIBRARY, where set, names UCX's libucp.so.0.
    /// match unsafe { unimem::ucx::Worker::new_from_env() } {
    ///     Ok(worker) => println!("UCX {:?}", worker.version()),
    ///     Err(why) => println!("no UCX here: {why}"),
    /// }
    /// ```
    pub unsafe fn new_from_env() -> Result<Worker, Error> {
        Ok(Worker {
            // SAFETY: the caller's promise about the variable.
            inner: unsafe { sys::load_from_env() }?.worker()?,
        })
    }

    /// UCX's version: major, minor, release.
    pub fn version(&self) -> (u32, u32, u32) {
        self.inner.library().version()
    }

    /// This worker's address, for a peer's [`connect`](Worker::connect).
    ///
    /// # Errors
    /// [`Error::Failed`] if UCX cannot pack it.
    pub fn address(&self) -> Result<Vec<u8>, Error> {
        Ok(self.inner.address()?)
    }

    /// An endpoint to the peer worker whose [`address`](Worker::address) is `peer_address`.
    ///
    /// # Safety
    /// `peer_address` is exactly what a peer's [`Worker::address`] returned: UCX parses it
    /// without checking, and may crash or read out of bounds on anything else.
    ///
    /// # Errors
    /// [`Error::Failed`] when UCX cannot reach the peer with the transports it has.
    pub unsafe fn connect(&self, peer_address: &[u8]) -> Result<Endpoint<'_>, Error> {
        // SAFETY: the caller's promise; the endpoint borrows this worker, so it is closed
        // (dropped) first.
        let ep = unsafe { self.inner.connect(peer_address) }?;
        Ok(Endpoint {
            worker: self,
            ep: Some(ep),
        })
    }

    /// Registers the whole of `block` for puts and gets, local and remote, until the
    /// registration is dropped. See [`register_range`](Worker::register_range).
    ///
    /// # Errors
    /// As for [`register_range`](Worker::register_range).
    pub fn register<'b>(&self, block: &'b Block) -> Result<Registration<'b>, Error> {
        self.register_range(block, 0..block.len())
    }

    /// Registers bytes `range` of `block` (`ucp_mem_map`) for local and remote reading and
    /// writing, until the registration is dropped. It borrows the block, so the block
    /// outlives it; see [`Registration`].
    ///
    /// # Panics
    /// If `range` is empty or reaches past the end of the block.
    ///
    /// # Errors
    /// [`Error::Failed`] when UCX refuses (on RDMA hardware: not enough lockable memory).
    #[track_caller]
    pub fn register_range<'b>(
        &self,
        block: &'b Block,
        range: Range<usize>,
    ) -> Result<Registration<'b>, Error> {
        assert!(
            range.start < range.end && range.end <= block.len(),
            "cannot register bytes {range:?} of a block of {} bytes: pass a non-empty range \
             inside the block",
            block.len()
        );
        // SAFETY: `range.start` is inside the block (checked above), so is the result.
        let start = unsafe { block.as_non_null().add(range.start) };
        // SAFETY: the range lies inside the block's mapping, which stays mapped while the
        // block lives; the registration borrows the block. (A leaked registration outlives
        // nothing it can reach: it is only used to unregister, and by transfers, which borrow
        // it.)
        let registered = unsafe { sys::Registered::map(self.inner.context(), start, range.len()) }?;
        Ok(Registration {
            block,
            range,
            registered,
        })
    }

    /// Makes progress on everything outstanding on this worker, once; whether anything
    /// happened. Waiting and polling call it; call it to keep transfers moving meanwhile.
    pub fn progress(&self) -> bool {
        self.inner.progress()
    }

    /// Waits, at most `timeout`, until every put and get started on this worker is complete
    /// at its target (`ucp_worker_flush_nbx`).
    ///
    /// # Errors
    /// [`Error::Failed`] when a peer failed; [`Error::TimedOut`].
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        self.inner
            .flush(timeout)
            .map_err(|failure| waited("flush", timeout, failure))
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

/// A connection to a peer worker; closed on drop (flushed first, unless the peer failed).
pub struct Endpoint<'w> {
    worker: &'w Worker,
    /// `None` only while dropping.
    ep: Option<sys::Endpoint>,
}

impl<'w> Endpoint<'w> {
    fn ep(&self) -> &sys::Endpoint {
        self.ep.as_ref().expect("an endpoint is live until dropped")
    }

    /// The worker this endpoint belongs to.
    pub fn worker(&self) -> &'w Worker {
        self.worker
    }

    /// Whether UCX watches the peer on this endpoint (error handling mode
    /// `UCP_ERR_HANDLING_MODE_PEER`): then a peer's failure fails outstanding and later
    /// operations at once. Some transports cannot (shared memory in UCX 1.13): the endpoint is
    /// then made without it, and a dead peer shows only as a wait that times out (or, over
    /// shared memory, as puts that land in memory nobody reads any more).
    pub fn detects_peer_failure(&self) -> bool {
        self.ep().detects_failure()
    }

    /// Whether UCX reported the peer failed (its error handler ran): every operation on this
    /// endpoint fails from then on.
    pub fn peer_failed(&self) -> bool {
        self.ep().failure().is_some()
    }

    /// The peer's registered memory: `len` bytes at `base` in its address space, reachable
    /// with the packed key `key`.
    ///
    /// # Safety
    /// `key` is exactly what the peer's [`Registration::remote_key`] returned, for a
    /// registration that covers `base..base + len` (its [`address`](Registration::address)
    /// and [`len`](Registration::len), or a part). UCX parses the key without checking and may
    /// crash on garbage; unimem checks every transfer against `len`, and UCX (on most
    /// transports) nothing at all, so a `len` larger than the peer's registration lets a put
    /// write the peer's memory outside it.
    ///
    /// # Errors
    /// [`Error::Failed`] when UCX cannot use the key with this endpoint's transports.
    pub unsafe fn remote(&self, key: &[u8], base: u64, len: usize) -> Result<Remote<'_>, Error> {
        // SAFETY: the caller's promise; the key borrows this endpoint, so it is destroyed
        // before the endpoint is closed.
        let rkey = unsafe { self.ep().unpack(&self.worker.inner, key) }?;
        Ok(Remote {
            rkey,
            base,
            len,
            _endpoint: PhantomData,
        })
    }

    /// Checks both ranges, and gives the local start.
    fn ranges(
        &self,
        local: &Registration<'_>,
        offset: usize,
        remote: &Remote<'_>,
        remote_offset: usize,
        len: usize,
    ) -> Result<(NonNull<u8>, u64), Error> {
        assert!(
            local.registered.is_of(self.worker.inner.context()),
            "the registration belongs to another Worker's context: register the block with the \
             worker this endpoint was made from"
        );
        assert!(
            remote.rkey.is_of(self.ep()),
            "the remote region was made by another endpoint: a key is unpacked per endpoint, \
             so make the Remote with this endpoint's `remote`"
        );
        let inside = |start: usize, within: &Range<usize>| {
            start >= within.start
                && start
                    .checked_add(len)
                    .is_some_and(|end| end <= within.end)
        };
        if len == 0 || !inside(offset, &local.range) {
            return Err(Error::OutOfRange {
                side: "local",
                offset,
                len,
                within: local.range.clone(),
            });
        }
        if !inside(remote_offset, &(0..remote.len)) {
            return Err(Error::OutOfRange {
                side: "remote",
                offset: remote_offset,
                len,
                within: 0..remote.len,
            });
        }
        // SAFETY: `offset` is inside the registration (checked above), so inside the block.
        let start = unsafe { local.block.as_non_null().add(offset) };
        Ok((start, remote.base + remote_offset as u64))
    }

    /// Starts writing `len` bytes of `local`'s block at `offset` (a block offset, inside the
    /// registration) into the peer's memory at `remote_offset` from the remote region's
    /// start (`ucp_put_nbx`). The request completes when the local bytes may be written
    /// again; [`flush`](Endpoint::flush) to know they are in the peer's memory.
    ///
    /// # Safety
    /// Until the request completes, nothing writes the local bytes `offset..offset + len`:
    /// no `&mut` handed out by safe code (a [`Tape`](crate::Tape)'s slice, a
    /// [`Cell`](crate::Cell)) is written through, and no other process writes them. The
    /// request is waited for, polled to completion or dropped, never leaked
    /// (`mem::forget`), since dropping it is what waits for UCX to be done with the bytes.
    ///
    /// # Errors
    /// [`Error::OutOfRange`], before UCX sees anything, when `len` is zero or either range
    /// does not lie inside the registration or the remote region; [`Error::Failed`] when UCX
    /// refuses to start it (the peer failed).
    ///
    /// # Panics
    /// If `local` was registered through another [`Worker`], or `remote` made by another
    /// endpoint.
    #[track_caller]
    pub unsafe fn put<'a>(
        &'a self,
        local: &'a Registration<'_>,
        offset: usize,
        remote: &'a Remote<'_>,
        remote_offset: usize,
        len: usize,
    ) -> Result<Request<'a>, Error> {
        // SAFETY: the caller's promise, which is `start`'s for a put.
        unsafe { self.start(Transfer::Put, local, offset, remote, remote_offset, len) }
    }

    /// Starts reading `len` bytes of the peer's memory at `remote_offset` from the remote
    /// region's start into `local`'s block at `offset` (`ucp_get_nbx`). The request
    /// completes when the bytes are in the local block.
    ///
    /// # Safety
    /// As for [`put`](Endpoint::put), and nothing reads the local bytes either until the
    /// request completes: UCX writes them meanwhile.
    ///
    /// # Errors
    /// As for [`put`](Endpoint::put).
    ///
    /// # Panics
    /// As for [`put`](Endpoint::put).
    #[track_caller]
    pub unsafe fn get<'a>(
        &'a self,
        local: &'a Registration<'_>,
        offset: usize,
        remote: &'a Remote<'_>,
        remote_offset: usize,
        len: usize,
    ) -> Result<Request<'a>, Error> {
        // SAFETY: the caller's promise, which is `start`'s for a get.
        unsafe { self.start(Transfer::Get, local, offset, remote, remote_offset, len) }
    }

    /// [`put`](Endpoint::put) or [`get`](Endpoint::get), as `transfer` says.
    ///
    /// # Safety
    /// Until the request completes, nothing writes the local bytes `offset..offset + len`
    /// (see [`put`](Endpoint::put)), and for a get nothing reads them either.
    #[track_caller]
    unsafe fn start<'a>(
        &'a self,
        transfer: Transfer,
        local: &'a Registration<'_>,
        offset: usize,
        remote: &'a Remote<'_>,
        remote_offset: usize,
        len: usize,
    ) -> Result<Request<'a>, Error> {
        let (start, address) = self.ranges(local, offset, remote, remote_offset, len)?;
        // SAFETY: the range is inside the registration (checked), which the request borrows;
        // the caller keeps it untouched as `transfer` needs until the request completes; the
        // key covers the remote range as far as the peer declared it (checked).
        let op = unsafe {
            self.ep().transfer(
                transfer,
                &self.worker.inner,
                &local.registered,
                start,
                len,
                address,
                &remote.rkey,
            )
        }?;
        Ok(Request {
            worker: self.worker,
            endpoint: self.ep(),
            op,
            operation: transfer.name(),
            _borrows: PhantomData,
        })
    }

    /// Waits, at most `timeout`, until every put and get started on this endpoint is
    /// complete at the peer (`ucp_ep_flush_nbx`): after it, the peer's memory holds what was
    /// put.
    ///
    /// # Errors
    /// [`Error::Failed`] when the peer failed; [`Error::TimedOut`].
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        self.ep()
            .flush(&self.worker.inner, timeout)
            .map_err(|failure| waited("flush", timeout, failure))
    }
}

impl Drop for Endpoint<'_> {
    fn drop(&mut self) {
        if let Some(ep) = self.ep.take() {
            self.worker.inner.close(ep, CLOSE_TIMEOUT);
        }
    }
}

impl fmt::Debug for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("peer_failed", &self.peer_failed())
            .finish_non_exhaustive()
    }
}

/// Bytes of a [`Block`] registered with UCX, for as long as this value lives; unregistered
/// (`ucp_mem_unmap`) on drop.
///
/// It borrows the block, so the block outlives it, and so does every transfer that uses it
/// (a [`Request`] borrows the registration). As with a CUDA registration, nothing that needs
/// the block's owner by `&mut` (such as [`Tape::clear`](crate::Tape::clear)) runs meanwhile:
/// reset a tape with [`Tape::clear_shared`](crate::Tape::clear_shared), or keep transfer
/// buffers in a [`Grid`](crate::Grid)'s cells.
#[must_use = "dropping a registration unregisters the memory at once"]
pub struct Registration<'b> {
    block: &'b Block,
    range: Range<usize>,
    registered: sys::Registered,
}

impl<'b> Registration<'b> {
    /// The registered block.
    pub fn block(&self) -> &'b Block {
        self.block
    }

    /// Which bytes of the block are registered.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }

    /// The address of the first registered byte, for the peer's
    /// [`Endpoint::remote`]: the base its remote offsets count from.
    pub fn address(&self) -> u64 {
        self.block.as_ptr() as u64 + self.range.start as u64
    }

    /// How many bytes are registered, for the peer's [`Endpoint::remote`].
    #[allow(clippy::len_without_is_empty, reason = "a registration is never empty")]
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// The packed remote key (`ucp_rkey_pack`): send it, with [`address`](Self::address) and
    /// [`len`](Self::len), to a peer, whose [`Endpoint::remote`] turns it into a [`Remote`].
    ///
    /// # Safety
    /// Whoever holds the key may read and write the registered bytes, at any time, until this
    /// registration is dropped: the caller keeps the promise of
    /// [handing out a block's memory](crate::share) (no reference handed out by safe code
    /// covers bytes a peer writes, none is written to bytes a peer reads), with the peer's
    /// cooperation (a protocol over the side channel says when it is done).
    ///
    /// # Errors
    /// [`Error::Failed`] if UCX cannot pack it.
    pub unsafe fn remote_key(&self) -> Result<Vec<u8>, Error> {
        Ok(self.registered.pack()?)
    }
}

impl fmt::Debug for Registration<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("address", &format_args!("{:#x}", self.address()))
            .field("len", &self.len())
            .finish()
    }
}

/// A peer's registered memory, as far as it declared it: `len` bytes, reachable through the
/// endpoint it was unpacked on. The key is destroyed on drop.
pub struct Remote<'e> {
    rkey: sys::Rkey,
    base: u64,
    len: usize,
    _endpoint: PhantomData<&'e ()>,
}

impl Remote<'_> {
    /// The peer's address of the region's first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The declared length, which every transfer is checked against.
    #[allow(clippy::len_without_is_empty, reason = "checked against, not iterated")]
    pub fn len(&self) -> usize {
        self.len
    }
}

impl fmt::Debug for Remote<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("base", &format_args!("{:#x}", self.base))
            .field("len", &self.len)
            .finish()
    }
}

/// A put or a get in flight. [`wait`](Request::wait) for it, or [`poll`](Request::poll) it
/// while doing other work. Dropping one still in flight waits for it (up to 30 s, then closes
/// its endpoint to end it), so UCX is done with its buffers when the drop returns.
#[must_use = "dropping a request waits for it"]
pub struct Request<'a> {
    worker: &'a Worker,
    endpoint: &'a sys::Endpoint,
    op: sys::Op,
    operation: &'static str,
    /// The registration, the remote region and the endpoint it uses.
    _borrows: PhantomData<&'a ()>,
}

impl Request<'_> {
    /// Drives the worker once and says whether the request is complete: `None` while it is
    /// in flight, then its outcome (once; later calls give `Some(Ok(()))`).
    pub fn poll(&mut self) -> Option<Result<(), Error>> {
        match self.worker.inner.test(&mut self.op) {
            sys::Progress::Done => Some(Ok(())),
            sys::Progress::Pending => None,
            sys::Progress::Failed(failure) => Some(Err(failure.into())),
        }
    }

    /// Whether the request has completed (without driving the worker).
    pub fn is_complete(&self) -> bool {
        self.op.is_done()
    }

    /// Drives the worker until the request completes, at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Failed`] when UCX failed it (the peer died: `UCS_ERR_CONNECTION_RESET` or
    /// `UCS_ERR_ENDPOINT_TIMEOUT`); [`Error::TimedOut`] when it did not complete in time, in
    /// which case its endpoint was closed to end it (see [`Error::TimedOut`]).
    pub fn wait(mut self, timeout: Duration) -> Result<(), Error> {
        let op = core::mem::replace(&mut self.op, sys::Op::done());
        self.worker
            .inner
            .wait(op, timeout, Some(self.endpoint))
            .map_err(|failure| waited(self.operation, timeout, failure))
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        let op = core::mem::replace(&mut self.op, sys::Op::done());
        let _ = self.worker.inner.wait(op, DROP_TIMEOUT, Some(self.endpoint));
    }
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("operation", &self.operation)
            .field("complete", &self.is_complete())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_says_what_to_install() {
        let text = Error::NoLibrary {
            library: "libucp.so.0".to_owned(),
            reason: "libucp.so.0: cannot open shared object file".to_owned(),
        }
        .to_string();
        for needle in ["libucp.so.0", "apt-get install libucx0", "UNIMEM_UCX_LIBRARY"] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
    }

    #[test]
    fn a_dead_peer_and_an_out_of_range_transfer_say_what_to_do() {
        let text = Error::Failed {
            call: "ucp_put_nbx",
            status: sys::UCS_ERR_CONNECTION_RESET,
            description: "Connection reset by remote peer".to_owned(),
        }
        .to_string();
        assert!(text.contains("the peer is gone"), "{text}");
        let err = Error::OutOfRange {
            side: "remote",
            offset: 100,
            len: 8,
            within: 0..104,
        };
        assert!(err.to_string().contains("only as long as the peer declared"), "{err}");
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::InvalidInput);
    }
}
