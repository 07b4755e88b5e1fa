//! The shape of an actor's VM: guest memory, vCPUs and the CPU time it may
//! use. Each runtime has one; an actor may ask for another
//! ([`ShapeOverrides`] in its [`crate::Script`]), which the bridge serves
//! from a pool of its own, cloned from a golden snapshot of that memory
//! size and vCPU count (a CPU share alone reuses the runtime's snapshot).

use std::fmt;

use crate::sandbox::{IsolationKind, VmSpec};

/// Guest memory a VM may have, MiB (reflow.yaml's `memory` keys and a
/// graph node's `memoryMb`).
pub const MEMORY_MIB: std::ops::RangeInclusive<u32> = 64..=3072;
/// Most vCPUs a sandbox VM may have (the monitor's limit).
pub const MAX_VCPUS: u8 = reflow_vmm::arch::layout::MAX_VCPUS;

/// One VM shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VmShape {
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// Number of virtual CPUs.
    pub vcpus: u8,
    /// CPU time the VM may use, in CPUs; `None`: unlimited.
    pub cpu: Option<f64>,
    /// A VM, or a jailed host process (given the memory and CPU limits).
    pub isolation: IsolationKind,
}

impl VmShape {
    /// The shape of the clones of `spec`.
    pub fn of(spec: &VmSpec) -> VmShape {
        VmShape {
            mem_mib: spec.config.mem_mib,
            vcpus: spec.config.vcpus,
            cpu: spec.cpu,
            isolation: spec.isolation.kind(),
        }
    }

    /// This shape with `o`'s set parts in their place.
    pub fn with(self, o: &ShapeOverrides) -> VmShape {
        VmShape {
            mem_mib: o.mem_mib.unwrap_or(self.mem_mib),
            vcpus: o.vcpus.unwrap_or(self.vcpus),
            cpu: o.cpu.or(self.cpu),
            isolation: o.isolation.unwrap_or(self.isolation),
        }
    }

    /// Whether `self` and `other` are served by the same pool: the same
    /// memory and vCPUs, and CPU shares equal to a thousandth of a CPU.
    pub fn same(&self, other: &VmShape) -> bool {
        let millis = |c: Option<f64>| c.map(|c| (c * 1000.0).round() as u64);
        self.mem_mib == other.mem_mib
            && self.vcpus == other.vcpus
            && millis(self.cpu) == millis(other.cpu)
            && self.isolation == other.isolation
    }
}

impl fmt::Display for VmShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} MiB, {} vCPU", self.mem_mib, self.vcpus)?;
        if self.vcpus != 1 {
            f.write_str("s")?;
        }
        match self.cpu {
            Some(cpu) => write!(f, ", {cpu} CPU")?,
            None => f.write_str(", unlimited CPU")?,
        }
        match self.isolation {
            IsolationKind::Vm => Ok(()),
            IsolationKind::Process => f.write_str(", process"),
        }
    }
}

/// Parts of a shape an actor sets over its runtime's (`None`: the
/// runtime's).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ShapeOverrides {
    /// Replaces [`VmShape::mem_mib`] when set.
    pub mem_mib: Option<u32>,
    /// Replaces [`VmShape::vcpus`] when set.
    pub vcpus: Option<u8>,
    /// Replaces [`VmShape::cpu`] when set (a limit; an override cannot
    /// remove the runtime's limit).
    pub cpu: Option<f64>,
    /// Replaces [`VmShape::isolation`] when set.
    pub isolation: Option<IsolationKind>,
}

impl ShapeOverrides {
    /// These overrides under `over` (whose set parts win).
    pub fn then(&self, over: &ShapeOverrides) -> ShapeOverrides {
        ShapeOverrides {
            mem_mib: over.mem_mib.or(self.mem_mib),
            vcpus: over.vcpus.or(self.vcpus),
            cpu: over.cpu.or(self.cpu),
            isolation: over.isolation.or(self.isolation),
        }
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == ShapeOverrides::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: VmShape = VmShape {
        mem_mib: 256,
        vcpus: 1,
        cpu: None,
        isolation: IsolationKind::Vm,
    };

    #[test]
    fn overrides_replace_only_what_they_set() {
        let o = ShapeOverrides {
            mem_mib: Some(512),
            ..Default::default()
        };
        assert_eq!(
            BASE.with(&o),
            VmShape {
                mem_mib: 512,
                ..BASE
            }
        );
        assert_eq!(BASE.with(&ShapeOverrides::default()), BASE);
        let cpu = ShapeOverrides {
            cpu: Some(0.5),
            ..Default::default()
        };
        assert_eq!(o.then(&cpu).mem_mib, Some(512));
        assert_eq!(o.then(&cpu).cpu, Some(0.5));
        let less = ShapeOverrides {
            mem_mib: Some(128),
            ..Default::default()
        };
        assert_eq!(o.then(&less).mem_mib, Some(128));
        assert!(ShapeOverrides::default().is_empty() && !o.is_empty());
        let process = ShapeOverrides {
            isolation: Some(IsolationKind::Process),
            ..Default::default()
        };
        assert_eq!(BASE.with(&process).isolation, IsolationKind::Process);
        assert_eq!(BASE.with(&process).mem_mib, BASE.mem_mib);
        assert_eq!(o.then(&process).isolation, Some(IsolationKind::Process));
        assert!(!process.is_empty());
    }

    #[test]
    fn shapes_match_to_a_thousandth_of_a_cpu() {
        let a = VmShape {
            cpu: Some(0.5),
            ..BASE
        };
        let b = VmShape {
            cpu: Some(0.5000001),
            ..BASE
        };
        assert!(a.same(&b));
        assert!(!a.same(&BASE));
        assert!(!a.same(&VmShape { vcpus: 2, ..a }));
        assert!(!BASE.same(&VmShape {
            mem_mib: 257,
            ..BASE
        }));
        assert_eq!(a.to_string(), "256 MiB, 1 vCPU, 0.5 CPU");
        assert_eq!(
            VmShape { vcpus: 2, ..BASE }.to_string(),
            "256 MiB, 2 vCPUs, unlimited CPU"
        );
        // A process worker's pool is not a VM pool of the same size.
        let process = VmShape {
            isolation: IsolationKind::Process,
            ..BASE
        };
        assert!(!process.same(&BASE));
        assert_eq!(
            process.to_string(),
            "256 MiB, 1 vCPU, unlimited CPU, process"
        );
    }
}
