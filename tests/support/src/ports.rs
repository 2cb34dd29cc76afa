//! Ports for servers a test must name before they start: a Redis it will stop
//! and restart on the same port, a metrics port a manifest fixes. (A server that
//! can report the port it bound is better started on port 0.)
//!
//! Binding port 0, reading the port and closing it hands out a port from the
//! kernel's ephemeral range, the very range every outgoing connection and every
//! other port-0 server on the machine draws from: anything may take it before
//! the server binds it. So the ports come from below that range instead, from a
//! block chosen by this process's id, in turn (a process-wide counter), each
//! checked free by binding it.
//!
//! What is left of the race, honestly: between the check and the server's bind
//! another process can still take the port, if it fixes that port itself or if
//! its id chose the same block (ids that differ by a multiple of the number of
//! blocks do) and it reaches the same place in the block at the same moment.
//! Within this process a port comes round again only after [`BLOCK`] others.
//! A server that fails with "address in use" is worth starting again on a new
//! port where the test allows it ([`crate::Redis::start`] does).

use std::{
    net::{Ipv4Addr, TcpListener},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

/// Where the pool begins: above the ports people run development servers on.
const POOL_START: u16 = 10_000;
/// Ports per block: one process's tests start far fewer servers than this
/// before the first ones have stopped.
const BLOCK: u16 = 256;
/// Linux's default start of the ephemeral range, when it cannot be read.
const EPHEMERAL_START: u16 = 32_768;

/// A port of 127.0.0.1 that nobody listened on a moment ago, and that this
/// process will not hand out again for a while (see the module's doc for what
/// can still go wrong).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (start, len) = *BLOCK_OF_THIS_PROCESS.get_or_init(block_of_this_process);
    for _ in 0..len {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // `n % len` < len ≤ BLOCK: it fits in a u16.
        let port = start + (n % u32::from(len)) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    // Every port of the block is taken: the kernel's choice is better than none.
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

static BLOCK_OF_THIS_PROCESS: OnceLock<(u16, u16)> = OnceLock::new();

/// The first port and the length of this process's block: one of the blocks
/// between [`POOL_START`] and the ephemeral range, by process id.
fn block_of_this_process() -> (u16, u16) {
    let end = ephemeral_start();
    // A machine whose ephemeral range starts low leaves no pool below it: the
    // blocks then overlap that range, and only the bind check guards them.
    let end = if end >= POOL_START + BLOCK {
        end
    } else {
        EPHEMERAL_START
    };
    let blocks = u32::from((end - POOL_START) / BLOCK);
    let index = std::process::id() % blocks;
    // index < blocks ≤ (u16::MAX - POOL_START) / BLOCK: the product fits.
    (POOL_START + index as u16 * BLOCK, BLOCK)
}

/// The first port of the kernel's ephemeral range (`ip_local_port_range`).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_START)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ports_come_from_this_process_block_once_each_and_skip_ports_in_use() {
        let (start, len) = *BLOCK_OF_THIS_PROCESS.get_or_init(block_of_this_process);
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        assert!(
            ports.iter().all(|p| (start..start + len).contains(p)),
            "{ports:?} outside {start}..{}",
            start + len
        );
        assert_eq!(ports.iter().collect::<HashSet<_>>().len(), ports.len());

        let taken = free_port();
        let _held = TcpListener::bind((Ipv4Addr::LOCALHOST, taken)).expect("it was free");
        for _ in 0..BLOCK {
            assert_ne!(free_port(), taken);
        }
    }
}
