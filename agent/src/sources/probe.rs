//! `zonesync-agent check`: what probing a source once found, and the table
//! it is printed as. Each source probes itself (one read of everything it is
//! configured for, nothing queued); this module only holds the shared row
//! type, so every source reports the same way.

use std::fmt::Write;

/// One value a probe read.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRead {
    /// Catalog indicator.
    pub indicator: String,
    /// Point id.
    pub point: String,
    /// Value as it would be sent.
    pub value: f64,
    /// Its unit.
    pub unit: String,
}

/// One probed target (a meter, a register set, a URL, a folder, a file).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRow {
    /// Source kind: `modbus`, `dlt645`, `http`, `csv_drop`, `profile`, `simulator`.
    pub source: String,
    /// What was probed.
    pub target: String,
    /// What it read, or why it failed.
    pub result: Result<Vec<ProbeRead>, String>,
}

impl ProbeRow {
    /// A row that read nothing but is fine (a folder, a file).
    pub fn ok(source: &str, target: String) -> Self {
        Self {
            source: source.into(),
            target,
            result: Ok(Vec::new()),
        }
    }

    /// A failed row.
    pub fn error(source: &str, target: String, why: impl ToString) -> Self {
        Self {
            source: source.into(),
            target,
            result: Err(why.to_string()),
        }
    }
}

/// Renders rows as a plain-text table, one line per value read.
pub fn table(rows: &[ProbeRow]) -> String {
    let mut lines: Vec<[String; 4]> = vec![["SOURCE".into(), "TARGET".into(), "STATUS".into(), "READ".into()]];
    for r in rows {
        match &r.result {
            Err(why) => lines.push([
                r.source.clone(),
                r.target.clone(),
                format!("error: {why}"),
                String::new(),
            ]),
            Ok(reads) if reads.is_empty() => lines.push([r.source.clone(), r.target.clone(), "ok".into(), "-".into()]),
            Ok(reads) => {
                for read in reads {
                    let point = if read.point.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", read.point)
                    };
                    lines.push([
                        r.source.clone(),
                        r.target.clone(),
                        "ok".into(),
                        format!("{}{point} = {} {}", read.indicator, read.value, read.unit),
                    ]);
                }
            }
        }
    }
    let width = |c: usize| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0);
    let (w0, w1) = (width(0), width(1));
    let mut out = String::new();
    for l in &lines {
        // Status and what was read are last, so long reasons need no padding.
        let _ = writeln!(out, "{:w0$}  {:w1$}  {}  {}", l[0], l[1], l[2], l[3]);
    }
    out
}

/// Whether every row succeeded.
pub fn all_ok(rows: &[ProbeRow]) -> bool {
    rows.iter().all(|r| r.result.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_each_value_and_each_failure() {
        let rows = vec![
            ProbeRow {
                source: "dlt645".into(),
                target: "gw:8899 meter 1".into(),
                result: Ok(vec![ProbeRead {
                    indicator: "electricity".into(),
                    point: "M1".into(),
                    value: 12.5,
                    unit: "kWh".into(),
                }]),
            },
            ProbeRow::error("http", "http://x".into(), "status 500"),
            ProbeRow::ok("profile", "/etc/p.toml".into()),
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[1].contains("ok  electricity [M1] = 12.5 kWh"), "{t}");
        assert!(lines[2].contains("error: status 500"), "{t}");
        assert!(!all_ok(&rows));
        assert!(all_ok(&rows[..1]));
    }
}
