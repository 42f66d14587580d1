//! The common report type of every section: rows of (name, figure, baseline, ratio, note), a
//! line saying what was run, and a paragraph saying what bounds the figures. Printed on the
//! terminal and rendered into BENCHMARKS.md.

use std::fmt::Write as _;
use std::time::Duration;

/// A measured quantity with its unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measure {
    pub value: f64,
    pub unit: Unit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Millis,
    Seconds,
    /// Per second, of what the row names (requests, notifications, accounts).
    PerSecond(&'static str),
    MiB,
    /// A plain multiplier, such as a growth factor.
    Times,
}

impl Measure {
    pub fn ms(d: Duration) -> Self {
        Self {
            value: d.as_secs_f64() * 1000.0,
            unit: Unit::Millis,
        }
    }
    pub fn ms_f(value: f64) -> Self {
        Self {
            value,
            unit: Unit::Millis,
        }
    }
    pub fn secs(d: Duration) -> Self {
        Self {
            value: d.as_secs_f64(),
            unit: Unit::Seconds,
        }
    }
    pub fn rate(value: f64, what: &'static str) -> Self {
        Self {
            value,
            unit: Unit::PerSecond(what),
        }
    }
    pub fn mib_from_kib(kib: u64) -> Self {
        Self {
            value: kib as f64 / 1024.0,
            unit: Unit::MiB,
        }
    }
    pub fn times(value: f64) -> Self {
        Self {
            value,
            unit: Unit::Times,
        }
    }
}

/// Three significant digits or so, without exponent notation.
fn number(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        let rounded = v.round() as i64;
        thousands(rounded)
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A count with thousands separators.
pub fn int(n: usize) -> String {
    thousands(n as i64)
}

/// `n` and the word, plural unless `n` is 1.
pub fn plural(n: usize, word: &str) -> String {
    format!("{} {word}{}", int(n), if n == 1 { "" } else { "s" })
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

impl std::fmt::Display for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = number(self.value);
        match self.unit {
            Unit::Millis => write!(f, "{n} ms"),
            Unit::Seconds => write!(f, "{n} s"),
            Unit::PerSecond(what) => write!(f, "{n} {what}/s"),
            Unit::MiB => write!(f, "{n} MiB"),
            Unit::Times => write!(f, "×{n}"),
        }
    }
}

/// What a figure is compared with, measured in the same run.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub name: String,
    pub measure: Measure,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub figure: Measure,
    pub baseline: Option<Baseline>,
    pub note: String,
    /// Shown again in the summary at the end of a run.
    pub headline: bool,
}

impl Row {
    pub fn new(name: impl Into<String>, figure: Measure) -> Self {
        Self {
            name: name.into(),
            figure,
            baseline: None,
            note: String::new(),
            headline: false,
        }
    }

    pub fn against(mut self, name: impl Into<String>, measure: Measure) -> Self {
        self.baseline = Some(Baseline {
            name: name.into(),
            measure,
        });
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    pub fn headline(mut self) -> Self {
        self.headline = true;
        self
    }

    /// Figure ÷ baseline.
    pub fn ratio(&self) -> Option<f64> {
        let b = self.baseline.as_ref()?;
        (b.measure.value != 0.0).then(|| self.figure.value / b.measure.value)
    }

    fn ratio_text(&self) -> String {
        self.ratio().map_or("–".into(), |r| match r {
            // A figure thousands of times below its baseline still shows its digits.
            r if r > 0.0 && r < 0.01 => format!("{r:.1e}"),
            r => format!("{r:.2}"),
        })
    }
}

/// One section of the benchmark (webhook, e2e, bulk, reconcile, …).
#[derive(Debug, Clone)]
pub struct Section {
    /// The `--only` name.
    pub key: &'static str,
    pub title: String,
    /// What was run: sizes, concurrency, how it was measured.
    pub setup: String,
    pub rows: Vec<Row>,
    /// What bounds the figures, from what this run measured.
    pub bounds: String,
    pub elapsed: Duration,
}

impl Section {
    pub fn new(key: &'static str, title: impl Into<String>) -> Self {
        Self {
            key,
            title: title.into(),
            setup: String::new(),
            rows: Vec::new(),
            bounds: String::new(),
            elapsed: Duration::ZERO,
        }
    }

    pub fn push(&mut self, row: Row) {
        println!("    {}: {}{}", row.name, row.figure, {
            match (&row.baseline, row.ratio()) {
                (Some(b), Some(_)) => format!(
                    "   vs {} {} → ratio {}",
                    b.name,
                    b.measure,
                    row.ratio_text()
                ),
                _ => String::new(),
            }
        });
        self.rows.push(row);
    }

    /// The section as a terminal table.
    pub fn text(&self) -> String {
        let mut out = format!(
            "\n== {} ({:.0} s)\n",
            self.title,
            self.elapsed.as_secs_f64()
        );
        for line in wrap(&self.setup, 100) {
            let _ = writeln!(out, "   {line}");
        }
        let name_w = self
            .rows
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(0);
        let fig_w = self
            .rows
            .iter()
            .map(|r| r.figure.to_string().chars().count())
            .max()
            .unwrap_or(0);
        let base_w = self
            .rows
            .iter()
            .map(|r| baseline_text(r).chars().count())
            .max()
            .unwrap_or(0);
        for r in &self.rows {
            let _ = writeln!(
                out,
                "   {:<name_w$}  {:>fig_w$}  {:<base_w$}  {:>6}",
                r.name,
                r.figure.to_string(),
                baseline_text(r),
                r.ratio_text(),
            );
        }
        if !self.bounds.is_empty() {
            let _ = writeln!(out, "   What bounds it:");
            for line in wrap(&self.bounds, 100) {
                let _ = writeln!(out, "     {line}");
            }
        }
        out
    }

    /// The section in Markdown.
    pub fn markdown(&self, number: usize) -> String {
        let mut out = format!("## {number}. {}\n\n", self.title);
        if !self.setup.is_empty() {
            let _ = writeln!(out, "{}\n", self.setup);
        }
        out.push_str("| figure | value | baseline (same run) | baseline value | ratio | note |\n");
        out.push_str("|---|---:|---|---:|---:|---|\n");
        for r in &self.rows {
            let (bname, bvalue) = match &r.baseline {
                Some(b) => (b.name.clone(), b.measure.to_string()),
                None => ("–".into(), "–".into()),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                cell(&r.name),
                cell(&r.figure.to_string()),
                cell(&bname),
                cell(&bvalue),
                r.ratio_text(),
                cell(&r.note)
            );
        }
        if !self.bounds.is_empty() {
            let _ = writeln!(out, "\n**What bounds it.** {}", self.bounds);
        }
        let _ = writeln!(
            out,
            "\n<sub>Section time: {:.0} s.</sub>\n",
            self.elapsed.as_secs_f64()
        );
        out
    }
}

fn baseline_text(r: &Row) -> String {
    r.baseline
        .as_ref()
        .map_or(String::new(), |b| format!("vs {} {}", b.name, b.measure))
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

/// The headline rows of every section, one table.
pub fn summary(sections: &[Section]) -> Vec<(String, &Row)> {
    sections
        .iter()
        .flat_map(|s| {
            s.rows
                .iter()
                .filter(|r| r.headline)
                .map(move |r| (s.key.to_string(), r))
        })
        .collect()
}

pub fn summary_text(sections: &[Section]) -> String {
    let rows = summary(sections);
    let mut out = String::from(
        "\n== Summary (figure, baseline measured in the same run, ratio = figure ÷ baseline)\n",
    );
    let name_w = rows
        .iter()
        .map(|(k, r)| k.len() + 2 + r.name.chars().count())
        .max()
        .unwrap_or(0);
    for (key, r) in rows {
        let label = format!("{key}: {}", r.name);
        let _ = writeln!(
            out,
            "   {label:<name_w$}  {:>16}  {}  ratio {}",
            r.figure.to_string(),
            baseline_text(r),
            r.ratio_text()
        );
    }
    out
}

pub fn summary_markdown(sections: &[Section]) -> String {
    let mut out = String::from(
        "| section | figure | value | baseline (same run) | baseline value | ratio |\n\
         |---|---|---:|---|---:|---:|\n",
    );
    for (key, r) in summary(sections) {
        let (bname, bvalue) = match &r.baseline {
            Some(b) => (b.name.clone(), b.measure.to_string()),
            None => ("–".into(), "–".into()),
        };
        let _ = writeln!(
            out,
            "| {key} | {} | {} | {} | {} | {} |",
            cell(&r.name),
            cell(&r.figure.to_string()),
            cell(&bname),
            cell(&bvalue),
            r.ratio_text()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_ratios_read_well() {
        assert_eq!(Measure::rate(12345.6, "req").to_string(), "12,346 req/s");
        assert_eq!(Measure::ms_f(1.23456).to_string(), "1.23 ms");
        assert_eq!(Measure::times(3.987).to_string(), "×3.99");
        assert_eq!(Measure::mib_from_kib(2048).to_string(), "2.00 MiB");
        let row = Row::new("x", Measure::ms_f(30.0)).against("y", Measure::ms_f(10.0));
        assert_eq!(row.ratio(), Some(3.0));
        assert_eq!(thousands(-1234567), "-1,234,567");
    }
}
