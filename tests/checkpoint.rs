//! Checkpoints: round trips, every earlier format version, and corrupt,
//! truncated, foreign or mismatched data refused with the optimizer unchanged.

use adopt::checkpoint::{MAGIC, VERSION, crc32};
use adopt::{Adopt, CheckpointError, Clip, DecayScaling, Error, GroupId, Hyper, Item, ParamId};
use proptest::prelude::*;

fn trained() -> Adopt {
    let mut opt = Adopt::new();
    let g0 = opt
        .add_group(Hyper {
            lr: 0.01,
            weight_decay: 0.1,
            decouple: true,
            nesterov: true,
            ..Hyper::default()
        })
        .unwrap();
    let g1 = opt
        .add_group(Hyper {
            clip: Clip::Constant(0.5),
            decay_scaling: DecayScaling::Corrected { max_lr: 0.1 },
            ..Hyper::default()
        })
        .unwrap();
    let a = opt.add_param(g0, 3, Some("a")).unwrap();
    let b = opt.add_param(g1, 2, None).unwrap();
    let _never_stepped = opt.add_param(g1, 4, Some("c")).unwrap();
    let (mut da, mut db) = (vec![1.0_f32, -2.0, 0.5], vec![0.25_f32, 3.0]);
    for t in 0..3 {
        let ga = [0.1 * t as f32, -0.3, f32::NAN];
        opt.step(&mut [
            Item {
                id: a,
                params: &mut da,
                grads: Some(&ga),
            },
            Item {
                id: b,
                params: &mut db,
                grads: Some(&[1.0, -1.0]),
            },
        ])
        .unwrap();
    }
    opt
}

#[test]
fn round_trip_is_exact() {
    let opt = trained();
    let bytes = opt.save().unwrap();
    assert_eq!(&bytes[..8], &MAGIC);
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        VERSION
    );
    let restored = Adopt::from_checkpoint(&bytes).unwrap();
    assert_eq!(restored.save().unwrap(), bytes);
    assert_eq!(restored.param(ParamId(0)).unwrap().2, Some("a"));
    assert_eq!(restored.state(ParamId(0)).unwrap().unwrap().step(), 3);
    assert!(restored.state(ParamId(2)).unwrap().is_none());
    assert!(restored.hyper(GroupId(0)).unwrap().nesterov);
}

/// Truncation at every length and every single-bit flip are refused, and the
/// optimizer loading them is left exactly as it was.
#[test]
fn corrupt_data_is_refused_and_changes_nothing() {
    let good = trained().save().unwrap();
    let mut opt = trained();
    opt.hyper_mut(GroupId(0)).unwrap().lr = 0.5; // differs from `good`
    let before = opt.save().unwrap();
    for len in 0..good.len() {
        let got = opt.load(&good[..len]);
        assert!(
            matches!(got, Err(Error::Checkpoint(_))),
            "truncated to {len}: {got:?}"
        );
        assert_eq!(opt.save().unwrap(), before);
    }
    let step = if cfg!(miri) { 97 } else { 1 };
    for bit in (0..good.len() * 8).step_by(step) {
        let mut bad = good.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let got = opt.load(&bad);
        assert!(
            matches!(got, Err(Error::Checkpoint(_))),
            "bit {bit} flipped: {got:?}"
        );
        assert_eq!(opt.save().unwrap(), before);
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        opt.load(&trailing),
        Err(Error::Checkpoint(CheckpointError::TrailingBytes))
    );
    assert_eq!(
        opt.load(b"not a checkpoint"),
        Err(Error::Checkpoint(CheckpointError::BadMagic))
    );
    assert_eq!(opt.save().unwrap(), before);
    opt.load(&good).unwrap();
    assert_eq!(opt.save().unwrap(), good);
}

/// A payload-length field near `u64::MAX` reads as truncated rather than
/// overflowing (found by the `checkpoint_decode` fuzz target).
#[test]
fn huge_length_fields_are_truncated_not_overflowing() {
    let good = trained().save().unwrap();
    for len in [u64::MAX, u64::MAX - 3, u64::MAX - 20, u64::MAX / 2, 1 << 40] {
        let mut bad = good.clone();
        bad[12..20].copy_from_slice(&len.to_le_bytes());
        assert_eq!(
            Adopt::from_checkpoint(&bad).unwrap_err(),
            Error::Checkpoint(CheckpointError::Truncated),
            "length field {len:#x}"
        );
        // The header alone, as the fuzzer found it.
        assert_eq!(
            Adopt::from_checkpoint(&bad[..20]).unwrap_err(),
            Error::Checkpoint(CheckpointError::Truncated),
            "header only, length field {len:#x}"
        );
    }
}

/// Fields a group's clip or decay-scaling kind does not use must be +0.0:
/// otherwise the checkpoint would load but not re-encode to itself (found by
/// the `checkpoint_decode` fuzz target).
#[test]
fn unused_fields_must_be_zero() {
    let mut opt = Adopt::new();
    opt.add_group(Hyper {
        clip: Clip::None,
        ..Hyper::default()
    })
    .unwrap();
    let good = opt.save().unwrap();
    // Group 0 starts after the header and the group count: five f64, flags,
    // clip kind, clip a, clip b, decay kind, max_lr.
    let clip_a = 20 + 4 + 40 + 1 + 1;
    let clip_b = clip_a + 8;
    let max_lr = clip_b + 8 + 1;
    for (offset, what) in [(clip_a, "clip a"), (clip_b, "clip b"), (max_lr, "max_lr")] {
        for value in [-0.0_f64, 1.0, f64::NAN] {
            let mut bad = good.clone();
            bad[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
            let bad = resign(bad);
            assert!(
                matches!(
                    Adopt::from_checkpoint(&bad),
                    Err(Error::Checkpoint(CheckpointError::Malformed(_)))
                ),
                "{what} = {value}"
            );
        }
    }
    assert_eq!(Adopt::from_checkpoint(&good).unwrap().save().unwrap(), good);
}

/// Re-signs `bytes` after editing its header or payload.
fn resign(mut bytes: Vec<u8>) -> Vec<u8> {
    let end = bytes.len() - 4;
    let crc = crc32(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn versions_and_shapes_are_checked() {
    let good = trained().save().unwrap();
    let mut future = good.clone();
    future[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
    assert_eq!(
        Adopt::from_checkpoint(&resign(future)).unwrap_err(),
        Error::Checkpoint(CheckpointError::UnsupportedVersion(VERSION + 1))
    );
    let mut zero = good.clone();
    zero[8..12].copy_from_slice(&0_u32.to_le_bytes());
    assert_eq!(
        Adopt::from_checkpoint(&resign(zero)).unwrap_err(),
        Error::Checkpoint(CheckpointError::UnsupportedVersion(0))
    );

    // An optimizer with other registered shapes refuses, unchanged.
    let mut other = Adopt::new();
    let g = other.add_group(Hyper::default()).unwrap();
    other.add_param(g, 3, None).unwrap();
    other.add_param(g, 5, None).unwrap();
    other.add_param(g, 4, None).unwrap();
    let before = other.save().unwrap();
    assert_eq!(
        other.load(&good),
        Err(Error::Checkpoint(CheckpointError::ShapeMismatch {
            param: 1,
            expected: 5,
            got: 2
        }))
    );
    other.add_param(g, 1, None).unwrap();
    let before4 = other.save().unwrap();
    assert_ne!(before, before4);
    assert_eq!(
        other.load(&good),
        Err(Error::Checkpoint(CheckpointError::ShapeMismatch {
            param: u32::MAX,
            expected: 4,
            got: 3
        }))
    );
    assert_eq!(other.save().unwrap(), before4);
}

#[test]
fn custom_clip_cannot_be_saved() {
    fn schedule(_: u64) -> f64 {
        1.0
    }
    let mut opt = trained();
    opt.hyper_mut(GroupId(1)).unwrap().clip = Clip::Custom(schedule);
    assert_eq!(
        opt.save(),
        Err(Error::Checkpoint(CheckpointError::CustomClip { group: 1 }))
    );
}

/// The version-1 format, written field by field as documented: no names, no
/// decay scaling, no Nesterov flag.
fn v1_bytes() -> Vec<u8> {
    let mut p = Vec::new();
    let f64s = |p: &mut Vec<u8>, xs: &[f64]| {
        xs.iter()
            .for_each(|x| p.extend_from_slice(&x.to_le_bytes()))
    };
    p.extend_from_slice(&2_u32.to_le_bytes()); // groups
    f64s(&mut p, &[0.01, 0.9, 0.9999, 1e-6, 0.1]);
    p.push(0b01); // decouple
    p.push(2); // power clip
    f64s(&mut p, &[1.0, 0.25]);
    f64s(&mut p, &[0.001, 0.8, 0.999, 1e-8, 0.0]);
    p.push(0b10); // maximize
    p.push(1); // constant clip
    f64s(&mut p, &[0.5, 0.0]);
    p.extend_from_slice(&2_u32.to_le_bytes()); // params
    p.extend_from_slice(&0_u32.to_le_bytes()); // group 0
    p.extend_from_slice(&2_u64.to_le_bytes()); // 2 lanes
    p.push(1);
    p.extend_from_slice(&7_u64.to_le_bytes()); // step 7
    for x in [0.5_f32, -0.25, 4.0, 9.0] {
        p.extend_from_slice(&x.to_le_bytes()); // exp_avg, exp_avg_sq
    }
    p.extend_from_slice(&1_u32.to_le_bytes()); // group 1
    p.extend_from_slice(&3_u64.to_le_bytes()); // 3 lanes
    p.push(0); // no state yet
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&1_u32.to_le_bytes());
    bytes.extend_from_slice(&(p.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&p);
    let crc = crc32(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

const V1_FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/checkpoint_v1.bin");

/// Writes the committed fixture (run once, by hand, with `--ignored`).
#[test]
#[ignore = "regenerates tests/data/checkpoint_v1.bin"]
fn regenerate_v1_fixture() {
    std::fs::write(V1_FIXTURE, v1_bytes()).unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "reads a file")]
fn committed_version_1_checkpoint_still_loads_with_defaults() {
    let bytes = std::fs::read(V1_FIXTURE).unwrap();
    assert_eq!(bytes, v1_bytes(), "the fixture is the documented v1 layout");
    let opt = Adopt::from_checkpoint(&bytes).unwrap();
    let h0 = opt.hyper(GroupId(0)).unwrap();
    assert_eq!(
        (h0.lr, h0.weight_decay, h0.decouple, h0.maximize),
        (0.01, 0.1, true, false)
    );
    assert!(matches!(
        h0.clip,
        Clip::Power {
            scale: 1.0,
            exponent: 0.25
        }
    ));
    // Fields added in version 2 take their defaults.
    assert_eq!(h0.decay_scaling, DecayScaling::Lr);
    assert!(!h0.nesterov);
    assert_eq!(opt.param(ParamId(0)).unwrap(), (GroupId(0), 2, None));
    let s = opt.state(ParamId(0)).unwrap().unwrap();
    assert_eq!(
        (s.step(), s.exp_avg(), s.exp_avg_sq()),
        (7, &[0.5, -0.25][..], &[4.0, 9.0][..])
    );
    assert!(opt.state(ParamId(1)).unwrap().is_none());
    assert!(opt.hyper(GroupId(1)).unwrap().maximize);
    // Saving writes the current version, which loads back the same.
    let v2 = opt.save().unwrap();
    assert_eq!(u32::from_le_bytes(v2[8..12].try_into().unwrap()), VERSION);
    assert_eq!(Adopt::from_checkpoint(&v2).unwrap().save().unwrap(), v2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 200 }))]

    #[test]
    fn random_optimizers_round_trip(
        groups in prop::collection::vec((0.0_f64..1.0, any::<bool>(), any::<bool>(), any::<bool>()), 1..4),
        params in prop::collection::vec((0_usize..4, 0_usize..20, prop::option::of("[a-z.]{0,12}"), 0_u64..5), 0..6),
    ) {
        let mut opt = Adopt::new();
        let gids: Vec<GroupId> = groups
            .iter()
            .map(|&(lr, decouple, maximize, nesterov)| {
                opt.add_group(Hyper { lr, decouple, maximize, nesterov, weight_decay: 0.01, ..Hyper::default() }).unwrap()
            })
            .collect();
        for (g, lanes, name, steps) in &params {
            let id = opt.add_param(gids[g % gids.len()], *lanes, name.as_deref()).unwrap();
            let mut data: Vec<f32> = (0..*lanes).map(|i| i as f32 - 3.0).collect();
            let grads: Vec<f32> = (0..*lanes).map(|i| (i as f32).sin()).collect();
            for _ in 0..*steps {
                opt.step(&mut [Item { id, params: &mut data, grads: Some(&grads) }]).unwrap();
            }
        }
        let bytes = opt.save().unwrap();
        let restored = Adopt::from_checkpoint(&bytes).unwrap();
        prop_assert_eq!(restored.save().unwrap(), bytes);
        let mut into = Adopt::new();
        into.load(&restored.save().unwrap()).unwrap();
        prop_assert_eq!(into.param_count(), params.len());
    }
}
