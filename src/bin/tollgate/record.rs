//! How `dump` and `tail` print a record: a line of text, escaped and cut at
//! `--max-bytes` so that a terminal shows it, or a JSON object, never cut, so
//! that a program gets every byte back.

use std::io::{self, Write};

use serde_json::{Value, json};
use tollgate::Record;

use crate::text::{base64, escaped, format_time_us, hex, json_text};

/// How records are printed.
#[derive(Clone, Copy)]
pub(super) struct Style {
    pub(super) json: bool,
    /// Longest payload or header value shown in text lines (0: no limit).
    pub(super) max_bytes: usize,
}

/// One record as a line of text or JSON.
pub(super) fn write_record(out: &mut impl Write, record: &Record, style: Style) -> io::Result<()> {
    if style.json {
        return writeln!(out, "{}", json_text(&record_json(record), false));
    }
    let mut line = format!("{} {}", record.offset(), format_time_us(record.timestamp_us()));
    if let Some(key) = record.key() {
        line.push_str(&format!(" key={key:?}"));
    }
    let headers: Vec<String> =
        record.headers().map(|(name, value)| header_text(name, value, style.max_bytes)).collect();
    if !headers.is_empty() {
        line.push_str(&format!(" headers={{{}}}", headers.join(", ")));
    }
    line.push_str(&format!(" payload={}", bytes_text(record.payload(), style.max_bytes)));
    writeln!(out, "{line}")
}

/// A header as `name=value` (control characters in the name escaped, as in
/// any name), the reserved binary ones decoded.
fn header_text(name: &str, value: &[u8], max_bytes: usize) -> String {
    let shown = escaped(name);
    match (name, value) {
        ("tollgate.priority", [priority]) => format!("{shown}={priority}"),
        ("tollgate.deliver-at", value) if value.len() == 8 => {
            let us = u64::from_le_bytes(value.try_into().expect("eight bytes"));
            format!("{shown}={}", format_time_us(us))
        }
        _ => format!("{shown}={}", bytes_text(value, max_bytes)),
    }
}

/// Bytes as a quoted, escaped string if they are UTF-8, else as `hex:...`;
/// cut at `max_bytes` (0: never) with the full size added.
fn bytes_text(bytes: &[u8], max_bytes: usize) -> String {
    let cut = max_bytes > 0 && bytes.len() > max_bytes;
    let shown = if cut { &bytes[..max_bytes] } else { bytes };
    let mut text = match std::str::from_utf8(bytes) {
        Ok(_) => {
            // The cut may split a character: show the whole ones before it.
            let valid = std::str::from_utf8(shown)
                .unwrap_or_else(|e| std::str::from_utf8(&shown[..e.valid_up_to()]).expect("valid up to there"));
            format!("{valid:?}")
        }
        Err(_) => format!("hex:{}", hex(shown)),
    };
    if cut {
        text.push_str(&format!("...({} bytes)", bytes.len()));
    }
    text
}

fn record_json(record: &Record) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("offset".into(), json!(record.offset().get()));
    object.insert("timestamp_us".into(), json!(record.timestamp_us()));
    object.insert("time".into(), json!(format_time_us(record.timestamp_us())));
    object.insert("key".into(), json!(record.key()));
    let headers: Vec<Value> = record
        .headers()
        .map(|(name, value)| {
            let mut header = serde_json::Map::new();
            header.insert("name".into(), json!(name));
            insert_bytes(&mut header, "value", value);
            Value::Object(header)
        })
        .collect();
    object.insert("headers".into(), Value::Array(headers));
    insert_bytes(&mut object, "payload", record.payload());
    object.insert("payload_bytes".into(), json!(record.payload().len()));
    Value::Object(object)
}

/// `field` as a string if `bytes` are UTF-8, else `<field>_base64`.
fn insert_bytes(object: &mut serde_json::Map<String, Value>, field: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(field.to_owned(), json!(text)),
        Err(_) => object.insert(format!("{field}_base64"), json!(base64(bytes))),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_show_as_text_or_hex_and_are_cut() {
        assert_eq!(bytes_text(b"order 1001", 0), "\"order 1001\"");
        assert_eq!(bytes_text(b"a\nb", 0), "\"a\\nb\"");
        assert_eq!(bytes_text(&[0, 0xff, 0x10], 0), "hex:00ff10");
        assert_eq!(bytes_text(b"abcdef", 3), "\"abc\"...(6 bytes)");
        assert_eq!(bytes_text("é".repeat(3).as_bytes(), 3), "\"é\"...(6 bytes)");
        assert_eq!(bytes_text(&[0xff; 10], 2), "hex:ffff...(10 bytes)");
    }
}
