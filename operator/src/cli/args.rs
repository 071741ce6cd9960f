//! Command line, shaped like kubectl's: global `-n`, `--kubeconfig`, `--context`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Read and steer ShortenerReleases (install as a kubectl plugin: `kubectl shortener ...`).
#[derive(Parser, Debug)]
#[command(name = "kubectl-shortener", bin_name = "kubectl shortener", version)]
pub struct Cli {
    /// Namespace of the release. Default: the kubeconfig context's namespace, else "default".
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Kubeconfig file. Default: $KUBECONFIG, else ~/.kube/config.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context. Default: the current context.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Output format of read commands.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Phase, revisions, conditions, last incident and budget of one or all releases.
    Status {
        /// Release name; all releases in the namespace when omitted.
        name: Option<String>,
        /// Re-render on every change until Ctrl-C.
        #[arg(short = 'w', long, conflicts_with = "wait")]
        watch: bool,
        /// Wait until the rollout of the current spec (status.observedGeneration ==
        /// metadata.generation) has an outcome, then exit: 0 Healthy, 2 RolledBack,
        /// 3 Degraded, 4 Blocked, 5 Paused, 6 timed out, 1 any other error.
        #[arg(long, requires = "name")]
        wait: bool,
        /// How long `--wait` waits, e.g. 90s, 5m, 1h.
        #[arg(long, default_value = "5m", value_parser = super::wait::parse_timeout, requires = "wait")]
        timeout: std::time::Duration,
    },
    /// Revisions of a release, oldest first.
    History { name: String },
    /// The last incident: its timeline and the captured log excerpt.
    Incidents { name: String },
    /// The downtime budget over the rolling year.
    Budget { name: String },
    /// Stop all changes to a release (annotation shortener.dev/paused=true).
    Pause { name: String },
    /// Undo `pause`.
    Resume { name: String },
    /// Roll out the failed pod template again, as a new revision.
    Retry { name: String },
    /// Send traffic back to an earlier healthy revision.
    Rollback {
        name: String,
        /// Revision to return to. Default: the latest healthy revision before the serving one.
        #[arg(long)]
        to_revision: Option<i64>,
    },
    /// Skip the rest of the bake and make the current revision stable now.
    Promote { name: String },
    /// Stop the rollout in progress and return traffic to the stable revision.
    Abort { name: String },
}
