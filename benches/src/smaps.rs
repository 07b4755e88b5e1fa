//! A VM's host memory split by owner, from `/proc/PID/smaps`: the guest's
//! RAM (the snapshot's `memory.bin`, mapped copy-on-write: its private
//! pages are what this clone wrote or faulted in privately), the shared
//! message region (`memfd:reflow-shm`, also mapped by the bridge) and the
//! monitor's own memory (everything else: its heap, stacks, code).

use crate::report::{kib_line, process_tree};

/// KiB of one process's (or several, summed) mappings, by owner.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Resident pages of guest RAM.
    pub guest_rss: u64,
    /// Of those, the ones private to this clone.
    pub guest_private: u64,
    /// Resident pages of the shared message region.
    pub shared_region_rss: u64,
    /// Resident pages of every other mapping: the monitor itself.
    pub monitor_rss: u64,
    /// Of those, the ones private to this process (its heap, stacks and
    /// written data, not the shared libraries' pages).
    pub monitor_private: u64,
}

impl std::ops::AddAssign for Split {
    fn add_assign(&mut self, o: Split) {
        self.guest_rss += o.guest_rss;
        self.guest_private += o.guest_private;
        self.shared_region_rss += o.shared_region_rss;
        self.monitor_rss += o.monitor_rss;
        self.monitor_private += o.monitor_private;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Owner {
    Guest,
    Region,
    Monitor,
}

/// Whether `line` starts a mapping (`start-end perms offset dev inode path`).
fn mapping_path(line: &str) -> Option<&str> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let (a, b) = range.split_once('-')?;
    if a.is_empty() || !a.chars().chain(b.chars()).all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    // perms, offset, dev, inode; the path may be absent or hold spaces.
    let rest: Vec<&str> = fields.skip(4).collect();
    Some(if rest.is_empty() {
        ""
    } else {
        line[line.find(rest[0])?..].trim_end()
    })
}

/// The split of one `smaps` text.
pub fn split(smaps: &str) -> Split {
    let mut out = Split::default();
    let mut owner = Owner::Monitor;
    for line in smaps.lines() {
        if let Some(path) = mapping_path(line) {
            owner = if path.ends_with("memory.bin") || path.contains("memory.bin (deleted)") {
                Owner::Guest
            } else if path.starts_with("/memfd:reflow-shm") {
                Owner::Region
            } else {
                Owner::Monitor
            };
            continue;
        }
        if let Some(k) = kib_line(line, "Rss:") {
            match owner {
                Owner::Guest => out.guest_rss += k,
                Owner::Region => out.shared_region_rss += k,
                Owner::Monitor => out.monitor_rss += k,
            }
        } else if let Some(k) =
            kib_line(line, "Private_Clean:").or_else(|| kib_line(line, "Private_Dirty:"))
        {
            match owner {
                Owner::Guest => out.guest_private += k,
                Owner::Monitor => out.monitor_private += k,
                Owner::Region => {}
            }
        }
    }
    out
}

/// The split of process `pid` and every process under it.
pub fn of_tree(pid: u32) -> Split {
    let mut total = Split::default();
    for p in process_tree(pid) {
        total += split(&std::fs::read_to_string(format!("/proc/{p}/smaps")).unwrap_or_default());
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r-xp 00000000 fd:01 123 /usr/bin/reflow-vmm
Size:               1024 kB
Rss:                 800 kB
Private_Clean:       100 kB
Private_Dirty:         0 kB
7f0000000000-7f0008000000 rw-p 00000000 fd:01 456 /cache/goldens/abc/memory.bin
Size:             131072 kB
Rss:               30000 kB
Private_Clean:         0 kB
Private_Dirty:      9000 kB
7f1000000000-7f1002000000 rw-s 00000000 00:01 789 /memfd:reflow-shm (deleted)
Size:              32768 kB
Rss:                4096 kB
Private_Dirty:         0 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
Rss:                  40 kB
";

    #[test]
    fn mappings_are_split_by_owner() {
        assert_eq!(
            split(SMAPS),
            Split {
                guest_rss: 30000,
                guest_private: 9000,
                shared_region_rss: 4096,
                monitor_rss: 840,
                monitor_private: 100,
            }
        );
        assert_eq!(split(""), Split::default());
    }
}
