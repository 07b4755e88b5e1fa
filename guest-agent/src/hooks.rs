//! Test hooks: services only agents built with the `testing` feature
//! offer (`./dev.sh test` and `./dev.sh bench` boot such an agent; the
//! release initramfs has none). They measure and exercise the shared
//! region and the ring from the guest side: `shm-probe`, `map-ring`,
//! `ring-echo`, `ring-fault`, and `echo` on the control channel.

use std::sync::Arc;
use std::time::Instant;

use reflow_agent_protocol::console::AgentLine;
use reflow_agent_protocol::request::{Request, SHM_PROBE_MARKER};
use reflow_ring::layout::RegionLayout;
use reflow_ring::{Backoff, Consumer, Fault, Producer};

use crate::shm::{Mapping, MmioDoorbell, Shm, ShmError};

/// Serves one test-hook request.
pub fn execute(request: Request, shm: &mut Shm) -> Result<String, ShmError> {
    match request {
        Request::Echo { text } => Ok(text),
        Request::ShmProbe { byte } => probe(&*shm.mapping()?, byte),
        Request::MapRing => map_ring(&*shm.mapping()?),
        Request::RingEcho => {
            start_echo(shm.mapping()?, shm.doorbell()?)?;
            Ok("started".into())
        }
        Request::RingFault { fault } => inject_fault(&*shm.mapping()?, &fault),
        other => unreachable!("{} is not a test hook", other.name()),
    }
}

fn mb_per_s(bytes: usize, secs: f64) -> u64 {
    (bytes as f64 / secs.max(1e-9) / 1e6) as u64
}

/// Touches the region once (first-touch faults are not bandwidth), then
/// fills it with `byte` four times and reads it back four times, timing
/// both, then writes the marker at offset 0.
fn probe(m: &Mapping, byte: u8) -> Result<String, ShmError> {
    let size = m.len;
    const PASSES: usize = 4;
    // SAFETY: the mapping is `m.len` bytes long and writable.
    unsafe { std::ptr::write_bytes(m.ptr, !byte, m.len) };
    let t = Instant::now();
    for _ in 0..PASSES {
        // SAFETY: the mapping is `m.len` bytes long and writable.
        unsafe { std::ptr::write_bytes(m.ptr, byte, m.len) };
    }
    let write = t.elapsed().as_secs_f64();
    let words = m.len / 8;
    let base = m.ptr.cast::<u64>();
    let t = Instant::now();
    let mut sum = 0u64;
    for _ in 0..PASSES {
        for i in 0..words {
            // SAFETY: `i < words` stays inside the mapping; the host may
            // write concurrently, so read volatile.
            sum = sum.wrapping_add(unsafe { base.add(i).read_volatile() });
        }
    }
    let read = t.elapsed().as_secs_f64();
    let expected = u64::from_ne_bytes([byte; 8]).wrapping_mul((words * PASSES) as u64);
    if sum != expected {
        return Err(ShmError::ReadBack);
    }
    // SAFETY: the marker is shorter than the mapping (at least 2 MiB).
    unsafe {
        std::ptr::copy_nonoverlapping(SHM_PROBE_MARKER.as_ptr(), m.ptr, SHM_PROBE_MARKER.len())
    };
    Ok(format!(
        "bytes={size} write_mb_s={} read_mb_s={}",
        mb_per_s(m.len * PASSES, write),
        mb_per_s(m.len * PASSES, read)
    ))
}

/// Maps the region and checks the ring layout the host wrote; answers its
/// geometry.
fn map_ring(m: &Mapping) -> Result<String, ShmError> {
    let shared = m.region();
    let layout = RegionLayout::read(&shared)?;
    Ok(format!(
        "bytes={} capacity={}",
        layout.size, layout.guest_to_host.capacity
    ))
}

/// Publishes one broken record on the guest->host ring (a fresh ring: no
/// echo service may be running).
fn inject_fault(m: &Mapping, fault: &str) -> Result<String, ShmError> {
    let fault: Fault = fault.parse().map_err(ShmError::UnknownFault)?;
    let shared = m.region();
    let layout = RegionLayout::read(&shared)?;
    Producer::new(&shared, layout.guest_to_host).send_faulty(fault)?;
    Ok(format!("published a record with a bad {}", fault.name()))
}

/// Starts the echo service on its own thread: every record on the
/// host->guest ring goes back unchanged on the guest->host ring, copied
/// region to region. It polls with back-off and stops (reporting why on the
/// console) if the host breaks the ring protocol.
fn start_echo(m: Arc<Mapping>, doorbell: Option<Arc<MmioDoorbell>>) -> Result<(), ShmError> {
    let shared = m.region();
    let layout = RegionLayout::read(&shared)?;
    std::thread::Builder::new()
        .name("ring-echo".into())
        .spawn(move || {
            let _mapping = m;
            let doorbell = doorbell;
            // Every system call (a sleep included) is emulated kernel work in
            // some guests: spin for a while before sleeping.
            let backoff = Backoff {
                spin: std::time::Duration::from_millis(2),
                max_sleep: std::time::Duration::from_millis(1),
            };
            let mut rx = Consumer::new(&shared, layout.host_to_guest).with_backoff(backoff);
            let mut tx = Producer::new(&shared, layout.guest_to_host).with_backoff(backoff);
            if let Some(d) = doorbell.as_deref() {
                tx = tx.with_doorbell(d);
            }
            let forever = std::time::Duration::from_secs(3600);
            let result: Result<(), reflow_ring::RingError> = (|| loop {
                if let Some(v) = rx.recv(forever)? {
                    tx.forward(&v, forever)?;
                    rx.release(v)?;
                }
            })();
            if let Err(e) = result {
                crate::console::say(&AgentLine::Err {
                    command: "ring-echo".into(),
                    message: e.to_string(),
                });
            }
        })
        .map_err(ShmError::Thread)?;
    Ok(())
}
