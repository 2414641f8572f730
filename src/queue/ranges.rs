//! A set of offsets stored as disjoint, non-adjacent ranges: the settled
//! offsets above a group's low-water mark. Messages are mostly settled in
//! order, so the set stays a handful of ranges.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    /// start -> end (exclusive); ranges neither overlap nor touch.
    ranges: BTreeMap<u64, u64>,
    len: u64,
}

impl RangeSet {
    /// Number of offsets in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn contains(&self, offset: u64) -> bool {
        self.ranges.range(..=offset).next_back().is_some_and(|(_, &end)| offset < end)
    }

    /// Adds `[start, end)`.
    pub fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Merge with a range that overlaps or touches on the left.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            if e >= end {
                return;
            }
            start = s;
            self.ranges.remove(&s);
            self.len -= e - s;
        }
        // Absorb ranges that start inside or right after.
        while let Some((&s, &e)) = self.ranges.range(start..=end).next() {
            self.ranges.remove(&s);
            self.len -= e - s;
            end = end.max(e);
        }
        self.ranges.insert(start, end);
        self.len += end - start;
    }

    /// If a range starts at `at`, removes it and returns its end.
    pub fn take_starting_at(&mut self, at: u64) -> Option<u64> {
        let end = self.ranges.remove(&at)?;
        self.len -= end - at;
        Some(end)
    }

    /// Removes every offset at or above `from`.
    pub fn truncate(&mut self, from: u64) {
        let above: Vec<u64> = self.ranges.range(from..).map(|(&s, _)| s).collect();
        for s in above {
            let e = self.ranges.remove(&s).expect("listed above");
            self.len -= e - s;
        }
        if let Some((&s, e)) = self.ranges.range_mut(..from).next_back()
            && *e > from
        {
            self.len -= *e - from;
            *e = from;
            debug_assert!(s < from);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    /// Number of ranges.
    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::RangeSet;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u64),
        Take(u64),
        Truncate(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..64, 0u64..8).prop_map(|(s, n)| Op::Insert(s, s + n)),
            1 => (0u64..64).prop_map(Op::Take),
            1 => (0u64..70).prop_map(Op::Truncate),
        ]
    }

    proptest! {
        /// Agrees with a plain set of offsets, and keeps its ranges disjoint and apart.
        #[test]
        fn agrees_with_a_set(ops in proptest::collection::vec(op(), 0..60)) {
            let mut ranges = RangeSet::default();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(s, e) => { ranges.insert(s, e); model.extend(s..e); }
                    Op::Take(at) => {
                        let starts = model.contains(&at) && (at == 0 || !model.contains(&(at - 1)));
                        let end = ranges.take_starting_at(at);
                        prop_assert_eq!(end.is_some(), starts);
                        if let Some(end) = end {
                            for o in at..end { prop_assert!(model.remove(&o)); }
                            prop_assert!(!model.contains(&end));
                        }
                    }
                    Op::Truncate(from) => { ranges.truncate(from); model.retain(|&o| o < from); }
                }
                prop_assert_eq!(ranges.len(), model.len() as u64);
                for o in 0..72 { prop_assert_eq!(ranges.contains(o), model.contains(&o)); }
                let mut last_end = None;
                for (s, e) in ranges.iter() {
                    prop_assert!(s < e);
                    if let Some(last) = last_end { prop_assert!(s > last); }
                    last_end = Some(e);
                }
            }
        }
    }
}
