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
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::dfp::{self, DfpError, Registration};
use super::policy::{RegistrationPolicy, listens_overlap};
use crate::model::Catalog;
use crate::model::SourceId;
use crate::pipeline::compiler::{Compiled, compile};
use crate::pipeline::intake::{Applied, ApplyError, Input, submit};
use crate::pipeline::overrides::{Edit, LegacyOverrides, Overrides};
use crate::pipeline::publisher::Publisher;
use crate::sources::SourceHandle;

/// The API source's name in `/v1/sources` and in merge notes.
pub const API_SOURCE: &str = "api";
/// Version of the state file's layout: 2 keys overrides by listen address; 1 (read, never written) keyed
/// them by service name.
pub const STATE_FORMAT: u32 = 2;
/// The name-keyed layout, still read.
const STATE_FORMAT_BY_NAME: u32 = 1;

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

/// A state file of format 1: overrides keyed by service name.
#[derive(Debug, Deserialize)]
struct SavedStateByName {
    #[serde(default)]
    services: BTreeMap<String, Registration>,
    #[serde(default)]
    overrides: LegacyOverrides,
}

impl From<SavedStateByName> for SavedState {
    fn from(old: SavedStateByName) -> Self {
        Self {
            format: STATE_FORMAT,
            services: old.services,
            overrides: Overrides {
                by_name: old.overrides,
                ..Overrides::default()
            },
        }
    }
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
    /// The registration is not allowed ([`RegistrationPolicy`]); nothing changed.
    #[error("{0}")]
    Refused(DfpError),
}

/// What the API changes, shared by its handlers.
#[derive(Debug)]
pub struct ApiState {
    handle: SourceHandle,
    publisher: Arc<Publisher>,
    listen_ip: IpAddr,
    /// The shared HTTP port, where HTTP destinations without `srcPort` are served.
    vhost_port: u16,
    file: Option<PathBuf>,
    /// The registrations; the lock also serialises every change with its write to the file.
    services: Mutex<BTreeMap<String, Registration>>,
}

impl ApiState {
    /// Restores the state file (if any) into the publisher and reports the restored registrations through
    /// `handle`. A missing file is an empty state; a file that does not parse is moved aside (to
    /// `<file>.corrupt`) and logged, so bad input never keeps the controlplane from starting. A
    /// registration `policy` refuses now is dropped with a warning (see
    /// [`RegistrationPolicy::check_restored`]); the file loses it with the next change.
    pub async fn start(
        handle: SourceHandle,
        publisher: Arc<Publisher>,
        listen_ip: IpAddr,
        vhost_port: u16,
        file: Option<PathBuf>,
        policy: &RegistrationPolicy,
    ) -> Result<Self, StateError> {
        let mut saved = match &file {
            Some(path) => load(path)?,
            None => SavedState::default(),
        };
        saved.services.retain(|name, registration| match policy.check_restored(registration) {
            Ok(()) => true,
            Err(e) => {
                warn!(
                    service = name,
                    field = e.field,
                    error = e.message,
                    "API registration in the state file not restored: the API's limits refuse it now"
                );
                false
            }
        });
        while saved.services.len() > policy.max_registrations {
            if let Some((name, _)) = saved.services.pop_last() {
                warn!(
                    service = name,
                    max_registrations = policy.max_registrations,
                    "API registration in the state file not restored: more than --api-max-registrations"
                );
            }
        }
        if !saved.overrides.is_empty() || !saved.services.is_empty() {
            info!(
                services = saved.services.len(),
                overrides = saved.overrides.backend_count(),
                switches = saved.overrides.switches.len() + saved.overrides.by_name.switches.len(),
                "API state restored"
            );
        }
        publisher.restore_overrides(saved.overrides);
        let state = Self {
            handle,
            publisher,
            listen_ip,
            vhost_port,
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
        dfp::catalog(services.values(), self.listen_ip, self.vhost_port)
    }

    /// The registrations, for the API's views.
    pub async fn registrations(&self) -> BTreeMap<String, Registration> {
        self.services.lock().await.clone()
    }

    /// Registers (or replaces) a docker-flow-proxy service, if `policy` allows it: a new name only below
    /// the cap, a listen address another source serves only with `--api-allow-merge`. (Ports and
    /// backends are checked before, by the caller.)
    pub async fn reconfigure(
        &self,
        registration: Registration,
        policy: &RegistrationPolicy,
    ) -> Result<Applied, StateError> {
        let mut services = self.services.lock().await;
        if !services.contains_key(&registration.service_name)
            && services.len() >= policy.max_registrations
        {
            return Err(StateError::Refused(DfpError {
                status: 409,
                field: "serviceName".into(),
                message: format!(
                    "serviceName: {} services are registered, as many as --api-max-registrations \
                     allows; remove one first",
                    services.len()
                ),
            }));
        }
        if !policy.allow_merge {
            self.check_not_owned(&registration)?;
        }
        let mut next = services.clone();
        let name = registration.service_name.clone();
        next.insert(name.clone(), registration);
        let applied = self.publish(&services, &next).await?;
        *services = next;
        log_change("API service registered", &name, applied);
        self.save(&services, applied)?;
        Ok(applied)
    }

    /// Refuses a destination whose listen address another source serves.
    fn check_not_owned(&self, registration: &Registration) -> Result<(), StateError> {
        // HTTP destinations share their listener with other HTTP services by design (the compiler keeps
        // their routes apart); a TCP one would take over another source's listener.
        for destination in registration
            .destinations
            .iter()
            .filter(|d| d.mode == crate::model::ServiceMode::Tcp)
        {
            let Some(src_port) = destination.src_port else {
                continue;
            };
            let listen = SocketAddr::new(self.listen_ip, src_port);
            let owner = self
                .publisher
                .find_listener(self.handle.id(), |other| listens_overlap(listen, other));
            if let Some((source, name, address)) = owner {
                let field = if destination.index == 0 {
                    "srcPort".to_string()
                } else {
                    format!("srcPort.{}", destination.index)
                };
                return Err(StateError::Refused(DfpError {
                    status: 409,
                    message: format!(
                        "{field}: {listen} is served by {name:?} on {address} from the source {source}; \
                         registering there would add backends to it (allow with --api-allow-merge)"
                    ),
                    field,
                }));
            }
        }
        Ok(())
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
            service = %service,
            backend = %backend,
            state = value.state.map(|s| s.to_string()),
            weight = value.weight,
            version,
            changed,
            "override set"
        ),
        Edit::Clear { service, backend } => {
            info!(service = %service, backend = %backend, version, changed, "override cleared")
        }
        Edit::Switch { service, backends } => info!(
            service = %service,
            backends = ?backends,
            version,
            changed,
            "switch set"
        ),
        Edit::ClearSwitch { service } => {
            info!(service = %service, version, changed, "switch cleared")
        }
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
    match parse(&text) {
        Ok(state) => Ok(state),
        Err(why) => {
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

/// A state file's content, of the current format or of format 1.
fn parse(text: &str) -> Result<SavedState, String> {
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let format = serde_json::from_str::<Format>(text)
        .map_err(|e| e.to_string())?
        .format;
    match format {
        STATE_FORMAT => serde_json::from_str::<SavedState>(text).map_err(|e| e.to_string()),
        STATE_FORMAT_BY_NAME => serde_json::from_str::<SavedStateByName>(text)
            .map(SavedState::from)
            .map_err(|e| e.to_string()),
        other => Err(format!(
            "format {other} is not {STATE_FORMAT} (or {STATE_FORMAT_BY_NAME})"
        )),
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
    use crate::pipeline::overrides::{AdminState, BackendOverride, ServiceRef};

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
            .entry("127.0.0.1:80".parse().unwrap())
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
            80,
            Some(file.clone()),
            &RegistrationPolicy::default(),
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
                src_port: Some(18080),
                port: backend_port,
                mode: ServiceMode::Tcp,
                hosts: vec!["127.0.0.1".into()],
                backends: vec![SocketAddr::from(([127, 0, 0, 1], backend_port))],
                service_path: Vec::new(),
                service_domain: Vec::new(),
                path_match: Default::default(),
            }],
            timeout_server_s: None,
            timeout_tunnel_s: None,
        };
        let policy = RegistrationPolicy::default();
        let good = state
            .reconfigure(registration(9000), &policy)
            .await
            .unwrap();
        assert!(good.changed);
        // Port 0 never comes out of the parser; here it stands for any catalog that does not compile.
        let err = state
            .reconfigure(registration(0), &policy)
            .await
            .unwrap_err();
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
        let again = state
            .reconfigure(registration(9000), &policy)
            .await
            .unwrap();
        assert_eq!((again.version, again.changed), (good.version, false));

        let bad_edit = Edit::Set {
            service: ServiceRef::Name("svc".into()),
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
    fn a_state_file_keyed_by_service_name_is_read_into_the_legacy_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-state.json");
        std::fs::write(
            &path,
            r#"{"format": 1, "services": {},
                "overrides": {"backends": {"web": {"127.0.0.1:1": {"state": "maint"}}},
                              "switches": {"app": ["127.0.0.1:2"]}}}"#,
        )
        .unwrap();
        let state = load(&path).unwrap();
        assert_eq!(state.format, STATE_FORMAT);
        assert!(state.overrides.backends.is_empty());
        assert_eq!(
            state.overrides.by_name.backends["web"][&"127.0.0.1:1".parse::<SocketAddr>().unwrap()]
                .state,
            Some(AdminState::Maint)
        );
        assert_eq!(state.overrides.by_name.switches["app"].len(), 1);
        // Written back in the current format, the legacy part round trips until it is adopted.
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), state);
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
