//! Control-channel frames from the guest, as the host's handshake reads
//! them: length prefixes, bitcode bodies. Errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reflow_agent_protocol::control::{read_frame, FrameBuffer, GuestMessage};

fuzz_target!(|data: &[u8]| {
    let mut frames = FrameBuffer::default();
    for chunk in data.chunks(13) {
        frames.push(chunk);
        while let Ok(Some(_)) = frames.next_frame::<GuestMessage>() {}
    }
    let mut r = data;
    while let Ok(_) = read_frame::<GuestMessage>(&mut r) {}
});
