//! `zonesync-aggregator catalog` (issue 14, item 9), as an operator uses it:
//! print the catalog in force, save it, adjust a coefficient, name the file
//! in aggregator.toml, and see the adjusted catalog printed as the one in
//! force; `registry-export` writes a zone's enterprises as a sheet that loads
//! back. Needs the binaries built (`cargo build --workspace --bins`).

use zonesync_aggregator::registry::Registry;
use zonesync_e2e::run_to_end;
use zonesync_proto::Catalog;

fn stdout(args: &[&str]) -> String {
    let out = run_to_end("zonesync-aggregator", args);
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
