//! Shared helpers for the integration tests and benches: where the guest
//! kernel and initramfs are, whether this machine can run VMs, and VMs
//! driven over the agent's control channel.
//!
//! `./dev.sh test` builds them (cached) and exports their paths as
//! `REFLOW_KERNEL`, `REFLOW_INITRAMFS`, `REFLOW_PYTHON_IMAGE` and
//! `REFLOW_NODE_IMAGE`.

pub mod actor_suite;
pub mod calls;
pub mod graphs;
pub mod javascript_scripts;
pub mod python_scripts;
pub mod redis_server;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reflow_agent_protocol::request::Request;
use reflow_ring::{Consumer, Metadata, Producer};
use reflow_sandbox_core::runtime::Runtime;
use reflow_sandbox_core::Language;
use reflow_vmm::hostile::HostileLog;
use reflow_vmm::monitor::{ConsolePipe, MonitorProcess, MonitorProgram, SpawnOptions};
use reflow_vmm::shm::SharedRegion;
use reflow_vmm::snapshot::golden;
use reflow_vmm::{ControlChannel, ControlError, VmConfig, VmOutcome};

/// Paths of the boot images.
#[derive(Debug, Clone)]
pub struct GuestImages {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

fn from_env(var: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "{var} is not set: run the tests with `./dev.sh test`, which builds the guest \
             kernel and initramfs (cached) and sets REFLOW_KERNEL and REFLOW_INITRAMFS"
        )
    });
    assert!(path.is_file(), "{var}={} does not exist", path.display());
    path
}

/// The boot images, from the environment. Panics with instructions when
/// they are missing: a VM test that cannot find its kernel must fail, not
/// pass silently.
pub fn guest_images() -> GuestImages {
    GuestImages {
        kernel: from_env("REFLOW_KERNEL"),
        initramfs: from_env("REFLOW_INITRAMFS"),
    }
}

/// The initramfs with the release agent (`REFLOW_RELEASE_INITRAMFS`, set
/// by `./dev.sh test`, whose `REFLOW_INITRAMFS` has the test hooks).
pub fn release_initramfs() -> PathBuf {
    from_env("REFLOW_RELEASE_INITRAMFS")
}

/// The Python root filesystem image (`REFLOW_PYTHON_IMAGE`, built by
/// `guest-image/build-python.sh`), with the same panic-with-instructions
/// as [`guest_images`].
pub fn python_image() -> PathBuf {
    from_env("REFLOW_PYTHON_IMAGE")
}

/// The Node root filesystem image (`REFLOW_NODE_IMAGE`, built by
/// `guest-image/build-node.sh`), as [`python_image`].
pub fn node_image() -> PathBuf {
    from_env("REFLOW_NODE_IMAGE")
}

/// Every image, as the host bridge takes them.
pub fn bridge_images() -> reflow_sandbox_core::GuestImages {
    let images = guest_images();
    reflow_sandbox_core::GuestImages {
        kernel: Some(images.kernel),
        initramfs: Some(images.initramfs),
        python: python_image(),
        node: Some(node_image()),
    }
}

/// A worker of `language` run as a jailed host process on the language's
/// image (`isolation: process`), ready to serve a region of `shm_mib`.
pub fn process_worker(
    language: Language,
    shm_mib: u32,
) -> reflow_sandbox_core::process::ProcessWorker {
    let spec = reflow_sandbox_core::process::ProcessSpec {
        language,
        image: match language {
            Language::Python => python_image(),
            Language::JavaScript => node_image(),
        },
        shm_mib,
        mem_mib: 1024,
        tmp_mib: 16,
    };
    let t = Instant::now();
    let worker = reflow_sandbox_core::process::ProcessWorker::start(
        &spec,
        None,
        Default::default(),
        &|line| eprintln!("{line}"),
    )
    .unwrap_or_else(|e| panic!("a {language} process worker: {e}"));
    eprintln!(
        "{language} process worker ready in {:.0} ms:{}",
        t.elapsed().as_secs_f64() * 1e3,
        reflow_sandbox_core::warmup::describe_steps(&worker.started().steps)
    );
    worker
}

/// Whether this process can run VMs (it can open /dev/kvm; see
/// [`reflow_vmm::kvm_unusable`], which `REFLOW_NO_KVM=1` also fails).
/// Tests that need it print a loud message and return early where it
/// cannot; every development and CI machine of this project can, so
/// under `CI=true` this fails the test instead (see [`missing`]).
pub fn kvm_available() -> bool {
    match reflow_vmm::kvm_unusable() {
        None => true,
        Some(e) => {
            missing(&format!("{e}; VM tests did not run"));
            false
        }
    }
}

/// The fields of `/proc/{pid}/stat` after the command's name (the first is
/// field 3, the state); none for a process that has gone.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Field `n` (numbered as in proc(5), from 3) of `fields`, a number.
fn stat_field(fields: &[String], n: usize) -> Option<u64> {
    fields.get(n - 3).and_then(|f| f.parse().ok())
}

/// Every process on the host as `(pid, parent pid)`, from `/proc`.
pub fn processes() -> Vec<(u32, u32)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let ppid = stat_field(&stat_fields(pid), 4).and_then(|p| u32::try_from(p).ok());
        if let Some(ppid) = ppid {
            all.push((pid, ppid));
        }
    }
    all
}

/// Names of the threads of process `pid` (none for one that has gone).
pub fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect()
}

/// Process `root` and every process below it (children, their children,
/// ...), `root` first, from `/proc`.
pub fn process_tree(root: u32) -> Vec<u32> {
    let all = processes();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found
}

/// CPU time (user + system, in clock ticks: `sysconf(_SC_CLK_TCK)` a
/// second) process `pid` has used, every thread's (a VM's vCPU threads
/// carry its guest's time), from `/proc`; 0 for a process that has gone.
pub fn cpu_ticks(pid: u32) -> u64 {
    let fields = stat_fields(pid);
    stat_field(&fields, 14).unwrap_or(0) + stat_field(&fields, 15).unwrap_or(0)
}

/// A number no other run of a test has used (nanoseconds since the
/// epoch): put in a script, it makes the script, and so its component
/// golden, this run's own.
pub fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos()
}

/// Reports a prerequisite a test lacks, before the test returns early:
/// loudly, and under `CI=true` as a failure (a CI run that skipped what it
/// claims to test must not pass).
pub fn missing(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and a prerequisite is missing: {why}");
    }
    eprintln!("\n!!!!!!!!!! SKIPPED: {why} !!!!!!!!!!\n");
}

/// Generous: a boot takes ~10-30 s on nested kvm_pvm hosts, ~0.1 s on bare
/// metal; a restore ~0.1 s. Only a hung guest gets near it.
pub const LIMIT: Duration = Duration::from_secs(900);

/// A VM running in a monitor process of its own (as the bridge runs every
/// VM), driven over the agent's control channel.
pub struct TestVm {
    pub control: ControlChannel,
    pub hostile: HostileLog,
    pub shared: Option<Arc<SharedRegion>>,
    /// The VM's vsock socket, in its monitor's private directory.
    pub vsock_uds: PathBuf,
    /// Host time from start to the control channel being ready.
    pub ready_after: Duration,
    /// The monitor process (ended when dropped).
    pub monitor: MonitorProcess,
    console: ConsolePipe,
}

impl TestVm {
    /// Starts a monitor process for `config`'s VM, restoring the snapshot
    /// in `snapshot` or booting the kernel, its console to `console`; waits
    /// for the agent's control channel, failing the test (with how the VM
    /// ended) if the VM stops first.
    fn start(snapshot: Option<&Path>, config: VmConfig, console: Box<dyn Write + Send>) -> TestVm {
        let started = Instant::now();
        let program = MonitorProgram::get().expect("the monitor binary");
        let mut pipe = ConsolePipe::new(console).expect("a console pipe");
        let options = SpawnOptions {
            console: pipe.fd(),
            ..SpawnOptions::default()
        };
        let monitor = match snapshot {
            Some(dir) => MonitorProcess::spawn(&program, dir, &config, &options),
            None => MonitorProcess::boot(&program, &config, &options),
        }
        .expect("start a monitor process");
        pipe.started();
        let deadline = started + LIMIT;
        let shared = (config.shm_mib > 0).then(|| {
            monitor
                .wait_restored(deadline)
                .unwrap_or_else(|e| panic!("the VM's shared region: {e}"))
        });
        let control = match monitor.wait_ready(deadline) {
            Ok(c) => c,
            Err(e) => panic!(
                "the VM stopped before its agent connected: {e}; {:#?}",
                monitor.finish(Duration::from_secs(5))
            ),
        };
        TestVm {
            control,
            hostile: monitor.hostile().clone(),
            shared,
            vsock_uds: monitor.vsock_uds(),
            ready_after: started.elapsed(),
            monitor,
            console: pipe,
        }
    }

    /// Boots `config` (guest console to `console`).
    pub fn boot(config: VmConfig, console: Box<dyn Write + Send>) -> TestVm {
        TestVm::start(None, config, console)
    }

    /// Restores a clone from the snapshot in `dir`.
    pub fn restore(dir: &Path, config: VmConfig, console: Box<dyn Write + Send>) -> TestVm {
        TestVm::start(Some(dir), config, console)
    }

    /// Sends a request (text form) and returns the agent's answer.
    pub fn request(&mut self, text: &str) -> Result<String, ControlError> {
        let request = Request::parse(text).expect("a valid request");
        self.control.request(&request, LIMIT)
    }

    /// Sends a request that must succeed.
    pub fn ok(&mut self, text: &str) -> String {
        self.request(text)
            .unwrap_or_else(|e| panic!("{text:?} failed: {e}"))
    }

    /// Powers the guest off and returns how the VM ended, once all it
    /// printed has reached the console's writer.
    pub fn power_off(mut self) -> VmOutcome {
        self.ok("poweroff 0");
        let TestVm {
            monitor, console, ..
        } = self;
        let outcome = monitor
            .wait_end(Instant::now() + LIMIT)
            .expect("the VM's outcome");
        console.finish();
        outcome
    }
}

/// Times `n` round trips of `payload` through an echo on the other end of
/// `tx`/`rx`, with message ids from `*id` on (advanced past them), checking
/// each echo's id. Returns the round-trip times, sorted.
pub fn timed_round_trips(
    tx: &mut Producer<'_>,
    rx: &mut Consumer<'_>,
    meta: impl Fn(u64) -> Metadata,
    id: &mut u64,
    n: usize,
    payload: &[u8],
) -> Vec<Duration> {
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        tx.send(&meta(*id), payload, LIMIT).unwrap();
        let echo = rx.recv(LIMIT).unwrap().expect("echo");
        rtts.push(t.elapsed());
        assert_eq!(echo.metadata.message_id, *id);
        rx.release(echo).unwrap();
        *id += 1;
    }
    rtts.sort();
    rtts
}

/// The `p` percentile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// The golden snapshot of the agent-only guest with a `shm_mib` region,
/// created on first use in the test cache (`REFLOW_CACHE_DIR`, else the
/// user cache), and the config to restore it with.
pub fn golden_agent_vm(shm_mib: u32) -> (PathBuf, VmConfig) {
    let images = guest_images();
    let mut config = VmConfig::new(&images.kernel);
    config.initrd = Some(images.initramfs);
    config.timeout = Some(Duration::from_secs(3600));
    config.shm_mib = shm_mib;
    let cache = reflow_vmm::cache_root();
    let golden =
        golden::ensure(&config, &cache, &|m| eprintln!("[golden] {m}")).expect("golden snapshot");
    (golden.dir, config)
}

/// A VM booting the Python image as its language root (the host bridge's
/// Python runtime), with a `shm_mib` shared region (256 MiB of RAM, so the
/// region sits at 4 GiB).
pub fn python_vm_config(shm_mib: u32) -> VmConfig {
    let mut config = python_runtime(shm_mib).config;
    config.timeout = Some(LIMIT);
    config
}

/// The host bridge's Python runtime over the test images.
pub fn python_runtime(shm_mib: u32) -> Runtime {
    Runtime::python(&bridge_images(), 256, shm_mib)
}

/// The host bridge's JavaScript runtime over the test images.
pub fn node_runtime(shm_mib: u32) -> Runtime {
    Runtime::javascript(&bridge_images(), 256, shm_mib).expect("the Node image")
}

/// Guest address of the shared region of [`python_vm_config`] VMs.
pub const PYTHON_SHM_ADDR: u64 = reflow_agent_protocol::paths::SHM_ADDR;

/// The golden snapshot of [`python_vm_config`] with `script` already
/// running (see `reflow_sandbox_core::runtime::start_script`), and the
/// config to restore it with.
pub fn warm_python_golden(shm_mib: u32, script: &str, ready: &str) -> (PathBuf, VmConfig) {
    warm_golden(&python_runtime(shm_mib), script, ready)
}

/// The golden snapshot of the JavaScript runtime with its worker running
/// and warm, and the config to restore it with.
pub fn warm_node_golden(shm_mib: u32) -> (PathBuf, VmConfig) {
    warm_worker_golden(Language::JavaScript, shm_mib)
}

/// The golden snapshot of `language`'s runtime with its worker running and
/// warm (as the host bridge's pool starts it), and the config to restore
/// it with.
pub fn warm_worker_golden(language: Language, shm_mib: u32) -> (PathBuf, VmConfig) {
    let runtime = match language {
        Language::Python => python_runtime(shm_mib),
        Language::JavaScript => node_runtime(shm_mib),
    };
    warm_golden(
        &runtime,
        language.worker(),
        reflow_agent_protocol::paths::WORKER_READY,
    )
}

fn warm_golden(runtime: &Runtime, script: &str, ready: &str) -> (PathBuf, VmConfig) {
    let spec = runtime
        .golden_running(script, ready, &reflow_vmm::cache_root(), &|m| {
            eprintln!("[golden] {m}")
        })
        .expect("warm golden snapshot");
    let mut config = spec.config;
    config.timeout = Some(LIMIT);
    (spec.golden, config)
}

/// A VM restored from a golden snapshot whose agent runs the ring echo
/// service.
pub struct EchoVm {
    pub shared: Arc<SharedRegion>,
    pub vm: TestVm,
}

impl EchoVm {
    /// Restores the agent-only guest with a `shm_mib` shared region and
    /// starts `ring-echo`.
    pub fn restore(shm_mib: u32) -> EchoVm {
        let (dir, config) = golden_agent_vm(shm_mib);
        let mut vm = TestVm::restore(&dir, config, Box::new(std::io::sink()));
        assert_eq!(vm.ok("ring-echo"), "started");
        EchoVm {
            shared: vm.shared.clone().expect("a shared region"),
            vm,
        }
    }

    /// Powers the guest off and returns how the VM ended.
    pub fn power_off(self) -> VmOutcome {
        self.vm.power_off()
    }
}
