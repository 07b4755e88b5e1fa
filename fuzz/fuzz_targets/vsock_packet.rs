//! Guest vsock packets: the header parser, then the connection state
//! machine fed a sequence of whatever packets parse, answering each. No
//! input may panic it or make it buffer beyond its advertised credit.
#![no_main]

use std::io::{Read, Write};

use libfuzzer_sys::fuzz_target;
use reflow_vmm::devices::virtio::vsock::connection::{Connection, BUF_ALLOC};
use reflow_vmm::devices::virtio::vsock::packet::{parse_tx, Header, HDR_LEN};

const CID: u64 = 3;

/// A host socket that takes a few bytes at a time and has a little data.
struct Pipe {
    input: Vec<u8>,
    written: usize,
    step: usize,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.input.len()).min(7);
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input.drain(..n);
        if n == 0 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.step += 1;
        if self.step % 3 == 0 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(1000);
        self.written += n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_tx(data, CID);
    let request = Header {
        src_cid: CID,
        dst_cid: 2,
        src_port: 1,
        dst_port: 2,
        kind: 1,
        op: 1,
        buf_alloc: 4096,
        ..Header::default()
    };
    let pipe = Pipe {
        input: b"host data for the guest".to_vec(),
        written: 0,
        step: 0,
    };
    let mut conn = Connection::accept_from_guest(pipe, CID, &request);
    let mut rest = data;
    let mut out = [0u8; 256];
    let mut received = 0usize;
    while rest.len() >= HDR_LEN {
        let Ok((h, payload)) = parse_tx(rest, CID) else {
            rest = &rest[1..];
            continue;
        };
        rest = &rest[HDR_LEN + payload.len()..];
        received += payload.len();
        if conn.on_packet(&h, payload).is_err() {
            conn.reset();
        }
        conn.set_readable();
        for _ in 0..4 {
            if conn.next_packet(&mut out).is_none() {
                break;
            }
        }
        conn.flush();
        // Credit: what the guest sent and the host has not taken yet never
        // exceeds what we advertised.
        assert!(conn.pending_len() <= BUF_ALLOC as usize);
        assert!(conn.stream.written <= received);
        if conn.finished() {
            break;
        }
    }
});
