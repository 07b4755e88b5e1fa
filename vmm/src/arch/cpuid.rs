//! Per-vCPU CPUID, derived from what KVM supports on this host.
//!
//! We start from `KVM_GET_SUPPORTED_CPUID` and only fill in what depends on
//! the vCPU: its APIC ID and the topology it belongs to, and the hypervisor
//! bit. Feature hiding for hosts that emulate the guest kernel is done with
//! `clearcpuid=` on the command line (see `host.rs`), so the same CPUID is
//! used on every host.

use kvm_bindings::kvm_cpuid_entry2;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const EBX_APIC_ID_SHIFT: u32 = 24;
const EBX_LOGICAL_COUNT_SHIFT: u32 = 16;
const EBX_CLFLUSH_SHIFT: u32 = 8;
const CLFLUSH_LINE_QWORDS: u32 = 8;

/// Topology level types in leaves 0xB / 0x1F (ECX[15:8]).
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Fills the vCPU-dependent parts of `entries` for vCPU `cpu_id` of
/// `cpu_count`: one core per vCPU, one thread per core, one socket.
pub fn patch_for_vcpu(entries: &mut [kvm_cpuid_entry2], cpu_id: u8, cpu_count: u8) {
    let apic_id = u32::from(cpu_id);
    let count = u32::from(cpu_count.max(1));
    // Bits needed to number `count` cores (x2APIC ID shift of the core level).
    let core_bits = u32::BITS - (count - 1).leading_zeros();
    for e in entries.iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (apic_id << EBX_APIC_ID_SHIFT)
                    | (count << EBX_LOGICAL_COUNT_SHIFT)
                    | (CLFLUSH_LINE_QWORDS << EBX_CLFLUSH_SHIFT);
                e.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                // EAX[31:26]: cores per package - 1. Threads sharing a cache
                // (EAX[25:14]) stay as KVM reports them, capped to our count.
                e.eax &= !(0x3f << 26);
                e.eax |= (count - 1) << 26;
            }
            LEAF_EXT_TOPOLOGY | LEAF_V2_EXT_TOPOLOGY => {
                e.edx = apic_id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (LEVEL_TYPE_SMT << 8) | e.index;
                    }
                    1 => {
                        e.eax = core_bits;
                        e.ebx = count;
                        e.ecx = (LEVEL_TYPE_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            edx: EDX_HTT,
            ..Default::default()
        }
    }

    #[test]
    fn sets_apic_id_count_and_hypervisor_bit() {
        let mut e = vec![entry(1, 0), entry(0xb, 0), entry(0xb, 1), entry(0xb, 2)];
        patch_for_vcpu(&mut e, 3, 4);
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert_eq!(e[1].edx, 3);
        assert_eq!((e[1].ebx, e[1].ecx >> 8), (1, LEVEL_TYPE_SMT));
        assert_eq!((e[2].eax, e[2].ebx, e[2].ecx >> 8), (2, 4, LEVEL_TYPE_CORE));
        assert_eq!((e[3].eax, e[3].ebx), (0, 0));
    }

    #[test]
    fn single_vcpu_has_no_htt() {
        let mut e = vec![entry(1, 0)];
        patch_for_vcpu(&mut e, 0, 1);
        assert_eq!(e[0].edx & EDX_HTT, 0);
        assert_eq!(e[0].ebx >> 24, 0);
    }
}
