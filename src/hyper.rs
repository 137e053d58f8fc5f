//! Hyperparameters ([`Hyper`], [`Clip`], [`WeightDecay`], [`Caution`]) and
//! the per-step f32 constants derived from them ([`StepConstants`]).

use crate::error::{Error, Float, HyperParam};

/// The clip schedule of ADOPT: the normalised gradient `ĝ` is clamped to
/// `[-c(t), c(t)]`, with `t` the number of steps already taken (the second
/// step uses `c(1)`, the third `c(2)`, …; the first step moves nothing and
/// does not evaluate the schedule).
///
/// Thresholds are computed in f64 and rounded once to f32. A threshold that
/// is negative, NaN or finite but beyond the largest f32 at a step is
/// refused with [`Error::InvalidClip`]; `+inf` means "no clipping".
/// [`Hyper::clip_offset`] shifts the step count the schedule sees.
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
/// use adopt::{Caution, Clip, Hyper, WeightDecay};
/// let hyper = Hyper { lr: 1e-2, weight_decay: WeightDecay::decoupled(0.01), ..Hyper::default() };
/// assert_eq!(hyper.betas, (0.9, 0.9999));
/// assert!(matches!(hyper.clip, Clip::Power { .. }));
/// assert_eq!(hyper.caution, Caution::Off);
/// ```
///
/// Each step derives its f32 constants from these values in f64 and rounds
/// each once ([`Hyper::constants`]); with f32 hyperparameters `1 - 0.9999`
/// would be off by 1.7e-5 relative and trajectories would drift from the
/// reference. A value that is finite in f64 but beyond the largest f32
/// (`lr = 1e39`) is refused ([`Error::HyperOverflow`]), as the reference
/// refuses it, rather than stepping with infinities.
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
    /// Weight decay: none (the default), L2 or decoupled. See
    /// [`WeightDecay`].
    pub weight_decay: WeightDecay,
    /// Ascend instead of descend (the gradient is negated). Default `false`.
    pub maximize: bool,
    /// The clip schedule. Default `Clip::Power { scale: 1.0, exponent: 0.25 }`.
    pub clip: Clip,
    /// Added to the step count the clip schedule is evaluated at. `0`
    /// (default): the reference and timm, whose second step evaluates
    /// `c(1)`. `1`: pytorch-optimizer, whose `clip_lambda` is called with
    /// the number of the step being taken (`c(2)` on the second step). The
    /// first step never evaluates the schedule.
    pub clip_offset: u64,
    /// Nesterov momentum as optax's `adopt(nesterov=True)`: the parameter
    /// moves by `β1·m + (1-β1)·ĝ` (with the new `m`) instead of `m`.
    /// Default `false`.
    pub nesterov: bool,
    /// Cautious masking: lanes whose update disagrees in sign with the
    /// gradient do not move; see [`Caution`]. Default [`Caution::Off`].
    pub caution: Caution,
}

/// Weight decay, as the reference and the peers define it.
///
/// ```
/// use adopt::{DecayScaling, WeightDecay};
/// assert_eq!(WeightDecay::default(), WeightDecay::None);
/// assert_eq!(WeightDecay::l2(0.01), WeightDecay::L2(0.01));
/// assert_eq!(
///     WeightDecay::decoupled(0.01),
///     WeightDecay::Decoupled { weight_decay: 0.01, scaling: DecayScaling::Lr, first_step: false }
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum WeightDecay {
    /// No decay (the default).
    #[default]
    None,
    /// L2 decay (the reference's `decouple=False`): `g = g + wd·p` before
    /// the moments, on every step, the first included. The coefficient is
    /// a finite number >= 0.
    L2(f64),
    /// Decoupled (AdamW-style) decay (the reference's `decouple=True`):
    /// `p = p - rate·p` with `rate = lr·weight_decay` (or as `scaling`
    /// says), on every step after the first (with `first_step`, on the
    /// first step too).
    Decoupled {
        /// The coefficient; a finite number >= 0.
        weight_decay: f64,
        /// How the rate is scaled; [`DecayScaling::Lr`] is the reference's.
        scaling: DecayScaling,
        /// Decay on the first step too, which otherwise only records `v`:
        /// pytorch-optimizer's `weight_decouple` does; the reference and
        /// timm do not (`false`).
        first_step: bool,
    },
}

impl WeightDecay {
    /// L2 decay with coefficient `weight_decay`.
    pub const fn l2(weight_decay: f64) -> Self {
        WeightDecay::L2(weight_decay)
    }

    /// The reference's decoupled decay, `p -= lr·weight_decay·p` on steps
    /// after the first.
    pub const fn decoupled(weight_decay: f64) -> Self {
        WeightDecay::Decoupled {
            weight_decay,
            scaling: DecayScaling::Lr,
            first_step: false,
        }
    }

    /// The coefficient (`0.0` for [`WeightDecay::None`]).
    pub const fn coefficient(&self) -> f64 {
        match *self {
            WeightDecay::None => 0.0,
            WeightDecay::L2(wd) => wd,
            WeightDecay::Decoupled { weight_decay, .. } => weight_decay,
        }
    }
}

/// Cautious masking ("Cautious Optimizers", Liang et al. 2024): lanes whose
/// update `u` disagrees in sign with the gradient do not move, and the
/// others are rescaled so the update keeps its size. The two peers that
/// offer it define it differently; each rule is named after its peer.
///
/// The scale is computed over the whole tensor (see [`CautionMask`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Caution {
    /// No masking (the default).
    #[default]
    Off,
    /// timm's `caution`: the mask is `u·g > 0` with `g` the gradient (after
    /// maximize and L2 decay), and kept lanes are scaled by
    /// `1/max(mean(mask), 1e-3)`.
    Timm,
    /// pytorch-optimizer's `cautious`: the mask is `u·ĝ > 0` with `ĝ` the
    /// normalised, clipped gradient, and kept lanes are scaled by
    /// `numel / (sum(mask) + 1)` (in f32, as torch computes
    /// `reciprocal(sum + 1) · numel`).
    PytorchOptimizer,
}

/// The tensor-wide count behind cautious masking: how many of `lanes` lanes
/// pass the mask this step. A step of a whole buffer counts it itself; an
/// engine stepping a tensor in shards sums each shard's
/// [`caution_mask`](crate::caution_mask) and passes the total to every
/// shard's step ([`StepOptions::caution_mask`](crate::StepOptions)), so the
/// shards scale exactly as the whole would.
///
/// ```
/// use adopt::{Caution, CautionMask};
/// let whole = CautionMask { count: 3, lanes: 8 } + CautionMask { count: 5, lanes: 8 };
/// assert_eq!(whole, CautionMask { count: 8, lanes: 16 });
/// assert_eq!(whole.scale(Caution::Timm), 2.0); // 1 / max(8/16, 1e-3)
/// assert_eq!(whole.scale(Caution::PytorchOptimizer), 16.0 / 9.0); // 16 / (8 + 1)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CautionMask {
    /// Lanes that pass the mask.
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
    /// The scale of the kept lanes under `rule`, as f32:
    ///
    /// - for [`Caution::Timm`], `1/max(count/lanes, 1e-3)`: the mean in f64
    ///   rounded once, then torch's f32 division `mask / mean.clamp(min=1e-3)`;
    /// - for [`Caution::PytorchOptimizer`], `(1/(count + 1))·lanes` in f32,
    ///   with `count` and `lanes` each rounded once to f32 (torch's
    ///   `lanes / (mask.sum() + 1)`, a reciprocal and a multiply);
    /// - for [`Caution::Off`], `1.0`.
    pub fn scale(&self, rule: Caution) -> f32 {
        match rule {
            Caution::Off => 1.0,
            Caution::Timm => {
                let mean = if self.lanes == 0 {
                    0.0
                } else {
                    (self.count as f64 / self.lanes as f64) as f32
                };
                1.0 / mean.max(1e-3)
            }
            Caution::PytorchOptimizer => {
                let reciprocal = 1.0 / (self.count as f32 + 1.0);
                reciprocal * self.lanes as f32
            }
        }
    }
}

/// How decoupled weight decay is scaled, as the peers define it.
///
/// ```
/// use adopt::{Decay, DecayScaling, Hyper, WeightDecay};
/// let decay = |scaling| WeightDecay::Decoupled { weight_decay: 0.1, scaling, first_step: false };
/// let lr_scaled = Hyper { lr: 0.01, weight_decay: decay(DecayScaling::Lr), ..Hyper::default() };
/// assert_eq!(lr_scaled.constants(1)?.decay, Decay::Decoupled(-(0.01_f64 * 0.1) as f32));
/// let fixed = Hyper { weight_decay: decay(DecayScaling::Fixed), ..lr_scaled };
/// assert_eq!(fixed.constants(1)?.decay, Decay::Decoupled(-0.1));
/// let corrected = Hyper { weight_decay: decay(DecayScaling::Corrected { max_lr: Some(0.02) }), ..lr_scaled };
/// assert_eq!(corrected.constants(1)?.decay, Decay::Decoupled(-(0.01_f64 * 0.01 / 0.02 * 0.1) as f32));
/// # Ok::<(), adopt::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DecayScaling {
    /// `p -= lr·wd·p` (the reference, AdamW).
    #[default]
    Lr,
    /// `p -= wd·p`, not scaled by the learning rate: the rate of
    /// pytorch-optimizer's `fixed_decay` (which also decays on the first
    /// step: set [`WeightDecay::Decoupled`]'s `first_step` for that).
    Fixed,
    /// `p -= (lr²/max_lr)·wd·p` (timm's `corrected_weight_decay`), so that
    /// decay follows the square of a learning-rate schedule peaking at
    /// `max_lr`.
    Corrected {
        /// The schedule's peak learning rate; a finite number > 0. `None`:
        /// the group's initial learning rate, as timm takes it: an
        /// [`Adopt`](crate::Adopt) group's `lr` when it was added (or its
        /// `initial_lr`). A single-buffer step has no initial learning rate
        /// and refuses `None` ([`Error::MaxLrUnset`]).
        max_lr: Option<f64>,
    },
}

impl Default for Hyper {
    /// The reference implementation's defaults.
    fn default() -> Self {
        Hyper {
            lr: 1e-3,
            betas: (0.9, 0.9999),
            eps: 1e-6,
            weight_decay: WeightDecay::None,
            maximize: false,
            clip: Clip::default(),
            clip_offset: 0,
            nesterov: false,
            caution: Caution::Off,
        }
    }
}

/// How weight decay enters a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decay {
    /// No decay term at this step.
    None,
    /// L2: `g = fma(wd, p, g)` with the given `wd` as f32.
    L2(f32),
    /// Decoupled: `p = fma(neg_rate, p, p)` with the given `-(lr·wd)` (or
    /// `-wd`, `-(lr²/max_lr)·wd`, see [`DecayScaling`]) as f32. A first
    /// step decays only with [`WeightDecay::Decoupled`]'s `first_step`
    /// (otherwise its constants carry [`Decay::None`]).
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
    /// The clip threshold `c(step + clip_offset)` as f32 (`+inf` for no
    /// clipping; unused on the first step).
    pub clip: f32,
    /// `1 - β1` as f32: the weight `w` of the lerp of `m` toward `ĝ`
    /// (see [`reference::lerp`](crate::reference::lerp)).
    pub one_minus_beta1: f32,
    /// The factor of the lerp's fused multiply-add: `w` while `|w| < 0.5`,
    /// else `w - 1` (rounded in f32).
    pub lerp_factor: f32,
    /// Whether the lerp starts from its end (`|w| >= 0.5`, i.e. β1 <= 0.5):
    /// `m = fma(w - 1, ĝ - m, ĝ)` instead of `fma(w, ĝ - m, m)`.
    pub lerp_from_end: bool,
    /// `β1` as f32, used only with Nesterov momentum.
    pub beta1: f32,
    /// Whether the parameter moves by `fma(β1, m, (1-β1)·ĝ)` instead of `m`.
    pub nesterov: bool,
    /// The cautious-masking rule.
    pub caution: Caution,
    /// With cautious masking, the scale of the lanes kept
    /// ([`CautionMask::scale`]); `None` without it (and on the first step).
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
        Err(Error::InvalidHyper {
            param,
            value: Float(value),
        })
    }
}

/// Whether a finite f64 lies beyond the largest f32 (torch's
/// `overflows<float>`: infinities do not overflow, anything above
/// `f32::MAX` does, even where it would round down to it).
fn overflows_f32(value: f64) -> bool {
    value.is_finite() && value.abs() > f32::MAX as f64
}

/// A value checked against its range, then against f32's.
fn check_non_negative(param: HyperParam, value: f64) -> Result<(), Error> {
    check(param, value, value.is_finite() && value >= 0.0)?;
    check_f32(param, value)
}

/// Refuses a value that is finite in f64 but overflows f32.
fn check_f32(param: HyperParam, value: f64) -> Result<(), Error> {
    if overflows_f32(value) || (param == HyperParam::DecayRate && !value.is_finite()) {
        return Err(Error::HyperOverflow {
            param,
            value: Float(value),
        });
    }
    Ok(())
}

fn check_beta(param: HyperParam, value: f64) -> Result<(), Error> {
    check(param, value, (0.0..1.0).contains(&value))
}

impl Hyper {
    /// Checks every hyperparameter that does not depend on the step:
    /// ranges ([`Error::InvalidHyper`]), then whether each f32 constant
    /// derived from them fits f32 ([`Error::HyperOverflow`]): `lr`, `eps`,
    /// the decay coefficient, the decoupled decay rate (`lr·wd`, or as
    /// [`DecayScaling`] says) and a constant clip threshold.
    ///
    /// ```
    /// use adopt::{Error, Float, Hyper, HyperParam, WeightDecay};
    /// let bad = Hyper { betas: (0.9, 1.0), ..Hyper::default() };
    /// assert_eq!(
    ///     bad.validate(),
    ///     Err(Error::InvalidHyper { param: HyperParam::Beta2, value: Float(1.0) })
    /// );
    /// let huge = Hyper { lr: 1e20, weight_decay: WeightDecay::decoupled(1e20), ..Hyper::default() };
    /// assert_eq!(
    ///     huge.validate(),
    ///     Err(Error::HyperOverflow { param: HyperParam::DecayRate, value: Float(1e40) })
    /// );
    /// ```
    ///
    /// [`DecayScaling::Corrected`] without `max_lr` passes: an
    /// [`Adopt`](crate::Adopt) group fills it in; [`Hyper::constants`]
    /// refuses it.
    pub fn validate(&self) -> Result<(), Error> {
        check_non_negative(HyperParam::Lr, self.lr)?;
        check_beta(HyperParam::Beta1, self.betas.0)?;
        check_beta(HyperParam::Beta2, self.betas.1)?;
        check_non_negative(HyperParam::Eps, self.eps)?;
        match self.weight_decay {
            WeightDecay::None => {}
            WeightDecay::L2(wd) => check_non_negative(HyperParam::WeightDecay, wd)?,
            WeightDecay::Decoupled {
                weight_decay,
                scaling,
                ..
            } => {
                check_non_negative(HyperParam::WeightDecay, weight_decay)?;
                if let DecayScaling::Corrected {
                    max_lr: Some(max_lr),
                } = scaling
                {
                    check(
                        HyperParam::MaxLr,
                        max_lr,
                        max_lr.is_finite() && max_lr > 0.0,
                    )?;
                }
                if let Some(rate) = self.decay_rate()
                    && weight_decay != 0.0
                {
                    check_f32(HyperParam::DecayRate, rate)?;
                }
            }
        }
        match self.clip {
            Clip::Constant(c) => {
                check(HyperParam::ClipScale, c, c >= 0.0)?;
                check_f32(HyperParam::ClipScale, c)
            }
            Clip::Power { scale, exponent } => {
                check(
                    HyperParam::ClipScale,
                    scale,
                    scale.is_finite() && scale >= 0.0,
                )?;
                check(HyperParam::ClipExponent, exponent, exponent.is_finite())
            }
            Clip::None | Clip::Custom(_) => Ok(()),
        }
    }

    /// The decoupled decay rate `rate·weight_decay` in f64 (`None` without
    /// decoupled decay, or with [`DecayScaling::Corrected`] and no
    /// `max_lr`).
    fn decay_rate(&self) -> Option<f64> {
        let WeightDecay::Decoupled {
            weight_decay,
            scaling,
            ..
        } = self.weight_decay
        else {
            return None;
        };
        let rate = match scaling {
            DecayScaling::Lr => self.lr,
            DecayScaling::Fixed => 1.0,
            DecayScaling::Corrected { max_lr } => self.lr * self.lr / max_lr?,
        };
        Some(rate * weight_decay)
    }

    /// These hyperparameters with an unset [`DecayScaling::Corrected`]
    /// `max_lr` taken to be `initial_lr` (what [`Adopt`](crate::Adopt)
    /// does with each group's initial learning rate).
    pub fn with_initial_lr(mut self, initial_lr: f64) -> Hyper {
        if let WeightDecay::Decoupled {
            scaling: DecayScaling::Corrected {
                max_lr: max_lr @ None,
            },
            ..
        } = &mut self.weight_decay
        {
            *max_lr = Some(initial_lr);
        }
        self
    }

    /// Validates the hyperparameters and derives the f32 constants of the
    /// step taken after `step` steps.
    ///
    /// The clip schedule is evaluated (and validated) only when `step >= 1`,
    /// as the reference does (the first step never clips), at
    /// `step + clip_offset`.
    pub fn constants(&self, step: u64) -> Result<StepConstants, Error> {
        self.validate()?;
        let clip = if step == 0 {
            f32::INFINITY
        } else {
            let at = step.saturating_add(self.clip_offset);
            let threshold = self.clip.threshold(at);
            if threshold.is_nan() || threshold < 0.0 || overflows_f32(threshold) {
                return Err(Error::InvalidClip {
                    step: at,
                    threshold: Float(threshold),
                });
            }
            threshold as f32
        };
        let decay = match self.weight_decay {
            WeightDecay::None => Decay::None,
            WeightDecay::L2(0.0) => Decay::None,
            WeightDecay::L2(wd) => Decay::L2(wd as f32),
            WeightDecay::Decoupled {
                weight_decay,
                first_step,
                ..
            } => {
                let rate = self.decay_rate().ok_or(Error::MaxLrUnset)?;
                if weight_decay == 0.0 || (step == 0 && !first_step) {
                    Decay::None
                } else {
                    Decay::Decoupled(-(rate as f32))
                }
            }
        };
        let one_minus_beta1 = (1.0 - self.betas.0) as f32;
        let lerp_from_end = one_minus_beta1.abs() >= 0.5;
        Ok(StepConstants {
            step,
            inv_scale: 1.0,
            maximize: self.maximize,
            decay,
            eps: self.eps as f32,
            clip,
            one_minus_beta1,
            lerp_factor: if lerp_from_end {
                one_minus_beta1 - 1.0
            } else {
                one_minus_beta1
            },
            lerp_from_end,
            beta1: self.betas.0 as f32,
            nesterov: self.nesterov,
            caution: self.caution,
            caution_scale: None,
            neg_lr: (-self.lr) as f32,
            beta2: self.betas.1 as f32,
            one_minus_beta2: (1.0 - self.betas.1) as f32,
        })
    }
}

/// Everything a step can be told besides buffers and hyperparameters.
///
/// ```
/// use adopt::{adopt_step_ext, Hyper, Kernel, StateView, StepOptions};
/// let options = StepOptions { kernel: Some(Kernel::Portable), ..StepOptions::default() };
/// let (mut p, mut m, mut v, mut step) = ([1.0_f32; 3], [0.0; 3], [0.0; 3], 0);
/// adopt_step_ext(&mut p, &[0.5; 3], &mut StateView::new(&mut m, &mut v, &mut step), &Hyper::default(), &options)?;
/// # Ok::<(), adopt::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepOptions {
    /// The kernel; `None` for [`Kernel::try_active`](crate::Kernel::try_active).
    pub kernel: Option<crate::ids::Kernel>,
    /// Mixed-precision scaling: `inv_scale` is fused into the kernel's
    /// first operation on each gradient lane, and `found_inf` skips the
    /// step, changing nothing (inputs are still validated).
    pub scaling: Scaling,
    /// For cautious masking ([`Hyper::caution`]) of a shard: the mask count
    /// of the whole tensor (the sum of every shard's [`caution_mask`](crate::caution_mask)).
    /// `None`: the step counts its own buffer.
    pub caution_mask: Option<CautionMask>,
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
/// use adopt::{adopt_step_ext, grads_nonfinite, Hyper, Scaling, State, StepOptions};
/// let scale = 1024.0_f32;
/// let mut params = vec![1.0_f32; 4];
/// let mut state = State::new(4);
/// let scaled_grads = vec![0.5 * scale; 4];
/// let scaling = Scaling { inv_scale: 1.0 / scale, found_inf: grads_nonfinite(&scaled_grads) };
/// let options = StepOptions { scaling, ..StepOptions::default() };
/// adopt_step_ext(&mut params, &scaled_grads, &mut state, &Hyper::default(), &options)?;
/// assert_eq!(state.exp_avg_sq(), &[0.25; 4]); // v saw the unscaled 0.5
///
/// let overflowed = vec![f32::INFINITY; 4];
/// let skip = Scaling { inv_scale: 1.0 / scale, found_inf: grads_nonfinite(&overflowed) };
/// let options = StepOptions { scaling: skip, ..StepOptions::default() };
/// adopt_step_ext(&mut params, &overflowed, &mut state, &Hyper::default(), &options)?;
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
