//! `ringway-controlplane --spawn-dataplane`: the controlplane and a supervised dataplane in one process
//! tree, for containers, whose entrypoint must start and look after both.
//!
//! ```text
//! start ─► controlplane serving its socket ─► dataplane child ─┬─ exits: log how, restart (back-off);
//!          (in this process)                  (same socket)    │  K short runs in a row: give up (4)
//!                                                              ├─ SIGTERM/SIGINT: forward SIGTERM, wait for
//!                                                              │  it to drain (capped), stop controlplane
//!                                                              └─ controlplane fails: drain dataplane (3)
//! ```
//!
//! Order matters on the way down: the dataplane drains first (its `/status` says DRAINING while it still
//! accepts for its grace period, then its connections finish), while the controlplane keeps serving it;
//! only then does the controlplane stop. The exit status tells an orchestrator what happened
//! ([`Exit`]).
//!
//! Under systemd the two units do this job (and more: zero-drop upgrades); the supervisor is for places
//! where there is no service manager, and it is ours so that it is tested like the rest.

mod child;
mod restart;

use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{error, info, warn};

use crate::startup::config::Config;
use crate::startup::logging::LogFormat;
use crate::startup::readiness;
use crate::startup::supervisor_args::{DataplaneCommand, SupervisorArgs};
use child::{Dataplane, describe, stopped_cleanly};
use restart::{Decision, RestartPolicy};

/// How long the controlplane may take to stop once the dataplane is gone. It has nothing to drain (it
/// closes its sessions and removes its socket), so this only bounds a bug.
const CONTROLPLANE_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The supervisor's exit statuses. Stable: orchestrators and operators' scripts act on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Stopped by SIGTERM/SIGINT: the dataplane drained and exited 0, then the controlplane stopped.
    Clean = 0,
    /// The supervisor could not start: no dataplane binary, or signal handlers could not be installed.
    /// (Status 2 is left to the command-line parser, which uses it for usage errors.)
    SupervisorFailed = 1,
    /// The controlplane failed to start (bad services file, socket already served, …) or stopped on its
    /// own; a running dataplane was drained first.
    ControlplaneFailed = 3,
    /// The dataplane exited soon after starting `--dataplane-max-start-failures` times in a row.
    DataplaneKeptCrashing = 4,
    /// After SIGTERM the dataplane did not exit within `--dataplane-stop-timeout` and was killed.
    DataplaneStopTimeout = 5,
    /// After SIGTERM the dataplane exited with a failure instead of draining cleanly.
    DataplaneDrainFailed = 6,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// SIGTERM and SIGINT, handled alike (`docker stop` sends the first, Ctrl-C the second).
struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// The name of the next stop signal received.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

type ControlplaneTask = JoinHandle<anyhow::Result<()>>;

/// Runs the controlplane and a supervised dataplane until a stop signal, or until one of them fails for
/// good. Must be driven by `block_on` on the main thread, not spawned: see [`Dataplane::spawn`].
pub async fn run(config: Config, args: SupervisorArgs, log_format: LogFormat) -> Exit {
    let command = match args.dataplane_command(&config.socket, log_format) {
        Ok(command) => command,
        Err(e) => {
            error!("cannot supervise a dataplane: {e}");
            return Exit::SupervisorFailed;
        }
    };
    let mut signals = match StopSignals::install() {
        Ok(signals) => signals,
        Err(e) => {
            error!("cannot handle SIGTERM/SIGINT: {e}");
            return Exit::SupervisorFailed;
        }
    };

    let (stop_controlplane, stopped) = oneshot::channel::<()>();
    let mut controlplane: ControlplaneTask = tokio::spawn(crate::run_until(config, async move {
        let _ = stopped.await;
    }));
    tokio::select! {
        result = &mut controlplane => {
            report_controlplane_end(result);
            return Exit::ControlplaneFailed;
        }
        signal = signals.recv() => {
            info!(signal, "stop signal before the dataplane was started");
            return stop(stop_controlplane, controlplane, Exit::Clean).await;
        }
        () = readiness::wait_serving() => {}
    }

    let supervisor = Supervisor {
        command,
        policy: RestartPolicy::new(args.dataplane_min_uptime, args.dataplane_max_start_failures),
        stop_timeout: args.dataplane_stop_timeout,
        signals,
        controlplane,
    };
    supervisor.run(stop_controlplane).await
}

struct Supervisor {
    command: DataplaneCommand,
    policy: RestartPolicy,
    stop_timeout: Duration,
    signals: StopSignals,
    controlplane: ControlplaneTask,
}

/// How supervising the dataplane ended.
enum Outcome {
    /// Asked to stop; the dataplane (if one was running) drained with this result.
    Stopped(Exit),
    /// The dataplane kept crashing at start-up.
    GaveUp,
    /// The controlplane task ended (the dataplane has been drained since).
    ControlplaneEnded,
}

impl Supervisor {
    async fn run(mut self, stop_controlplane: oneshot::Sender<()>) -> Exit {
        match self.supervise().await {
            Outcome::Stopped(exit) => stop(stop_controlplane, self.controlplane, exit).await,
            Outcome::GaveUp => {
                stop(
                    stop_controlplane,
                    self.controlplane,
                    Exit::DataplaneKeptCrashing,
                )
                .await
            }
            Outcome::ControlplaneEnded => Exit::ControlplaneFailed,
        }
    }

    async fn supervise(&mut self) -> Outcome {
        loop {
            let ran = match Dataplane::spawn(&self.command) {
                Ok(mut dataplane) => {
                    info!(pid = dataplane.pid(), program = %self.command.program.display(),
                          args = ?self.command.args, "dataplane started");
                    tokio::select! {
                        status = dataplane.wait() => {
                            let ran = dataplane.uptime();
                            match status {
                                Ok(status) => warn!(pid = dataplane.pid(), status = %describe(status),
                                                    ran_ms = ran.as_millis() as u64, "dataplane exited"),
                                Err(e) => warn!(pid = dataplane.pid(), error = %e,
                                                "lost track of the dataplane"),
                            }
                            ran
                        }
                        signal = self.signals.recv() => {
                            info!(signal, pid = dataplane.pid(),
                                  "stopping: the dataplane drains first, then the controlplane stops");
                            return Outcome::Stopped(self.drain(&mut dataplane).await);
                        }
                        result = &mut self.controlplane => {
                            report_controlplane_end(result);
                            warn!(pid = dataplane.pid(),
                                  "draining the dataplane before exiting; it serves its last routes meanwhile");
                            self.drain(&mut dataplane).await;
                            return Outcome::ControlplaneEnded;
                        }
                    }
                }
                Err(e) => {
                    warn!(program = %self.command.program.display(), error = %e,
                          "cannot start the dataplane");
                    Duration::ZERO
                }
            };

            match self.policy.after_exit(ran) {
                Decision::Restart { delay, short_runs } => {
                    info!(
                        delay_ms = delay.as_millis() as u64,
                        short_runs, "restarting the dataplane"
                    );
                    tokio::select! {
                        () = sleep(delay) => {}
                        signal = self.signals.recv() => {
                            info!(signal, "stopping while no dataplane runs");
                            return Outcome::Stopped(Exit::Clean);
                        }
                        result = &mut self.controlplane => {
                            report_controlplane_end(result);
                            return Outcome::ControlplaneEnded;
                        }
                    }
                }
                Decision::GiveUp { short_runs } => {
                    error!(
                        short_runs,
                        min_uptime_ms = self.policy.min_uptime().as_millis() as u64,
                        "the dataplane kept crashing at start-up: it exited {short_runs} times in a row, \
                         each time sooner than --dataplane-min-uptime after starting; giving up (see its \
                         errors above)"
                    );
                    return Outcome::GaveUp;
                }
            }
        }
    }

    /// Forwards SIGTERM and waits for the dataplane to drain, at most `stop_timeout`. Another stop signal
    /// meanwhile is forwarded too: the dataplane then ends its grace period at once (an impatient
    /// operator's second Ctrl-C).
    async fn drain(&mut self, dataplane: &mut Dataplane) -> Exit {
        dataplane.terminate();
        let deadline = Instant::now() + self.stop_timeout;
        loop {
            tokio::select! {
                status = dataplane.wait() => {
                    return match status {
                        Ok(status) if stopped_cleanly(status) => {
                            info!(pid = dataplane.pid(), status = %describe(status), "dataplane drained and exited");
                            Exit::Clean
                        }
                        Ok(status) => {
                            error!(pid = dataplane.pid(), status = %describe(status),
                                   "the dataplane failed while draining");
                            Exit::DataplaneDrainFailed
                        }
                        Err(e) => {
                            error!(pid = dataplane.pid(), error = %e, "lost track of the draining dataplane");
                            Exit::DataplaneDrainFailed
                        }
                    };
                }
                signal = self.signals.recv() => {
                    info!(signal, pid = dataplane.pid(), "another stop signal: the dataplane ends its grace period now");
                    dataplane.terminate();
                }
                () = sleep_until(deadline) => {
                    error!(pid = dataplane.pid(), stop_timeout_ms = self.stop_timeout.as_millis() as u64,
                           "the dataplane did not exit within --dataplane-stop-timeout; killing it");
                    if let Err(e) = dataplane.kill().await {
                        error!(pid = dataplane.pid(), error = %e, "cannot kill the dataplane");
                    }
                    return Exit::DataplaneStopTimeout;
                }
            }
        }
    }
}

/// Stops the controlplane and returns `exit`, or [`Exit::ControlplaneFailed`] if it does not stop well.
async fn stop(
    stop_controlplane: oneshot::Sender<()>,
    mut controlplane: ControlplaneTask,
    exit: Exit,
) -> Exit {
    let _ = stop_controlplane.send(());
    match tokio::time::timeout(CONTROLPLANE_STOP_TIMEOUT, &mut controlplane).await {
        Ok(Ok(Ok(()))) => {
            info!(code = exit.code(), "supervisor exiting");
            exit
        }
        Ok(result) => {
            report_controlplane_end(result);
            Exit::ControlplaneFailed
        }
        Err(_) => {
            controlplane.abort();
            error!(
                timeout_ms = CONTROLPLANE_STOP_TIMEOUT.as_millis() as u64,
                "the controlplane did not stop in time"
            );
            Exit::ControlplaneFailed
        }
    }
}

fn report_controlplane_end(result: Result<anyhow::Result<()>, tokio::task::JoinError>) {
    match result {
        Ok(Ok(())) => error!("the controlplane stopped unexpectedly"),
        Ok(Err(e)) => error!("controlplane failed: {e:#}"),
        Err(e) => error!("controlplane crashed: {e}"),
    }
}
