//! The agent's boot parameters, read from the kernel command line.
//!
//! The kernel passes parameters containing a dot to no one, so the agent reads
//! `/proc/cmdline` itself and keeps the `reflow.*` keys. Values may be quoted
//! with double quotes to carry spaces, as the kernel itself allows:
//! `reflow.cmd="read-block /dev/vda 0 64; poweroff 0"`.
//!
//! Keys:
//! - `reflow.cmd=<requests>`: requests (see [`crate::request::Request`]) run
//!   in order once the agent is ready, separated by `;`. Without a `poweroff`
//!   among them the agent goes on serving the console afterwards.
//! - `reflow.quiet=1`: do not echo requests on the console.
//! - `reflow.shm=<addr>:<size>`: guest physical address and size (hex or
//!   decimal) of the host<->guest shared-memory region, set by the monitor.
//! - `reflow.doorbell=<addr>`: guest physical address of the guest->host
//!   doorbell page, set by the monitor with `reflow.shm`.
//! - `reflow.root=<device>`: an ext4 language image to mount and run
//!   programs in (e.g. `/dev/vda`).

/// Boot parameters of the agent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AgentParams {
    /// Requests to run at boot, in order.
    pub boot_requests: Vec<String>,
    /// Whether to echo requests on the console.
    pub quiet: bool,
    /// The shared-memory region: (guest physical address, size).
    pub shm: Option<(u64, u64)>,
    /// The guest->host doorbell page's guest physical address.
    pub doorbell: Option<u64>,
    /// The device holding the language image.
    pub root: Option<String>,
    /// `reflow.*` keys the agent does not know or cannot parse (reported,
    /// then ignored).
    pub unknown: Vec<String>,
}

fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Splits a kernel command line into words, honouring double quotes the way
/// the kernel's `next_arg()` does (quotes group, and are removed).
pub fn split_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut has_word = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_word = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_word {
                    words.push(std::mem::take(&mut current));
                    has_word = false;
                }
            }
            c => {
                current.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        words.push(current);
    }
    words
}

/// Extracts the agent's parameters from a kernel command line.
pub fn parse(cmdline: &str) -> AgentParams {
    let mut params = AgentParams::default();
    for word in split_words(cmdline) {
        let Some(rest) = word.strip_prefix("reflow.") else {
            continue;
        };
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        match key {
            "cmd" => params.boot_requests.extend(
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            ),
            "quiet" => params.quiet = value != "0",
            "shm" => match value
                .split_once(':')
                .and_then(|(a, s)| Some((parse_number(a)?, parse_number(s)?)))
            {
                Some(shm) => params.shm = Some(shm),
                None => params.unknown.push(word.clone()),
            },
            "root" if value.starts_with("/dev/") => params.root = Some(value.to_string()),
            "doorbell" => match parse_number(value) {
                Some(addr) => params.doorbell = Some(addr),
                None => params.unknown.push(word.clone()),
            },
            _ => params.unknown.push(word.clone()),
        }
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_the_kernel() {
        assert_eq!(
            split_words(r#"console=ttyS0  reflow.cmd="a b; c"  quiet "#),
            vec!["console=ttyS0", "reflow.cmd=a b; c", "quiet"]
        );
        assert_eq!(split_words(""), Vec::<String>::new());
        assert_eq!(split_words(r#"x="""#), vec!["x="]);
    }

    #[test]
    fn parses_reflow_keys_only() {
        let p = parse(
            r#"console=ttyS0 reflow.cmd="read-block /dev/vda 0 64;; poweroff 3" reflow.quiet=1 reflow.colour=red"#,
        );
        assert_eq!(
            p.boot_requests,
            vec!["read-block /dev/vda 0 64", "poweroff 3"]
        );
        assert!(p.quiet);
        assert_eq!(p.unknown, vec!["reflow.colour=red"]);
        let p = parse("reflow.shm=0x100000000:0x400000 reflow.shm=bad reflow.doorbell=0xd0080000");
        assert_eq!(p.shm, Some((1 << 32, 4 << 20)));
        assert_eq!(p.doorbell, Some(0xd008_0000));
        assert_eq!(
            parse("reflow.root=/dev/vda").root.as_deref(),
            Some("/dev/vda")
        );
        assert_eq!(parse("reflow.root=vda").unknown, vec!["reflow.root=vda"]);
        assert_eq!(p.unknown, vec!["reflow.shm=bad"]);
    }

    #[test]
    fn empty_cmdline_gives_defaults() {
        assert_eq!(parse("console=ttyS0 quiet\n"), AgentParams::default());
    }
}
