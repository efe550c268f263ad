//! Catalog search: which of the datasets a caller may see match a query.
//!
//! Every word of the query (case-insensitive) must occur somewhere in the
//! dataset: its name, description, tags, owners or experts, or a column's
//! name, description or tags. Hits are ranked by where the words matched (name, then column
//! names, tags, descriptions) and say where, so a user sees why a dataset
//! came up. The caller passes only datasets they may see: search never
//! reveals one they can't.

use crate::model::dataset::DatasetRecord;

/// One dataset that matched, with where.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit<'a> {
    pub dataset: &'a DatasetRecord,
    pub readable: bool,
    pub matches: Vec<String>,
    score: u32,
}

/// Datasets among `visible` (each with whether the caller may read it, not
/// only see it) that match every word of `query`, best first, at most
/// `limit`. An empty query matches everything.
pub fn search<'a>(
    visible: impl IntoIterator<Item = (&'a DatasetRecord, bool)>,
    query: &str,
    limit: usize,
) -> Vec<Hit<'a>> {
    let words: Vec<String> = query.split_whitespace().map(|w| w.to_lowercase()).collect();
    let mut hits: Vec<Hit<'a>> = visible
        .into_iter()
        .filter_map(|(d, readable)| {
            let mut matches = Vec::new();
            let mut score = 0;
            for w in &words {
                let (found, s) = places(d, w);
                if found.is_empty() {
                    return None;
                }
                score += s;
                for f in found {
                    if !matches.contains(&f) {
                        matches.push(f);
                    }
                }
            }
            Some(Hit {
                dataset: d,
                readable,
                matches,
                score,
            })
        })
        .collect();
    hits.sort_by(|a, b| {
        b.score
            .cmp(&a.score)
            .then_with(|| a.dataset.name.cmp(&b.dataset.name))
    });
    hits.truncate(limit);
    hits
}

/// Where `word` occurs in `d`, and how strongly (the best place counts).
fn places(d: &DatasetRecord, word: &str) -> (Vec<String>, u32) {
    let has = |text: &str| text.to_lowercase().contains(word);
    let mut found = Vec::new();
    let mut best = 0;
    let mut add = |place: String, weight: u32| {
        found.push(place);
        best = best.max(weight);
    };
    if has(&d.name) {
        add("name".into(), 100);
    }
    for t in d.tags.iter().filter(|t| has(t)) {
        add(format!("tag {t}"), 60);
    }
    if has(&d.description) {
        add("description".into(), 30);
    }
    // Who to ask: "datasets erin knows about".
    for (role, people) in [("owner", &d.owners), ("expert", &d.experts)] {
        for who in people.iter().filter(|who| has(&who.subject)) {
            add(format!("{role} {}", who.subject), 10);
        }
    }
    for c in &d.columns {
        if has(&c.name) {
            add(format!("column {}", c.name), 80);
        }
        for t in c.tags.iter().filter(|t| has(t)) {
            add(format!("column {}: tag {t}", c.name), 50);
        }
        if has(&c.description) {
            add(format!("column {}: description", c.name), 20);
        }
    }
    (found, best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Origin;
    use crate::model::dataset::{ColumnRecord, FileFormatKind, SourceSpec};

    fn dataset(name: &str, description: &str, columns: &[(&str, &[&str])]) -> DatasetRecord {
        DatasetRecord {
            id: name.into(),
            name: name.into(),
            source: SourceSpec {
                format: FileFormatKind::Csv,
                location: "/x".into(),
                hive_partitioned: false,
                database: None,
            },
            description: description.into(),
            owners: vec![],
            experts: vec![],
            tags: vec![],
            columns: columns
                .iter()
                .map(|(c, tags)| ColumnRecord {
                    name: (*c).into(),
                    data_type: "Utf8".into(),
                    nullable: true,
                    description: String::new(),
                    tags: tags.iter().map(|t| t.to_string()).collect(),
                    partition: false,
                    from_config: false,
                })
                .collect(),
            origin: Origin::Runtime,
            event_time: None,
            tag_proposals: vec![],
        }
    }

    #[test]
    fn every_word_must_match_and_hits_say_where() {
        let trials = dataset(
            "clinical.trials",
            "Participants",
            &[("ssn", &["PII"]), ("state", &[])],
        );
        let sites = dataset(
            "clinical.sites",
            "Sites by state",
            &[("site", &[]), ("state", &[])],
        );
        let visible = [(&trials, true), (&sites, false)];
        let hits = search(visible, "SSN", 50);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].matches, ["column ssn"]);
        let hits = search(visible, "pii", 50);
        assert_eq!(hits[0].matches, ["column ssn: tag PII"]);
        let hits = search(visible, "state", 50);
        assert_eq!(hits.len(), 2);
        assert_eq!(
            hits[0].dataset.name, "clinical.sites",
            "equal scores: by name"
        );
        assert!(!hits[0].readable);
        assert!(
            search(visible, "state ssn", 50)
                .iter()
                .all(|h| h.dataset.name == "clinical.trials")
        );
        assert!(search(visible, "nothing-like-this", 50).is_empty());
        assert_eq!(search(visible, "", 1).len(), 1, "limit applies");

        let mut known = trials.clone();
        known.experts = vec![crate::model::identity::Identity::new("i", "erin")];
        let hits = search([(&known, true), (&sites, true)], "erin", 50);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].matches, ["expert erin"]);
    }
}
