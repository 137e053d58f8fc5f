//! Complex parameters as interleaved real lanes (feature `complex`).
//!
//! The reference treats a complex tensor as its real view
//! (`torch.view_as_real`): each `Complex32` is two f32 lanes, `re` then `im`,
//! stepped independently. These functions reinterpret the caller's slices in
//! place through `bytemuck` (no copy), so the state has `2 × elements` lanes
//! and the results are bit-identical to the f32 step on the interleaved
//! lanes.

use crate::error::Error;
use crate::hyper::Hyper;
use crate::state::StateView;
use crate::step::{AsStateView, adopt_step};
/// The complex type this module steps, re-exported from `num-complex`.
pub use num_complex::Complex32;

/// The interleaved f32 lanes of complex values (zero-copy).
///
/// ```
/// use adopt::complex::Complex32;
/// let z = [Complex32::new(1.0, -2.0), Complex32::new(3.0, 4.0)];
/// assert_eq!(adopt::complex::as_lanes(&z), &[1.0, -2.0, 3.0, 4.0]);
/// ```
pub fn as_lanes(values: &[Complex32]) -> &[f32] {
    bytemuck::cast_slice(values)
}

/// The interleaved f32 lanes of complex values, mutable (zero-copy).
pub fn as_lanes_mut(values: &mut [Complex32]) -> &mut [f32] {
    bytemuck::cast_slice_mut(values)
}

/// [`adopt_step`] for complex parameters, over a
/// [`State`](crate::State) or a [`StateView`] of `2 × params.len()` lanes
/// (interleaved `re`, `im`): create it with `State::new(2 * params.len())`.
///
/// ```
/// use adopt::{complex::{adopt_step_complex, Complex32}, Hyper, State};
/// let mut params = vec![Complex32::new(1.0, 1.0); 4];
/// let grads = vec![Complex32::new(0.5, -0.5); 4];
/// let mut state = State::new(2 * params.len());
/// for _ in 0..3 {
///     adopt_step_complex(&mut params, &grads, &mut state, &Hyper::default())?;
/// }
/// assert!(params[0].re < 1.0 && params[0].im > 1.0);
/// # Ok::<(), adopt::Error>(())
/// ```
pub fn adopt_step_complex<S: AsStateView + ?Sized>(
    params: &mut [Complex32],
    grads: &[Complex32],
    state: &mut S,
    hyper: &Hyper,
) -> Result<(), Error> {
    adopt_step(as_lanes_mut(params), as_lanes(grads), state, hyper)
}

/// [`adopt_step_complex`] over a [`StateView`].
#[deprecated(note = "adopt_step_complex takes a StateView too")]
pub fn adopt_step_complex_view(
    params: &mut [Complex32],
    grads: &[Complex32],
    state: &mut StateView<'_>,
    hyper: &Hyper,
) -> Result<(), Error> {
    adopt_step_complex(params, grads, state, hyper)
}
