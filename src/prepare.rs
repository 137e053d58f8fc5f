//! The one validate-and-derive pipeline every front end calls before it
//! writes anything: the kernel, buffer lengths, the step count, the
//! hyperparameters at this step (f64 to f32 constants, each rounded once),
//! the mixed-precision scaling, and the cautious-masking pre-pass.
//!
//! Nothing here writes to a caller's buffer: on error the front end returns
//! before its first write.

use crate::error::{Buffer, Error};
use crate::hyper::{Caution, CautionMask, Hyper, Scaling, StepConstants};
use crate::kernel::Kernel;

/// The kernel a step asked for, if this CPU can run it, else the active one
/// ([`Kernel::try_active`], which reports a bad `ADOPT_KERNEL`).
pub(crate) fn kernel(requested: Option<Kernel>) -> Result<Kernel, Error> {
    match requested {
        Some(kernel) if !kernel.is_available() => Err(Error::KernelUnavailable(kernel)),
        Some(kernel) => Ok(kernel),
        None => Kernel::try_active(),
    }
}

/// Refuses buffers whose lengths differ from the parameters' (grads first,
/// then `m`, then `v`).
pub(crate) fn lengths(
    params: usize,
    grads: usize,
    exp_avg: usize,
    exp_avg_sq: usize,
) -> Result<(), Error> {
    let lengths = [
        (Buffer::Grads, grads),
        (Buffer::ExpAvg, exp_avg),
        (Buffer::ExpAvgSq, exp_avg_sq),
    ];
    for (buffer, got) in lengths {
        if got != params {
            return Err(Error::LengthMismatch {
                buffer,
                expected: params,
                got,
            });
        }
    }
    Ok(())
}

/// The constants of the step taken after `step` steps: refuses a step count
/// that cannot advance, then derives and validates the hyperparameters'
/// constants, with `scaling`'s `inv_scale` (validated) in them.
pub(crate) fn constants(
    step: u64,
    hyper: &Hyper,
    scaling: Scaling,
) -> Result<StepConstants, Error> {
    if step == u64::MAX {
        return Err(Error::StepOverflow);
    }
    let mut k = hyper.constants(step)?;
    scaling.validate()?;
    k.inv_scale = scaling.inv_scale;
    Ok(k)
}

/// Refuses a supplied shard count that cannot be: more lanes kept than the
/// tensor has, or a tensor smaller than this shard.
pub(crate) fn caution_mask(mask: Option<CautionMask>, shard: usize) -> Result<(), Error> {
    if let Some(mask) = mask
        && (mask.count > mask.lanes || mask.lanes < shard as u64)
    {
        return Err(Error::InvalidCautionMask {
            count: mask.count,
            lanes: mask.lanes,
            shard: shard as u64,
        });
    }
    Ok(())
}

/// The cautious-masking pre-pass of a step after the first: sets
/// `k.caution_scale` from the whole tensor's `mask`, or, without one, from
/// the `count` of this buffer's `lanes` that pass (a read-only pass the
/// caller runs with its kernel). Does nothing without cautious masking or on
/// a first step.
pub(crate) fn caution(
    k: &mut StepConstants,
    lanes: usize,
    mask: Option<CautionMask>,
    count: impl FnOnce(&StepConstants) -> u64,
) {
    if k.caution == Caution::Off || k.step == 0 {
        return;
    }
    let mask = mask.unwrap_or_else(|| CautionMask {
        count: count(k),
        lanes: lanes as u64,
    });
    k.caution_scale = Some(mask.scale(k.caution));
}
