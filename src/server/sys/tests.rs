use super::*;

#[test]
fn measures_sleeps_roughly() {
    let c = Cycles::calibrate(Duration::from_millis(5));
    let a = c.stamp();
    std::thread::sleep(Duration::from_millis(20));
    let us = c.micros(a, c.stamp());
    assert!((15_000..2_000_000).contains(&us), "{us} µs");
}
