//! The row-sparse step (`adopt_step_rows_ext`) on every kernel the CPU
//! supports against a model built from the dense reference: each distinct
//! listed row, its duplicate gradient blocks summed in order of appearance,
//! stepped by `reference::adopt_step_ext` at the row's own step count, and
//! every other row untouched; or an `Error` with nothing changed.
//!
//! The input bytes are decoded into hyperparameters (weighted toward the
//! clip/eps edges), a table shape, row lookups (some out of range, some
//! repeated), gradient blocks (sometimes one too many or too few), per-row
//! step counts (including the last ones before overflow) and scaling.

#![no_main]

mod common;

use adopt::{
    Error, Hyper, Kernel, Scaling, SparseOptions, SparseState, StateView, StepOptions,
    adopt_step_rows_ext, reference,
};
use common::{Bytes, hyper, same};
use libfuzzer_sys::fuzz_target;

/// m, v and the per-row step counts of a table's state.
type Parts = (Vec<f32>, Vec<f32>, Vec<u64>);

/// The specification: validate everything, then step each distinct row
/// densely with the reference.
fn model(
    table: &mut [f32],
    (m, v, steps): &mut Parts,
    dim: usize,
    rows: &[u32],
    grads: &[f32],
    h: &Hyper,
    scaling: Scaling,
) -> Result<(), ()> {
    if grads.len() != rows.len() * dim
        || rows.iter().any(|&r| r as usize >= steps.len())
        || h.validate().is_err()
        || scaling.validate().is_err()
    {
        return Err(());
    }
    let mut distinct: Vec<u32> = Vec::new();
    for &row in rows {
        if !distinct.contains(&row) {
            distinct.push(row);
        }
    }
    for &row in &distinct {
        let step = steps[row as usize];
        if step == u64::MAX || h.constants(step).is_err() {
            return Err(());
        }
    }
    if scaling.found_inf {
        return Ok(());
    }
    for &row in &distinct {
        let mut sum = vec![0.0_f32; dim];
        let mut first = true;
        for (i, _) in rows.iter().enumerate().filter(|&(_, &r)| r == row) {
            let block = &grads[i * dim..][..dim];
            if first {
                sum.copy_from_slice(block);
                first = false;
            } else {
                sum.iter_mut().zip(block).for_each(|(s, &g)| *s += g);
            }
        }
        let r = row as usize * dim..(row as usize + 1) * dim;
        let options = StepOptions {
            scaling,
            ..StepOptions::default()
        };
        reference::adopt_step_ext(
            &mut table[r.clone()],
            &sum,
            &mut StateView::new(&mut m[r.clone()], &mut v[r], &mut steps[row as usize]),
            h,
            &options,
        )
        .expect("validated above");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let hyper = hyper(&mut b);
    let scaling = match b.u8() % 4 {
        0 => Scaling {
            inv_scale: [0.5, 0.0, f32::NAN, -1.0, f32::INFINITY][b.u8() as usize % 5],
            found_inf: b.u8() % 3 == 0,
        },
        _ => Scaling::default(),
    };
    let n_rows = 1 + (b.u8() % 24) as usize;
    let dim = (b.u8() % 7) as usize;
    let lookups: Vec<u32> = (0..b.u8() % 12)
        .map(|_| u32::from(b.u8()) % (n_rows as u32 + 2))
        .collect();
    let blocks = match b.u8() % 16 {
        0 => lookups.len() + 1,
        1 => lookups.len().saturating_sub(1),
        _ => lookups.len(),
    };
    let table0: Vec<f32> = (0..n_rows * dim).map(|_| b.f32()).collect();
    let m0: Vec<f32> = (0..n_rows * dim).map(|_| b.f32()).collect();
    let v0: Vec<f32> = (0..n_rows * dim).map(|_| b.f32()).collect();
    let steps0: Vec<u64> = (0..n_rows)
        .map(|_| match b.u8() % 8 {
            0 | 1 => 0,
            2 => 1,
            3 => u64::MAX - 1,
            4 => u64::MAX,
            _ => u64::from(b.u8()),
        })
        .collect();
    let calls = 1 + b.u8() % 3;
    let grads: Vec<Vec<f32>> = (0..calls)
        .map(|_| (0..blocks * dim).map(|_| b.f32()).collect())
        .collect();

    for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
        let mut table = table0.clone();
        let mut state =
            SparseState::from_parts(m0.clone(), v0.clone(), steps0.clone(), dim).unwrap();
        let mut want_table = table0.clone();
        let mut want: Parts = (m0.clone(), v0.clone(), steps0.clone());
        let options = SparseOptions {
            kernel: Some(kernel),
            scaling,
        };
        for g in &grads {
            let (table_before, state_before) = (table.clone(), state.clone());
            let got: Result<(), Error> =
                adopt_step_rows_ext(&mut table, &lookups, g, &mut state, &hyper, &options);
            let expected = model(
                &mut want_table,
                &mut want,
                dim,
                &lookups,
                g,
                &hyper,
                scaling,
            );
            assert_eq!(
                got.is_ok(),
                expected.is_ok(),
                "{kernel:?}: {got:?} where the model says {expected:?}, hyper {hyper:?}"
            );
            if got.is_err() {
                assert!(
                    same(&table, &table_before)
                        && same(state.exp_avg(), state_before.exp_avg())
                        && same(state.exp_avg_sq(), state_before.exp_avg_sq())
                        && state.steps() == state_before.steps(),
                    "{kernel:?}: an error changed the table or state"
                );
                break;
            }
            assert!(
                same(&table, &want_table)
                    && same(state.exp_avg(), &want.0)
                    && same(state.exp_avg_sq(), &want.1)
                    && state.steps() == want.2.as_slice(),
                "{kernel:?}: bits differ from the dense reference rows, hyper {hyper:?}"
            );
        }
    }
});
