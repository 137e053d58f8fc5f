//! Speed and bytes per lane of the storage layouts of `adopt::precision`,
//! at 1M and 16M lanes, in the rayon pool.
//!
//! `cargo bench --bench precision --features half`

use adopt::precision::{Lane, Rounding, SecondMoment, adopt_step_half, adopt_step_master};
use adopt::{Hyper, StateView};
use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use half::{bf16, f16};

/// `adopt_step_half` on one layout (params `P`, grads `G`, state `S`),
/// starting from `values`; `name` carries the bytes per lane (reads +
/// writes).
fn layout<P: Lane, G: Lane, S: SecondMoment>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    values: &[f32],
    rounding: Rounding,
) {
    let hyper = Hyper::default();
    let mut p: Vec<P> = values.iter().map(|&x| P::from_f32(x)).collect();
    let g: Vec<G> = values.iter().map(|&x| G::from_f32(x)).collect();
    let mut m = vec![S::from_f32(0.0); values.len()];
    let mut v = vec![S::from_f32(0.01); values.len()];
    let mut step = 1_u64;
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter(|| adopt_step_half(&mut p, &g, &mut m, &mut v, &mut step, &hyper, rounding).unwrap())
    });
}

fn bench(c: &mut Criterion) {
    let nearest = Rounding::NearestEven;
    for n in [1 << 20, 1 << 24] {
        let mut group = c.benchmark_group(format!("precision/{n}"));
        group.throughput(Throughput::Elements(n as u64));
        group.sample_size(10);
        let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        layout::<f32, f32, f32>(&mut group, "f32_all_28B", &values, nearest);
        layout::<bf16, bf16, f32>(
            &mut group,
            "bf16_params_grads_f32_state_22B",
            &values,
            nearest,
        );
        layout::<f16, f16, f32>(
            &mut group,
            "f16_params_grads_f32_state_22B",
            &values,
            nearest,
        );
        layout::<bf16, bf16, bf16>(&mut group, "bf16_all_14B", &values, nearest);
        let stochastic = Rounding::Stochastic { seed: 1 };
        layout::<bf16, bf16, bf16>(&mut group, "bf16_all_stochastic_14B", &values, stochastic);

        let hyper = Hyper::default();
        let mut master = values.clone();
        let mut params: Vec<bf16> = values.iter().map(|&x| bf16::from_f32(x)).collect();
        let grads = params.clone();
        let (mut m, mut v, mut step) = (vec![0.0_f32; n], vec![0.01_f32; n], 1_u64);
        group.bench_function(
            BenchmarkId::from_parameter("f32_master_bf16_params_grads_f32_state_30B"),
            |b| {
                b.iter(|| {
                    let mut state = StateView::new(&mut m, &mut v, &mut step);
                    adopt_step_master(
                        &mut master,
                        &mut params,
                        &grads,
                        &mut state,
                        &hyper,
                        nearest,
                    )
                    .unwrap()
                })
            },
        );
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
