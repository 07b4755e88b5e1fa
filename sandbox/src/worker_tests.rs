//! The client against a scripted fake worker on an in-memory region.

use std::time::Duration;

use reflow_ring::{Consumer, Metadata, Producer, Region, RegionLayout, Value};

use super::{InvokeHandler, WorkerClient, WorkerError};
use crate::guest_log::LogLine;
use crate::limits::Limits;
use crate::protocol::tests::map;
use crate::protocol::{ErrorKind, Kind, StateOp, StateRequest};

pub(super) const SIZE: usize = 512 * 1024;
pub(super) const T: Duration = Duration::from_secs(10);

/// The default limits with `timeout`.
pub(super) fn lim(timeout: Duration) -> Limits {
    Limits {
        timeout,
        ..Limits::default()
    }
}

/// An 8-aligned buffer to lay a region over.
fn memory() -> Vec<u64> {
    vec![0; SIZE / 8]
}

fn region(buf: &mut [u64]) -> (Region, RegionLayout) {
    // SAFETY: the buffer is 8-aligned, SIZE bytes long, and outlives the
    // region (both live in the test's frame; threads are scoped).
    let region = unsafe { Region::from_raw(buf.as_mut_ptr().cast(), SIZE) };
    let layout = RegionLayout::for_size(SIZE as u64).unwrap();
    layout.initialize(&region).unwrap();
    (region, layout)
}

/// The guest end: answers each message with what `script` returns for it.
pub(super) struct FakeWorker<'a> {
    pub(super) rx: Consumer<'a>,
    pub(super) tx: Producer<'a>,
}

impl FakeWorker<'_> {
    pub(super) fn next(&mut self) -> (Metadata, Value) {
        let rec = self.rx.recv(T).unwrap().expect("a message from the host");
        let out = (rec.metadata.clone(), Value::decode(&rec.to_vec()).unwrap());
        self.rx.release(rec).unwrap();
        out
    }

    pub(super) fn reply(&mut self, to: &Metadata, kind: u32, port: &str, value: &Value) {
        let meta = Metadata {
            kind,
            port: port.into(),
            ..to.clone()
        };
        self.tx.send(&meta, &value.encode().unwrap(), T).unwrap();
    }
}

#[derive(Default)]
pub(super) struct Recorder {
    pub(super) outputs: Vec<(String, Value)>,
    pub(super) state: Vec<StateRequest>,
    pub(super) logs: Vec<LogLine>,
    pub(super) dropped: Vec<(u64, u64)>,
}

impl InvokeHandler for Recorder {
    fn output(&mut self, port: &str, value: Value) {
        self.outputs.push((port.into(), value));
    }
    fn state(&mut self, request: StateRequest) -> Result<Value, String> {
        let n = self.state.len() as i64 + 1;
        self.state.push(request);
        if n == 2 {
            return Err("store down".into());
        }
        Ok(Value::Int(n))
    }
    fn log(&mut self, line: LogLine) {
        self.logs.push(line);
    }
    fn log_dropped(&mut self, lines: u64, bytes: u64) {
        self.dropped.push((lines, bytes));
    }
}

pub(super) fn with_worker(
    guest: impl FnOnce(&mut FakeWorker<'_>) + Send,
    host: impl FnOnce(&mut WorkerClient<'_>),
) {
    let mut buf = memory();
    let (region, layout) = region(&mut buf);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut fake = FakeWorker {
                rx: Consumer::new(&region, layout.host_to_guest),
                tx: Producer::new(&region, layout.guest_to_host),
            };
            guest(&mut fake);
        });
        let mut client = WorkerClient::attach(&region, &layout);
        host(&mut client);
    });
}

#[test]
fn loads_invokes_streams_outputs_and_answers_state() {
    with_worker(
        |w| {
            let (m, body) = w.next();
            assert_eq!(m.kind, Kind::Load.wire());
            assert_eq!(m.actor_id, "node1");
            let source = match &body {
                Value::Map(f) => f.iter().find(|(k, _)| k == "source").unwrap().1.clone(),
                _ => panic!("LOAD body"),
            };
            assert_eq!(source, Value::Str("src".into()));
            let meta = map(&[("component", Value::Str("X".into()))]);
            w.reply(&m, Kind::Loaded.wire(), "", &map(&[("metadata", meta)]));
            let (m, _) = w.next();
            assert_eq!(m.kind, Kind::Invoke.wire());
            w.reply(&m, Kind::Output.wire(), "out", &Value::Int(1));
            let state = map(&[
                ("op", Value::Str("increment".into())),
                ("key", Value::Str("calls".into())),
            ]);
            for want in [
                map(&[("ok", Value::Int(1))]),
                StateRequest::error("store down"),
            ] {
                w.reply(&m, Kind::State.wire(), "", &state);
                let (r, reply) = w.next();
                assert_eq!(
                    (r.kind, r.message_id),
                    (Kind::StateReply.wire(), m.message_id)
                );
                assert_eq!(reply, want);
            }
            w.reply(&m, Kind::Output.wire(), "out", &Value::Bytes(vec![0, 255]));
            w.reply(&m, Kind::Done.wire(), "", &map(&[("n", Value::Int(2))]));
        },
        |c| {
            let loaded = c.load("node1", "x.actor.py", "src", T).unwrap();
            assert_eq!(
                loaded.metadata,
                map(&[("component", Value::Str("X".into()))])
            );
            let mut rec = Recorder::default();
            let done = c
                .invoke("node1", map(&[]), map(&[]), &lim(T), &mut rec)
                .unwrap();
            assert_eq!(done, map(&[("n", Value::Int(2))]));
            assert_eq!(
                rec.outputs,
                vec![
                    ("out".into(), Value::Int(1)),
                    ("out".into(), Value::Bytes(vec![0, 255]))
                ]
            );
            assert_eq!(rec.state.len(), 2);
            assert_eq!(rec.state[0].op, StateOp::Increment);
        },
    );
}

#[test]
fn load_tells_the_worker_its_idle_spin_only_when_asked() {
    let field = |body: &Value| match body {
        Value::Map(f) => f
            .iter()
            .find(|(k, _)| k == "idle_spin_ms")
            .map(|(_, v)| v.clone()),
        _ => panic!("LOAD body"),
    };
    with_worker(
        |w| {
            let metadata = map(&[("metadata", map(&[]))]);
            let (m, body) = w.next();
            assert_eq!(field(&body), None);
            w.reply(&m, Kind::Loaded.wire(), "", &metadata);
            let (m, body) = w.next();
            assert_eq!(field(&body), Some(Value::Int(70)));
            w.reply(&m, Kind::Loaded.wire(), "", &metadata);
        },
        |c| {
            c.load("n", "a.py", "src", T).unwrap();
            c.idle_spin(Duration::from_millis(70))
                .load("n", "a.py", "src", T)
                .unwrap();
        },
    );
}

#[test]
fn an_actor_error_leaves_the_worker_usable() {
    with_worker(
        |w| {
            let (m, _) = w.next();
            let err = map(&[
                ("kind", Value::Str("load".into())),
                ("message", Value::Str("SyntaxError: x".into())),
            ]);
            w.reply(&m, Kind::Error.wire(), "", &err);
            let (m, _) = w.next();
            w.reply(&m, Kind::Done.wire(), "", &Value::None);
        },
        |c| {
            match c.load("a", "a.py", "bad", T) {
                Err(WorkerError::Actor(e)) => {
                    assert_eq!(e.kind, ErrorKind::Load);
                    assert_eq!(e.message, "SyntaxError: x");
                }
                other => panic!("{other:?}"),
            }
            let done = c
                .invoke("a", map(&[]), map(&[]), &lim(T), &mut Recorder::default())
                .unwrap();
            assert_eq!(done, map(&[]), "nothing returned is an empty map");
        },
    );
}

#[test]
fn protocol_violations_poison_the_client() {
    type Break = fn(&mut FakeWorker<'_>, &Metadata);
    let cases: [(&str, Break); 5] = [
        ("message", |w, m| {
            let other = Metadata {
                message_id: m.message_id + 7,
                ..m.clone()
            };
            w.reply(&other, Kind::Done.wire(), "", &Value::None);
        }),
        ("kind", |w, m| w.reply(m, 99, "", &Value::None)),
        ("where", |w, m| {
            w.reply(m, Kind::Loaded.wire(), "", &Value::None)
        }),
        ("non-map", |w, m| {
            w.reply(m, Kind::Done.wire(), "", &Value::Int(3))
        }),
        ("undecodable", |w, m| {
            let meta = Metadata {
                kind: Kind::Output.wire(),
                ..m.clone()
            };
            w.tx.send(&meta, &[0x77], T).unwrap();
        }),
    ];
    for (what, breaks) in cases {
        with_worker(
            |w| {
                let (m, _) = w.next();
                breaks(w, &m);
            },
            |c| {
                let err = c
                    .invoke("a", map(&[]), map(&[]), &lim(T), &mut Recorder::default())
                    .unwrap_err();
                assert!(
                    matches!(&err, WorkerError::Hostile(m) if m.contains(what)),
                    "{what}: {err}"
                );
                assert_eq!(err.fate(), crate::Fate::Kill);
                assert!(matches!(
                    c.load("a", "a", "", T),
                    Err(WorkerError::Poisoned)
                ));
            },
        );
    }
}

#[test]
fn a_silent_worker_times_out() {
    with_worker(
        |w| {
            w.next();
        },
        |c| {
            let err = c
                .invoke(
                    "a",
                    map(&[]),
                    map(&[]),
                    &lim(Duration::from_millis(50)),
                    &mut Recorder::default(),
                )
                .unwrap_err();
            assert!(matches!(err, WorkerError::Timeout(_)), "{err}");
        },
    );
}

#[test]
fn a_dead_vm_ends_the_wait_long_before_the_deadline() {
    let mut buf = memory();
    let (region, layout) = region(&mut buf);
    let checks = std::cell::Cell::new(0);
    let alive = || {
        checks.set(checks.get() + 1);
        checks.get() < 3
    };
    let mut c = WorkerClient::attach(&region, &layout).with_liveness(&alive);
    let started = std::time::Instant::now();
    let err = c
        .invoke("a", map(&[]), map(&[]), &lim(T), &mut Recorder::default())
        .unwrap_err();
    assert!(matches!(err, WorkerError::Died), "{err}");
    assert_eq!(checks.get(), 3, "asked until it said no");
    assert!(started.elapsed() < T / 2, "{:?}", started.elapsed());
    assert!(c.is_poisoned());
}

/// Limits small enough to reach in a test.
fn small() -> Limits {
    Limits {
        timeout: T,
        max_message_bytes: 100,
        max_output_bytes: 64,
        max_outputs: 3,
        max_output_total_bytes: 150,
        max_state_ops: 2,
        max_state_value_bytes: 32,
        ..Limits::default()
    }
}

#[test]
fn a_message_over_the_limit_is_not_sent_and_the_worker_stays_usable() {
    with_worker(
        |w| {
            let (m, body) = w.next();
            // The first message to arrive is the small one.
            assert_eq!(body, map(&[("inputs", map(&[])), ("config", map(&[]))]));
            w.reply(&m, Kind::Done.wire(), "", &Value::None);
        },
        |c| {
            let big = map(&[("in", Value::Bytes(vec![7; 200]))]);
            let err = c
                .invoke("a", big, map(&[]), &small(), &mut Recorder::default())
                .unwrap_err();
            assert!(
                matches!(err, WorkerError::MessageTooLarge { max: 100, .. }),
                "{err}"
            );
            assert!(!c.is_poisoned());
            c.invoke("a", map(&[]), map(&[]), &small(), &mut Recorder::default())
                .unwrap();
        },
    );
}

/// Runs one invocation under `small()` limits in which the fake worker
/// sends `records` (kind, port, value) and then DONE, answering state
/// requests' replies into `replies`.
fn invoke_with(records: Vec<(Kind, Value)>) -> (Result<Value, WorkerError>, Vec<Value>, bool) {
    let mut replies = Vec::new();
    let mut result = None;
    let mut poisoned = false;
    with_worker(
        |w| {
            let (m, _) = w.next();
            for (kind, value) in &records {
                w.reply(&m, kind.wire(), "out", value);
                if *kind == Kind::State {
                    match w.rx.recv(Duration::from_secs(2)).unwrap() {
                        Some(rec) => {
                            replies.push(Value::decode(&rec.to_vec()).unwrap());
                            w.rx.release(rec).unwrap();
                        }
                        None => return,
                    }
                }
            }
            w.reply(&m, Kind::Done.wire(), "", &Value::None);
        },
        |c| {
            result = Some(c.invoke("a", map(&[]), map(&[]), &small(), &mut Recorder::default()));
            poisoned = c.is_poisoned();
        },
    );
    (result.unwrap(), replies, poisoned)
}

fn set(value: Value) -> Value {
    map(&[
        ("op", Value::Str("set".into())),
        ("key", Value::Str("k".into())),
        ("args", Value::List(vec![value])),
    ])
}

#[test]
fn an_output_over_the_size_limit_fails_the_invocation() {
    let (result, _, poisoned) = invoke_with(vec![(Kind::Output, Value::Bytes(vec![1; 80]))]);
    let err = result.unwrap_err();
    assert!(err.to_string().contains("max_output_size"), "{err}");
    assert!(poisoned);
}

#[test]
fn outputs_past_the_total_size_limit_fail_the_invocation() {
    // Each under max_output_size (64), three within max_outputs, but 180
    // encoded bytes in all, over 150.
    let big = || (Kind::Output, Value::Bytes(vec![1; 55]));
    let (ok, _, _) = invoke_with(vec![big(), big()]);
    assert!(ok.is_ok(), "{ok:?}");
    let (result, _, poisoned) = invoke_with(vec![big(), big(), big()]);
    let err = result.unwrap_err();
    assert!(err.to_string().contains("max_output_total_size"), "{err}");
    assert!(poisoned);
}

#[test]
fn outputs_past_the_count_limit_fail_the_invocation() {
    let three = vec![(Kind::Output, Value::Int(1)); 3];
    assert!(invoke_with(three).0.is_ok());
    let (result, _, poisoned) = invoke_with(vec![(Kind::Output, Value::Int(1)); 4]);
    let err = result.unwrap_err();
    assert!(err.to_string().contains("more than 3 outputs"), "{err}");
    assert!(poisoned);
}

#[test]
fn state_operations_past_the_count_limit_fail_the_invocation() {
    let get = map(&[
        ("op", Value::Str("get".into())),
        ("key", Value::Str("k".into())),
    ]);
    let (result, replies, _) = invoke_with(vec![(Kind::State, get.clone()); 2]);
    assert!(result.is_ok());
    assert_eq!(replies.len(), 2);
    let (result, _, poisoned) = invoke_with(vec![(Kind::State, get); 3]);
    let err = result.unwrap_err();
    assert!(
        err.to_string().contains("more than 2 state operations"),
        "{err}"
    );
    assert!(poisoned);
}

#[test]
fn a_state_value_over_the_limit_is_refused_in_the_actor() {
    let (result, replies, poisoned) = invoke_with(vec![
        (Kind::State, set(Value::Bytes(vec![1; 40]))),
        (Kind::State, set(Value::Bytes(vec![1; 8]))),
    ]);
    assert!(result.is_ok(), "the invocation goes on");
    assert!(!poisoned);
    let refused = format!("{:?}", replies[0]);
    assert!(refused.contains("max_state_value_size"), "{refused}");
    // The second, small value reached the store (the recorder answers 1).
    assert_eq!(replies[1], map(&[("ok", Value::Int(1))]));
}
