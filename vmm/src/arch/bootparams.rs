//! The zero page (`boot_params`) and its e820 memory map.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};

use super::layout::{
    CMDLINE_START, EBDA_START, HIMEM_START, KERNEL_ALIGN, MMIO_GAP_END, MMIO_GAP_START,
};

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory (the kernel leaves it alone; `/dev/mem` may
/// map it).
pub const E820_RESERVED: u32 = 2;

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const MAX_E820_ENTRIES: usize = 128;

/// Errors filling the zero page.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootParamsError {
    /// Guest memory of this many bytes ends at or below 1 MiB, the start of
    /// high memory.
    #[error("guest memory of {0} bytes ends below high memory (1 MiB)")]
    MemoryTooSmall(u64),
    /// A boot structure's address or size does not fit the zero page's
    /// 32-bit fields.
    #[error("{what} at {addr:#x} (+{len:#x}) does not fit the 32-bit boot protocol field")]
    Above4G {
        /// Which structure (such as "initrd").
        what: &'static str,
        /// Its guest physical address.
        addr: u64,
        /// Its length in bytes.
        len: u64,
    },
}

/// Guest RAM regions for `mem_size` bytes: below the 32-bit MMIO gap, and
/// above 4 GiB for what does not fit below it.
pub fn ram_regions(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (MMIO_GAP_END, mem_size - MMIO_GAP_START),
        ]
    }
}

/// The e820 map for `mem_size` bytes of RAM: base memory up to the EBDA
/// (the MP table lives above it), then high memory, then memory above 4 GiB.
pub fn e820_map(mem_size: u64) -> Result<Vec<boot_e820_entry>, BootParamsError> {
    if mem_size <= HIMEM_START {
        return Err(BootParamsError::MemoryTooSmall(mem_size));
    }
    let ram = |addr: u64, size: u64| boot_e820_entry {
        addr,
        size,
        r#type: E820_RAM,
    };
    let mut map = vec![ram(0, EBDA_START)];
    for (start, size) in ram_regions(mem_size) {
        let start = start.max(HIMEM_START);
        let end = if start >= MMIO_GAP_END {
            start + size
        } else {
            size
        };
        map.push(ram(start, end - start));
    }
    Ok(map)
}

/// Where the initrd sits and how big it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdPlacement {
    /// Guest physical address of the initrd's first byte.
    pub addr: u64,
    /// Size of the initrd in bytes.
    pub size: u64,
}

/// Fills the zero page. `header` is the bzImage setup header when booting a
/// bzImage (None for an ELF vmlinux); `reserved` ranges (start, size) are
/// added to the e820 map as reserved.
pub fn build(
    header: Option<setup_header>,
    mem_size: u64,
    cmdline_len: usize,
    initrd: Option<InitrdPlacement>,
    reserved: &[(u64, u64)],
) -> Result<boot_params, BootParamsError> {
    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.kernel_alignment = KERNEL_ALIGN;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(InitrdPlacement { addr, size }) = initrd {
        let (a, s) = (u32::try_from(addr), u32::try_from(size));
        let (Ok(a), Ok(s)) = (a, s) else {
            return Err(BootParamsError::Above4G {
                what: "initrd",
                addr,
                len: size,
            });
        };
        params.hdr.ramdisk_image = a;
        params.hdr.ramdisk_size = s;
    }
    let mut map = e820_map(mem_size)?;
    map.extend(reserved.iter().map(|&(addr, size)| boot_e820_entry {
        addr,
        size,
        r#type: E820_RESERVED,
    }));
    debug_assert!(map.len() <= MAX_E820_ENTRIES);
    params.e820_table[..map.len()].copy_from_slice(&map);
    params.e820_entries = map.len() as u8;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn ranges(map: &[boot_e820_entry]) -> Vec<(u64, u64)> {
        map.iter().map(|e| (e.addr, e.addr + e.size)).collect()
    }

    #[test]
    fn small_guest_has_base_and_high_memory() {
        let map = e820_map(128 * MIB).unwrap();
        assert_eq!(
            ranges(&map),
            vec![(0, EBDA_START), (HIMEM_START, 128 * MIB)]
        );
        assert!(map.iter().all(|e| e.r#type == E820_RAM));
    }

    #[test]
    fn large_guest_skips_the_mmio_gap() {
        let map = e820_map(4 * GIB).unwrap();
        assert_eq!(
            ranges(&map),
            vec![
                (0, EBDA_START),
                (HIMEM_START, MMIO_GAP_START),
                (MMIO_GAP_END, MMIO_GAP_END + GIB)
            ]
        );
        assert_eq!(
            ram_regions(4 * GIB),
            vec![(0, MMIO_GAP_START), (MMIO_GAP_END, GIB)]
        );
    }

    #[test]
    fn tiny_memory_is_refused() {
        assert_eq!(
            e820_map(HIMEM_START),
            Err(BootParamsError::MemoryTooSmall(HIMEM_START))
        );
    }

    #[test]
    fn zero_page_carries_cmdline_initrd_and_magic() {
        let initrd = InitrdPlacement {
            addr: 100 * MIB,
            size: 2 * MIB,
        };
        let p = build(None, 128 * MIB, 42, Some(initrd), &[(1 << 32, 2 * MIB)]).unwrap();
        let hdr = p.hdr;
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.header }, 0x5372_6448);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ hdr.cmdline_size }, 42);
        assert_eq!({ hdr.ramdisk_image }, (100 * MIB) as u32);
        assert_eq!({ hdr.ramdisk_size }, (2 * MIB) as u32);
        assert_eq!(p.e820_entries, 3);
        let shm = p.e820_table[2];
        assert_eq!(
            ({ shm.addr }, { shm.size }, { shm.r#type }),
            (1 << 32, 2 * MIB, E820_RESERVED)
        );
    }
}
