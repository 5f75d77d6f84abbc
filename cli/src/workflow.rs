//! `elex workflow run`: a workflow file's steps asked of the feature agents,
//! each result stored as an engram of a context.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::Subcommand;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use elex_ran::workflow::{StepStatus, Workflow};

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
    // The file is checked (a bounded regular file, within the workflow
    // limits) before anything starts; the runtime checks every step's agent
    // and the context before anything runs.
    let mut workflow = Workflow::load(&file)?;
    let runtime = crate::runtime(places, component.as_deref())?;
    let report = runtime.run_workflow(&mut workflow, context)?;
    print_report(&report, context, json, &file)?;
    if report.succeeded() { Ok(()) } else { Err(anyhow!("workflow {:?} did not complete", report.workflow)) }
}

fn print_report(
    report: &elex_ran::workflow::Report,
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
        let mut out = elex_ran::json::workflow_report(report, context);
        out["file"] = serde_json::json!(file.display().to_string());
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
