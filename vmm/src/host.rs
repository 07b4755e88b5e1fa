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
//! instructions the emulator lacks, and environment variables keep guest
//! user code off the AVX registers such a kernel cannot save (see
//! [`NO_AVX_ENV`]).

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

/// Environment for every guest process on [`HostKind::EmulatedKernel`]
/// hosts, passed on the kernel command line (the kernel hands unknown
/// `NAME=value` parameters to PID 1, the agent, whose children inherit
/// them). They keep user code off VEX instructions (AVX, AVX2, FMA, ...).
///
/// Why: such a guest kernel runs with `noxsave` and context-switches only
/// the x87/SSE state (`fxsave`), so the upper halves of the YMM registers
/// are shared by every process on a vCPU. Where user-mode CPUID is trapped
/// (Intel hosts, CPUID faulting) user code sees no `OSXSAVE` and never uses
/// AVX. Where it is not (AMD EPYC hosts) it reads the host's CPUID and
/// `XCR0`, so glibc's `memcpy`, numpy and Node's libraries used AVX, and a
/// process switched out in the middle of an AVX loop came back with
/// another's register halves: workers died of `SIGSEGV` during golden
/// warm-ups and numpy computed wrong limits at import. Limiting `XCR0` from
/// the guest kernel does not help (the hypervisor does not load a guest's
/// `XCR0` for its user code), so each library that picks its code by CPUID
/// is told not to pick AVX. What is left is V8's JIT code, which runs on
/// the worker's one thread and so has the registers to itself.
pub const NO_AVX_ENV: &[(&str, &str)] = &[
    // glibc's string and memory functions, in every process (the agent's
    // static glibc reads it too: PID 1 gets it from the kernel).
    (
        "GLIBC_TUNABLES",
        "glibc.cpu.hwcaps=-AVX,-AVX2,-FMA,-FMA4,-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,\
         -AVX512CD,-AVX_Fast_Unaligned_Load",
    ),
    // numpy's own dispatch (SSE4.2 is the most it then uses).
    (
        "NPY_DISABLE_CPU_FEATURES",
        "AVX,F16C,FMA3,AVX2,AVX512F,AVX512CD,AVX512_KNL,AVX512_KNM,AVX512_SKX,AVX512_CLX,\
         AVX512_CNL,AVX512_ICL",
    ),
    // The OpenBLAS numpy bundles: its SSE4.2 kernels.
    ("OPENBLAS_CORETYPE", "Nehalem"),
    // Node's OpenSSL: clear AVX, FMA and F16C (CPUID.1:ECX bits 28, 12 and
    // 29, at bit 32 + n) and AVX2, AVX-512, VAES and VPCLMULQDQ (CPUID.7:EBX
    // and ECX).
    ("OPENSSL_ia32cap", "~0x3000100000000000:~0x00000e42d0230020"),
    // Node's UTF-8 and JSON scanners: their SSE4.2 implementations.
    ("SIMDUTF_FORCE_IMPLEMENTATION", "westmere"),
    ("SIMDJSON_FORCE_IMPLEMENTATION", "westmere"),
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
                let env: Vec<String> = NO_AVX_ENV
                    .iter()
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect();
                format!(
                    "syscall_trap noxsave clearcpuid={} {}",
                    ids.join(","),
                    env.join(" ")
                )
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
        assert!(s.contains(",534 GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX,-AVX2,"));
        assert!(s.ends_with(" SIMDJSON_FORCE_IMPLEMENTATION=westmere"));
        // One kernel parameter each: no spaces or quotes inside, and a name
        // without dots (the kernel keeps dotted names for itself).
        for (name, value) in NO_AVX_ENV {
            assert!(!name.contains('.') && !name.contains('='), "{name}");
            assert!(!value.contains([' ', '"', '\t', '\n']), "{name}={value}");
        }
    }
}
