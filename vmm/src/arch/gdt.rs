//! Global descriptor table entries for the 64-bit boot protocol.

use kvm_bindings::kvm_segment;

/// Builds a GDT entry from flags (access byte in bits 0-7, flags in 12-15),
/// base and limit, in the layout the CPU expects.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT: null, 64-bit code, data, TSS.
pub const BOOT_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];
/// GDT indexes of the code, data and TSS entries.
pub const CODE_INDEX: u16 = 1;
/// GDT index of the data segment entry.
pub const DATA_INDEX: u16 = 2;
/// GDT index of the TSS entry.
pub const TSS_INDEX: u16 = 3;

fn base(entry: u64) -> u64 {
    ((entry & 0xff00_0000_0000_0000) >> 32)
        | ((entry & 0x0000_00ff_0000_0000) >> 16)
        | ((entry & 0x0000_0000_ffff_0000) >> 16)
}

fn limit(entry: u64) -> u32 {
    (((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0x0000_0000_0000_ffff)) as u32
}

fn bit(entry: u64, n: u32) -> u8 {
    ((entry >> n) & 1) as u8
}

/// Decodes a GDT entry into the segment register KVM loads for `index`.
pub fn segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    kvm_segment {
        base: base(entry),
        limit: limit(entry),
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(entry, 47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(entry, 54),
        s: bit(entry, 44),
        l: bit(entry, 53),
        g: bit(entry, 55),
        avl: bit(entry, 52),
        unusable: u8::from(bit(entry, 47) == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_64_bit_present_ring0() {
        let cs = segment_from_gdt(BOOT_GDT[CODE_INDEX as usize], CODE_INDEX);
        assert_eq!(cs.selector, 0x8);
        assert_eq!((cs.l, cs.db, cs.present, cs.dpl, cs.s), (1, 0, 1, 0, 1));
        assert_eq!(cs.type_, 0xb);
        assert_eq!(cs.limit, 0xfffff);
        assert_eq!(cs.g, 1);
        assert_eq!(cs.unusable, 0);
    }

    #[test]
    fn entry_encoding_round_trips() {
        let e = gdt_entry(0xc093, 0x1234_5678, 0xabcde);
        let s = segment_from_gdt(e, 2);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xabcde);
        assert_eq!(s.type_, 0x3);
        assert_eq!(s.db, 1);
        assert_eq!(s.selector, 0x10);
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }
}
