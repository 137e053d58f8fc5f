//! Every invalid input the step API can receive, the exact `Error` it gets,
//! and proof that params, state and step count are bit-for-bit unchanged.

mod common;

use adopt::{
    Buffer, Caution, Clip, DecayScaling, Error, Float, Hyper, HyperParam, State, StateView,
    WeightDecay, adopt_step, adopt_step_view, reference,
};
use common::assert_same_bits;

fn clip_nan(_: u64) -> f64 {
    f64::NAN
}
fn clip_negative_after_two(t: u64) -> f64 {
    if t >= 2 { -0.5 } else { 1.0 }
}

type StepFn = fn(&mut [f32], &[f32], &mut StateView<'_>, &Hyper) -> Result<(), Error>;

struct Case {
    what: &'static str,
    lanes: (usize, usize, usize, usize), // params, grads, exp_avg, exp_avg_sq
    step: u64,
    hyper: Hyper,
    want: Error,
}

fn hyper_error(param: HyperParam, value: f64) -> Error {
    Error::InvalidHyper {
        param,
        value: Float(value),
    }
}

fn overflow(param: HyperParam, value: f64) -> Error {
    Error::HyperOverflow {
        param,
        value: Float(value),
    }
}

fn clip_overflows_at_three(t: u64) -> f64 {
    if t >= 3 { 1e39 } else { 1.0 }
}

fn cases() -> Vec<Case> {
    let d = Hyper::default();
    let corrected = |max_lr| Hyper {
        weight_decay: WeightDecay::Decoupled {
            weight_decay: 0.1,
            scaling: DecayScaling::Corrected { max_lr },
            first_step: false,
        },
        ..d
    };
    let ok = (5, 5, 5, 5);
    let case = |what, lanes, step, hyper, want| Case {
        what,
        lanes,
        step,
        hyper,
        want,
    };
    vec![
        case(
            "max_lr zero",
            (5, 5, 5, 5),
            3,
            corrected(Some(0.0)),
            hyper_error(HyperParam::MaxLr, 0.0),
        ),
        case(
            "max_lr NaN",
            (5, 5, 5, 5),
            0,
            corrected(Some(f64::NAN)),
            hyper_error(HyperParam::MaxLr, f64::NAN),
        ),
        case(
            "max_lr infinite",
            (5, 5, 5, 5),
            3,
            corrected(Some(f64::INFINITY)),
            hyper_error(HyperParam::MaxLr, f64::INFINITY),
        ),
        case(
            "max_lr unset outside an optimizer group",
            ok,
            0,
            corrected(None),
            Error::MaxLrUnset,
        ),
        // Finite in f64, but the f32 step would compute with infinities
        // (the reference raises for each of these).
        case(
            "lr overflows f32",
            ok,
            3,
            Hyper { lr: 1e39, ..d },
            overflow(HyperParam::Lr, 1e39),
        ),
        case(
            "lr f64::MAX",
            ok,
            0,
            Hyper { lr: f64::MAX, ..d },
            overflow(HyperParam::Lr, f64::MAX),
        ),
        case(
            "lr just above f32::MAX",
            ok,
            3,
            Hyper {
                lr: f32::MAX as f64 * (1.0 + 1e-15),
                ..d
            },
            overflow(HyperParam::Lr, f32::MAX as f64 * (1.0 + 1e-15)),
        ),
        case(
            "eps overflows f32",
            ok,
            3,
            Hyper { eps: 1e39, ..d },
            overflow(HyperParam::Eps, 1e39),
        ),
        case(
            "L2 weight_decay overflows f32",
            ok,
            0,
            Hyper {
                weight_decay: WeightDecay::l2(1e39),
                ..d
            },
            overflow(HyperParam::WeightDecay, 1e39),
        ),
        case(
            "decoupled weight_decay overflows f32",
            ok,
            3,
            Hyper {
                weight_decay: WeightDecay::decoupled(1e39),
                ..d
            },
            overflow(HyperParam::WeightDecay, 1e39),
        ),
        case(
            "lr·weight_decay overflows f32",
            ok,
            3,
            Hyper {
                lr: 1e20,
                weight_decay: WeightDecay::decoupled(1e20),
                ..d
            },
            overflow(HyperParam::DecayRate, 1e40),
        ),
        case(
            "lr·weight_decay overflows f32 on the first step too",
            ok,
            0,
            Hyper {
                lr: 1e20,
                weight_decay: WeightDecay::decoupled(1e20),
                ..d
            },
            overflow(HyperParam::DecayRate, 1e40),
        ),
        case(
            "corrected decay rate overflows f32",
            ok,
            3,
            corrected(Some(1e-300)),
            overflow(HyperParam::DecayRate, 1e-3 * 1e-3 / 1e-300 * 0.1),
        ),
        case(
            "constant clip overflows f32",
            ok,
            0,
            Hyper {
                clip: Clip::Constant(1e39),
                ..d
            },
            overflow(HyperParam::ClipScale, 1e39),
        ),
        case(
            "clip schedule overflows f32 at step 3",
            ok,
            3,
            Hyper {
                clip: Clip::Custom(clip_overflows_at_three),
                ..d
            },
            Error::InvalidClip {
                step: 3,
                threshold: Float(1e39),
            },
        ),
        case(
            "power clip overflows f32 at step 4",
            ok,
            4,
            Hyper {
                clip: Clip::Power {
                    scale: 1e38,
                    exponent: 1.0,
                },
                ..d
            },
            Error::InvalidClip {
                step: 4,
                threshold: Float(4e38),
            },
        ),
        case(
            "clip offset shifts the step the schedule sees",
            ok,
            2,
            Hyper {
                clip: Clip::Custom(clip_overflows_at_three),
                clip_offset: 1,
                ..d
            },
            Error::InvalidClip {
                step: 3,
                threshold: Float(1e39),
            },
        ),
        case(
            "grads short",
            (5, 4, 5, 5),
            3,
            d,
            Error::LengthMismatch {
                buffer: Buffer::Grads,
                expected: 5,
                got: 4,
            },
        ),
        case(
            "grads long",
            (5, 6, 5, 5),
            0,
            d,
            Error::LengthMismatch {
                buffer: Buffer::Grads,
                expected: 5,
                got: 6,
            },
        ),
        case(
            "exp_avg short",
            (5, 5, 0, 5),
            3,
            d,
            Error::LengthMismatch {
                buffer: Buffer::ExpAvg,
                expected: 5,
                got: 0,
            },
        ),
        case(
            "exp_avg_sq long",
            (5, 5, 5, 9),
            3,
            d,
            Error::LengthMismatch {
                buffer: Buffer::ExpAvgSq,
                expected: 5,
                got: 9,
            },
        ),
        case(
            "empty params, non-empty grads",
            (0, 1, 0, 0),
            0,
            d,
            Error::LengthMismatch {
                buffer: Buffer::Grads,
                expected: 0,
                got: 1,
            },
        ),
        case(
            "lr negative",
            ok,
            3,
            Hyper { lr: -1e-3, ..d },
            hyper_error(HyperParam::Lr, -1e-3),
        ),
        case(
            "lr NaN",
            ok,
            3,
            Hyper { lr: f64::NAN, ..d },
            hyper_error(HyperParam::Lr, f64::NAN),
        ),
        case(
            "lr infinite",
            ok,
            3,
            Hyper {
                lr: f64::INFINITY,
                ..d
            },
            hyper_error(HyperParam::Lr, f64::INFINITY),
        ),
        case(
            "lr -0.0 is fine, beta1 = 1 is not",
            ok,
            3,
            Hyper {
                lr: -0.0,
                betas: (1.0, 0.9),
                ..d
            },
            hyper_error(HyperParam::Beta1, 1.0),
        ),
        case(
            "beta1 negative",
            ok,
            0,
            Hyper {
                betas: (-0.1, 0.9),
                ..d
            },
            hyper_error(HyperParam::Beta1, -0.1),
        ),
        case(
            "beta1 NaN",
            ok,
            3,
            Hyper {
                betas: (f64::NAN, 0.9),
                ..d
            },
            hyper_error(HyperParam::Beta1, f64::NAN),
        ),
        case(
            "beta2 = 1",
            ok,
            3,
            Hyper {
                betas: (0.9, 1.0),
                ..d
            },
            hyper_error(HyperParam::Beta2, 1.0),
        ),
        case(
            "beta2 NaN",
            ok,
            3,
            Hyper {
                betas: (0.9, f64::NAN),
                ..d
            },
            hyper_error(HyperParam::Beta2, f64::NAN),
        ),
        case(
            "eps negative",
            ok,
            3,
            Hyper { eps: -1e-8, ..d },
            hyper_error(HyperParam::Eps, -1e-8),
        ),
        case(
            "eps NaN",
            ok,
            0,
            Hyper { eps: f64::NAN, ..d },
            hyper_error(HyperParam::Eps, f64::NAN),
        ),
        case(
            "weight_decay negative",
            ok,
            3,
            Hyper {
                weight_decay: WeightDecay::l2(-0.1),
                ..d
            },
            hyper_error(HyperParam::WeightDecay, -0.1),
        ),
        case(
            "weight_decay NaN",
            ok,
            3,
            Hyper {
                weight_decay: WeightDecay::decoupled(f64::NAN),
                ..d
            },
            hyper_error(HyperParam::WeightDecay, f64::NAN),
        ),
        case(
            "clip constant negative",
            ok,
            0,
            Hyper {
                clip: Clip::Constant(-1.0),
                ..d
            },
            hyper_error(HyperParam::ClipScale, -1.0),
        ),
        case(
            "clip constant NaN",
            ok,
            3,
            Hyper {
                clip: Clip::Constant(f64::NAN),
                ..d
            },
            hyper_error(HyperParam::ClipScale, f64::NAN),
        ),
        case(
            "clip power scale negative",
            ok,
            3,
            Hyper {
                clip: Clip::Power {
                    scale: -1.0,
                    exponent: 0.25,
                },
                ..d
            },
            hyper_error(HyperParam::ClipScale, -1.0),
        ),
        case(
            "clip power exponent NaN",
            ok,
            3,
            Hyper {
                clip: Clip::Power {
                    scale: 1.0,
                    exponent: f64::NAN,
                },
                ..d
            },
            hyper_error(HyperParam::ClipExponent, f64::NAN),
        ),
        case(
            "custom clip NaN",
            ok,
            1,
            Hyper {
                clip: Clip::Custom(clip_nan),
                ..d
            },
            Error::InvalidClip {
                step: 1,
                threshold: Float(f64::NAN),
            },
        ),
        case(
            "custom clip negative at step 2",
            ok,
            2,
            Hyper {
                clip: Clip::Custom(clip_negative_after_two),
                ..d
            },
            Error::InvalidClip {
                step: 2,
                threshold: Float(-0.5),
            },
        ),
        case("step count exhausted", ok, u64::MAX, d, Error::StepOverflow),
        case(
            "lengths are checked before hyperparameters",
            (5, 4, 5, 5),
            3,
            Hyper { lr: f64::NAN, ..d },
            Error::LengthMismatch {
                buffer: Buffer::Grads,
                expected: 5,
                got: 4,
            },
        ),
    ]
}

fn filled(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| seed + i as f32 * 0.25).collect()
}

#[test]
fn every_bad_input_gets_its_error_and_changes_nothing() {
    for c in cases() {
        let (np, ng, nm, nv) = c.lanes;
        let grads = filled(ng, 0.5);
        let (p0, m0, v0) = (filled(np, 1.0), filled(nm, -0.5), filled(nv, 2.0));
        let steppers: [(&str, StepFn); 2] = [
            ("adopt_step_view", adopt_step_view),
            ("reference::adopt_step_view", reference::adopt_step_view),
        ];
        for (name, f) in steppers {
            let (mut p, mut m, mut v, mut step) = (p0.clone(), m0.clone(), v0.clone(), c.step);
            let got = f(
                &mut p,
                &grads,
                &mut StateView::new(&mut m, &mut v, &mut step),
                &c.hyper,
            );
            assert_eq!(got, Err(c.want.clone()), "{name}: {}", c.what);
            let what = format!("{name}: {}", c.what);
            assert_same_bits(&p, &p0, &format!("{what}: params changed"));
            assert_same_bits(&m, &m0, &format!("{what}: exp_avg changed"));
            assert_same_bits(&v, &v0, &format!("{what}: exp_avg_sq changed"));
            assert_eq!(step, c.step, "{what}: step changed");
        }
        // The owned-state entry point agrees.
        let mut state = State::from_parts(m0.clone(), v0.clone(), c.step);
        let mut p = p0.clone();
        assert_eq!(
            adopt_step(&mut p, &grads, &mut state, &c.hyper),
            Err(c.want.clone()),
            "adopt_step: {}",
            c.what
        );
        assert_eq!(
            state,
            State::from_parts(m0.clone(), v0.clone(), c.step),
            "adopt_step: {}",
            c.what
        );
        assert_same_bits(&p, &p0, &format!("adopt_step: {}: params changed", c.what));
        // The message names the problem.
        let message = c.want.to_string();
        assert!(
            !message.is_empty() && !message.contains("Error"),
            "{}: message {message:?}",
            c.what
        );
    }
}

#[test]
fn the_first_step_does_not_evaluate_the_clip_schedule() {
    // As in the reference: clip(0) is never used, so a schedule invalid only
    // at 0 does not fail the first step.
    fn invalid_at_zero(t: u64) -> f64 {
        if t == 0 { f64::NAN } else { 1.0 }
    }
    let hyper = Hyper {
        clip: Clip::Custom(invalid_at_zero),
        ..Hyper::default()
    };
    let mut p = vec![1.0_f32; 3];
    let mut state = State::new(3);
    adopt_step(&mut p, &[1.0; 3], &mut state, &hyper).unwrap();
    adopt_step(&mut p, &[1.0; 3], &mut state, &hyper).unwrap();
    assert_eq!(state.step(), 2);
}

#[test]
fn error_messages_name_the_buffer_and_parameter() {
    let e = Error::LengthMismatch {
        buffer: Buffer::ExpAvgSq,
        expected: 8,
        got: 7,
    };
    assert_eq!(
        e.to_string(),
        "exp_avg_sq has 7 lanes, expected 8 (the length of params)"
    );
    let e = Error::InvalidHyper {
        param: HyperParam::Beta2,
        value: Float(1.5),
    };
    assert_eq!(
        e.to_string(),
        "invalid hyperparameter betas.1 = 1.5: must be a number in [0, 1)"
    );
    let e = Error::InvalidClip {
        step: 4,
        threshold: Float(-1.0),
    };
    assert_eq!(
        e.to_string(),
        "clip threshold at step 4 is -1: must be >= 0 and not NaN"
    );
    let e = Error::TableMismatch {
        rows: 10,
        dim: 4,
        got: 36,
    };
    assert_eq!(
        e.to_string(),
        "table has 36 lanes, expected 10 rows of 4 lanes (the state's shape)"
    );
    let e = Error::HyperOverflow {
        param: HyperParam::DecayRate,
        value: Float(1e40),
    };
    assert_eq!(
        e.to_string(),
        "hyperparameter the decoupled decay rate (lr·weight_decay, as scaled) = 1e40 overflows f32 (the largest f32 is 3.4028235e38)"
    );
    let e = Error::InvalidClip {
        step: 2,
        threshold: Float(1e39),
    };
    assert!(e.to_string().contains("which overflows f32"), "{e}");
    let boxed: Box<dyn std::error::Error> = Box::new(Error::StepOverflow);
    assert!(boxed.to_string().contains("u64::MAX"));
}

#[test]
fn bad_inv_scale_is_refused_and_found_inf_changes_nothing() {
    use adopt::{Scaling, StepOptions, adopt_step_ext};
    let adopt_step_scaled = |p: &mut [f32], g: &[f32], s: &mut State, h: &Hyper, scaling| {
        let options = StepOptions {
            scaling,
            ..StepOptions::default()
        };
        adopt_step_ext(p, g, s, h, &options)
    };
    let cases = [
        (f32::NAN, f64::NAN),
        (f32::INFINITY, f64::INFINITY),
        (-1.0, -1.0),
        (-f32::MIN_POSITIVE, -f32::MIN_POSITIVE as f64),
    ];
    for (inv_scale, value) in cases {
        for found_inf in [false, true] {
            let mut p = vec![1.0_f32; 5];
            let mut state = State::from_parts(vec![0.5; 5], vec![2.0; 5], 3);
            let got = adopt_step_scaled(
                &mut p,
                &[1.0; 5],
                &mut state,
                &Hyper::default(),
                Scaling {
                    inv_scale,
                    found_inf,
                },
            );
            assert_eq!(
                got,
                Err(Error::InvalidHyper {
                    param: HyperParam::InvScale,
                    value: Float(value)
                })
            );
            assert_eq!(state, State::from_parts(vec![0.5; 5], vec![2.0; 5], 3));
            assert_eq!(p, vec![1.0; 5]);
        }
    }
    // found_inf with valid input: Ok, and nothing moves, not even the step.
    let mut p = vec![1.0_f32, f32::NAN, -0.0];
    let mut state = State::from_parts(vec![0.5; 3], vec![2.0; 3], 3);
    let skip = Scaling {
        inv_scale: 0.5,
        found_inf: true,
    };
    adopt_step_scaled(
        &mut p,
        &[f32::INFINITY, 1.0, 2.0],
        &mut state,
        &Hyper::default(),
        skip,
    )
    .unwrap();
    assert_eq!(state, State::from_parts(vec![0.5; 3], vec![2.0; 3], 3));
    assert_same_bits(&p, &[1.0, f32::NAN, -0.0], "found_inf: params");
    // found_inf does not hide other bad input.
    let got = adopt_step_scaled(&mut p, &[1.0; 2], &mut state, &Hyper::default(), skip);
    assert_eq!(
        got,
        Err(Error::LengthMismatch {
            buffer: Buffer::Grads,
            expected: 3,
            got: 2
        })
    );
}

#[test]
fn impossible_caution_masks_and_unavailable_kernels_are_refused() {
    use adopt::{CautionMask, Kernel, StepOptions, adopt_step_ext};
    let hyper = Hyper {
        caution: Caution::Timm,
        ..Hyper::default()
    };
    let cases = [
        (CautionMask { count: 6, lanes: 5 }, 5),
        (CautionMask { count: 1, lanes: 4 }, 5),
        (CautionMask { count: 0, lanes: 0 }, 1),
    ];
    for (mask, n) in cases {
        let mut p = vec![1.0_f32; n];
        let mut state = State::from_parts(vec![0.5; n], vec![2.0; n], 3);
        let options = StepOptions {
            caution_mask: Some(mask),
            ..StepOptions::default()
        };
        let got = adopt_step_ext(
            &mut p,
            &vec![1.0; n],
            &mut state.view_mut(),
            &hyper,
            &options,
        );
        assert_eq!(
            got,
            Err(Error::InvalidCautionMask {
                count: mask.count,
                lanes: mask.lanes,
                shard: n as u64
            })
        );
        assert_eq!(state, State::from_parts(vec![0.5; n], vec![2.0; n], 3));
        assert_eq!(p, vec![1.0; n]);
    }
    for kernel in Kernel::ALL.into_iter().filter(|k| !k.is_available()) {
        let mut p = vec![1.0_f32; 2];
        let mut state = State::new(2);
        let options = StepOptions {
            kernel: Some(kernel),
            ..StepOptions::default()
        };
        let got = adopt_step_ext(&mut p, &[1.0; 2], &mut state.view_mut(), &hyper, &options);
        assert_eq!(got, Err(Error::KernelUnavailable(kernel)));
        assert_eq!((state.step(), p), (0, vec![1.0; 2]));
    }
}

/// The deprecated entry points still step exactly as `adopt_step_ext` with
/// the same options.
#[test]
#[allow(deprecated)]
fn deprecated_entry_points_still_work() {
    use adopt::{Kernel, Scaling, StepOptions, adopt_step_ext};
    let hyper = Hyper {
        lr: 0.1,
        ..Hyper::default()
    };
    let scaling = Scaling {
        inv_scale: 0.5,
        found_inf: false,
    };
    let grads = [0.3_f32, -1.0, 2.0, 0.0, 5.0];
    let run = |f: &dyn Fn(&mut [f32], &mut State)| {
        let (mut p, mut s) = (vec![1.0_f32; 5], State::new(5));
        for _ in 0..3 {
            f(&mut p, &mut s);
        }
        (p, s)
    };
    let want = run(&|p, s| {
        let options = StepOptions {
            kernel: Some(Kernel::Portable),
            scaling,
            caution_mask: None,
        };
        adopt_step_ext(p, &grads, s, &hyper, &options).unwrap()
    });
    let with = run(&|p, s| {
        adopt::adopt_step_with(
            Kernel::Portable,
            p,
            &grads,
            &mut s.view_mut(),
            &hyper,
            scaling,
        )
        .unwrap()
    });
    let scaled = run(&|p, s| adopt::adopt_step_scaled(p, &grads, s, &hyper, scaling).unwrap());
    let scaled_view = run(&|p, s| {
        adopt::adopt_step_scaled_view(p, &grads, &mut s.view_mut(), &hyper, scaling).unwrap()
    });
    let reference_view = run(&|p, s| {
        reference::adopt_step_scaled_view(p, &grads, &mut s.view_mut(), &hyper, scaling).unwrap()
    });
    for (name, got) in [
        ("adopt_step_with", with),
        ("adopt_step_scaled", scaled),
        ("adopt_step_scaled_view", scaled_view),
        ("reference::adopt_step_scaled_view", reference_view),
    ] {
        assert_same_bits(&got.0, &want.0, name);
        assert_eq!(got.1, want.1, "{name}: state");
    }
}
