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

use super::{read_config_bytes, QueueError, VirtioDevice, TYPE_VSOCK, VIRTIO_F_VERSION_1};
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

    fn fill_rx(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, QueueError> {
        let mut used = false;
        while self.muxer.has_rx_work() {
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
        Ok(used && queue.needs_notification(mem)?)
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
    ) -> Result<bool, QueueError> {
        match index {
            TX => {
                let tx = self.process_tx_queue(&mut queues[TX], mem)?;
                let rx = self.fill_rx(&mut queues[RX], mem)?;
                Ok(tx || rx)
            }
            RX => self.fill_rx(&mut queues[RX], mem),
            _ => Ok(false),
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
        irq |= self.fill_rx(&mut queues[RX], mem)?;
        Ok(irq)
    }
}

impl Vsock {
    fn process_tx_queue(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError> {
        let mut used = false;
        loop {
            queue.disable_notification(mem)?;
            while let Some(chain) = queue.pop_descriptor_chain(mem) {
                let head = chain.head_index();
                let packet = chain
                    .reader(mem)
                    .map_err(|e| format!("bad TX chain: {e}"))
                    .and_then(|mut r| read_packet(self.cid, &mut r, &mut self.buf));
                match packet {
                    Ok((h, len)) => self.muxer.handle_tx(&h, &self.buf[..len]),
                    Err(e) => self.hostile.report("vsock", e),
                }
                queue.add_used(mem, head, 0)?;
                used = true;
            }
            if !queue.enable_notification(mem)? {
                break;
            }
        }
        Ok(used && queue.needs_notification(mem)?)
    }
}
