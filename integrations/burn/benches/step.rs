//! One optimizer step of an MLP (784 → 1024 → 1024 → 10, 1.86M f32
//! parameters in 6 tensors) on burn's Flex CPU backend: adopt-burn's ADOPT
//! against burn's own AdamW, on two copies of the same model with the same
//! gradients, through burn's ModuleOptimizer. Interleaved (ADOPT, AdamW,
//! ...), medians and the median of the per-round ratios, in one run.
//!
//! Then what adopt-burn's copies cost: the host round trip alone
//! (`into_data` and `from_data` of every parameter, as a step does) and the
//! core's step alone on host buffers of the same sizes, interleaved too.
//!
//! `cargo bench -p adopt-burn --bench step`

use std::time::Instant;

use adopt::{State, adopt_step};
use adopt_burn::{Adopt, Hyper};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};

const ROUNDS: usize = 31;

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
            l1: LinearConfig::new(784, 1024).init(device),
            l2: LinearConfig::new(1024, 1024).init(device),
            l3: LinearConfig::new(1024, 10).init(device),
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self.relu.forward(self.l1.forward(x));
        let x = self.relu.forward(self.l2.forward(x));
        self.l3.forward(x)
    }
}

fn grads(model: &Mlp, x: &Tensor<2>) -> GradientsParams {
    GradientsParams::from_grads(model.forward(x.clone()).square().mean().backward(), model)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `step` on a fresh set of gradients (computed outside the timing).
fn timed(model: Mlp, opt: &mut ModuleOptimizer, x: &Tensor<2>) -> (Mlp, f64) {
    let g = grads(&model, x);
    let t = Instant::now();
    let model = opt.step(1e-3, model, g);
    (model, t.elapsed().as_secs_f64())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::default().autodiff();
    let x = Tensor::<2>::random(
        [64, 784],
        burn::tensor::Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let mut a_model = Mlp::new(&device);
    let mut w_model = a_model.clone().fork(&device);
    let lanes = a_model.num_params();
    let mut adopt = Adopt::new(Hyper::default())?.init();
    let mut adamw = AdamWConfig::new().init();
    for _ in 0..3 {
        a_model = timed(a_model, &mut adopt, &x).0;
        w_model = timed(w_model, &mut adamw, &x).0;
    }
    let (mut ta, mut tw, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (m, a) = timed(a_model, &mut adopt, &x);
        a_model = m;
        let (m, w) = timed(w_model, &mut adamw, &x);
        w_model = m;
        ta.push(a);
        tw.push(w);
        ratio.push(w / a);
    }
    let (a, w, r) = (median(&mut ta), median(&mut tw), median(&mut ratio));
    println!(
        "burn (Flex) MLP step, {lanes} f32 parameters in 6 tensors, {ROUNDS} interleaved rounds (medians)"
    );
    println!(
        "  adopt-burn ADOPT    {:9.3} ms  {:6.2} Gelem/s",
        a * 1e3,
        lanes as f64 / a / 1e9
    );
    println!(
        "  burn AdamW          {:9.3} ms  {:6.2} Gelem/s",
        w * 1e3,
        lanes as f64 / w / 1e9
    );
    println!("  AdamW / ADOPT (median of per-round ratios): {r:.2}x");

    // The copies: every parameter to host memory and back, against the
    // core's step alone on host buffers of the same sizes.
    let params: Vec<Tensor<1>> = {
        let m = a_model.valid();
        let flat = |t: Tensor<2>| t.flatten::<1>(0, 1);
        vec![
            flat(m.l1.weight.val()),
            m.l1.bias.as_ref().map(|b| b.val()).expect("bias"),
            flat(m.l2.weight.val()),
            m.l2.bias.as_ref().map(|b| b.val()).expect("bias"),
            flat(m.l3.weight.val()),
            m.l3.bias.as_ref().map(|b| b.val()).expect("bias"),
        ]
    };
    let host_device = params[0].device();
    let mut host: Vec<Vec<f32>> = Vec::new();
    for p in &params {
        host.push(p.clone().into_data().try_into_vec::<f32>()?);
    }
    let host_grads: Vec<Vec<f32>> = host
        .iter()
        .map(|h| h.iter().map(|v| v * 1e-3).collect())
        .collect();
    let mut states: Vec<State> = host.iter().map(|h| State::new(h.len())).collect();
    let mut params = params;
    let (mut tc, mut tk, mut cratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        params = params
            .into_iter()
            .map(|p| Tensor::from_data(p.into_data(), &host_device))
            .collect();
        let c = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for ((h, g), s) in host.iter_mut().zip(&host_grads).zip(&mut states) {
            adopt_step(h, g, s, &Hyper::default())?;
        }
        let k = t.elapsed().as_secs_f64();
        tc.push(c);
        tk.push(k);
        cratio.push(c / k);
    }
    let (c, k, cr) = (median(&mut tc), median(&mut tk), median(&mut cratio));
    println!(
        "  host round trip     {:9.3} ms  (into_data + from_data of every parameter)",
        c * 1e3
    );
    println!(
        "  core step alone     {:9.3} ms  (adopt_step on host buffers, one call per tensor)",
        k * 1e3
    );
    println!("  round trip / core step (median of per-round ratios): {cr:.2}x");
    Ok(())
}
