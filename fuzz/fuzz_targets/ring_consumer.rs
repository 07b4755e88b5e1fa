//! The host's ring consumer reading a guest->host ring whose every byte the
//! guest controls: the published head, record headers, metadata, payloads.
//! It must return records or errors, never panic or read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reflow_ring::layout::{RegionLayout, HEAD_OFFSET, PAGE};
use reflow_ring::{Consumer, Region};

const SIZE: usize = (3 + 2 * 16) * PAGE as usize;

fuzz_target!(|data: &[u8]| {
    let mut buf = vec![0u64; SIZE / 8];
    // SAFETY: the buffer is 8-aligned, SIZE bytes, and outlives the region.
    let region = unsafe { Region::from_raw(buf.as_mut_ptr().cast(), SIZE) };
    let layout = RegionLayout::for_size(SIZE as u64).expect("layout");
    layout.initialize(&region).expect("init");
    let ring = layout.guest_to_host;
    // First byte odd: the next 8 bytes are the published head (any value);
    // even: the head covers exactly the bytes given.
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (head, body) = if mode & 1 == 1 && rest.len() >= 8 {
        let (h, b) = rest.split_at(8);
        (u64::from_le_bytes(h.try_into().expect("8 bytes")), b)
    } else {
        (rest.len().min(ring.capacity as usize) as u64, rest)
    };
    let body = &body[..body.len().min(ring.capacity as usize)];
    region.write(ring.data, body).expect("in bounds");
    region
        .store_release(ring.control + HEAD_OFFSET, head)
        .expect("in bounds");
    let mut consumer = Consumer::new(&region, ring);
    for _ in 0..64 {
        match consumer.try_recv() {
            Ok(Some(view)) => {
                let _ = view.to_vec();
                if consumer.release(view).is_err() {
                    break;
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
});
