//! Messages between the bridge and a monitor process, one per datagram of
//! a `SOCK_SEQPACKET` socket pair, bitcode-encoded; descriptors travel
//! beside them (`SCM_RIGHTS`). The monitor runs a guest, so everything it
//! sends is untrusted: sizes are bounded here, and what the bridge does
//! with a message never depends on more than its checked fields.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use bitcode::{Decode, Encode};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::config::VmConfig;
use crate::console::AgentReady;
use crate::host::HostKind;
use crate::snapshot::state::RingMarks;
use crate::vcpu::exit::StopReason;
use crate::vm::control::AgentHello;
use crate::vm::VmOutcome;

/// Largest message either side accepts.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most descriptors one message carries.
const MAX_FDS: usize = 2;

/// The monitor crate's sources this binary was built from (a hash of
/// `vmm/src/`, made by `build.rs`): a monitor built from other sources
/// than its bridge says so instead of misreading its messages.
pub const WIRE_VERSION: &str = env!("REFLOW_VMM_SOURCES");

/// Why a message could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed.
    #[error("monitor socket: {0}")]
    Io(std::io::Error),
    /// The other side closed its end (the process ended).
    #[error("the monitor process closed its socket")]
    Closed,
    /// A message that is not one of ours, or too large.
    #[error("malformed monitor message: {0}")]
    Malformed(String),
}

/// A VM config as it crosses (paths as UTF-8 text).
#[derive(Debug, Clone, Encode, Decode)]
pub struct WireConfig {
    kernel: String,
    initrd: Option<String>,
    disks: Vec<String>,
    mem_mib: u32,
    vcpus: u8,
    extra_cmdline: String,
    timeout_ms: Option<u64>,
    /// 0: detect, 1: native, 2: emulated kernel.
    host: u8,
    shm_mib: u32,
}

/// A path as it crosses: UTF-8 text, or an error naming it.
pub fn path_text(p: &std::path::Path) -> Result<String, WireError> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| WireError::Malformed(format!("{} is not UTF-8", p.display())))
}

impl WireConfig {
    /// `config` for the wire (its vsock path is not sent: every monitor
    /// process makes a private one).
    pub fn from_config(config: &VmConfig) -> Result<WireConfig, WireError> {
        Ok(WireConfig {
            kernel: path_text(&config.kernel)?,
            initrd: config.initrd.as_deref().map(path_text).transpose()?,
            disks: config
                .disks
                .iter()
                .map(|d| path_text(d))
                .collect::<Result<_, _>>()?,
            mem_mib: config.mem_mib,
            vcpus: config.vcpus,
            extra_cmdline: config.extra_cmdline.clone(),
            timeout_ms: config.timeout.map(|t| t.as_millis() as u64),
            host: match config.host {
                None => 0,
                Some(HostKind::Native) => 1,
                Some(HostKind::EmulatedKernel) => 2,
            },
            shm_mib: config.shm_mib,
        })
    }

    /// The config it describes.
    pub fn to_config(&self) -> VmConfig {
        let mut config = VmConfig::new(&self.kernel);
        config.initrd = self.initrd.as_ref().map(PathBuf::from);
        config.disks = self.disks.iter().map(PathBuf::from).collect();
        config.mem_mib = self.mem_mib;
        config.vcpus = self.vcpus;
        config.extra_cmdline = self.extra_cmdline.clone();
        config.timeout = self.timeout_ms.map(Duration::from_millis);
        config.host = match self.host {
            1 => Some(HostKind::Native),
            2 => Some(HostKind::EmulatedKernel),
            _ => None,
        };
        config.shm_mib = self.shm_mib;
        config
    }
}

/// From the bridge.
#[derive(Debug, Clone, Encode, Decode)]
pub enum ToMonitor {
    /// The first message after the version ([`send_version`]): restore
    /// `snapshot` with `config`, or boot a fresh guest with it (a golden
    /// snapshot's boot).
    Start {
        /// The snapshot directory; `None`: boot `config`'s kernel.
        snapshot: Option<String>,
        /// The VM config (the one the snapshot was taken with).
        config: Box<WireConfig>,
        /// The bridge has checked the memory file's digest already.
        memory_verified: bool,
        /// A cgroup directory (made by the bridge) the VM's threads join.
        cpu_group: Option<String>,
        /// A memory cgroup directory (made by the bridge) the monitor
        /// process joins before it maps guest memory.
        memory_group: Option<String>,
        /// A private, empty directory (made by the bridge, which removes
        /// it) for the VM's sockets; the monitor's root once jailed.
        socket_dir: String,
        /// The bridge may ask for a snapshot of this VM (`Snapshot`): its
        /// threads then run under the `*_snapshot` seccomp lists.
        snapshots: bool,
        /// The message carries a descriptor (first) the guest's console
        /// output goes to; else it is dropped (its last lines still end up
        /// in the outcome).
        console: bool,
        /// The message carries a descriptor (after the console's, if any)
        /// whose bytes are typed into the guest's console.
        input: bool,
    },
    /// Pause the VM, write its snapshot into the two files this message
    /// carries (state, then memory: empty, open for writing), recording
    /// that the rings' ends stood at `rings`, and end it (answered by
    /// `Snapshotted`, then `Exited`). Refused unless `Start` allowed it.
    Snapshot {
        /// Where both rings' ends stand (the bridge checked they are
        /// empty there).
        rings: RingMarks,
    },
    /// Hold the vCPUs out of the guest (answered by `Held`).
    Hold {
        /// Longest wait for every vCPU to leave the guest, ms.
        limit_ms: u64,
    },
    /// Let held vCPUs run again.
    Release,
    /// Stop the VM (answered by `Exited`).
    Stop,
}

/// From the monitor.
#[derive(Debug, Clone, Encode, Decode)]
pub enum FromMonitor {
    /// The VM is restored and running; carries the shared region's memfd
    /// and the guest doorbell's eventfd.
    Restored {
        /// The region's size in bytes.
        shm_size: u64,
        /// Its guest physical address.
        shm_addr: u64,
        /// Where the rings' ends start (from the snapshot).
        rings: RingMarks,
    },
    /// The answer to `Snapshot`: `None` when the files are written, else
    /// why not.
    Snapshotted(Option<String>),
    /// The restore failed (why).
    Failed(String),
    /// The agent finished its handshake, saying this; carries the control
    /// connection.
    Ready(AgentHello),
    /// The answer to `Hold`: `None` when held, else why not.
    Held(Option<String>),
    /// New hostile-input reports: the total count and the latest ones.
    Hostile {
        /// Reports so far.
        count: u64,
        /// The latest reports.
        recent: Vec<String>,
    },
    /// The VM ended.
    Exited(WireOutcome),
}

/// A [`VmOutcome`] as it crosses.
#[derive(Debug, Clone, Encode, Decode)]
pub struct WireOutcome {
    /// 0 reset, 1 power-off, 2 crash, 3 timeout, 4 stopped, 5 fatal.
    stop: u8,
    why: String,
    ready_ms: Option<(u64, u64)>,
    agent_exit_status: Option<i32>,
    kernel_panic: Option<String>,
    console_tail: Vec<String>,
    elapsed_ms: u64,
    hostile: Vec<String>,
}

impl WireOutcome {
    /// `outcome` for the wire.
    pub fn from_outcome(o: &VmOutcome) -> WireOutcome {
        let (stop, why) = match &o.stop {
            StopReason::Reset => (0, String::new()),
            StopReason::PowerOff => (1, String::new()),
            StopReason::GuestCrash(w) => (2, w.clone()),
            StopReason::Timeout => (3, String::new()),
            StopReason::Stopped => (4, String::new()),
            StopReason::Fatal(w) => (5, w.clone()),
        };
        WireOutcome {
            stop,
            why,
            ready_ms: o.ready.map(|r| {
                (
                    r.guest_uptime.as_millis() as u64,
                    r.host_elapsed.as_millis() as u64,
                )
            }),
            agent_exit_status: o.agent_exit_status,
            kernel_panic: o.kernel_panic.clone(),
            console_tail: o.console_tail.clone(),
            elapsed_ms: o.elapsed.as_millis() as u64,
            hostile: o.hostile.clone(),
        }
    }

    /// A monitor that could not run the VM at all (why).
    pub fn fatal(why: String) -> WireOutcome {
        WireOutcome {
            stop: 5,
            why,
            ready_ms: None,
            agent_exit_status: None,
            kernel_panic: None,
            console_tail: Vec::new(),
            elapsed_ms: 0,
            hostile: Vec::new(),
        }
    }

    /// The outcome it describes.
    pub fn to_outcome(&self) -> VmOutcome {
        let stop = match self.stop {
            0 => StopReason::Reset,
            1 => StopReason::PowerOff,
            2 => StopReason::GuestCrash(self.why.clone()),
            3 => StopReason::Timeout,
            4 => StopReason::Stopped,
            _ => StopReason::Fatal(self.why.clone()),
        };
        VmOutcome {
            stop,
            ready: self.ready_ms.map(|(g, h)| AgentReady {
                guest_uptime: Duration::from_millis(g),
                host_elapsed: Duration::from_millis(h),
            }),
            agent_exit_status: self.agent_exit_status,
            kernel_panic: self.kernel_panic.clone(),
            console_tail: self.console_tail.clone(),
            elapsed: Duration::from_millis(self.elapsed_ms),
            hostile: self.hostile.clone(),
        }
    }
}

/// A `SOCK_SEQPACKET` pair: (the bridge's end, the monitor's end), both
/// close-on-exec (the monitor's is moved to a fixed number for the child).
pub fn socket_pair() -> std::io::Result<(UnixStream, UnixStream)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded: both are fresh descriptors we own.
    Ok(unsafe {
        (
            UnixStream::from_raw_fd(fds[0]),
            UnixStream::from_raw_fd(fds[1]),
        )
    })
}

/// Sends this build's [`WIRE_VERSION`] as a plain datagram, not a
/// bitcode message: the first thing the bridge says, which a monitor of
/// any build reads alike, so one built from other sources says so instead
/// of failing to decode what follows.
pub fn send_version(sock: &UnixStream) -> Result<(), WireError> {
    send_datagram(sock, WIRE_VERSION.as_bytes(), &[])
}

/// Most bytes a version datagram may hold.
const MAX_VERSION: usize = 256;

/// Receives the version datagram [`send_version`] sends (at most
/// [`MAX_VERSION`] bytes, no descriptors), as text.
pub fn recv_version(sock: &UnixStream) -> Result<String, WireError> {
    let mut buf = [0u8; MAX_VERSION + 1];
    let (n, _) = recv_datagram(sock, &mut buf, 0)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Sends `msg` with `fds` as one datagram.
pub fn send<T: Encode>(sock: &UnixStream, msg: &T, fds: &[RawFd]) -> Result<(), WireError> {
    let bytes = bitcode::encode(msg);
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::Malformed(format!(
            "a {}-byte message is over the {MAX_MESSAGE}-byte limit",
            bytes.len()
        )));
    }
    send_datagram(sock, &bytes, fds)
}

/// Sends `bytes` with `fds` as one datagram, whole.
fn send_datagram(sock: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> Result<(), WireError> {
    let sent = sock
        .send_with_fds(&[bytes], fds)
        .map_err(|e| WireError::Io(std::io::Error::from_raw_os_error(e.errno())))?;
    if sent != bytes.len() {
        return Err(WireError::Malformed("a message was cut short".into()));
    }
    Ok(())
}

/// Receives one datagram: the message and the descriptors that came with
/// it, close-on-exec from the start (`MSG_CMSG_CLOEXEC`: no monitor
/// process started meanwhile by another thread inherits another VM's
/// descriptors). More than two descriptors, or a cut message, is refused
/// (the descriptors are closed).
pub fn recv<T: for<'a> Decode<'a>>(sock: &UnixStream) -> Result<(T, Vec<OwnedFd>), WireError> {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    let (n, fds) = recv_datagram(sock, &mut buf, MAX_FDS)?;
    let msg = bitcode::decode(&buf[..n]).map_err(|e| WireError::Malformed(e.to_string()))?;
    Ok((msg, fds))
}

/// Receives one datagram into `buf`, whose last byte only detects one too
/// long: its length and descriptors. More than `max_fds` descriptors, a
/// datagram that fills `buf`, or a cut one is refused (the descriptors are
/// closed); an empty one without descriptors is the peer closing.
fn recv_datagram(
    sock: &UnixStream,
    buf: &mut [u8],
    max_fds: usize,
) -> Result<(usize, Vec<OwnedFd>), WireError> {
    let (n, fds, flags) = recvmsg(sock.as_raw_fd(), buf)?;
    if n == 0 && fds.is_empty() {
        return Err(WireError::Closed);
    }
    if n >= buf.len() || fds.len() > max_fds || flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(WireError::Malformed(format!(
            "{n} bytes with {} descriptors",
            fds.len()
        )));
    }
    Ok((n, fds))
}

/// One `recvmsg` into `buf`: bytes read, descriptors received, flags.
fn recvmsg(fd: RawFd, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>, i32), WireError> {
    const FD_SIZE: usize = std::mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(((MAX_FDS + 1) * FD_SIZE) as u32) } as usize;
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no buffers); filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: `msg` points at `iov` (over `buf`) and `control`, both
        // live and as long as stated.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(WireError::Io(e));
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the CMSG_* walk stays within `msg.msg_controllen` bytes of
    // `control`, which the kernel filled; each SCM_RIGHTS payload is a
    // packed array of descriptors now owned by this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let hdr = &*cmsg;
            if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let len = hdr.cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / FD_SIZE {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n, fds, msg.msg_flags))
}

/// The raw number of `fd`, for [`send`].
pub fn raw(fd: &impl AsRawFd) -> RawFd {
    fd.as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_descriptors_cross_one_datagram_at_a_time() {
        let (a, b) = socket_pair().unwrap();
        let (x, _y) = UnixStream::pair().unwrap();
        send(&a, &ToMonitor::Release, &[]).unwrap();
        send(&a, &ToMonitor::Hold { limit_ms: 5 }, &[raw(&x)]).unwrap();
        let (m, fds) = recv::<ToMonitor>(&b).unwrap();
        assert!(matches!(m, ToMonitor::Release) && fds.is_empty());
        let (m, fds) = recv::<ToMonitor>(&b).unwrap();
        assert!(matches!(m, ToMonitor::Hold { limit_ms: 5 }));
        assert_eq!(fds.len(), 1);
        drop(a);
        assert!(matches!(recv::<ToMonitor>(&b), Err(WireError::Closed)));
    }

    #[test]
    fn garbage_is_refused_not_trusted() {
        let (a, b) = socket_pair().unwrap();
        (&a).write_all_seq(&[0xff; 7]);
        assert!(matches!(
            recv::<FromMonitor>(&b),
            Err(WireError::Malformed(_))
        ));
    }

    trait WriteSeq {
        fn write_all_seq(self, bytes: &[u8]);
    }

    impl WriteSeq for &UnixStream {
        fn write_all_seq(self, bytes: &[u8]) {
            use std::io::Write;
            let mut s = self;
            assert_eq!(s.write(bytes).unwrap(), bytes.len());
        }
    }

    #[test]
    fn configs_and_outcomes_survive_the_crossing() {
        let mut c = VmConfig::new("/k");
        c.initrd = Some("/i".into());
        c.disks = vec!["/d".into()];
        c.mem_mib = 256;
        c.timeout = Some(Duration::from_millis(1500));
        c.host = Some(HostKind::EmulatedKernel);
        c.shm_mib = 40;
        let back = WireConfig::from_config(&c).unwrap().to_config();
        assert_eq!(format!("{back:?}"), format!("{c:?}"));
        let o = VmOutcome {
            stop: StopReason::GuestCrash("triple fault".into()),
            ready: None,
            agent_exit_status: Some(3),
            kernel_panic: None,
            console_tail: vec!["x".into()],
            elapsed: Duration::from_millis(12),
            hostile: vec![],
        };
        let back = WireOutcome::from_outcome(&o).to_outcome();
        assert_eq!(format!("{back:?}"), format!("{o:?}"));
    }
}
