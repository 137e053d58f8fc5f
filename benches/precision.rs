//! Speed and bytes per lane of the storage layouts of `adopt::precision`,
//! at 1M and 16M lanes, serial and in the rayon pool.
//!
//! `cargo bench --bench precision --features half`

use adopt::precision::{Rounding, adopt_step_half, adopt_step_master};
use adopt::{Hyper, StateView};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use half::{bf16, f16};

fn bench(c: &mut Criterion) {
    let hyper = Hyper::default();
    for n in [1 << 20, 1 << 24] {
        let mut group = c.benchmark_group(format!("precision/{n}"));
        group.throughput(Throughput::Elements(n as u64));
        group.sample_size(10);
        let f: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let h: Vec<bf16> = f.iter().map(|&x| bf16::from_f32(x)).collect();
        let (mut pf, gf, mut ph, gh) = (f.clone(), f.clone(), h.clone(), h.clone());
        let (mut mf, mut vf, mut mh, mut vh) = (
            vec![0.0_f32; n],
            vec![0.0_f32; n],
            vec![bf16::ZERO; n],
            vec![bf16::ZERO; n],
        );
        let (mut p16, g16): (Vec<f16>, Vec<f16>) = (
            f.iter().map(|&x| f16::from_f32(x)).collect(),
            f.iter().map(|&x| f16::from_f32(x)).collect(),
        );
        let mut master = f.clone();
        let mut step = 1_u64;
        // Bytes per lane (reads + writes) in the ids.
        group.bench_function(BenchmarkId::from_parameter("f32_all_28B"), |b| {
            b.iter(|| {
                adopt_step_half(
                    &mut pf,
                    &gf,
                    &mut mf,
                    &mut vf,
                    &mut step,
                    &hyper,
                    Rounding::NearestEven,
                )
                .unwrap()
            })
        });
        group.bench_function(
            BenchmarkId::from_parameter("bf16_params_grads_f32_state_22B"),
            |b| {
                b.iter(|| {
                    adopt_step_half(
                        &mut ph,
                        &gh,
                        &mut mf,
                        &mut vf,
                        &mut step,
                        &hyper,
                        Rounding::NearestEven,
                    )
                    .unwrap()
                })
            },
        );
        group.bench_function(
            BenchmarkId::from_parameter("f16_params_grads_f32_state_22B"),
            |b| {
                b.iter(|| {
                    adopt_step_half(
                        &mut p16,
                        &g16,
                        &mut mf,
                        &mut vf,
                        &mut step,
                        &hyper,
                        Rounding::NearestEven,
                    )
                    .unwrap()
                })
            },
        );
        group.bench_function(BenchmarkId::from_parameter("bf16_all_14B"), |b| {
            b.iter(|| {
                adopt_step_half(
                    &mut ph,
                    &gh,
                    &mut mh,
                    &mut vh,
                    &mut step,
                    &hyper,
                    Rounding::NearestEven,
                )
                .unwrap()
            })
        });
        group.bench_function(
            BenchmarkId::from_parameter("bf16_all_stochastic_14B"),
            |b| {
                b.iter(|| {
                    adopt_step_half(
                        &mut ph,
                        &gh,
                        &mut mh,
                        &mut vh,
                        &mut step,
                        &hyper,
                        Rounding::Stochastic { seed: 1 },
                    )
                    .unwrap()
                })
            },
        );
        group.bench_function(
            BenchmarkId::from_parameter("f32_master_bf16_params_grads_f32_state_30B"),
            |b| {
                b.iter(|| {
                    let mut state = StateView::new(&mut mf, &mut vf, &mut step);
                    adopt_step_master(
                        &mut master,
                        &mut ph,
                        &gh,
                        &mut state,
                        &hyper,
                        Rounding::NearestEven,
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
