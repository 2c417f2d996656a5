//! The one driver of a node's maintenance, shared by `maintain`, each node of `roll`
//! and each NodeMaintenance of the controller: a pure [`next`] from what is recorded
//! and what was just observed to the one thing to do now, in the shape of
//! `drain/step.rs`. Every cordon decision is made here, so "never lift someone else's
//! cordon" holds in one place. The CLI carries commands out with [`drive`] and an
//! [`Executor`] that knows where the record lives (the node's annotations for a roll,
//! the run itself for `maintain`); the controller carries out one command per
//! reconcile into the NodeMaintenance's status.
use super::gate::Gates;
pub use crate::phase::Phase;

/// What a node's maintenance has recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// `None` before the start.
    pub phase: Option<Phase>,
    /// Someone else had cordoned the node before kordon came: that cordon is theirs to
    /// lift, never kordon's.
    pub was_unschedulable: bool,
}

/// The choices fixed when the maintenance starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// Wait for the node's DaemonSet pods before the uncordon.
    pub daemon_sets: bool,
    /// Wait for the drained workloads after it.
    pub workloads: bool,
    /// Uncordon when a phase fails; by default the node stays out for a person to look.
    pub uncordon_on_failure: bool,
}

impl Policy {
    pub fn new(gates: &Gates, uncordon_on_failure: bool) -> Self {
        Self {
            daemon_sets: gates.daemon_sets,
            workloads: gates.workloads,
            uncordon_on_failure,
        }
    }
}

/// One piece of a phase's work, carried out by the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Evict the node's pods.
    Drain,
    /// Wait until no VolumeAttachment names the node: the first task of the
    /// maintenance, so a resumed one looks again before its work.
    Detach,
    /// The maintenance itself: a command, a Job, a reboot, a person.
    Work,
    /// The node back: Ready, its kubelet alive since the work (`ready::is_back`).
    Ready,
    /// Its DaemonSet pods Ready: the gate before the uncordon.
    DaemonSets,
    /// The workloads its drain touched back at full Ready: the gate after it.
    Workloads,
}

impl Task {
    /// The phase the task belongs to.
    pub fn phase(self) -> Phase {
        match self {
            Task::Drain => Phase::Draining,
            Task::Detach | Task::Work => Phase::Maintaining,
            Task::Ready | Task::DaemonSets => Phase::AwaitingReady,
            Task::Workloads => Phase::Verifying,
        }
    }
}

/// What the executor saw since the last command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Nothing was done yet: the node is taken out of service.
    Start,
    /// A run that stopped (a crash, Ctrl-C, a new leader) takes the node up again.
    Resume,
    /// The record (and the cordon change with it) is written.
    Recorded,
    /// The task finished well.
    Did(Task),
    /// The current phase failed.
    Failed,
    /// The drain's deadline passed and its ladder abandoned it.
    Abandoned,
    /// The maintenance was withdrawn (its NodeMaintenance deleted).
    Withdrawn,
}

/// The one thing to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Write the record at `phase` and the cordon change that goes with it (`Some(true)`
    /// cordon, `Some(false)` uncordon) in one request.
    Record {
        phase: Phase,
        cordon: Option<bool>,
    },
    Run(Task),
    /// Record the failure, with this cordon change; the node stays where it is.
    Fail {
        cordon: Option<bool>,
    },
    /// Put the node back as it was before kordon came: the record goes, with this
    /// cordon change.
    PutBack {
        cordon: Option<bool>,
    },
    /// Nothing is left to do.
    Finish,
}

pub fn next(record: Record, policy: Policy, observed: Observed) -> Command {
    let ours = !record.was_unschedulable;
    let cordon = |wanted: bool, when: bool| (ours && when).then_some(wanted);
    // The uncordon enters `Verifying`: no other phase changes the cordon on the way.
    let enter = |phase| Command::Record {
        phase,
        cordon: cordon(false, phase == Phase::Verifying),
    };
    let at = record.phase.unwrap_or(Phase::Draining);
    let first = || match at {
        Phase::Draining => Command::Run(Task::Drain),
        Phase::Maintaining => Command::Run(Task::Detach),
        Phase::AwaitingReady => Command::Run(Task::Ready),
        Phase::Verifying if policy.workloads => Command::Run(Task::Workloads),
        Phase::Verifying => enter(Phase::Done),
        Phase::Done => Command::Finish,
    };
    match observed {
        Observed::Start => Command::Record {
            phase: Phase::Draining,
            cordon: cordon(true, true),
        },
        // Until its uncordon a resumed node must be cordoned, whatever happened since.
        Observed::Resume => Command::Record {
            phase: at,
            cordon: cordon(true, at.out_of_service()),
        },
        Observed::Recorded => first(),
        // A completion from another phase (a stale task) moves nothing: the phase's own
        // work runs.
        Observed::Did(task) if task.phase() != at => first(),
        Observed::Did(Task::Drain) => enter(Phase::Maintaining),
        Observed::Did(Task::Detach) => Command::Run(Task::Work),
        Observed::Did(Task::Work) => enter(Phase::AwaitingReady),
        Observed::Did(Task::Ready) if policy.daemon_sets => Command::Run(Task::DaemonSets),
        Observed::Did(Task::Ready | Task::DaemonSets) => enter(Phase::Verifying),
        Observed::Did(Task::Workloads) => enter(Phase::Done),
        Observed::Failed => Command::Fail {
            cordon: cordon(false, policy.uncordon_on_failure && at.out_of_service()),
        },
        Observed::Abandoned | Observed::Withdrawn => Command::PutBack {
            cordon: cordon(false, at.out_of_service()),
        },
    }
}

/// How a driven maintenance ended.
#[derive(Debug)]
pub enum Ending<E> {
    Done,
    /// A phase failed; the failure is recorded.
    Failed(E),
    /// The drain was abandoned; the node is back as it was.
    PutBack(E),
    /// Stopped at a safe point (Ctrl-C, a lost lock); a re-run continues.
    Stopped,
}

/// What a failed task means for the maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Failed,
    Abandoned,
    /// Stopped between two safe points: nothing is recorded, a re-run continues.
    Stopped,
}

/// Carries out the driver's commands for one node, where its record lives.
pub(crate) trait Executor {
    type Error;
    /// Writes the record at `phase` with the cordon change, in one request. `entered`:
    /// the phase is new (not the same phase written again on a resume).
    async fn record(
        &mut self,
        phase: Phase,
        cordon: Option<bool>,
        entered: bool,
    ) -> Result<(), Self::Error>;
    async fn run(&mut self, task: Task) -> Result<(), Self::Error>;
    /// What a failed command means.
    fn failure(&self, error: &Self::Error) -> Failure;
    /// A stop asked for between phases (Ctrl-C, a lost lock).
    fn stopping(&self) -> bool {
        false
    }
    /// Records the failure in `phase`, with the cordon change; returns the error to
    /// report (which may say how far the node was put back).
    async fn fail(&mut self, phase: Phase, cordon: Option<bool>, error: Self::Error)
    -> Self::Error;
    /// Puts the node back as it was (the record goes), with the cordon change.
    async fn put_back(&mut self, cordon: Option<bool>, error: Self::Error) -> Self::Error;
}

/// Drives one node from `first` (`Start` or `Resume`) to its end, each command decided
/// by [`next`] and carried out by `x`. Returns the record as it was left.
pub(crate) async fn drive<X: Executor>(
    x: &mut X,
    mut record: Record,
    policy: Policy,
    first: Observed,
) -> (Record, Ending<X::Error>) {
    let mut observed = first;
    loop {
        let at = record.phase.unwrap_or(Phase::Draining);
        let done = match next(record, policy, observed) {
            Command::Record { phase, cordon } => {
                let entered = record.phase != Some(phase);
                x.record(phase, cordon, entered).await.map(|()| {
                    record.phase = Some(phase);
                    Observed::Recorded
                })
            }
            Command::Run(task) => x.run(task).await.map(|()| Observed::Did(task)),
            Command::Finish => return (record, Ending::Done),
            Command::Fail { .. } | Command::PutBack { .. } => {
                unreachable!("a failure is observed from an error, below")
            }
        };
        observed = match done {
            Ok(Observed::Recorded) if x.stopping() && record.phase != Some(Phase::Done) => {
                return (record, Ending::Stopped);
            }
            Ok(o) => o,
            Err(e) => {
                let seen = match x.failure(&e) {
                    Failure::Stopped => return (record, Ending::Stopped),
                    Failure::Failed => Observed::Failed,
                    Failure::Abandoned => Observed::Abandoned,
                };
                let ending = match next(record, policy, seen) {
                    Command::PutBack { cordon } => {
                        record.phase = None;
                        Ending::PutBack(x.put_back(cordon, e).await)
                    }
                    Command::Fail { cordon } => Ending::Failed(x.fail(at, cordon, e).await),
                    other => unreachable!("{other:?} after {seen:?}"),
                };
                return (record, ending);
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phase::PHASES;

    const ALL: Policy = Policy {
        daemon_sets: true,
        workloads: true,
        uncordon_on_failure: false,
    };

    const OBSERVED: [Observed; 13] = [
        Observed::Start,
        Observed::Resume,
        Observed::Recorded,
        Observed::Did(Task::Drain),
        Observed::Did(Task::Detach),
        Observed::Did(Task::Work),
        Observed::Did(Task::Ready),
        Observed::Did(Task::DaemonSets),
        Observed::Did(Task::Workloads),
        Observed::Failed,
        Observed::Abandoned,
        Observed::Withdrawn,
        Observed::Failed,
    ];

    fn at(phase: Option<Phase>, was_unschedulable: bool) -> Record {
        Record {
            phase,
            was_unschedulable,
        }
    }

    /// Every command from the start to the finish when each task succeeds.
    fn walk(was_unschedulable: bool, policy: Policy) -> Vec<Command> {
        let mut record = at(None, was_unschedulable);
        let mut observed = Observed::Start;
        let mut seen = Vec::new();
        loop {
            let command = next(record, policy, observed);
            seen.push(command);
            observed = match command {
                Command::Record { phase, .. } => {
                    record.phase = Some(phase);
                    Observed::Recorded
                }
                Command::Run(task) => Observed::Did(task),
                _ => return seen,
            };
        }
    }

    fn record(phase: Phase, cordon: Option<bool>) -> Command {
        Command::Record { phase, cordon }
    }

    #[test]
    fn a_maintenance_cordons_on_entry_and_uncordons_once_ready_with_its_daemon_sets() {
        assert_eq!(
            walk(false, ALL),
            [
                record(Phase::Draining, Some(true)),
                Command::Run(Task::Drain),
                record(Phase::Maintaining, None),
                Command::Run(Task::Detach),
                Command::Run(Task::Work),
                record(Phase::AwaitingReady, None),
                Command::Run(Task::Ready),
                Command::Run(Task::DaemonSets),
                record(Phase::Verifying, Some(false)),
                Command::Run(Task::Workloads),
                record(Phase::Done, None),
                Command::Finish,
            ]
        );
    }

    #[test]
    fn skipped_gates_are_not_waited_for() {
        let none = Policy {
            daemon_sets: false,
            workloads: false,
            ..ALL
        };
        let tasks: Vec<_> = walk(false, none)
            .into_iter()
            .filter_map(|c| match c {
                Command::Run(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(tasks, [Task::Drain, Task::Detach, Task::Work, Task::Ready]);
    }

    #[test]
    fn someone_elses_cordon_is_never_touched() {
        assert!(walk(true, ALL).iter().all(|c| matches!(
            c,
            Command::Record { cordon: None, .. } | Command::Run(_) | Command::Finish
        )));
        let asked = Policy {
            uncordon_on_failure: true,
            ..ALL
        };
        for p in PHASES {
            for o in OBSERVED {
                let c = next(at(Some(p), true), asked, o);
                assert!(
                    !matches!(
                        c,
                        Command::Record {
                            cordon: Some(_),
                            ..
                        } | Command::Fail { cordon: Some(_) }
                            | Command::PutBack { cordon: Some(_) }
                    ),
                    "{p} {o:?}: {c:?}"
                );
            }
        }
    }

    #[test]
    fn the_uncordon_comes_once_and_only_after_the_node_is_ready() {
        let uncordons: Vec<_> = walk(false, ALL)
            .windows(2)
            .filter(|w| {
                matches!(
                    w[1],
                    Command::Record {
                        cordon: Some(false),
                        ..
                    }
                )
            })
            .map(|w| w[0])
            .collect();
        assert_eq!(uncordons, [Command::Run(Task::DaemonSets)]);
    }

    #[test]
    fn a_resumed_node_stays_cordoned_until_its_uncordon() {
        for p in PHASES {
            let c = next(at(Some(p), false), ALL, Observed::Resume);
            let cordon = p.out_of_service().then_some(true);
            assert_eq!(c, record(p, cordon), "{p}");
        }
    }

    #[test]
    fn the_work_waits_for_the_volumes_and_a_resumed_maintenance_looks_again() {
        let maintaining = at(Some(Phase::Maintaining), false);
        assert_eq!(
            next(maintaining, ALL, Observed::Recorded),
            Command::Run(Task::Detach)
        );
        assert_eq!(
            next(maintaining, ALL, Observed::Did(Task::Detach)),
            Command::Run(Task::Work)
        );
        assert_eq!(
            next(maintaining, ALL, Observed::Resume),
            record(Phase::Maintaining, Some(true))
        );
    }

    #[test]
    fn a_completion_from_another_phase_moves_nothing() {
        let c = next(
            at(Some(Phase::Verifying), false),
            ALL,
            Observed::Did(Task::Drain),
        );
        assert_eq!(c, Command::Run(Task::Workloads));
        let c = next(
            at(Some(Phase::Maintaining), false),
            ALL,
            Observed::Did(Task::Ready),
        );
        assert_eq!(c, Command::Run(Task::Detach));
    }

    #[test]
    fn failures_keep_the_cordon_unless_asked_and_withdrawals_put_the_node_back() {
        let maintaining = at(Some(Phase::Maintaining), false);
        assert_eq!(
            next(maintaining, ALL, Observed::Failed),
            Command::Fail { cordon: None }
        );
        let asked = Policy {
            uncordon_on_failure: true,
            ..ALL
        };
        assert_eq!(
            next(maintaining, asked, Observed::Failed),
            Command::Fail {
                cordon: Some(false)
            }
        );
        for o in [Observed::Abandoned, Observed::Withdrawn] {
            assert_eq!(
                next(at(Some(Phase::Draining), false), ALL, o),
                Command::PutBack {
                    cordon: Some(false)
                }
            );
            // Past the uncordon there is nothing left to lift.
            assert_eq!(
                next(at(Some(Phase::Verifying), false), asked, o),
                Command::PutBack { cordon: None }
            );
        }
    }

    #[test]
    fn only_a_failure_fails_and_only_an_abandon_or_withdrawal_puts_back() {
        for p in PHASES.map(Some).into_iter().chain([None]) {
            for o in OBSERVED {
                let c = next(at(p, false), ALL, o);
                let failing = matches!(c, Command::Fail { .. } | Command::PutBack { .. });
                let failure = matches!(
                    o,
                    Observed::Failed | Observed::Abandoned | Observed::Withdrawn
                );
                assert_eq!(failing, failure, "{p:?} {o:?}: {c:?}");
            }
        }
    }
}
