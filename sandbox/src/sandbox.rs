//! One running sandbox VM: a clone restored from a runtime's golden
//! snapshot, its monitor on a thread of its own, its agent's control
//! channel and its shared-memory rings.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reflow_agent_protocol::paths;
use reflow_agent_protocol::request::Request;
use reflow_vmm::cgroup::CpuGroup;
use reflow_vmm::hostile::HostileLog;
use reflow_vmm::shm::SharedRegion;
use reflow_vmm::vcpu::gate::{Gate, GateError};
use reflow_vmm::{
    ControlChannel, ControlError, StopHandle, Vm, VmConfig, VmError, VmIo, VmOutcome,
};

use crate::worker::{ClientState, WorkerClient};

/// Longest wait for every vCPU to leave the guest when holding it.
const HOLD_LIMIT: Duration = Duration::from_secs(5);

/// What to restore: a golden snapshot and the config it was taken with.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Path of the golden snapshot each clone is restored from.
    pub golden: PathBuf,
    /// The VM config the snapshot was taken with.
    pub config: VmConfig,
    /// CPU time each clone may use, in CPUs (a cgroup of its own; see
    /// [`reflow_vmm::cgroup`]); `None`: unlimited.
    pub cpu: Option<f64>,
}

impl VmSpec {
    /// Clones of `golden` (taken with `config`) without a CPU limit.
    pub fn new(golden: PathBuf, config: VmConfig) -> VmSpec {
        VmSpec {
            golden,
            config,
            cpu: None,
        }
    }
}

/// Whether a failure to limit a VM's CPU time was reported (once per
/// process: every clone would fail the same way).
static CPU_LIMIT_WARNED: AtomicBool = AtomicBool::new(false);

/// Whether a `/proc/<pid>/stat` line shows a process that has ended or
/// is ending: a zombie (`Z`) or dead (`X`) one, or one with `PF_EXITING`
/// among its flags (a killed process tearing down a large address space
/// stays in that state for seconds where the guest kernel is emulated).
fn exiting(stat: &str) -> bool {
    const PF_EXITING: u64 = 0x4;
    // Fields after the command's name: state, ppid, pgrp, session, tty,
    // tpgid, flags.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ended = matches!(fields.first(), Some(&("Z" | "X")));
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    ended || flags & PF_EXITING != 0
}

/// Why this host cannot limit VMs' CPU time, if it cannot (no cgroup cpu
/// controller): VMs given a limit then run without it.
pub fn cpu_limit_unavailable() -> Option<String> {
    reflow_vmm::cgroup::CpuHierarchy::find()
        .err()
        .map(|e| e.to_string())
}

/// A group limiting a clone's CPU time to `cpus`, or `None` (with one
/// warning per process) where this host cannot: the VM then runs without
/// the limit.
fn cpu_group(cpus: Option<f64>) -> Option<Arc<CpuGroup>> {
    match CpuGroup::create(cpus?) {
        Ok(group) => Some(Arc::new(group)),
        Err(e) => {
            if !CPU_LIMIT_WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "cannot limit sandbox VMs' CPU time; they run without the limit");
            }
            None
        }
    }
}

/// Why a sandbox VM could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Restoring the snapshot failed.
    #[error("cannot restore the VM: {0}")]
    Restore(#[from] VmError),
    /// The VM stopped before its agent connected (how it stopped).
    #[error("the VM stopped before its agent connected: {0}")]
    Died(String),
    /// The agent did not connect within the restore timeout (given).
    #[error("the VM's agent did not connect within {0:?}")]
    Timeout(Duration),
    /// The VM has no shared-memory region to carry the rings.
    #[error("the VM has no shared-memory region (its config sets shm_mib = 0)")]
    NoRing,
    /// The thread that runs the VM could not be spawned.
    #[error("cannot start the VM's thread: {0}")]
    Thread(std::io::Error),
}

/// Why the agent could not tell whether the worker process lives.
#[derive(Debug, thiserror::Error)]
pub enum WorkerCheckError {
    /// Reading the worker's ready file failed.
    #[error("the worker's ready file: {0}")]
    ReadyFile(ControlError),
    /// The ready file does not hold a pid.
    #[error("the worker's ready file says {0:?}")]
    BadPid(String),
    /// Reading the process's `/proc/<pid>/stat` failed.
    #[error("/proc/{pid}: {source}")]
    Proc {
        /// The worker's pid.
        pid: u32,
        /// What the control channel said.
        source: ControlError,
    },
}

/// A running clone. Dropping it stops the VM.
pub struct SandboxVm {
    control: ControlChannel,
    shared: Arc<SharedRegion>,
    hostile: HostileLog,
    stop: StopHandle,
    gate: Arc<Gate>,
    runner: Option<JoinHandle<Result<VmOutcome, VmError>>>,
    ready_after: Duration,
    worker: ClientState,
    /// The VM's cgroup; dropped (removed) after its thread has ended.
    cpu: Option<Arc<CpuGroup>>,
}

impl SandboxVm {
    /// Restores a clone of `spec` and waits (at most `timeout`) until its
    /// agent has taken fresh entropy and time over the control channel:
    /// only then may a script be loaded (the worker reseeds from it).
    pub fn restore(spec: &VmSpec, timeout: Duration) -> Result<SandboxVm, SandboxError> {
        let started = Instant::now();
        let mut config = spec.config.clone();
        config.vsock_uds = None;
        let cpu = cpu_group(spec.cpu);
        let mut vm = Vm::restore(
            &spec.golden,
            config,
            VmIo::console(Box::new(std::io::sink())),
        )?;
        if let Some(group) = &cpu {
            vm.confine_cpu(group.clone());
        }
        let shared = vm.shared_region().ok_or(SandboxError::NoRing)?;
        let handle = vm.control();
        let hostile = vm.hostile();
        let stop = vm.stop_handle();
        let gate = vm.gate();
        let runner = std::thread::Builder::new()
            .name("sandbox-vm".into())
            .spawn(move || vm.run())
            .map_err(SandboxError::Thread)?;
        let control = loop {
            match handle.wait(Duration::from_millis(50)) {
                Ok(c) => break c,
                Err(_) if runner.is_finished() => {
                    let why = match runner.join() {
                        Ok(Ok(o)) => format!(
                            "{:?}; console: {}",
                            o.stop,
                            o.console_tail.last().map_or("", String::as_str)
                        ),
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "its monitor thread panicked".into(),
                    };
                    return Err(SandboxError::Died(why));
                }
                Err(_) if started.elapsed() > timeout => {
                    stop.stop();
                    let _ = runner.join();
                    return Err(SandboxError::Timeout(timeout));
                }
                Err(_) => {}
            }
        };
        Ok(SandboxVm {
            control,
            shared,
            hostile,
            stop,
            gate,
            runner: Some(runner),
            ready_after: started.elapsed(),
            worker: ClientState::default(),
            cpu,
        })
    }

    /// Runs `f` with the client of this VM's worker; the client goes on
    /// from where the previous call left it, and its waits end early
    /// ([`crate::WorkerError::Died`]) if the VM stops.
    pub fn with_worker<R>(&mut self, f: impl FnOnce(&mut WorkerClient<'_>) -> R) -> R {
        let runner = &self.runner;
        let alive = || runner.as_ref().is_some_and(|r| !r.is_finished());
        let mut client = WorkerClient::resume(
            self.shared.ring_region(),
            &self.shared.layout(),
            self.worker,
        )
        .with_liveness(&alive);
        let result = f(&mut client);
        self.worker = client.state();
        result
    }

    /// Holds the guest's vCPUs (it uses no CPU until [`SandboxVm::release`];
    /// what a pool does with the clones it keeps ready).
    pub fn hold(&self) -> Result<(), GateError> {
        self.gate.hold(HOLD_LIMIT)
    }

    /// Lets a held guest run again.
    pub fn release(&self) {
        self.gate.release();
    }

    /// The VM's hold gate, to release it from another thread.
    pub fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }

    /// The agent's control channel.
    pub fn control(&mut self) -> &mut ControlChannel {
        &mut self.control
    }

    /// Hostile input the monitor saw from this guest.
    pub fn hostile(&self) -> &HostileLog {
        &self.hostile
    }

    /// Whether the guest has sent its devices input they had to refuse
    /// ([`HostileLog`]): such a VM is discarded, never kept or lent again.
    pub fn misbehaved(&self) -> bool {
        self.hostile.count() > 0
    }

    /// Whether the monitor is still running the guest.
    pub fn is_alive(&self) -> bool {
        self.runner.as_ref().is_some_and(|r| !r.is_finished())
    }

    /// Host time from the start of the restore to the agent being ready.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// A handle that stops this VM from any thread (as if it crashed: a
    /// message it is running fails with "the VM stopped").
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Whether the guest's script worker process has ended while the VM
    /// lives on (asked of the agent: the pid in the worker's ready file,
    /// then that pid in `/proc`); `Err` says why the agent could not tell.
    pub fn worker_gone(&mut self) -> Result<bool, WorkerCheckError> {
        // Generous: the guest may be busy (this runs after a timeout), and
        // its kernel is emulated on some hosts.
        const ASK: Duration = Duration::from_secs(10);
        let ready = Request::ReadFile {
            path: paths::ready_file(paths::WORKER_READY),
        };
        let text = self
            .control
            .request(&ready, ASK)
            .map_err(WorkerCheckError::ReadyFile)?;
        let pid: u32 = text
            .trim()
            .parse()
            .map_err(|_| WorkerCheckError::BadPid(text.clone()))?;
        let stat = Request::ReadFile {
            path: format!("/proc/{pid}/stat"),
        };
        match self.control.request(&stat, ASK) {
            Ok(stat) => Ok(exiting(&stat)),
            // The agent answered: no such process.
            Err(ControlError::Refused { .. }) => Ok(true),
            Err(source) => Err(WorkerCheckError::Proc { pid, source }),
        }
    }

    /// The cgroup directory limiting the VM's CPU time, if any.
    pub fn cpu_group(&self) -> Option<&std::path::Path> {
        self.cpu.as_deref().map(CpuGroup::dir)
    }

    /// Stops the VM (if it still runs), waits for its thread and returns
    /// how it ended; `None` once it has been asked before.
    pub fn finish(&mut self) -> Option<VmOutcome> {
        self.stop_and_join()
    }

    /// Stops the VM and returns how it ended.
    pub fn kill(mut self) -> Option<VmOutcome> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Option<VmOutcome> {
        self.stop.stop();
        self.runner.take()?.join().ok()?.ok()
    }
}

impl Drop for SandboxVm {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dying_or_dead_process_is_exiting() {
        let running = "24 (node) R 1 0 0 0 -1 4194560 9534 0 585";
        let dying = "24 (node) R 1 0 0 0 -1 4195596 9533 0 586";
        let zombie = "24 (python3) Z 1 0 0 0 -1 4194560 1 0 0";
        let odd_name = "24 (a) b) S 1 0 0 0 -1 4194560 1 0 0";
        assert!(!super::exiting(running));
        assert!(super::exiting(dying));
        assert!(super::exiting(zombie));
        assert!(!super::exiting(odd_name));
        assert!(!super::exiting("garbage"));
    }
}
