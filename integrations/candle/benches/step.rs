//! One optimizer step of an MLP's Vars (784 → 1024 → 1024 → 10, 1.86M
//! f32 parameters in 6 Vars): adopt-candle's ADOPT against candle-nn's own
//! AdamW, on two copies of the same model with the same gradients.
//! Interleaved (ADOPT, AdamW, ADOPT, ...), medians of each and the median
//! of the per-round ratios, in one run.
//!
//! `cargo bench -p adopt-candle --bench step`

use std::time::Instant;

use adopt_candle::{Adopt, Hyper};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

const LAYERS: [(usize, usize); 3] = [(784, 1024), (1024, 1024), (1024, 10)];
const ROUNDS: usize = 41;

fn model(device: &Device) -> candle_core::Result<Vec<Var>> {
    let mut vars = Vec::new();
    for (k, &(fan_in, fan_out)) in LAYERS.iter().enumerate() {
        let scale = 1.0 / (fan_in as f64).sqrt();
        let w = Tensor::rand(-scale, scale, (fan_out, fan_in), device)?.to_dtype(DType::F32)?;
        let b = Tensor::full(0.01f32 * k as f32, fan_out, device)?;
        vars.push(Var::from_tensor(&w)?);
        vars.push(Var::from_tensor(&b)?);
    }
    Ok(vars)
}

/// The gradients of a loss on a batch of generated inputs.
fn grads(vars: &[Var], device: &Device) -> candle_core::Result<GradStore> {
    let mut x = Tensor::rand(-1f32, 1f32, (64, 784), device)?;
    for (k, pair) in vars.chunks(2).enumerate() {
        x = x
            .matmul(&pair[0].as_tensor().t()?)?
            .broadcast_add(pair[1].as_tensor())?;
        if k + 1 < LAYERS.len() {
            x = x.relu()?;
        }
    }
    x.sqr()?.mean_all()?.backward()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let a_vars = model(&device)?;
    let w_vars: Vec<Var> = a_vars
        .iter()
        .map(|v| Var::from_tensor(&v.as_tensor().copy()?))
        .collect::<candle_core::Result<_>>()?;
    let a_grads = grads(&a_vars, &device)?;
    let w_grads = grads(&w_vars, &device)?;
    let lanes: usize = a_vars.iter().map(|v| v.elem_count()).sum();

    let mut adopt = Adopt::new(a_vars, Hyper::default())?;
    let mut adamw = AdamW::new(w_vars, ParamsAdamW::default())?;
    // Warm up: the states exist, the pages are touched.
    for _ in 0..3 {
        adopt.step(&a_grads)?;
        adamw.step(&w_grads)?;
    }
    let (mut ta, mut tw, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        adopt.step(&a_grads)?;
        let a = t.elapsed().as_secs_f64();
        let t = Instant::now();
        adamw.step(&w_grads)?;
        let w = t.elapsed().as_secs_f64();
        ta.push(a);
        tw.push(w);
        ratio.push(w / a);
    }
    let (a, w, r) = (median(&mut ta), median(&mut tw), median(&mut ratio));
    println!(
        "candle MLP step, {lanes} f32 parameters in 6 Vars, {ROUNDS} interleaved rounds (medians)"
    );
    println!(
        "  adopt-candle ADOPT  {:9.3} ms  {:6.2} Gelem/s",
        a * 1e3,
        lanes as f64 / a / 1e9
    );
    println!(
        "  candle-nn AdamW     {:9.3} ms  {:6.2} Gelem/s",
        w * 1e3,
        lanes as f64 / w / 1e9
    );
    println!("  AdamW / ADOPT (median of per-round ratios): {r:.2}x");
    Ok(())
}
