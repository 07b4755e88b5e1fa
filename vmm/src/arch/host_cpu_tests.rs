use super::*;

type Recorded = &'static [(u32, Regs)];

/// Recorded on this project's Intel `kvm_pvm` host (2026-11-29; the
/// guest-visible Xeon reports family 6 model 0xa7).
const INTEL: Recorded = &[
    (0x0, (0x24, 0x756e_6547, 0x6c65_746e, 0x4965_6e69)),
    (0x1, (0x000a_0671, 0x0002_0800, 0xfffa_3203, 0x1f8b_fbff)),
    (0x7, (0x2, 0xf1bf_2ffb, 0x1a41_5f46, 0x23c1_4010)),
    (0x8000_0000, (0x8000_0008, 0, 0, 0)),
    (0x8000_0001, (0, 0, 0x121, 0x2c10_0800)),
];

/// An AMD EPYC of the Milan generation (family 0x19, model 0x01) as AMD
/// documents its signature; the feature words are a Zen 3 set (no record
/// of the project's AMD host's CPUID exists yet).
const AMD: Recorded = &[
    (0x0, (0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65)),
    (0x1, (0x00a0_0f11, 0x0080_0800, 0xfef8_3203, 0x178b_fbff)),
    (0x7, (0, 0x219c_97a9, 0x0040_068c, 0x10)),
    (
        0x8000_0000,
        (0x8000_0023, 0x6874_7541, 0x444d_4163, 0x6974_6e65),
    ),
    (
        0x8000_0001,
        (0x00a0_0f11, 0x4000_0000, 0x7583_f3ff, 0x2fd3_fbff),
    ),
];

fn replay(recorded: Recorded) -> impl Fn(u32, u32) -> Regs {
    move |leaf, _| {
        recorded
            .iter()
            .find(|(l, _)| *l == leaf)
            .map_or((0, 0, 0, 0), |(_, r)| *r)
    }
}

#[test]
fn vendors_and_signatures_are_read_from_recorded_cpuid() {
    let intel = CpuFingerprint::from_cpuid(replay(INTEL));
    assert_eq!(intel.vendor, Vendor::Intel);
    assert_eq!(intel.family_model_stepping(), (6, 0xa7, 1));
    assert_eq!(intel.to_string(), "Intel family 0x6 model 0xa7 stepping 1");
    let amd = CpuFingerprint::from_cpuid(replay(AMD));
    assert_eq!(amd.vendor, Vendor::Amd);
    assert_eq!(amd.family_model_stepping(), (0x19, 0x1, 1));
    assert_eq!(amd.to_string(), "AMD family 0x19 model 0x1 stepping 1");
    assert_ne!(intel.key(), amd.key());
    assert!(
        intel.key().starts_with("Intel/000a0671/"),
        "{}",
        intel.key()
    );
    assert!(amd.key().starts_with("AMD/00a00f11/"), "{}", amd.key());
}

#[test]
fn the_key_ignores_what_is_not_the_cpu_and_sees_every_feature_word() {
    let base = CpuFingerprint::from_cpuid(replay(INTEL));
    // APIC ID (leaf 1 EBX) and OSXSAVE differ between CPUs of one host.
    let other_core = CpuFingerprint::from_cpuid(|leaf, sub| {
        let (a, b, c, d) = replay(INTEL)(leaf, sub);
        if leaf == 1 {
            (a, b ^ 0x0300_0000, c ^ (1 << 27), d)
        } else {
            (a, b, c, d)
        }
    });
    assert_eq!(base.key(), other_core.key());
    // A feature bit in any word changes it.
    for (leaf, reg) in [
        (1, 2),
        (1, 3),
        (7, 1),
        (7, 2),
        (7, 3),
        (0x8000_0001, 2),
        (0x8000_0001, 3),
    ] {
        let changed = CpuFingerprint::from_cpuid(move |l, sub| {
            let (a, b, c, d) = replay(INTEL)(l, sub);
            let mut r = [a, b, c, d];
            if l == leaf {
                r[reg] ^= 1 << 4;
            }
            (r[0], r[1], r[2], r[3])
        });
        assert_ne!(base.key(), changed.key(), "leaf {leaf:#x} register {reg}");
    }
}

#[test]
fn absent_leaves_read_as_zero_and_unknown_vendors_are_named() {
    let old = CpuFingerprint::from_cpuid(|leaf, _| match leaf {
        0 => (
            1,
            u32::from_le_bytes(*b"Hygo"),
            u32::from_le_bytes(*b"uine"),
            u32::from_le_bytes(*b"nGen"),
        ),
        1 => (0x0090_0f01, 0, 1, 2),
        // Would be garbage if read past the maximum leaves.
        _ => (0xdead, 0xdead, 0xdead, 0xdead),
    });
    assert_eq!(old.vendor, Vendor::Other("HygonGenuine".into()));
    assert_eq!(old.features, [1, 2, 0, 0, 0, 0, 0]);
    assert!(old.key().starts_with("HygonGenuine/00900f01/"));
}

#[test]
fn this_host_is_fingerprinted() {
    let here = CpuFingerprint::detect();
    assert_eq!(here, CpuFingerprint::detect());
    eprintln!("this host: {here} ({})", here.key());
}
