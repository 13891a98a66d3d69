//! A run's landscape in its TensorBoard folder: [`RunLog`] turns the store's records of one run into
//! events of landscaped's event file there, the same way for `landscaped export tensorboard` (every
//! record at once) and the daemon (each checkpoint as it lands, each job's records after it runs, and
//! everything missing at start). Each tag's steps only go up ([`super::writer`]): a step written before
//! is skipped, so writing again after a restart adds only what is new.

use super::images::{IMAGE_SOURCES, render_png};
use super::proto::HistogramProto;
use super::scalars::{CHECKPOINT_SOURCES, CheckpointView, JOB_SOURCES, Scalar};
use super::select::TensorChoice;
use super::texts::{CONVENTIONS, SETTINGS_TAG};
use super::writer::{EventFile, Reopened};
use crate::store::{self, Store};
use anyhow::Context;
use landscaped_maths::stats::TensorStats;
use std::path::Path;

/// What a call wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub scalars: usize,
    pub histograms: usize,
    pub images: usize,
    pub texts: usize,
}

impl Written {
    fn add(&mut self, o: Written) {
        self.scalars += o.scalars;
        self.histograms += o.histograms;
        self.images += o.images;
        self.texts += o.texts;
    }
}

/// The tag written last for each checkpoint: when the file has it at a step, it has all of that step.
const CHECKPOINT_MARKER: &str = "landscaped/weights/global_norm";

pub struct RunLog {
    run: String,
    file: EventFile,
    choice: TensorChoice,
    settings: String,
    /// Set once charts cannot be drawn (no font): images are left out from then on.
    no_images: bool,
}

impl RunLog {
    /// Opens (or creates) landscaped's event file in `dir` for `run`; `settings` is the markdown
    /// written as the run's settings.
    pub fn open(
        dir: &Path,
        run: &str,
        choice: TensorChoice,
        settings: String,
    ) -> anyhow::Result<(RunLog, Reopened)> {
        let (file, reopened) = EventFile::open(dir)?;
        Ok((RunLog { run: run.to_string(), file, choice, settings, no_images: false }, reopened))
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Everything the store holds for the run: the texts, every checkpoint in step order, the jobs'
    /// records.
    pub fn all(&mut self, store: &Store) -> anyhow::Result<Written> {
        let mut w = self.texts()?;
        let cks = store::checkpoints::checkpoints(store, &self.run)
            .with_context(|| format!("reading run {:?}'s checkpoints", self.run))?;
        for c in &cks {
            w.add(self.write_checkpoint(store, c)?);
        }
        self.file.flush()?;
        w.add(self.jobs(store)?);
        Ok(w)
    }

    /// The settings and the conventions, at step 0 (once).
    pub fn texts(&mut self) -> anyhow::Result<Written> {
        let mut w = Written::default();
        let wall = super::writer::now();
        if !self.settings.is_empty() && self.file.text(SETTINGS_TAG, 0, wall, &self.settings) {
            w.texts += 1;
        }
        for (tag, text) in CONVENTIONS {
            w.texts += usize::from(self.file.text(tag, 0, wall, text));
        }
        self.file.flush()?;
        Ok(w)
    }

    /// One checkpoint just recorded: its scalars and the chosen tensors' histograms.
    pub fn checkpoint(&mut self, store: &Store, step: u64) -> anyhow::Result<Written> {
        let Some(rec) = store::checkpoints::checkpoint(store, &self.run, step)
            .with_context(|| format!("reading run {:?} step {step}", self.run))?
        else {
            return Ok(Written::default());
        };
        let w = self.write_checkpoint(store, &rec)?;
        self.file.flush()?;
        Ok(w)
    }

    fn write_checkpoint(
        &mut self,
        store: &Store,
        rec: &store::checkpoints::CheckpointRecord,
    ) -> anyhow::Result<Written> {
        let mut w = Written::default();
        // The marker goes last: present, the whole checkpoint is (a cut tail loses the end first).
        if !self.file.wants(CHECKPOINT_MARKER, rec.step) {
            return Ok(w);
        }
        let tensors = store::checkpoints::tensors(store, &self.run, rec.step)
            .with_context(|| format!("reading run {:?} step {}'s tensors", self.run, rec.step))?;
        let chosen = self.choice.choose(&tensors);
        let view = CheckpointView { record: rec, chosen: &chosen };
        let scalars: Vec<Scalar> = CHECKPOINT_SOURCES.iter().flat_map(|source| source(&view)).collect();
        let (marker, rest): (Vec<Scalar>, Vec<Scalar>) =
            scalars.into_iter().partition(|s| s.tag == CHECKPOINT_MARKER);
        for s in &rest {
            w.scalars += usize::from(self.file.scalar(&s.tag, s.step, s.wall_time, s.value));
        }
        for t in &chosen {
            let Some(h) = t.stats.as_ref().and_then(histogram_proto) else { continue };
            let tag = format!("landscaped/histogram/{}", t.name);
            w.histograms += usize::from(self.file.histogram(&tag, rec.step, rec.ingested_unix as f64, h));
        }
        for s in &marker {
            w.scalars += usize::from(self.file.scalar(&s.tag, s.step, s.wall_time, s.value));
        }
        Ok(w)
    }

    /// The periodic jobs' records of the run (sharpness, slices, PCA, ...): scalars and charts not
    /// written yet.
    pub fn jobs(&mut self, store: &Store) -> anyhow::Result<Written> {
        let mut w = Written::default();
        let mut scalars: Vec<Scalar> = Vec::new();
        for source in JOB_SOURCES {
            scalars.extend(
                source(store, &self.run)
                    .with_context(|| format!("reading run {:?}'s job records", self.run))?,
            );
        }
        scalars.sort_by_key(|s| s.step);
        for s in &scalars {
            w.scalars += usize::from(self.file.scalar(&s.tag, s.step, s.wall_time, s.value));
        }
        self.file.flush()?;
        if self.no_images {
            return Ok(w);
        }
        let mut pictures = Vec::new();
        for source in IMAGE_SOURCES {
            pictures.extend(
                source(store, &self.run)
                    .with_context(|| format!("reading run {:?}'s job records", self.run))?,
            );
        }
        pictures.sort_by_key(|p| p.step);
        for p in pictures {
            if !self.file.wants(&p.tag, p.step) {
                continue;
            }
            match render_png(&p.panel) {
                Ok((png, width, height)) => {
                    w.images += usize::from(self.file.image(&p.tag, p.step, p.wall_time, png, width, height));
                    // One chart at a time: a PNG is large.
                    self.file.flush()?;
                }
                Err(e @ crate::plot::PlotError::NoFont { .. }) => {
                    tracing::warn!("TensorBoard images of run {:?} left out: {e}", self.run);
                    self.no_images = true;
                    break;
                }
                Err(e) => tracing::warn!(
                    "TensorBoard image {} of run {:?} at step {}: {e}",
                    p.tag,
                    self.run,
                    p.step
                ),
            }
        }
        Ok(w)
    }
}

/// The stored histogram as TensorBoard's legacy `HistogramProto`, from its first to its last non-empty
/// bucket (TensorBoard drops empty buckets at both ends when it reads one, and takes `min` and `max`
/// as the outer edges): bucket i spans (`bucket_limit[i-1]`, `bucket_limit[i]`], the first starting at
/// `min`. None when every bucket is empty.
pub fn histogram_proto(s: &TensorStats) -> Option<HistogramProto> {
    let h = &s.histogram;
    let start = h.counts.iter().position(|&c| c > 0)?;
    let end = h.counts.iter().rposition(|&c| c > 0)?;
    let edges = h.edges();
    let finite = s.numel.saturating_sub(s.nan_count + s.inf_count) as f64;
    Some(HistogramProto {
        min: edges[start],
        max: edges[end + 1],
        num: h.counts.iter().sum::<u64>() as f64,
        sum: s.mean * finite,
        sum_squares: s.sum_sq(),
        bucket_limit: edges[start + 1..=end + 1].to_vec(),
        bucket: h.counts[start..=end].iter().map(|&c| c as f64).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::landscape::slice::SliceValues;
    use crate::store::RunStepRecord;
    use crate::store::sharpness::SharpnessRecord;
    use crate::store::slices::{DirectionSource, ModelUsed, SliceRecord};
    use crate::tensorboard::proto::{Event, Kind, What};
    use crate::tensorboard::record::read_records;
    use landscaped_maths::curvature::lanczos::Extremes;
    use landscaped_maths::curvature::measures::Measure;
    use landscaped_maths::curvature::trace::TraceEstimate;
    use prost::Message;
    use std::collections::BTreeMap;

    type Scalars = BTreeMap<String, Vec<(i64, f32)>>;

    /// Every (tag → [(step, value)]) of the scalars in the file, and the image tags.
    fn read_back(path: &Path) -> (Scalars, Vec<(String, i64)>) {
        let bytes = std::fs::read(path).unwrap();
        let (mut scalars, mut images) = (Scalars::new(), Vec::new());
        for p in read_records(&bytes).payloads {
            let ev = Event::decode(p).unwrap();
            let Some(What::Summary(s)) = ev.what else { continue };
            for v in s.value {
                match v.kind {
                    Some(Kind::SimpleValue(x)) => scalars.entry(v.tag).or_default().push((ev.step, x)),
                    Some(Kind::Image(_)) => images.push((v.tag, ev.step)),
                    _ => {}
                }
            }
        }
        (scalars, images)
    }

    fn parabola_slice(run: &str, step: u64) -> SliceRecord {
        let axis = vec![-1.0, -0.5, 0.0, 0.5, 1.0];
        let mut v = SliceValues::new(axis.clone(), axis.clone());
        for iy in 0..5 {
            for ix in 0..5 {
                let (x, y) = (axis[ix], axis[iy]);
                v.loss[iy * 5 + ix] = 1.0 + 3.0 * x * x + 5.0 * y * y;
                v.done[iy * 5 + ix] = true;
            }
        }
        SliceRecord {
            id: step,
            run: Some(run.into()),
            step: Some(step),
            checkpoint: "c".into(),
            directions: DirectionSource::Pca {
                run: run.into(),
                pca_step: step,
                components: vec![0, 1],
                explained_variance_ratio: vec![0.6, 0.3],
                files: vec![],
            },
            cosine: None,
            model: ModelUsed::default(),
            centre_loss: 1.0,
            centre_accuracy: None,
            values: v,
            trajectory: vec![(0.5, 0.5, 1), (0.0, 0.0, step)],
            created: 0,
            updated: 0,
            signature: String::new(),
        }
    }

    #[test]
    fn job_records_become_scalars_and_charts_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let sharp = SharpnessRecord {
            run: "r".into(),
            step: 7,
            base_loss: 0.25,
            extremes: Some(Extremes { lambda_max: 4.0, lambda_min: -1.0, ratio: 0.25, ..Default::default() }),
            trace: Some(TraceEstimate { trace: 12.5, std_error: 0.5, samples: 4, hvps: 4 }),
            measures: vec![Measure { name: "sam".into(), value: 0.125, ..Default::default() }],
            ..Default::default()
        };
        SharpnessRecord::put(&store, &sharp).unwrap();
        store::slices::put(&store, &parabola_slice("r", 7)).unwrap();
        // Another run's slice and an unfinished one stay out.
        store::slices::put(&store, &parabola_slice("other", 9)).unwrap();
        let mut partial = parabola_slice("r", 11);
        partial.values.done[0] = false;
        store::slices::put(&store, &partial).unwrap();

        let tb = dir.path().join("tb");
        let (mut log, _) = RunLog::open(&tb, "r", TensorChoice::default(), String::new()).unwrap();
        let w = log.jobs(&store).unwrap();
        assert_eq!(w.scalars, 10, "{w:?}");
        assert_eq!(log.jobs(&store).unwrap(), Written::default(), "nothing twice");
        let (scalars, images) = read_back(log.path());
        let at7 = |tag: &str| scalars[tag].as_slice() == [(7, scalars[tag][0].1)] && scalars[tag].len() == 1;
        for (tag, want) in [
            ("landscaped/sharpness/lambda_max", 4.0),
            ("landscaped/sharpness/lambda_min", -1.0),
            ("landscaped/sharpness/ratio", 0.25),
            ("landscaped/sharpness/trace", 12.5),
            ("landscaped/sharpness/trace_std_error", 0.5),
            ("landscaped/sharpness/base_loss", 0.25),
            ("landscaped/sharpness/measure/sam", 0.125),
            ("landscaped/slice/pca/centre_loss", 1.0),
            // The second difference of 1 + 3x² + 5y² is exact: 6 along x, 10 along y.
            ("landscaped/slice/pca/curvature_x", 6.0),
            ("landscaped/slice/pca/curvature_y", 10.0),
        ] {
            assert!(at7(tag), "{tag}: {:?}", scalars.get(tag));
            assert_eq!(scalars[tag][0].1, want as f32, "{tag}");
        }
        // Charts need a font; without one they are left out (and said so) while the scalars are there.
        if images.is_empty() {
            assert!(log.no_images, "no chart, and no missing font to say why");
        } else {
            assert_eq!(images, vec![("landscaped/image/slice_pca".to_string(), 7)]);
        }
    }

    #[test]
    fn stability_and_spectra_records_become_scalars() {
        use crate::store::spectra::SpectraRecord;
        use crate::store::stability::{Against, StabilityRecord};
        use landscaped_maths::spectra::metrics::Summary;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let row = |q: &str, value: f64, threshold: f64| Against {
            quantity: q.into(),
            value,
            threshold,
            ratio: value / threshold,
            ..Default::default()
        };
        let stab = StabilityRecord {
            run: "r".into(),
            step: 5,
            rows: vec![row("lambda_max", 9.0, 10.0), row("preconditioned_lambda_1", 760.0, 380.0)],
            ..Default::default()
        };
        StabilityRecord::put(&store, &stab).unwrap();
        let summary = Summary {
            layers: 4,
            fitted: 3,
            mean_alpha: 3.5,
            mean_alpha_weighted: 1.25,
            mean_log_norm: 0.5,
            mean_log_spectral_norm: 0.25,
            mean_stable_rank: 7.0,
            frac_alpha_below_2: 1.0 / 3.0,
            exact: true,
        };
        let spec = SpectraRecord { run: "r".into(), step: 6, summary: Some(summary), ..Default::default() };
        SpectraRecord::put(&store, &spec).unwrap();
        // A record without a summary (every layer refused) gives nothing.
        SpectraRecord::put(&store, &SpectraRecord { run: "r".into(), step: 8, ..Default::default() })
            .unwrap();

        let tb = dir.path().join("tb");
        let (mut log, _) = RunLog::open(&tb, "r", TensorChoice::default(), String::new()).unwrap();
        let w = log.jobs(&store).unwrap();
        assert_eq!(w.scalars, 6 + 7, "{w:?}");
        assert_eq!(log.jobs(&store).unwrap(), Written::default(), "nothing twice");
        let (scalars, _) = read_back(log.path());
        for (tag, step, want) in [
            ("landscaped/stability/lambda_max/ratio", 5, 0.9),
            ("landscaped/stability/lambda_max/value", 5, 9.0),
            ("landscaped/stability/lambda_max/threshold", 5, 10.0),
            ("landscaped/stability/preconditioned_lambda_1/ratio", 5, 2.0),
            ("landscaped/spectra/mean_alpha", 6, 3.5),
            ("landscaped/spectra/alpha_below_2_fraction", 6, 1.0 / 3.0),
            ("landscaped/spectra/mean_alpha_weighted", 6, 1.25),
            ("landscaped/spectra/layers_fitted", 6, 3.0),
        ] {
            assert_eq!(scalars.get(tag).map(|v| v.as_slice()), Some(&[(step, want as f32)][..]), "{tag}");
        }
    }
}
