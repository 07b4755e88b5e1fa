//! Decoding hostile values costs memory in proportion to the input and
//! time linear in it: counts the input merely claims reserve nothing, and
//! duplicate map keys are found without comparing every pair.
//!
//! A counting allocator measures each test's own thread (thread-local
//! counters), so tests running in parallel do not disturb each other.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use reflow_ring::value::{Value, ValueError, MAX_EXPANSION};

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grew(by: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + by;
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn shrank(by: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(by)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size);
        shrank(layout.size());
        // SAFETY: `ptr` came from `System` with `layout`, as the caller promises.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak bytes allocated on this thread while `f` runs, beyond what was
/// live before.
fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(before));
    let r = f();
    (r, PEAK.with(Cell::get) - before)
}

fn list_header(count: u32) -> Vec<u8> {
    let mut b = vec![7u8];
    b.extend_from_slice(&count.to_le_bytes());
    b
}

#[test]
fn claimed_counts_reserve_nothing() {
    // 64 nested lists, each claiming as many items as bytes remain, then
    // the input ends: the old decoder reserved 32 bytes per claimed item
    // at every level (64 x 32 x 1 MiB here) before finding out.
    const LEN: usize = 1 << 20;
    let mut input = Vec::with_capacity(LEN);
    for _ in 0..64 {
        let remaining = (LEN - input.len() - 5) as u32;
        input.extend(list_header(remaining));
    }
    input.resize(LEN, 0xff); // an unknown tag where the first item starts
    let (result, peak) = peak_during(|| Value::decode(&input));
    assert!(matches!(
        result,
        Err(ValueError::TooDeep | ValueError::Tag { .. })
    ));
    assert!(
        peak < 1 << 20,
        "{peak} bytes allocated for a value that never decoded"
    );
}

#[test]
fn a_decoded_value_stays_within_its_expansion_bound() {
    // The worst case per input byte: a list of `None`s.
    const ITEMS: u32 = 200_000;
    let mut input = list_header(ITEMS);
    input.resize(5 + ITEMS as usize, 0);
    let (value, peak) = peak_during(|| Value::decode(&input).unwrap());
    assert!(matches!(&value, Value::List(items) if items.len() == ITEMS as usize));
    let bound = 2 * MAX_EXPANSION * input.len();
    assert!(
        peak <= bound,
        "peak {peak} > {bound} for {} input bytes",
        input.len()
    );
}

fn map_of(keys: u32, duplicate_last: bool) -> Vec<u8> {
    let mut b = vec![8u8];
    b.extend_from_slice(&keys.to_le_bytes());
    for i in 0..keys {
        let key = if duplicate_last && i == keys - 1 {
            0
        } else {
            i
        };
        let k = format!("{key:08x}");
        b.extend_from_slice(&(k.len() as u32).to_le_bytes());
        b.extend_from_slice(k.as_bytes());
        b.push(0);
    }
    b
}

#[test]
fn many_map_keys_decode_in_linear_time() {
    // 300,000 keys: pairwise comparison would be 4.5e10 string compares
    // (minutes); a hash set makes it milliseconds. The test does not time
    // itself, but the quadratic decoder would not finish in a test run.
    const KEYS: u32 = 300_000;
    let input = map_of(KEYS, false);
    let (value, peak) = peak_during(|| Value::decode(&input).unwrap());
    assert!(matches!(&value, Value::Map(e) if e.len() == KEYS as usize));
    let bound = 2 * MAX_EXPANSION * input.len();
    assert!(peak <= bound, "peak {peak} > {bound}");
    let dup = map_of(KEYS, true);
    assert_eq!(
        Value::decode(&dup),
        Err(ValueError::DuplicateKey("00000000".into()))
    );
}
