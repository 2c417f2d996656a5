//! The decisions a user can make to let kordon go on, each named once for every place a
//! user makes it: a CLI flag, or a field of a NodeMaintenance's spec. The library
//! carries these values in its verdicts and errors; the edge (the CLI, the controller's
//! status) says them in its own words.
use serde::{Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flag {
    IgnoreDaemonSets,
    DeleteEmptyDirData,
    Force,
    IgnoreDoNotDisrupt,
    Surge,
    DisableEviction,
    AllowDisruption,
    AllowPending,
    NodeDown,
    LockTimeout,
    MaxUnavailable,
    MaxPer,
    CountOthersOut,
    Resume,
    Kubeconfig,
}

impl Flag {
    /// As typed on the command line.
    pub fn cli(self) -> &'static str {
        match self {
            Self::IgnoreDaemonSets => "--ignore-daemonsets",
            Self::DeleteEmptyDirData => "--delete-emptydir-data",
            Self::Force => "--force",
            Self::IgnoreDoNotDisrupt => "--ignore-do-not-disrupt",
            Self::Surge => "--surge",
            Self::DisableEviction => "--disable-eviction",
            Self::AllowDisruption => "--allow-disruption",
            Self::AllowPending => "--allow-pending",
            Self::NodeDown => "--node-down",
            Self::LockTimeout => "--lock-timeout",
            Self::MaxUnavailable => "--max-unavailable",
            Self::MaxPer => "--max-per",
            Self::CountOthersOut => "--count-others-out",
            Self::Resume => "--resume",
            Self::Kubeconfig => "--kubeconfig",
        }
    }

    /// As a field of a NodeMaintenance's (or a MaintenancePlan's) spec, where there is one.
    pub fn field(self) -> Option<&'static str> {
        Some(match self {
            Self::IgnoreDaemonSets => "spec.drain.ignoreDaemonSets",
            Self::DeleteEmptyDirData => "spec.drain.deleteEmptyDirData",
            Self::Force => "spec.drain.force",
            Self::IgnoreDoNotDisrupt => "spec.drain.ignoreDoNotDisrupt",
            Self::Surge => "spec.drain.surge",
            Self::AllowDisruption => "spec.drain.allowDisruption",
            Self::AllowPending => "spec.drain.allowPending",
            Self::MaxUnavailable => "spec.maxUnavailable",
            Self::MaxPer => "spec.maxPer",
            Self::CountOthersOut => "spec.countOthersOut",
            Self::DisableEviction
            | Self::NodeDown
            | Self::LockTimeout
            | Self::Resume
            | Self::Kubeconfig => {
                return None;
            }
        })
    }
}

/// Reports (`-o json`) are the CLI's: a flag is written as typed there.
impl Serialize for Flag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.cli())
    }
}
