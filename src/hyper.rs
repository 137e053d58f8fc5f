//! Hyperparameters ([`Hyper`], [`Clip`]) and the per-step f32 constants
//! derived from them ([`StepConstants`]).

use crate::error::{Error, HyperParam};

/// The clip schedule of ADOPT: the normalised gradient `ĝ` is clamped to
/// `[-c(t), c(t)]`, with `t` the number of steps already taken (the second
/// step uses `c(1)`, the third `c(2)`, …; the first step moves nothing and
/// does not evaluate the schedule).
///
/// Thresholds are computed in f64 and rounded once to f32. A threshold that
/// is negative or NaN at a step is refused with [`Error::InvalidClip`];
/// `+inf` means "no clipping".
///
/// ```
/// use adopt::Clip;
/// assert_eq!(Clip::default().threshold(16), 2.0); // 1.0 * 16^0.25
/// assert_eq!(Clip::Constant(0.5).threshold(3), 0.5);
/// assert_eq!(Clip::None.threshold(3), f64::INFINITY);
/// fn warmup(t: u64) -> f64 { if t < 10 { 0.1 } else { 1.0 } }
/// assert_eq!(Clip::Custom(warmup).threshold(3), 0.1);
/// ```
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Clip {
    /// No clipping (the reference's `clip_lambda=None`).
    None,
    /// A constant threshold.
    Constant(f64),
    /// `scale * t^exponent`, the reference's default is
    /// `Power { scale: 1.0, exponent: 0.25 }`.
    Power {
        /// Multiplies `t^exponent`; a finite number >= 0.
        scale: f64,
        /// The power of `t`; a finite number.
        exponent: f64,
    },
    /// Any schedule, called with the number of steps already taken.
    ///
    /// A function cannot be serialized: with the `serde` feature,
    /// serializing a `Custom` schedule is an error.
    #[cfg_attr(feature = "serde", serde(skip))]
    Custom(fn(u64) -> f64),
}

impl Default for Clip {
    /// The reference's default, `t^0.25`.
    fn default() -> Self {
        Clip::Power {
            scale: 1.0,
            exponent: 0.25,
        }
    }
}

impl Clip {
    /// The threshold at `step` (steps already taken), in f64, unvalidated.
    ///
    /// `pow` comes from the pure-Rust `libm`, so the value is the same in
    /// every build, with or without `std`.
    pub fn threshold(&self, step: u64) -> f64 {
        match *self {
            Clip::None => f64::INFINITY,
            Clip::Constant(c) => c,
            Clip::Power { scale, exponent } => scale * libm::pow(step as f64, exponent),
            Clip::Custom(f) => f(step),
        }
    }
}

/// The hyperparameters of one ADOPT step, held as f64 like the reference's
/// Python floats.
///
/// Build one with struct update syntax:
///
/// ```
/// use adopt::{Clip, Hyper};
/// let hyper = Hyper { lr: 1e-2, weight_decay: 0.01, decouple: true, ..Hyper::default() };
/// assert_eq!(hyper.betas, (0.9, 0.9999));
/// assert!(matches!(hyper.clip, Clip::Power { .. }));
/// ```
///
/// Each step derives its f32 constants from these values in f64 and rounds
/// each once ([`Hyper::constants`]); with f32 hyperparameters `1 - 0.9999`
/// would be off by 1.7e-5 relative and trajectories would drift from the
/// reference.
///
/// With the `serde` feature, `Hyper` serializes field by field; fields
/// missing when deserializing take their [`Default`] values.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
pub struct Hyper {
    /// Learning rate; a finite number >= 0. Default `1e-3`.
    pub lr: f64,
    /// `(β1, β2)`, each in `[0, 1)`. Default `(0.9, 0.9999)`.
    pub betas: (f64, f64),
    /// Floor of the denominator `max(sqrt(v), eps)`; a finite number >= 0.
    /// Default `1e-6`.
    pub eps: f64,
    /// Weight decay; a finite number >= 0. Default `0.0` (off).
    pub weight_decay: f64,
    /// `false` (default): L2 decay, `g += weight_decay·p` before the moments.
    /// `true`: decoupled (AdamW-style) decay, `p -= lr·weight_decay·p`.
    pub decouple: bool,
    /// Ascend instead of descend (the gradient is negated). Default `false`.
    pub maximize: bool,
    /// The clip schedule. Default `Clip::Power { scale: 1.0, exponent: 0.25 }`.
    pub clip: Clip,
    /// How decoupled decay (`decouple: true`) is scaled; ignored for L2.
    /// Default [`DecayScaling::Lr`], the reference's `p -= lr·wd·p`.
    pub decay_scaling: DecayScaling,
    /// Nesterov momentum as optax's `adopt(nesterov=True)`: the parameter
    /// moves by `β1·m + (1-β1)·ĝ` (with the new `m`) instead of `m`.
    /// Default `false`.
    pub nesterov: bool,
    /// Cautious masking as timm's `caution`: lanes where the update and the
    /// gradient disagree in sign (`u·g <= 0`) do not move, and the others are
    /// rescaled by `1/max(mean(mask), 1e-3)` over the whole tensor (see
    /// [`CautionMask`]). Default `false`.
    pub cautious: bool,
}

/// The tensor-wide count behind cautious masking: how many of `lanes` lanes
/// have `u·g > 0` this step. A step of a whole buffer counts it itself; an
/// engine stepping a tensor in shards sums each shard's
/// [`caution_mask`](crate::caution_mask) and passes the total to every
/// shard's step ([`StepOptions::caution_mask`](crate::StepOptions)), so the
/// shards scale exactly as the whole would.
///
/// ```
/// use adopt::CautionMask;
/// let whole = CautionMask { count: 3, lanes: 8 } + CautionMask { count: 5, lanes: 8 };
/// assert_eq!(whole, CautionMask { count: 8, lanes: 16 });
/// assert_eq!(whole.scale(), 2.0); // 1 / max(8/16, 1e-3)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CautionMask {
    /// Lanes with `u·g > 0`.
    pub count: u64,
    /// Lanes of the whole tensor.
    pub lanes: u64,
}

impl core::ops::Add for CautionMask {
    type Output = CautionMask;
    fn add(self, rhs: CautionMask) -> CautionMask {
        CautionMask {
            count: self.count + rhs.count,
            lanes: self.lanes + rhs.lanes,
        }
    }
}

impl CautionMask {
    /// `1/max(count/lanes, 1e-3)` as f32: the mean in f64 rounded once, then
    /// torch's f32 division `mask / mean.clamp(min=1e-3)`.
    pub fn scale(&self) -> f32 {
        let mean = if self.lanes == 0 {
            0.0
        } else {
            (self.count as f64 / self.lanes as f64) as f32
        };
        1.0 / mean.max(1e-3)
    }
}

/// How decoupled weight decay is scaled, as the peers define it.
///
/// ```
/// use adopt::{Decay, DecayScaling, Hyper};
/// let lr_scaled = Hyper { lr: 0.01, weight_decay: 0.1, decouple: true, ..Hyper::default() };
/// assert_eq!(lr_scaled.constants(1)?.decay, Decay::Decoupled(-(0.01_f64 * 0.1) as f32));
/// let fixed = Hyper { decay_scaling: DecayScaling::Fixed, ..lr_scaled };
/// assert_eq!(fixed.constants(1)?.decay, Decay::Decoupled(-0.1));
/// let corrected = Hyper { decay_scaling: DecayScaling::Corrected { max_lr: 0.02 }, ..lr_scaled };
/// assert_eq!(corrected.constants(1)?.decay, Decay::Decoupled(-(0.01_f64 * 0.01 / 0.02 * 0.1) as f32));
/// # Ok::<(), adopt::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DecayScaling {
    /// `p -= lr·wd·p` (the reference, AdamW).
    #[default]
    Lr,
    /// `p -= wd·p`, not scaled by the learning rate (pytorch-optimizer's
    /// `fixed_decay`).
    Fixed,
    /// `p -= (lr²/max_lr)·wd·p` (timm's `corrected_weight_decay`), so that
    /// decay follows the square of a learning-rate schedule peaking at
    /// `max_lr`.
    Corrected {
        /// The schedule's peak learning rate; a finite number > 0.
        max_lr: f64,
    },
}

impl Default for Hyper {
    /// The reference implementation's defaults.
    fn default() -> Self {
        Hyper {
            lr: 1e-3,
            betas: (0.9, 0.9999),
            eps: 1e-6,
            weight_decay: 0.0,
            decouple: false,
            maximize: false,
            clip: Clip::default(),
            decay_scaling: DecayScaling::Lr,
            nesterov: false,
            cautious: false,
        }
    }
}

/// How weight decay enters a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decay {
    /// `weight_decay == 0`: no decay term at all.
    None,
    /// L2: `g = fma(wd, p, g)` with the given `wd` as f32.
    L2(f32),
    /// Decoupled: `p = fma(neg_lr_wd, p, p)` on steps after the first, with
    /// the given `-(lr·wd)` (or `-wd`, `-(lr²/max_lr)·wd`, see
    /// [`DecayScaling`]) as f32.
    Decoupled(f32),
}

/// The f32 constants of one step, each derived in f64 and rounded once.
///
/// This is exactly what the kernels and [`reference`](crate::reference)
/// compute with; it is public so that integrations can log it or drive
/// their own kernels with the same numbers.
///
/// ```
/// use adopt::Hyper;
/// let k = Hyper::default().constants(1).unwrap();
/// assert_eq!(k.one_minus_beta2, (1.0_f64 - 0.9999) as f32);
/// assert_eq!(k.neg_lr, -1e-3_f32);
/// assert_eq!(k.clip, 1.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct StepConstants {
    /// Steps already taken; 0 means this step only initialises `v = g·g`.
    pub step: u64,
    /// Multiplied into the raw gradient first (mixed-precision unscaling);
    /// `1.0` (the default) skips the multiply. See [`Scaling`].
    pub inv_scale: f32,
    /// Whether the gradient is negated.
    pub maximize: bool,
    /// The weight-decay term.
    pub decay: Decay,
    /// `eps` as f32.
    pub eps: f32,
    /// The clip threshold `c(step)` as f32 (`+inf` for no clipping; unused
    /// on the first step).
    pub clip: f32,
    /// `1 - β1` as f32: the weight of the lerp `m += (1-β1)(ĝ - m)`.
    pub one_minus_beta1: f32,
    /// `β1` as f32, used only with Nesterov momentum.
    pub beta1: f32,
    /// Whether the parameter moves by `fma(β1, m, (1-β1)·ĝ)` instead of `m`.
    pub nesterov: bool,
    /// With cautious masking, the scale `1/max(mean(mask), 1e-3)` of the
    /// lanes kept; `None` without it (and on the first step).
    pub caution_scale: Option<f32>,
    /// `-lr` as f32.
    pub neg_lr: f32,
    /// `β2` as f32.
    pub beta2: f32,
    /// `1 - β2` as f32.
    pub one_minus_beta2: f32,
}

fn check(param: HyperParam, value: f64, ok: bool) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidHyper { param, value })
    }
}

fn check_non_negative(param: HyperParam, value: f64) -> Result<(), Error> {
    check(param, value, value.is_finite() && value >= 0.0)
}

fn check_beta(param: HyperParam, value: f64) -> Result<(), Error> {
    check(param, value, (0.0..1.0).contains(&value))
}

impl Hyper {
    /// Checks every hyperparameter that does not depend on the step.
    ///
    /// ```
    /// use adopt::{Error, Hyper, HyperParam};
    /// let bad = Hyper { betas: (0.9, 1.0), ..Hyper::default() };
    /// assert_eq!(
    ///     bad.validate(),
    ///     Err(Error::InvalidHyper { param: HyperParam::Beta2, value: 1.0 })
    /// );
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        check_non_negative(HyperParam::Lr, self.lr)?;
        check_beta(HyperParam::Beta1, self.betas.0)?;
        check_beta(HyperParam::Beta2, self.betas.1)?;
        check_non_negative(HyperParam::Eps, self.eps)?;
        check_non_negative(HyperParam::WeightDecay, self.weight_decay)?;
        match self.clip {
            Clip::Constant(c) => check(HyperParam::ClipScale, c, c >= 0.0),
            Clip::Power { scale, exponent } => {
                check_non_negative(HyperParam::ClipScale, scale)?;
                check(HyperParam::ClipExponent, exponent, exponent.is_finite())
            }
            Clip::None | Clip::Custom(_) => Ok(()),
        }?;
        match self.decay_scaling {
            DecayScaling::Corrected { max_lr } => check(
                HyperParam::MaxLr,
                max_lr,
                max_lr.is_finite() && max_lr > 0.0,
            ),
            DecayScaling::Lr | DecayScaling::Fixed => Ok(()),
        }
    }

    /// Validates the hyperparameters and derives the f32 constants of the
    /// step taken after `step` steps.
    ///
    /// The clip schedule is evaluated (and validated) only when `step >= 1`,
    /// as the reference does: the first step never clips.
    pub fn constants(&self, step: u64) -> Result<StepConstants, Error> {
        self.validate()?;
        let clip = if step == 0 {
            f32::INFINITY
        } else {
            let threshold = self.clip.threshold(step);
            if threshold.is_nan() || threshold < 0.0 {
                return Err(Error::InvalidClip { step, threshold });
            }
            threshold as f32
        };
        let decay = if self.weight_decay == 0.0 {
            Decay::None
        } else if self.decouple {
            let rate = match self.decay_scaling {
                DecayScaling::Lr => self.lr,
                DecayScaling::Fixed => 1.0,
                DecayScaling::Corrected { max_lr } => self.lr * self.lr / max_lr,
            };
            Decay::Decoupled(-((rate * self.weight_decay) as f32))
        } else {
            Decay::L2(self.weight_decay as f32)
        };
        Ok(StepConstants {
            step,
            inv_scale: 1.0,
            maximize: self.maximize,
            decay,
            eps: self.eps as f32,
            clip,
            one_minus_beta1: (1.0 - self.betas.0) as f32,
            beta1: self.betas.0 as f32,
            nesterov: self.nesterov,
            caution_scale: None,
            neg_lr: (-self.lr) as f32,
            beta2: self.betas.1 as f32,
            one_minus_beta2: (1.0 - self.betas.1) as f32,
        })
    }
}

/// Mixed-precision gradient scaling for one step, as PyTorch's `GradScaler`
/// provides it: the gradients were computed from `loss × scale`.
///
/// - `inv_scale` (`1/scale`) is multiplied into each raw gradient lane inside
///   the kernel, before anything else (no extra pass over the gradients);
/// - `found_inf` (a NaN or inf was found in this step's gradients, e.g. by
///   [`grads_nonfinite`](crate::grads_nonfinite)) makes the step change
///   nothing at all, not even the step count, so the scaler can lower its
///   scale and retry.
///
/// ```
/// use adopt::{adopt_step_scaled, grads_nonfinite, Hyper, Scaling, State};
/// let scale = 1024.0_f32;
/// let mut params = vec![1.0_f32; 4];
/// let mut state = State::new(4);
/// let scaled_grads = vec![0.5 * scale; 4];
/// let scaling = Scaling { inv_scale: 1.0 / scale, found_inf: grads_nonfinite(&scaled_grads) };
/// adopt_step_scaled(&mut params, &scaled_grads, &mut state, &Hyper::default(), scaling)?;
/// assert_eq!(state.exp_avg_sq(), &[0.25; 4]); // v saw the unscaled 0.5
///
/// let overflowed = vec![f32::INFINITY; 4];
/// let skip = Scaling { inv_scale: 1.0 / scale, found_inf: grads_nonfinite(&overflowed) };
/// adopt_step_scaled(&mut params, &overflowed, &mut state, &Hyper::default(), skip)?;
/// assert_eq!(state.step(), 1); // skipped entirely
/// # Ok::<(), adopt::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scaling {
    /// `1/scale`; a finite number >= 0. `1.0` means no scaling.
    pub inv_scale: f32,
    /// Skip the step, changing nothing.
    pub found_inf: bool,
}

impl Default for Scaling {
    /// No scaling, no skip.
    fn default() -> Self {
        Scaling {
            inv_scale: 1.0,
            found_inf: false,
        }
    }
}

impl Scaling {
    /// Checks `inv_scale`.
    pub fn validate(&self) -> Result<(), Error> {
        let value = self.inv_scale;
        check(
            HyperParam::InvScale,
            value as f64,
            value.is_finite() && value >= 0.0,
        )
    }
}
