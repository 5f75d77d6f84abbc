//! Workflows: steps that ask agents (a query, a parameter validation or a
//! KPI computation), run in dependency order with independent steps
//! concurrently, each result stored as an engram of a context.
//!
//! File format (JSON or YAML; YAML when the file ends in `.yaml`/`.yml`):
//!
//! ```yaml
//! name: check-mimo-sleep          # required
//! on_failure: stop                # stop (default) | continue
//! steps:
//!   - id: what                    # unique within the workflow
//!     agent: FAJ 121 3094         # the feature agent (FAJ code)
//!     query: What is MIMO Sleep Mode?   # action "query" (the default)
//!   - id: check
//!     agent: FAJ 121 3094
//!     action: validate            # query | validate | kpis
//!     params: { "MimoSleepFunction.sleepMode": 2 }   # name -> number
//!     depends_on: [what]          # ids of earlier steps
//!     on_failure: continue        # overrides the workflow's setting
//! ```
//!
//! Before anything runs the file is checked: unique step ids, known
//! `depends_on` ids, no cycle (the cycle is named), a query for `query`
//! steps and params for the others. With `on_failure: stop` the first failed
//! step stops the run (steps already running finish; later ones are
//! reported as not run); with `continue` the run goes on, but steps that
//! depend on a failed step are skipped.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    #[default]
    Stop,
    Continue,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepAction {
    #[default]
    Query,
    Validate,
    Kpis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub id: String,
    /// The agent's id (a FAJ code for feature agents).
    pub agent: String,
    #[serde(default)]
    pub action: StepAction,
    /// The question, for `query` steps.
    #[serde(default)]
    pub query: Option<String>,
    /// Parameter or counter values, for `validate` and `kpis` steps.
    #[serde(default)]
    pub params: BTreeMap<String, f64>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    pub name: String,
    #[serde(default)]
    pub on_failure: OnFailure,
    pub steps: Vec<Step>,
}

/// What a step produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// The answer as text (stored as the engram's content).
    pub content: String,
    pub confidence: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepStatus {
    /// Ran; its result is the engram `engram`.
    Done {
        output: StepOutput,
        engram: Option<u64>,
    },
    Failed(String),
    /// Not run because a step it depends on failed.
    Skipped(String),
    /// Not run because the workflow stopped first.
    NotRun,
}

#[derive(Debug, Clone)]
pub struct StepReport {
    pub id: String,
    pub agent: String,
    pub status: StepStatus,
    pub took: Duration,
}

/// The outcome of a run, steps in file order.
#[derive(Debug, Clone)]
pub struct Report {
    pub workflow: String,
    pub steps: Vec<StepReport>,
    pub took: Duration,
}

impl Report {
    pub fn succeeded(&self) -> bool {
        self.steps.iter().all(|s| matches!(s.status, StepStatus::Done { .. }))
    }
}

fn invalid(detail: impl Into<String>) -> Error {
    Error::Workflow(detail.into())
}

impl Workflow {
    /// Reads and checks a workflow file.
    pub fn load(path: &Path) -> Result<Workflow> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        let workflow: Workflow = if yaml {
            serde_yaml_ng::from_str(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))?
        } else {
            serde_json::from_str(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))?
        };
        workflow.check()?;
        Ok(workflow)
    }

    /// Steps grouped into waves: every step's dependencies are in earlier
    /// waves. Refuses duplicate ids, unknown dependencies, missing queries
    /// or params, and cycles (naming one).
    pub fn waves(&self) -> Result<Vec<Vec<usize>>> {
        let mut index = HashMap::new();
        for (i, s) in self.steps.iter().enumerate() {
            if s.id.trim().is_empty() {
                return Err(invalid(format!("step {} has an empty id", i + 1)));
            }
            if index.insert(s.id.as_str(), i).is_some() {
                return Err(invalid(format!("step id {:?} is used twice", s.id)));
            }
        }
        for s in &self.steps {
            match s.action {
                StepAction::Query if s.query.as_deref().is_none_or(|q| q.trim().is_empty()) => {
                    return Err(invalid(format!("step {:?} is a query without `query`", s.id)));
                }
                StepAction::Validate | StepAction::Kpis if s.params.is_empty() => {
                    return Err(invalid(format!("step {:?} needs `params`", s.id)));
                }
                _ => {}
            }
            for d in &s.depends_on {
                if !index.contains_key(d.as_str()) {
                    return Err(invalid(format!("step {:?} depends on unknown step {d:?}", s.id)));
                }
            }
        }
        // Kahn's algorithm, wave by wave.
        let mut remaining: Vec<usize> = self.steps.iter().map(|s| s.depends_on.len()).collect();
        let mut done = vec![false; self.steps.len()];
        let mut waves = Vec::new();
        loop {
            let wave: Vec<usize> = (0..self.steps.len()).filter(|&i| !done[i] && remaining[i] == 0).collect();
            if wave.is_empty() {
                break;
            }
            for &i in &wave {
                done[i] = true;
            }
            for (j, s) in self.steps.iter().enumerate() {
                if !done[j] {
                    remaining[j] -= s.depends_on.iter().filter(|d| wave.contains(&index[d.as_str()])).count();
                }
            }
            waves.push(wave);
        }
        if let Some(start) = done.iter().position(|d| !d) {
            // Walk dependencies among the unfinished steps until one repeats.
            let mut path = vec![start];
            loop {
                let at = *path.last().unwrap();
                let next = self.steps[at]
                    .depends_on
                    .iter()
                    .map(|d| index[d.as_str()])
                    .find(|&j| !done[j])
                    .expect("an unfinished step waits on an unfinished step");
                if let Some(p) = path.iter().position(|&x| x == next) {
                    let cycle: Vec<&str> =
                        path[p..].iter().chain([&next]).map(|&i| self.steps[i].id.as_str()).collect();
                    return Err(invalid(format!("depends_on has a cycle: {}", cycle.join(" -> "))));
                }
                path.push(next);
            }
        }
        Ok(waves)
    }

    fn check(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(invalid("the workflow has no name"));
        }
        if self.steps.is_empty() {
            return Err(invalid("the workflow has no steps"));
        }
        self.waves().map(|_| ())
    }

    /// Runs the steps: `execute` answers one step, `record` stores a result
    /// (given the engram ids of the step's dependencies) and returns its
    /// engram id. Steps of one wave run on their own threads.
    pub fn run<E, R>(&self, execute: E, record: R) -> Result<Report>
    where
        E: Fn(&Step) -> Result<StepOutput> + Sync,
        R: Fn(&Step, &StepOutput, &[u64]) -> Result<u64> + Sync,
    {
        let started = Instant::now();
        let waves = self.waves()?;
        let mut status: Vec<Option<(StepStatus, Duration)>> = vec![None; self.steps.len()];
        let index: HashMap<&str, usize> =
            self.steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        let mut stopped = false;
        for wave in waves {
            if stopped {
                break;
            }
            // Steps whose dependencies failed are skipped, not run.
            let mut runnable = Vec::new();
            for &i in &wave {
                let failed_dep = self.steps[i]
                    .depends_on
                    .iter()
                    .find(|d| !matches!(status[index[d.as_str()]], Some((StepStatus::Done { .. }, _))));
                match failed_dep {
                    Some(d) => {
                        status[i] = Some((
                            StepStatus::Skipped(format!("depends on {d}, which did not succeed")),
                            Duration::ZERO,
                        ))
                    }
                    None => runnable.push(i),
                }
            }
            let results: Vec<(usize, StepStatus, Duration)> = std::thread::scope(|scope| {
                let handles: Vec<_> = runnable
                    .iter()
                    .map(|&i| {
                        let step = &self.steps[i];
                        let execute = &execute;
                        (
                            i,
                            scope.spawn(move || {
                                let t = Instant::now();
                                let out = execute(step);
                                (out, t.elapsed())
                            }),
                        )
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|(i, h)| match h.join() {
                        Ok((Ok(output), took)) => (i, StepStatus::Done { output, engram: None }, took),
                        Ok((Err(e), took)) => (i, StepStatus::Failed(e.to_string()), took),
                        Err(_) => (
                            i,
                            StepStatus::Failed(String::from("the step's thread panicked")),
                            Duration::ZERO,
                        ),
                    })
                    .collect()
            });
            for (i, st, took) in results {
                let step = &self.steps[i];
                let st = match st {
                    StepStatus::Done { output, .. } => {
                        let deps: Vec<u64> = step
                            .depends_on
                            .iter()
                            .filter_map(|d| match &status[index[d.as_str()]] {
                                Some((StepStatus::Done { engram: Some(e), .. }, _)) => Some(*e),
                                _ => None,
                            })
                            .collect();
                        match record(step, &output, &deps) {
                            Ok(engram) => StepStatus::Done { output, engram: Some(engram) },
                            Err(e) => {
                                StepStatus::Failed(format!("answered, but storing the result failed: {e}"))
                            }
                        }
                    }
                    other => other,
                };
                if matches!(st, StepStatus::Failed(_))
                    && step.on_failure.unwrap_or(self.on_failure) == OnFailure::Stop
                {
                    stopped = true;
                }
                status[i] = Some((st, took));
            }
        }
        let steps = self
            .steps
            .iter()
            .zip(status)
            .map(|(s, st)| {
                let (status, took) = st.unwrap_or((StepStatus::NotRun, Duration::ZERO));
                StepReport { id: s.id.clone(), agent: s.agent.clone(), status, took }
            })
            .collect();
        Ok(Report { workflow: self.name.clone(), steps, took: started.elapsed() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn wf(json: &str) -> Result<Workflow> {
        let w: Workflow = serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
        w.check()?;
        Ok(w)
    }

    fn step(id: &str, deps: &[&str]) -> String {
        let deps: Vec<String> = deps.iter().map(|d| format!("{d:?}")).collect();
        format!(r#"{{"id":"{id}","agent":"A","query":"q {id}","depends_on":[{}]}}"#, deps.join(","))
    }

    #[test]
    fn waves_follow_dependencies_and_cycles_are_named() {
        let w = wf(&format!(
            r#"{{"name":"w","steps":[{},{},{},{}]}}"#,
            step("a", &[]),
            step("b", &["a"]),
            step("c", &["a"]),
            step("d", &["b", "c"])
        ))
        .unwrap();
        assert_eq!(w.waves().unwrap(), vec![vec![0], vec![1, 2], vec![3]]);
        let e = wf(&format!(
            r#"{{"name":"w","steps":[{},{},{}]}}"#,
            step("a", &["c"]),
            step("b", &["a"]),
            step("c", &["b"])
        ))
        .unwrap_err();
        assert!(e.to_string().contains("cycle: a -> c -> b -> a"), "{e}");
        let e = wf(&format!(r#"{{"name":"w","steps":[{}]}}"#, step("a", &["zz"]))).unwrap_err();
        assert!(e.to_string().contains("unknown step \"zz\""), "{e}");
        let e =
            wf(&format!(r#"{{"name":"w","steps":[{},{}]}}"#, step("a", &[]), step("a", &[]))).unwrap_err();
        assert!(e.to_string().contains("used twice"), "{e}");
        let e = wf(r#"{"name":"w","steps":[{"id":"v","agent":"A","action":"validate"}]}"#).unwrap_err();
        assert!(e.to_string().contains("needs `params`"), "{e}");
        assert!(wf(r#"{"name":"w","steps":[{"id":"v","agent":"A","query":"x","bogus":1}]}"#).is_err());
    }

    #[test]
    fn independent_steps_run_concurrently_and_failures_stop_or_skip() {
        let w = wf(&format!(
            r#"{{"name":"w","on_failure":"continue","steps":[{},{},{},{}]}}"#,
            step("a", &[]),
            step("b", &[]),
            step("c", &["a"]),
            step("d", &["b"])
        ))
        .unwrap();
        let barrier = std::sync::Barrier::new(2);
        let stored = Mutex::new(Vec::new());
        let report = w
            .run(
                |s| {
                    if s.id == "a" || s.id == "b" {
                        // Both must be running at once to pass the barrier.
                        barrier.wait();
                    }
                    if s.id == "b" {
                        return Err(invalid("b breaks"));
                    }
                    Ok(StepOutput { content: format!("answer {}", s.id), confidence: 0.5 })
                },
                |s, _, deps| {
                    let mut st = stored.lock().unwrap();
                    st.push((s.id.clone(), deps.to_vec()));
                    Ok(st.len() as u64)
                },
            )
            .unwrap();
        let status: Vec<&StepStatus> = report.steps.iter().map(|s| &s.status).collect();
        assert!(matches!(status[0], StepStatus::Done { engram: Some(1), .. }));
        assert!(matches!(status[1], StepStatus::Failed(m) if m.contains("b breaks")));
        assert!(matches!(status[2], StepStatus::Done { .. }));
        assert!(matches!(status[3], StepStatus::Skipped(m) if m.contains("depends on b")));
        assert_eq!(stored.lock().unwrap()[1], ("c".to_string(), vec![1]), "c's engram links a's");
        assert!(!report.succeeded());

        // The same with stop: c never runs.
        let w = Workflow { on_failure: OnFailure::Stop, ..w };
        let report = w
            .run(
                |s| {
                    if s.id == "b" {
                        Err(invalid("b breaks"))
                    } else {
                        Ok(StepOutput { content: String::new(), confidence: 1.0 })
                    }
                },
                |_, _, _| Ok(1),
            )
            .unwrap();
        assert!(matches!(report.steps[2].status, StepStatus::NotRun));
        assert!(matches!(report.steps[3].status, StepStatus::NotRun));
    }
}
