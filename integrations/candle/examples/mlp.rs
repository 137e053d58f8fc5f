//! Trains a small MLP with ADOPT on generated data in candle and prints the
//! loss: `cargo run --release -p adopt-candle --example mlp`.

use adopt_candle::{Adopt, Hyper};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap, linear};

/// Inputs in [-1, 1)² and the target `sin(3x) · cos(2y)`.
fn data(n: usize, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
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
    Ok((
        Tensor::from_vec(xs, (n, 2), device)?,
        Tensor::from_vec(ys, (n, 1), device)?,
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let (xs, ys) = data(1024, &device)?;
    let weights = VarMap::new();
    let vb = VarBuilder::from_varmap(&weights, DType::F32, &device);
    let l1 = linear(2, 64, vb.pp("l1"))?;
    let l2 = linear(64, 64, vb.pp("l2"))?;
    let l3 = linear(64, 1, vb.pp("l3"))?;
    let model = |x: &Tensor| -> candle_core::Result<Tensor> {
        l3.forward(&l2.forward(&l1.forward(x)?.relu()?)?.relu()?)
    };
    let hyper = Hyper {
        lr: 3e-3,
        ..Hyper::default()
    };
    let mut opt = Adopt::from_varmap(&weights, hyper)?;
    let first = candle_nn::loss::mse(&model(&xs)?, &ys)?.to_scalar::<f32>()?;
    println!("step    0: loss {first:.5}");
    let mut last = first;
    for step in 1..=500 {
        let loss = candle_nn::loss::mse(&model(&xs)?, &ys)?;
        opt.backward_step(&loss)?;
        if step % 100 == 0 {
            last = candle_nn::loss::mse(&model(&xs)?, &ys)?.to_scalar::<f32>()?;
            println!("step {step:4}: loss {last:.5}");
        }
    }
    if last.is_nan() || last >= first / 4.0 {
        return Err(format!("the loss did not fall enough: {first} -> {last}").into());
    }
    Ok(())
}
