use std::cell::RefCell;
use std::time::{Duration, Instant};

use super::*;

/// A guest on a fake clock: `files(t, path)` says what `path` holds `t`
/// seconds into the watch.
struct FakeGuest<F: Fn(f64, &str) -> Option<String>> {
    base: Instant,
    t: f64,
    files: F,
    reads: usize,
}

impl<F: Fn(f64, &str) -> Option<String>> Guest for FakeGuest<F> {
    fn read(&mut self, path: &str) -> Result<Option<String>, ReadError> {
        self.reads += 1;
        Ok((self.files)(self.t, path))
    }
    fn sleep(&mut self, d: Duration) {
        self.t += d.as_secs_f64();
    }
    fn now(&self) -> Instant {
        self.base + Duration::from_secs_f64(self.t)
    }
}

fn guest<F: Fn(f64, &str) -> Option<String>>(files: F) -> FakeGuest<F> {
    FakeGuest {
        base: Instant::now(),
        t: 0.0,
        files,
        reads: 0,
    }
}

const RUNNING: &str = "1 (python3) R 0 0";
const STEP: &str = r#"{"name":"preload","secs":12.5,"user":1,"sys":9.5,"minflt":100,"majflt":7}"#;

fn policy(stall: u64) -> WarmupPolicy {
    WarmupPolicy {
        stall: Duration::from_secs(stall),
        poll: Duration::from_millis(500),
    }
}

fn run<F: Fn(f64, &str) -> Option<String>>(
    g: &mut FakeGuest<F>,
    stall: u64,
) -> (Result<Started, WarmupError>, Vec<String>) {
    let said = RefCell::new(Vec::new());
    let r = watch(
        g,
        "run_worker.py",
        Some(7),
        reflow_agent_protocol::paths::WORKER_READY,
        policy(stall),
        &|m| said.borrow_mut().push(m.to_string()),
    );
    (r, said.into_inner())
}

#[test]
fn a_slow_warm_up_that_keeps_moving_completes() {
    // 1000 s in all, a new detail every 20 s: far past the 60 s limit,
    // never 60 s without progress.
    let mut g = guest(|t, path| match path {
        "/rootfs/run/reflow/progress" if t >= 1000.0 => Some(format!(
            r#"{{"state":"ready","step":"","detail":"","steps":[{STEP}]}}"#
        )),
        "/rootfs/run/reflow/progress" => Some(format!(
            r#"{{"state":"step","step":"warm-up","detail":"{} messages","steps":[{STEP}]}}"#,
            (t / 20.0) as u64
        )),
        "/proc/7/stat" => Some(RUNNING.into()),
        _ => None,
    });
    let (r, said) = run(&mut g, 60);
    let started = r.expect("ready");
    assert_eq!(started.steps.len(), 1);
    assert_eq!(started.steps[0].name, "preload");
    assert!((started.took.as_secs_f64() - 1000.0).abs() < 1.0);
    // The step when it started, then a heartbeat every 10 s or so.
    assert!(
        said[0].starts_with("run_worker.py: warm-up: 0 messages (0 s)"),
        "{said:?}"
    );
    assert!((90..=110).contains(&said.len()), "{}", said.len());
}

#[test]
fn a_stalled_warm_up_fails_naming_its_step() {
    let mut g = guest(|t, path| match path {
        "/rootfs/run/reflow/progress" if t < 30.0 => Some(format!(
            r#"{{"state":"step","step":"preload","detail":"numpy: {} modules","steps":[]}}"#,
            (t as u64).min(20)
        )),
        "/rootfs/run/reflow/progress" => Some(format!(
            r#"{{"state":"step","step":"warm-up","detail":"","steps":[{STEP}]}}"#
        )),
        "/proc/7/stat" => Some(RUNNING.into()),
        _ => None,
    });
    let (r, _) = run(&mut g, 60);
    let e = r.expect_err("stalled");
    let text = e.to_string();
    assert!(
        matches!(e, WarmupError::Stalled { ref step, .. } if step == "warm-up"),
        "{e:?}"
    );
    assert!(
        text.contains("stalled in step `warm-up`: no progress for 60 s"),
        "{text}"
    );
    assert!(text.contains("REFLOW_GOLDEN_STALL_SECS"), "{text}");
    assert!(
        text.contains("preload 12.5 s (user 1.0 s, sys 9.5 s, 107 page faults, 7 from disk)"),
        "{text}"
    );
    // Gave up at 30 + 60 s, not before, not much after.
    assert!((90.0..92.0).contains(&g.t), "{}", g.t);
}

#[test]
fn a_script_that_reports_nothing_gets_the_stall_limit_from_its_start() {
    let mut g = guest(|_, path| (path == "/proc/7/stat").then(|| RUNNING.to_string()));
    let (r, _) = run(&mut g, 5);
    let e = r.expect_err("stalled");
    assert!(
        e.to_string()
            .contains("stalled in step `starting the interpreter`"),
        "{e}"
    );
    // One that writes only its ready file is ready.
    let mut g = guest(|t, path| match path {
        "/rootfs/run/reflow/worker.ready" if t > 3.0 => Some("7".into()),
        "/proc/7/stat" => Some(RUNNING.into()),
        _ => None,
    });
    let started = run(&mut g, 5).0.expect("ready");
    assert!(started.steps.is_empty());
}

#[test]
fn a_failure_report_ends_the_watch_at_once_with_the_error() {
    let mut g = guest(|t, path| match path {
        "/rootfs/run/reflow/progress" if t >= 2.0 => Some(format!(
            r#"{{"state":"failed","step":"preload","detail":"numpy","error":"cannot preload numpy: AttributeError: module 'numpy' has no attribute 'ndarray'","steps":[{STEP}]}}"#
        )),
        "/proc/7/stat" => Some(RUNNING.into()),
        _ => None,
    });
    let (r, _) = run(&mut g, 600);
    let text = r.expect_err("failed").to_string();
    assert!(
        text.starts_with("run_worker.py failed in step `preload` after 2.0 s: cannot preload numpy: AttributeError"),
        "{text}"
    );
    assert!(g.t < 3.0);
}

#[test]
fn a_script_that_dies_is_noticed_within_a_poll_or_two() {
    for stat in [None, Some("7 (python3) Z 1 7")] {
        let mut g = guest(move |t, path| match path {
            "/rootfs/run/reflow/progress" => {
                Some(r#"{"state":"step","step":"preload","detail":"numpy","steps":[]}"#.into())
            }
            "/proc/7/stat" if t < 4.0 => Some(RUNNING.into()),
            "/proc/7/stat" => stat.map(str::to_string),
            _ => None,
        });
        let e = run(&mut g, 600).0.expect_err("died");
        assert!(matches!(e, WarmupError::Died { .. }), "{e:?}");
        assert!(e.to_string().contains("exited in step `preload`"), "{e}");
        assert!((4.0..5.1).contains(&g.t), "{}", g.t);
    }
}

#[test]
fn hostile_or_broken_reports_are_errors_not_panics() {
    for text in [
        "not json",
        r#"{"state":"ready","steps":[{"name":1}]}"#,
        r#"{"state":"dancing"}"#,
        "{\"state\":\"step\",\"step\":\"x\",\"detail\":\"\u{0}\"",
    ] {
        let mut g =
            guest(move |_, path| (path == "/rootfs/run/reflow/progress").then(|| text.to_string()));
        let e = run(&mut g, 60).0.expect_err(text);
        assert!(matches!(e, WarmupError::BadReport { .. }), "{text}: {e:?}");
    }
    // A long error is cut, and reaches the message.
    let long = "x".repeat(10_000);
    let mut g = guest(move |_, path| {
        (path == "/rootfs/run/reflow/progress")
            .then(|| format!(r#"{{"state":"failed","step":"s","error":"{long}"}}"#))
    });
    let text = run(&mut g, 60).0.expect_err("failed").to_string();
    assert!(text.len() < 2200 && text.ends_with("..."), "{}", text.len());
}

#[test]
fn the_stall_limit_is_configurable_and_checked() {
    assert_eq!(WarmupPolicy::with_stall(None).unwrap().stall, DEFAULT_STALL);
    assert_eq!(
        WarmupPolicy::with_stall(Some(" 42.5 ")).unwrap().stall,
        Duration::from_millis(42_500)
    );
    for bad in ["", "0", "-3", "soon", "inf", "NaN"] {
        let e = WarmupPolicy::with_stall(Some(bad)).expect_err(bad);
        assert!(
            e.to_string().starts_with("REFLOW_GOLDEN_STALL_SECS="),
            "{e}"
        );
    }
}

#[test]
fn process_states_from_proc_stat() {
    assert_eq!(ended(Some("12 (node) R 1 12 12")), None);
    assert_eq!(ended(Some("12 (a) b) S 1")), None);
    assert_eq!(
        ended(Some("12 (node) Z 1 12")).unwrap(),
        "its process is a zombie"
    );
    assert_eq!(ended(None).unwrap(), "its process is gone");
    // A zombie's wait status is field 52.
    let zombie = |status: i32| {
        let mut fields = vec!["0"; 52];
        fields[0] = "12";
        fields[1] = "(node)";
        fields[2] = "Z";
        let status = status.to_string();
        fields[51] = &status;
        ended(Some(&fields.join(" ")))
    };
    assert_eq!(zombie(9).unwrap(), "killed by signal 9");
    assert_eq!(zombie(3 << 8).unwrap(), "exit status 3");
}
