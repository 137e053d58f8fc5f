//! Trains a small multilayer perceptron from scratch with ADOPT.
//!
//! The task is regression of `y = sin(3·x₀)·cos(2·x₁)` on points drawn in the
//! square [-1, 1]², generated here with a seeded generator. The network is
//! 2 → 64 → 64 → 1 with tanh activations; gradients come from hand-written
//! backpropagation, and all weights live in one flat `Vec<f32>` so a single
//! `adopt_step` call updates the whole model.
//!
//! Run it with `cargo run --release --example train`.

use adopt::{Hyper, State, adopt_step};
use std::time::Instant;

const INPUTS: usize = 2;
const HIDDEN: usize = 64;
const BATCH: usize = 256;
const STEPS: usize = 3000;

/// A small, seeded xorshift generator: the example needs no dependency.
struct Rng(u64);

impl Rng {
    fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        self.next_u32() as f32 / 2_147_483_648.0 - 1.0
    }
}

fn target(x: [f32; INPUTS]) -> f32 {
    (3.0 * x[0]).sin() * (2.0 * x[1]).cos()
}

/// Where each layer's weights and biases sit in the flat parameter vector.
#[derive(Clone, Copy)]
struct Layer {
    weights: usize,
    bias: usize,
    inputs: usize,
    outputs: usize,
}

struct Mlp {
    layers: [Layer; 3],
    len: usize,
}

impl Mlp {
    fn new() -> Mlp {
        let sizes = [(INPUTS, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, 1)];
        let mut at = 0;
        let layers = sizes.map(|(inputs, outputs)| {
            let layer = Layer {
                weights: at,
                bias: at + inputs * outputs,
                inputs,
                outputs,
            };
            at += inputs * outputs + outputs;
            layer
        });
        Mlp { layers, len: at }
    }

    fn init(&self, rng: &mut Rng) -> Vec<f32> {
        let mut params = vec![0.0; self.len];
        for l in &self.layers {
            let scale = (3.0 / l.inputs as f32).sqrt(); // uniform LeCun init
            for w in &mut params[l.weights..l.bias] {
                *w = rng.uniform() * scale;
            }
        }
        params
    }

    /// Mean squared error over the batch; adds its gradient into `grads`.
    fn loss_and_grad(
        &self,
        params: &[f32],
        xs: &[[f32; INPUTS]],
        ys: &[f32],
        grads: &mut [f32],
    ) -> f32 {
        grads.fill(0.0);
        let mut loss = 0.0;
        for (x, &y) in xs.iter().zip(ys) {
            // Forward, keeping every layer's activations.
            let mut acts: Vec<Vec<f32>> = vec![x.to_vec()];
            for (i, l) in self.layers.iter().enumerate() {
                let input = acts.last().unwrap();
                let out: Vec<f32> = (0..l.outputs)
                    .map(|o| {
                        let row = &params[l.weights + o * l.inputs..][..l.inputs];
                        let z = params[l.bias + o]
                            + row.iter().zip(input).map(|(w, a)| w * a).sum::<f32>();
                        if i + 1 < self.layers.len() {
                            z.tanh()
                        } else {
                            z
                        }
                    })
                    .collect();
                acts.push(out);
            }
            let err = acts[3][0] - y;
            loss += err * err;
            // Backward.
            let mut delta = vec![2.0 * err / xs.len() as f32];
            for (i, l) in self.layers.iter().enumerate().rev() {
                let input = &acts[i];
                let mut back = vec![0.0; l.inputs];
                for (o, &d) in delta.iter().enumerate() {
                    grads[l.bias + o] += d;
                    for j in 0..l.inputs {
                        grads[l.weights + o * l.inputs + j] += d * input[j];
                        back[j] += d * params[l.weights + o * l.inputs + j];
                    }
                }
                if i > 0 {
                    // Through the tanh of the previous layer.
                    delta = back
                        .iter()
                        .zip(input)
                        .map(|(b, a)| b * (1.0 - a * a))
                        .collect();
                }
            }
        }
        loss / xs.len() as f32
    }
}

fn batch(rng: &mut Rng, n: usize) -> (Vec<[f32; INPUTS]>, Vec<f32>) {
    let xs: Vec<[f32; INPUTS]> = (0..n).map(|_| [rng.uniform(), rng.uniform()]).collect();
    let ys = xs.iter().map(|&x| target(x)).collect();
    (xs, ys)
}

fn main() -> Result<(), adopt::Error> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mlp = Mlp::new();
    let mut params = mlp.init(&mut rng);
    let mut grads = vec![0.0; params.len()];
    let mut state = State::new(params.len());
    let hyper = Hyper {
        lr: 3e-3,
        ..Hyper::default()
    };
    let (test_x, test_y) = batch(&mut rng, 1024);
    let mut scratch = vec![0.0; params.len()];

    println!(
        "ADOPT: training a {INPUTS}-{HIDDEN}-{HIDDEN}-1 MLP ({} parameters) on y = sin(3x0)·cos(2x1)",
        params.len()
    );
    println!("{:>6} {:>12} {:>12}", "step", "train loss", "test loss");
    let start = Instant::now();
    let first_test = mlp.loss_and_grad(&params, &test_x, &test_y, &mut scratch);
    let mut test = first_test;
    for step in 0..=STEPS {
        let (xs, ys) = batch(&mut rng, BATCH);
        let train = mlp.loss_and_grad(&params, &xs, &ys, &mut grads);
        adopt_step(&mut params, &grads, &mut state, &hyper)?;
        if step % 250 == 0 {
            test = mlp.loss_and_grad(&params, &test_x, &test_y, &mut scratch);
            println!("{step:>6} {train:>12.6} {test:>12.6}");
        }
    }
    println!(
        "test loss {first_test:.4} -> {test:.5} ({:.0}x lower) in {:.1} s",
        first_test / test,
        start.elapsed().as_secs_f32()
    );
    assert!(test < first_test / 10.0, "the model did not learn");
    Ok(())
}
