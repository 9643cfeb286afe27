//! The fast path of a direction with no toxic: the kernel moves the bytes, socket → pipe →
//! socket with `splice(2)`, without copying them through user space.
//!
//! The pipe is drained completely before the next read, so at every point where the toxic set
//! is looked at no byte is in flight here: when a toxic for this stream appears, the direction
//! hands over to the chunk path ([`super::link`]) with nothing lost or reordered. The hand-over
//! is one way: a connection that saw a toxic stays on the chunk path.

use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;

use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::link::Dir;

/// Bytes asked of one splice (the pipe is grown to hold them when the system allows).
const STEP: usize = 1 << 20;
/// A new pipe's capacity on Linux; a fill this large means a bulk transfer.
const DEFAULT_PIPE: usize = 1 << 16;

/// What the fast path ended with.
pub(crate) enum Outcome {
    /// The direction is over (source ended, cancelled, or an error cut the connection).
    Done,
    /// A toxic for this stream exists: go on in the chunk path.
    Toxic,
}

/// Runs the direction on `splice` until it ends or a toxic for its stream appears; `None` when
/// the pipe cannot be made (the chunk path takes over at once).
pub(crate) async fn run(d: &mut Dir) -> Option<Outcome> {
    if d.has_toxics() {
        return Some(Outcome::Toxic);
    }
    let (pipe_r, pipe_w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).ok()?;
    // Short connections keep the default pipe; one that fills it is a bulk transfer and gets
    // a larger one (fewer system calls per byte).
    let mut grown = false;
    let cancel = d.shared.cancel.clone();
    loop {
        let moved = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Some(Outcome::Done),
            changed = d.toxics.changed() => {
                if changed.is_err() {
                    d.shared.end(super::link::End::Close);
                    return Some(Outcome::Done);
                }
                if d.has_toxics() {
                    return Some(Outcome::Toxic);
                }
                continue;
            }
            r = fill(&d.src, &pipe_w) => r,
        };
        match moved {
            Ok(0) => {
                // The source ended: half-close towards the destination.
                let _ = socket2::SockRef::from(&*d.dst).shutdown(Shutdown::Write);
                return Some(Outcome::Done);
            }
            Ok(n) => {
                if !grown && n >= DEFAULT_PIPE {
                    grown = true;
                    let _ = fcntl_setpipe_size(&pipe_w, STEP);
                }
                d.received.add(n as u64);
                let drained = tokio::select! {
                    _ = cancel.cancelled() => return Some(Outcome::Done),
                    r = drain(&pipe_r, &d.dst, n) => r,
                };
                match drained {
                    Ok(()) => d.sent.add(n as u64),
                    Err(_) => {
                        d.shared.end(super::link::End::Close);
                        return Some(Outcome::Done);
                    }
                }
            }
            Err(_) => {
                // A reset or error on the source: treated as its end, as the chunk path does.
                let _ = socket2::SockRef::from(&*d.dst).shutdown(Shutdown::Write);
                return Some(Outcome::Done);
            }
        }
    }
}

/// Socket → pipe: waits for data, then moves what is there.
async fn fill(src: &TcpStream, pipe_w: &OwnedFd) -> io::Result<usize> {
    loop {
        src.readable().await?;
        match src.try_io(Interest::READABLE, || {
            splice(
                src,
                None,
                pipe_w,
                None,
                STEP,
                SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
            )
            .map_err(io::Error::from)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

/// Pipe → socket: all `n` bytes the pipe holds.
async fn drain(pipe_r: &OwnedFd, dst: &TcpStream, mut n: usize) -> io::Result<()> {
    while n > 0 {
        dst.writable().await?;
        match dst.try_io(Interest::WRITABLE, || {
            splice(
                pipe_r,
                None,
                dst,
                None,
                n,
                SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
            )
            .map_err(io::Error::from)
        }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => n -= k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
