//! Native Rust actors built into the CLI, for graphs that mix them with
//! script actors:
//!
//! | component | in | out | does |
//! |---|---|---|---|
//! | `Range` | `count` (integer n) | `out` | sends 1, 2, ..., n, one packet each |
//! | `Add` | `in` (number) | `out` | adds the node's `amount` config (default 1) |
//! | `Format` | `in` (anything) | `out` | renders the node's `template` config, `{}` standing for the input |
//!
//! Each takes the first port of its packet it knows; a packet of nothing
//! but `Optional(None)` (Reflow's routing of another port's packet) is
//! ignored.

use std::collections::HashMap;
use std::sync::Arc;

use reflow_actor::message::Message;
use reflow_actor::{Actor, ActorBehavior, ActorConfig, ActorContext, ActorLoad, Port};

/// What one native actor does with one input: the packets to send.
type Step = fn(&Message, &ActorConfig) -> Result<Vec<Message>, String>;

/// A native actor with one inport and one outport `out`.
pub struct Native {
    inport: &'static str,
    step: Step,
    inports: Port,
    outports: Port,
    load: Arc<ActorLoad>,
}

impl Native {
    fn new(inport: &'static str, step: Step) -> Native {
        Native {
            inport,
            step,
            inports: flume::unbounded(),
            outports: flume::unbounded(),
            load: Arc::new(ActorLoad::new(0)),
        }
    }
}

/// The built-in native component named `name`.
pub fn native(name: &str) -> Option<Native> {
    Some(match name {
        "Range" => Native::new("count", range),
        "Add" => Native::new("in", add),
        "Format" => Native::new("in", format),
        _ => return None,
    })
}

/// The names of the built-in native components.
pub const NATIVES: &[&str] = &["Range", "Add", "Format"];

/// The inport of the built-in native component `name` (each has the one
/// outport `out`).
pub fn inport(name: &str) -> Option<&'static str> {
    native(name).map(|n| n.inport)
}

fn range(m: &Message, _: &ActorConfig) -> Result<Vec<Message>, String> {
    match m {
        Message::Integer(n) if (0..=1_000_000).contains(n) => {
            Ok((1..=*n).map(Message::Integer).collect())
        }
        other => Err(format!(
            "count must be an integer 0..=1000000, not {other:?}"
        )),
    }
}

fn add(m: &Message, config: &ActorConfig) -> Result<Vec<Message>, String> {
    let amount = config.get_number("amount").unwrap_or(1.0);
    Ok(vec![match m {
        Message::Integer(n) if amount.fract() == 0.0 => Message::Integer(n + amount as i64),
        Message::Integer(n) => Message::Float(*n as f64 + amount),
        Message::Float(x) => Message::Float(x + amount),
        other => return Err(format!("Add needs a number, not {other:?}")),
    }])
}

fn format(m: &Message, config: &ActorConfig) -> Result<Vec<Message>, String> {
    let template = config.get_string("template").unwrap_or_else(|| "{}".into());
    let text = match m {
        Message::String(s) => s.as_str().to_string(),
        other => crate::show::message(other),
    };
    Ok(vec![Message::string(template.replace("{}", &text))])
}

impl Actor for Native {
    fn get_behavior(&self) -> ActorBehavior {
        let (inport, step) = (self.inport, self.step);
        Box::new(move |ctx: ActorContext| {
            Box::pin(async move {
                let Some(m) = ctx.payload.get(inport) else {
                    return Ok(HashMap::new());
                };
                if matches!(m, Message::Optional(None)) {
                    return Ok(HashMap::new());
                }
                let node = ctx.config.get_node_id();
                let out = step(m, &ctx.config).map_err(|e| anyhow::anyhow!("{node}: {e}"))?;
                for packet in out {
                    ctx.outports
                        .0
                        .send_async(HashMap::from([("out".to_string(), packet)]))
                        .await
                        .map_err(|_| anyhow::anyhow!("{node}: its outport is closed"))?;
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

    fn inport_names(&self) -> Vec<String> {
        vec![self.inport.into()]
    }

    fn outport_names(&self) -> Vec<String> {
        vec!["out".into()]
    }

    fn load_count(&self) -> Arc<ActorLoad> {
        self.load.clone()
    }

    fn create_instance(&self) -> Arc<dyn Actor> {
        Arc::new(Native::new(self.inport, self.step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_compute_and_refuse_bad_input() {
        let c = ActorConfig::default();
        assert_eq!(range(&Message::Integer(3), &c).unwrap().len(), 3);
        assert!(range(&Message::Integer(-1), &c).is_err());
        assert!(matches!(
            add(&Message::Integer(2), &c).unwrap()[..],
            [Message::Integer(3)]
        ));
        assert!(add(&Message::string("x".into()), &c).is_err());
        assert!(matches!(
            &format(&Message::Integer(2), &c).unwrap()[..],
            [Message::String(s)] if s.as_str() == "2"
        ));
    }
}
