//! `Adopt` with parameters of every layout in one step: each parameter is
//! bit-identical to its single-buffer function (`adopt_step_ext`,
//! `precision::adopt_step_half`, `precision::adopt_step_master`,
//! `adopt_step_rows_ext`), over random mixes, on every kernel the CPU
//! supports, serial and split across a two-thread pool; bad input of any
//! layout is refused with nothing changed; checkpoints carry every layout.
#![cfg(all(feature = "half", feature = "complex"))]

mod common;

use adopt::precision::{Lane, SecondMoment, adopt_step_half, adopt_step_master};
use adopt::{
    Adopt, Buffer, Caution, CheckpointError, DecayScaling, Dtype, Entry, Error, Grads, Hyper,
    Kernel, Lanes, Layout, ParamId, Rounding, Scaling, SparseOptions, SparseState, State,
    StateView, StepOptions, Steps, WeightDecay, adopt_step_ext, adopt_step_rows_ext,
};
use common::{assert_same_bits, same_bits, value};
use half::{bf16, f16};
use proptest::prelude::*;

/// The storage combinations the mixes draw from: params, grads, m, v,
/// master, stochastic rounding.
const HALF_LAYOUTS: [(Dtype, Dtype, Dtype, Dtype, bool, bool); 10] = [
    (
        Dtype::Bf16,
        Dtype::Bf16,
        Dtype::F32,
        Dtype::F32,
        false,
        false,
    ),
    (
        Dtype::Bf16,
        Dtype::Bf16,
        Dtype::Bf16,
        Dtype::Bf16,
        false,
        true,
    ),
    (Dtype::F16, Dtype::F16, Dtype::F32, Dtype::F32, false, false),
    (
        Dtype::F32,
        Dtype::F32,
        Dtype::Bf16,
        Dtype::F32,
        false,
        false,
    ),
    (Dtype::F32, Dtype::F32, Dtype::F16, Dtype::F32, false, false),
    (
        Dtype::F32,
        Dtype::Bf16,
        Dtype::F32,
        Dtype::Bf16,
        false,
        false,
    ),
    (
        Dtype::Bf16,
        Dtype::F32,
        Dtype::F16,
        Dtype::Bf16,
        false,
        true,
    ),
    (Dtype::Bf16, Dtype::Bf16, Dtype::F32, Dtype::F32, true, true),
    (
        Dtype::F16,
        Dtype::F16,
        Dtype::Bf16,
        Dtype::Bf16,
        true,
        false,
    ),
    (
        Dtype::Bf16,
        Dtype::Bf16,
        Dtype::Bf16,
        Dtype::Bf16,
        true,
        false,
    ),
];

/// One parameter of a mix.
#[derive(Clone, Debug)]
enum Spec {
    Dense(usize),
    Complex(usize),
    Half(usize, usize),
    /// rows, dim; each step lists rows (with repeats) or gives a dense
    /// gradient.
    Rows(usize, usize),
}

impl Spec {
    fn layout(&self, seed: u64) -> Layout {
        match *self {
            Spec::Dense(n) => Layout::dense(n),
            Spec::Complex(n) => Layout::complex(n),
            Spec::Half(n, which) => {
                let (p, g, m, v, master, stochastic) = HALF_LAYOUTS[which];
                let rounding = if stochastic {
                    Rounding::Stochastic { seed }
                } else {
                    Rounding::NearestEven
                };
                Layout::dense(n)
                    .params(p)
                    .grads(g)
                    .exp_avg(m)
                    .exp_avg_sq(v)
                    .master(master)
                    .rounding(rounding)
            }
            Spec::Rows(rows, dim) => Layout::rows(rows, dim),
        }
    }
}

/// Owned lanes of one storage type.
#[derive(Clone, Debug, PartialEq)]
enum Buf {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
}

impl Buf {
    fn from_f32(dtype: Dtype, xs: &[f32]) -> Buf {
        match dtype {
            Dtype::F32 => Buf::F32(xs.to_vec()),
            Dtype::Bf16 => Buf::Bf16(xs.iter().map(|&x| bf16::from_f32(x)).collect()),
            _ => Buf::F16(xs.iter().map(|&x| f16::from_f32(x)).collect()),
        }
    }
    fn lanes(&self) -> Lanes<'_> {
        match self {
            Buf::F32(x) => x[..].into(),
            Buf::Bf16(x) => x[..].into(),
            Buf::F16(x) => x[..].into(),
        }
    }
    fn lanes_mut(&mut self) -> adopt::LanesMut<'_> {
        match self {
            Buf::F32(x) => (&mut x[..]).into(),
            Buf::Bf16(x) => (&mut x[..]).into(),
            Buf::F16(x) => (&mut x[..]).into(),
        }
    }
    fn to_f32(&self) -> Vec<f32> {
        self.lanes().to_f32_vec()
    }
}

/// The single-buffer model of one parameter.
#[derive(Clone, Debug)]
enum Model {
    Dense {
        p: Vec<f32>,
        state: State,
    },
    Half {
        p: Buf,
        m: Buf,
        v: Buf,
        step: u64,
        master: Option<Vec<f32>>,
        rounding: Rounding,
    },
    Rows {
        table: Vec<f32>,
        state: SparseState,
    },
}

/// `adopt_step_half` (or `adopt_step_master`) on concrete types.
#[allow(clippy::too_many_arguments)]
fn half_step<P: Lane, G: Lane, M: Lane, V: SecondMoment>(
    p: &mut [P],
    g: &[G],
    m: &mut [M],
    v: &mut [V],
    step: &mut u64,
    master: &mut Option<Vec<f32>>,
    hyper: &Hyper,
    rounding: Rounding,
) {
    match master {
        None => adopt_step_half(p, g, m, v, step, hyper, rounding).unwrap(),
        Some(master) => {
            // With f32 moments the master step is `adopt_step_master`;
            // with half moments, `adopt_step_half` on the master, then the
            // parameters rounded to nearest (the mixes use stochastic
            // rounding with f32 moments only).
            if let (Some(m32), Some(v32)) = (as_f32(m), as_f32(v)) {
                let mut view = StateView::new(m32, v32, step);
                adopt_step_master(master, p, g, &mut view, hyper, rounding).unwrap();
            } else {
                adopt_step_half(&mut master[..], g, m, v, step, hyper, Rounding::NearestEven)
                    .unwrap();
                p.iter_mut()
                    .zip(master.iter())
                    .for_each(|(p, &x)| *p = P::from_f32(x));
            }
        }
    }
}

/// `xs` as f32 lanes, if they are.
fn as_f32<T: Lane>(xs: &mut [T]) -> Option<&mut [f32]> {
    if T::IS_F32 {
        // SAFETY: `T` is `f32` (the only `Lane` with `IS_F32`).
        Some(unsafe { std::slice::from_raw_parts_mut(xs.as_mut_ptr().cast(), xs.len()) })
    } else {
        None
    }
}

/// Dispatches `half_step` on the runtime storage types.
#[allow(clippy::too_many_arguments)]
fn model_half(
    p: &mut Buf,
    g: &Buf,
    m: &mut Buf,
    v: &mut Buf,
    step: &mut u64,
    master: &mut Option<Vec<f32>>,
    hyper: &Hyper,
    rounding: Rounding,
) {
    macro_rules! go {
        ($p:expr, $g:expr, $m:expr) => {
            match v {
                Buf::F32(v) => half_step($p, $g, $m, v, step, master, hyper, rounding),
                Buf::Bf16(v) => half_step($p, $g, $m, v, step, master, hyper, rounding),
                Buf::F16(_) => unreachable!(),
            }
        };
    }
    macro_rules! with_m {
        ($p:expr, $g:expr) => {
            match m {
                Buf::F32(m) => go!($p, $g, m),
                Buf::Bf16(m) => go!($p, $g, m),
                Buf::F16(m) => go!($p, $g, m),
            }
        };
    }
    macro_rules! with_g {
        ($p:expr) => {
            match g {
                Buf::F32(g) => with_m!($p, g),
                Buf::Bf16(g) => with_m!($p, g),
                Buf::F16(g) => with_m!($p, g),
            }
        };
    }
    match p {
        Buf::F32(p) => with_g!(p),
        Buf::Bf16(p) => with_g!(p),
        Buf::F16(p) => with_g!(p),
    }
}

/// A step's gradient for one parameter.
#[derive(Clone, Debug)]
enum StepGrad {
    Dense(Buf),
    Rows(Vec<u32>, Vec<f32>),
}

#[derive(Clone, Debug)]
struct Mix {
    groups: Vec<Hyper>,
    /// (spec, group, initial values)
    params: Vec<(Spec, usize, Vec<f32>)>,
    /// Per step, per parameter: a gradient (as f32 values, stored in the
    /// layout's type) or none.
    steps: Vec<Vec<Option<StepGrad>>>,
    seed: u64,
}

fn hyper() -> impl Strategy<Value = Hyper> {
    let decay = prop::sample::select(vec![
        WeightDecay::None,
        WeightDecay::l2(0.01),
        WeightDecay::decoupled(0.1),
        WeightDecay::Decoupled {
            weight_decay: 0.05,
            scaling: DecayScaling::Corrected { max_lr: None },
            first_step: true,
        },
    ]);
    let caution =
        prop::sample::select(vec![Caution::Off, Caution::Timm, Caution::PytorchOptimizer]);
    (
        prop::sample::select(vec![1e-3, 1e-2, 0.1]),
        prop::sample::select(vec![0.0, 0.3, 0.5, 0.9]),
        decay,
        caution,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(lr, beta1, weight_decay, caution, nesterov, maximize)| Hyper {
                lr,
                betas: (beta1, 0.999),
                weight_decay,
                caution,
                nesterov,
                maximize,
                ..Hyper::default()
            },
        )
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        2 => (0_usize..70).prop_map(Spec::Dense),
        1 => (0_usize..20).prop_map(Spec::Complex),
        3 => (0_usize..70, 0..HALF_LAYOUTS.len()).prop_map(|(n, w)| Spec::Half(n, w)),
        2 => (1_usize..12, 1_usize..9).prop_map(|(r, d)| Spec::Rows(r, d)),
    ]
}

fn lanes(spec: &Spec) -> usize {
    match *spec {
        Spec::Dense(n) | Spec::Half(n, _) => n,
        Spec::Complex(n) => 2 * n,
        Spec::Rows(r, d) => r * d,
    }
}

fn grad_for(spec: &Spec) -> BoxedStrategy<Option<StepGrad>> {
    let n = lanes(spec);
    let dense = |dtype: Dtype| {
        prop::collection::vec(value(), n)
            .prop_map(move |g| StepGrad::Dense(Buf::from_f32(dtype, &g)))
    };
    let some = match *spec {
        Spec::Half(_, which) => dense(HALF_LAYOUTS[which].1).boxed(),
        Spec::Rows(rows, dim) => prop_oneof![
            3 => prop::collection::vec(0..rows as u32, 0..rows * 2).prop_flat_map(move |listed| {
                let k = listed.len() * dim;
                (Just(listed), prop::collection::vec(value(), k))
                    .prop_map(|(listed, values)| StepGrad::Rows(listed, values))
            }),
            1 => dense(Dtype::F32),
        ]
        .boxed(),
        _ => dense(Dtype::F32).boxed(),
    };
    prop::option::weighted(0.8, some).boxed()
}

fn mix() -> impl Strategy<Value = Mix> {
    (
        prop::collection::vec(hyper(), 1..3),
        prop::collection::vec((spec(), 0_usize..3), 1..7),
        1_usize..4,
        any::<u64>(),
    )
        .prop_flat_map(|(groups, specs, steps, seed)| {
            let n = groups.len();
            let params: Vec<BoxedStrategy<(Spec, usize, Vec<f32>)>> = specs
                .into_iter()
                .map(|(spec, g)| {
                    let k = lanes(&spec);
                    (
                        Just(spec),
                        Just(g % n),
                        prop::collection::vec(-2.0_f32..2.0, k),
                    )
                        .boxed()
                })
                .collect();
            (Just(groups), params, Just(steps), Just(seed))
        })
        .prop_flat_map(|(groups, params, steps, seed)| {
            let per_step: Vec<BoxedStrategy<Option<StepGrad>>> =
                params.iter().map(|(spec, _, _)| grad_for(spec)).collect();
            (
                Just(groups),
                Just(params),
                prop::collection::vec(per_step, steps),
                Just(seed),
            )
                .prop_map(|(groups, params, steps, seed)| Mix {
                    groups,
                    params,
                    steps,
                    seed,
                })
        })
}

/// The engine's buffers of one parameter (the params Adopt steps).
fn initial(spec: &Spec, layout: &Layout, values: &[f32]) -> Buf {
    match spec {
        Spec::Half(..) => Buf::from_f32(layout.params_dtype(), values),
        _ => Buf::F32(values.to_vec()),
    }
}

fn fresh_model(spec: &Spec, layout: &Layout, values: &[f32]) -> Model {
    let (m, v) = layout.state_dtypes();
    let n = lanes(spec);
    match *spec {
        Spec::Dense(_) | Spec::Complex(_) => Model::Dense {
            p: values.to_vec(),
            state: State::new(n),
        },
        Spec::Half(..) => Model::Half {
            p: Buf::from_f32(layout.params_dtype(), values),
            m: Buf::from_f32(m, &vec![0.0; n]),
            v: Buf::from_f32(v, &vec![0.0; n]),
            step: 0,
            master: None,
            rounding: layout.rounding_mode(),
        },
        Spec::Rows(rows, dim) => Model::Rows {
            table: values.to_vec(),
            state: SparseState::new(rows, dim),
        },
    }
}

/// Runs `mix` through one `Adopt` (with `kernel`, inside `pool`) and through
/// the single-buffer functions, comparing every parameter and state after
/// every step.
fn check_mix(mix: &Mix, kernel: Kernel, pool: Option<&rayon::ThreadPool>) {
    let mut opt = Adopt::new();
    opt.set_kernel(Some(kernel)).unwrap();
    let groups: Vec<_> = mix
        .groups
        .iter()
        .map(|&h| opt.add_group(h).unwrap())
        .collect();
    let layouts: Vec<Layout> = mix
        .params
        .iter()
        .map(|(s, _, _)| s.layout(mix.seed))
        .collect();
    let ids: Vec<ParamId> = mix
        .params
        .iter()
        .zip(&layouts)
        .map(|((_, g, _), &l)| opt.add_param(groups[*g], l, None).unwrap())
        .collect();
    let mut bufs: Vec<Buf> = mix
        .params
        .iter()
        .zip(&layouts)
        .map(|((s, _, x), l)| initial(s, l, x))
        .collect();
    let mut models: Vec<Model> = mix
        .params
        .iter()
        .zip(&layouts)
        .map(|((s, _, x), l)| fresh_model(s, l, x))
        .collect();
    for (t, grads) in mix.steps.iter().enumerate() {
        let mut entries: Vec<Entry<'_>> = bufs
            .iter_mut()
            .zip(&ids)
            .zip(grads)
            .map(|((b, &id), g)| Entry {
                id,
                params: b.lanes_mut(),
                grads: g.as_ref().map(|g| match g {
                    StepGrad::Dense(g) => Grads::Dense(g.lanes()),
                    StepGrad::Rows(rows, values) => Grads::Rows { rows, values },
                }),
            })
            .collect();
        let got = match pool {
            Some(pool) => pool.install(|| opt.step(&mut entries)),
            None => opt.step(&mut entries),
        };
        drop(entries);
        // The model: each parameter with a gradient, on its own.
        let mut want = Ok(());
        for (i, (model, g)) in models.iter_mut().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            let hyper = mix.groups[mix.params[i].1].with_initial_lr(mix.groups[mix.params[i].1].lr);
            let options = StepOptions {
                kernel: Some(kernel),
                ..StepOptions::default()
            };
            let r = match (model, g) {
                (Model::Dense { p, state }, StepGrad::Dense(Buf::F32(g))) => {
                    adopt_step_ext(p, g, state, &hyper, &options)
                }
                (
                    Model::Half {
                        p,
                        m,
                        v,
                        step,
                        master,
                        rounding,
                    },
                    StepGrad::Dense(g),
                ) => {
                    if layouts[i].has_master() && master.is_none() {
                        *master = Some(p.to_f32());
                    }
                    model_half(p, g, m, v, step, master, &hyper, *rounding);
                    Ok(())
                }
                (Model::Rows { table, state }, g) => {
                    let (rows, values): (Vec<u32>, &[f32]) = match g {
                        StepGrad::Rows(rows, values) => (rows.clone(), values),
                        StepGrad::Dense(Buf::F32(values)) => {
                            ((0..state.rows() as u32).collect(), values)
                        }
                        _ => unreachable!(),
                    };
                    let options = SparseOptions {
                        kernel: Some(kernel),
                        ..SparseOptions::default()
                    };
                    adopt_step_rows_ext(table, &rows, values, state, &hyper, &options)
                }
                _ => unreachable!(),
            };
            if r.is_err() && want.is_ok() {
                want = r;
            }
        }
        // The mixes are built valid; both sides must agree on that.
        assert_eq!(got, want, "step {t}");
        for (i, (b, model)) in bufs.iter().zip(&models).enumerate() {
            let what = format!("{kernel:?} step {t} param {i} {:?}", mix.params[i].0);
            let state = opt.param_state(ids[i]).unwrap();
            match model {
                Model::Dense { p, state: s } => {
                    assert_same_bits(&b.to_f32(), p, &what);
                    if let Some(st) = state {
                        assert_same_bits(&st.exp_avg.to_f32_vec(), s.exp_avg(), &what);
                        assert_same_bits(&st.exp_avg_sq.to_f32_vec(), s.exp_avg_sq(), &what);
                        assert_eq!(st.steps, Steps::Dense(s.step()), "{what}");
                    }
                }
                Model::Half {
                    p,
                    m,
                    v,
                    step,
                    master,
                    ..
                } => {
                    assert_same_bits(&b.to_f32(), &p.to_f32(), &what);
                    if let Some(st) = state {
                        assert_same_bits(&st.exp_avg.to_f32_vec(), &m.to_f32(), &what);
                        assert_same_bits(&st.exp_avg_sq.to_f32_vec(), &v.to_f32(), &what);
                        assert_eq!(st.steps, Steps::Dense(*step), "{what}");
                        assert_eq!(st.master.is_some(), master.is_some(), "{what}: master");
                        if let (Some(got), Some(want)) = (st.master, master) {
                            assert_same_bits(got, want, &format!("{what}: master"));
                        }
                    }
                }
                Model::Rows { table, state: s } => {
                    assert_same_bits(&b.to_f32(), table, &what);
                    if let Some(st) = state {
                        assert_same_bits(&st.exp_avg.to_f32_vec(), s.exp_avg(), &what);
                        assert_same_bits(&st.exp_avg_sq.to_f32_vec(), s.exp_avg_sq(), &what);
                        assert_eq!(st.steps, Steps::Rows(s.steps()), "{what}");
                    }
                }
            }
        }
    }
    // What was stepped saves and loads back to the same bytes.
    let bytes = opt.save().unwrap();
    assert_eq!(
        Adopt::from_checkpoint(&bytes).unwrap().save().unwrap(),
        bytes
    );
}

fn kernels() -> Vec<Kernel> {
    Kernel::ALL
        .into_iter()
        .filter(|k| k.is_available())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 1 } else { 64 }))]

    #[test]
    fn every_layout_in_a_mix_steps_like_its_single_buffer_function(mix in mix()) {
        // Under Miri (which checks the raw pointers of the schedule and the
        // typed steps) without a pool: rayon's deque trips Miri.
        if cfg!(miri) {
            check_mix(&mix, Kernel::Portable, None);
        } else {
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                for kernel in kernels() {
                    check_mix(&mix, kernel, Some(&pool));
                }
            }
        }
    }
}

/// Mixes large enough to be split across a two-thread pool (each parameter
/// split into chunks, stochastic rounding numbered by the lane in the
/// whole tensor) equal the single-buffer functions too.
#[test]
#[cfg_attr(miri, ignore = "large buffers")]
fn large_mixes_split_across_the_pool_step_like_their_single_buffer_functions() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let n = adopt::PARALLEL_THRESHOLD + 1234;
    let values = |seed: u32, n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 9) as f32 / 4.0e6
                    - 1.0
            })
            .collect()
    };
    let specs = vec![
        (Spec::Dense(n), 0),
        (Spec::Half(n, 1), 0), // bf16 everything, stochastic
        (Spec::Half(n, 7), 1), // bf16 with a master copy, stochastic
        (Spec::Half(3000, 4), 1),
        (Spec::Rows(4000, 64), 0),
        (Spec::Complex(500), 1),
    ];
    let params: Vec<(Spec, usize, Vec<f32>)> = specs
        .into_iter()
        .enumerate()
        .map(|(i, (s, g))| {
            let k = lanes(&s);
            (s, g, values(i as u32, k))
        })
        .collect();
    let steps: Vec<Vec<Option<StepGrad>>> = (0..3)
        .map(|t| {
            params
                .iter()
                .enumerate()
                .map(|(i, (s, _, _))| {
                    let k = lanes(s);
                    let g = values(100 + 10 * t + i as u32, k);
                    Some(match s {
                        Spec::Half(_, which) => {
                            StepGrad::Dense(Buf::from_f32(HALF_LAYOUTS[*which].1, &g))
                        }
                        Spec::Rows(rows, dim) => {
                            let listed: Vec<u32> = (0..*rows as u32)
                                .filter(|r| (r + t) % 2 == 0)
                                .chain([7, 7])
                                .collect();
                            let values = values(200 + t, listed.len() * dim);
                            StepGrad::Rows(listed, values)
                        }
                        _ => StepGrad::Dense(Buf::F32(g)),
                    })
                })
                .collect()
        })
        .collect();
    let mix = Mix {
        groups: vec![
            Hyper {
                lr: 1e-2,
                ..Hyper::default()
            },
            Hyper {
                lr: 1e-3,
                caution: Caution::Timm,
                weight_decay: WeightDecay::decoupled(0.1),
                ..Hyper::default()
            },
        ],
        params,
        steps,
        seed: 99,
    };
    for kernel in kernels() {
        check_mix(&mix, kernel, Some(&pool));
    }
}

/// Every layout's step refuses bad input, naming it, with nothing changed.
#[test]
fn bad_entries_are_refused_and_change_nothing() {
    let mut opt = Adopt::new();
    let g = opt.add_group(Hyper::default()).unwrap();
    let bf = opt
        .add_param(g, Layout::dense(4).params(Dtype::Bf16), Some("bf"))
        .unwrap();
    let table = opt.add_param(g, Layout::rows(5, 2), Some("table")).unwrap();
    let dense = opt.add_param(g, 3, Some("dense")).unwrap();
    let mut p_bf = vec![bf16::ONE; 4];
    let mut p_table = vec![1.0_f32; 10];
    let mut p_dense = vec![1.0_f32; 3];
    let g_bf = [bf16::from_f32(0.5); 4];
    // One good step so every parameter has state.
    opt.step(&mut [
        Entry {
            id: bf,
            params: (&mut p_bf[..]).into(),
            grads: Some((&g_bf[..]).into()),
        },
        Entry {
            id: table,
            params: (&mut p_table[..]).into(),
            grads: Some(Grads::Rows {
                rows: &[1],
                values: &[0.5, 0.5],
            }),
        },
        Entry {
            id: dense,
            params: (&mut p_dense[..]).into(),
            grads: Some((&[0.5_f32; 3][..]).into()),
        },
    ])
    .unwrap();
    let before = (
        opt.save().unwrap(),
        p_bf.clone(),
        p_table.clone(),
        p_dense.clone(),
    );
    let f32_grads = [0.5_f32; 4];
    let f16_params = vec![f16::ONE; 4];
    let mut f16_params = f16_params;
    type Case<'a> = (&'static str, Error);
    let cases: Vec<Case<'_>> = vec![
        (
            "bf16 params given f32 grads",
            Error::DtypeMismatch {
                param: bf,
                buffer: Buffer::Grads,
                expected: Dtype::Bf16,
                got: Dtype::F32,
            },
        ),
        (
            "bf16 params given as f16",
            Error::DtypeMismatch {
                param: bf,
                buffer: Buffer::Params,
                expected: Dtype::Bf16,
                got: Dtype::F16,
            },
        ),
        (
            "a row out of range",
            Error::RowOutOfRange { row: 5, rows: 5 },
        ),
        (
            "row blocks short",
            Error::RowBlocksMismatch {
                rows: 2,
                dim: 2,
                got: 3,
            },
        ),
        (
            "row grads for a dense parameter",
            Error::LayoutMismatch {
                param: dense,
                reason: "row-listed gradients are for row-sparse tables (Layout::rows)",
            },
        ),
        (
            "a dense table gradient one short",
            Error::LengthMismatch {
                buffer: Buffer::Grads,
                expected: 10,
                got: 9,
            },
        ),
    ];
    for (what, want) in cases {
        let mut entries = vec![Entry {
            id: dense,
            params: (&mut p_dense[..]).into(),
            grads: Some((&[0.5_f32; 3][..]).into()),
        }];
        match what {
            "bf16 params given f32 grads" => entries.push(Entry {
                id: bf,
                params: (&mut p_bf[..]).into(),
                grads: Some((&f32_grads[..]).into()),
            }),
            "bf16 params given as f16" => entries.push(Entry {
                id: bf,
                params: (&mut f16_params[..]).into(),
                grads: None,
            }),
            "a row out of range" => entries.push(Entry {
                id: table,
                params: (&mut p_table[..]).into(),
                grads: Some(Grads::Rows {
                    rows: &[0, 5],
                    values: &[0.1; 4],
                }),
            }),
            "row blocks short" => entries.push(Entry {
                id: table,
                params: (&mut p_table[..]).into(),
                grads: Some(Grads::Rows {
                    rows: &[0, 1],
                    values: &[0.1; 3],
                }),
            }),
            "row grads for a dense parameter" => {
                entries[0].grads = Some(Grads::Rows {
                    rows: &[0],
                    values: &[0.1],
                })
            }
            _ => entries.push(Entry {
                id: table,
                params: (&mut p_table[..]).into(),
                grads: Some((&[0.1_f32; 9][..]).into()),
            }),
        }
        assert_eq!(opt.step(&mut entries), Err(want.clone()), "{what}");
        drop(entries);
        assert!(!want.to_string().is_empty());
        assert_eq!(
            (
                opt.save().unwrap(),
                p_bf.clone(),
                p_table.clone(),
                p_dense.clone()
            ),
            before,
            "{what}: something changed"
        );
    }
    // Layouts the optimizer cannot step are refused at registration.
    for (layout, reason) in [
        (
            Layout::dense(4).exp_avg_sq(Dtype::F16),
            "the second moment cannot be f16",
        ),
        (
            Layout::dense(4).master(true),
            "a master copy is for half-precision parameters",
        ),
        (
            Layout::complex(2).params(Dtype::Bf16),
            "complex parameters are f32",
        ),
        (
            Layout::rows(3, 2).exp_avg(Dtype::Bf16),
            "row-sparse tables are f32",
        ),
    ] {
        let got = opt.add_param(g, layout, None);
        assert!(
            matches!(&got, Err(Error::InvalidLayout { reason: r }) if r.contains(reason)),
            "{layout:?}: {got:?}"
        );
    }
    assert_eq!(opt.param_count(), 3);
    // `state` reads f32 moments only; `param_state` any layout.
    assert!(matches!(
        opt.state(table),
        Err(Error::LayoutMismatch { .. })
    ));
    assert!(opt.state(dense).unwrap().is_some());
    assert!(
        opt.state(bf).unwrap().is_some(),
        "bf16 params with f32 moments"
    );
}

/// `found_inf` skips every layout, and `inv_scale` reaches every layout's
/// kernel: scaling bf16 gradients by 2 and unscaling by 0.5 is the step of
/// the unscaled gradients (both exact).
#[test]
fn scaling_reaches_every_layout() {
    let build = || {
        let mut opt = Adopt::new();
        let g = opt
            .add_group(Hyper {
                lr: 0.05,
                ..Hyper::default()
            })
            .unwrap();
        let a = opt
            .add_param(g, Layout::dense(6).params(Dtype::Bf16).master(true), None)
            .unwrap();
        let b = opt.add_param(g, Layout::rows(4, 3), None).unwrap();
        (opt, a, b)
    };
    let grads: Vec<f32> = (0..6).map(|i| 0.125 * (i as f32 - 2.0)).collect();
    let (mut scaled, a, b) = build();
    let (mut plain, _, _) = build();
    let (mut pa, mut qa) = (vec![bf16::ONE; 6], vec![bf16::ONE; 6]);
    let (mut pb, mut qb) = (vec![0.5_f32; 12], vec![0.5_f32; 12]);
    let g2: Vec<bf16> = grads.iter().map(|&x| bf16::from_f32(2.0 * x)).collect();
    let g1: Vec<bf16> = grads.iter().map(|&x| bf16::from_f32(x)).collect();
    let rows2: Vec<f32> = grads.iter().map(|x| 2.0 * x).collect();
    for t in 0..4 {
        let skip = Scaling {
            inv_scale: 0.5,
            found_inf: t == 2,
        };
        scaled
            .step_scaled(
                &mut [
                    Entry {
                        id: a,
                        params: (&mut pa[..]).into(),
                        grads: Some((&g2[..]).into()),
                    },
                    Entry {
                        id: b,
                        params: (&mut pb[..]).into(),
                        grads: Some(Grads::Rows {
                            rows: &[0, 3],
                            values: &rows2,
                        }),
                    },
                ],
                skip,
            )
            .unwrap();
        if t != 2 {
            plain
                .step(&mut [
                    Entry {
                        id: a,
                        params: (&mut qa[..]).into(),
                        grads: Some((&g1[..]).into()),
                    },
                    Entry {
                        id: b,
                        params: (&mut qb[..]).into(),
                        grads: Some(Grads::Rows {
                            rows: &[0, 3],
                            values: &grads,
                        }),
                    },
                ])
                .unwrap();
        }
    }
    assert_eq!(scaled.save().unwrap(), plain.save().unwrap());
    assert!(pa.iter().zip(&qa).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_same_bits(&pb, &qb, "table");
    assert!(pa[5] < bf16::ONE, "the parameters moved");
}

/// Checkpoints carry every layout and its state: a round trip is exact,
/// the loaded optimizer steps on identically, and loading into another
/// layout is refused with nothing changed.
#[test]
fn checkpoints_carry_every_layout() {
    let mix = |layout_b: Layout| {
        let mut opt = Adopt::new();
        let g = opt
            .add_group(Hyper {
                lr: 0.02,
                ..Hyper::default()
            })
            .unwrap();
        let ids = [
            opt.add_param(g, Layout::complex(3), Some("z")).unwrap(),
            opt.add_param(g, layout_b, Some("w")).unwrap(),
            opt.add_param(g, Layout::rows(6, 2), Some("emb")).unwrap(),
            opt.add_param(
                g,
                Layout::dense(5)
                    .params(Dtype::F16)
                    .exp_avg(Dtype::Bf16)
                    .exp_avg_sq(Dtype::Bf16),
                None,
            )
            .unwrap(),
        ];
        (opt, ids)
    };
    let w = Layout::dense(4)
        .params(Dtype::Bf16)
        .master(true)
        .exp_avg(Dtype::F16)
        .exp_avg_sq(Dtype::Bf16)
        .rounding(Rounding::Stochastic { seed: 5 });
    let (mut opt, ids) = mix(w);
    let mut z = vec![0.5_f32; 6];
    let mut pw = vec![bf16::ONE; 4];
    let mut emb = vec![0.25_f32; 12];
    let mut h = vec![f16::ONE; 5];
    let step = |opt: &mut Adopt,
                z: &mut [f32],
                pw: &mut [bf16],
                emb: &mut [f32],
                h: &mut [f16],
                t: usize| {
        let gz: Vec<f32> = (0..6).map(|i| (i + t) as f32 * 0.1).collect();
        let gw: Vec<bf16> = (0..4)
            .map(|i| bf16::from_f32(0.3 - i as f32 * 0.2))
            .collect();
        let gh: Vec<f16> = (0..5).map(|i| f16::from_f32(i as f32 * 0.05)).collect();
        opt.step(&mut [
            Entry {
                id: ids[0],
                params: z.into(),
                grads: Some((&gz[..]).into()),
            },
            Entry {
                id: ids[1],
                params: pw.into(),
                grads: Some((&gw[..]).into()),
            },
            Entry {
                id: ids[2],
                params: emb.into(),
                grads: Some(Grads::Rows {
                    rows: &[t as u32 % 6, 5],
                    values: &[0.1, 0.2, 0.3, 0.4],
                }),
            },
            Entry {
                id: ids[3],
                params: h.into(),
                grads: Some((&gh[..]).into()),
            },
        ])
        .unwrap();
    };
    for t in 0..3 {
        step(&mut opt, &mut z, &mut pw, &mut emb, &mut h, t);
    }
    let bytes = opt.save().unwrap();
    let mut restored = Adopt::from_checkpoint(&bytes).unwrap();
    assert_eq!(restored.save().unwrap(), bytes);
    for id in ids {
        assert_eq!(restored.layout(id).unwrap(), opt.layout(id).unwrap());
    }
    let (mut z2, mut pw2, mut emb2, mut h2) = (z.clone(), pw.clone(), emb.clone(), h.clone());
    step(&mut opt, &mut z, &mut pw, &mut emb, &mut h, 3);
    step(&mut restored, &mut z2, &mut pw2, &mut emb2, &mut h2, 3);
    assert_eq!(restored.save().unwrap(), opt.save().unwrap());
    assert!(same_bits(pw[0].to_f32(), pw2[0].to_f32()));

    // Into an optimizer registered with another layout: refused.
    let (mut other, _) = mix(w.rounding(Rounding::NearestEven));
    let before = other.save().unwrap();
    assert_eq!(
        other.load(&bytes),
        Err(Error::Checkpoint(CheckpointError::LayoutMismatch {
            param: 1
        }))
    );
    assert_eq!(other.save().unwrap(), before);
    // Into the same layout: loads.
    let (mut same, _) = mix(w);
    same.load(&bytes).unwrap();
    assert_eq!(same.save().unwrap(), bytes);
    // Every truncation and bit flip of a layout checkpoint is refused with
    // nothing changed.
    let step_bits = if cfg!(miri) { 509 } else { 3 };
    for bit in (0..bytes.len() * 8).step_by(step_bits) {
        let mut bad = bytes.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(same.load(&bad).is_err(), "bit {bit}");
        assert_eq!(same.save().unwrap(), bytes);
    }
}

/// `init_state` and `param_state_mut` give writable, stable buffers of
/// every layout (what a binding wraps without copying), and a state written
/// through them is what the next step uses.
#[test]
fn state_is_writable_in_place() {
    let mut opt = Adopt::new();
    let g = opt
        .add_group(Hyper {
            lr: 0.1,
            ..Hyper::default()
        })
        .unwrap();
    let a = opt
        .add_param(g, Layout::dense(3).params(Dtype::Bf16).master(true), None)
        .unwrap();
    assert!(matches!(
        opt.init_state(a, None),
        Err(Error::LayoutMismatch { .. })
    ));
    assert!(matches!(
        opt.init_state(a, Some(&[1.0; 2])),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(
        opt.param_state(a).unwrap().is_none(),
        "a refused init changes nothing"
    );
    {
        let s = opt.init_state(a, Some(&[1.0, 2.0, 3.0])).unwrap();
        let adopt::StepsMut::Dense(step) = s.steps else {
            panic!("dense")
        };
        *step = 4;
        let adopt::LanesMut::F32(v) = s.exp_avg_sq else {
            panic!("f32 v")
        };
        v.copy_from_slice(&[4.0, 4.0, 4.0]);
    }
    let ptr = match opt.param_state(a).unwrap().unwrap().exp_avg_sq {
        Lanes::F32(v) => v.as_ptr(),
        _ => unreachable!(),
    };
    let mut p = [
        bf16::from_f32(1.0),
        bf16::from_f32(2.0),
        bf16::from_f32(3.0),
    ];
    let grads = [bf16::from_f32(2.0); 3];
    opt.step(&mut [Entry {
        id: a,
        params: (&mut p[..]).into(),
        grads: Some((&grads[..]).into()),
    }])
    .unwrap();
    let s = opt.param_state(a).unwrap().unwrap();
    assert_eq!(s.steps, Steps::Dense(5));
    match s.exp_avg_sq {
        Lanes::F32(v) => assert_eq!(v.as_ptr(), ptr, "the buffer stays where it is"),
        _ => unreachable!(),
    }
    // The master stepped from the written state, as the reference steps
    // f32 parameters from it.
    let mut want = vec![1.0_f32, 2.0, 3.0];
    let mut state = State::from_parts(vec![0.0; 3], vec![4.0; 3], 4);
    adopt::reference::adopt_step(
        &mut want,
        &[2.0; 3],
        &mut state,
        &Hyper {
            lr: 0.1,
            ..Hyper::default()
        },
    )
    .unwrap();
    assert_same_bits(s.master.unwrap(), &want, "master");
    assert_eq!(p[0], bf16::from_f32(want[0]));
    opt.clear_state(a).unwrap();
    assert!(opt.param_state(a).unwrap().is_none());
}
