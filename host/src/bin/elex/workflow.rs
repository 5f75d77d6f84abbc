//! `elex workflow run`: a workflow file's steps asked of the feature agents,
//! each result stored as an engram of a context.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use elex_host::bindings::{CounterSample, ParameterValue};
use elex_host::workflow::{StepAction, StepOutput, StepStatus, Workflow};
use elex_host::{Catalog, Error, SharedAgent, router};
use elex_memgraph::{Actor, Connection, EngramData, Op};

use crate::Places;

#[derive(Subcommand)]
pub enum WorkflowCommand {
    /// Run a workflow file (JSON, or YAML for .yaml/.yml; format in the
    /// README): steps in dependency order, independent steps concurrently,
    /// every result stored as an engram of the context. Exits 1 if a step
    /// failed.
    Run {
        /// The workflow file.
        file: PathBuf,
        /// The context (from `elex context create`) that receives the results.
        #[arg(long, value_name = "ID")]
        context: u64,
        /// Use this feature-agent component file instead of the registry's
        /// signed one (needs --allow-unsigned).
        #[arg(long, value_name = "FILE")]
        component: Option<PathBuf>,
        #[arg(long, requires = "component")]
        allow_unsigned: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(places: &Places, command: WorkflowCommand) -> anyhow::Result<()> {
    let WorkflowCommand::Run { file, context, component, allow_unsigned, json } = command;
    if component.is_some() && !allow_unsigned {
        return Err(anyhow!("refusing an unsigned --component without --allow-unsigned"));
    }
    // Everything is checked before anything runs: the file (a bounded
    // regular file, within the workflow limits) and every step's agent.
    let mut workflow = Workflow::load(&file)?;
    let catalog = Catalog::embedded()?;
    let by_faj: HashMap<&str, usize> =
        catalog.features.iter().enumerate().map(|(i, f)| (f.faj.as_str(), i)).collect();
    let mut agents: BTreeMap<String, usize> = BTreeMap::new();
    for step in &mut workflow.steps {
        let code = router::faj_codes(&step.agent).into_iter().next().unwrap_or_else(|| step.agent.clone());
        let i = *by_faj
            .get(code.as_str())
            .with_context(|| format!("step {:?}: no feature agent {:?}", step.id, step.agent))?;
        // One spelling per agent: steps are grouped (and run one at a time)
        // per agent, and each agent has one instance.
        step.agent = catalog.features[i].faj.clone();
        agents.insert(step.agent.clone(), i);
    }
    let graph = Arc::new(places.memory_graph()?);
    graph.context(&Actor::Operator, context).with_context(|| format!("context {context}"))?;
    // The agents write their results into the context.
    let members: Vec<Op> =
        agents.values().map(|&i| Op::AddMember { context, agent: catalog.features[i].faj.clone() }).collect();
    graph.apply(&Actor::Operator, members)?;

    let host = places.host()?.with_memory_graph(graph.clone());
    let (loaded, _) = crate::load_agent_component(places, &host, component.as_deref())?;
    let store = places.agent_store()?;
    let mut shared: BTreeMap<String, SharedAgent> = BTreeMap::new();
    for (name, &i) in &agents {
        let feature = &catalog.features[i];
        let (instance, _) = store.start_restored(&loaded.family, &feature.faj, || {
            host.instantiate(&loaded, feature.agent_config())
        })?;
        shared.insert(name.clone(), SharedAgent::new(instance));
    }

    // Steps run grouped by agent, one at a time per agent (see
    // `Workflow::run`): however many steps a wave gives one agent, they queue
    // here rather than overflow its bounded queue.
    let report = workflow.run(
        |step| {
            let agent = &shared[&step.agent];
            agent.call(|a| match step.action {
                StepAction::Query => {
                    let r = a.handle(&host.query(step.query.as_deref().unwrap_or_default()))?;
                    Ok(StepOutput { content: r.content, confidence: r.confidence })
                }
                StepAction::Validate => {
                    let params: Vec<ParameterValue> = step
                        .params
                        .iter()
                        .map(|(n, v)| ParameterValue { name: n.clone(), value: *v })
                        .collect();
                    let lines: Vec<String> = a
                        .validate(&params)?
                        .iter()
                        .map(|v| format!("{}: {} ({})", v.name, v.verdict, v.message))
                        .collect();
                    Ok(StepOutput { content: lines.join("\n"), confidence: 1.0 })
                }
                StepAction::Kpis => {
                    let samples: Vec<CounterSample> = step
                        .params
                        .iter()
                        .map(|(n, v)| CounterSample { name: n.clone(), value: *v })
                        .collect();
                    let lines: Vec<String> = a
                        .kpis(&samples)?
                        .iter()
                        .map(|k| {
                            format!(
                                "{} = {:.3} {} (threshold {}, {})",
                                k.name, k.value, k.unit, k.threshold, k.status
                            )
                        })
                        .collect();
                    Ok(StepOutput { content: lines.join("\n"), confidence: 1.0 })
                }
            })
        },
        |step, output, deps| {
            let owner = Actor::agent(catalog.features[agents[&step.agent]].faj.clone());
            let id = graph.allocate_engram_id();
            let action = format!("{:?}", step.action).to_lowercase();
            let mut ops = vec![Op::Create {
                id,
                data: EngramData {
                    content: if output.content.trim().is_empty() {
                        String::from("(empty answer)")
                    } else {
                        output.content.clone()
                    },
                    source: format!("workflow:{}/{}", workflow.name, step.id),
                    confidence: output.confidence.clamp(0.0, 1.0),
                    metadata: vec![
                        ("workflow".into(), workflow.name.clone()),
                        ("step".into(), step.id.clone()),
                        ("action".into(), action),
                        ("agent".into(), owner.name().to_string()),
                    ],
                },
                context: Some(context),
            }];
            ops.extend(deps.iter().map(|&d| {
                Op::Connect(Connection {
                    source: id,
                    target: d,
                    relation: "derived-from".into(),
                    weight: 1.0,
                    metadata: vec![],
                })
            }));
            graph.apply(&owner, ops).map_err(Error::from)?;
            Ok(id)
        },
    )?;

    // What the agents learned is kept.
    for (name, agent) in shared {
        let mut instance = agent.into_inner();
        let faj = &catalog.features[agents[&name]].faj;
        match instance.snapshot() {
            Ok(bytes) => store.put(&loaded.family, faj, &bytes)?,
            Err(e) => eprintln!("warning: agent {faj}: its state was not saved: {e}"),
        }
    }
    print_report(&report, context, json, &file)?;
    if report.succeeded() { Ok(()) } else { Err(anyhow!("workflow {:?} did not complete", report.workflow)) }
}

fn print_report(
    report: &elex_host::workflow::Report,
    context: u64,
    json: bool,
    file: &Path,
) -> anyhow::Result<()> {
    let status_of = |s: &StepStatus| match s {
        StepStatus::Done { engram, .. } => {
            ("done", engram.map(|e| e.to_string()).unwrap_or_default(), String::new())
        }
        StepStatus::Failed(e) => ("failed", String::new(), e.clone()),
        StepStatus::Skipped(why) => ("skipped", String::new(), why.clone()),
        StepStatus::NotRun => ("not run", String::new(), String::from("the workflow stopped first")),
    };
    if json {
        let steps: Vec<_> = report
            .steps
            .iter()
            .map(|s| {
                let (status, engram, detail) = status_of(&s.status);
                let answer = match &s.status {
                    StepStatus::Done { output, .. } => Some(output.content.clone()),
                    _ => None,
                };
                serde_json::json!({"id": s.id, "agent": s.agent, "status": status,
                    "engram": engram.parse::<u64>().ok(), "detail": detail, "answer": answer,
                    "ms": s.took.as_secs_f64() * 1e3})
            })
            .collect();
        let out = serde_json::json!({"workflow": report.workflow, "file": file.display().to_string(),
            "context": context, "succeeded": report.succeeded(), "ms": report.took.as_secs_f64() * 1e3, "steps": steps});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "step",
        "agent",
        "status",
        "ms",
        "engram",
        "answer / reason",
    ]);
    for s in &report.steps {
        let (status, engram, detail) = status_of(&s.status);
        let text = match &s.status {
            StepStatus::Done { output, .. } => output.content.lines().next().unwrap_or_default().to_string(),
            _ => detail,
        };
        table.add_row([
            s.id.clone(),
            s.agent.clone(),
            status.to_string(),
            format!("{:.1}", s.took.as_secs_f64() * 1e3),
            engram,
            text,
        ]);
    }
    println!(
        "workflow {:?}: {} in {:.1} ms, results in context {context}",
        report.workflow,
        if report.succeeded() { "completed" } else { "did not complete" },
        report.took.as_secs_f64() * 1e3
    );
    println!("{table}");
    Ok(())
}
