//! Listening sockets shared by the HTTP server and the RTSP restream.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// A TCP listener on `addr`. `[::]:PORT` takes IPv4 clients too, whatever
/// `net.ipv6.bindv6only` says (one socket with `IPV6_V6ONLY` off, RFC 3493 §5.3); a specific
/// address takes its own family only.
///
/// Errors: the address cannot be bound (in use, not local, no permission).
pub fn tcp_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
