//! Passing one descriptor at a time over a Unix stream socket (`SCM_RIGHTS`).
//!
//! Each descriptor travels with one byte of ordinary data, because a stream socket carries
//! control messages only alongside data. The receiver takes ownership of every descriptor
//! the kernel installs for it before looking at anything else, so that whatever a confused
//! or hostile sender crams into a message is closed on every path.

use crate::ffi::linux;
use core::ffi::c_int;
use core::mem::{align_of, offset_of, size_of};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// A control-message buffer of `N` bytes, aligned as `struct cmsghdr` needs.
#[repr(C, align(8))]
struct Control<const N: usize>([u8; N]);

const _: () = assert!(align_of::<Control<0>>() >= align_of::<linux::cmsghdr>());

/// What a sent message's control data takes: one descriptor.
const SEND_CONTROL: usize = linux::cmsg_space(size_of::<c_int>());

/// Room for what the kernel may attach to a received message: credentials (`SO_PASSCRED`:
/// a `struct ucred` of three 32-bit ids), a pidfd (`SO_PASSPIDFD`) and our descriptor. A
/// sender's extra descriptors fill what is left or are dropped by the kernel (`MSG_CTRUNC`);
/// either way none stays open.
const RECV_CONTROL: usize = linux::cmsg_space(12) + 2 * linux::cmsg_space(size_of::<c_int>());

/// Sends `fd` with one byte of data over `stream`, for [`recv_fd`] at the other end. An
/// interrupted call is retried; a closed peer is an `EPIPE` error, never a SIGPIPE.
pub(crate) fn send_fd(stream: &UnixStream, fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut control = Control([0; SEND_CONTROL]);
    let header = cmsg_header(linux::SCM_RIGHTS, size_of::<c_int>());
    let data = fd.as_raw_fd().to_ne_bytes();
    let data_at = linux::cmsg_len(0);
    control.0[..header.len()].copy_from_slice(&header);
    control.0[data_at..data_at + data.len()].copy_from_slice(&data);

    let mut byte = 0u8;
    let mut iov = linux::iovec {
        iov_base: (&raw mut byte).cast(),
        iov_len: 1,
    };
    let message = linux::msghdr {
        msg_name: core::ptr::null_mut(),
        msg_namelen: 0,
        msg_iov: &raw mut iov,
        msg_iovlen: 1,
        msg_control: (&raw mut control).cast(),
        msg_controllen: SEND_CONTROL,
        msg_flags: 0,
    };
    loop {
        // SAFETY: `message` points at live buffers (`iov`, `byte`, `control`) of the lengths it
        // states; sendmsg only reads them.
        let sent = unsafe { linux::sendmsg(stream.as_raw_fd(), &message, linux::MSG_NOSIGNAL) };
        match sent {
            1 => return Ok(()),
            0 => return Err(io::ErrorKind::WriteZero.into()),
            _ => match io::Error::last_os_error() {
                err if err.kind() == io::ErrorKind::Interrupted => continue,
                err => return Err(err),
            },
        }
    }
}

/// Receives the one descriptor that [`send_fd`] sent, close-on-exec, closing everything
/// else that came with it (more descriptors, a pidfd) on every path. An interrupted call is
/// retried. The errors are those `share::recv_fd` documents.
pub(crate) fn recv_fd(stream: &UnixStream) -> io::Result<OwnedFd> {
    let mut control = Control([0; RECV_CONTROL]);
    let mut byte = 0u8;
    let mut iov = linux::iovec {
        iov_base: (&raw mut byte).cast(),
        iov_len: 1,
    };
    let mut message = linux::msghdr {
        msg_name: core::ptr::null_mut(),
        msg_namelen: 0,
        msg_iov: &raw mut iov,
        msg_iovlen: 1,
        msg_control: (&raw mut control).cast(),
        msg_controllen: RECV_CONTROL,
        msg_flags: 0,
    };
    let received = loop {
        // SAFETY: `message` points at live, writable buffers of the lengths it states, which
        // is all recvmsg writes to; `message` itself is writable.
        let n = unsafe { linux::recvmsg(stream.as_raw_fd(), &mut message, linux::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let used = message.msg_controllen.min(RECV_CONTROL);
    let mut descriptors = Vec::new();
    for (level, kind, data) in control_messages(&control.0[..used]) {
        if level != linux::SOL_SOCKET || !matches!(kind, linux::SCM_RIGHTS | linux::SCM_PIDFD) {
            continue;
        }
        for raw in data.chunks_exact(size_of::<c_int>()) {
            let raw = c_int::from_ne_bytes(raw.try_into().expect("chunks of c_int size"));
            // SAFETY: the kernel installed this descriptor in our table for this message just
            // now; nothing else in the process knows its number, so it is ours to own.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            if kind == linux::SCM_RIGHTS {
                descriptors.push(fd);
            }
            // A pidfd is dropped, and so closed, right here: we did not ask for it.
        }
    }
    if message.msg_flags & linux::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the message carried more descriptors than the one expected (some were dropped by \
             the kernel, the rest closed): the sender is not speaking send_fd's protocol",
        ));
    }
    match <[OwnedFd; 1]>::try_from(descriptors) {
        Ok([fd]) => Ok(fd),
        Err(descriptors) if descriptors.is_empty() && received == 0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the stream before sending a descriptor",
        )),
        Err(descriptors) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "expected one descriptor with the message, got {} (all closed): the stream is \
                 out of step, or the sender is not speaking send_fd's protocol",
                descriptors.len()
            ),
        )),
    }
}

/// The `cmsghdr` of a control message with `data` bytes, as bytes.
fn cmsg_header(kind: c_int, data: usize) -> [u8; size_of::<linux::cmsghdr>()] {
    let mut header = [0; size_of::<linux::cmsghdr>()];
    let len = linux::cmsg_len(data).to_ne_bytes();
    let level = linux::SOL_SOCKET.to_ne_bytes();
    let kind = kind.to_ne_bytes();
    for (field, at) in [
        (&len[..], offset_of!(linux::cmsghdr, cmsg_len)),
        (&level[..], offset_of!(linux::cmsghdr, cmsg_level)),
        (&kind[..], offset_of!(linux::cmsghdr, cmsg_type)),
    ] {
        header[at..at + field.len()].copy_from_slice(field);
    }
    header
}

/// The control messages in `control` (the bytes `recvmsg` filled) as (level, type, data),
/// walked as `CMSG_FIRSTHDR` and `CMSG_NXTHDR` do. A header that claims more than the buffer
/// holds ends the walk.
fn control_messages(control: &[u8]) -> impl Iterator<Item = (c_int, c_int, &[u8])> {
    let mut at = 0;
    core::iter::from_fn(move || {
        let rest = control.get(at..)?;
        let header = rest.get(..size_of::<linux::cmsghdr>())?;
        let field = |offset: usize, len: usize| &header[offset..offset + len];
        let len = usize::from_ne_bytes(
            field(offset_of!(linux::cmsghdr, cmsg_len), size_of::<usize>())
                .try_into()
                .ok()?,
        );
        let level = c_int::from_ne_bytes(
            field(offset_of!(linux::cmsghdr, cmsg_level), size_of::<c_int>())
                .try_into()
                .ok()?,
        );
        let kind = c_int::from_ne_bytes(
            field(offset_of!(linux::cmsghdr, cmsg_type), size_of::<c_int>())
                .try_into()
                .ok()?,
        );
        let data = rest.get(linux::cmsg_len(0)..len)?;
        at += linux::cmsg_align(len);
        Some((level, kind, data))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a control buffer with libc's own macros and walks it with ours.
    #[test]
    fn control_messages_are_walked_as_libc_lays_them_out() {
        let mut buffer = Control([0u8; 256]);
        let mut message: libc::msghdr = zeroed_msghdr();
        message.msg_control = (&raw mut buffer).cast();
        message.msg_controllen = 256;
        let payloads: [(c_int, &[u8]); 3] = [
            (libc::SCM_RIGHTS, &[1, 0, 0, 0, 2, 0, 0, 0]),
            (libc::SCM_CREDENTIALS, &[9; 12]),
            (libc::SCM_RIGHTS, &[3, 0, 0, 0]),
        ];
        let mut used = 0;
        // SAFETY: `message` describes `buffer`, 256 writable bytes, enough for all three
        // messages; each header and its data are written within the space libc computes.
        unsafe {
            let mut header = libc::CMSG_FIRSTHDR(&message);
            for (kind, data) in payloads {
                assert!(!header.is_null());
                (*header).cmsg_level = libc::SOL_SOCKET;
                (*header).cmsg_type = kind;
                (*header).cmsg_len = libc::CMSG_LEN(data.len() as u32) as usize;
                libc::CMSG_DATA(header).copy_from(data.as_ptr(), data.len());
                used += libc::CMSG_SPACE(data.len() as u32) as usize;
                header = libc::CMSG_NXTHDR(&message, header);
            }
        }
        let walked: Vec<_> = control_messages(&buffer.0[..used]).collect();
        assert_eq!(walked.len(), payloads.len());
        for ((level, kind, data), (want_kind, want_data)) in walked.into_iter().zip(payloads) {
            assert_eq!(level, libc::SOL_SOCKET);
            assert_eq!(kind, want_kind);
            assert_eq!(data, want_data);
        }
    }

    #[test]
    fn a_header_that_overruns_the_buffer_ends_the_walk() {
        let mut buffer = [0u8; 32];
        buffer[..size_of::<linux::cmsghdr>()].copy_from_slice(&cmsg_header(linux::SCM_RIGHTS, 64));
        assert_eq!(control_messages(&buffer).count(), 0);
        buffer[..size_of::<linux::cmsghdr>()].copy_from_slice(&cmsg_header(linux::SCM_RIGHTS, 4));
        let walked: Vec<_> = control_messages(&buffer).collect();
        assert_eq!(walked, [(linux::SOL_SOCKET, linux::SCM_RIGHTS, &[0u8; 4][..])]);
    }

    /// A `libc::msghdr` with every field zero, as C code would get from `= {0}`.
    fn zeroed_msghdr() -> libc::msghdr {
        // SAFETY: msghdr is plain data (pointers, integers); all zeroes is a valid value.
        unsafe { core::mem::zeroed() }
    }
}
