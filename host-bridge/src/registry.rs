//! Registering discovered script actors into a Reflow network, beside its
//! native actors (the `network` feature; `reflow_network` is a large
//! dependency that the rest of the bridge does not need).

use reflow_network::network::Network;

use crate::bridge::{Bridge, BridgeError};
use reflow_sandbox_core::ScriptError;
use reflow_workspace::Discovery;

/// Why a discovered actor could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The component's script cannot be used (unreadable, too large, ...).
    #[error("{component}: {source}")]
    Script {
        /// The component's name.
        component: String,
        /// Why its script cannot be used.
        source: ScriptError,
    },
    /// The bridge could not make an actor of the component.
    #[error("{component}: {source}")]
    Bridge {
        /// The component's name.
        component: String,
        /// Why the bridge refused it.
        source: BridgeError,
    },
    /// The network refused to register the actor.
    #[error("{component}: {source}")]
    Network {
        /// The component's name.
        component: String,
        /// The network's error.
        source: anyhow::Error,
    },
}

/// Registers every component of `discovery` into `network` under its
/// component name, each a [`crate::SandboxActor`] of `bridge`; returns the
/// names registered. A component whose runtime the bridge lacks (or whose
/// name the network already has) is an error naming it; the ones before
/// it stay registered.
pub fn register_script_actors(
    network: &mut Network,
    bridge: &Bridge,
    discovery: &Discovery,
) -> Result<Vec<String>, RegistryError> {
    let mut names = Vec::new();
    for c in &discovery.components {
        let component = c.metadata.component.clone();
        let script = c.script().map_err(|source| RegistryError::Script {
            component: component.clone(),
            source,
        })?;
        let actor = bridge
            .actor(script)
            .map_err(|source| RegistryError::Bridge {
                component: component.clone(),
                source,
            })?;
        network
            .register_actor(&component, actor)
            .map_err(|source| RegistryError::Network {
                component: component.clone(),
                source,
            })?;
        names.push(component);
    }
    Ok(names)
}
