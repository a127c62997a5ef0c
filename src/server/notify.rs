//! systemd readiness protocol (`sd_notify`): datagrams to `$NOTIFY_SOCKET`. Written
//! by hand — a dozen lines over `UnixDatagram` — so the binary needs no libsystemd.

use std::os::unix::net::UnixDatagram;

/// Send `state` (e.g. `READY=1`) if the service manager asked for notifications.
/// Errors are ignored: notification is advisory.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(sock) = UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        // Abstract namespace socket.
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
            let _ = sock.send_to_addr(state.as_bytes(), &addr);
        }
    } else {
        let _ = sock.send_to(state.as_bytes(), &path);
    }
}

/// Half of `$WATCHDOG_USEC` in ms, when systemd's watchdog is on for this process.
pub fn watchdog_interval_ms() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| (usec / 2000).max(1))
}
