//! Guest physical memory layout.
//!
//! ```text
//! 0x0000_0500  GDT              0x0000_0520  IDT
//! 0x0000_7000  zero page (boot_params)
//! 0x0000_8ff0  boot stack top   0x0000_9000  PML4, then PDPT, PD
//! 0x0002_0000  kernel command line (up to CMDLINE_MAX_SIZE)
//! 0x0009_fc00  MP table (last KiB of base memory, reserved in the e820 map)
//! 0x0010_0000  high memory: the kernel loads at 16 MiB, initrd at the top
//! 0xc000_0000  32-bit MMIO gap (virtio-mmio devices, IOAPIC, LAPIC) to 4 GiB
//! ```

/// Global descriptor table.
pub const GDT_START: u64 = 0x500;
/// Interrupt descriptor table (empty; the kernel installs its own).
pub const IDT_START: u64 = 0x520;
/// The zero page handed to the kernel in RSI.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity page tables: PML4, then one PDPT, then one PD (2 MiB pages).
pub const PML4_START: u64 = 0x9000;
/// The page-directory-pointer table, right after the PML4.
pub const PDPTE_START: u64 = 0xa000;
/// The page directory (2 MiB pages), right after the PDPT.
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Longest command line we pass (the kernel's COMMAND_LINE_SIZE on x86).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area; the MP table lives here.
pub const EBDA_START: u64 = 0x9fc00;
/// End of base memory.
pub const BASE_MEM_END: u64 = 0xa0000;
/// Start of high memory.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO gap (4 GiB).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First virtio-mmio device; each takes one [`VIRTIO_MMIO_SIZE`] window.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// Size of each virtio-mmio device's register window (4 KiB).
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// The guest->host doorbell page (see `shm`): in the MMIO gap, past the
/// last virtio window, claimed by no device and no memory slot.
pub const DOORBELL_ADDR: u64 = 0xd008_0000;
/// IOAPIC and local APIC (both emulated in the kernel by KVM).
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// The local APIC's MMIO base.
pub const APIC_ADDR: u32 = 0xfee0_0000;
/// Where KVM puts its TSS and identity map (required on Intel), just below
/// the IOAPIC, inside the gap.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// KVM's identity-map page, one page below its TSS.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;
/// Legacy IRQ lines: serial (COM1) and the first virtio-mmio device; further
/// virtio devices take the lines after it.
pub const SERIAL_IRQ: u32 = 4;
/// IRQ line of the first virtio-mmio device.
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Highest IRQ line the IOAPIC we declare has.
pub const IOAPIC_MAX_IRQ: u32 = 23;
/// Most vCPUs a VM may have (our kernel's NR_CPUS; also what the MP table
/// fits in the last KiB of base memory).
pub const MAX_VCPUS: u8 = 32;
/// Default kernel load address (CONFIG_PHYSICAL_START) and alignment.
pub const KERNEL_ALIGN: u32 = 0x100_0000;
