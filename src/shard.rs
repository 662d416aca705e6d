//! Which share of a run this process does: `--shard I/N`, or the task index and task count a
//! batch engine gives each task of an array job (SLURM, Kubernetes Indexed Jobs, AWS Batch,
//! Google Batch).
//!
//! Item k of the run's work list belongs to shard `k mod N`. Dealing items out one at a time,
//! rather than in contiguous blocks, spreads a sorted list's runs of similar items (one folder
//! of large images, one camera's long videos) over every shard, so the shards finish together;
//! shares differ by at most one item. The list itself is fixed by the inputs (see `items`), so
//! every task of an array computes the same shares without talking to the others.

use std::fmt;

use anyhow::{bail, ensure, Context, Result};

/// Share `index` of `count` (0-based, as SLURM arrays, Indexed Jobs and both clouds count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Parses `I/N`, refusing in one line what no engine would hand out.
    pub fn parse(s: &str) -> Result<Shard> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        let Some((index, count)) = parsed else {
            bail!("--shard `{s}` is not I/N, e.g. 0/3 for the first of three shards");
        };
        Shard::new(index, count).with_context(|| format!("--shard `{s}`"))
    }

    fn new(index: usize, count: usize) -> Result<Shard> {
        ensure!(count >= 1, "the shard count must be at least 1");
        ensure!(
            index < count,
            "shard index {index} is out of range for {count} shards (0 to {})",
            count - 1
        );
        Ok(Shard { index, count })
    }

    /// Whether item `k` of the work list is this shard's.
    pub fn owns(&self, k: usize) -> bool {
        k % self.count == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A shard and where it came from (`--shard`, or the engine variables read), for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub shard: Shard,
    pub from: String,
}

/// The variables one engine sets in each task of an array.
struct Engine {
    name: &'static str,
    index: &'static str,
    count: &'static str,
}

/// Kubernetes gives an Indexed Job's pods their index only: the job sets `SEGNET_SHARD_COUNT`
/// to its `completions` (tools/cluster/indexed-job.yaml does).
const ENGINES: [Engine; 4] = [
    Engine {
        name: "SLURM",
        index: "SLURM_ARRAY_TASK_ID",
        count: "SLURM_ARRAY_TASK_COUNT",
    },
    Engine {
        name: "Kubernetes",
        index: "JOB_COMPLETION_INDEX",
        count: "SEGNET_SHARD_COUNT",
    },
    Engine {
        name: "AWS Batch",
        index: "AWS_BATCH_JOB_ARRAY_INDEX",
        count: "AWS_BATCH_JOB_ARRAY_SIZE",
    },
    Engine {
        name: "Google Batch",
        index: "BATCH_TASK_INDEX",
        count: "BATCH_TASK_COUNT",
    },
];

/// The shard to run: `--shard` when given, else the engine's variables, else none (all items).
pub fn resolve(flag: Option<&str>) -> Result<Option<Assignment>> {
    resolve_with(flag, &|name| std::env::var(name).ok())
}

fn resolve_with(
    flag: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Assignment>> {
    if let Some(s) = flag {
        return Ok(Some(Assignment {
            shard: Shard::parse(s)?,
            from: "--shard".into(),
        }));
    }
    let mut found: Vec<Assignment> = vec![];
    for e in &ENGINES {
        if let Some(a) = from_engine(e, env)? {
            found.push(a);
        }
    }
    match found.as_slice() {
        [] => Ok(None),
        [first, rest @ ..] if rest.iter().all(|a| a.shard == first.shard) => {
            let from = found.iter().map(|a| a.from.as_str()).collect::<Vec<_>>();
            Ok(Some(Assignment {
                shard: first.shard,
                from: from.join("; "),
            }))
        }
        _ => {
            let each: Vec<String> = found
                .iter()
                .map(|a| format!("{} says {}", a.from, a.shard))
                .collect();
            bail!(
                "the batch engines' variables disagree about this task's shard ({}); unset the \
                 stale ones or pass --shard I/N",
                each.join("; ")
            )
        }
    }
}

fn from_engine(e: &Engine, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Assignment>> {
    let (index, count) = match (env(e.index), env(e.count)) {
        (None, None) => return Ok(None),
        (Some(i), Some(n)) => (i, n),
        (Some(i), None) => bail!(
            "{}={i} is set ({}) but {} is not: set it to the number of tasks, or pass --shard I/N",
            e.index,
            e.name,
            e.count
        ),
        (None, Some(n)) => bail!(
            "{}={n} is set but {} is not ({}): unset it, or pass --shard I/N",
            e.count,
            e.index,
            e.name
        ),
    };
    let number = |name: &str, v: &str| -> Result<usize> {
        v.trim()
            .parse()
            .with_context(|| format!("{name}={v} is not a whole number ({})", e.name))
    };
    let mut i = number(e.index, &index)?;
    let n = number(e.count, &count)?;
    let mut from = format!("{}={index}, {}={count}", e.index, e.count);
    if e.name == "SLURM" {
        if let Some((k, note)) = slurm_offset(i, env)? {
            i = k;
            from.push_str(&note);
        }
    }
    let shard = Shard::new(i, n).with_context(|| format!("{from} ({})", e.name))?;
    Ok(Some(Assignment { shard, from }))
}

/// SLURM numbers tasks as the user wrote the range (`--array=1-3`, `--array=0-8:2`): the shard
/// is the task's position in that range.
fn slurm_offset(
    id: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(usize, String)>> {
    let read = |name: &str| -> Result<Option<usize>> {
        env(name)
            .map(|v| {
                v.trim()
                    .parse()
                    .with_context(|| format!("{name}={v} is not a whole number (SLURM)"))
            })
            .transpose()
    };
    let min = read("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
    let step = read("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
    if min == 0 && step == 1 {
        return Ok(None);
    }
    let offset = id.checked_sub(min).filter(|d| d % step == 0);
    let Some(offset) = offset else {
        bail!(
            "SLURM_ARRAY_TASK_ID={id} is not in the array's range (min {min}, step {step}); \
             submit with --array=0-N or pass --shard I/N"
        );
    };
    Ok(Some((
        offset / step,
        format!(", SLURM_ARRAY_TASK_MIN={min}, SLURM_ARRAY_TASK_STEP={step}"),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with_env(vars: &[(&str, &str)]) -> Result<Option<Assignment>> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve_with(None, &|k| map.get(k).cloned())
    }

    #[test]
    fn parses_i_of_n_and_refuses_what_no_engine_hands_out() {
        assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 2, count: 3 });
        for (bad, why) in [
            ("3/3", "out of range"),
            ("0/0", "at least 1"),
            ("a/b", "not I/N"),
            ("3", "not I/N"),
            ("-1/3", "not I/N"),
        ] {
            let err = format!("{:#}", Shard::parse(bad).unwrap_err());
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn shares_are_disjoint_cover_everything_and_differ_by_at_most_one() {
        for n in 1..6 {
            let shares: Vec<Vec<usize>> = (0..n)
                .map(|i| {
                    (0..17)
                        .filter(|&k| Shard { index: i, count: n }.owns(k))
                        .collect()
                })
                .collect();
            let mut all: Vec<usize> = shares.concat();
            all.sort();
            assert_eq!(all, (0..17).collect::<Vec<_>>());
            let sizes: Vec<usize> = shares.iter().map(Vec::len).collect();
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "{sizes:?}");
        }
    }

    #[test]
    fn each_engine_gives_its_shard_and_names_its_variables() {
        let cases = [
            [
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
            [("JOB_COMPLETION_INDEX", "1"), ("SEGNET_SHARD_COUNT", "3")],
            [
                ("AWS_BATCH_JOB_ARRAY_INDEX", "1"),
                ("AWS_BATCH_JOB_ARRAY_SIZE", "3"),
            ],
            [("BATCH_TASK_INDEX", "1"), ("BATCH_TASK_COUNT", "3")],
        ];
        for vars in cases {
            let a = with_env(&vars).unwrap().unwrap();
            assert_eq!(a.shard, Shard { index: 1, count: 3 });
            assert!(
                a.from.contains(vars[0].0) && a.from.contains(vars[1].0),
                "{}",
                a.from
            );
        }
        assert_eq!(with_env(&[]).unwrap(), None);
    }

    #[test]
    fn a_slurm_range_that_does_not_start_at_zero_is_counted_from_its_start() {
        let a = with_env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.shard, Shard { index: 2, count: 3 });
        let err = with_env(&[
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ])
        .unwrap_err();
        assert!(format!("{err:#}").contains("--array=0-N"), "{err:#}");
    }

    #[test]
    fn disagreeing_half_set_or_malformed_variables_are_reported_not_guessed() {
        let cases: [(&[(&str, &str)], &str); 5] = [
            (
                &[
                    ("SLURM_ARRAY_TASK_ID", "0"),
                    ("SLURM_ARRAY_TASK_COUNT", "3"),
                    ("BATCH_TASK_INDEX", "2"),
                    ("BATCH_TASK_COUNT", "3"),
                ],
                "disagree",
            ),
            (&[("JOB_COMPLETION_INDEX", "1")], "SEGNET_SHARD_COUNT"),
            (&[("BATCH_TASK_COUNT", "3")], "BATCH_TASK_INDEX"),
            (
                &[
                    ("AWS_BATCH_JOB_ARRAY_INDEX", "x"),
                    ("AWS_BATCH_JOB_ARRAY_SIZE", "3"),
                ],
                "AWS_BATCH_JOB_ARRAY_INDEX=x",
            ),
            (
                &[
                    ("SLURM_ARRAY_TASK_ID", "3"),
                    ("SLURM_ARRAY_TASK_COUNT", "3"),
                ],
                "out of range",
            ),
        ];
        for (vars, what) in cases {
            let err = format!("{:#}", with_env(vars).unwrap_err());
            assert!(err.contains(what), "{vars:?}: {err}");
        }
        // Two engines that agree are both named.
        let both = with_env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("BATCH_TASK_INDEX", "2"),
            ("BATCH_TASK_COUNT", "3"),
        ])
        .unwrap()
        .unwrap();
        assert!(both.from.contains("SLURM") && both.from.contains("BATCH_TASK"));
    }

    #[test]
    fn the_flag_wins_over_the_environment() {
        let env = |k: &str| (k == "SLURM_ARRAY_TASK_ID").then(|| "zz".to_string());
        let a = resolve_with(Some("1/2"), &env).unwrap().unwrap();
        assert_eq!(
            (a.shard, a.from.as_str()),
            (Shard { index: 1, count: 2 }, "--shard")
        );
    }
}
