//! The benches' sink actor: hands every packet it gets to a channel, so a
//! bench thread can wait for (and time) what reaches the end of a graph.

use std::collections::HashMap;
use std::sync::Arc;

use reflow_actor::message::Message;
use reflow_actor::{Actor, ActorBehavior, ActorContext, ActorLoad, Port};
use reflow_network::connector::ConnectionPoint;

/// A sink that sends each message it receives (routing artifacts,
/// `Optional(None)`, left out) to `seen`.
pub struct Probe {
    inports: Port,
    outports: Port,
    seen: flume::Sender<Message>,
}

impl Probe {
    /// A probe that reports to `seen`.
    pub fn new(seen: flume::Sender<Message>) -> Probe {
        Probe {
            inports: flume::unbounded(),
            outports: flume::unbounded(),
            seen,
        }
    }
}

impl Actor for Probe {
    fn get_behavior(&self) -> ActorBehavior {
        let seen = self.seen.clone();
        Box::new(move |ctx: ActorContext| {
            let seen = seen.clone();
            Box::pin(async move {
                for (_, m) in ctx.payload {
                    if !matches!(m, Message::Optional(None)) {
                        let _ = seen.send(m);
                    }
                }
                Ok(HashMap::new())
            })
        })
    }
    fn get_outports(&self) -> Port {
        self.outports.clone()
    }
    fn get_inports(&self) -> Port {
        self.inports.clone()
    }
    fn load_count(&self) -> Arc<ActorLoad> {
        Arc::new(ActorLoad::new(0))
    }
    fn create_instance(&self) -> Arc<dyn Actor> {
        Arc::new(Probe::new(self.seen.clone()))
    }
}

/// A connection end: `actor`'s `port`.
pub fn point(actor: &str, port: &str) -> ConnectionPoint {
    ConnectionPoint {
        actor: actor.into(),
        port: port.into(),
        initial_data: None,
    }
}
