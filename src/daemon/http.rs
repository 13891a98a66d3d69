//! HTTP on tokio + axum: `/metrics` (Prometheus text format), `/healthz`, and the JSON API.
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | every metric, text exposition format 0.0.4 |
//! | `GET /healthz` | `{"status":"ok","ready":bool,"queued":n,"in_flight":n,"store":{...},"archive":{...}}`: 200 while store and archive writes succeed; 503 with `"status":"unhealthy"` and `store.error` / `archive.error` (the cause) after a failed write, until writes succeed again (reads go on meanwhile), and with `ingest.error` while an ingest has made no progress for longer than `stall_limit_secs`; `ready` false until the initial scan is done |
//! | `GET /api/v1/identity` | which store this daemon serves: `data_dir` (canonical), `store_id`, `pid`, `listen`, `version` (as in `daemon.json`) |
//! | `GET /api/v1/runs` | the runs in the store (`RunRecord`s) |
//! | `GET /api/v1/runs/{run}/checkpoints` | every `CheckpointRecord` of a run, by step |
//! | `GET /api/v1/runs/{run}/checkpoints/{step}/tensors` | the `TensorRecord`s (statistics, histograms) of one checkpoint |
//! | `GET /api/v1/runs/{run}/tensors?name=T` | one tensor's records over every step (norm history) |
//! | `GET /api/v1/runs/{run}/trajectory` | the run's latest trajectory PCA (`PcaRecord`: `steps`, `coords[i][k]`, `residuals`, `explained_variance_ratio`, ...); 404 until the `pca` job has run; `?all=true`: every PCA of the run, oldest first |
//! | `GET /api/v1/runs/{run}/trajectory/{step}` | the PCA whose newest step is `step` (a PCA's id within its run, the last of its `steps`) |
//! | `GET /api/v1/runs/{run}/slices` | the run's stored loss-landscape slices, one summary each (`id`, `step`, `kind`, `centre_loss`, `complete`, `points`, `created`), by id |
//! | `GET /api/v1/runs/{run}/slices/latest` (`.csv`) | the run's newest complete slice, as `/api/v1/slices/{id}` (`.csv`) answers |
//! | `GET /api/v1/runs/{run}/sharpness` | the run's latest `SharpnessRecord` (Hessian `extremes` with `converged`, `trace`, `measures`, ...; from the `sharpness` job or `landscaped sharpness`); `?all=true`: every record, by step; 404 until one is stored |
//! | `GET /api/v1/runs/{run}/sharpness/{step}` | the `SharpnessRecord` of that step (a sharpness record's id within its run) |
//! | `GET /api/v1/runs/{run}/stability`, `.../stability/{step}` | the same for `StabilityRecord` (each quantity's value, threshold and ratio; the optimizer as read) |
//! | `GET /api/v1/runs/{run}/spectra`, `.../spectra/{step}` | the same for `SpectraRecord` (every layer's α, α_weighted, norms, ...) |
//! | `GET /api/v1/slices/{id}` | one `SliceRecord` (how it was made, `values`: `xs`, `ys`, `loss`, `accuracy`, `done`) |
//! | `GET /api/v1/slices/{id}.csv` | its values as CSV, `ix,iy,x,y,loss,accuracy,done` (for Grafana's Infinity data source) |
//! | `POST /api/v1/query/{name}` | a CLI query ([`crate::daemon::api`]): body = the command's arguments as JSON, answer = `{"headers":[..],"rows":[[..]]}` |
//! | `POST /api/v1/records/{name}` | the records a CLI command renders itself ([`crate::daemon::api::records`]: slices, PCA, sharpness, ...): body = arguments as JSON, answer = MessagePack (`application/msgpack`, NaN and ±∞ kept); `pca` computes and stores a PCA |
//!
//! Store reads run on blocking threads. Errors answer `{"error": "..."}` with 400/404/500; a run name
//! that no run can have (NUL, `/`, control characters) is a 400. Every request must finish within
//! the request timeout (503 otherwise); connection limits are in [`crate::daemon::listener`].

use crate::daemon::api;
use crate::daemon::metrics::Metrics;
use crate::daemon::queue::WorkQueue;
use crate::store::checkpoints as ck;
use crate::store::sharpness::SharpnessRecord;
use crate::store::spectra::SpectraRecord;
use crate::store::stability::StabilityRecord;
use crate::store::{RunStepRecord, Store};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Store,
    pub archive_health: Arc<crate::daemon::health::ArchiveHealth>,
    pub metrics: Arc<Metrics>,
    pub queue: Arc<WorkQueue>,
    pub ready: Arc<AtomicBool>,
    pub identity: Arc<Identity>,
    pub request_timeout: std::time::Duration,
    /// Ingest progress: an item stuck longer than `stall_limit` makes `/healthz` 503.
    pub progress: Arc<crate::daemon::progress::Progress>,
    pub stall_limit: std::time::Duration,
}

/// Which store a daemon serves, as `/api/v1/identity` and `daemon.json` say.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Identity {
    /// The canonical data directory.
    pub data_dir: String,
    pub store_id: String,
    pub pid: u32,
    /// The address it listens on (`ip:port`).
    pub listen: String,
    pub version: String,
}

pub(crate) fn router(state: AppState) -> Router {
    let limit = state.request_timeout;
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/v1/identity", get(identity))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/runs/{run}/checkpoints", get(checkpoints))
        .route("/api/v1/runs/{run}/checkpoints/{step}/tensors", get(tensors))
        .route("/api/v1/runs/{run}/tensors", get(tensor_history))
        .route("/api/v1/runs/{run}/trajectory", get(trajectory))
        .route("/api/v1/runs/{run}/trajectory/{step}", get(trajectory_at))
        .route("/api/v1/runs/{run}/slices", get(run_slices))
        .route("/api/v1/runs/{run}/sharpness", get(run_records::<SharpnessRecord>))
        .route("/api/v1/runs/{run}/sharpness/{step}", get(record_at::<SharpnessRecord>))
        .route("/api/v1/runs/{run}/stability", get(run_records::<StabilityRecord>))
        .route("/api/v1/runs/{run}/stability/{step}", get(record_at::<StabilityRecord>))
        .route("/api/v1/runs/{run}/spectra", get(run_records::<SpectraRecord>))
        .route("/api/v1/runs/{run}/spectra/{step}", get(record_at::<SpectraRecord>))
        .route("/api/v1/runs/{run}/slices/{which}", get(run_slice_latest))
        .route("/api/v1/slices/{id}", get(slice))
        .route("/api/v1/query/{name}", post(query))
        .route("/api/v1/records/{name}", post(records))
        .layer(axum::middleware::from_fn(move |req, next| request_timeout(limit, req, next)))
        .with_state(state)
}

/// What a connection past the cap gets: `/healthz` and `/metrics` (scrapes keep their lane), 503 for
/// anything else.
pub(crate) fn overflow_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError(StatusCode::SERVICE_UNAVAILABLE, "too many open connections; try again".into())
        })
        .with_state(state)
}

async fn request_timeout(
    limit: std::time::Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request took longer than {} s", limit.as_secs_f64()),
        )
        .into_response(),
    }
}

/// A run name from the URL, refused (400) if no run can have it: `a%00` must not reach the keys.
fn valid_run(run: &str) -> Result<(), ApiError> {
    crate::store::keys::validate_run_name(run).map_err(|why| ApiError(StatusCode::BAD_REQUEST, why))
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl<E: std::fmt::Display> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    st.metrics.store_healthy.set(i64::from(st.store.health().is_none()));
    let body = tokio::task::spawn_blocking(move || st.metrics.render()).await.unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

async fn healthz(State(st): State<AppState>) -> impl IntoResponse {
    let health = st.store.health();
    let archive = st.archive_health.error();
    let stalled = st.progress.stalled(st.stall_limit).map(|(run, path, idle)| {
        format!(
            "ingest of {} (run {run}) has made no progress for {:.0} s (stall_limit_secs = {})",
            path.display(),
            idle.as_secs_f64(),
            st.stall_limit.as_secs_f64()
        )
    });
    let unhealthy = health.is_some() || archive.is_some() || stalled.is_some();
    let code = if unhealthy { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = serde_json::json!({
        "status": if unhealthy { "unhealthy" } else { "ok" },
        "ready": st.ready.load(Ordering::SeqCst),
        "queued": st.queue.len(),
        "in_flight": st.queue.in_flight(),
        "store": {
            "data_dir": st.identity.data_dir,
            "store_id": st.identity.store_id,
            "writable": health.is_none(),
            "error": health,
        },
        "archive": {
            "writable": archive.is_none(),
            "error": archive,
        },
        "ingest": {
            "stalled": stalled.is_some(),
            "error": stalled,
        },
    });
    (code, Json(body))
}

async fn identity(State(st): State<AppState>) -> Json<Identity> {
    Json((*st.identity).clone())
}

async fn runs(State(st): State<AppState>) -> Result<Json<Vec<ck::RunRecord>>, ApiError> {
    Ok(Json(blocking(move || Ok(ck::runs(&st.store)?)).await?))
}

async fn checkpoints(
    State(st): State<AppState>,
    Path(run): Path<String>,
) -> Result<Json<Vec<ck::CheckpointRecord>>, ApiError> {
    valid_run(&run)?;
    Ok(Json(blocking(move || Ok(ck::checkpoints(&st.store, &run)?)).await?))
}

async fn tensors(
    State(st): State<AppState>,
    Path((run, step)): Path<(String, u64)>,
) -> Result<Json<Vec<ck::TensorRecord>>, ApiError> {
    valid_run(&run)?;
    Ok(Json(blocking(move || Ok(ck::tensors(&st.store, &run, step)?)).await?))
}

#[derive(serde::Deserialize)]
struct TensorQuery {
    name: String,
}

async fn tensor_history(
    State(st): State<AppState>,
    Path(run): Path<String>,
    Query(q): Query<TensorQuery>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    valid_run(&run)?;
    let rows = blocking(move || {
        let mut out = Vec::new();
        for c in ck::checkpoints(&st.store, &run)? {
            if let Some(t) = ck::tensor(&st.store, &run, c.step, &q.name)? {
                out.push(serde_json::json!({ "step": c.step, "tensor": t }));
            }
        }
        Ok(out)
    })
    .await?;
    Ok(Json(rows))
}

#[derive(serde::Deserialize)]
struct AllQuery {
    #[serde(default)]
    all: bool,
}

/// The run's latest PCA, or (`?all=true`) every PCA of the run, oldest first.
async fn trajectory(
    State(st): State<AppState>,
    Path(run): Path<String>,
    Query(q): Query<AllQuery>,
) -> Result<Response, ApiError> {
    latest_or_all::<crate::store::trajectory::PcaRecord>(
        st,
        run,
        q.all,
        "no trajectory PCA for this run yet".into(),
    )
    .await
}

/// One PCA of a run by its id: the newest step it covers.
async fn trajectory_at(
    State(st): State<AppState>,
    Path((run, step)): Path<(String, u64)>,
) -> Result<Json<crate::store::trajectory::PcaRecord>, ApiError> {
    at_step(st, run, step, format!("no trajectory PCA ending at step {step}")).await
}

/// The run's latest record of a kind (one range query), or (`all`) every one of them by step; 404
/// with `none` when it has none.
async fn latest_or_all<R: RunStepRecord + Send + 'static>(
    st: AppState,
    run: String,
    all: bool,
    none: String,
) -> Result<Response, ApiError> {
    valid_run(&run)?;
    if all {
        let recs = blocking(move || Ok(R::list(&st.store, &run)?)).await?;
        return Ok(Json(recs).into_response());
    }
    let last = blocking(move || Ok(R::latest(&st.store, &run)?)).await?;
    let last = last.ok_or(ApiError(StatusCode::NOT_FOUND, none))?;
    Ok(Json(last).into_response())
}

/// The run's record of a kind at `step`; 404 with `none` when there is none.
async fn at_step<R: RunStepRecord + Send + 'static>(
    st: AppState,
    run: String,
    step: u64,
    none: String,
) -> Result<Json<R>, ApiError> {
    valid_run(&run)?;
    let rec = blocking(move || Ok(R::get(&st.store, &run, step)?)).await?;
    rec.map(Json).ok_or(ApiError(StatusCode::NOT_FOUND, none))
}

async fn run_slices(
    State(st): State<AppState>,
    Path(run): Path<String>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    valid_run(&run)?;
    let rows = blocking(move || {
        Ok(crate::store::slices::of_run(&st.store, &run)?
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "step": r.step,
                    "kind": r.kind(),
                    "centre_loss": r.centre_loss,
                    "complete": r.values.is_complete(),
                    "points": r.values.done.len(),
                    "created": r.created,
                })
            })
            .collect())
    })
    .await?;
    Ok(Json(rows))
}

/// The run's latest record of a kind filed by (run, step) — sharpness, stability, spectra — or
/// (`?all=true`) all of them by step; 404 naming the kind (its tree) when there is none.
async fn run_records<R: RunStepRecord + Send + 'static>(
    State(st): State<AppState>,
    Path(run): Path<String>,
    Query(q): Query<AllQuery>,
) -> Result<Response, ApiError> {
    latest_or_all::<R>(st, run, q.all, format!("no {} record for this run yet", R::TREE)).await
}

/// One record of such a kind by its step (its id within the run).
async fn record_at<R: RunStepRecord + Send + 'static>(
    State(st): State<AppState>,
    Path((run, step)): Path<(String, u64)>,
) -> Result<Json<R>, ApiError> {
    at_step(st, run, step, format!("no {} record at step {step}", R::TREE)).await
}

/// `NAME` or `NAME.csv`: the name and whether CSV was asked for.
fn csv_suffix(name: &str) -> (&str, bool) {
    match name.strip_suffix(".csv") {
        Some(n) => (n, true),
        None => (name.strip_suffix(".json").unwrap_or(name), false),
    }
}

/// `{id}` or `{id}.csv` (one route: the router takes a whole path segment).
async fn slice(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (num, csv) = csv_suffix(&id);
    let num: u64 = num
        .parse()
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("slice id {id:?} is not a number")))?;
    let rec = blocking(move || Ok(crate::store::slices::get(&st.store, num)?))
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no slice {num}")))?;
    slice_answer(rec, csv)
}

/// `latest` or `latest.csv`: the run's newest complete slice.
async fn run_slice_latest(
    State(st): State<AppState>,
    Path((run, which)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    valid_run(&run)?;
    let (name, csv) = csv_suffix(&which);
    if name != "latest" {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("expected latest or latest.csv, not {which:?}")));
    }
    let rec = blocking(move || {
        Ok(crate::store::slices::list(&st.store)?
            .into_iter()
            .filter(|r| r.run.as_deref() == Some(run.as_str()) && r.values.is_complete())
            .max_by_key(|r| r.id))
    })
    .await?
    .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "no complete slice for this run yet".into()))?;
    slice_answer(rec, csv)
}

fn slice_answer(rec: crate::store::slices::SliceRecord, csv: bool) -> Result<Response, ApiError> {
    if csv {
        let mut out = Vec::new();
        crate::landscape::export::write_csv(&rec.values, &mut out)?;
        Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response())
    } else {
        // NaN and ±∞ computed are "nan"/"inf"/"-inf", a point not computed is null
        // (crate::landscape::export).
        let mut v = serde_json::to_value(&rec)?;
        v["values"]["loss"] = crate::landscape::export::loss_cells(&rec.values).into();
        v["values"]["accuracy"] = crate::landscape::export::accuracy_cells(&rec.values).into();
        let (nan, inf) = rec.values.nonfinite_counts();
        v["values"]["nan_points"] = nan.into();
        v["values"]["inf_points"] = inf.into();
        Ok(Json(v).into_response())
    }
}

async fn query(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Json(args): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let spec = api::find(&name)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no query named {name:?}")))?;
    if let Some(run) = args.get("run").and_then(|r| r.as_str()) {
        valid_run(run)?;
    }
    let table = blocking(move || {
        (spec.run)(&st.store, args).map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{e:#}")))
    })
    .await?;
    Ok(Json(crate::table::table_to_json(&table)))
}

/// A records query ([`api::records`]): the records as MessagePack.
async fn records(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Json(args): Json<serde_json::Value>,
) -> Result<Response, ApiError> {
    let spec = api::find_records(&name)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no records query named {name:?}")))?;
    if let Some(run) = args.get("run").and_then(|r| r.as_str()) {
        valid_run(run)?;
    }
    let bytes = blocking(move || {
        (spec.run)(&st.store, args).map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{e:#}")))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/msgpack")], bytes).into_response())
}
