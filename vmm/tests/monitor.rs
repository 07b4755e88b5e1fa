//! The monitor process as the bridge meets it: the real `reflow-vmm`
//! binary started with `__monitor`. (Restoring real guests in monitor
//! processes is what every sandbox test in `tests/` does.)

use std::path::Path;
use std::time::{Duration, Instant};

use reflow_vmm::monitor::wire::{self, FromMonitor};
use reflow_vmm::monitor::{MonitorError, MonitorProcess, MonitorProgram, SpawnOptions};
use reflow_vmm::VmConfig;

fn program() -> MonitorProgram {
    MonitorProgram::at(env!("CARGO_BIN_EXE_reflow-vmm"))
}

/// The monitor binary, started by hand: our end of its socket, and it.
fn start_raw() -> (std::os::unix::net::UnixStream, std::process::Child) {
    reflow_vmm::monitor::start(&program()).unwrap()
}

#[test]
fn a_missing_snapshot_is_an_error_from_the_monitor() {
    let mut config = VmConfig::new("/nonexistent/vmlinux");
    config.shm_mib = 2;
    let monitor = MonitorProcess::spawn(
        &program(),
        Path::new("/nonexistent/snapshot"),
        &config,
        &SpawnOptions::default(),
    )
    .expect("the monitor starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    match monitor.wait_restored(deadline) {
        Err(MonitorError::Restore(why)) => assert!(why.contains("state.bin"), "{why}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("restored a snapshot that does not exist"),
    }
    assert!(monitor.finish(Duration::from_secs(5)).is_none());
    assert!(!monitor.is_alive());
}

#[test]
fn a_monitor_of_another_protocol_version_says_so() {
    let (ours, mut child) = start_raw();
    // What a bridge of other sources says first; what it says next may
    // not decode here at all, so the version alone must be enough.
    use std::io::Write;
    (&ours).write_all(b"other sources").unwrap();
    (&ours)
        .write_all(b"\xff\xfe not a message of this build")
        .unwrap();
    let (answer, fds) = wire::recv::<FromMonitor>(&ours).unwrap();
    assert!(fds.is_empty());
    match answer {
        FromMonitor::Failed(why) => assert!(why.contains("other sources"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(child.wait().unwrap().code(), Some(1));
}

#[test]
fn a_monitor_whose_bridge_goes_away_ends() {
    let (ours, mut child) = start_raw();
    drop(ours);
    // No start message will ever come: the monitor must not wait forever.
    assert_eq!(child.wait().unwrap().code(), Some(1));
}
