//! The host CPU a snapshot was taken on, as CPUID tells it.
//!
//! A snapshot holds vCPU state (CPUID the guest kernel has read, MSRs, the
//! TSC frequency, FPU state) that is only good on a CPU like the one it was
//! taken on: the guest kernel picked code paths for that CPU's features at
//! boot. Machines of one kind come with Intel or AMD CPUs by draw, so the
//! golden-snapshot cache key carries this fingerprint: a cache moved to (or
//! shared with) a host with another CPU builds its own goldens instead of
//! restoring state its guests cannot run on.

/// One CPUID answer: `(eax, ebx, ecx, edx)`.
pub type Regs = (u32, u32, u32, u32);

/// The CPU's maker, from leaf 0's vendor string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vendor {
    /// "GenuineIntel".
    Intel,
    /// "AuthenticAMD".
    Amd,
    /// Any other vendor string, as the CPU reports it.
    Other(String),
}

impl std::fmt::Display for Vendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Vendor::Intel => f.write_str("Intel"),
            Vendor::Amd => f.write_str("AMD"),
            Vendor::Other(s) => write!(f, "{s:?}"),
        }
    }
}

/// What identifies a host CPU for snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFingerprint {
    /// Who made the CPU.
    pub vendor: Vendor,
    /// Leaf 1 EAX: family, model and stepping as encoded there.
    pub signature: u32,
    /// Feature words: leaf 1 ECX and EDX, leaf 7.0 EBX, ECX and EDX, leaf
    /// 0x8000_0001 ECX and EDX (zero where the leaf is absent).
    pub features: [u32; 7],
}

const LEAF_VENDOR: u32 = 0;
const LEAF_FEATURES: u32 = 1;
const LEAF_EXTENDED_FEATURES: u32 = 7;
const LEAF_EXT_MAX: u32 = 0x8000_0000;
const LEAF_EXT_FEATURES: u32 = 0x8000_0001;
/// Leaf 1 ECX bit 27 (OSXSAVE) reflects the host kernel's setting, not the
/// CPU; leave it out.
const ECX_OSXSAVE: u32 = 1 << 27;

impl CpuFingerprint {
    /// The CPU this process runs on.
    pub fn detect() -> CpuFingerprint {
        CpuFingerprint::from_cpuid(|leaf, subleaf| {
            let r = std::arch::x86_64::__cpuid_count(leaf, subleaf);
            (r.eax, r.ebx, r.ecx, r.edx)
        })
    }

    /// The fingerprint from a CPUID function (recorded answers in tests).
    pub fn from_cpuid(cpuid: impl Fn(u32, u32) -> Regs) -> CpuFingerprint {
        let (max_leaf, b, c, d) = cpuid(LEAF_VENDOR, 0);
        let mut name = Vec::with_capacity(12);
        for word in [b, d, c] {
            name.extend(word.to_le_bytes());
        }
        let vendor = match &name[..] {
            b"GenuineIntel" => Vendor::Intel,
            b"AuthenticAMD" => Vendor::Amd,
            other => Vendor::Other(String::from_utf8_lossy(other).into_owned()),
        };
        let leaf = |n: u32| {
            let max = if n >= LEAF_EXT_MAX {
                cpuid(LEAF_EXT_MAX, 0).0
            } else {
                max_leaf
            };
            if n <= max {
                cpuid(n, 0)
            } else {
                (0, 0, 0, 0)
            }
        };
        let (signature, _, c1, d1) = leaf(LEAF_FEATURES);
        let (_, b7, c7, d7) = leaf(LEAF_EXTENDED_FEATURES);
        let (_, _, ce, de) = leaf(LEAF_EXT_FEATURES);
        CpuFingerprint {
            vendor,
            signature,
            features: [c1 & !ECX_OSXSAVE, d1, b7, c7, d7, ce, de],
        }
    }

    /// Family, model and stepping, decoded as the SDM and APM say.
    pub fn family_model_stepping(&self) -> (u32, u32, u32) {
        let s = self.signature;
        let base_family = (s >> 8) & 0xf;
        let family = if base_family == 0xf {
            base_family + ((s >> 20) & 0xff)
        } else {
            base_family
        };
        let model = if base_family == 0x6 || base_family == 0xf {
            ((s >> 12) & 0xf0) | ((s >> 4) & 0xf)
        } else {
            (s >> 4) & 0xf
        };
        (family, model, s & 0xf)
    }

    /// The fingerprint as it goes into a cache key.
    pub fn key(&self) -> String {
        let features: Vec<String> = self.features.iter().map(|w| format!("{w:08x}")).collect();
        let vendor = match &self.vendor {
            Vendor::Other(s) => s.clone(),
            v => v.to_string(),
        };
        format!("{vendor}/{:08x}/{}", self.signature, features.join("."))
    }
}

impl std::fmt::Display for CpuFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (family, model, stepping) = self.family_model_stepping();
        write!(
            f,
            "{} family {family:#x} model {model:#x} stepping {stepping}",
            self.vendor
        )
    }
}

#[cfg(test)]
#[path = "host_cpu_tests.rs"]
mod tests;
