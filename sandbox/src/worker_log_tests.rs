//! Printed lines (`LOG` records) through the client: kept within the
//! message's log limits, the rest counted; malformed ones are hostile.

use reflow_ring::Value;

use super::tests::{lim, with_worker, Recorder, T};
use super::WorkerError;
use crate::guest_log::{LogLine, LogStream};
use crate::limits::Limits;
use crate::protocol::tests::map;
use crate::protocol::Kind;

fn line(text: &str) -> Value {
    map(&[
        ("stream", Value::Str("stdout".into())),
        ("line", Value::Str(text.into())),
    ])
}

fn stdout(text: &str) -> LogLine {
    LogLine {
        stream: LogStream::Stdout,
        text: text.into(),
        cut: 0,
    }
}

/// The `log` caps a LOAD body carries.
fn caps(body: &Value) -> Value {
    match body {
        Value::Map(f) => f.iter().find(|(k, _)| k == "log").unwrap().1.clone(),
        _ => panic!("LOAD body"),
    }
}

#[test]
fn lines_of_a_load_and_a_message_are_kept_within_their_limits() {
    let limits = Limits {
        max_log_lines: 2,
        max_log_bytes: 1000,
        ..lim(T)
    };
    with_worker(
        |w| {
            let (m, body) = w.next();
            assert_eq!(
                caps(&body),
                map(&[("lines", Value::Int(2)), ("bytes", Value::Int(1000))])
            );
            w.reply(&m, Kind::Log.wire(), "", &line("top level"));
            let meta = map(&[("metadata", map(&[]))]);
            w.reply(&m, Kind::Loaded.wire(), "", &meta);
            let (m, _) = w.next();
            for text in ["one", "two", "three (over the host's cap)"] {
                w.reply(&m, Kind::Log.wire(), "", &line(text));
            }
            let dropped = map(&[
                ("dropped_lines", Value::Int(5)),
                ("dropped_bytes", Value::Int(50)),
            ]);
            w.reply(&m, Kind::Log.wire(), "", &dropped);
            w.reply(&m, Kind::Done.wire(), "", &Value::None);
            // A message that prints within its caps reports no drops.
            let (m, _) = w.next();
            w.reply(&m, Kind::Log.wire(), "", &line("quiet"));
            w.reply(&m, Kind::Done.wire(), "", &Value::None);
        },
        |c| {
            let loaded = c.load_within("n", "p.py", "src", &limits).unwrap();
            assert_eq!(loaded.logs, (vec![stdout("top level")], None));
            let mut rec = Recorder::default();
            c.invoke("n", map(&[]), map(&[]), &limits, &mut rec)
                .unwrap();
            assert_eq!(rec.logs, vec![stdout("one"), stdout("two")]);
            let cut = "three (over the host's cap)".len() as u64 + 1;
            assert_eq!(rec.dropped, vec![(6, 50 + cut)]);
            let mut rec = Recorder::default();
            c.invoke("n", map(&[]), map(&[]), &limits, &mut rec)
                .unwrap();
            assert_eq!((rec.logs, rec.dropped), (vec![stdout("quiet")], vec![]));
        },
    );
}

#[test]
fn a_malformed_log_record_is_hostile() {
    with_worker(
        |w| {
            let (m, _) = w.next();
            w.reply(&m, Kind::Log.wire(), "", &Value::Str("not a map".into()));
        },
        |c| {
            let mut rec = Recorder::default();
            match c.invoke("n", map(&[]), map(&[]), &lim(T), &mut rec) {
                Err(WorkerError::Hostile(why)) => assert!(why.contains("map"), "{why}"),
                other => panic!("expected a hostile worker, got {other:?}"),
            }
        },
    );
}

#[test]
fn a_flood_of_log_records_is_a_limit_breach() {
    let limits = Limits {
        max_log_lines: 3,
        ..lim(T)
    };
    let records = 3 + crate::guest_log::RECORD_SLACK + 1;
    with_worker(
        |w| {
            let (m, _) = w.next();
            for i in 0..records {
                w.reply(&m, Kind::Log.wire(), "", &line(&format!("line {i}")));
            }
        },
        |c| {
            let mut rec = Recorder::default();
            match c.invoke("n", map(&[]), map(&[]), &limits, &mut rec) {
                Err(WorkerError::Limit(why)) => assert!(why.contains("max_log_lines"), "{why}"),
                other => panic!("expected a limit breach, got {other:?}"),
            }
            assert_eq!(rec.logs.len(), 3, "the cap's lines were logged");
            assert!(c.is_poisoned(), "the VM is not trusted again");
        },
    );
}
