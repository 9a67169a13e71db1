//! A controlplane and a dataplane wired together on a services file, in a temporary directory.

use std::path::Path;

use crate::procs::{Controlplane, Dataplane};
use crate::services::{Service, ServicesFile};

/// Fields drop in order: the processes first (their logs are printed if the test failed), the directory
/// holding those logs last.
pub struct Harness {
    pub dataplane: Dataplane,
    pub controlplane: Controlplane,
    pub services: ServicesFile,
    pub dir: tempfile::TempDir,
}

impl Harness {
    /// Starts both processes and waits until the dataplane applied the first snapshot.
    pub fn start(
        services: &[Service],
        controlplane_args: &[&str],
        dataplane_args: &[&str],
    ) -> Self {
        Self::start_limited(services, controlplane_args, dataplane_args, None)
    }

    /// Like [`Harness::start`], with the dataplane's RLIMIT_NOFILE set to `nofile` (see
    /// [`Dataplane::start_limited`]).
    pub fn start_limited(
        services: &[Service],
        controlplane_args: &[&str],
        dataplane_args: &[&str],
        nofile: Option<u64>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = ServicesFile::new(dir.path());
        file.write(services);
        let controlplane = Controlplane::start(dir.path(), &file.path, controlplane_args);
        let mut dataplane =
            Dataplane::start_limited(dir.path(), &controlplane.socket, dataplane_args, nofile);
        dataplane.wait_applied(1);
        Self {
            dir,
            services: file,
            controlplane,
            dataplane,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites the services file and waits until the dataplane applied the resulting snapshot.
    pub fn reconfigure(&mut self, services: &[Service]) -> u64 {
        let before = self.dataplane.applied_versions().len();
        self.services.write(services);
        self.dataplane.wait_applied(before + 1)
    }
}
