//! Saving and restoring one vCPU's state for snapshots.

use kvm_bindings::{kvm_msr_entry, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES, KVM_MAX_MSR_ENTRIES};

use super::{Vcpu, VcpuError};
use crate::snapshot::state::VcpuState;

/// Reads every MSR of `indices` that KVM lets us read; MSRs it refuses are
/// skipped (KVM reports them but not every host implements every one).
fn read_msrs(vcpu: &Vcpu, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, VcpuError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest: Vec<u32> = indices.to_vec();
    while !rest.is_empty() {
        let chunk: Vec<kvm_msr_entry> = rest
            .iter()
            .take(KVM_MAX_MSR_ENTRIES)
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&chunk).map_err(|_| vcpu.err_msg("MSR list too long"))?;
        let n = vcpu.fd.get_msrs(&mut msrs).map_err(vcpu.kvm("get MSRs"))?;
        out.extend_from_slice(&msrs.as_slice()[..n]);
        let consumed = if n < chunk.len() {
            tracing::debug!(
                msr = format_args!("{:#x}", chunk[n].index),
                "MSR not readable; skipped"
            );
            n + 1
        } else {
            n
        };
        rest.drain(..consumed);
    }
    Ok(out)
}

impl Vcpu {
    fn kvm(&self, op: &'static str) -> impl Fn(kvm_ioctls::Error) -> VcpuError {
        let id = self.id;
        move |source| VcpuError::Kvm { id, op, source }
    }

    fn err_msg(&self, msg: &'static str) -> VcpuError {
        VcpuError::State { id: self.id, msg }
    }

    /// Captures the vCPU's state. The vCPU must not be running.
    pub fn save_state(&self, msr_indices: &[u32]) -> Result<VcpuState, VcpuError> {
        let fd = &self.fd;
        Ok(VcpuState {
            id: self.id,
            cpuid: fd
                .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
                .map_err(self.kvm("get CPUID"))?
                .as_slice()
                .to_vec(),
            mp_state: fd.get_mp_state().map_err(self.kvm("get MP state"))?,
            regs: fd.get_regs().map_err(self.kvm("get regs"))?,
            sregs: fd.get_sregs().map_err(self.kvm("get sregs"))?,
            xsave: fd.get_xsave().map_err(self.kvm("get XSAVE"))?,
            xcrs: fd.get_xcrs().map_err(self.kvm("get XCRs"))?,
            debug_regs: fd.get_debug_regs().map_err(self.kvm("get debug regs"))?,
            lapic: fd.get_lapic().map_err(self.kvm("get LAPIC"))?,
            msrs: read_msrs(self, msr_indices)?,
            vcpu_events: fd.get_vcpu_events().map_err(self.kvm("get vCPU events"))?,
        })
    }

    /// Loads a saved state into this (fresh) vCPU, in the order KVM needs:
    /// CPUID first, events last.
    pub fn restore_state(&self, s: &VcpuState) -> Result<(), VcpuError> {
        let fd = &self.fd;
        let cpuid =
            CpuId::from_entries(&s.cpuid).map_err(|_| self.err_msg("CPUID list too long"))?;
        fd.set_cpuid2(&cpuid).map_err(self.kvm("set CPUID"))?;
        fd.set_mp_state(s.mp_state)
            .map_err(self.kvm("set MP state"))?;
        fd.set_regs(&s.regs).map_err(self.kvm("set regs"))?;
        fd.set_sregs(&s.sregs).map_err(self.kvm("set sregs"))?;
        // SAFETY: `s.xsave` is a full kvm_xsave buffer (4 KiB) that KVM
        // produced with KVM_GET_XSAVE; the kernel reads within it.
        unsafe { fd.set_xsave(&s.xsave) }.map_err(self.kvm("set XSAVE"))?;
        fd.set_xcrs(&s.xcrs).map_err(self.kvm("set XCRs"))?;
        fd.set_debug_regs(&s.debug_regs)
            .map_err(self.kvm("set debug regs"))?;
        fd.set_lapic(&s.lapic).map_err(self.kvm("set LAPIC"))?;
        for chunk in s.msrs.chunks(KVM_MAX_MSR_ENTRIES) {
            let msrs = Msrs::from_entries(chunk).map_err(|_| self.err_msg("MSR list too long"))?;
            let n = fd.set_msrs(&msrs).map_err(self.kvm("set MSRs"))?;
            if n != chunk.len() {
                return Err(VcpuError::MsrRestore {
                    id: self.id,
                    index: chunk[n].index,
                });
            }
        }
        fd.set_vcpu_events(&s.vcpu_events)
            .map_err(self.kvm("set vCPU events"))?;
        Ok(())
    }
}

impl Vcpu {
    /// Sets the guest TSC frequency to the snapshot's when this host's
    /// differs (0: unknown, left alone). A failure is logged: the guest then
    /// sees a TSC running at another rate, which kvmclock tolerates.
    pub fn match_tsc_khz(&self, khz: u32) {
        if khz == 0 {
            return;
        }
        match self.fd.get_tsc_khz() {
            Ok(current) if current == khz => {}
            _ => {
                if let Err(e) = self.fd.set_tsc_khz(khz) {
                    tracing::warn!(id = self.id, khz, error = %e, "cannot set the snapshot's TSC frequency");
                }
            }
        }
    }

    /// The vCPU's TSC frequency, 0 if KVM cannot tell.
    pub fn tsc_khz(&self) -> u32 {
        self.fd.get_tsc_khz().unwrap_or(0)
    }
}
