//! Compose durations (Go's `time.ParseDuration`: `1m30s`, `1.5s`, `500ms`, `2h`; a plain number
//! is seconds) and their whole seconds for ECS's fields.

use std::time::Duration;

/// Parse a Compose duration; the message says what is wrong.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("invalid duration `{s}`: write it like 30s, 1m30s, 1.5s or 500ms");
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    if t.starts_with('-') {
        return Err(format!("invalid duration `{s}`: must not be negative"));
    }
    let mut total = 0f64;
    let mut rest = t.strip_prefix('+').unwrap_or(t);
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(n_end);
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let n: f64 = num.parse().map_err(|_| bad())?;
        let u_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(u_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => {
                return Err(format!(
                    "invalid duration `{s}`: unknown unit `{unit}` (use ns, us, ms, s, m or h)"
                ))
            }
        };
        total += n * scale;
        rest = next;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(format!("invalid duration `{s}`: too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Whole seconds, rounded up (ECS's health check and stop timeout fields are seconds).
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1h2m3s").unwrap(), Duration::from_secs(3723));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("10").unwrap(), Duration::from_secs(10));
        for bad in ["", "s", "10x", "-5s", "1m30", "abc", "1..5s", "."] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(ceil_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
    }

    proptest! {
        #[test]
        fn compound_durations_add_up(h in 0u64..50, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let d = parse(&text).unwrap();
            let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
            let diff = d.abs_diff(want);
            prop_assert!(diff < Duration::from_micros(1), "{text}: {d:?} vs {want:?}");
        }

        #[test]
        fn never_panics(s in "\\PC{0,20}") {
            let _ = parse(&s);
        }
    }
}
