//! A pool of fresh sandbox VMs per runtime: `preload_count` clones are kept
//! restored and ready (refilled in the background as they are taken), at
//! most `max_size` VMs of the pool exist at once (lent ones included), and
//! a clone is never reused: a VM that served one actor is stopped when it
//! is given back or dropped, so nothing of one actor reaches another.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::sandbox::{SandboxError, SandboxVm, VmSpec};

/// Pool sizes and limits (defaults: 5 preloaded, at most 20).
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Ready clones kept waiting.
    pub preload_count: usize,
    /// Most VMs of this pool alive at once, lent and waiting.
    pub max_size: usize,
    /// How long one restore may take to reach a ready agent.
    pub restore_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            preload_count: 5,
            max_size: 20,
            restore_timeout: Duration::from_secs(120),
        }
    }
}

/// Why the pool could not lend a VM.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The pool is at its size limit and no VM became free in time.
    #[error("all {max} VMs of the pool are in use and none was freed within {waited:?}")]
    Exhausted {
        /// The pool's [`PoolConfig::max_size`].
        max: usize,
        /// How long the caller waited (the `wait` given to `acquire`).
        waited: Duration,
    },
    /// Restoring a VM for the caller failed.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The pool has been shut down and lends no more VMs.
    #[error("the pool is shut down")]
    Closed,
    /// Preparing a restored VM (see [`VmPool::with_prepare`]) failed.
    #[error("preparing a restored VM: {0}")]
    Prepare(String),
}

/// Work done on every clone of a pool after its restore and before it
/// waits or is lent (see [`VmPool::with_prepare`]).
pub type Prepare = Arc<dyn Fn(&mut SandboxVm) -> Result<(), String> + Send + Sync>;

/// Hears each restore of a pool: how long it took (with its preparation)
/// and whether it gave a VM (see [`PoolHooks`]).
pub type RestoreObserver = Arc<dyn Fn(Duration, bool) + Send + Sync>;

/// What a pool does besides restoring (see [`VmPool::with_hooks`]).
#[derive(Clone, Default)]
pub struct PoolHooks {
    /// Work on every clone after its restore (see [`VmPool::with_prepare`]).
    pub prepare: Option<Prepare>,
    /// Hears every restore, the first ones included (metrics).
    pub observer: Option<RestoreObserver>,
}

struct State {
    ready: VecDeque<SandboxVm>,
    /// VMs alive or being restored: ready + lent + restoring.
    live: usize,
    /// Background restores under way.
    refilling: usize,
    closed: bool,
    last_error: Option<String>,
}

struct Inner {
    spec: VmSpec,
    config: PoolConfig,
    prepare: Option<Prepare>,
    observer: Option<RestoreObserver>,
    state: Mutex<State>,
    changed: Condvar,
}

/// A VM pool (cheap to clone: all clones share one pool).
#[derive(Clone)]
pub struct VmPool {
    inner: Arc<Inner>,
}

/// A VM lent by the pool; the pool counts it until it is dropped.
pub struct PooledVm {
    vm: Option<SandboxVm>,
    pool: Arc<Inner>,
}

impl std::ops::Deref for PooledVm {
    type Target = SandboxVm;
    fn deref(&self) -> &SandboxVm {
        self.vm.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for PooledVm {
    fn deref_mut(&mut self) -> &mut SandboxVm {
        self.vm.as_mut().expect("present until dropped")
    }
}

impl Drop for PooledVm {
    fn drop(&mut self) {
        drop(self.vm.take());
        let mut s = self.pool.state.lock();
        s.live -= 1;
        drop(s);
        self.pool.changed.notify_all();
        self.pool.refill();
    }
}

impl Inner {
    /// Starts background restores until `preload_count` clones are ready
    /// or on their way (within `max_size`).
    fn refill(self: &Arc<Self>) {
        let mut s = self.state.lock();
        while !s.closed
            && s.ready.len() + s.refilling < self.config.preload_count
            && s.live < self.config.max_size
        {
            s.live += 1;
            s.refilling += 1;
            let inner = self.clone();
            let spawned = std::thread::Builder::new()
                .name("vm-pool-refill".into())
                .spawn(move || inner.restore_one());
            if spawned.is_err() {
                s.live -= 1;
                s.refilling -= 1;
                s.last_error = Some("cannot start a refill thread".into());
                break;
            }
        }
    }

    /// A clone of the pool's spec, prepared; the observer hears it.
    fn restore(&self) -> Result<SandboxVm, PoolError> {
        let started = Instant::now();
        let result = self.restore_prepared();
        if let Some(observe) = &self.observer {
            observe(started.elapsed(), result.is_ok());
        }
        result
    }

    fn restore_prepared(&self) -> Result<SandboxVm, PoolError> {
        let mut vm = SandboxVm::restore(&self.spec, self.config.restore_timeout)?;
        if let Some(prepare) = &self.prepare {
            prepare(&mut vm).map_err(PoolError::Prepare)?;
        }
        Ok(vm)
    }

    fn restore_one(self: Arc<Self>) {
        let result = self.restore();
        if let Ok(vm) = &result {
            // A ready clone waits held: no host CPU until it is lent.
            if let Err(e) = vm.hold() {
                tracing::warn!(error = %e, "VM pool: a ready clone keeps running");
            }
        }
        let mut s = self.state.lock();
        s.refilling -= 1;
        match result {
            Ok(vm) if !s.closed => s.ready.push_back(vm),
            Ok(vm) => {
                s.live -= 1;
                drop(s);
                drop(vm);
                self.changed.notify_all();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "VM pool: a background restore failed");
                s.live -= 1;
                s.last_error = Some(e.to_string());
            }
        }
        drop(s);
        self.changed.notify_all();
    }
}

impl VmPool {
    /// A pool of clones of `spec`; starts restoring `preload_count` now.
    pub fn new(spec: VmSpec, config: PoolConfig) -> VmPool {
        VmPool::with_hooks(spec, config, PoolHooks::default())
    }

    /// A pool whose clones get `prepare` after their restore, before they
    /// wait held or are lent: work every user of a clone would do first,
    /// done off their critical path (a component golden's pool loads its
    /// script, so the first pages the worker touches after a restore are
    /// faulted in before a node waits for them). A clone whose
    /// preparation fails is dropped, like one that failed to restore.
    pub fn with_prepare(spec: VmSpec, config: PoolConfig, prepare: Prepare) -> VmPool {
        VmPool::with_hooks(
            spec,
            config,
            PoolHooks {
                prepare: Some(prepare),
                observer: None,
            },
        )
    }

    /// A pool of clones of `spec` with `hooks`; starts restoring
    /// `preload_count` now.
    pub fn with_hooks(spec: VmSpec, config: PoolConfig, hooks: PoolHooks) -> VmPool {
        let inner = Arc::new(Inner {
            spec,
            config,
            prepare: hooks.prepare,
            observer: hooks.observer,
            state: Mutex::new(State {
                ready: VecDeque::new(),
                live: 0,
                refilling: 0,
                closed: false,
                last_error: None,
            }),
            changed: Condvar::new(),
        });
        inner.refill();
        VmPool { inner }
    }

    /// A fresh, ready VM: a preloaded clone if one waits (a dead one is
    /// dropped), else one restored now if the pool has room, else the
    /// first freed within `wait`.
    pub fn acquire(&self, wait: Duration) -> Result<PooledVm, PoolError> {
        let deadline = Instant::now() + wait;
        let inner = &self.inner;
        let mut s = inner.state.lock();
        loop {
            if s.closed {
                return Err(PoolError::Closed);
            }
            while let Some(vm) = s.ready.pop_front() {
                // A held clone that sent its devices hostile input (it ran
                // between restore and hold) is discarded, not lent.
                if vm.is_alive() && !vm.misbehaved() {
                    drop(s);
                    vm.release();
                    inner.refill();
                    return Ok(self.lend(vm));
                }
                s.live -= 1;
            }
            // Restore here (rather than wait for a refill) only when no
            // refill is on its way that could serve us.
            if s.live < inner.config.max_size && s.refilling == 0 {
                s.live += 1;
                drop(s);
                let result = inner.restore();
                inner.refill();
                return match result {
                    Ok(vm) => Ok(self.lend(vm)),
                    Err(e) => {
                        inner.state.lock().live -= 1;
                        inner.changed.notify_all();
                        Err(e)
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PoolError::Exhausted {
                    max: inner.config.max_size,
                    waited: wait,
                });
            }
            inner.changed.wait_for(&mut s, left);
        }
    }

    fn lend(&self, vm: SandboxVm) -> PooledVm {
        PooledVm {
            vm: Some(vm),
            pool: self.inner.clone(),
        }
    }

    /// What this pool's clones are restored from.
    pub fn spec(&self) -> &VmSpec {
        &self.inner.spec
    }

    /// (ready, live) counts, for monitoring and tests.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.inner.state.lock();
        (s.ready.len(), s.live)
    }

    /// The most VMs this pool keeps alive at once.
    pub fn max_size(&self) -> usize {
        self.inner.config.max_size
    }

    /// The last background restore failure, if any.
    pub fn last_error(&self) -> Option<String> {
        self.inner.state.lock().last_error.clone()
    }

    /// Waits until `preload_count` clones are ready (or `wait` passes);
    /// returns how many are.
    pub fn wait_ready(&self, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        let mut s = self.inner.state.lock();
        loop {
            let want = self
                .inner
                .config
                .preload_count
                .min(self.inner.config.max_size);
            let left = deadline.saturating_duration_since(Instant::now());
            if s.ready.len() >= want
                || left.is_zero()
                || (s.refilling == 0 && s.ready.len() < want && s.last_error.is_some())
            {
                return s.ready.len();
            }
            self.inner.changed.wait_for(&mut s, left);
        }
    }

    /// Stops the waiting clones; lent ones stop when dropped.
    pub fn shutdown(&self) {
        let ready: Vec<SandboxVm> = {
            let mut s = self.inner.state.lock();
            s.closed = true;
            let ready: Vec<SandboxVm> = s.ready.drain(..).collect();
            s.live -= ready.len();
            ready
        };
        drop(ready);
        self.inner.changed.notify_all();
    }
}
