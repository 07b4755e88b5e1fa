use super::*;

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

#[test]
fn arguments_round_trip() {
    let jail = WorkerJail {
        root: "/cache/images/python-1/root".into(),
        run_dir: "/tmp/reflow-run-1".into(),
        memory_group: Some("/sys/fs/cgroup/memory/reflow-vm-mem-1".into()),
        pids_group: Some("/sys/fs/cgroup/pids/reflow-worker-pids-1".into()),
        cpu_group: Some("/sys/fs/cgroup/cpu/reflow-vm-1".into()),
        tmp_mib: 16,
        command: os(&[
            "/usr/bin/python3",
            "-u",
            "/opt/reflow/run_worker.py",
            "--",
            "x",
        ]),
    };
    assert_eq!(WorkerJail::parse(&jail.to_args()).unwrap(), jail);
    let bare = WorkerJail {
        memory_group: None,
        pids_group: None,
        cpu_group: None,
        tmp_mib: DEFAULT_TMP_MIB,
        ..jail
    };
    assert_eq!(WorkerJail::parse(&bare.to_args()).unwrap(), bare);
}

#[test]
fn bad_command_lines_are_refused_by_name() {
    let cases: [(&[&str], &str); 7] = [
        (&["--run", "/r", "--", "/p"], "--root is missing"),
        (
            &["--root", "t", "--run", "/r", "--", "/p"],
            "--root t is not absolute",
        ),
        (&["--root", "/t", "--run", "/r"], "no program"),
        (
            &["--root", "/t", "--run", "/r", "--", "python3"],
            "not an absolute path",
        ),
        (
            &["--root", "/t", "--run", "/r", "--tmp-mib", "0", "--", "/p"],
            "--tmp-mib",
        ),
        (
            &["--root", "/t", "--run", "/r", "--bogus", "--", "/p"],
            "unknown argument",
        ),
        (&["--root", "/t", "--run"], "--run needs a value"),
    ];
    for (args, why) in cases {
        let e = WorkerJail::parse(&os(args)).unwrap_err().to_string();
        assert!(e.contains(why), "{args:?}: {e}");
    }
}
