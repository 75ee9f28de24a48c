//! What the suites check of a log.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use klife_producer::{ProducerRecord, RecordMetadata};

use crate::raw;

/// Checks what an idempotent producer promises: every acknowledged record is in the log
/// exactly once, at its reported offset, in the order it was sent within its partition;
/// no record is in the log twice; unacknowledged records (`failed`) appear at most once.
pub async fn verify_log_allowing(
    cluster: &klife_connection::Cluster,
    topic: &str,
    acked: &[(RecordMetadata, ProducerRecord)],
    failed: &[ProducerRecord],
) {
    let mut by_partition: BTreeMap<i32, Vec<&(RecordMetadata, ProducerRecord)>> = BTreeMap::new();
    for a in acked {
        by_partition.entry(a.0.partition).or_default().push(a);
    }
    let failed_values: HashSet<_> = failed.iter().map(|r| r.value.clone()).collect();
    for (partition, acks) in by_partition {
        let log = raw::fetch_all(cluster, topic, partition, 0, i64::MAX).await;
        let mut count: HashMap<Option<Bytes>, usize> = HashMap::new();
        for r in &log {
            *count.entry(r.value.clone()).or_default() += 1;
        }
        let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).map(|(v, _)| v.clone()).collect();
        assert!(twice.is_empty(), "{topic}-{partition}: records written twice: {twice:?}");
        let position: HashMap<Option<Bytes>, i64> = log.iter().map(|r| (r.value.clone(), r.offset)).collect();
        let mut last = -1;
        for (meta, sent) in &acks {
            let at = *position.get(&sent.value).unwrap_or_else(|| {
                panic!("{topic}-{partition}: acknowledged record {:?} is not in the log", sent.value)
            });
            if meta.offset >= 0 {
                assert_eq!(at, meta.offset, "{topic}-{partition}: {:?} is not at its acknowledged offset", sent.value);
            }
            assert!(at > last, "{topic}-{partition}: {:?} is out of send order", sent.value);
            last = at;
        }
        let extra = log.len() - acks.len();
        let unacked_in_log = log.iter().filter(|r| failed_values.contains(&r.value)).count();
        assert_eq!(extra, unacked_in_log, "{topic}-{partition}: the log holds records nobody produced");
        let keys_match = acks.iter().all(|(_, sent)| log.iter().any(|r| r.value == sent.value && r.key == sent.key));
        assert!(keys_match, "{topic}-{partition}: a key changed on the way");
    }
}
