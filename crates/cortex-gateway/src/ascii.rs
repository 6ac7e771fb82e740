//! Numbers written into HTTP heads and chunk sizes, and read from lengths
//! and token counts, without the formatting machinery (they are written and
//! read on every request).

/// Append `n` in decimal.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Append `n` in lowercase hexadecimal (a chunk size).
pub(crate) fn push_hex(out: &mut Vec<u8>, mut n: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Decimal digits only (no sign, no spaces, no list), fitting in a u64.
pub(crate) fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn numbers_are_written_as_std_writes_them(n in any::<u64>(), m in any::<usize>()) {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            prop_assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
            let mut out = Vec::new();
            push_hex(&mut out, m);
            prop_assert_eq!(String::from_utf8(out).unwrap(), format!("{m:x}"));
        }

        #[test]
        fn decimals_read_back_and_nothing_else_reads(n in 0u64..10_000_000_000_000_000_000, junk in "[^0-9]{1,3}") {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            prop_assert_eq!(parse_decimal(&out), Some(n));
            out.extend_from_slice(junk.as_bytes());
            prop_assert_eq!(parse_decimal(&out), None);
            prop_assert_eq!(parse_decimal(junk.as_bytes()), None);
        }
    }
}
