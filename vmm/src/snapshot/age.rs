//! Making a snapshot look older than it is, to test what a golden's age
//! does to its clones without waiting hours (`tests/golden_age.rs`).
//!
//! A snapshot records two kinds of time. Guest time (the kvmclock value,
//! the vCPUs' TSC MSRs) is where the guest's clocks stood; a restore sets
//! it again, so a clone's monotonic clock goes on from the snapshot however
//! old it is. Host time is where the host's clocks stood when it was taken:
//! the kvmclock's `realtime` and `host_tsc` (valid when its flags say so),
//! which a restore ignores today, and the guest's wall clock in its memory,
//! which the agent sets from the host's when a clone connects (a jump
//! forward by the snapshot's age). [`aged_copy`] moves the first back by
//! `age`; [`CLOCK_SHIFT_ENV`] makes the host hand clones a wall clock
//! `age` ahead, which is what the guest sees of the second.

use std::path::Path;
use std::time::Duration;

use super::{file, private, MEMORY_FILE, STATE_FILE};

/// Test switch: seconds added to the wall clock the host hands a guest
/// in the control handshake (as if the snapshot were that much older).
/// Read by the monitor process; never set it outside tests.
pub const CLOCK_SHIFT_ENV: &str = "REFLOW_TEST_CLOCK_SHIFT_SECS";

/// Why an aged copy could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AgeError {
    /// Reading or writing a file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The state file is damaged or of another format.
    #[error("{0}")]
    State(#[from] file::SnapshotFileError),
}

/// Copies the snapshot in `src` to `dst` (created; its memory file a hard
/// link) with the host-time fields of its saved clock `age` earlier.
pub fn aged_copy(src: &Path, dst: &Path, age: Duration) -> Result<(), AgeError> {
    private::create_dir(dst)?;
    let _ = std::fs::remove_file(dst.join(MEMORY_FILE));
    std::fs::hard_link(src.join(MEMORY_FILE), dst.join(MEMORY_FILE))?;
    let mut state = file::decode(&private::read(&src.join(STATE_FILE))?)?;
    let clock = &mut state.vm.clock;
    let ns = age.as_nanos() as u64;
    clock.realtime = clock.realtime.saturating_sub(ns);
    let ticks = u128::from(state.tsc_khz) * age.as_micros() / 1000;
    clock.host_tsc = clock.host_tsc.saturating_sub(ticks as u64);
    private::write(&dst.join(STATE_FILE), &file::encode(&state)?)?;
    Ok(())
}

/// The guest clock a snapshot recorded (kvmclock, nanoseconds since the
/// guest booted).
pub fn saved_guest_clock(dir: &Path) -> Result<Duration, AgeError> {
    let state = file::decode(&private::read(&dir.join(STATE_FILE))?)?;
    Ok(Duration::from_nanos(state.vm.clock.clock))
}

/// The shift [`CLOCK_SHIFT_ENV`] asks for (zero when unset or invalid).
pub(crate) fn clock_shift() -> Duration {
    std::env::var(CLOCK_SHIFT_ENV)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs)
}
