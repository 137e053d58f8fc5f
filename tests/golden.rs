//! Replays the trajectories recorded from the reference implementation
//! (`torch-adopt` 0.1.0, see `tests/golden/README.md`) through `adopt_step`
//! and checks every step and lane against the stated tolerance.

use adopt::{Clip, Hyper, State, WeightDecay, adopt_step};
use serde_json::Value;
use std::path::{Path, PathBuf};

struct Case {
    name: String,
    complex: bool,
    lanes: usize,
    steps: usize,
    hyper: Hyper,
    data: Vec<f32>,
}

impl Case {
    fn load(json: &Path) -> Case {
        let meta: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        let h = &meta["hyper"];
        let num = |v: &Value| v.as_f64().unwrap();
        let clip = match h["clip"]["kind"].as_str().unwrap() {
            "power" => Clip::Power {
                scale: num(&h["clip"]["scale"]),
                exponent: num(&h["clip"]["exponent"]),
            },
            "constant" => Clip::Constant(num(&h["clip"]["value"])),
            "none" => Clip::None,
            other => panic!("unknown clip kind {other}"),
        };
        let hyper = Hyper {
            lr: num(&h["lr"]),
            betas: (num(&h["beta1"]), num(&h["beta2"])),
            eps: num(&h["eps"]),
            weight_decay: match (num(&h["weight_decay"]), h["decouple"].as_bool().unwrap()) {
                (0.0, _) => WeightDecay::None,
                (wd, true) => WeightDecay::decoupled(wd),
                (wd, false) => WeightDecay::l2(wd),
            },
            maximize: h["maximize"].as_bool().unwrap(),
            clip,
            ..Hyper::default()
        };
        let bytes = std::fs::read(json.with_extension("bin")).unwrap();
        let data: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let lanes = meta["lanes"].as_u64().unwrap() as usize;
        let steps = meta["steps"].as_u64().unwrap() as usize;
        assert_eq!(
            data.len(),
            lanes * (3 + 2 * steps + 1),
            "{}: data size",
            json.display()
        );
        Case {
            name: meta["name"].as_str().unwrap().to_owned(),
            complex: meta["dtype"].as_str().unwrap() == "c64",
            lanes,
            steps,
            hyper,
            data,
        }
    }

    /// The `index`-th vector of `lanes` f32 in the data file.
    fn vector(&self, index: usize) -> &[f32] {
        &self.data[index * self.lanes..(index + 1) * self.lanes]
    }
    fn param0(&self) -> &[f32] {
        self.vector(0)
    }
    fn grad(&self, step: usize) -> &[f32] {
        self.vector(1 + step)
    }
    fn param_after(&self, step: usize) -> &[f32] {
        self.vector(1 + self.steps + step)
    }
    fn exp_avg(&self) -> &[f32] {
        self.vector(1 + 2 * self.steps)
    }
    fn exp_avg_sq(&self) -> &[f32] {
        self.vector(2 + 2 * self.steps)
    }
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 20,
        "golden cases missing: found {}",
        cases.len()
    );
    cases
}

/// NaN and ±inf classes must match exactly; otherwise `|x - r| <= rel·|r| + abs`.
fn check_close(got: &[f32], want: &[f32], rel: f64, abs: f64, what: &str) -> f64 {
    let mut worst = 0.0_f64; // the largest error as a fraction of the bound
    for (i, (&x, &r)) in got.iter().zip(want).enumerate() {
        if r.is_nan() || x.is_nan() || r.is_infinite() || x.is_infinite() {
            let same_class = (r.is_nan() && x.is_nan()) || (r.is_infinite() && x == r);
            assert!(same_class, "{what} lane {i}: got {x}, reference {r}");
            continue;
        }
        let bound = rel * (r as f64).abs() + abs;
        let err = (x as f64 - r as f64).abs();
        assert!(
            err <= bound,
            "{what} lane {i}: got {x:e}, reference {r:e}, |error| {err:e} > bound {bound:e}"
        );
        if bound > 0.0 {
            worst = worst.max(err / bound);
        }
    }
    worst
}

#[test]
fn golden_trajectories_within_tolerance() {
    for path in cases() {
        let case = Case::load(&path);
        let mut params = case.param0().to_vec();
        let mut state = State::new(case.lanes);
        let mut worst = 0.0_f64;
        for t in 0..case.steps {
            adopt_step(&mut params, case.grad(t), &mut state, &case.hyper).unwrap();
            let what = format!("{} step {}", case.name, t + 1);
            let abs = 1e-4 * case.hyper.lr * (t + 1) as f64;
            worst = worst.max(check_close(&params, case.param_after(t), 1e-6, abs, &what));
        }
        // The moments have no tolerance of their own in the README; they are
        // held to a relative 1e-5 (10× the params' relative term) plus a tiny
        // absolute term for lanes that cancel to near zero.
        check_close(
            state.exp_avg(),
            case.exp_avg(),
            1e-5,
            1e-6,
            &format!("{} exp_avg", case.name),
        );
        check_close(
            state.exp_avg_sq(),
            case.exp_avg_sq(),
            1e-5,
            1e-30,
            &format!("{} exp_avg_sq", case.name),
        );
        eprintln!(
            "{:>20}: worst param error {:.3} of the bound",
            case.name, worst
        );
    }
}

/// The complex cases through the complex API (`Complex32` buffers).
#[cfg(feature = "complex")]
#[test]
fn golden_complex_cases_through_the_complex_api() {
    use adopt::complex::{Complex32, adopt_step_complex, as_lanes};
    let to_complex = |lanes: &[f32]| -> Vec<Complex32> {
        lanes
            .chunks_exact(2)
            .map(|c| Complex32::new(c[0], c[1]))
            .collect()
    };
    let mut seen = 0;
    for path in cases() {
        let case = Case::load(&path);
        if !case.complex {
            continue;
        }
        seen += 1;
        let mut params = to_complex(case.param0());
        let mut state = State::new(case.lanes);
        for t in 0..case.steps {
            adopt_step_complex(
                &mut params,
                &to_complex(case.grad(t)),
                &mut state,
                &case.hyper,
            )
            .unwrap();
            let abs = 1e-4 * case.hyper.lr * (t + 1) as f64;
            check_close(
                as_lanes(&params),
                case.param_after(t),
                1e-6,
                abs,
                &format!("{} (complex API) step {}", case.name, t + 1),
            );
        }
        // Bit-identical to the f32 path on the interleaved lanes.
        let mut lanes = case.param0().to_vec();
        let mut lane_state = State::new(case.lanes);
        for t in 0..case.steps {
            adopt_step(&mut lanes, case.grad(t), &mut lane_state, &case.hyper).unwrap();
        }
        assert!(
            as_lanes(&params)
                .iter()
                .zip(&lanes)
                .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()))
        );
        let same = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
        };
        assert!(
            same(state.exp_avg(), lane_state.exp_avg())
                && same(state.exp_avg_sq(), lane_state.exp_avg_sq())
        );
    }
    assert_eq!(seen, 2, "the two complex golden cases");
}
