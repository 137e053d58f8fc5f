//! adopt-burn steps a burn module on the Flex and NdArray CPU backends exactly as
//! `adopt::adopt_step` steps the same gradients, bit for bit, through burn's
//! ModuleOptimizer (with parameter groups and a checkpoint round trip), and
//! refuses bad input before computing anything.

use adopt::{Hyper, State, WeightDecay, adopt_step};
use adopt_burn::{Adopt, AdoptState, Error};
use burn::module::{ParamGroup, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};

/// A deterministic pseudo-random sequence in [-scale, scale).
fn noise(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Same bits, any NaN matching any NaN.
fn same_f32(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().expect("f32 data")
}

/// The layer's gradients for a loss on generated inputs.
fn grads_of(layer: &Linear, step: u64, device: &Device) -> GradientsParams {
    let x = Tensor::<2>::from_data(
        TensorData::new(noise(step + 40, 8 * 6, 1.0), [8, 6]),
        device,
    );
    let target = Tensor::<2>::from_data(
        TensorData::new(noise(step + 80, 8 * 5, 1.0), [8, 5]),
        device,
    );
    let loss = (layer.forward(x) - target).square().mean();
    GradientsParams::from_grads(loss.backward(), layer)
}

struct Reference {
    weight: Vec<f32>,
    bias: Vec<f32>,
    weight_state: State,
    bias_state: State,
}

impl Reference {
    fn of(layer: &Linear) -> Self {
        let weight = values(layer.weight.val());
        let bias = values(layer.bias.as_ref().expect("bias").val());
        Self {
            weight_state: State::new(weight.len()),
            bias_state: State::new(bias.len()),
            weight,
            bias,
        }
    }

    fn step(
        &mut self,
        layer: &Linear,
        grads: &GradientsParams,
        lr: f64,
        weights: &Hyper,
        biases: &Hyper,
    ) {
        let ids: (ParamId, ParamId) = (layer.weight.id, layer.bias.as_ref().expect("bias").id);
        let gw = values(grads.get::<2>(ids.0).expect("weight grad"));
        let gb = values(grads.get::<1>(ids.1).expect("bias grad"));
        adopt_step(
            &mut self.weight,
            &gw,
            &mut self.weight_state,
            &Hyper { lr, ..*weights },
        )
        .expect("step");
        adopt_step(
            &mut self.bias,
            &gb,
            &mut self.bias_state,
            &Hyper { lr, ..*biases },
        )
        .expect("step");
    }

    fn matches(&self, layer: &Linear) -> bool {
        same_f32(&values(layer.weight.val()), &self.weight)
            && same_f32(
                &values(layer.bias.as_ref().expect("bias").val()),
                &self.bias,
            )
    }
}

fn hypers() -> (Hyper, Hyper) {
    let biases = Hyper::default();
    let weights = Hyper {
        weight_decay: WeightDecay::decoupled(0.1),
        nesterov: true,
        ..Hyper::default()
    };
    (weights, biases)
}

fn optimizer(layer: &Linear) -> Result<ModuleOptimizer, Error> {
    let (weights, biases) = hypers();
    Ok(Adopt::new(biases)?.init().with_group(
        ParamGroup::from_ids(vec![layer.weight.id]),
        Adopt::new(weights)?,
        None,
    ))
}

/// The CPU backends the bit-for-bit test runs on: Flex (burn's default
/// CPU backend) and NdArray (deprecated in burn 0.22, still shipped).
#[allow(deprecated)]
fn cpu_devices() -> [Device; 2] {
    [Device::flex(), Device::ndarray()]
}

#[test]
fn module_steps_match_adopt_step_bit_for_bit() -> Result<(), Box<dyn std::error::Error>> {
    for device in cpu_devices() {
        let device = device.autodiff();
        let mut layer = LinearConfig::new(6, 5).init(&device);
        let (weights, biases) = hypers();
        let mut opt = optimizer(&layer)?;
        let mut reference = Reference::of(&layer);
        for step in 0..6 {
            let lr = 0.01 / (1.0 + step as f64);
            let grads = grads_of(&layer, step, &device);
            reference.step(&layer, &grads, lr, &weights, &biases);
            layer = opt.step(lr, layer, grads);
            assert!(
                reference.matches(&layer),
                "differs after step {step} on {device:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn the_record_round_trips_the_state() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::default().autodiff();
    let mut layer = LinearConfig::new(6, 5).init(&device);
    let (weights, biases) = hypers();
    let mut opt = optimizer(&layer)?;
    let mut reference = Reference::of(&layer);
    for step in 0..3 {
        let grads = grads_of(&layer, step, &device);
        reference.step(&layer, &grads, 0.01, &weights, &biases);
        layer = opt.step(0.01, layer, grads);
    }
    // burn's own checkpoint of the optimizer, into a fresh optimizer.
    let bytes = opt.into_bytes()?;
    let mut restored = optimizer(&layer)?.from_bytes(bytes)?;
    for step in 3..6 {
        let grads = grads_of(&layer, step, &device);
        reference.step(&layer, &grads, 0.01, &weights, &biases);
        layer = restored.step(0.01, layer, grads);
        assert!(reference.matches(&layer), "differs after step {step}");
    }
    Ok(())
}

#[test]
fn bad_input_is_refused() -> Result<(), Box<dyn std::error::Error>> {
    assert!(matches!(
        Adopt::new(Hyper {
            eps: -1.0,
            ..Hyper::default()
        }),
        Err(Error::Core(_))
    ));
    let device = Device::default();
    let opt = Adopt::new(Hyper::default())?;
    let t = Tensor::<1>::from_floats([1.0, 2.0, 3.0], &device);
    let wrong = Tensor::<1>::from_floats([1.0, 2.0], &device);
    assert!(matches!(
        opt.try_step(0.1, t.clone(), wrong, None),
        Err(Error::GradShape { .. })
    ));
    let g = Tensor::<1>::from_floats([0.5, 0.5, 0.5], &device);
    assert!(matches!(
        opt.try_step(0.1, t.clone(), g.clone(), Some(AdoptState::zeros(2))),
        Err(Error::StateLanes {
            expected: 3,
            found: 2
        })
    ));
    assert!(matches!(
        opt.try_step(-1.0, t.clone(), g.clone(), None),
        Err(Error::Core(_))
    ));
    let (_, state) = opt.try_step(0.1, t, g, None)?;
    assert_eq!(state.step, 1);
    Ok(())
}
