//! Knowing when a graph has nothing left to do: every actor is wrapped so
//! that its instances' queues and running behaviors are counted. An actor
//! with a process of its own (a sandboxed script node's dispatch loop,
//! which keeps a window of messages in flight and holds its VM when idle)
//! keeps it: its instances count as busy while their load is above zero.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use reflow_actor::message::Message;
use reflow_actor::{Actor, ActorBehavior, ActorContext, ActorLoad, Port};

type Queue = flume::Receiver<HashMap<String, Message>>;

/// Queues and running behaviors of every tracked actor instance.
#[derive(Default)]
pub struct Activity {
    queues: Mutex<Vec<Queue>>,
    loads: Mutex<Vec<Arc<ActorLoad>>>,
    /// The loads of instances that run their own process: above zero
    /// while they work.
    own: Mutex<Vec<Arc<ActorLoad>>>,
    running: AtomicUsize,
}

impl Activity {
    /// Whether no behavior runs and every inport queue is empty (packets
    /// on their way between Reflow's forwarders are not visible: callers
    /// ask again after a moment).
    pub fn idle(&self) -> bool {
        let queues = self.queues.lock();
        self.running.load(Ordering::SeqCst) == 0
            && queues.iter().all(|q| q.is_empty())
            && self.own.lock().iter().all(|l| l.get() == 0)
    }
}

impl Activity {
    /// Marks every instance busy, so that Reflow 0.2.1's
    /// `Network::shutdown` (which aborts only busy nodes' processes) ends
    /// them all; idle ones would otherwise live on until their channels
    /// close and then print "[INPORT CLOSED]".
    pub fn mark_all_busy(&self) {
        for load in self.loads.lock().iter() {
            load.inc();
        }
    }
}

/// An actor whose instances report to an [`Activity`].
pub struct Tracked {
    inner: Arc<dyn Actor>,
    activity: Arc<Activity>,
    /// Whether `inner` runs its own process (see the module's doc).
    own_process: bool,
}

impl Tracked {
    /// `inner`, run by Reflow's process around its behavior.
    pub fn new(inner: Arc<dyn Actor>, activity: Arc<Activity>) -> Tracked {
        Tracked {
            inner,
            activity,
            own_process: false,
        }
    }

    /// `inner`, run by its own process.
    pub fn with_own_process(inner: Arc<dyn Actor>, activity: Arc<Activity>) -> Tracked {
        Tracked {
            inner,
            activity,
            own_process: true,
        }
    }
}

struct Running(Arc<Activity>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Actor for Tracked {
    fn get_behavior(&self) -> ActorBehavior {
        let inner = self.inner.get_behavior();
        let activity = self.activity.clone();
        Box::new(move |ctx: ActorContext| {
            activity.running.fetch_add(1, Ordering::SeqCst);
            let running = Running(activity.clone());
            let run = inner(ctx);
            Box::pin(async move {
                let out = run.await;
                drop(running);
                out
            })
        })
    }

    fn get_outports(&self) -> Port {
        self.inner.get_outports()
    }

    fn get_inports(&self) -> Port {
        self.inner.get_inports()
    }

    fn inport_names(&self) -> Vec<String> {
        self.inner.inport_names()
    }

    fn outport_names(&self) -> Vec<String> {
        self.inner.outport_names()
    }

    fn load_count(&self) -> Arc<ActorLoad> {
        self.inner.load_count()
    }

    fn create_instance(&self) -> Arc<dyn Actor> {
        let instance = self.inner.create_instance();
        self.activity.queues.lock().push(instance.get_inports().1);
        self.activity.loads.lock().push(instance.load_count());
        if self.own_process {
            self.activity.own.lock().push(instance.load_count());
        }
        Arc::new(Tracked {
            inner: instance,
            activity: self.activity.clone(),
            own_process: self.own_process,
        })
    }

    fn create_process(
        &self,
        config: reflow_actor::ActorConfig,
        tracing: Option<reflow_tracing_protocol::client::TracingIntegration>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>> {
        if self.own_process {
            return self.inner.create_process(config, tracing);
        }
        // Reflow's process around the counted behavior (its default).
        reflow_actor::process::ActorProcess::new(
            config.get_node_id().to_string(),
            self.get_behavior(),
            self.inport_names(),
            self.await_all_inports(),
            self.required_inports(),
            self.get_inports().1,
            self.get_outports(),
            self.create_state(),
            self.load_count(),
            config,
            tracing,
        )
        .into_future()
    }
}
