//! Pipelined streams against a scripted fake worker (the worker module's
//! test fixtures).

use std::time::Duration;

use reflow_ring::{Metadata, Value};

use super::{StreamEnd, StreamHandler, Window};
use crate::protocol::tests::map;
use crate::protocol::{Kind, StateRequest};
use crate::worker::tests::{lim, with_worker, FakeWorker, T};
use crate::worker::{InvokeHandler, WorkerError};

/// What a stream's handler heard, in order.
#[derive(Debug, Clone, PartialEq)]
enum Heard {
    Output(String, Value),
    Done(Value),
    Failed(String),
}

#[derive(Default)]
struct Events(Vec<Heard>, Option<usize>);

impl InvokeHandler for Events {
    fn output(&mut self, port: &str, value: Value) {
        self.0.push(Heard::Output(port.into(), value));
    }
    fn state(&mut self, _: StateRequest) -> Result<Value, String> {
        Ok(Value::Int(7))
    }
}

impl StreamHandler for Events {
    fn done(&mut self, outputs: Value) {
        self.0.push(Heard::Done(outputs));
    }
    fn failed(&mut self, error: WorkerError) {
        self.0.push(Heard::Failed(error.to_string()));
    }
    fn more(&self) -> bool {
        self.1.is_none_or(|most| self.0.len() < most)
    }
}

/// The input of message `i` of a test stream.
fn input(i: i64) -> Value {
    map(&[("in", Value::Int(i))])
}

/// The input an INVOKE body carries.
fn input_of(body: &Value) -> Value {
    match body {
        Value::Map(f) => f.iter().find(|(k, _)| k == "inputs").unwrap().1.clone(),
        other => panic!("INVOKE body {other:?}"),
    }
}

/// Runs a stream of `inputs` with `window`; returns what the handler heard
/// and how it ended.
fn run(
    inputs: Vec<Value>,
    window: Window,
    timeout: Duration,
    guest: impl FnOnce(&mut FakeWorker<'_>) + Send,
) -> (Vec<Heard>, Result<(), StreamEnd>) {
    let mut heard = Events::default();
    let mut ended = Ok(());
    with_worker(guest, |c| {
        let mut inputs = inputs.into_iter();
        ended = c.stream(
            "node",
            &map(&[]),
            &lim(timeout),
            window,
            &mut || inputs.next(),
            &mut heard,
        );
    });
    (heard.0, ended)
}

const WIDE: Window = Window {
    messages: 8,
    bytes: usize::MAX,
};

#[test]
fn messages_are_written_ahead_and_answered_in_order() {
    let (heard, ended) = run((1..=3).map(input).collect(), WIDE, T, |w| {
        // All three are in the ring before the first is answered.
        let sent: Vec<(Metadata, Value)> = (0..3).map(|_| w.next()).collect();
        for (m, body) in &sent {
            assert_eq!(m.kind, Kind::Invoke.wire());
            let i = match input_of(body) {
                Value::Map(f) => f[0].1.clone(),
                other => panic!("{other:?}"),
            };
            if i == Value::Int(2) {
                let err = map(&[
                    ("kind", Value::Str("run".into())),
                    ("message", Value::Str("ValueError: two".into())),
                ]);
                w.reply(m, Kind::Error.wire(), "", &err);
                continue;
            }
            let state = map(&[
                ("op", Value::Str("get".into())),
                ("key", Value::Str("k".into())),
            ]);
            w.reply(m, Kind::State.wire(), "", &state);
            let (r, reply) = w.next();
            assert_eq!(r.kind, Kind::StateReply.wire());
            assert_eq!(r.message_id, m.message_id);
            assert_eq!(reply, map(&[("ok", Value::Int(7))]));
            w.reply(m, Kind::Output.wire(), "out", &i);
            w.reply(m, Kind::Done.wire(), "", &map(&[("n", i)]));
        }
    });
    ended.unwrap();
    assert_eq!(
        heard,
        vec![
            Heard::Output("out".into(), Value::Int(1)),
            Heard::Done(map(&[("n", Value::Int(1))])),
            Heard::Failed("actor raised: ValueError: two".into()),
            Heard::Output("out".into(), Value::Int(3)),
            Heard::Done(map(&[("n", Value::Int(3))])),
        ]
    );
}

#[test]
fn the_window_bounds_the_messages_in_flight() {
    let window = Window {
        messages: 2,
        bytes: usize::MAX,
    };
    let (heard, ended) = run((1..=4).map(input).collect(), window, T, |w| {
        for _ in 0..2 {
            let (a, _) = w.next();
            let (b, _) = w.next();
            // The host waits for an answer before writing a third.
            std::thread::sleep(Duration::from_millis(50));
            assert!(w.rx.try_recv().unwrap().is_none(), "a third was written");
            w.reply(&a, Kind::Done.wire(), "", &Value::None);
            w.reply(&b, Kind::Done.wire(), "", &Value::None);
        }
    });
    ended.unwrap();
    assert_eq!(heard.len(), 4);
}

#[test]
fn a_message_too_large_is_refused_in_its_place() {
    let mut limits_input = (1..=3).map(input).collect::<Vec<_>>();
    limits_input[1] = map(&[("in", Value::Bytes(vec![0; 64 * 1024]))]);
    let mut heard = Events::default();
    let mut ended = Ok(());
    with_worker(
        |w| {
            for _ in 0..2 {
                let (m, _) = w.next();
                w.reply(&m, Kind::Done.wire(), "", &Value::None);
            }
        },
        |c| {
            let limits = crate::Limits {
                max_message_bytes: 1024,
                ..lim(T)
            };
            let mut inputs = limits_input.into_iter();
            ended = c.stream(
                "node",
                &map(&[]),
                &limits,
                WIDE,
                &mut || inputs.next(),
                &mut heard,
            );
        },
    );
    ended.unwrap();
    assert_eq!(heard.0.len(), 3);
    assert_eq!(heard.0[0], Heard::Done(map(&[])));
    assert!(
        matches!(&heard.0[1], Heard::Failed(e) if e.contains("max_message_size")),
        "{heard:?}",
        heard = heard.0
    );
    assert_eq!(heard.0[2], Heard::Done(map(&[])));
}

#[test]
fn a_timeout_answers_the_head_and_hands_back_the_unstarted() {
    let (heard, ended) = run(
        (1..=4).map(input).collect(),
        WIDE,
        Duration::from_millis(300),
        |w| {
            let (first, _) = w.next();
            w.reply(&first, Kind::Done.wire(), "", &Value::None);
            // The second never ends.
            w.next();
            std::thread::sleep(Duration::from_millis(600));
        },
    );
    assert_eq!(heard, vec![Heard::Done(map(&[]))]);
    let end = ended.unwrap_err();
    assert!(
        matches!(end.error, WorkerError::Timeout(_)),
        "{:?}",
        end.error
    );
    assert_eq!(end.unstarted, vec![input(3), input(4)]);
}

#[test]
fn a_record_for_a_later_message_is_hostile() {
    let (heard, ended) = run((1..=3).map(input).collect(), WIDE, T, |w| {
        let (_first, _) = w.next();
        let (second, _) = w.next();
        w.reply(&second, Kind::Done.wire(), "", &Value::None);
    });
    assert!(heard.is_empty());
    let end = ended.unwrap_err();
    assert!(
        matches!(&end.error, WorkerError::Hostile(h) if h.contains("while 1")),
        "{:?}",
        end.error
    );
    assert_eq!(end.unstarted, vec![input(2), input(3)]);
}

#[test]
fn a_handler_that_wants_no_more_gets_what_is_in_flight_finished() {
    // Wants no more once one message is answered: the second, taken
    // before, still runs; the third is never taken.
    let mut heard = Events(Vec::new(), Some(1));
    let taken = std::cell::Cell::new(0);
    with_worker(
        |w| {
            let (a, _) = w.next();
            let (b, _) = w.next();
            w.reply(&a, Kind::Done.wire(), "", &Value::None);
            std::thread::sleep(Duration::from_millis(50));
            w.reply(&b, Kind::Done.wire(), "", &Value::None);
        },
        |c| {
            let mut inputs = (1..=3).map(input);
            let window = Window {
                messages: 2,
                bytes: usize::MAX,
            };
            c.stream(
                "node",
                &map(&[]),
                &lim(T),
                window,
                &mut || {
                    taken.set(taken.get() + 1);
                    inputs.next()
                },
                &mut heard,
            )
            .unwrap();
        },
    );
    assert_eq!(taken.get(), 2);
    assert_eq!(heard.0, vec![Heard::Done(map(&[])), Heard::Done(map(&[]))]);
}
