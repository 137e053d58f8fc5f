//! The one error type of the crate.

use core::fmt;

/// Which caller buffer a [`Error::LengthMismatch`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Buffer {
    /// The parameter slice handed to [`Adopt::step`](crate::Adopt::step),
    /// against the lanes it was registered with.
    Params,
    /// The gradient slice passed next to the parameters.
    Grads,
    /// The first moment `m` (`exp_avg`) held by the state.
    ExpAvg,
    /// The second moment `v` (`exp_avg_sq`) held by the state.
    ExpAvgSq,
}

impl Buffer {
    /// The buffer's name as the reference implementation spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Buffer::Params => "params",
            Buffer::Grads => "grads",
            Buffer::ExpAvg => "exp_avg",
            Buffer::ExpAvgSq => "exp_avg_sq",
        }
    }
}

impl fmt::Display for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which hyperparameter an [`Error::InvalidHyper`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HyperParam {
    /// [`Hyper::lr`](crate::Hyper::lr).
    Lr,
    /// [`Hyper::eps`](crate::Hyper::eps).
    Eps,
    /// [`Hyper::weight_decay`](crate::Hyper::weight_decay).
    WeightDecay,
    /// `betas.0` of [`Hyper::betas`](crate::Hyper::betas).
    Beta1,
    /// `betas.1` of [`Hyper::betas`](crate::Hyper::betas).
    Beta2,
    /// The `scale` of [`Clip::Power`](crate::Clip::Power).
    ClipScale,
    /// The `exponent` of [`Clip::Power`](crate::Clip::Power).
    ClipExponent,
    /// [`Scaling::inv_scale`](crate::Scaling::inv_scale).
    InvScale,
    /// `max_lr` of [`DecayScaling::Corrected`](crate::DecayScaling::Corrected).
    MaxLr,
}

impl HyperParam {
    /// The parameter's name, as written in [`Hyper`](crate::Hyper).
    pub const fn name(self) -> &'static str {
        match self {
            HyperParam::Lr => "lr",
            HyperParam::Eps => "eps",
            HyperParam::WeightDecay => "weight_decay",
            HyperParam::Beta1 => "betas.0",
            HyperParam::Beta2 => "betas.1",
            HyperParam::ClipScale => "clip scale",
            HyperParam::ClipExponent => "clip exponent",
            HyperParam::InvScale => "inv_scale",
            HyperParam::MaxLr => "max_lr",
        }
    }

    /// The range of values the parameter accepts, in words.
    pub const fn valid_range(self) -> &'static str {
        match self {
            HyperParam::Lr
            | HyperParam::Eps
            | HyperParam::WeightDecay
            | HyperParam::ClipScale
            | HyperParam::InvScale => "a finite number >= 0",
            HyperParam::Beta1 | HyperParam::Beta2 => "a number in [0, 1)",
            HyperParam::ClipExponent => "a finite number",
            HyperParam::MaxLr => "a finite number > 0",
        }
    }
}

impl fmt::Display for HyperParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong in a step.
///
/// Every check runs before the first write: when a function of this crate
/// returns an `Error`, the parameters, the optimizer state and its step count
/// are exactly as they were before the call.
///
/// ```
/// use adopt::{adopt_step, Buffer, Error, Hyper, State};
///
/// let mut params = vec![1.0_f32; 4];
/// let grads = vec![0.5_f32; 3]; // one short
/// let mut state = State::new(4);
/// let err = adopt_step(&mut params, &grads, &mut state, &Hyper::default()).unwrap_err();
/// assert_eq!(err, Error::LengthMismatch { buffer: Buffer::Grads, expected: 4, got: 3 });
/// assert_eq!(params, vec![1.0; 4]);
/// assert_eq!(state.step(), 0);
/// println!("{err}"); // "grads has 3 lanes, expected 4 (the length of params)"
/// ```
///
/// Errors compare equal when their fields are equal, with every NaN equal to
/// every other NaN (NaN payloads and signs are not meaningful), so an error
/// holding a NaN value equals itself.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Error {
    /// A buffer's length differs from the number of parameter lanes.
    LengthMismatch {
        /// The buffer whose length is wrong.
        buffer: Buffer,
        /// The number of lanes of the parameters.
        expected: usize,
        /// The buffer's length.
        got: usize,
    },
    /// A hyperparameter is NaN, infinite or outside its range
    /// (see [`HyperParam::valid_range`]).
    InvalidHyper {
        /// Which hyperparameter.
        param: HyperParam,
        /// The value given.
        value: f64,
    },
    /// The clip threshold evaluated for this step is negative or NaN.
    ///
    /// The reference would clamp to an inverted interval and silently flip
    /// the sign of the update; this crate refuses instead.
    InvalidClip {
        /// The step count the threshold was evaluated at (steps already taken).
        step: u64,
        /// The threshold the clip schedule returned.
        threshold: f64,
    },
    /// The state's step count is `u64::MAX` and cannot advance.
    StepOverflow,
    /// [`adopt_step_with`](crate::adopt_step_with) was asked for a kernel
    /// this CPU cannot run.
    KernelUnavailable(crate::Kernel),
    /// A [`ParamId`](crate::ParamId) the optimizer never issued.
    #[cfg(feature = "alloc")]
    UnknownParam(crate::ParamId),
    /// A [`GroupId`](crate::GroupId) the optimizer never issued.
    #[cfg(feature = "alloc")]
    UnknownGroup(crate::GroupId),
    /// The same parameter appears twice in one step.
    #[cfg(feature = "alloc")]
    DuplicateParam(crate::ParamId),
    /// A supplied [`CautionMask`](crate::CautionMask) is impossible: more
    /// lanes kept than it has, or fewer lanes than this shard.
    InvalidCautionMask {
        /// The mask's count.
        count: u64,
        /// The mask's lanes.
        lanes: u64,
        /// The lanes of the buffer being stepped.
        shard: u64,
    },
    /// A checkpoint could not be written or read; see [`CheckpointError`].
    Checkpoint(CheckpointError),
    /// A row-sparse step ([`adopt_step_rows`](crate::adopt_step_rows)) lists
    /// a row the table does not have.
    RowOutOfRange {
        /// The first row index in the list that is out of range.
        row: u32,
        /// The rows of the table.
        rows: usize,
    },
    /// A row-sparse step's gradients are not one block of `dim` lanes per
    /// listed row.
    RowBlocksMismatch {
        /// The number of rows listed.
        rows: usize,
        /// The lanes per row.
        dim: usize,
        /// The gradient's length.
        got: usize,
    },
}

/// What is wrong with a checkpoint (see [`checkpoint`](crate::checkpoint)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The data does not start with the magic bytes `ADOPTCK\0`.
    BadMagic,
    /// A format version this build cannot read (newer than it knows).
    UnsupportedVersion(u32),
    /// The data ends before the structure it describes.
    Truncated,
    /// Bytes follow the end of the checkpoint.
    TrailingBytes,
    /// The CRC-32 over the data does not match: the bytes were changed.
    ChecksumMismatch {
        /// The checksum stored in the checkpoint.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// A field holds an impossible value (a named reason).
    Malformed(&'static str),
    /// The checkpoint's parameters do not match the registered ones.
    ShapeMismatch {
        /// The parameter index, or `u32::MAX` for the parameter count.
        param: u32,
        /// What the optimizer has registered.
        expected: u64,
        /// What the checkpoint holds.
        got: u64,
    },
    /// A group uses [`Clip::Custom`](crate::Clip::Custom), a function, which
    /// cannot be saved.
    CustomClip {
        /// The group's index.
        group: u32,
    },
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CheckpointError::BadMagic => f.write_str("not an adopt checkpoint (bad magic bytes)"),
            CheckpointError::UnsupportedVersion(v) => write!(
                f,
                "checkpoint format version {v} is newer than this build reads"
            ),
            CheckpointError::Truncated => f.write_str("checkpoint is truncated"),
            CheckpointError::TrailingBytes => f.write_str("checkpoint has trailing bytes"),
            CheckpointError::ChecksumMismatch { stored, computed } => {
                write!(
                    f,
                    "checkpoint checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the data is corrupt"
                )
            }
            CheckpointError::Malformed(why) => write!(f, "malformed checkpoint: {why}"),
            CheckpointError::ShapeMismatch {
                param: u32::MAX,
                expected,
                got,
            } => {
                write!(
                    f,
                    "checkpoint holds {got} parameters, the optimizer has {expected}"
                )
            }
            CheckpointError::ShapeMismatch {
                param,
                expected,
                got,
            } => {
                write!(
                    f,
                    "checkpoint parameter {param} has {got} lanes, the optimizer registered {expected}"
                )
            }
            CheckpointError::CustomClip { group } => {
                write!(
                    f,
                    "group {group} uses Clip::Custom, a function, which cannot be saved"
                )
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::LengthMismatch {
                buffer,
                expected,
                got,
            } => write!(
                f,
                "{buffer} has {got} lanes, expected {expected} (the length of params)"
            ),
            Error::InvalidHyper { param, value } => write!(
                f,
                "invalid hyperparameter {param} = {value}: must be {}",
                param.valid_range()
            ),
            Error::InvalidClip { step, threshold } => write!(
                f,
                "clip threshold at step {step} is {threshold}: must be >= 0 and not NaN"
            ),
            Error::StepOverflow => f.write_str("step count is u64::MAX and cannot advance"),
            Error::KernelUnavailable(kernel) => {
                write!(f, "kernel {} is not available on this CPU", kernel.name())
            }
            #[cfg(feature = "alloc")]
            Error::UnknownParam(id) => write!(f, "unknown parameter id {}", id.0),
            #[cfg(feature = "alloc")]
            Error::UnknownGroup(id) => write!(f, "unknown group id {}", id.0),
            #[cfg(feature = "alloc")]
            Error::DuplicateParam(id) => {
                write!(f, "parameter id {} appears twice in one step", id.0)
            }
            Error::InvalidCautionMask {
                count,
                lanes,
                shard,
            } => write!(
                f,
                "caution mask of {count} of {lanes} lanes is impossible for a buffer of {shard} lanes"
            ),
            Error::Checkpoint(e) => e.fmt(f),
            Error::RowOutOfRange { row, rows } => {
                write!(f, "row {row} is out of range for a table of {rows} rows")
            }
            Error::RowBlocksMismatch { rows, dim, got } => write!(
                f,
                "grads has {got} lanes, expected {rows} rows of {dim} lanes"
            ),
        }
    }
}

impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        use Error::*;
        match (*self, *other) {
            (
                LengthMismatch {
                    buffer,
                    expected,
                    got,
                },
                LengthMismatch {
                    buffer: b,
                    expected: e,
                    got: g,
                },
            ) => (buffer, expected, got) == (b, e, g),
            (InvalidHyper { param, value }, InvalidHyper { param: p, value: v }) => {
                param == p && same_f64(value, v)
            }
            (
                InvalidClip { step, threshold },
                InvalidClip {
                    step: s,
                    threshold: t,
                },
            ) => step == s && same_f64(threshold, t),
            (StepOverflow, StepOverflow) => true,
            (KernelUnavailable(a), KernelUnavailable(b)) => a == b,
            #[cfg(feature = "alloc")]
            (UnknownParam(a), UnknownParam(b)) | (DuplicateParam(a), DuplicateParam(b)) => a == b,
            #[cfg(feature = "alloc")]
            (UnknownGroup(a), UnknownGroup(b)) => a == b,
            (Checkpoint(a), Checkpoint(b)) => a == b,
            (
                InvalidCautionMask {
                    count,
                    lanes,
                    shard,
                },
                InvalidCautionMask {
                    count: c,
                    lanes: l,
                    shard: s,
                },
            ) => (count, lanes, shard) == (c, l, s),
            (RowOutOfRange { row, rows }, RowOutOfRange { row: r, rows: n }) => {
                (row, rows) == (r, n)
            }
            (
                RowBlocksMismatch { rows, dim, got },
                RowBlocksMismatch {
                    rows: r,
                    dim: d,
                    got: g,
                },
            ) => (rows, dim, got) == (r, d, g),
            _ => false,
        }
    }
}

impl Eq for Error {}

/// Equality for the f64 values errors carry: bit-identical, or both NaN.
fn same_f64(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

impl core::error::Error for Error {}
