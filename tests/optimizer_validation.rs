//! `Adopt::step` validates a step of many items in two halves at once on a
//! multi-thread pool (from 4,096 items). That must give exactly what the
//! serial validation gives: the same error for the same first invalid item
//! (duplicates across the halves included, in any order of ids), nothing
//! changed on error, and on success the same bits.

use adopt::{Adopt, Error, Hyper, Item, ParamId, Scaling};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Registered parameters: enough that a step over all of them is validated
/// in halves.
const PARAMS: usize = 6_000;

fn lanes(i: usize) -> usize {
    1 + i % 7
}

/// An optimizer with three groups (different learning rates) whose
/// parameters sit at different step counts (0 to 3), so each half of a step
/// derives several constants of its own.
fn base() -> Adopt {
    let mut opt = Adopt::new();
    let groups: Vec<_> = [1e-3, 1e-2, 3e-2]
        .iter()
        .map(|&lr| {
            opt.add_group(Hyper {
                lr,
                ..Hyper::default()
            })
            .unwrap()
        })
        .collect();
    for i in 0..PARAMS {
        opt.add_param(groups[i % 3], lanes(i), None).unwrap();
    }
    let mut data: Vec<Vec<f32>> = (0..PARAMS).map(|i| vec![0.5; lanes(i)]).collect();
    let grads: Vec<Vec<f32>> = (0..PARAMS)
        .map(|i| (0..lanes(i)).map(|l| ((i * 7 + l) as f32).sin()).collect())
        .collect();
    for round in 0..3 {
        let mut items: Vec<Item<'_>> = data
            .iter_mut()
            .zip(&grads)
            .enumerate()
            .filter(|(i, _)| i % 4 > round)
            .map(|(i, (d, g))| Item {
                id: ParamId(i as u32),
                params: d,
                grads: Some(g),
            })
            .collect();
        opt.step(&mut items).unwrap();
    }
    opt
}

/// Something wrong (or merely unusual) at one position of the step.
#[derive(Clone, Debug)]
enum Change {
    /// The item at `to` names the parameter of the item at `from`.
    Duplicate { from: usize, to: usize },
    /// The item's parameters are one lane short.
    ShortParams(usize),
    /// The item's gradient is one lane short.
    ShortGrads(usize),
    /// The item names a parameter that does not exist.
    Unknown(usize),
    /// The item has no gradient (not an error).
    NoGrad(usize),
}

#[derive(Clone, Debug)]
struct Scenario {
    /// 0: registration order; 1: reversed; 2: shuffled with `seed`.
    order: u8,
    seed: u64,
    /// How many parameters the step lists (from the start of `order`).
    items: usize,
    changes: Vec<Change>,
    found_inf: bool,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        0_u8..3,
        any::<u64>(),
        4_096_usize..=PARAMS,
        prop::bool::weighted(0.25),
    )
        .prop_flat_map(|(order, seed, items, found_inf)| {
            let pos = 0..items;
            let change = prop_oneof![
                (pos.clone(), pos.clone()).prop_map(|(from, to)| Change::Duplicate { from, to }),
                pos.clone().prop_map(Change::ShortParams),
                pos.clone().prop_map(Change::ShortGrads),
                pos.clone().prop_map(Change::Unknown),
                pos.prop_map(Change::NoGrad),
            ];
            prop::collection::vec(change, 0..4).prop_map(move |changes| Scenario {
                order,
                seed,
                items,
                changes,
                found_inf,
            })
        })
}

/// The ids the scenario's step lists, in order.
fn ids(s: &Scenario) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..PARAMS as u32).collect();
    match s.order {
        0 => {}
        1 => ids.reverse(),
        _ => {
            let mut x = s.seed | 1;
            for i in (1..ids.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ids.swap(i, (x % (i as u64 + 1)) as usize);
            }
        }
    }
    ids.truncate(s.items);
    ids
}

/// Runs the scenario's step on `threads` threads from a copy of `base`:
/// the result, the optimizer's checkpoint after it and the parameters.
fn run(base: &Adopt, s: &Scenario, threads: usize) -> (Result<(), Error>, Vec<u8>, Vec<Vec<f32>>) {
    let mut ids = ids(s);
    let mut short_params = vec![false; ids.len()];
    let mut short_grads = vec![false; ids.len()];
    let mut no_grad = vec![false; ids.len()];
    for change in &s.changes {
        match *change {
            Change::Duplicate { from, to } => ids[to] = ids[from],
            Change::ShortParams(i) => short_params[i] = true,
            Change::ShortGrads(i) => short_grads[i] = true,
            Change::Unknown(i) => ids[i] = PARAMS as u32 + 5,
            Change::NoGrad(i) => no_grad[i] = true,
        }
    }
    let len = |id: u32| lanes(id as usize % PARAMS);
    let mut data: Vec<Vec<f32>> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| vec![0.25; len(id) - usize::from(short_params[i])])
        .collect();
    let grads: Vec<Vec<f32>> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            (0..len(id) - usize::from(short_grads[i]))
                .map(|l| ((i + l) as f32 * 0.3).cos())
                .collect()
        })
        .collect();
    let mut opt = base.clone();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let result = pool.install(|| {
        let mut items: Vec<Item<'_>> = data
            .iter_mut()
            .zip(&grads)
            .zip(&ids)
            .zip(&no_grad)
            .map(|(((d, g), &id), &none)| Item {
                id: ParamId(id),
                params: d,
                grads: (!none).then_some(&g[..]),
            })
            .collect();
        let scaling = Scaling {
            inv_scale: 1.0,
            found_inf: s.found_inf,
        };
        opt.step_scaled(&mut items, scaling)
    });
    (result, opt.save().unwrap(), data)
}

#[test]
#[cfg_attr(miri, ignore = "thousands of items")]
fn validating_in_halves_matches_serial_validation() {
    let base = base();
    let before = base.save().unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&scenario(), |s| {
            let (serial, serial_ck, serial_data) = run(&base, &s, 1);
            let (parallel, parallel_ck, parallel_data) = run(&base, &s, 2);
            prop_assert_eq!(&serial, &parallel);
            prop_assert!(serial_ck == parallel_ck, "checkpoints differ");
            for (a, b) in serial_data.iter().zip(&parallel_data) {
                let (a, b): (Vec<u32>, Vec<u32>) = (
                    a.iter().map(|x| x.to_bits()).collect(),
                    b.iter().map(|x| x.to_bits()).collect(),
                );
                prop_assert_eq!(a, b);
            }
            if serial.is_err() || s.found_inf {
                prop_assert!(parallel_ck == before, "changed on error or found_inf");
                prop_assert!(
                    parallel_data.iter().flatten().all(|&x| x == 0.25),
                    "parameters changed on error or found_inf"
                );
            } else {
                prop_assert!(parallel_ck != before, "a valid step changed nothing");
            }
            Ok(())
        })
        .unwrap();
}

/// The cases the property test might draw rarely, pinned: a duplicate whose
/// two items fall in different halves (in registration order, so the halves'
/// ranges would otherwise be disjoint), one within the second half, and a
/// duplicate after (or before) a length error.
#[test]
#[cfg_attr(miri, ignore = "thousands of items")]
fn duplicates_across_halves_are_found() {
    let base = base();
    let before = base.save().unwrap();
    let step = |changes: Vec<Change>, want: Error| {
        let s = Scenario {
            order: 0,
            seed: 0,
            items: PARAMS,
            changes,
            found_inf: false,
        };
        for threads in [1, 2] {
            let (result, ck, _) = run(&base, &s, threads);
            assert_eq!(result, Err(want.clone()), "{s:?} on {threads} threads");
            assert!(ck == before, "{s:?} changed the optimizer");
        }
    };
    let dup = |from: usize| Error::DuplicateParam(ParamId(from as u32));
    step(
        vec![Change::Duplicate {
            from: 10,
            to: 5_990,
        }],
        dup(10),
    );
    step(
        vec![Change::Duplicate {
            from: 5_990,
            to: 10,
        }],
        dup(5_990),
    );
    step(
        vec![Change::Duplicate {
            from: 3_500,
            to: 5_000,
        }],
        dup(3_500),
    );
    step(
        vec![
            Change::Duplicate { from: 1, to: 4_000 },
            Change::ShortGrads(4_500),
        ],
        dup(1),
    );
    let short = Error::LengthMismatch {
        buffer: adopt::Buffer::Grads,
        expected: lanes(3_100),
        got: lanes(3_100) - 1,
    };
    step(
        vec![
            Change::Duplicate { from: 1, to: 4_000 },
            Change::ShortGrads(3_100),
        ],
        short,
    );
}
