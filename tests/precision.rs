//! Half-precision layouts against a scalar model: widen each lane, run the
//! reference lane update, round back. Stochastic rounding is deterministic
//! per (seed, step, lane), split-independent and unbiased.
#![cfg(feature = "half")]

mod common;

use adopt::precision::{Lane, Rounding, SecondMoment, adopt_step_half, adopt_step_master};
use adopt::{Buffer, Caution, Error, Float, Hyper, State, WeightDecay, adopt_step, reference};
use common::{hyper, value};
use half::{bf16, f16};
use proptest::prelude::*;

fn same<T: Lane>(a: &[T], b: &[T]) -> bool {
    a.iter().zip(b).all(|(x, y)| {
        let (x, y) = (x.to_f32(), y.to_f32());
        x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
    })
}

/// The scalar model of one half-precision step.
fn model<P: Lane, G: Lane, M: Lane, V: Lane>(
    p: &mut [P],
    g: &[G],
    m: &mut [M],
    v: &mut [V],
    step: &mut u64,
    h: &Hyper,
) -> Result<(), Error> {
    let (mut pf, gf): (Vec<f32>, Vec<f32>) = (
        p.iter().map(|x| x.to_f32()).collect(),
        g.iter().map(|x| x.to_f32()).collect(),
    );
    let (mut mf, mut vf): (Vec<f32>, Vec<f32>) = (
        m.iter().map(|x| x.to_f32()).collect(),
        v.iter().map(|x| x.to_f32()).collect(),
    );
    reference::adopt_step_view(
        &mut pf,
        &gf,
        &mut adopt::StateView::new(&mut mf, &mut vf, step),
        h,
    )?;
    p.iter_mut()
        .zip(&pf)
        .for_each(|(d, &x)| *d = P::from_f32(x));
    m.iter_mut()
        .zip(&mf)
        .for_each(|(d, &x)| *d = M::from_f32(x));
    v.iter_mut()
        .zip(&vf)
        .for_each(|(d, &x)| *d = V::from_f32(x));
    Ok(())
}

fn check<P: Lane + std::fmt::Debug, G: Lane, M: Lane, V: SecondMoment>(
    p0: &[f32],
    grads: &[Vec<f32>],
    h: &Hyper,
) {
    let cast = |xs: &[f32]| -> Vec<P> { xs.iter().map(|&x| P::from_f32(x)).collect() };
    let n = p0.len();
    let (mut xp, mut xm, mut xv, mut xs) = (
        cast(p0),
        vec![M::from_f32(0.0); n],
        vec![V::from_f32(0.0); n],
        0_u64,
    );
    let (mut rp, mut rm, mut rv, mut rs) = (xp.clone(), xm.clone(), xv.clone(), 0_u64);
    for g in grads {
        let g: Vec<G> = g.iter().map(|&x| G::from_f32(x)).collect();
        let got = adopt_step_half(
            &mut xp,
            &g,
            &mut xm,
            &mut xv,
            &mut xs,
            h,
            Rounding::NearestEven,
        );
        let want = model(&mut rp, &g, &mut rm, &mut rv, &mut rs, h);
        assert_eq!(got, want);
        assert_eq!(xs, rs);
        assert!(
            same(&xp, &rp) && same(&xm, &rm) && same(&xv, &rv),
            "{:?} lanes differ",
            std::any::type_name::<(P, G, M, V)>()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 200 }))]

    #[test]
    fn every_layout_matches_the_scalar_model(
        p0 in prop::collection::vec(value(), 0..1100),
        seeds in prop::collection::vec(value(), 1100 * 3),
        h in hyper(),
    ) {
        let n = p0.len();
        let grads: Vec<Vec<f32>> = (0..3).map(|t| seeds[t * 1100..t * 1100 + n].to_vec()).collect();
        check::<bf16, bf16, f32, f32>(&p0, &grads, &h);
        check::<bf16, bf16, bf16, bf16>(&p0, &grads, &h);
        check::<f16, f16, f32, f32>(&p0, &grads, &h);
        check::<f32, bf16, bf16, bf16>(&p0, &grads, &h);
        check::<f32, f32, f32, f32>(&p0, &grads, &h);
        // Only the first moment in half precision (optax's `mu_dtype`).
        check::<f32, f32, bf16, f32>(&p0, &grads, &h);
        check::<f32, f32, f16, f32>(&p0, &grads, &h);
        check::<bf16, bf16, f16, bf16>(&p0, &grads, &h);
    }
}

#[test]
fn all_f32_layout_equals_adopt_step() {
    let p0: Vec<f32> = (0..777).map(|i| (i as f32 * 0.3).sin()).collect();
    let g: Vec<f32> = (0..777).map(|i| (i as f32 * 0.7).cos()).collect();
    let h = Hyper {
        lr: 0.01,
        caution: Caution::Timm,
        ..Hyper::default()
    };
    let (mut a, mut b) = (p0.clone(), p0.clone());
    let mut state = State::new(777);
    let (mut m, mut v, mut step) = (vec![0.0_f32; 777], vec![0.0_f32; 777], 0);
    for _ in 0..4 {
        adopt_step(&mut a, &g, &mut state, &h).unwrap();
        adopt_step_half(
            &mut b,
            &g,
            &mut m,
            &mut v,
            &mut step,
            &h,
            Rounding::NearestEven,
        )
        .unwrap();
    }
    assert!(same(&a, &b) && same(state.exp_avg(), &m) && same(state.exp_avg_sq(), &v));
}

#[test]
#[cfg_attr(miri, ignore = "large buffers")]
fn stochastic_rounding_is_deterministic_split_independent_and_unbiased() {
    let n = adopt::PARALLEL_THRESHOLD * 2 + 123;
    let h = Hyper {
        lr: 1e-3,
        ..Hyper::default()
    };
    let run = |threads: usize, seed: u64| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut p: Vec<bf16> = (0..n)
            .map(|i| bf16::from_f32(1.0 + (i % 100) as f32 * 1e-3))
            .collect();
        let g: Vec<bf16> = (0..n)
            .map(|i| bf16::from_f32(((i % 7) as f32 - 3.0) * 0.1))
            .collect();
        let (mut m, mut v, mut step) = (vec![0.0_f32; n], vec![0.0_f32; n], 0_u64);
        pool.install(|| {
            for _ in 0..3 {
                adopt_step_half(
                    &mut p,
                    &g,
                    &mut m,
                    &mut v,
                    &mut step,
                    &h,
                    Rounding::Stochastic { seed },
                )
                .unwrap();
            }
        });
        p
    };
    let (serial, parallel) = (run(1, 7), run(2, 7));
    assert!(serial == parallel, "parallel chunks must agree with serial");
    assert!(run(1, 7) == serial, "same seed, same result");
    assert!(run(1, 8) != serial, "another seed, another stream");

    // Unbiased: the mean of many stochastic roundings of x approaches x,
    // where rounding to nearest is off by a fixed amount.
    let x = 1.0_f32 + 3.0 * 2.0_f32.powi(-10); // between two bf16 values
    let trials = 20_000_u64;
    let mean: f64 = (0..trials)
        .map(|i| {
            bf16::from_f32_stochastic(x, (i.wrapping_mul(40503) % 65536) as u16).to_f32() as f64
        })
        .sum::<f64>()
        / trials as f64;
    let ulp = 2.0_f64.powi(-7);
    assert!((mean - x as f64).abs() < ulp / 50.0, "mean {mean} vs {x}");
    assert!(((bf16::from_f32(x).to_f32() - x) as f64).abs() > ulp / 10.0);
    // Non-finite values keep their class.
    assert!(
        bf16::from_f32_stochastic(f32::NAN, 0xffff)
            .to_f32()
            .is_nan()
    );
    assert_eq!(
        bf16::from_f32_stochastic(f32::INFINITY, 0xffff).to_f32(),
        f32::INFINITY
    );
    assert_eq!(
        bf16::from_f32_stochastic(f32::MAX, 0xffff).to_f32(),
        f32::INFINITY
    );
}

#[test]
fn master_copy_steps_in_f32_and_rounds_params() {
    let n = 300;
    let mut master: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).sin()).collect();
    let mut params: Vec<f16> = master.iter().map(|&x| f16::from_f32(x)).collect();
    let grads: Vec<bf16> = (0..n)
        .map(|i| bf16::from_f32((i as f32 * 0.5).cos()))
        .collect();
    let wide: Vec<f32> = grads.iter().map(|g| g.to_f32()).collect();
    let mut f32_params = master.clone();
    let (mut state, mut f32_state) = (State::new(n), State::new(n));
    let h = Hyper {
        lr: 0.02,
        weight_decay: WeightDecay::decoupled(0.1),
        ..Hyper::default()
    };
    for _ in 0..4 {
        adopt_step_master(
            &mut master,
            &mut params,
            &grads,
            &mut state.view_mut(),
            &h,
            Rounding::NearestEven,
        )
        .unwrap();
        adopt_step(&mut f32_params, &wide, &mut f32_state, &h).unwrap();
    }
    assert!(same(&master, &f32_params));
    assert!(
        params
            .iter()
            .zip(&master)
            .all(|(p, &m)| *p == f16::from_f32(m))
    );
    // Bad input changes nothing.
    let (m0, p0) = (master.clone(), params.clone());
    let got = adopt_step_master(
        &mut master,
        &mut params[..n - 1],
        &grads,
        &mut state.view_mut(),
        &h,
        Rounding::NearestEven,
    );
    assert_eq!(
        got,
        Err(Error::LengthMismatch {
            buffer: Buffer::Params,
            expected: n,
            got: n - 1
        })
    );
    let got = adopt_step_master(
        &mut master,
        &mut params,
        &grads[..1],
        &mut state.view_mut(),
        &h,
        Rounding::NearestEven,
    );
    assert_eq!(
        got,
        Err(Error::LengthMismatch {
            buffer: Buffer::Grads,
            expected: n,
            got: 1
        })
    );
    assert!(same(&master, &m0) && params == p0 && state.step() == 4);
}

/// The crate's own bf16 conversions agree with `half` on every f32 class.
#[test]
fn bf16_conversions_match_half() {
    let step = if cfg!(miri) { 0x0100_0001 } else { 0x101 };
    for bits in (0..=u32::MAX).step_by(step).chain([
        0x7f7f_ffff,
        0x7f80_0000,
        0x3f80_8000,
        0x3f81_8000,
        1,
        0x8000_0000,
    ]) {
        let x = f32::from_bits(bits);
        let (ours, theirs) = (<bf16 as Lane>::from_f32(x), bf16::from_f32(x));
        assert!(
            ours.to_bits() == theirs.to_bits() || (x.is_nan() && ours.is_nan()),
            "{x:e}: {ours:?} vs {theirs:?}"
        );
        assert_eq!(
            <bf16 as Lane>::to_f32(theirs).to_bits(),
            theirs.to_f32().to_bits()
        );
    }
}

#[test]
fn stochastic_rounding_from_the_master_copy_is_unbiased() {
    // The first step moves nothing (it only initialises v), so the
    // parameters are the master rounded once: their mean over many lanes
    // approaches the master value, where rounding to nearest is off by a
    // fixed fraction of a bf16 spacing.
    let n = if cfg!(miri) { 512 } else { 100_000 };
    let x = 1.0_f32 + 3.0 * 2.0_f32.powi(-10);
    let mut master = vec![x; n];
    let mut params = vec![bf16::ZERO; n];
    let mut state = State::new(n);
    adopt_step_master(
        &mut master,
        &mut params,
        &vec![bf16::from_f32(0.5); n],
        &mut state.view_mut(),
        &Hyper::default(),
        Rounding::Stochastic { seed: 42 },
    )
    .unwrap();
    assert!(master.iter().all(|&m| m == x));
    let (lo, hi) = (bf16::from_f32(1.0), bf16::from_f32(1.0 + 2.0_f32.powi(-7)));
    assert!(params.iter().all(|&p| p == lo || p == hi));
    let mean = params.iter().map(|p| p.to_f32() as f64).sum::<f64>() / n as f64;
    let ulp = 2.0_f64.powi(-7);
    let tolerance = if cfg!(miri) { ulp / 5.0 } else { ulp / 50.0 };
    assert!((mean - x as f64).abs() < tolerance, "mean {mean} vs {x}");
}

#[test]
fn bad_input_to_the_half_step_changes_nothing() {
    let p0: Vec<bf16> = (0..9).map(|i| bf16::from_f32(i as f32)).collect();
    let g9 = vec![bf16::from_f32(0.5); 9];
    let g8 = vec![bf16::from_f32(0.5); 8];
    let s9 = vec![bf16::from_f32(0.25); 9];
    let s8 = vec![bf16::from_f32(0.25); 8];
    let bad_lr = Hyper {
        lr: -1.0,
        ..Hyper::default()
    };
    let good = Hyper::default();
    #[allow(clippy::type_complexity)]
    let cases: [(&[bf16], &[bf16], &[bf16], u64, &Hyper, Error); 5] = [
        (
            &g8,
            &s9,
            &s9,
            1,
            &good,
            Error::LengthMismatch {
                buffer: Buffer::Grads,
                expected: 9,
                got: 8,
            },
        ),
        (
            &g9,
            &s8,
            &s9,
            1,
            &good,
            Error::LengthMismatch {
                buffer: Buffer::ExpAvg,
                expected: 9,
                got: 8,
            },
        ),
        (
            &g9,
            &s9,
            &s8,
            1,
            &good,
            Error::LengthMismatch {
                buffer: Buffer::ExpAvgSq,
                expected: 9,
                got: 8,
            },
        ),
        (&g9, &s9, &s9, u64::MAX, &good, Error::StepOverflow),
        (
            &g9,
            &s9,
            &s9,
            1,
            &bad_lr,
            Error::InvalidHyper {
                param: adopt::HyperParam::Lr,
                value: Float(-1.0),
            },
        ),
    ];
    for (g, m0, v0, step0, h, want) in cases {
        for rounding in [Rounding::NearestEven, Rounding::Stochastic { seed: 3 }] {
            let (mut p, mut m, mut v, mut step) = (p0.clone(), m0.to_vec(), v0.to_vec(), step0);
            let got = adopt_step_half(&mut p, g, &mut m, &mut v, &mut step, h, rounding);
            assert_eq!(got, Err(want.clone()));
            assert!(same(&p, &p0) && same(&m, m0) && same(&v, v0));
            assert_eq!(step, step0);
        }
    }
}
