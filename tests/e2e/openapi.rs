//! The HTTP API's OpenAPI description (issue 16): valid OpenAPI
//! (`openapi-spec-validator`, PyPI, which scripts/test.sh installs), the
//! same as `zonesync-aggregator openapi` prints, and true to the server:
//! every documented operation, called on a running aggregator, answers with
//! a status it documents — with the read token and without it.

use super::*;

/// Validates `doc` with openapi-spec-validator; panics with its words if it refuses.
fn validate(doc: &Value) {
    let said = zonesync_e2e::checked_by(
        "python3",
        &[
            "-c",
            "import json, sys\n\
             try:\n    from openapi_spec_validator import validate\n\
             except ImportError:\n    sys.exit('openapi-spec-validator is not installed: run scripts/test.sh (pip install openapi-spec-validator)')\n\
             validate(json.load(sys.stdin))\nprint('valid')",
        ],
        doc.to_string().as_bytes(),
        "python3 is needed to run openapi-spec-validator",
    );
    assert!(said.contains("valid"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_description_is_valid_and_true_to_the_routes() {
    let dir = tempfile::tempdir().unwrap();
    let (trigger, signal) = shutdown::channel();
    let read = "openapi-read-token";
    let opts = demo::DemoOptions {
        data_dir: dir.path().to_path_buf(),
        http_port: 0,
        mqtt_port: 0,
        tick_ms: 10,
        read_token: Some(read.into()),
    };
    let h = demo::start(&opts, signal).await.unwrap();
    let base = format!("http://{}", h.http_addr);
    let http = reqwest::Client::new();

    // Served without a token (it holds no data), and the same as the command prints.
    let served: Value = http
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let printed = serde_json::to_value(zonesync_aggregator::openapi::described()).unwrap();
    assert_eq!(served, printed, "the served description is the printed one");
    validate(&served);

    // Every documented operation answers with a status it documents.
    let e = demo::demo_enterprise(201).unwrap();
    let fill = |path: &str| {
        path.replace("{zone}", "jiyuan-services")
            .replace("{city}", "济源")
            .replace("{id}", e.as_str())
    };
    let paths = served["paths"].as_object().expect("paths");
    assert!(paths.len() >= 20, "documented paths: {}", paths.len());
    let mut calls = 0;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().expect("operations") {
            let documented: Vec<&str> = op["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(String::as_str)
                .collect();
            for token in [Some(h.write_token.as_str()), None] {
                let url = format!("{base}{}", fill(path));
                let mut req = match method.as_str() {
                    "get" => http.get(&url),
                    "post" => http
                        .post(&url)
                        .json(&json!({ "key": "no-such-alert", "by": "openapi test" })),
                    other => panic!("{path}: method {other} not called by this test"),
                };
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                // The event stream answers at once and then stays open: read the status only.
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16().to_string();
                assert!(
                    documented.contains(&status.as_str()),
                    "{method} {path} (token: {}) answered {status}, documented {documented:?}",
                    token.is_some()
                );
                calls += 1;
            }
        }
    }
    eprintln!(
        "openapi: {} paths, {calls} calls, each answered a documented status",
        paths.len()
    );
    // The guarded reads refuse a caller without the token, as documented.
    let refused = http.get(format!("{base}/api/v1/zones")).send().await.unwrap();
    assert_eq!(refused.status(), 401);

    trigger.fire();
    for a in h.agents {
        a.await.unwrap();
    }
    h.running.wait().await;
}
