//! Helpers shared by the integration tests.
#![allow(dead_code)]

/// Bit equality where any NaN matches any NaN.
pub fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Panics with the first lane where `got` and `want` differ in bits.
pub fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&x, &r)) in got.iter().zip(want).enumerate() {
        assert!(
            same_bits(x, r),
            "{what}: lane {i} differs: got {x:e} ({:#010x}), want {r:e} ({:#010x})",
            x.to_bits(),
            r.to_bits()
        );
    }
}

use adopt::{Caution, Clip, DecayScaling, Hyper, WeightDecay};
use proptest::prelude::*;

/// f32 values with heavy weight on the edges: NaN, ±inf, ±0, subnormals,
/// ±f32::MAX, huge and tiny magnitudes, and arbitrary bit patterns.
pub fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -4.0_f32..4.0,
        1 => prop::sample::select(vec![
            f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0,
            f32::from_bits(1), -f32::from_bits(1), f32::MIN_POSITIVE, f32::MAX, -f32::MAX,
            3e30, -3e30, 1e-30, 1e-20, 1e20, 1.0, -1.0,
        ]),
        1 => any::<u32>().prop_map(f32::from_bits),
    ]
}

/// Non-negative state values for `v` (any value is accepted, but the edges
/// of a real `v` are zero, subnormal, huge and infinite).
pub fn second_moment() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => 0.0_f32..4.0,
        1 => prop::sample::select(vec![
            0.0, -0.0, f32::from_bits(1), f32::MIN_POSITIVE, 1e-12, f32::MAX, f32::INFINITY, f32::NAN,
        ]),
        1 => any::<u32>().prop_map(f32::from_bits),
    ]
}

fn clip_nan(_: u64) -> f64 {
    f64::NAN
}
fn clip_negative(t: u64) -> f64 {
    if t > 2 { -1.0 } else { 1.0 }
}
fn clip_decreasing(t: u64) -> f64 {
    1.0 / (t as f64 + 1.0)
}

/// β values, weighted toward `[0, 0.5]` (where torch's lerp takes its
/// second form) and the boundary 0.5 itself, plus invalid ones.
pub fn beta() -> impl Strategy<Value = f64> {
    prop_oneof![
        2 => prop::sample::select(vec![
            0.0,
            0.5,
            0.9,
            0.999,
            0.9999,
            1.0 - 1e-16,
            1.0,
            -0.1,
            f64::NAN,
        ]),
        1 => prop::sample::select(vec![
            0.3,
            0.1,
            1e-9,
            0.49999999,
            0.5 - 1e-17,
            0.5000001,
            0.50000000001,
        ]),
        1 => 0.0_f64..=0.5,
    ]
}

/// Hyperparameters with heavy weight on edges, including invalid ones and
/// ones that overflow f32 (so the error paths are compared too).
pub fn hyper() -> impl Strategy<Value = Hyper> {
    let lr = prop::sample::select(vec![
        0.0,
        1e-3,
        1e-2,
        0.5,
        1e30,
        1e300,
        1e39,
        f64::MAX,
        3.0e-39,
        -1e-3,
        f64::NAN,
    ]);
    let eps = prop::sample::select(vec![
        0.0,
        1e-6,
        1e-12,
        1e-45,
        1e-40,
        1.0,
        1e30,
        1e39,
        -1e-6,
        f64::INFINITY,
    ]);
    let coefficient = prop::sample::select(vec![0.01, 0.1, 10.0, 1e-50, 0.0, 1e39, 1e20, -0.1]);
    let scaling = prop::sample::select(vec![
        DecayScaling::Lr,
        DecayScaling::Lr,
        DecayScaling::Fixed,
        DecayScaling::Corrected { max_lr: Some(0.02) },
        DecayScaling::Corrected {
            max_lr: Some(1e-30),
        },
        DecayScaling::Corrected {
            max_lr: Some(1e-300),
        },
        DecayScaling::Corrected { max_lr: Some(0.0) },
        DecayScaling::Corrected { max_lr: None },
    ]);
    let weight_decay = prop_oneof![
        2 => Just(WeightDecay::None),
        1 => coefficient.clone().prop_map(WeightDecay::L2),
        2 => (coefficient, scaling, any::<bool>()).prop_map(|(weight_decay, scaling, first_step)| {
            WeightDecay::Decoupled { weight_decay, scaling, first_step }
        }),
    ];
    let clip = prop::sample::select(vec![
        Clip::None,
        Clip::Constant(0.0),
        Clip::Constant(1.0),
        Clip::Constant(1e-40),
        Clip::Constant(1e38),
        Clip::Constant(1e39),
        Clip::Constant(f64::INFINITY),
        Clip::Constant(-1.0),
        Clip::Power {
            scale: 1.0,
            exponent: 0.25,
        },
        Clip::Power {
            scale: 0.5,
            exponent: 0.5,
        },
        Clip::Power {
            scale: 0.0,
            exponent: 1.0,
        },
        Clip::Power {
            scale: 1.0,
            exponent: -2.0,
        },
        Clip::Power {
            scale: 1e38,
            exponent: 1.0,
        },
        Clip::Custom(clip_nan),
        Clip::Custom(clip_negative),
        Clip::Custom(clip_decreasing),
    ]);
    let caution = prop::sample::select(vec![
        Caution::Off,
        Caution::Off,
        Caution::Timm,
        Caution::PytorchOptimizer,
    ]);
    let flags = (any::<bool>(), prop::bool::weighted(0.3), 0_u64..3);
    (lr, beta(), beta(), eps, weight_decay, flags, clip, caution).prop_map(
        |(lr, b1, b2, eps, weight_decay, (maximize, nesterov, clip_offset), clip, caution)| Hyper {
            lr,
            betas: (b1, b2),
            eps,
            weight_decay,
            maximize,
            clip,
            clip_offset,
            nesterov,
            caution,
        },
    )
}

/// An `Adopt::step` list of items: buffer `i` of `data` as parameter
/// `ids[i]`, with `grads[i]` where `has_grad(i)` and no gradient elsewhere.
pub fn items<'a>(
    data: &'a mut [Vec<f32>],
    ids: &[adopt::ParamId],
    grads: &'a [Vec<f32>],
    has_grad: impl Fn(usize) -> bool,
) -> Vec<adopt::Item<'a>> {
    data.iter_mut()
        .zip(ids)
        .zip(grads)
        .enumerate()
        .map(|(i, ((d, &id), g))| adopt::Item {
            id,
            params: d,
            grads: has_grad(i).then_some(&g[..]),
        })
        .collect()
}
