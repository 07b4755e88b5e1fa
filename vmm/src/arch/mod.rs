//! x86_64 specifics: guest physical layout, boot structures (zero page, e820,
//! MP table, GDT, page tables), vCPU boot state (registers, CPUID, MSRs) and
//! the host CPU's fingerprint.

pub mod bootparams;
pub mod cpuid;
pub mod gdt;
pub mod host_cpu;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
