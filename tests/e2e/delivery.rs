//! Delivery under faults: SIGKILLs mid-stream, a broker outage, a network partition — nothing lost, nothing counted twice.

use super::*;

async fn long_run(dir: &Path, broker: &Mosquitto) -> (Dataset, zonesync_e2e::Proc, Api) {
    let ds = dataset::write(dir, broker.port, 2000, 2);
    let (agg, api) = spawn_aggregator(&ds.aggregator);
    (ds, agg, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sigkill_mid_stream_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let (ds, _agg, api) = long_run(dir.path(), &broker).await;
    let mut b = spawn_agent(&ds.agent_b);
    let mut a = spawn_agent(&ds.agent_a);
    // Kill agent a twice while it produces and publishes.
    for _ in 0..2 {
        api.wait_metric("zonesync_aggregator_batches_stored_total", 20.0, WAIT)
            .await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        a.kill9();
        a = spawn_agent(&ds.agent_a);
    }
    assert_exact_ledger(&api, &ds).await;
    a.kill9();
    b.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_sigkill_mid_stream_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let (ds, mut agg, api) = long_run(dir.path(), &broker).await;
    let _a = spawn_agent(&ds.agent_a);
    let _b = spawn_agent(&ds.agent_b);
    api.wait_metric("zonesync_aggregator_batches_stored_total", 30.0, WAIT)
        .await;
    agg.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_agg, api) = spawn_aggregator(&ds.aggregator);
    assert_exact_ledger(&api, &ds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_agents_buffer_then_drain_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path());
    let (ds, _agg, api) = long_run(dir.path(), &broker).await;
    let _a = spawn_agent(&ds.agent_a);
    let _b = spawn_agent(&ds.agent_b);
    api.wait_metric("zonesync_aggregator_batches_stored_total", 20.0, WAIT)
        .await;
    broker.stop();
    let during = api.metric("zonesync_aggregator_readings_stored_total").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        api.metric("zonesync_aggregator_readings_stored_total").await,
        during,
        "nothing arrives while the broker is down"
    );
    broker.restart();
    assert_exact_ledger(&api, &ds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_partition_resends_unacknowledged_batches() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let proxy = Proxy::start(broker.port).await;
    // Agents go through the proxy; the aggregator talks to the broker directly.
    let ds = dataset::write(dir.path(), proxy.port, 2000, 2);
    let agg_cfg = std::fs::read_to_string(&ds.aggregator)
        .unwrap()
        .replace(&format!("port = {}", proxy.port), &format!("port = {}", broker.port));
    std::fs::write(&ds.aggregator, agg_cfg).unwrap();
    let (_agg, api) = spawn_aggregator(&ds.aggregator);
    let _a = spawn_agent(&ds.agent_a);
    let _b = spawn_agent(&ds.agent_b);
    api.wait_metric("zonesync_aggregator_batches_stored_total", 20.0, WAIT)
        .await;
    proxy.blackhole();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.cut_and_refuse();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let swallowed = proxy.swallowed.load(std::sync::atomic::Ordering::SeqCst);
    assert!(swallowed > 0, "the partition swallowed published batches");
    proxy.heal();
    assert_exact_ledger(&api, &ds).await;
    eprintln!("partition swallowed {swallowed} bytes; every reading still arrived exactly once");
}
