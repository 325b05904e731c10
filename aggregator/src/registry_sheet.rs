//! A zone's enterprise list from the spreadsheet the zone office keeps (from
//! the statistics bureau's list), and back.
//!
//! `registry.toml` keeps what is said once per zone (name, city, leading
//! industries, goal sets); a zone's `enterprises_file = "enterprises.xlsx"`
//! (or `.csv`, UTF-8 or GBK) holds one row per enterprise. Every row is
//! checked, and every problem comes back with its row and column, so a
//! sheet with ten mistakes is fixed in one pass, not ten.
//!
//! An empty cell is "not stated", never "no": an empty `leading_industry`
//! leaves the zone's code prefixes to decide (a proxy), where `否` is the zone
//! office's declared "no"; an empty `above_scale` is refused, since it decides
//! the denominator of every coverage rate and must be said.

use crate::registry::{Enterprise, Registry};
use zonesync_proto::industry::normalise_code;
use zonesync_proto::{AgentId, EnterpriseId};
use zonesync_runtime::sheet::{header_is, yes_no, Cell, Sheet};

/// The columns, as (key, Chinese label); the export writes both.
const COLUMNS: [(&str, &str); 7] = [
    ("id", "统一社会信用代码"),
    ("name", "企业名称"),
    ("above_scale", "规上"),
    ("industrial", "工业企业"),
    ("industry", "行业代码"),
    ("leading_industry", "主导产业"),
    ("agents", "网关"),
];

/// A cell's yes/no: None when empty, a reason when it is neither.
fn flag(cell: &Cell) -> Result<Option<bool>, String> {
    match cell {
        Cell::Bool(b) => Ok(Some(*b)),
        c => match c.text() {
            None => Ok(None),
            Some(t) => yes_no(&t)
                .map(Some)
                .ok_or_else(|| format!("{t:?} is not yes or no (是/否, yes/no, true/false, 1/0)")),
        },
    }
}

/// The enterprises of one sheet, or every row's problem (`row N, column: reason`).
pub fn enterprises(sheet: &Sheet) -> Result<Vec<Enterprise>, Vec<String>> {
    let col: Vec<Option<usize>> = COLUMNS
        .iter()
        .map(|(key, zh)| sheet.column(|h| header_is(h, key, zh)))
        .collect();
    if col[0].is_none() {
        return Err(vec![format!(
            "header row has no id (统一社会信用代码) column (found: {})",
            sheet.headers.join(", ")
        )]);
    }
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (row, cells) in &sheet.rows {
        let get = |i: usize| col[i].and_then(|c| cells.get(c)).unwrap_or(&Cell::Empty);
        let mut bad = |i: usize, why: String| problems.push(format!("row {row}, {}: {why}", COLUMNS[i].0));
        let id = match get(0).text().map(|t| EnterpriseId::parse(&t)) {
            Some(Ok(id)) => id,
            Some(Err(e)) => {
                bad(0, e.to_string());
                continue;
            }
            None => {
                bad(0, "empty".into());
                continue;
            }
        };
        let above_scale = match flag(get(2)) {
            Ok(Some(b)) => b,
            Ok(None) => {
                bad(
                    2,
                    "empty: say 是 or 否 (it decides who counts in every coverage rate)".into(),
                );
                continue;
            }
            Err(e) => {
                bad(2, e);
                continue;
            }
        };
        let industrial = match flag(get(3)) {
            Ok(b) => b.unwrap_or(true),
            Err(e) => {
                bad(3, e);
                continue;
            }
        };
        let industry = match get(4).text().map(|t| normalise_code(&t)).transpose() {
            Ok(c) => c,
            Err(e) => {
                bad(4, e.to_string());
                continue;
            }
        };
        let leading_industry = match flag(get(5)) {
            Ok(b) => b,
            Err(e) => {
                bad(5, e);
                continue;
            }
        };
        let agents: Result<Vec<AgentId>, String> = get(6)
            .text()
            .unwrap_or_default()
            .split([';', '；', ',', '，', '、', ' '])
            .filter(|a| !a.is_empty())
            .map(|a| AgentId::parse(a).map_err(|e| e.to_string()))
            .collect();
        let agents = match agents {
            Ok(a) => a,
            Err(e) => {
                bad(6, e);
                continue;
            }
        };
        out.push(Enterprise {
            id,
            name: get(1).text().unwrap_or_default(),
            above_scale,
            industrial,
            industry,
            leading_industry,
            agents,
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// A zone's enterprises as the sheet the import reads: a bilingual header,
/// `是`/`否` for flags, and an empty cell where nothing is stated.
pub fn export(enterprises: &[Enterprise]) -> (Vec<String>, Vec<Vec<String>>) {
    let headers = COLUMNS.iter().map(|(key, zh)| format!("{zh} {key}")).collect();
    let yn = |b: bool| if b { "是" } else { "否" }.to_owned();
    let rows = enterprises
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.name.clone(),
                yn(e.above_scale),
                yn(e.industrial),
                e.industry.clone().unwrap_or_default(),
                e.leading_industry.map(yn).unwrap_or_default(),
                e.agents.iter().map(ToString::to_string).collect::<Vec<_>>().join(";"),
            ]
        })
        .collect();
    (headers, rows)
}

/// Why a zone's enterprises could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("zone {0} is not in the registry")]
    UnknownZone(String),
    #[error("the registry has {0} zones: name one")]
    WhichZone(usize),
    #[error(transparent)]
    Sheet(#[from] zonesync_runtime::sheet::SheetError),
}

/// `registry-export`: a zone's enterprises (inline or from its sheet) as CSV
/// bytes for Excel; the zone may be left out when the registry has only one.
pub fn export_zone(reg: &Registry, zone: Option<&str>) -> Result<Vec<u8>, ExportError> {
    let zones: Vec<_> = reg.zones().collect();
    let z = match (zone, zones.as_slice()) {
        (Some(id), _) => zones
            .iter()
            .find(|z| z.id.as_str() == id)
            .ok_or_else(|| ExportError::UnknownZone(id.to_owned()))?,
        (None, [only]) => only,
        (None, _) => return Err(ExportError::WhichZone(zones.len())),
    };
    let (headers, rows) = export(&z.enterprise);
    Ok(zonesync_runtime::sheet::write_csv(&headers, &rows)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{enterprise, id};
    use zonesync_runtime::sheet::{from_csv, write_csv};

    #[test]
    fn every_bad_row_is_named_with_its_column_and_reason() {
        let text = format!(
            "统一社会信用代码,企业名称,规上,工业企业,行业代码,主导产业,网关\n\
             {},甲,是,,3110,,\n\
             91410000MA1000001X,乙,是,,,,\n\
             {},丙,,,,,\n\
             {},丁,是,也许,C0610,否,gw 1\n",
            id(1),
            id(3),
            id(4)
        );
        let err = enterprises(&from_csv(text.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(err.len(), 3, "{err:#?}");
        assert!(err[0].starts_with("row 3, id: "), "{err:#?}");
        assert!(err[1].starts_with("row 4, above_scale: empty"), "{err:#?}");
        assert!(
            err[2].starts_with("row 5, industrial: \"也许\" is not yes or no"),
            "{err:#?}"
        );
    }

    #[test]
    fn an_empty_flag_is_not_stated_and_a_no_is_declared() {
        let text = format!(
            "统一社会信用代码 id,规上 above_scale,行业代码 industry,主导产业 leading_industry\n\
             {},是,3110,\n{},否,C3210,否\n",
            id(1),
            id(2)
        );
        let got = enterprises(&from_csv(text.as_bytes()).unwrap()).unwrap();
        assert_eq!(got[0].leading_industry, None);
        assert_eq!(got[1].leading_industry, Some(false));
        assert_eq!(got[0].industry.as_deref(), Some("C3110"));
        assert!(got[0].industrial && got[0].above_scale && !got[1].above_scale);
    }

    #[test]
    fn an_export_reads_back_as_the_same_enterprises() {
        let mut a = enterprise(1, true, "C3110");
        a.leading_industry = Some(true);
        a.agents = vec![AgentId::parse("gw-1").unwrap(), AgentId::parse("gw-2").unwrap()];
        let mut b = enterprise(2, false, "");
        b.industrial = false;
        b.leading_industry = Some(false);
        let c = enterprise(3, true, "C2614");
        let list = vec![a, b, c];
        let (headers, rows) = export(&list);
        let back = enterprises(&from_csv(&write_csv(&headers, &rows).unwrap()).unwrap()).unwrap();
        let json = |l: &[Enterprise]| serde_json::to_value(l).unwrap();
        assert_eq!(json(&back), json(&list));
    }
}
