//! Everything a snapshot records besides guest RAM, as serde types.

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use serde::{Deserialize, Serialize};
use virtio_queue::QueueState;
use vm_superio::serial::SerialState;

/// `From` both ways between `$theirs` (another crate's state type, without
/// serde) and `$ours`, its serde mirror here, copying the fields by name
/// (the ones after `clone` cloned): between references (`&A <-> &B`) or
/// values (`A <-> B`).
macro_rules! mirror {
    (&$theirs:ident <-> &$ours:ident { $($f:ident),*; clone $($c:ident),* }) => {
        mirror!(@from &$theirs => $ours { $($f),*; $($c),* });
        mirror!(@from &$ours => $theirs { $($f),*; $($c),* });
    };
    ($theirs:ident <-> $ours:ident { $($f:ident),* }) => {
        mirror!(@from $theirs => $ours { $($f),*; });
        mirror!(@from $ours => $theirs { $($f),*; });
    };
    (@from $from:ty => $to:ident { $($f:ident),*; $($c:ident),* }) => {
        impl From<$from> for $to {
            fn from(s: $from) -> Self {
                $to { $($f: s.$f,)* $($c: s.$c.clone(),)* }
            }
        }
    };
}

/// One vCPU's architectural and KVM state.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    /// The vCPU's index.
    pub id: u8,
    /// The CPUID table the guest saw.
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// Multiprocessing state (runnable, halted, waiting for INIT or SIPI).
    pub mp_state: kvm_mp_state,
    /// General-purpose registers, RIP and RFLAGS.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers, EFER and the APIC
    /// base.
    pub sregs: kvm_sregs,
    /// FPU and vector register state (the XSAVE area).
    pub xsave: kvm_xsave,
    /// Extended control registers (XCR0).
    pub xcrs: kvm_xcrs,
    /// Debug registers DR0-DR3, DR6 and DR7.
    pub debug_regs: kvm_debugregs,
    /// The in-kernel local APIC's registers.
    pub lapic: kvm_lapic_state,
    /// The MSRs KVM let us read, with their values.
    pub msrs: Vec<kvm_msr_entry>,
    /// Pending exceptions, interrupts, NMIs and SMIs.
    pub vcpu_events: kvm_vcpu_events,
}

/// In-kernel VM devices: PIC (master, slave), IOAPIC, PIT, kvmclock.
#[derive(Clone, Serialize, Deserialize)]
pub struct KvmVmState {
    /// The PIC master, PIC slave and IOAPIC, in that order.
    pub irqchips: Vec<kvm_irqchip>,
    /// The in-kernel PIT (i8254).
    pub pit: kvm_pit_state2,
    /// The kvmclock (guest time) when the snapshot was taken.
    pub clock: kvm_clock_data,
}

/// The UART's registers and receive FIFO.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialSnapshot {
    /// Divisor latch, low byte (DLL).
    pub baud_divisor_low: u8,
    /// Divisor latch, high byte (DLM).
    pub baud_divisor_high: u8,
    /// Interrupt enable register (IER).
    pub interrupt_enable: u8,
    /// Interrupt identification register (IIR).
    pub interrupt_identification: u8,
    /// Line control register (LCR).
    pub line_control: u8,
    /// Line status register (LSR).
    pub line_status: u8,
    /// Modem control register (MCR).
    pub modem_control: u8,
    /// Modem status register (MSR).
    pub modem_status: u8,
    /// Scratch register (SCR).
    pub scratch: u8,
    /// Received bytes the guest has not read yet (the receive FIFO).
    pub in_buffer: Vec<u8>,
}

mirror!(&SerialState <-> &SerialSnapshot {
    baud_divisor_low, baud_divisor_high, interrupt_enable, interrupt_identification, line_control,
    line_status, modem_control, modem_status, scratch; clone in_buffer
});

/// A virtio queue's position and layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    /// Largest queue size the device allows.
    pub max_size: u16,
    /// Next available-ring index the device will read.
    pub next_avail: u16,
    /// Next used-ring index the device will write.
    pub next_used: u16,
    /// Whether `VIRTIO_RING_F_EVENT_IDX` was negotiated.
    pub event_idx_enabled: bool,
    /// Queue size the driver set.
    pub size: u16,
    /// Whether the driver marked the queue ready.
    pub ready: bool,
    /// Guest address of the descriptor table.
    pub desc_table: u64,
    /// Guest address of the available ring.
    pub avail_ring: u64,
    /// Guest address of the used ring.
    pub used_ring: u64,
}

mirror!(QueueState <-> QueueSnapshot {
    max_size, next_avail, next_used, event_idx_enabled, size, ready, desc_table, avail_ring,
    used_ring
});

/// A virtio-mmio transport's registers and queues.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportSnapshot {
    /// Virtio device ID (checked on restore).
    pub device_type: u32,
    /// Device status bits (`STATUS_*`).
    pub status: u32,
    /// The `DeviceFeaturesSel` register.
    pub device_features_sel: u32,
    /// The `DriverFeaturesSel` register.
    pub driver_features_sel: u32,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// The `QueueSel` register.
    pub queue_sel: u32,
    /// Pending interrupt causes (`InterruptStatus`).
    pub interrupt_status: u32,
    /// The `ConfigGeneration` register.
    pub config_generation: u32,
    /// The device's queues, in index order.
    pub queues: Vec<QueueSnapshot>,
    /// For block devices: the disk size in sectors, checked on restore.
    pub disk_sectors: u64,
}

/// Where one message ring's ends stood when a snapshot was taken: both
/// ends at one byte `offset` (the ring was empty), and the sequence number
/// of the next record.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    bitcode::Encode,
    bitcode::Decode,
)]
pub struct RingMark {
    /// The producer's head and the consumer's tail, in bytes.
    pub offset: u64,
    /// The next record's sequence number.
    pub sequence: u64,
}

impl From<reflow_ring::Position> for RingMark {
    fn from(p: reflow_ring::Position) -> RingMark {
        RingMark {
            offset: p.offset,
            sequence: p.sequence,
        }
    }
}

impl From<RingMark> for reflow_ring::Position {
    fn from(m: RingMark) -> reflow_ring::Position {
        reflow_ring::Position {
            offset: m.offset,
            sequence: m.sequence,
        }
    }
}

/// Where both message rings of the shared region stood.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    bitcode::Encode,
    bitcode::Decode,
)]
pub struct RingMarks {
    /// The host-to-guest ring.
    pub host_to_guest: RingMark,
    /// The guest-to-host ring.
    pub guest_to_host: RingMark,
}

/// The whole non-memory state of a paused VM.
#[derive(Serialize, Deserialize)]
pub struct SnapshotState {
    /// Guest RAM size in bytes (the memory file must match).
    pub mem_size: u64,
    /// Fingerprint of the host CPU features the VM was created with.
    pub cpu_fingerprint: u64,
    /// Host TSC frequency when the snapshot was taken.
    pub tsc_khz: u32,
    /// The guest's kernel command line (for reference and checks).
    pub cmdline: String,
    /// Each vCPU's state, in index order.
    pub vcpus: Vec<VcpuState>,
    /// The in-kernel interrupt controllers, PIT and clock.
    pub vm: KvmVmState,
    /// The UART (COM1).
    pub serial: SerialSnapshot,
    /// The disks' transports, in order.
    pub transports: Vec<TransportSnapshot>,
    /// The vsock device's transport (its connections are not kept: the
    /// restored guest is told to reset them).
    pub vsock: TransportSnapshot,
    /// Shared-memory region size in bytes (0: none) and guest address. Its
    /// contents are not kept: a restored region starts with empty rings,
    /// at [`SnapshotState::rings`].
    pub shm_size: u64,
    /// Guest physical address of the shared-memory region (0: none).
    pub shm_addr: u64,
    /// The memory file's digest ([`super::digest`]).
    pub memory_sha256: [u8; 32],
    /// Where the rings' ends stood (both at zero unless the guest had
    /// used them: a snapshot of a clone that loaded a script).
    pub rings: RingMarks,
}
