//! Figure 1, the baseline: how many readings per second the broker path
//! itself carries, with no zonesync code in it.
//!
//! `mosquitto_pub -l -q 1` reads the batch file (one 100-reading batch JSON
//! per line) into a fresh Mosquitto; `mosquitto_sub -q 1 -C N` takes every
//! message out of a persistent session created beforehand, so nothing is
//! lost to a subscription that is not in place yet. The clock runs from the
//! publisher's start until the subscriber has received the N-th message.
//! A second series times the publisher alone (no subscriber): the ceiling
//! for anything that only publishes, like an agent draining its outbox.

use crate::data::{READINGS_PER_BATCH, ZONE};
use crate::mosquitto::{prepare_session, publisher, subscriber, wait_child, Broker};
use crate::report::{Row, Unit};
use crate::Ctx;
use anyhow::{bail, Result};
use std::time::{Duration, Instant};
use zonesync_proto::Topic;

/// One pub → broker → sub run; readings per second.
async fn pub_sub(ctx: &Ctx, run: usize) -> Result<f64> {
    let broker = Broker::start(&ctx.scratch(&format!("ceiling-{run}"))).await?;
    let filter = Topic::zone_filters(&crate::data::zone(ZONE)?);
    prepare_session(broker.port, "bench-sub", &filter).await?;
    let mut sub = subscriber(broker.port, "bench-sub", &filter, ctx.batches)?;
    let t0 = Instant::now();
    let mut publ = publisher(broker.port, &ctx.topic, &ctx.lines)?;
    let st = wait_child(&mut sub, "mosquitto_sub -C", ctx.limit()).await?;
    let elapsed = t0.elapsed();
    wait_child(&mut publ, "mosquitto_pub -l", Duration::from_secs(30)).await?;
    broker.stop().await;
    if !st.success() {
        bail!(
            "mosquitto_sub exited with {st} before receiving {} messages",
            ctx.batches
        );
    }
    Ok((ctx.batches * READINGS_PER_BATCH) as f64 / elapsed.as_secs_f64())
}

/// Seconds `mosquitto_pub -l` takes for a file of `lines` lines, no subscriber.
async fn pub_only_secs(ctx: &Ctx, broker: &Broker, lines: &std::path::Path) -> Result<f64> {
    let t0 = Instant::now();
    let mut publ = publisher(broker.port, &ctx.topic, lines)?;
    let st = wait_child(&mut publ, "mosquitto_pub -l", ctx.limit()).await?;
    let elapsed = t0.elapsed().as_secs_f64();
    if !st.success() {
        bail!("mosquitto_pub exited with {st}");
    }
    Ok(elapsed)
}

/// One publish-only run (the broker acknowledges, nobody subscribes):
/// readings per second, and the tool's fixed cost that was subtracted.
///
/// `mosquitto_pub -l` lingers about 0.2 s between its last PUBACK and its
/// exit whatever the input; that fixed cost is measured with a one-line file
/// on the same broker and taken off, or short runs would understate the rate.
async fn pub_only(ctx: &Ctx, run: usize) -> Result<(f64, f64)> {
    let dir = ctx.scratch(&format!("pubonly-{run}"));
    let broker = Broker::start(&dir).await?;
    let one = dir.join("one.jsonl");
    let first = std::fs::read(&ctx.lines)?;
    let line_end = first.iter().position(|b| *b == b'\n').map_or(first.len(), |i| i + 1);
    std::fs::write(&one, &first[..line_end])?;
    let fixed = pub_only_secs(ctx, &broker, &one).await?;
    let whole = pub_only_secs(ctx, &broker, &ctx.lines).await?;
    broker.stop().await;
    let net = (whole - fixed).max(whole * 0.05);
    Ok(((ctx.batches * READINGS_PER_BATCH) as f64 / net, fixed))
}

/// Figure 1 (pub → sub) and 1b (publish only).
pub async fn measure(ctx: &Ctx) -> (Row, Row) {
    let mut path = Row::new(
        "1",
        "Broker path ceiling: mosquitto_pub -l → Mosquitto → mosquitto_sub -C N, QoS 1 (baseline)",
        Unit::Rate("readings/s"),
    );
    let mut only = Row::new(
        "1b",
        "Broker publish-only ceiling: mosquitto_pub -l → Mosquitto, QoS 1, no subscriber (baseline)",
        Unit::Rate("readings/s"),
    );
    let mut fixed = Vec::new();
    for run in 0..ctx.runs {
        match pub_sub(ctx, run).await {
            Ok(v) => path.runs.push(v),
            Err(e) => path.fail(format!("run {}: {e:#}", run + 1)),
        }
        match pub_only(ctx, run).await {
            Ok((v, f)) => {
                only.runs.push(v);
                fixed.push(format!("{:.0} ms", f * 1000.0));
            }
            Err(e) => only.fail(format!("run {}: {e:#}", run + 1)),
        }
    }
    let payload = ctx.payload_bytes / ctx.batches.max(1);
    path.notes.push(
        "The subscriber uses the aggregator's own filters (Topic::zone_filters: presence and data topics of the \
         zone) from a persistent session created before the publisher starts."
            .into(),
    );
    path.notes.push(format!(
        "{} batches of {READINGS_PER_BATCH} readings each ({} readings, {:.1} MB of batch JSON, {} bytes per \
         payload on average, 1 MB = 10^6 bytes), built with zonesync_proto::Batch exactly as an agent seals them; one publisher, one \
         topic, one subscriber; a fresh Mosquitto per run.",
        crate::report::thousands(ctx.batches as f64),
        crate::report::thousands((ctx.batches * READINGS_PER_BATCH) as f64),
        ctx.payload_bytes as f64 / 1e6,
        crate::report::thousands(payload as f64)
    ));
    path.notes.push(
        "This is the baseline of figures 2 and 2b: the same file, the same publisher, the same broker settings; \
         only the consumer differs."
            .into(),
    );
    path.notes.push(format!(
        "Also in messages: median {} batches/s.",
        crate::report::thousands(path.median().unwrap_or(0.0) / READINGS_PER_BATCH as f64)
    ));
    only.notes.push(format!(
        "Timed from the publisher's start to its exit (mosquitto_pub -l exits once every QoS 1 message is \
         acknowledged), minus the tool's fixed start-and-exit cost measured with a one-line file on the same \
         broker just before ({} in the runs). The baseline of figure 3: an agent draining its outbox also only \
         publishes.",
        fixed.join(", ")
    ));
    (path, only)
}
