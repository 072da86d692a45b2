//! Ports for child processes (relay nodes, HAProxy, Redis) whose port must be written into
//! their configuration before they bind it.
//!
//! "Bind port 0, read it, close it" races twice: the kernel hands the same ephemeral
//! ports (`ip_local_port_range`) to every outgoing connection, so under traffic a client
//! socket of any test can take the port before the child binds it; and other test
//! processes pick ports at the same moment. So these ports come from below the ephemeral
//! range, where only explicit binds land, and each one is reserved across processes by an
//! advisory lock on a file named after it. The lock lives as long as this process (the
//! kernel releases it when the process exits, even by `kill -9`), so a port is never handed
//! out twice while its owner may still use it.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;

/// Lowest port handed out: above the usual fixed service ports (PostgreSQL, Redis, NATS…).
const FIRST: u32 = 15_000;
/// Used when the ephemeral range starts too low to leave room below it.
const FALLBACK_END: u32 = 30_000;

/// The lock files held by this process: dropping one would release its port.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A port reserved for this process, free to bind now.
pub fn reserve_port() -> u16 {
    reserve_port_with(0)
}

/// A port `p` such that `p` and `p + companion_offset` are both reserved and free (Redis
/// Cluster listens on its port and on port + 10000 for its bus). `0` reserves one port.
pub fn reserve_port_with(companion_offset: u16) -> u16 {
    let end = ephemeral_start().filter(|&s| s >= FIRST + 2_000).unwrap_or(FALLBACK_END);
    let span = end - FIRST - u32::from(companion_offset);
    assert!(span > 0, "no room below port {end} for a companion {companion_offset} ports above");
    // Start each process somewhere else so that concurrent tests rarely try the same file.
    let start = (std::process::id().wrapping_mul(7_919)) % span;
    for i in 0..span {
        let port = (FIRST + (start + i) % span) as u16;
        let wanted = if companion_offset == 0 { vec![port] } else { vec![port, port + companion_offset] };
        let Some(locks) = wanted.iter().map(|&p| lock(p)).collect::<Option<Vec<File>>>() else { continue };
        if wanted.iter().all(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            HELD.lock().unwrap_or_else(|p| p.into_inner()).extend(locks);
            return port;
        }
        // Taken by something outside the tests: leave the lock (never retry this port here).
        HELD.lock().unwrap_or_else(|p| p.into_inner()).extend(locks);
    }
    panic!("no free port between {FIRST} and {end}");
}

/// The lock on `port`'s file, unless another process (or an earlier call) holds it.
fn lock(port: u16) -> Option<File> {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir).expect("port lock directory");
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(port.to_string())).ok()?;
    file.try_lock().ok()?;
    Some(file)
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("noc-test-ports")
}

/// The first port of the kernel's ephemeral range, where it can read it.
fn ephemeral_start() -> Option<u32> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..20).map(|_| reserve_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        for &p in &ports {
            assert!(u32::from(p) >= FIRST);
            if let Some(start) = ephemeral_start().filter(|&s| s >= FIRST + 2_000) {
                assert!(u32::from(p) < start, "{p} inside the ephemeral range from {start}");
            }
            TcpListener::bind(("127.0.0.1", p)).expect("reserved port binds");
            // Another holder cannot take it while this process lives.
            assert!(lock(p).is_none(), "{p} lockable twice");
        }
    }

    #[test]
    fn a_companion_port_is_reserved_too() {
        let p = reserve_port_with(10_000);
        assert!(lock(p).is_none() && lock(p + 10_000).is_none());
        TcpListener::bind(("127.0.0.1", p + 10_000)).expect("companion binds");
    }
}
