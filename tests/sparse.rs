//! Row-sparse steps (`adopt_step_rows`): every stepped row is bit-identical
//! to a dense reference step of that row alone at its own step count, with
//! duplicates summed in order of appearance; rows not listed are untouched;
//! errors change nothing; parallel equals serial.

mod common;

use adopt::{
    Buffer, Caution, Clip, Error, Float, Hyper, HyperParam, Kernel, Scaling, SparseOptions,
    SparseState, StateView, StepOptions, WeightDecay, adopt_step_rows, adopt_step_rows_ext,
    reference,
};
use common::{assert_same_bits, hyper, same_bits, second_moment, value};
use proptest::prelude::*;

/// The sparse state as plain vectors: (m, v, steps).
type Parts = (Vec<f32>, Vec<f32>, Vec<u64>);

fn parts(state: &SparseState) -> Parts {
    (
        state.exp_avg().to_vec(),
        state.exp_avg_sq().to_vec(),
        state.steps().to_vec(),
    )
}

/// The specification: the documented validation order, then a dense
/// reference step of each distinct row with its blocks summed in order of
/// appearance.
fn model_step(
    table: &mut [f32],
    (m, v, steps): &mut Parts,
    dim: usize,
    rows: &[u32],
    grads: &[f32],
    h: &Hyper,
    scaling: Scaling,
) -> Result<(), Error> {
    assert_eq!(grads.len(), rows.len() * dim);
    h.validate()?;
    if let Some(&row) = rows.iter().find(|&&r| r as usize >= steps.len()) {
        return Err(Error::RowOutOfRange {
            row,
            rows: steps.len(),
        });
    }
    let mut distinct: Vec<u32> = Vec::new();
    for &row in rows {
        if !distinct.contains(&row) {
            distinct.push(row);
        }
    }
    for &row in &distinct {
        let step = steps[row as usize];
        if step == u64::MAX {
            return Err(Error::StepOverflow);
        }
        h.constants(step)?;
    }
    scaling.validate()?;
    if scaling.found_inf {
        return Ok(());
    }
    for &row in &distinct {
        let mut sum: Option<Vec<f32>> = None;
        for (i, _) in rows.iter().enumerate().filter(|&(_, &r)| r == row) {
            let block = &grads[i * dim..][..dim];
            match &mut sum {
                None => sum = Some(block.to_vec()),
                Some(s) => s.iter_mut().zip(block).for_each(|(s, &g)| *s += g),
            }
        }
        let r = row as usize * dim..(row as usize + 1) * dim;
        let options = StepOptions {
            scaling,
            ..StepOptions::default()
        };
        reference::adopt_step_ext(
            &mut table[r.clone()],
            &sum.unwrap(),
            &mut StateView::new(&mut m[r.clone()], &mut v[r], &mut steps[row as usize]),
            h,
            &options,
        )
        .expect("validated above");
    }
    Ok(())
}

fn assert_same_state(got: &SparseState, want: &Parts, what: &str) {
    assert_same_bits(got.exp_avg(), &want.0, &format!("{what}: exp_avg"));
    assert_same_bits(got.exp_avg_sq(), &want.1, &format!("{what}: exp_avg_sq"));
    assert_eq!(got.steps(), &want.2[..], "{what}: steps");
}

/// Lanes per row in the property tests: fewer under Miri, which is slow.
const MAX_DIM: usize = if cfg!(miri) { 5 } else { 20 };

fn step_counts() -> impl Strategy<Value = u64> {
    // 64 and 1064 share cache slots with 0 and 1000.
    prop_oneof![6 => 0_u64..4, 1 => Just(64), 1 => Just(1000), 1 => Just(1064), 1 => Just(u64::MAX)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 3 } else { 400 }))]

    #[test]
    fn rows_step_like_dense_reference_rows(
        n_rows in 1_usize..10,
        dim in 0..MAX_DIM,
        table0 in prop::collection::vec(value(), 10 * MAX_DIM),
        m0 in prop::collection::vec(value(), 10 * MAX_DIM),
        v0 in prop::collection::vec(second_moment(), 10 * MAX_DIM),
        steps0 in prop::collection::vec(step_counts(), 10),
        batches in prop::collection::vec(prop::collection::vec(0_u32..10, 0..12), 1..4),
        grads in prop::collection::vec(value(), 12 * MAX_DIM),
        h in hyper(),
        inv_scale in prop::sample::select(vec![1.0_f32, 0.25, -1.0]),
        found_inf in prop::bool::weighted(0.1),
    ) {
        let lanes = n_rows * dim;
        let scaling = Scaling { inv_scale, found_inf };
        for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
            let mut table = table0[..lanes].to_vec();
            let mut state = SparseState::from_parts(
                m0[..lanes].to_vec(), v0[..lanes].to_vec(), steps0[..n_rows].to_vec(), dim,
            ).unwrap();
            let (mut want_table, mut want) = (table.clone(), parts(&state));
            let options = SparseOptions { kernel: Some(kernel), scaling };
            for batch in &batches {
                // Mostly in range; the model says which error an
                // out-of-range row gets.
                let rows: Vec<u32> = batch.iter().map(|&r| if r == 9 { r } else { r % n_rows as u32 }).collect();
                let g = &grads[..rows.len() * dim];
                let got = adopt_step_rows_ext(&mut table, &rows, g, &mut state, &h, &options);
                let expected = model_step(&mut want_table, &mut want, dim, &rows, g, &h, scaling);
                prop_assert_eq!(got, expected, "{:?} rows {:?}", kernel, rows);
                assert_same_bits(&table, &want_table, &format!("{kernel:?} table"));
                assert_same_state(&state, &want, &format!("{kernel:?}"));
            }
        }
    }

    #[test]
    fn duplicates_equal_their_presummed_block(
        dim in 1..MAX_DIM,
        order in Just((0..6).collect::<Vec<u32>>()).prop_shuffle(),
        copies in prop::collection::vec(1_usize..4, 6),
        grads in prop::collection::vec(-4.0_f32..4.0, 6 * 3 * MAX_DIM),
        steps in 0_u64..3,
    ) {
        // Each row listed `copies[row]` times, interleaved as `order` says.
        let mut rows = Vec::new();
        for round in 0..3 {
            for &r in &order {
                if round < copies[r as usize] {
                    rows.push(r);
                }
            }
        }
        let g = &grads[..rows.len() * dim];
        let mut summed = vec![0.0_f32; 6 * dim];
        let mut first = [true; 6];
        for (i, &r) in rows.iter().enumerate() {
            let (sum, block) = (&mut summed[r as usize * dim..][..dim], &g[i * dim..][..dim]);
            if std::mem::take(&mut first[r as usize]) {
                sum.copy_from_slice(block);
            } else {
                sum.iter_mut().zip(block).for_each(|(s, &b)| *s += b);
            }
        }
        let hyper = Hyper { lr: 0.1, ..Hyper::default() };
        let (mut a, mut b) = (vec![1.0_f32; 6 * dim], vec![1.0_f32; 6 * dim]);
        let (mut sa, mut sb) = (SparseState::new(6, dim), SparseState::new(6, dim));
        for _ in 0..=steps {
            adopt_step_rows(&mut a, &rows, g, &mut sa, &hyper).unwrap();
            adopt_step_rows(&mut b, &[0, 1, 2, 3, 4, 5], &summed, &mut sb, &hyper).unwrap();
        }
        assert_same_bits(&a, &b, "table");
        assert_same_state(&sa, &parts(&sb), "state");
    }
}

#[test]
fn untouched_rows_keep_their_state_and_count() {
    let (rows, dim) = (5, 3);
    let mut table: Vec<f32> = (0..15).map(|i| i as f32).collect();
    let mut state =
        SparseState::from_parts(vec![0.5; 15], vec![0.25; 15], vec![2; 5], dim).unwrap();
    let before = (table.clone(), parts(&state));
    adopt_step_rows(
        &mut table,
        &[1, 3],
        &[1.0; 6],
        &mut state,
        &Hyper::default(),
    )
    .unwrap();
    for row in [0, 2, 4] {
        let r = row * dim..(row + 1) * dim;
        assert_same_bits(&table[r.clone()], &before.0[r.clone()], "params");
        assert_same_bits(state.row_exp_avg(row), &before.1.0[r.clone()], "m");
        assert_same_bits(state.row_exp_avg_sq(row), &before.1.1[r], "v");
        assert_eq!(state.row_step(row), 2);
    }
    assert_eq!((state.row_step(1), state.row_step(3)), (3, 3));
    assert_eq!(state.rows(), rows);
}

#[test]
fn first_appearance_only_initialises_v() {
    let mut table = vec![1.0_f32; 4 * 2];
    let mut state = SparseState::new(4, 2);
    let hyper = Hyper {
        lr: 0.1,
        weight_decay: WeightDecay::decoupled(0.1),
        ..Hyper::default()
    };
    adopt_step_rows(&mut table, &[2], &[0.5, -3.0], &mut state, &hyper).unwrap();
    assert_eq!(table, vec![1.0; 8]);
    assert_eq!(state.row_exp_avg(2), &[0.0, 0.0]);
    assert_eq!(state.row_exp_avg_sq(2), &[0.25, 9.0]);
    assert_eq!(state.steps(), &[0, 0, 1, 0]);
    // Row 2 now moves; row 0 appears for the first time and only records v,
    // with the clip schedule of its own count (0: none) while row 2 uses c(1).
    adopt_step_rows(
        &mut table,
        &[0, 2],
        &[2.0, 2.0, 0.5, -3.0],
        &mut state,
        &hyper,
    )
    .unwrap();
    assert_eq!(&table[..2], &[1.0, 1.0]);
    assert_eq!(state.row_exp_avg_sq(0), &[4.0, 4.0]);
    assert!(table[4] < 1.0 && table[5] > 0.0);
    assert_eq!(state.steps(), &[1, 0, 2, 0]);
}

fn clip_negative_after_one(t: u64) -> f64 {
    if t >= 2 { -0.5 } else { 1.0 }
}

/// What, table lanes, rows, gradient lanes, hyperparameters, options, the error.
type ErrorCase = (
    &'static str,
    usize,
    Vec<u32>,
    usize,
    Hyper,
    SparseOptions,
    Error,
);

#[test]
fn every_error_changes_nothing() {
    let dim = 3;
    let steps = vec![0, 1, 2, u64::MAX, 5];
    let m: Vec<f32> = (0..15).map(|i| i as f32 * 0.1).collect();
    let v: Vec<f32> = (0..15).map(|i| i as f32 * 0.2).collect();
    let fresh = || SparseState::from_parts(m.clone(), v.clone(), steps.clone(), dim).unwrap();
    let d = Hyper::default();
    let bad_clip = Hyper {
        clip: Clip::Custom(clip_negative_after_one),
        ..d
    };
    let opts = SparseOptions::default();
    let scaled = |inv_scale| SparseOptions {
        scaling: Scaling {
            inv_scale,
            found_inf: false,
        },
        ..opts
    };
    #[rustfmt::skip]
    let cases: Vec<ErrorCase> = vec![
        // The table is what is wrong, not the state (which the state's
        // constructor keeps at rows × dim).
        ("table short", 14, vec![0], 3, d, opts,
            Error::TableMismatch { rows: 5, dim: 3, got: 14 }),
        ("table one row short", 12, vec![0], 3, d, opts,
            Error::TableMismatch { rows: 5, dim: 3, got: 12 }),
        ("table long", 16, vec![0], 3, d, opts,
            Error::TableMismatch { rows: 5, dim: 3, got: 16 }),
        ("grads short", 15, vec![0, 1], 5, d, opts,
            Error::RowBlocksMismatch { rows: 2, dim: 3, got: 5 }),
        ("grads long", 15, vec![], 1, d, opts,
            Error::RowBlocksMismatch { rows: 0, dim: 3, got: 1 }),
        ("bad beta2", 15, vec![0], 3, Hyper { betas: (0.9, 1.0), ..d }, opts,
            Error::InvalidHyper { param: HyperParam::Beta2, value: Float(1.0) }),
        ("bad lr, no rows", 15, vec![], 0, Hyper { lr: f64::NAN, ..d }, opts,
            Error::InvalidHyper { param: HyperParam::Lr, value: Float(f64::NAN) }),
        ("row out of range", 15, vec![0, 5, 7], 9, d, opts,
            Error::RowOutOfRange { row: 5, rows: 5 }),
        ("out of range beats overflow", 15, vec![3, u32::MAX], 6, d, opts,
            Error::RowOutOfRange { row: u32::MAX, rows: 5 }),
        ("step overflow", 15, vec![0, 3], 6, d, opts, Error::StepOverflow),
        ("step overflow, duplicated", 15, vec![3, 0, 3], 9, d, opts, Error::StepOverflow),
        ("clip at the first bad row", 15, vec![0, 4, 2], 9, bad_clip, opts,
            Error::InvalidClip { step: 5, threshold: Float(-0.5) }),
        ("clip before overflow in list order", 15, vec![2, 3], 6, bad_clip, opts,
            Error::InvalidClip { step: 2, threshold: Float(-0.5) }),
        ("overflow before clip in list order", 15, vec![3, 2], 6, bad_clip, opts,
            Error::StepOverflow),
        ("bad inv_scale", 15, vec![0, 1], 6, d, scaled(f32::INFINITY),
            Error::InvalidHyper { param: HyperParam::InvScale, value: Float(f64::INFINITY) }),
        ("bad inv_scale, no rows", 15, vec![], 0, d, scaled(-1.0),
            Error::InvalidHyper { param: HyperParam::InvScale, value: Float(-1.0) }),
    ];
    for (what, table_len, rows, grads_len, hyper, options, want) in cases {
        let mut table: Vec<f32> = (0..table_len).map(|i| 1.0 + i as f32).collect();
        let before = table.clone();
        let mut state = fresh();
        let grads = vec![0.5_f32; grads_len];
        let got = adopt_step_rows_ext(&mut table, &rows, &grads, &mut state, &hyper, &options);
        assert_eq!(got, Err(want), "{what}");
        assert_same_bits(&table, &before, what);
        assert_same_state(&state, &(m.clone(), v.clone(), steps.clone()), what);
        // The duplicate marks were cleared: a valid step afterwards works
        // and sums duplicates.
        let mut ok_table = vec![1.0_f32; 15];
        adopt_step_rows(&mut ok_table, &[1, 1, 0], &[0.5; 9], &mut state, &d).unwrap();
        assert_eq!(state.steps(), &[1, 2, 2, u64::MAX, 5], "{what}");
    }
}

#[test]
fn unavailable_kernel_is_refused() {
    for kernel in Kernel::ALL.into_iter().filter(|k| !k.is_available()) {
        let mut table = vec![1.0_f32; 4];
        let mut state = SparseState::new(2, 2);
        let options = SparseOptions {
            kernel: Some(kernel),
            ..SparseOptions::default()
        };
        let got = adopt_step_rows_ext(
            &mut table,
            &[0],
            &[1.0; 2],
            &mut state,
            &Hyper::default(),
            &options,
        );
        assert_eq!(got, Err(Error::KernelUnavailable(kernel)));
        assert_eq!(state.steps(), &[0, 0]);
    }
}

#[test]
fn found_inf_skips_everything() {
    let mut table = vec![1.0_f32; 6];
    let mut state = SparseState::from_parts(vec![0.0; 6], vec![1.0; 6], vec![3, 3], 3).unwrap();
    let options = SparseOptions {
        scaling: Scaling {
            inv_scale: 0.5,
            found_inf: true,
        },
        ..SparseOptions::default()
    };
    adopt_step_rows_ext(
        &mut table,
        &[1, 0, 1],
        &[f32::INFINITY; 9],
        &mut state,
        &Hyper::default(),
        &options,
    )
    .unwrap();
    assert_eq!(table, vec![1.0; 6]);
    assert_eq!(parts(&state), (vec![0.0; 6], vec![1.0; 6], vec![3, 3]));
}

#[test]
fn from_parts_checks_lengths() {
    assert_eq!(
        SparseState::from_parts(vec![0.0; 6], vec![0.0; 5], vec![0; 3], 2),
        Err(Error::LengthMismatch {
            buffer: Buffer::ExpAvgSq,
            expected: 6,
            got: 5
        })
    );
    assert_eq!(
        SparseState::from_parts(vec![0.0; 7], vec![0.0; 6], vec![0; 3], 2),
        Err(Error::LengthMismatch {
            buffer: Buffer::ExpAvg,
            expected: 6,
            got: 7
        })
    );
    let state = SparseState::from_parts(vec![], vec![], vec![4; 3], 0).unwrap();
    assert_eq!((state.rows(), state.dim(), state.row_step(2)), (3, 0, 4));
    assert_eq!(state.clone().into_parts(), (vec![], vec![], vec![4; 3]));
}

#[test]
fn zero_dim_rows_count_steps() {
    let mut table: Vec<f32> = vec![];
    let mut state = SparseState::new(4, 0);
    adopt_step_rows(&mut table, &[3, 1, 3], &[], &mut state, &Hyper::default()).unwrap();
    assert_eq!(state.steps(), &[0, 1, 0, 1]);
}

/// A deterministic, seeded generator (tests need no `rand`).
fn splitmix(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Batches of random rows (with duplicates), large enough to go parallel.
fn random_batches(rows: usize, per_batch: usize, batches: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut s = seed;
    (0..batches)
        .map(|_| {
            (0..per_batch)
                .map(|_| (splitmix(&mut s) % rows as u64) as u32)
                .collect()
        })
        .collect()
}

fn run_batches(
    batches: &[Vec<u32>],
    rows: usize,
    dim: usize,
    hyper: &Hyper,
) -> (Vec<f32>, SparseState) {
    let mut seed = 7;
    let mut table: Vec<f32> = (0..rows * dim)
        .map(|_| (splitmix(&mut seed) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    let mut state = SparseState::new(rows, dim);
    for (b, batch) in batches.iter().enumerate() {
        let grads: Vec<f32> = (0..batch.len() * dim)
            .map(|i| ((i * 31 + b * 17) % 101) as f32 / 50.0 - 1.0)
            .collect();
        adopt_step_rows(&mut table, batch, &grads, &mut state, hyper).unwrap();
    }
    (table, state)
}

#[test]
#[cfg_attr(miri, ignore = "rayon pools are slow under Miri")]
fn parallel_equals_serial() {
    let (rows, dim) = (8192, 64);
    // 3000 lookups × 64 lanes: above PARALLEL_THRESHOLD.
    let batches = random_batches(rows, 3000, 4, 1);
    assert!(3000 * dim >= adopt::PARALLEL_THRESHOLD);
    let hyper = Hyper {
        lr: 1e-2,
        weight_decay: WeightDecay::decoupled(0.01),
        caution: Caution::Timm,
        ..Hyper::default()
    };
    let pool = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    };
    let (serial_table, serial_state) = pool(1).install(|| run_batches(&batches, rows, dim, &hyper));
    let (parallel_table, parallel_state) =
        pool(3).install(|| run_batches(&batches, rows, dim, &hyper));
    assert_same_bits(&parallel_table, &serial_table, "table");
    assert_same_state(&parallel_state, &parts(&serial_state), "state");
    // And both equal the model (dense reference steps per row).
    let mut seed = 7;
    let mut table: Vec<f32> = (0..rows * dim)
        .map(|_| (splitmix(&mut seed) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    let mut want = (vec![0.0; rows * dim], vec![0.0; rows * dim], vec![0; rows]);
    for (b, batch) in batches.iter().enumerate() {
        let grads: Vec<f32> = (0..batch.len() * dim)
            .map(|i| ((i * 31 + b * 17) % 101) as f32 / 50.0 - 1.0)
            .collect();
        model_step(
            &mut table,
            &mut want,
            dim,
            batch,
            &grads,
            &hyper,
            Scaling::default(),
        )
        .unwrap();
    }
    assert_same_bits(&serial_table, &table, "table vs model");
    assert_same_state(&serial_state, &want, "state vs model");
}

#[test]
fn sorted_unique_rows_equal_any_order() {
    // Strictly increasing rows take the no-coalescing path; the same rows
    // shuffled take the marking path; both give the same bits.
    let (rows, dim) = (64, 5);
    let sorted: Vec<u32> = (0..64).filter(|r| r % 3 != 1).collect();
    let mut shuffled = sorted.clone();
    let mut seed = 3;
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, (splitmix(&mut seed) % (i as u64 + 1)) as usize);
    }
    let block = |r: u32| (0..dim).map(move |j| (r as f32 - 30.0) * 0.1 + j as f32);
    let grads_of = |rows: &[u32]| rows.iter().flat_map(|&r| block(r)).collect::<Vec<f32>>();
    let (gs, gx) = (grads_of(&sorted), grads_of(&shuffled));
    let hyper = Hyper::default();
    let (mut a, mut b) = (vec![0.5_f32; rows * dim], vec![0.5_f32; rows * dim]);
    let (mut sa, mut sb) = (SparseState::new(rows, dim), SparseState::new(rows, dim));
    for _ in 0..3 {
        adopt_step_rows(&mut a, &sorted, &gs, &mut sa, &hyper).unwrap();
        adopt_step_rows(&mut b, &shuffled, &gx, &mut sb, &hyper).unwrap();
    }
    assert!(a.iter().zip(&b).all(|(&x, &y)| same_bits(x, y)));
    assert_same_state(&sa, &parts(&sb), "state");
}
