//! `reflow-vmm`: boots one microVM from flags, in a jailed monitor process
//! of its own (this binary started again), and exits with the guest's
//! status.
//!
//! Exit codes: the status the guest agent reported before powering off (0
//! for a reset without one); 70 kernel panic; 71 guest crash (triple fault);
//! 72 monitor error while running; 124 timeout; 1 bad input or setup error.
//!
//! `reflow-vmm __monitor` (with a socket at descriptor 3) is how the sandbox
//! bridge runs each VM in a process of its own (`reflow_vmm::monitor`).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use reflow_agent_protocol::request::Request;
use reflow_vmm::monitor::{
    child, ConsolePipe, MonitorError, MonitorProcess, MonitorProgram, SpawnOptions, MONITOR_ARG,
};
use reflow_vmm::snapshot::golden;
use reflow_vmm::vm::EXIT_MONITOR_ERROR;
use reflow_vmm::worker_jail::{self, WORKER_ARG};
use reflow_vmm::{HostKind, VmConfig};

#[derive(Clone, Copy, ValueEnum)]
enum HostArg {
    /// Detect from the loaded KVM modules (REFLOW_HOST_KIND overrides).
    Auto,
    /// Hardware-assisted KVM: no guest workarounds.
    Native,
    /// kvm_pvm (emulated guest kernel): pass the workaround switches.
    Emulated,
}

#[derive(Parser)]
#[command(version, about = "Boot a Reflow sandbox microVM on KVM")]
struct Cli {
    /// Guest kernel: an uncompressed ELF vmlinux (preferred) or a bzImage.
    #[arg(long)]
    kernel: PathBuf,
    /// Initramfs (newc cpio) to boot with.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Read-only disk image, attached as virtio-blk (/dev/vda, /dev/vdb, ...).
    #[arg(long = "disk")]
    disks: Vec<PathBuf>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = reflow_vmm::config::DEFAULT_MEM_MIB)]
    mem: u32,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Appended to the kernel command line, e.g. `reflow.cmd="poweroff 0"`.
    #[arg(long, default_value = "")]
    append: String,
    /// Stop the VM after this many seconds (exit code 124).
    #[arg(long)]
    timeout: Option<u64>,
    /// Write the guest console to this file instead of stdout.
    #[arg(long)]
    console: Option<PathBuf>,
    /// Do not forward stdin to the guest's serial console (the agent takes
    /// requests over vsock; the console is for logs).
    #[arg(long)]
    no_input: bool,
    /// Make a symbolic link here (removed on exit) to the VM's vsock Unix
    /// socket, which lives in its monitor's private directory: `CONNECT
    /// <port>` on it reaches guest ports.
    #[arg(long)]
    vsock: Option<PathBuf>,
    /// Size of the host<->guest shared-memory region in MiB (0: none).
    #[arg(long, default_value_t = 0)]
    shm: u32,
    /// Host kind.
    #[arg(long, value_enum, default_value = "auto")]
    host: HostArg,
    /// Boot from the golden snapshot for these inputs instead: create it on
    /// first use (one boot), then restore a clone from it, reseeded and with
    /// the host's clock, in milliseconds.
    #[arg(long)]
    golden: bool,
    /// Snapshot cache directory for --golden (default: $REFLOW_CACHE_DIR,
    /// else ${XDG_CACHE_HOME:-~/.cache}/reflow-sandbox).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// A request sent to the agent over its control channel once it is
    /// ready; each answer is printed on stdout (repeat for more; e.g.
    /// --request "random 16" --request "poweroff 0").
    #[arg(long = "request")]
    requests: Vec<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REFLOW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // A bridge started this process to run one sandbox VM (see
    // `reflow_vmm::monitor`); not a command for people.
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(MONITOR_ARG)) {
        return ExitCode::from(child::serve_inherited().clamp(0, 255) as u8);
    }
    // A bridge started this process to jail one script worker run as a
    // host process (see `reflow_vmm::worker_jail`).
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(WORKER_ARG)) {
        let args: Vec<_> = std::env::args_os().skip(2).collect();
        return ExitCode::from(worker_jail::serve(&args).clamp(0, 255) as u8);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("reflow-vmm: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sends `requests` over the agent's control channel, printing each
/// answer.
fn send_requests(channel: &mut reflow_vmm::ControlChannel, requests: &[Request]) {
    for request in requests {
        match channel.request(request, Duration::from_secs(600)) {
            Ok(result) => println!("{} -> {result}", request.name()),
            Err(e) => eprintln!("[vmm] {}: {e}", request.name()),
        }
    }
}

/// Longer than any VM this command runs without `--timeout`: waiting on
/// such a VM ends when it does (or when the user interrupts).
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn run(cli: Cli) -> Result<u8, Box<dyn std::error::Error>> {
    let mut config = VmConfig::new(cli.kernel);
    config.initrd = cli.initrd;
    config.disks = cli.disks;
    config.mem_mib = cli.mem;
    config.vcpus = cli.vcpus;
    config.extra_cmdline = cli.append;
    config.timeout = cli.timeout.map(Duration::from_secs);
    config.shm_mib = cli.shm;
    config.host = match cli.host {
        HostArg::Auto => None,
        HostArg::Native => Some(HostKind::Native),
        HostArg::Emulated => Some(HostKind::EmulatedKernel),
    };
    // What can be refused before a process is started, is.
    config.validate()?;
    let console: Box<dyn Write + Send> = match &cli.console {
        Some(path) => Box::new(
            File::create(path)
                .map_err(|e| format!("creating console file {}: {e}", path.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let requests = cli
        .requests
        .iter()
        .map(|r| Request::parse(r).map_err(|e| format!("--request {r:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let stdin = std::io::stdin();
    let input = (!cli.no_input && requests.is_empty()).then(|| stdin.as_fd());
    // The VM runs in a jailed monitor process, as the sandbox bridge runs
    // every VM: this binary, started again.
    let program = MonitorProgram::at(
        std::env::current_exe().map_err(|e| format!("this executable's path: {e}"))?,
    );
    MonitorProgram::set(program.clone());
    let mut console = ConsolePipe::new(console)?;
    let options = SpawnOptions {
        console: console.fd(),
        input,
        ..SpawnOptions::default()
    };
    let started = Instant::now();
    let monitor = if cli.golden {
        let cache = cli.cache_dir.clone().unwrap_or_else(reflow_vmm::cache_root);
        let golden = golden::ensure(&config, &cache, &|m| eprintln!("[vmm] {m}"))?;
        let monitor = MonitorProcess::spawn(&program, &golden.dir, &config, &options)?;
        eprintln!(
            "[vmm] restoring a clone of golden snapshot {} in monitor process {}",
            golden.key,
            monitor.pid()
        );
        monitor
    } else {
        let monitor = MonitorProcess::boot(&program, &config, &options)?;
        eprintln!(
            "[vmm] booting {} in monitor process {}",
            config.kernel.display(),
            monitor.pid()
        );
        monitor
    };
    console.started();
    let _link = match &cli.vsock {
        Some(path) => Some(VsockLink::make(path, &monitor.vsock_uds())?),
        None => None,
    };
    // Report the agent's readiness as it happens, then send the requests.
    if let Ok(mut channel) = monitor.wait_ready(started + FOREVER) {
        let hello = channel.hello();
        eprintln!(
            "[vmm] agent ready: guest uptime {:.3} s, host time since start {:.3} s",
            hello.ready_uptime_ms as f64 / 1e3,
            started.elapsed().as_secs_f64()
        );
        send_requests(&mut channel, &requests);
    }
    let ended = monitor.wait_end(started + FOREVER);
    console.finish();
    let outcome = match ended {
        Ok(outcome) => outcome,
        // It could not make the VM: bad input (a missing or non-kernel
        // file, too little memory, ...) or setup (/dev/kvm), in its words.
        Err(MonitorError::Restore(why)) => return Err(why.into()),
        Err(e) => {
            eprintln!("[vmm] the monitor process ended without an outcome: {e}");
            return Ok(EXIT_MONITOR_ERROR as u8);
        }
    };
    if let Some(line) = &outcome.kernel_panic {
        eprintln!("[vmm] guest kernel panic: {line}");
    }
    let code = outcome.exit_code();
    eprintln!(
        "[vmm] guest stopped: {:?}, agent status {:?}, after {:.3} s; exit code {code}",
        outcome.stop,
        outcome.agent_exit_status,
        outcome.elapsed.as_secs_f64()
    );
    Ok(code as u8)
}

/// `--vsock PATH`: a symbolic link at `PATH` to the VM's socket in its
/// monitor's private directory, removed when this command ends.
struct VsockLink(PathBuf);

impl VsockLink {
    fn make(path: &std::path::Path, target: &std::path::Path) -> Result<VsockLink, String> {
        std::os::unix::fs::symlink(target, path)
            .map_err(|e| format!("--vsock {}: {e}", path.display()))?;
        Ok(VsockLink(path.to_path_buf()))
    }
}

impl Drop for VsockLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
