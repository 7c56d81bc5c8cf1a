//! `cloudmart-audit dlq list|replay`: what sits in the dead-letter topics, and putting
//! records back on their topic after the cause is fixed.
//!
//! - Reading never joins a consumer group: it `assign()`s every partition of
//!   `<prefix><topic>.dlq` from its low to its high watermark as measured at the start, so
//!   it terminates even while new records arrive, and it commits nothing (the DLQ is left
//!   as it was; a listing can be repeated).
//! - `replay` re-publishes a record to the topic it was consumed from (`dlq_topic`) with
//!   its original key, payload and headers minus the `dlq_*` ones, plus `replayed_from`
//!   (`<dlq topic>/<partition>/<offset>`). The `ce_id` is unchanged: a consumer that
//!   applied the event before (or a second replay) finds it in `processed_events` and
//!   changes nothing, so a replayed event is applied **at most once per consumer group**,
//!   however often it is replayed. Every group of the topic sees the replay; those that
//!   had applied it ignore it.
//! - A record without a `ce_id` (it was dead-lettered for missing CloudEvents headers)
//!   cannot be fixed by a replay: `--offset` naming it is an error, `--all` skips it.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use cloudmart_platform::proto::contract::topics;
use cloudmart_platform::{config::KafkaArgs, events::headers};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
    error::KafkaError,
    message::{Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
    util::Timeout,
};

/// The logical topics that have a dead-letter topic.
const SOURCE_TOPICS: [&str; 3] = [topics::ORDER_EVENTS, topics::DELIVERY_EVENTS, topics::TIMESALE_EVENTS];

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Print one line per record of the dead-letter topics: the DLQ topic and
    /// `PARTITION:OFFSET`, the original topic/partition/offset, `ce_id`, `ce_type`,
    /// attempts, failure time and error. Counts go to stderr. Commits nothing.
    List(ListArgs),
    /// Re-publish chosen dead-letter records to their original topic (original key,
    /// payload and CloudEvents headers, plus `replayed_from`), after the cause was fixed.
    /// The `ce_id` is kept, so consumers apply a replayed event at most once.
    Replay(ReplayArgs),
}

/// Where the broker is and how topics are named.
#[derive(Args, Debug, Clone)]
pub struct Broker {
    /// Kafka bootstrap servers (comma separated host:port list).
    #[arg(long, visible_alias = "kafka-brokers", env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Prefix of every topic name, as the services' `KAFKA_TOPIC_PREFIX`.
    #[arg(long, visible_alias = "kafka-topic-prefix", env = "KAFKA_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
    /// Give up reading a dead-letter topic after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
}

impl Broker {
    fn kafka(&self) -> KafkaArgs {
        KafkaArgs { topic_prefix: self.topic_prefix.clone(), ..KafkaArgs::new(self.brokers.clone()) }
    }
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    broker: Broker,
    /// Source topic whose `<topic>.dlq` is listed (logical name, without the prefix);
    /// repeat for several. Default: all three.
    #[arg(long, value_parser = SOURCE_TOPICS)]
    topic: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    #[command(flatten)]
    broker: Broker,
    /// Source topic whose `<topic>.dlq` the records are taken from (logical name).
    #[arg(long, value_parser = SOURCE_TOPICS)]
    topic: String,
    /// A record to replay, as `dlq list` prints it: `PARTITION:OFFSET` in the DLQ topic,
    /// or a bare `OFFSET` when only one partition has that offset. Repeatable.
    #[arg(long = "offset", value_name = "[PARTITION:]OFFSET", value_parser = parse_selector,
          required_unless_present = "all", conflicts_with = "all")]
    offsets: Vec<Selector>,
    /// Replay every record of the DLQ that has a `ce_id`.
    #[arg(long)]
    all: bool,
    /// Print what would be replayed; publish nothing.
    #[arg(long)]
    dry_run: bool,
}

/// A record chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selector {
    partition: Option<i32>,
    offset: i64,
}

fn parse_selector(s: &str) -> Result<Selector, String> {
    let number = |what: &str, v: &str| -> Result<i64, String> {
        v.trim().parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| format!("{what} {v:?} is not a number >= 0"))
    };
    match s.split_once(':') {
        Some((p, o)) => Ok(Selector {
            partition: Some(i32::try_from(number("partition", p)?).map_err(|_| format!("partition {p:?} too large"))?),
            offset: number("offset", o)?,
        }),
        None => Ok(Selector { partition: None, offset: number("offset", s)? }),
    }
}

/// One record of a dead-letter topic.
#[derive(Debug, Clone)]
pub struct DlqRecord {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DlqRecord {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The physical topic the record was consumed from: `dlq_topic`, else the topic part
    /// of `dlq_origin` (older records), else the DLQ's name without `.dlq`.
    fn origin_topic(&self, dlq_topic: &str) -> String {
        self.header(headers::DLQ_TOPIC)
            .or_else(|| {
                self.header(headers::DLQ_ORIGIN)
                    .and_then(|o| o.rsplitn(3, '/').nth(2).map(str::to_owned))
                    .filter(|t| !t.is_empty())
            })
            .unwrap_or_else(|| dlq_topic.strip_suffix(".dlq").unwrap_or(dlq_topic).to_owned())
    }

    /// `original topic/partition/offset`, from the headers (`-` where unknown).
    fn origin(&self) -> String {
        match (self.header(headers::DLQ_TOPIC), self.header(headers::DLQ_PARTITION), self.header(headers::DLQ_OFFSET)) {
            (Some(t), Some(p), Some(o)) => format!("{t}/{p}/{o}"),
            _ => self.header(headers::DLQ_ORIGIN).unwrap_or_else(|| "-".into()),
        }
    }

    /// The line `dlq list` prints; values that may contain spaces are quoted.
    fn line(&self, dlq_topic: &str) -> String {
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        format!(
            "{dlq_topic} {}:{} origin={} ce_id={} ce_type={} attempts={} failed_at={} error={:?}",
            self.partition,
            self.offset,
            self.origin(),
            or_dash(self.header(headers::ID)),
            or_dash(self.header(headers::TYPE)),
            or_dash(self.header(headers::DLQ_ATTEMPTS)),
            or_dash(self.header(headers::DLQ_FAILED_AT)),
            self.header(headers::DLQ_ERROR).unwrap_or_default(),
        )
    }

    /// The headers a replay publishes: the original ones (CloudEvents, trace context)
    /// without any `dlq_*` or earlier `replayed_from`, plus `replayed_from`.
    fn replay_headers(&self, dlq_topic: &str) -> OwnedHeaders {
        let mut h = OwnedHeaders::new();
        for (k, v) in &self.headers {
            if k.starts_with(headers::DLQ_PREFIX) || k == headers::REPLAYED_FROM {
                continue;
            }
            h = h.insert(Header { key: k, value: v.as_deref() });
        }
        let from = format!("{dlq_topic}/{}/{}", self.partition, self.offset);
        h.insert(Header { key: headers::REPLAYED_FROM, value: Some(from.as_str()) })
    }
}

/// Runs a `dlq` subcommand.
pub async fn run(cmd: DlqCommand) -> anyhow::Result<()> {
    match cmd {
        DlqCommand::List(args) => list(args).await,
        DlqCommand::Replay(args) => replay(args).await,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let logical: Vec<String> =
        if args.topic.is_empty() { SOURCE_TOPICS.iter().map(|t| t.to_string()).collect() } else { args.topic };
    for t in &logical {
        let dlq = read(&args.broker, t).await?;
        for r in &dlq.records {
            println!("{}", r.line(&dlq.topic));
        }
        eprintln!("{}: {} record(s)", dlq.topic, dlq.records.len());
    }
    Ok(())
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let dlq = read(&args.broker, &args.topic).await?;
    let chosen: Vec<&DlqRecord> = if args.all {
        dlq.records
            .iter()
            .filter(|r| {
                let ok = r.header(headers::ID).is_some_and(|id| !id.is_empty());
                if !ok {
                    eprintln!(
                        "skip {} {}:{}: no ce_id header, a replay cannot fix it",
                        dlq.topic, r.partition, r.offset
                    );
                }
                ok
            })
            .collect()
    } else {
        select(&dlq, &args.offsets)?
    };
    if chosen.is_empty() {
        eprintln!("{}: nothing to replay", dlq.topic);
        return Ok(());
    }
    let producer: Option<FutureProducer> = if args.dry_run {
        None
    } else {
        Some(cloudmart_platform::kafka::producer(&args.broker.kafka(), "cloudmart-audit-replay")?)
    };
    for r in chosen {
        let target = r.origin_topic(&dlq.topic);
        let id = r.header(headers::ID).unwrap_or_default();
        let ty = r.header(headers::TYPE).unwrap_or_default();
        let Some(producer) = &producer else {
            println!("would replay {} {}:{} -> {target} ce_id={id} ce_type={ty}", dlq.topic, r.partition, r.offset);
            continue;
        };
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&target).headers(r.replay_headers(&dlq.topic));
        if let Some(k) = &r.key {
            record = record.key(k.as_slice());
        }
        if let Some(p) = &r.payload {
            record = record.payload(p.as_slice());
        }
        let delivered = producer
            .send(record, Timeout::After(Duration::from_secs(args.broker.timeout_secs)))
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("publishing {} {}:{} to {target}", dlq.topic, r.partition, r.offset))?;
        println!(
            "replayed {} {}:{} -> {target}/{}/{} ce_id={id} ce_type={ty}",
            dlq.topic, r.partition, r.offset, delivered.partition, delivered.offset
        );
    }
    if let Some(p) = producer {
        p.flush(Timeout::After(Duration::from_secs(args.broker.timeout_secs)))?;
    }
    Ok(())
}

/// The records named by `selectors`, in the order given (each once); an error names every
/// selector that matches no record, or more than one.
fn select<'a>(dlq: &'a Dlq, selectors: &[Selector]) -> anyhow::Result<Vec<&'a DlqRecord>> {
    let mut chosen: Vec<&DlqRecord> = Vec::new();
    let mut problems = Vec::new();
    for s in selectors {
        let hits: Vec<&DlqRecord> = dlq
            .records
            .iter()
            .filter(|r| r.offset == s.offset && s.partition.is_none_or(|p| p == r.partition))
            .collect();
        match hits.as_slice() {
            [] => problems.push(match s.partition {
                Some(p) => format!("no record at partition {p} offset {}", s.offset),
                None => format!("no record at offset {}", s.offset),
            }),
            [one] => {
                if one.header(headers::ID).is_none_or(|id| id.is_empty()) {
                    problems.push(format!(
                        "record {}:{} has no ce_id header (it was dead-lettered for missing CloudEvents \
                         headers); replaying it would only dead-letter it again",
                        one.partition, one.offset
                    ));
                } else if !chosen.iter().any(|c| c.partition == one.partition && c.offset == one.offset) {
                    chosen.push(one);
                }
            }
            many => {
                let ps: Vec<String> = many.iter().map(|r| format!("{}:{}", r.partition, r.offset)).collect();
                problems.push(format!(
                    "offset {} is on several partitions ({}); write PARTITION:OFFSET",
                    s.offset,
                    ps.join(", ")
                ));
            }
        }
    }
    if !problems.is_empty() {
        bail!("{}: {} (it holds {}; see `cloudmart-audit dlq list`)", dlq.topic, problems.join("; "), dlq.holdings());
    }
    Ok(chosen)
}

/// A dead-letter topic as read: its physical name, the records below the high
/// watermarks measured at the start, by (partition, offset).
#[derive(Debug)]
pub struct Dlq {
    topic: String,
    records: Vec<DlqRecord>,
}

impl Dlq {
    /// `partition P: offsets A..=B` per partition that has records, or `no records`.
    fn holdings(&self) -> String {
        let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        for r in &self.records {
            let e = ranges.entry(r.partition).or_insert((r.offset, r.offset));
            e.0 = e.0.min(r.offset);
            e.1 = e.1.max(r.offset);
        }
        if ranges.is_empty() {
            return "no records".into();
        }
        ranges.iter().map(|(p, (a, b))| format!("partition {p}: offsets {a}..={b}")).collect::<Vec<_>>().join(", ")
    }
}

/// Reads `<prefix><logical>.dlq` from each partition's low watermark up to its high
/// watermark (measured first, so the read ends). A topic that does not exist is empty.
async fn read(broker: &Broker, logical: &str) -> anyhow::Result<Dlq> {
    let topic = broker.kafka().topic(&cloudmart_platform::events::dlq_topic(logical));
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.brokers)
        .set("group.id", format!("cloudmart-audit-dlq-{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("allow.auto.create.topics", "false")
        .create()
        .with_context(|| format!("KAFKA_BROKERS {:?}: cannot create a consumer", broker.brokers))?;
    let wait = Duration::from_secs(broker.timeout_secs);
    let meta = consumer
        .fetch_metadata(Some(&topic), wait)
        .with_context(|| format!("KAFKA_BROKERS {:?}: no metadata for {topic}", broker.brokers))?;
    let partitions: Vec<i32> = meta
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    // Offset where each partition's read ends (exclusive).
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(&topic, p, wait)
            .with_context(|| format!("watermarks of {topic} partition {p}"))?;
        if high > low {
            assignment.add_partition_offset(&topic, p, Offset::Offset(low))?;
            ends.insert(p, high);
        }
    }
    let mut records = Vec::new();
    if ends.is_empty() {
        return Ok(Dlq { topic, records });
    }
    consumer.assign(&assignment)?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut open = ends.clone();
    while !open.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = match tokio::time::timeout(left, consumer.recv()).await {
            Err(_) => bail!(
                "reading {topic} took longer than {wait:?} (partitions still open: {:?}); raise --timeout-secs",
                open.keys().collect::<Vec<_>>()
            ),
            Ok(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
                continue;
            }
            Ok(Err(e)) => {
                eprintln!("reading {topic}: {e} (retrying)");
                continue;
            }
            Ok(Ok(m)) => m,
        };
        let end = ends.get(&msg.partition()).copied().unwrap_or(0);
        if msg.offset() >= end {
            open.remove(&msg.partition());
            continue;
        }
        if msg.offset() + 1 >= end {
            open.remove(&msg.partition());
        }
        let headers = msg
            .headers()
            .map(|h| h.iter().map(|x| (x.key.to_owned(), x.value.map(<[u8]>::to_vec))).collect())
            .unwrap_or_default();
        records.push(DlqRecord {
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    records.dedup_by_key(|r| (r.partition, r.offset));
    Ok(Dlq { topic, records })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64, hs: &[(&str, &str)]) -> DlqRecord {
        DlqRecord {
            partition,
            offset,
            key: Some(b"k".to_vec()),
            payload: Some(b"p".to_vec()),
            headers: hs.iter().map(|(k, v)| (k.to_string(), Some(v.as_bytes().to_vec()))).collect(),
        }
    }

    #[test]
    fn selectors_parse() {
        assert_eq!(parse_selector("7").unwrap(), Selector { partition: None, offset: 7 });
        assert_eq!(parse_selector("2:7").unwrap(), Selector { partition: Some(2), offset: 7 });
        assert!(parse_selector("-1").unwrap_err().contains("offset"));
        assert!(parse_selector("x:1").unwrap_err().contains("partition"));
    }

    #[test]
    fn selection_names_what_is_missing_ambiguous_or_unfixable() {
        let dlq = Dlq {
            topic: "order-events.dlq".into(),
            records: vec![record(0, 0, &[(headers::ID, "a")]), record(1, 0, &[(headers::ID, "b")]), record(1, 1, &[])],
        };
        let sel = |s: &str| parse_selector(s).unwrap();
        assert_eq!(select(&dlq, &[sel("1:0"), sel("1:0")]).unwrap().len(), 1, "each record once");
        let e = select(&dlq, &[sel("9")]).unwrap_err().to_string();
        assert!(e.contains("no record at offset 9") && e.contains("partition 1: offsets 0..=1"), "{e}");
        let e = select(&dlq, &[sel("0")]).unwrap_err().to_string();
        assert!(e.contains("several partitions (0:0, 1:0)"), "{e}");
        let e = select(&dlq, &[sel("1:1")]).unwrap_err().to_string();
        assert!(e.contains("has no ce_id"), "{e}");
    }

    #[test]
    fn replay_keeps_the_event_and_drops_the_dlq_headers() {
        let r = record(
            2,
            5,
            &[
                (headers::ID, "e1"),
                (headers::TYPE, "t"),
                (headers::DLQ_ERROR, "boom"),
                (headers::DLQ_TOPIC, "p-order-events"),
                (headers::DLQ_ATTEMPTS, "3"),
                (headers::REPLAYED_FROM, "old"),
            ],
        );
        let h = r.replay_headers("p-order-events.dlq");
        let keys: Vec<(String, String)> = h
            .iter()
            .map(|x| (x.key.to_owned(), String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned()))
            .collect();
        assert_eq!(
            keys,
            [
                (headers::ID.to_owned(), "e1".to_owned()),
                (headers::TYPE.to_owned(), "t".to_owned()),
                (headers::REPLAYED_FROM.to_owned(), "p-order-events.dlq/2/5".to_owned()),
            ]
        );
        assert_eq!(r.origin_topic("p-order-events.dlq"), "p-order-events");
        let old = record(0, 0, &[(headers::DLQ_ORIGIN, "x-order-events/1/9")]);
        assert_eq!(old.origin_topic("x-order-events.dlq"), "x-order-events");
        assert_eq!(old.origin(), "x-order-events/1/9");
        assert_eq!(record(0, 0, &[]).origin_topic("y-order-events.dlq"), "y-order-events");
        let line = r.line("p-order-events.dlq");
        assert!(line.starts_with("p-order-events.dlq 2:5 origin="), "{line}");
        assert!(
            line.contains("ce_id=e1 ") && line.contains("attempts=3 ") && line.ends_with("error=\"boom\""),
            "{line}"
        );
    }
}
