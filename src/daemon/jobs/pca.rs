//! The daemon's periodic trajectory PCA: every N ingested checkpoints of a run, recompute the PCA of its
//! archive, store it, and publish gauges (explained-variance ratio of PC1/PC2, the latest checkpoint's
//! coordinates and its residual distance from the plane).
//!
//! Enabled per run in the daemon config:
//! ```toml
//! [run.pca]
//! every = 10          # recompute every 10 checkpoints (default 10)
//! components = 2      # default 2
//! exclude_1d = false
//! include = []        # globs
//! exclude = []
//! ```

use crate::daemon::jobs::{JobContext, PeriodicJob, RunGauge};
use crate::store::trajectory::{PcaConfig, PcaRecord};
use crate::trajectory::archive::list_run;
use crate::trajectory::pca::compute_pca;
use crate::trajectory::select::{Selection, TensorFilter};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PcaJobConfig {
    pub every: u64,
    pub components: usize,
    pub exclude_1d: bool,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub include_buffers: bool,
}

impl Default for PcaJobConfig {
    fn default() -> Self {
        PcaJobConfig {
            every: 10,
            components: 2,
            exclude_1d: false,
            include: Vec::new(),
            exclude: Vec::new(),
            include_buffers: false,
        }
    }
}

pub(crate) struct PcaJob {
    cfg: PcaJobConfig,
}

/// Builds the job from its `[run.pca]` section; bad values name their key.
pub fn build(section: &toml::Value) -> anyhow::Result<Box<dyn PeriodicJob>> {
    let cfg: PcaJobConfig = section.clone().try_into().map_err(|e| anyhow::anyhow!("{e}"))?;
    if cfg.every == 0 {
        anyhow::bail!("every: must be at least 1");
    }
    if cfg.components == 0 {
        anyhow::bail!("components: must be at least 1");
    }
    let job = PcaJob { cfg };
    TensorFilter::new(&job.selection())?;
    Ok(Box::new(job))
}

impl PcaJob {
    fn selection(&self) -> Selection {
        Selection {
            exclude_1d: self.cfg.exclude_1d,
            include: self.cfg.include.clone(),
            exclude: self.cfg.exclude.clone(),
            include_buffers: self.cfg.include_buffers,
        }
    }
}

/// The PCA job's gauge families (see [`super::JobGauges`]).
pub struct Gauges {
    ratio: RunGauge,
    coord: RunGauge,
    residual: RunGauge,
}

impl Gauges {
    /// Registers the families in `reg`; None if any can't be.
    pub(crate) fn register(reg: &prometheus::Registry) -> Option<Gauges> {
        let mk = |name: &str, help: &str, labels: &[&str]| RunGauge::register(reg, name, help, labels);
        Some(Gauges {
            ratio: mk(
                "landscaped_pca_explained_variance_ratio",
                "Explained variance ratio of each principal component of the run's trajectory",
                &["component"],
            )?,
            coord: mk(
                "landscaped_pca_latest_coordinate",
                "Coordinate of the run's latest archived checkpoint on each principal component",
                &["component"],
            )?,
            residual: mk(
                "landscaped_pca_latest_residual",
                "Distance of the run's latest archived checkpoint from the PCA plane",
                &[],
            )?,
        })
    }
}

/// Sets the gauges from a PCA record (PC1 and PC2 only, to keep the series few).
pub(crate) fn publish(g: &Gauges, rec: &PcaRecord) {
    let last = rec.steps.len().saturating_sub(1);
    for k in 0..rec.explained_variance_ratio.len().min(2) {
        let c = (k + 1).to_string();
        g.ratio.set_for(&rec.run, &[c.as_str()], rec.explained_variance_ratio[k]);
        if let Some(x) = rec.coords.get(last).and_then(|r| r.get(k)) {
            g.coord.set_for(&rec.run, &[c.as_str()], *x);
        }
    }
    if let Some(r) = rec.residuals.get(last) {
        g.residual.set(&rec.run, *r);
    }
}

impl PeriodicJob for PcaJob {
    fn name(&self) -> &'static str {
        "pca"
    }

    fn every(&self) -> u64 {
        self.cfg.every
    }

    fn run(&self, ctx: &JobContext, run: &str, step: u64) -> anyhow::Result<()> {
        let n = list_run(&ctx.data_dir, run)?.len();
        if n < self.cfg.components + 1 {
            tracing::debug!(run, step, n, "pca: too few archived checkpoints yet");
            return Ok(());
        }
        if ctx.cancelled() {
            return Ok(());
        }
        let cfg =
            PcaConfig { components: self.cfg.components, center_step: None, selection: self.selection() };
        let rec = compute_pca(&ctx.data_dir, run, &cfg)?;
        ctx.save(&rec)?;
        if let Some(g) = &ctx.gauges.pca {
            publish(g, &rec);
        }
        tracing::info!(
            run,
            step,
            pc1 = rec.explained_variance_ratio.first().copied().unwrap_or(f64::NAN),
            pc2 = rec.explained_variance_ratio.get(1).copied().unwrap_or(f64::NAN),
            "pca recomputed"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trajectory::archive::{ArchiveConfig, write_checkpoint};
    use landscaped_formats::{Dtype, TensorInfo, Values};

    #[test]
    fn config_validation() {
        let v: toml::Value = toml::from_str("every = 5\ncomponents = 3").unwrap();
        assert_eq!(build(&v).unwrap().every(), 5);
        let v: toml::Value = toml::from_str("evry = 5").unwrap();
        assert!(build(&v).err().unwrap().to_string().contains("evry"));
        let v: toml::Value = toml::from_str("every = 0").unwrap();
        assert!(build(&v).err().unwrap().to_string().contains("every"));
        let v: toml::Value = toml::from_str("include = ['a[']").unwrap();
        assert!(build(&v).is_err());
    }

    #[test]
    fn job_computes_stores_and_publishes() {
        let d = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(d.path()).unwrap();
        let reg = prometheus::Registry::new();
        let ctx = JobContext::new(store.clone(), d.path().to_path_buf(), reg.clone(), Default::default());
        let job = build(&toml::from_str::<toml::Value>("every = 1").unwrap()).unwrap();
        let t = |s: u64| {
            let v: Vec<f32> = (0..12).map(|i| ((i * 7 + s * s * 3 + s * i) % 11) as f32).collect();
            vec![(TensorInfo { name: "w".into(), dtype: Dtype::F32, shape: vec![3, 4] }, Values::F32(v))]
        };
        write_checkpoint(d.path(), "r", 0, &ArchiveConfig::default(), &t(0)).unwrap();
        job.run(&ctx, "r", 0).unwrap(); // too few: nothing, no error
        assert!(crate::store::trajectory::latest_pca(&store, "r").unwrap().is_none());
        for s in 1..5 {
            write_checkpoint(d.path(), "r", s, &ArchiveConfig::default(), &t(s)).unwrap();
        }
        job.run(&ctx, "r", 4).unwrap();
        let rec = crate::store::trajectory::latest_pca(&store, "r").unwrap().unwrap();
        assert_eq!(rec.steps, vec![0, 1, 2, 3, 4]);
        let text = prometheus::TextEncoder::new().encode_to_string(&reg.gather()).unwrap();
        let prefix = "landscaped_pca_explained_variance_ratio{component=\"1\",run=\"r\"} ";
        let line = text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{text}"));
        let got: f64 = line[prefix.len()..].parse().unwrap();
        assert!((got - rec.explained_variance_ratio[0]).abs() < 1e-12);
        assert!(text.contains("landscaped_pca_latest_residual{run=\"r\"}"), "{text}");
    }
}
