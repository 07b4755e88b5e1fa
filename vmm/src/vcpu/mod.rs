//! vCPUs: creation, boot state, and the run loop on their own threads.

pub mod exit;
pub mod gate;
pub mod state;

use std::sync::atomic::{AtomicBool, Ordering};

use kvm_bindings::{kvm_lapic_state, CpuId};
use kvm_ioctls::{VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

use crate::arch::{cpuid, msr, regs};
use exit::{handle_exit, ExitAction, ExitBus, StopReason};

/// Errors creating or configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A KVM vCPU ioctl failed.
    #[error("vCPU {id}: {op}: {source}")]
    Kvm {
        /// The vCPU's index.
        id: u8,
        /// The operation (such as "set regs").
        op: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
    /// KVM set only some of the boot MSRs.
    #[error("vCPU {id}: KVM accepted only {set} of {wanted} boot MSRs")]
    Msrs {
        /// The vCPU's index.
        id: u8,
        /// MSRs KVM set.
        set: usize,
        /// MSRs we asked it to set.
        wanted: usize,
    },
    /// Writing the boot page tables, GDT or IDT failed.
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    /// A saved or restored CPUID or MSR list is longer than KVM takes.
    #[error("vCPU {id}: {msg}")]
    State {
        /// The vCPU's index.
        id: u8,
        /// What is wrong.
        msg: &'static str,
    },
    /// KVM refused an MSR from the snapshot.
    #[error("vCPU {id}: KVM refused to restore MSR {index:#x} from the snapshot")]
    MsrRestore {
        /// The vCPU's index.
        id: u8,
        /// The MSR's index.
        index: u32,
    },
}

const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let b = &lapic.regs[offset..offset + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, b) in value.to_le_bytes().into_iter().enumerate() {
        lapic.regs[offset + i] = b as _;
    }
}

/// Sets an LVT entry's delivery mode (bits 8-10).
fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// One vCPU.
pub struct Vcpu {
    fd: VcpuFd,
    id: u8,
}

impl Vcpu {
    /// Creates vCPU `id` of `count` with CPUID derived from `supported`.
    pub fn new(vm: &VmFd, id: u8, count: u8, supported: &CpuId) -> Result<Vcpu, VcpuError> {
        let kvm = |op| move |source| VcpuError::Kvm { id, op, source };
        let fd = vm.create_vcpu(u64::from(id)).map_err(kvm("create"))?;
        let mut cpuid = supported.clone();
        cpuid::patch_for_vcpu(cpuid.as_mut_slice(), id, count);
        fd.set_cpuid2(&cpuid).map_err(kvm("set CPUID"))?;
        let msrs = msr::boot_msrs();
        let set = fd.set_msrs(&msrs).map_err(kvm("set MSRs"))?;
        if set != msrs.as_slice().len() {
            return Err(VcpuError::Msrs {
                id,
                set,
                wanted: msrs.as_slice().len(),
            });
        }
        let mut lapic = fd.get_lapic().map_err(kvm("get LAPIC"))?;
        let lint0 = with_delivery_mode(lapic_reg(&lapic, APIC_LVT_LINT0), APIC_MODE_EXTINT);
        let lint1 = with_delivery_mode(lapic_reg(&lapic, APIC_LVT_LINT1), APIC_MODE_NMI);
        set_lapic_reg(&mut lapic, APIC_LVT_LINT0, lint0);
        set_lapic_reg(&mut lapic, APIC_LVT_LINT1, lint1);
        fd.set_lapic(&lapic).map_err(kvm("set LAPIC"))?;
        fd.set_fpu(&regs::boot_fpu()).map_err(kvm("set FPU"))?;
        Ok(Vcpu { fd, id })
    }

    /// Points the boot vCPU at the kernel entry in long mode. Application
    /// processors stay in their reset state until the guest wakes them.
    pub fn configure_boot(&self, mem: &GuestMemoryMmap, entry: u64) -> Result<(), VcpuError> {
        let id = self.id;
        let kvm = |op| move |source| VcpuError::Kvm { id, op, source };
        regs::write_gdt_idt(mem)?;
        regs::write_page_tables(mem)?;
        let sregs = self.fd.get_sregs().map_err(kvm("get sregs"))?;
        self.fd
            .set_sregs(&regs::boot_sregs(sregs))
            .map_err(kvm("set sregs"))?;
        self.fd
            .set_regs(&regs::boot_regs(entry))
            .map_err(kvm("set regs"))?;
        Ok(())
    }

    /// Runs until an exit stops the VM or `stop` is set (the host kicks the
    /// thread with a signal so a blocked KVM_RUN returns).
    pub fn run(&mut self, bus: &impl ExitBus, stop: &AtomicBool, gate: &gate::Gate) -> StopReason {
        loop {
            gate.pass(stop);
            if stop.load(Ordering::SeqCst) {
                self.complete_pending_io();
                return StopReason::Stopped;
            }
            match self.fd.run() {
                Ok(exit) => {
                    let internal = matches!(exit, kvm_ioctls::VcpuExit::InternalError);
                    if let ExitAction::Stop(reason) = handle_exit(exit.into(), bus) {
                        if internal {
                            return StopReason::Fatal(self.internal_error_detail());
                        }
                        return reason;
                    }
                }
                Err(e) if matches!(e.errno(), libc::EINTR | libc::EAGAIN) => {}
                Err(e) => return StopReason::Fatal(format!("vCPU {}: KVM_RUN: {e}", self.id)),
            }
        }
    }
}

impl Vcpu {
    /// Describes a KVM internal error (usually an instruction its emulator
    /// lacks): suberror, KVM's data words (for emulation failures these
    /// carry the instruction bytes) and the guest RIP.
    fn internal_error_detail(&mut self) -> String {
        let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(0);
        let run = self.fd.get_kvm_run();
        // SAFETY: the last exit was KVM_EXIT_INTERNAL_ERROR, so `internal`
        // is the union member KVM filled in.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        format!(
            "vCPU {}: KVM internal error (suberror {}, data {:x?}) at guest RIP {rip:#x}: \
             an instruction KVM could not emulate?",
            self.id,
            internal.suberror,
            &internal.data[..n]
        )
    }

    /// Lets KVM finish an emulated instruction whose I/O we already handled
    /// (an `in` or MMIO read's result is written to the guest registers on
    /// the next KVM_RUN): enter with `immediate_exit` set, which returns at
    /// once. Without this a paused vCPU's state would miss the result.
    fn complete_pending_io(&mut self) {
        self.fd.set_kvm_immediate_exit(1);
        match self.fd.run() {
            Err(e) if e.errno() == libc::EINTR => {}
            Err(e) => tracing::debug!(id = self.id, error = %e, "completing pending I/O"),
            Ok(exit) => {
                tracing::debug!(id = self.id, ?exit, "unexpected exit while completing I/O")
            }
        }
        self.fd.set_kvm_immediate_exit(0);
    }

    /// This vCPU's index.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Creates vCPU `id` without boot state, for restoring a snapshot into.
    pub fn new_for_restore(vm: &VmFd, id: u8) -> Result<Vcpu, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(|source| VcpuError::Kvm {
                id,
                op: "create",
                source,
            })?;
        Ok(Vcpu { fd, id })
    }
}

/// The signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn noop_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler once per process: the signal only has to
/// interrupt KVM_RUN.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    static INSTALLED: std::sync::OnceLock<Result<(), i32>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            vmm_sys_util::signal::register_signal_handler(kick_signal(), noop_handler)
                .map_err(|e| e.errno())
        })
        .map_err(vmm_sys_util::errno::Error::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_delivery_modes() {
        let mut l = kvm_lapic_state::default();
        set_lapic_reg(&mut l, APIC_LVT_LINT0, 0x0001_0000);
        let v = with_delivery_mode(lapic_reg(&l, APIC_LVT_LINT0), APIC_MODE_EXTINT);
        assert_eq!(v, 0x0001_0700);
        assert_eq!(with_delivery_mode(0x700, APIC_MODE_NMI), 0x400);
    }
}
