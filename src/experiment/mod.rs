//! What every experiment binary shares: its command-line options, its output directory, its
//! data, and running a list of configurations through the one training loop.
//!
//! * `cli`: the options every experiment takes ([`CommonArgs`], [`SweepArgs`]), its output
//!   directory, data and runs ([`run_all`], [`RunRecord`]);
//! * `sweep`: configurations × seeds, aggregated ([`run_sweep`], [`sweep`], [`GroupStats`],
//!   [`SweepSummary`], [`linear_fit`]);
//! * `bend`: where a log-linear law stops ([`bend_fit`]);
//! * `science`: the setup of `exp_scaling`, `exp_allocation` and `exp_ablation`
//!   ([`ScienceSetup`]);
//! * `timing`: interleaved step timing and robust statistics for the timing experiments
//!   ([`time_interleaved`], [`median`], [`iqr`], [`peak_rss_bytes`]).

mod bend;
mod cli;
mod science;
mod sweep;
mod timing;

pub use bend::*;
pub use cli::*;
pub use science::*;
pub use sweep::*;
pub use timing::*;
