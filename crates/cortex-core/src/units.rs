//! Human-friendly durations ("500ms", "2s", "30m", "1h30m") and byte sizes
//! ("350MiB", "24GiB", "1.5GB", "1048576") used throughout the configuration.
//!
//! Owns parsing and display of these two units; knows nothing about which
//! config key uses them.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a duration or size string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(pub String);

/// A duration written as a number followed by a unit: `ms`, `s`, `m`, `h`, `d`.
/// Several parts may follow each other (`1h30m`). A bare `0` is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub std::time::Duration);

impl HumanDuration {
    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }
    pub const fn get(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() {
            return Err(UnitError(
                "empty duration (expected e.g. \"2s\", \"30m\")".into(),
            ));
        }
        if t == "0" {
            return Ok(Self::default());
        }
        let mut total_ms: u128 = 0;
        let mut rest = t;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if num_len == 0 {
                return Err(UnitError(format!(
                    "bad duration {s:?}: expected a number before the unit (e.g. \"2s\", \"30m\")"
                )));
            }
            let n: u128 = rest[..num_len]
                .parse()
                .map_err(|_| UnitError(format!("bad duration {s:?}: number too large")))?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let factor: u128 = match unit {
                "ms" => 1,
                "s" | "sec" | "secs" => 1_000,
                "m" | "min" | "mins" => 60_000,
                "h" | "hr" | "hrs" => 3_600_000,
                "d" => 86_400_000,
                "" => {
                    return Err(UnitError(format!(
                        "bad duration {s:?}: missing unit (use ms, s, m, h or d)"
                    )))
                }
                other => {
                    return Err(UnitError(format!(
                        "bad duration {s:?}: unknown unit {other:?} (use ms, s, m, h or d)"
                    )))
                }
            };
            total_ms = n
                .checked_mul(factor)
                .and_then(|v| total_ms.checked_add(v))
                .ok_or_else(|| UnitError(format!("bad duration {s:?}: too large")))?;
        }
        let ms = u64::try_from(total_ms)
            .map_err(|_| UnitError(format!("bad duration {s:?}: too large")))?;
        Ok(Self(std::time::Duration::from_millis(ms)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms % size == 0 {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"500ms\", \"2s\", \"30m\" or \"1h\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(|e: UnitError| E::custom(e.0))
            }
        }
        d.deserialize_str(V)
    }
}

/// A number of bytes. Accepts a plain integer, or a number with a unit:
/// binary `KiB MiB GiB TiB` (powers of 1024) or decimal `B KB MB GB TB`
/// (powers of 1000). Fractions are allowed with a unit (`1.5GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }
    pub const fn gib(n: u64) -> Self {
        Self(n * 1024 * 1024 * 1024)
    }
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = (&t[..split], t[split..].trim());
        if num.is_empty() {
            return Err(UnitError(format!(
                "bad size {s:?}: expected a number (e.g. \"350MiB\", \"24GiB\")"
            )));
        }
        let factor: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "m" | "mb" => 1_000_000,
            "g" | "gb" => 1_000_000_000,
            "t" | "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => {
                return Err(UnitError(format!(
                    "bad size {s:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
                )))
            }
        };
        if num.contains('.') {
            let v: f64 = num
                .parse()
                .map_err(|_| UnitError(format!("bad size {s:?}: {num:?} is not a number")))?;
            let bytes = v * factor as f64;
            if !bytes.is_finite() || bytes >= u64::MAX as f64 {
                return Err(UnitError(format!("bad size {s:?}: too large")));
            }
            return Ok(Self(bytes.round() as u64));
        }
        let n: u64 = num
            .parse()
            .map_err(|_| UnitError(format!("bad size {s:?}: number too large")))?;
        n.checked_mul(factor)
            .map(Self)
            .ok_or_else(|| UnitError(format!("bad size {s:?}: too large")))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, size) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if b >= size && b % size == 0 {
                return write!(f, "{}{unit}", b / size);
            }
        }
        write!(f, "{b}")
    }
}

impl ByteSize {
    /// Rounded, human display for tables: "97.8 MiB", "23.4 GiB".
    pub fn human(self) -> String {
        let b = self.0 as f64;
        for (unit, size) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if self.0 >= size {
                return format!("{:.1} {unit}", b / size as f64);
            }
        }
        format!("{} B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"350MiB\", \"24GiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(|e: UnitError| E::custom(e.0))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        let d = |s: &str| s.parse::<HumanDuration>().map(|d| d.0);
        assert_eq!(d("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(d("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(d("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "2",
            "s",
            "2x",
            "-1s",
            "2.5s",
            "1h 2",
            "99999999999999999999999s",
        ] {
            assert!(d(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn sizes() {
        let b = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(b("350MiB"), Ok(350 << 20));
        assert_eq!(b("24GiB"), Ok(24 << 30));
        assert_eq!(b("1GB"), Ok(1_000_000_000));
        assert_eq!(b("1048576"), Ok(1 << 20));
        assert_eq!(b("1.5GiB"), Ok(3 << 29));
        assert_eq!(b("64 MiB"), Ok(64 << 20));
        for bad in [
            "",
            "MiB",
            "12 parsecs",
            "-5MiB",
            "1.2.3GiB",
            "99999999999TiB",
        ] {
            assert!(b(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn display_round_trips() {
        assert_eq!(HumanDuration::from_secs(1800).to_string(), "30m");
        assert_eq!(HumanDuration::from_millis(1500).to_string(), "1500ms");
        assert_eq!(ByteSize::mib(350).to_string(), "350MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        assert_eq!(ByteSize::mib(1536).human(), "1.5 GiB");
    }

    proptest! {
        #[test]
        fn duration_parser_never_panics(s in "\\PC{0,24}") {
            let _ = s.parse::<HumanDuration>();
        }

        #[test]
        fn size_parser_never_panics(s in "\\PC{0,24}") {
            let _ = s.parse::<ByteSize>();
        }

        #[test]
        fn duration_display_round_trips(ms in 0u64..10_000_000_000) {
            let d = HumanDuration::from_millis(ms);
            prop_assert_eq!(d.to_string().parse::<HumanDuration>(), Ok(d));
        }

        #[test]
        fn size_display_round_trips(n in 0u64..(1u64 << 50)) {
            let s = ByteSize(n);
            prop_assert_eq!(s.to_string().parse::<ByteSize>(), Ok(s));
        }
    }
}
