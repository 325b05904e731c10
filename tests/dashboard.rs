//! The dashboard in a real browser: the demo (embedded broker, three Jiyuan
//! zones, simulated agents, aggregator) with headless Chromium loading the
//! page. Checks that the figures on the page are the API's, that the language
//! switch works, that acknowledging an alert from the page reaches the
//! server, and that the briefing holds the goal table; saves the screenshots
//! the README shows (docs/screenshots/), the briefing in its print style.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zonesync_agent::shutdown;
use zonesync_demo as demo;
use zonesync_e2e::browser::Browser;
use zonesync_e2e::Api;

const WAIT: Duration = Duration::from_secs(60);

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    std::fs::create_dir_all(&dir).expect("docs/screenshots");
    dir
}

/// Polls the API until `pick` finds something.
async fn wait_api<T>(api: &Api, path: &str, what: &str, pick: impl Fn(&Value) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = api.get(path).await;
        if let Some(t) = pick(&v) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WAIT:?}; last {path}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the page has drawn `tab` in `lang` (app.js marks each render on <body>).
async fn rendered(b: &Browser, tab: &str, lang: &str) {
    b.wait_for(
        &format!("{tab} drawn in {lang}"),
        "return (document.body.dataset.rendered || '').startsWith(arguments[0]) && !document.querySelector('.error');",
        json!([format!("{tab}:{lang}:")]),
        WAIT,
    )
    .await;
}

/// No English on the Chinese page: every text node and every tooltip
/// (`title`) of the body, words of four or more Latin letters, besides the
/// names of products (zonesync, Excel) and the switch to English (which says
/// so in English). Goal ids, units (kWh, tce) and codes are shorter.
async fn no_english(b: &Browser, what: &str) {
    let found = b
        .js(
            "const out = []; const words = s => (s.match(/[A-Za-z]{4,}/g) || []).filter(w => !['zonesync', 'excel'].includes(w.toLowerCase()));
             const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
             for (let n = walk.nextNode(); n; n = walk.nextNode()) {
               const p = n.parentElement;
               if (!p || p.closest('script,style,[hidden],#lang') || p.offsetParent === null && p.tagName !== 'OPTION') continue;
               for (const w of words(n.textContent)) out.push(w + ' in ' + n.textContent.trim().slice(0, 60));
             }
             for (const e of document.querySelectorAll('[title]')) for (const w of words(e.title)) out.push(w + ' in title ' + e.title.slice(0, 60));
             return out.slice(0, 20);",
            json!([]),
        )
        .await;
    assert_eq!(found, json!([]), "English on the Chinese page ({what})");
}

/// Text of the first element matching `css`, or null.
async fn text(b: &Browser, css: &str) -> Value {
    b.js(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : null;",
        json!([css]),
    )
    .await
}

/// A percentage as the page shows it ("62.5%") as a number of percent.
fn percent(shown: &Value, what: &str) -> f64 {
    shown
        .as_str()
        .and_then(|s| s.strip_suffix('%'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: {shown} is not a percentage"))
}

/// The page shows `share` (0-1) to one decimal of a percent.
fn assert_share(shown: &Value, share: &Value, what: &str) {
    if share.is_null() {
        assert_eq!(shown, "—", "{what}: the API has no figure");
        return;
    }
    let want = share.as_f64().unwrap_or_else(|| panic!("{what}: API gave {share}")) * 100.0;
    let got = percent(shown, what);
    assert!(
        (got - want).abs() <= 0.05 + 1e-9,
        "{what}: page shows {got}%, API {want}%"
    );
}

// The demo (three agents, ingest, alerts) shares the runtime with the browser driving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_shows_the_api_figures_switches_language_and_acknowledges_an_alert() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (trigger, signal) = shutdown::channel();
    let opts = demo::DemoOptions {
        data_dir: dir.path().to_owned(),
        http_port: 0,
        mqtt_port: 0,
        tick_ms: 2,
        read_token: None,
    };
    let h = demo::start(&opts, signal).await.expect("demo starts");
    let base = format!("http://{}", h.http_addr);
    let api = Api::new(&base);
    let period = demo::last_month(chrono::Utc::now()).to_string();
    let zones: Vec<String> = api.get("/api/v1/zones").await["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(zones.len(), 3);

    // Declarations in: every zone's digital-transformation coverage has all its
    // in-scope enterprises but the one that never declares (see demo/src/lib.rs).
    for z in &zones {
        wait_api(
            &api,
            &format!("/api/v1/zones/{z}/goals?period={period}"),
            "declarations",
            |g| {
                let row = g["goals"].as_array()?.iter().find(|r| r["id"] == "HN27-03")?;
                (row["reported"].as_u64()? + 1 == row["in_scope"].as_u64()?).then_some(())
            },
        )
        .await;
    }
    // An active alert (the demo's rules raise some within seconds of data arriving).
    let key: String = wait_api(&api, "/api/v1/alerts", "an active alert", |a| {
        a["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["phase"]["state"] == "active" && a["phase"]["acked_by"].is_null())
            .and_then(|a| a["key"].as_str().map(str::to_owned))
    })
    .await;

    let b = Browser::start(1600, 1000).await;
    let shots = screenshots();

    // The default period is the last complete month, in the API and on the
    // page; the month running is shown only when chosen, marked 进行中.
    let now = chrono::Utc::now();
    let running = zonesync_proto::Period::month_of(now).to_string();
    let by_default = api.get(&format!("/api/v1/zones/{}/goals", zones[0])).await;
    assert_eq!(by_default["period"], period.as_str(), "the API's default period");
    assert_eq!(by_default["period_progress"]["state"], "complete");
    let live = api
        .get(&format!("/api/v1/zones/{}/goals?period={running}", zones[0]))
        .await;
    assert_eq!(live["period_progress"]["state"], "in_progress");
    b.goto(&format!("{base}/dashboard/#overview")).await;
    rendered(&b, "overview", "zh").await;
    let chosen = b
        .js(
            "return [document.querySelector('#period').value, document.querySelector('#period-note').hidden];",
            json!([]),
        )
        .await;
    assert_eq!(
        chosen,
        json!([period, true]),
        "the page's default period, with no 进行中 note"
    );
    b.goto(&format!("{base}/dashboard/?period={running}#overview")).await;
    rendered(&b, "overview", "zh").await;
    let note = b
        .js(
            "const n = document.querySelector('#period-note'); return [n.hidden, n.textContent];",
            json!([]),
        )
        .await;
    assert_eq!(note[0], false, "the month running is marked");
    assert!(note[1].as_str().unwrap_or("").starts_with("进行中 · 第"), "{note}");

    // The wall screen: at 1920×1080, one zone per screen, nothing scrolled
    // off, the next zone on its own after `every` seconds.
    b.resize(1920, 1080).await;
    b.goto(&format!("{base}/dashboard/?kiosk=1&every=3#overview")).await;
    rendered(&b, "overview", "zh").await;
    let screen = "const zs = [...document.querySelectorAll('section.zone')].map(s => s.dataset.zone);
                  return [zs, document.querySelector('#view').getBoundingClientRect().bottom <= window.innerHeight,
                          document.querySelector('#tabs').offsetParent === null, Number(document.body.dataset.scale)];";
    let first = b.js(screen, json!([])).await;
    assert_eq!(
        first[0].as_array().map(Vec::len),
        Some(1),
        "one zone per screen: {first}"
    );
    assert_eq!(first[1], true, "nothing scrolled off at 1920×1080: {first}");
    assert_eq!(first[2], true, "no tabs on the wall screen");
    // Read from across a room: shrunk by at most a quarter to fit.
    assert!(first[3].as_f64().unwrap_or(0.0) >= 0.75, "kiosk scale {first}");
    b.screenshot(&shots.join("kiosk-zh.png")).await;
    let next = b
        .wait_for(
            "the kiosk moves on to the next zone",
            "const z = document.querySelector('section.zone'); return z && z.dataset.zone !== arguments[0] ? z.dataset.zone : null;",
            json!([first[0][0]]),
            WAIT,
        )
        .await;
    assert!(zones.iter().any(|z| json!(z) == next), "{next}");

    // The kiosk started on the city view: the city's table first, then the zones in turn.
    b.goto(&format!("{base}/dashboard/?kiosk=1&every=3#city")).await;
    rendered(&b, "city", "zh").await;
    let city_screen = b
        .js(
            "return [[...document.querySelectorAll('section.city')].map(s => s.dataset.city), !!document.querySelector('section.zone'),
                     document.querySelector('#view').getBoundingClientRect().bottom <= window.innerHeight];",
            json!([]),
        )
        .await;
    assert_eq!(city_screen, json!([["济源"], false, true]), "the kiosk's city screen");
    b.wait_for(
        "the kiosk moves on from the city to a zone",
        "const z = document.querySelector('section.zone'); return z ? z.dataset.zone : null;",
        json!([]),
        WAIT,
    )
    .await;

    // City and province first: the default tab, at 1920×1080; each figure
    // as `/cities/{city}/goals` and `/province/goals` have it, with each
    // zone's part (each city's, on the province table).
    // The demo's agents still send, so a figure may move between the page's
    // fetch and the test's: the page is read between two equal API tables.
    let tables = |api: &Api| {
        let api = api.clone();
        let period = period.clone();
        async move {
            [
                api.get(&format!("/api/v1/cities/济源/goals?period={period}")).await["goals"].clone(),
                api.get(&format!("/api/v1/province/goals?period={period}")).await["goals"].clone(),
            ]
        }
    };
    let deadline = Instant::now() + WAIT;
    let (levels, settled) = loop {
        let before = tables(&api).await;
        b.goto(&format!("{base}/dashboard/?period={period}")).await;
        rendered(&b, "city", "zh").await;
        let levels = b
            .js(
                "const out = {};
                 for (const r of document.querySelectorAll('tr.goal[data-level]')) {
                   out[r.dataset.level + '|' + r.dataset.goal] = { value: r.dataset.value === '' ? null : Number(r.dataset.value),
                     status: r.querySelector('[data-status]').dataset.status, span: r.querySelector('.span-label').textContent.trim(),
                     completeness: r.querySelector('.completeness').textContent.trim(),
                     parts: [...r.querySelectorAll('li.part')].map(p => [p.dataset.part, p.dataset.value === '' ? null : Number(p.dataset.value)]) };
                 }
                 return out;",
                json!([]),
            )
            .await;
        let after = tables(&api).await;
        if before == after {
            break (levels, after);
        }
        assert!(
            Instant::now() < deadline,
            "the city and province tables never held still for a page load"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(text(&b, "a[data-tab=city]").await, "市级·省级目标");
    no_english(&b, "city view").await;
    let mut level_rows = 0;
    for (k, (level, scope)) in [("city:济源", "city"), ("province", "province")]
        .into_iter()
        .enumerate()
    {
        for g in settled[k].as_array().unwrap().iter().filter(|g| g["scope"] == scope) {
            let id = g["id"].as_str().unwrap();
            let row = &levels[format!("{level}|{id}")];
            assert!(row.is_object(), "{level} {id} is not on the city view");
            match (row["value"].as_f64(), g["value"].as_f64()) {
                (Some(a), Some(b)) => assert!(
                    (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                    "{level} {id}: page {a}, API {b}"
                ),
                (a, b) => assert_eq!(a, b, "{level} {id} value"),
            }
            assert_eq!(row["status"], g["status"], "{level} {id} status");
            assert_share(
                &row["completeness"],
                &g["completeness"],
                &format!("{level} {id} completeness"),
            );
            assert_eq!(
                row["span"],
                zonesync_aggregator::goals::words::span_words(g["period"].as_str().unwrap()),
                "{level} {id} span label"
            );
            let parts = row["parts"].as_array().unwrap();
            let want = if scope == "city" { zones.len() } else { 1 };
            assert_eq!(parts.len(), want, "{level} {id}: parts {parts:?}");
            // A total's parts add up to it.
            if g["kind"] == "total" {
                if let Some(v) = g["value"].as_f64() {
                    let sum: f64 = parts.iter().filter_map(|p| p[1].as_f64()).sum();
                    assert!(
                        (sum - v).abs() <= 1e-6 * v.abs().max(1.0),
                        "{level} {id}: parts add to {sum}, figure {v}"
                    );
                }
            }
            level_rows += 1;
        }
    }
    assert!(level_rows >= 15, "city and province rows checked: {level_rows}");
    assert!(
        text(&b, "section.province .partial-note")
            .await
            .as_str()
            .unwrap_or_default()
            .contains("非全省数据"),
        "a zone aggregator's province table says it is not the whole province"
    );
    b.screenshot(&shots.join("city-zh.png")).await;
    b.resize(1600, 1000).await;

    eprintln!("dashboard test: Overview at {:.1} s", started.elapsed().as_secs_f64());
    // Overview, in Chinese by default: each coverage goal's value, status and
    // completeness as the API has them, for every zone.
    b.goto(&format!("{base}/dashboard/?period={period}#overview")).await;
    rendered(&b, "overview", "zh").await;
    assert_eq!(text(&b, "a[data-tab=overview]").await, "开发区目标");
    no_english(&b, "overview").await;
    // Everything the page shows per goal row, in one round trip.
    let shown = b
        .js(
            "const out = {}; const txt = (r, c) => { const e = r.querySelector(c); return e ? e.textContent.trim() : null; };
             for (const r of document.querySelectorAll('.goal[data-zone][data-goal]')) {
               out[r.dataset.zone + '|' + r.dataset.goal] = { value: txt(r, '.value'), completeness: txt(r, '.completeness'),
                 status: r.querySelector('[data-status]').dataset.status, name: txt(r, '.goal-name'), span: txt(r, '.span-label'), compare: txt(r, '.compare'), target: txt(r, '.target-text'), pace: r.querySelector('.pace') ? r.querySelector('.pace').dataset.verdict : null, tip: (r.querySelector('.goal-name[title]') || r.querySelector('[title]') || {}).title || null };
             }
             return out;",
            json!([]),
        )
        .await;
    let mut checked = 0;
    let mut compared = 0;
    let mut paced = 0;
    for z in &zones {
        let table = api
            .get(&format!(
                "/api/v1/zones/{z}/goals?period={period}&compare=true&pace=true"
            ))
            .await;
        for g in table["goals"].as_array().unwrap() {
            let id = g["id"].as_str().unwrap();
            let row = &shown[format!("{z}|{id}")];
            assert!(row.is_object(), "{z} {id} is not on the page");
            // 同比 and 环比 beside the figures that have them, as the API has them.
            let cmp = &table["comparisons"][id];
            let on_page = row["compare"].as_str().unwrap_or_default();
            if cmp["same_period_last_year"].is_object() {
                assert!(on_page.starts_with("同比 "), "{z} {id}: 同比 missing: {on_page:?}");
                compared += 1;
            }
            assert_eq!(
                cmp["previous_period"].is_object(),
                on_page.contains("环比 "),
                "{z} {id}: 环比 on the page {on_page:?}, API {cmp}"
            );
            if g["kind"] == "coverage" {
                assert_share(&row["value"], &g["value"], &format!("{z} {id} value"));
                checked += 1;
            }
            assert_share(
                &row["completeness"],
                &g["completeness"],
                &format!("{z} {id} completeness"),
            );
            assert_eq!(row["status"], g["status"], "{z} {id} status");
            // Each dated goal's pace, as the API judges it.
            assert_eq!(row["pace"], table["pace"][id]["verdict"], "{z} {id} pace");
            paced += usize::from(row["pace"].is_string());
            // The tooltip in Chinese: plan, clause and definition_zh, no English words.
            let tip = row["tip"].as_str().unwrap_or_default();
            assert!(
                tip.contains(g["definition_zh"].as_str().unwrap()),
                "{z} {id} tooltip: {tip}"
            );
            assert!(
                !tip.split(|c: char| !c.is_ascii_alphabetic()).any(|w| w.len() > 3),
                "{z} {id}: English in the Chinese tooltip: {tip}"
            );
            // Every figure says its span, in words, as the row's `period` has it.
            let span = row["span"].as_str().unwrap_or_default();
            assert_eq!(
                span,
                zonesync_aggregator::goals::words::span_words(g["period"].as_str().unwrap()),
                "{z} {id} span label: the page writes a span as the briefing does"
            );
            let name = row["name"].as_str().unwrap_or_default();
            let want = g["name_zh"].as_str().unwrap();
            assert!(
                name.starts_with(want),
                "{z} {id}: page shows {name}, API name_zh {want}"
            );
        }
    }
    assert!(checked >= 15, "coverage goals checked: {checked}");
    assert!(compared >= 30, "rows with a 同比 checked: {compared}");
    assert!(paced >= 15, "rows with a pace checked: {paced}");
    // Targets as the plans write them, in the units officials use.
    let z0 = &zones[0];
    for (id, want) in [
        ("JY27-07", "≥ 1.35%"),
        ("HN27-01", "> 3 万亿元"),
        ("JY27-01", "> 2,800 亿元"),
    ] {
        assert_eq!(shown[format!("{z0}|{id}")]["target"], want, "{id} target as written");
    }
    b.resize(1600, 2000).await;
    b.screenshot(&shots.join("overview-zh.png")).await;
    b.resize(1600, 1000).await;

    // Live: a stored batch makes the page redraw itself, in the same document (no reload).
    let count = "return [window.__sameDocument === true, Number(document.body.dataset.rendered.split(':')[2])];";
    b.js("window.__sameDocument = true; return true;", json!([])).await;
    let before = b.js(count, json!([])).await[1].as_u64().unwrap();
    let e = demo::demo_enterprise(201).unwrap();
    let batch = serde_json::to_vec(&json!({"v": 1, "agent": "live-check", "boot": 1, "seq": 1,
        "sent_at": chrono::Utc::now().to_rfc3339(), "zone": "jiyuan-services", "enterprise": e,
        "readings": [{"indicator": "value_added", "value": 1.0, "unit": "万元", "period": "2020-01"}]}))
    .unwrap();
    let topic = format!("zonesync/v1/jiyuan-services/live-check/data/{e}");
    let stored = zonesync_aggregator::ingest::handle(&h.running.app.ingest(), &topic, &batch, chrono::Utc::now());
    assert_eq!(stored.unwrap(), zonesync_aggregator::ingest::Handled::Stored);
    b.wait_for(
        "a redraw after new data, without a reload",
        "const r = (() => { ARG })(); return r[0] && r[1] > arguments[0];"
            .replace("ARG", count)
            .as_str(),
        json!([before]),
        WAIT,
    )
    .await;
    assert_eq!(
        text(&b, "#live").await.as_str().map(|t| t.starts_with("实时")),
        Some(true)
    );

    eprintln!("dashboard test: Energy at {:.1} s", started.elapsed().as_secs_f64());
    // Energy: the zone's intensity and the enterprise furthest off its
    // trajectory, as the API's series has them. Checked on a month of the
    // demo's reported history, which no longer changes; the live month is
    // still being caught up with.
    let z0 = "jiyuan-hitech";
    let history: String = api
        .get(&format!(
            "/api/v1/dashboard/zones/{z0}/energy-series?period={period}&months=2"
        ))
        .await["series"]["months"][0]
        .as_str()
        .unwrap()
        .to_owned();
    b.goto(&format!("{base}/dashboard/?period={history}&zone={z0}#energy"))
        .await;
    rendered(&b, "energy", "zh").await;
    let series = api
        .get(&format!(
            "/api/v1/dashboard/zones/{z0}/energy-series?period={history}&months=12"
        ))
        .await;
    let zs = &series["series"]["zone"];
    assert_eq!(zs["latest"], json!(11), "{history} has data: {zs}");
    let want = format!("{:.4}", zs["intensity"][11].as_f64().unwrap());
    assert_eq!(
        text(&b, &format!(".zone-energy[data-zone=\"{z0}\"] .zone-intensity")).await,
        want
    );
    // The trend is an ECharts chart (vendored, nothing fetched): its series
    // are the API's months, with the latest year's target as a mark line.
    let drawn = b
        .js(
            "const c = echarts.getInstanceByDom(document.getElementById('energy-chart')); if (!c) return null;
             const o = c.getOption(); return [o.series[0].data, o.series[1].data, o.series[0].markLine.data.length, !!document.querySelector('#energy-chart canvas')];",
            json!([]),
        )
        .await;
    let tail = |v: &Value| -> Vec<Option<f64>> {
        let a: Vec<Option<f64>> = v.as_array().unwrap().iter().map(Value::as_f64).collect();
        a[a.len().saturating_sub(6)..].to_vec()
    };
    assert_eq!(
        tail(&drawn[0]),
        tail(&zs["intensity"]),
        "the chart's intensities: {drawn}"
    );
    assert_eq!(tail(&drawn[1]), tail(&zs["trajectory"]), "the chart's trajectory");
    assert_eq!(drawn[2], 1, "the target's mark line");
    assert_eq!(drawn[3], true, "drawn on a canvas");
    let first = &series["series"]["enterprises"][0];
    let first_row = b
        .js(
            "const r = document.querySelector('tr[data-enterprise]'); return [r.dataset.enterprise, r.querySelector('.gap').textContent];",
            json!([]),
        )
        .await;
    assert_eq!(first_row[0], first["enterprise"], "furthest off the trajectory first");
    let gap = first["gap"].as_f64().unwrap() * 100.0;
    assert_eq!(first_row[1], format!("{}{gap:.1}%", if gap > 0.0 { "+" } else { "" }));
    // The screenshot shows the live month.
    b.goto(&format!("{base}/dashboard/?period={period}&zone={z0}#energy"))
        .await;
    rendered(&b, "energy", "zh").await;
    no_english(&b, "energy").await;
    b.resize(1600, 1500).await;
    b.screenshot(&shots.join("energy-zh.png")).await;
    b.resize(1600, 1000).await;

    eprintln!("dashboard test: Scenarios at {:.1} s", started.elapsed().as_secs_f64());
    // Scenarios: coverage and the enterprises without any, as the API has them.
    b.click("a[data-tab=scenarios]").await;
    rendered(&b, "scenarios", "zh").await;
    no_english(&b, "scenarios").await;
    let sc = api.get(&format!("/api/v1/dashboard/zones/{z0}/scenarios")).await;
    for level in ["any", "intermediate", "advanced"] {
        assert_share(
            &text(&b, &format!("[data-coverage={level}] .value")).await,
            &sc["scenarios"]["coverage"][level],
            level,
        );
    }
    let without = b
        .js(
            "return document.querySelectorAll('#without tr[data-enterprise]').length;",
            json!([]),
        )
        .await;
    assert_eq!(without, json!(sc["scenarios"]["without"].as_array().unwrap().len()));
    b.screenshot(&shots.join("scenarios-zh.png")).await;

    eprintln!("dashboard test: Alerts at {:.1} s", started.elapsed().as_secs_f64());
    // Alerts: acknowledge from the page with the write token; the server records it.
    b.click("a[data-tab=alerts]").await;
    rendered(&b, "alerts", "zh").await;
    no_english(&b, "alerts").await;
    b.type_into("#write-token", &h.write_token).await;
    b.type_into("#ack-by", "值班员").await;
    b.click(&format!("button.ack[data-key=\"{key}\"]")).await;
    let acked = wait_api(&api, "/api/v1/alerts", "acknowledged", |a| {
        a["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["key"] == key.as_str())
            .and_then(|a| a["phase"]["acked_by"].as_str().map(str::to_owned))
    })
    .await;
    assert_eq!(acked, "值班员");
    b.wait_for(
        "the page shows the acknowledgement",
        "const r = document.querySelector(`tr[data-key=\"${arguments[0]}\"] .acked-by`); return r && r.textContent;",
        json!([key]),
        WAIT,
    )
    .await;
    // The confirmation toast goes after a moment; the screenshot shows the table without it.
    b.wait_for(
        "the toast to go",
        "return document.getElementById('toast').hidden;",
        json!([]),
        WAIT,
    )
    .await;
    b.screenshot(&shots.join("alerts-zh.png")).await;

    // The briefing: the goal table as the API has it, and its print view.
    b.click("a[data-tab=briefing]").await;
    rendered(&b, "briefing", "zh").await;
    no_english(&b, "briefing").await;
    let table = api.get(&format!("/api/v1/zones/{z0}/goals?period={period}")).await;
    let rows = b
        .js(
            "return [...document.querySelectorAll('.briefing tr.goal')].map(r => r.dataset.goal);",
            json!([]),
        )
        .await;
    let ids: Vec<&Value> = table["goals"].as_array().unwrap().iter().map(|g| &g["id"]).collect();
    assert_eq!(
        rows.as_array().unwrap().iter().collect::<Vec<_>>(),
        ids,
        "briefing rows"
    );
    let hn27_03 = zonesync_e2e::goal(&table, "HN27-03");
    let shown = b
        .js(
            "return document.querySelector('.briefing tr.goal[data-goal=\"HN27-03\"] .completeness').textContent;",
            json!([]),
        )
        .await;
    assert_share(&shown, &hn27_03["completeness"], "briefing HN27-03 completeness");
    // The enterprises to chase, with what each is missing, as the API lists
    // them (the declarations part, which the demo's live readings do not move).
    let chase = api.get(&format!("/api/v1/zones/{z0}/chase?period={period}")).await;
    let undeclared = |whys: &Value| {
        whys.as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str().filter(|w| w.starts_with("未申报")).map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let want: Vec<(String, Vec<String>)> = chase["chase"]["enterprises"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["enterprise"].as_str().unwrap().to_owned(), undeclared(&e["why_zh"])))
        .filter(|(_, u)| !u.is_empty())
        .collect();
    let listed = b
        .js(
            "return [...document.querySelectorAll('#chase tr.chase')].map(r => [r.dataset.enterprise, [...r.querySelectorAll('.why li')].map(l => l.textContent)]);",
            json!([]),
        )
        .await;
    let shown: Vec<(String, Vec<String>)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_owned(), undeclared(&r[1])))
        .filter(|(_, u)| !u.is_empty())
        .collect();
    assert_eq!(shown, want, "enterprises to chase for their declarations");
    assert!(
        want.iter().any(|(_, u)| u.iter().any(|w| w.contains("HN27-03"))),
        "the demo's enterprise that never declares is to chase for HN27-03: {chase}"
    );
    // The briefing as the workbook the office opens.
    let xlsx = reqwest::get(format!("{base}/api/v1/zones/{z0}/report?format=xlsx&period={period}"))
        .await
        .unwrap();
    assert_eq!(
        xlsx.headers()["content-type"],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    assert!(
        xlsx.bytes().await.unwrap().starts_with(b"PK"),
        "an .xlsx (zip) workbook"
    );
    b.media("print").await;
    b.resize(1400, 1500).await;
    b.screenshot(&shots.join("briefing-print-zh.png")).await;
    b.media("").await;
    b.resize(1600, 1000).await;
    b.click("a[data-tab=alerts]").await;
    rendered(&b, "alerts", "zh").await;

    eprintln!(
        "dashboard test: English at the switch at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // English at the switch: labels and goal names change.
    b.click("#lang").await;
    rendered(&b, "alerts", "en").await;
    assert_eq!(text(&b, "a[data-tab=alerts]").await, "Alerts");
    b.click("a[data-tab=overview]").await;
    rendered(&b, "overview", "en").await;
    let table = api.get(&format!("/api/v1/zones/{z0}/goals?period={period}")).await;
    let g = &table["goals"][0];
    let name = text(
        &b,
        &format!(
            ".goal[data-zone=\"{z0}\"][data-goal=\"{}\"] .goal-name",
            g["id"].as_str().unwrap()
        ),
    )
    .await;
    assert!(
        name.as_str()
            .unwrap_or_default()
            .starts_with(g["name_en"].as_str().unwrap()),
        "page shows {name}, API name_en {}",
        g["name_en"]
    );
    b.screenshot(&shots.join("overview-en.png")).await;

    eprintln!(
        "dashboard test: The briefing's CSV at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The briefing's CSV export is the report endpoint's.
    let csv = reqwest::get(format!("{base}/api/v1/zones/{z0}/report?format=csv&period={period}"))
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);

    b.quit().await;
    trigger.fire();
    for a in h.agents {
        a.await.unwrap();
    }
    h.running.wait().await;
    eprintln!("dashboard test took {:.1} s", started.elapsed().as_secs_f64());
}

/// A wall PC that reboots: a read token given once in the start URL is kept
/// by the screen, so after a reload without it the page still shows data
/// instead of stopping at the token prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_given_once_in_the_url_survives_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (trigger, signal) = shutdown::channel();
    let token = "wall-screen-read-token";
    let opts = demo::DemoOptions {
        data_dir: dir.path().to_owned(),
        http_port: 0,
        mqtt_port: 0,
        tick_ms: 2,
        read_token: Some(token.into()),
    };
    let h = demo::start(&opts, signal).await.expect("demo starts");
    let base = format!("http://{}", h.http_addr);
    let refused = reqwest::get(format!("{base}/api/v1/cities")).await.unwrap();
    assert_eq!(refused.status(), 401, "reads need the token");

    let b = Browser::start(1920, 1080).await;
    let city_shown =
        "return document.querySelector('section.city') !== null && document.querySelector('#token-bar').hidden;";
    b.goto(&format!("{base}/dashboard/#city")).await;
    b.wait_for(
        "the token prompt without a token",
        "return !document.querySelector('#token-bar').hidden;",
        json!([]),
        WAIT,
    )
    .await;
    b.goto(&format!("{base}/dashboard/?kiosk=1&token={token}#city")).await;
    b.wait_for("the city view with the token", city_shown, json!([]), WAIT)
        .await;
    let address = b.js("return location.href;", json!([])).await;
    assert!(
        !address.as_str().unwrap_or_default().contains(token),
        "the token is dropped from the address bar: {address}"
    );
    // The reboot: the same screen opens its start address without the token.
    b.goto(&format!("{base}/dashboard/?kiosk=1#city")).await;
    b.wait_for("the city view after the reload", city_shown, json!([]), WAIT)
        .await;

    b.quit().await;
    trigger.fire();
    for a in h.agents {
        a.await.unwrap();
    }
    h.running.wait().await;
}
