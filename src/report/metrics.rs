//! Reading a run's `metrics.csv` back (plots are drawn from files, not from memory).

use std::path::Path;

/// The columns of a `metrics.csv`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Steps done.
    pub step: Vec<f64>,
    /// Training tokens seen.
    pub tokens: Vec<f64>,
    /// Training loss.
    pub train_loss: Vec<f64>,
    /// Validation loss, nats per token (NaN where not evaluated).
    pub val_loss: Vec<f64>,
    /// Validation bits per byte (NaN where not evaluated).
    pub val_bpb: Vec<f64>,
    /// Learning rate.
    pub lr: Vec<f64>,
    /// Seconds since the start.
    pub elapsed_seconds: Vec<f64>,
}

impl Metrics {
    /// `(tokens, val_loss)` at the rows where validation was evaluated.
    pub fn val_curve(&self) -> Vec<(f64, f64)> {
        self.tokens.iter().zip(&self.val_loss).filter(|(_, v)| v.is_finite()).map(|(&t, &v)| (t, v)).collect()
    }

    /// `(tokens, val_bpb)` at the rows where validation was evaluated.
    pub fn val_bpb_curve(&self) -> Vec<(f64, f64)> {
        self.tokens.iter().zip(&self.val_bpb).filter(|(_, v)| v.is_finite()).map(|(&t, &v)| (t, v)).collect()
    }
}

/// Parse `metrics.csv` (header `step,tokens,train_loss,val_loss,val_bpb,lr,elapsed_seconds`).
pub fn read_metrics(path: &Path) -> Result<Metrics, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or_else(|| format!("{}: empty file", path.display()))?.split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).ok_or_else(|| format!("{}: no column {name:?}", path.display()));
    let idx = [col("step")?, col("tokens")?, col("train_loss")?, col("val_loss")?, col("lr")?, col("elapsed_seconds")?, col("val_bpb")?];
    let mut m = Metrics::default();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').collect();
        let get = |i: usize| -> Result<f64, String> {
            let cell = cells.get(i).ok_or_else(|| format!("{}: line {} has too few columns", path.display(), n + 2))?;
            cell.trim().parse::<f64>().map_err(|_| format!("{}: line {}: {cell:?} is not a number", path.display(), n + 2))
        };
        m.step.push(get(idx[0])?);
        m.tokens.push(get(idx[1])?);
        m.train_loss.push(get(idx[2])?);
        m.val_loss.push(get(idx[3])?);
        m.lr.push(get(idx[4])?);
        m.elapsed_seconds.push(get(idx[5])?);
        m.val_bpb.push(get(idx[6])?);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_training_loop_writes_including_nan() {
        let dir = std::env::temp_dir().join(format!("engram-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("metrics.csv");
        std::fs::write(&p, "step,tokens,train_loss,val_loss,val_bpb,lr,elapsed_seconds\n10,640,5.5,NaN,NaN,0.001,1.0\n20,1280,5.0,4.9,1.8,0.002,2.5\n").unwrap();
        let m = read_metrics(&p).unwrap();
        assert_eq!(m.step, vec![10.0, 20.0]);
        assert!(m.val_loss[0].is_nan());
        assert_eq!(m.val_curve(), vec![(1280.0, 4.9)]);
        assert_eq!(m.val_bpb_curve(), vec![(1280.0, 1.8)]);
        std::fs::write(&p, "step,tokens\n1,2\n").unwrap();
        assert!(read_metrics(&p).unwrap_err().contains("no column"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
