//! The names that become file and directory names: topics (a directory each)
//! and groups (a file or directory each). A name never leads outside its
//! directory.
//!
//! Two rules. Every name, new or found on disk, is 1–255 bytes (a group's
//! 1–248, as `.offset` is added), holds no `/`, `\` or NUL, and is not `.` or
//! `..`: what makes it a single file name. A *new* name (one that creates a
//! topic, consumer group or worker group) also holds no control character
//! (C0, DEL or C1: [`char::is_control`]), which a terminal printing it would
//! obey. A topic or group that already exists under such a name (made by an
//! older build, or by hand) still opens, and is printed escaped
//! ([`Escaped`](crate::Escaped)).

use super::format::{GROUP_NAME_BYTES_MAX, NAME_BYTES_MAX};
use crate::error::TopicError;

/// Checks a topic name: it becomes a directory name.
pub(crate) fn check_topic_name(name: &str) -> Result<(), TopicError> {
    check_name_within(name, NAME_BYTES_MAX, "it is longer than 255 bytes")
}

/// Checks a group name: it becomes a file name with `.offset` added.
pub(crate) fn check_group_name(name: &str) -> Result<(), TopicError> {
    check_name_within(name, GROUP_NAME_BYTES_MAX, "a group name is at most 248 bytes")
}

/// Checks a name, already checked as a topic or group name, that is about
/// to create a topic or group: it holds no control character.
pub(crate) fn check_new_name(name: &str) -> Result<(), TopicError> {
    if name.contains(char::is_control) {
        return Err(TopicError::InvalidName {
            name: name.to_owned(),
            reason: "a new name must not contain control characters",
        });
    }
    Ok(())
}

fn check_name_within(name: &str, max: usize, too_long: &'static str) -> Result<(), TopicError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > max {
        too_long
    } else if name.contains(['/', '\\', '\0']) {
        "it contains '/', '\\' or NUL"
    } else if name == "." || name == ".." {
        "it is '.' or '..'"
    } else {
        return Ok(());
    };
    Err(TopicError::InvalidName { name: name.to_owned(), reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_names_refuse_control_characters_that_existing_names_may_hold() {
        for name in ["a\x1bb", "\x07", "tab\there", "new\nline", "del\x7f", "csi\u{9b}2J", "nel\u{85}"] {
            assert!(check_topic_name(name).is_ok(), "{name:?} may exist");
            assert!(check_group_name(name).is_ok(), "{name:?} may exist");
            assert!(matches!(check_new_name(name), Err(TopicError::InvalidName { .. })), "{name:?}");
        }
        for name in ["orders", "orders.dlq", "café", "a b", "\u{a0}nbsp"] {
            assert_eq!(check_new_name(name), Ok(()), "{name:?}");
        }
    }
}
