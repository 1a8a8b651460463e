//! Timeline history files (`<TLI>.history`): one line per ancestor,
//! `parentTLI <tab> switchpoint LSN <tab> reason`, blank and `#` lines ignored.

use serde::{Deserialize, Serialize};

use crate::names::{Lsn, NameError, TimelineId};

/// One line: timeline `parent` ended at `switch` (the child began there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The ancestor timeline.
    pub parent: TimelineId,
    /// The LSN where that ancestor ends.
    pub switch: Lsn,
}

/// The parsed history of one timeline: its ancestors, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The timeline this file describes.
    pub timeline: TimelineId,
    /// Ancestors, oldest first; the last one is the immediate parent.
    pub entries: Vec<HistoryEntry>,
}

impl History {
    /// Parses the (decompressed) content of `<timeline>.history`. Validates what
    /// PostgreSQL guarantees: parent TLIs strictly increase, switch points do not
    /// decrease, and every parent is below the timeline itself.
    pub fn parse(timeline: TimelineId, text: &str) -> Result<Self, NameError> {
        let mut entries: Vec<HistoryEntry> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let bad = |what: &str| NameError(format!("history of timeline {timeline}, line {}: {what}", i + 1));
            let tli: u32 = fields.next().and_then(|f| f.parse().ok()).ok_or_else(|| bad("bad parent timeline"))?;
            let lsn: Lsn = fields
                .next()
                .ok_or_else(|| bad("missing switch point"))?
                .parse()
                .map_err(|_| bad("bad switch point"))?;
            if let Some(prev) = entries.last() {
                if tli <= prev.parent.get() {
                    return Err(bad("parent timelines must increase"));
                }
                if lsn < prev.switch {
                    return Err(bad("switch points must not decrease"));
                }
            }
            if tli >= timeline.get() {
                return Err(bad("parent timeline is not below the file's timeline"));
            }
            entries.push(HistoryEntry { parent: TimelineId::new(tli), switch: lsn });
        }
        Ok(Self { timeline, entries })
    }

    /// The immediate parent and the switch point, if any.
    pub fn parent(&self) -> Option<HistoryEntry> {
        self.entries.last().copied()
    }

    /// Whether `self` extends `parent`'s history by exactly one line, as a child
    /// timeline's history must.
    pub fn extends(&self, parent: &History) -> bool {
        self.entries.len() == parent.entries.len() + 1
            && self.entries[..parent.entries.len()] == parent.entries[..]
            && self.entries.last().map(|e| e.parent) == Some(parent.timeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_real_history() {
        // As PostgreSQL writes it after two promotions.
        let text = "1\t0/3000000\tno recovery target specified\n\n2\t0/50000A8\tat restore point \"x\"\n";
        let h = History::parse(TimelineId::new(3), text).expect("parse");
        assert_eq!(
            h.entries,
            vec![
                HistoryEntry { parent: TimelineId::new(1), switch: Lsn::new(0x3000000) },
                HistoryEntry { parent: TimelineId::new(2), switch: Lsn::new(0x50000A8) },
            ]
        );
        assert_eq!(h.parent().map(|e| e.parent), Some(TimelineId::new(2)));
        let h2 = History::parse(TimelineId::new(2), "1\t0/3000000\tno recovery target specified\n").expect("parse");
        assert!(h.extends(&h2));
        assert!(!h2.extends(&h));
    }

    #[test]
    fn rejects_inconsistent_files() {
        for (tl, text) in [
            (3, "2\t0/1\tx\n1\t0/2\ty\n"),
            (2, "1\t0/5\tx\n1\t0/6\ty\n"),
            (2, "2\t0/5\tx\n"),
            (3, "1\t0/5\tx\n2\t0/4\ty\n"),
            (2, "one\t0/5\n"),
            (2, "1\tzz\n"),
            (2, "1\n"),
        ] {
            assert!(History::parse(TimelineId::new(tl), text).is_err(), "{text:?}");
        }
        assert_eq!(History::parse(TimelineId::new(1), "# comment\n\n").expect("empty").entries, vec![]);
    }
}
