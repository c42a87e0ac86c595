//! Sharing a Block with another process, with real processes: this test binary runs itself
//! again as the other side, one `#[ignore]`d child test at a time, connected by a Unix socket.
//!
//! Linux runs everything here; macOS runs the mach-port tests in one process (tests/apple.rs
//! passes a port to a second process). Nothing runs under Miri, which
//! uses the portable backend and cannot make system calls.
#![cfg(not(miri))]

/// The byte at offset `i` of a block filled with `seed`: differs between neighbours and
/// between pages, so a wrong page or a shifted copy cannot pass.
fn pattern(seed: u8, i: usize) -> u8 {
    (i as u8).wrapping_mul(31) ^ (i >> 9) as u8 ^ seed
}

fn fill(bytes: &mut [u8], seed: u8) {
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = pattern(seed, i);
    }
}

/// Panics at the first byte that does not follow `seed`'s pattern.
fn check(bytes: &[u8], seed: u8, whose: &str) {
    if let Some(i) = (0..bytes.len()).find(|&i| bytes[i] != pattern(seed, i)) {
        panic!(
            "{whose}: byte {i} of {} is {:#04x}, expected {:#04x}",
            bytes.len(),
            bytes[i],
            pattern(seed, i)
        );
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{check, fill};
    use std::io::{self, Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command, Output, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    use unimem::share::{self, ReadOnlyBlock};
    use unimem::{Block, Error, Pinning};

    /// How long any wait in these tests may last (a child to connect, a message, a child to
    /// exit): a side that hangs fails the test instead of hanging it. Each wait here takes
    /// milliseconds.
    const PATIENCE: Duration = Duration::from_secs(120);

    /// Every read and write on `stream` gives up after [`PATIENCE`].
    fn bound(stream: &UnixStream) {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
    }

    /// Waits for `child` to exit, collecting what it prints; kills it and panics, with what
    /// it printed, once [`PATIENCE`] has passed.
    fn wait_bounded(mut child: Child, what: &str) -> Output {
        // Drain the pipes meanwhile, so that a child printing much cannot block on them.
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            let mut pipe = pipe.expect("stdout and stderr are piped");
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let status = child.wait().unwrap();
                let out = Output {
                    status,
                    stdout: stdout.join().unwrap(),
                    stderr: stderr.join().unwrap(),
                };
                panic!("{what} did not exit within {PATIENCE:?}:\n{}", text(&out));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Output {
            status,
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        }
    }

    /// Set for a child test: the abstract socket name its parent listens on.
    const SOCKET_ENV: &str = "UNIMEM_SHARE_TEST_SOCKET";
    const OFFER_SEED: u8 = 0x5a;
    const ANSWER_SEED: u8 = 0xc3;
    const ANSWERED: &[u8] = b"A";
    const REFUSED: &[u8] = b"R";

    fn page() -> usize {
        // SAFETY: sysconf has no preconditions.
        unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
    }

    /// A child process running one of the ignored tests below, and our end of its socket.
    struct Peer {
        child: Child,
        stream: UnixStream,
    }

    impl Peer {
        /// Starts the child test `test` (its full path) and waits for it to connect.
        fn spawn(test: &str) -> Peer {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "unimem-share-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let listener =
                UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
            listener.set_nonblocking(true).unwrap();
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    test,
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(SOCKET_ENV, &name)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + PATIENCE;
            let stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        if child.try_wait().unwrap().is_some() {
                            let out = child.wait_with_output().unwrap();
                            panic!("{test} exited before connecting:\n{}", text(&out));
                        }
                        if Instant::now() > deadline {
                            let _ = child.kill();
                            let out = child.wait_with_output().unwrap();
                            panic!(
                                "{test} did not connect within {PATIENCE:?}:\n{}",
                                text(&out)
                            );
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(err) => panic!("accept: {err}"),
                }
            };
            stream.set_nonblocking(false).unwrap();
            bound(&stream);
            Peer { child, stream }
        }

        /// The value of `result`, or a panic that shows what the child printed (it has most
        /// likely failed, which is why our side of the exchange failed).
        fn expect<T, E: std::fmt::Debug>(&mut self, result: Result<T, E>, what: &str) -> T {
            result.unwrap_or_else(|err| {
                let _ = self.child.kill();
                let out = self.output_after_kill();
                panic!("{what}: {err:?}\nchild:\n{}", text(&out))
            })
        }

        fn output_after_kill(&mut self) -> Output {
            let mut out = Output {
                status: self.child.wait().unwrap(),
                stdout: Vec::new(),
                stderr: Vec::new(),
            };
            let _ = self
                .child
                .stdout
                .take()
                .unwrap()
                .read_to_end(&mut out.stdout);
            let _ = self
                .child
                .stderr
                .take()
                .unwrap()
                .read_to_end(&mut out.stderr);
            out
        }

        /// Reads `expected` from the child, reporting the child's output if it does not come.
        fn wait_for(&mut self, expected: &[u8]) {
            let mut bytes = vec![0; expected.len()];
            let read = (&self.stream).read_exact(&mut bytes);
            self.expect(read, "waiting for the child");
            assert_eq!(bytes, expected);
        }

        /// Reads a number the child sent with `send_u64`.
        fn recv_u64(&mut self) -> u64 {
            let mut bytes = [0; 8];
            let read = (&self.stream).read_exact(&mut bytes);
            self.expect(read, "waiting for a number from the child");
            u64::from_ne_bytes(bytes)
        }

        /// Closes our end and waits for the child to exit (for at most [`PATIENCE`]).
        fn finish(self) -> Output {
            drop(self.stream);
            wait_bounded(self.child, "the child")
        }

        /// Closes our end, waits, and checks the child passed and printed `marker`.
        fn finish_ok(self, marker: &str) -> Output {
            let out = self.finish();
            assert!(out.status.success(), "child failed:\n{}", text(&out));
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains(marker),
                "child never printed {marker:?}:\n{stdout}"
            );
            out
        }
    }

    fn text(out: &Output) -> String {
        format!(
            "{}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The child's end of the socket; panics unless a parent test started this process.
    fn connect_to_parent() -> UnixStream {
        let name = std::env::var(SOCKET_ENV)
            .expect("a child test, run only by its parent test (which sets the socket name)");
        let stream =
            UnixStream::connect_addr(&SocketAddr::from_abstract_name(name).unwrap()).unwrap();
        bound(&stream);
        stream
    }

    fn send_u64(stream: &UnixStream, value: u64) {
        (&*stream).write_all(&value.to_ne_bytes()).unwrap();
    }

    fn recv_u64(stream: &UnixStream) -> u64 {
        let mut bytes = [0; 8];
        (&*stream).read_exact(&mut bytes).unwrap();
        u64::from_ne_bytes(bytes)
    }

    fn recv_exact(stream: &UnixStream, expected: &[u8]) {
        let mut bytes = vec![0; expected.len()];
        (&*stream).read_exact(&mut bytes).unwrap();
        assert_eq!(bytes, expected);
    }

    /// Maps a memfd writable.
    fn map(fd: OwnedFd) -> Result<Block, Error> {
        // SAFETY: these tests use blocks only through their unsafe views, keeping each view's
        // contract by their protocol; no tape or grid is ever built on them.
        unsafe { Block::from_fd(fd) }
    }

    /// Sends a block's memfd.
    fn send(stream: &UnixStream, block: &Block) -> io::Result<()> {
        // SAFETY: the processes of these tests use blocks only through their unsafe views,
        // keeping each view's contract by their protocol; no tape or grid is ever built on them.
        unsafe { share::send_block(stream, block) }
    }

    /// A new descriptor for a block's memfd.
    fn export(block: &Block) -> OwnedFd {
        // SAFETY: as in `send`.
        unsafe { block.export_fd() }.unwrap()
    }

    /// Creates a block of a few pages and a bit, fills it, and sends it and its length.
    fn offer(stream: &UnixStream) -> Block {
        let block = Block::open(5 * page() + 1).unwrap();
        assert_eq!(block.len(), 6 * page());
        // SAFETY: nobody else has the block yet.
        fill(unsafe { block.as_mut_slice() }, OFFER_SEED);
        send(stream, &block).unwrap();
        send_u64(stream, block.len() as u64);
        block
    }

    /// Receives an offered block, checks its length and bytes, writes the answer over them.
    fn answer(stream: &UnixStream, whose: &str) {
        let block = map(share::recv_fd(stream).unwrap()).unwrap();
        assert_eq!(block.len() as u64, recv_u64(stream), "the two sides' len()");
        // SAFETY: the offering side waits for ANSWERED before touching the block again.
        check(unsafe { block.as_slice() }, OFFER_SEED, whose);
        // SAFETY: as above.
        fill(unsafe { block.as_mut_slice() }, ANSWER_SEED);
        (&*stream).write_all(ANSWERED).unwrap();
    }

    /// Waits for the answer to an offered block and checks it.
    fn collect(stream: &UnixStream, block: &Block, whose: &str) {
        recv_exact(stream, ANSWERED);
        // SAFETY: the answering side is done with the block.
        check(unsafe { block.as_slice() }, ANSWER_SEED, whose);
    }

    #[test]
    #[ignore = "the other side of parent_to_child_round_trip"]
    fn child_answers() {
        let stream = connect_to_parent();
        answer(&stream, "the child reading the parent's block");
        println!("child: the parent's bytes arrived, the answer is written");
    }

    #[test]
    fn parent_to_child_round_trip() {
        let mut peer = Peer::spawn("linux::child_answers");
        let block = offer(&peer.stream);
        peer.wait_for(ANSWERED);
        // SAFETY: the child is done with the block.
        check(
            unsafe { block.as_slice() },
            ANSWER_SEED,
            "the parent reading the answer",
        );
        peer.finish_ok("child: the parent's bytes arrived");
    }

    #[test]
    #[ignore = "the other side of child_to_parent_round_trip"]
    fn child_offers() {
        let stream = connect_to_parent();
        let block = offer(&stream);
        collect(&stream, &block, "the child reading the parent's answer");
        println!("child: the parent's answer arrived");
    }

    #[test]
    fn child_to_parent_round_trip() {
        let mut peer = Peer::spawn("linux::child_offers");
        let fd = share::recv_fd(&peer.stream);
        let fd = peer.expect(fd, "receiving the child's block");
        let block = map(fd).unwrap();
        assert_eq!(block.len() as u64, peer.recv_u64(), "the two sides' len()");
        // SAFETY: the child waits for our answer before touching the block again.
        check(
            unsafe { block.as_slice() },
            OFFER_SEED,
            "the parent reading the child's block",
        );
        // SAFETY: as above.
        fill(unsafe { block.as_mut_slice() }, ANSWER_SEED);
        (&peer.stream).write_all(ANSWERED).unwrap();
        peer.finish_ok("child: the parent's answer arrived");
        // The child's block is gone; the memory lives on in our mapping.
        // SAFETY: nobody else maps the block any more.
        let bytes = unsafe { block.as_mut_slice() };
        check(bytes, ANSWER_SEED, "the parent after the child exited");
        fill(bytes, OFFER_SEED);
    }

    fn errno_of(rc: libc::c_int) -> Option<i32> {
        (rc == -1).then(|| io::Error::last_os_error().raw_os_error().unwrap())
    }

    #[test]
    #[ignore = "the other side of a_hostile_child_cannot_truncate_the_parents_block"]
    fn hostile_child() {
        let stream = connect_to_parent();
        let fd = share::recv_fd(&stream).unwrap();
        let len = recv_u64(&stream) as libc::off_t;
        let raw = fd.as_raw_fd();
        for size in [0, len / 2, len - 1, len + 1, 2 * len] {
            // SAFETY: ftruncate on a descriptor we own; the seals must refuse it.
            let errno = errno_of(unsafe { libc::ftruncate(raw, size) });
            assert_eq!(errno, Some(libc::EPERM), "ftruncate to {size} of {len}");
        }
        for seals in [
            libc::F_SEAL_WRITE,
            libc::F_SEAL_FUTURE_WRITE,
            libc::F_SEAL_SHRINK,
        ] {
            // SAFETY: F_ADD_SEALS takes an int; the seals are sealed, so it must fail.
            let errno = errno_of(unsafe { libc::fcntl(raw, libc::F_ADD_SEALS, seals) });
            assert_eq!(errno, Some(libc::EPERM), "F_ADD_SEALS {seals:#x}");
        }
        // SAFETY: fallocate on a descriptor we own; growing is sealed too.
        let errno = errno_of(unsafe { libc::fallocate(raw, 0, 0, 2 * len) });
        assert_eq!(errno, Some(libc::EPERM), "fallocate to {}", 2 * len);
        (&stream).write_all(REFUSED).unwrap();
        println!("child: every attempt to resize or reseal was refused");
    }

    #[test]
    fn a_hostile_child_cannot_truncate_the_parents_block() {
        let block = Block::open(64 * page()).unwrap();
        let mut peer = Peer::spawn("linux::hostile_child");
        send(&peer.stream, &block).unwrap();
        send_u64(&peer.stream, block.len() as u64);
        peer.wait_for(REFUSED);
        peer.finish_ok("child: every attempt to resize or reseal was refused");
        // A truncated file would make these touches raise SIGBUS and kill this test binary.
        for offset in (0..block.len()).step_by(page()) {
            // SAFETY: offset < len; the child has exited, so this test is the only user.
            unsafe {
                let byte = block.as_ptr().add(offset);
                byte.write_volatile(byte.read_volatile().wrapping_add(1));
            }
        }
        // SAFETY: as above.
        let bytes = unsafe { block.as_slice() };
        assert!(
            bytes
                .chunks(page())
                .all(|p| p[0] == 1 && p[1..].iter().all(|&b| b == 0))
        );
    }

    /// A memfd made the way a sender that is not unimem might make it.
    fn memfd(flags: libc::c_uint, size: usize) -> OwnedFd {
        // SAFETY: a valid name and flags.
        let raw = unsafe { libc::memfd_create(c"foreign".as_ptr(), libc::MFD_CLOEXEC | flags) };
        assert!(raw >= 0, "memfd_create: {}", io::Error::last_os_error());
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on a descriptor we own.
        assert_eq!(unsafe { libc::ftruncate(raw, size as libc::off_t) }, 0);
        fd
    }

    fn seals_of(fd: RawFd) -> libc::c_int {
        // SAFETY: F_GET_SEALS takes no argument.
        let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
        assert!(seals >= 0, "F_GET_SEALS: {}", io::Error::last_os_error());
        seals
    }

    fn add_seals(fd: RawFd, seals: libc::c_int) {
        // SAFETY: F_ADD_SEALS takes an int.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) }, 0);
    }

    /// The same open file again, with the access mode `flags`, as another process could get
    /// it through /proc.
    fn reopen(fd: RawFd, flags: libc::c_int) -> OwnedFd {
        std::fs::OpenOptions::new()
            .read(flags & libc::O_ACCMODE != libc::O_WRONLY)
            .write(flags & libc::O_ACCMODE != libc::O_RDONLY)
            .custom_flags(flags & !libc::O_ACCMODE)
            .open(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .into()
    }

    /// Panics unless `result` is NotShareable with a reason that contains `needle`.
    #[track_caller]
    fn assert_not_shareable<T: std::fmt::Debug>(result: Result<T, Error>, needle: &str) {
        match result {
            Err(Error::NotShareable { reason }) => {
                assert!(
                    reason.contains(needle),
                    "{needle:?} missing from {reason:?}"
                )
            }
            other => panic!("expected NotShareable ({needle}), got {other:?}"),
        }
    }

    #[test]
    fn from_fd_refuses_what_could_fault_or_cannot_map() {
        let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let mut fs = std::mem::MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: fstatfs fills the statfs buffer it is given.
        let rc = unsafe { libc::fstatfs(file.as_raw_fd(), fs.as_mut_ptr()) };
        assert_eq!(rc, 0);
        // SAFETY: fstatfs succeeded, so it filled the buffer.
        let on_tmpfs = unsafe { fs.assume_init() }.f_type == libc::TMPFS_MAGIC;
        // Files on tmpfs carry seals (F_SEAL_SEAL alone), so they read as unsealable memfds.
        let needle = if on_tmpfs {
            "can no longer be sealed"
        } else {
            "not a memfd"
        };
        assert_not_shareable(map(file.into()), needle);

        let mut ends = [0; 2];
        // SAFETY: pipe2 writes two descriptors into `ends`.
        let rc = unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(rc, 0);
        for end in ends {
            // SAFETY: pipe2 just made it; nothing else owns it.
            let end = unsafe { OwnedFd::from_raw_fd(end) };
            assert_not_shareable(map(end), "not a memfd");
        }

        let (socket, _) = UnixStream::pair().unwrap();
        assert_not_shareable(map(socket.into()), "not a memfd");

        let unsealable = memfd(0, page());
        assert_not_shareable(map(unsealable), "MFD_ALLOW_SEALING");

        let empty = memfd(libc::MFD_ALLOW_SEALING, 0);
        assert_not_shareable(map(empty), "empty");

        // Sealed, but with the seals sealed before F_SEAL_SHRINK.
        let sealed_open = memfd(libc::MFD_ALLOW_SEALING, page());
        add_seals(sealed_open.as_raw_fd(), libc::F_SEAL_SEAL);
        assert_not_shareable(map(sealed_open), "MFD_ALLOW_SEALING");

        let path = memfd(libc::MFD_ALLOW_SEALING, page());
        let path = reopen(path.as_raw_fd(), libc::O_PATH);
        assert_not_shareable(map(path), "O_PATH");

        let write_only = Block::open(page()).unwrap();
        let write_only = reopen(write_only.handle(), libc::O_WRONLY);
        assert_not_shareable(map(write_only), "write-only");

        let text = map(memfd(0, page())).unwrap_err().to_string();
        assert!(text.contains("cannot be mapped safely"), "{text}");
    }

    #[test]
    fn an_unsealed_memfd_is_sealed_against_shrinking_and_mapped() {
        let fd = memfd(libc::MFD_ALLOW_SEALING, 3 * page());
        let block = map(fd).unwrap();
        assert_eq!(block.len(), 3 * page());
        let seals = seals_of(block.handle());
        assert_eq!(seals, libc::F_SEAL_SHRINK, "only shrinking is sealed");
        // SAFETY: ftruncate on the block's own descriptor; shrinking must fail.
        let errno = errno_of(unsafe { libc::ftruncate(block.handle(), 0) });
        assert_eq!(errno, Some(libc::EPERM));
        // Growing is allowed, and leaves the mapping as it was.
        // SAFETY: as above; growing is not sealed.
        let rc = unsafe { libc::ftruncate(block.handle(), 8 * page() as libc::off_t) };
        assert_eq!(rc, 0);
        // SAFETY: the test is the only user.
        let bytes = unsafe { block.as_mut_slice() };
        assert_eq!(bytes.len(), 3 * page());
        fill(bytes, OFFER_SEED);
        check(bytes, OFFER_SEED, "the adopted memfd");
    }

    #[test]
    fn a_memfd_of_an_odd_size_maps_exactly_that_size() {
        let odd = page() + 904;
        let fd = memfd(libc::MFD_ALLOW_SEALING, odd);
        let block = map(fd).unwrap();
        assert_eq!(block.len(), odd);
        // SAFETY: the test is the only user; every byte up to len is in the file.
        let bytes = unsafe { block.as_mut_slice() };
        fill(bytes, ANSWER_SEED);
        check(bytes, ANSWER_SEED, "the odd-sized memfd");
    }

    #[test]
    fn write_sealed_and_read_only_descriptors_map_read_only() {
        let fd = memfd(libc::MFD_ALLOW_SEALING, 2 * page());
        std::fs::File::from(fd.try_clone().unwrap())
            .write_all(b"sealed")
            .unwrap();
        add_seals(fd.as_raw_fd(), libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK);
        let again = fd.try_clone().unwrap();
        assert_not_shareable(map(fd), "sealed against writing");
        let view = ReadOnlyBlock::from_fd(again).unwrap();
        assert_eq!(view.len(), 2 * page());
        // SAFETY: the memfd is sealed against writing: nobody can change it.
        assert_eq!(unsafe { &view.as_slice()[..6] }, b"sealed");

        let future = memfd(libc::MFD_ALLOW_SEALING, page());
        add_seals(future.as_raw_fd(), libc::F_SEAL_FUTURE_WRITE);
        let again = future.try_clone().unwrap();
        assert_not_shareable(map(future), "sealed against writing");
        assert!(ReadOnlyBlock::from_fd(again).is_ok());

        // A descriptor opened read-only: only a read-only view, and only once sealed.
        let block = Block::open(page()).unwrap();
        // SAFETY: the test is the only user.
        unsafe { block.as_ptr().write(9) };
        assert_not_shareable(map(reopen(block.handle(), libc::O_RDONLY)), "read-only");
        let view = ReadOnlyBlock::from_fd(reopen(block.handle(), libc::O_RDONLY)).unwrap();
        // SAFETY: nothing writes meanwhile.
        assert_eq!(unsafe { view.as_ptr().read() }, 9);
        let unsealed = memfd(libc::MFD_ALLOW_SEALING, page());
        assert_not_shareable(
            ReadOnlyBlock::from_fd(reopen(unsealed.as_raw_fd(), libc::O_RDONLY)),
            "may not seal it",
        );
    }

    /// How many of `len` bytes at `ptr` are resident, according to the kernel.
    fn resident_pages(ptr: *const u8, len: usize) -> usize {
        let mut vec = vec![0u8; len.div_ceil(page())];
        // SAFETY: the range is a live mapping; vec has one byte per page.
        let rc = unsafe { libc::mincore(ptr.cast_mut().cast(), len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
        vec.iter().filter(|&&v| v & 1 == 1).count()
    }

    #[test]
    fn the_receiving_side_follows_its_open_options() {
        let sent = Block::open(16 * page()).unwrap();
        let pages = sent.len() / page();

        let options = Block::options().pinning(Pinning::Off).clone();
        // SAFETY: as in `map`.
        let lazy = unsafe { options.open_fd(export(&sent)) }.unwrap();
        assert!(!lazy.is_pinned());
        assert_eq!(resident_pages(lazy.as_ptr(), lazy.len()), 0);
        lazy.warm().unwrap();
        assert_eq!(resident_pages(lazy.as_ptr(), lazy.len()), pages);

        // Residency is the memfd's, whoever maps it: start again from a fresh one.
        let sent = Block::open(16 * page()).unwrap();
        for pinning in [Pinning::Off, Pinning::BestEffort] {
            let view = Block::options()
                .warm(true)
                .pinning(pinning)
                .open_fd_read_only(export(&sent))
                .unwrap();
            assert_eq!(
                resident_pages(view.as_ptr(), view.len()),
                pages,
                "{pinning:?}"
            );
            assert_eq!(view.is_pinned(), pinning == Pinning::BestEffort);
        }
        // Populating a read-only view cannot ask for write access.
        let view = Block::options()
            .pinning(Pinning::Off)
            .open_fd_read_only(export(&Block::open(page()).unwrap()))
            .unwrap();
        view.warm().unwrap();
        assert_eq!(resident_pages(view.as_ptr(), view.len()), 1);

        // The default pins, as `Block::open` does (one page is within every default limit).
        let one_page = Block::open(page()).unwrap();
        assert!(map(export(&one_page)).unwrap().is_pinned());
    }

    fn is_cloexec(fd: RawFd) -> bool {
        // SAFETY: F_GETFD takes no argument.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert!(flags >= 0);
        flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn descriptors_handed_out_are_close_on_exec() {
        let block = Block::open(page()).unwrap();
        let clone = export(&block);
        assert!(is_cloexec(clone.as_raw_fd()));
        assert_ne!(clone.as_raw_fd(), block.handle());

        let (here, there) = UnixStream::pair().unwrap();
        share::send_fd(&here, &clone).unwrap();
        let received = share::recv_fd(&there).unwrap();
        assert!(is_cloexec(received.as_raw_fd()));
        let number = received.as_raw_fd();
        let view = ReadOnlyBlock::from_fd(received).unwrap();
        assert_eq!(
            view.handle(),
            number,
            "the view keeps the descriptor it was given"
        );
        // SAFETY: as in `send`.
        let again = unsafe { view.export_fd() }.unwrap();
        assert!(is_cloexec(again.as_raw_fd()));
        assert_ne!(again.as_raw_fd(), number);
    }

    #[test]
    fn recv_fd_reports_eof_and_messages_without_a_descriptor() {
        let (here, there) = UnixStream::pair().unwrap();
        (&here).write_all(b"x").unwrap();
        let err = share::recv_fd(&there).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("got 0"), "{err}");
        drop(here);
        let err = share::recv_fd(&there).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");

        let (here, there) = UnixStream::pair().unwrap();
        drop(there);
        let block = Block::open(page()).unwrap();
        let err = send(&here, &block).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE), "no SIGPIPE: {err}");
    }

    /// Sends `count` copies of `fd` in one message, as a hostile sender might.
    fn send_many(stream: &UnixStream, fd: RawFd, count: usize) {
        let data = count * size_of::<libc::c_int>();
        // SAFETY: pure arithmetic.
        let space = unsafe { libc::CMSG_SPACE(data as u32) } as usize;
        let mut control = vec![0u64; space.div_ceil(8)];
        let mut byte = 0u8;
        let mut iov = libc::iovec {
            iov_base: (&raw mut byte).cast(),
            iov_len: 1,
        };
        // SAFETY: msghdr is plain data; zero is valid for every field.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = &raw mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = space;
        // SAFETY: the control buffer holds `space` bytes, room for one header and `count`
        // descriptors; the header and data are written inside it.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&message);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(data as u32) as usize;
            let fds = libc::CMSG_DATA(header).cast::<libc::c_int>();
            for i in 0..count {
                fds.add(i).write_unaligned(fd);
            }
            assert_eq!(libc::sendmsg(stream.as_raw_fd(), &message, 0), 1);
        }
    }

    fn open_fds() -> u64 {
        std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
    }

    const CYCLES: usize = 10_000;
    /// How many descriptors each crammed message carries.
    const CRAMMED: [usize; 3] = [2, 3, 200];

    /// `SO_PASSPIDFD` (Linux 6.5): `libc` lacks it.
    const SO_PASSPIDFD: libc::c_int = 76;

    fn enable(stream: &UnixStream, option: libc::c_int) -> bool {
        let on: libc::c_int = 1;
        // SAFETY: a valid socket, level, option and int-sized value.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        rc == 0
    }

    #[test]
    #[ignore = "the child of leak_parent"]
    fn leak_child() {
        let stream = connect_to_parent();
        // With these, the kernel attaches credentials and a pidfd to every message received:
        // recv_fd must make room for them and close the pidfd.
        assert!(enable(&stream, libc::SO_PASSCRED));
        let pidfds = enable(&stream, SO_PASSPIDFD);
        let block = Block::open(page()).unwrap();
        let before = open_fds();
        for i in 0..CYCLES {
            let theirs = map(share::recv_fd(&stream).unwrap()).unwrap();
            // SAFETY: the parent waits for our block before writing its own again.
            assert_eq!(unsafe { theirs.as_ptr().cast::<u64>().read() }, i as u64);
            drop(theirs);
            // SAFETY: the parent reads our block only after receiving it below.
            unsafe { block.as_ptr().cast::<u64>().write(!(i as u64)) };
            send(&stream, &block).unwrap();
        }
        for count in CRAMMED {
            let err = share::recv_fd(&stream).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{count} fds: {err}");
        }
        let err = share::recv_fd(&stream).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        send_u64(&stream, before);
        send_u64(&stream, open_fds());
        println!("child: {CYCLES} cycles done (pidfds attached: {pidfds})");
    }

    #[test]
    #[ignore = "run alone in its own process by ten_thousand_exchanges_leak_no_descriptors"]
    fn leak_parent() {
        let _test = connect_to_parent();
        let mut peer = Peer::spawn("linux::leak_child");
        let block = Block::open(page()).unwrap();
        let before = open_fds();
        for i in 0..CYCLES {
            // SAFETY: the child reads our block only after receiving it below.
            unsafe { block.as_ptr().cast::<u64>().write(i as u64) };
            let sent = send(&peer.stream, &block);
            peer.expect(sent, "sending");
            let received = share::recv_fd(&peer.stream);
            let theirs = map(peer.expect(received, "receiving")).unwrap();
            // SAFETY: the child waits for our next block before writing its own again.
            assert_eq!(unsafe { theirs.as_ptr().cast::<u64>().read() }, !(i as u64));
        }
        for count in CRAMMED {
            send_many(&peer.stream, block.handle(), count);
        }
        // Half-close: the child's next recv_fd sees end of file, and can still answer.
        peer.stream.shutdown(std::net::Shutdown::Write).unwrap();
        let (child_before, child_after) = (peer.recv_u64(), peer.recv_u64());
        assert_eq!(open_fds(), before, "descriptors leaked in the parent");
        assert_eq!(child_after, child_before, "descriptors leaked in the child");
        peer.finish_ok("child: 10000 cycles done");
        println!("parent: {CYCLES} cycles done, {before} descriptors before and after");
    }

    #[test]
    fn ten_thousand_exchanges_leak_no_descriptors() {
        // The counting runs in two processes of its own: other tests here open descriptors.
        let peer = Peer::spawn("linux::leak_parent");
        peer.finish_ok("parent: 10000 cycles done");
    }

    #[test]
    #[ignore = "the child of a_read_only_receiver_that_writes_dies_alone"]
    fn read_only_child_writes() {
        let stream = connect_to_parent();
        // This process is meant to die by SIGSEGV: leave no core file behind.
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) }, 0);
        let view = ReadOnlyBlock::from_fd(share::recv_fd(&stream).unwrap()).unwrap();
        // SAFETY: the parent writes nothing while the child lives.
        check(
            unsafe { view.as_slice() },
            OFFER_SEED,
            "the read-only child",
        );
        println!("child: read the parent's bytes, now writing through the read-only view");
        let target = view.as_ptr().cast_mut().wrapping_add(view.len() / 2);
        // SAFETY: the write never takes effect: the page is mapped without PROT_WRITE, so the
        // CPU faults and the kernel kills this process before anything can observe a change.
        // That is what the parent test checks.
        unsafe { target.write_volatile(0) };
        println!("child: the write went through");
    }

    #[test]
    fn a_read_only_receiver_that_writes_dies_alone() {
        let block = Block::open(4 * page()).unwrap();
        // SAFETY: nobody else has the block yet.
        fill(unsafe { block.as_mut_slice() }, OFFER_SEED);
        let peer = Peer::spawn("linux::read_only_child_writes");
        send(&peer.stream, &block).unwrap();
        let out = peer.finish();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("child: read the parent's bytes, now writing"),
            "the child did not get to the write:\n{}",
            text(&out)
        );
        assert!(!stdout.contains("the write went through"), "{}", text(&out));
        assert!(
            matches!(out.status.signal(), Some(libc::SIGSEGV | libc::SIGBUS)),
            "the child should have died by SIGSEGV: {}",
            text(&out)
        );
        // SAFETY: the child is gone.
        check(
            unsafe { block.as_slice() },
            OFFER_SEED,
            "the parent after the fault",
        );
    }
}

#[cfg(target_vendor = "apple")]
mod apple {
    use super::{check, fill};
    use unimem::share::MachPort;
    use unimem::{Block, Pinning};

    fn page() -> usize {
        Block::open(1).unwrap().len()
    }

    #[test]
    fn a_mach_port_maps_the_same_bytes() {
        let block = Block::open(3 * page()).unwrap();
        // SAFETY: nobody else has the block yet.
        fill(unsafe { block.as_mut_slice() }, 0x5a);
        let port = block.mach_port().unwrap();
        // SAFETY: both blocks are used only through their unsafe views, one at a time.
        let other = unsafe { Block::from_mach_port(&port) }.unwrap();
        assert_eq!(other.len(), block.len(), "the two sides' len()");
        // SAFETY: nothing writes while the view lives.
        check(unsafe { other.as_slice() }, 0x5a, "the block from the port");
        // SAFETY: the only writer now.
        fill(unsafe { other.as_mut_slice() }, 0xc3);
        // SAFETY: the writes are done.
        check(unsafe { block.as_slice() }, 0xc3, "the original block");
        drop(port);
        drop(other);
        // SAFETY: the only user.
        check(
            unsafe { block.as_slice() },
            0xc3,
            "after the port and copy are gone",
        );
    }

    #[test]
    fn a_port_survives_a_trip_through_its_raw_name() {
        let block = Block::open(page()).unwrap();
        // SAFETY: nobody else has the block yet.
        fill(unsafe { block.as_mut_slice() }, 0x42);
        let raw = block.mach_port().unwrap().into_raw();
        // SAFETY: `raw` is the send right `into_raw` gave up, owned by nothing else now.
        let port = unsafe { MachPort::from_raw(raw) };
        assert_eq!(port.as_raw(), raw);
        let options = Block::options().pinning(Pinning::Off).clone();
        // SAFETY: both blocks are used only through their unsafe views, one at a time.
        let other = unsafe { options.open_mach_port(&port) }.unwrap();
        assert!(!other.is_pinned());
        // SAFETY: nothing writes while the view lives.
        check(
            unsafe { other.as_slice() },
            0x42,
            "the block from the raw port",
        );
    }

    #[test]
    fn a_port_that_names_no_surface_is_refused() {
        unsafe extern "C" {
            /// This task's name for itself, as the SDK's `mach_task_self()` macro reads it.
            safe static mach_task_self_: u32;
        }
        let task = mach_task_self_;
        // The null name, a name this task does not hold, and a port that is not a surface.
        for name in [0, 0x7fff_fff3, task] {
            // SAFETY: `into_raw` below takes the name back before the `MachPort` could drop
            // (and deallocate) a right that is not ours to give up.
            let port = unsafe { MachPort::from_raw(name) };
            // SAFETY: no block is made on success, which is what the test checks.
            let result = unsafe { Block::from_mach_port(&port) };
            let _ = port.into_raw();
            match result {
                Err(unimem::Error::NotShareable { reason }) => {
                    assert!(reason.contains("does not name an IOSurface"), "{reason}")
                }
                other => panic!("port {name:#x}: expected NotShareable, got {other:?}"),
            }
        }
    }

    /// Sizes from one page to several GiB, each seen whole through a port: its length (equal
    /// on both sides, also on an Intel Mac, whose pages are 4 KiB while IOSurface may round
    /// up further) and its first and last bytes. Unpinned and lazy on both sides (macOS's
    /// lock limit is unlimited, so the default best effort could wire a receiver whole), so
    /// the runner's RAM need not hold them: only the pages touched are ever made.
    #[test]
    fn sizes_from_a_page_to_gibibytes_cross_a_port() {
        let page = page();
        // IOSurface's 32-bit allocation size, less the 16 KiB it may round up by.
        let max = (4usize << 30) - (16 << 10);
        let unpinned = Block::options().pinning(Pinning::Off).clone();
        for len in [page, 3 * page, 1 << 20, 64 << 20, 1 << 30, 3 << 30, max] {
            let block = Block::options()
                .pinning(Pinning::Off)
                .open(len)
                .unwrap_or_else(|e| panic!("open({len}): {e}"));
            assert!(
                block.len() >= len && block.len() % page == 0,
                "open({len}): {block:?}"
            );
            let last = block.len() - 1;
            // SAFETY: both offsets are inside the block, whose only user this is.
            unsafe {
                block.as_ptr().write(0xa5);
                block.as_ptr().add(last).write(0x5a);
            }
            let port = block.mach_port().unwrap();
            // SAFETY: both blocks are used through raw pointers, one at a time.
            let other = unsafe { unpinned.open_mach_port(&port) }.unwrap();
            assert!(!other.is_pinned(), "the receiver of open({len})");
            assert_eq!(
                other.len(),
                block.len(),
                "the two sides' len() for open({len})"
            );
            // SAFETY: as above.
            unsafe {
                assert_eq!(other.as_ptr().read(), 0xa5, "first byte of open({len})");
                assert_eq!(
                    other.as_ptr().add(last).read(),
                    0x5a,
                    "last byte of open({len})"
                );
            }
        }
        assert_eq!(
            Block::options()
                .pinning(Pinning::Off)
                .open(max)
                .unwrap()
                .len(),
            max
        );
        // The caller's length, not the one rounded to pages, is what the error names. 4 GiB
        // less 4 KiB is an Intel Mac's page-rounded length that IOSurface's 16 KiB rounding
        // would take to 4 GiB, past 32 bits.
        for asked in [max + 1, (4usize << 30) - 4096, 4 << 30] {
            match Block::open(asked) {
                Err(unimem::Error::TooLarge {
                    requested,
                    max: limit,
                }) => {
                    assert_eq!((requested, limit), (asked, max));
                    let text = Block::open(asked).unwrap_err().to_string();
                    assert!(!text.contains("IOSurfaceGetBaseAddress"), "{text}");
                }
                other => panic!("open({asked}): expected TooLarge, got {other:?}"),
            }
        }
    }

    #[test]
    fn from_surface_keeps_the_surface_alive() {
        let block = Block::open(2 * page()).unwrap();
        // SAFETY: nobody else has the block yet.
        fill(unsafe { block.as_mut_slice() }, 0x77);
        // SAFETY: the handle is a live IOSurfaceRef while `block` lives, which it does here;
        // both blocks are used only through their unsafe views, one at a time.
        let adopted = unsafe { Block::from_surface(block.handle()) }.unwrap();
        assert_eq!(adopted.len(), block.len());
        drop(block);
        // SAFETY: the only user.
        let bytes = unsafe { adopted.as_mut_slice() };
        check(bytes, 0x77, "the adopted surface");
        fill(bytes, 0x11);
        check(bytes, 0x11, "the adopted surface after writing");
        // The adopted block shares on, like one it made itself.
        let port = adopted.mach_port().unwrap();
        // SAFETY: as above.
        let again = unsafe { Block::from_mach_port(&port) }.unwrap();
        // SAFETY: nothing writes while the view lives.
        check(
            unsafe { again.as_slice() },
            0x11,
            "the adopted surface, through a port",
        );
    }
}
