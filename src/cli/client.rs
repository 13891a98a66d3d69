//! The CLI's client for the daemon's API (ureq), and [`query_or_open`]: query commands open the store
//! directly when no daemon holds it, and ask the daemon when one does, printing the same table.
//!
//! Which daemon: `--endpoint URL` / `$LANDSCAPED_ENDPOINT` if given. Else, when the store is locked,
//! the daemon that holds it tells where it listens in `<data_dir>/daemon.json`; failing that, the
//! `listen` address of the daemon config at `$LANDSCAPED_CONFIG` or `/etc/landscaped/landscaped.toml`,
//! else `http://127.0.0.1:9464`. A daemon is used only if its `/api/v1/identity` names the store that
//! was asked for (same store id, from `<data_dir>/store_id`); otherwise the command says precisely why
//! it cannot answer (no daemon.json, nothing listening, another store served there, a copied data dir
//! whose id was made for the original: [`crate::store::check_store_id`]).
//!
//! Timeouts: 3 s to connect; the identity check, asked before every query, must be answered within
//! 5 s, so a daemon that accepts and never answers (stopped, frozen) fails the command within seconds
//! with one line; a query then has 75 s (the daemon's own request limit is 60 s).
//!
//! For a query command (engineer B's `runs`, `checkpoints`, `norms`, `hist`):
//! ```ignore
//! let table = crate::cli::client::query_or_open(cli, "norms", &args, |store| norms_table(store, &args))?;
//! table.print(cli.format)?;
//! ```
//! where `args` is Serialize + Deserialize, and the daemon side registers
//! `QuerySpec { name: "norms", run: |s, v| norms_table(s, &serde_json::from_value(v)?) }` in
//! `crate::daemon::api::queries`.

use crate::cli::Cli;
use crate::store::{Store, StoreError};
use crate::table::Table;
use crate::table::table_from_json;
use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;

pub(crate) const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9464";
/// The media type of the records the daemon sends the CLI.
pub(crate) const MSGPACK: &str = "application/msgpack";
/// The largest records answer read (slices with their values, every sharpness record of a run).
const RECORDS_LIMIT: u64 = 1 << 30;

/// The daemon endpoint the CLI talks to (see the module doc).
pub fn endpoint(explicit: Option<&str>) -> String {
    if let Some(e) = explicit.filter(|e| !e.is_empty()) {
        return normalize(e);
    }
    if let Ok(e) = std::env::var("LANDSCAPED_ENDPOINT")
        && !e.is_empty()
    {
        return normalize(&e);
    }
    let cfg = std::env::var_os("LANDSCAPED_CONFIG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/etc/landscaped/landscaped.toml".into());
    if cfg.is_file()
        && let Ok(c) = crate::daemon::Config::load(&cfg)
    {
        return c.endpoint();
    }
    DEFAULT_ENDPOINT.to_string()
}

fn normalize(e: &str) -> String {
    let e = e.trim_end_matches('/');
    if e.starts_with("http://") || e.starts_with("https://") { e.to_string() } else { format!("http://{e}") }
}

/// Where a command's answer comes from: the store opened here, or the daemon that holds it.
pub(crate) enum Source {
    Local(Store),
    Daemon(Client),
}

/// The store when this process can open it; the daemon when `--endpoint` names one (a local store is
/// then never opened, nor created) or when the daemon holds the store's lock.
pub(crate) fn open_or_daemon(cli: &Cli) -> anyhow::Result<Source> {
    if let Some(e) = cli.endpoint.as_deref() {
        let client = Client::new(&endpoint(Some(e)));
        // Both named: make sure the daemon serves that data dir. Either way a daemon that does not
        // answer its identity within seconds is reported before the query waits on it.
        if cli.data_dir.is_some() {
            client.check_serves(&cli.data_dir())?;
        } else {
            client.identity()?;
        }
        return Ok(Source::Daemon(client));
    }
    let dir = cli.data_dir();
    match Store::open(&dir) {
        Ok(store) => Ok(Source::Local(store)),
        Err(StoreError::Locked(_)) => Ok(Source::Daemon(find_daemon(&dir)?)),
        Err(e) => Err(e.into()),
    }
}

/// The store, for a command that writes to it (or needs files beside it): refused with `--endpoint`,
/// which names a daemon to ask and never a local store to open or create.
pub(crate) fn open_local(cli: &Cli, command: &str) -> anyhow::Result<Store> {
    no_endpoint(cli, command)?;
    Ok(Store::open(&cli.data_dir())?)
}

/// Refuses `--endpoint` for a command that works on the store or the files beside it.
pub(crate) fn no_endpoint(cli: &Cli, command: &str) -> anyhow::Result<()> {
    if let Some(e) = cli.endpoint.as_deref().filter(|e| !e.is_empty()) {
        anyhow::bail!(
            "`{command}` works on the store itself, not through the daemon's API: drop --endpoint {e} \
             (or unset LANDSCAPED_ENDPOINT) and run it where the store is"
        );
    }
    Ok(())
}

/// Runs a query against the local store, or, when the daemon holds it (or `--endpoint` is given),
/// against the daemon's API.
pub(crate) fn query_or_open<A: Serialize>(
    cli: &Cli,
    name: &str,
    args: &A,
    local: impl FnOnce(&Store) -> anyhow::Result<Table>,
) -> anyhow::Result<Table> {
    local_or_daemon(cli, local, |client| client.query(name, args))
}

/// The records a command renders (slices, PCA, sharpness, ...): read from the local store by `local`,
/// or computed by the daemon with the same function (registered under `name` in
/// `crate::daemon::api::records`) and sent as MessagePack, so NaN and ±∞ arrive as they are stored and
/// the command prints the same either way.
pub(crate) fn records_or_open<A: Serialize, T: DeserializeOwned>(
    cli: &Cli,
    name: &str,
    args: &A,
    local: impl FnOnce(&Store) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    local_or_daemon(cli, local, |client| client.records(name, args))
}

/// `local` on the store opened here, or `remote` on the daemon that holds it ([`open_or_daemon`]).
pub(crate) fn local_or_daemon<T>(
    cli: &Cli,
    local: impl FnOnce(&Store) -> anyhow::Result<T>,
    remote: impl FnOnce(&Client) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    match open_or_daemon(cli)? {
        Source::Local(store) => local(&store),
        Source::Daemon(client) => remote(&client),
    }
}

/// The daemon holding the (locked) store in `dir`, checked by its identity.
pub(crate) fn find_daemon(dir: &std::path::Path) -> anyhow::Result<Client> {
    use crate::daemon::http::Identity;
    let file = dir.join(crate::daemon::server::DAEMON_JSON);
    let held = format!("the store at {} is locked by another process", dir.display());
    let recorded: Option<Identity> = match std::fs::read_to_string(&file) {
        Ok(text) => Some(
            serde_json::from_str(&text)
                .with_context(|| format!("{held}, and {} cannot be read", file.display()))?,
        ),
        Err(_) => None,
    };
    let url = match &recorded {
        Some(id) => normalize(&id.listen),
        None => endpoint(None),
    };
    let client = Client::new(&url);
    match client.check_serves(dir) {
        Ok(()) => Ok(client),
        Err(e) => match &recorded {
            Some(id) => Err(e.context(format!(
                "{held} (pid {}, which {} says listens on {})",
                id.pid,
                file.display(),
                id.listen
            ))),
            None => Err(e.context(format!(
                "{held} and has no {} (a running daemon writes it; is another command using the store?); tried {url}",
                file.display()
            ))),
        },
    }
}

/// How long the CLI waits for a connection to the daemon.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the identity check (`/api/v1/identity`, asked first) may take in all: a daemon that
/// accepts and never answers (frozen, stopped, swapping) is told apart within seconds.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a query may take in all: the daemon's own request limit (60 s by default) and a margin.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(75);

/// A small blocking client for the daemon's HTTP API.
pub(crate) struct Client {
    base: String,
    /// For the identity check: seconds.
    probe: ureq::Agent,
    /// For queries: the daemon's request limit.
    agent: ureq::Agent,
}

fn agent(total: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_send_request(Some(PROBE_TIMEOUT))
        .timeout_global(Some(total))
        .http_status_as_error(false)
        .build()
        .new_agent()
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client { base: normalize(base), probe: agent(PROBE_TIMEOUT), agent: agent(QUERY_TIMEOUT) }
    }

    /// The daemon's address, as asked.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The daemon's `/api/v1/identity`, within [`PROBE_TIMEOUT`].
    pub fn identity(&self) -> anyhow::Result<crate::daemon::http::Identity> {
        let url = format!("{}/api/v1/identity", self.base);
        let v = self.call(self.probe.get(&url).call(), &url)?;
        serde_json::from_value(v).with_context(|| format!("{}: not a landscaped identity", self.base))
    }

    /// Ok if this daemon serves the store in `dir` (same store id; the store must have one).
    pub(crate) fn check_serves(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        let want = crate::store::read_store_id(dir);
        let id = self.identity()?;
        match want {
            Some(w) if w == id.store_id => Ok(()),
            Some(w) => anyhow::bail!(
                "the daemon at {} (pid {}) serves another store: {} (id {}), not {} (id {w})",
                self.base,
                id.pid,
                id.data_dir,
                id.store_id,
                dir.display()
            ),
            None => {
                if let crate::store::StoreIdCheck::Copied { from, .. } = crate::store::check_store_id(dir) {
                    anyhow::bail!(
                        "{} is a copy of the store in {from} (its store id was made there), so the daemon at \
                         {} (which serves {}) is not taken to serve it; open the copy once without --endpoint \
                         to give it its own id",
                        dir.display(),
                        self.base,
                        id.data_dir
                    )
                }
                anyhow::bail!(
                    "{} has no store id ({}), so the daemon at {} cannot be matched to it (it serves {})",
                    dir.display(),
                    crate::store::STORE_ID_FILE,
                    self.base,
                    id.data_dir
                )
            }
        }
    }

    /// `POST /api/v1/query/{name}` with the arguments; the table the daemon computed.
    pub fn query<A: Serialize>(&self, name: &str, args: &A) -> anyhow::Result<Table> {
        let body = serde_json::to_string(args)?;
        let url = format!("{}/api/v1/query/{name}", self.base);
        let v = self.call(
            self.agent.post(&url).header("content-type", "application/json").send(body.as_str()),
            &url,
        )?;
        table_from_json(&v).with_context(|| format!("{url}: unexpected answer"))
    }

    /// `POST /api/v1/records/{name}` with the arguments, asking for MessagePack; the records decoded.
    pub fn records<A: Serialize, T: DeserializeOwned>(&self, name: &str, args: &A) -> anyhow::Result<T> {
        let body = serde_json::to_string(args)?;
        let url = format!("{}/api/v1/records/{name}", self.base);
        let res = self
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", MSGPACK)
            .send(body.as_str());
        let mut res =
            res.map_err(|e| anyhow::anyhow!("cannot reach the daemon at {url}: {}", describe_ureq(&e)))?;
        let status = res.status();
        let bytes = res
            .body_mut()
            .with_config()
            .limit(RECORDS_LIMIT)
            .read_to_vec()
            .with_context(|| format!("{url}: reading the answer"))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| text.into_owned());
            anyhow::bail!("daemon at {url}: {status}: {msg}");
        }
        rmp_serde::from_slice(&bytes).with_context(|| format!("{url}: unexpected answer"))
    }

    fn call(
        &self,
        res: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        url: &str,
    ) -> anyhow::Result<Value> {
        let mut res =
            res.map_err(|e| anyhow::anyhow!("cannot reach the daemon at {url}: {}", describe_ureq(&e)))?;
        let status = res.status();
        let text = res.body_mut().read_to_string().with_context(|| format!("{url}: reading the answer"))?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{url}: answer is not JSON"))?;
        if !status.is_success() {
            let msg = v.get("error").and_then(|e| e.as_str()).unwrap_or(&text).to_string();
            anyhow::bail!("daemon at {url}: {status}: {msg}");
        }
        Ok(v)
    }
}

/// A transport error in a few words ("connection refused", "timed out").
fn describe_ureq(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused (nothing listens there)".into()
        }
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::Timeout(ureq::Timeout::Connect) => {
            format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())
        }
        ureq::Error::Timeout(t) => {
            format!("no answer in time ({t} timed out; is the daemon frozen or overloaded?)")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::table_to_json;

    #[test]
    fn table_round_trips_through_json() {
        let mut t = Table::new(["step", "norm"]);
        t.push(vec![10.into(), 1.5.into()]);
        let back = table_from_json(&table_to_json(&t)).unwrap();
        assert_eq!(back.headers, t.headers);
        assert_eq!(back.rows, t.rows);
    }

    #[test]
    fn endpoints_are_normalized() {
        assert_eq!(endpoint(Some("127.0.0.1:1234/")), "http://127.0.0.1:1234");
        assert_eq!(endpoint(Some("http://h:1")), "http://h:1");
    }
}
