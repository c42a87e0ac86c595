//! Share a block with another process: the other side maps the same memory, checks the
//! message written into it, and writes its answer in place. No byte is copied.
//!
//! `cargo run --release --example share`
//!
//! On Linux the parent starts this program again as its child, with a Unix socket as the
//! child's stdin, and passes the block's memfd over it. On macOS both sides run in one
//! process and meet through a mach port, which is what another process would receive in a
//! mach message (tests/apple.rs sends one to a child process).

#![cfg_attr(
    not(any(target_os = "linux", target_vendor = "apple")),
    allow(dead_code, reason = "nothing is shared on this platform")
)]

use std::process::ExitCode;

/// Where in the block the answer goes: far from the message, on another page.
const ANSWER_AT: usize = 512 << 10;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("share: {err}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Writes `text` at `at`, followed by a NUL.
///
/// # Safety
/// Nothing else reads or writes the block meanwhile.
unsafe fn write_text(block: &unimem::Block, at: usize, text: &str) {
    // SAFETY: the caller has the block to itself.
    let bytes = unsafe { &mut block.as_mut_slice()[at..] };
    bytes[..text.len()].copy_from_slice(text.as_bytes());
    bytes[text.len()] = 0;
}

/// Reads the NUL-terminated text at `at`.
///
/// # Safety
/// Nothing writes the block meanwhile.
unsafe fn read_text(block: &unimem::Block, at: usize) -> String {
    // SAFETY: the caller promises that nothing writes meanwhile.
    let bytes = unsafe { &block.as_slice()[at..] };
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Fails with both texts when they differ.
fn expect_text(what: &str, got: &str, expected: &str) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(format!("{what}: read {got:?}, expected {expected:?}").into())
    }
}

#[cfg(target_os = "linux")]
fn run() -> Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("child") => linux::child(),
        _ => linux::parent(),
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{ANSWER_AT, Result, expect_text, read_text, write_text};
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::process::{Command, Stdio};
    use unimem::{Block, share};

    /// The byte the child sends once its answer is in the block.
    const ANSWERED: u8 = b'!';

    pub(super) fn parent() -> Result<()> {
        let me = std::process::id();
        let block = Block::open(1 << 20)?;
        let message = format!("hello from parent {me}");
        // SAFETY: nobody else has the block yet.
        unsafe { write_text(&block, 0, &message) };

        let (here, there) = UnixStream::pair()?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("child")
            .stdin(Stdio::from(OwnedFd::from(there)))
            .spawn()?;
        println!(
            "parent {me}: wrote {message:?} into a {} KiB block (memfd {}), passing it to child {}",
            block.len() >> 10,
            block.handle(),
            child.id()
        );
        // SAFETY: the child keeps the protocol (it writes only its answer, then tells us), and
        // nothing in this process references the block's bytes through safe code.
        unsafe { share::send_block(&here, &block)? };
        (&here).write_all(&(block.len() as u64).to_ne_bytes())?;

        let mut answered = [0];
        let status = match (&here).read_exact(&mut answered) {
            Ok(()) => child.wait()?,
            Err(err) => {
                return Err(format!("the child never answered ({err}): {}", child.wait()?).into());
            }
        };
        if answered[0] != ANSWERED || !status.success() {
            return Err(format!("the child failed: {status}").into());
        }
        // SAFETY: the child has answered and exited; nothing else writes the block.
        let answer = unsafe { read_text(&block, ANSWER_AT) };
        expect_text(
            "the child's answer",
            &answer,
            &format!("hello back from child {}", child.id()),
        )?;
        println!("parent {me}: read the child's answer in place: {answer:?}");
        println!("parent {me}: both processes used the same pages; nothing was copied");
        Ok(())
    }

    pub(super) fn child() -> Result<()> {
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        let stream = UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned()?);
        // SAFETY: parent and child touch the block only through unsafe views, in turn: the
        // parent waits for our answer before reading, and writes nothing after sending.
        let block = unsafe { Block::from_fd(share::recv_fd(&stream)?)? };
        let mut len = [0; 8];
        (&stream).read_exact(&mut len)?;
        if u64::from_ne_bytes(len) != block.len() as u64 {
            return Err(format!(
                "the parent's block has {} bytes, ours {}",
                u64::from_ne_bytes(len),
                block.len()
            )
            .into());
        }
        // SAFETY: the parent writes nothing until we answer.
        let message = unsafe { read_text(&block, 0) };
        expect_text(
            "the parent's message",
            &message,
            &format!("hello from parent {parent}"),
        )?;
        println!(
            "child {me}: mapped the parent's block at {:p} ({} KiB, pinned: {}), read {message:?}",
            block.as_ptr(),
            block.len() >> 10,
            block.is_pinned()
        );
        let answer = format!("hello back from child {me}");
        // SAFETY: as above: the parent waits for our answer.
        unsafe { write_text(&block, ANSWER_AT, &answer) };
        println!("child {me}: wrote {answer:?} at offset {ANSWER_AT}");
        (&stream).write_all(&[ANSWERED])?;
        Ok(())
    }
}

#[cfg(target_vendor = "apple")]
fn run() -> Result<()> {
    use unimem::Block;

    let block = Block::open(1 << 20)?;
    let message = "hello through a mach port";
    // SAFETY: nobody else has the block yet.
    unsafe { write_text(&block, 0, message) };
    let port = block.mach_port()?;
    println!(
        "made mach port {} for a {} KiB IOSurface; another process would receive it in a mach \
         or XPC message",
        port.as_raw(),
        block.len() >> 10
    );

    // SAFETY: both blocks are used only through their unsafe views, one at a time.
    let other = unsafe { Block::from_mach_port(&port)? };
    if other.len() != block.len() {
        return Err(format!(
            "{} bytes through the port, {} made",
            other.len(),
            block.len()
        )
        .into());
    }
    // SAFETY: nothing writes the block while we read.
    let seen = unsafe { read_text(&other, 0) };
    expect_text("the message through the port", &seen, message)?;
    println!("the other side read {seen:?}");
    // SAFETY: the only user of the block now.
    unsafe { write_text(&other, ANSWER_AT, "hello back") };
    // SAFETY: the write is done.
    let answer = unsafe { read_text(&block, ANSWER_AT) };
    expect_text("the answer", &answer, "hello back")?;
    println!("the first side read the answer in place: {answer:?}; nothing was copied");
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_vendor = "apple")))]
fn run() -> Result<()> {
    println!("sharing a block with another process needs Linux or macOS; nothing to show here");
    Ok(())
}
