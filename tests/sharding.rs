//! The sharding contract for ZeRO-style engines: stepping disjoint
//! sub-ranges of a buffer separately (each with its own slice of m and v and
//! the same step count) is bit-identical to stepping the whole buffer, for
//! every kernel, hyperparameter variant and scaling.

mod common;

use adopt::{CautionMask, Kernel, Scaling, StateView, StepOptions, adopt_step_ext, caution_mask};
use common::{assert_same_bits, hyper, second_moment, value};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 500 }))]

    #[test]
    fn shards_step_like_the_whole(
        p0 in prop::collection::vec(value(), 0..100),
        grads in prop::collection::vec(value(), 100 * 3),
        v0 in prop::collection::vec(second_moment(), 100),
        cuts in prop::collection::vec(0_usize..100, 0..5),
        h in hyper(),
        inv_scale in prop::sample::select(vec![1.0_f32, 0.25]),
    ) {
        let n = p0.len();
        let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c.min(n)).collect();
        bounds.extend([0, n]);
        bounds.sort_unstable();
        let scaling = Scaling { inv_scale, found_inf: false };
        for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
            let (mut wp, mut wm, mut wv, mut ws) = (p0.clone(), vec![0.0; n], v0[..n].to_vec(), 0_u64);
            let (mut sp, mut sm, mut sv) = (p0.clone(), vec![0.0; n], v0[..n].to_vec());
            let mut shard_steps = vec![0_u64; bounds.len()];
            for t in 0..3 {
                let g = &grads[t * 100..t * 100 + n];
                let alone = StepOptions { kernel: Some(kernel), scaling, caution_mask: None };
                let whole = adopt_step_ext(&mut wp, g, &mut StateView::new(&mut wm, &mut wv, &mut ws), &h, &alone);
                // Cautious masking needs the tensor-wide count: each shard
                // counts its lanes, the engine sums them (an all-reduce).
                let options = StepOptions { kernel: Some(kernel), scaling, caution_mask: None };
                let mut total = CautionMask::default();
                for w in 0..bounds.len() - 1 {
                    let range = bounds[w]..bounds[w + 1];
                    let state = StateView::new(&mut sm[range.clone()], &mut sv[range.clone()], &mut shard_steps[w]);
                    if let Ok(mask) = caution_mask(&sp[range.clone()], &g[range.clone()], &state, &h, &options) {
                        total = total + mask;
                    }
                }
                let options = StepOptions { caution_mask: Some(total), ..options };
                for w in 0..bounds.len() - 1 {
                    let range = bounds[w]..bounds[w + 1];
                    let shard = adopt_step_ext(
                        &mut sp[range.clone()],
                        &g[range.clone()],
                        &mut StateView::new(&mut sm[range.clone()], &mut sv[range.clone()], &mut shard_steps[w]),
                        &h,
                        &options,
                    );
                    prop_assert_eq!(&shard, &whole, "shard {:?} result", range);
                }
            }
            assert_same_bits(&sp, &wp, &format!("{kernel:?} params"));
            assert_same_bits(&sm, &wm, &format!("{kernel:?} exp_avg"));
            assert_same_bits(&sv, &wv, &format!("{kernel:?} exp_avg_sq"));
        }
    }
}
