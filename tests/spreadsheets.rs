//! The registry and the profile from the spreadsheets zones keep (issue 14,
//! items 7–9), end to end: the aggregator's registry takes its enterprise
//! list from an .xlsx (tests/sheets/enterprises.xlsx, made by openpyxl with
//! make_xlsx.py), an agent's profile is a GBK CSV, value added comes from its
//! CSV drop; the goals are checked against figures worked out by hand. A
//! second test reads the other way round: the enterprise list from a GBK CSV
//! and the profile from an .xlsx.
//!
//! | | registry (.xlsx) | profile (GBK CSV) | value added 2026-10 |
//! |---|---|---|---|
//! | E1 | 规上, industry 3110 (a number cell), leading not stated | smart_retrofit 否, dt_maturity 4, scenarios 无, industry 3110 | 100 |
//! | E2 | 规上, C3120, leading 否 | dt_maturity 3, two scenarios | 200 |
//! | E3 | 规上 TRUE (a bool cell), 2614, leading 是 | smart_retrofit 是 | 300 |
//! | E4 | 规上, no industry | industry_code 3210 | 400 |
//! | E5 | 否 (below scale) | – | – |
//!
//! The zone's leading industries are `["31"]` (kept as `C31`).

use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use zonesync_agent::config::AgentConfig;
use zonesync_aggregator::registry::Registry;
use zonesync_e2e::dataset::{E, ZONE};
use zonesync_e2e::inprocess::InProcess;
use zonesync_e2e::{approx, goal};
use zonesync_proto::{Catalog, EnterpriseId, Limits, Validator, ZoneId};

const WAIT: Duration = Duration::from_secs(90);

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sheets").join(name)
}

fn gbk(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
    assert!(!unmappable);
    bytes.into_owned()
}

fn registry_toml(sheet: &str) -> String {
    format!(
        "[[zone]]\nid = \"{ZONE}\"\nname_zh = \"测试开发区\"\ncity = \"济源\"\nprovince = \"河南\"\n\
         leading_industries = [\"31\"]\nenterprises_file = \"{sheet}\"\n"
    )
}

/// The profile as a zone keeps it in Excel and saves it as CSV (GBK).
fn profile_csv() -> Vec<u8> {
    gbk(&format!(
        "统一社会信用代码,企业名称,成立日期,已完成智能化改造,智能制造能力成熟度等级,智能制造场景,国民经济行业代码\r\n\
         {},甲钢铁,2010-01-01,否,4,无,3110\r\n\
         {},乙钢铁,,,3,能源智能管控:高级;设备运行监控:中级,\r\n\
         {},丙化工,,是,,,\r\n\
         {},丁电子,,,,,3210\r\n",
        E[0], E[1], E[2], E[3]
    ))
}

fn agent_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let drop = dir.join("drop");
    std::fs::create_dir_all(&drop).expect("drop folder");
    let va: String = (0..4)
        .map(|i| format!("{},2026-10,{}\n", E[i], 100 * (i + 1)))
        .collect();
    std::fs::write(drop.join("va.csv"), format!("credit_code,period,value_added\n{va}")).expect("csv");
    std::fs::write(dir.join("profile.csv"), profile_csv()).expect("profile");
    let text = format!(
        "agent_id = \"agent-s\"\nzone = \"{ZONE}\"\ndata_dir = \"{data}\"\n\
         [mqtt]\nprotocol = \"3.1.1\"\nport = {port}\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n\
         [outbox]\nmax_batch_items = 50\nmax_batch_age_ms = 50\nmax_in_flight = 8\n\
         [profile]\npath = \"{profile}\"\npoll_secs = 1\n\
         [[csv_drop]]\nname = \"va\"\nfolder = \"{drop}\"\nenterprise_column = \"credit_code\"\n\
         period_column = \"period\"\npoll_secs = 1\nsettle_secs = 0\n\
         [[csv_drop.columns]]\nheader = \"value_added\"\nindicator = \"value_added\"\nunit = \"10k_yuan\"\n",
        data = dir.join("agent-s").display(),
        profile = dir.join("profile.csv").display(),
        drop = drop.display(),
    );
    let path = dir.join("agent-s.toml");
    std::fs::write(&path, text).expect("agent config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goals_from_a_registry_xlsx_and_a_gbk_profile_match_the_hand_worked_figures() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("enterprises.xlsx"), dir.path().join("enterprises.xlsx")).unwrap();
    let reg = dir.path().join("registry-sheet.toml");
    std::fs::write(&reg, registry_toml("enterprises.xlsx")).unwrap();
    let t = InProcess::start(dir.path(), 1, 1 << 20, |c| {
        c.lines()
            .map(|l| match l.starts_with("registry = ") {
                true => format!("registry = \"{}\"", reg.display()),
                false => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
    .await;
    let cfg = agent_config(dir.path(), t.broker.addr.port());
    let agent = tokio::spawn(zonesync_agent::run(AgentConfig::load(&cfg).unwrap(), t.signal.clone()));
    let api = &t.api;
    // E1 4 declarations, E2 2, E3 1, E4 1; four value-added figures.
    api.wait_metric("zonesync_aggregator_declarations_stored_total", 8.0, WAIT)
        .await;
    api.wait_metric("zonesync_aggregator_readings_stored_total", 4.0, WAIT)
        .await;

    // The declarations as the sheet said them: 否 a declared false, 无 a declared
    // empty list, 3110 in its lettered form; E3's empty cells declared nothing.
    let e1 = api.get(&format!("/api/v1/zones/{ZONE}/enterprises/{}", E[0])).await;
    assert_eq!(
        e1["declarations"],
        json!({"smart_retrofit": false, "dt_maturity": 4, "scenarios": [], "industry_code": "C3110"}),
        "{e1}"
    );
    let e2 = api.get(&format!("/api/v1/zones/{ZONE}/enterprises/{}", E[1])).await;
    assert_eq!(
        e2["declarations"]["scenarios"],
        json!([{"code": "能源智能管控", "level": "advanced"}, {"code": "设备运行监控", "level": "intermediate"}])
    );
    let e3 = api.get(&format!("/api/v1/zones/{ZONE}/enterprises/{}", E[2])).await;
    assert_eq!(e3["declarations"], json!({"smart_retrofit": true}));
    assert_eq!(e3["above_scale"], true, "a TRUE cell");
    let e5 = api.get(&format!("/api/v1/zones/{ZONE}/enterprises/{}", E[4])).await;
    assert_eq!(e5["above_scale"], false);

    let g = api
        .get(&format!("/api/v1/zones/{ZONE}/goals?period=2026-10&span=month"))
        .await;
    // PY-07 smart retrofit over the four above-scale enterprises of the sheet:
    // E1 declared 否 (its maturity 4 does not overturn it), E2 by proxy (3 ≥ 3),
    // E3 declared 是, E4 unknown: 2 of 4.
    let py07 = goal(&g, "PY-07");
    approx(&py07["value"], 0.5, "PY-07");
    assert_eq!(
        (py07["numerator_from_proxy"].clone(), py07["unknown"].clone()),
        (json!(1), json!(1))
    );
    // PY-03 leading-industry share of value added. E1 (3110, a number cell)
    // under the zone's "31" by proxy: 100; E2 under it but flagged 否: out;
    // E3 outside it but flagged 是: 300; E4 declared 3210: out.
    // (100 + 300) ÷ 1000. Prefixes alone would give (100 + 200) ÷ 1000.
    let py03 = goal(&g, "PY-03");
    approx(&py03["value"], 0.4, "PY-03");
    assert_eq!(py03["numerator_from_proxy"], 1, "{py03}");

    // Where a declaration and its proxy disagree, the quality report lists it:
    // E1's 否 beside maturity 4, and the zone office's leading-industry flags
    // that the code prefixes contradict (E2 under C31 flagged 否, E3 outside flagged 是).
    let q = api.get(&format!("/api/v1/zones/{ZONE}/quality?period=2026-10")).await;
    let listed: Vec<(Value, Value, Value)> = q["quality"]["contradictions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| (c["enterprise"].clone(), c["condition"].clone(), c["declared"].clone()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        listed,
        [
            (json!(E[0]), json!("smart_retrofit"), json!(false)),
            (json!(E[1]), json!("leading_industry"), json!(false)),
            (json!(E[2]), json!("leading_industry"), json!(true)),
        ],
        "{q}"
    );

    t.stop().await;
    agent.await.unwrap().unwrap();
}

#[test]
fn a_registry_from_a_gbk_csv_and_a_profile_from_an_xlsx_read_alike() {
    let dir = tempfile::tempdir().unwrap();
    let csv = format!(
        "统一社会信用代码,企业名称,规上,工业企业,行业代码,主导产业,网关\r\n\
         {},甲钢铁,是,是,3110,,\r\n{},乙钢铁,是,,C3120,否,\r\n{},丙化工,是,,2614,是,\r\n\
         {},丁电子,是,,,,\r\n{},戊服务,否,,,,\r\n",
        E[0], E[1], E[2], E[3], E[4]
    );
    std::fs::write(dir.path().join("enterprises.csv"), gbk(&csv)).unwrap();
    std::fs::copy(fixture("enterprises.xlsx"), dir.path().join("enterprises.xlsx")).unwrap();
    let load = |sheet: &str| {
        let path = dir.path().join(format!("registry-{sheet}.toml"));
        std::fs::write(&path, registry_toml(sheet)).unwrap();
        Registry::load(&path).unwrap()
    };
    let (from_csv, from_xlsx) = (load("enterprises.csv"), load("enterprises.xlsx"));
    let zone = ZoneId::parse(ZONE).unwrap();
    let json = |r: &Registry| serde_json::to_value(&r.zone(&zone).unwrap().enterprise).unwrap();
    assert_eq!(json(&from_csv), json(&from_xlsx));
    let z = from_csv.zone(&zone).unwrap();
    assert_eq!(z.leading_industries, ["C31"]);
    let e1 = from_csv.enterprise(&zone, &EnterpriseId::parse(E[0]).unwrap()).unwrap();
    assert_eq!((e1.industry.as_deref(), e1.leading_industry), (Some("C3110"), None));

    // A row the zone office got wrong stops the registry with the row named.
    std::fs::write(
        dir.path().join("bad.csv"),
        gbk(&csv.replace("C3120,否", "C0620,否").replace("戊服务,否", "戊服务,")),
    )
    .unwrap();
    let path = dir.path().join("registry-bad.toml");
    std::fs::write(&path, registry_toml("bad.csv")).unwrap();
    let err = Registry::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("row 3, industry: \"C0620\": major group 06 is in division B"),
        "{err}"
    );
    assert!(err.contains("row 6, above_scale: empty"), "{err}");

    // The profile: the .xlsx and the GBK CSV of the first test say the same.
    std::fs::write(dir.path().join("profile.csv"), profile_csv()).unwrap();
    let v = Validator::new(Catalog::builtin().unwrap(), Limits::default());
    let read = |p: &Path| zonesync_agent::sources::profile::read_file(p, Some(&v)).unwrap();
    let (xlsx, xlsx_problems) = read(&fixture("profile.xlsx"));
    let (csv, csv_problems) = read(&dir.path().join("profile.csv"));
    assert!(
        xlsx_problems.is_empty() && csv_problems.is_empty(),
        "{xlsx_problems:?} {csv_problems:?}"
    );
    let json = |f: &zonesync_agent::sources::profile::ProfileFile| serde_json::to_value(f).unwrap();
    assert_eq!(json(&xlsx), json(&csv));
    assert_eq!(
        xlsx.enterprise[0].established.map(|d| d.to_string()).as_deref(),
        Some("2010-01-01")
    );
    let none: Value = json!([]);
    assert_eq!(xlsx.enterprise[0].declare["scenarios"], none);
}
