//! Complex parameters step as their interleaved real lanes, zero-copy.
#![cfg(feature = "complex")]

mod common;

use adopt::complex::{Complex32, adopt_step_complex, as_lanes, as_lanes_mut};
use adopt::{Buffer, Error, Hyper, State, adopt_step};
use common::{assert_same_bits, value};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 300 }))]

    #[test]
    fn complex_equals_interleaved_lanes(lanes in prop::collection::vec(value(), 0..40), steps in 1_usize..4) {
        let lanes = &lanes[..lanes.len() / 2 * 2];
        let grads: Vec<Complex32> = lanes.chunks_exact(2).map(|c| Complex32::new(c[1], c[0])).collect();
        let mut params: Vec<Complex32> = lanes.chunks_exact(2).map(|c| Complex32::new(c[0], c[1])).collect();
        let mut flat = lanes.to_vec();
        let (mut cs, mut fs) = (State::new(lanes.len()), State::new(lanes.len()));
        let hyper = Hyper { lr: 0.01, ..Hyper::default() };
        for _ in 0..steps {
            adopt_step_complex(&mut params, &grads, &mut cs, &hyper).unwrap();
            adopt_step(&mut flat, as_lanes(&grads), &mut fs, &hyper).unwrap();
        }
        assert_same_bits(as_lanes(&params), &flat, "params");
        assert_same_bits(cs.exp_avg(), fs.exp_avg(), "exp_avg");
        assert_same_bits(cs.exp_avg_sq(), fs.exp_avg_sq(), "exp_avg_sq");
        prop_assert_eq!(cs.step(), fs.step());
    }
}

#[test]
fn views_are_zero_copy_and_lengths_count_lanes() {
    let mut z = vec![Complex32::new(1.0, 2.0); 3];
    let ptr = z.as_ptr() as *const f32;
    assert_eq!(as_lanes_mut(&mut z).as_ptr(), ptr);
    let mut state = State::new(3); // should be 6
    let err = adopt_step_complex(
        &mut z,
        &[Complex32::new(0.0, 0.0); 3],
        &mut state,
        &Hyper::default(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::LengthMismatch {
            buffer: Buffer::ExpAvg,
            expected: 6,
            got: 3
        }
    );
    assert_eq!(z, vec![Complex32::new(1.0, 2.0); 3]);
}
