//! The Intel MultiProcessor table (MP spec 1.4) that tells the guest kernel
//! about its CPUs, the IOAPIC and how ISA interrupts are routed, without ACPI.
//!
//! The table is built as bytes by a pure function (so it is unit-tested
//! byte for byte) and written at [`EBDA_START`](super::layout::EBDA_START),
//! which the kernel scans for the `_MP_` floating pointer.

use super::layout::{APIC_ADDR, IOAPIC_ADDR, IOAPIC_MAX_IRQ, MAX_VCPUS};

const SPEC_REV: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
const ISA_BUS_ID: u8 = 0;
/// Family 6 (CPU signature field), as other monitors report.
const CPU_SIGNATURE: u32 = 0x600;
/// FPU and APIC present.
const CPU_FEATURES: u32 = 0x201;
const FLOATING_POINTER_LEN: usize = 16;
const HEADER_LEN: usize = 44;

/// Errors building an MP table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MpTableError {
    /// The vCPU count (given) is zero or above [`MAX_VCPUS`].
    #[error("an MP table needs 1 to {MAX_VCPUS} CPUs, not {0}")]
    CpuCount(u8),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |s, b| s.wrapping_add(*b))
        .wrapping_neg()
}

/// The IOAPIC's ID: right after the CPUs' local APIC IDs.
pub fn ioapic_id(cpu_count: u8) -> u8 {
    cpu_count + 1
}

/// Builds the floating pointer and configuration table for `cpu_count`
/// CPUs, to be placed at guest physical address `base`.
pub fn build(base: u32, cpu_count: u8) -> Result<Vec<u8>, MpTableError> {
    if cpu_count == 0 || cpu_count > MAX_VCPUS {
        return Err(MpTableError::CpuCount(cpu_count));
    }
    let ioapic = ioapic_id(cpu_count);
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..cpu_count {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BSP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, ISA_BUS_ID]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for irq in 0..=IOAPIC_MAX_IRQ as u8 {
        // Flags 0: polarity and trigger conform to the bus (ISA: edge, high).
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, INT_TYPE_INT, 0, 0]);
        entries.extend_from_slice(&[ISA_BUS_ID, irq, ioapic, irq]);
        count += 1;
    }
    // LINT0 of every local APIC is ExtINT (the PIC), LINT1 is NMI.
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_EXTINT, 0, 0]);
    entries.extend_from_slice(&[ISA_BUS_ID, 0, 0xff, 0]);
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_NMI, 0, 0]);
    entries.extend_from_slice(&[ISA_BUS_ID, 0, 0xff, 1]);
    count += 2;

    let table_len = HEADER_LEN + entries.len();
    let mut header = Vec::with_capacity(table_len);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&(table_len as u16).to_le_bytes());
    header.push(SPEC_REV);
    header.push(0); // checksum, below
    header.extend_from_slice(b"REFLOW  ");
    header.extend_from_slice(b"MICROVM     ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&APIC_ADDR.to_le_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]); // extended length, checksum, reserved
    debug_assert_eq!(header.len(), HEADER_LEN);
    header.extend_from_slice(&entries);
    header[7] = checksum(&header);

    let config_addr = base + FLOATING_POINTER_LEN as u32;
    let mut out = Vec::with_capacity(FLOATING_POINTER_LEN + table_len);
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&config_addr.to_le_bytes());
    out.push(1); // length in 16-byte units
    out.push(SPEC_REV);
    out.push(0); // checksum, below
    out.extend_from_slice(&[0; 5]); // feature bytes: config table present
    out[10] = checksum(&out);
    out.extend_from_slice(&header);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::layout::{BASE_MEM_END, EBDA_START};

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    #[test]
    fn checksums_are_valid_and_pointer_is_right() {
        let t = build(EBDA_START as u32, 2).unwrap();
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(sum(&t[..16]), 0);
        let cfg = u32::from_le_bytes(t[4..8].try_into().unwrap());
        assert_eq!(cfg, EBDA_START as u32 + 16);
        let table = &t[16..];
        assert_eq!(&table[..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(sum(table), 0);
        // 2 CPUs + bus + IOAPIC + 24 IO interrupts + 2 local interrupts.
        assert_eq!(
            u16::from_le_bytes([table[34], table[35]]),
            2 + 1 + 1 + 24 + 2
        );
    }

    #[test]
    fn first_cpu_is_the_bsp() {
        let t = build(0, 3).unwrap();
        let cpus = &t[16 + HEADER_LEN..];
        assert_eq!(cpus[3], CPU_ENABLED | CPU_BSP);
        assert_eq!(cpus[20 + 1], 1);
        assert_eq!(cpus[20 + 3], CPU_ENABLED);
    }

    #[test]
    fn largest_table_fits_below_base_memory_end() {
        let t = build(EBDA_START as u32, MAX_VCPUS).unwrap();
        assert!(EBDA_START + t.len() as u64 <= BASE_MEM_END);
    }

    #[test]
    fn cpu_count_is_bounded() {
        assert_eq!(build(0, 0), Err(MpTableError::CpuCount(0)));
        assert_eq!(
            build(0, MAX_VCPUS + 1),
            Err(MpTableError::CpuCount(MAX_VCPUS + 1))
        );
    }
}
