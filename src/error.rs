//! The one error type of the crate.

use std::fmt;
use std::io;

/// Why a [`Block`](crate::Block) (or a [`Tape`](crate::Tape) or [`Grid`](crate::Grid) built on
/// one) could not be made or shared.
///
/// Every message says what happened and what to do about it, so printing the error is usually
/// enough for the person who has to fix it:
///
/// ```
/// let err = unimem::Block::open(0).unwrap_err();
/// assert!(matches!(err, unimem::Error::ZeroLength));
/// assert!(err.to_string().contains("at least one byte"));
/// ```
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
    /// The operating system refused to pin (lock in RAM) the pages, and pinning was
    /// [`Pinning::Required`](crate::Pinning::Required).
    PinRefused {
        /// How many bytes were to be pinned.
        bytes: usize,
        /// The soft `RLIMIT_MEMLOCK` of the process in bytes, `None` when unlimited or unknown.
        limit: Option<u64>,
        /// What the kernel answered.
        source: io::Error,
    },
    /// A system call failed for a reason other than pinning.
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
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ZeroLength => f.write_str(
                "a block of zero bytes was requested; ask for at least one byte \
                 (the length is rounded up to whole pages)",
            ),
            Error::TooLarge { requested, max } => write!(
                f,
                "a block of {requested} bytes was requested, more than the {max} bytes any \
                 single mapping can span; ask for less, or split the memory into several blocks"
            ),
            Error::PinRefused {
                bytes,
                limit,
                source,
            } => {
                write!(
                    f,
                    "pinning {} in RAM was refused ({source}); ",
                    Bytes(*bytes)
                )?;
                // The ways out differ: Linux has capabilities and systemd; a Mac has launchd
                // and wire limits of its own besides RLIMIT_MEMLOCK.
                let (raise, short, grant) = if cfg!(target_vendor = "apple") {
                    (
                        "`ulimit -l`, `launchctl limit memlock`",
                        "the system's wire limits (sysctl vm.user_wire_limit, \
                         vm.global_user_wire_limit) stopped it: free some memory, or ",
                        "",
                    )
                } else {
                    (
                        "`ulimit -l`, `LimitMEMLOCK=` in a systemd unit, `memlock` in \
                         /etc/security/limits.conf",
                        "the system is short of lockable memory: free some, or ",
                        "grant CAP_IPC_LOCK, or ",
                    )
                };
                match limit {
                    Some(limit) => write!(
                        f,
                        "RLIMIT_MEMLOCK is {}: raise it ({raise}), ",
                        Bytes(*limit as usize)
                    )?,
                    None => write!(
                        f,
                        "the memory-lock limit is not what stopped it, so {short}"
                    )?,
                }
                write!(
                    f,
                    "{grant}open with `Pinning::BestEffort` to continue unpinned"
                )
            }
            Error::Os { call, source } => write!(f, "{call} failed: {source}"),
            Error::NotShareable { reason } => {
                write!(
                    f,
                    "the shared memory offered cannot be mapped safely: {reason}"
                )
            }
            Error::Unsupported { what } => f.write_str(what),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::PinRefused { source, .. } | Error::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match &err {
            Error::ZeroLength | Error::TooLarge { .. } | Error::NotShareable { .. } => {
                io::ErrorKind::InvalidInput
            }
            Error::PinRefused { source, .. } | Error::Os { source, .. } => source.kind(),
            Error::Unsupported { .. } => io::ErrorKind::Unsupported,
        };
        io::Error::new(kind, err)
    }
}

/// Formats a byte count the way a person reads it: `64 MiB`, `8 KiB`, `3000 bytes`.
struct Bytes(usize);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
        let mut unit = None;
        let mut value = self.0;
        for name in UNITS {
            if value < 1024 || value % 1024 != 0 {
                break;
            }
            value /= 1024;
            unit = Some(name);
        }
        match unit {
            Some(name) => write!(f, "{value} {name}"),
            None if value == 1 => f.write_str("1 byte"),
            None => write!(f, "{value} bytes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_like_a_person_writes_them() {
        assert_eq!(Bytes(64 << 20).to_string(), "64 MiB");
        assert_eq!(Bytes(8192).to_string(), "8 KiB");
        assert_eq!(Bytes(3000).to_string(), "3000 bytes");
        assert_eq!(Bytes(1).to_string(), "1 byte");
    }

    #[test]
    fn pin_refusal_names_the_limit_and_every_way_out() {
        let err = Error::PinRefused {
            bytes: 64 << 20,
            limit: Some(8 << 20),
            source: io::Error::from_raw_os_error(12),
        };
        let text = err.to_string();
        // Linux's way out is a capability; a Mac's is launchd's limit.
        let platform = if cfg!(target_vendor = "apple") {
            "launchctl limit memlock"
        } else {
            "CAP_IPC_LOCK"
        };
        for needle in [
            "64 MiB",
            "RLIMIT_MEMLOCK is 8 MiB",
            "ulimit -l",
            platform,
            "BestEffort",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn pin_refusal_without_a_limit_names_what_else_stops_it() {
        let err = Error::PinRefused {
            bytes: 64 << 20,
            limit: None,
            source: io::Error::from_raw_os_error(12),
        };
        let text = err.to_string();
        let platform = if cfg!(target_vendor = "apple") {
            "vm.user_wire_limit"
        } else {
            "short of lockable memory"
        };
        for needle in ["is not what stopped it", platform, "BestEffort"] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
    }
}
