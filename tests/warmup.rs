//! Golden warm-ups on /dev/kvm end by progress, not by a clock: a script
//! in the Python image that stops reporting fails with its step named, one
//! that is slow but keeps reporting completes, and a worker whose preload
//! fails writes no golden and says why; and the boot runs in a monitor
//! process of its own. Each boots its own guest into a private cache (a
//! cached golden would prove nothing).

use std::time::{Duration, Instant};

use reflow_integration_tests::{kvm_available, processes, python_runtime};
use reflow_sandbox_core::warmup::{self, WarmupPolicy};
use reflow_vmm::snapshot::golden::{self, GoldenError, GoldenSnapshot, Warmup};
use reflow_vmm::ControlChannel;

/// The stall limit of these tests: above what the guest takes to start a
/// shell and run two programs before its first report (over 8 s on an AMD
/// EPYC kvm_pvm host, where every `exec` and page fault is emulated guest
/// kernel work), and low enough to keep the tests short.
const STALL: Duration = Duration::from_secs(40);

/// Writes one progress report from the guest's shell (`detail` may name
/// shell variables).
fn report(state: &str, step: &str, detail: &str) -> String {
    format!(
        r#"echo '{{"state":"{state}","step":"{step}","detail":"'"{detail}"'","steps":[]}}' > /run/reflow/progress.tmp && mv /run/reflow/progress.tmp /run/reflow/progress"#
    )
}

/// Boots the Python image into a fresh cache and runs `sh -c script` as
/// the golden's warm-up, watched with a `stall` limit.
fn golden_after(
    tag: &str,
    program: &str,
    args: &[&str],
    stall: Duration,
) -> (Result<GoldenSnapshot, GoldenError>, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let config = python_runtime(16).config;
    let policy = WarmupPolicy {
        stall,
        ..WarmupPolicy::default()
    };
    let run = |c: &mut ControlChannel| {
        let args = args.iter().map(|a| a.to_string()).collect();
        warmup::spawn_and_watch(c, program, args, tag, "probe.ready", policy, &|m| {
            eprintln!("[{tag}] {m}")
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let warmup = Warmup { tag, run: &run };
    let result = golden::ensure_warm(&config, cache.path(), Some(&warmup), &|m| {
        eprintln!("[{tag}] {m}")
    });
    (result, cache)
}

#[test]
fn a_warm_up_that_stops_reporting_fails_naming_its_step() {
    if !kvm_available() {
        return;
    }
    let script = format!(
        "mkdir -p /run/reflow && {} && sleep 1 && {} && exec sleep 100000",
        report("step", "probe", "1 of 2"),
        report("step", "probe", "2 of 2")
    );
    let stall = STALL;
    let t = Instant::now();
    let (result, cache) = golden_after("stall-probe", "/bin/sh", &["-c", &script], stall);
    let text = result.expect_err("a stalled warm-up").to_string();
    assert!(
        text.contains("stall-probe stalled in step `probe` (2 of 2): no progress for"),
        "{text}"
    );
    assert!(text.contains("REFLOW_GOLDEN_STALL_SECS"), "{text}");
    assert!(t.elapsed() > stall);
    // Nothing was written.
    let written = std::fs::read_dir(cache.path().join("snapshots"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(written, 0);
}

#[test]
fn a_slow_warm_up_that_keeps_reporting_completes() {
    if !kvm_available() {
        return;
    }
    // Over twice the stall limit in all (9 sleeps of a quarter of it),
    // never near it between reports.
    let stall = STALL;
    let script = format!(
        "mkdir -p /run/reflow && for i in 1 2 3 4 5 6 7 8 9; do {} && sleep {}; done && {}",
        report("step", "slow", "$i of 9"),
        STALL.as_secs() / 4,
        report("ready", "", "")
    );
    let t = Instant::now();
    let (result, _cache) = golden_after("slow-probe", "/bin/sh", &["-c", &script], stall);
    let golden = result.expect("a slow warm-up that makes progress completes");
    assert!(golden.created);
    assert!(
        t.elapsed() > 2 * stall,
        "the warm-up took {:?}",
        t.elapsed()
    );
}

#[test]
fn a_worker_whose_preload_fails_writes_no_golden_and_says_why() {
    if !kvm_available() {
        return;
    }
    // The real worker, with a preload list naming a module the image lacks.
    let code = "import sys; sys.path.insert(0, '/opt/reflow'); import reflow.worker as w; \
                w.preload_list.__defaults__ = ('/tmp/preload.txt',); w.main(sys.argv)";
    let script = format!(
        "printf 'json\\nno_such_module_xyz\\n' > /tmp/preload.txt && \
         exec /usr/bin/python3 -c \"{code}\" {:#x} {:#x}",
        reflow_agent_protocol::paths::SHM_ADDR,
        16u64 << 20
    );
    let (result, _cache) = golden_after(
        "preload-probe",
        "/bin/sh",
        &["-c", &script],
        Duration::from_secs(600),
    );
    let text = result.expect_err("a failed preload").to_string();
    assert!(
        text.contains("preload-probe failed in step `preload`")
            && text.contains("cannot preload no_such_module_xyz: ModuleNotFoundError"),
        "{text}"
    );
    // The finished step (json's import) is timed, and the console's
    // traceback comes along.
    assert!(text.contains("  - preload "), "{text}");
    assert!(text.contains("last console lines:"), "{text}");
}

/// The ids of this process's child processes whose command line names
/// the monitor's argument.
fn monitor_children() -> Vec<u32> {
    let me = std::process::id();
    processes()
        .into_iter()
        .filter(|&(pid, ppid)| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == me && cmdline.split(|&b| b == 0).any(|a| a == b"__monitor")
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// Names of this process's threads that run a VM (vCPUs, event loop).
fn vm_threads() -> Vec<String> {
    reflow_integration_tests::thread_names(std::process::id())
        .into_iter()
        .filter(|c| c.starts_with("vcpu") || c == "sandbox-vm")
        .collect()
}

/// A golden boot runs in a monitor process of its own, spawned by the
/// process that asked for it, not on threads of that process.
#[test]
fn a_golden_boot_runs_in_a_monitor_process_of_its_own() {
    if !kvm_available() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let config = python_runtime(16).config;
    let seen = std::sync::Mutex::new((Vec::new(), Vec::new()));
    let run = |c: &mut ControlChannel| {
        // While the guest answers:
        c.request(
            &reflow_agent_protocol::request::Request::Ping,
            Duration::from_secs(60),
        )
        .map_err(|e| e.to_string())?;
        *seen.lock().unwrap() = (monitor_children(), vm_threads());
        Ok(())
    };
    let warmup = Warmup {
        tag: "monitor-probe",
        run: &run,
    };
    let golden = golden::ensure_warm(&config, cache.path(), Some(&warmup), &|m| {
        eprintln!("[monitor-probe] {m}")
    })
    .expect("a golden");
    assert!(golden.created);
    let (children, threads) = seen.into_inner().unwrap();
    assert!(
        !children.is_empty(),
        "no monitor process ran the golden boot"
    );
    assert!(
        threads.is_empty(),
        "VM threads in this process: {threads:?}"
    );
}
