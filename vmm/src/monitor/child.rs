//! The monitor process's side: restore one VM, hand the bridge what it
//! needs to talk to the guest (the shared region's memfd, the agent's
//! control connection), obey hold, release and stop, report hostile input,
//! and exit when the VM ends or the bridge goes away.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::TryRecvError;
use std::sync::Arc;
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;

use super::wire::{self, FromMonitor, ToMonitor, WireOutcome, WIRE_VERSION};
use crate::cgroup::CpuGroup;
use crate::config::VmConfig;
use crate::memcg::MemoryGroup;
use crate::snapshot::state::RingMarks;
use crate::vm::{SnapshotFiles, SnapshotHandle, Vm, VmIo};

/// The descriptor number the bridge hands the monitor its socket on.
pub const IPC_FD: i32 = 3;

/// The VM's vsock socket's name in its socket directory.
pub const VSOCK_NAME: &str = "vsock";

/// Serves the bridge on descriptor [`IPC_FD`] until the VM ends; returns
/// the process's exit code.
pub fn serve_inherited() -> i32 {
    // Whatever else the bridge's process had open without close-on-exec
    // (another VM's eventfds, say) is not this monitor's business.
    // SAFETY: a plain system call; nothing in this process uses
    // descriptors above IPC_FD yet.
    unsafe {
        libc::syscall(libc::SYS_close_range, IPC_FD as u32 + 1, u32::MAX, 0);
    }
    // The host's name for this monitor (the process the bridge started,
    // which lives as long as it does), before the PID namespace hides it.
    let host_pid = std::process::id();
    // First, while single-threaded and before any VM exists.
    let pid_ns = super::harden::pid_namespace(IPC_FD);
    if let Ok(super::harden::Side::Outer(code)) = pid_ns {
        return code;
    }
    // SAFETY: the bridge spawned this process with its socket at IPC_FD;
    // nothing else in this process owns that number.
    let ipc = unsafe { UnixStream::from_raw_fd(IPC_FD) };
    if let Err(e) = pid_ns {
        return fail(&ipc, e.to_string());
    }
    serve(ipc, host_pid)
}

fn fail(ipc: &UnixStream, why: String) -> i32 {
    tracing::debug!(%why, "monitor process failed");
    let _ = wire::send(ipc, &FromMonitor::Failed(why), &[]);
    // Closing a socket with unread messages (the bridge's start message,
    // after a version it could not take) resets the connection, and the
    // bridge would read that instead of the reason: read them first.
    let mut buf = [0u8; 512];
    loop {
        // SAFETY: reads at most `buf.len()` bytes into `buf`; never blocks.
        let n = unsafe {
            libc::recv(
                ipc.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if n <= 0 {
            break;
        }
    }
    1
}

/// Serves the bridge on `ipc` until the VM ends; returns the exit code.
/// `host_pid` picks the uid it runs as when started by root.
fn serve(ipc: UnixStream, host_pid: u32) -> i32 {
    let version = match wire::recv_version(&ipc) {
        Ok(v) => v,
        Err(e) => return fail(&ipc, format!("no version message: {e}")),
    };
    if version != WIRE_VERSION {
        let exe = std::env::current_exe().unwrap_or_default();
        return fail(
            &ipc,
            format!(
                "the monitor binary {} was built from other sources (protocol {WIRE_VERSION}) \
                 than the bridge that started it ({version}): rebuild it (cargo build -p \
                 reflow-vmm) or point {} at a current one",
                exe.display(),
                super::MONITOR_ENV
            ),
        );
    }
    let (start, fds) = match wire::recv::<ToMonitor>(&ipc) {
        Ok(received) => received,
        Err(e) => return fail(&ipc, format!("no start message: {e}")),
    };
    let ToMonitor::Start {
        snapshot,
        config,
        memory_verified,
        cpu_group,
        memory_group,
        socket_dir,
        snapshots,
        console,
        input,
    } = start
    else {
        return fail(&ipc, "the first message was not Start".into());
    };
    let io = match console_io(fds, console, input) {
        Ok(io) => io,
        Err(why) => return fail(&ipc, why),
    };
    // Before any guest memory is mapped, so all of it is charged there.
    if let Some(dir) = memory_group {
        if let Err(e) = MemoryGroup::join(Path::new(&dir)) {
            return fail(&ipc, format!("joining the monitor's memory cgroup: {e}"));
        }
    }
    // This thread joins before it starts any other: every thread of the
    // VM is born there, so none has to join on its own.
    if let Some(dir) = cpu_group {
        let joined = CpuGroup::attach(Path::new(&dir))
            .map_err(|e| e.to_string())
            .and_then(|group| group.join_current_thread().map_err(|e| e.to_string()));
        if let Err(e) = joined {
            return fail(&ipc, format!("joining the VM's cgroup: {e}"));
        }
    }
    let mut config = config.to_config();
    config.verify_memory = !memory_verified;
    // The sockets are bound by relative names in the socket directory, so
    // the same names work once it is this process's root.
    if let Err(e) = std::env::set_current_dir(&socket_dir) {
        return fail(
            &ipc,
            format!("entering the socket directory {socket_dir}: {e}"),
        );
    }
    config.vsock_uds = Some(VSOCK_NAME.into());
    let file_size = if snapshots {
        snapshot_file_limit(&config)
    } else {
        0
    };
    // Every file the VM needs (snapshot, or kernel, initrd and disks) is
    // opened here, before the jail leaves nothing to open.
    let made = match &snapshot {
        Some(dir) => Vm::restore(Path::new(dir), config, io),
        None => Vm::new(config, io),
    };
    let mut vm = match made {
        Ok(vm) => vm,
        Err(e) => return fail(&ipc, e.to_string()),
    };
    let sent = match vm.shared_region() {
        Some(shared) => {
            let restored = FromMonitor::Restored {
                shm_size: shared.size(),
                shm_addr: shared.guest_addr(),
                rings: vm.rings(),
            };
            let fds = [shared.memfd().as_raw_fd(), shared.guest_doorbell().raw_fd()];
            wire::send(&ipc, &restored, &fds)
        }
        // A VM without a region (one asked for none: an agent-only guest,
        // `reflow-vmm` by hand); the bridge, which needs one to carry
        // messages, finds its size is not the one it asked for.
        None => wire::send(
            &ipc,
            &FromMonitor::Restored {
                shm_size: 0,
                shm_addr: 0,
                rings: vm.rings(),
            },
            &[],
        ),
    };
    if let Err(e) = sent {
        return fail(&ipc, format!("sending the shared region: {e}"));
    }
    // Before any guest code runs and before any other thread exists.
    if let Err(e) = confine(Path::new(&socket_dir), host_pid, file_size) {
        return fail(&ipc, e.to_string());
    }
    // Rung when the VM's thread ends or a device reports hostile input:
    // this thread sleeps until then or a message, never on a tick. Made
    // before the filter, which has no eventfd2.
    let events = match EventFd::new(libc::EFD_NONBLOCK) {
        Ok(fd) => Arc::new(fd),
        Err(e) => return fail(&ipc, format!("an eventfd: {e}")),
    };
    vm.hostile().notify(events.clone());
    // One filter over the whole process, which every thread started from
    // here on inherits (the vCPU and event-loop threads add their own,
    // narrower ones).
    let snapshotter = snapshots.then(|| vm.allow_snapshots());
    let filtered = crate::seccomp::monitor_mode()
        .and_then(|mode| crate::seccomp::install_monitor(mode, snapshots));
    if let Err(e) = filtered {
        return fail(&ipc, e.to_string());
    }
    let control = vm.control();
    let hostile = vm.hostile();
    let stop = vm.stop_handle();
    let gate = vm.gate();
    // The outcome goes through a channel before the eventfd rings: the
    // thread itself may not have finished when this one wakes.
    let (ended, outcome) = std::sync::mpsc::channel();
    let ring = events.clone();
    let runner = match std::thread::Builder::new()
        .name("sandbox-vm".into())
        .spawn(move || {
            // Rings as the thread leaves, panicking or not.
            let _ring = RingOnDrop(ring);
            let _ = ended.send(vm.run());
        }) {
        Ok(r) => r,
        Err(e) => return fail(&ipc, format!("starting the VM's thread: {e}")),
    };
    let ipc = Arc::new(ipc);
    // Hands every agent connection that finished its handshake to the
    // bridge (the first makes the clone ready).
    let forward = ipc.clone();
    let _ = std::thread::Builder::new()
        .name("ready".into())
        .spawn(move || loop {
            let Ok(channel) = control.wait(Duration::from_secs(3600)) else {
                continue;
            };
            let (stream, hello) = channel.into_parts();
            let ready = FromMonitor::Ready(hello);
            if wire::send(&forward, &ready, &[stream.as_raw_fd()]).is_err() {
                return;
            }
        });
    let mut reported = 0u64;
    loop {
        let ran = match outcome.try_recv() {
            Ok(Ok(o)) => Some(WireOutcome::from_outcome(&o)),
            Ok(Err(e)) => Some(WireOutcome::fatal(e.to_string())),
            Err(TryRecvError::Disconnected) => {
                Some(WireOutcome::fatal("the VM's thread panicked".into()))
            }
            Err(TryRecvError::Empty) => None,
        };
        if let Some(ran) = ran {
            let _ = runner.join();
            let _ = wire::send(&ipc, &FromMonitor::Exited(ran), &[]);
            return 0;
        }
        let count = hostile.count();
        if count != reported {
            reported = count;
            let report = FromMonitor::Hostile {
                count,
                recent: hostile.recent(),
            };
            let _ = wire::send(&ipc, &report, &[]);
        }
        if !wait(&ipc, &events) {
            continue;
        }
        match wire::recv::<ToMonitor>(&ipc) {
            Ok((ToMonitor::Hold { limit_ms }, _)) => {
                let held = gate
                    .hold(Duration::from_millis(limit_ms))
                    .err()
                    .map(|e| e.to_string());
                let _ = wire::send(&ipc, &FromMonitor::Held(held), &[]);
            }
            Ok((ToMonitor::Release, _)) => gate.release(),
            Ok((ToMonitor::Snapshot { rings }, fds)) => {
                let why = take_snapshot(snapshotter.as_ref(), fds, rings).err();
                let _ = wire::send(&ipc, &FromMonitor::Snapshotted(why), &[]);
            }
            Ok((ToMonitor::Stop, _)) => stop.stop(),
            Ok((ToMonitor::Start { .. }, _)) => stop.stop(),
            // The bridge went away (or broke the protocol): nobody will
            // talk to this guest again.
            Err(_) => {
                stop.stop();
                gate.release();
                let _ = runner.join();
                return 0;
            }
        }
    }
}

/// Longest a snapshot may take to write (guest RAM to a file; seconds).
const SNAPSHOT_LIMIT: Duration = Duration::from_secs(600);

/// Has the VM snapshot itself into the two files `fds` carries (state,
/// memory) and waits for it; the VM ends either way.
fn take_snapshot(
    handle: Option<&SnapshotHandle>,
    fds: Vec<std::os::fd::OwnedFd>,
    rings: RingMarks,
) -> Result<(), String> {
    let Some(handle) = handle else {
        return Err("this monitor was not started to take snapshots".into());
    };
    let mut fds = fds.into_iter().map(std::fs::File::from);
    let (Some(state), Some(memory)) = (fds.next(), fds.next()) else {
        return Err("the snapshot request came without its two files".into());
    };
    let answer = handle.request(SnapshotFiles { state, memory }, rings);
    match answer.recv_timeout(SNAPSHOT_LIMIT) {
        Ok(result) => result,
        Err(_) => Err(format!(
            "the VM did not write its snapshot within {SNAPSHOT_LIMIT:?}"
        )),
    }
}

/// The guest console's ends from the descriptors the start message
/// carried (`console` first, then `input`, each if said), or why not.
fn console_io(fds: Vec<OwnedFd>, console: bool, input: bool) -> Result<VmIo, String> {
    let wanted = usize::from(console) + usize::from(input);
    if fds.len() != wanted {
        return Err(format!(
            "the start message carried {} descriptors, not {wanted}",
            fds.len()
        ));
    }
    let mut fds = fds.into_iter();
    let out: Box<dyn std::io::Write + Send> = match console.then(|| fds.next()).flatten() {
        Some(fd) => {
            // A starter that stops reading must not stall the vCPU that
            // writes: what does not fit is dropped.
            // SAFETY: fcntl on a descriptor this process owns; no pointers.
            let set = unsafe {
                let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
                flags >= 0
                    && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
            };
            if !set {
                return Err(format!(
                    "making the console descriptor non-blocking: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Box::new(std::fs::File::from(fd))
        }
        None => Box::new(std::io::sink()),
    };
    Ok(VmIo {
        console: out,
        input: fds.next(),
        events: None,
    })
}

/// Rings its eventfd when dropped.
struct RingOnDrop(Arc<EventFd>);

impl Drop for RingOnDrop {
    fn drop(&mut self) {
        let _ = self.0.write(1);
    }
}

/// The jail, a uid of its own when started by root, then the rest of the
/// hardening ([`super::harden`]).
fn confine(root: &Path, host_pid: u32, file_size: u64) -> Result<(), super::harden::HardenError> {
    use super::harden;
    if harden::jail(root)? {
        if let Some(id) = harden::dedicated_id(host_pid)? {
            harden::become_id(id)?;
        }
    }
    harden::harden(file_size)
}

/// The largest file a monitor that writes snapshots of `config`'s VM may
/// make: its guest memory and shared region (the memory file), and 16 MiB
/// more (the state file is far smaller).
fn snapshot_file_limit(config: &VmConfig) -> u64 {
    (u64::from(config.mem_mib) << 20) + crate::shm::region_size(config.shm_mib) + (16 << 20)
}

/// Sleeps until `sock` has something to read (or was closed): `true`; or
/// until `events` rang (then reset): `false`.
fn wait(sock: &UnixStream, events: &EventFd) -> bool {
    let mut fds = [sock.as_raw_fd(), events.as_raw_fd()].map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: two valid pollfds; no timeout.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
    if n > 0 && fds[1].revents != 0 {
        let _ = events.read();
    }
    n > 0 && fds[0].revents != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pipe() -> (std::fs::File, OwnedFd) {
        super::super::console_pipe::pipe().unwrap()
    }

    #[test]
    fn descriptors_must_be_the_ones_the_start_message_names() {
        let e = console_io(vec![pipe().1], false, false).err().unwrap();
        assert!(e.contains("carried 1 descriptors, not 0"), "{e}");
        let e = console_io(Vec::new(), true, true).err().unwrap();
        assert!(e.contains("carried 0 descriptors, not 2"), "{e}");
        let io = console_io(Vec::new(), false, false).unwrap();
        assert!(io.input.is_none());
    }

    #[test]
    fn the_console_goes_to_the_first_descriptor_and_never_blocks() {
        let (mut out_r, out_w) = pipe();
        let (_in_r, in_w) = pipe();
        let input = in_w.as_raw_fd();
        let mut io = console_io(vec![out_w, in_w], true, true).unwrap();
        assert_eq!(io.input.as_ref().map(|f| f.as_raw_fd()), Some(input));
        io.console.write_all(b"hi").unwrap();
        let mut got = [0u8; 2];
        out_r.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        // Nobody reads: a full pipe refuses, it does not wait.
        let chunk = vec![0u8; 1 << 16];
        let refused = (0..64).any(|_| io.console.write(&chunk).is_err());
        assert!(refused, "the console's pipe blocked or grew without bound");
    }

    #[test]
    fn input_alone_is_the_only_descriptor() {
        let (_r, w) = pipe();
        let fd = w.as_raw_fd();
        let io = console_io(vec![w], false, true).unwrap();
        assert_eq!(io.input.as_ref().map(|f| f.as_raw_fd()), Some(fd));
    }
}
