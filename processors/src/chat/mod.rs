//! The chat feature's processor: the agent, which answers each question asked in a chat session
//! with the LLM and the tools, and resumes a turn when a person answers a confirmation.

use aurora_adapters::wakeup::Announcer;

use crate::agent::deltas::DeltaPublisher;
use crate::agent::runner::AgentRunner;
use crate::agent::Agent;
use crate::Processors;

/// Registers the chat agent.
pub fn register(processors: &mut Processors) {
    processors.add("agent", |context, shutdown| async move {
        let deltas = DeltaPublisher::new(&context.config, Announcer::new(context.pool.clone()))?;
        let objects = aurora_adapters::objects::Objects::from_config(&context.config.objects)?;
        let agent = Agent::new(&context, objects, deltas);
        AgentRunner::new(context.config, context.pool, agent, context.signals).run(shutdown).await
    });
}
