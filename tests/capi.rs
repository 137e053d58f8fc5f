//! The C ABI called from Rust: results bit-identical to the Rust API, every
//! error with its status and message, and nothing written on error.
#![cfg(feature = "capi")]

mod common;

use adopt::capi::*;
use adopt::precision::{Rounding, adopt_step_half};
use adopt::{Adopt, Caution, Clip, DecayScaling, Hyper, Item, State, WeightDecay, adopt_step};
use common::assert_same_bits;
use core::ffi::CStr;
use core::ptr::{null, null_mut};
use half::bf16;

/// This thread's last message.
fn message() -> String {
    // SAFETY: adopt_last_error_message returns a NUL-terminated string that
    // stays valid until the next adopt_ call on this thread.
    unsafe { CStr::from_ptr(adopt_last_error_message()) }
        .to_str()
        .expect("UTF-8")
        .to_owned()
}

/// The hyperparameter sets the tests step with: C form and Rust form.
fn hypers() -> Vec<(AdoptHyper, Hyper)> {
    let d = adopt_hyper_default();
    let mut out = vec![(d, Hyper::default())];
    let mut h = d;
    h.lr = 1e-2;
    h.weight_decay = 0.05;
    h.decouple = 1;
    out.push((
        h,
        Hyper {
            lr: 1e-2,
            weight_decay: WeightDecay::decoupled(0.05),
            ..Hyper::default()
        },
    ));
    let mut h = d;
    h.lr = 3e-2;
    h.beta1 = 0.8;
    h.beta2 = 0.99;
    h.weight_decay = 0.01;
    h.clip = ADOPT_CLIP_CONSTANT;
    h.clip_scale = 0.5;
    h.nesterov = 1;
    h.maximize = 1;
    out.push((
        h,
        Hyper {
            lr: 3e-2,
            betas: (0.8, 0.99),
            weight_decay: WeightDecay::l2(0.01),
            clip: Clip::Constant(0.5),
            nesterov: true,
            maximize: true,
            ..Hyper::default()
        },
    ));
    let mut h = d;
    h.lr = 1e-1;
    h.eps = 1e-8;
    h.clip = ADOPT_CLIP_NONE;
    h.weight_decay = 0.1;
    h.decouple = 1;
    h.decay_scaling = ADOPT_DECAY_CORRECTED;
    h.max_lr = 0.2;
    h.caution = ADOPT_CAUTION_TIMM;
    out.push((
        h,
        Hyper {
            lr: 1e-1,
            eps: 1e-8,
            clip: Clip::None,
            weight_decay: WeightDecay::Decoupled {
                weight_decay: 0.1,
                scaling: DecayScaling::Corrected { max_lr: Some(0.2) },
                first_step: false,
            },
            caution: Caution::Timm,
            ..Hyper::default()
        },
    ));
    let mut h = d;
    h.clip_scale = 2.0;
    h.clip_exponent = 0.5;
    h.weight_decay = 0.5;
    h.decouple = 1;
    h.decay_scaling = ADOPT_DECAY_FIXED;
    out.push((
        h,
        Hyper {
            clip: Clip::Power {
                scale: 2.0,
                exponent: 0.5,
            },
            weight_decay: WeightDecay::Decoupled {
                weight_decay: 0.5,
                scaling: DecayScaling::Fixed,
                first_step: false,
            },
            ..Hyper::default()
        },
    ));
    // pytorch-optimizer's variants: its cautious rule, first-step decay and
    // its clip schedule counted from the step being taken; β1 <= 0.5 (the
    // lerp's second form).
    let mut h = d;
    h.lr = 2e-2;
    h.beta1 = 0.3;
    h.weight_decay = 0.1;
    h.decouple = 1;
    h.first_step_decay = 1;
    h.clip_offset = 1;
    h.caution = ADOPT_CAUTION_PYTORCH_OPTIMIZER;
    out.push((
        h,
        Hyper {
            lr: 2e-2,
            betas: (0.3, 0.9999),
            weight_decay: WeightDecay::Decoupled {
                weight_decay: 0.1,
                scaling: DecayScaling::Lr,
                first_step: true,
            },
            clip_offset: 1,
            caution: Caution::PytorchOptimizer,
            ..Hyper::default()
        },
    ));
    out
}

/// Deterministic lanes of every sign and several magnitudes.
fn lanes(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            let x = i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
            (x % 2001) as f32 / 500.0 - 2.0
        })
        .collect()
}

/// `adopt_step_f32` on slices; panics on nothing, returns the status.
fn step_f32(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    step: &mut u64,
    h: &AdoptHyper,
) -> AdoptStatus {
    // SAFETY: every pointer is valid for its length and they are distinct
    // borrows, so they do not overlap.
    unsafe {
        adopt_step_f32(
            p.as_mut_ptr(),
            p.len(),
            g.as_ptr(),
            g.len(),
            m.as_mut_ptr(),
            m.len(),
            v.as_mut_ptr(),
            v.len(),
            step,
            h,
        )
    }
}

#[test]
fn default_hyperparameters_are_the_reference_defaults() {
    let h = adopt_hyper_default();
    let r = Hyper::default();
    assert_eq!(
        (h.lr, h.beta1, h.beta2, h.eps),
        (r.lr, r.betas.0, r.betas.1, r.eps)
    );
    assert_eq!(h.weight_decay, 0.0);
    assert_eq!(
        (h.clip, h.clip_scale, h.clip_exponent),
        (ADOPT_CLIP_POWER, 1.0, 0.25)
    );
    assert_eq!(h.decay_scaling, ADOPT_DECAY_LR);
    assert_eq!(
        (
            h.decouple,
            h.maximize,
            h.nesterov,
            h.caution,
            h.first_step_decay
        ),
        (0, 0, 0, ADOPT_CAUTION_OFF, 0)
    );
    assert_eq!((h.clip_offset, h.max_lr), (0, 0.0));
    assert_eq!(h.size as usize, std::mem::size_of::<AdoptHyper>());
    assert_eq!(AdoptHyper::try_from(&r), Ok(h));
    fn custom(_: u64) -> f64 {
        1.0
    }
    let custom = Hyper {
        clip: Clip::Custom(custom),
        ..r
    };
    assert_eq!(AdoptHyper::try_from(&custom), Err(CustomClipError));
}

#[test]
fn version_is_the_crate_version() {
    // SAFETY: a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(adopt_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn f32_steps_equal_the_rust_step_bit_for_bit() {
    // Miri (CI) checks the pointer handling on the short lengths.
    let lengths: &[usize] = if cfg!(miri) {
        &[0, 1, 7]
    } else {
        &[0, 1, 7, 64, 1000]
    };
    for (&n, (c, r)) in lengths.iter().zip(hypers().into_iter().cycle()) {
        let grads: Vec<Vec<f32>> = (0..6).map(|s| lanes(n, s)).collect();
        let (mut p, mut m, mut v, mut step) = (lanes(n, 99), vec![0.0; n], vec![0.0; n], 0);
        let mut want = p.clone();
        let mut state = State::new(n);
        for g in &grads {
            assert_eq!(
                step_f32(&mut p, g, &mut m, &mut v, &mut step, &c),
                AdoptStatus::Ok
            );
            assert_eq!(message(), "");
            adopt_step(&mut want, g, &mut state, &r).unwrap();
        }
        assert_same_bits(&p, &want, "params");
        assert_same_bits(&m, state.exp_avg(), "exp_avg");
        assert_same_bits(&v, state.exp_avg_sq(), "exp_avg_sq");
        assert_eq!(step, 6);
    }
    // Every set of hyperparameters, on one length.
    for (c, r) in hypers() {
        let n = if cfg!(miri) { 9 } else { 33 };
        let (mut p, mut m, mut v, mut step) = (lanes(n, 5), vec![0.0; n], vec![0.0; n], 0);
        let mut want = p.clone();
        let mut state = State::new(n);
        for s in 0..5 {
            let g = lanes(n, s + 10);
            assert_eq!(
                step_f32(&mut p, &g, &mut m, &mut v, &mut step, &c),
                AdoptStatus::Ok
            );
            adopt_step(&mut want, &g, &mut state, &r).unwrap();
        }
        assert_same_bits(&p, &want, "params");
        assert_same_bits(&m, state.exp_avg(), "exp_avg");
    }
}

#[test]
fn empty_buffers_may_be_null() {
    let mut step = 0_u64;
    let h = adopt_hyper_default();
    // SAFETY: null buffers with length 0; step and hyper are valid.
    let status = unsafe {
        adopt_step_f32(
            null_mut(),
            0,
            null(),
            0,
            null_mut(),
            0,
            null_mut(),
            0,
            &mut step,
            &h,
        )
    };
    assert_eq!(status, AdoptStatus::Ok);
    assert_eq!(step, 1);
}

/// A step whose buffers are described by raw parts, for the error table.
struct Raw {
    p: (*mut f32, usize),
    g: (*const f32, usize),
    m: (*mut f32, usize),
    v: (*mut f32, usize),
    step: *mut u64,
    hyper: *const AdoptHyper,
}

#[test]
fn every_bad_input_gets_its_status_and_message_and_changes_nothing() {
    let n = 4;
    let mut p = lanes(n, 1);
    let g = lanes(n + 1, 2); // one longer than needed, for length errors
    let mut m = lanes(n, 3);
    let mut v: Vec<f32> = lanes(n, 4).iter().map(|x| x * x).collect();
    let mut step = 3_u64;
    let mut max_step = u64::MAX;
    let good = adopt_hyper_default();
    let with = |f: fn(&mut AdoptHyper)| {
        let mut h = good;
        f(&mut h);
        h
    };
    let bad_lr = with(|h| h.lr = f64::NAN);
    let negative_lr = with(|h| h.lr = -1.0);
    let bad_beta = with(|h| h.beta2 = 1.0);
    let bad_clip_kind = with(|h| h.clip = 7);
    let bad_flag = with(|h| h.decouple = 2);
    let bad_decay = with(|h| h.decay_scaling = 3);
    let nan_clip = with(|h| {
        h.clip_scale = 0.0;
        h.clip_exponent = 1e308; // 0 · 3^1e308 = 0 · inf = NaN at step 3
    });
    let huge_lr = with(|h| h.lr = 1e39);
    let max_lr_f64 = with(|h| h.lr = f64::MAX);
    let huge_eps = with(|h| h.eps = 1e39);
    let huge_l2 = with(|h| h.weight_decay = 1e39);
    let huge_rate = with(|h| {
        h.lr = 1e20;
        h.weight_decay = 1e20;
        h.decouple = 1;
    });
    let tiny_max_lr = with(|h| {
        h.weight_decay = 0.1;
        h.decouple = 1;
        h.decay_scaling = ADOPT_DECAY_CORRECTED;
        h.max_lr = 1e-300;
    });
    let unset_max_lr = with(|h| {
        h.weight_decay = 0.1;
        h.decouple = 1;
        h.decay_scaling = ADOPT_DECAY_CORRECTED;
    });
    let huge_clip = with(|h| {
        h.clip = ADOPT_CLIP_CONSTANT;
        h.clip_scale = 1e39;
    });
    let bad_caution = with(|h| h.caution = 3);
    let l2_first_step = with(|h| h.first_step_decay = 1);
    let l2_scaled = with(|h| h.decay_scaling = ADOPT_DECAY_FIXED);
    let small_size = with(|h| h.size -= 8);
    let large_size = with(|h| h.size += 8);
    let (pp, gp, mp, vp) = (p.as_mut_ptr(), g.as_ptr(), m.as_mut_ptr(), v.as_mut_ptr());
    let sp: *mut u64 = &mut step;
    let ok = Raw {
        p: (pp, n),
        g: (gp, n),
        m: (mp, n),
        v: (vp, n),
        step: sp,
        hyper: &good,
    };
    // A u64 pointer into exp_avg_sq, aligned for a u64.
    let inside_v = vp
        .wrapping_add(vp.align_offset(align_of::<u64>()))
        .cast::<u64>();
    // A float pointer one byte into a buffer: misaligned.
    let mut bytes = vec![0_u32; 8];
    let misaligned = bytes
        .as_mut_ptr()
        .cast::<u8>()
        .wrapping_add(1)
        .cast::<f32>();
    #[rustfmt::skip]
    let cases: Vec<(&str, Raw, AdoptStatus, &str)> = vec![
        ("null params", Raw { p: (null_mut(), n), ..ok }, AdoptStatus::NullPointer, "params is a null pointer (with length 4)"),
        ("null grads", Raw { g: (null(), n), ..ok }, AdoptStatus::NullPointer, "grads is a null pointer (with length 4)"),
        ("null exp_avg", Raw { m: (null_mut(), n), ..ok }, AdoptStatus::NullPointer, "exp_avg is a null pointer"),
        ("null exp_avg_sq", Raw { v: (null_mut(), n), ..ok }, AdoptStatus::NullPointer, "exp_avg_sq is a null pointer"),
        ("null step", Raw { step: null_mut(), ..ok }, AdoptStatus::NullPointer, "step is a null pointer"),
        ("null hyper", Raw { hyper: null(), ..ok }, AdoptStatus::NullPointer, "hyper is a null pointer"),
        ("short grads", Raw { g: (gp, n - 1), ..ok }, AdoptStatus::LengthMismatch, "grads has 3 lanes, expected 4 (the length of params)"),
        ("long grads", Raw { g: (gp, n + 1), ..ok }, AdoptStatus::LengthMismatch, "grads has 5 lanes, expected 4"),
        ("short exp_avg", Raw { m: (mp, 2), ..ok }, AdoptStatus::LengthMismatch, "exp_avg has 2 lanes, expected 4"),
        ("empty exp_avg_sq", Raw { v: (null_mut(), 0), ..ok }, AdoptStatus::LengthMismatch, "exp_avg_sq has 0 lanes, expected 4"),
        ("NaN lr", Raw { hyper: &bad_lr, ..ok }, AdoptStatus::InvalidHyper, "invalid hyperparameter lr = NaN"),
        ("negative lr", Raw { hyper: &negative_lr, ..ok }, AdoptStatus::InvalidHyper, "invalid hyperparameter lr = -1: must be a finite number >= 0"),
        ("beta2 = 1", Raw { hyper: &bad_beta, ..ok }, AdoptStatus::InvalidHyper, "betas.1 = 1"),
        ("clip kind", Raw { hyper: &bad_clip_kind, ..ok }, AdoptStatus::InvalidArgument, "hyper.clip is 7"),
        ("flag 2", Raw { hyper: &bad_flag, ..ok }, AdoptStatus::InvalidArgument, "hyper.decouple is 2: must be 0 or 1"),
        ("decay kind", Raw { hyper: &bad_decay, ..ok }, AdoptStatus::InvalidArgument, "hyper.decay_scaling is 3"),
        ("NaN clip", Raw { hyper: &nan_clip, ..ok }, AdoptStatus::InvalidClip, "clip threshold at step 3 is NaN"),
        ("lr overflows f32", Raw { hyper: &huge_lr, ..ok }, AdoptStatus::HyperOverflow, "hyperparameter lr = 1e39 overflows f32"),
        ("lr f64::MAX", Raw { hyper: &max_lr_f64, ..ok }, AdoptStatus::HyperOverflow, "lr = 1.7976931348623157e308 overflows f32"),
        ("eps overflows f32", Raw { hyper: &huge_eps, ..ok }, AdoptStatus::HyperOverflow, "eps = 1e39 overflows f32"),
        ("L2 overflows f32", Raw { hyper: &huge_l2, ..ok }, AdoptStatus::HyperOverflow, "weight_decay = 1e39 overflows f32"),
        ("lr·wd overflows f32", Raw { hyper: &huge_rate, ..ok }, AdoptStatus::HyperOverflow, "decoupled decay rate (lr·weight_decay, as scaled) = 1e40 overflows f32"),
        ("corrected rate overflows f32", Raw { hyper: &tiny_max_lr, ..ok }, AdoptStatus::HyperOverflow, "overflows f32"),
        ("max_lr unset in a single step", Raw { hyper: &unset_max_lr, ..ok }, AdoptStatus::MaxLrUnset, "without max_lr"),
        ("constant clip overflows f32", Raw { hyper: &huge_clip, ..ok }, AdoptStatus::HyperOverflow, "clip scale = 1e39 overflows f32"),
        ("caution kind", Raw { hyper: &bad_caution, ..ok }, AdoptStatus::InvalidArgument, "hyper.caution is 3"),
        ("first-step decay with L2", Raw { hyper: &l2_first_step, ..ok }, AdoptStatus::InvalidArgument, "apply to decoupled decay only"),
        ("decay scaling with L2", Raw { hyper: &l2_scaled, ..ok }, AdoptStatus::InvalidArgument, "apply to decoupled decay only"),
        ("struct too small", Raw { hyper: &small_size, ..ok }, AdoptStatus::InvalidArgument, "hyper.size is"),
        ("struct too large", Raw { hyper: &large_size, ..ok }, AdoptStatus::InvalidArgument, "initialise it with adopt_hyper_default()"),
        ("step overflow", Raw { step: &mut max_step, ..ok }, AdoptStatus::StepOverflow, "step count is u64::MAX"),
        ("misaligned", Raw { m: (misaligned, n), ..ok }, AdoptStatus::InvalidArgument, "is not aligned to 4 bytes"),
        ("too long", Raw { v: (vp, usize::MAX / 2), ..ok }, AdoptStatus::InvalidArgument, "more than memory can hold"),
        ("params = exp_avg", Raw { m: (pp, n), ..ok }, AdoptStatus::InvalidArgument, "params and exp_avg overlap"),
        ("grads inside params", Raw { p: (gp.cast_mut(), n), g: (gp.wrapping_add(1), n), ..ok }, AdoptStatus::InvalidArgument, "params and grads overlap"),
        ("step inside exp_avg_sq", Raw { step: inside_v, ..ok }, AdoptStatus::InvalidArgument, "exp_avg_sq and step overlap"),
    ];
    let before = (p.clone(), g.clone(), m.clone(), v.clone());
    for (what, raw, status, text) in cases {
        // SAFETY: every non-null pointer is valid for its length (the long
        // one is refused before it is used); overlaps are refused before
        // any slice is made.
        let got = unsafe {
            adopt_step_f32(
                raw.p.0, raw.p.1, raw.g.0, raw.g.1, raw.m.0, raw.m.1, raw.v.0, raw.v.1, raw.step,
                raw.hyper,
            )
        };
        let msg = message();
        assert_eq!(got, status, "{what}: {msg}");
        assert!(msg.contains(text), "{what}: message {msg:?} lacks {text:?}");
        assert_same_bits(&p, &before.0, what);
        assert_same_bits(&g, &before.1, what);
        assert_same_bits(&m, &before.2, what);
        assert_same_bits(&v, &before.3, what);
        assert_eq!((step, max_step), (3, u64::MAX), "{what}: step count");
        assert_eq!(bytes, vec![0; 8], "{what}");
    }
    // And the unchanged buffers still step.
    let h = adopt_hyper_default();
    assert_eq!(
        step_f32(&mut p, &g[..n], &mut m, &mut v, &mut step, &h),
        AdoptStatus::Ok
    );
    assert_eq!((step, message().as_str()), (4, ""));
}

#[test]
fn bf16_steps_equal_the_rust_half_step() {
    let n = if cfg!(miri) { 520 } else { 1300 }; // more than one block
    let c = hypers()[1].0;
    let r = hypers()[1].1;
    for (rounding, c_rounding) in [
        (Rounding::NearestEven, ADOPT_ROUNDING_NEAREST_EVEN),
        (Rounding::Stochastic { seed: 42 }, ADOPT_ROUNDING_STOCHASTIC),
    ] {
        let p0: Vec<bf16> = lanes(n, 7).into_iter().map(bf16::from_f32).collect();
        let mut p: Vec<u16> = p0.iter().map(|x| x.to_bits()).collect();
        let (mut m, mut v, mut step) = (vec![0.0_f32; n], vec![0.0_f32; n], 0_u64);
        let mut want = p0.clone();
        let (mut wm, mut wv, mut wstep) = (vec![0.0_f32; n], vec![0.0_f32; n], 0_u64);
        for s in 0..4 {
            let g: Vec<bf16> = lanes(n, s).into_iter().map(bf16::from_f32).collect();
            let gb: Vec<u16> = g.iter().map(|x| x.to_bits()).collect();
            // SAFETY: every pointer valid for its length; distinct buffers.
            let status = unsafe {
                adopt_step_bf16(
                    p.as_mut_ptr(),
                    n,
                    gb.as_ptr(),
                    n,
                    m.as_mut_ptr(),
                    n,
                    v.as_mut_ptr(),
                    n,
                    &mut step,
                    &c,
                    c_rounding,
                    42,
                )
            };
            assert_eq!(status, AdoptStatus::Ok, "{}", message());
            adopt_step_half(&mut want, &g, &mut wm, &mut wv, &mut wstep, &r, rounding).unwrap();
        }
        let want_bits: Vec<u16> = want.iter().map(|x| x.to_bits()).collect();
        assert_eq!(p, want_bits, "{rounding:?}");
        assert_same_bits(&m, &wm, "exp_avg");
        assert_same_bits(&v, &wv, "exp_avg_sq");
        assert_eq!(step, 4);
    }
    // A bad rounding mode changes nothing.
    let (mut p, g) = ([0x3f80_u16; 2], [0x3f00_u16; 2]);
    let (mut m, mut v, mut step) = ([0.0_f32; 2], [0.0_f32; 2], 0_u64);
    // SAFETY: every pointer valid for its length; distinct buffers.
    let status = unsafe {
        adopt_step_bf16(
            p.as_mut_ptr(),
            2,
            g.as_ptr(),
            2,
            m.as_mut_ptr(),
            2,
            v.as_mut_ptr(),
            2,
            &mut step,
            &c,
            9,
            0,
        )
    };
    assert_eq!(status, AdoptStatus::InvalidArgument);
    assert!(message().contains("rounding is 9"));
    assert_eq!((p, v, step), ([0x3f80; 2], [0.0; 2], 0));
}

/// An optimizer built through the C ABI, freed on drop.
struct Opt(*mut AdoptOptimizer);

impl Opt {
    fn new() -> Opt {
        let mut out = null_mut();
        // SAFETY: out is a valid place for the pointer.
        assert_eq!(unsafe { adopt_optimizer_new(&mut out) }, AdoptStatus::Ok);
        assert!(!out.is_null());
        Opt(out)
    }
    fn add_group(&self, h: &AdoptHyper) -> Result<u32, AdoptStatus> {
        let mut id = u32::MAX;
        // SAFETY: a live optimizer; valid hyper and out-pointer.
        match unsafe { adopt_optimizer_add_group(self.0, h, &mut id) } {
            AdoptStatus::Ok => Ok(id),
            e => Err(e),
        }
    }
    fn add_param(&self, group: u32, lanes: usize, name: Option<&CStr>) -> Result<u32, AdoptStatus> {
        let mut id = u32::MAX;
        let name = name.map_or(null(), CStr::as_ptr);
        // SAFETY: a live optimizer; name null or NUL-terminated.
        match unsafe { adopt_optimizer_add_param(self.0, group, lanes, name, &mut id) } {
            AdoptStatus::Ok => Ok(id),
            e => Err(e),
        }
    }
    fn step(&self, items: &[AdoptItem]) -> AdoptStatus {
        // SAFETY: a live optimizer; the items' buffers are valid (built
        // from live slices by `item`).
        unsafe { adopt_optimizer_step(self.0, items.as_ptr(), items.len()) }
    }
    fn save(&self) -> Vec<u8> {
        let mut len = 0;
        // SAFETY: size query: null buffer with capacity 0.
        assert_eq!(
            unsafe { adopt_optimizer_save(self.0, null_mut(), 0, &mut len) },
            AdoptStatus::Ok
        );
        let mut buf = vec![0_u8; len];
        let mut len2 = 0;
        // SAFETY: buf is valid for len bytes.
        assert_eq!(
            unsafe { adopt_optimizer_save(self.0, buf.as_mut_ptr(), len, &mut len2) },
            AdoptStatus::Ok
        );
        assert_eq!(len2, len);
        buf
    }
    fn load(&self, bytes: &[u8]) -> AdoptStatus {
        // SAFETY: a live optimizer; bytes valid for its length.
        unsafe { adopt_optimizer_load(self.0, bytes.as_ptr(), bytes.len()) }
    }
    fn load_by_name(&self, bytes: &[u8]) -> AdoptStatus {
        // SAFETY: a live optimizer; bytes valid for its length.
        unsafe { adopt_optimizer_load_by_name(self.0, bytes.as_ptr(), bytes.len()) }
    }
    fn param_step(&self, param: u32) -> Result<u64, AdoptStatus> {
        let mut step = u64::MAX;
        // SAFETY: a live optimizer; a valid out-pointer.
        match unsafe { adopt_optimizer_param_step(self.0, param, &mut step) } {
            AdoptStatus::Ok => Ok(step),
            e => Err(e),
        }
    }
    fn counts(&self) -> (usize, usize) {
        let (mut g, mut p) = (usize::MAX, usize::MAX);
        // SAFETY: a live optimizer; valid out-pointers.
        assert_eq!(
            unsafe { adopt_optimizer_counts(self.0, &mut g, &mut p) },
            AdoptStatus::Ok
        );
        (g, p)
    }
    fn get_hyper(&self, group: u32) -> Result<AdoptHyper, AdoptStatus> {
        let mut h = adopt_hyper_default();
        h.lr = -123.0;
        // SAFETY: a live optimizer; a valid out-pointer.
        match unsafe { adopt_optimizer_get_hyper(self.0, group, &mut h) } {
            AdoptStatus::Ok => Ok(h),
            e => Err(e),
        }
    }
    fn set_hyper(&self, group: u32, h: &AdoptHyper) -> AdoptStatus {
        // SAFETY: a live optimizer; a valid hyper.
        unsafe { adopt_optimizer_set_hyper(self.0, group, h) }
    }
}

impl Drop for Opt {
    fn drop(&mut self) {
        // SAFETY: from adopt_optimizer_new, freed once.
        unsafe { adopt_optimizer_free(self.0) }
    }
}

fn item(param: u32, p: &mut [f32], g: Option<&[f32]>) -> AdoptItem {
    AdoptItem {
        param,
        params: p.as_mut_ptr(),
        params_len: p.len(),
        grads: g.map_or(null(), <[f32]>::as_ptr),
        grads_len: g.map_or(0, <[f32]>::len),
    }
}

#[test]
fn the_optimizer_object_matches_the_rust_optimizer_and_round_trips_checkpoints() {
    let [(c0, r0), (c1, r1), ..] = hypers()[..] else {
        unreachable!()
    };
    let opt = Opt::new();
    let mut rust = Adopt::new();
    assert_eq!(opt.add_group(&c0), Ok(0));
    assert_eq!(opt.add_group(&c1), Ok(1));
    let (g0, g1) = (rust.add_group(r0).unwrap(), rust.add_group(r1).unwrap());
    assert_eq!(opt.add_param(1, 40, Some(c"layer.weight")), Ok(0));
    assert_eq!(opt.add_param(0, 5, None), Ok(1));
    assert_eq!(opt.add_param(0, 3, Some(c"unused")), Ok(2));
    let (w, b, u) = (
        rust.add_param(g1, 40, Some("layer.weight")).unwrap(),
        rust.add_param(g0, 5, None).unwrap(),
        rust.add_param(g0, 3, Some("unused")).unwrap(),
    );
    assert_eq!(opt.counts(), (2, 3));
    let (mut cw, mut cb, mut cu) = (lanes(40, 1), lanes(5, 2), lanes(3, 3));
    let (mut rw, mut rb, mut ru) = (cw.clone(), cb.clone(), cu.clone());
    for s in 0..4 {
        let (gw, gb) = (lanes(40, 10 + s), lanes(5, 20 + s));
        // The bias gets a gradient every other step; `unused` never.
        let gb_opt = (s % 2 == 0).then_some(&gb[..]);
        let status = opt.step(&[
            item(0, &mut cw, Some(&gw)),
            item(1, &mut cb, gb_opt),
            item(2, &mut cu, None),
        ]);
        assert_eq!(status, AdoptStatus::Ok, "{}", message());
        rust.step(&mut [
            Item {
                id: w,
                params: &mut rw,
                grads: Some(&gw),
            },
            Item {
                id: b,
                params: &mut rb,
                grads: gb_opt,
            },
            Item {
                id: u,
                params: &mut ru,
                grads: None,
            },
        ])
        .unwrap();
    }
    assert_same_bits(&cw, &rw, "weight");
    assert_same_bits(&cb, &rb, "bias");
    assert_same_bits(&cu, &ru, "unused");
    assert_eq!(
        (opt.param_step(0), opt.param_step(1), opt.param_step(2)),
        (Ok(4), Ok(2), Ok(0))
    );
    assert_eq!(opt.get_hyper(1), Ok(c1));

    // The checkpoint is the Rust optimizer's, byte for byte.
    let bytes = opt.save();
    assert_eq!(bytes, rust.save().unwrap());

    // Too small a buffer: the size is reported, nothing is written.
    let mut small = vec![0xAA_u8; bytes.len() - 1];
    let mut len = 0;
    // SAFETY: small is valid for its length.
    let status = unsafe { adopt_optimizer_save(opt.0, small.as_mut_ptr(), small.len(), &mut len) };
    assert_eq!(status, AdoptStatus::BufferTooSmall);
    assert_eq!(len, bytes.len());
    assert!(message().contains(&format!("needs {} bytes", bytes.len())));
    assert!(small.iter().all(|&x| x == 0xAA));

    // Load into a fresh optimizer: same groups, params, state, checkpoint.
    let restored = Opt::new();
    assert_eq!(restored.load(&bytes), AdoptStatus::Ok, "{}", message());
    assert_eq!(restored.counts(), (2, 3));
    assert_eq!(restored.param_step(0), Ok(4));
    assert_eq!(restored.get_hyper(1), Ok(c1));
    assert_eq!(restored.save(), bytes);

    // Both step on identically from there.
    let gw = lanes(40, 99);
    let (mut a, mut b2) = (cw.clone(), cw.clone());
    assert_eq!(opt.step(&[item(0, &mut a, Some(&gw))]), AdoptStatus::Ok);
    assert_eq!(
        restored.step(&[item(0, &mut b2, Some(&gw))]),
        AdoptStatus::Ok
    );
    assert_same_bits(&a, &b2, "after restore");
    assert_eq!(opt.save(), restored.save());

    // A corrupt checkpoint: refused, nothing changes.
    let before = restored.save();
    let mut corrupt = bytes.clone();
    corrupt[30] ^= 1;
    assert_eq!(restored.load(&corrupt), AdoptStatus::Checkpoint);
    assert!(message().contains("checksum mismatch"), "{}", message());
    assert_eq!(restored.load(b"not a checkpoint"), AdoptStatus::Checkpoint);
    assert!(message().contains("bad magic"), "{}", message());
    assert_eq!(restored.save(), before);
    // A checkpoint of other shapes, into an optimizer with parameters.
    let other = Opt::new();
    other.add_group(&c0).unwrap();
    other.add_param(0, 2, None).unwrap();
    assert_eq!(restored.load(&other.save()), AdoptStatus::Checkpoint);
    assert!(
        message().contains("checkpoint holds 1 parameter groups, the optimizer has 2"),
        "{}",
        message()
    );
    assert_eq!(restored.save(), before);
}

/// A checkpoint whose parameters are named in another order is refused by
/// `adopt_optimizer_load` and loaded by `adopt_optimizer_load_by_name`, each
/// parameter receiving its own state.
#[test]
fn loads_check_names_and_load_by_name_maps_them() {
    let h = adopt_hyper_default();
    let build = |names: [&CStr; 2]| {
        let opt = Opt::new();
        let g = opt.add_group(&h).unwrap();
        let ids = names.map(|n| opt.add_param(g, 4, Some(n)).unwrap());
        let (mut a, mut b) = (lanes(4, 1), lanes(4, 2));
        let (ga, gb) = (lanes(4, 3), lanes(4, 4));
        for _ in 0..2 {
            let items = [
                item(ids[0], &mut a, Some(&ga)),
                item(ids[1], &mut b, Some(&gb)),
            ];
            assert_eq!(opt.step(&items), AdoptStatus::Ok);
        }
        opt
    };
    let saved = build([c"decoder.weight", c"encoder.weight"]).save();
    let into = build([c"encoder.weight", c"decoder.weight"]);
    let before = into.save();
    assert_eq!(into.load(&saved), AdoptStatus::Checkpoint);
    assert!(
        message().contains("checkpoint parameter 0 is named \"decoder.weight\""),
        "{}",
        message()
    );
    assert_eq!(into.save(), before, "a refused load changes nothing");
    assert_eq!(into.load_by_name(&saved), AdoptStatus::Ok);
    // Loaded by name, then saved by position: the states are swapped back
    // into the saving optimizer's order.
    let (theirs, ours) = (
        Adopt::from_checkpoint(&saved).unwrap(),
        Adopt::from_checkpoint(&into.save()).unwrap(),
    );
    assert_eq!(
        ours.state(adopt::ParamId(0)).unwrap(),
        theirs.state(adopt::ParamId(1)).unwrap()
    );
    assert_eq!(
        ours.state(adopt::ParamId(1)).unwrap(),
        theirs.state(adopt::ParamId(0)).unwrap()
    );
}

/// The scaled step matches `Adopt::step_scaled`; `found_inf` = 1 changes
/// nothing; bad flags and scales are refused with nothing changed; the
/// non-finite scan finds NaN and ±inf.
#[test]
fn scaled_steps_and_the_nonfinite_scan() {
    let h = adopt_hyper_default();
    let opt = Opt::new();
    let g = opt.add_group(&h).unwrap();
    let p = opt.add_param(g, 19, None).unwrap();
    let mut rust = Adopt::new();
    let rg = rust.add_group(Hyper::default()).unwrap();
    let rp = rust.add_param(rg, 19, None).unwrap();
    let (mut c, mut r) = (lanes(19, 5), lanes(19, 5));
    for s in 0..3 {
        let grads = lanes(19, 40 + s);
        // SAFETY: a live optimizer; the item's buffers are live slices.
        let status = unsafe {
            adopt_optimizer_step_scaled(opt.0, &item(p, &mut c, Some(&grads)), 1, 0.25, 0)
        };
        assert_eq!(status, AdoptStatus::Ok, "{}", message());
        let scaling = adopt::Scaling {
            inv_scale: 0.25,
            found_inf: false,
        };
        rust.step_scaled(
            &mut [Item {
                id: rp,
                params: &mut r,
                grads: Some(&grads),
            }],
            scaling,
        )
        .unwrap();
    }
    assert_same_bits(&c, &r, "scaled");
    assert_eq!(opt.save(), rust.save().unwrap());

    let before = (c.clone(), opt.save());
    let grads = lanes(19, 77);
    let mut scaled = |inv_scale: f32, found_inf: u32| {
        // SAFETY: as above.
        unsafe {
            adopt_optimizer_step_scaled(
                opt.0,
                &item(p, &mut c, Some(&grads)),
                1,
                inv_scale,
                found_inf,
            )
        }
    };
    assert_eq!(scaled(0.25, 1), AdoptStatus::Ok, "found_inf skips");
    assert_eq!(scaled(0.25, 2), AdoptStatus::InvalidArgument);
    assert!(message().contains("found_inf is 2"), "{}", message());
    for bad in [f32::NAN, -1.0, f32::INFINITY] {
        assert_ne!(scaled(bad, 0), AdoptStatus::Ok, "inv_scale {bad}");
        assert!(message().contains("inv_scale"), "{}", message());
    }
    assert_same_bits(&c, &before.0, "after skipped and refused steps");
    assert_eq!(opt.save(), before.1);

    let scan = |grads: *const f32, len: usize| {
        let mut out = 7;
        // SAFETY: grads is valid for len floats (or null with 0).
        let status = unsafe { adopt_grads_nonfinite(grads, len, &mut out) };
        (status, out)
    };
    // Past PARALLEL_THRESHOLD, so the scan is split across the pool.
    let n = if cfg!(miri) { 100 } else { 300_000 };
    let mut big = lanes(n, 1);
    assert_eq!(scan(big.as_ptr(), big.len()), (AdoptStatus::Ok, 0));
    for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        big[n - 2] = special;
        assert_eq!(
            scan(big.as_ptr(), big.len()),
            (AdoptStatus::Ok, 1),
            "{special}"
        );
        big[n - 2] = 0.0;
    }
    assert_eq!(scan(null(), 0), (AdoptStatus::Ok, 0));
    assert_eq!(scan(null(), 3).0, AdoptStatus::NullPointer);
    // SAFETY: big is valid; a null `out` is refused before any write.
    let status = unsafe { adopt_grads_nonfinite(big.as_ptr(), 4, null_mut()) };
    assert_eq!(status, AdoptStatus::NullPointer);
}

#[test]
fn optimizer_errors_get_their_status_and_change_nothing() {
    let opt = Opt::new();
    let h = adopt_hyper_default();
    let g = opt.add_group(&h).unwrap();
    let p = opt.add_param(g, 4, Some(c"w")).unwrap();
    let q = opt.add_param(g, 2, None).unwrap();
    let (mut w, mut x) = (lanes(4, 1), lanes(2, 2));
    let (gw, gx) = (lanes(4, 3), lanes(2, 4));
    assert_eq!(opt.step(&[item(p, &mut w, Some(&gw))]), AdoptStatus::Ok);
    let before = opt.save();
    let (w0, x0) = (w.clone(), x.clone());

    let mut bad_lr = h;
    bad_lr.lr = f64::INFINITY;
    assert_eq!(opt.add_group(&bad_lr), Err(AdoptStatus::InvalidHyper));
    assert!(message().contains("lr = inf"));
    assert_eq!(opt.set_hyper(g, &bad_lr), AdoptStatus::InvalidHyper);
    assert_eq!(
        opt.get_hyper(g),
        Ok(h),
        "set_hyper refused, nothing changed"
    );
    // Finite in f64, overflowing f32: refused by set_hyper and add_group.
    let mut huge = h;
    huge.lr = 1e20;
    huge.weight_decay = 1e20;
    huge.decouple = 1;
    assert_eq!(opt.set_hyper(g, &huge), AdoptStatus::HyperOverflow);
    assert!(message().contains("= 1e40 overflows f32"), "{}", message());
    assert_eq!(opt.add_group(&huge), Err(AdoptStatus::HyperOverflow));
    assert_eq!(
        opt.get_hyper(g),
        Ok(h),
        "set_hyper refused, nothing changed"
    );
    // In a group, an unset max_lr is the group's initial lr: accepted.
    let mut corrected = h;
    corrected.weight_decay = 0.1;
    corrected.decouple = 1;
    corrected.decay_scaling = ADOPT_DECAY_CORRECTED;
    assert_eq!(opt.set_hyper(g, &corrected), AdoptStatus::Ok);
    assert_eq!(opt.get_hyper(g), Ok(corrected));
    assert_eq!(opt.set_hyper(g, &h), AdoptStatus::Ok);
    assert_eq!(opt.set_hyper(7, &h), AdoptStatus::UnknownGroup);
    assert_eq!(message(), "unknown group id 7");
    assert_eq!(opt.get_hyper(7), Err(AdoptStatus::UnknownGroup));
    assert_eq!(opt.add_param(9, 4, None), Err(AdoptStatus::UnknownGroup));
    assert_eq!(opt.param_step(5), Err(AdoptStatus::UnknownParam));
    let bad_name = [0xff_u8, 0];
    // SAFETY: a NUL-terminated (non-UTF-8) string; a valid out-pointer.
    let status =
        unsafe { adopt_optimizer_add_param(opt.0, g, 1, bad_name.as_ptr().cast(), &mut 0) };
    assert_eq!(status, AdoptStatus::InvalidArgument);
    assert_eq!(message(), "name is not valid UTF-8");
    assert_eq!(opt.counts(), (1, 2));

    // Each refused step changes nothing (checked after the table).
    let step_err = |items: &[AdoptItem], status: AdoptStatus, text: &str| {
        assert_eq!(opt.step(items), status, "{}", message());
        assert!(message().contains(text), "{} lacks {text:?}", message());
    };
    step_err(
        &[item(5, &mut w, Some(&gw))],
        AdoptStatus::UnknownParam,
        "unknown parameter id 5",
    );
    step_err(
        &[item(p, &mut w, Some(&gw)), item(p, &mut x, Some(&gx))],
        AdoptStatus::DuplicateParam,
        "parameter id 0 appears twice",
    );
    step_err(
        &[item(q, &mut x, Some(&gx)), item(p, &mut w, Some(&gx))],
        AdoptStatus::LengthMismatch,
        "grads has 2 lanes, expected 4",
    );
    step_err(
        &[item(p, &mut x, Some(&gx))],
        AdoptStatus::LengthMismatch,
        "params has 2 lanes, expected 4",
    );
    let mut null_grads = item(p, &mut w, None);
    null_grads.grads_len = 4;
    step_err(
        &[null_grads],
        AdoptStatus::NullPointer,
        "items[0].grads is a null pointer",
    );
    let mut null_params = item(p, &mut w, Some(&gw));
    null_params.params = null_mut();
    step_err(
        &[null_params],
        AdoptStatus::NullPointer,
        "items[0].params is a null pointer",
    );
    // One buffer as two items' parameters, or as parameters and gradients.
    let alias = item(q, &mut w[..2], Some(&gx));
    step_err(
        &[item(p, &mut w, Some(&gw)), alias],
        AdoptStatus::InvalidArgument,
        "overlap",
    );
    let wp = w.as_mut_ptr();
    let self_grad = AdoptItem {
        param: p,
        params: wp,
        params_len: 4,
        grads: wp,
        grads_len: 4,
    };
    step_err(
        &[self_grad],
        AdoptStatus::InvalidArgument,
        "items[0].params and items[0].grads overlap",
    );
    assert_same_bits(&w, &w0, "w after refused steps");
    assert_same_bits(&x, &x0, "x after refused steps");
    assert_eq!(opt.save(), before);
    // Shared gradients are fine (only read).
    assert_eq!(
        opt.step(&[item(q, &mut x, Some(&gw[..2])), item(p, &mut w, Some(&gw))]),
        AdoptStatus::Ok
    );
    assert_ne!(opt.save(), before);
    assert_eq!(opt.load(&before), AdoptStatus::Ok);
    w.copy_from_slice(&w0);
    x.copy_from_slice(&x0);
    // A clip schedule valid when set but NaN at step 2 is caught at step 2.
    let mut nan_clip = h;
    nan_clip.clip_scale = 0.0;
    nan_clip.clip_exponent = 1e308;
    assert_eq!(opt.set_hyper(g, &nan_clip), AdoptStatus::Ok);
    assert_eq!(opt.step(&[item(p, &mut w, Some(&gw))]), AdoptStatus::Ok); // step 1: 0·1 = 0
    let after_one = (opt.save(), w.clone());
    step_err(
        &[item(p, &mut w, Some(&gw))],
        AdoptStatus::InvalidClip,
        "clip threshold at step 2 is NaN",
    );
    assert_eq!((opt.save(), w.clone()), after_one);

    // Null optimizer pointers and out-pointers.
    // SAFETY: null pointers are checked and refused.
    unsafe {
        assert_eq!(adopt_optimizer_new(null_mut()), AdoptStatus::NullPointer);
        assert_eq!(
            adopt_optimizer_step(null_mut(), null(), 0),
            AdoptStatus::NullPointer
        );
        assert_eq!(message(), "opt is a null pointer");
        assert_eq!(
            adopt_optimizer_add_group(opt.0, &h, null_mut()),
            AdoptStatus::NullPointer
        );
        assert_eq!(
            adopt_optimizer_add_group(opt.0, null(), &mut 0),
            AdoptStatus::NullPointer
        );
        assert_eq!(
            adopt_optimizer_save(opt.0, null_mut(), 0, null_mut()),
            AdoptStatus::NullPointer
        );
        assert_eq!(
            adopt_optimizer_save(opt.0, null_mut(), 8, &mut 0),
            AdoptStatus::NullPointer
        );
        assert_eq!(
            adopt_optimizer_load(opt.0, null(), 8),
            AdoptStatus::NullPointer
        );
        assert_eq!(
            adopt_optimizer_counts(opt.0, null_mut(), &mut 0),
            AdoptStatus::NullPointer
        );
        assert_eq!(
            adopt_optimizer_step(opt.0, null(), 2),
            AdoptStatus::NullPointer
        );
        // No items: a valid, empty step.
        assert_eq!(adopt_optimizer_step(opt.0, null(), 0), AdoptStatus::Ok);
        adopt_optimizer_free(null_mut());
    }
    assert_eq!(opt.counts(), (1, 2));
}

#[test]
fn messages_are_per_thread() {
    let h = AdoptHyper {
        lr: -1.0,
        ..adopt_hyper_default()
    };
    let opt = Opt::new();
    assert_eq!(opt.add_group(&h), Err(AdoptStatus::InvalidHyper));
    let here = message();
    assert!(here.contains("lr = -1"));
    std::thread::spawn(|| {
        assert_eq!(message(), "");
        assert_eq!(Opt::new().add_group(&adopt_hyper_default()), Ok(0));
        assert_eq!(message(), "");
    })
    .join()
    .unwrap();
    assert_eq!(message(), here);
}

/// The expected result of the Python example (`examples/python/`): its
/// inputs, stepped by the Rust API, as committed in
/// `tests/data/capi_python_expected.bin`. `BLESS=1` rewrites the file.
#[test]
#[cfg_attr(miri, ignore = "1000 lanes, already covered by the shorter tests")]
fn python_example_expectation_is_what_rust_computes() {
    let n = 1000;
    // Exact in f32 and in NumPy's float32: small integers over powers of 2.
    let params: Vec<f32> = (0..n).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
    let grad = |s: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7 + s * 3) % 23) as f32 - 11.0) / 16.0)
            .collect()
    };
    let hyper = Hyper {
        lr: 1e-2,
        weight_decay: WeightDecay::decoupled(0.01),
        ..Hyper::default()
    };
    let mut p = params;
    let mut state = State::new(n);
    for s in 0..5 {
        adopt_step(&mut p, &grad(s), &mut state, &hyper).unwrap();
    }
    let mut bytes = Vec::new();
    for x in p.iter().chain(state.exp_avg()).chain(state.exp_avg_sq()) {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/capi_python_expected.bin"
    );
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(path, &bytes).unwrap();
    }
    let committed = std::fs::read(path).expect("run with BLESS=1 to create it");
    assert!(committed == bytes, "{path} is stale: run with BLESS=1");
    // The same through the C ABI's optimizer, for good measure.
    let opt = Opt::new();
    let g = opt
        .add_group(&AdoptHyper::try_from(&hyper).unwrap())
        .unwrap();
    let id = opt.add_param(g, n, None).unwrap();
    let mut q: Vec<f32> = (0..n).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
    for s in 0..5 {
        assert_eq!(
            opt.step(&[item(id, &mut q, Some(&grad(s)))]),
            AdoptStatus::Ok
        );
    }
    assert_same_bits(&q, &p, "optimizer object");
}

/// Registers `layout` through the C ABI.
fn add_layout(opt: &Opt, group: u32, layout: &AdoptLayout) -> Result<u32, AdoptStatus> {
    let mut id = u32::MAX;
    // SAFETY: a live optimizer; a valid layout and out-pointer; no name.
    match unsafe { adopt_optimizer_add_param_layout(opt.0, group, layout, null(), &mut id) } {
        AdoptStatus::Ok => Ok(id),
        e => Err(e),
    }
}

/// An entry of `dtype` lanes at `p` with a dense gradient (or none).
fn entry<P, G>(param: u32, pd: u32, p: &mut [P], gd: u32, g: Option<&[G]>) -> AdoptEntry {
    AdoptEntry {
        param,
        params_dtype: pd,
        params: p.as_mut_ptr().cast(),
        params_len: p.len(),
        grads_kind: if g.is_some() {
            ADOPT_GRADS_DENSE
        } else {
            ADOPT_GRADS_NONE
        },
        grads_dtype: gd,
        grads: g.map_or(null(), |g| g.as_ptr().cast()),
        grads_len: g.map_or(0, <[G]>::len),
        rows: null(),
        rows_len: 0,
    }
}

fn step_entries(opt: &Opt, entries: &[AdoptEntry]) -> AdoptStatus {
    // SAFETY: a live optimizer; every entry's buffers are valid borrows.
    unsafe { adopt_optimizer_step_entries(opt.0, entries.as_ptr(), entries.len(), 1.0, 0) }
}

/// Every layout reachable from C: entries of bf16 parameters with a master
/// copy, f16 moments, complex lanes and a row-sparse table (listed rows and
/// a dense gradient) step exactly as the Rust `Adopt::step` of the same
/// entries, and layouts round-trip through their C form.
#[test]
fn entries_of_every_layout_match_the_rust_optimizer() {
    use adopt::{Dtype, Entry, Grads, Layout, Rounding};
    let layouts = [
        Layout::dense(5)
            .params(Dtype::Bf16)
            .master(true)
            .rounding(Rounding::Stochastic { seed: 3 }),
        Layout::dense(4)
            .params(Dtype::F16)
            .exp_avg(Dtype::F16)
            .exp_avg_sq(Dtype::Bf16),
        Layout::complex(3),
        Layout::rows(6, 2),
    ];
    for l in layouts {
        let c = AdoptLayout::from(l);
        assert_eq!(c.size as usize, std::mem::size_of::<AdoptLayout>());
        let _ = c;
    }
    let c = Opt::new();
    let mut rust = Adopt::new();
    let h = Hyper {
        lr: 0.05,
        ..Hyper::default()
    };
    let g = c.add_group(&AdoptHyper::try_from(&h).unwrap()).unwrap();
    let rg = rust.add_group(h).unwrap();
    let mut c_layouts = [
        adopt_layout_dense(5),
        adopt_layout_dense(4),
        adopt_layout_complex(3),
        adopt_layout_rows(6, 2),
    ];
    c_layouts[0].params = ADOPT_DTYPE_BF16;
    c_layouts[0].grads = ADOPT_DTYPE_BF16;
    c_layouts[0].master = 1;
    c_layouts[0].rounding = ADOPT_ROUNDING_STOCHASTIC;
    c_layouts[0].seed = 3;
    c_layouts[1].params = ADOPT_DTYPE_F16;
    c_layouts[1].grads = ADOPT_DTYPE_F16;
    c_layouts[1].exp_avg = ADOPT_DTYPE_F16;
    c_layouts[1].exp_avg_sq = ADOPT_DTYPE_BF16;
    for (cl, l) in c_layouts.iter().zip(layouts) {
        assert_eq!(*cl, AdoptLayout::from(l), "the C form of {l:?}");
        let id = add_layout(&c, g, cl).unwrap();
        assert_eq!(rust.add_param(rg, l, None).unwrap().0, id);
    }
    let mut a = vec![bf16::from_f32(0.5); 5];
    let mut b = vec![half::f16::from_f32(-0.5); 4];
    let mut z = vec![0.25_f32; 6];
    let mut t = vec![1.0_f32; 12];
    let (mut a2, mut b2, mut z2, mut t2) = (a.clone(), b.clone(), z.clone(), t.clone());
    for step in 0..4 {
        let ga: Vec<bf16> = (0..5)
            .map(|i| bf16::from_f32(0.1 * (i + step) as f32 - 0.2))
            .collect();
        let gb: Vec<half::f16> = (0..4)
            .map(|i| half::f16::from_f32(0.3 - 0.1 * i as f32))
            .collect();
        let gz: Vec<f32> = (0..6).map(|i| (i * step) as f32 * 0.05).collect();
        let rows: Vec<u32> = vec![step as u32 % 6, 4, 4];
        let values: Vec<f32> = (0..6).map(|i| i as f32 * 0.1 - 0.2).collect();
        let dense_t = [0.2_f32; 12];
        let mut table =
            entry::<f32, f32>(3, ADOPT_DTYPE_F32, &mut t, ADOPT_DTYPE_F32, Some(&values));
        if step == 2 {
            table.grads = dense_t.as_ptr().cast();
            table.grads_len = 12;
        } else {
            table.grads_kind = ADOPT_GRADS_ROWS;
            table.rows = rows.as_ptr();
            table.rows_len = rows.len();
        }
        let entries = [
            entry(0, ADOPT_DTYPE_BF16, &mut a, ADOPT_DTYPE_BF16, Some(&ga)),
            entry(1, ADOPT_DTYPE_F16, &mut b, ADOPT_DTYPE_F16, Some(&gb)),
            entry(2, ADOPT_DTYPE_F32, &mut z, ADOPT_DTYPE_F32, Some(&gz)),
            table,
        ];
        assert_eq!(step_entries(&c, &entries), AdoptStatus::Ok, "{}", message());
        let table_grads = if step == 2 {
            Grads::Dense((&dense_t[..]).into())
        } else {
            Grads::Rows {
                rows: &rows,
                values: &values,
            }
        };
        rust.step(&mut [
            Entry {
                id: adopt::ParamId(0),
                params: (&mut a2[..]).into(),
                grads: Some((&ga[..]).into()),
            },
            Entry {
                id: adopt::ParamId(1),
                params: (&mut b2[..]).into(),
                grads: Some((&gb[..]).into()),
            },
            Entry {
                id: adopt::ParamId(2),
                params: (&mut z2[..]).into(),
                grads: Some((&gz[..]).into()),
            },
            Entry {
                id: adopt::ParamId(3),
                params: (&mut t2[..]).into(),
                grads: Some(table_grads),
            },
        ])
        .unwrap();
    }
    assert!(a.iter().zip(&a2).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert!(b.iter().zip(&b2).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_same_bits(&z, &z2, "complex");
    assert_same_bits(&t, &t2, "table");
    assert_eq!(c.save(), rust.save().unwrap());
    // A table has a step count per row: param_step refuses it.
    assert_eq!(c.param_step(3), Err(AdoptStatus::LayoutMismatch));
    assert_eq!(c.param_step(0), Ok(4));
}

/// Bad entries and layouts get their status and message, and change
/// nothing.
#[test]
fn bad_entries_and_layouts_are_refused_and_change_nothing() {
    let c = Opt::new();
    let g = c.add_group(&adopt_hyper_default()).unwrap();
    let mut bf = adopt_layout_dense(4);
    bf.params = ADOPT_DTYPE_BF16;
    bf.grads = ADOPT_DTYPE_BF16;
    let pbf = add_layout(&c, g, &bf).unwrap();
    let table = add_layout(&c, g, &adopt_layout_rows(3, 2)).unwrap();
    let dense = add_layout(&c, g, &adopt_layout_dense(2)).unwrap();
    let mut p = vec![bf16::ONE; 5]; // one spare lane, for a misaligned view
    let gbf = vec![bf16::from_f32(0.5); 4];
    let mut t = vec![1.0_f32; 6];
    let mut d = vec![1.0_f32; 2];
    let g32 = [0.5_f32; 4];
    let good = |p: &mut [bf16], t: &mut [f32], d: &mut [f32]| {
        [
            entry(
                pbf,
                ADOPT_DTYPE_BF16,
                &mut p[..4],
                ADOPT_DTYPE_BF16,
                Some(&gbf),
            ),
            entry(
                table,
                ADOPT_DTYPE_F32,
                t,
                ADOPT_DTYPE_F32,
                Some(&[0.25_f32; 6][..]),
            ),
            entry(dense, ADOPT_DTYPE_F32, d, ADOPT_DTYPE_F32, Some(&g32[..2])),
        ]
    };
    assert_eq!(
        step_entries(&c, &good(&mut p, &mut t, &mut d)),
        AdoptStatus::Ok
    );
    let before = (c.save(), p.clone(), t.clone(), d.clone());
    let rows = [0_u32, 3];
    // The last argument: four real f32 lanes, for an entry that names
    // another (real) buffer of the type it claims.
    type Break = fn(&mut [AdoptEntry; 3], &[u32], *mut f32);
    let cases: [(&str, Break, AdoptStatus, &str); 9] = [
        (
            "dtype code",
            |e, _, _| e[0].params_dtype = 9,
            AdoptStatus::InvalidArgument,
            "entries[0].params is 9",
        ),
        (
            "registered bf16, given f32",
            |e, _, f32_lanes| {
                e[0].params_dtype = ADOPT_DTYPE_F32;
                e[0].params = f32_lanes.cast();
            },
            AdoptStatus::DtypeMismatch,
            "are float32, but the parameter was registered with bfloat16",
        ),
        (
            "misaligned bf16",
            |e, _, _| e[0].params = e[0].params.cast::<u8>().wrapping_add(1).cast(),
            AdoptStatus::InvalidArgument,
            "entries[0].params",
        ),
        (
            "grads kind",
            |e, _, _| e[2].grads_kind = 7,
            AdoptStatus::InvalidArgument,
            "entries[2].grads_kind is 7",
        ),
        (
            "rows with a dense kind",
            |e, r, _| {
                e[1].rows = r.as_ptr();
                e[1].rows_len = 2;
            },
            AdoptStatus::InvalidArgument,
            "leave rows and rows_len NULL",
        ),
        (
            "a row out of range",
            |e, r, _| {
                e[1].grads_kind = ADOPT_GRADS_ROWS;
                e[1].rows = r.as_ptr();
                e[1].rows_len = 2;
                e[1].grads_len = 4;
            },
            AdoptStatus::RowOutOfRange,
            "row 3 is out of range",
        ),
        (
            "rows for a dense parameter",
            |e, r, _| {
                e[2].grads_kind = ADOPT_GRADS_ROWS;
                e[2].rows = r.as_ptr();
                e[2].rows_len = 1;
                e[2].grads_len = 1;
            },
            AdoptStatus::LayoutMismatch,
            "row-listed gradients are for row-sparse tables",
        ),
        (
            "params of two entries overlap",
            |e, _, _| {
                e[2].params = e[1].params;
            },
            AdoptStatus::InvalidArgument,
            "overlap",
        ),
        (
            "no gradient but a pointer",
            |e, _, _| e[2].grads_kind = ADOPT_GRADS_NONE,
            AdoptStatus::InvalidArgument,
            "ADOPT_GRADS_NONE",
        ),
    ];
    for (what, f, status, text) in cases {
        let mut entries = good(&mut p, &mut t, &mut d);
        let mut f32_lanes = [1.0_f32; 4];
        f(&mut entries, &rows, f32_lanes.as_mut_ptr());
        assert_eq!(step_entries(&c, &entries), status, "{what}: {}", message());
        assert!(
            message().contains(text),
            "{what}: message {:?} lacks {text:?}",
            message()
        );
        assert_eq!(
            (c.save(), p.clone(), t.clone(), d.clone()),
            before,
            "{what}: changed"
        );
    }
    // Layouts the optimizer cannot step, or malformed.
    let mut f16_v = adopt_layout_dense(3);
    f16_v.exp_avg_sq = ADOPT_DTYPE_F16;
    assert_eq!(add_layout(&c, g, &f16_v), Err(AdoptStatus::InvalidLayout));
    assert!(
        message().contains("the second moment cannot be f16"),
        "{}",
        message()
    );
    let mut old = adopt_layout_dense(3);
    old.size = 40;
    assert_eq!(add_layout(&c, g, &old), Err(AdoptStatus::InvalidArgument));
    assert!(message().contains("layout.size is 40"));
    let mut bad_shape = adopt_layout_dense(3);
    bad_shape.shape = 5;
    assert_eq!(
        add_layout(&c, g, &bad_shape),
        Err(AdoptStatus::InvalidArgument)
    );
    let mut stray_dim = adopt_layout_dense(3);
    stray_dim.dim = 2;
    assert_eq!(
        add_layout(&c, g, &stray_dim),
        Err(AdoptStatus::InvalidArgument)
    );
    assert_eq!(c.counts(), (1, 3), "nothing registered");
}

/// The single steps with one length equal those with four.
#[test]
fn version_2_single_steps_equal_version_1() {
    let h = adopt_hyper_default();
    let n = 37;
    let (mut p1, mut p2) = (lanes(n, 1), lanes(n, 1));
    let g = lanes(n, 2);
    let (mut m1, mut v1, mut m2, mut v2) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let (mut s1, mut s2) = (0, 0);
    for _ in 0..3 {
        assert_eq!(
            step_f32(&mut p1, &g, &mut m1, &mut v1, &mut s1, &h),
            AdoptStatus::Ok
        );
        // SAFETY: every buffer has n lanes; none overlap.
        let status = unsafe {
            adopt_step_f32_v2(
                p2.as_mut_ptr(),
                g.as_ptr(),
                m2.as_mut_ptr(),
                v2.as_mut_ptr(),
                n,
                &mut s2,
                &h,
            )
        };
        assert_eq!(status, AdoptStatus::Ok);
    }
    assert_same_bits(&p1, &p2, "params");
    assert_same_bits(&v1, &v2, "exp_avg_sq");
    let (mut b1, mut b2) = (vec![0x3f80_u16; n], vec![0x3f80_u16; n]);
    let gb = vec![0x3e80_u16; n];
    let (mut m1, mut v1, mut m2, mut v2) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let (mut s1, mut s2) = (0, 0);
    for _ in 0..3 {
        // SAFETY: every buffer has n lanes; none overlap.
        unsafe {
            assert_eq!(
                adopt_step_bf16(
                    b1.as_mut_ptr(),
                    n,
                    gb.as_ptr(),
                    n,
                    m1.as_mut_ptr(),
                    n,
                    v1.as_mut_ptr(),
                    n,
                    &mut s1,
                    &h,
                    ADOPT_ROUNDING_STOCHASTIC,
                    9
                ),
                AdoptStatus::Ok
            );
            assert_eq!(
                adopt_step_bf16_v2(
                    b2.as_mut_ptr(),
                    gb.as_ptr(),
                    m2.as_mut_ptr(),
                    v2.as_mut_ptr(),
                    n,
                    &mut s2,
                    &h,
                    ADOPT_ROUNDING_STOCHASTIC,
                    9
                ),
                AdoptStatus::Ok
            );
        }
    }
    assert_eq!(b1, b2);
    assert_same_bits(&m1, &m2, "bf16 step exp_avg");
}
