//! `klife groups ...` (list, describe, lag, reset-offsets, delete, delete-offsets) and
//! `klife consume --group`.

use std::collections::BTreeMap;
use std::time::Duration;

use klife::group::{GroupEvent, GroupProtocol, ResetPolicy, TopicConfig};
use klife::{Client, GroupDescription, PartitionLag, ResetPlan, ResetScope, ResetTo, TopicPartition};

use crate::commands::{Format, print_record};
use crate::{CliError, ConnectArgs};

/// Output of the `groups` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    /// Aligned columns, for people.
    Table,
    /// One JSON document, for programs.
    Json,
}

/// Options of `klife groups`.
#[derive(Debug, clap::Args)]
pub(crate) struct GroupsArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// How to print the answer.
    #[arg(long, value_enum, default_value = "table", global = true)]
    format: Output,
    #[command(subcommand)]
    action: GroupsAction,
}

#[derive(Debug, clap::Subcommand)]
enum GroupsAction {
    /// List the groups of the cluster, with their type and state.
    List {
        /// Only groups in this state (`Stable`, `Empty`, ...; repeatable).
        #[arg(long = "state")]
        states: Vec<String>,
        /// Only groups of this type (`consumer`, `classic`; repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
    },
    /// Describe a group: state, assignor, members and their partitions.
    Describe {
        /// The group.
        group: String,
    },
    /// Committed offsets, end offsets and lag per partition, with their owners.
    Lag {
        /// The group.
        group: String,
        /// Print it again every this many seconds, until Ctrl-C.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        watch: Option<u64>,
    },
    /// Move a group's committed offsets (the group must have no members). Prints the
    /// plan; writes it only with `--execute`.
    ResetOffsets {
        /// The group.
        group: String,
        /// Where to: `earliest`, `latest`, `timestamp:MILLIS`, `offset:N`, `shift:N`.
        #[arg(long, value_parser = parse_reset)]
        to: ResetTo,
        /// Every partition of this topic (repeatable).
        #[arg(long = "topic", short = 't')]
        topics: Vec<String>,
        /// This partition, `TOPIC:PARTITION` (repeatable).
        #[arg(long = "partition", short = 'p', value_name = "TOPIC:PARTITION", value_parser = parse_partition)]
        partitions: Vec<TopicPartition>,
        /// Every partition the group has committed offsets for.
        #[arg(long, conflicts_with_all = ["topics", "partitions"])]
        all_topics: bool,
        /// Write the new offsets (without it, nothing is written).
        #[arg(long)]
        execute: bool,
    },
    /// Delete groups that have no members, with their committed offsets.
    Delete {
        /// The groups.
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Delete a group's committed offsets of some partitions.
    DeleteOffsets {
        /// The group.
        group: String,
        /// Every partition of this topic (repeatable).
        #[arg(long = "topic", short = 't')]
        topics: Vec<String>,
        /// This partition, `TOPIC:PARTITION` (repeatable).
        #[arg(long = "partition", short = 'p', value_name = "TOPIC:PARTITION", value_parser = parse_partition)]
        partitions: Vec<TopicPartition>,
    },
}

fn parse_reset(s: &str) -> Result<ResetTo, String> {
    s.parse::<ResetTo>().map_err(|_| "expected earliest, latest, timestamp:MILLIS, offset:N or shift:N".to_owned())
}

fn parse_partition(s: &str) -> Result<TopicPartition, String> {
    s.rsplit_once(':')
        .and_then(|(t, p)| Some((t, p.parse::<i32>().ok().filter(|p| *p >= 0)?)))
        .filter(|(t, _)| !t.is_empty())
        .map(|(t, p)| TopicPartition::new(t, p))
        .ok_or_else(|| "expected TOPIC:PARTITION, e.g. orders:3".to_owned())
}

/// Prints rows under headers in aligned columns.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        text.join("  ").trim_end().to_owned()
    };
    out!("{}", line(&mut headers.iter().copied()));
    for row in rows {
        out!("{}", line(&mut row.iter().map(String::as_str)));
    }
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `orders:0,1,2 payments:3` for a sorted list of partitions.
fn compact(partitions: &[TopicPartition]) -> String {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    let parts: Vec<String> = by_topic
        .into_iter()
        .map(|(t, ps)| format!("{t}:{}", ps.iter().map(i32::to_string).collect::<Vec<_>>().join(",")))
        .collect();
    if parts.is_empty() { "-".to_owned() } else { parts.join(" ") }
}

fn partitions_json(partitions: &[TopicPartition]) -> serde_json::Value {
    partitions.iter().map(|tp| serde_json::json!({"topic": &*tp.topic, "partition": tp.partition})).collect()
}

/// The error of a call about `group`, in one line: an unknown group says so plainly.
fn group_error(group: &str, e: klife::Error) -> CliError {
    if e.is_group_not_found() {
        CliError::Failed(format!("group {group:?} does not exist"))
    } else {
        CliError::Failed(e.to_string())
    }
}

fn print_description(d: &GroupDescription, format: Output) {
    match format {
        Output::Json => {
            let members: Vec<serde_json::Value> = d
                .members
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "member_id": m.member_id,
                        "instance_id": m.instance_id,
                        "client_id": m.client_id,
                        "client_host": m.client_host,
                        "rack_id": m.rack_id,
                        "member_epoch": m.member_epoch,
                        "subscribed_topics": m.subscribed_topics,
                        "subscribed_regex": m.subscribed_regex,
                        "assignment": partitions_json(&m.assignment),
                        "target_assignment": m.target_assignment.as_deref().map(partitions_json),
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "group": d.group_id,
                "type": d.group_type.to_string(),
                "state": d.state.to_string(),
                "protocol_type": d.protocol_type,
                "assignor": d.assignor,
                "epoch": d.epoch,
                "assignment_epoch": d.assignment_epoch,
                "coordinator": d.coordinator,
                "members": members,
            });
            out!("{doc}");
        }
        Output::Table => {
            out!("group        {}", d.group_id);
            out!("type         {}", d.group_type);
            out!("state        {}", d.state);
            out!("assignor     {}", if d.assignor.is_empty() { "-" } else { &d.assignor });
            if let Some(epoch) = d.epoch {
                out!("epoch        {epoch} (assignment {})", or_dash(d.assignment_epoch));
            }
            out!("coordinator  {}", d.coordinator);
            out!("members      {}", d.members.len());
            if d.members.is_empty() {
                return;
            }
            out!("");
            let rows: Vec<Vec<String>> = d
                .members
                .iter()
                .map(|m| {
                    vec![
                        m.member_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        or_dash(m.instance_id.as_deref()),
                        or_dash(m.member_epoch),
                        compact(&m.assignment),
                    ]
                })
                .collect();
            table(&["MEMBER-ID", "CLIENT-ID", "HOST", "INSTANCE-ID", "EPOCH", "PARTITIONS"], &rows);
        }
    }
}

fn print_lag(group: &str, lag: &[PartitionLag], format: Output) {
    let total: i64 = lag.iter().filter_map(|l| l.lag).sum();
    match format {
        Output::Json => {
            let partitions: Vec<serde_json::Value> = lag
                .iter()
                .map(|l| {
                    serde_json::json!({
                        "topic": &*l.topic_partition.topic,
                        "partition": l.topic_partition.partition,
                        "committed": l.committed,
                        "end": l.end_offset,
                        "lag": l.lag,
                        "member_id": l.owner.as_ref().map(|o| &o.0),
                        "client_id": l.owner.as_ref().map(|o| &o.1),
                        "client_host": l.owner.as_ref().map(|o| &o.2),
                    })
                })
                .collect();
            out!("{}", serde_json::json!({"group": group, "total_lag": total, "partitions": partitions}));
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = lag
                .iter()
                .map(|l| {
                    let owner = l.owner.as_ref();
                    vec![
                        l.topic_partition.topic.to_string(),
                        l.topic_partition.partition.to_string(),
                        or_dash(l.committed),
                        or_dash(l.end_offset),
                        or_dash(l.lag),
                        or_dash(owner.map(|o| o.0.as_str())),
                        or_dash(owner.map(|o| o.1.as_str())),
                        or_dash(owner.map(|o| o.2.as_str())),
                    ]
                })
                .collect();
            table(&["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER-ID", "CLIENT-ID", "HOST"], &rows);
            out!("total lag {total} over {} partitions", lag.len());
        }
    }
}

fn print_plan(plan: &ResetPlan, executed: bool, format: Output) {
    match format {
        Output::Json => {
            let partitions: Vec<serde_json::Value> = plan
                .partitions
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "topic": &*p.topic_partition.topic,
                        "partition": p.topic_partition.partition,
                        "current": p.current,
                        "new": p.new_offset,
                    })
                })
                .collect();
            out!("{}", serde_json::json!({"group": plan.group_id, "executed": executed, "partitions": partitions}));
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = plan
                .partitions
                .iter()
                .map(|p| {
                    vec![
                        p.topic_partition.topic.to_string(),
                        p.topic_partition.partition.to_string(),
                        or_dash(p.current),
                        p.new_offset.to_string(),
                    ]
                })
                .collect();
            table(&["TOPIC", "PARTITION", "CURRENT", "NEW"], &rows);
            if executed {
                out!("reset {} partitions of group {}", plan.partitions.len(), plan.group_id);
            } else {
                out!("dry run: nothing written; add --execute to reset these {} partitions", plan.partitions.len());
            }
        }
    }
}

/// The partitions of `topics` and `partitions` together, checked to exist.
async fn named_partitions(
    client: &Client,
    topics: &[String],
    partitions: &[TopicPartition],
) -> Result<Vec<TopicPartition>, CliError> {
    let mut all: Vec<TopicPartition> = partitions.to_vec();
    for t in topics {
        let found = client.partitions(t).await.map_err(|e| {
            if e.is_unknown_topic_or_partition() {
                CliError::Failed(format!("topic {t:?} does not exist"))
            } else {
                CliError::from(e)
            }
        })?;
        all.extend(found.into_iter().map(|p| p.topic_partition));
    }
    all.sort();
    all.dedup();
    Ok(all)
}

/// `klife groups`.
pub(crate) async fn groups(args: GroupsArgs) -> Result<(), CliError> {
    let client = args.connect.client().await?;
    let result = run(&client, args.action, args.format).await;
    client.close().await;
    result
}

async fn run(client: &Client, action: GroupsAction, format: Output) -> Result<(), CliError> {
    match action {
        GroupsAction::List { states, types } => {
            let groups: Vec<klife::GroupListing> = client
                .list_groups()
                .await?
                .into_iter()
                .filter(|g| {
                    states.is_empty()
                        || g.state
                            .as_ref()
                            .is_some_and(|s| states.iter().any(|w| w.eq_ignore_ascii_case(&s.to_string())))
                })
                .filter(|g| types.is_empty() || types.iter().any(|w| w.eq_ignore_ascii_case(&g.group_type.to_string())))
                .collect();
            match format {
                Output::Json => {
                    let list: Vec<serde_json::Value> = groups
                        .iter()
                        .map(|g| {
                            serde_json::json!({
                                "group": g.group_id,
                                "type": g.group_type.to_string(),
                                "protocol_type": g.protocol_type,
                                "state": g.state.as_ref().map(ToString::to_string),
                                "coordinator": g.coordinator,
                            })
                        })
                        .collect();
                    out!("{}", serde_json::Value::Array(list));
                }
                Output::Table => {
                    let rows: Vec<Vec<String>> = groups
                        .iter()
                        .map(|g| {
                            vec![
                                g.group_id.clone(),
                                g.group_type.to_string(),
                                or_dash(g.state.as_ref()),
                                g.coordinator.to_string(),
                            ]
                        })
                        .collect();
                    table(&["GROUP", "TYPE", "STATE", "COORDINATOR"], &rows);
                }
            }
            Ok(())
        }
        GroupsAction::Describe { group } => {
            let d = client.describe_group(&group).await.map_err(|e| group_error(&group, e))?;
            print_description(&d, format);
            Ok(())
        }
        GroupsAction::Lag { group, watch } => loop {
            let lag = client.group_lag(&group).await.map_err(|e| group_error(&group, e))?;
            print_lag(&group, &lag, format);
            let Some(every) = watch else { return Ok(()) };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(every)) => out!(""),
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        },
        GroupsAction::ResetOffsets { group, to, topics, partitions, all_topics, execute } => {
            let scope = if all_topics {
                ResetScope::AllCommitted
            } else if topics.is_empty() && partitions.is_empty() {
                return Err(CliError::Failed(
                    "reset-offsets needs --topic, --partition or --all-topics to say which partitions".to_owned(),
                ));
            } else {
                ResetScope::Partitions(named_partitions(client, &topics, &partitions).await?)
            };
            let plan = client.plan_offset_reset(&group, scope, to).await?;
            if !execute {
                print_plan(&plan, false, format);
                return Ok(());
            }
            let failed: Vec<String> = client
                .reset_offsets(&plan)
                .await?
                .into_iter()
                .filter_map(|(tp, r)| r.err().map(|e| format!("{tp}: {e}")))
                .collect();
            if !failed.is_empty() {
                return Err(CliError::Failed(format!("some offsets were not reset: {}", failed.join("; "))));
            }
            print_plan(&plan, true, format);
            Ok(())
        }
        GroupsAction::Delete { groups } => {
            let mut failed = Vec::new();
            for (group, r) in client.delete_groups(&groups).await? {
                match r {
                    Ok(()) if format == Output::Table => out!("deleted group {group}"),
                    Ok(()) => out!("{}", serde_json::json!({"group": group, "deleted": true})),
                    Err(e) if e.is_group_not_found() => failed.push(format!("group {group:?} does not exist")),
                    Err(e) if e.is_group_not_empty() => {
                        failed.push(format!("group {group:?} has active members: stop its consumers first"));
                    }
                    Err(e) => failed.push(e.to_string()),
                }
            }
            if failed.is_empty() { Ok(()) } else { Err(CliError::Failed(failed.join("; "))) }
        }
        GroupsAction::DeleteOffsets { group, topics, partitions } => {
            let all = named_partitions(client, &topics, &partitions).await?;
            if all.is_empty() {
                return Err(CliError::Failed("delete-offsets needs --topic or --partition".to_owned()));
            }
            let mut failed = Vec::new();
            for (tp, r) in client.delete_group_offsets(&group, &all).await.map_err(|e| group_error(&group, e))? {
                match r {
                    Ok(()) if format == Output::Table => out!("deleted the committed offset of {tp}"),
                    Ok(()) => {
                        out!("{}", serde_json::json!({"topic": &*tp.topic, "partition": tp.partition, "deleted": true}))
                    }
                    Err(e) => failed.push(format!("{tp}: {e}")),
                }
            }
            if failed.is_empty() { Ok(()) } else { Err(CliError::Failed(failed.join("; "))) }
        }
    }
}

/// Group options of `klife consume`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct GroupConsumeArgs {
    /// Join this consumer group: print what it assigns, commit what was printed, leave
    /// cleanly on Ctrl-C (or after `--count`).
    #[arg(long, short = 'g')]
    pub(crate) group: Option<String>,
    /// The group protocol: `auto` (KIP-848 where the broker has it), `consumer` or
    /// `classic`.
    #[arg(long, value_enum, default_value = "auto", requires = "group")]
    pub(crate) protocol: ProtocolArg,
}

/// `--protocol` of `klife consume --group`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum ProtocolArg {
    /// KIP-848 where the broker has it, classic otherwise.
    Auto,
    /// KIP-848 only.
    Consumer,
    /// The classic protocol.
    Classic,
}

/// `klife consume --group`: a member of the group that prints its batches and commits
/// each after printing it; the graceful leave on Ctrl-C or once `limit` records were
/// printed commits what was printed before the partitions go.
pub(crate) async fn consume_group(
    client: &Client,
    group: &str,
    topic: &str,
    protocol: ProtocolArg,
    reset: ResetPolicy,
    limit: u64,
    format: Format,
) -> Result<(), CliError> {
    let protocol = match protocol {
        ProtocolArg::Auto => GroupProtocol::Auto,
        ProtocolArg::Consumer => GroupProtocol::Consumer,
        ProtocolArg::Classic => GroupProtocol::Classic,
    };
    let mut stream = client
        .consumer_group(group)
        .protocol(protocol)
        .topic(TopicConfig::new(topic).offset_reset(reset))
        .stream()
        .await?;
    let mut printed = 0u64;
    let mut closing = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = &mut ctrl_c, if !closing => {
                eprintln!("klife: leaving group {group}");
                closing = true;
                stream.close();
                continue;
            }
        };
        match event {
            None => break,
            Some(GroupEvent::Batch(mut batch)) => {
                let mut records = batch.take_records();
                if printed >= limit {
                    // Past the limit: nothing more is printed, so nothing more committed.
                    continue;
                }
                let room = usize::try_from(limit - printed).unwrap_or(usize::MAX);
                records.truncate(room);
                for r in &records {
                    print_record(r, format);
                }
                printed += records.len() as u64;
                match records.last() {
                    Some(last) if last.offset + 1 < batch.next_offset() => {
                        // Cut at the limit: commit up to the last record printed.
                        batch.lease().commit(last.offset + 1).map_err(|e| CliError::Failed(e.to_string()))?;
                    }
                    _ => batch.commit().map_err(|e| CliError::Failed(e.to_string()))?,
                }
                if printed >= limit && !closing {
                    closing = true;
                    stream.close();
                }
            }
            Some(GroupEvent::Assigned(p)) => eprintln!("klife: assigned {}", compact(&p)),
            Some(GroupEvent::Revoked(p)) => eprintln!("klife: revoked {}", compact(&p)),
            Some(GroupEvent::Lost(p)) => eprintln!("klife: lost {}", compact(&p)),
            Some(_) => {}
        }
    }
    stream.shutdown().await.map_err(|e| CliError::Failed(format!("leaving group {group}: {e}")))?;
    Ok(())
}
