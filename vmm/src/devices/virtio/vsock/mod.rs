//! virtio-vsock, emulated in the monitor (there is no vhost-vsock here):
//! the guest's control channel to the host.
//!
//! Three queues: RX (host -> guest packets, buffers the guest gives us),
//! TX (guest -> host packets) and EVENT (transport resets after a snapshot
//! restore). Packets go through the [`muxer::Muxer`] to host Unix sockets.
//! Every TX descriptor chain and header is validated ([`packet`]); a bad one
//! is reported to the VM's [`HostileLog`] and dropped, never trusted.

pub mod connection;
pub mod muxer;
pub mod packet;

use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::path::Path;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{
    drain_queue, read_config_bytes, QueueError, VirtioDevice, Work, TYPE_VSOCK, VIRTIO_F_VERSION_1,
};
use crate::hostile::HostileLog;
use muxer::{Muxer, MuxerError};
use packet::{validate_tx, Header, HDR_LEN, MAX_PAYLOAD};

const RX: usize = 0;
const TX: usize = 1;
const EVENT: usize = 2;
const QUEUE_SIZE: u16 = 256;
/// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`.
const EVENT_TRANSPORT_RESET: u32 = 0;

/// The device.
pub struct Vsock {
    cid: u64,
    config: [u8; 8],
    muxer: Muxer,
    hostile: HostileLog,
    /// A restored guest must drop connections it had at snapshot time.
    reset_pending: bool,
    buf: Vec<u8>,
}

impl Vsock {
    /// A device for guest `cid` whose host side is the Unix socket `uds`.
    /// `restored`: tell the guest its connections are gone once it runs.
    pub fn new(
        cid: u64,
        uds: &Path,
        hostile: HostileLog,
        restored: bool,
    ) -> Result<Vsock, MuxerError> {
        Ok(Vsock {
            cid,
            config: cid.to_le_bytes(),
            muxer: Muxer::new(cid, uds, hostile.clone())?,
            hostile,
            reset_pending: restored,
            buf: vec![0u8; MAX_PAYLOAD as usize],
        })
    }

    /// The guest's CID.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// Fills the guest's RX buffers with what the host has for it, at most
    /// one queue's worth per call (a driver re-publishing malformed chains
    /// must not hold the event loop; see [`drain_queue`]).
    fn fill_rx(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<Work, QueueError> {
        let mut used = false;
        let mut budget = usize::from(queue.size()).max(1);
        while self.muxer.has_rx_work() {
            if budget == 0 {
                return Ok(Work {
                    interrupt: used && queue.needs_notification(mem)?,
                    more: true,
                });
            }
            budget -= 1;
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let mut writer = match chain.writer(mem) {
                Ok(w) => w,
                Err(e) => {
                    self.hostile.report("vsock", format!("bad RX chain: {e}"));
                    queue.add_used(mem, head, 0)?;
                    used = true;
                    continue;
                }
            };
            let room = writer.available_bytes();
            if room < HDR_LEN {
                self.hostile.report(
                    "vsock",
                    format!("RX buffer of {room} bytes cannot hold a header"),
                );
                queue.add_used(mem, head, 0)?;
                used = true;
                continue;
            }
            let max = (room - HDR_LEN).min(self.buf.len());
            let Some((h, n)) = self.muxer.next_rx(&mut self.buf[..max]) else {
                queue.go_to_previous_position();
                break;
            };
            let written = writer
                .write_all(&h.to_bytes())
                .and_then(|()| writer.write_all(&self.buf[..n]));
            if let Err(e) = written {
                self.hostile
                    .report("vsock", format!("writing an RX packet failed: {e}"));
            }
            queue.add_used(mem, head, writer.bytes_written() as u32)?;
            used = true;
        }
        Ok(Work::done(used && queue.needs_notification(mem)?))
    }

    fn send_transport_reset(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError> {
        self.muxer.reset_all();
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            tracing::warn!("vsock: no event buffer for the transport reset");
            return Ok(false);
        };
        let head = chain.head_index();
        let written = chain
            .writer(mem)
            .map_err(|e| e.to_string())
            .and_then(|mut w| {
                w.write_all(&EVENT_TRANSPORT_RESET.to_le_bytes())
                    .map_err(|e| e.to_string())
            });
        let len = match written {
            Ok(()) => 4,
            Err(e) => {
                self.hostile
                    .report("vsock", format!("bad event buffer: {e}"));
                0
            }
        };
        queue.add_used(mem, head, len)?;
        Ok(queue.needs_notification(mem)?)
    }
}

/// Reads one packet from a TX chain and hands it to the muxer.
fn read_packet(
    cid: u64,
    reader: &mut virtio_queue::Reader<'_>,
    buf: &mut [u8],
) -> Result<(Header, usize), String> {
    let mut head = [0u8; HDR_LEN];
    let total = reader.available_bytes();
    if total < HDR_LEN {
        return Err(packet::PacketError::Short(total).to_string());
    }
    reader.read_exact(&mut head).map_err(|e| e.to_string())?;
    let h = Header::from_bytes(&head);
    validate_tx(&h, cid, reader.available_bytes()).map_err(|e| e.to_string())?;
    let len = h.len as usize;
    reader
        .read_exact(&mut buf[..len])
        .map_err(|e| e.to_string())?;
    Ok((h, len))
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<Work, QueueError> {
        match index {
            TX => {
                let tx = self.process_tx_queue(&mut queues[TX], mem)?;
                let rx = self.fill_rx(&mut queues[RX], mem)?;
                Ok(tx | rx)
            }
            RX => self.fill_rx(&mut queues[RX], mem),
            _ => Ok(Work::default()),
        }
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.muxer.epoll_fd())
    }

    fn process_backend(
        &mut self,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError> {
        let mut irq = false;
        if self.reset_pending && queues[EVENT].ready() {
            self.reset_pending = false;
            irq |= self.send_transport_reset(&mut queues[EVENT], mem)?;
        }
        self.muxer.process_host_events();
        // What is left beyond the budget goes out on the guest's next RX
        // or TX notification (a driver adding RX buffers notifies).
        irq |= self.fill_rx(&mut queues[RX], mem)?.interrupt;
        Ok(irq)
    }
}

impl Vsock {
    fn process_tx_queue(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<Work, QueueError> {
        drain_queue(queue, mem, |chain| {
            let packet = chain
                .reader(mem)
                .map_err(|e| format!("bad TX chain: {e}"))
                .and_then(|mut r| read_packet(self.cid, &mut r, &mut self.buf));
            match packet {
                Ok((h, len)) => self.muxer.handle_tx(&h, &self.buf[..len]),
                Err(e) => self.hostile.report("vsock", e),
            }
            0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::packet::from_guest::{guest_packet, CID};
    use super::packet::{op, HOST_CID};
    use super::*;
    use std::os::unix::net::UnixListener;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, Bytes, GuestAddress};

    const QSIZE: u16 = 16;
    const QUEUE_AT: [u64; 3] = [0x1000, 0x3000, 0x5000];
    const BUFS: u64 = 0x20_000;

    struct Rig<'a> {
        mem: &'a GuestMemoryMmap,
        vqs: Vec<MockSplitQueue<'a, GuestMemoryMmap>>,
        queues: Vec<Queue>,
        next_desc: [u16; 3],
        next_buf: u64,
    }

    impl<'a> Rig<'a> {
        fn new(mem: &'a GuestMemoryMmap) -> Rig<'a> {
            let vqs: Vec<_> = QUEUE_AT
                .iter()
                .map(|&a| MockSplitQueue::create(mem, GuestAddress(a), QSIZE))
                .collect();
            let queues = vqs.iter().map(|v| v.create_queue().unwrap()).collect();
            Rig {
                mem,
                vqs,
                queues,
                next_desc: [0; 3],
                next_buf: BUFS,
            }
        }

        /// Makes a chain of buffers (length, device-writable) available on
        /// queue `q`, filling readable ones from `data`; returns their
        /// addresses.
        fn offer(&mut self, q: usize, bufs: &[(u32, bool)], data: &[u8]) -> Vec<u64> {
            let first = self.next_desc[q];
            let mut descs = Vec::new();
            let mut addrs = Vec::new();
            let mut fill = data;
            for (i, &(len, write)) in bufs.iter().enumerate() {
                let addr = self.next_buf;
                self.next_buf += u64::from(len).max(1).next_multiple_of(64);
                if !write {
                    let n = fill.len().min(len as usize);
                    self.mem
                        .write_slice(&fill[..n], GuestAddress(addr))
                        .unwrap();
                    fill = &fill[n..];
                }
                let mut flags = if write { VRING_DESC_F_WRITE } else { 0 };
                let last = i + 1 == bufs.len();
                if !last {
                    flags |= VRING_DESC_F_NEXT;
                }
                let next = if last { 0 } else { first + i as u16 + 1 };
                descs.push(RawDescriptor::from(SplitDescriptor::new(
                    addr,
                    len,
                    flags as u16,
                    next,
                )));
                addrs.push(addr);
            }
            self.vqs[q].add_desc_chains(&descs, first).unwrap();
            self.next_desc[q] += bufs.len() as u16;
            addrs
        }

        /// (head, len) of used element `i` on queue `q`, if there is one.
        fn used(&self, q: usize, i: u64) -> Option<(u32, u32)> {
            let used = self.vqs[q].used_addr();
            let idx: u16 = self.mem.read_obj(used.unchecked_add(2)).unwrap();
            if u64::from(idx) <= i {
                return None;
            }
            let at = used.unchecked_add(4 + 8 * i);
            Some((
                self.mem.read_obj(at).unwrap(),
                self.mem.read_obj(at.unchecked_add(4)).unwrap(),
            ))
        }

        fn header_at(&self, addr: u64) -> Header {
            let mut b = [0u8; HDR_LEN];
            self.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
            Header::from_bytes(&b)
        }
    }

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_000)]).unwrap()
    }

    #[test]
    fn guest_connection_is_answered_through_the_queues() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vm.sock");
        let listener = UnixListener::bind(dir.path().join("vm.sock_1024")).unwrap();
        let log = HostileLog::default();
        let mut dev = Vsock::new(CID, &uds, log.clone(), false).unwrap();
        let mem = memory();
        let mut rig = Rig::new(&mem);
        // The guest posts a receive buffer (header and data split, as Linux
        // does), then sends REQUEST and, in a second chain, 5 bytes of data.
        let rx = rig.offer(RX, &[(HDR_LEN as u32, true), (4096, true)], &[]);
        rig.offer(
            TX,
            &[(HDR_LEN as u32, false)],
            &guest_packet(op::REQUEST, 0).to_bytes(),
        );
        let mut rw = guest_packet(op::RW, 5).to_bytes().to_vec();
        rw.extend_from_slice(b"hello");
        rig.offer(TX, &[(HDR_LEN as u32, false), (5, false)], &rw);
        assert!(
            dev.process_queue(TX, &mut rig.queues, &mem)
                .unwrap()
                .interrupt
        );
        assert_eq!(rig.used(TX, 1).map(|u| u.1), Some(0));
        let (head, len) = rig.used(RX, 0).expect("a RESPONSE");
        assert_eq!((head, len), (0, HDR_LEN as u32));
        let resp = rig.header_at(rx[0]);
        assert_eq!(
            (resp.op, resp.dst_port, resp.src_cid),
            (op::RESPONSE, 5000, HOST_CID)
        );
        let (mut host, _) = listener.accept().unwrap();
        let mut got = [0u8; 5];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        // Host data flows back once the guest posts another buffer.
        host.write_all(b"back").unwrap();
        let rx2 = rig.offer(RX, &[(HDR_LEN as u32, true), (4096, true)], &[]);
        assert!(dev.process_backend(&mut rig.queues, &mem).unwrap());
        let (_, len) = rig.used(RX, 1).expect("data for the guest");
        assert_eq!(len, HDR_LEN as u32 + 4);
        assert_eq!(rig.header_at(rx2[0]).op, op::RW);
        let mut data = [0u8; 4];
        mem.read_slice(&mut data, GuestAddress(rx2[1])).unwrap();
        assert_eq!(&data, b"back");
        assert_eq!(log.count(), 0, "{:?}", log.recent());
    }

    #[test]
    fn hostile_tx_chains_are_reported_and_consumed() {
        let dir = tempfile::tempdir().unwrap();
        let log = HostileLog::default();
        let mut dev = Vsock::new(CID, &dir.path().join("vm.sock"), log.clone(), false).unwrap();
        let mem = memory();
        let mut rig = Rig::new(&mem);
        let short = guest_packet(op::REQUEST, 0).to_bytes();
        rig.offer(TX, &[(10, false)], &short[..10]);
        let spoofed = Header {
            src_cid: 99,
            ..guest_packet(op::REQUEST, 0)
        };
        rig.offer(TX, &[(HDR_LEN as u32, false)], &spoofed.to_bytes());
        // Says 100 bytes follow; only 3 do.
        let mut lying = guest_packet(op::RW, 100).to_bytes().to_vec();
        lying.extend_from_slice(b"abc");
        rig.offer(TX, &[(HDR_LEN as u32 + 3, false)], &lying);
        // Only device-writable buffers: nothing to read.
        rig.offer(TX, &[(HDR_LEN as u32, true)], &[]);
        // A buffer outside guest memory.
        let first = rig.next_desc[TX];
        let bad = RawDescriptor::from(SplitDescriptor::new(0xdead_0000_0000, 64, 0, 0));
        rig.vqs[TX].add_desc_chains(&[bad], first).unwrap();
        rig.next_desc[TX] += 1;
        let _ = dev.process_queue(TX, &mut rig.queues, &mem).unwrap();
        for i in 0..5 {
            assert!(
                rig.used(TX, i).is_some(),
                "chain {i} not returned to the guest"
            );
        }
        assert_eq!(log.count(), 5, "{:?}", log.recent());
    }

    #[test]
    fn a_restored_device_resets_the_guest_transport() {
        let dir = tempfile::tempdir().unwrap();
        let mut dev = Vsock::new(
            CID,
            &dir.path().join("vm.sock"),
            HostileLog::default(),
            true,
        )
        .unwrap();
        let mem = memory();
        let mut rig = Rig::new(&mem);
        let evt = rig.offer(EVENT, &[(8, true)], &[]);
        mem.write_obj(0xffff_ffffu32, GuestAddress(evt[0])).unwrap();
        assert!(dev.process_backend(&mut rig.queues, &mem).unwrap());
        assert_eq!(rig.used(EVENT, 0), Some((0, 4)));
        let id: u32 = mem.read_obj(GuestAddress(evt[0])).unwrap();
        assert_eq!(id, EVENT_TRANSPORT_RESET);
        // Only once.
        rig.offer(EVENT, &[(8, true)], &[]);
        dev.process_backend(&mut rig.queues, &mem).unwrap();
        assert!(rig.used(EVENT, 1).is_none());
    }
}
