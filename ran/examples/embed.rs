//! Embedding elex in a tokio application: start the runtime, ask, reward,
//! watch events, read usage. Run it after `cargo xtask build`:
//!
//! ```sh
//! cargo run -p elex-ran --example embed -- /tmp/elex-embed target/registry
//! ```

use std::sync::Arc;

use elex_ran::Runtime;
use elex_ran::host::Event;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let data_dir = args.next().unwrap_or_else(|| String::from("/tmp/elex-embed"));
    let registry = args.next().unwrap_or_else(|| String::from("target/registry"));

    // Subscribed before the start, the swarm's start is an event too.
    let builder = Runtime::builder(data_dir).registry(registry);
    let mut events = builder.subscribe();
    let watcher = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match &event {
                Event::SwarmStarted { agents, .. } => println!("event: {agents} agents started"),
                Event::AgentRecycled { agent, .. } => println!("event: {agent} recycled"),
                _ => {}
            }
        }
    });
    // Starting and answering run guest code: keep them off the async threads.
    let runtime = Arc::new(tokio::task::spawn_blocking(move || builder.start()).await??);

    let rt = runtime.clone();
    let answer =
        tokio::task::spawn_blocking(move || rt.query("Which counters show the effect of MIMO Sleep Mode?"))
            .await??;
    let feature = &runtime.catalog().features[answer.agent];
    println!(
        "{} ({}) answered {}:\n{}",
        feature.faj, feature.name, answer.response.query_id, answer.response.content
    );

    let rt = runtime.clone();
    let query_id = answer.response.query_id.clone();
    tokio::task::spawn_blocking(move || rt.feedback(&query_id, 1.0)).await??;
    println!("rewarded {}", feature.faj);

    for (agent, usage) in runtime.usage()?.iter().filter(|(a, _)| *a == feature.faj) {
        println!("usage of {agent}: {} calls, {} errors", usage.calls, usage.errors);
    }
    // Dropping the runtime closes its event channel: the watcher has seen all.
    drop(runtime);
    watcher.await?;
    Ok(())
}
