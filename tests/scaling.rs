//! Mixed-precision support: the fused unscale equals unscaling first, and
//! the non-finite scan agrees with a scalar model at every size.

mod common;

use adopt::{
    Hyper, Scaling, State, StepOptions, WeightDecay, adopt_step, adopt_step_ext, grads_nonfinite,
};
use common::{assert_same_bits, value};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 500 }))]

    #[test]
    fn fused_unscale_equals_unscaling_first(
        grads in prop::collection::vec(value(), 0..50),
        inv_scale in prop::sample::select(vec![0.5_f32, 1.0 / 65536.0, 3.0, 1e-30, 0.0]),
        steps in 1_usize..4,
    ) {
        let n = grads.len();
        let unscaled: Vec<f32> = grads.iter().map(|g| g * inv_scale).collect();
        let (mut p1, mut p2) = (vec![0.5_f32; n], vec![0.5_f32; n]);
        let (mut s1, mut s2) = (State::new(n), State::new(n));
        let hyper = Hyper { lr: 0.01, weight_decay: WeightDecay::l2(0.1), ..Hyper::default() };
        for _ in 0..steps {
            let options = StepOptions { scaling: Scaling { inv_scale, found_inf: false }, ..StepOptions::default() };
            adopt_step_ext(&mut p1, &grads, &mut s1, &hyper, &options).unwrap();
            adopt_step(&mut p2, &unscaled, &mut s2, &hyper).unwrap();
        }
        assert_same_bits(&p1, &p2, "params");
        assert_same_bits(s1.exp_avg(), s2.exp_avg(), "exp_avg");
        assert_same_bits(s1.exp_avg_sq(), s2.exp_avg_sq(), "exp_avg_sq");
    }

    #[test]
    fn scan_matches_scalar_model(values in prop::collection::vec(value(), 0..300)) {
        prop_assert_eq!(grads_nonfinite(&values), values.iter().any(|x| !x.is_finite()));
    }
}

#[test]
#[cfg_attr(miri, ignore = "large buffers")]
fn scan_finds_one_bad_lane_anywhere_in_large_buffers() {
    let n = adopt::PARALLEL_THRESHOLD * 2 + 5;
    let mut grads = vec![1.0_f32; n];
    assert!(!grads_nonfinite(&grads));
    for at in [0, 1, 4095, 4096, n / 2, n - 1] {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            grads[at] = bad;
            assert!(grads_nonfinite(&grads), "missed {bad} at {at}");
            grads[at] = f32::MAX; // large but finite
            assert!(!grads_nonfinite(&grads));
        }
    }
}
