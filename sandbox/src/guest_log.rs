//! What a script prints: `LOG` records from the guest's SDK (its
//! `print`/`sys.stdout`/`sys.stderr`, or `console.*`), checked, cleaned for
//! a terminal and capped per message on the host, whatever the guest's own
//! caps did.

use reflow_ring::Value;

use crate::protocol::{into_map, MessageError};

/// Longest line kept, in bytes (the rest is counted as cut).
pub const MAX_LINE: usize = 4096;

/// LOG records a message may send beyond its line cap: the SDKs send at
/// most the cap's lines and one drop count; more is a flood, ended as a
/// limit breach rather than decoded until the message's deadline.
pub const RECORD_SLACK: usize = 16;

/// Which of the script's streams a line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// `print`, `sys.stdout`, `console.log`/`info`/`debug`.
    Stdout,
    /// `sys.stderr`, `console.error`/`warn`.
    Stderr,
}

impl LogStream {
    /// Its name in events and metrics.
    pub fn name(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One line a script printed, safe to show on a terminal: control
/// characters other than tab are escaped (`\u{1b}`), so a script cannot
/// forge log lines or drive the operator's terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The stream it was written to.
    pub stream: LogStream,
    /// The line, without its newline, cut to [`MAX_LINE`] bytes.
    pub text: String,
    /// Bytes cut from its end (by the guest or the host); 0 for a whole line.
    pub cut: u64,
}

/// A `LOG` record: a line, or the guest's count of what it dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRecord {
    /// `{"stream": "stdout"|"stderr", "line": str, "cut": int}`.
    Line(LogLine),
    /// `{"dropped_lines": int, "dropped_bytes": int}`: what the guest's
    /// SDK did not send (over its caps, or printed outside a message).
    Dropped {
        /// Lines not sent.
        lines: u64,
        /// Their bytes.
        bytes: u64,
    },
}

impl LogRecord {
    /// Parses a `LOG` record's value.
    pub fn parse(v: Value) -> Result<LogRecord, MessageError> {
        let fields = into_map(v)?;
        let get = |key: &str| fields.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let count = |key: &'static str| match get(key) {
            None => Ok(0),
            Some(Value::Int(n)) => u64::try_from(*n).map_err(|_| MessageError::Field(key)),
            Some(_) => Err(MessageError::Field(key)),
        };
        let Some(line) = get("line") else {
            return Ok(LogRecord::Dropped {
                lines: count("dropped_lines")?,
                bytes: count("dropped_bytes")?,
            });
        };
        let Value::Str(line) = line else {
            return Err(MessageError::Field("line"));
        };
        let stream = match get("stream") {
            Some(Value::Str(s)) if s == "stdout" => LogStream::Stdout,
            Some(Value::Str(s)) if s == "stderr" => LogStream::Stderr,
            _ => return Err(MessageError::Field("stream")),
        };
        let (text, cut_here) = clean(line, MAX_LINE);
        Ok(LogRecord::Line(LogLine {
            stream,
            text,
            cut: count("cut")?.saturating_add(cut_here),
        }))
    }
}

/// `s` cut to at most `max` bytes (on a character boundary, before
/// escaping) with its control characters escaped, and the bytes cut.
fn clean(s: &str, max: usize) -> (String, u64) {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let kept = &s[..end];
    let mut text = String::with_capacity(kept.len());
    for c in kept.chars() {
        if c.is_control() && c != '\t' {
            text.extend(c.escape_unicode());
        } else {
            text.push(c);
        }
    }
    (text, (s.len() - end) as u64)
}

/// One message's log budget: lines and bytes it may still log, and what
/// was dropped (by the guest, or here over the caps).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogBudget {
    lines: usize,
    bytes: usize,
    /// LOG records still allowed, kept or not.
    records: usize,
    /// Lines dropped so far.
    pub dropped_lines: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
}

impl LogBudget {
    /// A budget of `lines` lines and `bytes` bytes.
    pub fn new(lines: usize, bytes: usize) -> LogBudget {
        LogBudget {
            lines,
            bytes,
            records: lines.saturating_add(RECORD_SLACK),
            ..LogBudget::default()
        }
    }

    /// Counts one more LOG record; false once the message sent more than
    /// its line cap and [`RECORD_SLACK`] (a flood: no SDK does that).
    pub fn record(&mut self) -> bool {
        match self.records.checked_sub(1) {
            Some(left) => {
                self.records = left;
                true
            }
            None => false,
        }
    }

    /// The line of `record` if the budget takes it; a dropped count (the
    /// guest's, or this line over the caps) is added up instead.
    pub fn admit(&mut self, record: LogRecord) -> Option<LogLine> {
        match record {
            LogRecord::Dropped { lines, bytes } => {
                self.dropped_lines = self.dropped_lines.saturating_add(lines);
                self.dropped_bytes = self.dropped_bytes.saturating_add(bytes);
                None
            }
            LogRecord::Line(line) => {
                let size = line.text.len() + 1;
                if self.lines == 0 || size > self.bytes {
                    self.lines = 0;
                    self.dropped_lines += 1;
                    self.dropped_bytes = self.dropped_bytes.saturating_add(size as u64);
                    return None;
                }
                self.lines -= 1;
                self.bytes -= size;
                Some(line)
            }
        }
    }

    /// What was dropped, if anything: (lines, bytes).
    pub fn dropped(&self) -> Option<(u64, u64)> {
        (self.dropped_lines > 0 || self.dropped_bytes > 0)
            .then_some((self.dropped_lines, self.dropped_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tests::map;

    fn line(stream: &str, text: &str) -> Value {
        map(&[
            ("stream", Value::Str(stream.into())),
            ("line", Value::Str(text.into())),
        ])
    }

    #[test]
    fn lines_and_drop_counts_are_parsed() {
        assert_eq!(
            LogRecord::parse(line("stderr", "oops")).unwrap(),
            LogRecord::Line(LogLine {
                stream: LogStream::Stderr,
                text: "oops".into(),
                cut: 0
            })
        );
        assert_eq!(
            LogRecord::parse(map(&[
                ("dropped_lines", Value::Int(3)),
                ("dropped_bytes", Value::Int(40)),
            ]))
            .unwrap(),
            LogRecord::Dropped {
                lines: 3,
                bytes: 40
            }
        );
    }

    #[test]
    fn malformed_records_are_refused() {
        let bad = [
            (Value::Str("x".into()), MessageError::NotAMap("a string")),
            (line("stdin", "x"), MessageError::Field("stream")),
            (
                map(&[
                    ("line", Value::Int(1)),
                    ("stream", Value::Str("stdout".into())),
                ]),
                MessageError::Field("line"),
            ),
            (
                map(&[("dropped_lines", Value::Int(-1))]),
                MessageError::Field("dropped_lines"),
            ),
            (
                map(&[("dropped_bytes", Value::Str("9".into()))]),
                MessageError::Field("dropped_bytes"),
            ),
        ];
        for (v, want) in bad {
            assert_eq!(LogRecord::parse(v), Err(want));
        }
    }

    #[test]
    fn control_characters_are_escaped_and_long_lines_cut() {
        let LogRecord::Line(l) = LogRecord::parse(line("stdout", "a\x1b[2Jb\r\nc\td")).unwrap()
        else {
            panic!("a line");
        };
        assert_eq!(l.text, "a\\u{1b}[2Jb\\u{d}\\u{a}c\td");
        let long = "é".repeat(MAX_LINE);
        let LogRecord::Line(l) = LogRecord::parse(line("stdout", &long)).unwrap() else {
            panic!("a line");
        };
        assert_eq!(l.text.len(), MAX_LINE);
        assert_eq!(l.cut as usize, long.len() - MAX_LINE);
    }

    #[test]
    fn the_budget_keeps_lines_then_counts_the_rest() {
        let mut b = LogBudget::new(2, 1000);
        let rec = |t: &str| LogRecord::parse(line("stdout", t)).unwrap();
        assert!(b.admit(rec("one")).is_some());
        assert!(b.admit(rec("two")).is_some());
        assert!(b.admit(rec("three")).is_none());
        b.admit(LogRecord::Dropped {
            lines: 10,
            bytes: 100,
        });
        assert_eq!(b.dropped(), Some((11, 106)));
        let mut b = LogBudget::new(100, 10);
        assert!(b.admit(rec("12345678")).is_some());
        assert!(b.admit(rec("x")).is_none(), "over the byte cap");
        assert!(b.admit(rec("")).is_none(), "nothing after the cap");
        assert_eq!(LogBudget::new(1, 1).dropped(), None);
    }

    #[test]
    fn records_past_the_cap_and_its_slack_are_a_flood() {
        let mut b = LogBudget::new(3, 10);
        assert_eq!(
            (0..3 + RECORD_SLACK).filter(|_| b.record()).count(),
            3 + RECORD_SLACK
        );
        assert!(!b.record());
    }
}
