//! The API as a source: what docker-flow-proxy's calls registered, the changes the API makes, and the
//! state file that carries both across restarts.
//!
//! Every change is serialised by one lock, goes through the publisher (the registrations as this source's
//! catalog, overrides as edits), waits for the snapshot that carries it, and is then written to the state
//! file. The file is JSON, replaced atomically (a temporary file in the same directory, fsync, rename), so a
//! crash leaves the old or the new state, never half of one. Without a state file (`--api-state-file ''`)
//! registrations and overrides live as long as the process, as HAProxy's runtime changes do.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::dfp::{self, Registration};
use crate::model::Catalog;
use crate::model::SourceId;
use crate::pipeline::compiler::{Compiled, compile};
use crate::pipeline::intake::{Applied, ApplyError, Input, submit};
use crate::pipeline::overrides::{Edit, Overrides};
use crate::pipeline::publisher::Publisher;
use crate::sources::SourceHandle;

/// The API source's name in `/v1/sources` and in merge notes.
pub const API_SOURCE: &str = "api";
/// Version of the state file's layout.
pub const STATE_FORMAT: u32 = 1;

/// What the state file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    pub format: u32,
    /// docker-flow-proxy registrations, by service name.
    #[serde(default)]
    pub services: BTreeMap<String, Registration>,
    #[serde(default)]
    pub overrides: Overrides,
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// A change was applied (it is in the snapshot `applied`), but could not be saved.
    #[error("applied, but not saved (a restart would forget it): {0}")]
    NotSaved(Box<StateError>, Applied),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// What the API changes, shared by its handlers.
#[derive(Debug)]
pub struct ApiState {
    handle: SourceHandle,
    publisher: Arc<Publisher>,
    listen_ip: IpAddr,
    file: Option<PathBuf>,
    /// The registrations; the lock also serialises every change with its write to the file.
    services: Mutex<BTreeMap<String, Registration>>,
}

impl ApiState {
    /// Restores the state file (if any) into the publisher and reports the restored registrations through
    /// `handle`. A missing file is an empty state; a file that does not parse is moved aside (to
    /// `<file>.corrupt`) and logged, so bad input never keeps the controlplane from starting.
    pub async fn start(
        handle: SourceHandle,
        publisher: Arc<Publisher>,
        listen_ip: IpAddr,
        file: Option<PathBuf>,
    ) -> Result<Self, StateError> {
        let saved = match &file {
            Some(path) => load(path)?,
            None => SavedState::default(),
        };
        if !saved.overrides.is_empty() || !saved.services.is_empty() {
            info!(
                services = saved.services.len(),
                overrides = saved
                    .overrides
                    .backends
                    .values()
                    .map(BTreeMap::len)
                    .sum::<usize>(),
                switches = saved.overrides.switches.len(),
                "API state restored"
            );
        }
        publisher.restore_overrides(saved.overrides);
        let state = Self {
            handle,
            publisher,
            listen_ip,
            file,
            services: Mutex::new(saved.services),
        };
        let catalog = state.catalog(&*state.services.lock().await);
        if catalog.services.is_empty() {
            // Nothing registered: no catalog, so this source never holds back or triggers the first snapshot.
            state.handle.record_ok();
        } else {
            state
                .publisher
                .record(state.handle.id().clone(), catalog.clone());
            state.handle.publish(catalog).await;
        }
        Ok(state)
    }

    pub fn id(&self) -> &SourceId {
        self.handle.id()
    }

    fn catalog(&self, services: &BTreeMap<String, Registration>) -> Catalog {
        dfp::catalog(services.values(), self.listen_ip)
    }

    /// The registrations, for the API's views.
    pub async fn registrations(&self) -> BTreeMap<String, Registration> {
        self.services.lock().await.clone()
    }

    /// Registers (or replaces) a docker-flow-proxy service.
    pub async fn reconfigure(&self, registration: Registration) -> Result<Applied, StateError> {
        let mut services = self.services.lock().await;
        let mut next = services.clone();
        let name = registration.service_name.clone();
        next.insert(name.clone(), registration);
        let applied = self.publish(&services, &next).await?;
        *services = next;
        log_change("API service registered", &name, applied);
        self.save(&services, applied)?;
        Ok(applied)
    }

    /// Removes a docker-flow-proxy service; `None` if none of that name was registered.
    pub async fn remove(&self, name: &str) -> Result<Option<Applied>, StateError> {
        let mut services = self.services.lock().await;
        if !services.contains_key(name) {
            return Ok(None);
        }
        let mut next = services.clone();
        next.remove(name);
        let applied = self.publish(&services, &next).await?;
        *services = next;
        log_change("API service removed", name, applied);
        self.save(&services, applied)?;
        Ok(Some(applied))
    }

    /// Publishes `next` as this source's catalog. If the merged result does not compile, `current` is put
    /// back, so a refused call leaves nothing behind in the publisher either.
    async fn publish(
        &self,
        current: &BTreeMap<String, Registration>,
        next: &BTreeMap<String, Registration>,
    ) -> Result<Applied, StateError> {
        // The compiler leaves out a service that breaks an invariant on its own; a caller of the API is
        // told instead.
        compile(&self.catalog(next), self.publisher.settings())
            .and_then(Compiled::whole)
            .map_err(|e| ApplyError::Publish(e.to_string()))?;
        match self.handle.publish_and_wait(self.catalog(next)).await {
            Err(ApplyError::Publish(e)) => {
                self.publisher
                    .record(self.handle.id().clone(), self.catalog(current));
                Err(ApplyError::Publish(e).into())
            }
            other => Ok(other?),
        }
    }

    /// Applies an override edit. If the result does not compile, the previous overrides are put back.
    pub async fn edit(&self, edit: Edit) -> Result<Applied, StateError> {
        let services = self.services.lock().await;
        let before = self.publisher.inputs_view().overrides;
        let applied = match submit(self.handle.sink(), |reply| Input::Edit {
            edit: edit.clone(),
            reply,
        })
        .await
        {
            Err(ApplyError::Publish(e)) => {
                self.publisher.restore_overrides(before);
                return Err(ApplyError::Publish(e).into());
            }
            other => other?,
        };
        log_edit(&edit, applied);
        self.save(&services, applied)?;
        Ok(applied)
    }

    fn save(
        &self,
        services: &BTreeMap<String, Registration>,
        applied: Applied,
    ) -> Result<(), StateError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let state = SavedState {
            format: STATE_FORMAT,
            services: services.clone(),
            overrides: self.publisher.inputs_view().overrides,
        };
        save(path, &state).map_err(|e| {
            warn!("API change applied but not saved: {e}");
            self.handle.fail(&e);
            StateError::NotSaved(Box::new(e), applied)
        })
    }
}

fn log_change(what: &str, service: &str, applied: Applied) {
    info!(
        service,
        version = applied.version,
        changed = applied.changed,
        "{what}"
    );
}

fn log_edit(edit: &Edit, applied: Applied) {
    let (version, changed) = (applied.version, applied.changed);
    match edit {
        Edit::Set {
            service,
            backend,
            value,
        } => info!(
            service,
            backend = %backend,
            state = value.state.map(|s| s.to_string()),
            weight = value.weight,
            version,
            changed,
            "override set"
        ),
        Edit::Clear { service, backend } => {
            info!(service, backend = %backend, version, changed, "override cleared")
        }
        Edit::Switch { service, backends } => info!(
            service,
            backends = ?backends,
            version,
            changed,
            "switch set"
        ),
        Edit::ClearSwitch { service } => info!(service, version, changed, "switch cleared"),
    }
}

/// Reads the state file; see [`ApiState::start`] for what happens to a missing or broken one.
pub fn load(path: &Path) -> Result<SavedState, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SavedState::default()),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    match serde_json::from_str::<SavedState>(&text) {
        Ok(state) if state.format == STATE_FORMAT => Ok(state),
        outcome => {
            let why = match outcome {
                Ok(state) => format!("format {} is not {STATE_FORMAT}", state.format),
                Err(e) => e.to_string(),
            };
            let aside = path.with_extension("corrupt");
            let moved = std::fs::rename(path, &aside);
            warn!(
                path = %path.display(),
                moved_to = %aside.display(),
                moved = moved.is_ok(),
                "API state file unusable, starting without it: {why}"
            );
            Ok(SavedState::default())
        }
    }
}

/// Writes the state file atomically.
pub fn save(path: &Path, state: &SavedState) -> Result<(), StateError> {
    let write = || -> io::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(state).map_err(io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable once the directory is.
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|source| StateError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::overrides::{AdminState, BackendOverride};
    use std::net::SocketAddr;

    #[test]
    fn the_state_file_round_trips_and_a_broken_one_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/api-state.json");
        assert_eq!(
            load(&path).unwrap(),
            SavedState::default(),
            "missing: empty"
        );

        let mut state = SavedState {
            format: STATE_FORMAT,
            ..SavedState::default()
        };
        state
            .overrides
            .backends
            .entry("web".into())
            .or_default()
            .insert(
                "127.0.0.1:1".parse().unwrap(),
                BackendOverride {
                    state: Some(AdminState::Maint),
                    weight: None,
                },
            );
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), state);
        assert!(!path.with_extension("tmp").exists());

        std::fs::write(&path, "{ not json").unwrap();
        assert_eq!(load(&path).unwrap(), SavedState::default());
        assert!(path.with_extension("corrupt").exists());
        assert!(!path.exists());

        std::fs::write(&path, r#"{"format": 99}"#).unwrap();
        assert_eq!(
            load(&path).unwrap(),
            SavedState::default(),
            "unknown format"
        );
    }

    #[tokio::test]
    async fn a_change_that_does_not_compile_leaves_nothing_behind() {
        use crate::api::dfp::Destination;
        use crate::model::ServiceMode;
        use crate::pipeline::intake::catalog_channel;
        use crate::pipeline::intake::{self, Coalescing};
        use crate::sources::handle::SourceRegistry;

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api-state.json");
        let publisher = Arc::new(crate::pipeline::publisher::tests::publisher());
        let (sink, updates) = catalog_channel();
        let handle = SourceRegistry::new().handle(SourceId::new(API_SOURCE), sink);
        let state = ApiState::start(
            handle,
            Arc::clone(&publisher),
            IpAddr::from([127, 0, 0, 1]),
            Some(file.clone()),
        )
        .await
        .unwrap();
        tokio::spawn(intake::run(
            Arc::clone(&publisher),
            updates,
            Vec::new(),
            Coalescing::default(),
        ));
        let registration = |backend_port| Registration {
            service_name: "svc".into(),
            destinations: vec![Destination {
                index: 0,
                src_port: 18080,
                port: backend_port,
                mode: ServiceMode::Tcp,
                hosts: vec!["127.0.0.1".into()],
                backends: vec![SocketAddr::from(([127, 0, 0, 1], backend_port))],
                service_path: Vec::new(),
                service_domain: Vec::new(),
            }],
            timeout_server_s: None,
        };
        let good = state.reconfigure(registration(9000)).await.unwrap();
        assert!(good.changed);
        // Port 0 never comes out of the parser; here it stands for any catalog that does not compile.
        let err = state.reconfigure(registration(0)).await.unwrap_err();
        assert!(
            matches!(err, StateError::Apply(ApplyError::Publish(_))),
            "{err}"
        );
        let kept = &publisher.inputs_view().latest[state.id()];
        assert_eq!(
            kept.services[0].instances[0].address.port(),
            9000,
            "put back"
        );
        assert_eq!(state.registrations().await["svc"], registration(9000));
        assert_eq!(load(&file).unwrap().services["svc"], registration(9000));
        let again = state.reconfigure(registration(9000)).await.unwrap();
        assert_eq!((again.version, again.changed), (good.version, false));

        let bad_edit = Edit::Set {
            service: "svc".into(),
            backend: SocketAddr::from(([127, 0, 0, 1], 9000)),
            value: BackendOverride {
                state: None,
                weight: Some(0),
            },
        };
        let err = state.edit(bad_edit).await.unwrap_err();
        assert!(err.to_string().contains("weight"), "{err}");
        assert!(publisher.inputs_view().overrides.is_empty());
    }

    #[test]
    fn an_unwritable_state_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let err = save(&blocker.join("state.json"), &SavedState::default()).unwrap_err();
        assert!(err.to_string().starts_with("cannot write"), "{err}");
    }
}
