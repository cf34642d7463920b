//! Compose sizes (`512m`, `1g`, `1024k`, `64mb`, a plain number of bytes) as MiB, and CPU counts
//! (`0.5`, `"2"`) as ECS CPU units (1024 = one core).

/// Bytes → MiB, rounded up. `what` names the key for the message.
pub fn mib(s: &str) -> Result<u32, String> {
    let t = s.trim().to_ascii_lowercase();
    let bad = || format!("invalid size `{s}`: write it like 512m, 1g or 1024k");
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(end);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let scale: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0f64.powi(4),
        _ => return Err(bad()),
    };
    let mib = (n * scale / (1024.0 * 1024.0)).ceil();
    if !mib.is_finite() || mib > u32::MAX as f64 {
        return Err(format!("invalid size `{s}`: too large"));
    }
    Ok(mib as u32)
}

/// CPUs → CPU units (×1024, rounded).
pub fn cpu_units(s: &str) -> Result<u32, String> {
    let n: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid cpus `{s}`: write a number of cores like 0.5 or 2"))?;
    if !(n.is_finite() && n > 0.0 && n <= 192.0) {
        return Err(format!(
            "invalid cpus `{s}`: must be more than 0 and at most 192"
        ));
    }
    Ok((n * 1024.0).round().max(1.0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_cpus() {
        assert_eq!(mib("512m").unwrap(), 512);
        assert_eq!(mib("512M").unwrap(), 512);
        assert_eq!(mib("1g").unwrap(), 1024);
        assert_eq!(mib("1.5gb").unwrap(), 1536);
        assert_eq!(mib("1024k").unwrap(), 1);
        assert_eq!(mib("1048576").unwrap(), 1);
        assert_eq!(mib("1").unwrap(), 1);
        assert!(mib("lots").is_err());
        assert!(mib("5x").is_err());
        assert_eq!(cpu_units("0.5").unwrap(), 512);
        assert_eq!(cpu_units("2").unwrap(), 2048);
        assert!(cpu_units("0").is_err());
        assert!(cpu_units("-1").is_err());
        assert!(cpu_units("many").is_err());
    }
}
