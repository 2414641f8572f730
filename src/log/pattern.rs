//! Routing-key patterns, as RabbitMQ topic bindings write them.

use std::fmt;
use std::str::FromStr;

use crate::error::PatternError;

/// Longest pattern, in bytes (the longest key is 1024 bytes).
const PATTERN_BYTES_MAX: usize = 1024;

/// A pattern over record keys, with RabbitMQ's topic-binding syntax: a key
/// is a list of words separated by `.`; in the pattern, `*` stands for
/// exactly one word and `#` for zero or more words; any other word must
/// match exactly. A record without a key has the empty key, which only `#`
/// (and the empty pattern) match.
///
/// ```
/// use tollgate::KeyPattern;
///
/// let created = KeyPattern::new("order.*.created")?;
/// assert!(created.matches("order.eu.created"));
/// assert!(!created.matches("order.created"));
///
/// let orders = KeyPattern::new("order.#")?;
/// assert!(orders.matches("order"));
/// assert!(orders.matches("order.eu.paid"));
/// assert!(!orders.matches("payment.eu"));
///
/// // `*` and `#` are whole words: "ord*" would be ambiguous.
/// assert!(KeyPattern::new("ord*").is_err());
/// # Ok::<(), tollgate::PatternError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPattern {
    text: String,
    words: Vec<Word>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Word {
    Exact(String),
    One,
    Any,
}

impl KeyPattern {
    /// Parses a pattern. Fails if it is longer than 1024 bytes or uses `*`
    /// or `#` inside a word.
    pub fn new(pattern: &str) -> Result<KeyPattern, PatternError> {
        if pattern.len() > PATTERN_BYTES_MAX {
            return Err(PatternError { pattern: pattern.to_owned(), reason: "it is longer than 1024 bytes" });
        }
        let words = if pattern.is_empty() {
            Vec::new()
        } else {
            pattern
                .split('.')
                .map(|word| match word {
                    "*" => Ok(Word::One),
                    "#" => Ok(Word::Any),
                    w if w.contains(['*', '#']) => Err(PatternError {
                        pattern: pattern.to_owned(),
                        reason: "'*' and '#' must be whole words, as in \"order.*\"",
                    }),
                    w => Ok(Word::Exact(w.to_owned())),
                })
                .collect::<Result<_, _>>()?
        };
        Ok(KeyPattern { text: pattern.to_owned(), words })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `key` matches. Runs in time proportional to the product of
    /// the numbers of words, however many `#` the pattern has.
    pub fn matches(&self, key: &str) -> bool {
        let key: Vec<&str> = if key.is_empty() { Vec::new() } else { key.split('.').collect() };
        // reach[j]: the pattern words seen so far can match exactly the first j key words.
        let mut reach = vec![false; key.len() + 1];
        reach[0] = true;
        for word in &self.words {
            match word {
                Word::Any => {
                    // Zero or more words: everything from the first reachable j on.
                    if let Some(first) = reach.iter().position(|&r| r) {
                        reach[first..].iter_mut().for_each(|r| *r = true);
                    }
                }
                Word::One | Word::Exact(_) => {
                    for j in (0..key.len()).rev() {
                        let fits = matches!(word, Word::One) || matches!(word, Word::Exact(w) if w == key[j]);
                        reach[j + 1] = reach[j] && fits;
                    }
                    reach[0] = false;
                }
            }
            if !reach.contains(&true) {
                return false;
            }
        }
        reach[key.len()]
    }

    /// Whether a record with this key (or none) matches.
    pub(crate) fn matches_record(&self, key: Option<&str>) -> bool {
        self.matches(key.unwrap_or(""))
    }
}

impl FromStr for KeyPattern {
    type Err = PatternError;

    fn from_str(pattern: &str) -> Result<Self, PatternError> {
        KeyPattern::new(pattern)
    }
}

impl fmt::Debug for KeyPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyPattern").field(&self.text).finish()
    }
}

impl fmt::Display for KeyPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::KeyPattern;

    fn matches(pattern: &str, key: &str) -> bool {
        KeyPattern::new(pattern).unwrap().matches(key)
    }

    #[test]
    fn rabbitmq_topic_examples() {
        // The examples of RabbitMQ's topic-exchange tutorial.
        assert!(matches("*.orange.*", "quick.orange.rabbit"));
        assert!(matches("*.*.rabbit", "quick.orange.rabbit"));
        assert!(matches("lazy.#", "lazy.orange.elephant"));
        assert!(!matches("*.orange.*", "quick.brown.fox"));
        assert!(matches("lazy.#", "lazy.brown.fox"));
        assert!(matches("lazy.#", "lazy.pink.rabbit"));
        assert!(!matches("*.*.rabbit", "quick.brown.fox"));
        assert!(!matches("*.orange.*", "orange"));
        assert!(!matches("*.orange.*", "quick.orange.new.rabbit"));
        assert!(matches("lazy.#", "lazy.orange.new.rabbit"));
        assert!(matches("#", ""));
        assert!(matches("#", "a.b"));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
        assert!(!matches("*", ""));
        assert!(matches("a.#.b", "a.b"));
        assert!(matches("a.#.b", "a.x.y.b"));
        assert!(!matches("a.#.b", "a.x.y"));
        assert!(matches("#.#", "a"));
        assert!(matches("order.*", "order.1001"));
        assert!(!matches("order.*", "order"));
        assert!(!matches("order.*", "order.1001.paid"));
    }

    #[test]
    fn refuses_bad_patterns() {
        assert!(KeyPattern::new("ord*").is_err());
        assert!(KeyPattern::new("a.b#").is_err());
        assert!(KeyPattern::new(&"a".repeat(1025)).is_err());
        assert!(KeyPattern::new(&"a".repeat(1024)).is_ok());
    }

    /// The reference: a direct recursive definition.
    fn reference(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|i| reference(rest, &key[i..])),
            Some((&"*", rest)) => !key.is_empty() && reference(rest, &key[1..]),
            Some((word, rest)) => key.first() == Some(word) && reference(rest, &key[1..]),
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_recursive_definition(
            pattern in proptest::collection::vec(prop_oneof!["a", "b", "\\*", "#"], 0..6),
            key in proptest::collection::vec(prop_oneof!["a", "b"], 0..6),
        ) {
            let p = pattern.join(".");
            let k = key.join(".");
            let pw: Vec<&str> = if p.is_empty() { vec![] } else { p.split('.').collect() };
            let kw: Vec<&str> = if k.is_empty() { vec![] } else { k.split('.').collect() };
            prop_assert_eq!(KeyPattern::new(&p).unwrap().matches(&k), reference(&pw, &kw));
        }
    }
}
