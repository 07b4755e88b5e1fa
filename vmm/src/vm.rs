//! A VM: KVM objects, memory, boot images, devices, vCPU threads and the
//! event loop that drives device I/O until the guest stops.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use crate::arch::layout::{
    EBDA_START, KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR, SERIAL_IRQ, VIRTIO_IRQ_BASE, VIRTIO_MMIO_SIZE,
    VIRTIO_MMIO_START, ZERO_PAGE_START,
};
use crate::arch::{bootparams, mptable};
use crate::config::{ConfigError, VmConfig, BASE_CMDLINE};
use crate::console::{AgentReady, ConsoleSink, ConsoleState, GuestEvent};
use crate::devices::bus::{lock, Bus, BusError};
use crate::devices::i8042::{I8042, I8042_BASE, I8042_LEN};
use crate::devices::serial::{SerialDevice, SerialInput, COM1_BASE, COM1_LEN};
use crate::devices::trigger::EventFdTrigger;
use crate::devices::virtio::block::BlockError;
use crate::devices::virtio::mmio::REG_QUEUE_NOTIFY;
use crate::devices::virtio::{Block, MmioTransport};
use crate::host::HostKind;
use crate::loader::{self, LoaderError};
use crate::memory::{self, MemoryError};
use crate::vcpu::exit::{ExitBus, StopReason};
use crate::vcpu::{self, Vcpu, VcpuError};

/// Errors building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "/dev/kvm does not exist: this machine has no KVM (enable virtualization, load the \
         kvm_intel or kvm_amd module, or run on a host that exposes /dev/kvm)"
    )]
    NoKvm,
    #[error(
        "/dev/kvm is not accessible to this user ({0}): add the user to the owning group \
         (e.g. `sudo usermod -aG kvm $USER`, then log in again), or run as root"
    )]
    KvmPermission(kvm_ioctls::Error),
    #[error("KVM {op}: {source}")]
    Kvm {
        op: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    BootParams(#[from] bootparams::BootParamsError),
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    #[error("writing {what} into guest memory: {source}")]
    GuestWrite {
        what: &'static str,
        source: vm_memory::GuestMemoryError,
    },
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("creating an eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("event loop: {0:?}")]
    EventManager(event_manager::Error),
    #[error("installing the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
    #[error("starting vCPU thread {id}: {source}")]
    Thread { id: u8, source: std::io::Error },
}

fn kvm_err(op: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { op, source }
}

/// Where the guest console goes and what the caller hears about the guest.
pub struct VmIo {
    /// Receives everything the guest prints on its serial console.
    pub console: Box<dyn Write + Send>,
    /// Bytes read from here are typed into the guest's console.
    pub input: Option<OwnedFd>,
    /// Receives agent lines and panics as they happen.
    pub events: Option<Sender<GuestEvent>>,
}

impl VmIo {
    /// Console to `out`, no input, no events.
    pub fn console(out: Box<dyn Write + Send>) -> VmIo {
        VmIo {
            console: out,
            input: None,
            events: None,
        }
    }
}

/// How a VM ended.
#[derive(Debug, Clone)]
pub struct VmOutcome {
    /// Why the vCPUs stopped.
    pub stop: StopReason,
    /// When the agent said it was ready, if it did.
    pub ready: Option<AgentReady>,
    /// The status the agent reported before powering off.
    pub agent_exit_status: Option<i32>,
    /// The kernel's panic line, if it panicked.
    pub kernel_panic: Option<String>,
    /// The last console lines.
    pub console_tail: Vec<String>,
    /// Host time from `run` to the stop.
    pub elapsed: Duration,
}

/// Exit codes of [`VmOutcome::exit_code`] that are not the guest's own.
pub const EXIT_KERNEL_PANIC: i32 = 70;
pub const EXIT_GUEST_CRASH: i32 = 71;
pub const EXIT_MONITOR_ERROR: i32 = 72;
pub const EXIT_TIMEOUT: i32 = 124;

impl VmOutcome {
    /// The process exit code for this outcome: the agent's reported status
    /// when the guest powered off cleanly; 0 for a reset without a status
    /// (a plain `reboot`); otherwise one of the `EXIT_*` codes.
    pub fn exit_code(&self) -> i32 {
        if self.kernel_panic.is_some() {
            return EXIT_KERNEL_PANIC;
        }
        match &self.stop {
            StopReason::Reset | StopReason::PowerOff => {
                self.agent_exit_status.map_or(0, |s| s.clamp(0, 255))
            }
            StopReason::GuestCrash(_) => EXIT_GUEST_CRASH,
            StopReason::Timeout => EXIT_TIMEOUT,
            StopReason::Stopped => 0,
            StopReason::Fatal(_) => EXIT_MONITOR_ERROR,
        }
    }
}

/// The port-I/O and MMIO buses, shared by all vCPU threads.
struct Buses {
    pio: Bus,
    mmio: Bus,
}

impl ExitBus for Buses {
    fn pio(&self) -> &Bus {
        &self.pio
    }
    fn mmio(&self) -> &Bus {
        &self.mmio
    }
}

/// Wakes the event loop when a vCPU stops or the host asks to stop.
struct Wake(Arc<EventFd>);

impl MutEventSubscriber for Wake {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.0.as_ref(), EventSet::IN)) {
            tracing::error!(error = ?e, "cannot watch the wake eventfd");
        }
    }
    fn process(&mut self, _: Events, _: &mut EventOps) {
        let _ = self.0.read();
    }
}

/// Runs a virtio device's queues when the guest notifies them.
struct QueueNotifier {
    transport: Arc<Mutex<MmioTransport>>,
    evts: Vec<EventFd>,
}

impl MutEventSubscriber for QueueNotifier {
    fn init(&mut self, ops: &mut EventOps) {
        for (i, evt) in (0u32..).zip(&self.evts) {
            if let Err(e) = ops.add(Events::with_data(evt, i, EventSet::IN)) {
                tracing::error!(error = ?e, "cannot watch a virtio queue eventfd");
            }
        }
    }
    fn process(&mut self, events: Events, _: &mut EventOps) {
        let index = events.data() as usize;
        if let Some(evt) = self.evts.get(index) {
            let _ = evt.read();
            lock(&self.transport).process_queue(index);
        }
    }
}

/// Stops a running VM from another thread.
#[derive(Clone)]
pub struct StopHandle {
    requested: Arc<AtomicBool>,
    wake: Arc<EventFd>,
}

impl StopHandle {
    /// Asks the VM to stop; `run` returns with [`StopReason::Stopped`].
    pub fn stop(&self) {
        self.requested.store(true, Ordering::SeqCst);
        let _ = self.wake.write(1);
    }
}

type Subscriber = Box<dyn MutEventSubscriber + Send>;

/// A VM ready to run.
pub struct Vm {
    config: VmConfig,
    // Kept alive for the VM's lifetime: KVM objects and guest RAM.
    _kvm: Kvm,
    _vm_fd: VmFd,
    _mem: GuestMemoryMmap,
    vcpus: Vec<Vcpu>,
    buses: Arc<Buses>,
    events: EventManager<Subscriber>,
    console: Arc<Mutex<ConsoleState>>,
    wake: Arc<EventFd>,
    stop_requested: Arc<AtomicBool>,
    cmdline: String,
    host: HostKind,
    started: Instant,
}

fn eventfd() -> Result<EventFd, VmError> {
    EventFd::new(libc::EFD_NONBLOCK).map_err(VmError::EventFd)
}

fn open_kvm() -> Result<Kvm, VmError> {
    Kvm::new().map_err(kvm_open_error)
}

/// Explains why /dev/kvm could not be opened.
fn kvm_open_error(e: kvm_ioctls::Error) -> VmError {
    match e.errno() {
        libc::ENOENT => VmError::NoKvm,
        libc::EACCES | libc::EPERM => VmError::KvmPermission(e),
        _ => VmError::Kvm {
            op: "open /dev/kvm",
            source: e,
        },
    }
}

impl Vm {
    /// Creates the VM, loads the kernel and initrd, and sets up devices and
    /// vCPUs. Nothing runs until [`Vm::run`].
    pub fn new(config: VmConfig, io: VmIo) -> Result<Vm, VmError> {
        config.validate()?;
        let started = Instant::now();
        let host = config.host.unwrap_or_else(HostKind::detect);
        let kvm = open_kvm()?;
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

        let mem_size = u64::from(config.mem_mib) << 20;
        let mem = memory::create(mem_size)?;
        memory::register(&vm_fd, &mem)?;

        // Boot images.
        let kernel = loader::load_kernel(&mem, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(path) => Some(loader::load_initrd(&mem, path, kernel.end, mem_size)?),
            None => None,
        };
        let host_switches = host.cmdline_switches();
        let devices: Vec<String> = (0..config.disks.len() as u64)
            .map(|i| {
                format!(
                    "virtio_mmio.device=4K@{:#x}:{}",
                    VIRTIO_MMIO_START + i * VIRTIO_MMIO_SIZE,
                    VIRTIO_IRQ_BASE + i as u32
                )
            })
            .collect();
        let mut parts = vec![BASE_CMDLINE, host_switches.as_str()];
        parts.extend(devices.iter().map(String::as_str));
        parts.push(config.extra_cmdline.as_str());
        let cmdline = loader::build_cmdline(&parts)?;
        let cmdline_len = loader::write_cmdline(&mem, &cmdline)?;
        let params = bootparams::build(kernel.setup_header, mem_size, cmdline_len, initrd)?;
        mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
            .map_err(|source| VmError::GuestWrite {
                what: "zero page",
                source,
            })?;
        let mp = mptable::build(EBDA_START as u32, config.vcpus)?;
        mem.write_slice(&mp, GuestAddress(EBDA_START))
            .map_err(|source| VmError::GuestWrite {
                what: "MP table",
                source,
            })?;

        // Devices.
        let mut events = EventManager::<Subscriber>::new().map_err(VmError::EventManager)?;
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let serial_irq = eventfd()?;
        vm_fd
            .register_irqfd(&serial_irq, SERIAL_IRQ)
            .map_err(kvm_err("register serial irqfd"))?;
        let (sink, console) = ConsoleSink::new(io.console, io.events, started);
        let room = Arc::new(eventfd()?);
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            EventFdTrigger::new(serial_irq),
            sink,
            room.clone(),
        )));
        pio.insert(COM1_BASE, COM1_LEN, serial.clone())?;
        if let Some(input) = io.input {
            events.add_subscriber(Box::new(SerialInput::new(serial, input, room)));
        }
        pio.insert(I8042_BASE, I8042_LEN, Arc::new(Mutex::new(I8042::new())))?;
        for (i, path) in config.disks.iter().enumerate() {
            let base = VIRTIO_MMIO_START + i as u64 * VIRTIO_MMIO_SIZE;
            let irq = eventfd()?;
            vm_fd
                .register_irqfd(&irq, VIRTIO_IRQ_BASE + i as u32)
                .map_err(kvm_err("register virtio irqfd"))?;
            let block = Block::open(path, &format!("reflow-disk-{i}"))?;
            let transport =
                MmioTransport::new(Box::new(block), mem.clone(), EventFdTrigger::new(irq));
            let mut evts = Vec::new();
            for q in 0..transport.queue_count() as u32 {
                let evt = eventfd()?;
                vm_fd
                    .register_ioevent(&evt, &IoEventAddress::Mmio(base + REG_QUEUE_NOTIFY), q)
                    .map_err(kvm_err("register virtio ioeventfd"))?;
                evts.push(evt);
            }
            let transport = Arc::new(Mutex::new(transport));
            mmio.insert(base, VIRTIO_MMIO_SIZE, transport.clone())?;
            events.add_subscriber(Box::new(QueueNotifier { transport, evts }));
        }
        let wake = Arc::new(eventfd()?);
        events.add_subscriber(Box::new(Wake(wake.clone())));

        // vCPUs.
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("get supported CPUID"))?;
        let vcpus = (0..config.vcpus)
            .map(|id| Vcpu::new(&vm_fd, id, config.vcpus, &supported))
            .collect::<Result<Vec<_>, _>>()?;
        vcpus[0].configure_boot(&mem, kernel.entry)?;

        let cmdline = cmdline
            .as_cstring()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default();
        tracing::debug!(%cmdline, ?host, entry = kernel.entry, "VM ready to run");
        Ok(Vm {
            config,
            _kvm: kvm,
            _vm_fd: vm_fd,
            _mem: mem,
            vcpus,
            buses: Arc::new(Buses { pio, mmio }),
            events,
            console,
            wake,
            stop_requested: Arc::new(AtomicBool::new(false)),
            cmdline,
            host,
            started,
        })
    }

    /// The guest's kernel command line.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// The host kind the VM was configured for.
    pub fn host(&self) -> HostKind {
        self.host
    }

    /// A handle to stop the VM from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            requested: self.stop_requested.clone(),
            wake: self.wake.clone(),
        }
    }

    /// Runs the guest until it powers off, resets, crashes, times out or is
    /// stopped.
    pub fn run(mut self) -> Result<VmOutcome, VmError> {
        vcpu::install_kick_handler().map_err(VmError::Signal)?;
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<StopReason>();
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        for (id, vcpu) in (0u8..).zip(std::mem::take(&mut self.vcpus)) {
            let (buses, flag, tx, wake) = (
                self.buses.clone(),
                stop.clone(),
                tx.clone(),
                self.wake.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || {
                    let reason = vcpu.run(buses.as_ref(), &flag);
                    let _ = tx.send(reason);
                    let _ = wake.write(1);
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(source) => {
                    stop_vcpus(&stop, threads);
                    return Err(VmError::Thread { id, source });
                }
            }
        }
        let deadline = self.config.timeout.map(|t| started + t);
        let reason = loop {
            if let Err(e) = self.events.run_with_timeout(100) {
                stop_vcpus(&stop, threads);
                return Err(VmError::EventManager(e));
            }
            if let Ok(reason) = rx.try_recv() {
                break reason;
            }
            if self.stop_requested.load(Ordering::SeqCst) {
                break StopReason::Stopped;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break StopReason::Timeout;
            }
        };
        stop_vcpus(&stop, threads);
        let console = lock(&self.console).clone();
        let outcome = VmOutcome {
            stop: reason,
            ready: console.ready,
            agent_exit_status: console.exit_status,
            kernel_panic: console.panic,
            console_tail: console.tail.into_iter().collect(),
            elapsed: started.elapsed(),
        };
        tracing::debug!(?outcome.stop, elapsed = ?outcome.elapsed, since_create = ?self.started.elapsed(), "VM stopped");
        Ok(outcome)
    }
}

/// Stops every vCPU thread: sets the flag, then kicks each thread out of
/// KVM_RUN until it has finished (a kick can race with entering KVM_RUN, so
/// it is repeated).
fn stop_vcpus(stop: &AtomicBool, threads: Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::SeqCst);
    let give_up = Instant::now() + Duration::from_secs(5);
    for t in threads {
        while !t.is_finished() {
            if Instant::now() > give_up {
                tracing::error!("a vCPU thread did not stop; leaving it behind");
                break;
            }
            let _ = t.kill(vcpu::kick_signal());
            std::thread::sleep(Duration::from_millis(2));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(stop: StopReason, status: Option<i32>, panic: bool) -> VmOutcome {
        VmOutcome {
            stop,
            ready: None,
            agent_exit_status: status,
            kernel_panic: panic.then(|| "Kernel panic - not syncing".into()),
            console_tail: vec![],
            elapsed: Duration::ZERO,
        }
    }

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
    fn exit_codes() {
        assert_eq!(outcome(StopReason::Reset, Some(0), false).exit_code(), 0);
        assert_eq!(outcome(StopReason::Reset, Some(7), false).exit_code(), 7);
        assert_eq!(outcome(StopReason::Reset, Some(-1), false).exit_code(), 0);
        assert_eq!(
            outcome(StopReason::Reset, Some(300), false).exit_code(),
            255
        );
        assert_eq!(outcome(StopReason::Reset, None, false).exit_code(), 0);
        assert_eq!(
            outcome(StopReason::Reset, None, true).exit_code(),
            EXIT_KERNEL_PANIC
        );
        assert_eq!(
            outcome(StopReason::Timeout, None, false).exit_code(),
            EXIT_TIMEOUT
        );
        assert_eq!(
            outcome(StopReason::GuestCrash("x".into()), None, false).exit_code(),
            EXIT_GUEST_CRASH
        );
        assert_eq!(
            outcome(StopReason::Fatal("x".into()), None, false).exit_code(),
            EXIT_MONITOR_ERROR
        );
    }
}
