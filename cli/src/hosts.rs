//! `reflow-sandbox hosts`: sandbox hosts with their health and load, from
//! a list or from the fleet's registry in Redis.

use std::time::Duration;

use reflow_host_bridge::remote::registry::{self, Announcement};
use serde_json::{json, Value};

/// How long a host has to answer `/health`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One host as surveyed.
pub struct Row {
    /// `http://HOST:PORT`.
    pub url: String,
    /// Its `/health` answer, or why there is none.
    pub health: Result<Value, String>,
    /// Whether a registry announces it.
    pub announced: bool,
}

/// Whether `hosts` names a registry (`redis://` or `rediss://`).
pub fn is_registry(hosts: &[String]) -> bool {
    matches!(hosts, [one] if one.starts_with("redis://") || one.starts_with("rediss://"))
}

/// Surveys `hosts`: URLs, or one registry whose hosts are surveyed
/// (https hosts trusted by the public roots and the PEM file `ca`).
pub async fn survey(hosts: &[String], ca: Option<&std::path::Path>) -> anyhow::Result<Vec<Row>> {
    let (urls, announced): (Vec<String>, bool) = if is_registry(hosts) {
        let all: Vec<Announcement> = registry::announced(&hosts[0]).await?;
        (all.into_iter().map(|a| a.url).collect(), true)
    } else {
        (hosts.to_vec(), false)
    };
    let mut http = reqwest::Client::builder().timeout(PROBE_TIMEOUT);
    if let Some(ca) = ca {
        let pem =
            std::fs::read(ca).map_err(|e| anyhow::anyhow!("--host-ca {}: {e}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| anyhow::anyhow!("--host-ca {}: {e}", ca.display()))?
        {
            http = http.add_root_certificate(cert);
        }
    }
    let http = http.build()?;
    let mut rows = Vec::new();
    for url in urls {
        let health = probe(&http, &url).await;
        rows.push(Row {
            url,
            health,
            announced,
        });
    }
    Ok(rows)
}

async fn probe(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let r = http
        .get(format!("{}/health", url.trim_end_matches('/')))
        .send()
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("answered {}", r.status()));
    }
    r.json()
        .await
        .map_err(|e| format!("not a sandbox host: {e}"))
}

/// The rows as a table.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<28} {:<6} {:>9} {:>8} {:>8} {:>9}  {}\n",
        "HOST", "STATUS", "FUNCTIONS", "SESSIONS", "BUSY VMS", "VMS/MAX", "RUNTIMES"
    );
    for r in rows {
        match &r.health {
            Ok(h) => {
                let runtimes: Vec<&str> = h["runtimes"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                out.push_str(&format!(
                    "{:<28} {:<6} {:>9} {:>8} {:>8} {:>9}  {}\n",
                    r.url,
                    "up",
                    h["functions"],
                    h["sessions"],
                    h["busy_vms"],
                    format!("{}/{}", h["live_vms"], h["max_vms"]),
                    runtimes.join(",")
                ));
            }
            Err(why) => out.push_str(&format!("{:<28} {:<6} {why}\n", r.url, "down")),
        }
    }
    out
}

/// The rows as JSON.
pub fn json(rows: &[Row]) -> Value {
    rows.iter()
        .map(|r| match &r.health {
            Ok(h) => json!({"url": r.url, "up": true, "announced": r.announced, "health": h}),
            Err(why) => json!({"url": r.url, "up": false, "announced": r.announced, "error": why}),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_up_and_down_hosts() {
        let rows = vec![
            Row {
                url: "http://a:1".into(),
                health: Ok(json!({"status": "ok", "functions": 2, "sessions": 1,
                                  "busy_vms": 0, "live_vms": 3, "max_vms": 40,
                                  "runtimes": ["python", "javascript"]})),
                announced: false,
            },
            Row {
                url: "http://b:2".into(),
                health: Err("unreachable: refused".into()),
                announced: false,
            },
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[1].starts_with("http://a:1") && lines[1].ends_with("3/40  python,javascript")
        );
        assert!(lines[2].contains("down") && lines[2].ends_with("unreachable: refused"));
        assert_eq!(json(&rows)[1]["up"], false);
        assert!(is_registry(&["redis://r:6379/0".into()]));
        assert!(!is_registry(&["http://a:1".into(), "redis://r".into()]));
    }
}
