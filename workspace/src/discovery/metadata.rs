//! Component metadata from a script's literal metadata, checked the way
//! the guest SDK's `@actor` checks it (same keys, same defaults, same
//! errors), so what discovery reports is what the actor will say when it
//! loads.

use serde::Serialize;

use reflow_sandbox_core::Language;

/// A literal value read from a script's source, with the line it is on.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// `True`/`False` (Python) or `true`/`false` (JavaScript).
    Bool(bool),
    /// `None` (Python) or `null` (JavaScript).
    None,
    /// A list; each item with its 1-based line.
    List(Vec<(Lit, usize)>),
    /// Keys are strings (anything else is refused while reading).
    Dict(Vec<(String, Lit, usize)>),
}

impl Lit {
    fn kind(&self) -> &'static str {
        match self {
            Lit::Str(_) => "a string",
            Lit::Int(_) | Lit::Float(_) => "a number",
            Lit::Bool(_) => "a boolean",
            Lit::None => "None/null",
            Lit::List(_) => "a list",
            Lit::Dict(_) => "a dict",
        }
    }

    /// As JSON (for config defaults).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Lit::Str(s) => s.clone().into(),
            Lit::Int(i) => (*i).into(),
            Lit::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
            }
            Lit::Bool(b) => (*b).into(),
            Lit::None => serde_json::Value::Null,
            Lit::List(items) => items.iter().map(|(v, _)| v.to_json()).collect(),
            Lit::Dict(entries) => entries
                .iter()
                .map(|(k, v, _)| (k.clone(), v.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
}

/// A metadata mistake at a line of the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mistake {
    /// The 1-based line of the script the mistake is on.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

pub(crate) fn mistake(line: usize, message: impl Into<String>) -> Mistake {
    Mistake {
        line,
        message: message.into(),
    }
}

/// One port of a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    /// The port's name (not empty, unique among the component's ports of
    /// its direction).
    pub name: String,
    /// The port's declared type (`"any"` unless given).
    #[serde(rename = "type")]
    pub port_type: String,
    /// Whether the port must have a message (default: true for inports,
    /// false for outports).
    pub required: bool,
    /// The port's description, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A discovered component, as Reflow describes components.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentMetadata {
    /// The component's name (`name` or `component`, else the Python
    /// function's name).
    pub component: String,
    /// The description (else the Python docstring, else empty).
    pub description: String,
    /// The input ports.
    pub inports: Vec<Port>,
    /// The output ports.
    pub outports: Vec<Port>,
    /// The tags.
    pub tags: Vec<String>,
    /// Config defaults.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// The script's language.
    pub runtime: Language,
    /// The script, relative to the workspace root.
    pub file: String,
    /// The script's directory, `.`-separated (`default` at the root), as
    /// Reflow's discovery names it.
    pub namespace: String,
    /// The line the metadata is on.
    pub line: usize,
}

/// The keys metadata may have.
pub const KEYS: &[&str] = &[
    "name",
    "component",
    "description",
    "inports",
    "outports",
    "tags",
    "config",
];

/// Where a script's metadata came from, besides its fields.
pub(crate) struct Found {
    /// The metadata's fields, each with its line.
    pub fields: Vec<(String, Lit, usize)>,
    /// The line of the decorator or object.
    pub line: usize,
    /// The name when none is given (the Python function's name).
    pub fallback_name: Option<String>,
    /// The description when none is given (the Python docstring).
    pub doc: Option<String>,
}

fn string(v: &Lit, key: &str, line: usize) -> Result<String, Mistake> {
    match v {
        Lit::Str(s) => Ok(s.clone()),
        other => Err(mistake(
            line,
            format!("\"{key}\" must be a string, not {}", other.kind()),
        )),
    }
}

fn ports(v: &Lit, key: &str, line: usize, required: bool) -> Result<Vec<Port>, Mistake> {
    let items = match v {
        Lit::None => return Ok(Vec::new()),
        Lit::List(items) => items,
        other => {
            return Err(mistake(
                line,
                format!(
                    "\"{key}\" must be a list of port names, not {}",
                    other.kind()
                ),
            ))
        }
    };
    let singular = &key[..key.len() - 1];
    let mut out: Vec<Port> = Vec::new();
    for (item, line) in items {
        let line = *line;
        let port = match item {
            Lit::Str(name) => Port {
                name: name.clone(),
                port_type: "any".into(),
                required,
                description: None,
            },
            Lit::Dict(entries) => {
                let mut port = Port {
                    name: String::new(),
                    port_type: "any".into(),
                    required,
                    description: None,
                };
                let mut named = false;
                for (k, v, line) in entries {
                    match k.as_str() {
                        "name" => {
                            port.name = string(v, "name", *line)?;
                            named = true;
                        }
                        "type" => port.port_type = string(v, "type", *line)?,
                        "description" => port.description = Some(string(v, "description", *line)?),
                        "required" => match v {
                            Lit::Bool(b) => port.required = *b,
                            other => {
                                return Err(mistake(
                                    *line,
                                    format!("\"required\" must be True/true or False/false, not {}", other.kind()),
                                ))
                            }
                        },
                        other => {
                            return Err(mistake(
                                *line,
                                format!("{singular} has an unknown key \"{other}\" (known: name, type, required, description)"),
                            ))
                        }
                    }
                }
                if !named {
                    return Err(mistake(line, format!("a {singular} needs a \"name\"")));
                }
                port
            }
            other => {
                return Err(mistake(
                    line,
                    format!(
                        "every entry of \"{key}\" must be a name or {{\"name\": ...}}, not {}",
                        other.kind()
                    ),
                ))
            }
        };
        if port.name.is_empty() {
            return Err(mistake(line, format!("a {singular} has an empty name")));
        }
        if out.iter().any(|p| p.name == port.name) {
            return Err(mistake(
                line,
                format!("{singular} \"{}\" listed twice", port.name),
            ));
        }
        out.push(port);
    }
    Ok(out)
}

/// Checks `found` and makes the component's metadata.
pub(crate) fn component(
    found: Found,
    runtime: Language,
    file: String,
    namespace: String,
) -> Result<ComponentMetadata, Mistake> {
    let mut seen: Vec<&str> = Vec::new();
    for (key, _, line) in &found.fields {
        if !KEYS.contains(&key.as_str()) {
            return Err(mistake(
                *line,
                format!(
                    "unknown metadata key \"{key}\" (known: {})",
                    KEYS.join(", ")
                ),
            ));
        }
        if seen.contains(&key.as_str()) {
            return Err(mistake(
                *line,
                format!("metadata key \"{key}\" given twice"),
            ));
        }
        seen.push(key);
    }
    let field = |k: &str| {
        found
            .fields
            .iter()
            .find(|(key, _, _)| key == k)
            .map(|(_, v, l)| (v, *l))
    };
    let name = field("name")
        .map(|(v, l)| string(v, "name", l))
        .transpose()?;
    let comp = field("component")
        .map(|(v, l)| string(v, "component", l))
        .transpose()?;
    let component = match (name, comp) {
        (Some(a), Some(b)) if a != b => {
            return Err(mistake(
                found.line,
                "give \"name\" or \"component\", not two different ones",
            ))
        }
        (a, b) => a.or(b).filter(|s| !s.is_empty()),
    };
    let component = component.or(found.fallback_name.clone()).ok_or_else(|| {
        mistake(
            found.line,
            "the metadata names no component (\"name\" or \"component\")",
        )
    })?;
    let description = match field("description") {
        Some((Lit::None, _)) | None => found.doc.clone().unwrap_or_default(),
        Some((v, l)) => string(v, "description", l)?,
    };
    let tags = match field("tags") {
        None | Some((Lit::None, _)) => Vec::new(),
        Some((Lit::List(items), _)) => items
            .iter()
            .map(|(v, l)| match v {
                Lit::Str(s) => Ok(s.clone()),
                _ => Err(mistake(*l, "\"tags\" must be a list of strings")),
            })
            .collect::<Result<_, _>>()?,
        Some((_, l)) => return Err(mistake(l, "\"tags\" must be a list of strings")),
    };
    let config = match field("config") {
        None | Some((Lit::None, _)) => serde_json::Map::new(),
        Some((v @ Lit::Dict(_), _)) => match v.to_json() {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        },
        Some((_, l)) => return Err(mistake(l, "\"config\" must be a dict of defaults")),
    };
    let inports = match field("inports") {
        Some((v, l)) => ports(v, "inports", l, true)?,
        None => Vec::new(),
    };
    let outports = match field("outports") {
        Some((v, l)) => ports(v, "outports", l, false)?,
        None => Vec::new(),
    };
    Ok(ComponentMetadata {
        component,
        description,
        inports,
        outports,
        tags,
        config,
        runtime,
        file,
        namespace,
        line: found.line,
    })
}
