//! vCPU register state for the 64-bit Linux boot protocol: long mode with
//! identity-mapped page tables, flat segments, RIP at the kernel entry and
//! RSI pointing at the zero page.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::gdt::{segment_from_gdt, BOOT_GDT, CODE_INDEX, DATA_INDEX, TSS_INDEX};
use super::layout::{
    BOOT_STACK_POINTER, GDT_START, IDT_START, PDE_START, PDPTE_START, PML4_START, ZERO_PAGE_START,
};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;
const PAGE_PRESENT_RW: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// Errors writing boot structures into guest memory.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// Writing a boot structure into guest memory failed.
    #[error("writing {what} to guest memory: {source}")]
    Write {
        /// Which structure (such as "GDT").
        what: &'static str,
        /// The guest memory error.
        source: vm_memory::GuestMemoryError,
    },
}

/// Writes the boot GDT and an empty IDT.
pub fn write_gdt_idt(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_START + 8 * i as u64))
            .map_err(|source| RegsError::Write {
                what: "GDT",
                source,
            })?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_START))
        .map_err(|source| RegsError::Write {
            what: "IDT",
            source,
        })
}

/// Writes page tables identity-mapping the first 1 GiB with 2 MiB pages
/// (enough for the kernel, zero page, command line and initrd pointers until
/// the kernel builds its own tables).
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let err = |source| RegsError::Write {
        what: "page tables",
        source,
    };
    mem.write_obj(PDPTE_START | PAGE_PRESENT_RW, GuestAddress(PML4_START))
        .map_err(err)?;
    mem.write_obj(PDE_START | PAGE_PRESENT_RW, GuestAddress(PDPTE_START))
        .map_err(err)?;
    for i in 0..512u64 {
        mem.write_obj(
            (i << 21) | PAGE_SIZE_2M | PAGE_PRESENT_RW,
            GuestAddress(PDE_START + i * 8),
        )
        .map_err(err)?;
    }
    Ok(())
}

/// Special registers for long mode, starting from what KVM reported.
pub fn boot_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = segment_from_gdt(BOOT_GDT[CODE_INDEX as usize], CODE_INDEX);
    let data = segment_from_gdt(BOOT_GDT[DATA_INDEX as usize], DATA_INDEX);
    let tss = segment_from_gdt(BOOT_GDT[TSS_INDEX as usize], TSS_INDEX);
    sregs.gdt.base = GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&BOOT_GDT) - 1) as u16;
    sregs.idt.base = IDT_START;
    sregs.idt.limit = (std::mem::size_of::<u64>() - 1) as u16;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.cr3 = PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

/// General registers: RIP at the kernel entry, RSI at the zero page.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    }
}

/// FPU state at reset: x87 control word 0x37f, SSE MXCSR 0x1f80.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn page_tables_identity_map_first_gib() {
        let m = mem();
        write_page_tables(&m).unwrap();
        let pml4: u64 = m.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let pdpte: u64 = m.read_obj(GuestAddress(PDPTE_START)).unwrap();
        assert_eq!(pdpte, PDE_START | 3);
        let last: u64 = m.read_obj(GuestAddress(PDE_START + 511 * 8)).unwrap();
        assert_eq!(last, (511 << 21) | 0x83);
    }

    #[test]
    fn sregs_enter_long_mode() {
        let s = boot_sregs(kvm_sregs::default());
        assert_eq!(s.cr0 & (X86_CR0_PE | X86_CR0_PG), X86_CR0_PE | X86_CR0_PG);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, PML4_START);
        assert_eq!(s.cs.l, 1);
        assert_eq!(s.gdt.limit, 31);
        assert_eq!(s.tr.selector, 0x18);
    }

    #[test]
    fn gdt_is_written_where_sregs_point() {
        let m = mem();
        write_gdt_idt(&m).unwrap();
        let code: u64 = m.read_obj(GuestAddress(GDT_START + 8)).unwrap();
        assert_eq!(code, BOOT_GDT[1]);
        let r = boot_regs(0x100_0000);
        assert_eq!((r.rip, r.rsi, r.rflags), (0x100_0000, ZERO_PAGE_START, 2));
    }
}
