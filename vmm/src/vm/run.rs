//! Running a VM: vCPU threads, the event loop, stopping, pausing and taking
//! a snapshot of a paused VM.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use super::kvm::{self as vmkvm, kvm_err};
use super::snapshot_job::{self, SnapshotFiles, SnapshotJob};
use super::{Vm, VmError, VmOutcome};
use crate::cgroup::CpuGroup;
use crate::console::{AgentReady, ConsoleState};
use crate::seccomp::{self, ThreadKind};
use crate::snapshot::state::{RingMarks, SnapshotState};
use crate::snapshot::{file as snapfile, memory as snapmem, MEMORY_FILE, STATE_FILE};
use crate::vcpu::exit::StopReason;
use crate::vcpu::gate::Gate;
use crate::vcpu::{self, Vcpu};

/// Stops a running VM from another thread.
#[derive(Clone)]
pub struct StopHandle {
    requested: Arc<AtomicBool>,
    wake: Arc<EventFd>,
}

impl StopHandle {
    /// Asks the VM to stop; it ends with [`StopReason::Stopped`].
    pub fn stop(&self) {
        self.requested.store(true, Ordering::SeqCst);
        let _ = self.wake.write(1);
    }
}

/// A VM whose vCPUs are running. Drive it with [`RunningVm::wait`] (until
/// it stops) or [`RunningVm::wait_until`] (until a console condition).
pub struct RunningVm {
    vm: Vm,
    threads: Vec<JoinHandle<Vcpu>>,
    stopped: Receiver<StopReason>,
    stop: Arc<AtomicBool>,
    started: Instant,
}

/// A VM whose vCPUs are stopped with their state intact: it can be
/// snapshotted.
pub struct PausedVm {
    vm: Vm,
}

impl Vm {
    /// A handle to stop the VM from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            requested: self.stop_requested.clone(),
            wake: self.devices.wake.clone(),
        }
    }

    /// The gate that holds this VM's vCPUs out of the guest (see
    /// [`crate::vcpu::gate`]); usable from any thread while the VM runs.
    pub fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }

    /// Starts the vCPU threads, each under the vCPU seccomp filter
    /// ([`crate::seccomp`]).
    pub fn start(mut self) -> Result<RunningVm, VmError> {
        let seccomp_mode = seccomp::Mode::from_env()?;
        vcpu::install_kick_handler().map_err(VmError::Signal)?;
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<StopReason>();
        let mut threads = Vec::new();
        for mut vcpu in std::mem::take(&mut self.vcpus) {
            let id = vcpu.id();
            let (buses, flag, tx, wake, gate, group) = (
                self.devices.buses.clone(),
                stop.clone(),
                tx.clone(),
                self.devices.wake.clone(),
                self.gate.clone(),
                self.cpu_group.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || {
                    let joined = group.as_ref().map_or(Ok(()), |g| g.join_current_thread());
                    drop(group);
                    if let Err(e) = joined {
                        let _ = tx.send(StopReason::Fatal(format!(
                            "cannot join the VM's cgroup: {e}"
                        )));
                        let _ = wake.write(1);
                        return vcpu;
                    }
                    if let Err(e) = seccomp::install(ThreadKind::Vcpu, seccomp_mode) {
                        let _ = tx.send(StopReason::Fatal(e.to_string()));
                        let _ = wake.write(1);
                        return vcpu;
                    }
                    gate.enter();
                    let reason = vcpu.run(buses.as_ref(), &flag, &gate);
                    gate.leave();
                    let _ = tx.send(reason);
                    let _ = wake.write(1);
                    vcpu
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(source) => {
                    let _ = stop_vcpus(&stop, threads, &self.gate);
                    return Err(VmError::Thread { id, source });
                }
            }
        }
        // Console input may flow now that every vCPU (and its LAPIC) is live.
        let _ = self.devices.serial_room.write(1);
        Ok(RunningVm {
            vm: self,
            threads,
            stopped: rx,
            stop,
            started,
        })
    }

    /// Limits the CPU time of the VM's threads (vCPUs and the event loop
    /// of [`Vm::run`]) to `group`'s: each joins it as it starts. Keep a
    /// clone of the group and drop it after the VM's thread has ended (a
    /// group is removed when its last holder drops it, and the VM's own
    /// threads cannot remove it under their seccomp filters).
    pub fn confine_cpu(&mut self, group: Arc<CpuGroup>) {
        self.cpu_group = Some(group);
    }

    /// Runs the guest until it powers off, resets, crashes, times out or is
    /// stopped. The calling thread becomes the VM's event loop and takes
    /// the `vmm` seccomp filter for good: give it a thread of its own.
    pub fn run(self) -> Result<VmOutcome, VmError> {
        let mode = seccomp::Mode::from_env()?;
        if let Some(group) = &self.cpu_group {
            group
                .join_current_thread()
                .map_err(|e| VmError::Cgroup(e.to_string()))?;
        }
        let kind = match self.snapshots {
            Some(_) => ThreadKind::VmmSnapshot,
            None => ThreadKind::Vmm,
        };
        let running = self.start()?;
        if let Err(e) = seccomp::install(kind, mode) {
            running.finish(StopReason::Stopped);
            return Err(e.into());
        }
        running.wait()
    }
}

/// How often, at most milliseconds apart, [`RunningVm::wait_until`] asks
/// its console condition.
const CONSOLE_POLL_MS: i32 = 50;

impl RunningVm {
    /// A handle to stop the VM from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.vm.stop_handle()
    }

    /// Pumps device I/O until `done` holds for the console state (returns
    /// `None`) or the VM stops (returns why). `deadline` ends the wait with
    /// [`StopReason::Timeout`]; the VM's own timeout applies too.
    pub fn wait_until(
        &mut self,
        mut done: impl FnMut(&ConsoleState) -> bool,
        deadline: Option<Instant>,
    ) -> Result<Option<StopReason>, VmError> {
        self.pump(Some(&mut done), deadline)
    }

    /// The event loop: device events until `done` holds (asked every
    /// [`CONSOLE_POLL_MS`] at least: the vCPUs write the console) or the VM
    /// stops. Without `done` it sleeps until an event (a device, a stop
    /// request, a vCPU that ended: all ring the wake eventfd) or the
    /// deadline: an idle VM's event loop costs no wake-ups.
    fn pump(
        &mut self,
        mut done: Option<&mut dyn FnMut(&ConsoleState) -> bool>,
        deadline: Option<Instant>,
    ) -> Result<Option<StopReason>, VmError> {
        let vm_deadline = self.vm.config.timeout.map(|t| self.started + t);
        let deadline = match (deadline, vm_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        loop {
            let until_deadline = deadline.map(|d| {
                // Rounded up, so a wake-up is never a little early.
                let left = d.saturating_duration_since(Instant::now());
                left.as_millis().saturating_add(1).min(i32::MAX as u128) as i32
            });
            let timeout = match (&done, until_deadline) {
                (Some(_), Some(ms)) => ms.min(CONSOLE_POLL_MS),
                (Some(_), None) => CONSOLE_POLL_MS,
                (None, Some(ms)) => ms,
                (None, None) => -1,
            };
            self.vm
                .devices
                .events
                .run_with_timeout(timeout)
                .map_err(VmError::EventManager)?;
            if let Ok(reason) = self.stopped.try_recv() {
                return Ok(Some(reason));
            }
            if self.vm.stop_requested.load(Ordering::SeqCst) {
                return Ok(Some(StopReason::Stopped));
            }
            if let Some(done) = done.as_mut() {
                if done(&self.vm.devices.console.lock()) {
                    return Ok(None);
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Some(StopReason::Timeout));
            }
        }
    }

    /// Runs until the VM stops, then stops every vCPU and reports.
    pub fn wait(mut self) -> Result<VmOutcome, VmError> {
        let reason = match self.pump(None, None) {
            Ok(Some(reason)) => reason,
            Ok(None) => unreachable!("the condition never holds"),
            Err(e) => {
                let _ = stop_vcpus(&self.stop, std::mem::take(&mut self.threads), &self.vm.gate);
                return Err(e);
            }
        };
        let job = self.vm.snapshots.as_ref().and_then(snapshot_job::take);
        match job {
            Some(job) if reason == StopReason::Stopped => self.snapshot_and_end(job),
            _ => Ok(self.finish(reason)),
        }
    }

    /// Pauses, writes the snapshot `job` asks for, answers it, and reports
    /// the VM as stopped (a snapshot that failed is answered with why; the
    /// VM ends either way).
    fn snapshot_and_end(self, job: SnapshotJob) -> Result<VmOutcome, VmError> {
        let started = self.started;
        let paused = match self.pause() {
            Ok(p) => p,
            Err(e) => {
                job.answer(Err(e.to_string()));
                return Err(e);
            }
        };
        let SnapshotJob { files, rings, .. } = &job;
        let written = paused.write_into(files, *rings).map_err(|e| e.to_string());
        job.answer(written);
        Ok(outcome(&paused.vm, StopReason::Stopped, started))
    }

    /// When the agent was ready, if it was yet.
    pub fn ready(&self) -> Option<AgentReady> {
        self.vm.devices.console.lock().ready
    }

    /// Where the agent's control channel appears.
    pub fn control(&self) -> super::ControlHandle {
        self.vm.control()
    }

    /// The VM (for its accessors).
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// Stops every vCPU and reports the outcome with `reason`.
    pub fn finish(mut self, reason: StopReason) -> VmOutcome {
        let _ = stop_vcpus(&self.stop, std::mem::take(&mut self.threads), &self.vm.gate);
        outcome(&self.vm, reason, self.started)
    }

    /// Stops the vCPUs, keeping their state, for a snapshot.
    pub fn pause(mut self) -> Result<PausedVm, VmError> {
        let vcpus = stop_vcpus(&self.stop, std::mem::take(&mut self.threads), &self.vm.gate)?;
        // Drain device work the guest queued before the stop.
        self.vm
            .devices
            .events
            .run_with_timeout(0)
            .map_err(VmError::EventManager)?;
        self.vm.vcpus = vcpus;
        Ok(PausedVm { vm: self.vm })
    }
}

impl PausedVm {
    /// Writes a snapshot into `dir` (created if needed): `state.bin` and
    /// `memory.bin`.
    pub fn snapshot(&self, dir: &Path) -> Result<(), VmError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| VmError::SnapshotIo { path, source }
        };
        crate::snapshot::private::create_dir(dir).map_err(io_err(dir))?;
        let memory_path = dir.join(MEMORY_FILE);
        let memory =
            crate::snapshot::private::create_file(&memory_path).map_err(io_err(&memory_path))?;
        let state = self.encode_with_memory(&memory, &memory_path, self.vm.rings)?;
        let state_path = dir.join(STATE_FILE);
        crate::snapshot::private::write(&state_path, &state).map_err(io_err(&state_path))?;
        Ok(())
    }

    /// Writes the snapshot into `files` (empty, open for writing), with
    /// the rings' ends recorded at `rings`.
    pub fn write_into(&self, files: &SnapshotFiles, rings: RingMarks) -> Result<(), VmError> {
        let state_path = Path::new(STATE_FILE);
        let state = self.encode_with_memory(&files.memory, Path::new(MEMORY_FILE), rings)?;
        let io_err = |source| VmError::SnapshotIo {
            path: state_path.to_path_buf(),
            source,
        };
        let mut state_file = &files.state;
        state_file.write_all(&state).map_err(io_err)?;
        state_file.sync_all().map_err(io_err)?;
        Ok(())
    }

    /// Writes guest memory to `memory` (`memory_path` names it in errors)
    /// and returns the encoded state, which records the memory's digest.
    fn encode_with_memory(
        &self,
        memory: &std::fs::File,
        memory_path: &Path,
        rings: RingMarks,
    ) -> Result<Vec<u8>, VmError> {
        let vm = &self.vm;
        let msr_list = vm
            .kvm
            .get_msr_index_list()
            .map_err(kvm_err("get MSR index list"))?;
        let vcpus = vm
            .vcpus
            .iter()
            .map(|v| v.save_state(msr_list.as_slice()))
            .collect::<Result<Vec<_>, _>>()?;
        // Memory first: the state records its digest.
        let memory = snapmem::save_into(&vm.mem, memory, memory_path)?;
        let state = SnapshotState {
            mem_size: u64::from(vm.config.mem_mib) << 20,
            cpu_fingerprint: vm.cpu_fingerprint,
            tsc_khz: vm.vcpus.first().map_or(0, Vcpu::tsc_khz),
            cmdline: vm.cmdline.clone(),
            vcpus,
            vm: vmkvm::save_state(&vm.vm_fd)?,
            serial: vm.devices.serial.lock().snapshot(),
            transports: vm
                .devices
                .disks
                .iter()
                .map(|d| d.transport.lock().snapshot(d.sectors))
                .collect(),
            vsock: vm.devices.vsock.lock().snapshot(0),
            shm_size: vm.shared.as_ref().map_or(0, |r| r.size()),
            shm_addr: vm.shared.as_ref().map_or(0, |r| r.guest_addr()),
            memory_sha256: memory.digest,
            rings,
        };
        snapfile::encode(&state).map_err(|source| VmError::SnapshotFile {
            path: PathBuf::from(STATE_FILE),
            source,
        })
    }
}

/// How `vm` ended, for `reason`, having run since `started`.
fn outcome(vm: &Vm, reason: StopReason, started: Instant) -> VmOutcome {
    let console = vm.devices.console.lock().clone();
    VmOutcome {
        stop: reason,
        ready: console.ready,
        agent_exit_status: console.exit_status,
        kernel_panic: console.panic,
        console_tail: console.tail.into_iter().collect(),
        elapsed: started.elapsed(),
        hostile: vm.hostile().recent(),
    }
}

/// Stops every vCPU thread: sets the flag, then kicks each thread out of
/// KVM_RUN until it has finished (a kick can race with entering KVM_RUN, so
/// it is repeated), and releases held ones. Returns the vCPUs.
fn stop_vcpus(
    stop: &AtomicBool,
    threads: Vec<JoinHandle<Vcpu>>,
    gate: &Gate,
) -> Result<Vec<Vcpu>, VmError> {
    stop.store(true, Ordering::SeqCst);
    // Held vCPUs wake, see the stop flag and end.
    gate.release();
    let give_up = Instant::now() + Duration::from_secs(5);
    let mut vcpus = Vec::new();
    let mut stuck = false;
    for t in threads {
        while !t.is_finished() && Instant::now() < give_up {
            let _ = t.kill(vcpu::kick_signal());
            std::thread::sleep(Duration::from_millis(1));
        }
        if t.is_finished() {
            match t.join() {
                Ok(v) => vcpus.push(v),
                Err(_) => stuck = true,
            }
        } else {
            tracing::error!("a vCPU thread did not stop; leaving it behind");
            stuck = true;
        }
    }
    if stuck {
        return Err(VmError::VcpuStuck);
    }
    vcpus.sort_by_key(Vcpu::id);
    Ok(vcpus)
}
