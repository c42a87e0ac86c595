//! The one error type of the crate.

use std::fmt;
use std::io;

/// Why a [`Block`](crate::Block) (or a [`Tape`](crate::Tape) or [`Grid`](crate::Grid) built on
/// one) could not be made or shared.
///
/// Every message says what happened, what the process already uses where that explains it,
/// and what to do about it, so printing the error is usually enough for the person who has to
/// fix it:
///
/// ```
/// let err = unimem::Block::open(0).unwrap_err();
/// assert!(matches!(err, unimem::Error::ZeroLength));
/// assert!(err.to_string().contains("at least one byte"));
/// ```
///
/// The operating system's own answer, where there is one, is the error's
/// [`source`](std::error::Error::source), not part of its message, so that reports which
/// print the chain of causes (`anyhow`, `eyre`) print it once.
///
/// Running out of room in a tape or grid is not an error: `take` returns `None` for that.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A length of zero was asked for.
    ZeroLength,
    /// The length asked for cannot be mapped at all: it exceeds what a single object may span
    /// (`isize::MAX`, rounded down to whole pages).
    TooLarge {
        /// The length that was asked for.
        requested: usize,
        /// The largest length this platform could ever give.
        max: usize,
    },
    /// A block given to an allocator is too small for it: [`Grid::on`](crate::Grid::on) with a
    /// block of fewer than `CELL × N` bytes.
    TooSmall {
        /// How many bytes the allocator needs.
        needed: usize,
        /// How many bytes the block has.
        len: usize,
    },
    /// The operating system refused to pin (lock in RAM) the pages, and pinning was
    /// [`Pinning::Required`](crate::Pinning::Required).
    PinRefused {
        /// How many bytes were to be pinned.
        bytes: usize,
        /// How many bytes this process had locked already when it was refused (`VmLck` on
        /// Linux), `None` where the system does not say.
        locked: Option<u64>,
        /// The soft `RLIMIT_MEMLOCK` of the process in bytes, `None` when unlimited or unknown.
        limit: Option<u64>,
        /// What the kernel answered.
        source: io::Error,
    },
    /// The system would not give the process the memory or the address space for a new block.
    OutOfMemory {
        /// How many bytes were asked for, rounded up to whole pages.
        bytes: usize,
        /// The soft `RLIMIT_AS` (`ulimit -v`) of the process in bytes, `None` when unlimited
        /// or unknown.
        address_space_limit: Option<u64>,
        /// The call that failed, e.g. `"mmap"`.
        call: &'static str,
        /// What the operating system answered.
        source: io::Error,
    },
    /// A system call failed for a reason other than pinning or memory.
    ///
    /// Its message explains the common causes: running out of file descriptors (each Linux
    /// block holds one), for example.
    Os {
        /// The call that failed, e.g. `"memfd_create"` or `"IOSurfaceCreate"`.
        call: &'static str,
        /// What the operating system answered.
        source: io::Error,
    },
    /// Memory another process offered cannot be mapped safely: a descriptor given to
    /// `Block::from_fd` (Linux) or a surface or mach port given to `Block::from_surface` or
    /// `Block::from_mach_port` (macOS). See [`share`](crate::share).
    NotShareable {
        /// What is wrong with it, and what the sender should send instead.
        reason: &'static str,
    },
    /// This platform or kernel cannot do what was asked.
    Unsupported {
        /// What was asked, and what to do instead.
        what: &'static str,
    },
    /// Huge pages were [`Required`](crate::HugePages::Required) (Linux), and the system has
    /// neither kind to give: the hugetlb pool (`vm.nr_hugepages`) has no room for the block,
    /// and transparent huge pages are off for shared memory (`shmem_enabled`).
    HugePagesUnavailable {
        /// How many bytes were asked for.
        bytes: usize,
        /// The default hugetlb page size, `None` without hugetlbfs.
        huge_page_size: Option<usize>,
        /// How many hugetlb pages of that size were free and unreserved, where known.
        free_huge_pages: Option<u64>,
        /// The setting of `/sys/kernel/mm/transparent_hugepage/shmem_enabled`, where there is
        /// one.
        shmem_enabled: Option<String>,
    },
    /// A NUMA node that this machine does not have was named in
    /// [`OpenOptions::numa`](crate::OpenOptions::numa) (Linux).
    NoSuchNode {
        /// The node asked for.
        node: usize,
        /// The nodes that are online, as `/sys/devices/system/node/online` lists them
        /// (`0-3`).
        online: String,
    },
}

/// `EMFILE` and `ENFILE`: the same numbers on Linux (every architecture) and on Apple's
/// systems, and checked against `libc` in the tests below. No other backend reports raw OS
/// errors.
#[cfg(unix)]
const EMFILE: i32 = 24;
#[cfg(unix)]
const ENFILE: i32 = 23;

/// How to let a process lock more (it follows an opening parenthesis): Linux has systemd's and
/// PAM's limits, and a capability.
#[cfg(not(target_vendor = "apple"))]
const RAISE_LOCK_LIMIT: &str = "`ulimit -l`, `LimitMEMLOCK=` in a systemd unit, `memlock` in \
     /etc/security/limits.conf), grant CAP_IPC_LOCK";
/// How to let a process lock more: a Mac has launchd's limit.
#[cfg(target_vendor = "apple")]
const RAISE_LOCK_LIMIT: &str = "`ulimit -l`, `launchctl limit memlock`)";

/// What refuses a lock within RLIMIT_MEMLOCK.
#[cfg(not(target_vendor = "apple"))]
const SHORT_OF_LOCKABLE: &str = "the system is short of lockable memory. Free some";
/// What refuses a lock within RLIMIT_MEMLOCK: XNU's wire limits, the per-process one being the
/// smaller of the rlimit and `vm.user_wire_limit`.
#[cfg(target_vendor = "apple")]
const SHORT_OF_LOCKABLE: &str = "the system's wire limits (`sysctl vm.user_wire_limit \
     vm.global_user_wire_limit`) stopped it. Free some memory";

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ZeroLength => f.write_str(
                "a block of zero bytes was requested; ask for at least one byte \
                 (the length is rounded up to whole pages)",
            ),
            Error::TooLarge { requested, max } => write!(
                f,
                "a block of {} was requested, more than the {} any single mapping can span; \
                 ask for less, or split the memory into several blocks",
                Bytes(*requested as u64),
                Bytes(*max as u64),
            ),
            Error::TooSmall { needed, len } => write!(
                f,
                "the block holds {}, fewer than the {} needed (a Grid<CELL, N> needs CELL × N \
                 bytes); open a block of at least {} bytes, or use fewer or smaller cells",
                Bytes(*len as u64),
                Bytes(*needed as u64),
                needed
            ),
            Error::PinRefused {
                bytes,
                locked,
                limit,
                ..
            } => {
                write!(f, "pinning {} in RAM was refused", Bytes(*bytes as u64))?;
                match (locked, limit) {
                    (Some(locked), Some(limit)) => write!(
                        f,
                        ": this process has {} locked already, and RLIMIT_MEMLOCK is {}. \
                         Raise the limit ({RAISE_LOCK_LIMIT}",
                        Bytes(*locked),
                        Bytes(*limit)
                    )?,
                    (None, Some(limit)) => write!(
                        f,
                        ": RLIMIT_MEMLOCK is {}. Raise it ({RAISE_LOCK_LIMIT}",
                        Bytes(*limit)
                    )?,
                    (locked, None) => {
                        if let Some(locked) = locked {
                            write!(f, " with {} locked already", Bytes(*locked))?;
                        }
                        write!(
                            f,
                            ": the memory-lock limit is not what stopped it, so {SHORT_OF_LOCKABLE}"
                        )?;
                    }
                }
                f.write_str(
                    "; or go on unpinned when pinning is refused, as the default, \
                     `Pinning::BestEffort`, does: `Block::options().pinning(Pinning::BestEffort)`, \
                     then `.open(len)` for a Block, or pass it to `Tape::with_options(len, ...)` \
                     for a Tape or `Grid::with_options(...)` for a Grid",
                )
            }
            Error::OutOfMemory {
                bytes,
                address_space_limit,
                call,
                ..
            } => {
                write!(f, "{call} refused {} of memory", Bytes(*bytes as u64))?;
                match address_space_limit {
                    Some(limit) => write!(
                        f,
                        ": this process may map at most {} (RLIMIT_AS), and that includes \
                         everything it has mapped already. Raise the limit (`ulimit -v`), or \
                         ask for less",
                        Bytes(*limit)
                    ),
                    None => f.write_str(
                        ": the address-space limit (`ulimit -v`) is not set, so the system is \
                         out of memory or this process out of mappings (`vm.max_map_count`). \
                         Ask for less, or free some",
                    ),
                }
            }
            Error::Os { call, source } => {
                write!(f, "{call} failed")?;
                match source.raw_os_error() {
                    #[cfg(unix)]
                    Some(EMFILE) => f.write_str(
                        ": this process has run out of file descriptors. Each block on Linux \
                         holds one, as long as it lives: open fewer, larger blocks (one Tape \
                         or Grid serves many allocations), drop blocks you no longer need, or \
                         raise the limit (`ulimit -n`)",
                    ),
                    #[cfg(unix)]
                    Some(ENFILE) => f.write_str(
                        ": the whole system has run out of open files. Each block on Linux \
                         holds one: open fewer, larger blocks, close files, or raise the \
                         system's limit (`sysctl fs.file-max`)",
                    ),
                    _ => Ok(()),
                }
            }
            Error::NotShareable { reason } => {
                write!(
                    f,
                    "the shared memory offered cannot be mapped safely: {reason}"
                )
            }
            Error::Unsupported { what } => f.write_str(what),
            Error::HugePagesUnavailable {
                bytes,
                huge_page_size,
                free_huge_pages,
                shmem_enabled,
            } => {
                write!(
                    f,
                    "huge pages were required for {}, and the system has none to give: ",
                    Bytes(*bytes as u64)
                )?;
                match (huge_page_size, free_huge_pages) {
                    (Some(size), Some(free)) => write!(
                        f,
                        "the hugetlb pool has {free} free page(s) of {} (reserve enough with \
                         `sysctl vm.nr_hugepages=N`, as root)",
                        Bytes(*size as u64)
                    )?,
                    (Some(size), None) => write!(
                        f,
                        "the hugetlb pool of {} pages has no room (reserve pages with \
                         `sysctl vm.nr_hugepages=N`, as root)",
                        Bytes(*size as u64)
                    )?,
                    (None, _) => f.write_str("this kernel has no hugetlbfs")?,
                }
                match shmem_enabled {
                    Some(setting) => write!(
                        f,
                        ", and transparent huge pages are `{setting}` for shared memory \
                         (enable them with `echo advise > \
                         /sys/kernel/mm/transparent_hugepage/shmem_enabled`, as root)"
                    )?,
                    None => f.write_str(", and this kernel has no transparent huge pages")?,
                }
                f.write_str("; or open with `HugePages::BestEffort`, which goes on with base pages")
            }
            Error::NoSuchNode { node, online } => write!(
                f,
                "NUMA node {node} does not exist on this machine: the online nodes are \
                 {online} (/sys/devices/system/node/online); name one of them, or leave the \
                 placement to the kernel with `Numa::Any`"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::PinRefused { source, .. }
            | Error::OutOfMemory { source, .. }
            | Error::Os { source, .. } => Some(source),
            Error::ZeroLength
            | Error::TooLarge { .. }
            | Error::TooSmall { .. }
            | Error::NotShareable { .. }
            | Error::Unsupported { .. }
            | Error::HugePagesUnavailable { .. }
            | Error::NoSuchNode { .. } => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match &err {
            Error::ZeroLength
            | Error::TooLarge { .. }
            | Error::TooSmall { .. }
            | Error::NotShareable { .. }
            | Error::NoSuchNode { .. } => io::ErrorKind::InvalidInput,
            Error::HugePagesUnavailable { .. } => io::ErrorKind::OutOfMemory,
            Error::OutOfMemory { .. } => io::ErrorKind::OutOfMemory,
            Error::PinRefused { source, .. } | Error::Os { source, .. } => source.kind(),
            Error::Unsupported { .. } => io::ErrorKind::Unsupported,
        };
        io::Error::new(kind, err)
    }
}

/// Formats a byte count the way a person reads it: `64 MiB`, `8 KiB`, `1000 bytes`, and
/// `2.9 KiB (3000 bytes)` or `16.0 EiB (18446744073709551615 bytes)` when no unit divides it.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        let bytes = self.0;
        if bytes < 1024 {
            return match bytes {
                1 => f.write_str("1 byte"),
                _ => write!(f, "{bytes} bytes"),
            };
        }
        // The largest unit that is at most `bytes`: 1024^(exponent + 1).
        let exponent = ((63 - bytes.leading_zeros()) / 10 - 1) as usize;
        let unit = 1u64 << (10 * (exponent + 1));
        if bytes % unit == 0 {
            write!(f, "{} {}", bytes / unit, UNITS[exponent])
        } else {
            let value = bytes as f64 / unit as f64;
            write!(f, "{value:.1} {} ({bytes} bytes)", UNITS[exponent])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    const _: () = assert!(EMFILE == libc::EMFILE && ENFILE == libc::ENFILE);

    /// An OS error whose own text can be told apart from anything our messages say.
    fn os_error(errno: i32) -> io::Error {
        io::Error::from_raw_os_error(errno)
    }

    /// The message does not repeat what `source()` says, so cause chains print it once.
    fn assert_source_not_repeated(err: &Error) {
        let text = err.to_string();
        let source = std::error::Error::source(err).expect("an OS error underneath");
        let source = source.to_string();
        assert!(
            !text.contains(&source),
            "{text:?} repeats its source {source:?}"
        );
    }

    #[test]
    fn byte_counts_read_like_a_person_writes_them() {
        assert_eq!(Bytes(64 << 20).to_string(), "64 MiB");
        assert_eq!(Bytes(8192).to_string(), "8 KiB");
        assert_eq!(Bytes(1000).to_string(), "1000 bytes");
        assert_eq!(Bytes(1).to_string(), "1 byte");
        assert_eq!(Bytes(3000).to_string(), "2.9 KiB (3000 bytes)");
        assert_eq!(Bytes(3 << 19).to_string(), "1.5 MiB (1572864 bytes)");
        assert_eq!(
            Bytes(u64::MAX).to_string(),
            "16.0 EiB (18446744073709551615 bytes)"
        );
        assert_eq!(Bytes(1 << 60).to_string(), "1 EiB");
    }

    #[test]
    fn pin_refusal_names_what_is_locked_the_limit_and_every_way_out() {
        let err = Error::PinRefused {
            bytes: 64 << 20,
            locked: Some(6 << 20),
            limit: Some(8 << 20),
            source: os_error(12),
        };
        let text = err.to_string();
        for needle in [
            "pinning 64 MiB",
            "6 MiB locked already",
            "RLIMIT_MEMLOCK is 8 MiB",
            "ulimit -l",
            // Linux's way out is a capability; a Mac's is launchd's limit.
            if cfg!(target_vendor = "apple") {
                "launchctl limit memlock"
            } else {
                "CAP_IPC_LOCK"
            },
            "Pinning::BestEffort",
            "Tape::with_options(len, ...)",
            "Grid::with_options(...)",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
        assert_source_not_repeated(&err);
    }

    #[test]
    fn pin_refusal_without_a_limit_blames_the_system() {
        let err = Error::PinRefused {
            bytes: 4096,
            locked: Some(1 << 30),
            limit: None,
            source: os_error(11),
        };
        let text = err.to_string();
        let blamed = if cfg!(target_vendor = "apple") {
            "vm.user_wire_limit"
        } else {
            "short of lockable"
        };
        for needle in ["pinning 4 KiB", "1 GiB locked already", blamed] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
        assert_source_not_repeated(&err);
    }

    #[test]
    fn too_large_speaks_in_human_units() {
        let text = Error::TooLarge {
            requested: usize::MAX,
            max: (isize::MAX as usize) & !4095,
        }
        .to_string();
        assert!(text.contains("16.0 EiB"), "{text}");
        assert!(text.contains("8.0 EiB"), "{text}");
    }

    #[test]
    fn an_address_space_refusal_names_the_size_and_the_limit() {
        let err = Error::OutOfMemory {
            bytes: 1 << 30,
            address_space_limit: Some(512 << 20),
            call: "mmap",
            source: os_error(12),
        };
        let text = err.to_string();
        for needle in ["mmap refused 1 GiB", "512 MiB", "RLIMIT_AS", "ulimit -v"] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
        assert_source_not_repeated(&err);
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::OutOfMemory);
    }

    #[cfg(unix)]
    #[test]
    fn running_out_of_descriptors_says_so_and_what_to_do() {
        let err = Error::Os {
            call: "memfd_create",
            source: os_error(libc::EMFILE),
        };
        let text = err.to_string();
        for needle in [
            "memfd_create failed",
            "out of file descriptors",
            "fewer, larger blocks",
            "ulimit -n",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
        assert_source_not_repeated(&err);
        let text = Error::Os {
            call: "memfd_create",
            source: os_error(libc::ENFILE),
        }
        .to_string();
        assert!(text.contains("fs.file-max"), "{text}");
    }

    #[test]
    fn no_message_repeats_its_source() {
        for err in [
            Error::Os {
                call: "mmap",
                source: os_error(22),
            },
            Error::PinRefused {
                bytes: 4096,
                locked: None,
                limit: Some(4096),
                source: os_error(1),
            },
        ] {
            assert_source_not_repeated(&err);
        }
    }

    #[test]
    fn missing_huge_pages_name_both_knobs_and_the_way_on() {
        let cases = [
            (
                Some(2 << 20),
                Some(3),
                Some("never".to_owned()),
                "3 free page(s) of 2 MiB",
            ),
            (Some(2 << 20), None, None, "no transparent huge pages"),
            (None, None, Some("deny".to_owned()), "no hugetlbfs"),
        ];
        for (huge_page_size, free_huge_pages, shmem_enabled, says) in cases {
            let err = Error::HugePagesUnavailable {
                bytes: 1 << 30,
                huge_page_size,
                free_huge_pages,
                shmem_enabled,
            };
            let message = err.to_string();
            assert!(
                message.contains("1 GiB") && message.contains(says),
                "{message}"
            );
            assert!(message.contains("HugePages::BestEffort"), "{message}");
            if huge_page_size.is_some() {
                assert!(message.contains("vm.nr_hugepages"), "{message}");
            }
            assert_eq!(io::Error::from(err).kind(), io::ErrorKind::OutOfMemory);
        }
    }

    #[test]
    fn a_missing_node_names_the_online_ones() {
        let err = Error::NoSuchNode {
            node: 7,
            online: "0-3".to_owned(),
        };
        let message = err.to_string();
        assert!(
            message.contains("node 7") && message.contains("0-3"),
            "{message}"
        );
        assert!(message.contains("Numa::Any"), "{message}");
    }
}
