//! The one error type of the crate.

use core::fmt;

/// An f64 carried by an [`Error`]: equal to another when their bits are
/// equal or both are NaN (NaN payloads and signs are not meaningful), so
/// errors can derive `Eq`.
///
/// ```
/// use adopt::Float;
/// assert_eq!(Float(f64::NAN), Float(-f64::NAN));
/// assert_ne!(Float(0.0), Float(-0.0));
/// assert_eq!(Float(1.5).to_string(), "1.5");
/// assert_eq!(Float(1e40).to_string(), "1e40");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Float(pub f64);

impl PartialEq for Float {
    fn eq(&self, other: &Float) -> bool {
        self.0.to_bits() == other.0.to_bits() || (self.0.is_nan() && other.0.is_nan())
    }
}

impl Eq for Float {}

impl From<f64> for Float {
    fn from(x: f64) -> Float {
        Float(x)
    }
}

impl fmt::Display for Float {
    /// Plain decimals, and scientific notation for very large and very
    /// small magnitudes (`1e40`, not forty digits).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = self.0.abs();
        if x.is_finite() && x != 0.0 && !(1e-5..1e16).contains(&x) {
            fmt::LowerExp::fmt(&self.0, f)
        } else {
            fmt::Display::fmt(&self.0, f)
        }
    }
}

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

/// Which hyperparameter an [`Error::InvalidHyper`] or
/// [`Error::HyperOverflow`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HyperParam {
    /// [`Hyper::lr`](crate::Hyper::lr).
    Lr,
    /// [`Hyper::eps`](crate::Hyper::eps).
    Eps,
    /// The coefficient of [`Hyper::weight_decay`](crate::Hyper::weight_decay).
    WeightDecay,
    /// The decoupled decay rate derived from `lr` and the coefficient:
    /// `lr·weight_decay`, or as [`DecayScaling`](crate::DecayScaling)
    /// scales it.
    DecayRate,
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
            HyperParam::DecayRate => "the decoupled decay rate (lr·weight_decay, as scaled)",
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
            | HyperParam::DecayRate
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
/// every other NaN (the f64 values they carry are [`Float`]s), so an error
/// holding a NaN value equals itself.
#[derive(Clone, Debug, PartialEq, Eq)]
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
        value: Float,
    },
    /// A hyperparameter, or an f32 constant derived from hyperparameters,
    /// is finite in f64 but beyond the largest f32 (`3.4028235e38`): the
    /// step would compute with infinities. The reference refuses these
    /// too (PyTorch's "cannot be converted to type float without
    /// overflow").
    HyperOverflow {
        /// Which hyperparameter (or derived constant).
        param: HyperParam,
        /// Its value in f64.
        value: Float,
    },
    /// [`DecayScaling::Corrected`](crate::DecayScaling::Corrected) without
    /// `max_lr` outside an [`Adopt`](crate::Adopt) group, which would take
    /// it from the group's initial learning rate: a single-buffer step has
    /// none.
    MaxLrUnset,
    /// The clip threshold evaluated for this step is negative, NaN, or
    /// finite but beyond the largest f32.
    ///
    /// The reference would clamp to an inverted interval and silently flip
    /// the sign of the update (negative thresholds), or refuse (overflow);
    /// this crate refuses all of them.
    InvalidClip {
        /// The step count the schedule was evaluated at (steps already
        /// taken, plus [`Hyper::clip_offset`](crate::Hyper::clip_offset)).
        step: u64,
        /// The threshold the clip schedule returned.
        threshold: Float,
    },
    /// The state's step count is `u64::MAX` and cannot advance.
    StepOverflow,
    /// A kernel this CPU cannot run was asked for: by
    /// [`StepOptions::kernel`](crate::StepOptions::kernel) or
    /// [`Adopt::set_kernel`](crate::Adopt::set_kernel), or
    /// by the `ADOPT_KERNEL` environment variable.
    KernelUnavailable(crate::ids::Kernel),
    /// The `ADOPT_KERNEL` environment variable names no kernel (see
    /// [`Kernel::from_name`](crate::Kernel::from_name)); every step that
    /// uses the active kernel refuses to run until it is fixed (or
    /// [`Kernel::force`](crate::Kernel::force) picks one).
    #[cfg(feature = "std")]
    UnknownKernel {
        /// The variable's value.
        value: std::string::String,
    },
    /// A [`ParamId`](crate::ParamId) the optimizer never issued.
    #[cfg(feature = "alloc")]
    UnknownParam(crate::ids::ParamId),
    /// A [`GroupId`](crate::GroupId) the optimizer never issued.
    #[cfg(feature = "alloc")]
    UnknownGroup(crate::ids::GroupId),
    /// The same parameter appears twice in one step.
    #[cfg(feature = "alloc")]
    DuplicateParam(crate::ids::ParamId),
    /// A [`Layout`](crate::Layout) the optimizer cannot step.
    #[cfg(feature = "alloc")]
    InvalidLayout {
        /// Why.
        reason: &'static str,
    },
    /// An operation does not fit a parameter's layout (for example a
    /// row-listed gradient for a dense parameter).
    #[cfg(feature = "alloc")]
    LayoutMismatch {
        /// The parameter.
        param: crate::ids::ParamId,
        /// Why.
        reason: &'static str,
    },
    /// A step's buffer has another storage type than the parameter was
    /// registered with.
    #[cfg(feature = "alloc")]
    DtypeMismatch {
        /// The parameter.
        param: crate::ids::ParamId,
        /// Which buffer.
        buffer: Buffer,
        /// The registered type.
        expected: crate::lanes::Dtype,
        /// The buffer's type.
        got: crate::lanes::Dtype,
    },
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
    #[cfg(feature = "alloc")]
    Checkpoint(CheckpointError),
    /// A row-sparse step ([`adopt_step_rows`](crate::adopt_step_rows)) lists
    /// a row the table does not have.
    #[cfg(feature = "alloc")]
    RowOutOfRange {
        /// The first row index in the list that is out of range.
        row: u32,
        /// The rows of the table.
        rows: usize,
    },
    /// A row-sparse step's table does not have the lanes of its state's
    /// `rows × dim`.
    #[cfg(feature = "alloc")]
    TableMismatch {
        /// The state's rows.
        rows: usize,
        /// The state's lanes per row.
        dim: usize,
        /// The table's lanes.
        got: usize,
    },
    /// A row-sparse step's gradients are not one block of `dim` lanes per
    /// listed row.
    #[cfg(feature = "alloc")]
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
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// The checkpoint has another number of parameter groups than the
    /// optimizer it is loaded into.
    GroupCountMismatch {
        /// The optimizer's groups.
        expected: u32,
        /// The checkpoint's groups.
        got: u32,
    },
    /// The checkpoint has another number of parameters than the optimizer
    /// it is loaded into.
    ParamCountMismatch {
        /// The optimizer's parameters.
        expected: u64,
        /// The checkpoint's parameters.
        got: u64,
    },
    /// A parameter is in another group in the checkpoint.
    GroupMismatch {
        /// The registered parameter's index.
        param: u32,
        /// The group the optimizer has it in.
        expected: u32,
        /// The group the checkpoint has it in.
        got: u32,
    },
    /// A parameter has other lanes in the checkpoint.
    LanesMismatch {
        /// The registered parameter's index.
        param: u32,
        /// The lanes the optimizer registered.
        expected: u64,
        /// The lanes the checkpoint holds.
        got: u64,
    },
    /// A parameter has another [`Layout`](crate::Layout) in the checkpoint
    /// (storage types, shape, master copy or rounding).
    LayoutMismatch {
        /// The registered parameter's index.
        param: u32,
    },
    /// A parameter is named differently in the checkpoint: it would receive
    /// another parameter's state.
    #[cfg(feature = "alloc")]
    NameMismatch {
        /// The parameter's index.
        param: u32,
        /// Its registered name.
        expected: alloc::string::String,
        /// The checkpoint's name at that index.
        got: alloc::string::String,
    },
    /// Loading by name: a name one side has and the other lacks.
    #[cfg(feature = "alloc")]
    NameNotFound {
        /// The name (empty for an unnamed parameter facing a named one).
        name: alloc::string::String,
    },
    /// Loading by name: two parameters on one side have the same name.
    #[cfg(feature = "alloc")]
    DuplicateName {
        /// The name.
        name: alloc::string::String,
    },
    /// A group uses [`Clip::Custom`](crate::Clip::Custom), a function, which
    /// cannot be saved.
    CustomClip {
        /// The group's index.
        group: u32,
    },
}

#[cfg(feature = "alloc")]
impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
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
            CheckpointError::GroupCountMismatch { expected, got } => write!(
                f,
                "checkpoint holds {got} parameter groups, the optimizer has {expected}"
            ),
            CheckpointError::ParamCountMismatch { expected, got } => write!(
                f,
                "checkpoint holds {got} parameters, the optimizer has {expected}"
            ),
            CheckpointError::GroupMismatch {
                param,
                expected,
                got,
            } => write!(
                f,
                "checkpoint has parameter {param} in group {got}, the optimizer in group {expected}"
            ),
            CheckpointError::LanesMismatch {
                param,
                expected,
                got,
            } => write!(
                f,
                "checkpoint parameter {param} has {got} lanes, the optimizer registered {expected}"
            ),
            CheckpointError::LayoutMismatch { param } => write!(
                f,
                "checkpoint parameter {param} has another layout than the optimizer registered"
            ),
            #[cfg(feature = "alloc")]
            CheckpointError::NameMismatch {
                param,
                expected,
                got,
            } => write!(
                f,
                "checkpoint parameter {param} is named {got:?}, the optimizer's parameter {param} {expected:?} (load_by_name matches by name)"
            ),
            #[cfg(feature = "alloc")]
            CheckpointError::NameNotFound { name } => write!(
                f,
                "parameter {name:?} is on one side only (the checkpoint or the optimizer)"
            ),
            #[cfg(feature = "alloc")]
            CheckpointError::DuplicateName { name } => {
                write!(f, "two parameters are named {name:?}")
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
        match self {
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
            Error::HyperOverflow { param, value } => write!(
                f,
                "hyperparameter {param} = {value} overflows f32 (the largest f32 is {:e})",
                f32::MAX
            ),
            Error::MaxLrUnset => f.write_str(
                "DecayScaling::Corrected without max_lr: a single-buffer step has no initial learning rate to take it from (set max_lr, or step through Adopt)",
            ),
            Error::InvalidClip { step, threshold }
                if threshold.0.is_finite() && threshold.0 > f32::MAX as f64 =>
            {
                write!(
                    f,
                    "clip threshold at step {step} is {threshold}, which overflows f32 (the largest f32 is {:e}; +inf means no clipping)",
                    f32::MAX
                )
            }
            Error::InvalidClip { step, threshold } => write!(
                f,
                "clip threshold at step {step} is {threshold}: must be >= 0 and not NaN"
            ),
            Error::StepOverflow => f.write_str("step count is u64::MAX and cannot advance"),
            Error::KernelUnavailable(kernel) => {
                write!(f, "kernel {} is not available on this CPU", kernel.name())
            }
            #[cfg(feature = "std")]
            Error::UnknownKernel { value } => write!(
                f,
                "ADOPT_KERNEL={value:?} names no kernel: use one of portable, avx2+fma, avx512f, neon (any case), or unset it"
            ),
            #[cfg(feature = "alloc")]
            Error::UnknownParam(id) => write!(f, "unknown parameter id {}", id.0),
            #[cfg(feature = "alloc")]
            Error::UnknownGroup(id) => write!(f, "unknown group id {}", id.0),
            #[cfg(feature = "alloc")]
            Error::InvalidLayout { reason } => write!(f, "invalid layout: {reason}"),
            #[cfg(feature = "alloc")]
            Error::LayoutMismatch { param, reason } => {
                write!(f, "parameter id {}: {reason}", param.0)
            }
            #[cfg(feature = "alloc")]
            Error::DtypeMismatch {
                param,
                buffer,
                expected,
                got,
            } => write!(
                f,
                "parameter id {}: {buffer} are {got}, but the parameter was registered with {expected}",
                param.0
            ),
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
            #[cfg(feature = "alloc")]
            Error::Checkpoint(e) => e.fmt(f),
            #[cfg(feature = "alloc")]
            Error::RowOutOfRange { row, rows } => {
                write!(f, "row {row} is out of range for a table of {rows} rows")
            }
            #[cfg(feature = "alloc")]
            Error::TableMismatch { rows, dim, got } => write!(
                f,
                "table has {got} lanes, expected {rows} rows of {dim} lanes (the state's shape)"
            ),
            #[cfg(feature = "alloc")]
            Error::RowBlocksMismatch { rows, dim, got } => write!(
                f,
                "grads has {got} lanes, expected {rows} rows of {dim} lanes"
            ),
        }
    }
}

impl core::error::Error for Error {}
