//! The names that become file and directory names: topics (a directory each)
//! and groups (a file or directory each). A name never leads outside its
//! directory.

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
