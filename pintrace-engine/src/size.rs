//! Parsing and printing of sizes and durations: sizes fio style, durations
//! with humantime's units.
//!
//! Sizes use binary multiples (fio's default `kb_base=1024`): `4k`, `4K`,
//! `4KiB`, `128K`, `8M`, `1m`, `1g`, `2T` and plain byte counts are accepted.

use std::time::Duration;

/// Parse a size such as `4k`, `128K`, `8M`, `1m`, `1GiB` or `4096` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty size".into());
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() {
        return Err(format!("`{text}` does not start with a number"));
    }
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        other => {
            return Err(format!(
                "unknown size suffix `{other}` in `{text}` (use k, m, g, t)"
            ))
        }
    };
    let mult = 1u64 << shift;
    if let Some((int, frac)) = num.split_once('.') {
        // Fractions such as 1.5M: exact in binary multiples, must come out whole.
        let int: u64 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| format!("bad number in `{text}`"))?
        };
        if frac.contains('.') || frac.is_empty() {
            return Err(format!("bad number in `{text}`"));
        }
        let digits = frac.len() as u32;
        let frac_val: u64 = frac
            .parse()
            .map_err(|_| format!("bad number in `{text}`"))?;
        let scale = 10u64
            .checked_pow(digits)
            .ok_or_else(|| format!("too many digits in `{text}`"))?;
        let whole = int
            .checked_mul(mult)
            .ok_or_else(|| format!("`{text}` is too large"))?;
        let part = (frac_val as u128 * mult as u128) / scale as u128;
        if !(frac_val as u128 * mult as u128).is_multiple_of(scale as u128) {
            return Err(format!("`{text}` is not a whole number of bytes"));
        }
        return whole
            .checked_add(part as u64)
            .ok_or_else(|| format!("`{text}` is too large"));
    }
    let n: u64 = num.parse().map_err(|_| format!("bad number in `{text}`"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parse a duration: the one parser of every time-valued flag, the
/// engine's and pintrace's. A bare number is seconds (`10`, `2.5`), as these
/// flags always took; anything else is humantime's (`500ms`, `5s`, `1.5m`,
/// `2h 30min`). The error names the value; the caller adds the flag.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const WHAT: &str = "seconds, or a number and a unit: 500ms, 5s, 2m, 1h";
    let s = text.trim();
    let d = match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => {
            Duration::try_from_secs_f64(secs).map_err(|_| format!("`{text}` is out of range"))?
        }
        Ok(_) => return Err(format!("`{text}` is not a duration ({WHAT})")),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("`{text}` is not a duration ({WHAT}): {e}"))?,
    };
    if d.as_secs() > 1_000_000_000 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(d)
}

/// Print a byte count with a binary unit: `4KiB`, `1.5MiB`, `512B`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 || v.fract() == 0.0 {
        format!("{}{}", v as u64, UNITS[i])
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// Print a rate with an SI suffix the way fio prints IOPS: `950`, `12.3k`, `1.2M`.
pub fn fmt_si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.2}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_fio_style() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("128K").unwrap(), 128 << 10);
        assert_eq!(parse_size("8M").unwrap(), 8 << 20);
        assert_eq!(parse_size("1m").unwrap(), 1 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("2T").unwrap(), 2 << 40);
        assert_eq!(parse_size("1.5M").unwrap(), 3 << 19);
        assert_eq!(parse_size(" 512b ").unwrap(), 512);
        assert_eq!(parse_size("0").unwrap(), 0);
    }

    #[test]
    fn bad_sizes() {
        for bad in [
            "",
            "k",
            "4q",
            "4kk",
            "1.3",
            "1..5M",
            "-4k",
            "99999999999999999999",
            "16384P",
        ] {
            assert!(parse_size(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(
            parse_duration("1h 30min").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in [
            "ten",
            "5x",
            "-1",
            "-5s",
            "",
            "nan",
            "inf",
            "1e400",
            "99999999999y",
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn printing() {
        assert_eq!(fmt_bytes(512), "512B");
        assert_eq!(fmt_bytes(4096), "4KiB");
        assert_eq!(fmt_bytes(3 << 19), "1.5MiB");
        assert_eq!(fmt_bytes(1 << 30), "1GiB");
        assert_eq!(fmt_si(950.0), "950");
        assert_eq!(fmt_si(12_345.0), "12.3k");
    }
}
