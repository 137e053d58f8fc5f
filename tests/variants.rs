//! The peers' variants, each against a small f64 model of the peer's own
//! definition (not against this crate's reference):
//! - decoupled decay scaled by lr (torch-adopt, AdamW), fixed (pytorch-optimizer
//!   `fixed_decay`) and corrected by lr²/max_lr (timm `corrected_weight_decay`);
//! - Nesterov momentum (optax `adopt(nesterov=True)`): the parameter moves by
//!   `b1·m + (1-b1)·ĝ` with the new `m`;
//! - cautious masking (timm `caution`): `mask = (u·g > 0)`, `u = u·mask /
//!   max(mean(mask), 1e-3)` over the whole tensor.

use adopt::{DecayScaling, Hyper, State, adopt_step};
use proptest::prelude::*;

/// ADOPT in f64 with the peer's definitions, written from their papers/code.
fn model(p0: &[f32], grads: &[Vec<f32>], h: &Hyper) -> Vec<f64> {
    let (b1, b2) = h.betas;
    let mut p: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
    let mut m = vec![0.0_f64; p.len()];
    let mut v = vec![0.0_f64; p.len()];
    for (t, g) in grads.iter().enumerate() {
        // timm computes the caution mask over the tensor after updating m.
        let mut updates = vec![0.0_f64; p.len()];
        let mut gs = vec![0.0_f64; p.len()];
        for i in 0..p.len() {
            let g = g[i] as f64;
            if t == 0 {
                v[i] = g * g;
                continue;
            }
            if h.decouple && h.weight_decay != 0.0 {
                let rate = match h.decay_scaling {
                    DecayScaling::Lr => h.lr,
                    DecayScaling::Fixed => 1.0,
                    DecayScaling::Corrected { max_lr } => h.lr * h.lr / max_lr,
                };
                p[i] *= 1.0 - rate * h.weight_decay;
            }
            let clip = (t as f64).powf(0.25);
            let normed = (g / v[i].sqrt().max(h.eps)).clamp(-clip, clip);
            m[i] = b1 * m[i] + (1.0 - b1) * normed;
            updates[i] = if h.nesterov {
                b1 * m[i] + (1.0 - b1) * normed
            } else {
                m[i]
            };
            gs[i] = g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
        }
        if t > 0 {
            if h.cautious {
                let mask: Vec<f64> = updates
                    .iter()
                    .zip(&gs)
                    .map(|(u, g)| if u * g > 0.0 { 1.0 } else { 0.0 })
                    .collect();
                let mean = (mask.iter().sum::<f64>() / mask.len() as f64).max(1e-3);
                updates
                    .iter_mut()
                    .zip(&mask)
                    .for_each(|(u, k)| *u *= k / mean);
            }
            p.iter_mut().zip(&updates).for_each(|(p, u)| *p -= h.lr * u);
        }
    }
    p
}

fn run(p0: &[f32], grads: &[Vec<f32>], h: &Hyper) -> Vec<f32> {
    let mut p = p0.to_vec();
    let mut state = State::new(p.len());
    for g in grads {
        adopt_step(&mut p, g, &mut state, h).unwrap();
    }
    p
}

fn variants() -> Vec<Hyper> {
    let base = Hyper {
        lr: 0.05,
        weight_decay: 0.2,
        decouple: true,
        betas: (0.9, 0.99),
        ..Hyper::default()
    };
    vec![
        base,
        Hyper {
            decay_scaling: DecayScaling::Fixed,
            ..base
        },
        Hyper {
            decay_scaling: DecayScaling::Corrected { max_lr: 0.1 },
            ..base
        },
        Hyper {
            nesterov: true,
            weight_decay: 0.0,
            ..base
        },
        Hyper {
            nesterov: true,
            decay_scaling: DecayScaling::Fixed,
            ..base
        },
        Hyper {
            cautious: true,
            weight_decay: 0.0,
            ..base
        },
        Hyper {
            cautious: true,
            nesterov: true,
            ..base
        },
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 200 }))]

    #[test]
    fn variants_follow_their_peers_definitions(
        p0 in prop::collection::vec(-2.0_f32..2.0, 1..20),
        seed in prop::collection::vec(-1.0_f32..1.0, 20 * 8),
    ) {
        let n = p0.len();
        let grads: Vec<Vec<f32>> = (0..8).map(|t| (0..n).map(|i| seed[t * 20 + i] + 0.1).collect()).collect();
        for h in variants() {
            let (got, want) = (run(&p0, &grads, &h), model(&p0, &grads, &h));
            for (i, (&x, &r)) in got.iter().zip(&want).enumerate() {
                let bound = 1e-5 * r.abs() + 1e-5;
                prop_assert!((x as f64 - r).abs() <= bound, "{h:?} lane {i}: got {x}, model {r}");
            }
        }
    }
}

/// Each variant changes the trajectory (so the tests above can fail if a
/// variant were ignored).
#[test]
fn variants_differ_from_each_other() {
    let p0 = vec![1.5_f32, -0.5, 0.25];
    let grads: Vec<Vec<f32>> = (0..6)
        .map(|t| vec![0.3 + t as f32 * 0.1, -0.2, 0.05])
        .collect();
    let results: Vec<Vec<f32>> = variants().iter().map(|h| run(&p0, &grads, h)).collect();
    for i in 0..results.len() {
        for j in i + 1..results.len() {
            assert_ne!(
                results[i], results[j],
                "variants {i} and {j} give the same trajectory"
            );
        }
    }
}
