//! Which videos a worker takes: shard `index` of `count`, by a stable hash of the video id.

use std::fmt;

use glimpse_media::files::fnv1a64;

use crate::BatchError;

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// More shards than this is a typo, not a cluster.
const MAX_SHARDS: usize = 1_000_000;

impl Shard {
    /// The whole manifest in one worker.
    pub const ALL: Self = Self { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> Result<Self, BatchError> {
        if !(1..=MAX_SHARDS).contains(&count) || index >= count {
            return Err(BatchError::Shard(format!(
                "shard {index}/{count}: the index must be below the count, which must be in 1..={MAX_SHARDS}"
            )));
        }
        Ok(Self { index, count })
    }

    /// `I/N`, as `--shard` takes it.
    pub fn parse(text: &str) -> Result<Self, BatchError> {
        let bad = || BatchError::Shard(format!("--shard {text}: expected I/N, e.g. 0/4 for the first of four shards"));
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        Self::new(index.trim().parse().map_err(|_| bad())?, count.trim().parse().map_err(|_| bad())?)
    }

    /// The shard the environment gives: a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX` (the
    /// count is not in its environment: `shards`, from `--shards`), or a Slurm array's
    /// `SLURM_ARRAY_TASK_ID` and `SLURM_ARRAY_TASK_COUNT` (ids counted from
    /// `SLURM_ARRAY_TASK_MIN`, so `--array=1-4` works); `None` when neither is set.
    pub fn from_env(shards: Option<usize>, var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, BatchError> {
        let number = |name: &str| -> Result<Option<usize>, BatchError> {
            var(name)
                .map(|value| {
                    value
                        .trim()
                        .parse::<usize>()
                        .map_err(|_| BatchError::Shard(format!("{name}={value} is not a count")))
                })
                .transpose()
        };
        if shards == Some(0) {
            return Err(BatchError::Shard("--shards 0: the number of shards is at least 1".into()));
        }
        if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            let count = shards.ok_or_else(|| {
                BatchError::Shard(format!(
                    "JOB_COMPLETION_INDEX={index} is set but not the number of shards: pass --shards N (the Job's \
                     completions)"
                ))
            })?;
            return Self::new(index, count).map(Some);
        }
        if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            let count = match (number("SLURM_ARRAY_TASK_COUNT")?, shards) {
                (Some(tasks), Some(count)) if tasks != count => {
                    return Err(BatchError::Shard(format!(
                        "--shards {count}, but SLURM_ARRAY_TASK_COUNT={tasks}: the array's tasks are the shards; drop \
                         --shards or size the array to it"
                    )));
                }
                (tasks, count) => tasks.or(count).ok_or_else(|| {
                    BatchError::Shard("SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_COUNT".into())
                })?,
            };
            if let Some(step) = number("SLURM_ARRAY_TASK_STEP")?.filter(|&step| step != 1) {
                return Err(BatchError::Shard(format!(
                    "SLURM_ARRAY_TASK_STEP={step}: shards need a contiguous array (e.g. --array=0-7), or pass --shard I/N"
                )));
            }
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let index = id.checked_sub(min).ok_or_else(|| {
                BatchError::Shard(format!("SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}"))
            })?;
            // `--array=0,1,2,4` counts 4 tasks from 0 to 4: every task refuses it, or shard 3 would
            // be left out while the others ran.
            let max = number("SLURM_ARRAY_TASK_MAX")?.unwrap_or(min + count.saturating_sub(1));
            if max.checked_sub(min).map(|span| span + 1) != Some(count) || index >= count {
                return Err(BatchError::Shard(format!(
                    "SLURM_ARRAY_TASK_ID={id} of an array from {min} to {max} with SLURM_ARRAY_TASK_COUNT={count} \
                     tasks: shards need a contiguous array (e.g. --array=0-7), or pass --shard I/N"
                )));
            }
            return Self::new(index, count).map(Some);
        }
        match shards {
            Some(count) if count != 1 => Err(BatchError::Shard(format!(
                "--shards {count} is for a Kubernetes Indexed Job, which sets JOB_COMPLETION_INDEX, and it is not \
                 set here (is the Job's completionMode Indexed?); every worker would caption the whole manifest. \
                 Pass --shard I/N to run one shard by hand"
            ))),
            _ => Ok(None),
        }
    }

    /// This worker's shard: `--shard` (`given`), else the environment's ([`Shard::from_env`]),
    /// else the whole manifest. A `--shard` that the scheduler's environment contradicts is
    /// refused: the two workers of one shard would caption its videos twice and another's never.
    pub fn choose(
        given: Option<&str>,
        shards: Option<usize>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, BatchError> {
        let Some(text) = given else { return Ok(Self::from_env(shards, var)?.unwrap_or(Self::ALL)) };
        let shard = Self::parse(text)?;
        if ["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"].iter().all(|name| var(name).is_none()) {
            return Ok(shard);
        }
        // A Kubernetes Job's count is not in its environment: `--shard`'s stands for it (`--shards`
        // conflicts with `--shard`). An environment that gives no shard (a stepped array) leaves
        // `--shard` to say it.
        let k8s_count = var("SLURM_ARRAY_TASK_ID").is_none().then_some(shard.count);
        match Self::from_env(shards.or(k8s_count), var) {
            Ok(Some(scheduled)) if scheduled != shard => Err(BatchError::Shard(format!(
                "--shard {shard}, but this worker's scheduler (JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID) gives it \
                 shard {scheduled}; drop --shard to take the scheduler's"
            ))),
            _ => Ok(shard),
        }
    }

    /// Whether this shard captions the video `id`: a hash of the id alone, so a video's shard
    /// does not depend on the manifest's order or the other videos.
    pub fn owns(&self, id: &str) -> bool {
        fnv1a64(id.as_bytes()) % self.count as u64 == self.index as u64
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn every_id_has_exactly_one_shard_and_shards_share_the_work() {
        let ids: Vec<String> = (0..2000).map(|i| format!("v_{i:05}")).collect();
        for count in [1, 2, 3, 7] {
            let shards: Vec<Shard> = (0..count).map(|i| Shard::new(i, count).unwrap()).collect();
            let mut sizes = vec![0; count];
            for id in &ids {
                let owners: Vec<usize> = shards.iter().filter(|s| s.owns(id)).map(|s| s.index).collect();
                assert_eq!(owners.len(), 1, "{id} in {count} shards: {owners:?}");
                sizes[owners[0]] += 1;
            }
            let fair = ids.len() / count;
            assert!(sizes.iter().all(|&n| n > fair * 8 / 10 && n < fair * 12 / 10), "{count} shards: {sizes:?}");
        }
    }

    #[test]
    fn shards_come_from_the_flag_or_the_cluster_environment() {
        assert_eq!(Shard::parse("2/4").unwrap(), Shard { index: 2, count: 4 });
        for bad in ["4/4", "1", "a/2", "0/0", "-1/3"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Shard::from_env(None, env(&[])).unwrap(), None);
        let k8s = [("JOB_COMPLETION_INDEX", "3")];
        assert_eq!(Shard::from_env(Some(5), env(&k8s)).unwrap(), Some(Shard { index: 3, count: 5 }));
        assert!(Shard::from_env(None, env(&k8s)).unwrap_err().to_string().contains("--shards"));
        // --shards without the index would run the whole manifest in every worker.
        let err = Shard::from_env(Some(8), env(&[])).unwrap_err().to_string();
        assert!(err.contains("JOB_COMPLETION_INDEX") && err.contains("--shard I/N"), "{err}");
        let err = Shard::from_env(Some(0), env(&k8s)).unwrap_err().to_string();
        assert!(err.contains("--shards 0: the number of shards is at least 1"), "{err}");
        assert_eq!(Shard::from_env(Some(1), env(&[])).unwrap(), None);
        let slurm = [("SLURM_ARRAY_TASK_ID", "4"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "1")];
        assert_eq!(Shard::from_env(None, env(&slurm)).unwrap(), Some(Shard { index: 3, count: 4 }));
        let zero_based = [("SLURM_ARRAY_TASK_ID", "0"), ("SLURM_ARRAY_TASK_COUNT", "2")];
        assert_eq!(Shard::from_env(None, env(&zero_based)).unwrap(), Some(Shard { index: 0, count: 2 }));
        assert!(Shard::from_env(None, env(&[("SLURM_ARRAY_TASK_ID", "x")])).is_err());
        let stepped = [("SLURM_ARRAY_TASK_ID", "2"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_STEP", "2")];
        assert!(Shard::from_env(None, env(&stepped)).unwrap_err().to_string().contains("contiguous"));
        // `--array=0,1,2,4`: four tasks from 0 to 4, refused by each (shard 3 would go uncaptioned).
        for id in ["0", "4"] {
            let gapped = [("SLURM_ARRAY_TASK_ID", id), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MAX", "4")];
            let err = Shard::from_env(None, env(&gapped)).unwrap_err().to_string();
            assert!(
                err.contains("of an array from 0 to 4 with SLURM_ARRAY_TASK_COUNT=4") && err.contains("contiguous"),
                "{err}"
            );
        }
        let without_max = [("SLURM_ARRAY_TASK_ID", "4"), ("SLURM_ARRAY_TASK_COUNT", "4")];
        assert!(Shard::from_env(None, env(&without_max)).unwrap_err().to_string().contains("contiguous"));
        // Sources that disagree are refused, not one silently taken over the other.
        let err = Shard::from_env(Some(4), env(&zero_based)).unwrap_err().to_string();
        assert!(err.contains("--shards 4, but SLURM_ARRAY_TASK_COUNT=2"), "{err}");
        assert_eq!(Shard::from_env(Some(2), env(&zero_based)).unwrap(), Some(Shard { index: 0, count: 2 }));
    }

    #[test]
    fn a_shard_given_by_hand_must_agree_with_the_scheduler() {
        let k8s = [("JOB_COMPLETION_INDEX", "1")];
        assert_eq!(Shard::choose(None, Some(2), env(&k8s)).unwrap(), Shard { index: 1, count: 2 });
        assert_eq!(Shard::choose(Some("1/2"), None, env(&k8s)).unwrap(), Shard { index: 1, count: 2 });
        let err = Shard::choose(Some("0/2"), None, env(&k8s)).unwrap_err().to_string();
        assert!(err.contains("--shard 0/2, but") && err.contains("gives it shard 1/2"), "{err}");
        let slurm = [("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_COUNT", "4")];
        let err = Shard::choose(Some("1/2"), None, env(&slurm)).unwrap_err().to_string();
        assert!(err.contains("--shard 1/2, but") && err.contains("gives it shard 1/4"), "{err}");
        assert_eq!(Shard::choose(Some("1/4"), None, env(&slurm)).unwrap(), Shard { index: 1, count: 4 });
        // An array the environment cannot shard (stepped) leaves it to --shard.
        let stepped = [("SLURM_ARRAY_TASK_ID", "2"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_STEP", "2")];
        assert_eq!(Shard::choose(Some("1/4"), None, env(&stepped)).unwrap(), Shard { index: 1, count: 4 });
        assert_eq!(Shard::choose(Some("3/4"), None, env(&[])).unwrap(), Shard { index: 3, count: 4 });
        assert_eq!(Shard::choose(None, None, env(&[])).unwrap(), Shard::ALL);
    }
}
