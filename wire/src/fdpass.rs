//! Passing the frame ring between processes: a memfd (anonymous shared memory file) sent
//! over the Unix socket with SCM_RIGHTS (unix(7)), using rustix's safe wrappers. Pictures are
//! written and read with positioned I/O (`FileExt::{write_all_at, read_exact_at}`) on the
//! shared file, so no `unsafe` mmap is needed.

use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

/// Creates a shared-memory file of `bytes` bytes (sparse until written).
pub fn create_ring(name: &str, bytes: u64) -> std::io::Result<File> {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)?;
    let file = File::from(fd);
    file.set_len(bytes)?;
    Ok(file)
}

/// One `sendmsg` of `data` with one file descriptor attached; returns the bytes sent (the
/// descriptor travels with the first of them). For non-blocking sockets: may return
/// `WouldBlock` or a short count, and the caller writes the rest as plain data.
pub fn send_fd_once(socket: impl AsFd, data: &[u8], fd: impl AsFd) -> std::io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd.as_fd()];
    control.push(SendAncillaryMessage::ScmRights(&fds));
    Ok(rustix::net::sendmsg(&socket, &[IoSlice::new(data)], &mut control, SendFlags::NOSIGNAL)?)
}

/// Sends `data` with one file descriptor attached (blocking socket).
pub fn send_with_fd(socket: impl AsFd, data: &[u8], fd: impl AsFd) -> std::io::Result<()> {
    let mut sent = send_fd_once(&socket, data, fd)?;
    // The descriptor went with the first bytes; the rest is plain data.
    while sent < data.len() {
        sent += rustix::net::send(&socket, &data[sent..], SendFlags::NOSIGNAL)?;
    }
    Ok(())
}

/// Receives into `buf`, returning the byte count and a descriptor if one came along.
pub fn recv_with_fd(socket: impl AsFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(&socket, &mut [IoSliceMut::new(buf)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut fd = None;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = m {
            fd = fds.next();
        }
    }
    Ok((msg.bytes, fd))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_ring_crosses_a_socket_and_is_shared() {
        let (a, b) = UnixStream::pair().unwrap();
        let ring = create_ring("test-ring", 4096).unwrap();
        send_with_fd(&a, b"ring", &ring).unwrap();
        let mut buf = [0u8; 16];
        let (n, fd) = recv_with_fd(&b, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"ring");
        let theirs = File::from(fd.expect("a descriptor arrived"));
        ring.write_all_at(b"picture", 100).unwrap();
        let mut got = [0u8; 7];
        theirs.read_exact_at(&mut got, 100).unwrap();
        assert_eq!(&got, b"picture", "both ends see the same memory");
        assert_eq!(theirs.metadata().unwrap().len(), 4096);
    }
}
