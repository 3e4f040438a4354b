//! A window's `schedule`: cron parsing is validation, so it lives with the model; the
//! decisions (`core::window`) only compute occurrences of a parsed schedule.

use chrono::NaiveDate;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// An example schedule for error messages.
pub const SCHEDULE_EXAMPLE: &str = "0 2 * * *";

const FIELDS_5: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
const FIELDS_6: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];

fn range_of(field: &str) -> &'static str {
    match field {
        "second" | "minute" => "0-59",
        "hour" => "0-23",
        "day-of-month" => "1-31, L or W",
        "month" => "1-12 or JAN-DEC",
        _ => "0-7 (0 and 7 = Sunday), SUN-SAT, L or #",
    }
}

fn hint() -> String {
    format!(
        "write 5 fields `minute hour day-of-month month day-of-week` \
         (or 6 with a leading seconds field), e.g. `{SCHEDULE_EXAMPLE}` for 02:00 every day"
    )
}

/// The parser: seconds optional, no year field, weekdays 0–7 (0 and 7 = Sunday), and
/// day-of-month OR day-of-week when both are restricted (Vixie cron).
pub(crate) fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .dom_and_dow(false)
        .alternative_weekdays(false)
        .build()
}

/// Parses a window's `schedule`: 5 cron fields, or 6 with leading seconds. The error
/// names the offending field and shows an example; a schedule that never fires (such
/// as `0 0 30 2 *`) is an error too.
pub fn parse_schedule(expr: &str) -> Result<Cron, String> {
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err(format!("schedule is empty; {}", hint()));
    }
    if trimmed.starts_with('@') {
        let word = trimmed.split_whitespace().next().unwrap_or(trimmed);
        let equivalent = match word.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => Some("0 0 1 1 *"),
            "@monthly" => Some("0 0 1 * *"),
            "@weekly" => Some("0 0 * * 0"),
            "@daily" | "@midnight" => Some("0 0 * * *"),
            "@hourly" => Some("0 * * * *"),
            _ => None,
        };
        return Err(match equivalent {
            Some(eq) => format!(
                "schedule `{trimmed}`: `@` shortcuts are not supported; write `{eq}` instead"
            ),
            None => format!(
                "schedule `{trimmed}`: `{word}` is not a time a window can open at; {}",
                hint()
            ),
        });
    }
    if trimmed.contains('@') {
        return Err(format!(
            "schedule `{trimmed}`: `@` is not allowed in a cron field; {}",
            hint()
        ));
    }
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    let names: &[&str] = match fields.len() {
        5 => &FIELDS_5,
        6 => &FIELDS_6,
        n => {
            return Err(format!(
                "schedule `{trimmed}` has {n} field{}; {}",
                if n == 1 { "" } else { "s" },
                hint()
            ));
        }
    };
    let parser = parser();
    // Check each field alone (the others `*`) so the error can name the field.
    for (i, (field, name)) in fields.iter().zip(names).enumerate() {
        let probe: Vec<&str> = (0..fields.len())
            .map(|j| if j == i { *field } else { "*" })
            .collect();
        if let Err(e) = parser.parse(&probe.join(" ")) {
            return Err(format!(
                "schedule `{trimmed}`: the {name} field `{field}` is invalid \
                 ({name} takes {}; {e}); {}",
                range_of(name),
                hint()
            ));
        }
    }
    let cron = parser
        .parse(trimmed)
        .map_err(|e| format!("schedule `{trimmed}` is invalid ({e}); {}", hint()))?;
    // Without a year field a schedule repeats every 400 years (the Gregorian cycle),
    // so croner either finds a firing or gives up at its year limit.
    let reference = NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .ok_or_else(|| "internal error: bad reference date".to_string())?;
    if cron.find_next_occurrence(&reference, true).is_err() {
        return Err(format!(
            "schedule `{trimmed}` never fires: no date matches its day-of-month, month and \
             day-of-week fields; e.g. `{SCHEDULE_EXAMPLE}` fires at 02:00 every day"
        ));
    }
    Ok(cron)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_schedules_name_the_problem() {
        let err = |e: &str| parse_schedule(e).expect_err(e);
        for e in ["0 2 * *", "0 0 2 * * * *", "2"] {
            let msg = err(e);
            assert!(
                msg.contains("field") && msg.contains("`0 2 * * *`"),
                "{msg}"
            );
        }
        assert!(err("").contains("empty"));
        assert!(err("60 2 * * *").contains("minute field `60`"));
        assert!(err("0 24 * * *").contains("hour field `24`"));
        assert!(err("0 2 32 * *").contains("day-of-month field `32`"));
        assert!(err("0 2 * 13 *").contains("month field `13`"));
        assert!(err("0 2 * * 8").contains("day-of-week field `8`"));
        assert!(err("61 0 2 * * *").contains("second field `61`"));
        assert!(err("0 2 * * funday").contains("day-of-week field"));
        assert!(err("@reboot").contains("`@reboot` is not a time"));
        assert!(err("@daily").contains("`0 0 * * *`"));
        assert!(err("0 2 * * *@").contains("`@`"));
        // The example in every hint parses.
        assert!(parse_schedule(SCHEDULE_EXAMPLE).is_ok());
    }
}
