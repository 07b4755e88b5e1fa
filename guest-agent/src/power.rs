//! Guest uptime and power-off.

use reflow_agent_protocol::console::AgentLine;

use crate::console;

/// Milliseconds since the guest kernel booted (CLOCK_BOOTTIME, read through
/// the vDSO: no system call).
pub fn uptime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the kernel to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Reports `status` to the host and resets the machine. The monitor boots
/// the kernel with `reboot=k`, so the reset reaches it as an i8042 write and
/// the monitor ends cleanly. Never returns.
pub fn poweroff(status: i32) -> ! {
    console::say(&AgentLine::Exit { status });
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    loop {
        // SAFETY: we are PID 1 and want the machine gone; nothing in this
        // process needs to run afterwards.
        unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_RESTART) };
        // Only reached if reboot failed (it cannot for PID 1 with
        // CAP_SYS_BOOT); do not spin hot.
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
