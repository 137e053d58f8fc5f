//! Decoding shared by the fuzz targets: bytes into values and
//! hyperparameters weighted toward the clip/eps edges.

#![allow(dead_code)] // each target uses part of it

use adopt::{Caution, Clip, DecayScaling, Hyper, WeightDecay};

/// Reads the fuzzer's bytes; past the end every read is zero.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn f64(&mut self) -> f64 {
        f64::from_bits(u64::from(self.u32()) << 32 | u64::from(self.u32()))
    }
    /// One of `edges`, or (when the selector is past them) arbitrary bits.
    pub fn pick(&mut self, edges: &[f64]) -> f64 {
        let i = self.u8() as usize;
        if i < edges.len() * 8 {
            edges[i % edges.len()]
        } else {
            self.f64()
        }
    }
    pub fn f32(&mut self) -> f32 {
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

/// Hyperparameters weighted toward the clip/eps edges.
pub fn hyper(b: &mut Bytes<'_>) -> Hyper {
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
    let coefficient = b.pick(&[0.0, 0.1, 1e-40, 10.0, 1e39, 1e20, -0.1]);
    let weight_decay = match flags & 3 {
        0 => WeightDecay::None,
        1 => WeightDecay::L2(coefficient),
        _ => WeightDecay::Decoupled {
            weight_decay: coefficient,
            scaling: match flags >> 4 & 3 {
                0 => DecayScaling::Lr,
                1 => DecayScaling::Fixed,
                2 => DecayScaling::Corrected { max_lr: Some(0.02) },
                _ => DecayScaling::Corrected {
                    max_lr: (b.u8() & 1 == 0)
                        .then(|| b.pick(&[0.0, 1e-30, 1e-300, -1.0, f64::NAN])),
                },
            },
            first_step: flags & 2 != 0,
        },
    };
    // β1 weighted toward [0, 0.5], where torch's lerp takes its second
    // form, and the boundary 0.5 itself.
    let beta1 = match b.u8() % 4 {
        0 => b.pick(&[0.0, 0.9, just_below_one, 1.0]),
        1 => b.pick(&[0.5, 0.5 - 1e-17, 0.49999999, 0.5000001]),
        _ => b.pick(&[0.0, 0.1, 0.3, 0.45]) + f64::from(b.u8()) / 512.0,
    };
    Hyper {
        lr: b.pick(&[0.0, 1e-3, 0.5, 1e30, 1e39, f64::MAX, 1e300, 1e-45, -1e-3]),
        betas: (beta1, b.pick(&[0.0, 0.9999, just_below_one, 0.5, 1.0])),
        eps: b.pick(&[0.0, 1e-45, 1e-40, 1e-6, 1e-12, 1e30, 1e39, f64::INFINITY]),
        weight_decay,
        maximize: flags & 8 != 0,
        clip,
        clip_offset: u64::from(b.u8() % 3),
        nesterov: flags & 4 != 0,
        caution: match flags >> 6 {
            0 | 1 => Caution::Off,
            2 => Caution::Timm,
            _ => Caution::PytorchOptimizer,
        },
    }
}

/// Bit-equal slices, any NaN matching any NaN.
pub fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}
