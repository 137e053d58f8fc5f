//! The ADOPT optimizer for [burn](https://burn.dev) 0.22: [`Adopt`]
//! implements burn's per-tensor [`Optimizer`] trait over the [`adopt`]
//! core, so burn's [`ModuleOptimizer`] drives it (parameter groups,
//! learning-rate schedules, gradient clipping) and its state is a burn
//! record ([`RecordState`]): `ModuleOptimizer::to_record` / `into_bytes`
//! save it with the rest of burn's checkpoints.
//!
//! ```
//! use adopt_burn::{Adopt, Hyper};
//! use burn::module::Param;
//! use burn::optim::GradientsParams;
//! use burn::tensor::{Device, Tensor};
//!
//! let device = Device::default().autodiff();
//! let mut w = Param::from_tensor(Tensor::<1>::from_floats([1.0, -2.0, 3.0], &device));
//! let mut opt = Adopt::new(Hyper::default())?.init();
//! for _ in 0..3 {
//!     let loss = w.val().square().sum();
//!     let grads = GradientsParams::from_grads(loss.backward(), &w);
//!     w = opt.step(0.1, w, grads);
//! }
//! let w: Vec<f32> = w.val().into_data().try_into_vec()?;
//! assert!(w[0] < 1.0 && w[1] > -2.0 && w[2] < 3.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How a step runs, and what it copies
//!
//! burn 0.22's tensors are opaque outside burn: a `Tensor` wraps a
//! type-erased backend primitive with no public access to its buffer, for
//! any backend (Flex, NdArray, GPU), so stepping a parameter's storage in
//! place from outside burn is impossible. Each step reads the parameter
//! and its gradient to host memory ([`Tensor::into_data`]), steps the
//! parameter with [`adopt::adopt_step`] there, and makes a tensor of the
//! result on the parameter's device ([`Tensor::from_data`]). On the Flex
//! CPU backend `into_data` of a uniquely held tensor and `from_data` move
//! the buffer where burn can; `benches/step.rs` measures what the round
//! trip costs against the step itself (see BENCHMARKS.md). The moments
//! and the step count live in host memory in the [`AdoptState`], in f32,
//! and are never copied by a step.
//!
//! f32 parameters and gradients are stepped as they are, bit-identical to
//! [`adopt::adopt_step`] (the tests check it on Flex and NdArray). Other float dtypes
//! go through an f32 copy rounded back to the parameter's dtype by burn;
//! that path is not tested yet and makes no bit-exactness claim.
//!
//! # Learning rate
//!
//! burn passes the learning rate to every step (a constant or its
//! scheduler's); it replaces [`Hyper::lr`]. Everything else comes from the
//! [`Hyper`] the optimizer was made with (one per parameter group:
//! [`ModuleOptimizer::with_group`]).
//!
//! # Panics
//!
//! burn's [`Optimizer::step`] cannot return an error, so a step that the
//! core refuses (a negative or NaN learning rate, a gradient whose shape
//! is not the parameter's, a state that does not fit the parameter)
//! panics with the core's message; nothing is changed before. The
//! hyperparameters are validated when the optimizer is made
//! ([`Adopt::new`]), and [`Adopt::try_step`] is the fallible step.

use std::fmt;

use adopt::{StateView, adopt_step};
use burn::optim::{LearningRate, ModuleOptimizer, Optimizer, RecordState, StateSink, StateSource};
use burn::tensor::{DType, Device, Tensor, TensorData};
use burn_pack::Scalar;

pub use adopt::Hyper;

/// What went wrong in a step.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The core refused (hyperparameters, lengths).
    Core(adopt::Error),
    /// burn could not read a tensor's data as f32.
    Data(String),
    /// The gradient's shape is not the parameter's.
    GradShape {
        /// The parameter's shape.
        expected: Vec<usize>,
        /// The gradient's.
        found: Vec<usize>,
    },
    /// The state's lanes are not the parameter's (a state loaded for
    /// another parameter).
    StateLanes {
        /// The parameter's lanes.
        expected: usize,
        /// The state's.
        found: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Core(e) => write!(f, "adopt: {e}"),
            Error::Data(e) => write!(f, "adopt-burn: reading a tensor: {e}"),
            Error::GradShape { expected, found } => write!(
                f,
                "adopt-burn: the gradient has shape {found:?}, the parameter {expected:?}"
            ),
            Error::StateLanes { expected, found } => write!(
                f,
                "adopt-burn: the state has {found} lanes, the parameter {expected}"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Core(e) => Some(e),
            _ => None,
        }
    }
}

impl From<adopt::Error> for Error {
    fn from(e: adopt::Error) -> Self {
        Error::Core(e)
    }
}

/// The ADOPT optimizer for one burn parameter group: its [`Hyper`]
/// (whose `lr` burn's step replaces).
#[derive(Clone, Copy, Debug)]
pub struct Adopt {
    hyper: Hyper,
}

impl Adopt {
    /// The optimizer with `hyper`, validated.
    pub fn new(hyper: Hyper) -> Result<Self, Error> {
        let mut opt = adopt::Adopt::new();
        opt.add_group(hyper)?;
        Ok(Self { hyper })
    }

    /// The hyperparameters.
    pub fn hyper(&self) -> &Hyper {
        &self.hyper
    }

    /// burn's module optimizer with this one for every parameter; add
    /// groups with [`ModuleOptimizer::with_group`].
    pub fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }

    /// One step of `tensor` by `grad` at learning rate `lr`: the new
    /// tensor and state, or an error (before anything was computed).
    pub fn try_step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdoptState<D>>,
    ) -> Result<(Tensor<D>, AdoptState<D>), Error> {
        let dims = tensor.dims();
        if grad.dims() != dims {
            return Err(Error::GradShape {
                expected: dims.to_vec(),
                found: grad.dims().to_vec(),
            });
        }
        let lanes: usize = dims.iter().product();
        let mut state = match state {
            Some(s) if s.exp_avg.len() != lanes || s.exp_avg_sq.len() != lanes => {
                return Err(Error::StateLanes {
                    expected: lanes,
                    found: s.exp_avg.len(),
                });
            }
            Some(s) => s,
            None => AdoptState::zeros(lanes),
        };
        let device = tensor.device();
        let dtype = tensor.dtype();
        let mut params = to_f32(tensor.into_data())?;
        let grads = to_f32(grad.into_data())?;
        let grads = grads.as_slice::<f32>().map_err(data)?;
        let hyper = Hyper { lr, ..self.hyper };
        let mut view = StateView::new(&mut state.exp_avg, &mut state.exp_avg_sq, &mut state.step);
        adopt_step(
            params.as_mut_slice::<f32>().map_err(data)?,
            grads,
            &mut view,
            &hyper,
        )?;
        if dtype != DType::F32 {
            params = params.convert_dtype(dtype);
        }
        Ok((Tensor::from_data(params, &device), state))
    }
}

fn data(e: impl fmt::Display) -> Error {
    Error::Data(e.to_string())
}

/// The data as f32 (moved when it already is).
fn to_f32(data: TensorData) -> Result<TensorData, Error> {
    if data.dtype() == DType::F32 {
        Ok(data)
    } else {
        Ok(data.convert_dtype(DType::F32))
    }
}

impl Optimizer for Adopt {
    type State<const D: usize> = AdoptState<D>;

    /// [`Adopt::try_step`]; panics with its error (see the crate docs).
    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        match self.try_step(lr, tensor, grad, state) {
            Ok((tensor, state)) => (tensor, Some(state)),
            Err(e) => panic!("{e}"),
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, _device: &Device) -> Self::State<D> {
        // The state lives in host memory, where the core steps.
        state
    }
}

/// One parameter's ADOPT state: the moments (f32, host memory) and the
/// step count. A burn record: flattened as the tensors `exp_avg` and
/// `exp_avg_sq` (rank 1) and the scalar `step`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdoptState<const D: usize> {
    /// The first moment `m`.
    pub exp_avg: Vec<f32>,
    /// The second moment `v`.
    pub exp_avg_sq: Vec<f32>,
    /// Steps taken.
    pub step: u64,
}

impl<const D: usize> AdoptState<D> {
    /// The state before the first step.
    pub fn zeros(lanes: usize) -> Self {
        Self {
            exp_avg: vec![0.0; lanes],
            exp_avg_sq: vec![0.0; lanes],
            step: 0,
        }
    }
}

impl<const D: usize> RecordState for AdoptState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        let n = self.exp_avg.len();
        out.push_tensor(
            prefix,
            "exp_avg",
            TensorData::new(self.exp_avg.clone(), [n]),
        );
        let n = self.exp_avg_sq.len();
        out.push_tensor(
            prefix,
            "exp_avg_sq",
            TensorData::new(self.exp_avg_sq.clone(), [n]),
        );
        out.push_scalar(prefix, "step", Scalar::from(self.step));
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, _device: &Device) -> Option<Self> {
        let exp_avg = src
            .take_tensor(prefix, "exp_avg")?
            .try_into_vec::<f32>()
            .ok()?;
        let exp_avg_sq = src
            .take_tensor(prefix, "exp_avg_sq")?
            .try_into_vec::<f32>()
            .ok()?;
        let step = u64::try_from(src.take_scalar(prefix, "step")?).ok()?;
        (exp_avg.len() == exp_avg_sq.len()).then_some(Self {
            exp_avg,
            exp_avg_sq,
            step,
        })
    }
}
