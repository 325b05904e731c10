//! The enterprises' declarations from a spreadsheet (`.xlsx`, or `.csv` in
//! UTF-8 or GBK), as zones keep them: one row per enterprise, one column per
//! declared attribute. The profile source reads such a file as it reads the
//! TOML one (`[profile] path = "profile.xlsx"`); period figures stay in the
//! TOML profile or the CSV drop.
//!
//! Columns: `id` (统一社会信用代码), `name` (企业名称), `established`
//! (成立日期), and any declaration of the catalog, named by its code, its
//! Chinese name, or both (`智能制造能力成熟度等级 dt_maturity`, as the export
//! writes it). Every cell goes through the same catalog check as a TOML
//! entry, and a cell that fails is left out with its row and column named,
//! the rest of the row and the file still taken.
//!
//! An empty cell declares nothing, which is not the same as declaring none:
//! `无` (or `none`) in the scenarios column declares an empty list, and `否`
//! declares a flag false. Scenarios are written `code:level` separated by
//! `;` (level basic/intermediate/advanced or 初级/中级/高级) — no inline tables.

use super::profile::{EnterpriseProfile, ProfileFile};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use zonesync_proto::{Catalog, Declaration, EnterpriseId, IndicatorKind, Validator, ValueType};
use zonesync_runtime::sheet::{header_is, yes_no, Cell, Sheet};

/// A profile read from a sheet, with the problems of the cells left out.
#[derive(Debug, Default)]
pub struct ReadProfile {
    /// What the sheet declares.
    pub file: ProfileFile,
    /// `row N, column: reason` for every cell (or row, or column) not taken.
    pub problems: Vec<String>,
}

/// A cell that declares an empty list (no scenarios), as opposed to an empty cell.
fn is_none_word(t: &str) -> bool {
    matches!(t.trim().to_lowercase().as_str(), "无" | "none" | "没有" | "-")
}

fn level(t: &str) -> Option<&'static str> {
    match t.trim().to_lowercase().as_str() {
        "basic" | "初级" => Some("basic"),
        "intermediate" | "中级" => Some("intermediate"),
        "advanced" | "高级" => Some("advanced"),
        _ => None,
    }
}

/// A cell as the JSON value a declaration of `value_type` carries; Ok(None) when empty.
fn value(cell: &Cell, value_type: ValueType) -> Result<Option<Value>, String> {
    let Some(text) = cell.text() else { return Ok(None) };
    Ok(Some(match (value_type, cell) {
        (ValueType::Bool, Cell::Bool(b)) => json!(b),
        (ValueType::Bool, _) => json!(yes_no(&text).ok_or_else(|| format!("{text:?} is not yes or no (是/否)"))?),
        (ValueType::Integer, _) => json!(text
            .parse::<i64>()
            .map_err(|_| format!("{text:?} is not a whole number"))?),
        (ValueType::Scenarios, _) if is_none_word(&text) => json!([]),
        (ValueType::Scenarios, _) => {
            let mut list = Vec::new();
            for item in text.split([';', '；', '\n']).map(str::trim).filter(|s| !s.is_empty()) {
                let (code, lvl) = item
                    .rsplit_once([':', '：'])
                    .ok_or_else(|| format!("scenario {item:?} is not code:level"))?;
                let lvl = level(lvl).ok_or_else(|| {
                    format!("scenario {item:?}: level is basic, intermediate or advanced (初级/中级/高级)")
                })?;
                list.push(json!({"code": code.trim(), "level": lvl}));
            }
            Value::Array(list)
        }
        _ => json!(text),
    }))
}

/// Declarations (and names and establishment dates) from a sheet, each cell
/// checked by `validator` as a TOML entry is.
pub fn read(sheet: &Sheet, validator: &Validator) -> ReadProfile {
    let mut out = ReadProfile::default();
    let Some(id_col) = sheet.column(|h| header_is(h, "id", "统一社会信用代码")) else {
        out.problems.push(format!(
            "header row has no id (统一社会信用代码) column (found: {})",
            sheet.headers.join(", ")
        ));
        return out;
    };
    let name_col = sheet.column(|h| header_is(h, "name", "企业名称"));
    let est_col = sheet.column(|h| header_is(h, "established", "成立日期"));
    let mut decl_cols = Vec::new();
    for (i, h) in sheet.headers.iter().enumerate() {
        if [Some(id_col), name_col, est_col].contains(&Some(i)) || h.is_empty() {
            continue;
        }
        match declaration_of(h, &validator.catalog) {
            Some((code, vt)) => decl_cols.push((i, code, vt)),
            None => out
                .problems
                .push(format!("column {h:?} is not a declaration in the catalog: left out")),
        }
    }
    for (row, cells) in &sheet.rows {
        let get = |i: usize| cells.get(i).unwrap_or(&Cell::Empty);
        let id = match get(id_col).text().map(|t| EnterpriseId::parse(&t)) {
            Some(Ok(id)) => id,
            Some(Err(e)) => {
                out.problems.push(format!("row {row}, id: {e}: row left out"));
                continue;
            }
            None => {
                out.problems.push(format!("row {row}, id: empty: row left out"));
                continue;
            }
        };
        let established = match est_col.and_then(|c| get(c).text()) {
            None => None,
            Some(t) => match chrono::NaiveDate::parse_from_str(t.split(' ').next().unwrap_or(""), "%Y-%m-%d")
                .or_else(|_| chrono::NaiveDate::parse_from_str(&t, "%Y/%m/%d"))
            {
                Ok(d) => Some(d),
                Err(_) => {
                    out.problems
                        .push(format!("row {row}, established: {t:?} is not a date (2015-06-01)"));
                    None
                }
            },
        };
        let mut declare = BTreeMap::new();
        for (i, code, vt) in &decl_cols {
            let checked = value(get(*i), *vt).and_then(|v| match v {
                None => Ok(None),
                Some(v) => {
                    let d = serde_json::to_value(Declaration {
                        indicator: code.clone(),
                        value: v,
                    })
                    .map_err(|e| e.to_string())?;
                    // Kept as the check leaves it (an industry code in its lettered form).
                    let (_, checked) = validator.declaration(&d).map_err(|e| e.to_string())?;
                    serde_json::to_value(checked).map(Some).map_err(|e| e.to_string())
                }
            });
            match checked {
                Ok(Some(v)) => {
                    declare.insert(code.clone(), v);
                }
                Ok(None) => {}
                Err(e) => out.problems.push(format!("row {row}, {code}: {e}")),
            }
        }
        out.file.enterprise.push(EnterpriseProfile {
            id,
            name: name_col.and_then(|c| get(c).text()),
            established,
            declare,
            figures: Vec::new(),
        });
    }
    out
}

/// The declaration a header names: by code, Chinese name, or `中文名 code`.
fn declaration_of(header: &str, catalog: &Catalog) -> Option<(String, ValueType)> {
    catalog
        .iter()
        .filter(|i| i.kind == IndicatorKind::Declaration)
        .find(|i| header_is(header, &i.code, &i.name_zh))
        .map(|i| (i.code.clone(), i.value_type))
}

/// The declarations of a profile as the sheet [`read`] takes: a bilingual
/// header, one column per declaration any enterprise makes, `是`/`否` for
/// flags, `无` for a declared empty list, an empty cell for nothing declared.
pub fn export(file: &ProfileFile, catalog: &Catalog) -> (Vec<String>, Vec<Vec<String>>) {
    let used: Vec<_> = catalog
        .iter()
        .filter(|i| i.kind == IndicatorKind::Declaration)
        .filter(|i| file.enterprise.iter().any(|e| e.declare.contains_key(&i.code)))
        .collect();
    let mut headers = vec![
        "统一社会信用代码 id".to_owned(),
        "企业名称 name".to_owned(),
        "成立日期 established".to_owned(),
    ];
    headers.extend(used.iter().map(|i| format!("{} {}", i.name_zh, i.code)));
    let cell = |v: &Value| match v {
        Value::Bool(b) => if *b { "是" } else { "否" }.to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "无".to_owned(),
        Value::Array(a) => a
            .iter()
            .map(|s| {
                format!(
                    "{}:{}",
                    s["code"].as_str().unwrap_or_default(),
                    s["level"].as_str().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(";"),
        other => other.to_string(),
    };
    let rows = file
        .enterprise
        .iter()
        .map(|e| {
            let mut r = vec![
                e.id.to_string(),
                e.name.clone().unwrap_or_default(),
                e.established.map(|d| d.to_string()).unwrap_or_default(),
            ];
            r.extend(
                used.iter()
                    .map(|i| e.declare.get(&i.code).map(cell).unwrap_or_default()),
            );
            r
        })
        .collect();
    (headers, rows)
}

/// `profile-export`: the profile file at `path` (TOML or a sheet) as CSV
/// bytes for Excel, with the problems of anything a sheet left out.
pub fn export_file(path: &std::path::Path, validator: &Validator) -> Result<(Vec<u8>, Vec<String>), String> {
    let (file, problems) = super::profile::read_file(path, Some(validator))?;
    let (headers, rows) = export(&file, &validator.catalog);
    let bytes = zonesync_runtime::sheet::write_csv(&headers, &rows).map_err(|e| e.to_string())?;
    Ok((bytes, problems))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zonesync_proto::Limits;
    use zonesync_runtime::sheet::{from_csv, write_csv};

    fn validator() -> Validator {
        Validator::new(Catalog::builtin().unwrap(), Limits::default())
    }

    const E1: &str = "91350100M000100Y43";

    #[test]
    fn an_empty_cell_declares_nothing_and_a_none_declares_none() {
        let text = format!(
            "统一社会信用代码,企业名称,成立日期,智能化改造 smart_retrofit,scenarios,dt_maturity,industry_code\n\
             {E1},甲,2015-06-01,否,无,3,3110\n\
             {E1},乙,,,,,\n\
             {E1},丙,,是,能源智能管控:高级;质量精准追溯:basic,,\n"
        );
        let got = read(&from_csv(text.as_bytes()).unwrap(), &validator());
        assert_eq!(got.problems, Vec::<String>::new());
        let d: Vec<_> = got.file.enterprise.iter().map(|e| &e.declare).collect();
        assert_eq!(d[0]["smart_retrofit"], json!(false));
        assert_eq!(d[0]["scenarios"], json!([]));
        assert_eq!(d[0]["dt_maturity"], json!(3));
        assert_eq!(d[0]["industry_code"], json!("C3110"));
        assert!(d[1].is_empty(), "{:?}", d[1]);
        assert_eq!(
            d[2]["scenarios"],
            json!([{"code": "能源智能管控", "level": "advanced"}, {"code": "质量精准追溯", "level": "basic"}])
        );
        assert_eq!(
            got.file.enterprise[0].established.map(|d| d.to_string()).as_deref(),
            Some("2015-06-01")
        );
    }

    #[test]
    fn each_bad_cell_is_named_and_the_rest_kept() {
        let text = format!(
            "id,dt_maturity,smart_retrofit,scenarios,industry_code,colour\n\
             {E1},9,也许,能源智能管控,C0610,red\n\
             bad-id,3,是,,,\n\
             {E1},2,是,,,\n"
        );
        let got = read(&from_csv(text.as_bytes()).unwrap(), &validator());
        let p = &got.problems;
        assert_eq!(p.len(), 6, "{p:#?}");
        assert!(p[0].starts_with("column \"colour\" is not a declaration"), "{p:#?}");
        assert!(p[1].starts_with("row 2, dt_maturity:"), "{p:#?}");
        assert!(p[2].starts_with("row 2, smart_retrofit: \"也许\""), "{p:#?}");
        assert!(
            p[3].starts_with("row 2, scenarios: scenario \"能源智能管控\" is not code:level"),
            "{p:#?}"
        );
        assert!(p[4].contains("major group 06 is in division B"), "{p:#?}");
        assert!(p[5].starts_with("row 3, id:"), "{p:#?}");
        // Row 2 stays (with nothing valid declared), row 4 is whole.
        assert_eq!(got.file.enterprise.len(), 2);
        assert_eq!(got.file.enterprise[1].declare.len(), 2);
    }

    #[test]
    fn an_export_reads_back_as_the_same_declarations() {
        let text = format!(
            "统一社会信用代码,企业名称,成立日期,smart_retrofit,scenarios,dt_maturity,industry_code\n\
             {E1},甲,2015-06-01,否,无,3,C3110\n\
             {E1},丙,,是,能源智能管控:高级;质量精准追溯:basic,,\n"
        );
        let v = validator();
        let first = read(&from_csv(text.as_bytes()).unwrap(), &v);
        let (headers, rows) = export(&first.file, &v.catalog);
        let back = read(&from_csv(&write_csv(&headers, &rows).unwrap()).unwrap(), &v);
        assert!(back.problems.is_empty(), "{:?}", back.problems);
        let json = |f: &ProfileFile| serde_json::to_value(f).unwrap();
        assert_eq!(json(&back.file), json(&first.file));
    }
}
