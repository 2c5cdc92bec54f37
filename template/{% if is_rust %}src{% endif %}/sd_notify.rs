//! systemd notifications (`READY=1`, `WATCHDOG=1`, `STOPPING=1`) to `NOTIFY_SOCKET`.
//!
//! Hand-written because the sd-notify crate cannot reach abstract sockets (`@name`), which
//! systemd uses by default; the protocol is one datagram per message, a few lines here.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

pub const READY: &str = "READY=1";
pub const WATCHDOG: &str = "WATCHDOG=1";
pub const STOPPING: &str = "STOPPING=1";

/// Sends `state` to `socket` (a path, or `@name` for an abstract socket).
pub fn send_to(socket: &str, state: &str) -> io::Result<()> {
    let addr = match socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(socket)?,
    };
    let datagram = UnixDatagram::unbound()?;
    datagram.connect_addr(&addr)?;
    datagram.send(state.as_bytes())?;
    Ok(())
}

/// Notifies systemd when `NOTIFY_SOCKET` is set; does nothing otherwise.
pub fn notify(state: &str) {
    if let Some(socket) = std::env::var("NOTIFY_SOCKET")
        .ok()
        .filter(|s| !s.is_empty())
        && let Err(e) = send_to(&socket, state)
    {
        tracing::debug!(socket = %socket, state = %state, error = %e, "systemd notification failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        send_to(path.to_str().unwrap(), READY).unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("sd-notify-test-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        send_to(&format!("@{name}"), STOPPING).unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
