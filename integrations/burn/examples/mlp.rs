//! Trains a small MLP with ADOPT on generated data in burn (Flex CPU
//! backend) and prints the loss: `cargo run --release -p adopt-burn
//! --example mlp`.

use adopt_burn::{Adopt, Hyper};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

/// Two hidden layers of 64.
#[derive(Module, Debug)]
struct Mlp {
    l1: Linear,
    l2: Linear,
    l3: Linear,
    relu: Relu,
}

impl Mlp {
    fn new(device: &Device) -> Self {
        Self {
            l1: LinearConfig::new(2, 64).init(device),
            l2: LinearConfig::new(64, 64).init(device),
            l3: LinearConfig::new(64, 1).init(device),
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self.relu.forward(self.l1.forward(x));
        let x = self.relu.forward(self.l2.forward(x));
        self.l3.forward(x)
    }
}

/// Inputs in [-1, 1)² and the target `sin(3x) · cos(2y)`.
fn data(n: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let xs: Vec<f32> = (0..2 * n).map(|_| next()).collect();
    let ys: Vec<f32> = xs
        .chunks(2)
        .map(|p| (3.0 * p[0]).sin() * (2.0 * p[1]).cos())
        .collect();
    (
        Tensor::from_data(TensorData::new(xs, [n, 2]), device),
        Tensor::from_data(TensorData::new(ys, [n, 1]), device),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::default().autodiff();
    let (xs, ys) = data(1024, &device);
    let mut model = Mlp::new(&device);
    let mut opt = Adopt::new(Hyper::default())?.init();
    let lr = 3e-3;
    let loss_of = |model: &Mlp| (model.forward(xs.clone()) - ys.clone()).square().mean();
    let scalar = |loss: Tensor<1>| -> Result<f32, Box<dyn std::error::Error>> {
        Ok(loss.into_data().convert::<f32>().try_into_vec::<f32>()?[0])
    };
    let first = scalar(loss_of(&model))?;
    println!("step    0: loss {first:.5}");
    let mut last = first;
    for step in 1..=500 {
        let loss = loss_of(&model);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = opt.step(lr, model, grads);
        if step % 100 == 0 {
            last = scalar(loss_of(&model))?;
            println!("step {step:4}: loss {last:.5}");
        }
    }
    if last.is_nan() || last >= first / 4.0 {
        return Err(format!("the loss did not fall enough: {first} -> {last}").into());
    }
    Ok(())
}
