use super::*;

#[test]
fn starts_full_and_drains() {
    let mut b = TokenBucket::new(3, 1_000);
    assert_eq!(b.available(1_000), 3);
    assert_eq!(b.try_take(1, 1_000), Ok(()));
    assert_eq!(b.try_take(1, 1_000), Ok(()));
    assert_eq!(b.try_take(1, 1_000), Ok(()));
    assert_eq!(b.available(1_000), 0);
    // 3 per minute = one token every 20 s.
    assert_eq!(b.try_take(1, 1_000), Err(20_000));
}

#[test]
fn continuous_refill() {
    let mut b = TokenBucket::new(60, 0); // one token per second
    for _ in 0..60 {
        assert!(b.try_take(1, 0).is_ok());
    }
    assert_eq!(b.try_take(1, 0), Err(1_000));
    assert_eq!(b.try_take(1, 400), Err(600));
    assert_eq!(b.try_take(1, 999), Err(1));
    assert_eq!(b.try_take(1, 1_000), Ok(()));
    assert_eq!(b.try_take(1, 1_000), Err(1_000));
    assert_eq!(b.available(2_500), 1);
    assert_eq!(b.available(10_000), 9);
}

#[test]
fn never_exceeds_capacity() {
    let mut b = TokenBucket::new(10, 0);
    assert_eq!(b.available(1_000_000_000), 10);
    assert!(b.try_take(10, 1_000_000_000).is_ok());
    assert!(b.try_take(1, 1_000_000_000).is_err());
}

#[test]
fn all_or_nothing() {
    let mut b = TokenBucket::new(10, 0);
    assert!(b.try_take(7, 0).is_ok());
    // 3 left: asking for 5 takes nothing.
    let wait = b.try_take(5, 0);
    assert_eq!(wait, Err(2 * 6_000));
    assert_eq!(b.available(0), 3);
    assert!(b.try_take(3, 0).is_ok());
    assert_eq!(b.available(0), 0);
    // The reported wait is exactly enough.
    let mut b = TokenBucket::new(10, 0);
    assert!(b.try_take(10, 0).is_ok());
    let Err(ms) = b.try_take(4, 0) else { panic!("should be limited") };
    assert!(b.try_take(4, ms - 1).is_err());
    assert!(b.try_take(4, ms).is_ok());
}

#[test]
fn oversized_request_reports_time_to_full() {
    let mut b = TokenBucket::new(10, 0);
    // Full bucket: still refused, retry hint at least 1 ms.
    assert_eq!(b.try_take(11, 0), Err(1));
    assert_eq!(b.available(0), 10, "nothing taken");
    assert!(b.try_take(10, 0).is_ok());
    assert_eq!(b.try_take(11, 0), Err(60_000));
    assert_eq!(b.try_take(u32::MAX, 30_000), Err(30_000));
}

#[test]
fn unlimited() {
    let mut b = TokenBucket::new(0, 0);
    assert!(b.is_unlimited());
    for i in 0..10_000 {
        assert!(b.try_take(1, i).is_ok());
    }
    assert!(b.try_take(u32::MAX, 0).is_ok());
    assert_eq!(b.available(0), u32::MAX);
}

#[test]
fn zero_take_is_free() {
    let mut b = TokenBucket::new(1, 0);
    assert!(b.try_take(1, 0).is_ok());
    assert!(b.try_take(0, 0).is_ok());
    assert!(b.try_take(1, 0).is_err());
}

#[test]
fn no_drift_with_small_steps() {
    // 1000/min = 1 token per 60 ms; step 1 ms at a time for 10 minutes.
    let mut b = TokenBucket::new(1_000, 0);
    assert!(b.try_take(1_000, 0).is_ok());
    let mut taken = 0u64;
    for t in 1..=600_000u64 {
        if b.try_take(1, t).is_ok() {
            taken += 1;
        }
    }
    assert_eq!(taken, 10_000, "exactly rate × time, no drift");
    // Odd rate that does not divide a minute evenly.
    let mut b = TokenBucket::new(7, 0);
    assert!(b.try_take(7, 0).is_ok());
    let mut taken = 0u64;
    for t in 1..=60_000u64 * 3 {
        if b.try_take(1, t).is_ok() {
            taken += 1;
        }
    }
    assert_eq!(taken, 21);
}

#[test]
fn clock_going_backwards_mints_nothing() {
    let mut b = TokenBucket::new(60, 10_000);
    assert!(b.try_take(60, 10_000).is_ok());
    assert!(b.try_take(1, 5_000).is_err());
    assert_eq!(b.available(5_000), 0);
    // Time resumes from the latest seen instant, not from the earlier one.
    assert_eq!(b.available(10_999), 0);
    assert_eq!(b.available(11_000), 1);
}

#[test]
fn huge_values_do_not_overflow() {
    let mut b = TokenBucket::new(u32::MAX, 0);
    assert_eq!(b.available(u64::MAX), u32::MAX);
    assert!(b.try_take(u32::MAX, u64::MAX).is_ok());
    assert_eq!(b.try_take(1, u64::MAX), Err(60_000u64.div_ceil(u64::from(u32::MAX))));
    let mut b = TokenBucket::new(1, u64::MAX - 5);
    assert!(b.try_take(1, u64::MAX).is_ok());
    assert!(b.try_take(1, u64::MAX).is_err());
}
