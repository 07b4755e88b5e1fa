//! One graph node's sandbox: the VM it holds (taken from its runtime's
//! pool on first use, with the script loaded), a window of messages in
//! flight through it (answered one at a time, in order), and what happens
//! to the VM, and to the messages it had not started, when something goes
//! wrong.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reflow_ring::Value;
#[cfg(feature = "testing")]
use reflow_sandbox_core::StopHandle;

use crate::guest_logs::{GuestLogs, LogGate};
use crate::handler::StoreHandler;
use crate::metrics::{outcome, NodeMetrics};
use crate::shared::{Shared, Tracked};
use crate::state::Scope;
use crate::trace_events::ReflowTrace;
use reflow_sandbox_core::limits::Limits;
use reflow_sandbox_core::pool::{PoolError, PooledVm};
use reflow_sandbox_core::protocol::{ActorError, StateRequest};
use reflow_sandbox_core::worker::{InvokeHandler, StreamHandler, Window, WorkerError};
use reflow_sandbox_core::{ErrorKind, Fate, IsolationKind, LogLine, Script};

use crate::versions::{ScriptVersions, Version};

/// Why a message got an error instead of (all of) its outputs.
#[derive(Debug, thiserror::Error)]
pub enum ActorFailure {
    /// The pool could not lend the node a sandbox.
    #[error("no sandbox for the actor: {0}")]
    NoVm(#[from] PoolError),
    /// The actor failed to load or raised; its VM is fine.
    #[error("{0}")]
    Actor(ActorError),
    /// The message ran past the actor's timeout (given); its sandbox is
    /// killed.
    #[error("the actor ran past its {1:?} limit; its {sandbox} was killed and will be replaced", sandbox = .0.noun())]
    Timeout(IsolationKind, Duration),
    /// The sandbox ended; why, as far as the host knows.
    #[error("the actor's {sandbox} stopped while running it ({1}); it will be replaced", sandbox = .0.noun())]
    Died(IsolationKind, String),
    /// The message timed out (after the duration given) because the
    /// worker process had ended while its VM lived on.
    #[error("the actor's worker process ended while running it (its VM lived on); no answer came within {0:?}, and the VM was discarded")]
    WorkerGone(Duration),
    /// The guest broke the worker protocol (how); its sandbox is
    /// discarded.
    #[error("the sandbox broke the protocol ({1}); its {sandbox} was discarded", sandbox = .0.noun())]
    Hostile(IsolationKind, String),
    /// The actor went over one of its limits (which); its sandbox is
    /// discarded.
    #[error("the actor went past a limit ({1}); its {sandbox} was discarded", sandbox = .0.noun())]
    Limit(IsolationKind, String),
    /// The message is larger than the actor may get; it was not sent (a
    /// [`WorkerError::MessageTooLarge`]).
    #[error("{0}")]
    MessageTooLarge(WorkerError),
    /// The message could not be encoded for the ring; it was not sent.
    #[error("{0}; it was not sent")]
    Unsendable(WorkerError),
    /// An input message cannot be converted for the actor; nothing was
    /// sent.
    #[error("cannot pass the input on port {port:?}: {reason}")]
    Input {
        /// The input port the message arrived on.
        port: String,
        /// Why it cannot be converted.
        reason: String,
    },
    /// Any other worker failure (ring, poisoned client); its fate follows
    /// the worker error's.
    #[error("the sandbox failed ({1}); its {sandbox} was discarded", sandbox = .0.noun())]
    Sandbox(IsolationKind, WorkerError),
}

impl ActorFailure {
    /// The failure as text, with the actor's traceback (if any) on the
    /// lines after it.
    pub fn with_traceback(&self) -> String {
        match self {
            ActorFailure::Actor(a) if !a.traceback.is_empty() => {
                format!("{self}\n{}", a.traceback.trim_end())
            }
            _ => self.to_string(),
        }
    }

    /// The failure for what the worker of a sandbox of `kind` reported.
    fn from_worker(kind: IsolationKind, e: WorkerError) -> ActorFailure {
        match e {
            WorkerError::Actor(a) => ActorFailure::Actor(a),
            WorkerError::Timeout(t) => ActorFailure::Timeout(kind, t),
            WorkerError::Died => ActorFailure::Died(kind, "why is unknown".into()),
            WorkerError::Hostile(h) => ActorFailure::Hostile(kind, h),
            WorkerError::Limit(l) => ActorFailure::Limit(kind, l),
            e @ WorkerError::MessageTooLarge { .. } => ActorFailure::MessageTooLarge(e),
            e @ WorkerError::Encode(_) => ActorFailure::Unsendable(e),
            other => ActorFailure::Sandbox(kind, other),
        }
    }

    /// The VM's fate after this failure: the sandbox core's rule
    /// ([`WorkerError::fate`]) for what the worker reported, and for the
    /// node's own failures: no VM or an input that could not be converted
    /// leave it as it was; a worker gone quiet kills it.
    pub fn fate(&self) -> Fate {
        match self {
            ActorFailure::Actor(a) => a.fate(),
            ActorFailure::MessageTooLarge(e)
            | ActorFailure::Unsendable(e)
            | ActorFailure::Sandbox(_, e) => e.fate(),
            ActorFailure::Timeout(..)
            | ActorFailure::Died(..)
            | ActorFailure::WorkerGone(_)
            | ActorFailure::Hostile(..)
            | ActorFailure::Limit(..) => Fate::Kill,
            ActorFailure::NoVm(_) | ActorFailure::Input { .. } => Fate::Keep,
        }
    }
}

/// Messages a node keeps in flight in its VM at once: enough to hide the
/// round trip behind the worker's work on small messages; the byte bound
/// keeps a burst of large ones from filling the guest's ring (a larger
/// message still goes, alone).
const WINDOW: Window = Window {
    messages: 64,
    bytes: 4 << 20,
};

/// Where a node's answers go, one per message, in order.
/// Where a node's answers go: each message it takes gets exactly one of
/// `done` or `failed`, in the order taken; `output`s belong to the oldest
/// message not answered yet (the worker runs messages in order).
pub trait Answers {
    /// An output the running message's actor sent.
    fn output(&mut self, port: &str, value: Value);
    /// The message's returned outputs: it is done.
    fn done(&mut self, outputs: Value);
    /// The message failed (why).
    fn failed(&mut self, failure: ActorFailure);
    /// The messages answered from here on run on a reloaded version of
    /// the script (its content hash), which failures should name.
    fn reloaded(&mut self, _version: &str) {}
}

/// A message a node took and has not answered yet.
struct InFlight {
    /// Its number in the node, from 1.
    seq: u64,
    /// When it was taken (when metrics are on).
    at: Option<Instant>,
    /// Its span (`message`, target `reflow_sandbox::message`, debug):
    /// entered around the events about it, closed when it is answered.
    span: tracing::Span,
}

/// The messages a node took and has not answered yet, oldest first.
type Taken = RefCell<VecDeque<InFlight>>;

/// A stream's handler: state through the store, printed lines to the
/// node's log, everything else to the node's answers; notes a failure that
/// retires the VM, and takes no more messages after one (or after an input
/// that could not be converted).
struct NodeHandler<'a> {
    /// Its state requests only: outputs go to `answers`.
    store: StoreHandler<'a, fn(&str, Value)>,
    answers: &'a mut dyn Answers,
    metrics: &'a NodeMetrics,
    logs: GuestLogs<'a>,
    /// The messages in flight: the head's number tags its printed lines.
    taken: &'a Taken,
    /// The node and its actor, for the events it logs.
    who: Who<'a>,
    /// What the node's sandbox is, for its failures' words.
    isolation: IsolationKind,
    retire: &'a Cell<bool>,
    refused: &'a RefCell<Option<ActorFailure>>,
}

impl NodeHandler<'_> {
    /// Runs `f` with the number of the message running now (the oldest not
    /// answered) in its span.
    fn in_head<T>(&self, f: impl FnOnce(u64) -> T) -> T {
        let head = self.taken.borrow().front().map(|t| (t.seq, t.span.clone()));
        match head {
            Some((seq, span)) => span.in_scope(|| f(seq)),
            None => f(0),
        }
    }
}

impl InvokeHandler for NodeHandler<'_> {
    fn output(&mut self, port: &str, value: Value) {
        self.answers.output(port, value);
    }
    fn state(&mut self, request: StateRequest) -> Result<Value, String> {
        self.metrics.state_op();
        self.store.state(request)
    }
    fn log(&mut self, line: LogLine) {
        self.in_head(|seq| self.logs.line(seq, &line));
    }
    fn log_dropped(&mut self, lines: u64, bytes: u64) {
        self.logs.dropped(lines, bytes);
    }
}

impl StreamHandler for NodeHandler<'_> {
    fn done(&mut self, outputs: Value) {
        self.in_head(|seq| self.logs.end(seq));
        self.answers.done(outputs);
    }
    fn failed(&mut self, error: WorkerError) {
        self.in_head(|seq| self.logs.end(seq));
        let failure = ActorFailure::from_worker(self.isolation, error);
        if !failure.fate().keeps_vm() {
            self.retire.set(true);
            self.who.discarded(self.metrics, outcome(&failure));
        }
        self.answers.failed(failure);
    }
    fn more(&self) -> bool {
        !self.retire.get() && self.refused.borrow().is_none()
    }
}

/// A node and its actor, as events name them (ids, never payloads).
#[derive(Clone, Copy)]
struct Who<'a> {
    node: &'a str,
    actor: &'a str,
    /// Reflow's tracing, when the network has it on.
    trace: Option<&'a ReflowTrace>,
}

impl Who<'_> {
    /// Its VM was discarded for `reason`: counted, and told as an event.
    fn discarded(&self, metrics: &NodeMetrics, reason: &str) {
        metrics.killed(reason);
        tracing::info!(target: "reflow_sandbox::vm", node = self.node, actor = self.actor, reason, "VM discarded");
        if let Some(trace) = self.trace {
            trace.vm(self.node, "vm_discarded", &[("reason", reason.into())]);
        }
    }
}

/// A node's answers, counted: outputs, and each message's outcome and
/// latency from when it was taken (`taken`: one instant per message not
/// yet answered, oldest first; answers come in the order taken).
struct Counted<'a> {
    inner: &'a mut dyn Answers,
    metrics: &'a NodeMetrics,
    who: Who<'a>,
    taken: &'a Taken,
}

impl Counted<'_> {
    fn answered(&self, failed: Option<&ActorFailure>) {
        let message = self.taken.borrow_mut().pop_front();
        let (seq, at, span) =
            message.map_or((0, None, tracing::Span::none()), |m| (m.seq, m.at, m.span));
        let took = at.map_or(Duration::ZERO, |t| t.elapsed());
        self.metrics.answered(took, failed);
        if let (Some(trace), Some(f)) = (self.who.trace, failed) {
            trace.failed(self.who.node, seq, outcome(f), &f.to_string());
        }
        // The node, actor and seq are the span's (a JSON line has them
        // under "span"; each field formatted costs the message time).
        span.in_scope(|| {
            tracing::debug!(
                target: "reflow_sandbox::message",
                outcome = failed.map_or("ok", outcome),
                took_us = took.as_micros() as u64,
                "answered"
            )
        });
    }
}

impl Answers for Counted<'_> {
    fn output(&mut self, port: &str, value: Value) {
        self.metrics.outputs(1);
        self.inner.output(port, value);
    }
    fn done(&mut self, outputs: Value) {
        self.answered(None);
        if let Value::Map(returned) = &outputs {
            self.metrics.outputs(returned.len() as u64);
        }
        self.inner.done(outputs);
    }
    fn failed(&mut self, failure: ActorFailure) {
        self.answered(Some(&failure));
        self.inner.failed(failure);
    }
}

struct Slot {
    vm: Option<PooledVm>,
    /// Whether `vm`'s vCPUs are held (see [`Node::hold_idle`]).
    held: bool,
    last_used: Instant,
    /// The script version the node serves (its VM has it loaded).
    serving: Version,
    /// That version's component golden key (see [`crate::components`]).
    component: String,
    /// The number of a later version that did not load (the node stays on
    /// `serving` until an even later one comes); 0: none.
    rejected: u64,
}

/// A node's sandbox (shared by its dispatch loop and its behavior; one
/// of them streams messages through it at a time, under its slot's lock).
pub(crate) struct Node {
    shared: Arc<Shared>,
    /// Its actor's script, as it is updated (hot reload).
    versions: Arc<ScriptVersions>,
    /// The script's name (the same in every version the node runs).
    name: String,
    /// The content hash of the version served, readable while a message
    /// holds the slot (metrics).
    serving_hash: Mutex<String>,
    /// Messages the node has taken, in all (the last one's number).
    messages: std::sync::atomic::AtomicU64,
    /// The rate of its actor's printed lines.
    log_gate: Mutex<LogGate>,
    /// Reflow's tracing, once a network with it on started the node.
    trace: Mutex<Option<Arc<ReflowTrace>>>,
    /// Its VM's monitor process and CPU cgroup, readable while a message
    /// holds the slot (metrics).
    vm_process: Mutex<Option<VmProcess>>,
    /// Where its VMs come from: an index in `shared.pools`.
    pool: usize,
    /// What its pool's sandboxes are.
    isolation: IsolationKind,
    metrics: NodeMetrics,
    slot: Mutex<Slot>,
    /// Stops the VM the node holds (or held last) without its slot's lock,
    /// which a running message holds (for [`Tracked::kill_vm`]).
    #[cfg(feature = "testing")]
    stop: Mutex<Option<StopHandle>>,
}

impl Node {
    /// What the node's sandboxes are.
    pub fn isolation(&self) -> IsolationKind {
        self.isolation
    }

    pub fn new(shared: Arc<Shared>, versions: Arc<ScriptVersions>, pool: usize) -> Arc<Node> {
        let serving = versions.latest();
        let script = serving.script.clone();
        let component =
            reflow_sandbox_core::component::key(shared.pools[pool].pool.spec(), &script);
        crate::components::Components::start(&shared, pool, &script, &component);
        let metrics = shared.metrics.node(
            &shared.pools[pool].language.to_string(),
            &script.name,
            shared.config.metrics,
        );
        let node = Arc::new(Node {
            shared: shared.clone(),
            versions,
            name: script.name.clone(),
            serving_hash: Mutex::new(serving.hash.clone()),
            messages: Default::default(),
            log_gate: Mutex::new(LogGate::new()),
            trace: Mutex::new(None),
            vm_process: Mutex::new(None),
            pool,
            isolation: shared.pools[pool].pool.spec().isolation.kind(),
            metrics,
            slot: Mutex::new(Slot {
                vm: None,
                held: false,
                last_used: Instant::now(),
                serving,
                component,
                rejected: 0,
            }),
            #[cfg(feature = "testing")]
            stop: Mutex::new(None),
        });
        let tracked: std::sync::Weak<dyn Tracked> = Arc::downgrade(&node) as _;
        shared.track(tracked);
        node
    }

    /// Sends the node's events to Reflow's tracing too (see
    /// [`crate::trace_events`]).
    pub(crate) fn set_trace(&self, trace: Arc<ReflowTrace>) {
        *self.trace.lock() = Some(trace);
    }

    /// The index of its pool in `shared.pools`.
    pub fn pool(&self) -> usize {
        self.pool
    }

    /// Runs each message `next` gives (until it gives `None`) as node
    /// `node_id`, keeping a window of them in flight in the node's VM (see
    /// [`reflow_sandbox_core::worker::StreamHandler`]); each gets exactly one
    /// answer in `answers`, in the order taken: done or failed (an input
    /// `next` could not convert, `Some(Err(..))`, is answered in its place
    /// too). Messages the VM never started when it failed run on the next
    /// VM. Blocks: call it from a blocking thread.
    pub fn serve(
        &self,
        node_id: &str,
        config: Value,
        next: &mut dyn FnMut() -> Option<Result<Value, ActorFailure>>,
        answers: &mut dyn Answers,
    ) {
        let _busy = self.shared.busy();
        let mut slot = self.slot.lock();
        self.catch_up(&mut slot, node_id);
        // Messages taken from here on run on this version; a newer one
        // published meanwhile stops the taking, and the next call switches.
        let (serving, rejected) = (slot.serving.number, slot.rejected);
        if serving > 1 {
            answers.reloaded(&slot.serving.hash);
        }
        let script = slot.serving.script.clone();
        let taken: Taken = RefCell::new(VecDeque::new());
        let trace = self.trace.lock().clone();
        let who = Who {
            node: node_id,
            actor: &self.name,
            trace: trace.as_deref(),
        };
        let mut counted = Counted {
            inner: answers,
            metrics: &self.metrics,
            who,
            taken: &taken,
        };
        let answers: &mut dyn Answers = &mut counted;
        let limits = self.shared.config.limits_for(&script);
        let scope = Scope::new(&self.shared.config.namespace, node_id);
        let mut retry: VecDeque<Value> = VecDeque::new();
        // An input that could not be converted: answered once every message
        // taken before it is.
        let refused: RefCell<Option<ActorFailure>> = RefCell::new(None);
        let pulled = Cell::new(false);
        let mut pull = || {
            if pulled.get() {
                let latest = self.versions.number();
                if latest != serving && latest != rejected {
                    return None;
                }
            }
            let got = next();
            pulled.set(true);
            if got.is_some() {
                let number = 1 + self
                    .messages
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let at = self.metrics.on().then(Instant::now);
                let span = tracing::debug_span!(
                    target: "reflow_sandbox::message",
                    "message",
                    node = node_id,
                    actor = %self.name,
                    seq = number
                );
                taken.borrow_mut().push_back(InFlight {
                    seq: number,
                    at,
                    span,
                });
            }
            match got {
                Some(Ok(inputs)) => Some(inputs),
                Some(Err(failure)) => {
                    *refused.borrow_mut() = Some(failure);
                    None
                }
                None => None,
            }
        };
        loop {
            if let Some(failure) = refused.borrow_mut().take() {
                answers.failed(failure);
            }
            let Some(first) = retry.pop_front().or_else(&mut pull) else {
                if refused.borrow().is_some() {
                    continue;
                }
                break;
            };
            let vm = match self.vm(&mut slot, node_id, &limits) {
                Ok(vm) => vm,
                Err(failure) => {
                    let failure = self.after_failure(&mut slot, who, failure);
                    answers.failed(failure);
                    continue;
                }
            };
            let retire = Cell::new(false);
            let mut handler = NodeHandler {
                store: StoreHandler {
                    store: &self.shared.store,
                    scope: &scope,
                    runtime: &self.shared.tokio,
                    on_output: |_, _| {},
                },
                answers: &mut *answers,
                metrics: &self.metrics,
                logs: self.logs(who),
                taken: &taken,
                who,
                isolation: self.isolation,
                retire: &retire,
                refused: &refused,
            };
            let mut first = Some(first);
            let mut take = || {
                first
                    .take()
                    .or_else(|| retry.pop_front())
                    .or_else(&mut pull)
            };
            let ended = vm.with_worker(|c| {
                c.stream(node_id, &config, &limits, WINDOW, &mut take, &mut handler)
            });
            if let Err(end) = ended {
                let failure = ActorFailure::from_worker(self.isolation, end.error);
                let failure = self.after_failure(&mut slot, who, failure);
                answers.failed(failure);
                let mut again: VecDeque<Value> = end.unstarted.into();
                again.append(&mut retry);
                retry = again;
            }
            if retire.get() {
                self.drop_vm(&mut slot);
            }
            if let Some(vm) = slot.vm.as_ref().filter(|vm| vm.misbehaved()) {
                // The answers stand; the guest is not trusted again.
                tracing::warn!(
                    node = node_id,
                    reports = vm.hostile().count(),
                    recent = ?vm.hostile().recent(),
                    "the guest sent hostile input to its devices; its VM was discarded"
                );
                who.discarded(&self.metrics, "hostile_devices");
                self.drop_vm(&mut slot);
            }
        }
        slot.last_used = Instant::now();
    }

    /// What the node does after a message's `failure`: tells a worker
    /// that ended from one that went quiet, says why a sandbox that died
    /// did, and drops the sandbox unless the failure leaves it usable.
    /// Returns the failure to answer with.
    fn after_failure(&self, slot: &mut Slot, who: Who, mut failure: ActorFailure) -> ActorFailure {
        if let (ActorFailure::Timeout(kind, t), Some(vm)) = (&failure, slot.vm.as_mut()) {
            let (kind, t) = (*kind, *t);
            match kind {
                // A VM's worker may have ended while its guest lived on.
                IsolationKind::Vm if vm.is_alive() => match vm.worker_gone() {
                    Ok(true) => failure = ActorFailure::WorkerGone(t),
                    Ok(false) => {}
                    Err(why) => {
                        tracing::warn!(%why, "cannot tell whether a timed-out worker lives")
                    }
                },
                // A process worker is its process.
                IsolationKind::Process if !vm.is_alive() => {
                    failure = ActorFailure::Died(kind, "why is unknown".into())
                }
                _ => {}
            }
        }
        if let ActorFailure::Died(_, why) = &mut failure {
            if let Some(outcome) = slot.vm.as_mut().and_then(|vm| vm.finish()) {
                *why = outcome.to_string();
            }
        }
        if !failure.fate().keeps_vm() {
            // Killed now, replaced from the pool on the next message.
            if slot.vm.is_some() {
                who.discarded(&self.metrics, outcome(&failure));
            }
            self.drop_vm(slot);
        }
        failure
    }

    /// The node's VM, alive: the one it holds, or a fresh one from its pool
    /// with the script loaded.
    fn vm<'s>(
        &self,
        slot: &'s mut Slot,
        node_id: &str,
        limits: &Limits,
    ) -> Result<&'s mut PooledVm, ActorFailure> {
        if slot.vm.as_ref().is_some_and(|vm| vm.is_alive()) {
            let vm = slot.vm.as_mut().expect("checked above");
            if std::mem::take(&mut slot.held) {
                // Its worker was still spinning when it was held (see
                // `idle_spin`) and sees the next record on its next poll,
                // once the guest has resumed (4-9 ms on an AMD kvm_pvm
                // host, where the guest kernel's work is emulated).
                vm.release();
            }
            return Ok(vm);
        }
        slot.vm = None;
        slot.held = false;
        let fresh = self.fresh_vm(node_id, &slot.serving.script, &slot.component, limits)?;
        Ok(self.install(slot, fresh))
    }

    /// A VM from the pool of `component` (the runtime's until that
    /// component's golden is ready), with `script` loaded.
    fn fresh_vm(
        &self,
        node_id: &str,
        script: &Script,
        component: &str,
        limits: &Limits,
    ) -> Result<PooledVm, ActorFailure> {
        let (pool, kind) = self.shared.pool_for(self.pool, component);
        let waited = Instant::now();
        let acquired = pool.acquire(self.shared.config.acquire_timeout);
        self.metrics.waited(waited.elapsed());
        let mut fresh = acquired?;
        let spin = idle_spin(self.shared.config.idle_hold);
        let loaded = fresh
            .with_worker(|c| {
                c.idle_spin(spin)
                    .load_within(node_id, &script.name, &script.source, limits)
            })
            .map_err(|e| ActorFailure::from_worker(self.isolation, e))?;
        let waited_us = waited.elapsed().as_micros() as u64;
        let trace = self.trace.lock().clone();
        let logs = self.logs(Who {
            node: node_id,
            actor: &script.name,
            trace: trace.as_deref(),
        });
        if let Some(trace) = &trace {
            trace.vm(
                node_id,
                "vm_lent",
                &[("pool", kind.into()), ("waited_us", waited_us.into())],
            );
        }
        for line in &loaded.logs.0 {
            logs.line(0, line);
        }
        if let Some((lines, bytes)) = loaded.logs.1 {
            logs.dropped(lines, bytes);
        }
        tracing::info!(
            target: "reflow_sandbox::vm",
            node = node_id,
            actor = %script.name,
            pool = kind,
            waited_us,
            "VM lent"
        );
        Ok(fresh)
    }

    /// Where the lines `who`'s actor prints go.
    fn logs<'s>(&'s self, who: Who<'s>) -> GuestLogs<'s> {
        GuestLogs {
            gate: &self.log_gate,
            metrics: &self.metrics,
            node: who.node,
            actor: who.actor,
            trace: who.trace,
        }
    }

    /// Makes `fresh` the node's VM (the one it had is stopped).
    fn install<'s>(&self, slot: &'s mut Slot, fresh: PooledVm) -> &'s mut PooledVm {
        self.drop_vm(slot);
        *self.vm_process.lock() = Some(VmProcess {
            pid: fresh.monitor_pid(),
            cpu_group: fresh.cpu_group().map(Into::into),
        });
        #[cfg(feature = "testing")]
        {
            *self.stop.lock() = Some(fresh.stop_handle());
        }
        slot.vm.insert(fresh)
    }

    /// Switches the node to its script's latest version, if it has a new
    /// one: loaded on a fresh VM first, so a version that does not load is
    /// refused (and said so) while the node keeps serving the one it has.
    /// Called between messages.
    fn catch_up(&self, slot: &mut Slot, node_id: &str) {
        let latest = self.versions.latest();
        if latest.number == slot.serving.number || latest.number == slot.rejected {
            return;
        }
        let spec = self.shared.pools[self.pool].pool.spec();
        let component = reflow_sandbox_core::component::key(spec, &latest.script);
        crate::components::Components::start(&self.shared, self.pool, &latest.script, &component);
        let limits = self.shared.config.limits_for(&latest.script);
        let from = slot.serving.hash.clone();
        match self.fresh_vm(node_id, &latest.script, &component, &limits) {
            Ok(fresh) => {
                self.install(slot, fresh);
                tracing::info!(
                    target: "reflow_sandbox::script",
                    node = node_id,
                    actor = %self.name,
                    from = %from,
                    to = %latest.hash,
                    version = latest.number,
                    "script updated"
                );
                self.shared.metrics.script_update(&self.name, "applied");
                *self.serving_hash.lock() = latest.hash.clone();
                slot.serving = latest;
                slot.component = component;
            }
            Err(ActorFailure::Actor(a)) if a.kind == ErrorKind::Load => {
                slot.rejected = latest.number;
                self.shared.metrics.script_update(&self.name, "rejected");
                tracing::error!(
                    target: "reflow_sandbox::script",
                    node = node_id,
                    actor = %self.name,
                    version = %latest.hash,
                    serving = %from,
                    "the new version of {} does not load, so the node keeps running version {from}: {}",
                    self.name,
                    a.message
                );
            }
            Err(other) => tracing::warn!(
                target: "reflow_sandbox::script",
                node = node_id,
                actor = %self.name,
                version = %latest.hash,
                "cannot switch to the new version yet ({other}); trying again before the next message"
            ),
        }
    }

    /// Stops and forgets the node's VM.
    fn drop_vm(&self, slot: &mut Slot) {
        slot.vm = None;
        slot.held = false;
        *self.vm_process.lock() = None;
        #[cfg(feature = "testing")]
        {
            *self.stop.lock() = None;
        }
    }

    /// Holds the vCPUs of the node's VM, if it has one and runs no message
    /// now: an idle VM then uses no host CPU at all (its worker's polling
    /// and its timer ticks stop), and the node's next message releases it
    /// (its worker, still spinning when held, sees the message on its next
    /// poll once the guest has resumed).
    pub fn hold_idle(&self) {
        let Some(mut slot) = self.slot.try_lock() else {
            return;
        };
        if slot.held {
            return;
        }
        let Some(vm) = slot.vm.as_ref().filter(|vm| vm.is_alive()) else {
            return;
        };
        match vm.hold() {
            Ok(()) => {
                tracing::debug!(target: "reflow_sandbox::vm", actor = %self.name, "VM held (idle)");
                slot.held = true
            }
            // Not held (it was released again): it polls, as before.
            Err(why) => tracing::debug!(%why, script = %self.name, "cannot hold an idle VM"),
        }
    }

    /// Whether the node's VM is held now ([`Node::hold_idle`]).
    pub fn is_held(&self) -> bool {
        self.slot.lock().held
    }

    /// The monitor process of the node's VM, if it has one.
    pub fn monitor_pid(&self) -> Option<u32> {
        self.slot.lock().vm.as_ref().map(|vm| vm.monitor_pid())
    }

    /// Whether the node holds a VM now.
    pub fn has_vm(&self) -> bool {
        self.slot.lock().vm.is_some()
    }
}

/// How long a node's worker spins on an empty ring before it sleeps: past
/// the bridge's idle hold with room to spare (the hold is a host task that
/// may start late on a busy host), so an idle node's VM is held while its
/// worker spins, and its next message is seen on the worker's first poll
/// after the release instead of after a guest timer interrupt (emulated
/// guest kernel work on kvm_pvm hosts: ~10 ms on an AMD EPYC one). The
/// spin costs host CPU only until the hold.
fn idle_spin(hold: Duration) -> Duration {
    hold.saturating_mul(2) + Duration::from_millis(30)
}

/// Where a node's VM's resources can be read from.
#[derive(Debug, Clone)]
pub(crate) struct VmProcess {
    /// Its monitor process.
    pub pid: u32,
    /// Its CPU cgroup, when it has a CPU limit.
    pub cpu_group: Option<std::path::PathBuf>,
}

impl Tracked for Node {
    fn vm_process(&self) -> Option<(String, VmProcess)> {
        let language = self.shared.pools[self.pool].language.to_string();
        Some((language, self.vm_process.lock().clone()?))
    }

    fn serving(&self) -> (String, String) {
        (self.name.clone(), self.serving_hash.lock().clone())
    }

    fn vm_state(&self) -> Option<&'static str> {
        let Some(slot) = self.slot.try_lock() else {
            return Some("busy");
        };
        slot.vm.as_ref().filter(|vm| vm.is_alive())?;
        Some(if slot.held { "held" } else { "idle" })
    }

    /// Gives the VM back if the node has been idle for `idle`; a node
    /// that is running a message is left alone.
    fn release_if_idle(&self, idle: Duration) {
        let Some(mut slot) = self.slot.try_lock() else {
            return;
        };
        if slot.vm.is_some() && slot.last_used.elapsed() >= idle {
            tracing::debug!(script = %self.name, "giving back an idle VM");
            self.drop_vm(&mut slot);
        }
    }

    /// Stops the node's VM, if it has one, as if it crashed (a message it
    /// runs gets an error; the next one gets a fresh VM). Returns whether
    /// there was one to stop.
    #[cfg(feature = "testing")]
    fn kill_vm(&self) -> bool {
        let handle = self.stop.lock().take();
        handle.map(|h| h.stop()).is_some()
    }

    /// Whether the node has a VM it could stop.
    #[cfg(feature = "testing")]
    fn has_stop_handle(&self) -> bool {
        self.stop.lock().is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reflow_sandbox_core::{ErrorKind, Fate};

    use super::*;

    #[test]
    fn a_worker_error_has_the_same_fate_as_the_failure_it_becomes() {
        let actor = |kind| {
            WorkerError::Actor(ActorError {
                kind,
                message: "m".into(),
                traceback: String::new(),
            })
        };
        let errors = [
            actor(ErrorKind::Run),
            actor(ErrorKind::Load),
            actor(ErrorKind::Protocol),
            WorkerError::Timeout(Duration::from_secs(1)),
            WorkerError::Hostile("h".into()),
            WorkerError::Encode(reflow_ring::ValueError::TooDeep),
            WorkerError::Poisoned,
            WorkerError::Died,
            WorkerError::Limit("l".into()),
            WorkerError::MessageTooLarge {
                len: 2,
                max: 1,
                what: "max_message_size",
            },
        ];
        for e in errors {
            let fate = e.fate();
            let text = e.to_string();
            let failure = ActorFailure::from_worker(IsolationKind::Vm, e);
            assert_eq!(failure.fate(), fate, "{text}");
        }
        let input = ActorFailure::Input {
            port: "in".into(),
            reason: "r".into(),
        };
        assert_eq!(input.fate(), Fate::Keep);
        assert_eq!(
            ActorFailure::WorkerGone(Duration::from_secs(1)).fate(),
            Fate::Kill
        );
    }

    #[test]
    fn a_failure_names_the_kind_of_sandbox() {
        let t = Duration::from_secs(5);
        let said = |kind| ActorFailure::from_worker(kind, WorkerError::Timeout(t)).to_string();
        assert_eq!(
            said(IsolationKind::Vm),
            "the actor ran past its 5s limit; its VM was killed and will be replaced"
        );
        assert_eq!(
            said(IsolationKind::Process),
            "the actor ran past its 5s limit; its worker process was killed and will be replaced"
        );
        let died = ActorFailure::Died(IsolationKind::Process, "it exited with status 9".into());
        assert_eq!(
            died.to_string(),
            "the actor's worker process stopped while running it (it exited with status 9); \
             it will be replaced"
        );
    }
}
