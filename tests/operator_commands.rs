//! The operator commands of issue 14 (items 7 and 9), as an operator uses
//! them: `zonesync-aggregator catalog` prints the catalog in force, which is
//! saved, adjusted (a coefficient), named in aggregator.toml and then printed
//! as the one in force; `zonesync-aggregator registry-export` and
//! `zonesync-agent profile-export` write sheets that load back as what they
//! came from. Needs the binaries built (`cargo build --workspace --bins`).

use zonesync_agent::sources::profile::{read_file, ProfileFile};
use zonesync_aggregator::registry::Registry;
use zonesync_e2e::run_to_end;
use zonesync_proto::{Catalog, Limits, Validator};

fn stdout(args: &[&str]) -> String {
    run("zonesync-aggregator", args)
}

fn run(binary: &str, args: &[&str]) -> String {
    let out = run_to_end(binary, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn the_printed_catalog_is_the_one_in_force_and_can_be_adjusted_and_used() {
    let dir = tempfile::tempdir().unwrap();
    let printed = stdout(&["catalog"]);
    assert!(printed.starts_with("# zonesync indicator catalog in force: the catalog built into this binary."));
    let builtin = Catalog::builtin().unwrap();
    let as_printed = Catalog::from_toml(&printed).expect("the output is a catalog file");
    let json = |c: &Catalog| serde_json::to_value(c.iter().collect::<Vec<_>>()).unwrap();
    assert_eq!(json(&as_printed), json(&builtin));

    // The operator adopts the calorific-value (当量) factor of a local study for raw coal.
    let adjusted = printed.replace("tce_per_unit = 0.7143\n", "tce_per_unit = 0.7\n");
    assert_ne!(
        adjusted, printed,
        "raw coal's coefficient is printed as in the built-in catalog"
    );
    let cat_path = dir.path().join("catalog.toml");
    std::fs::write(&cat_path, &adjusted).unwrap();
    let cfg = dir.path().join("aggregator.toml");
    std::fs::write(
        &cfg,
        format!(
            "registry = \"{}\"\ncatalog = \"{}\"\n",
            dir.path().join("registry.toml").display(),
            cat_path.display()
        ),
    )
    .unwrap();
    let in_force = stdout(&["catalog", "-c", cfg.to_str().unwrap()]);
    assert!(in_force.starts_with(&format!(
        "# zonesync indicator catalog in force: {}.",
        cat_path.display()
    )));
    let c = Catalog::from_toml(&in_force).unwrap();
    assert_eq!(c.tce("raw_coal", 1.0), Some(0.7));
    assert_eq!(c.tce("electricity", 10_000.0), builtin.tce("electricity", 10_000.0));
}

#[test]
fn a_registry_export_loads_back_as_the_same_enterprises() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/registry.toml");
    let out = dir.path().join("enterprises.csv");
    stdout(&[
        "registry-export",
        "-r",
        example.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "a BOM, for Excel");
    let reg = dir.path().join("registry.toml");
    let zone = "[[zone]]\nid = \"jiyuan-hitech\"\nname_zh = \"济源高新技术产业开发区\"\nenterprises_file = \"enterprises.csv\"\n";
    std::fs::write(&reg, zone).unwrap();
    let (a, b) = (Registry::load(&example).unwrap(), Registry::load(&reg).unwrap());
    let list = |r: &Registry| serde_json::to_value(&r.zones().next().unwrap().enterprise).unwrap();
    assert_eq!(list(&a), list(&b));
}

#[test]
fn a_profile_export_reads_back_as_the_same_declarations() {
    let dir = tempfile::tempdir().unwrap();
    let xlsx = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sheets/profile.xlsx");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "agent_id = \"gw-x\"\nzone = \"test-zone\"\ndata_dir = \"{}\"\n[profile]\npath = \"{}\"\n",
            dir.path().join("data").display(),
            xlsx.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("profile.csv");
    run(
        "zonesync-agent",
        &[
            "profile-export",
            "-c",
            cfg.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let v = Validator::new(Catalog::builtin().unwrap(), Limits::default());
    let read = |p: &std::path::Path| read_file(p, Some(&v)).unwrap();
    let ((from_xlsx, _), (from_export, problems)) = (read(&xlsx), read(&out));
    assert!(problems.is_empty(), "{problems:?}");
    let json = |f: &ProfileFile| serde_json::to_value(f).unwrap();
    assert_eq!(json(&from_export), json(&from_xlsx));
    assert!(!from_export.enterprise.is_empty());
}
