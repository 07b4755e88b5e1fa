//! The benches' sink actor: hands every packet it gets to a channel, so a
//! bench thread can wait for (and time) what reaches the end of a graph;
//! and the graph around a middle node that the graph benches time, one
//! message at a time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::BenchmarkGroup;
use reflow_actor::message::Message;
use reflow_actor::{Actor, ActorBehavior, ActorContext, ActorLoad, Port};
use reflow_network::connector::{ConnectionPoint, Connector};
use reflow_network::network::Network;
use reflow_sandbox::natives::native;
use reflow_sandbox::run::network_config;

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

/// `src (Add) -> mid -> dst (Add) -> probe`, started; `mid` is `actor`
/// with ports `ports` (in, out).
pub fn network(
    actor: Arc<dyn Actor>,
    ports: (&str, &str),
    seen: flume::Sender<Message>,
) -> Network {
    let mut n = Network::new(network_config());
    n.register_actor("Add", native("Add").expect("Add"))
        .unwrap();
    n.register_actor_arc("Mid", actor).unwrap();
    n.register_actor("Probe", Probe::new(seen)).unwrap();
    for (id, component) in [
        ("src", "Add"),
        ("mid", "Mid"),
        ("dst", "Add"),
        ("probe", "Probe"),
    ] {
        n.add_node(id, component, None).unwrap();
    }
    let (in_port, out_port) = ports;
    n.add_connection(Connector::new(point("src", "out"), point("mid", in_port)));
    n.add_connection(Connector::new(point("mid", out_port), point("dst", "in")));
    n.add_connection(Connector::new(point("dst", "out"), point("probe", "in")));
    n.start().unwrap();
    n
}

/// Sends `i` in and waits for `i + 3` at the probe.
pub fn one_message(n: &Network, seen: &flume::Receiver<Message>, i: i64) -> Duration {
    let t = Instant::now();
    n.send_to_actor("src", "in", Message::Integer(i)).unwrap();
    match seen.recv_timeout(Duration::from_secs(60)) {
        Ok(Message::Integer(got)) => assert_eq!(got, i + 3),
        other => panic!("the probe got {other:?}"),
    }
    t.elapsed()
}

/// Times single messages through `n` (built by [`network`]): the first
/// (the node takes its VM and loads its script), 19 more to warm up,
/// criterion's run as `name` in `group`, then `samples` messages of the
/// report's own, apart from criterion's. Returns the first message's time
/// and the samples, sorted.
pub fn message_latency(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    n: &Network,
    seen: &flume::Receiver<Message>,
    samples: usize,
) -> (Duration, Vec<Duration>) {
    let first = one_message(n, seen, 0);
    for i in 1..20 {
        one_message(n, seen, i);
    }
    group.bench_function(name, |b| {
        b.iter_custom(|iters| (0..iters).map(|i| one_message(n, seen, i as i64)).sum())
    });
    let mut i = 0;
    let times = crate::sample(samples, || {
        one_message(n, seen, i);
        i += 1;
    });
    (first, times)
}
