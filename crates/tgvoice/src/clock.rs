//! Wall-clock time in µs since the Unix epoch: the time base of capture timestamps and traces,
//! shared by every process so latencies can be computed across them.

pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
