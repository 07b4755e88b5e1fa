//! Bounds-checked, volatile access to a shared-memory region. The other
//! side writes the same memory concurrently, so nothing here hands out Rust
//! references into it: bytes are copied with volatile reads and writes, and
//! the two ring positions are accessed as atomics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Errors accessing the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("access of {len} bytes at offset {offset} is outside the {size}-byte region")]
pub struct OutOfBounds {
    /// Byte offset of the attempted access from the region's start.
    pub offset: u64,
    /// Length of the attempted access in bytes.
    pub len: u64,
    /// The region's size in bytes.
    pub size: u64,
}

/// A shared-memory region: a base pointer and a length.
#[derive(Debug)]
pub struct Region {
    base: *mut u8,
    size: usize,
}

// SAFETY: the region only performs volatile/atomic accesses through its raw
// pointer; sharing it between threads is what it is for.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Wraps `size` bytes at `base`.
    ///
    /// # Safety
    /// `base` must be valid for reads and writes of `size` bytes, aligned to
    /// 8 bytes, for as long as the `Region` (and anything borrowing it)
    /// lives. The memory may be written concurrently by others.
    pub unsafe fn from_raw(base: *mut u8, size: usize) -> Region {
        Region { base, size }
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    fn check(&self, offset: u64, len: u64) -> Result<usize, OutOfBounds> {
        let err = OutOfBounds {
            offset,
            len,
            size: self.size as u64,
        };
        let end = offset.checked_add(len).ok_or(err)?;
        if end > self.size as u64 {
            return Err(err);
        }
        Ok(offset as usize)
    }

    /// Copies `out.len()` bytes at `offset` into `out`, with volatile
    /// 8-byte loads for the aligned middle (the other side may be writing).
    pub fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), OutOfBounds> {
        let at = self.check(offset, out.len() as u64)?;
        // SAFETY: `at..at + out.len()` is inside the region (checked above).
        let src = unsafe { self.base.add(at) };
        let mut i = 0;
        let byte = |i: usize| {
            // SAFETY: `i < out.len()`, so inside the checked range.
            unsafe { src.add(i).read_volatile() }
        };
        while i < out.len() && (src as usize + i) % 8 != 0 {
            out[i] = byte(i);
            i += 1;
        }
        while i + 8 <= out.len() {
            // SAFETY: 8 bytes at an 8-aligned address inside the range.
            let word = unsafe { src.add(i).cast::<u64>().read_volatile() };
            out[i..i + 8].copy_from_slice(&word.to_ne_bytes());
            i += 8;
        }
        while i < out.len() {
            out[i] = byte(i);
            i += 1;
        }
        Ok(())
    }

    /// Copies `data` to `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), OutOfBounds> {
        let at = self.check(offset, data.len() as u64)?;
        // Bulk copy: the destination is ours to write until published, and
        // the region is never viewed as a Rust slice.
        // SAFETY: `at..at + data.len()` is inside the region (checked above)
        // and `data` cannot overlap shared memory we are about to publish.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(at), data.len()) };
        Ok(())
    }

    /// Reads `len` bytes at `offset` in chunks, handing each chunk and its
    /// position (relative to `offset`) to `sink`. Small reads (the common
    /// case) do not pay for zeroing a large bounce buffer.
    pub fn for_each_chunk<E: From<OutOfBounds>>(
        &self,
        offset: u64,
        len: u64,
        mut sink: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.check(offset, len)?;
        let mut small = [0u8; 512];
        let mut large;
        let buf: &mut [u8] = if len <= small.len() as u64 {
            &mut small
        } else {
            large = [0u8; 16384];
            &mut large
        };
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            self.read(offset + done, &mut buf[..n])?;
            sink(done, &buf[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// Feeds `len` bytes at `offset` to a CRC-32 hasher.
    pub fn hash_into(
        &self,
        offset: u64,
        len: u64,
        h: &mut crc32fast::Hasher,
    ) -> Result<(), OutOfBounds> {
        self.for_each_chunk(offset, len, |_, chunk| {
            h.update(chunk);
            Ok::<(), OutOfBounds>(())
        })
    }

    fn atomic(&self, offset: u64) -> Result<&AtomicU64, OutOfBounds> {
        let at = self.check(offset, 8)?;
        if at % 8 != 0 {
            return Err(OutOfBounds {
                offset,
                len: 8,
                size: self.size as u64,
            });
        }
        // SAFETY: in bounds, 8-byte aligned (base is 8-aligned by contract),
        // and only ever accessed atomically.
        Ok(unsafe { AtomicU64::from_ptr(self.base.add(at).cast()) })
    }

    /// Loads a u64 position with acquire ordering.
    pub fn load_acquire(&self, offset: u64) -> Result<u64, OutOfBounds> {
        Ok(self.atomic(offset)?.load(Ordering::Acquire))
    }

    /// Stores a u64 position with release ordering.
    pub fn store_release(&self, offset: u64, value: u64) -> Result<(), OutOfBounds> {
        self.atomic(offset)?.store(value, Ordering::Release);
        Ok(())
    }

    /// Raw pointer to `offset`, after checking `len` bytes fit: for
    /// zero-copy consumers that map the payload themselves.
    pub fn ptr_at(&self, offset: u64, len: u64) -> Result<*const u8, OutOfBounds> {
        let at = self.check(offset, len)?;
        // SAFETY: in bounds (checked above).
        Ok(unsafe { self.base.add(at) })
    }
}

#[cfg(test)]
pub(crate) mod test_memory {
    use super::Region;

    /// Heap memory standing in for shared memory in unit tests.
    pub struct TestMemory {
        buf: Vec<u64>,
    }

    impl TestMemory {
        pub fn new(size: usize) -> TestMemory {
            TestMemory {
                buf: vec![0; size.div_ceil(8)],
            }
        }

        pub fn region(&mut self) -> Region {
            // SAFETY: the buffer is 8-aligned and outlives every region the
            // tests create from it.
            unsafe { Region::from_raw(self.buf.as_mut_ptr().cast(), self.buf.len() * 8) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_memory::TestMemory;

    #[test]
    fn bounds_are_checked() {
        let mut m = TestMemory::new(64);
        let r = m.region();
        r.write(60, &[1, 2, 3, 4]).unwrap();
        let mut b = [0u8; 4];
        r.read(60, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(r.write(61, &[0; 4]).is_err());
        assert!(r.read(u64::MAX, &mut b).is_err());
        assert!(r.load_acquire(64).is_err());
        r.store_release(56, 7).unwrap();
        assert_eq!(r.load_acquire(56).unwrap(), 7);
        // Unaligned starts and odd lengths read exactly what was written.
        let data: Vec<u8> = (0..37).collect();
        r.write(3, &data).unwrap();
        let mut out = vec![0u8; 37];
        r.read(3, &mut out).unwrap();
        assert_eq!(out, data);
    }
}
