//! `Adopt`: many buffers with groups, lazily created state, one step over
//! all of them; bit-identical to `adopt_step` per buffer, serial or parallel;
//! every bad input refused with nothing changed.

mod common;

use adopt::{
    Adopt, Buffer, Clip, Error, Float, GroupId, Hyper, HyperParam, Item, ParamId, Scaling, State,
    WeightDecay, adopt_step,
};
use common::{assert_same_bits, value};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Setup {
    groups: Vec<Hyper>,
    /// (group index, lanes) per parameter.
    params: Vec<(usize, usize)>,
    /// Per step, per parameter: a gradient or none.
    grads: Vec<Vec<Option<Vec<f32>>>>,
}

fn setup() -> impl Strategy<Value = Setup> {
    let groups = prop::collection::vec(
        (
            prop::sample::select(vec![1e-3, 1e-2, 0.1]),
            any::<bool>(),
            prop::sample::select(vec![0.0, 0.01]),
        )
            .prop_map(|(lr, nesterov, weight_decay)| Hyper {
                lr,
                nesterov,
                weight_decay: WeightDecay::decoupled(weight_decay),
                ..Hyper::default()
            }),
        1..4,
    );
    (
        groups,
        prop::collection::vec((0_usize..4, 0_usize..40), 1..8),
        1_usize..5,
    )
        .prop_flat_map(|(groups, params, steps)| {
            let n = groups.len();
            let params: Vec<(usize, usize)> = params.into_iter().map(|(g, l)| (g % n, l)).collect();
            let per_step: Vec<BoxedStrategy<Option<Vec<f32>>>> = params
                .iter()
                .map(|&(_, lanes)| {
                    prop::option::weighted(0.8, prop::collection::vec(value(), lanes)).boxed()
                })
                .collect();
            (
                Just(groups),
                Just(params),
                prop::collection::vec(per_step, steps),
            )
                .prop_map(|(groups, params, grads)| Setup {
                    groups,
                    params,
                    grads,
                })
        })
}

fn build(s: &Setup) -> (Adopt, Vec<ParamId>) {
    let mut opt = Adopt::new();
    let gids: Vec<GroupId> = s
        .groups
        .iter()
        .map(|h| opt.add_group(*h).unwrap())
        .collect();
    let ids = s
        .params
        .iter()
        .map(|&(g, lanes)| opt.add_param(gids[g], lanes, None).unwrap())
        .collect();
    (opt, ids)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 300 }))]

    #[test]
    fn each_buffer_steps_like_adopt_step(s in setup()) {
        let (mut opt, ids) = build(&s);
        let mut data: Vec<Vec<f32>> = s.params.iter().map(|&(_, l)| (0..l).map(|i| i as f32 * 0.1 - 1.0).collect()).collect();
        let mut model_data = data.clone();
        let mut model_states: Vec<Option<State>> = vec![None; s.params.len()];
        for step in &s.grads {
            let mut items: Vec<Item<'_>> = data
                .iter_mut()
                .zip(&ids)
                .zip(step)
                .map(|((d, &id), g)| Item { id, params: d, grads: g.as_deref() })
                .collect();
            opt.step(&mut items).unwrap();
            for (i, g) in step.iter().enumerate() {
                if let Some(g) = g {
                    let state = model_states[i].get_or_insert_with(|| State::new(s.params[i].1));
                    adopt_step(&mut model_data[i], g, state, &s.groups[s.params[i].0]).unwrap();
                }
            }
        }
        for (i, id) in ids.iter().enumerate() {
            assert_same_bits(&data[i], &model_data[i], &format!("param {i}"));
            match (opt.state(*id).unwrap(), &model_states[i]) {
                (None, None) => {}
                (Some(a), Some(b)) => {
                    prop_assert_eq!(a.step(), b.step());
                    assert_same_bits(a.exp_avg(), b.exp_avg(), "exp_avg");
                    assert_same_bits(a.exp_avg_sq(), b.exp_avg_sq(), "exp_avg_sq");
                }
                (a, b) => prop_assert!(false, "state presence differs: {a:?} vs {b:?}"),
            }
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "large buffers")]
fn parallel_step_over_many_buffers_matches_serial() {
    // Large buffers (one above PARALLEL_THRESHOLD, split across the pool
    // itself) among many small ones (batched several per task), some without
    // a gradient.
    let mut lanes = vec![3, 200_000, 17, 70_000, 1, 0, 40_000];
    lanes.extend((0..60).map(|i| (i * 37) % 101));
    assert!(lanes.iter().any(|&l| l >= adopt::PARALLEL_THRESHOLD));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut opt = Adopt::new();
        let g = opt
            .add_group(Hyper {
                lr: 0.01,
                ..Hyper::default()
            })
            .unwrap();
        let ids: Vec<ParamId> = lanes
            .iter()
            .map(|&l| opt.add_param(g, l, None).unwrap())
            .collect();
        let mut data: Vec<Vec<f32>> = lanes
            .iter()
            .map(|&l| (0..l).map(|i| (i as f32 * 0.37).sin()).collect())
            .collect();
        let grads: Vec<Vec<f32>> = lanes
            .iter()
            .map(|&l| (0..l).map(|i| (i as f32 * 0.91).cos()).collect())
            .collect();
        pool.install(|| {
            for _ in 0..3 {
                let mut items = common::items(&mut data, &ids, &grads, |i| i % 5 != 4);
                opt.step(&mut items).unwrap();
            }
        });
        (data, opt.save().unwrap())
    };
    let (serial, serial_ck) = run(1);
    let (parallel, parallel_ck) = run(2);
    for (a, b) in serial.iter().zip(&parallel) {
        assert_same_bits(a, b, "parallel vs serial");
    }
    assert_eq!(serial_ck, parallel_ck);
}

/// Every bad input to `step` is refused with the exact error, and the
/// optimizer (checked through its checkpoint bytes) and buffers are unchanged.
#[test]
fn bad_steps_change_nothing() {
    fn custom_nan(t: u64) -> f64 {
        if t >= 1 { f64::NAN } else { 1.0 }
    }
    let mut opt = Adopt::new();
    let g0 = opt.add_group(Hyper::default()).unwrap();
    let g1 = opt
        .add_group(Hyper {
            lr: 0.1,
            ..Hyper::default()
        })
        .unwrap();
    let a = opt.add_param(g0, 4, Some("a")).unwrap();
    let b = opt.add_param(g1, 2, Some("b")).unwrap();
    assert_eq!(
        opt.add_param(GroupId(9), 1, None),
        Err(Error::UnknownGroup(GroupId(9)))
    );
    assert_eq!(
        opt.add_group(Hyper {
            lr: -1.0,
            ..Hyper::default()
        }),
        Err(Error::InvalidHyper {
            param: HyperParam::Lr,
            value: Float(-1.0)
        })
    );
    let (mut da, mut db) = (vec![1.0_f32; 4], vec![2.0_f32; 2]);
    opt.step(&mut [
        Item {
            id: a,
            params: &mut da,
            grads: Some(&[0.5; 4]),
        },
        Item {
            id: b,
            params: &mut db,
            grads: Some(&[0.5; 2]),
        },
    ])
    .unwrap();
    opt.step(&mut [Item {
        id: a,
        params: &mut da,
        grads: Some(&[0.5; 4]),
    }])
    .unwrap();
    let before = opt.save().unwrap();
    let (da0, db0) = (da.clone(), db.clone());
    let ga = [0.5_f32; 4];
    let gb = [0.5_f32; 2];
    let short = [0.5_f32; 3];

    let check = |opt: &mut Adopt, what: &str, want: Error, items: &mut [Item<'_>]| {
        assert_eq!(opt.step(items), Err(want), "{what}");
    };
    {
        let mut da = da.clone();
        let mut db = db.clone();
        check(
            &mut opt,
            "unknown id",
            Error::UnknownParam(ParamId(7)),
            &mut [
                Item {
                    id: a,
                    params: &mut da,
                    grads: Some(&ga),
                },
                Item {
                    id: ParamId(7),
                    params: &mut db,
                    grads: Some(&gb),
                },
            ],
        );
    }
    {
        let (mut x, mut y) = (da.clone(), da.clone());
        check(
            &mut opt,
            "duplicate",
            Error::DuplicateParam(a),
            &mut [
                Item {
                    id: a,
                    params: &mut x,
                    grads: Some(&ga),
                },
                Item {
                    id: a,
                    params: &mut y,
                    grads: None,
                },
            ],
        );
    }
    {
        let mut db = db.clone();
        let mut x = vec![0.0_f32; 3];
        check(
            &mut opt,
            "params length",
            Error::LengthMismatch {
                buffer: Buffer::Params,
                expected: 4,
                got: 3,
            },
            &mut [
                Item {
                    id: b,
                    params: &mut db,
                    grads: Some(&gb),
                },
                Item {
                    id: a,
                    params: &mut x,
                    grads: None,
                },
            ],
        );
    }
    {
        let mut da = da.clone();
        check(
            &mut opt,
            "grads length",
            Error::LengthMismatch {
                buffer: Buffer::Grads,
                expected: 4,
                got: 3,
            },
            &mut [Item {
                id: a,
                params: &mut da,
                grads: Some(&short),
            }],
        );
    }
    // A group whose hyperparameters became invalid.
    opt.hyper_mut(g1).unwrap().clip = Clip::Custom(custom_nan);
    {
        let (mut da, mut db) = (da.clone(), db.clone());
        check(
            &mut opt,
            "clip NaN at b's step",
            Error::InvalidClip {
                step: 1,
                threshold: Float(f64::NAN),
            },
            &mut [
                Item {
                    id: a,
                    params: &mut da,
                    grads: Some(&ga),
                },
                Item {
                    id: b,
                    params: &mut db,
                    grads: Some(&gb),
                },
            ],
        );
        assert_same_bits(&da, &da0, "a stepped although b failed");
    }
    opt.hyper_mut(g1).unwrap().clip = Clip::default();
    {
        let mut da = da.clone();
        let scaling = Scaling {
            inv_scale: f32::NAN,
            found_inf: false,
        };
        assert_eq!(
            opt.step_scaled(
                &mut [Item {
                    id: a,
                    params: &mut da,
                    grads: Some(&ga)
                }],
                scaling
            ),
            Err(Error::InvalidHyper {
                param: HyperParam::InvScale,
                value: Float(f64::NAN)
            })
        );
        assert_same_bits(&da, &da0, "inv_scale NaN");
        let skip = Scaling {
            inv_scale: 0.5,
            found_inf: true,
        };
        opt.step_scaled(
            &mut [Item {
                id: a,
                params: &mut da,
                grads: Some(&ga),
            }],
            skip,
        )
        .unwrap();
        assert_same_bits(&da, &da0, "found_inf");
    }
    assert_eq!(
        opt.save().unwrap(),
        before,
        "optimizer changed by a refused step"
    );
    assert_same_bits(&db, &db0, "b");
    assert_eq!(opt.state(a).unwrap().unwrap().step(), 2);
    assert_eq!(opt.state(ParamId(5)), Err(Error::UnknownParam(ParamId(5))));
}

#[test]
fn named_params_and_groups_are_reported() {
    let mut opt = Adopt::new();
    let g = opt.add_group(Hyper::default()).unwrap();
    let w = opt.add_param(g, 3, Some("layer.weight")).unwrap();
    assert_eq!(opt.param(w).unwrap(), (g, 3, Some("layer.weight")));
    assert_eq!((opt.group_count(), opt.param_count()), (1, 1));
    assert_eq!(opt.hyper(g).unwrap().lr, 1e-3);
}

#[test]
fn set_state_and_state_mut_continue_a_trajectory_in_place() {
    // Two steps in one optimizer against: one step, the state copied out
    // through `state`, installed in another optimizer with `set_state`,
    // then the second step there.
    let hyper = Hyper {
        lr: 0.01,
        ..Hyper::default()
    };
    let (g1, g2) = ([0.5_f32, -1.0, 2.0], [0.25_f32, 1.0, -3.0]);
    let mut whole = Adopt::new();
    let wg = whole.add_group(hyper).unwrap();
    let wid = whole.add_param(wg, 3, None).unwrap();
    let mut wp = [1.0_f32, 2.0, 3.0];
    for g in [&g1, &g2] {
        whole
            .step(&mut [Item {
                id: wid,
                params: &mut wp,
                grads: Some(g),
            }])
            .unwrap();
    }

    let mut first = Adopt::new();
    let fg = first.add_group(hyper).unwrap();
    let fid = first.add_param(fg, 3, None).unwrap();
    let mut p = [1.0_f32, 2.0, 3.0];
    first
        .step(&mut [Item {
            id: fid,
            params: &mut p,
            grads: Some(&g1),
        }])
        .unwrap();
    let saved = first.state(fid).unwrap().unwrap().clone();

    let mut second = Adopt::new();
    let sg = second.add_group(hyper).unwrap();
    let sid = second.add_param(sg, 3, None).unwrap();
    assert!(second.state_mut(sid).unwrap().is_none());
    second.set_state(sid, State::new(3)).unwrap();
    let mut view = second.state_mut(sid).unwrap().unwrap();
    let address = view.exp_avg_sq_mut().as_ptr();
    view.exp_avg_mut().copy_from_slice(saved.exp_avg());
    view.exp_avg_sq_mut().copy_from_slice(saved.exp_avg_sq());
    *view.step_mut() = saved.step();
    second
        .step(&mut [Item {
            id: sid,
            params: &mut p,
            grads: Some(&g2),
        }])
        .unwrap();
    assert_same_bits(&p, &wp, "params");
    let state = second.state(sid).unwrap().unwrap();
    assert_eq!(state, whole.state(wid).unwrap().unwrap());
    assert_eq!(
        state.exp_avg_sq().as_ptr(),
        address,
        "the step kept the buffer"
    );
}

#[test]
fn set_state_refuses_wrong_lanes_and_unknown_ids_changing_nothing() {
    let mut opt = Adopt::new();
    let g = opt.add_group(Hyper::default()).unwrap();
    let id = opt.add_param(g, 3, None).unwrap();
    opt.set_state(id, State::from_parts(vec![1.0; 3], vec![2.0; 3], 4))
        .unwrap();
    let before = opt.save().unwrap();
    assert_eq!(
        opt.set_state(id, State::from_parts(vec![0.0; 2], vec![0.0; 3], 0)),
        Err(Error::LengthMismatch {
            buffer: Buffer::ExpAvg,
            expected: 3,
            got: 2
        })
    );
    assert_eq!(
        opt.set_state(id, State::from_parts(vec![0.0; 3], vec![0.0; 4], 0)),
        Err(Error::LengthMismatch {
            buffer: Buffer::ExpAvgSq,
            expected: 3,
            got: 4
        })
    );
    assert_eq!(
        opt.set_state(ParamId(1), State::new(3)),
        Err(Error::UnknownParam(ParamId(1)))
    );
    assert!(matches!(
        opt.state_mut(ParamId(1)),
        Err(Error::UnknownParam(ParamId(1)))
    ));
    assert_eq!(opt.save().unwrap(), before);
}
