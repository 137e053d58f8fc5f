//! Checkpoints: round trips, every earlier format version, and corrupt,
//! truncated, foreign or mismatched data refused with the optimizer unchanged.

use adopt::checkpoint::{MAGIC, VERSION, crc32};
use adopt::{
    Adopt, Caution, CheckpointError, Clip, DecayScaling, Error, GroupId, Hyper, Item, ParamId,
    WeightDecay,
};
use proptest::prelude::*;

fn trained() -> Adopt {
    let mut opt = Adopt::new();
    let g0 = opt
        .add_group(Hyper {
            lr: 0.01,
            weight_decay: WeightDecay::decoupled(0.1),
            nesterov: true,
            ..Hyper::default()
        })
        .unwrap();
    let g1 = opt
        .add_group(Hyper {
            clip: Clip::Constant(0.5),
            clip_offset: 1,
            weight_decay: WeightDecay::Decoupled {
                weight_decay: 0.01,
                scaling: DecayScaling::Corrected { max_lr: None },
                first_step: true,
            },
            caution: Caution::PytorchOptimizer,
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
    // caution, clip kind, clip a, clip b, clip offset, decay kind, decay
    // coefficient, decay scaling, max_lr, first-step decay.
    let clip_a = 20 + 4 + 40 + 1 + 1 + 1;
    let clip_b = clip_a + 8;
    let coefficient = clip_b + 8 + 8 + 1;
    let max_lr = coefficient + 8 + 1;
    let fields = [
        (clip_a, "clip a"),
        (clip_b, "clip b"),
        (coefficient, "decay coefficient"),
        (max_lr, "max_lr"),
    ];
    for (offset, what) in fields {
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
}

fn mismatch(e: CheckpointError) -> Result<(), Error> {
    Err(Error::Checkpoint(e))
}

/// An optimizer of two groups with `names` (two in group 0, one in group
/// 1; `None` entries unnamed) and lanes 4, 4, 2, each parameter stepped
/// twice with its own gradient, so every state differs.
fn layout(names: [Option<&str>; 3], groups: [u32; 3], lanes: [usize; 3]) -> Adopt {
    let mut opt = Adopt::new();
    let gs = [
        opt.add_group(Hyper {
            lr: 0.01,
            ..Hyper::default()
        })
        .unwrap(),
        opt.add_group(Hyper {
            lr: 0.02,
            ..Hyper::default()
        })
        .unwrap(),
    ];
    let ids: Vec<ParamId> = (0..3)
        .map(|i| {
            opt.add_param(gs[groups[i] as usize], lanes[i], names[i])
                .unwrap()
        })
        .collect();
    for _ in 0..2 {
        let mut data: Vec<Vec<f32>> = lanes.iter().map(|&n| vec![1.0; n]).collect();
        let grads: Vec<Vec<f32>> = (0..3)
            .map(|i| vec![0.1 * (i + 1) as f32; lanes[i]])
            .collect();
        let mut items: Vec<Item<'_>> = data
            .iter_mut()
            .zip(&ids)
            .zip(&grads)
            .map(|((d, &id), g)| Item {
                id,
                params: d,
                grads: Some(g),
            })
            .collect();
        opt.step(&mut items).unwrap();
    }
    opt
}

/// Loading into an optimizer with another layout is refused with the
/// reason, and changes nothing; the optimizer's own layout always wins.
#[test]
fn loading_into_another_layout_is_refused_and_changes_nothing() {
    let names = [Some("decoder.weight"), Some("encoder.weight"), Some("head")];
    let saved = layout(names, [0, 0, 1], [4, 4, 2]).save().unwrap();
    let refuse = |mut into: Adopt, want: CheckpointError| {
        let before = into.save().unwrap();
        assert_eq!(into.load(&saved), mismatch(want.clone()));
        assert_eq!(into.save().unwrap(), before, "{want:?}: changed");
    };

    // The case: two 4-lane parameters in the other order. Each would
    // silently receive the other's moments.
    let swapped = [Some("encoder.weight"), Some("decoder.weight"), Some("head")];
    refuse(
        layout(swapped, [0, 0, 1], [4, 4, 2]),
        CheckpointError::NameMismatch {
            param: 0,
            expected: "encoder.weight".into(),
            got: "decoder.weight".into(),
        },
    );
    // A parameter moved to the other group.
    refuse(
        layout(names, [0, 1, 1], [4, 4, 2]),
        CheckpointError::GroupMismatch {
            param: 1,
            expected: 1,
            got: 0,
        },
    );
    // Other lanes.
    refuse(
        layout(names, [0, 0, 1], [4, 4, 3]),
        CheckpointError::LanesMismatch {
            param: 2,
            expected: 3,
            got: 2,
        },
    );
    // Another number of parameters.
    let mut more = layout(names, [0, 0, 1], [4, 4, 2]);
    more.add_param(GroupId(1), 1, None).unwrap();
    refuse(
        more,
        CheckpointError::ParamCountMismatch {
            expected: 4,
            got: 3,
        },
    );
    // Another number of groups.
    let mut groups = layout(names, [0, 0, 1], [4, 4, 2]);
    groups.add_group(Hyper::default()).unwrap();
    refuse(
        groups,
        CheckpointError::GroupCountMismatch {
            expected: 3,
            got: 2,
        },
    );

    // Unnamed on either side: matched by position.
    let mut unnamed = layout([None, None, Some("head")], [0, 0, 1], [4, 4, 2]);
    unnamed.load(&saved).unwrap();
    assert_eq!(
        unnamed.param(ParamId(0)).unwrap().2,
        None,
        "the optimizer's names stay"
    );
    // Replacing the layout is its own call.
    let mut replaced = layout(swapped, [0, 0, 1], [4, 4, 2]);
    assert_ne!(replaced.save().unwrap(), saved);
    replaced = Adopt::from_checkpoint(&saved).unwrap();
    assert_eq!(replaced.save().unwrap(), saved);
    assert_eq!(
        replaced.param(ParamId(0)).unwrap().2,
        Some("decoder.weight")
    );
}

/// `load_by_name` gives each named parameter the state saved under its
/// name, wherever it was; unnamed ones load by position.
#[test]
fn load_by_name_maps_states_by_name() {
    let names = [Some("decoder.weight"), Some("encoder.weight"), None];
    let original = layout(names, [0, 0, 1], [4, 4, 2]);
    let saved = original.save().unwrap();
    let swapped = [Some("encoder.weight"), Some("decoder.weight"), None];
    // Stepped by position, so before the load its states are in the other
    // order.
    let mut into = layout(swapped, [0, 0, 1], [4, 4, 2]);
    into.load_by_name(&saved).unwrap();
    assert_eq!(
        into.state(ParamId(0)).unwrap(),
        original.state(ParamId(1)).unwrap()
    );
    assert_eq!(
        into.state(ParamId(1)).unwrap(),
        original.state(ParamId(0)).unwrap()
    );
    assert_eq!(
        into.state(ParamId(2)).unwrap(),
        original.state(ParamId(2)).unwrap()
    );
    assert_eq!(into.param(ParamId(0)).unwrap().2, Some("encoder.weight"));
    assert_ne!(
        original.state(ParamId(0)).unwrap(),
        original.state(ParamId(1)).unwrap(),
        "the two states differ, so a swap is visible"
    );

    let refuse = |mut into: Adopt, want: CheckpointError| {
        let before = into.save().unwrap();
        assert_eq!(into.load_by_name(&saved), mismatch(want.clone()));
        assert_eq!(into.save().unwrap(), before, "{want:?}: changed");
    };
    refuse(
        layout(
            [Some("encoder.weight"), Some("other"), None],
            [0, 0, 1],
            [4, 4, 2],
        ),
        CheckpointError::NameNotFound {
            name: "other".into(),
        },
    );
    refuse(
        layout(
            [Some("encoder.weight"), Some("encoder.weight"), None],
            [0, 0, 1],
            [4, 4, 2],
        ),
        CheckpointError::DuplicateName {
            name: "encoder.weight".into(),
        },
    );
    // A name that moved group, or changed lanes, is still refused.
    refuse(
        layout(swapped, [0, 1, 1], [4, 4, 2]),
        CheckpointError::GroupMismatch {
            param: 1,
            expected: 1,
            got: 0,
        },
    );
    refuse(
        layout(swapped, [0, 0, 1], [4, 5, 2]),
        CheckpointError::LanesMismatch {
            param: 1,
            expected: 5,
            got: 4,
        },
    );
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
        (h0.lr, h0.weight_decay, h0.maximize),
        (0.01, WeightDecay::decoupled(0.1), false)
    );
    assert!(matches!(
        h0.clip,
        Clip::Power {
            scale: 1.0,
            exponent: 0.25
        }
    ));
    // Fields added in versions 2 and 3 take their defaults.
    assert!(!h0.nesterov);
    assert_eq!((h0.caution, h0.clip_offset), (Caution::Off, 0));
    assert_eq!(opt.initial_lr(GroupId(0)).unwrap(), 0.01);
    assert_eq!(
        opt.hyper(GroupId(1)).unwrap().weight_decay,
        WeightDecay::None
    );
    assert_eq!(opt.param(ParamId(0)).unwrap(), (GroupId(0), 2, None));
    let s = opt.state(ParamId(0)).unwrap().unwrap();
    assert_eq!(
        (s.step(), s.exp_avg(), s.exp_avg_sq()),
        (7, &[0.5, -0.25][..], &[4.0, 9.0][..])
    );
    assert!(opt.state(ParamId(1)).unwrap().is_none());
    assert!(opt.hyper(GroupId(1)).unwrap().maximize);
    // Saving writes the current version, which loads back the same.
    let current = opt.save().unwrap();
    assert_eq!(
        u32::from_le_bytes(current[8..12].try_into().unwrap()),
        VERSION
    );
    assert_eq!(
        Adopt::from_checkpoint(&current).unwrap().save().unwrap(),
        current
    );
}

const V2_FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/checkpoint_v2.bin");

/// The optimizer `tests/data/checkpoint_v2.bin` was saved from (by the
/// release that wrote version 2), rebuilt with today's API: its groups,
/// then its parameters stepped three times.
fn v2_source() -> Adopt {
    let mut opt = Adopt::new();
    let g0 = opt
        .add_group(Hyper {
            lr: 0.01,
            weight_decay: WeightDecay::Decoupled {
                weight_decay: 0.1,
                scaling: DecayScaling::Corrected { max_lr: Some(0.05) },
                first_step: false,
            },
            nesterov: true,
            ..Hyper::default()
        })
        .unwrap();
    let g1 = opt
        .add_group(Hyper {
            lr: 0.002,
            betas: (0.3, 0.99),
            clip: Clip::Constant(0.5),
            weight_decay: WeightDecay::l2(0.01),
            maximize: true,
            caution: Caution::Timm,
            ..Hyper::default()
        })
        .unwrap();
    let g2 = opt
        .add_group(Hyper {
            weight_decay: WeightDecay::Decoupled {
                weight_decay: 0.2,
                scaling: DecayScaling::Fixed,
                first_step: false,
            },
            clip: Clip::None,
            ..Hyper::default()
        })
        .unwrap();
    let a = opt.add_param(g0, 3, Some("encoder.weight")).unwrap();
    let b = opt.add_param(g1, 2, None).unwrap();
    opt.add_param(g2, 4, Some("head.bias")).unwrap();
    let (mut da, mut db) = (vec![1.0_f32, -2.0, 0.5], vec![0.25_f32, 3.0]);
    for t in 0..3 {
        let ga = [0.1 * t as f32, -0.3, 0.7];
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

/// A checkpoint the previous release wrote (version 2) loads: its groups'
/// hyperparameters in today's form, its names, and states equal to today's
/// run of the same steps (β1 = 0.3 there, where the lerp's form changed:
/// the saved states were computed with the old form, so they are compared
/// within 1 ulp).
#[test]
#[cfg_attr(miri, ignore = "reads a file")]
fn committed_version_2_checkpoint_still_loads() {
    let bytes = std::fs::read(V2_FIXTURE).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 2);
    let loaded = Adopt::from_checkpoint(&bytes).unwrap();
    let today = v2_source();
    assert_eq!(loaded.group_count(), 3);
    for g in 0..3 {
        let (a, b) = (
            loaded.hyper(GroupId(g)).unwrap(),
            today.hyper(GroupId(g)).unwrap(),
        );
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "group {g}");
        assert_eq!(loaded.initial_lr(GroupId(g)).unwrap(), b.lr);
    }
    for p in 0..3 {
        let id = ParamId(p);
        assert_eq!(loaded.param(id).unwrap(), today.param(id).unwrap());
        match (loaded.state(id).unwrap(), today.state(id).unwrap()) {
            (None, None) => {}
            (Some(a), Some(b)) => {
                assert_eq!(a.step(), b.step());
                let close = |x: &[f32], y: &[f32]| {
                    x.iter()
                        .zip(y)
                        .all(|(x, y)| (x.to_bits() as i64 - y.to_bits() as i64).abs() <= 1)
                };
                assert!(close(a.exp_avg(), b.exp_avg()), "param {p}: {a:?} vs {b:?}");
                assert!(close(a.exp_avg_sq(), b.exp_avg_sq()), "param {p}");
            }
            other => panic!("param {p}: states {other:?}"),
        }
    }
    let current = loaded.save().unwrap();
    assert_eq!(
        u32::from_le_bytes(current[8..12].try_into().unwrap()),
        VERSION
    );
    assert_eq!(
        Adopt::from_checkpoint(&current).unwrap().save().unwrap(),
        current
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 200 }))]

    #[test]
    fn random_optimizers_round_trip(
        groups in prop::collection::vec((0.0_f64..1.0, 0_u8..5, any::<bool>(), any::<bool>(), 0_u8..3, 0_u64..3), 1..4),
        params in prop::collection::vec((0_usize..4, 0_usize..20, prop::option::of("[a-z.]{0,12}"), 0_u64..5), 0..6),
    ) {
        let mut opt = Adopt::new();
        let gids: Vec<GroupId> = groups
            .iter()
            .map(|&(lr, decay, maximize, nesterov, caution, clip_offset)| {
                let weight_decay = match decay {
                    0 => WeightDecay::None,
                    1 => WeightDecay::l2(0.01),
                    2 => WeightDecay::decoupled(0.01),
                    3 => WeightDecay::Decoupled {
                        weight_decay: 0.01,
                        scaling: DecayScaling::Fixed,
                        first_step: true,
                    },
                    _ => WeightDecay::Decoupled {
                        weight_decay: 0.01,
                        scaling: DecayScaling::Corrected { max_lr: None },
                        first_step: false,
                    },
                };
                let caution = [Caution::Off, Caution::Timm, Caution::PytorchOptimizer][caution as usize];
                let hyper = Hyper { lr: lr + 1e-3, weight_decay, maximize, nesterov, caution, clip_offset, ..Hyper::default() };
                opt.add_group(hyper).unwrap()
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

/// A group added with lr = 0 has an initial learning rate of 0: switching
/// it to corrected decay without `max_lr` makes its hyperparameters
/// invalid, which `save` refuses rather than writing a checkpoint that
/// would not load (found by the `optimizer_ops` fuzz target).
#[test]
fn a_group_that_cannot_load_is_not_saved() {
    let mut opt = Adopt::new();
    let g = opt
        .add_group(Hyper {
            lr: 0.0,
            ..Hyper::default()
        })
        .unwrap();
    opt.hyper_mut(g).unwrap().weight_decay = WeightDecay::Decoupled {
        weight_decay: 0.1,
        scaling: DecayScaling::Corrected { max_lr: None },
        first_step: false,
    };
    assert_eq!(
        opt.save(),
        Err(Error::InvalidHyper {
            param: adopt::HyperParam::MaxLr,
            value: adopt::Float(0.0)
        })
    );
    opt.set_initial_lr(g, 0.01).unwrap();
    let bytes = opt.save().unwrap();
    assert_eq!(
        Adopt::from_checkpoint(&bytes).unwrap().save().unwrap(),
        bytes
    );
}
