//! Goal sets from files named in the configuration (`goal_files`), on top of
//! the presets compiled in (or instead of them, with `builtin_goals = false`).
//!
//! A city enters its own plan — or gives Puyang's "year 1/2/3" targets their
//! real years — without rebuilding: a file holds `[[goal]]` and
//! `[[not_computable]]` entries in the same format as `aggregator/goals.toml`.
//! An entry whose id is already in force replaces it; a new id adds a goal.
//! Files are read in the order given. Everything is checked at start, and an
//! error names the file, the line and the field, so the operator can go
//! straight to it (docs/goals.md).

use super::{check, GoalCatalog, GoalDef, GoalError, NotComputable, BUILTIN_GOALS};
use serde::Deserialize;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;
use zonesync_proto::Catalog;

/// One goal file as written, each entry with where it stands.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GoalFile {
    #[serde(default)]
    goal: Vec<Spanned<GoalDef>>,
    #[serde(default)]
    not_computable: Vec<Spanned<NotComputable>>,
}

/// Where an entry that came from a file stands in it.
struct Origin {
    file: usize,
    span: Range<usize>,
}

/// A file read, kept for locating problems found after the merge.
struct Read {
    path: PathBuf,
    text: String,
}

/// The goal catalog in force: the built-in presets (when `builtin`), then each
/// file in order, checked as a whole against the indicator catalog.
pub fn load(builtin: bool, files: &[PathBuf], catalog: &Catalog) -> Result<GoalCatalog, GoalError> {
    let mut merged = if builtin {
        toml::from_str(BUILTIN_GOALS)?
    } else {
        GoalCatalog {
            goal: Vec::new(),
            not_computable: Vec::new(),
        }
    };
    let mut read = Vec::new();
    let mut origins: HashMap<String, Origin> = HashMap::new();
    for (n, path) in files.iter().enumerate() {
        let text = std::fs::read_to_string(path).map_err(|source| GoalError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let parsed: GoalFile = toml::from_str(&text).map_err(|e| parse_error(path, &text, &e))?;
        let mut seen: HashMap<String, ()> = HashMap::new();
        let entries = parsed
            .goal
            .into_iter()
            .map(|g| (g.span(), Entry::Goal(Box::new(g.into_inner()))))
            .chain(
                parsed
                    .not_computable
                    .into_iter()
                    .map(|n| (n.span(), Entry::NotComputable(n.into_inner()))),
            );
        for (span, entry) in entries {
            let id = entry.id().to_owned();
            if seen.insert(id.clone(), ()).is_some() {
                return Err(GoalError::File {
                    path: path.display().to_string(),
                    line: line_of(&text, span.start),
                    what: format!("goal {id}, field `id`: listed twice in this file"),
                });
            }
            // A replaced entry leaves both lists, whichever it was in.
            merged.goal.retain(|g| g.id != id);
            merged.not_computable.retain(|g| g.id != id);
            match entry {
                Entry::Goal(g) => merged.goal.push(*g),
                Entry::NotComputable(c) => merged.not_computable.push(c),
            }
            origins.insert(id, Origin { file: n, span });
        }
        read.push(Read {
            path: path.clone(),
            text,
        });
    }
    check(&merged, catalog).map_err(|e| match e {
        GoalError::Invalid { id, field, problem } => match origins.get(&id) {
            Some(o) => {
                let r = &read[o.file];
                GoalError::File {
                    path: r.path.display().to_string(),
                    line: field_line(&r.text, o.span.clone(), field),
                    what: format!("goal {id}, field `{field}`: {problem}"),
                }
            }
            None => GoalError::Invalid { id, field, problem },
        },
        other => other,
    })?;
    Ok(merged)
}

enum Entry {
    Goal(Box<GoalDef>),
    NotComputable(NotComputable),
}

impl Entry {
    fn id(&self) -> &str {
        match self {
            Entry::Goal(g) => &g.id,
            Entry::NotComputable(n) => &n.id,
        }
    }
}

/// A TOML error with its file, line and, where the line holds one, the key.
fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> GoalError {
    let at = e.span().map_or(0, |s| s.start);
    let line = line_of(text, at);
    let key = text
        .lines()
        .nth(line.saturating_sub(1))
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    GoalError::File {
        path: path.display().to_string(),
        line,
        what: match key {
            Some(k) => format!("field `{k}`: {}", e.message()),
            None => e.message().to_owned(),
        },
    }
}

/// The 1-based line of byte `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at.min(text.len()))
        .map_or(1, |head| head.bytes().filter(|&b| b == b'\n').count() + 1)
}

/// The line where `field` is set inside an entry, else the entry's first line
/// (a field that is missing is reported where the entry starts).
fn field_line(text: &str, span: Range<usize>, field: &str) -> usize {
    let body = text.get(span.clone()).unwrap_or_default();
    let mut offset = span.start;
    for l in body.split_inclusive('\n') {
        let t = l.trim_start();
        if let Some(rest) = t.strip_prefix(field) {
            if rest.trim_start().starts_with('=') || rest.starts_with('.') {
                return line_of(text, offset);
            }
        }
        offset += l.len();
    }
    line_of(text, span.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CITY: &str = r#"
# Luoyang's own plan (example)
[[goal]]
id = "LY27-01"
set = "luoyang-2027"
name_zh = "规上工业企业数字化改造覆盖率"
name_en = "Digitally transformed above-scale enterprises"
source = "洛阳市 2027 行动方案"
clause = "规上工业企业数字化改造全覆盖"
kind = "coverage"
condition = "digitally_transformed"
target = 0.9
comparator = ">="
deadline = "2027"
unit = "share"
"#;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn catalog() -> Catalog {
        Catalog::builtin().unwrap()
    }

    #[test]
    fn a_file_adds_goals_to_the_built_in_presets() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "city.toml", CITY);
        let builtin = super::super::load_goals(BUILTIN_GOALS, &catalog()).unwrap();
        let c = load(true, &[f], &catalog()).unwrap();
        assert_eq!(c.goal.len(), builtin.goal.len() + 1);
        let g = c.goal.iter().find(|g| g.id == "LY27-01").unwrap();
        assert_eq!(g.target, Some(0.9));
        let only = load(false, &[dir.path().join("city.toml")], &catalog()).unwrap();
        assert_eq!(only.goal.len(), 1);
    }

    #[test]
    fn a_file_entry_replaces_a_built_in_one_with_the_same_id() {
        let dir = tempfile::tempdir().unwrap();
        let builtin = super::super::load_goals(BUILTIN_GOALS, &catalog()).unwrap();
        let mut py01 = builtin.goal.iter().find(|g| g.id == "PY-01").unwrap().clone();
        py01.deadline = Some("2026".into());
        py01.target = Some(260_000.0);
        let text = toml::to_string(&GoalCatalog {
            goal: vec![py01],
            not_computable: vec![],
        })
        .unwrap();
        let f = write(dir.path(), "puyang.toml", &text);
        let c = load(true, &[f], &catalog()).unwrap();
        assert_eq!(c.goal.len(), builtin.goal.len());
        let g = c.goal.iter().find(|g| g.id == "PY-01").unwrap();
        assert_eq!((g.target, g.deadline.as_deref()), (Some(260_000.0), Some("2026")));
    }

    #[test]
    fn a_broken_file_is_refused_with_its_path_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        // An indicator the catalog does not have: found after parsing, placed on its line.
        let unknown = CITY
            .replace("kind = \"coverage\"", "kind = \"total\"\nindicator = \"gross_outptu\"")
            .replace("condition = \"digitally_transformed\"\n", "");
        let f = write(dir.path(), "city.toml", &unknown);
        let e = load(true, std::slice::from_ref(&f), &catalog())
            .unwrap_err()
            .to_string();
        let line = unknown.lines().position(|l| l.starts_with("indicator")).unwrap() + 1;
        assert_eq!(
            e,
            format!(
                "{}:{line}: goal LY27-01, field `indicator`: needs an indicator from the catalog",
                f.display()
            )
        );
        // A wrong type: found by the parser, with the key on the line it points at.
        let typed = CITY.replace("target = 0.9", "target = \"90%\"");
        let f = write(dir.path(), "typed.toml", &typed);
        let e = load(true, std::slice::from_ref(&f), &catalog())
            .unwrap_err()
            .to_string();
        let line = typed.lines().position(|l| l.starts_with("target")).unwrap() + 1;
        assert!(
            e.starts_with(&format!("{}:{line}: field `target`: ", f.display())),
            "{e}"
        );
        // A field the format does not have.
        let extra = CITY.replace("unit = \"share\"", "unit = \"share\"\ntarget_year = 2027");
        let f = write(dir.path(), "extra.toml", &extra);
        let e = load(true, std::slice::from_ref(&f), &catalog())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `target_year`"), "{e}");
        assert!(e.starts_with(&format!("{}:", f.display())), "{e}");
        // The same id twice in one file.
        let twice = format!("{CITY}\n{CITY}");
        let f = write(dir.path(), "twice.toml", &twice);
        let e = load(true, &[f], &catalog()).unwrap_err().to_string();
        let second = twice
            .lines()
            .enumerate()
            .filter(|(_, l)| *l == "[[goal]]")
            .nth(1)
            .unwrap()
            .0
            + 1;
        assert!(
            e.contains(&format!(":{second}: goal LY27-01, field `id`: listed twice")),
            "{e}"
        );
        // A file that is not there.
        let e = load(true, &[dir.path().join("none.toml")], &catalog()).unwrap_err();
        assert!(matches!(e, GoalError::Io { .. }), "{e}");
    }

    #[test]
    fn a_trend_may_point_at_a_goal_from_another_source() {
        let dir = tempfile::tempdir().unwrap();
        let trend = r#"
[[goal]]
id = "LY-EI-TREND"
set = "luoyang-2027"
name_zh = "单位工业增加值能耗同比"
name_en = "Energy intensity, year on year"
source = "洛阳市"
clause = "能耗强度下降"
kind = "trend"
of = "EI"
target = -0.04
comparator = "<="
unit = "share"
"#;
        let f = write(dir.path(), "trend.toml", trend);
        assert!(load(true, std::slice::from_ref(&f), &catalog()).is_ok());
        // Without the built-ins, EI is not there: the error points at `of`.
        let e = load(false, std::slice::from_ref(&f), &catalog())
            .unwrap_err()
            .to_string();
        let line = trend.lines().position(|l| l.starts_with("of =")).unwrap() + 1;
        assert!(
            e.starts_with(&format!("{}:{line}: goal LY-EI-TREND, field `of`", f.display())),
            "{e}"
        );
    }

    /// A zone table, from an aggregator opened on `goal_files`, for October 2026
    /// with one enterprise's gross output of 150 (万元).
    fn table_with(files: &[PathBuf], dir: &Path) -> Vec<crate::goals::GoalRow> {
        use crate::testkit::{amount, id};
        std::fs::create_dir_all(dir).unwrap();
        let reg = write(
            dir,
            "registry.toml",
            &format!(
                "[[zone]]\nid = \"z\"\nname_zh = \"z\"\n[[zone.enterprise]]\nid = \"{}\"\nabove_scale = true\nindustrial = true\n",
                id(1)
            ),
        );
        let mut cfg: crate::config::AggregatorConfig = toml::from_str(&format!(
            "data_dir = \"{}\"\nregistry = \"{}\"\n",
            dir.join("data").display(),
            reg.display()
        ))
        .unwrap();
        cfg.goal_files = files.to_vec();
        let app = crate::app::App::open(&cfg).unwrap();
        let z = zonesync_proto::ZoneId::parse("z").unwrap();
        app.state.write().unwrap().apply(
            &z,
            &id(1),
            &[amount("gross_output", "2026-10", 150.0)],
            &[],
            &app.catalog,
        );
        let rows = app
            .tables()
            .table(&z, zonesync_proto::Period::Month(2026, 10))
            .unwrap()
            .rows;
        rows.to_vec()
    }

    #[test]
    fn a_city_goal_file_changes_the_zone_table() {
        let own = |target: f64| {
            format!(
                r#"
[[goal]]
id = "LY27-02"
set = "luoyang-2027"
name_zh = "园区规上工业总产值"
name_en = "Gross industrial output"
source = "洛阳市"
clause = "总产值"
kind = "total"
indicator = "gross_output"
basis = "requested"
target = {target:?}
comparator = ">="
unit = "10k_yuan"
"#
            )
        };
        let row = |rows: &[crate::goals::GoalRow]| {
            rows.iter()
                .find(|r| r.id == "LY27-02")
                .map(|r| (r.value, r.target, r.status))
        };
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            row(&table_with(&[], &dir.path().join("a"))),
            None,
            "no such goal without the file"
        );
        let met = write(dir.path(), "met.toml", &own(100.0));
        let got = row(&table_with(&[met], &dir.path().join("b")));
        assert_eq!(got, Some((Some(150.0), Some(100.0), crate::goals::Status::Met)));
        let missed = write(dir.path(), "missed.toml", &own(200.0));
        let got = row(&table_with(&[missed], &dir.path().join("c")));
        assert_eq!(got, Some((Some(150.0), Some(200.0), crate::goals::Status::NotMet)));
    }
}
