//! Every kernel the CPU supports against `adopt::reference`, bit for bit
//! (any NaN matching any NaN), or the same `Error` with nothing changed.
//!
//! The input bytes are decoded into hyperparameters (weighted toward the
//! clip/eps edges), a length, a sub-slice offset, raw f32 values, a starting
//! step and a number of steps.

#![no_main]

mod common;

use adopt::{Error, Kernel, Scaling, StateView, StepOptions, adopt_step_ext, reference};
use common::{Bytes, hyper, same};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let hyper = hyper(&mut b);
    let scaling = match b.u8() % 4 {
        0 | 1 => Scaling::default(),
        _ => Scaling {
            inv_scale: [
                1.0,
                0.5,
                1.0 / 65536.0,
                0.0,
                f32::from_bits(1),
                1e30,
                f32::INFINITY,
                f32::NAN,
                -1.0,
            ][b.u8() as usize % 9],
            found_inf: b.u8() % 5 == 0,
        },
    };
    let len = b.u8() as usize;
    let offset = (b.u8() % 17) as usize;
    let steps = 1 + b.u8() % 8;
    let start = match b.u8() % 4 {
        0 => 0,
        1 => 1,
        2 => u64::MAX - 1,
        _ => u64::from(b.u8()),
    };
    let total = offset + len + 3;
    let canary = f32::from_bits(0x7fc0_dead);
    let fill = |b: &mut Bytes<'_>| -> Vec<f32> {
        (0..total)
            .map(|i| {
                if (offset..offset + len).contains(&i) {
                    b.f32()
                } else {
                    canary
                }
            })
            .collect()
    };
    let (p0, m0, v0) = (fill(&mut b), fill(&mut b), fill(&mut b));
    let grads: Vec<Vec<f32>> = (0..steps).map(|_| fill(&mut b)).collect();
    let r = offset..offset + len;

    for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
        let (mut xp, mut xm, mut xv, mut xs) = (p0.clone(), m0.clone(), v0.clone(), start);
        let (mut rp, mut rm, mut rv, mut rs) = (p0.clone(), m0.clone(), v0.clone(), start);
        for g in &grads {
            let before = (xp.clone(), xm.clone(), xv.clone(), xs);
            let options = StepOptions {
                kernel: Some(kernel),
                scaling,
                caution_mask: None,
            };
            let got: Result<(), Error> = adopt_step_ext(
                &mut xp[r.clone()],
                &g[r.clone()],
                &mut StateView::new(&mut xm[r.clone()], &mut xv[r.clone()], &mut xs),
                &hyper,
                &options,
            );
            let want = reference::adopt_step_ext(
                &mut rp[r.clone()],
                &g[r.clone()],
                &mut StateView::new(&mut rm[r.clone()], &mut rv[r.clone()], &mut rs),
                &hyper,
                &StepOptions {
                    scaling,
                    ..StepOptions::default()
                },
            );
            assert_eq!(got, want, "{kernel:?}: results differ, hyper {hyper:?}");
            assert_eq!(xs, rs, "{kernel:?}: step counts differ");
            assert!(
                same(&xp, &rp) && same(&xm, &rm) && same(&xv, &rv),
                "{kernel:?}: bits differ, hyper {hyper:?}"
            );
            if got.is_err() || scaling.found_inf {
                assert!(
                    same(&xp, &before.0)
                        && same(&xm, &before.1)
                        && same(&xv, &before.2)
                        && xs == before.3,
                    "{kernel:?}: an error changed the buffers"
                );
                break;
            }
        }
        // Lanes outside the sub-slice are untouched.
        for buf in [&xp, &xm, &xv] {
            for (i, x) in buf.iter().enumerate() {
                assert!(
                    r.contains(&i) || x.to_bits() == canary.to_bits(),
                    "{kernel:?}: canary {i} overwritten"
                );
            }
        }
    }
});
