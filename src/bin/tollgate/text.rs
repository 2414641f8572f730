//! The formatting the commands share: escaped text, counts, sizes,
//! durations, times, hex, base64, tables and JSON, so that every command
//! writes a name or a number the same way.

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::time::Duration;

use serde_json::Value;
use tollgate::Escaped;

/// Text for the output with its control characters escaped
/// ([`Escaped`]): a name as it is on disk, or text the library made (an
/// error, a note), which escapes its names and paths itself. Escaping is
/// idempotent, so text escaped twice reads as escaped once.
pub(super) fn escaped(text: impl fmt::Display) -> String {
    Escaped::text(&text.to_string()).to_string()
}

/// A JSON document as text with no control character but the line breaks
/// between its lines (`pretty`). serde_json escapes C0 in strings but writes
/// DEL and C1 raw, as JSON allows; they are written as `\u007f`, `\u009b`...,
/// which a JSON reader reads as the same string.
pub(super) fn json_text(value: &Value, pretty: bool) -> String {
    let text = if pretty { serde_json::to_string_pretty(value) } else { serde_json::to_string(value) };
    let text = text.expect("a JSON value serializes");
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // Outside strings there is only the pretty printer's `\n`.
        if c.is_control() && c != '\n' {
            write!(out, "\\u{:04x}", u32::from(c)).expect("writing to a String");
        } else {
            out.push(c);
        }
    }
    out
}

/// A table indented by two spaces: the first column left-aligned, the
/// others right-aligned. A row may have fewer cells than headers (its last
/// cell then runs on unaligned). Every cell is [`escaped`]: tables show
/// names and what the library says about them.
pub(super) fn write_table(
    out: &mut impl Write,
    headers: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) -> io::Result<()> {
    let rows: Vec<Vec<String>> = rows.map(|row| row.iter().map(escaped).collect()).collect();
    let headers: Vec<String> = headers.iter().map(escaped).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows.iter().filter(|row| row.len() == headers.len()) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut line = String::from(" ");
        for (i, cell) in cells.iter().enumerate() {
            let width = if cells.len() == headers.len() { widths[i] } else { 0 };
            if i == 0 {
                line.push_str(&format!(" {cell:<width$}"));
            } else {
                line.push_str(&format!("  {cell:>width$}"));
            }
        }
        line.trim_end().to_owned()
    };
    writeln!(out, "{}", line(&headers))?;
    for row in &rows {
        writeln!(out, "{}", line(row))?;
    }
    Ok(())
}

/// `"s"` after a count other than one: `1 record`, `2 records`.
pub(super) fn plural(count: u64) -> &'static str {
    if count == 1 { "" } else { "s" }
}

/// `1234567` as `1,234,567`.
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `512 B`, `4.0 KiB`, `1.21 MiB`, `3.50 GiB`.
pub(super) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 { format!("{value:.2} {}", UNITS[unit]) } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Nanoseconds as `850 ns`, `12.3 us`, `4.56 ms`, `1.20 s`.
pub(super) fn format_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// Microseconds since the Unix epoch as RFC 3339 in UTC, to the microsecond.
/// Times past the year 9999 (only a damaged or forged file has them), which
/// RFC 3339 cannot write, are shown as their number.
pub(super) fn format_time_us(us: u64) -> String {
    /// 10000-01-01T00:00:00Z.
    const YEAR_10000_US: u64 = 253_402_300_800 * 1_000_000;
    if us >= YEAR_10000_US {
        return format!("{us}us");
    }
    humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + Duration::from_micros(us)).to_string()
}

/// Bytes as lowercase hex, two digits a byte.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Standard base64 (RFC 4648), padded.
pub(super) fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn times_are_rfc_3339_utc() {
        assert_eq!(format_time_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_time_us(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
        assert_eq!(format_time_us(1_735_689_599_999_999), "2024-12-31T23:59:59.999999Z");
        assert_eq!(format_time_us(253_402_300_799_999_999), "9999-12-31T23:59:59.999999Z");
        assert_eq!(format_time_us(u64::MAX), format!("{}us", u64::MAX));
    }

    #[test]
    fn text_and_json_hold_no_control_characters() {
        let name = "a\x1b[2J\tb\u{9b}\x7f\n";
        assert_eq!(escaped(name), r"a\u{1b}[2J\tb\u{9b}\u{7f}\n");
        assert_eq!(escaped(escaped(name)), escaped(name));
        let value = serde_json::json!({ "name": name, "list": [name] });
        for pretty in [false, true] {
            let text = json_text(&value, pretty);
            assert!(!text.contains(|c: char| c.is_control() && c != '\n'), "{text:?}");
            assert_eq!(text.contains('\n'), pretty);
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
        }
    }

    #[test]
    fn numbers_are_readable() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(4096), "4.00 KiB");
        assert_eq!(human_bytes(100 << 20), "100.0 MiB");
        assert_eq!(format_ns(850), "850 ns");
        assert_eq!(format_ns(12_300), "12.3 us");
    }
}
