//! Benchmark helpers of the timing experiments (`exp_throughput`, `exp_memory`): interleaved
//! step timing with [`crate::turns`], robust statistics of step times, and the process's
//! memory as Linux reports it.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::Device;

use crate::config::ExperimentConfig;
use crate::data::PreparedData;
use crate::train::{run, RunOptions};
use crate::turns::Turn;

/// The `ps` quantiles of `v` (nearest rank: element `round((n − 1)·p)` of the sorted values);
/// `None` when `v` is empty.
pub fn quantiles<const K: usize>(v: &[f64], ps: [f64; K]) -> Option<[f64; K]> {
    let mut t = v.to_vec();
    t.sort_by(|a, b| a.total_cmp(b));
    (!t.is_empty()).then(|| ps.map(|p| t[((t.len() - 1) as f64 * p).round() as usize]))
}

/// The median (the upper one of an even count), NaN for no values.
pub fn median(v: &[f64]) -> f64 {
    quantiles(v, [0.5]).map_or(f64::NAN, |[m]| m)
}

/// Quartiles 1 and 3, for two values or more.
pub fn iqr(v: &[f64]) -> Option<[f64; 2]> {
    if v.len() < 2 {
        return None;
    }
    quantiles(v, [0.25, 0.75])
}

/// A field of `/proc/self/status` in bytes (`VmHWM`: peak resident set; `RssAnon`, `RssFile`:
/// resident anonymous and file-backed memory now); 0 where not reported.
pub fn proc_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':')).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The process's peak resident set (`VmHWM`), bytes.
pub fn peak_rss_bytes() -> u64 {
    proc_status_bytes("VmHWM")
}

/// Reset the process's peak resident set to its current size (Linux: `5` into
/// `/proc/self/clear_refs`), so a later [`peak_rss_bytes`] measures what came after; `false`
/// where the kernel does not support it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU time of the whole machine from `/proc/stat`: (stolen by the hypervisor, all), in ticks.
pub fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat.lines().next()?.strip_prefix("cpu ")?.split_whitespace().map(|x| x.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    let steal = *fields.get(7)?;
    Some((steal, fields.iter().take(8).sum()))
}

/// One configuration to time: what it trains, on which data and device, with which options.
pub struct TimingJob<'a> {
    /// The run (its name is its directory under the experiment's).
    pub cfg: ExperimentConfig,
    /// Its data.
    pub data: &'a PreparedData,
    /// Its device.
    pub device: Device,
    /// Its options (`turns` is set here).
    pub opts: RunOptions,
}

/// Step seconds of every job after `warmup` steps, timed interleaved: every job trains in its
/// own thread and they take turns ([`Turn`]) — one step of each, then the next step of each —
/// so a slow spell of a shared or virtual machine hits all of them alike and only one computes
/// at a time. Two passes, the second in the reverse order, because a job's place in the cycle
/// can move its step time by up to ±10 % on a virtual machine; a job's steps are those of both
/// passes, in order (so step-by-step ratios pair the same cycle).
pub fn time_interleaved(jobs: &[TimingJob<'_>], warmup: usize, dir: &Path) -> anyhow::Result<Vec<Vec<f64>>> {
    let mut steps = vec![Vec::new(); jobs.len()];
    for pass in 0..2 {
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        if pass == 1 {
            order.reverse();
        }
        let results: Vec<anyhow::Result<Vec<f64>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = order
                .iter()
                .zip(Turn::cycle(order.len()))
                .map(|(&i, turn)| {
                    let job = &jobs[i];
                    scope.spawn(move || -> anyhow::Result<Vec<f64>> {
                        let opts = RunOptions { turns: Some(Arc::new(turn)), ..job.opts.clone() };
                        let r = run(&job.cfg, job.data, &job.device, &dir.join(&job.cfg.name), &opts)?;
                        Ok(r.step_seconds.iter().skip(warmup).copied().collect())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a timing thread panicked")))).collect()
        });
        for (&i, r) in order.iter().zip(results) {
            steps[i].extend(r.map_err(|e| e.context(format!("timing {}", jobs[i].cfg.name)))?);
        }
    }
    Ok(steps)
}
