//! Arbitrary sequences of optimizer operations: add group, add parameter,
//! change hyperparameters, step (with or without gradients, with bad ids,
//! lengths and scaling), save and load. Never panics; every failed operation
//! leaves the optimizer unchanged; every step matches a model made of
//! `adopt_step` calls on plain `State`s.

#![no_main]

use adopt::{
    Adopt, Caution, Clip, DecayScaling, GroupId, Hyper, Item, ParamId, Scaling, State, StepOptions,
    WeightDecay, adopt_step_ext,
};
use libfuzzer_sys::fuzz_target;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }
}

fn nan_clip(_: u64) -> f64 {
    f64::NAN
}

fn hyper(code: u8) -> Hyper {
    let mut h = Hyper {
        lr: [0.0, 1e-3, 0.1, 2.0][code as usize % 4],
        ..Hyper::default()
    };
    h.weight_decay = match (code & 4 != 0, code & 8 != 0) {
        (_, false) => WeightDecay::None,
        (false, true) => WeightDecay::L2(0.05),
        (true, true) => WeightDecay::Decoupled {
            weight_decay: 0.05,
            scaling: DecayScaling::Corrected { max_lr: None },
            first_step: code & 2 != 0,
        },
    };
    h.nesterov = code & 16 != 0;
    h.caution = if code & 32 != 0 {
        Caution::PytorchOptimizer
    } else {
        Caution::Off
    };
    if code & 64 != 0 {
        h.clip = Clip::Custom(nan_clip); // invalid from step 1; unsaveable
    }
    if code & 128 != 0 {
        h.betas.1 = 1.0; // invalid
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mut opt = Adopt::new();
    // The model: per param, its group, its data, and its state (if stepped).
    let mut data_bufs: Vec<Vec<f32>> = Vec::new();
    let mut model: Vec<(usize, Vec<f32>, Option<State>)> = Vec::new();
    // Per group: its hyperparameters and initial learning rate.
    let mut groups: Vec<(Hyper, f64)> = Vec::new();
    while let Some(op) = b.u8() {
        let before = opt.save();
        match op % 6 {
            0 => {
                let h = hyper(b.u8().unwrap_or(0));
                match opt.add_group(h) {
                    Ok(g) => {
                        assert_eq!(g.0 as usize, groups.len());
                        groups.push((h, h.lr));
                    }
                    Err(_) => assert_eq!(opt.save(), before),
                }
            }
            1 => {
                let (g, lanes) = (
                    b.u8().unwrap_or(0) as usize % 4,
                    b.u8().unwrap_or(0) as usize % 40,
                );
                match opt.add_param(GroupId(g as u32), lanes, None) {
                    Ok(id) => {
                        assert_eq!(id.0 as usize, model.len());
                        let init: Vec<f32> = (0..lanes).map(|i| i as f32 * 0.25 - 2.0).collect();
                        data_bufs.push(init.clone());
                        model.push((g, init, None));
                    }
                    Err(_) => assert!(g >= groups.len()),
                }
            }
            2 => {
                let (g, code) = (b.u8().unwrap_or(0) as usize % 4, b.u8().unwrap_or(0));
                if let Ok(h) = opt.hyper_mut(GroupId(g as u32)) {
                    *h = hyper(code);
                    groups[g].0 = hyper(code);
                }
            }
            3 => {
                let mask = b.u8().unwrap_or(0);
                let bad = b.u8().unwrap_or(0);
                let scaling = match bad % 8 {
                    0 => Scaling {
                        inv_scale: f32::NAN,
                        found_inf: false,
                    },
                    1 => Scaling {
                        inv_scale: 0.5,
                        found_inf: true,
                    },
                    2 => Scaling {
                        inv_scale: 0.25,
                        found_inf: false,
                    },
                    _ => Scaling::default(),
                };
                let grads: Vec<Vec<f32>> = data_bufs
                    .iter()
                    .enumerate()
                    .map(|(i, d)| d.iter().map(|x| (x + i as f32).sin()).collect())
                    .collect();
                let snapshot = data_bufs.clone();
                let mut items: Vec<Item<'_>> = data_bufs
                    .iter_mut()
                    .enumerate()
                    .map(|(i, d)| Item {
                        id: ParamId(i as u32),
                        params: d,
                        grads: (mask >> (i % 8) & 1 == 1).then_some(&grads[i][..]),
                    })
                    .collect();
                if bad % 8 == 3 && !items.is_empty() {
                    items[0].id = ParamId(1000); // unknown
                } else if bad % 8 == 4 && items.len() >= 2 {
                    items[1].id = items[0].id; // duplicate
                }
                let result = opt.step_scaled(&mut items, scaling);
                drop(items);
                match result {
                    Ok(()) => {
                        // The model steps each buffer with a gradient alone.
                        for (i, (g, d, state)) in model.iter_mut().enumerate() {
                            if mask >> (i % 8) & 1 == 1 && !scaling.found_inf {
                                let s = state.get_or_insert_with(|| State::new(d.len()));
                                let (hyper, initial_lr) = groups[*g];
                                let hyper = hyper.with_initial_lr(initial_lr);
                                let options = StepOptions {
                                    scaling,
                                    ..StepOptions::default()
                                };
                                adopt_step_ext(d, &grads[i], s, &hyper, &options).unwrap();
                            }
                        }
                        for (i, (_, d, _)) in model.iter().enumerate() {
                            let same = d.iter().zip(&data_bufs[i]).all(|(x, y)| {
                                x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
                            });
                            assert!(same, "param {i} differs from the model");
                        }
                    }
                    Err(_) => {
                        assert_eq!(opt.save(), before, "a failed step changed the optimizer");
                        assert!(snapshot.iter().zip(&data_bufs).all(|(a, b)| {
                            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
                        }));
                    }
                }
            }
            4 => {
                if let Ok(bytes) = opt.save() {
                    let restored = Adopt::from_checkpoint(&bytes).unwrap();
                    assert_eq!(restored.save().unwrap(), bytes);
                }
            }
            _ => {
                if let Ok(bytes) = opt.save() {
                    opt.load(&bytes).unwrap();
                    assert_eq!(opt.save().unwrap(), bytes);
                }
            }
        }
    }
});
