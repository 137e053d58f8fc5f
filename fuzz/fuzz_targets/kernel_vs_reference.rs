//! Every kernel the CPU supports against `adopt::reference`, bit for bit
//! (any NaN matching any NaN), or the same `Error` with nothing changed.
//!
//! The input bytes are decoded into hyperparameters (weighted toward the
//! clip/eps edges), a length, a sub-slice offset, raw f32 values, a starting
//! step and a number of steps.

#![no_main]

use adopt::{
    Clip, DecayScaling, Error, Hyper, Kernel, Scaling, StateView, adopt_step_with, reference,
};
use libfuzzer_sys::fuzz_target;

/// Reads the fuzzer's bytes; past the end every read is zero.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn f64(&mut self) -> f64 {
        f64::from_bits(u64::from(self.u32()) << 32 | u64::from(self.u32()))
    }
    /// One of `edges`, or (when the selector is past them) arbitrary bits.
    fn pick(&mut self, edges: &[f64]) -> f64 {
        let i = self.u8() as usize;
        if i < edges.len() * 8 {
            edges[i % edges.len()]
        } else {
            self.f64()
        }
    }
    fn f32(&mut self) -> f32 {
        match self.u8() {
            0..=9 => [
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                0.0,
                -0.0,
                f32::from_bits(1),
                f32::MAX,
                -f32::MAX,
                3e30,
                1e-30,
            ][self.u8() as usize % 10],
            10..=127 => (self.u8() as f32 - 128.0) / 32.0,
            _ => f32::from_bits(self.u32()),
        }
    }
}

fn clip_nan(_: u64) -> f64 {
    f64::NAN
}
fn clip_negative_later(t: u64) -> f64 {
    if t >= 3 { -1.0 } else { 0.5 }
}
fn clip_tiny(_: u64) -> f64 {
    1e-45
}

fn hyper(b: &mut Bytes<'_>) -> Hyper {
    let just_below_one = 1.0 - 1e-16;
    let clip = match b.u8() % 8 {
        0 => Clip::None,
        1 => Clip::Constant(b.pick(&[0.0, 1e-45, 1e-40, 1.0, 1e39, f64::INFINITY, -1.0, f64::NAN])),
        2 => Clip::Power {
            scale: b.pick(&[1.0, 0.0, 1e-30, 1e30, -1.0]),
            exponent: b.pick(&[0.25, 0.5, -1.0, 0.0, 40.0]),
        },
        3 => Clip::Custom(clip_nan),
        4 => Clip::Custom(clip_negative_later),
        5 => Clip::Custom(clip_tiny),
        _ => Clip::default(),
    };
    let flags = b.u8();
    Hyper {
        lr: b.pick(&[0.0, 1e-3, 0.5, 1e30, 1e300, 1e-45, -1e-3]),
        betas: (
            b.pick(&[0.0, 0.9, just_below_one, 0.5, 1.0]),
            b.pick(&[0.0, 0.9999, just_below_one, 0.5, 1.0]),
        ),
        eps: b.pick(&[0.0, 1e-45, 1e-40, 1e-6, 1e-12, 1e30, f64::INFINITY]),
        weight_decay: b.pick(&[0.0, 0.0, 0.1, 1e-40, 10.0]),
        decouple: flags & 1 != 0,
        maximize: flags & 2 != 0,
        clip,
        decay_scaling: match flags >> 4 & 3 {
            0 => DecayScaling::Lr,
            1 => DecayScaling::Fixed,
            2 => DecayScaling::Corrected { max_lr: 0.02 },
            _ => DecayScaling::Corrected {
                max_lr: b.pick(&[0.0, 1e-30, -1.0, f64::NAN]),
            },
        },
        nesterov: flags & 4 != 0,
        cautious: flags & 8 != 0,
    }
}

fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

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
            let got: Result<(), Error> = adopt_step_with(
                kernel,
                &mut xp[r.clone()],
                &g[r.clone()],
                &mut StateView::new(&mut xm[r.clone()], &mut xv[r.clone()], &mut xs),
                &hyper,
                scaling,
            );
            let want = reference::adopt_step_scaled_view(
                &mut rp[r.clone()],
                &g[r.clone()],
                &mut StateView::new(&mut rm[r.clone()], &mut rv[r.clone()], &mut rs),
                &hyper,
                scaling,
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
