//! Human-readable sizes and size arguments ("16K", "4MiB", "2G"), and the other units
//! arguments take: durations ("90s", "30m") and ratios.

/// Formats a byte count with a binary unit: "1.50 GiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// Parses "123", "16K", "16KiB", "4M", "2G" (binary multiples) into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (n, unit) = number_and_unit(text, "size")?;
    let shift = match unit.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{text:?}: unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses "90" or "90s", "30m", "12h", "2d" into a duration.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (n, unit) = number_and_unit(text, "duration")?;
    let seconds = match unit.as_str() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?}: unknown unit (use s, m, h or d)")),
    };
    n.checked_mul(seconds)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Splits "16K" into its number and its unit in lower case (16, "k"); `what` names the kind
/// of argument in the error.
fn number_and_unit(text: &str, what: &str) -> Result<(u64, String), String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a {what}"))?;
    Ok((n, unit.trim().to_ascii_lowercase()))
}

/// Parses a share ratio: a finite number, 0 or more ("2", "1.5").
pub fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!("{text:?} is not a ratio (a number, 0 or more)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16K"), Ok(16384));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("7"), Ok(7));
        assert!(parse_size("x").is_err());
        assert!(parse_size("3Q").is_err());
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(10), "10 B");
    }

    #[test]
    fn durations_and_ratios() {
        use std::time::Duration;
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(parse_ratio("1.5"), Ok(1.5));
        assert!(parse_ratio("-1").is_err());
        assert!(parse_ratio("inf").is_err());
        assert!(parse_ratio("NaN").is_err());
    }
}
