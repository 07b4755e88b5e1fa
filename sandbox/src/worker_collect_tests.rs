//! `COLLECT` through the client: the answer checked field by field; a
//! malformed one is hostile.

use reflow_ring::Value;

use super::tests::{with_worker, T};
use super::WorkerError;
use crate::protocol::tests::map;
use crate::protocol::{Collected, Kind};

#[test]
fn collect_sends_an_empty_map_and_returns_what_the_worker_reports() {
    with_worker(
        |w| {
            let (m, body) = w.next();
            assert_eq!(m.kind, Kind::Collect.wire());
            assert_eq!(m.actor_id, "pool");
            assert_eq!(body, map(&[]));
            let done = map(&[("ms", Value::Float(2.5)), ("heap", Value::Int(4096))]);
            w.reply(&m, Kind::Done.wire(), "", &done);
            let (m, _) = w.next();
            let whole = map(&[("ms", Value::Int(3)), ("heap", Value::Int(0))]);
            w.reply(&m, Kind::Done.wire(), "", &whole);
        },
        |c| {
            let got = c.collect("pool", T).unwrap();
            assert_eq!(
                got,
                Collected {
                    ms: 2.5,
                    heap: 4096
                }
            );
            let got = c.collect("pool", T).unwrap();
            assert_eq!(got, Collected { ms: 3.0, heap: 0 });
            assert!(!c.is_poisoned());
        },
    );
}

#[test]
fn a_malformed_collect_answer_is_hostile() {
    let cases = [
        ("no ms", map(&[("heap", Value::Int(1))])),
        (
            "negative ms",
            map(&[("ms", Value::Float(-1.0)), ("heap", Value::Int(1))]),
        ),
        (
            "NaN ms",
            map(&[("ms", Value::Float(f64::NAN)), ("heap", Value::Int(1))]),
        ),
        (
            "text ms",
            map(&[("ms", Value::Str("1".into())), ("heap", Value::Int(1))]),
        ),
        (
            "negative heap",
            map(&[("ms", Value::Float(1.0)), ("heap", Value::Int(-1))]),
        ),
        ("no heap", map(&[("ms", Value::Float(1.0))])),
        ("not a map", Value::List(vec![])),
    ];
    for (what, answer) in cases {
        with_worker(
            |w| {
                let (m, _) = w.next();
                w.reply(&m, Kind::Done.wire(), "", &answer);
            },
            |c| {
                let err = c.collect("pool", T).unwrap_err();
                assert!(matches!(&err, WorkerError::Hostile(_)), "{what}: {err}");
                assert!(c.is_poisoned(), "{what}");
            },
        );
    }
}

#[test]
fn only_done_or_error_answers_a_collect() {
    with_worker(
        |w| {
            let (m, _) = w.next();
            w.reply(&m, Kind::Loaded.wire(), "", &map(&[]));
        },
        |c| {
            let err = c.collect("pool", T).unwrap_err();
            assert!(
                matches!(&err, WorkerError::Hostile(m) if m.contains("DONE or ERROR")),
                "{err}"
            );
        },
    );
    with_worker(
        |w| {
            let (m, _) = w.next();
            let error = map(&[
                ("kind", Value::Str("protocol".into())),
                ("message", Value::Str("unexpected message kind 10".into())),
                ("traceback", Value::Str(String::new())),
            ]);
            w.reply(&m, Kind::Error.wire(), "", &error);
        },
        |c| {
            let err = c.collect("pool", T).unwrap_err();
            assert!(matches!(&err, WorkerError::Actor(_)), "{err}");
            assert!(
                err.to_string().contains("unexpected message kind 10"),
                "{err}"
            );
        },
    );
}
