//! Every kernel against `adopt::reference`, bit for bit (any NaN matching
//! any NaN), on edge-heavy inputs: single steps, multi-step runs, every
//! length around the vector widths, misaligned sub-slices and NaN canaries
//! past the ends of every buffer.

mod common;

use adopt::{
    CautionMask, Error, Hyper, Kernel, Scaling, StateView, StepOptions, WeightDecay,
    adopt_step_ext, caution_mask, reference,
};
use common::{assert_same_bits, hyper, second_moment, value};
use proptest::prelude::*;

/// A buffer set for one run: params, m, v, step.
#[derive(Clone, Debug)]
struct Buffers {
    p: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    step: u64,
}

type StepFn = Box<
    dyn Fn(&mut [f32], &[f32], &mut StateView<'_>, &Hyper, Scaling) -> Result<(), Error>
        + Send
        + Sync,
>;

/// Steps `b` with every kernel (through `adopt_step_ext`) and with the
/// reference over `grads`, one step per grad vector, and checks bits, errors,
/// step counts and caution-mask counts agree after each step.
fn compare(
    kernel: Option<Kernel>,
    b: &Buffers,
    grads: &[Vec<f32>],
    hyper: &Hyper,
    options: &StepOptions,
) {
    let name = kernel.map_or("dispatched", Kernel::name);
    let ours = StepOptions { kernel, ..*options };
    let (mut x, mut r) = (b.clone(), b.clone());
    for (i, g) in grads.iter().enumerate() {
        let count = caution_mask(
            &x.p,
            g,
            &StateView::new(&mut x.m, &mut x.v, &mut x.step),
            hyper,
            &ours,
        );
        let want_count = reference::caution_mask(
            &r.p,
            g,
            &StateView::new(&mut r.m, &mut r.v, &mut r.step),
            hyper,
            options,
        );
        assert_eq!(
            count, want_count,
            "{name}: caution counts differ at step {i}"
        );
        let got = adopt_step_ext(
            &mut x.p,
            g,
            &mut StateView::new(&mut x.m, &mut x.v, &mut x.step),
            hyper,
            &ours,
        );
        let want = reference::adopt_step_ext(
            &mut r.p,
            g,
            &mut StateView::new(&mut r.m, &mut r.v, &mut r.step),
            hyper,
            options,
        );
        assert_eq!(got, want, "{name}: results differ at step {i}");
        assert_eq!(x.step, r.step, "{name}: step counts differ");
        let what = format!("{name} step {i} hyper {hyper:?} options {options:?}");
        assert_same_bits(&x.p, &r.p, &format!("{what}: params"));
        assert_same_bits(&x.m, &r.m, &format!("{what}: exp_avg"));
        assert_same_bits(&x.v, &r.v, &format!("{what}: exp_avg_sq"));
    }
}

/// `None` (dispatch) and every kernel this CPU supports, called directly (not
/// only the one dispatch picks).
fn kernel_choices() -> Vec<Option<Kernel>> {
    let mut all = vec![None];
    all.extend(
        Kernel::ALL
            .into_iter()
            .filter(|k| k.is_available())
            .map(Some),
    );
    all
}

/// The kernels as step functions (for the sweeps below).
fn kernels() -> Vec<(&'static str, StepFn)> {
    kernel_choices()
        .into_iter()
        .map(|kernel| {
            let f: StepFn = Box::new(
                move |p: &mut [f32], g: &[f32], s: &mut StateView<'_>, h: &Hyper, c: Scaling| {
                    adopt_step_ext(
                        p,
                        g,
                        s,
                        h,
                        &StepOptions {
                            kernel,
                            scaling: c,
                            caution_mask: None,
                        },
                    )
                },
            );
            (kernel.map_or("dispatched", Kernel::name), f)
        })
        .collect()
}

fn buffers(len: usize) -> impl Strategy<Value = Buffers> {
    (
        prop::collection::vec(value(), len),
        prop::collection::vec(value(), len),
        prop::collection::vec(second_moment(), len),
        prop::sample::select(vec![0_u64, 0, 1, 2, 3, 10, 1000, u64::MAX - 1, u64::MAX]),
    )
        .prop_map(|(p, m, v, step)| Buffers { p, m, v, step })
}

/// Mostly plain steps; otherwise edge `inv_scale` values (some invalid),
/// sometimes `found_inf`, and sometimes a supplied caution mask (some
/// impossible).
fn options() -> impl Strategy<Value = StepOptions> {
    let inv_scale = prop::sample::select(vec![
        1.0,
        0.5,
        1.0 / 65536.0,
        3.0,
        0.0,
        f32::from_bits(1),
        1e30,
        f32::MAX,
        f32::INFINITY,
        f32::NAN,
        -1.0,
    ]);
    let scaling = prop_oneof![
        3 => Just(Scaling::default()),
        2 => (inv_scale, prop::bool::weighted(0.2))
            .prop_map(|(inv_scale, found_inf)| Scaling { inv_scale, found_inf }),
    ];
    let mask = prop_oneof![
        4 => Just(None),
        1 => (0_u64..200, 0_u64..200).prop_map(|(count, lanes)| Some(CautionMask { count, lanes })),
    ];
    (scaling, mask).prop_map(|(scaling, caution_mask)| StepOptions {
        kernel: None,
        scaling,
        caution_mask,
    })
}

type Run = (Buffers, Vec<Vec<f32>>, Hyper, StepOptions);

fn run(len: std::ops::Range<usize>, steps: std::ops::Range<usize>) -> impl Strategy<Value = Run> {
    (len, steps).prop_flat_map(|(len, steps)| {
        (
            buffers(len),
            prop::collection::vec(prop::collection::vec(value(), len), steps),
            hyper(),
            options(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 2000 }, ..ProptestConfig::default() })]

    #[test]
    fn single_step_matches_reference((b, grads, h, c) in run(0..70, 1..2)) {
        for kernel in kernel_choices() {
            compare(kernel, &b, &grads, &h, &c);
        }
    }

    #[test]
    fn multi_step_runs_match_reference((b, grads, h, c) in run(0..40, 2..8)) {
        let fresh = Buffers { m: vec![0.0; b.p.len()], v: vec![0.0; b.p.len()], step: 0, ..b.clone() };
        for kernel in kernel_choices() {
            compare(kernel, &b, &grads, &h, &c);
            compare(kernel, &fresh, &grads, &h, &c);
        }
    }
}

/// Every length from 0 to 4·16+1 at every offset 0..16 into larger buffers
/// whose lanes outside the sub-slice hold NaN canaries that must survive.
#[test]
fn lengths_offsets_and_canaries() {
    const CANARY: u32 = 0x7fc0_dead;
    let hypers = [
        Hyper::default(),
        Hyper {
            lr: 0.1,
            weight_decay: WeightDecay::l2(0.1),
            ..Hyper::default()
        },
        Hyper {
            lr: 0.1,
            weight_decay: WeightDecay::decoupled(0.1),
            maximize: true,
            ..Hyper::default()
        },
    ];
    // Under Miri (which checks the unsafe loads, stores and tail copies) a
    // smaller sweep: still every tail length of the portable kernel.
    let (max_len, offsets, hypers) = if cfg!(miri) {
        (17, 3, &hypers[1..])
    } else {
        (4 * 16 + 1, 16, &hypers[..])
    };
    for (name, f) in &kernels() {
        for len in 0..=max_len {
            for offset in 0..offsets {
                for h in hypers {
                    let total = offset + len + 16;
                    let fill = |seed: u32| -> Vec<f32> {
                        (0..total)
                            .map(|i| {
                                if i < offset || i >= offset + len {
                                    f32::from_bits(CANARY)
                                } else {
                                    let x =
                                        (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
                                    (x % 2000) as f32 / 500.0 - 2.0
                                }
                            })
                            .collect()
                    };
                    let g = fill(7);
                    let (mut xp, mut xm, mut xv) = (
                        fill(1),
                        fill(2),
                        fill(3).iter().map(|x| x.abs()).collect::<Vec<_>>(),
                    );
                    let (mut rp, mut rm, mut rv) = (xp.clone(), xm.clone(), xv.clone());
                    let range = offset..offset + len;
                    for _ in 0..3 {
                        let (mut xs, mut rs) = (5, 5);
                        f(
                            &mut xp[range.clone()],
                            &g[range.clone()],
                            &mut StateView::new(
                                &mut xm[range.clone()],
                                &mut xv[range.clone()],
                                &mut xs,
                            ),
                            h,
                            Scaling::default(),
                        )
                        .unwrap();
                        reference::adopt_step_view(
                            &mut rp[range.clone()],
                            &g[range.clone()],
                            &mut StateView::new(
                                &mut rm[range.clone()],
                                &mut rv[range.clone()],
                                &mut rs,
                            ),
                            h,
                        )
                        .unwrap();
                    }
                    let what = format!("{name} len {len} offset {offset}");
                    assert_same_bits(&xp, &rp, &format!("{what} params"));
                    assert_same_bits(&xm, &rm, &format!("{what} exp_avg"));
                    assert_same_bits(&xv, &rv, &format!("{what} exp_avg_sq"));
                    for buf in [&xp, &xm, &xv] {
                        for (i, x) in buf.iter().enumerate() {
                            if !range.contains(&i) {
                                assert_eq!(
                                    x.to_bits(),
                                    CANARY,
                                    "{what}: canary at {i} overwritten"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn every_listed_kernel_reports_availability_consistently() {
    assert!(Kernel::Portable.is_available());
    assert!(Kernel::best().is_available());
    assert!(Kernel::active().is_available());
    for kernel in Kernel::ALL {
        if !kernel.is_available() {
            let mut state = adopt::State::new(1);
            let options = StepOptions {
                kernel: Some(kernel),
                ..StepOptions::default()
            };
            let got = adopt_step_ext(&mut [1.0], &[1.0], &mut state, &Hyper::default(), &options);
            assert_eq!(got, Err(Error::KernelUnavailable(kernel)));
            assert_eq!(state.step(), 0);
        }
    }
    #[cfg(all(target_arch = "aarch64", not(miri)))]
    assert_eq!(Kernel::best(), Kernel::Neon, "aarch64 has NEON");
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        assert!(
            Kernel::best() != Kernel::Portable,
            "dispatch must not fall back to portable on an AVX2+FMA CPU"
        );
    }
}

/// Buffers large enough to be split across the rayon pool give the same bits
/// as the reference, for every kernel, in pools of 1, 2 and 3 threads.
#[test]
#[cfg_attr(miri, ignore = "hundreds of thousands of lanes: too slow under Miri")]
fn parallel_chunks_match_reference() {
    let len = adopt::PARALLEL_THRESHOLD * 3 + 37;
    let values = |seed: u32| -> Vec<f32> {
        (0..len as u32)
            .map(|i| {
                let x = i
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed.wrapping_mul(40503));
                match x % 97 {
                    0 => f32::NAN,
                    1 => f32::INFINITY,
                    2 => -0.0,
                    3 => f32::from_bits(1),
                    _ => (x % 4000) as f32 / 1000.0 - 2.0,
                }
            })
            .collect()
    };
    let hyper = Hyper {
        lr: 0.05,
        weight_decay: WeightDecay::decoupled(0.01),
        ..Hyper::default()
    };
    let grads: Vec<Vec<f32>> = (0..3).map(|s| values(s + 10)).collect();
    let (mut rp, mut rm, mut rv, mut rs) = (values(1), vec![0.0; len], vec![0.0; len], 0_u64);
    for g in &grads {
        reference::adopt_step_view(
            &mut rp,
            g,
            &mut StateView::new(&mut rm, &mut rv, &mut rs),
            &hyper,
        )
        .unwrap();
    }
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for (name, f) in &kernels() {
            let (mut p, mut m, mut v, mut s) = (values(1), vec![0.0; len], vec![0.0; len], 0_u64);
            pool.install(|| {
                for g in &grads {
                    f(
                        &mut p,
                        g,
                        &mut StateView::new(&mut m, &mut v, &mut s),
                        &hyper,
                        Scaling::default(),
                    )
                    .unwrap();
                }
            });
            let what = format!("{name} with {threads} threads");
            assert_same_bits(&p, &rp, &format!("{what}: params"));
            assert_same_bits(&m, &rm, &format!("{what}: exp_avg"));
            assert_same_bits(&v, &rv, &format!("{what}: exp_avg_sq"));
        }
    }
}

/// torch's lerp takes its second form from a weight of 0.5 on (β1 <= 0.5):
/// with an unclipped infinite normalised gradient it gives NaN where the
/// first form gives ±inf. The repro from the fidelity issue, on every
/// kernel and every tail length: lr 1e-2, β1 0.3, no clip, p = 0.5,
/// gradients 1 then inf; torch-adopt and timm give NaN for m and p.
#[test]
fn lerp_second_form_makes_nan_of_an_infinite_update() {
    for beta1 in [0.3, 0.5, 0.0] {
        let hyper = Hyper {
            lr: 1e-2,
            betas: (beta1, 0.9999),
            clip: adopt::Clip::None,
            ..Hyper::default()
        };
        for lanes in [1, 3, 4, 7, 8, 15, 16, 17, 33] {
            for (name, f) in &kernels() {
                let (mut p, mut m, mut v, mut s) = (
                    vec![0.5_f32; lanes],
                    vec![0.0; lanes],
                    vec![0.0; lanes],
                    0_u64,
                );
                for g in [1.0, f32::INFINITY] {
                    let mut state = StateView::new(&mut m, &mut v, &mut s);
                    f(
                        &mut p,
                        &vec![g; lanes],
                        &mut state,
                        &hyper,
                        Scaling::default(),
                    )
                    .unwrap();
                }
                let what = format!("{name}, β1 {beta1}, {lanes} lanes");
                assert!(m.iter().all(|x| x.is_nan()), "{what}: m = {m:?}");
                assert!(p.iter().all(|x| x.is_nan()), "{what}: p = {p:?}");
            }
        }
    }
    // Above 0.5 the first form: m = inf, p = -inf.
    let hyper = Hyper {
        lr: 1e-2,
        betas: (0.5000001, 0.9999),
        clip: adopt::Clip::None,
        ..Hyper::default()
    };
    let (mut p, mut m, mut v, mut s) = ([0.5_f32], [0.0_f32], [0.0_f32], 0_u64);
    for g in [1.0, f32::INFINITY] {
        let mut state = StateView::new(&mut m, &mut v, &mut s);
        adopt::adopt_step_view(&mut p, &[g], &mut state, &hyper).unwrap();
    }
    assert_eq!((m[0], p[0]), (f32::INFINITY, f32::NEG_INFINITY));
}
