//! The reference's correctly rounded `fma` and `sqrt` (pure-Rust libm, the
//! same in every build) agree with the platform's std versions, which are
//! correctly rounded on the targets CI runs, over edge values and many
//! random bit patterns, including subnormal products and results.

use adopt::reference;
use proptest::prelude::*;

fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn edge() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<u32>().prop_map(f32::from_bits),
        (0_u32..0x0200_0000).prop_map(f32::from_bits), // subnormals and tiny normals
        (-1.0e-19_f32..1.0e-19),                       // products land in the subnormal range
        prop::sample::select(vec![
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MAX,
            f32::MIN_POSITIVE,
            1.0,
            -1.0
        ]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 16 } else { 200_000 }))]

    #[test]
    fn fma_is_correctly_rounded(a in edge(), b in edge(), c in edge()) {
        let (got, want) = (reference::fma(a, b, c), a.mul_add(b, c));
        prop_assert!(same_bits(got, want), "fma({a:e}, {b:e}, {c:e}) = {got:e}, std says {want:e}");
    }

    #[test]
    fn sqrt_is_correctly_rounded(x in edge()) {
        let (got, want) = (libm::sqrtf(x), x.sqrt());
        prop_assert!(same_bits(got, want), "sqrt({x:e}) = {got:e}, std says {want:e}");
    }
}

#[test]
fn fma_halfway_cases_round_once() {
    // a·b + c lands exactly between two f32 after rounding to f64 first:
    // a naive f64 evaluation double-rounds these.
    let a = 1.0 + f32::EPSILON; // 1 + 2^-23
    let b = 1.0 + f32::EPSILON;
    let c = -1.0;
    assert!(same_bits(reference::fma(a, b, c), a.mul_add(b, c)));
    let (a, b, c) = (
        f32::from_bits(0x3f80_0001),
        f32::from_bits(0x3f7f_ffff),
        f32::from_bits(0x3380_0000),
    );
    assert!(same_bits(reference::fma(a, b, c), a.mul_add(b, c)));
}
