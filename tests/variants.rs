//! The peers' variants, each against a small f64 model of the peer's own
//! code (not against this crate's reference):
//! - decoupled decay scaled by lr on steps after the first (torch-adopt,
//!   AdamW), by lr²/max_lr (timm `corrected_weight_decay`), and
//!   pytorch-optimizer's `weight_decouple` / `fixed_decay`, which multiply
//!   `p` by `1 - wd·lr` (or `1 - wd`) on every step, the first included, and
//!   call `clip_lambda` with the number of the step being taken;
//! - Nesterov momentum (optax `adopt(nesterov=True)`): the parameter moves
//!   by `b1·m + (1-b1)·ĝ` with the new `m`;
//! - cautious masking as timm's `caution` (`mask = (u·g > 0)`, `u = u·mask /
//!   max(mean(mask), 1e-3)`) and as pytorch-optimizer's `cautious` (`mask =
//!   (u·ĝ > 0)` with the normalised gradient, `u = u·mask·numel/(sum(mask)
//!   + 1)`), both over the whole tensor.

use adopt::{Adopt, Caution, DecayScaling, Hyper, Item, State, WeightDecay, adopt_step};
use proptest::prelude::*;

/// How the peer under test decays, clips and masks.
#[derive(Clone, Copy, Debug)]
struct Peer {
    /// Multiply `p` by `1 - rate` (`rate` per step), from the first step
    /// on (pytorch-optimizer) or from the second (torch-adopt, timm).
    decay: Option<(f64, bool)>,
    /// `clip_lambda` is called with steps taken plus this.
    clip_offset: u64,
    nesterov: bool,
    caution: Caution,
}

/// ADOPT in f64 with the peer's definitions, written from their code.
fn model(p0: &[f32], grads: &[Vec<f32>], h: &Hyper, peer: Peer) -> Vec<f64> {
    let (b1, b2) = h.betas;
    let mut p: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
    let mut m = vec![0.0_f64; p.len()];
    let mut v = vec![0.0_f64; p.len()];
    for (t, g) in grads.iter().enumerate() {
        if let Some((rate, first_step)) = peer.decay
            && (t > 0 || first_step)
        {
            p.iter_mut().for_each(|p| *p *= 1.0 - rate);
        }
        if t == 0 {
            v.iter_mut()
                .zip(g)
                .for_each(|(v, &g)| *v = g as f64 * g as f64);
            continue;
        }
        // The mask is computed over the tensor after updating m.
        let mut updates = vec![0.0_f64; p.len()];
        let mut gs = vec![0.0_f64; p.len()];
        let mut normed = vec![0.0_f64; p.len()];
        let clip = ((t as u64 + peer.clip_offset) as f64).powf(0.25);
        for i in 0..p.len() {
            let g = g[i] as f64;
            normed[i] = (g / v[i].sqrt().max(h.eps)).clamp(-clip, clip);
            m[i] = b1 * m[i] + (1.0 - b1) * normed[i];
            updates[i] = if peer.nesterov {
                b1 * m[i] + (1.0 - b1) * normed[i]
            } else {
                m[i]
            };
            gs[i] = g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
        }
        let against = match peer.caution {
            Caution::Off => None,
            Caution::Timm => Some(&gs),
            Caution::PytorchOptimizer => Some(&normed),
        };
        if let Some(against) = against {
            let mask: Vec<f64> = updates
                .iter()
                .zip(against)
                .map(|(u, g)| if u * g > 0.0 { 1.0 } else { 0.0 })
                .collect();
            let sum = mask.iter().sum::<f64>();
            let scale = match peer.caution {
                Caution::Timm => 1.0 / (sum / mask.len() as f64).max(1e-3),
                _ => mask.len() as f64 / (sum + 1.0),
            };
            updates
                .iter_mut()
                .zip(&mask)
                .for_each(|(u, k)| *u *= k * scale);
        }
        p.iter_mut().zip(&updates).for_each(|(p, u)| *p -= h.lr * u);
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

/// Each peer's variant: its options in this crate, and how the peer
/// itself computes.
fn variants() -> Vec<(Hyper, Peer)> {
    let (lr, wd) = (0.05, 0.2);
    let base = Hyper {
        lr,
        weight_decay: WeightDecay::decoupled(wd),
        betas: (0.9, 0.99),
        ..Hyper::default()
    };
    let peer = Peer {
        decay: Some((lr * wd, false)),
        clip_offset: 0,
        nesterov: false,
        caution: Caution::Off,
    };
    let decoupled = |scaling, first_step| WeightDecay::Decoupled {
        weight_decay: wd,
        scaling,
        first_step,
    };
    vec![
        // torch-adopt's decouple=True.
        (base, peer),
        // pytorch-optimizer's weight_decouple, and with fixed_decay: every
        // step decays, and the clip sees the step being taken.
        (
            Hyper {
                weight_decay: decoupled(DecayScaling::Lr, true),
                clip_offset: 1,
                ..base
            },
            Peer {
                decay: Some((lr * wd, true)),
                clip_offset: 1,
                ..peer
            },
        ),
        (
            Hyper {
                weight_decay: decoupled(DecayScaling::Fixed, true),
                clip_offset: 1,
                ..base
            },
            Peer {
                decay: Some((wd, true)),
                clip_offset: 1,
                ..peer
            },
        ),
        // timm's corrected_weight_decay.
        (
            Hyper {
                weight_decay: decoupled(DecayScaling::Corrected { max_lr: Some(0.1) }, false),
                ..base
            },
            Peer {
                decay: Some((lr * lr / 0.1 * wd, false)),
                ..peer
            },
        ),
        // optax's nesterov.
        (
            Hyper {
                nesterov: true,
                weight_decay: WeightDecay::None,
                ..base
            },
            Peer {
                decay: None,
                nesterov: true,
                ..peer
            },
        ),
        (
            Hyper {
                nesterov: true,
                weight_decay: decoupled(DecayScaling::Fixed, false),
                ..base
            },
            Peer {
                decay: Some((wd, false)),
                nesterov: true,
                ..peer
            },
        ),
        // timm's caution, and pytorch-optimizer's cautious.
        (
            Hyper {
                caution: Caution::Timm,
                weight_decay: WeightDecay::None,
                ..base
            },
            Peer {
                decay: None,
                caution: Caution::Timm,
                ..peer
            },
        ),
        (
            Hyper {
                caution: Caution::Timm,
                nesterov: true,
                ..base
            },
            Peer {
                caution: Caution::Timm,
                nesterov: true,
                ..peer
            },
        ),
        (
            Hyper {
                caution: Caution::PytorchOptimizer,
                weight_decay: decoupled(DecayScaling::Lr, true),
                clip_offset: 1,
                ..base
            },
            Peer {
                decay: Some((lr * wd, true)),
                clip_offset: 1,
                caution: Caution::PytorchOptimizer,
                ..peer
            },
        ),
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
        for (h, peer) in variants() {
            let (got, want) = (run(&p0, &grads, &h), model(&p0, &grads, &h, peer));
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
    let results: Vec<Vec<f32>> = variants()
        .iter()
        .map(|(h, _)| run(&p0, &grads, h))
        .collect();
    for i in 0..results.len() {
        for j in i + 1..results.len() {
            assert_ne!(
                results[i], results[j],
                "variants {i} and {j} give the same trajectory"
            );
        }
    }
}

/// timm takes the corrected decay's `max_lr` from the group's initial
/// learning rate: an `Adopt` group with `max_lr: None` decays by
/// `lr²/initial_lr` while a schedule lowers `lr`.
#[test]
fn corrected_decay_takes_max_lr_from_the_initial_lr() {
    let p0 = vec![1.5_f32, -0.5, 0.25, 2.0];
    let grads: Vec<Vec<f32>> = (0..6)
        .map(|t| vec![0.3 + t as f32 * 0.1, -0.2, 0.05, 1.0])
        .collect();
    let wd = 0.3;
    let unset = Hyper {
        lr: 0.1,
        weight_decay: WeightDecay::Decoupled {
            weight_decay: wd,
            scaling: DecayScaling::Corrected { max_lr: None },
            first_step: false,
        },
        ..Hyper::default()
    };
    let mut opt = Adopt::new();
    let g = opt.add_group(unset).unwrap();
    assert_eq!(opt.initial_lr(g).unwrap(), 0.1);
    let id = opt.add_param(g, 4, None).unwrap();
    let mut p = p0.clone();
    let mut q = p0.clone();
    let mut state = State::new(4);
    for (t, grad) in grads.iter().enumerate() {
        let lr = 0.1 / (1 + t) as f64; // the schedule
        opt.hyper_mut(g).unwrap().lr = lr;
        opt.step(&mut [Item {
            id,
            params: &mut p,
            grads: Some(grad),
        }])
        .unwrap();
        let explicit = Hyper {
            lr,
            weight_decay: WeightDecay::Decoupled {
                weight_decay: wd,
                scaling: DecayScaling::Corrected { max_lr: Some(0.1) },
                first_step: false,
            },
            ..Hyper::default()
        };
        adopt_step(&mut q, grad, &mut state, &explicit).unwrap();
        assert_eq!(p, q, "step {t}");
    }
    // A single step has no initial learning rate.
    assert_eq!(
        adopt_step(&mut q, &grads[0], &mut state, &unset),
        Err(adopt::Error::MaxLrUnset)
    );
}
