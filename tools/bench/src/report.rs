//! The table `make bench` prints: each figure beside its baseline from the same run.

use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// A figure shown for context, with no target.
    Info,
    /// The figure could not be measured in this run.
    Missing,
}

impl Verdict {
    pub fn of(pass: bool) -> Self {
        if pass { Verdict::Pass } else { Verdict::Fail }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Info => "-",
            Verdict::Missing => "NOT MEASURED",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub figure: String,
    pub measured: String,
    pub baseline: String,
    pub ratio: Option<f64>,
    pub target: String,
    pub verdict: Verdict,
}

impl Figure {
    /// A figure that could not be measured, and why.
    pub fn missing(figure: impl Into<String>, why: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            figure: figure.into(),
            measured: why.into(),
            baseline: String::new(),
            ratio: None,
            target: target.into(),
            verdict: Verdict::Missing,
        }
    }
}

/// The figures as a Markdown table.
pub fn table(figures: &[Figure]) -> String {
    let mut out =
        String::from("| figure | measured | baseline | ratio | target | result |\n|---|---|---|---|---|---|\n");
    for f in figures {
        let ratio = f.ratio.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "-".to_owned());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {ratio} | {} | {} |",
            f.figure,
            f.measured,
            f.baseline,
            f.target,
            f.verdict.label()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_per_figure_with_its_ratio_and_verdict() {
        let figures = [
            Figure {
                figure: "a".into(),
                measured: "2 ms".into(),
                baseline: "1 ms".into(),
                ratio: Some(2.0),
                target: "≤ 1.3×".into(),
                verdict: Verdict::of(false),
            },
            Figure::missing("b", "no binary", "≤ 5 MB"),
        ];
        let table = table(&figures);
        assert!(table.contains("| a | 2 ms | 1 ms | 2.00× | ≤ 1.3× | FAIL |"));
        assert!(table.contains("| b | no binary |  | - | ≤ 5 MB | NOT MEASURED |"));
    }
}
