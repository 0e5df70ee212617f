//! Identifiers and clocks without a dependency.

use std::sync::atomic::{AtomicU64, Ordering};

/// A well-mixed 64-bit value: a process-wide counter, started from the process's start
/// time and id, through a finaliser. Unique within the process, unpredictable enough for
/// ids and weighted picks (not for secrets); no clock is read after the first call.
pub fn rand_u64() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ (u64::from(std::process::id()) << 32)
    });
    let mut x = *SEED ^ N.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// `prefix` and then `x` as sixteen lower-case hex digits (`req_00c0ffee…`), written
/// without the formatter: ids are made on every request.
pub fn hex_id(prefix: &str, x: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(prefix.len() + 16);
    s.push_str(prefix);
    for i in (0..16).rev() {
        s.push(char::from(HEX[((x >> (4 * i)) & 0xf) as usize]));
    }
    s
}

/// Appends `n` in decimal, without the formatter.
pub fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_and_numbers_read_as_the_formatter_writes_them() {
        for x in [0u64, 1, 9, 10, 0xdead_beef, 1 << 63, u64::MAX - 1, u64::MAX] {
            assert_eq!(super::hex_id("req_", x), format!("req_{x:016x}"));
            let mut s = String::from("n=");
            super::push_decimal(&mut s, x);
            assert_eq!(s, format!("n={x}"));
        }
    }

    #[test]
    fn values_are_unique_and_spread() {
        let v: Vec<u64> = (0..10_000).map(|_| super::rand_u64()).collect();
        let mut sorted = v.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), v.len(), "no repeats");
        // Each bit is set in roughly half of the values.
        for bit in 0..64 {
            let ones = v.iter().filter(|x| *x >> bit & 1 == 1).count();
            assert!((4_000..6_000).contains(&ones), "bit {bit} set in {ones} of 10000");
        }
    }
}
