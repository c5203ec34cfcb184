//! A run's `metrics.csv`: one [`MetricRow`] per evaluation, written as training goes and read
//! back by the plots.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One row of `metrics.csv`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MetricRow {
    /// Steps done.
    pub step: usize,
    /// Training tokens seen.
    pub tokens: u64,
    /// Mean training loss since the previous row.
    pub train_loss: f32,
    /// Validation loss in nats per token (NaN when not evaluated at this row; `null` in JSON).
    #[serde(deserialize_with = "null_as_nan")]
    pub val_loss: f32,
    /// Validation bits per byte (NaN when not evaluated at this row; `null` in JSON).
    #[serde(deserialize_with = "null_as_nan")]
    pub val_bpb: f32,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Seconds since the start of training (evaluation included).
    pub elapsed_seconds: f64,
}

/// JSON has no NaN: `serde_json` writes it as `null`; this reads `null` back as NaN, so a
/// run's `summary.json` (its curve) reads back what it wrote.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
}

/// Header of `metrics.csv`. Every column but the last, `elapsed_seconds` (wall-clock time), is
/// bit-identical between two runs of the same config and seed on the same backend, and between
/// a resumed run and an uninterrupted one. `val_loss` and `val_bpb` of the last row come from
/// the final evaluation (every held-out byte); earlier ones from the fixed subset of
/// `train.eval_windows` windows.
pub const METRICS_HEADER: &str = "step,tokens,train_loss,val_loss,val_bpb,lr,elapsed_seconds";

impl MetricRow {
    /// The row as a line of `metrics.csv` (no newline).
    pub fn csv(&self) -> String {
        format!("{},{},{},{},{},{},{:.3}", self.step, self.tokens, self.train_loss, self.val_loss, self.val_bpb, self.lr, self.elapsed_seconds)
    }
}

/// Parse a `metrics.csv` written with [`METRICS_HEADER`] (columns found by name, so a file with
/// extra columns reads too). The error names the file, line and column.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRow>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or_else(|| format!("{}: empty file", path.display()))?.split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).ok_or_else(|| format!("{}: no column {name:?}", path.display()));
    let idx = [col("step")?, col("tokens")?, col("train_loss")?, col("val_loss")?, col("val_bpb")?, col("lr")?, col("elapsed_seconds")?];
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').collect();
        fn get<T: std::str::FromStr>(path: &Path, cells: &[&str], n: usize, i: usize, name: &str) -> Result<T, String> {
            let cell = cells.get(i).ok_or_else(|| format!("{}: line {} has too few columns", path.display(), n + 2))?;
            cell.trim().parse::<T>().map_err(|_| format!("{}: line {}, column {name}: {cell:?} is not a number", path.display(), n + 2))
        }
        rows.push(MetricRow {
            step: get(path, &cells, n, idx[0], "step")?,
            tokens: get(path, &cells, n, idx[1], "tokens")?,
            train_loss: get(path, &cells, n, idx[2], "train_loss")?,
            val_loss: get(path, &cells, n, idx[3], "val_loss")?,
            val_bpb: get(path, &cells, n, idx[4], "val_bpb")?,
            lr: get(path, &cells, n, idx[5], "lr")?,
            elapsed_seconds: get(path, &cells, n, idx[6], "elapsed_seconds")?,
        });
    }
    Ok(rows)
}

/// `(tokens, val_bpb)` at the rows where validation was evaluated.
pub fn val_bpb_curve(rows: &[MetricRow]) -> Vec<(f64, f64)> {
    rows.iter().filter(|r| r.val_bpb.is_finite()).map(|r| (r.tokens as f64, r.val_bpb as f64)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_reads_back_a_row_without_evaluation() {
        let row = MetricRow { step: 10, tokens: 640, train_loss: 5.5, val_loss: f32::NAN, val_bpb: f32::NAN, lr: 1e-3, elapsed_seconds: 1.0 };
        let text = serde_json::to_string(&row).unwrap();
        assert!(text.contains("\"val_loss\":null"), "{text}");
        let back: MetricRow = serde_json::from_str(&text).unwrap();
        assert!(back.val_loss.is_nan() && back.val_bpb.is_nan());
        assert_eq!((back.step, back.train_loss.to_bits()), (10, 5.5f32.to_bits()));
    }

    #[test]
    fn reads_back_what_csv_writes_bit_for_bit_including_nan() {
        let dir = std::env::temp_dir().join(format!("engram-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("metrics.csv");
        let rows = [
            MetricRow { step: 10, tokens: 640, train_loss: 5.5123457, val_loss: f32::NAN, val_bpb: f32::NAN, lr: 1e-3 / 7.0, elapsed_seconds: 1.0 },
            MetricRow { step: 20, tokens: 1280, train_loss: 5.0, val_loss: 4.9, val_bpb: 1.8, lr: 2e-3, elapsed_seconds: 2.5 },
        ];
        let text = std::iter::once(METRICS_HEADER.to_string()).chain(rows.iter().map(MetricRow::csv)).collect::<Vec<_>>().join("\n");
        std::fs::write(&p, text).unwrap();
        let back = read_metrics(&p).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].train_loss.to_bits(), rows[0].train_loss.to_bits());
        assert_eq!(back[0].lr.to_bits(), rows[0].lr.to_bits());
        assert!(back[0].val_loss.is_nan() && back[0].val_bpb.is_nan());
        assert_eq!(back[1], rows[1]);
        assert_eq!(val_bpb_curve(&back), vec![(1280.0, 1.8f32 as f64)]);
        std::fs::write(&p, "step,tokens\n1,2\n").unwrap();
        assert!(read_metrics(&p).unwrap_err().contains("no column"));
        std::fs::write(&p, format!("{METRICS_HEADER}\n1,2,x,0,0,0,0\n")).unwrap();
        let err = read_metrics(&p).unwrap_err();
        assert!(err.contains("line 2") && err.contains("train_loss"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
