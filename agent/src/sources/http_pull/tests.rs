//! Unit tests of the HTTP pull source: mappings against documents, configuration checks, and
//! the poll loop against a raw HTTP/1.1 responder on a loopback socket.

use super::*;
use serde_json::json;
use zonesync_proto::{Catalog, Limits};

fn source(mappings: &str) -> Result<HttpPull, HttpPullConfigError> {
    let c: HttpPullConfig =
        toml::from_str(&format!("name = \"ems\"\nurl = \"http://127.0.0.1:1/now\"\n{mappings}")).unwrap();
    c.check(&Validator::new(Catalog::builtin().unwrap(), Limits::default()))
}

const MAPPINGS: &str = r#"
[[mappings]]
pointer = "/meters/0/kwh"
indicator = "electricity"
unit = "kWh"
enterprise = "91350100M000100Y43"
point = "EMS-1"
timestamp_pointer = "/meters/0/time"
unit_pointer = "/meters/0/unit"
[[mappings]]
pointer = "/power"
indicator = "active_power"
unit = "kW"
enterprise = "91350100M000100Y43"
"#;

#[test]
fn each_bad_value_gets_its_reason() {
    let s = source(MAPPINGS).unwrap();
    let (m, p) = (&s.config.mappings[0], &s.config.mappings[1]);
    let now = Utc::now();
    let t = (now - chrono::Duration::minutes(1)).to_rfc3339();
    let good = json!({"meters": [{"kwh": 1500.5, "time": t, "unit": "kWh"}], "power": 12});
    let r = s.value(m, &good, now).unwrap();
    assert_eq!((r.value, r.ts.map(|x| x.to_rfc3339())), (1500.5, Some(t.clone())));
    assert_eq!(
        s.value(p, &good, now).unwrap().ts,
        Some(now),
        "no timestamp pointer: the poll time"
    );
    let label = |doc: Value| s.value(m, &doc, now).unwrap_err().label();
    assert_eq!(label(json!({"meters": []})), "missing_pointer");
    assert_eq!(
        label(json!({"meters": [{"kwh": "1500", "time": t, "unit": "kWh"}]})),
        "wrong_type"
    );
    assert_eq!(
        label(json!({"meters": [{"kwh": null, "time": t, "unit": "kWh"}]})),
        "wrong_type"
    );
    assert_eq!(
        label(json!({"meters": [{"kwh": 1.0, "time": t, "unit": "MWh"}]})),
        "wrong_unit"
    );
    assert_eq!(
        label(json!({"meters": [{"kwh": 1.0, "time": "yesterday", "unit": "kWh"}]})),
        "bad_timestamp"
    );
    assert_eq!(
        label(json!({"meters": [{"kwh": -1.0, "time": t, "unit": "kWh"}]})),
        "refused"
    );
    let future = (now + chrono::Duration::hours(8)).to_rfc3339();
    assert_eq!(
        label(json!({"meters": [{"kwh": 1.0, "time": future, "unit": "kWh"}]})),
        "refused"
    );
}

#[test]
fn timestamps_in_text_seconds_and_milliseconds() {
    let want = DateTime::parse_from_rfc3339("2026-11-23T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(timestamp(&json!("2026-11-23T16:00:00+08:00")), Ok(want));
    assert_eq!(timestamp(&json!(want.timestamp())), Ok(want));
    assert_eq!(timestamp(&json!(want.timestamp_millis())), Ok(want));
    assert!(timestamp(&json!(true)).is_err());
    assert!(timestamp(&json!(-5)).is_err());
}

#[test]
fn configuration_mistakes_are_refused() {
    let err = |m: &str| source(m).unwrap_err().to_string();
    assert!(err("mappings = []\n").contains("has no mappings"));
    let base = "[[mappings]]\npointer = \"/a\"\nindicator = \"electricity\"\nunit = \"kWh\"\nenterprise = \"91350100M000100Y43\"\n";
    assert!(source(base).is_ok());
    assert!(err(&base.replace("\"/a\"", "\"a\"")).contains("must start with '/'"));
    assert!(err(&base.replace("\"kWh\"", "\"kW\"")).contains("is not one of"));
    assert!(err(&base.replace("electricity", "value_added")).contains("pulled values are counters or gauges"));
    assert!(err(&format!("{base}{base}")).contains("mapped twice"));
    let c: HttpPullConfig = toml::from_str(&format!("name = \"x\"\nurl = \"ftp://h/\"\n{base}")).unwrap();
    let v = Validator::new(Catalog::builtin().unwrap(), Limits::default());
    assert!(c.check(&v).unwrap_err().to_string().contains("scheme"));
    assert!(
        toml::from_str::<HttpPullConfig>(&format!("name = \"x\"\nurl = \"http://h/\"\ntoken = \"t\"\n{base}")).is_err()
    );
}

#[test]
fn the_token_never_shows_in_debug_output() {
    let t = Token("s3cret".into());
    assert!(!format!("{t:?}").contains("s3cret"));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("token");
    std::fs::write(&f, "s3cret\n").unwrap();
    let mut s = source(MAPPINGS).unwrap();
    s.config.bearer_token_file = Some(f.clone());
    assert_eq!(s.token().unwrap().map(|t| t.0), Some("s3cret".to_owned()));
    assert!(!format!("{s:?}").contains("s3cret"));
    std::fs::write(&f, "  \n").unwrap();
    assert_eq!(
        s.token().unwrap_err().to_string(),
        format!("bearer token: {} is empty", f.display())
    );
}

#[cfg(test)]
mod example_tests {
    use super::*;
    use zonesync_proto::{Catalog, Limits};

    #[test]
    fn the_commented_example_is_valid_once_uncommented() {
        #[derive(serde::Deserialize)]
        struct Example {
            http_pull: Vec<HttpPullConfig>,
        }
        let block = crate::sources::dlt645::tests::example_block("# [[http_pull]]");
        let ex: Example = toml::from_str(&block).unwrap();
        let v = Validator::new(Catalog::builtin().unwrap(), Limits::default());
        let sources = check_all(&ex.http_pull, &v).unwrap();
        assert_eq!(sources[0].config.mappings.len(), 1);
        assert!(sources[0].config.mappings[0].unit_pointer.is_some());
    }
}

#[cfg(test)]
mod run_tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use zonesync_proto::{Catalog, Limits};

    /// Answers request n with `replies[n]` (the last one from then on), one
    /// connection per request, written out as raw HTTP/1.1.
    async fn server(replies: Vec<(u16, String)>) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/now", listener.local_addr().unwrap());
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let n = count.fetch_add(1, Ordering::SeqCst);
                let (status, body) = &replies[n.min(replies.len() - 1)];
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            }
        });
        (url, served)
    }

    #[tokio::test]
    async fn every_bad_response_is_counted_and_polling_goes_on() {
        let t = (Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
        let good = serde_json::json!({"v": 5.5, "t": t}).to_string();
        let replies = vec![
            (500, "{}".to_owned()),
            (200, "not json".to_owned()),
            (200, "{\"t\": 1}".to_owned()),
            (200, serde_json::json!({"v": true, "t": t}).to_string()),
            (200, good.clone()),
            // The same document again: its timestamp did not move.
            (200, good),
        ];
        let (url, served) = server(replies).await;
        let cfg: HttpPullConfig = toml::from_str(&format!(
            "name = \"t\"\nurl = \"{url}\"\npoll_ms = 20\ntimeout_ms = 2000\n[[mappings]]\npointer = \"/v\"\n\
             timestamp_pointer = \"/t\"\nindicator = \"active_power\"\nunit = \"kW\"\nenterprise = \"91350100M000100Y43\"\n"
        ))
        .unwrap();
        let source = cfg
            .check(&Validator::new(Catalog::builtin().unwrap(), Limits::default()))
            .unwrap();
        let stats = source.stats.clone();
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap());
        let (trigger, signal) = crate::shutdown::channel();
        let task = tokio::spawn(source.run(outbox.clone(), signal));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while stats.unchanged.load(Ordering::Relaxed) < 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "served {}",
                served.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        trigger.fire();
        task.await.unwrap().unwrap();
        assert_eq!(
            stats.problems(),
            BTreeMap::from([
                ("missing_pointer", 1),
                ("not_json", 1),
                ("status", 1),
                ("wrong_type", 1)
            ])
        );
        assert_eq!(
            stats.readings.load(Ordering::Relaxed),
            1,
            "the repeated document is not sent twice"
        );
        assert_eq!(outbox.pending_items(), 1);
    }
}
