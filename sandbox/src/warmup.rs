//! Watching a script start in a golden guest (the actor worker, or a test
//! service) until it is ready: gives up when the script stops making
//! progress, says it failed, or dies, never after a fixed time.
//!
//! How long a warm-up takes differs by host several times over (where the
//! guest kernel is emulated, AMD hosts were several times slower than
//! Intel ones on the same steps), so a wall-clock cliff is wrong on one of
//! them. Instead the script reports its steps in `/run/reflow/progress`
//! (JSON, see the SDKs' `reflow/progress.*`); the host polls that file over
//! the agent's control channel, and a warm-up whose report has not changed
//! for the stall limit (default [`DEFAULT_STALL`], `REFLOW_GOLDEN_STALL_SECS`)
//! has stalled. A script that does not report progress must write its ready
//! file within the stall limit.

use std::time::{Duration, Instant};

use reflow_agent_protocol::paths::{self, PROGRESS_FILE};
use reflow_agent_protocol::request::Request;
use reflow_vmm::{ControlChannel, ControlError};

/// How long a warm-up may go without progress, unless configured.
pub const DEFAULT_STALL: Duration = Duration::from_secs(300);
/// The environment variable that sets the stall limit, in seconds.
pub const STALL_ENV: &str = "REFLOW_GOLDEN_STALL_SECS";
/// How often the host asks. Each ask is two requests the agent answers
/// with guest kernel work, taken from the warming worker's one vCPU: at
/// 0.5 s they cost a Python golden a quarter of its time on an AMD EPYC
/// `kvm_pvm` host (the SDK import took 58.7 s instead of 43 s).
const POLL: Duration = Duration::from_secs(2);
/// How often an unchanged step is reported again.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Longest error text kept from the guest's report.
const MAX_ERROR_CHARS: usize = 2000;

/// Why a warm-up did not complete.
#[derive(Debug, thiserror::Error)]
pub enum WarmupError {
    /// [`STALL_ENV`] is set to something other than a positive number.
    #[error("{STALL_ENV}={value:?}: expected a number of seconds above 0")]
    BadStall {
        /// The variable's value.
        value: String,
    },
    /// The guest agent did not start the script.
    #[error("starting {script}: {source}")]
    Spawn {
        /// The script's name.
        script: String,
        /// Why the agent's spawn request failed.
        source: ControlError,
    },
    /// Reading the script's progress or status failed.
    #[error("asking how {script} is doing: {source}")]
    Control {
        /// The script's name.
        script: String,
        /// Why the read failed.
        source: ReadError,
    },
    /// The script reported that it failed.
    #[error("{script} failed in step `{step}` after {elapsed:.1} s: {error}{steps}")]
    Failed {
        /// The script's name.
        script: String,
        /// The step it was in.
        step: String,
        /// Host seconds since the watch began.
        elapsed: f64,
        /// The error it reported (cut to 2000 characters).
        error: String,
        /// Its finished steps, one line each (empty without steps).
        steps: String,
    },
    /// The script's process exited before it was ready.
    #[error(
        "{script} exited in step `{step}` after {elapsed:.1} s without becoming ready \
         ({how}; what it printed went to the guest console, or a process worker's to the \
         bridge's standard error){steps}"
    )]
    Died {
        /// The script's name.
        script: String,
        /// How it ended, as far as the guest's `/proc` tells.
        how: String,
        /// The step it last reported.
        step: String,
        /// Host seconds since the watch began.
        elapsed: f64,
        /// Its finished steps, one line each (empty without steps).
        steps: String,
    },
    /// The script's report did not change for longer than the stall limit.
    #[error(
        "{script} stalled in step `{step}`{detail}: no progress for {stalled:.0} s \
         (after {elapsed:.1} s in all; the limit is {limit:.0} s, set {STALL_ENV} to change it){steps}"
    )]
    Stalled {
        /// The script's name.
        script: String,
        /// The step it last reported.
        step: String,
        /// The step's reported detail as ` (detail)`, or empty.
        detail: String,
        /// Host seconds since the report last changed.
        stalled: f64,
        /// Host seconds since the watch began.
        elapsed: f64,
        /// The stall limit in seconds.
        limit: f64,
        /// Its finished steps, one line each (empty without steps).
        steps: String,
    },
    /// The script's progress report is not valid JSON of the expected shape.
    #[error("{script} wrote a progress report that is not valid ({why}): {text:?}")]
    BadReport {
        /// The script's name.
        script: String,
        /// What is wrong with it.
        why: String,
        /// The report's text (cut to 200 characters).
        text: String,
    },
}

/// How patient to be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupPolicy {
    /// Longest time without progress.
    pub stall: Duration,
    /// Time between two looks.
    pub poll: Duration,
}

impl Default for WarmupPolicy {
    fn default() -> Self {
        WarmupPolicy {
            stall: DEFAULT_STALL,
            poll: POLL,
        }
    }
}

impl WarmupPolicy {
    /// The default policy with the stall limit from `REFLOW_GOLDEN_STALL_SECS`
    /// when it is set.
    pub fn from_env() -> Result<WarmupPolicy, WarmupError> {
        let value = std::env::var(STALL_ENV).ok();
        WarmupPolicy::with_stall(value.as_deref())
    }

    /// The default policy with the stall limit `value` (seconds), if any.
    pub fn with_stall(value: Option<&str>) -> Result<WarmupPolicy, WarmupError> {
        let mut policy = WarmupPolicy::default();
        if let Some(value) = value {
            let secs: f64 = value.trim().parse().unwrap_or(f64::NAN);
            if !(secs > 0.0 && secs.is_finite() && secs < 1e9) {
                return Err(WarmupError::BadStall {
                    value: value.to_string(),
                });
            }
            policy.stall = Duration::from_secs_f64(secs);
        }
        Ok(policy)
    }
}

/// One finished step of a warm-up, as the script measured it in the guest.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct StepTime {
    /// The step's name.
    pub name: String,
    /// Guest time the step took.
    pub secs: f64,
    /// The script's user CPU time during it.
    pub user: f64,
    /// Its system CPU time (guest kernel work).
    pub sys: f64,
    /// Minor page faults during it (served from memory).
    pub minflt: u64,
    /// Major page faults during it (read from disk).
    pub majflt: u64,
}

impl std::fmt::Display for StepTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:.1} s (user {:.1} s, sys {:.1} s, {} page faults, {} from disk)",
            self.name,
            self.secs,
            self.user,
            self.sys,
            self.minflt + self.majflt,
            self.majflt
        )
    }
}

/// One line per step, for messages (empty without steps).
pub fn describe_steps(steps: &[StepTime]) -> String {
    steps.iter().map(|s| format!("\n  - {s}")).collect()
}

/// The script's report.
#[derive(Debug, Clone, Default, serde::Deserialize)]
struct Report {
    state: String,
    #[serde(default)]
    step: String,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    steps: Vec<StepTime>,
}

/// A warm-up that completed.
#[derive(Debug, Clone)]
pub struct Started {
    /// The steps the script reported (none if it does not report).
    pub steps: Vec<StepTime>,
    /// Host time from the start of the watch to ready.
    pub took: Duration,
}

/// Why [`Guest::read`] could not read a file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The guest agent's request failed.
    #[error("the guest agent: {0}")]
    Agent(#[from] ControlError),
    /// The file, on the host (a process worker's run directory), could
    /// not be read.
    #[error("reading {}: {source}", path.display())]
    Host {
        /// The host path.
        path: std::path::PathBuf,
        /// The OS's error.
        source: std::io::Error,
    },
}

/// What the watch asks of the guest.
pub trait Guest {
    /// The text of the guest file `path` (in the agent's view), or `None`
    /// when it does not exist.
    fn read(&mut self, path: &str) -> Result<Option<String>, ReadError>;
    /// Waits `d` before the next look.
    fn sleep(&mut self, d: Duration);
    /// The current time.
    fn now(&self) -> Instant;
}

/// The real guest, over the agent's control channel.
pub struct AgentGuest<'a> {
    /// The control channel to the guest agent.
    pub control: &'a mut ControlChannel,
    /// Longest wait for one answer.
    pub timeout: Duration,
}

impl Guest for AgentGuest<'_> {
    fn read(&mut self, path: &str) -> Result<Option<String>, ReadError> {
        let request = Request::ReadFile { path: path.into() };
        match self.control.request(&request, self.timeout) {
            Ok(text) => Ok(Some(text)),
            // The agent refuses to read a file that is not there.
            Err(ControlError::Refused { message, .. }) => {
                tracing::debug!(path, %message, "the guest agent could not read a file");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// How the process whose `/proc/<pid>/stat` reads `stat` ended, or `None`
/// while it still runs.
fn ended(stat: Option<&str>) -> Option<String> {
    let Some(stat) = stat else {
        return Some("its process is gone".into());
    };
    // "pid (comm) S ...": the state follows the last ')'; the wait status
    // of a zombie is field 52, the 50th after the state.
    let fields: Vec<&str> = match stat.rfind(')') {
        Some(i) => stat[i + 1..].split_whitespace().collect(),
        None => Vec::new(),
    };
    if !matches!(fields.first(), Some(&"Z") | Some(&"X") | Some(&"x")) {
        return None;
    }
    Some(match fields.get(49).and_then(|f| f.parse::<i32>().ok()) {
        Some(status) if status & 0x7f != 0 => format!("killed by signal {}", status & 0x7f),
        Some(status) => format!("exit status {}", status >> 8),
        None => "its process is a zombie".into(),
    })
}

fn cut(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if out.len() < text.len() {
        out.push_str("...");
    }
    out
}

/// Starts `program args` in the guest's language image through the agent
/// and [`watch`]es it, by the name `script`, until it is ready.
pub fn spawn_and_watch(
    c: &mut ControlChannel,
    program: &str,
    args: Vec<String>,
    script: &str,
    ready: &str,
    policy: WarmupPolicy,
    progress: &dyn Fn(&str),
) -> Result<Started, WarmupError> {
    let spawn = Request::Spawn {
        program: program.into(),
        args,
    };
    let pid = c
        .request(&spawn, policy.stall)
        .map_err(|source| WarmupError::Spawn {
            script: script.to_string(),
            source,
        })?;
    // The agent answers `pid=<n>`.
    let pid = pid.strip_prefix("pid=").and_then(|p| p.parse().ok());
    let mut guest = AgentGuest {
        control: c,
        timeout: policy.stall,
    };
    watch(&mut guest, script, pid, ready, policy, progress)
}

/// Watches `script` (process `pid`, when known) until it is ready: its
/// progress report says so or, for a script that does not report, its
/// ready file `ready` (under the image's `/run/reflow`) exists. `progress`
/// hears each step as it starts and a heartbeat while it lasts.
pub fn watch(
    guest: &mut dyn Guest,
    script: &str,
    pid: Option<u32>,
    ready: &str,
    policy: WarmupPolicy,
    progress: &dyn Fn(&str),
) -> Result<Started, WarmupError> {
    let started = guest.now();
    let progress_path = paths::in_image(PROGRESS_FILE);
    let ready_path = paths::ready_file(ready);
    let control = |source| WarmupError::Control {
        script: script.to_string(),
        source,
    };
    let mut last_text: Option<String> = None;
    let mut report = Report {
        state: "step".into(),
        step: "starting the interpreter".into(),
        ..Report::default()
    };
    let mut changed = started;
    let mut said: Option<(String, Instant)> = None;
    loop {
        let text = guest.read(&progress_path).map_err(control)?;
        let now = guest.now();
        if text != last_text {
            changed = now;
            if let Some(t) = &text {
                report = serde_json::from_str(t).map_err(|e| WarmupError::BadReport {
                    script: script.to_string(),
                    why: e.to_string(),
                    text: cut(t, 200),
                })?;
            }
            last_text = text;
        }
        let elapsed = now.duration_since(started);
        match report.state.as_str() {
            "ready" => {
                return Ok(Started {
                    steps: report.steps,
                    took: elapsed,
                })
            }
            "failed" => {
                return Err(WarmupError::Failed {
                    script: script.to_string(),
                    step: report.step,
                    elapsed: elapsed.as_secs_f64(),
                    error: cut(
                        report.error.as_deref().unwrap_or("(no reason given)"),
                        MAX_ERROR_CHARS,
                    ),
                    steps: describe_steps(&report.steps),
                })
            }
            "step" => {}
            other => {
                return Err(WarmupError::BadReport {
                    script: script.to_string(),
                    why: format!("unknown state {:?}", cut(other, 40)),
                    text: cut(last_text.as_deref().unwrap_or(""), 200),
                })
            }
        }
        // A script that does not report says it is ready by its file alone.
        if last_text.is_none() && guest.read(&ready_path).map_err(control)?.is_some() {
            return Ok(Started {
                steps: Vec::new(),
                took: elapsed,
            });
        }
        let quiet = now.duration_since(changed);
        if let Some(pid) = pid.filter(|_| quiet >= policy.poll) {
            let stat = guest.read(&format!("/proc/{pid}/stat")).map_err(control)?;
            if let Some(how) = ended(stat.as_deref()) {
                return Err(WarmupError::Died {
                    script: script.to_string(),
                    how,
                    steps: describe_steps(&report.steps),
                    step: report.step,
                    elapsed: elapsed.as_secs_f64(),
                });
            }
        }
        if quiet > policy.stall {
            return Err(WarmupError::Stalled {
                script: script.to_string(),
                step: report.step,
                detail: if report.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", cut(&report.detail, 200))
                },
                stalled: quiet.as_secs_f64(),
                elapsed: elapsed.as_secs_f64(),
                limit: policy.stall.as_secs_f64(),
                steps: describe_steps(&report.steps),
            });
        }
        let due = match &said {
            Some((step, at)) => *step != report.step || now.duration_since(*at) >= HEARTBEAT,
            None => true,
        };
        if due {
            let detail = if report.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", cut(&report.detail, 120))
            };
            progress(&format!(
                "{script}: {}{detail} ({:.0} s)",
                report.step,
                elapsed.as_secs_f64()
            ));
            said = Some((report.step.clone(), now));
        }
        guest.sleep(policy.poll);
    }
}

#[cfg(test)]
#[path = "warmup_tests.rs"]
mod tests;
