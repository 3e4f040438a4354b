//! Durations as operators write them: `90s`, `5m`, `1h30m`, `2d`.

use std::time::Duration;

/// What a duration may look like, for help messages.
pub const DURATION_HELP: &str = "write a number followed by a unit, e.g. \"90s\", \"5m\", \"1h30m\" or \"2d\" (units: s, m, h, d)";

/// Parses `1h30m`-style durations: one or more `<integer><unit>` parts, units s/m/h/d.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty".to_string());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("has an unknown unit `{c}`")),
        };
        if digits.is_empty() {
            return Err(format!("has unit `{c}` without a number before it"));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| "has a number that is too large".to_string())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| "is too long".to_string())?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!("ends with `{digits}` without a unit"));
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration the way it would be written in fleet.toml (`1h30m`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
    }
}
