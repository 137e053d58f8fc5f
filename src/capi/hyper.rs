//! The hyperparameters in C form ([`AdoptHyper`]) and their enumerations.

use super::{Fail, check_one};
use crate::hyper::{Caution, Clip, DecayScaling, Hyper, WeightDecay};
use alloc::format;

/// `AdoptHyper::clip`: no clipping.
pub const ADOPT_CLIP_NONE: u32 = 0;
/// `AdoptHyper::clip`: a constant threshold, `clip_scale`.
pub const ADOPT_CLIP_CONSTANT: u32 = 1;
/// `AdoptHyper::clip`: `clip_scale * t^clip_exponent` with `t` the steps
/// already taken (the default, `1.0 * t^0.25`).
pub const ADOPT_CLIP_POWER: u32 = 2;

/// `AdoptHyper::decay_scaling`: decoupled decay `p -= lr·wd·p` (the default).
pub const ADOPT_DECAY_LR: u32 = 0;
/// `AdoptHyper::decay_scaling`: decoupled decay `p -= wd·p`, not scaled by
/// the learning rate.
pub const ADOPT_DECAY_FIXED: u32 = 1;
/// `AdoptHyper::decay_scaling`: decoupled decay `p -= (lr²/max_lr)·wd·p`.
pub const ADOPT_DECAY_CORRECTED: u32 = 2;

/// `adopt_step_bf16`'s `rounding`: to nearest, ties to even.
pub const ADOPT_ROUNDING_NEAREST_EVEN: u32 = 0;
/// `adopt_step_bf16`'s `rounding`: stochastic rounding of the parameters,
/// from a counter-based generator seeded by `seed` (reproducible).
pub const ADOPT_ROUNDING_STOCHASTIC: u32 = 1;

/// `AdoptHyper::caution`: no cautious masking (the default).
pub const ADOPT_CAUTION_OFF: u32 = 0;
/// `AdoptHyper::caution`: timm's `caution` (mask `u·g > 0`, scale
/// `1/max(mean, 1e-3)`).
pub const ADOPT_CAUTION_TIMM: u32 = 1;
/// `AdoptHyper::caution`: pytorch-optimizer's `cautious` (mask `u·ĝ > 0`
/// with the normalised gradient, scale `numel/(sum + 1)`).
pub const ADOPT_CAUTION_PYTORCH_OPTIMIZER: u32 = 2;

/// The hyperparameters of a step (`adopt::Hyper` in C form). Start from
/// `adopt_hyper_default` and change the fields you need.
///
/// `size` is the struct's size as the caller's header declares it, set by
/// `adopt_hyper_default`: fields added in later versions go at the end, so
/// that a later library can tell an older caller's struct by its size and
/// read only the fields it has. This version knows one size, its own; any
/// other `size` is refused with `ADOPT_STATUS_INVALID_ARGUMENT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdoptHyper {
    /// `sizeof(AdoptHyper)`; set by `adopt_hyper_default`.
    pub size: u32,
    /// The clip schedule: `ADOPT_CLIP_NONE`, `ADOPT_CLIP_CONSTANT` or
    /// `ADOPT_CLIP_POWER` (the default).
    pub clip: u32,
    /// Learning rate; a finite number >= 0. Default `1e-3`.
    pub lr: f64,
    /// β1, in `[0, 1)`. Default `0.9`.
    pub beta1: f64,
    /// β2, in `[0, 1)`. Default `0.9999`.
    pub beta2: f64,
    /// Floor of the denominator `max(sqrt(v), eps)`; a finite number >= 0.
    /// Default `1e-6`.
    pub eps: f64,
    /// Weight decay; a finite number >= 0. Default `0` (off).
    pub weight_decay: f64,
    /// The constant threshold (`ADOPT_CLIP_CONSTANT`) or the factor
    /// (`ADOPT_CLIP_POWER`); unused for `ADOPT_CLIP_NONE`. Default `1.0`.
    /// A custom schedule: evaluate it yourself and set an
    /// `ADOPT_CLIP_CONSTANT` threshold before each step.
    pub clip_scale: f64,
    /// The power of `t` (`ADOPT_CLIP_POWER` only). Default `0.25`.
    pub clip_exponent: f64,
    /// The schedule's peak learning rate (`ADOPT_DECAY_CORRECTED` only); a
    /// finite number > 0, or `0` (the default) for the group's initial
    /// learning rate (as timm takes it; a single step, which has no group,
    /// refuses it).
    pub max_lr: f64,
    /// Added to the step count the clip schedule is evaluated at: 0 (the
    /// default) as the reference and timm, 1 as pytorch-optimizer.
    pub clip_offset: u64,
    /// How decoupled decay is scaled: `ADOPT_DECAY_LR` (the default),
    /// `ADOPT_DECAY_FIXED` or `ADOPT_DECAY_CORRECTED`; must be
    /// `ADOPT_DECAY_LR` for L2 decay.
    pub decay_scaling: u32,
    /// 1: decoupled (AdamW-style) decay; 0 (default): L2 decay.
    pub decouple: u32,
    /// 1: ascend instead of descend. Default 0.
    pub maximize: u32,
    /// 1: Nesterov momentum (optax). Default 0.
    pub nesterov: u32,
    /// Cautious masking: `ADOPT_CAUTION_OFF` (the default),
    /// `ADOPT_CAUTION_TIMM` or `ADOPT_CAUTION_PYTORCH_OPTIMIZER`.
    pub caution: u32,
    /// 1: decoupled decay on the first step too (pytorch-optimizer's
    /// `weight_decouple`); needs `decouple` = 1. Default 0.
    pub first_step_decay: u32,
}

/// A [`Hyper`] with a [`Clip::Custom`] schedule (a Rust function) has no C
/// form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CustomClipError;

impl core::fmt::Display for CustomClipError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("a custom clip schedule (a Rust function) has no C form")
    }
}

impl core::error::Error for CustomClipError {}

impl TryFrom<&Hyper> for AdoptHyper {
    type Error = CustomClipError;

    /// The C form, or [`CustomClipError`] for a [`Clip::Custom`] schedule.
    fn try_from(h: &Hyper) -> Result<AdoptHyper, CustomClipError> {
        let (clip, clip_scale, clip_exponent) = match h.clip {
            Clip::None => (ADOPT_CLIP_NONE, 1.0, 0.25),
            Clip::Custom(_) => return Err(CustomClipError),
            Clip::Constant(c) => (ADOPT_CLIP_CONSTANT, c, 0.25),
            Clip::Power { scale, exponent } => (ADOPT_CLIP_POWER, scale, exponent),
        };
        let (weight_decay, decouple, decay_scaling, max_lr, first_step) = match h.weight_decay {
            WeightDecay::None => (0.0, false, ADOPT_DECAY_LR, 0.0, false),
            WeightDecay::L2(wd) => (wd, false, ADOPT_DECAY_LR, 0.0, false),
            WeightDecay::Decoupled {
                weight_decay,
                scaling,
                first_step,
            } => {
                let (scaling, max_lr) = match scaling {
                    DecayScaling::Lr => (ADOPT_DECAY_LR, 0.0),
                    DecayScaling::Fixed => (ADOPT_DECAY_FIXED, 0.0),
                    DecayScaling::Corrected { max_lr } => {
                        (ADOPT_DECAY_CORRECTED, max_lr.unwrap_or(0.0))
                    }
                };
                (weight_decay, true, scaling, max_lr, first_step)
            }
        };
        Ok(AdoptHyper {
            size: core::mem::size_of::<AdoptHyper>() as u32,
            clip,
            lr: h.lr,
            beta1: h.betas.0,
            beta2: h.betas.1,
            eps: h.eps,
            weight_decay,
            clip_scale,
            clip_exponent,
            max_lr,
            clip_offset: h.clip_offset,
            decay_scaling,
            decouple: decouple.into(),
            maximize: h.maximize.into(),
            nesterov: h.nesterov.into(),
            caution: match h.caution {
                Caution::Off => ADOPT_CAUTION_OFF,
                Caution::Timm => ADOPT_CAUTION_TIMM,
                Caution::PytorchOptimizer => ADOPT_CAUTION_PYTORCH_OPTIMIZER,
            },
            first_step_decay: first_step.into(),
        })
    }
}

/// A flag's value: 0 or 1, anything else refused (naming `{prefix}{name}`).
pub(super) fn flag(prefix: &str, name: &str, value: u32) -> Result<bool, Fail> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Fail::invalid(format!(
            "{prefix}{name} is {value}: must be 0 or 1"
        ))),
    }
}

impl AdoptHyper {
    /// The `Hyper` these fields describe. Checks the enumeration values
    /// and flags; the numbers are checked where a `Hyper` is used.
    fn to_hyper(self) -> Result<Hyper, Fail> {
        let flag = |name: &str, value: u32| flag("hyper.", name, value);
        let clip = match self.clip {
            ADOPT_CLIP_NONE => Clip::None,
            ADOPT_CLIP_CONSTANT => Clip::Constant(self.clip_scale),
            ADOPT_CLIP_POWER => Clip::Power {
                scale: self.clip_scale,
                exponent: self.clip_exponent,
            },
            other => {
                return Err(Fail::invalid(format!(
                    "hyper.clip is {other}: must be ADOPT_CLIP_NONE (0), ADOPT_CLIP_CONSTANT (1) or ADOPT_CLIP_POWER (2)"
                )));
            }
        };
        let scaling = match self.decay_scaling {
            ADOPT_DECAY_LR => DecayScaling::Lr,
            ADOPT_DECAY_FIXED => DecayScaling::Fixed,
            ADOPT_DECAY_CORRECTED => DecayScaling::Corrected {
                max_lr: (self.max_lr.to_bits() != 0).then_some(self.max_lr),
            },
            other => {
                return Err(Fail::invalid(format!(
                    "hyper.decay_scaling is {other}: must be ADOPT_DECAY_LR (0), ADOPT_DECAY_FIXED (1) or ADOPT_DECAY_CORRECTED (2)"
                )));
            }
        };
        let decouple = flag("decouple", self.decouple)?;
        let first_step = flag("first_step_decay", self.first_step_decay)?;
        if !decouple && (scaling != DecayScaling::Lr || first_step) {
            return Err(Fail::invalid(
                "hyper.decay_scaling and hyper.first_step_decay apply to decoupled decay only: set hyper.decouple = 1, or leave them at their defaults".into(),
            ));
        }
        let weight_decay = match (self.weight_decay, decouple) {
            (0.0, false) => WeightDecay::None,
            (wd, false) => WeightDecay::L2(wd),
            (weight_decay, true) => WeightDecay::Decoupled {
                weight_decay,
                scaling,
                first_step,
            },
        };
        let caution = match self.caution {
            ADOPT_CAUTION_OFF => Caution::Off,
            ADOPT_CAUTION_TIMM => Caution::Timm,
            ADOPT_CAUTION_PYTORCH_OPTIMIZER => Caution::PytorchOptimizer,
            other => {
                return Err(Fail::invalid(format!(
                    "hyper.caution is {other}: must be ADOPT_CAUTION_OFF (0), ADOPT_CAUTION_TIMM (1) or ADOPT_CAUTION_PYTORCH_OPTIMIZER (2)"
                )));
            }
        };
        Ok(Hyper {
            lr: self.lr,
            betas: (self.beta1, self.beta2),
            eps: self.eps,
            weight_decay,
            maximize: flag("maximize", self.maximize)?,
            clip,
            clip_offset: self.clip_offset,
            nesterov: flag("nesterov", self.nesterov)?,
            caution,
        })
    }
}

/// Copies in the hyperparameters a pointer refers to.
///
/// # Safety
///
/// A non-null `hyper` points to an `AdoptHyper`.
pub(super) unsafe fn read_hyper(hyper: *const AdoptHyper) -> Result<Hyper, Fail> {
    check_one("hyper", hyper)?;
    // SAFETY: non-null and aligned (check_one); the caller's struct starts
    // with its `size`, a u32 every version has.
    let size = unsafe { hyper.cast::<u32>().read() };
    let known = core::mem::size_of::<AdoptHyper>();
    if size as usize != known {
        return Err(Fail::invalid(format!(
            "hyper.size is {size}: this library reads an AdoptHyper of {known} bytes (initialise it with adopt_hyper_default(), and build against this library's adopt.h)"
        )));
    }
    // SAFETY: valid for the whole struct (the caller, and `size`); every
    // bit pattern of the f64, u64 and u32 fields is a valid value.
    unsafe { hyper.read() }.to_hyper()
}

/// The hyperparameters the reference implementation uses by default.
#[unsafe(no_mangle)]
pub extern "C" fn adopt_hyper_default() -> AdoptHyper {
    AdoptHyper::try_from(&Hyper::default()).expect("the default clip is a power")
}
