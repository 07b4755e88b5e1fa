//! The KVM VM object: opening /dev/kvm, the in-kernel devices, and their
//! state for snapshots.

use kvm_bindings::{
    kvm_irqchip, kvm_pit_config, CpuId, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VmFd};
use sha2::{Digest, Sha256};

use super::VmError;
use crate::arch::layout::{KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR};
use crate::snapshot::state::KvmVmState;

pub(super) fn kvm_err(op: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { op, source }
}

/// Set to `1`, this process (and the monitors it starts) acts as if the
/// host had no `/dev/kvm`: how the tests play a machine without KVM.
pub const NO_KVM_ENV: &str = "REFLOW_NO_KVM";

/// Opens /dev/kvm, explaining failures.
pub(super) fn open_kvm() -> Result<Kvm, VmError> {
    if std::env::var(NO_KVM_ENV).is_ok_and(|v| v == "1") {
        return Err(VmError::KvmHidden);
    }
    Kvm::new().map_err(kvm_open_error)
}

/// Why this process cannot run VMs (`/dev/kvm` absent, hidden, or not
/// accessible), or `None` when it can open `/dev/kvm`.
pub fn kvm_unusable() -> Option<VmError> {
    open_kvm().err()
}

/// Explains why /dev/kvm could not be opened.
pub(super) fn kvm_open_error(e: kvm_ioctls::Error) -> VmError {
    match e.errno() {
        libc::ENOENT => VmError::NoKvm,
        libc::EACCES | libc::EPERM => VmError::KvmPermission(e),
        _ => VmError::Kvm {
            op: "open /dev/kvm",
            source: e,
        },
    }
}

/// Creates a VM with the in-kernel IOAPIC/PIC/LAPIC and PIT.
pub(super) fn create_vm(kvm: &Kvm) -> Result<VmFd, VmError> {
    let vm_fd = kvm.create_vm().map_err(kvm_err("create VM"))?;
    vm_fd
        .set_tss_address(KVM_TSS_ADDR as usize)
        .map_err(kvm_err("set TSS address"))?;
    vm_fd
        .set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
        .map_err(kvm_err("set identity map address"))?;
    vm_fd.create_irq_chip().map_err(kvm_err("create irqchip"))?;
    vm_fd
        .create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(kvm_err("create PIT"))?;
    Ok(vm_fd)
}

/// The CPUID KVM supports on this host.
pub(super) fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, VmError> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("get supported CPUID"))
}

/// A fingerprint of the host's CPU model and features as KVM offers them: a
/// snapshot taken on one CPU model must not be restored on another. Only
/// vendor, family/model/stepping and feature bits count: other leaves carry
/// per-CPU values (APIC IDs, topology) that differ between host CPUs.
pub(super) fn cpu_fingerprint(cpuid: &CpuId) -> u64 {
    let mut h = Sha256::new();
    for e in cpuid.as_slice() {
        let regs = match (e.function, e.index) {
            (0x0, _) => [e.eax, e.ebx, e.ecx, e.edx],
            // Family/model/stepping, features (not EBX: APIC ID and counts).
            (0x1, _) => [e.eax, 0, e.ecx, e.edx],
            (0x7, _) | (0x8000_0001, _) => [e.eax, e.ebx, e.ecx, e.edx],
            // XSAVE feature masks (not the sizes of subleaf 0's EBX).
            (0xd, 0) | (0xd, 1) => [e.eax, 0, 0, e.edx],
            _ => continue,
        };
        h.update(e.function.to_le_bytes());
        h.update(e.index.to_le_bytes());
        for r in regs {
            h.update(r.to_le_bytes());
        }
    }
    u64::from_le_bytes(h.finalize()[..8].try_into().unwrap_or([0; 8]))
}

const IRQCHIPS: [u32; 3] = [
    KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQCHIP_IOAPIC,
];

/// Captures the interrupt controllers, PIT and clock of a paused VM.
pub(super) fn save_state(vm_fd: &VmFd) -> Result<KvmVmState, VmError> {
    let mut irqchips = Vec::new();
    for chip_id in IRQCHIPS {
        let mut chip = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        vm_fd
            .get_irqchip(&mut chip)
            .map_err(kvm_err("get irqchip"))?;
        irqchips.push(chip);
    }
    Ok(KvmVmState {
        irqchips,
        pit: vm_fd.get_pit2().map_err(kvm_err("get PIT"))?,
        clock: vm_fd.get_clock().map_err(kvm_err("get clock"))?,
    })
}

/// Loads saved in-kernel device state into a fresh VM.
pub(super) fn restore_state(vm_fd: &VmFd, s: &KvmVmState) -> Result<(), VmError> {
    vm_fd.set_pit2(&s.pit).map_err(kvm_err("set PIT"))?;
    let mut clock = s.clock;
    // Only the clock value is settable; the flags describe the host.
    clock.flags = 0;
    vm_fd.set_clock(&clock).map_err(kvm_err("set clock"))?;
    if s.irqchips.len() != IRQCHIPS.len()
        || s.irqchips
            .iter()
            .zip(IRQCHIPS)
            .any(|(c, id)| c.chip_id != id)
    {
        return Err(VmError::SnapshotMismatch(
            "interrupt controller state is incomplete".into(),
        ));
    }
    for chip in &s.irqchips {
        vm_fd.set_irqchip(chip).map_err(kvm_err("set irqchip"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_open_errors_say_how_to_fix() {
        let e = kvm_open_error(kvm_ioctls::Error::new(libc::EACCES));
        assert!(e.to_string().contains("usermod -aG kvm"), "{e}");
        let e = kvm_open_error(kvm_ioctls::Error::new(libc::ENOENT));
        assert!(e.to_string().contains("no KVM"), "{e}");
        let e = kvm_open_error(kvm_ioctls::Error::new(libc::EIO));
        assert!(e.to_string().contains("open /dev/kvm"), "{e}");
    }

    #[test]
    fn fingerprint_changes_with_features() {
        let entry = |ecx| kvm_bindings::kvm_cpuid_entry2 {
            function: 1,
            ecx,
            ..Default::default()
        };
        let a = CpuId::from_entries(&[entry(1)]).unwrap();
        let b = CpuId::from_entries(&[entry(3)]).unwrap();
        assert_ne!(cpu_fingerprint(&a), cpu_fingerprint(&b));
        assert_eq!(cpu_fingerprint(&a), cpu_fingerprint(&a.clone()));
        // Per-CPU values (the APIC ID in leaf 1 EBX, topology leaves) do not count.
        let mut other_cpu = entry(1);
        other_cpu.ebx = 7 << 24;
        let topo = kvm_bindings::kvm_cpuid_entry2 {
            function: 0xb,
            edx: 5,
            ..Default::default()
        };
        let c = CpuId::from_entries(&[other_cpu, topo]).unwrap();
        assert_eq!(cpu_fingerprint(&a), cpu_fingerprint(&c));
    }
}
