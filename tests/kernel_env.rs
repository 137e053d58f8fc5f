//! `ADOPT_KERNEL` pins the kernel dispatch uses, and `Kernel::force`
//! overrides it. (One test in its own binary: the choice is per process.)

use adopt::{Hyper, Kernel, State, adopt_step};

#[test]
fn environment_and_force_pick_the_kernel() {
    // SAFETY: this binary's only test; no other thread reads the environment.
    unsafe { std::env::set_var("ADOPT_KERNEL", "portable") };
    assert_eq!(Kernel::active(), Kernel::Portable);
    let mut params = vec![1.0_f32; 9];
    let mut state = State::new(9);
    adopt_step(&mut params, &[0.5; 9], &mut state, &Hyper::default()).unwrap();
    assert_eq!(Kernel::active(), Kernel::Portable, "the choice is cached");

    assert!(Kernel::force(None));
    assert_eq!(Kernel::active(), Kernel::best());
    for kernel in Kernel::ALL {
        assert_eq!(Kernel::force(Some(kernel)), kernel.is_available());
        if kernel.is_available() {
            assert_eq!(Kernel::active(), kernel);
        }
    }
    Kernel::force(None);
}
