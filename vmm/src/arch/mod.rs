//! x86_64 specifics: guest physical layout, boot structures (zero page, e820,
//! MP table, GDT, page tables) and vCPU boot state (registers, CPUID, MSRs).

pub mod bootparams;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
