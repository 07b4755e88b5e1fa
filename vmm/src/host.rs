//! What kind of KVM host we run on, and the guest command-line switches that
//! kind needs.
//!
//! On bare-metal KVM (and ordinary nested VMX/SVM) the guest kernel runs
//! unmodified. On hosts whose KVM is the `kvm_pvm` module running a guest
//! that is not PVM-aware, guest ring-0 code is instruction-emulated and some
//! instructions are missing from the emulator, and user-mode `syscall` jumps
//! to LSTAR without leaving ring 3. Our kernel carries a patch that turns
//! that into a proper system call when `syscall_trap` is on its command line
//! (see kernels/README.md); the other switches keep the kernel away from the
//! instructions the emulator lacks.

use std::path::Path;

/// The kind of KVM host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// Hardware-assisted KVM: guests run unmodified.
    Native,
    /// `kvm_pvm`: guest kernel code is emulated (see module docs).
    EmulatedKernel,
}

/// Features (by the kernel's `X86_FEATURE_*` number) hidden from the guest
/// kernel on [`HostKind::EmulatedKernel`] hosts, because ring-0 code would
/// otherwise use instructions the emulator lacks. Observed as emulation
/// failures: `popcnt` and `smap` (`clac`) on Intel hosts, `cx16` and
/// `popcnt` on AMD hosts; the rest are kept from the set proven on AMD (see
/// kernels/README.md for how each was found).
pub const CLEARCPUID: &[(u16, &str)] = &[
    (59, "rdtscp"),
    (141, "cx16"),
    (145, "pcid"),
    (150, "movbe"),
    (151, "popcnt"),
    (158, "rdrand"),
    (288, "fsgsbase"),
    (291, "bmi1"),
    (296, "bmi2"),
    (298, "invpcid"),
    (306, "rdseed"),
    (308, "smap"),
    (311, "clflushopt"),
    (312, "clwb"),
    (514, "umip"),
    (515, "pku"),
    (534, "rdpid"),
];

impl HostKind {
    /// Detects the host: `REFLOW_HOST_KIND=native|emulated` overrides;
    /// otherwise a loaded `kvm_pvm` module means an emulated guest kernel.
    pub fn detect() -> HostKind {
        match std::env::var("REFLOW_HOST_KIND").ok().as_deref() {
            Some("native") => return HostKind::Native,
            Some("emulated") => return HostKind::EmulatedKernel,
            _ => {}
        }
        Self::detect_from(Path::new("/sys/module"))
    }

    /// Detection against a given sysfs module directory (for tests).
    pub fn detect_from(sys_module: &Path) -> HostKind {
        if sys_module.join("kvm_pvm").exists() {
            HostKind::EmulatedKernel
        } else {
            HostKind::Native
        }
    }

    /// The kind in a few words, for progress lines.
    pub fn describe(self) -> &'static str {
        match self {
            HostKind::Native => "hardware-assisted KVM",
            HostKind::EmulatedKernel => "kvm_pvm, guest kernel emulated",
        }
    }

    /// Guest command-line switches this host needs.
    pub fn cmdline_switches(self) -> String {
        match self {
            HostKind::Native => String::new(),
            HostKind::EmulatedKernel => {
                let ids: Vec<String> = CLEARCPUID.iter().map(|(n, _)| n.to_string()).collect();
                format!("syscall_trap noxsave clearcpuid={}", ids.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_kvm_pvm_module() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(HostKind::detect_from(dir.path()), HostKind::Native);
        std::fs::create_dir(dir.path().join("kvm_pvm")).unwrap();
        assert_eq!(HostKind::detect_from(dir.path()), HostKind::EmulatedKernel);
    }

    #[test]
    fn switches() {
        assert_eq!(HostKind::Native.cmdline_switches(), "");
        let s = HostKind::EmulatedKernel.cmdline_switches();
        assert!(s.starts_with("syscall_trap noxsave clearcpuid=59,141,"));
        assert!(s.ends_with(",534"));
    }
}
